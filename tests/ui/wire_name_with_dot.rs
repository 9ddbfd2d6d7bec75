#[zrpc::service]
pub trait Greeter {
    #[zrpc(name = "v2.hello")]
    async fn hello(&self, name: String) -> String;
}

fn main() {}
