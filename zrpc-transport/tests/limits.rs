//! Limits over real connections: a server's refusals reach the client marked unprocessed, so a
//! fail mode resends them elsewhere even for methods that are not idempotent; a client caps
//! its own calls in flight.

mod support;

use std::time::Duration;

use support::{Seen, TestClient, TestServer, TestService};
use zrpc_core::__private::{self as private, MethodInfo};
use zrpc_core::balance::RoundRobin;
use zrpc_core::discover::Static;
use zrpc_core::limit::{ConcurrencyLimitLayer, RateLimitLayer};
use zrpc_core::{Code, CodecId, Context, FailMode};
use zrpc_transport::{Address, Channel, Client, Server};

/// `Test.echo` as a method that must not run twice: only provably unprocessed calls may be
/// resent.
static ECHO_ONCE: MethodInfo = MethodInfo { name: "Test.echo", idempotent: false, oneway: false };

async fn echo_once<S>(service: &S, text: &str) -> Result<String, zrpc_core::Status>
where
    S: tower::Service<zrpc_core::Request, Response = zrpc_core::Response, Error = zrpc_core::Status>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    private::call(service, &Context::new(), CodecId::Postcard, &ECHO_ONCE, text.to_owned()).await
}

#[tokio::test]
async fn a_server_at_its_concurrency_limit_refuses_and_clients_go_elsewhere() {
    let (probe, mut events) = support::probe();
    let limited = Server::builder()
        .name("limited")
        .layer(ConcurrencyLimitLayer::new(1))
        .add_service(TestServer::new(TestService::new(probe)))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind");
    let limited_address = limited.local_addr().clone();
    tokio::spawn(limited.serve());
    let (free_probe, _free_events) = support::probe();
    let free = Server::builder()
        .name("free")
        .add_service(TestServer::new(TestService::new(free_probe)))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind");
    let free_address = free.local_addr().clone();
    tokio::spawn(free.serve());

    // Fill the limited server's one slot.
    let direct = TestClient::new(Channel::connect(&limited_address).await.expect("connects"));
    let held = tokio::spawn(direct.wait("held".into()));
    assert_eq!(events.next().await, Seen::Started("held".into()));

    // Refused on the spot, and the refusal says the call never ran.
    let status = echo_once(direct.inner(), "refused").await.expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.is_unprocessed(), "the mark crossed the wire: {status:?}");

    // A client spreading calls over both servers loses none, though the method is not
    // idempotent: every refusal is resent to the free server.
    let client = Client::builder()
        .discover(Static::new([limited_address.clone(), free_address.clone()]))
        .balance(RoundRobin::new())
        .fail_mode(FailMode::Failover { retries: 1 })
        .build();
    for i in 0..20 {
        let text = format!("call {i}");
        assert_eq!(echo_once(&client, &text).await.as_deref(), Ok(text.as_str()));
    }

    events.release();
    assert_eq!(held.await.expect("task"), Ok("held".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_server_refuses_calls_beyond_its_burst() {
    let (probe, _events) = support::probe();
    // A refill too slow to matter during the test: only the burst of 3 gets through.
    let server = Server::builder()
        .layer(RateLimitLayer::new(0.001, 3))
        .add_service(TestServer::new(TestService::new(probe)))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind");
    let address: Address = server.local_addr().clone();
    tokio::spawn(server.serve());
    let client = TestClient::new(Channel::connect(&address).await.expect("connects"));
    let mut answered = 0;
    for i in 0..5 {
        match client.echo(format!("{i}")).await {
            Ok(_) => answered += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
                assert!(status.is_unprocessed());
                assert!(status.message().contains("rate limit"), "{status}");
            }
        }
    }
    assert_eq!(answered, 3);
}

#[tokio::test]
async fn a_client_caps_its_own_calls_in_flight() {
    let (probe, mut events) = support::probe();
    let server = Server::builder()
        .add_service(TestServer::new(TestService::new(probe)))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind");
    let address = server.local_addr().clone();
    tokio::spawn(server.serve());
    let client = TestClient::new(Client::builder().discover(Static::new([address])).max_in_flight(1).build());

    let first = tokio::spawn(client.wait("first".into()));
    assert_eq!(events.next().await, Seen::Started("first".into()));

    // No slot within its deadline: it fails without ever reaching the server.
    let hurried = client.with_context(Context::new().with_timeout(Duration::from_millis(50)));
    let status = hurried.wait("hurried".into()).await.expect_err("no slot");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(status.is_unprocessed(), "{status:?}");

    // A patient call waits for the slot, and reaches the server only after the first is done.
    let second = tokio::spawn(client.wait("second".into()));
    events.release();
    assert_eq!(first.await.expect("task"), Ok("first".to_owned()));
    assert_eq!(events.next().await, Seen::Started("second".into()));
    events.release();
    assert_eq!(second.await.expect("task"), Ok("second".to_owned()));
}
