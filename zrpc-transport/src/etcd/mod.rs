//! Service discovery through etcd (feature `etcd`): servers register, clients watch.
//!
//! A cluster of servers shares one **prefix**, conventionally `/<namespace>/<service>` (say
//! `/zrpc/greeter`). Each server is one key under it, `<prefix>/<address>`
//! (`/zrpc/greeter/tcp://10.0.0.7:4000`), whose value is the instance as JSON:
//! `{address, name, weight, group, version, state, metadata}`. The key is attached to a lease,
//! so it disappears when its server stops renewing it.
//!
//! Servers register with [`EtcdRegistry`] through
//! [`ServerBuilder::register`](crate::ServerBuilder::register):
//!
//! 1. When the server is bound, it grants a lease (TTL 10 s unless configured) and puts its key
//!    under it, with its real local address (or the one to advertise) and name.
//! 2. A background task renews the lease every third of its TTL over etcd's keep-alive stream.
//!    When renewing fails (etcd restarted, the lease expired, no answer within a third of the
//!    TTL) it registers again with a new lease, retrying with capped backoff and jitter until
//!    etcd answers.
//! 3. On graceful shutdown, before draining, it stops renewing, deletes its key and revokes the
//!    lease, giving up after a short timeout (2 s unless configured): clients see the key go at
//!    once and stop choosing the server.
//! 4. If the server dies instead, renewing stops and etcd deletes the key when the lease
//!    expires, at most one TTL later.
//!
//! Clients discover with [`Etcd`], a source for
//! [`ClientBuilder::discover`](crate::ClientBuilder::discover):
//!
//! 1. [`Etcd::watch`] reads every key under the prefix before it returns; its first poll
//!    yields an `Insert` for each, so the client's first call sees them.
//! 2. It then watches the prefix from the revision of that read: a put is an `Insert` (a new
//!    instance, or new details of a known one), a delete (including a lease expiring) a
//!    `Remove`. A value that is not a valid instance record is skipped with a warning (and
//!    removes what its key held before).
//! 3. When the watch is lost (etcd restarted or unreachable, the revision compacted), it yields
//!    the error, then, with capped exponential backoff and jitter, reads the prefix again:
//!    `Remove`s for what vanished meanwhile, `Insert`s for everything present, and watches again
//!    from the new revision. The stream never ends; the client keeps its endpoints while etcd is
//!    away.
//! 4. The client filters instances by group, version and state with its
//!    [`Filter`](zrpc_core::discover::Filter), and closes connections to endpoints that left.
//!
//! Both take an [`etcd_client::Client`] for TLS or authentication, or connect themselves to a
//! list of endpoints (`http://127.0.0.1:2379`) with HTTP/2 keep-alive, so that a silently dead
//! connection is noticed.

mod record;
mod register;
mod watch;

use std::time::Duration;

pub use etcd_client;
pub use register::EtcdRegistry;
pub use watch::Etcd;
use zrpc_core::Status;

/// How long a single request to etcd (a read, a put, opening a stream) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the etcd cluster at `endpoints`.
async fn connect<E: AsRef<str>, S: AsRef<[E]>>(endpoints: S) -> Result<etcd_client::Client, Status> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(10), REQUEST_TIMEOUT)
        .with_keep_alive_while_idle(true);
    etcd_client::Client::connect(endpoints, Some(options)).await.map_err(|e| failed("connecting", e))
}

/// The key prefix of a cluster's instances: `prefix` with one trailing slash.
fn directory(prefix: &str) -> String {
    format!("{}/", prefix.trim_end_matches('/'))
}

/// A status for an etcd request that failed.
fn failed(doing: &str, error: etcd_client::Error) -> Status {
    Status::unavailable(format!("etcd: {doing}: {error}"))
}

/// Runs one request to etcd, failing after [`REQUEST_TIMEOUT`].
async fn request<T>(doing: &str, request: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, Status> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result.map_err(|e| failed(doing, e)),
        Err(_) => Err(Status::unavailable(format!("etcd: {doing}: no answer within {REQUEST_TIMEOUT:?}"))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn directory_has_one_trailing_slash() {
        assert_eq!(super::directory("/zrpc/greeter"), "/zrpc/greeter/");
        assert_eq!(super::directory("/zrpc/greeter//"), "/zrpc/greeter/");
    }
}
