//! Registration and discovery through a real etcd: servers register with `EtcdRegistry`, a
//! `Client` discovers them with `Etcd`.
//!
//! Each test runs its own etcd from PATH (see `support::etcd_server`); without one installed the
//! tests skip, except under `CI=true` where they fail. Nothing sleeps to synchronise: tests wait for
//! keys in etcd and for the client's endpoint set, every wait bounded by a liveness timeout far
//! above any real wait. Lease expiry takes the lease's TTL (2 s here), and no assertion depends
//! on how long anything took.

#![cfg(feature = "etcd")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::cluster::{Mode, NodeClient, Proxy, RunningNode};
use support::etcd::{Registered, who};
use support::etcd_server::EtcdServer;
use support::within;
use zrpc_core::balance::RoundRobin;
use zrpc_core::discover::{Discover, Filter, Instance, InstanceState};
use zrpc_transport::etcd::{Etcd, EtcdRegistry};
use zrpc_transport::{Address, Backoff, ChannelState, Client, Registry};

const PREFIX: &str = "/zrpc-test/who";

/// A short lease, so that a dead server's key expires soon.
const SHORT_TTL: Duration = Duration::from_secs(2);

async fn registry(etcd: &EtcdServer) -> EtcdRegistry {
    EtcdRegistry::new(etcd.client().await, PREFIX).ttl(SHORT_TTL)
}

/// A client watching [`PREFIX`], recovering quickly after losing etcd.
async fn watching(etcd: &EtcdServer, filter: Filter) -> Client {
    let backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    let source = Etcd::watch_with(etcd.client().await, PREFIX, backoff).await.expect("etcd answers the first read");
    client_over(source, filter)
}

fn client_over(source: impl Discover, filter: Filter) -> Client {
    Client::builder()
        .name("etcd-test")
        .discover(source)
        .filter(filter)
        .balance(RoundRobin::new())
        .retry_backoff(Duration::ZERO, Duration::ZERO)
        .build()
}

fn addresses(client: &Client) -> Vec<String> {
    let mut addresses: Vec<String> = client.endpoints().iter().map(ToString::to_string).collect();
    addresses.sort();
    addresses
}

/// Waits until the client's endpoints are exactly `expected`, and each one's first connection
/// attempt has its answer: a client draws endpoints not yet connected only when none is.
async fn wait_endpoints(client: &Client, expected: &[&Address]) {
    let mut expected: Vec<String> = expected.iter().map(ToString::to_string).collect();
    expected.sort();
    let probed = |status: &zrpc_transport::EndpointStatus| {
        status.connections.iter().any(|c| matches!(c, ChannelState::Ready | ChannelState::Failed { .. }))
    };
    let wait = async {
        loop {
            // Subscribe before checking, so that a change between the two is not missed.
            let changed = client.endpoints_changed();
            if addresses(client) == expected && client.endpoint_status().iter().all(probed) {
                return;
            }
            changed.await;
        }
    };
    within(&format!("the client's endpoints are {expected:?}"), wait).await;
}

/// The names of the servers that answered `calls` calls.
async fn answered(client: &Client, calls: usize) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for _ in 0..calls {
        names.insert(who(client).await.expect("a call"));
    }
    names
}

fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

#[tokio::test]
async fn a_registered_server_appears_in_a_watching_client() {
    let Some(etcd) = EtcdServer::start("a_registered_server_appears_in_a_watching_client").await else { return };
    let registry = registry(&etcd).await.weight(3).version("1.2").metadata("zone", "test");
    let a = Registered::start("a", registry.clone()).await;
    // Registered once bound.
    assert_eq!(etcd.keys(PREFIX).await, [a.key(PREFIX)]);

    // What a registers: its real address (it bound port 0), its name, and the registry's details.
    let mut kv = etcd.client().await;
    let stored = within("etcd reads", kv.get(a.key(PREFIX), None)).await.expect("etcd reads");
    let value: serde_json::Value = serde_json::from_slice(stored.kvs()[0].value()).expect("JSON");
    assert_eq!(value["address"], a.address.to_string());
    assert_ne!(a.address.socket_addr().expect("tcp").port(), 0);
    assert_eq!(value["name"], "a");
    assert_eq!(value["weight"], 3);
    assert_eq!(value["version"], "1.2");
    assert_eq!(value["state"], "up");
    assert_eq!(value["metadata"]["zone"], "test");
    assert_ne!(stored.kvs()[0].lease(), 0, "under a lease");

    // Registered before the client started: in its first read, so its first call reaches it.
    let client = watching(&etcd, Filter::default()).await;
    assert_eq!(who(&client).await.expect("a call"), "a");
    assert_eq!(addresses(&client), [a.address.to_string()]);

    // Registered while the client watches: arrives through the watch and gets calls.
    let b = Registered::start("b", registry).await;
    wait_endpoints(&client, &[&a.address, &b.address]).await;
    let before = b.calls();
    assert_eq!(answered(&client, 4).await, names(&["a", "b"]), "round robin reaches both");
    assert!(b.calls() > before);
}

