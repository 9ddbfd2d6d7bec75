//! Registering a server in etcd under a lease it keeps alive.
//!
//! Every registration's key lives under a lease that a keep-alive task renews every third of
//! its TTL; when renewing fails (etcd lost the lease, or was away longer than the TTL) the task
//! grants a new lease and puts the keys again under it, with backoff. By default each
//! registration has its own lease and stream (a server that dies or is aborted disappears when
//! its lease expires). With [`EtcdRegistry::shared_lease`], every registration through the
//! registry shares one lease and one keep-alive stream: a process with 1,000 servers keeps one
//! lease, not 1,000. A shared registration that is dropped without deregistering (an aborted
//! server) has its key deleted in the background, since the lease it shares lives on; the
//! last one out revokes the lease. A registration that joins a shared lease etcd has lost
//! before the keeper noticed (its put is refused) grants the new lease itself, and every key
//! goes under it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Weak};
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
    /// The lease every registration shares, after [`shared_lease`](EtcdRegistry::shared_lease).
    shared: Option<Arc<LeaseGroup>>,
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
            shared: None,
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
        self.reshare()
    }

    /// Registrations through this registry, and through its clones made after this call,
    /// share one lease and one keep-alive stream instead of one each: for a process that runs
    /// many servers. They appear and disappear together when the process dies or loses etcd
    /// (the lease expires), and each still deregisters on its own when its server shuts down.
    /// A shared registration dropped without deregistering (an aborted server) has its key
    /// deleted in the background; the last one to go revokes the lease. The lease has the TTL
    /// and backoff set on the registry; setting either later starts a new shared lease.
    pub fn shared_lease(mut self) -> EtcdRegistry {
        self.shared = Some(LeaseGroup::new(self.client.clone(), self.ttl_secs(), self.backoff));
        self
    }

    /// A new shared lease with the current settings, when the registry shares one.
    fn reshare(self) -> EtcdRegistry {
        if self.shared.is_some() { self.shared_lease() } else { self }
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
        self.reshare()
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
        lease_secs(self.ttl)
    }
}

/// A lease's TTL in etcd's whole seconds: rounded up, at least 1; `Duration::MAX` is the most
/// etcd can be asked for (it refuses more than its own maximum, about 285 years), not 1.
fn lease_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs().saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

