#[derive(serde::Serialize, serde::Deserialize)]
pub struct Plain {
    pub x: u32,
}

#[zrpc::service(schema)]
pub trait Store {
    async fn put(&self, key: u64, value: Plain) -> bool;
}

fn main() {}
