#[zrpc::service(schema)]
pub trait Store {
    async fn put(&self, key: u64) -> bool;
}

fn main() {}