#[tokio::test]
async fn a_server_shut_down_gracefully_disappears() {
    let Some(etcd) = EtcdServer::start("a_server_shut_down_gracefully_disappears").await else { return };
    let registry = registry(&etcd).await;
    let a = Registered::start("a", registry.clone()).await;
    let b = Registered::start("b", registry).await;
    let client = watching(&etcd, Filter::default()).await;
    let _ = who(&client).await; // Discovery starts with the first call.
    wait_endpoints(&client, &[&a.address, &b.address]).await;

    let b_key = b.key(PREFIX);
    a.shutdown().await.expect("a served and shut down");
    // Deregistering is part of shutting down, not left to the lease.
    assert_eq!(etcd.keys(PREFIX).await, [b_key]);
    wait_endpoints(&client, &[&b.address]).await;
    assert_eq!(answered(&client, 4).await, names(&["b"]));
}

#[tokio::test]
async fn a_killed_server_disappears_when_its_lease_expires() {
    let Some(etcd) = EtcdServer::start("a_killed_server_disappears_when_its_lease_expires").await else { return };
    let registry = registry(&etcd).await;
    let a = Registered::start("a", registry.clone()).await;
    let b = Registered::start("b", registry).await;
    let client = watching(&etcd, Filter::default()).await;
    let _ = who(&client).await;
    wait_endpoints(&client, &[&a.address, &b.address]).await;

    // No deregistration: the key stays until the lease, no longer renewed, expires.
    let b_key = b.key(PREFIX);
    a.abort().await;
    wait_endpoints(&client, &[&b.address]).await;
    assert_eq!(etcd.keys(PREFIX).await, [b_key]);
    assert_eq!(answered(&client, 4).await, names(&["b"]));
}

#[tokio::test]
async fn the_client_recovers_when_etcd_restarts() {
    let Some(mut etcd) = EtcdServer::start("the_client_recovers_when_etcd_restarts").await else { return };
    let registry = registry(&etcd).await;
    let a = Registered::start("a", registry.clone()).await;
    let client = watching(&etcd, Filter::default()).await;
    let _ = who(&client).await;
    wait_endpoints(&client, &[&a.address]).await;

    etcd.kill();
    // While etcd is away the client keeps the endpoints it has.
    assert_eq!(who(&client).await.expect("a call"), "a");
    assert_eq!(addresses(&client), [a.address.to_string()]);

    etcd.start_again().await;
    // Registered after the restart, through the same etcd client as before it: the client's
    // watch has recovered once b shows up, and a is still (or again) registered.
    let b = Registered::start("b", registry).await;
    wait_endpoints(&client, &[&a.address, &b.address]).await;
    etcd.wait_keys(PREFIX, &[a.key(PREFIX), b.key(PREFIX)]).await;
    assert_eq!(answered(&client, 4).await, names(&["a", "b"]));

    // a's registration is alive, not a leftover: killed now, it expires like any other.
    a.abort().await;
    wait_endpoints(&client, &[&b.address]).await;
}

#[tokio::test]
async fn a_server_registers_again_when_etcd_loses_its_data() {
    let Some(mut etcd) = EtcdServer::start("a_server_registers_again_when_etcd_loses_its_data").await else { return };
    let a = Registered::start("a", registry(&etcd).await).await;
    let client = watching(&etcd, Filter::default()).await;
    let _ = who(&client).await;
    wait_endpoints(&client, &[&a.address]).await;

    // A new, empty etcd on the same address: a's lease is gone, so renewing it fails and a
    // registers again with a new lease.
    etcd.kill();
    etcd.wipe();
    etcd.start_again().await;
    etcd.wait_keys(PREFIX, &[a.key(PREFIX)]).await;

    // The client watches the new etcd: a server registered now appears.
    let b = Registered::start("b", registry(&etcd).await).await;
    wait_endpoints(&client, &[&a.address, &b.address]).await;
    assert_eq!(answered(&client, 4).await, names(&["a", "b"]));
}

