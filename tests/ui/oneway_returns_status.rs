use zrpc::Status;

#[zrpc::service]
pub trait Logger {
    #[zrpc(oneway)]
    async fn log(&self, line: String) -> Result<(), Status>;
}

fn main() {}
