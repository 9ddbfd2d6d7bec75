#[zrpc::service(name = "zrpc.Greeter")]
pub trait Greeter {
    async fn hello(&self);
}

fn main() {}
