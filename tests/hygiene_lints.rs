//! The expansion passes strict lints: every generated public item is documented and no path in
//! it is needlessly qualified.
#![deny(missing_docs, unused_qualifications, missing_debug_implementations, unreachable_pub)]

use zrpc::Context;

/// A documented public service.
#[zrpc::service]
pub trait Store {
    /// Stores `value` under `key`; returns the previous value.
    async fn put(&self, ctx: &Context, key: String, value: Vec<u8>) -> Option<Vec<u8>>;
    /// Counts the stored keys.
    #[zrpc(idempotent)]
    async fn len(&self) -> usize;
}

/// A private service: nothing generated for it may be `pub` (`unreachable_pub`).
#[zrpc::service]
trait Private {
    /// Nothing.
    async fn nothing(&self);
}

struct Memory;

impl Store for Memory {
    async fn put(&self, _ctx: &Context, key: String, value: Vec<u8>) -> Option<Vec<u8>> {
        (key == "old").then_some(value)
    }

    async fn len(&self) -> usize {
        3
    }
}

impl Private for Memory {
    async fn nothing(&self) {}
}

#[tokio::test]
async fn calls_work_under_strict_lints() {
    let store = StoreClient::new(StoreServer::new(Memory));
    assert_eq!(store.put("old".to_owned(), vec![1]).await.expect("call succeeds"), Some(vec![1]));
    assert_eq!(store.put("new".to_owned(), vec![1]).await.expect("call succeeds"), None);
    assert_eq!(store.len().await.expect("call succeeds"), 3);
    let private = PrivateClient::new(PrivateServer::new(Memory));
    private.nothing().await.expect("call succeeds");
}
