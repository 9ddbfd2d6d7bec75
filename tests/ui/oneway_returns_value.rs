#[zrpc::service]
pub trait Logger {
    #[zrpc(oneway)]
    async fn log(&self, line: String) -> bool;
}

fn main() {}
