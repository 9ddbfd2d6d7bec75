#[zrpc::service(version = "2")]
pub trait Greeter {
    async fn hello(&self, name: String) -> String;
}

fn main() {}
