#[zrpc::service]
pub trait Greeter {
    #[zrpc(idempotnet)]
    async fn hello(&self, name: String) -> String;
}

fn main() {}
