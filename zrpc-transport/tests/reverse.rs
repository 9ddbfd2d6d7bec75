//! Calls in both directions over one connection, run over every transport: the server calls
//! the client back through the peer its handler was given, and the client serves.
//!
//! Each test connects a channel that serves the transport tests' `Test` service (as the server
//! in `e2e.rs` does) and greets the server, whose `Hub` handler hands the test the calling
//! peer, `ctx.peer()`. The test then calls the client through it with a generated client, the
//! way a handler would, and checks that this direction behaves as the forward one does.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::transport::Kind;
use support::{Events, Seen, Serving, TestClient, TestServer, TestService};
use tokio::sync::mpsc;
use tower::ServiceExt;
use zrpc_core::{Code, Context, Peer, Request, Status};
use zrpc_transport::{Channel, ChannelBuilder, Server, ServerBuilder};

/// The server's service: hands the test the peer of each caller.
#[zrpc_macros::service(crate = "zrpc_core")]
pub trait Hub {
    /// Keeps the caller as a peer for the test; answers the caller's name as the server sees it.
    async fn greet(&self, ctx: &Context) -> String;
    /// Calls `Test.wait(tag)` back on the caller and answers what that call ended with.
    async fn call_back_waiting(&self, ctx: &Context, tag: String) -> String;
}

#[derive(Clone, Debug)]
struct HubService {
    peers: mpsc::UnboundedSender<Peer>,
}

impl Hub for HubService {
    async fn greet(&self, ctx: &Context) -> String {
        let _ = self.peers.send(ctx.peer());
        ctx.caller().to_owned()
    }

    async fn call_back_waiting(&self, ctx: &Context, tag: String) -> String {
        match TestClient::new(ctx.peer()).wait(tag).await {
            Ok(answer) => answer,
            Err(status) => format!("failed: {status}"),
        }
    }
}

/// Served by both ends: a call that bounces between them.
#[zrpc_macros::service(crate = "zrpc_core")]
pub trait Bounce {
    /// The names of the ends this call went through: this one, then `depth` more, each calling
    /// back the end that called it.
    async fn bounce(&self, ctx: &Context, depth: u32) -> Vec<String>;
}

#[derive(Clone, Debug)]
struct Bouncer {
    name: &'static str,
}

impl Bounce for Bouncer {
    async fn bounce(&self, ctx: &Context, depth: u32) -> Vec<String> {
        let mut path = vec![self.name.to_owned()];
        if depth > 0 {
            match BounceClient::new(ctx.peer()).with_context(ctx.child()).bounce(depth - 1).await {
                Ok(rest) => path.extend(rest),
                Err(status) => path.push(format!("failed: {status}")),
            }
        }
        path
    }
}

/// A server, and a client connected to it that serves `Test` and `Bounce`.
struct Ends {
    serving: Serving,
    channel: Channel,
    /// The server's view of the client: what its handlers get as `ctx.peer()`.
    peer: Peer,
    /// What the client's `Test` handlers report.
    events: Events,
    /// More peers, as further channels greet the server.
    peers: mpsc::UnboundedReceiver<Peer>,
}

impl Ends {
    /// The client, called from the server's side.
    fn reverse(&self) -> TestClient<Peer> {
        TestClient::new(self.peer.clone())
    }

    async fn shutdown(self) {
        drop(self.channel);
        self.serving.shutdown().await.expect("serve succeeded");
    }
}

async fn ends(kind: Kind, dir: &tempfile::TempDir) -> Ends {
    ends_with(kind, dir, |b| b, |c| c).await
}

async fn ends_with(
    kind: Kind,
    dir: &tempfile::TempDir,
    server: impl FnOnce(ServerBuilder) -> ServerBuilder,
    client: impl FnOnce(ChannelBuilder) -> ChannelBuilder,
) -> Ends {
    let (peers_tx, mut peers) = mpsc::unbounded_channel();
    let builder = kind.server(Server::builder().name("server-1"));
    let bound = server(builder)
        .add_service(HubServer::new(HubService { peers: peers_tx }))
        .add_service(BounceServer::new(Bouncer { name: "server-1" }))
        .bind(kind.address(dir))
        .await
        .expect("bind");
    let address = bound.local_addr().clone();
    let serving = Serving::spawn(bound);

    let (probe, events) = support::probe();
    let builder = kind.channel(Channel::builder(address).name("client-7"));
    let channel = client(builder)
        .serve(TestServer::new(TestService::new(probe)))
        .serve(BounceServer::new(Bouncer { name: "client-7" }))
        .connect()
        .await
        .expect("connects");
    assert_eq!(HubClient::new(channel.clone()).greet().await, Ok("client-7".to_owned()));
    let peer = support::within("the server's handler hands over its peer", peers.recv()).await.expect("a peer");
    Ends { serving, channel, peer, events, peers }
}

