//! One end-to-end suite, run over every transport: TCP, Unix sockets, in-memory pipes, and with
//! the `tls` feature TLS over TCP.
//!
//! Every test starts a real server and talks to it through a real `Channel`. Nothing sleeps:
//! tests wait on events the handlers report (see `support`).

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::transport::Kind;
use support::{Events, Seen, Serving, TestClient, TestServer, TestService};
use tower::ServiceExt;
use zrpc_core::{Code, Context, Request, Response, Status};
use zrpc_transport::{Address, Backoff, Channel, ChannelBuilder, Server, ServerBuilder};

/// A running server and what a test needs to reach and stop it.
struct Running {
    kind: Kind,
    address: Address,
    events: Events,
    serving: Serving,
    service: TestService,
}

impl Running {
    async fn shutdown(self) -> Events {
        self.serving.shutdown().await.expect("serve succeeded");
        self.events
    }
}

async fn start_at(kind: Kind, address: &Address, tweak: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Running {
    let (probe, events) = support::probe();
    let service = TestService::new(probe);
    let builder = kind.server(Server::builder().name("server-1").drain_timeout(Duration::from_secs(30)));
    let server = tweak(builder).add_service(TestServer::new(service.clone())).bind(address).await.expect("bind");
    let address = server.local_addr().clone();
    Running { kind, address, events, serving: Serving::spawn(server), service }
}

async fn start(kind: Kind, dir: &tempfile::TempDir) -> Running {
    start_at(kind, &kind.address(dir), |b| b).await
}

/// A channel to `address` that speaks what a server of `kind` does.
fn channel_to(kind: Kind, address: &Address) -> ChannelBuilder {
    kind.channel(Channel::builder(address.clone()))
}

async fn client(server: &Running) -> TestClient<Channel> {
    let channel = channel_to(server.kind, &server.address).name("client-7").connect().await.expect("connects");
    TestClient::new(channel)
}

/// Calls `method`, with no arguments, through `client`'s channel.
async fn call_unknown(client: &TestClient<Channel>, method: &'static str) -> Result<Response, Status> {
    client.inner().clone().oneshot(Request::new(method, Bytes::new())).await
}

async fn echo_round_trip(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(kind, &dir).await;
    let client = client(&server).await;
    assert_eq!(client.echo("hello".into()).await, Ok("hello".to_owned()));
    assert_eq!(client.echo("".into()).await, Ok(String::new()));
    server.shutdown().await;
}

async fn many_calls_in_flight_answered_out_of_order(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start(kind, &dir).await;
    let client = client(&server).await;

    let first = tokio::spawn(client.wait("first".into()));
    assert_eq!(server.events.next().await, Seen::Started("first".into()));

    // While the first call is held on the server, many later ones complete around it, from
    // clones sharing the connection.
    let calls = (0..200).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.echo(format!("call {i}")).await })
    });
    let answers = futures::future::join_all(calls).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.expect("task"), Ok(format!("call {i}")));
    }
    assert!(!first.is_finished(), "the first call is still waiting");

    server.events.release();
    assert_eq!(first.await.expect("task"), Ok("first".to_owned()));
    server.shutdown().await;
}

async fn unknown_methods_and_services_are_not_found(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(kind, &dir).await;
    let client = client(&server).await;

    let status = call_unknown(&client, "Test.missing").await.expect_err("no such method");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("Test.missing"), "{status}");

    let status = call_unknown(&client, "Nope.echo").await.expect_err("no such service");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("\"Nope\""), "{status}");
    assert!(status.message().contains("Test"), "lists what the server has: {status}");

    assert_eq!(client.echo("still fine".into()).await, Ok("still fine".to_owned()));
    server.shutdown().await;
}

async fn handlers_see_the_callers_name(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(kind, &dir).await;
    let client = client(&server).await;
    assert_eq!(client.caller().await, Ok("client-7".to_owned()));
    assert_eq!(client.inner().peer_name().as_deref(), Some("server-1"));
    assert_eq!(*server.service.callers.lock().expect("not poisoned"), ["client-7"]);
    server.shutdown().await;
}

async fn a_deadline_fails_the_call_and_drops_the_handler(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start(kind, &dir).await;
    let client = client(&server).await;

    let hurried = client.with_context(Context::new().with_timeout(Duration::from_millis(100)));
    let status = hurried.wait("late".into()).await.expect_err("deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(status.message().contains("Test.wait"), "names the method: {status}");
    assert_eq!(server.events.next().await, Seen::Started("late".into()));
    assert_eq!(server.events.next().await, Seen::Dropped("late".into()));
    server.shutdown().await;
}

async fn dropping_a_call_cancels_its_handler(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start(kind, &dir).await;
    let client = client(&server).await;

    let call = tokio::spawn(client.wait("abandoned".into()));
    assert_eq!(server.events.next().await, Seen::Started("abandoned".into()));
    call.abort();
    assert_eq!(server.events.next().await, Seen::Dropped("abandoned".into()));
    assert_eq!(client.echo("next".into()).await, Ok("next".to_owned()));
    server.shutdown().await;
}

async fn a_panicking_handler_is_internal_and_the_server_keeps_serving(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(kind, &dir).await;
    let client = client(&server).await;
    let status = client.panic().await.expect_err("panicked");
    assert_eq!(status.code(), Code::Internal);
    assert!(status.message().contains("Test.panic"), "{status}");
    assert_eq!(client.echo("alive".into()).await, Ok("alive".to_owned()));
    server.shutdown().await;
}

async fn oneway_calls_return_once_sent_and_are_handled(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start(kind, &dir).await;
    let client = client(&server).await;
    assert_eq!(client.log("fire and forget".into()).await, Ok(()));
    assert_eq!(server.events.next().await, Seen::Logged("fire and forget".into()));
    server.shutdown().await;
}

async fn frame_limits_are_enforced_on_both_sides(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_at(kind, &kind.address(&dir), |b| b.max_frame(4096)).await;
    let channel = channel_to(kind, &server.address).max_frame(2048).connect().await.expect("connects");
    let client = TestClient::new(channel);

    // The request would exceed the server's announced limit: refused before sending.
    let status = client.echo("x".repeat(5000)).await.expect_err("too large to send");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("4096"), "{status}");

    // The response would exceed the client's limit: the server answers with an error instead.
    let status = client.sized(3000).await.expect_err("too large to answer");
    assert_eq!(status.code(), Code::ResourceExhausted);

    assert_eq!(client.sized(100).await.map(|v| v.len()), Ok(100), "the connection is still fine");
    server.shutdown().await;
}

