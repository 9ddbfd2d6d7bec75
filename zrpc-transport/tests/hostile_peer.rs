//! Hostile peers over real TCP: what a zrpc server does with a client that breaks the protocol,
//! and what a `Channel` does with a server that does.
//!
//! Server-side tests talk to a real `Server` through a raw socket (`support::raw::RawPeer`) and,
//! in each, show with a well-behaved `Channel` that other connections keep working once the bad
//! one was dealt with. Client-side tests put a real `Channel` in front of a fake server the test
//! controls byte by byte. Nothing sleeps: tests wait on frames, closes and handler events, each
//! wait bounded by `support::LIVENESS` so that a regression fails instead of hanging.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use support::raw::{self, RawPeer};
use support::{Events, Seen, Serving, TestClient, TestServer, TestService, within};
use tokio::net::{TcpListener, TcpStream};
use zrpc_core::balance::RoundRobin;
use zrpc_core::discover::{Instance, Static};
use zrpc_core::{Code, Context, FailMode, Response};
use zrpc_transport::frame::{self, Frame};
use zrpc_transport::mux::{Mux, MuxConfig, ProtocolError, Role};
use zrpc_transport::{Address, Channel, ConnectionInfo, Server, ServerBuilder};

/// A real server on 127.0.0.1:0, and a well-behaved client connected to it before any test
/// misbehaves.
struct Running {
    address: Address,
    /// `host:port`, for raw sockets.
    tcp: String,
    events: Events,
    serving: Serving,
    good: TestClient<Channel>,
}

async fn start() -> Running {
    start_with(Server::builder()).await
}

/// [`start`] with settings of the test's own.
async fn start_with(builder: ServerBuilder) -> Running {
    let (probe, events) = support::probe();
    let server = builder
        .name("server-1")
        .add_service(TestServer::new(TestService::new(probe)))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind");
    let address = server.local_addr().clone();
    let Address::Tcp(tcp) = address.clone() else { panic!("a tcp address: {address}") };
    let serving = Serving::spawn(server);
    let good = within("the good client connects", good_client(&address)).await;
    Running { address, tcp, events, serving, good }
}

async fn good_client(address: &Address) -> TestClient<Channel> {
    let channel = Channel::builder(address.clone()).name("good-client").connect().await.expect("connects");
    TestClient::new(channel)
}

impl Running {
    /// The connection opened before the bad one still works, and new ones are accepted.
    async fn assert_still_serves(&self) {
        self.assert_still_serves_its_own().await;
        let fresh = within("a new client connects", good_client(&self.address)).await;
        assert_eq!(within("the new client's echo", fresh.echo("new".into())).await, Ok("new".to_owned()));
    }

    /// The connection opened before the bad one still works.
    async fn assert_still_serves_its_own(&self) {
        let echoed = within("the good client's echo", self.good.echo("still here".into())).await;
        assert_eq!(echoed, Ok("still here".to_owned()));
    }

    async fn shutdown(self) {
        self.serving.shutdown().await.expect("serve succeeded");
    }
}

fn code(code: Code) -> u8 {
    code.as_u8()
}

// --- A real server and a raw, hostile client ---

