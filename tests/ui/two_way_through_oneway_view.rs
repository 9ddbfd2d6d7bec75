#[zrpc::service]
pub trait Ledger {
    #[zrpc(oneway)]
    async fn record(&self, n: u64);
    async fn total(&self) -> u64;
}

fn main() {
    let address: zrpc::Address = "tcp://127.0.0.1:1".parse().expect("an address");
    let client = LedgerClient::new(zrpc::Channel::builder(address).connect_lazy());
    let _record = client.oneway().record(1);
    let _total = client.oneway().total();
}
