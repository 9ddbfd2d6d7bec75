#[zrpc::service]
pub trait Accounts {
    async fn new(&self, owner: String) -> u64;
}

fn main() {}