#[tokio::test]
async fn garbage_bytes_close_only_that_connection() {
    let server = start().await;
    let mut rng = fastrand::Rng::with_seed(0x5a52_5043);
    let mut garbage: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(64).collect();
    // Random bytes could start like `ZRPC`; a first byte above 0x7f never does.
    garbage[0] |= 0x80;

    let mut bad = RawPeer::connect(&server.tcp).await;
    bad.write(&garbage).await;
    let mut back = bad.read_to_eof().await;

    raw::expect_preface(&mut back);
    let frames = raw::decode_all(&mut back);
    assert!(matches!(frames.first(), Some(Frame::Hello(hello)) if hello.name == "server-1"), "{frames:?}");
    let goaway = raw::the_goaway(&frames);
    assert_eq!((goaway.last_id, goaway.code), (0, code(Code::InvalidArgument)), "{goaway:?}");
    assert!(goaway.message.contains("preface"), "{goaway:?}");

    server.assert_still_serves().await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_http_request_gets_a_short_explained_close() {
    let server = start().await;
    let mut bad = RawPeer::connect(&server.tcp).await;
    bad.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut back = bad.read_to_eof().await;

    assert!(back.len() < 1024, "an HTTP client gets a few bytes, not {}", back.len());
    raw::expect_preface(&mut back);
    let frames = raw::decode_all(&mut back);
    let goaway = raw::the_goaway(&frames);
    assert_eq!(goaway.code, code(Code::InvalidArgument));
    assert_eq!(goaway.message, "malformed input from the peer: the peer did not send the zrpc preface");
    assert!(!frames.iter().any(|f| matches!(f, Frame::Response(_))), "nothing was processed: {frames:?}");

    server.assert_still_serves().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_tls_client_hello_is_named_in_the_close() {
    let server = start().await;
    let mut bad = RawPeer::connect(&server.tcp).await;
    // The first bytes of a TLS ClientHello: a handshake record, version 3.1, 512 bytes.
    bad.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").await;
    let mut back = bad.read_to_eof().await;

    raw::expect_preface(&mut back);
    let goaway = raw::the_goaway(&raw::decode_all(&mut back)).clone();
    assert_eq!(goaway.code, code(Code::InvalidArgument));
    assert_eq!(
        goaway.message,
        "malformed input from the peer: the peer sent what looks like TLS, not the zrpc preface; configure TLS on \
         both sides or neither"
    );
    server.assert_still_serves().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_frame_claiming_four_gibibytes_is_refused_from_its_length() {
    let server = start().await;
    let mut bad = RawPeer::connect(&server.tcp).await;
    bad.handshake("bad-client").await;
    let mut header = BytesMut::new();
    header.put_u32(0xFFFF_FFFF);
    header.put_u8(frame::kind::REQUEST);
    header.put_u8(0);
    header.put_u64(1);
    bad.write(&header).await;

    let frames = raw::decode_all(&mut bad.read_to_eof().await);
    let goaway = raw::the_goaway(&frames);
    assert_eq!(goaway.code, code(Code::InvalidArgument));
    assert!(goaway.message.contains("4294967295 bytes exceeds the limit of 16777216"), "{goaway:?}");

    server.assert_still_serves().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_first_frame_longer_than_a_hello_can_be_is_refused_from_its_header() {
    // docs/PROTOCOL.md §5: before its HELLO a peer has shown no token, and may not make the
    // connection hold more than MAX_HELLO; the server had waited for all 16 MiB its own limit
    // allowed, until the handshake's timeout.
    let server = start().await;
    let mut bad = RawPeer::connect(&server.tcp).await;
    let mut out = BytesMut::new();
    frame::encode_preface(&mut out);
    out.put_u32(frame::MAX_HELLO + 1);
    out.put_u8(frame::kind::HELLO);
    out.put_u8(0);
    out.put_u64(0);
    bad.write(&out).await;
    let mut written = bad.read_to_eof().await;
    raw::expect_preface(&mut written);
    let frames = raw::decode_all(&mut written);
    let goaway = raw::the_goaway(&frames);
    assert_eq!(goaway.code, code(Code::InvalidArgument));
    let limit = format!("{} bytes exceeds the limit of {}", frame::MAX_HELLO + 1, frame::MAX_HELLO);
    assert!(goaway.message.contains(&limit), "{goaway:?}");

    // Past the HELLO, frames are held to the server's own limit (16 MiB) again.
    let long = "x".repeat(frame::MAX_HELLO as usize * 2);
    assert_eq!(within("a long echo", server.good.echo(long.clone())).await, Ok(long));
    server.assert_still_serves().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_first_frame_of_the_longest_hello_is_read_into_no_more_than_its_size() {
    // A peer that sends most of the longest HELLO there may be and stops: the connection holds
    // what arrived and room for the rest, never more (counted by the read buffer's peak).
    let server = start().await;
    let handle = server.serving.handle().clone();
    let mut half = RawPeer::connect(&server.tcp).await;
    let mut out = BytesMut::new();
    frame::encode_preface(&mut out);
    let preface = out.len();
    out.put_u32(frame::MAX_HELLO);
    out.put_u8(frame::kind::HELLO);
    out.put_u8(0);
    out.put_u64(0);
    out.resize(preface + 96 * 1024, 0);
    half.write(&out).await;

    // Room for the whole frame is made once most of it has arrived; `BytesMut`'s doubling
    // alone passed it (147,448 bytes, until 2026-12-01).
    let frame = 4 + frame::MAX_HELLO as usize;
    let silent = |open: &[ConnectionInfo]| open.iter().find(|c| c.name.is_none()).map(|c| c.stats);
    let room = |open: &[ConnectionInfo]| silent(open).is_some_and(|s| s.peak_read_buffer >= frame);
    within("the server makes room for the frame", handle.wait_for_connections(room)).await;
    let stats = silent(&handle.connections()).expect("the silent connection is listed");
    assert_eq!(stats.peak_read_buffer, frame, "{stats:?}");
    server.assert_still_serves().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_length_below_the_header_is_refused_from_its_four_bytes() {
    // docs/PROTOCOL.md §4: a length of 0 to 9 cannot make a frame, so nothing after it is
    // waited for: the four bytes alone close the connection, while the client stays silent.
    let server = start().await;
    for len in [0u32, 1, 9] {
        let mut bad = RawPeer::connect(&server.tcp).await;
        bad.handshake("bad-client").await;
        bad.write(&len.to_be_bytes()).await;
        let frames = raw::decode_all(&mut bad.read_to_eof().await);
        let goaway = raw::the_goaway(&frames);
        assert_eq!(goaway.code, code(Code::InvalidArgument));
        assert!(goaway.message.contains(&format!("frame length {len} is shorter")), "{goaway:?}");
    }
    server.assert_still_serves().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_truncated_frame_then_eof_closes_that_connection() {
    let server = start().await;
    let mut bad = RawPeer::connect(&server.tcp).await;
    bad.handshake("bad-client").await;
    let whole = raw::request_bytes(&raw::request(1, "Test.echo", raw::postcard("cut short")));
    bad.write(&whole[..whole.len() / 2]).await;
    bad.shutdown_write().await;

    let frames = raw::decode_all(&mut bad.read_to_eof().await);
    assert!(!frames.iter().any(|f| matches!(f, Frame::Response(_))), "half a request is not served: {frames:?}");

    server.assert_still_serves().await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_undecodable_payload_fails_only_that_call() {
    let server = start().await;
    let mut peer = RawPeer::connect(&server.tcp).await;
    peer.handshake("raw-client").await;

    peer.send_request(&raw::request(1, "Test.echo", Bytes::from_static(&[0xFF; 5]))).await;
    let refused = peer.next_response().await;
    assert_eq!((refused.id, refused.code), (1, code(Code::InvalidArgument)), "{refused:?}");
    assert!(refused.message_str().contains("Test.echo"), "{refused:?}");

    // The same connection goes on serving.
    peer.send_request(&raw::request(3, "Test.echo", raw::postcard("valid"))).await;
    let answer = peer.next_response().await;
    assert_eq!((answer.id, answer.code, answer.payload), (3, 0, raw::postcard("valid")));

    server.assert_still_serves().await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_codec_is_unimplemented_and_the_connection_stays() {
    let server = start().await;
    let mut peer = RawPeer::connect(&server.tcp).await;
    peer.handshake("raw-client").await;

    let mut request = raw::request(1, "Test.echo", raw::postcard("codec nine"));
    request.codec = 9;
    peer.send_request(&request).await;
    let refused = peer.next_response().await;
    assert_eq!((refused.id, refused.code), (1, code(Code::Unimplemented)), "{refused:?}");
    assert!(refused.message_str().contains("codec 9"), "{refused:?}");

    peer.send_request(&raw::request(3, "Test.echo", raw::postcard("postcard"))).await;
    let answer = peer.next_response().await;
    assert_eq!((answer.id, answer.code, answer.payload), (3, 0, raw::postcard("postcard")));

    server.assert_still_serves().await;
    server.shutdown().await;
}

/// A durable REQUEST (PROTOCOL.md §19) to `method` with a postcard string argument: the first
/// message of shop-1's outbox 7.
fn durable_request(id: u64, method: &str, arg: &str) -> frame::RequestFrame {
    let durable = frame::DurableFields {
        outbox: 7,
        sequence: 1,
        acknowledged: 0,
        sender: Bytes::from_static(b"shop-1"),
        count: 1,
    };
    frame::RequestFrame {
        flags: frame::flags::DURABLE,
        durable: Some(Box::new(durable)),
        ..raw::request(id, method, raw::postcard(arg))
    }
}

#[tokio::test]
async fn a_durable_request_to_a_server_without_an_inbox_is_refused_unprocessed() {
    let mut server = start().await;
    let mut peer = RawPeer::connect(&server.tcp).await;
    peer.handshake("raw-sender").await;

    peer.send_request(&durable_request(1, "Test.wait", "durable")).await;
    let refused = peer.next_response().await;
    assert_eq!((refused.id, refused.code), (1, code(Code::Unimplemented)), "{refused:?}");
    assert_ne!(refused.flags & frame::flags::UNPROCESSED, 0, "the sender may keep and resend it: {refused:?}");
    assert!(refused.message_str().contains("records no durable calls"), "{refused:?}");

    // The next handler to start is the plain call's: the durable one never ran.
    peer.send_request(&raw::request(3, "Test.wait", raw::postcard("plain"))).await;
    assert_eq!(server.events.next().await, Seen::Started("plain".into()));
    server.events.release();
    let answer = peer.next_response().await;
    assert_eq!((answer.id, answer.code, answer.payload), (3, 0, raw::postcard("plain")));
    server.assert_still_serves().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_durable_oneway_request_closes_the_connection() {
    let server = start().await;
    let mut bad = RawPeer::connect(&server.tcp).await;
    bad.handshake("bad-sender").await;
    let mut bytes = BytesMut::new();
    let valid = durable_request(1, "Test.echo", "x");
    frame::encode_request_frame(&mut bytes, &valid, frame::DEFAULT_MAX_FRAME).expect("a valid request");
    bytes[5] |= frame::flags::ONEWAY;
    bad.write(&bytes).await;

    let frames = raw::decode_all(&mut bad.read_to_eof().await);
    let goaway = raw::the_goaway(&frames);
    assert_eq!(goaway.code, code(Code::InvalidArgument), "{goaway:?}");
    assert!(goaway.message.contains("never oneway"), "{goaway:?}");
    server.assert_still_serves().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_id_of_the_wrong_parity_closes_the_connection() {
    let server = start().await;
    let mut bad = RawPeer::connect(&server.tcp).await;
    bad.handshake("bad-client").await;
    // The connecting side opens odd ids; 2 is the server's to open.
    bad.send_request(&raw::request(2, "Test.echo", raw::postcard("even"))).await;

    let frames = raw::decode_all(&mut bad.read_to_eof().await);
    let goaway = raw::the_goaway(&frames);
    assert_eq!((goaway.last_id, goaway.code), (0, code(Code::InvalidArgument)), "{goaway:?}");
    assert!(goaway.message.contains("request id 2") && goaway.message.contains("parity"), "{goaway:?}");
    assert!(!frames.iter().any(|f| matches!(f, Frame::Response(_))), "the request was not served: {frames:?}");

    server.assert_still_serves().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_largest_timeout_is_no_deadline() {
    let server = start().await;
    let mut peer = RawPeer::connect(&server.tcp).await;
    peer.handshake("raw-client").await;

    let mut request = raw::request(1, "Test.echo", raw::postcard("forever"));
    request.timeout = Some(Duration::from_micros(u64::MAX));
    let bytes = raw::request_bytes(&request);
    // kind, flags, id, codec, then the timeout: u64::MAX on the wire.
    assert_eq!(bytes[frame::HEADER_LEN + 1..frame::HEADER_LEN + 9], [0xFF; 8]);
    peer.write(&bytes).await;
    let answer = peer.next_response().await;
    assert_eq!((answer.id, answer.code, &answer.payload), (1, 0, &raw::postcard("forever")), "{answer:?}");

    server.assert_still_serves().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_server_enforces_the_deadline_a_raw_client_sends() {
    let mut server = start().await;
    let mut peer = RawPeer::connect(&server.tcp).await;
    peer.handshake("raw-client").await;

    // The raw client keeps no clock: only the server can end this call.
    let mut request = raw::request(1, "Test.wait", raw::postcard("slow"));
    request.timeout = Some(Duration::from_millis(50));
    peer.send_request(&request).await;
    let answer = peer.next_response().await;
    assert_eq!((answer.id, answer.code), (1, code(Code::DeadlineExceeded)), "{answer:?}");
    assert!(answer.message_str().contains("Test.wait"), "{answer:?}");
    assert_eq!(server.events.next().await, Seen::Started("slow".into()));
    assert_eq!(server.events.next().await, Seen::Dropped("slow".into()));

    server.assert_still_serves().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_deadline_that_already_passed_never_lets_a_waiting_handler_run_on() {
    let mut server = start().await;
    let mut peer = RawPeer::connect(&server.tcp).await;
    peer.handshake("raw-client").await;

    // 1 µs is the least a deadline can be on the wire: what a caller whose deadline passes
    // while it encodes the request sends (zrpc's own sends no call already late). It counts
    // from the request's arrival, so by its turn it has almost always passed: the call is
    // answered unprocessed and its handler never runs. Should the turn come within that
    // microsecond, the handler starts and the deadline stops it at once.
    let mut request = raw::request(1, "Test.wait", raw::postcard("too late"));
    request.timeout = Some(Duration::from_micros(1));
    peer.send_request(&request).await;
    let answer = peer.next_response().await;
    assert_eq!((answer.id, answer.code), (1, code(Code::DeadlineExceeded)), "{answer:?}");
    if answer.flags & frame::flags::UNPROCESSED != 0 {
        // The next handler to report is the next call's: the first never started.
        peer.send_request(&raw::request(3, "Test.wait", raw::postcard("next"))).await;
        assert_eq!(server.events.next().await, Seen::Started("next".into()));
        server.events.release();
        let answer = peer.next_response().await;
        assert_eq!((answer.id, answer.code), (3, 0), "{answer:?}");
    } else {
        assert_eq!(server.events.next().await, Seen::Started("too late".into()));
        assert_eq!(server.events.next().await, Seen::Dropped("too late".into()));
    }

    server.assert_still_serves().await;
    server.shutdown().await;
}

// --- A real client and a fake, hostile server ---

/// A listener the test controls, and the address a `Channel` dials to reach it.
async fn fake_server() -> (TcpListener, Address) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("bound").port();
    let address = format!("tcp://127.0.0.1:{port}").parse().expect("valid address");
    (listener, address)
}

async fn accept(listener: &TcpListener) -> TcpStream {
    let (stream, _) = within("the client connects", listener.accept()).await.expect("accept");
    stream
}

/// Accepts one connection and completes the handshake as a server named `fake-server`.
async fn accept_handshake(listener: &TcpListener) -> RawPeer {
    let mut peer = RawPeer::new(accept(listener).await);
    let hello = peer.handshake("fake-server").await;
    assert_eq!(hello.name, "real-client");
    peer
}

#[tokio::test]
async fn a_server_that_never_answers_fails_connect_with_unavailable() {
    let (listener, address) = fake_server().await;
    let connecting = Channel::builder(address)
        .name("real-client")
        .heartbeat(Duration::from_secs(600), Duration::from_secs(600))
        .connect_timeout(Duration::from_millis(200))
        .connect();
    // The fake accepts and then neither reads nor writes; it keeps the socket while connecting.
    let (accepted, connected) = within("connect gives up", async { tokio::join!(accept(&listener), connecting) }).await;

    let status = connected.expect_err("no handshake, no channel");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("timed out after 200ms"), "{status}");
    drop(accepted);
}

#[tokio::test]
async fn an_abandoned_connection_attempt_closes_its_socket() {
    let (listener, address) = fake_server().await;
    // The heartbeat timeout (which also bounds the handshake) is far above the liveness bound,
    // so only the connect timeout can end this connection in time.
    let connecting = Channel::builder(address)
        .name("real-client")
        .heartbeat(Duration::from_secs(600), Duration::from_secs(600))
        .connect_timeout(Duration::from_millis(200))
        .connect();
    let (accepted, connected) = within("connect gives up", async { tokio::join!(accept(&listener), connecting) }).await;
    assert_eq!(connected.expect_err("no handshake").code(), Code::Unavailable);

    // The client wrote its preface and HELLO, then must let go of the socket.
    let mut fake = RawPeer::new(accepted);
    let mut sent = fake.read_to_eof().await;
    raw::expect_preface(&mut sent);
    let frames = raw::decode_all(&mut sent);
    assert!(matches!(&frames[..], [Frame::Hello(hello)] if hello.name == "real-client"), "{frames:?}");
}

#[tokio::test]
async fn a_server_that_never_says_hello_fails_the_handshake_timeout() {
    let (listener, address) = fake_server().await;
    let connecting = Channel::builder(address)
        .heartbeat(Duration::from_millis(50), Duration::from_millis(100))
        .connect_timeout(Duration::from_secs(600))
        .connect();
    let (accepted, connected) = within("connect gives up", async { tokio::join!(accept(&listener), connecting) }).await;

    let status = connected.expect_err("no handshake, no channel");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("did not complete the handshake within 100ms"), "{status}");
    drop(accepted);
}

#[tokio::test]
async fn a_server_gone_silent_is_detected_dead_by_the_heartbeat() {
    let (listener, address) = fake_server().await;
    let connecting = Channel::builder(address)
        .name("real-client")
        .heartbeat(Duration::from_millis(50), Duration::from_millis(100))
        .connect();
    let (mut fake, channel) = tokio::join!(accept_handshake(&listener), connecting);
    // Without a deadline, so that only the heartbeat can end the call.
    let client = TestClient::new(channel.expect("connects")).with_context(Context::new().without_deadline());

    // The fake answers pings until the call arrives, then never reads or writes again.
    let silent_after_request = async {
        match fake.next_frame().await {
            Frame::Request(request) => request,
            other => panic!("expected the call, got {other:?}"),
        }
    };
    let (answer, request) =
        tokio::join!(within("the call fails", client.echo("anyone there?".into())), silent_after_request);
    assert_eq!((request.id, request.method_str(), request.timeout), (1, "Test.echo", None));

    let status = answer.expect_err("nobody answers");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("did not answer a ping within 100ms"), "{status}");
    drop(fake);
}

#[tokio::test]
async fn a_silent_server_cannot_hold_a_call_past_its_deadline() {
    let (listener, address) = fake_server().await;
    let connecting = Channel::builder(address)
        .name("real-client")
        .heartbeat(Duration::from_secs(600), Duration::from_secs(600))
        .connect();
    let (mut fake, channel) = tokio::join!(accept_handshake(&listener), connecting);
    let client = TestClient::new(channel.expect("connects"))
        .with_context(Context::new().with_timeout(Duration::from_millis(100)));

    let status = within("the deadline fires", client.echo("hurry".into())).await.expect_err("nobody answers");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(status.message().contains("Test.echo"), "{status}");

    // On the wire: the request, with its budget, then a CANCEL for it.
    let Frame::Request(request) = fake.next_frame().await else { panic!("the call was sent") };
    assert_eq!(request.id, 1);
    assert!(request.timeout.is_some_and(|t| t <= Duration::from_millis(100)), "{request:?}");
    assert_eq!(fake.next_frame().await, Frame::Cancel { id: 1 });
}

#[tokio::test]
async fn a_response_for_an_id_never_opened_fails_the_client_connection() {
    let (listener, address) = fake_server().await;
    let connecting = Channel::builder(address).name("real-client").connect();
    let (mut fake, channel) = tokio::join!(accept_handshake(&listener), connecting);
    let client = TestClient::new(channel.expect("connects"));

    let lie = async {
        let Frame::Request(request) = fake.next_frame().await else { panic!("the call was sent") };
        let mut out = BytesMut::new();
        let answer = Ok(Response::new(raw::postcard("for someone else")));
        frame::encode_response(&mut out, 999_999, &answer, frame::DEFAULT_MAX_FRAME).expect("fits");
        fake.write(&out).await;
        request.id
    };
    let (answer, asked) = tokio::join!(within("the call fails", client.echo("mine".into())), lie);
    assert_eq!(asked, 1);

    let status = answer.expect_err("the connection broke");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("protocol violation"), "{status}");
    assert!(status.message().contains("999999"), "{status}");

    let Frame::GoAway(goaway) = fake.next_frame().await else { panic!("the client says why it leaves") };
    assert_eq!((goaway.last_id, goaway.code), (0, code(Code::InvalidArgument)), "{goaway:?}");
    assert!(goaway.message.contains("999999"), "{goaway:?}");
    let rest = fake.read_to_eof().await;
    assert!(rest.is_empty(), "nothing after the GOAWAY: {rest:?}");
}

#[tokio::test]
async fn clones_of_a_channel_share_one_connection() {
    let server = start().await;
    let target = server.tcp.clone();
    let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = proxy.local_addr().expect("bound").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = proxy.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });

    let address: Address = format!("tcp://127.0.0.1:{port}").parse().expect("valid address");
    let client = within("connects through the proxy", good_client(&address)).await;
    let clones: Vec<_> = (0..10).map(|_| client.clone()).collect();
    let calls = (0..100).map(|i| {
        let client = clones[i % clones.len()].clone();
        tokio::spawn(async move { client.echo(format!("call {i}")).await })
    });
    let answers = within("100 calls", futures::future::join_all(calls)).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.expect("task"), Ok(format!("call {i}")));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for every clone and call");

    server.shutdown().await;
}

#[tokio::test]
async fn connections_that_never_say_hello_are_held_to_max_handshakes() {
    let Running { address, tcp, serving, good, .. } = start_with(Server::builder().max_handshakes(4)).await;
    let handle = serving.handle().clone();
    // The good client's connect returns with the server's HELLO, which the server sends without
    // waiting for the client's: wait until the server has taken the client's too, so that the
    // connection cannot be the one waiting longest below.
    within("the good client is through", handle.wait_for_connections(|_| handle.handshake_count() == 0)).await;

    // Ten connections that say nothing: each past the fourth closes the one waiting longest.
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(RawPeer::connect(&tcp).await);
    }
    within("the server accepts all ten", handle.wait_for_connections(|_| handle.handshakes_evicted() == 6)).await;
    assert_eq!(handle.handshake_count(), 4);
    for mut peer in silent.drain(..6) {
        peer.read_to_eof().await;
    }
    within("the six are gone", handle.wait_for_connections(|open| open.len() == 5)).await;

    // The four kept are still open, and can finish their handshakes; the established client
    // was never a candidate.
    for (i, peer) in silent.iter_mut().enumerate() {
        assert_eq!(peer.handshake(&format!("late-{i}")).await.name, "server-1");
    }
    within("the four are through", handle.wait_for_connections(|_| handle.handshake_count() == 0)).await;
    assert_eq!(handle.handshakes_evicted(), 6);
    assert_eq!(within("the good client's echo", good.echo("still here".into())).await, Ok("still here".to_owned()));
    let fresh = within("a new client connects", good_client(&address)).await;
    assert_eq!(within("the new client's echo", fresh.echo("new".into())).await, Ok("new".to_owned()));
    assert_eq!(handle.connection_count(), 6);
    assert_eq!(handle.handshakes_evicted(), 6, "no connection through its handshake is closed");
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn connections_past_max_connections_are_refused_and_those_open_kept() {
    // The good client holds one of the two places, a second client the other.
    let Running { address, tcp, serving, good, .. } = start_with(Server::builder().max_connections(2)).await;
    let handle = serving.handle().clone();
    let second = within("a second client connects", good_client(&address)).await;
    within("both are through", handle.wait_for_connections(|open| open.len() == 2 && handle.handshake_count() == 0))
        .await;

    // A third is refused at its HELLO: its first call fails saying why, unprocessed (a retry
    // layer may go elsewhere), and so do later ones while its channel backs off.
    let third = TestClient::new(Channel::builder(address.clone()).name("third").connect_lazy());
    for attempt in ["first", "later"] {
        let refused = within("the third's call", third.echo("in?".into())).await.expect_err("refused");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{attempt}: {refused}");
        assert!(refused.message().contains("at its connection limit (2 open)"), "{attempt}: {refused}");
        assert!(refused.is_unprocessed(), "{attempt}: {refused:?}");
    }
    assert_eq!(handle.connections_refused(), 1);

    // On the wire: the server's HELLO, then once the peer's HELLO is in, a GOAWAY, and the close.
    let mut raw = RawPeer::connect(&tcp).await;
    assert_eq!(raw.handshake("fourth").await.name, "server-1");
    let Frame::GoAway(goaway) = raw.next_frame().await else { panic!("refused with a GOAWAY") };
    assert_eq!(goaway.code, code(Code::ResourceExhausted));
    assert!(goaway.message.contains("at its connection limit"), "{}", goaway.message);
    raw.read_to_eof().await;
    assert_eq!(handle.connections_refused(), 2);

    // Those already open are untouched.
    assert_eq!(within("the good client's echo", good.echo("still here".into())).await, Ok("still here".to_owned()));
    assert_eq!(within("the second's echo", second.echo("me too".into())).await, Ok("me too".to_owned()));

    // One leaves, and the refused are gone: a newcomer is let in.
    drop(second);
    within("one place is free", handle.wait_for_connections(|open| open.len() == 1)).await;
    let fresh = within("a new client connects", good_client(&address)).await;
    assert_eq!(within("the new client's echo", fresh.echo("new".into())).await, Ok("new".to_owned()));
    assert_eq!(handle.connections_refused(), 2);
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn a_place_freed_at_the_connection_limit_goes_to_the_next_client_whatever_is_being_refused() {
    let Running { address, tcp, serving, good, .. } = start_with(Server::builder().max_connections(1)).await;
    let handle = serving.handle().clone();
    within("the good client is through", handle.wait_for_connections(|_| handle.handshake_count() == 0)).await;
    // A connection past the limit that never says HELLO: refused once it does, it stays open
    // until its handshake's timeout (20 s) or until newer silent ones push it out.
    let _silent = RawPeer::connect(&tcp).await;
    within("the silent one is refused", handle.wait_for_connections(|_| handle.connections_refused() == 1)).await;
    // The good client leaves: its place is free, and the next client gets it, though the
    // silent one is still open.
    drop(good);
    within("the good client is gone", handle.wait_for_connections(|open| open.len() == 1)).await;
    let next = within("the next client connects", good_client(&address)).await;
    assert_eq!(within("the next client's echo", next.echo("in".into())).await, Ok("in".to_owned()));
    assert_eq!(handle.connections_refused(), 1);
    assert_eq!(handle.connection_count(), 2, "the silent one and the next client");
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn a_governed_client_fails_over_from_a_server_at_its_connection_limit() {
    // `full` has its one place taken by its good client; `free` has room.
    let full = start_with(Server::builder().max_connections(1)).await;
    let free = start().await;
    let instances = [&full.address, &free.address].map(|a| Instance::new(a.to_string()));
    let client = zrpc_transport::Client::builder()
        .discover(Static::new(instances))
        .fail_mode(FailMode::Failover { retries: 3 })
        // Taking turns, so that the full server is tried within the first two calls.
        .balance(RoundRobin::new())
        .build();
    let client = TestClient::new(client);
    for i in 0..20 {
        assert_eq!(within("a call", client.echo(format!("call {i}"))).await, Ok(format!("call {i}")));
    }
    // Tried, and refused (again each time its channel's backoff ends and it tries again).
    assert!(full.serving.handle().connections_refused() >= 1, "the full server was tried");
    full.assert_still_serves_its_own().await;
    full.shutdown().await;
    free.shutdown().await;
}

// --- The handshake bound, on the state machine with a clock the test controls ---

#[test]
fn a_peer_that_trickles_its_handshake_is_cut_off_one_timeout_after_connecting() {
    let start = tokio::time::Instant::now();
    let timeout = Duration::from_secs(5);
    let mut config = MuxConfig::default();
    config.heartbeat_timeout = timeout;
    let mut server: Mux<()> = Mux::new(Role::Acceptor, config, start);

    // The preface arrives just before the timeout; the HELLO never does.
    let mut preface = BytesMut::new();
    frame::encode_preface(&mut preface);
    let late = start + timeout - Duration::from_millis(1);
    server.recv(&mut preface, late).expect("a valid preface");
    assert!(server.poll_event().is_none(), "nothing happened yet");
    assert!(preface.is_empty(), "the preface was consumed");

    // docs/PROTOCOL.md §13: the preface AND the HELLO must arrive within `timeout` of connecting.
    assert_eq!(server.next_timeout(), start + timeout);
    assert_eq!(server.on_timeout(start + timeout), Err(ProtocolError::HandshakeTimeout(timeout)));
}

#[tokio::test]
async fn calls_sent_just_before_the_end_of_stream_are_still_handled() {
    let mut server = start().await;
    let mut peer = RawPeer::connect(&server.tcp).await;
    peer.handshake("raw-client").await;

    // One write: calls whose answers fill more than the server writes at once, then a oneway
    // call, then the end of the stream. The server handles the batch in pieces, and the end of
    // the stream must not overtake the calls still waiting in its buffer.
    let mut batch = BytesMut::new();
    for id in 0..20 {
        batch.extend_from_slice(&raw::request_bytes(&raw::request(2 * id + 1, "Test.sized", raw::postcard(&400usize))));
    }
    let mut last = raw::request(41, "Test.log", raw::postcard("last words"));
    last.flags = frame::flags::ONEWAY;
    batch.extend_from_slice(&raw::request_bytes(&last));
    peer.write(&batch).await;
    peer.shutdown_write().await;

    assert_eq!(server.events.next().await, Seen::Logged("last words".into()));
    server.assert_still_serves().await;
    server.shutdown().await;
}
