pub struct Plain {
    pub x: u32,
}

#[zrpc::service]
pub trait Store {
    async fn put(&self, key: u64, value: Plain) -> bool;
}

fn main() {}
