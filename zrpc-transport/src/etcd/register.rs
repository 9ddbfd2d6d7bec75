//! Registering a server in etcd under a lease it keeps alive.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use futures::future::BoxFuture;
use zrpc_core::Status;
use zrpc_core::discover::{Instance, InstanceState};

use super::{REQUEST_TIMEOUT, directory, record, request};
use crate::registry::{Registration, Registry};
use zrpc_core::backoff::Backoff;

/// Registers servers in etcd; see the [module docs](super).
///
/// What a server registers is its address and name; the methods here add the rest of what
/// clients may weigh or filter it by.
///
/// # Examples
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use zrpc_transport::Server;
/// use zrpc_transport::etcd::EtcdRegistry;
///
/// let registry = EtcdRegistry::connect(["http://127.0.0.1:2379"], "/zrpc/greeter").await?.group("canary").weight(2);
/// let server = Server::builder().name("greeter-1").register(registry).bind("tcp://0.0.0.0:4000").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct EtcdRegistry {
    client: Client,
    directory: String,
    ttl: Duration,
    deregister_timeout: Duration,
    backoff: Backoff,
    advertise: Option<String>,
    weight: Option<u32>,
    group: Option<String>,
    version: Option<String>,
    state: Option<InstanceState>,
    metadata: BTreeMap<String, String>,
}