async fn the_server_calls_the_client_back(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ends = ends(kind, &dir).await;
    assert_eq!(ends.peer.name(), "client-7", "the peer is named as it announced itself");
    assert!(ends.peer.is_connected());
    assert_eq!(ends.reverse().echo("back".into()).await, Ok("back".to_owned()));
    assert_eq!(ends.reverse().caller().await, Ok("server-1".to_owned()), "the client's handler sees the server");
    // The forward direction is unaffected.
    assert_eq!(HubClient::new(ends.channel.clone()).greet().await, Ok("client-7".to_owned()));
    ends.shutdown().await;
}

async fn many_reverse_calls_in_flight_answered_out_of_order(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ends = ends(kind, &dir).await;
    let first = tokio::spawn(ends.reverse().wait("first".into()));
    assert_eq!(ends.events.next().await, Seen::Started("first".into()));
    let calls = (0..200).map(|i| {
        let client = ends.reverse();
        tokio::spawn(async move { client.echo(format!("call {i}")).await })
    });
    for (i, answer) in futures::future::join_all(calls).await.into_iter().enumerate() {
        assert_eq!(answer.expect("task"), Ok(format!("call {i}")));
    }
    assert!(!first.is_finished(), "the first call is still waiting");
    ends.events.release();
    assert_eq!(first.await.expect("task"), Ok("first".to_owned()));
    ends.shutdown().await;
}

async fn unknown_methods_on_the_client_are_not_found(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ends = ends(kind, &dir).await;
    let status = ends.peer.clone().oneshot(Request::new("Test.missing", Bytes::new())).await.expect_err("no method");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("Test.missing"), "{status}");
    let status = ends.peer.clone().oneshot(Request::new("Hub.greet", Bytes::new())).await.expect_err("not served");
    assert_eq!(status.code(), Code::NotFound, "the client does not serve the server's services: {status}");
    assert!(status.message().contains("Bounce") && status.message().contains("Test"), "lists them: {status}");
    ends.shutdown().await;
}

