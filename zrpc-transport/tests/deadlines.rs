//! Default deadlines: no call through a `Channel` or a `Client` waits forever unless it says so.
//!
//! The server's `wait` handler never answers unless released, while the connection stays
//! healthy (heartbeats are answered), which is the case a default deadline exists for. Time is
//! tokio's paused clock, moved by the runtime when every task is idle or by the test with
//! `advance`; the servers are in-memory (`mem://`), whose pipes wake their readers as tasks do,
//! so no socket can be outrun by a clock that jumps. Timings asserted are those of the virtual
//! clock, exact by construction; whether a call is still waiting is asked with `poll!`, never
//! inferred from elapsed time.

mod support;

use std::time::Duration;

use futures::poll;
use support::{Events, Seen, Serving, TestClient, TestServer, TestService, within};
use tokio::time::Instant;
use tower::Service;
use zrpc_core::discover::Static;
use zrpc_core::{Code, CodecId, Context, FailMode, Request, Response, Status};
use zrpc_transport::{Address, Channel, ChannelBuilder, Client, ClientBuilder, Server};

/// The default of channels and clients alike.
const DEFAULT: Duration = Duration::from_secs(10);

/// An in-memory server running [`TestService`].
async fn serve(name: &str) -> (Address, Events, Serving) {
    let (probe, events) = support::probe();
    let server = Server::builder()
        .name(name)
        .add_service(TestServer::new(TestService::new(probe)))
        .bind("mem://")
        .await
        .expect("bind");
    (server.local_addr().clone(), events, Serving::spawn(server))
}

async fn over_channel(builder: ChannelBuilder) -> TestClient<Channel> {
    TestClient::new(builder.name("deadlines").connect().await.expect("connects"))
}

fn client_to(addresses: &[&Address]) -> ClientBuilder {
    Client::builder().name("deadlines").discover(Static::new(addresses.iter().map(|a| a.to_string())))
}

/// The bounds of the services a `TestClient` calls through.
trait Calls: Service<Request, Response = Response, Error = Status, Future: Send> + Clone + Send + 'static {}

impl<S> Calls for S where S: Service<Request, Response = Response, Error = Status, Future: Send> + Clone + Send + 'static
{}

/// Checks that calls through `client` have `deadline`: the server sees it as the time left, and
/// a call that gets no answer fails with `DeadlineExceeded` when it passes, not before or after.
/// Returns that failure.
async fn bounded_by(client: &TestClient<impl Calls>, deadline: Duration) -> Status {
    assert_eq!(client.remaining().await, Ok(Some(deadline)), "the time left, as the server sees it");
    let start = Instant::now();
    let status = within("the call fails", client.wait("bounded".into())).await.expect_err("no answer can come");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert_eq!(start.elapsed(), deadline, "{status}");
    status
}

/// Checks that calls through `client` have no deadline: the server sees none, and a call that
/// gets no answer is still waiting a minute on, past any default, heartbeats and all; it is
/// answered once the handler is released.
async fn unbounded(client: &TestClient<impl Calls>, events: &mut Events) {
    assert_eq!(client.remaining().await, Ok(None), "the time left, as the server sees it");
    let mut call = std::pin::pin!(client.wait("unbounded".into()));
    assert!(poll!(call.as_mut()).is_pending());
    assert_eq!(events.next().await, Seen::Started("unbounded".into()));
    // A second at a time, so that heartbeats and timers run as they come due.
    for second in 1..=60 {
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(poll!(call.as_mut()).is_pending(), "the call ended {second} s in");
    }
    events.release();
    assert_eq!(within("the released call", call).await, Ok("unbounded".to_owned()));
}

// ---------------------------------------------------------------------------------------------
// Channel

#[tokio::test(start_paused = true)]
async fn a_channel_gives_a_call_without_a_deadline_its_default() {
    let (address, mut events, serving) = serve("stuck-1").await;
    let client = over_channel(Channel::builder(address)).await;
    let status = bounded_by(&client, DEFAULT).await;
    assert_eq!(status.message(), "deadline of 10.0s (the channel's default) exceeded calling Test.wait on stuck-1");
    // The handler was stopped at the deadline too.
    assert_eq!(events.next().await, Seen::Started("bounded".into()));
    assert_eq!(events.next().await, Seen::Dropped("bounded".into()));
    serving.shutdown().await.expect("served");
}

#[tokio::test(start_paused = true)]
async fn a_channel_call_without_deadline_by_choice_waits_as_long_as_it_takes() {
    let (address, mut events, serving) = serve("stuck-2").await;
    let client = over_channel(Channel::builder(address)).await;
    unbounded(&client.with_context(Context::new().without_deadline()), &mut events).await;
    serving.shutdown().await.expect("served");
}

#[tokio::test(start_paused = true)]
async fn a_channel_without_a_default_lets_calls_wait() {
    let (address, mut events, serving) = serve("stuck-3").await;
    unbounded(&over_channel(Channel::builder(address).default_timeout(None)).await, &mut events).await;
    serving.shutdown().await.expect("served");
}

