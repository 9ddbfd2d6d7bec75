//! The server's directory of connected peers: by name, broadcast, watch, and two connections
//! that announce one name. Real servers and channels over TCP; nothing sleeps: tests wait on the
//! directory's own events.

mod support;

use std::sync::Arc;

use support::Serving;
use zrpc_core::balance::RoundRobin;
use zrpc_core::discover::{Instance as Discovered, Static};
use zrpc_core::{Code, Context};
use zrpc_transport::{Channel, Client, PeerEvent, PeerWatch, Peers, Server};

/// What every client serves: who it is.
#[zrpc_macros::service(crate = "zrpc_core")]
pub trait Whoami {
    /// The name this instance was given, which need not be the name it announced.
    async fn whoami(&self) -> String;
    /// The text, with the instance's name.
    async fn tag(&self, ctx: &Context, text: String) -> String;
}

#[derive(Clone, Debug)]
struct Instance(&'static str);

impl Whoami for Instance {
    async fn whoami(&self) -> String {
        self.0.to_owned()
    }

    async fn tag(&self, ctx: &Context, text: String) -> String {
        format!("{text} to {} from {}", self.0, ctx.caller())
    }
}

async fn server() -> (Serving, Peers, zrpc_transport::Address) {
    let server = Server::builder().name("hub").bind("tcp://127.0.0.1:0").await.expect("bind");
    let peers = server.peers();
    let address = server.local_addr().clone();
    (Serving::spawn(server), peers, address)
}

/// A client that announces `name` and serves `Whoami` as `instance`.
async fn client(address: &zrpc_transport::Address, name: &str, instance: &'static str) -> Channel {
    Channel::builder(address.clone())
        .name(name)
        .serve(WhoamiServer::new(Instance(instance)))
        .connect()
        .await
        .expect("connects")
}

/// The next event that is not a `Lagged`, as `(joined, name)`.
async fn next(watch: &mut PeerWatch) -> (bool, Arc<str>) {
    match support::within("a directory event", watch.next()).await.expect("the directory lives") {
        PeerEvent::Joined { name, .. } => (true, name),
        PeerEvent::Left { name, .. } => (false, name),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn clients_are_listed_by_name_called_by_name_and_broadcast_to() {
    let (serving, peers, address) = server().await;
    let mut watch = peers.watch();
    let alice = client(&address, "alice", "alice-1").await;
    assert_eq!(next(&mut watch).await, (true, "alice".into()));
    let bob = client(&address, "bob", "bob-1").await;
    assert_eq!(next(&mut watch).await, (true, "bob".into()));

    assert_eq!(peers.names(), [Arc::from("alice"), Arc::from("bob")]);
    assert_eq!(peers.len(), 2);
    assert!(peers.contains("alice") && !peers.contains("carol"));
    assert_eq!(peers.get("bob").expect("listed").name(), "bob");

    // By name, through a generated client; the handler sees the server as its caller.
    let to_alice = WhoamiClient::new(peers.named("alice"));
    assert_eq!(to_alice.tag("hi".into()).await, Ok("hi to alice-1 from hub".to_owned()));

    // Broadcast: every client, typed, with its name; through the generated client's view, or
    // a closure per peer.
    let everyone = WhoamiClient::new(peers.clone());
    let mut answers = everyone.broadcast().whoami().await;
    answers.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(answers, [(Arc::from("alice"), Ok("alice-1".to_owned())), (Arc::from("bob"), Ok("bob-1".to_owned()))]);
    let mut answers = peers.broadcast(|peer| async move { WhoamiClient::new(peer).tag("all".into()).await }).await;
    answers.sort_by(|a, b| a.0.cmp(&b.0));
    let tagged = |to: &str| Ok(format!("all to {to} from hub"));
    assert_eq!(answers, [(Arc::from("alice"), tagged("alice-1")), (Arc::from("bob"), tagged("bob-1"))]);
    // Fork: the first of them to answer.
    let (name, answer) = everyone.fork(0).whoami().await.expect("both answer");
    assert!(matches!((&*name, answer.as_str()), ("alice", "alice-1") | ("bob", "bob-1")), "{name}: {answer}");

    // A client that leaves is unlisted, and calls by its name are refused, unprocessed.
    drop(alice);
    assert_eq!(next(&mut watch).await, (false, "alice".into()));
    assert_eq!(peers.names(), [Arc::from("bob")]);
    let status = to_alice.whoami().await.expect_err("alice left");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.is_unprocessed(), "{status:?}");
    assert!(status.message().contains("\"alice\"") && status.message().contains("\"bob\""), "{status}");

    drop(bob);
    assert_eq!(next(&mut watch).await, (false, "bob".into()));
    assert!(peers.is_empty());
    let nobody = everyone.broadcast().whoami().await;
    assert!(matches!(&nobody[..], [(name, Err(status))] if name.is_empty() && status.is_unprocessed()), "{nobody:?}");
    let status = everyone.fork(1).whoami().await.expect_err("nobody to ask");
    assert_eq!((status.code(), status.is_unprocessed()), (Code::Unavailable, true), "{status}");
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn a_watch_starts_with_the_peers_connected_now() {
    let (serving, peers, address) = server().await;
    let carol = client(&address, "carol", "carol-1").await;
    // Connected and listed before the watch begins: the channel's first call made sure.
    assert_eq!(WhoamiClient::new(carol.clone()).whoami().await.map_err(|s| s.code()), Err(Code::NotFound));
    let mut watch = peers.watch();
    assert_eq!(next(&mut watch).await, (true, "carol".into()), "listed when the watch began");
    drop(carol);
    assert_eq!(next(&mut watch).await, (false, "carol".into()));
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn of_two_connections_with_one_name_the_newest_answers_to_it() {
    let (serving, peers, address) = server().await;
    let mut watch = peers.watch();
    let first = client(&address, "twin", "twin-a").await;
    assert_eq!(next(&mut watch).await, (true, "twin".into()));
    let second = client(&address, "twin", "twin-b").await;
    assert_eq!(next(&mut watch).await, (true, "twin".into()));

    assert_eq!(peers.len(), 2, "both connections are listed");
    assert_eq!(peers.names(), [Arc::from("twin")]);
    let twin = WhoamiClient::new(peers.named("twin"));
    assert_eq!(twin.whoami().await, Ok("twin-b".to_owned()), "the newest answers to the name");
    let mut all = peers.broadcast(|peer| async move { WhoamiClient::new(peer).whoami().await }).await;
    all.sort_by_key(|(_, answer)| answer.clone().unwrap_or_default());
    assert_eq!(all, [(Arc::from("twin"), Ok("twin-a".to_owned())), (Arc::from("twin"), Ok("twin-b".to_owned()))]);

    // When the newest leaves, the name goes back to the one left.
    drop(second);
    assert_eq!(next(&mut watch).await, (false, "twin".into()));
    assert_eq!(twin.whoami().await, Ok("twin-a".to_owned()));
    drop(first);
    assert_eq!(next(&mut watch).await, (false, "twin".into()));
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn every_connection_of_a_client_serves_what_it_serves() {
    let (first, first_peers, first_address) = server().await;
    let (second, second_peers, second_address) = server().await;
    let instances = [first_address.to_string(), second_address.to_string()].map(Discovered::new);
    let client = Client::builder()
        .name("fleet")
        .discover(Static::new(instances))
        .balance(RoundRobin::new())
        .serve(WhoamiServer::new(Instance("fleet-1")))
        .build();
    let (mut first_watch, mut second_watch) = (first_peers.watch(), second_peers.watch());
    // Round robin: one call reaches each server, and with it each connection opens.
    let hub = WhoamiClient::new(client.clone());
    for _ in 0..2 {
        assert_eq!(hub.whoami().await.map_err(|s| s.code()), Err(Code::NotFound), "the servers serve nothing");
    }
    assert_eq!(next(&mut first_watch).await, (true, "fleet".into()));
    assert_eq!(next(&mut second_watch).await, (true, "fleet".into()));
    for peers in [&first_peers, &second_peers] {
        let fleet = WhoamiClient::new(peers.named("fleet"));
        assert_eq!(fleet.tag("ping".into()).await, Ok("ping to fleet-1 from hub".to_owned()));
    }
    drop((hub, client));
    first.shutdown().await.expect("serve succeeded");
    second.shutdown().await.expect("serve succeeded");
}