/// `Duration::MAX` for "no heartbeat" (and for a call's timeout): the connection's task added
/// it to an instant and panicked, on both ends.
async fn durations_too_long_for_the_clock_mean_never(kind: Kind) {
    no_heartbeat_as(kind, Duration::MAX).await;
}

/// Zero for "no heartbeat", as a zero socket timeout is none: the server gave up every
/// handshake at once (its TLS handshake too), and both ends pinged on every quiet instant.
async fn a_heartbeat_of_zero_means_never(kind: Kind) {
    no_heartbeat_as(kind, Duration::ZERO).await;
}

/// Both ends with `time` as heartbeat interval and timeout: they connect, and calls, one with
/// a timeout of `Duration::MAX`, are answered.
async fn no_heartbeat_as(kind: Kind, time: Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_at(kind, &kind.address(&dir), |b| b.heartbeat(time, time)).await;
    let channel = channel_to(kind, &server.address).heartbeat(time, time).connect().await;
    let client = TestClient::new(channel.expect("connects"));
    assert_eq!(client.echo("ping".into()).await, Ok("ping".to_owned()));
    let patient = client.with_context(Context::new().with_timeout(Duration::MAX));
    assert_eq!(patient.echo("forever".into()).await, Ok("forever".to_owned()));
    server.shutdown().await;
}

async fn graceful_shutdown_drains_calls_in_flight(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start(kind, &dir).await;
    let client = client(&server).await;

    let in_flight = tokio::spawn(client.wait("draining".into()));
    assert_eq!(server.events.next().await, Seen::Started("draining".into()));
    server.serving.begin_shutdown();

    // Calls made before the GOAWAY arrives may still be served; once it has, new calls are
    // refused with Unavailable. The GOAWAY is a few frames away, so this ends quickly.
    let refused =
        support::first_refusal("new calls are refused after GOAWAY", || client.echo("after shutdown".into())).await;
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");

    // The call in flight still completes, and then the server stops.
    server.events.release();
    assert_eq!(in_flight.await.expect("task"), Ok("draining".to_owned()));
    server.shutdown().await;
}

async fn the_drain_deadline_aborts_calls_still_running(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start_at(kind, &kind.address(&dir), |b| b.drain_timeout(Duration::from_millis(50))).await;
    let client = client(&server).await;

    let stuck = tokio::spawn(client.wait("stuck".into()));
    assert_eq!(server.events.next().await, Seen::Started("stuck".into()));
    server.serving.begin_shutdown();
    // Nobody releases the handler: shutdown ends at the drain deadline and aborts it.
    assert_eq!(server.events.next().await, Seen::Dropped("stuck".into()));
    let status = stuck.await.expect("task").expect_err("the call was cut off");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    server.shutdown().await;
}

async fn the_client_reconnects_when_the_server_comes_back(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(kind, &dir).await;
    let address = server.address.clone();
    let channel = channel_to(kind, &address)
        .backoff(Backoff::new(Duration::from_millis(5), Duration::from_millis(20)))
        .wait_for_ready(true)
        .connect()
        .await
        .expect("connects");
    let client = TestClient::new(channel);
    assert_eq!(client.echo("before".into()).await, Ok("before".to_owned()));

    server.shutdown().await;
    let hurried = client.with_context(Context::new().with_timeout(Duration::from_millis(50)));
    let status = hurried.echo("while down".into()).await.expect_err("nobody listens");
    assert!(matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded), "{status}");
    assert!(status.is_unprocessed(), "no connection, so the call never reached a server: {status:?}");

    let server = start_at(kind, &address, |b| b).await;
    let patient = client.with_context(Context::new().with_timeout(Duration::from_secs(20)));
    assert_eq!(patient.echo("after".into()).await, Ok("after".to_owned()));
    server.shutdown().await;
}

over_every_transport!(
    echo_round_trip,
    many_calls_in_flight_answered_out_of_order,
    unknown_methods_and_services_are_not_found,
    handlers_see_the_callers_name,
    a_deadline_fails_the_call_and_drops_the_handler,
    dropping_a_call_cancels_its_handler,
    a_panicking_handler_is_internal_and_the_server_keeps_serving,
    oneway_calls_return_once_sent_and_are_handled,
    frame_limits_are_enforced_on_both_sides,
    durations_too_long_for_the_clock_mean_never,
    a_heartbeat_of_zero_means_never,
    graceful_shutdown_drains_calls_in_flight,
    the_drain_deadline_aborts_calls_still_running,
    the_client_reconnects_when_the_server_comes_back,
);
