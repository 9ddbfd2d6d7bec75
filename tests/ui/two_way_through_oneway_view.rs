#[zrpc::service]
pub trait Ledger {
    #[zrpc(oneway)]
    async fn record(&self, n: u64);
    async fn total(&self) -> u64;
}

#[derive(Clone)]
struct Books;

impl Ledger for Books {
    async fn record(&self, _n: u64) {}

    async fn total(&self) -> u64 {
        0
    }
}

fn main() {
    let client = LedgerClient::new(LedgerServer::new(Books));
    let _record = client.oneway().record(1);
    let _total = client.oneway().total();
}
