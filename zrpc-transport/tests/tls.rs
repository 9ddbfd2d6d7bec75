//! TLS under the protocol (feature `tls`), beyond the end-to-end suite that runs over it: who is
//! trusted, which name is checked, and what a server does with clients that do not speak TLS or
//! say nothing. Certificates are made by the test process (`support::tls`).
#![cfg(feature = "tls")]

mod support;

use std::time::Duration;

use support::tls::STRANGER;
use support::{Serving, TestClient, TestServer, TestService, within};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use zrpc_core::Code;
use zrpc_core::balance::RoundRobin;
use zrpc_core::discover::Static;
use zrpc_transport::tls::{ClientTls, ServerTls};
use zrpc_transport::{Address, Channel, ChannelBuilder, Client, Server, ServerBuilder};

/// A server of the test service on a free loopback port, presenting `tls`.
async fn serve(tls: Option<ServerTls>, tweak: impl FnOnce(ServerBuilder) -> ServerBuilder) -> (Address, Serving) {
    let (probe, _events) = support::probe();
    let builder = Server::builder().name("tls-server");
    let builder = match tls {
        Some(tls) => builder.tls(tls),
        None => builder,
    };
    let server = tweak(builder)
        .add_service(TestServer::new(TestService::new(probe)))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind");
    (server.local_addr().clone(), Serving::spawn(server))
}

/// An echo through a channel `configure`d from a builder for `address`.
async fn echo(address: &Address, configure: impl FnOnce(ChannelBuilder) -> ChannelBuilder) -> Result<String, String> {
    let channel = within("connecting", configure(Channel::builder(address.clone())).connect()).await;
    let channel = channel.map_err(|status| {
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        status.message().to_owned()
    })?;
    within("an echo", TestClient::new(channel).echo("over tls".into())).await.map_err(|s| s.to_string())
}

