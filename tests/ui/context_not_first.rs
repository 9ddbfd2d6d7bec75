use zrpc::Context;

#[zrpc::service]
pub trait Greeter {
    async fn hello(&self, name: String, ctx: &Context) -> String;
}

fn main() {}