#[tokio::test]
async fn clients_filter_by_group_and_state() {
    let Some(etcd) = EtcdServer::start("clients_filter_by_group_and_state").await else { return };
    let registry = registry(&etcd).await;
    let canary = Registered::start("canary", registry.clone().group("canary")).await;
    let stable = Registered::start("stable", registry.clone().group("stable")).await;
    let draining = Registered::start("draining", registry.group("canary").state(InstanceState::Draining)).await;

    let canaries = watching(&etcd, Filter::default().group("canary")).await;
    assert_eq!(answered(&canaries, 3).await, names(&["canary"]));
    assert_eq!(addresses(&canaries), [canary.address.to_string()]);

    let everyone = watching(&etcd, Filter::any()).await;
    assert_eq!(answered(&everyone, 3).await, names(&["canary", "stable", "draining"]));
    let mut all = [&canary, &stable, &draining].map(|s| s.address.to_string()).to_vec();
    all.sort();
    assert_eq!(addresses(&everyone), all);
}

#[tokio::test]
async fn values_that_are_not_instances_are_skipped() {
    let Some(etcd) = EtcdServer::start("values_that_are_not_instances_are_skipped").await else { return };
    let mut kv = etcd.client().await;
    within("etcd writes", kv.put(format!("{PREFIX}/junk-before"), "not json", None)).await.expect("put");
    let a = Registered::start("a", registry(&etcd).await).await;

    // Skipped in the first read...
    let client = watching(&etcd, Filter::default()).await;
    assert_eq!(who(&client).await.expect("a call"), "a");
    assert_eq!(addresses(&client), [a.address.to_string()]);

    // ... and in the watch, where b, put after the junk, still arrives.
    within("etcd writes", kv.put(format!("{PREFIX}/junk-after"), r#"{"address":"ftp://x"}"#, None)).await.expect("put");
    let b = Registered::start("b", registry(&etcd).await).await;
    wait_endpoints(&client, &[&a.address, &b.address]).await;
    // A known instance overwritten with junk is removed.
    within("etcd writes", kv.put(b.key(PREFIX), "{}", None)).await.expect("put");
    wait_endpoints(&client, &[&a.address]).await;
}

#[tokio::test]
async fn binding_fails_when_the_registry_is_unreachable() {
    // Nothing listens there: registering is refused, and so is binding, rather than a server
    // running unseen by every client.
    let nowhere = support::cluster::refused_address().socket_addr().expect("tcp");
    let registry = EtcdRegistry::connect([format!("http://{nowhere}")], PREFIX).await.expect("connecting is lazy");
    let who = support::etcd::WhoServer::new(support::etcd::Named::new("a"));
    let bound = zrpc_transport::Server::builder().register(registry).add_service(who).bind("tcp://127.0.0.1:0").await;
    let error = bound.expect_err("registering fails");
    assert_eq!(error.kind(), std::io::ErrorKind::Other, "{error}");
    assert!(error.to_string().contains("etcd"), "{error}");
}

#[tokio::test]
async fn the_client_closes_connections_to_endpoints_that_left() {
    let Some(etcd) = EtcdServer::start("the_client_closes_connections_to_endpoints_that_left").await else { return };
    // The server stays up; only its registration goes. It is registered at a proxy in front of
    // it, so the test sees the client's connection open and close.
    let node = RunningNode::start("a", Mode::Answer).await;
    let mut proxy = Proxy::start(&node.address).await;
    let registration =
        registry(&etcd).await.register(Instance::from(proxy.address.clone()).with_name("a")).await.expect("registered");
    assert_eq!(registration.describe(), format!("{PREFIX}/{}", proxy.address));

    let client = watching(&etcd, Filter::default()).await;
    assert_eq!(within("a call", NodeClient::new(client.clone()).work("x".into())).await.expect("a call"), "a");
    proxy.wait_open(1).await;

    registration.deregister().await.expect("deregistered");
    assert!(etcd.keys(PREFIX).await.is_empty());
    wait_endpoints(&client, &[]).await;
    proxy.wait_open(0).await;
    assert_eq!(node.calls(), 1, "the server itself is still up, and saw the one call");
}

/// The leases etcd holds, and the lease of each key under [`PREFIX`].
async fn leases(etcd: &EtcdServer) -> (Vec<i64>, BTreeMap<String, i64>) {
    let mut client = etcd.client().await;
    let leases = within("etcd lists leases", client.leases()).await.expect("etcd lists leases");
    let options = etcd_client::GetOptions::new().with_prefix();
    let keys = within("etcd reads", client.get(PREFIX, Some(options))).await.expect("etcd reads");
    let keys = keys.kvs().iter().map(|kv| (kv.key_str().expect("utf-8 keys").to_owned(), kv.lease())).collect();
    (leases.leases().iter().map(|lease| lease.id()).collect(), keys)
}

#[tokio::test]
async fn servers_sharing_a_lease_keep_one_and_still_come_and_go_one_by_one() {
    let Some(etcd) = EtcdServer::start("servers_sharing_a_lease").await else { return };
    let instance = |port: u16| Instance::new(format!("127.0.0.1:{port}"));
    let key = |port: u16| format!("{PREFIX}/127.0.0.1:{port}");

    // Without sharing, a lease each.
    let own = registry(&etcd).await;
    let mut separate = Vec::new();
    for port in 1..=3 {
        separate.push(own.register(instance(port)).await.expect("registered"));
    }
    assert_eq!(leases(&etcd).await.0.len(), 3);
    for registration in separate {
        registration.deregister().await.expect("deregistered");
    }
    assert_eq!(leases(&etcd).await, (vec![], BTreeMap::new()), "each revoked its own");

    // Shared: 50 registrations, one lease, every key under it.
    let registry = registry(&etcd).await.shared_lease();
    let mut registrations = BTreeMap::new();
    for port in 1..=50 {
        registrations.insert(port, registry.clone().register(instance(port)).await.expect("registered"));
    }
    let (lease, keys) = leases(&etcd).await;
    assert_eq!(lease.len(), 1, "one lease for 50 servers");
    assert_eq!(keys.len(), 50);
    assert!(keys.values().all(|&id| id == lease[0]), "{keys:?} under {lease:?}");

    // One deregisters: its key goes at once, the lease stays for the others.
    registrations.remove(&1).expect("registered").deregister().await.expect("deregistered");
    let (after, keys) = leases(&etcd).await;
    assert_eq!((after, keys.len()), (lease.clone(), 49));
    // One is dropped without deregistering (an aborted server): the lease it shares lives on,
    // so its key is deleted for it.
    drop(registrations.remove(&2));
    let expected: Vec<String> = (3..=50).map(key).collect();
    etcd.wait_keys(PREFIX, &expected).await;

    // etcd loses the lease: the keeper registers every key again under a new one.
    let mut client = etcd.client().await;
    within("etcd revokes", client.lease_revoke(lease[0])).await.expect("revoked");
    etcd.wait_keys(PREFIX, &expected).await;
    let (renewed, keys) = leases(&etcd).await;
    assert_eq!(renewed.len(), 1);
    assert_ne!(renewed, lease, "a new lease");
    assert!(keys.values().all(|&id| id == renewed[0]), "{keys:?} under {renewed:?}");

    // The last one out revokes it.
    for (_, registration) in registrations {
        registration.deregister().await.expect("deregistered");
    }
    assert_eq!(leases(&etcd).await, (vec![], BTreeMap::new()));
}

#[tokio::test]
async fn a_server_joining_a_shared_lease_that_etcd_lost_registers_them_all_again() {
    let Some(etcd) = EtcdServer::start("joining_a_lost_shared_lease").await else { return };
    // A long lease: its keeper renews every 20 s, so within this test it never learns that
    // etcd lost it, and the registration after the loss must find out for itself.
    let registry = EtcdRegistry::new(etcd.client().await, PREFIX).ttl(Duration::from_secs(60)).shared_lease();
    let first = registry.clone().register(Instance::new("127.0.0.1:1")).await.expect("registered");
    let (lease, _) = leases(&etcd).await;
    assert_eq!(lease.len(), 1);
    let mut client = etcd.client().await;
    within("etcd revokes", client.lease_revoke(lease[0])).await.expect("revoked");
    assert_eq!(leases(&etcd).await, (vec![], BTreeMap::new()), "the revoke took the first key with it");

    let second = registry.clone().register(Instance::new("127.0.0.1:2")).await.expect("registers under a new lease");
    let (renewed, keys) = leases(&etcd).await;
    assert_eq!(renewed.len(), 1, "one lease again: {renewed:?}");
    assert_ne!(renewed, lease);
    let expected: BTreeMap<String, i64> =
        [1, 2].into_iter().map(|port| (format!("{PREFIX}/127.0.0.1:{port}"), renewed[0])).collect();
    assert_eq!(keys, expected, "both servers, under the new lease");

    first.deregister().await.expect("deregistered");
    second.deregister().await.expect("deregistered");
    assert_eq!(leases(&etcd).await, (vec![], BTreeMap::new()));
}