#[tokio::test]
async fn a_client_trusting_the_ca_reaches_the_server_by_address_or_by_name() {
    let (address, serving) = serve(Some(support::tls::server()), |b| b).await;
    assert_eq!(echo(&address, |b| b.tls(support::tls::client())).await.as_deref(), Ok("over tls"));
    // The address is 127.0.0.1, which the certificate names; so does `localhost`.
    let by_name = support::tls::client().server_name("localhost").expect("a DNS name");
    assert_eq!(echo(&address, |b| b.tls(by_name)).await.as_deref(), Ok("over tls"));
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let (address, serving) = serve(Some(support::tls::server()), |b| b).await;
    let elsewhere = support::tls::client().server_name("billing.internal").expect("a DNS name");
    let refused = echo(&address, |b| b.tls(elsewhere)).await.expect_err("the name does not match");
    assert!(refused.contains("TLS handshake with") && refused.contains("not valid for name"), "{refused}");
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_is_refused_and_the_server_keeps_serving() {
    let stranger = ServerTls::from_pem(STRANGER.server_cert.as_bytes(), STRANGER.server_key.as_bytes()).expect("PEM");
    let (address, serving) = serve(Some(stranger), |b| b).await;
    let refused = echo(&address, |b| b.tls(support::tls::client())).await.expect_err("not our CA");
    assert!(refused.contains("UnknownIssuer"), "{refused}");

    let trusting = ClientTls::from_roots_pem(STRANGER.ca.as_bytes()).expect("PEM");
    assert_eq!(echo(&address, |b| b.tls(trusting)).await.as_deref(), Ok("over tls"));
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn plain_zrpc_and_tls_do_not_mix_and_each_server_keeps_serving() {
    let (tls_address, tls_serving) = serve(Some(support::tls::server()), |b| b).await;
    let (plain_address, plain_serving) = serve(None, |b| b).await;

    // The TLS server's alert comes where the zrpc preface belongs, and the client says so.
    let refused = echo(&tls_address, |b| b).await.expect_err("a plain client");
    assert!(refused.contains("the peer sent what looks like TLS, not the zrpc preface"), "{refused}");
    let refused = echo(&plain_address, |b| b.tls(support::tls::client())).await.expect_err("a plain server");
    assert!(refused.contains("TLS handshake with"), "{refused}");

    assert_eq!(echo(&tls_address, |b| b.tls(support::tls::client())).await.as_deref(), Ok("over tls"));
    assert_eq!(echo(&plain_address, |b| b).await.as_deref(), Ok("over tls"));
    tls_serving.shutdown().await.expect("serve succeeded");
    plain_serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_handshake_timeout() {
    let (address, serving) =
        serve(Some(support::tls::server()), |b| b.heartbeat(Duration::from_millis(50), Duration::from_millis(100)))
            .await;
    let Address::Tcp(hostport) = &address else { panic!("a tcp address: {address}") };
    let mut silent = TcpStream::connect(hostport.as_str()).await.expect("connects");
    let mut byte = [0u8; 1];
    let read = within("the server closes the silent connection", silent.read(&mut byte)).await;
    assert_eq!(read.expect("a clean close"), 0, "the server sent nothing and closed");
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn connections_silent_in_their_tls_handshake_count_towards_max_handshakes() {
    // A handshake timeout far beyond the test's own: only the bound can close them.
    let (address, serving) = serve(Some(support::tls::server()), |b| {
        b.heartbeat(Duration::from_secs(600), Duration::from_secs(600)).max_handshakes(2)
    })
    .await;
    let Address::Tcp(hostport) = &address else { panic!("a tcp address: {address}") };
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(hostport.as_str()).await.expect("connects"));
    }
    let handle = serving.handle().clone();
    within("the third makes room", handle.wait_for_connections(|_| handle.handshakes_evicted() == 1)).await;
    let mut byte = [0u8; 1];
    let read = within("the first is closed", silent[0].read(&mut byte)).await;
    assert_eq!(read.expect("a clean close"), 0, "the server sent nothing and closed");

    // A TLS client makes room too, and is served; the connection it pushed out was silent.
    assert_eq!(echo(&address, |b| b.tls(support::tls::client())).await.as_deref(), Ok("over tls"));
    assert_eq!(handle.handshakes_evicted(), 2);
    assert_eq!(within("the second is closed", silent[1].read(&mut byte)).await.expect("a clean close"), 0);
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn a_connection_past_max_connections_is_refused_inside_tls() {
    let (address, serving) = serve(Some(support::tls::server()), |b| b.max_connections(1)).await;
    let handle = serving.handle().clone();
    let tls_channel = |name: &str| Channel::builder(address.clone()).name(name).tls(support::tls::client());
    let first = TestClient::new(within("the first connects", tls_channel("first").connect()).await.expect("let in"));
    within(
        "the first is through",
        handle.wait_for_connections(|open| open.len() == 1 && handle.handshake_count() == 0),
    )
    .await;

    // The second completes its TLS handshake, then hears the GOAWAY inside it: its call fails
    // saying why, unprocessed, rather than as a connection that could not be made.
    let second = TestClient::new(tls_channel("second").connect_lazy());
    let refused = within("the second's call", second.echo("in?".into())).await.expect_err("refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("at its connection limit (1 open)"), "{refused}");
    assert!(refused.is_unprocessed(), "{refused:?}");
    assert_eq!(handle.connections_refused(), 1);

    assert_eq!(within("the first's echo", first.echo("still here".into())).await, Ok("still here".to_owned()));
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn a_connection_still_in_its_handshake_does_not_hold_up_shutdown() {
    // Handshake and drain limits far beyond the test's own: shutdown must not wait for either.
    let (address, serving) = serve(Some(support::tls::server()), |b| {
        b.heartbeat(Duration::from_secs(600), Duration::from_secs(600)).drain_timeout(Duration::from_secs(600))
    })
    .await;
    let Address::Tcp(hostport) = &address else { panic!("a tcp address: {address}") };
    let mut silent = TcpStream::connect(hostport.as_str()).await.expect("connects");
    // Once a TLS client has been served, the silent connection was accepted before it.
    assert_eq!(echo(&address, |b| b.tls(support::tls::client())).await.as_deref(), Ok("over tls"));
    serving.shutdown().await.expect("serve succeeded");
    let mut byte = [0u8; 1];
    assert_eq!(within("the silent connection is closed", silent.read(&mut byte)).await.expect("a clean close"), 0);
}

#[tokio::test]
async fn a_client_over_discovery_speaks_tls_to_every_endpoint() {
    let (first, first_serving) = serve(Some(support::tls::server()), |b| b).await;
    let (second, second_serving) = serve(Some(support::tls::server()), |b| b).await;
    let client = Client::builder()
        .name("tls-client")
        .discover(Static::new([&first, &second]))
        .balance(RoundRobin::new())
        .channel(|channel| channel.tls(support::tls::client()))
        .build();
    let test = TestClient::new(client);
    // Round robin: both endpoints, which speak nothing but TLS, answer.
    for _ in 0..4 {
        assert_eq!(within("an echo", test.echo("over tls".into())).await.as_deref(), Ok("over tls"));
    }
    first_serving.shutdown().await.expect("serve succeeded");
    second_serving.shutdown().await.expect("serve succeeded");
}
