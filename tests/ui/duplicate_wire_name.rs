#[zrpc::service]
pub trait Greeter {
    async fn hello(&self, name: String) -> String;
    #[zrpc(name = "hello")]
    async fn hello_again(&self, name: String) -> String;
}

fn main() {}
