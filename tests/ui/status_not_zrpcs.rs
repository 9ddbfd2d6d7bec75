/// The application's own status, which happens to be called `Status`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub code: u32,
}

#[zrpc::service]
pub trait Orders {
    async fn place(&self, item: u64) -> Result<u64, Status>;
}

fn main() {}
