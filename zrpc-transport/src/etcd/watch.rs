//! Discovering a cluster's instances by watching its prefix in etcd.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use futures::Stream;
use zrpc_core::Status;
use zrpc_core::discover::Change;

use super::{directory, record, request};
use crate::feed::{Feed, Sink};
use zrpc_core::backoff::Backoff;

/// Discovery from etcd: the instances registered under a prefix, kept up to date by a watch.
/// See the [module docs](super).
///
/// # Examples
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use zrpc_core::discover::Filter;
/// use zrpc_transport::Client;
/// use zrpc_transport::etcd::Etcd;
///
/// let client = Client::builder()
///     .discover(Etcd::watch(["http://127.0.0.1:2379"], "/zrpc/greeter").await?)
///     .filter(Filter::default().group("canary"))
///     .build();
/// # Ok(())
/// # }
/// ```
pub struct Etcd {
    directory: String,
    feed: Feed,
}

impl Etcd {
    /// Connects to the etcd cluster at `endpoints` (`http://host:2379`), reads the instances
    /// under `prefix` (e.g. `/zrpc/greeter`), and watches it.
    ///
    /// # Errors
    /// `Unavailable` when etcd cannot be reached or does not answer the first read in time.
    pub async fn watch<E: AsRef<str>, S: AsRef<[E]>>(endpoints: S, prefix: &str) -> Result<Etcd, Status> {
        Etcd::watch_with(
            super::connect(endpoints).await?,
            prefix,
            Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        )
        .await
    }

    /// Reads and watches the instances under `prefix` through `client`, waiting per `backoff`
    /// between attempts to recover a lost watch.
    ///
    /// # Errors
    /// `Unavailable` when etcd does not answer the first read in time.
    pub async fn watch_with(client: Client, prefix: &str, backoff: Backoff) -> Result<Etcd, Status> {
        let mut watcher = Watcher { client, directory: directory(prefix), known: HashMap::new(), backoff };
        let (initial, revision) = watcher.read().await?;
        let directory = watcher.directory.clone();
        Ok(Etcd { directory, feed: Feed::start(initial, move |sink| watcher.run(sink, revision)) })
    }
}

impl Stream for Etcd {
    type Item = Result<Change, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.feed).poll_next(cx)
    }
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd").field("prefix", &self.directory).finish_non_exhaustive()
    }
}

/// The background task's state.
struct Watcher {
    client: Client,
    directory: String,
    /// Every key reported, with the address it was reported under.
    known: HashMap<Vec<u8>, Arc<str>>,
    backoff: Backoff,
}

impl Watcher {
    /// Watches from after `revision`; recovers whenever the watch is lost. Never returns.
    async fn run(mut self, sink: Sink, mut revision: i64) {
        let mut failures = 0;
        loop {
            let lost = self.follow(&sink, revision + 1, &mut failures).await;
            sink.error(lost);
            revision = loop {
                failures += 1;
                tokio::time::sleep(self.backoff.near_ceiling(failures.saturating_sub(1))).await;
                match self.read().await {
                    Ok((changes, revision)) => {
                        for change in changes {
                            sink.change(change);
                        }
                        break revision;
                    }
                    Err(status) => sink.error(status),
                }
            };
        }
    }

    /// Reads every instance now; returns the changes that turn what was reported so far into
    /// that, and the revision read at.
    async fn read(&mut self) -> Result<(Vec<Change>, i64), Status> {
        let options = GetOptions::new().with_prefix();
        let mut response =
            request("reading the instances", self.client.get(self.directory.clone(), Some(options))).await?;
        let revision = response
            .header()
            .map(|header| header.revision())
            .ok_or_else(|| Status::unavailable("etcd: a read answered without a revision"))?;
        let mut present: HashMap<Vec<u8>, Arc<str>> = HashMap::new();
        let mut inserts = Vec::new();
        for kv in response.take_kvs() {
            match record::decode(kv.value()) {
                Ok(instance) => {
                    present.insert(kv.key().to_vec(), instance.address.clone());
                    inserts.push(Change::Insert(instance.address.clone(), instance));
                }
                Err(reason) => warn_malformed(kv.key(), &reason),
            }
        }
        let still: HashSet<&Arc<str>> = present.values().collect();
        let gone: HashSet<&Arc<str>> = self.known.values().filter(|address| !still.contains(address)).collect();
        let mut changes: Vec<Change> = gone.into_iter().map(|address| Change::Remove(address.clone())).collect();
        changes.extend(inserts);
        self.known = present;
        Ok((changes, revision))
    }

    /// Watches from `start` and reports every change until the watch is lost; returns why.
    async fn follow(&mut self, sink: &Sink, start: i64, failures: &mut u32) -> Status {
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let mut client = self.client.clone();
        let mut stream = match request("watching", client.watch(self.directory.clone(), Some(options))).await {
            Ok(stream) => stream,
            Err(status) => return status,
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return Status::unavailable("etcd: the watch ended"),
                Err(e) => return super::failed("watching", e),
            };
            if response.canceled() {
                let reason = match response.compact_revision() {
                    0 => response.cancel_reason().to_owned(),
                    compacted => format!("revision {start} was compacted (now {compacted})"),
                };
                return Status::unavailable(format!("etcd cancelled the watch: {reason}"));
            }
            if response.created() {
                *failures = 0;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => match record::decode(kv.value()) {
                        Ok(instance) => {
                            let before = self.known.insert(kv.key().to_vec(), instance.address.clone());
                            if let Some(before) = before.filter(|before| *before != instance.address) {
                                sink.change(Change::Remove(before));
                            }
                            sink.change(Change::Insert(instance.address.clone(), instance));
                        }
                        Err(reason) => {
                            warn_malformed(kv.key(), &reason);
                            if let Some(before) = self.known.remove(kv.key()) {
                                sink.change(Change::Remove(before));
                            }
                        }
                    },
                    EventType::Delete => {
                        if let Some(before) = self.known.remove(kv.key()) {
                            sink.change(Change::Remove(before));
                        }
                    }
                }
            }
        }
    }
}

fn warn_malformed(key: &[u8], reason: &str) {
    tracing::warn!(key = %String::from_utf8_lossy(key), reason, "skipping a value that is not an instance");
}
