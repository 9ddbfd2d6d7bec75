#[zrpc::service]
pub trait Store<T> {
    async fn get(&self, key: u64) -> Option<String>;
}

fn main() {}