impl Registry for EtcdRegistry {
    fn register(&self, instance: Instance) -> BoxFuture<'static, Result<Registration, Status>> {
        let instance = self.describe(instance);
        let key = format!("{}{}", self.directory, instance.address);
        let value = record::encode(&instance);
        let group = match &self.shared {
            Some(shared) => shared.clone(),
            None => LeaseGroup::new(self.client.clone(), self.ttl_secs(), self.backoff),
        };
        let deregister_timeout = self.deregister_timeout;
        Box::pin(async move {
            group.add(key.clone(), value).await?;
            let mut member = Member { group, key: key.clone() };
            Ok(Registration::new(key, async move {
                // Cut short (the timeout, or this future dropped), the member abandons its key.
                let removed = tokio::time::timeout(deregister_timeout, member.group.remove(&member.key));
                match removed.await {
                    Ok(result) => {
                        member.key.clear(); // Deregistered: nothing to abandon.
                        result
                    }
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
            .field("shared_lease", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

/// One registration's key in its lease group. Dropped without deregistering, it leaves the
/// group: a lease of its own then stops being renewed and expires with the key, as when the
/// process dies; a shared lease lives on for the others, so the key is deleted.
struct Member {
    group: Arc<LeaseGroup>,
    /// Empty once deregistered.
    key: String,
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.key.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (group, key) = (self.group.clone(), std::mem::take(&mut self.key));
        runtime.spawn(async move { group.abandon(&key).await });
    }
}

/// Keys kept alive under one lease: a registration's own, or every registration's through a
/// registry with a shared lease. The lease is granted with the first key and revoked (or left
/// to expire) with the last.
struct LeaseGroup {
    client: Client,
    ttl: i64,
    backoff: Backoff,
    /// Held across the etcd requests that change the lease or its keys, so that a key added
    /// while the keeper grants a new lease is put under the new one.
    state: tokio::sync::Mutex<GroupState>,
}

#[derive(Default)]
struct GroupState {
    /// The lease, while the group has keys.
    granted: Option<Granted>,
    /// Every key registered, with its value, to put again under a new lease.
    keys: BTreeMap<String, Vec<u8>>,
    /// Renews the lease; aborted with the group or its last key.
    keeper: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for GroupState {
    fn drop(&mut self) {
        if let Some(keeper) = &self.keeper {
            keeper.abort();
        }
    }
}

/// A lease etcd granted.
#[derive(Clone, Copy, Debug)]
struct Granted {
    id: i64,
    /// Seconds, as granted (etcd may raise a short TTL to its minimum).
    ttl: i64,
}

impl LeaseGroup {
    fn new(client: Client, ttl: i64, backoff: Backoff) -> Arc<LeaseGroup> {
        Arc::new(LeaseGroup { client, ttl, backoff, state: tokio::sync::Mutex::default() })
    }

    /// Puts `key` under the group's lease, granting it (and starting its keeper) first if the
    /// group has none.
    async fn add(self: &Arc<Self>, key: String, value: Vec<u8>) -> Result<(), Status> {
        let mut state = self.state.lock().await;
        let granted = match state.granted {
            Some(granted) => granted,
            None => {
                let granted = self.grant().await?;
                state.granted = Some(granted);
                state.keeper = Some(tokio::spawn(LeaseGroup::keep(Arc::downgrade(self), granted)));
                granted
            }
        };
        let mut put = self.put(&key, &value, granted.id).await;
        if put.is_err() && !state.keys.is_empty() {
            // etcd may have lost the lease before the keeper noticed (it renews every third of
            // the TTL): register the others again under a new lease, and this key with them.
            // If etcd cannot be reached, that fails too and the first error stands.
            if let Ok(renewed) = self.regrant_in(&mut state).await {
                if let Some(keeper) =
                    state.keeper.replace(tokio::spawn(LeaseGroup::keep(Arc::downgrade(self), renewed)))
                {
                    keeper.abort();
                }
                put = self.put(&key, &value, renewed.id).await;
            }
        }
        match put {
            Ok(()) => {
                state.keys.insert(key, value);
            }
            // A lease granted for nothing is not kept.
            Err(_) if state.keys.is_empty() => {
                let _ = self.release(&mut state, true).await;
            }
            Err(_) => {}
        }
        put
    }

    /// Deletes `key` and, with the last key, revokes the lease.
    async fn remove(&self, key: &str) -> Result<(), Status> {
        let mut state = self.state.lock().await;
        let mut client = self.client.clone();
        let deleted = request("deleting the key", client.delete(key, None)).await;
        // Forgotten only now: cut short before this, the member abandons the key, which
        // deletes it (or lets it expire) then.
        state.keys.remove(key);
        if !state.keys.is_empty() {
            return deleted.map(drop);
        }
        // Revoking also deletes the key if deleting failed but etcd answers now. Once the key is
        // gone, a lease that cannot be revoked (already expired) changes nothing for clients.
        let revoked = self.release(&mut state, true).await;
        match (deleted, revoked) {
            (Ok(_), _) | (Err(_), Ok(())) => Ok(()),
            (Err(status), Err(_)) => Err(status),
        }
    }

    /// Forgets `key` without deregistering it: the last key stops the keeper and lets the lease
    /// expire (as when the process dies); otherwise the lease lives on, so the key is deleted.
    async fn abandon(&self, key: &str) {
        let mut state = self.state.lock().await;
        let known = state.keys.remove(key).is_some();
        if state.keys.is_empty() {
            // Also after a deregistration cut short before it revoked the lease.
            let _ = self.release(&mut state, false).await;
        } else if known {
            let mut client = self.client.clone();
            if let Err(status) = request("deleting an abandoned key", client.delete(key, None)).await {
                tracing::warn!(key, %status, "could not delete the key of a server dropped without deregistering");
            }
        }
    }

    /// Stops the keeper and forgets the lease, revoking it when `revoke` says so.
    async fn release(&self, state: &mut GroupState, revoke: bool) -> Result<(), Status> {
        if let Some(keeper) = state.keeper.take() {
            keeper.abort();
        }
        match state.granted.take() {
            Some(granted) if revoke => {
                let mut client = self.client.clone();
                request("revoking the lease", client.lease_revoke(granted.id)).await.map(drop)
            }
            _ => Ok(()),
        }
    }

    async fn grant(&self) -> Result<Granted, Status> {
        let mut client = self.client.clone();
        let granted = request("granting a lease", client.lease_grant(self.ttl, None)).await?;
        Ok(Granted { id: granted.id(), ttl: granted.ttl() })
    }

    async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), Status> {
        let mut client = self.client.clone();
        let options = PutOptions::new().with_lease(lease);
        request("registering", client.put(key, value, Some(options))).await.map(drop)
    }

    /// Grants a new lease and puts every key under it; the old lease, if etcd still has it,
    /// then holds nothing and is revoked.
    async fn regrant(&self) -> Result<Granted, Status> {
        let mut state = self.state.lock().await;
        self.regrant_in(&mut state).await
    }

    /// [`LeaseGroup::regrant`] with the group's state already locked.
    async fn regrant_in(&self, state: &mut GroupState) -> Result<Granted, Status> {
        let granted = self.grant().await?;
        for (key, value) in &state.keys {
            if let Err(status) = self.put(key, value, granted.id).await {
                let mut client = self.client.clone();
                let _ = request("revoking a lease not used", client.lease_revoke(granted.id)).await;
                return Err(status);
            }
        }
        if let Some(old) = state.granted.replace(granted) {
            let mut client = self.client.clone();
            let _ = request("revoking the old lease", client.lease_revoke(old.id)).await;
        }
        tracing::info!(keys = state.keys.len(), "registered again");
        Ok(granted)
    }

    /// Keeps the group's keys registered for as long as the group lives: renews `granted`, and
    /// when that fails registers them again under a new lease, with backoff, and renews that.
    async fn keep(group: Weak<LeaseGroup>, mut granted: Granted) {
        loop {
            let Some((client, backoff)) = group.upgrade().map(|g| (g.client.clone(), g.backoff)) else { return };
            let lost = renew(client, granted).await;
            tracing::warn!(%lost, "lost the etcd lease; registering again");
            let mut failures: u32 = 0;
            granted = loop {
                failures += 1;
                tokio::time::sleep(backoff.near_ceiling(failures.saturating_sub(1))).await;
                let Some(group) = group.upgrade() else { return };
                match group.regrant().await {
                    Ok(granted) => break granted,
                    Err(status) => tracing::debug!(%status, failures, "registering again failed"),
                }
            };
        }
    }
}

/// Renews `granted` every third of its TTL until that fails; returns why.
async fn renew(mut client: Client, granted: Granted) -> Status {
    let period = Duration::from_secs(u64::try_from(granted.ttl).unwrap_or(1).max(1)) / 3;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_is_whole_seconds_rounded_up_and_the_longest_stays_the_longest() {
        assert_eq!(lease_secs(Duration::ZERO), 1);
        assert_eq!(lease_secs(Duration::from_millis(1500)), 2);
        assert_eq!(lease_secs(Duration::from_secs(10)), 10);
        // `u64::MAX` seconds and a fraction overflowed the rounding: 0 in a release build,
        // so a 1-second lease.
        assert_eq!(lease_secs(Duration::MAX), i64::MAX);
    }
}