impl EtcdRegistry {
    /// A registry in the etcd cluster `client` talks to, under `prefix` (e.g. `/zrpc/greeter`).
    pub fn new(client: Client, prefix: &str) -> EtcdRegistry {
        EtcdRegistry {
            client,
            directory: directory(prefix),
            ttl: Duration::from_secs(10),
            deregister_timeout: Duration::from_secs(2),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            advertise: None,
            weight: None,
            group: None,
            version: None,
            state: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Connects to the etcd cluster at `endpoints` (`http://host:2379`) and registers under
    /// `prefix`.
    ///
    /// # Errors
    /// `Unavailable` when the endpoints are invalid or the client cannot be set up. Connecting
    /// is lazy: an etcd that is down is reported when a server registers.
    pub async fn connect<E: AsRef<str>, S: AsRef<[E]>>(endpoints: S, prefix: &str) -> Result<EtcdRegistry, Status> {
        Ok(EtcdRegistry::new(super::connect(endpoints).await?, prefix))
    }

    /// The lease's time to live (default 10 s; whole seconds, at least 1; etcd may raise very
    /// short ones to its minimum). A server that dies disappears from clients within about this.
    pub fn ttl(mut self, ttl: Duration) -> EtcdRegistry {
        self.ttl = ttl;
        self
    }

    /// Advertises `address` instead of the one the server listens on: for a server bound to
    /// `0.0.0.0`, or behind NAT.
    pub fn advertise(mut self, address: impl Into<String>) -> EtcdRegistry {
        self.advertise = Some(address.into());
        self
    }

    /// The weight clients' balancers give the server (default 1).
    pub fn weight(mut self, weight: u32) -> EtcdRegistry {
        self.weight = Some(weight);
        self
    }

    /// The server's group (default none).
    pub fn group(mut self, group: impl Into<String>) -> EtcdRegistry {
        self.group = Some(group.into());
        self
    }

    /// The version the server runs (default none).
    pub fn version(mut self, version: impl Into<String>) -> EtcdRegistry {
        self.version = Some(version.into());
        self
    }

    /// The state registered (default up).
    pub fn state(mut self, state: InstanceState) -> EtcdRegistry {
        self.state = Some(state);
        self
    }

    /// Adds `key = value` to the registered metadata.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> EtcdRegistry {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// How long deregistering on shutdown may take before the server gives up and lets the
    /// lease expire (default 2 s).
    pub fn deregister_timeout(mut self, timeout: Duration) -> EtcdRegistry {
        self.deregister_timeout = timeout;
        self
    }

    /// The backoff between attempts to register again after losing the lease (default 100 ms
    /// doubling up to 5 s).
    pub fn backoff(mut self, backoff: Backoff) -> EtcdRegistry {
        self.backoff = backoff;
        self
    }

    /// `instance` with what this registry adds to it.
    fn describe(&self, mut instance: Instance) -> Instance {
        if let Some(address) = &self.advertise {
            instance.address = address.as_str().into();
        }
        if let Some(weight) = self.weight {
            instance.weight = weight;
        }
        if let Some(group) = &self.group {
            instance.group.clone_from(group);
        }
        if let Some(version) = &self.version {
            instance.version.clone_from(version);
        }
        if let Some(state) = self.state {
            instance.state = state;
        }
        instance.metadata.extend(self.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        instance
    }

    fn ttl_secs(&self) -> i64 {
        let secs = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
    }
}

impl Registry for EtcdRegistry {
    fn register(&self, instance: Instance) -> BoxFuture<'static, Result<Registration, Status>> {
        let instance = self.describe(instance);
        let lease = Lease {
            client: self.client.clone(),
            key: format!("{}{}", self.directory, instance.address),
            value: record::encode(&instance),
            ttl: self.ttl_secs(),
        };
        let (backoff, deregister_timeout) = (self.backoff, self.deregister_timeout);
        Box::pin(async move {
            let granted = lease.put().await?;
            let current = Arc::new(AtomicI64::new(granted.id));
            let keeper = tokio::spawn(lease.clone().keep(granted, current.clone(), backoff));
            let mut keeper = AbortOnDrop(Some(keeper));
            let key = lease.key.clone();
            Ok(Registration::new(key, async move {
                // Stop renewing first, so that no re-registration lands after the delete.
                if let Some(task) = keeper.0.take() {
                    task.abort();
                    let _ = task.await;
                }
                let removed = tokio::time::timeout(deregister_timeout, lease.remove(current.load(Ordering::SeqCst)));
                match removed.await {
                    Ok(result) => result,
                    Err(_) => Err(Status::unavailable(format!(
                        "etcd: deregistering: no answer within {deregister_timeout:?}"
                    ))),
                }
            }))
        })
    }
}

impl fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("prefix", &self.directory)
            .field("ttl", &self.ttl)
            .field("advertise", &self.advertise)
            .field("weight", &self.weight)
            .field("group", &self.group)
            .field("version", &self.version)
            .field("state", &self.state)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

/// Aborts the lease's keeper when the registration is dropped without deregistering.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// One registered key and what it takes to keep it.
#[derive(Clone)]
struct Lease {
    client: Client,
    key: String,
    value: Vec<u8>,
    ttl: i64,
}

/// A lease etcd granted.
#[derive(Clone, Copy, Debug)]
struct Granted {
    id: i64,
    /// Seconds, as granted (etcd may raise a short TTL to its minimum).
    ttl: i64,
}

impl Lease {
    /// Grants a new lease and puts the key under it.
    async fn put(&self) -> Result<Granted, Status> {
        let mut client = self.client.clone();
        let granted = request("granting a lease", client.lease_grant(self.ttl, None)).await?;
        let granted = Granted { id: granted.id(), ttl: granted.ttl() };
        let options = PutOptions::new().with_lease(granted.id);
        request("registering", client.put(self.key.clone(), self.value.clone(), Some(options))).await?;
        Ok(granted)
    }

    /// Keeps the registration alive for good: renews `granted`, and when that fails registers
    /// again with a new lease (stored in `current`) and renews that.
    async fn keep(self, mut granted: Granted, current: Arc<AtomicI64>, backoff: Backoff) {
        loop {
            let lost = self.renew(granted).await;
            tracing::warn!(key = self.key, %lost, "lost the etcd lease; registering again");
            let mut failures: u32 = 0;
            granted = loop {
                failures += 1;
                tokio::time::sleep(backoff.near_ceiling(failures.saturating_sub(1))).await;
                match self.put().await {
                    Ok(granted) => break granted,
                    Err(status) => tracing::debug!(key = self.key, %status, failures, "registering again failed"),
                }
            };
            let old = current.swap(granted.id, Ordering::SeqCst);
            tracing::info!(key = self.key, "registered again");
            // The key has moved to the new lease; the old one, if etcd still has it, holds nothing.
            let mut client = self.client.clone();
            let _ = request("revoking the old lease", client.lease_revoke(old)).await;
        }
    }

    /// Renews `granted` every third of its TTL until that fails; returns why.
    async fn renew(&self, granted: Granted) -> Status {
        let period = Duration::from_secs(u64::try_from(granted.ttl).unwrap_or(1).max(1)) / 3;
        let mut client = self.client.clone();
        let (mut keeper, mut answers) = match request("renewing the lease", client.lease_keep_alive(granted.id)).await {
            Ok(stream) => stream,
            Err(status) => return status,
        };
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // The first tick is now, and opening the stream just renewed it.
        loop {
            ticks.tick().await;
            if let Err(e) = keeper.keep_alive().await {
                return super::failed("renewing the lease", e);
            }
            match tokio::time::timeout(period.min(REQUEST_TIMEOUT), answers.message()).await {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {}
                Ok(Ok(Some(_))) => return Status::not_found("etcd: the lease expired"),
                Ok(Ok(None)) => return Status::unavailable("etcd: the lease keep-alive stream ended"),
                Ok(Err(e)) => return super::failed("renewing the lease", e),
                Err(_) => return Status::unavailable(format!("etcd: no renewal within {period:?}")),
            }
        }
    }

    /// Deletes the key and revokes lease `id`.
    async fn remove(&self, id: i64) -> Result<(), Status> {
        let mut client = self.client.clone();
        let deleted = request("deleting the key", client.delete(self.key.clone(), None)).await;
        // Revoking also deletes the key if deleting failed but etcd answers now. Once the key is
        // gone, a lease that cannot be revoked (already expired) changes nothing for clients.
        let revoked = request("revoking the lease", client.lease_revoke(id)).await;
        match (deleted, revoked) {
            (Ok(_), _) | (Err(_), Ok(_)) => Ok(()),
            (Err(status), Err(_)) => Err(status),
        }
    }
}
