#[zrpc::service]
pub trait Calculator {
    async fn add(&self, (a, b): (i32, i32)) -> i32;
}

fn main() {}