async fn a_reverse_deadline_fails_the_call_and_drops_the_handler(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ends = ends(kind, &dir).await;
    let hurried = ends.reverse().with_context(Context::new().with_timeout(Duration::from_millis(100)));
    let status = hurried.wait("late".into()).await.expect_err("deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(status.message().contains("Test.wait"), "names the method: {status}");
    assert_eq!(ends.events.next().await, Seen::Started("late".into()));
    assert_eq!(ends.events.next().await, Seen::Dropped("late".into()));
    ends.shutdown().await;
}

async fn dropping_a_reverse_call_cancels_its_handler(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ends = ends(kind, &dir).await;
    let call = tokio::spawn(ends.reverse().wait("abandoned".into()));
    assert_eq!(ends.events.next().await, Seen::Started("abandoned".into()));
    call.abort();
    assert_eq!(ends.events.next().await, Seen::Dropped("abandoned".into()));
    assert_eq!(ends.reverse().echo("next".into()).await, Ok("next".to_owned()));
    ends.shutdown().await;
}

async fn a_panicking_client_handler_is_internal(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ends = ends(kind, &dir).await;
    let status = ends.reverse().panic().await.expect_err("panicked");
    assert_eq!(status.code(), Code::Internal);
    assert!(status.message().contains("Test.panic"), "{status}");
    assert_eq!(ends.reverse().echo("alive".into()).await, Ok("alive".to_owned()));
    ends.shutdown().await;
}

async fn oneway_reverse_calls_are_handled(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ends = ends(kind, &dir).await;
    assert_eq!(ends.reverse().log("pushed".into()).await, Ok(()));
    assert_eq!(ends.events.next().await, Seen::Logged("pushed".into()));
    ends.shutdown().await;
}

async fn nested_callbacks_complete(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ends = ends(kind, &dir).await;
    // client → server → client → server → client → server: callbacks five deep, each end's
    // handler waiting on a call to the end that is waiting on it.
    let path = BounceClient::new(ends.channel.clone()).bounce(5).await.expect("bounced");
    assert_eq!(path, ["server-1", "client-7", "server-1", "client-7", "server-1", "client-7"]);
    // And starting from the server's side.
    let path = BounceClient::new(ends.peer.clone()).bounce(3).await.expect("bounced");
    assert_eq!(path, ["client-7", "server-1", "client-7", "server-1"]);
    ends.shutdown().await;
}

async fn metadata_and_deadlines_reach_the_client(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ends = ends(kind, &dir).await;
    // The server's default deadline (10 s) travels with a reverse call that sets none.
    let left = ends.reverse().remaining().await.expect("answered").expect("a deadline");
    assert!(left <= Duration::from_secs(10) && left > Duration::from_secs(1), "{left:?}");
    let left = ends
        .reverse()
        .with_context(Context::new().with_timeout(Duration::from_secs(300)))
        .remaining()
        .await
        .expect("answered")
        .expect("a deadline");
    assert!(left > Duration::from_secs(200), "the caller's own deadline is kept: {left:?}");
    // Metadata travels both ways alike.
    let tagged = ends.reverse().with_context(Context::new().with_metadata("tenant", "blue"));
    assert_eq!(tagged.metadata("tenant".into()).await, Ok(Some(b"blue".to_vec())));
    assert_eq!(ends.reverse().metadata("tenant".into()).await, Ok(None));
    ends.shutdown().await;
}

over_every_transport!(
    the_server_calls_the_client_back,
    many_reverse_calls_in_flight_answered_out_of_order,
    unknown_methods_on_the_client_are_not_found,
    a_reverse_deadline_fails_the_call_and_drops_the_handler,
    dropping_a_reverse_call_cancels_its_handler,
    a_panicking_client_handler_is_internal,
    oneway_reverse_calls_are_handled,
    nested_callbacks_complete,
    metadata_and_deadlines_reach_the_client,
);

// One thread: every handler reports `Started` from the connection task's turn that started it
// (its first poll is inline) or later, so the stats that turn published are there to read.
#[tokio::test]
async fn a_thousand_reverse_calls_while_a_thousand_forward_calls_are_in_flight() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ends = ends(Kind::Tcp, &dir).await;
    // 1,000 forward calls, each held in the server's handler on a reverse `Test.wait` to the
    // client, held in turn in the client's handler until the test releases them: 1,000 calls
    // in flight each way on one connection, 2,000 handlers waiting, at the default limit of
    // 1,000 requests in progress per direction.
    let hub = HubClient::new(ends.channel.clone());
    let forward: Vec<_> = (0..1000)
        .map(|i| {
            let hub = hub.clone();
            tokio::spawn(async move { hub.call_back_waiting(format!("call {i}")).await })
        })
        .collect();
    for _ in 0..1000 {
        assert!(matches!(ends.events.next().await, Seen::Started(_)));
    }
    let stats = ends.channel.stats().expect("connected");
    assert_eq!(stats.requests_in_progress, 1000, "the server's calls the client is handling: {stats:?}");
    assert_eq!(stats.calls_pending, 1000, "the client's calls the server is handling: {stats:?}");
    ends.events.release();
    for (i, call) in forward.into_iter().enumerate() {
        assert_eq!(call.await.expect("task"), Ok(format!("call {i}")));
    }
    assert!(ends.peers.try_recv().is_err(), "one connection, one peer");
    ends.shutdown().await;
}

/// A server on TCP with only the `Hub`, and the peers its greeters hand over.
async fn hub_alone() -> (Serving, zrpc_transport::Address, mpsc::UnboundedReceiver<Peer>) {
    let (peers_tx, peers) = mpsc::unbounded_channel();
    let server = Server::builder()
        .name("server-1")
        .add_service(HubServer::new(HubService { peers: peers_tx }))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind");
    let address = server.local_addr().clone();
    (Serving::spawn(server), address, peers)
}

#[tokio::test]
async fn a_channel_that_serves_nothing_refuses_the_servers_calls() {
    let (serving, address, mut peers) = hub_alone().await;
    let channel = Channel::builder(address).name("plain").connect().await.expect("connects");
    assert_eq!(HubClient::new(channel.clone()).greet().await, Ok("plain".to_owned()));
    let peer = peers.recv().await.expect("a peer");
    let status = TestClient::new(peer).echo("anyone?".into()).await.expect_err("refused");
    assert_eq!(status.code(), Code::NotFound, "{status}");
    assert!(status.message().contains("serves no services"), "{status}");
    drop(channel);
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn a_context_from_no_connection_has_a_detached_peer() {
    let ctx = Context::new();
    assert!(!ctx.has_peer());
    let status: Status = TestClient::new(ctx.peer()).echo("x".into()).await.expect_err("nobody to call");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.is_unprocessed());
}

