#[zrpc::service]
pub trait Store {
    type Key;

    async fn get(&self, key: u64) -> Option<String>;
}

fn main() {}
