//! Discovery by DNS: the addresses a host name resolves to, resolved again on an interval.
//!
//! [`Dns`] is a discovery source for [`ClientBuilder::discover`](crate::ClientBuilder::discover):
//!
//! 1. [`Dns::resolve`] resolves the name before it returns, and fails if that fails, so the
//!    client's first call sees the resolved set rather than racing an empty one.
//! 2. Its first poll yields an `Insert` for each address found, as `tcp://ip:port`.
//! 3. Every interval (default 30 s) it resolves again and yields a `Remove` for each address
//!    that is gone and an `Insert` for each new one; an unchanged answer yields nothing.
//! 4. A resolution that fails, or finds no address, yields the error (the client logs it) and
//!    keeps the current set: a DNS outage does not leave the client without endpoints.
//! 5. Dropping it stops resolving.
//!
//! It uses the system resolver (`getaddrinfo`, through `tokio::net::lookup_host`), so
//! `/etc/hosts` applies; record TTLs are not visible there, and the interval stands in for them.
//! Every address gets weight 1 and the host name as its instance name.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use zrpc_core::Status;
use zrpc_core::discover::{Change, Instance};

use crate::address::{Address, ToAddress};
use crate::feed::{Feed, Sink};

/// Discovery from a DNS name; see the [module docs](self).
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), zrpc_core::Status> {
/// use zrpc_transport::{Client, Dns};
///
/// let client = Client::builder().discover(Dns::resolve("tcp://localhost:4000").await?).build();
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
pub struct Dns {
    hostport: String,
    interval: Duration,
    feed: Feed,
}

impl Dns {
    /// How often the name is resolved again unless told otherwise.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

    /// Resolves `address` (`tcp://name:port` or `name:port`) now, and again every 30 s.
    ///
    /// # Errors
    /// `InvalidArgument` for an address that is not TCP `host:port`; `Unavailable` when the
    /// name does not resolve or resolves to no address.
    pub async fn resolve(address: impl ToAddress) -> Result<Dns, Status> {
        Dns::resolve_every(address, Dns::DEFAULT_INTERVAL).await
    }

    /// Resolves `address` now, and again every `interval` (at least 10 ms).
    ///
    /// # Errors
    /// As [`Dns::resolve`].
    pub async fn resolve_every(address: impl ToAddress, interval: Duration) -> Result<Dns, Status> {
        let address = address.to_address().map_err(|e| Status::invalid_argument(e.to_string()))?;
        let Address::Tcp(hostport) = address else {
            return Err(Status::invalid_argument(format!(
                "DNS discovery needs a tcp://host:port address, not {address}"
            )));
        };
        let interval = interval.max(Duration::from_millis(10));
        let found = lookup(&hostport).await?;
        let host = host_of(&hostport).to_owned();
        let initial = changes(&host, &BTreeSet::new(), &found);
        let follow = {
            let hostport = hostport.clone();
            move |sink| follow(hostport, host, interval, found, sink)
        };
        Ok(Dns { feed: Feed::start(initial, follow), hostport, interval })
    }
}

/// Resolves again every `interval`, reporting what changed since `known`.
async fn follow(hostport: String, host: String, interval: Duration, mut known: BTreeSet<SocketAddr>, sink: Sink) {
    loop {
        tokio::time::sleep(interval).await;
        match lookup(&hostport).await {
            Ok(found) => {
                for change in changes(&host, &known, &found) {
                    sink.change(change);
                }
                known = found;
            }
            Err(status) => sink.error(status),
        }
    }
}

/// The addresses `hostport` resolves to now; at least one.
async fn lookup(hostport: &str) -> Result<BTreeSet<SocketAddr>, Status> {
    let found: BTreeSet<SocketAddr> = tokio::net::lookup_host(hostport)
        .await
        .map_err(|e| Status::unavailable(format!("cannot resolve {hostport}: {e}")))?
        .collect();
    if found.is_empty() {
        return Err(Status::unavailable(format!("{hostport} resolves to no address")));
    }
    Ok(found)
}

/// What turns the set `before` into `after`: removals first, then additions.
fn changes(host: &str, before: &BTreeSet<SocketAddr>, after: &BTreeSet<SocketAddr>) -> Vec<Change> {
    let gone = before.difference(after).map(|&addr| Change::Remove(Address::from(addr).to_string().into()));
    let new = after.difference(before).map(|&addr| {
        let instance = Instance::from(Address::from(addr)).with_name(host);
        Change::Insert(instance.address.clone(), instance)
    });
    gone.chain(new).collect()
}

/// The host part of `host:port` (IPv6 brackets kept).
fn host_of(hostport: &str) -> &str {
    hostport.rsplit_once(':').map_or(hostport, |(host, _)| host)
}

impl Stream for Dns {
    type Item = Result<Change, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.feed).poll_next(cx)
    }
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns").field("name", &self.hostport).field("interval", &self.interval).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use futures::{FutureExt, StreamExt};

    use super::*;

    fn set(addrs: &[&str]) -> BTreeSet<SocketAddr> {
        addrs.iter().map(|a| a.parse().expect("a socket address")).collect()
    }

    fn describe(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|change| match change {
                Change::Insert(address, instance) => {
                    assert_eq!(*address, instance.address);
                    format!("+{address} {}", instance.name)
                }
                Change::Remove(address) => format!("-{address}"),
            })
            .collect()
    }

    #[test]
    fn changes_are_the_set_difference() {
        let before = set(&["10.0.0.1:80", "10.0.0.2:80"]);
        let after = set(&["10.0.0.2:80", "[::1]:80"]);
        assert_eq!(describe(&changes("svc", &before, &after)), ["-tcp://10.0.0.1:80", "+tcp://[::1]:80 svc"]);
        assert!(changes("svc", &after, &after).is_empty(), "an unchanged answer changes nothing");
        assert_eq!(describe(&changes("svc", &BTreeSet::new(), &set(&["10.0.0.1:80"]))), ["+tcp://10.0.0.1:80 svc"]);
    }

    #[test]
    fn host_is_the_part_before_the_port() {
        assert_eq!(host_of("example.com:80"), "example.com");
        assert_eq!(host_of("[::1]:80"), "[::1]");
    }

    #[tokio::test]
    async fn localhost_is_yielded_at_once_then_nothing_changes() {
        let mut dns =
            Dns::resolve_every("tcp://localhost:4321", Duration::from_secs(600)).await.expect("localhost resolves");
        let mut addresses = Vec::new();
        while let Some(Some(change)) = dns.next().now_or_never() {
            match change.expect("no error") {
                Change::Insert(address, instance) => {
                    assert_eq!(instance.name, "localhost");
                    addresses.push(address.to_string());
                }
                Change::Remove(address) => panic!("nothing to remove yet, got a removal of {address}"),
            }
        }
        assert!(addresses.iter().any(|a| a == "tcp://127.0.0.1:4321"), "{addresses:?}");
        assert!(addresses.iter().all(|a| a.ends_with(":4321")), "{addresses:?}");
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_an_error() {
        // `.invalid` is reserved never to resolve (RFC 6761).
        let status = Dns::resolve("tcp://no-such-host.invalid:80").await.expect_err("does not resolve");
        assert_eq!(status.code(), zrpc_core::Code::Unavailable, "{status}");
        assert!(status.message().contains("no-such-host.invalid"), "{status}");
    }

    #[tokio::test]
    async fn only_tcp_addresses_are_resolved() {
        let status = Dns::resolve("unix:///tmp/x.sock").await.expect_err("not tcp");
        assert_eq!(status.code(), zrpc_core::Code::InvalidArgument, "{status}");
        let status = Dns::resolve("localhost").await.expect_err("no port");
        assert_eq!(status.code(), zrpc_core::Code::InvalidArgument, "{status}");
    }
}