#[tokio::test]
async fn a_peer_that_disconnects_while_being_called_fails_the_call_at_once() {
    let (serving, address, mut peers) = hub_alone().await;
    let address = address.to_string();
    let mut raw = support::raw::RawPeer::connect(address.trim_start_matches("tcp://")).await;
    raw.handshake("raw-client").await;
    raw.send_request(&support::raw::request(1, "Hub.greet", support::raw::postcard(&()))).await;
    assert_eq!(raw.next_response().await.code, 0, "greeted");
    let peer = peers.recv().await.expect("a peer");
    assert_eq!(peer.name(), "raw-client");

    let call = tokio::spawn(TestClient::new(peer.clone()).echo("are you there?".into()));
    match raw.next_frame().await {
        zrpc_transport::frame::Frame::Request(request) => assert_eq!(request.method_str(), "Test.echo"),
        other => panic!("expected the server's call, got {other:?}"),
    }
    drop(raw);
    // The call reached the client, which may have handled it: Unavailable, not unprocessed.
    let status = support::within("the call fails", call).await.expect("task").expect_err("the peer left");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(!status.is_unprocessed(), "it was sent, so it may have been handled: {status:?}");
    // A call after the connection closed never left: unprocessed.
    assert!(!peer.is_connected());
    let status = TestClient::new(peer).echo("anyone?".into()).await.expect_err("gone");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.is_unprocessed(), "{status:?}");
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn a_draining_server_finishes_its_calls_to_the_client_and_starts_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ends = ends(Kind::Tcp, &dir).await;
    let in_flight = tokio::spawn(ends.reverse().wait("draining".into()));
    assert_eq!(ends.events.next().await, Seen::Started("draining".into()));
    ends.serving.begin_shutdown();
    // The server's GOAWAY is queued when draining begins, a step after the signal; from then on
    // it starts no call to the client either.
    let reverse = ends.reverse();
    let refused =
        support::first_refusal("new reverse calls refused by a draining server", || reverse.echo("x".into())).await;
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    assert!(refused.is_unprocessed(), "{refused:?}");
    assert!(!ends.peer.is_connected());
    ends.events.release();
    assert_eq!(in_flight.await.expect("task"), Ok("draining".to_owned()));
    ends.shutdown().await;
}

#[tokio::test]
async fn a_client_that_drops_its_channel_finishes_the_servers_calls_and_takes_no_more() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Ends { serving, channel, peer, mut events, .. } = ends(Kind::Tcp, &dir).await;
    let in_flight = tokio::spawn(TestClient::new(peer.clone()).wait("last".into()));
    assert_eq!(events.next().await, Seen::Started("last".into()));
    // Nobody can call through the client's connection any more: it drains, as a server
    // shutting down does.
    drop(channel);
    let reverse = TestClient::new(peer.clone());
    let refused =
        support::first_refusal("the server's calls refused by a draining client", || reverse.echo("x".into())).await;
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    assert!(refused.is_unprocessed(), "{refused:?}");
    events.release();
    assert_eq!(in_flight.await.expect("task"), Ok("last".to_owned()), "the call in flight is answered");
    serving.handle().wait_for_connections(|connections| connections.is_empty()).await;
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn the_clients_limits_hold_back_the_servers_calls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ends = ends_with(Kind::Tcp, &dir, |s| s, |c| c.max_requests(2)).await;
    // Five calls from the server; the client announced it takes two at a time.
    let calls: Vec<_> = (0..5).map(|i| tokio::spawn(ends.reverse().wait(format!("w{i}")))).collect();
    for _ in 0..2 {
        assert!(matches!(ends.events.next().await, Seen::Started(_)));
    }
    ends.serving
        .handle()
        .wait_for_connections(|connections| connections.iter().any(|c| c.stats.calls_waiting == 3))
        .await;
    let stats = ends.channel.stats().expect("connected");
    assert_eq!(stats.requests_in_progress, 2, "{stats:?}");
    // Released, the first two answer and let the rest go, two at a time.
    ends.events.release();
    for _ in 0..3 {
        assert!(matches!(ends.events.next().await, Seen::Started(_)));
        ends.events.release();
    }
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.expect("task"), Ok(format!("w{i}")));
    }
    ends.shutdown().await;
}

#[tokio::test]
async fn a_channels_layers_wrap_what_it_serves_first_added_outermost() {
    let dir = tempfile::tempdir().expect("temp dir");
    let layered = |c: ChannelBuilder| c.layer(support::outer_layer()).layer(support::inner_layer());
    let ends = ends_with(Kind::Tcp, &dir, |s| s, layered).await;
    let status = ends.reverse().echo("x".into()).await.expect_err("refused by the layers");
    support::assert_layered_in_order(&status);
    // The forward direction does not go through them.
    assert_eq!(HubClient::new(ends.channel.clone()).greet().await, Ok("client-7".to_owned()));
    ends.shutdown().await;
}