#[tokio::test(start_paused = true)]
async fn a_channel_keeps_the_callers_own_deadline_longer_or_shorter() {
    let (address, _events, serving) = serve("stuck-4").await;
    let client = over_channel(Channel::builder(address).default_timeout(Some(DEFAULT))).await;
    for deadline in [DEFAULT * 3, Duration::from_secs(2)] {
        bounded_by(&client.with_context(Context::new().with_timeout(deadline)), deadline).await;
    }
    serving.shutdown().await.expect("served");
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_connection_ends_at_the_channels_default_and_says_so() {
    // Nothing is bound at this name: with wait_for_ready, calls wait for a connection that
    // never comes, up to their deadline.
    let address: Address = "mem://nobody-home".parse().expect("valid");
    let client = TestClient::new(Channel::builder(address).wait_for_ready(true).connect_lazy());
    let start = Instant::now();
    let status = within("the call fails", client.echo("anyone?".into())).await.expect_err("nobody answers");
    assert_eq!(start.elapsed(), DEFAULT);
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert_eq!(status.message(), "deadline (the channel's default) exceeded while connecting to mem://nobody-home");
}

// ---------------------------------------------------------------------------------------------
// Client

#[tokio::test(start_paused = true)]
async fn a_client_gives_the_whole_call_its_default() {
    let (address, mut events, serving) = serve("stuck-5").await;
    bounded_by(&TestClient::new(client_to(&[&address]).build()), DEFAULT).await;
    assert_eq!(events.next().await, Seen::Started("bounded".into()));
    assert_eq!(events.next().await, Seen::Dropped("bounded".into()));
    serving.shutdown().await.expect("served");
}

#[tokio::test(start_paused = true)]
async fn a_clients_default_bounds_all_attempts_and_backoffs_together() {
    // Every attempt fails at once (nothing listens), and would be retried a thousand times, a
    // second apart: only a deadline over the whole call ends it sooner.
    let down: Address = "mem://down-for-good".parse().expect("valid");
    let client = client_to(&[&down])
        .fail_mode(FailMode::Failtry { retries: 1000 })
        .retry_backoff(Duration::from_secs(1), Duration::from_secs(1))
        .no_retry_budget()
        .build();
    let start = Instant::now();
    let call = TestClient::new(client).echo("anyone?".into());
    let status = within("the call fails", call).await.expect_err("nobody answers");
    assert!(start.elapsed() <= DEFAULT, "the call ended {:?} in", start.elapsed());
    assert!(status.message().ends_with("no time left before the deadline to retry"), "{status}");
}

#[tokio::test(start_paused = true)]
async fn a_channel_default_set_through_the_client_bounds_each_attempt() {
    let (address, _events, serving) = serve("stuck-6").await;
    // The client turns its channels' default off before `channel` runs, so one set there holds.
    let client = client_to(&[&address])
        .default_timeout(None)
        .channel(|channel| channel.default_timeout(Some(Duration::from_secs(3))))
        .build();
    bounded_by(&TestClient::new(client), Duration::from_secs(3)).await;
    serving.shutdown().await.expect("served");
}

#[tokio::test(start_paused = true)]
async fn a_client_call_without_deadline_by_choice_waits_as_long_as_it_takes() {
    let (address, mut events, serving) = serve("stuck-7").await;
    let client = TestClient::new(client_to(&[&address]).build());
    unbounded(&client.with_context(Context::new().without_deadline()), &mut events).await;
    serving.shutdown().await.expect("served");
}

#[tokio::test(start_paused = true)]
async fn a_clients_cap_still_caps_a_call_without_deadline_by_choice() {
    let (address, _events, serving) = serve("stuck-8").await;
    let capped = TestClient::new(client_to(&[&address]).timeout(Duration::from_secs(2)).build());
    bounded_by(&capped.with_context(Context::new().without_deadline()), Duration::from_secs(2)).await;
    serving.shutdown().await.expect("served");
}

#[tokio::test(start_paused = true)]
async fn a_client_without_a_default_lets_calls_wait() {
    let (address, mut events, serving) = serve("stuck-9").await;
    unbounded(&TestClient::new(client_to(&[&address]).default_timeout(None).build()), &mut events).await;
    serving.shutdown().await.expect("served");
}

#[tokio::test(start_paused = true)]
async fn a_client_keeps_the_callers_longer_deadline() {
    let (address, _events, serving) = serve("stuck-10").await;
    let client = TestClient::new(client_to(&[&address]).build());
    bounded_by(&client.with_context(Context::new().with_timeout(DEFAULT * 3)), DEFAULT * 3).await;
    serving.shutdown().await.expect("served");
}

#[tokio::test(start_paused = true)]
async fn broadcast_and_fork_get_the_clients_default() {
    let (a, _a_events, a_serving) = serve("stuck-a").await;
    let (b, _b_events, b_serving) = serve("stuck-b").await;
    // A default of its own, so that the client's, not a channel's, is seen to apply.
    let default = Duration::from_secs(4);
    let client = client_to(&[&a, &b]).default_timeout(Some(default)).build();
    let wait = |tag: &str| {
        let tag = CodecId::Postcard.encode_to_bytes(&tag.to_owned()).expect("encodes");
        Request::new("Test.wait", tag)
    };

    let start = Instant::now();
    let results = within("the broadcast", client.broadcast(wait("everyone"))).await;
    assert_eq!(start.elapsed(), default);
    let mut codes: Vec<_> =
        results.iter().map(|(address, result)| (address.to_string(), result_code(result))).collect();
    codes.sort();
    assert_eq!(codes, [(a.to_string(), Code::DeadlineExceeded), (b.to_string(), Code::DeadlineExceeded)]);

    let start = Instant::now();
    let status = within("the fork", client.fork(wait("anyone"), 2)).await.expect_err("nobody answers");
    assert_eq!((start.elapsed(), status.code()), (default, Code::DeadlineExceeded), "{status}");
    a_serving.shutdown().await.expect("served");
    b_serving.shutdown().await.expect("served");
}

fn result_code(result: &Result<Response, Status>) -> Code {
    match result {
        Ok(_) => panic!("nothing answers, yet an endpoint did"),
        Err(status) => status.code(),
    }
}
