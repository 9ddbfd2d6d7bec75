//! Payload compression over real TCP: negotiated in the HELLO, applied above a threshold, chosen
//! per channel, per server or per call, and bombs and lies refused for that call alone.
//!
//! What went over the wire compressed is read from the connections' [`ConnectionStats`]
//! (frames sent and received compressed, bytes saved) and, with raw peers
//! (`support::raw::RawPeer`), from the frames themselves. Nothing sleeps: each wait is bounded by
//! `support::LIVENESS`.

#![cfg(all(feature = "zstd", feature = "lz4", feature = "gzip"))]

mod support;

use bytes::Bytes;
use support::raw::{self, RawPeer};
use support::{Events, Serving, TestClient, TestServer, TestService, within};
use tokio::net::TcpListener;
use zrpc_core::{Code, Context, Metadata};
use zrpc_transport::compression;
use zrpc_transport::frame::{self, CompressedHeader, ResponseFrame, flags};
use zrpc_transport::{Address, Channel, ChannelBuilder, Compression, ConnectionStats, Server, ServerBuilder};

/// Text that compresses well, of about `len` bytes.
fn text(len: usize) -> String {
    let mut text: String = (0..len / 30 + 1).map(|i| format!("line {i:06} of a compressible payload\n")).collect();
    text.truncate(len);
    text
}

struct Running {
    address: Address,
    /// `host:port`, for raw sockets.
    tcp: String,
    serving: Serving,
    events: Events,
}

async fn start(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Running {
    let (probe, events) = support::probe();
    let builder = Server::builder().name("server-1").add_service(TestServer::new(TestService::new(probe)));
    let server = configure(builder).bind("tcp://127.0.0.1:0").await.expect("bind");
    let address = server.local_addr().clone();
    let Address::Tcp(tcp) = address.clone() else { panic!("a tcp address: {address}") };
    Running { address, tcp, serving: Serving::spawn(server), events }
}

impl Running {
    async fn client(&self, configure: impl FnOnce(ChannelBuilder) -> ChannelBuilder) -> (Channel, TestClient<Channel>) {
        let builder = Channel::builder(self.address.clone()).name("client-1");
        let channel = within("the client connects", configure(builder).connect()).await.expect("connects");
        (channel.clone(), TestClient::new(channel))
    }

    /// The server's side of its one connection.
    fn server_stats(&self) -> ConnectionStats {
        let connections = self.serving.handle().connections();
        let [connection] = connections.as_slice() else { panic!("one connection: {connections:?}") };
        connection.stats
    }

    async fn shutdown(self) {
        self.serving.shutdown().await.expect("serve succeeded");
    }
}

fn stats(channel: &Channel) -> ConnectionStats {
    channel.stats().expect("connected")
}

#[tokio::test]
async fn each_algorithm_round_trips_compressed_both_ways() {
    for algorithm in Compression::ALL {
        let server = start(|server| server).await;
        let (channel, client) = server.client(|channel| channel.compression(algorithm)).await;
        let big = text(16 * 1024);

        let echoed = within("the echo", client.echo(big.clone())).await;
        assert_eq!(echoed.as_deref(), Ok(big.as_str()), "{algorithm}");

        // The request went compressed, and the server answered with the same algorithm
        // though it has none configured itself.
        let ours = stats(&channel);
        assert_eq!((ours.compressed_frames_sent, ours.compressed_frames_received), (1, 1), "{algorithm}: {ours:?}");
        assert!(ours.compression_bytes_saved > 8 * 1024, "{algorithm}: saved {}", ours.compression_bytes_saved);
        let theirs = server.server_stats();
        assert_eq!((theirs.compressed_frames_received, theirs.compressed_frames_sent), (1, 1), "{algorithm}");
        assert!(theirs.compression_bytes_saved > 8 * 1024, "{algorithm}: saved {}", theirs.compression_bytes_saved);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn a_payload_under_the_threshold_is_sent_plain() {
    let server = start(|server| server).await;
    let (channel, client) =
        server.client(|channel| channel.compression(Compression::Zstd).compression_threshold(4096)).await;

    // postcard writes a string's length in 2 bytes here: 4093 characters are 4095 bytes.
    let small = text(4093);
    assert_eq!(raw::postcard(&small).len(), 4095);
    assert_eq!(within("a small echo", client.echo(small.clone())).await.as_deref(), Ok(small.as_str()));
    assert_eq!(stats(&channel).compressed_frames_sent, 0, "one byte under the threshold");
    assert_eq!(server.server_stats().compressed_frames_sent, 0, "its answer was plain too");

    let at = text(4094);
    assert_eq!(within("an echo at the threshold", client.echo(at.clone())).await.as_deref(), Ok(at.as_str()));
    assert_eq!(stats(&channel).compressed_frames_sent, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_call_overrides_the_channels_choice() {
    let server = start(|server| server).await;
    let big = text(16 * 1024);

    let (plain, client) = server.client(|channel| channel).await;
    let lz4 = client.with_context(Context::new().with_compression(Some(Compression::Lz4)));
    assert_eq!(within("an lz4 echo", lz4.echo(big.clone())).await.as_deref(), Ok(big.as_str()));
    assert_eq!(within("a plain echo", client.echo(big.clone())).await.as_deref(), Ok(big.as_str()));
    let ours = stats(&plain);
    assert_eq!((ours.compressed_frames_sent, ours.compressed_frames_received), (1, 1), "only the chosen call");

    let (zstd, client) = server.client(|channel| channel.compression(Compression::Zstd)).await;
    let uncompressed = client.with_context(Context::new().with_compression(None));
    assert_eq!(within("an uncompressed echo", uncompressed.echo(big.clone())).await.as_deref(), Ok(big.as_str()));
    assert_eq!(stats(&zstd).compressed_frames_sent, 0, "the call said no");
    server.shutdown().await;
}

#[tokio::test]
async fn an_answer_from_a_handler_task_is_compressed_too() {
    // `wait` answers from a task of its own (it waits to be released), where `echo` answers at
    // once on the connection's task: both compress.
    let mut server = start(|server| server.compression(Compression::Gzip)).await;
    let (channel, client) = server.client(|channel| channel).await;
    let tag = text(16 * 1024);
    let call = tokio::spawn({
        let tag = tag.clone();
        async move { client.wait(tag).await }
    });
    assert_eq!(server.events.next().await, support::Seen::Started(tag.clone()));
    server.events.release();
    let answer = within("the released call", call).await.expect("the task");
    assert_eq!(answer.as_deref(), Ok(tag.as_str()));
    // The request went plain (the channel compresses nothing); the server's own gzip took the
    // answer.
    let ours = stats(&channel);
    assert_eq!((ours.compressed_frames_sent, ours.compressed_frames_received), (0, 1), "{ours:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_announces_no_compression_gets_plain_frames() {
    let server = start(|server| server.compression(Compression::Zstd)).await;
    let request = |id| raw::request(id, "Test.sized", raw::postcard(&16_384_usize));
    let answer = raw::postcard(&vec![7_u8; 16_384]);

    // A client from before compression announces none: the server's zstd is not used on it.
    let mut old = RawPeer::connect(&server.tcp).await;
    let theirs = old.handshake("old-client").await;
    assert_eq!(theirs.compressions, [1, 2, 3], "the server announces what it decodes");
    old.send_request(&request(1)).await;
    let response = old.next_response().await;
    assert_eq!((response.flags & flags::COMPRESSED, &response.payload), (0, &answer));

    // One that announces zstd gets it, above the threshold.
    let mut new = RawPeer::connect(&server.tcp).await;
    new.handshake_with(&frame::Hello { compressions: vec![Compression::Zstd.id()], ..raw::hello("new-client") }).await;
    new.send_request(&request(1)).await;
    let response = new.next_response().await;
    assert_eq!(response.flags & flags::COMPRESSED, flags::COMPRESSED);
    let header = response.compressed_header().expect("a header");
    assert_eq!(header, CompressedHeader { compression: 1, len: answer.len() as u32 });
    assert!(response.payload.len() < 1024, "{} bytes on the wire", response.payload.len());
    assert_eq!(compression::decompress(&response.payload, frame::DEFAULT_MAX_FRAME), Ok(answer));
    server.shutdown().await;
}

#[tokio::test]
async fn a_channel_sends_plain_requests_to_a_server_that_announces_none() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address: Address = format!("tcp://{}", listener.local_addr().expect("an address")).parse().expect("valid");
    let channel = Channel::builder(address).compression(Compression::Zstd).compression_threshold(0).connect_lazy();
    let client = TestClient::new(channel);
    let big = text(16 * 1024);
    let call = tokio::spawn({
        let big = big.clone();
        async move { client.echo(big).await }
    });
    let (stream, _) = within("the channel connects", listener.accept()).await.expect("accept");
    let mut server = RawPeer::new(stream);
    server.handshake("old-server").await;
    let request = server.next_request().await;
    assert_eq!(request.flags & flags::COMPRESSED, 0, "{request:?}");
    assert_eq!(request.payload, raw::postcard(&big));
    let response = ResponseFrame {
        id: request.id,
        flags: 0,
        code: 0,
        message: Bytes::new(),
        metadata: Metadata::new(),
        payload: request.payload.clone(),
    };
    server.send_response(&response).await;
    assert_eq!(within("the answer", call).await.expect("the task").as_deref(), Ok(big.as_str()));
}

/// A compressed `Test.echo` request whose payload is `payload` (header included).
fn compressed_echo(id: u64, payload: Vec<u8>) -> frame::RequestFrame {
    frame::RequestFrame { flags: flags::COMPRESSED, ..raw::request(id, "Test.echo", Bytes::from(payload)) }
}

/// `payload`, compressed with zstd, with its header declaring `declared` bytes.
fn zstd_declaring(payload: &[u8], declared: u32) -> Vec<u8> {
    let mut compressed = compression::compress(Compression::Zstd, payload).expect("compresses").to_vec();
    compressed[1..5].copy_from_slice(&declared.to_be_bytes());
    compressed
}

/// Sends a plain echo on `peer`'s connection and checks that it is answered.
async fn assert_still_answers(peer: &mut RawPeer, id: u64) {
    peer.send_request(&raw::request(id, "Test.echo", raw::postcard("still here"))).await;
    let response = peer.next_response().await;
    assert_eq!((response.id, response.code, response.payload), (id, 0, raw::postcard("still here")));
}

#[tokio::test]
async fn bombs_and_lies_fail_their_call_and_the_connection_serves_on() {
    let server = start(|server| server).await;
    let mut peer = RawPeer::connect(&server.tcp).await;
    peer.handshake("bomber").await;
    // 4 MiB of zeros is a zstd stream of a few hundred bytes: the bomb.
    let zeros = vec![0_u8; 4 << 20];

    // Declares 4 GiB: refused from its header, nothing allocated.
    let bomb = zstd_declaring(&zeros, u32::MAX);
    assert!(bomb.len() <= 1024, "a 1 KiB bomb: {} bytes", bomb.len());
    peer.send_request(&compressed_echo(1, bomb)).await;
    let response = peer.next_response().await;
    assert_eq!((response.id, response.code), (1, Code::ResourceExhausted.as_u8()), "{response:?}");
    assert_eq!(response.flags & flags::UNPROCESSED, flags::UNPROCESSED, "the handler never ran");
    assert_eq!(
        response.message_str(),
        "request to Test.echo not decompressed by server-1: \
         the payload declares 4294967295 bytes uncompressed, over the limit of 16777216"
    );
    assert_still_answers(&mut peer, 3).await;

    // Declares 1 KiB and expands to 4 MiB: stopped when 1 KiB is out.
    peer.send_request(&compressed_echo(5, zstd_declaring(&zeros, 1024))).await;
    let response = peer.next_response().await;
    assert_eq!((response.id, response.code), (5, Code::InvalidArgument.as_u8()), "{response:?}");
    assert_eq!(response.flags & flags::UNPROCESSED, flags::UNPROCESSED);
    assert!(response.message_str().ends_with("the zstd payload expands past its declared 1024 bytes"), "{response:?}");
    assert_still_answers(&mut peer, 7).await;

    // Corrupt: not a zstd stream at all.
    let corrupt = [&[1, 0, 0, 4, 0][..], b"certainly not zstd"].concat();
    peer.send_request(&compressed_echo(9, corrupt)).await;
    let response = peer.next_response().await;
    assert_eq!((response.id, response.code), (9, Code::InvalidArgument.as_u8()), "{response:?}");
    assert!(response.message_str().contains("corrupt zstd payload"), "{response:?}");
    assert_still_answers(&mut peer, 11).await;

    let stats = server.server_stats();
    assert_eq!((stats.compressed_frames_received, stats.requests_in_progress), (3, 0), "{stats:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn an_id_the_server_did_not_announce_is_invalid_argument() {
    let server = start(|server| server).await;
    let mut peer = RawPeer::connect(&server.tcp).await;
    let announced = peer.handshake("guesser").await.compressions;
    let payload = raw::postcard(&text(2048));
    let mut id = 1;
    for unknown in [0, 4, 9, 255] {
        assert!(!announced.contains(&unknown));
        let mut body = CompressedHeader { compression: unknown, len: payload.len() as u32 }.to_bytes().to_vec();
        body.extend_from_slice(&payload);
        peer.send_request(&compressed_echo(id, body)).await;
        let response = peer.next_response().await;
        assert_eq!((response.id, response.code), (id, Code::InvalidArgument.as_u8()), "{response:?}");
        assert_eq!(
            response.message_str(),
            format!(
                "request to Test.echo not decompressed by server-1: compression id {unknown} was not announced by this side"
            )
        );
        id += 2;
    }
    assert_still_answers(&mut peer, id).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_answer_that_does_not_decompress_fails_its_call_and_the_channel_serves_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address: Address = format!("tcp://{}", listener.local_addr().expect("an address")).parse().expect("valid");
    let channel = Channel::builder(address).max_frame(64 * 1024).connect_lazy();
    let client = TestClient::new(channel.clone());
    let call = |text: &str| {
        let client = client.clone();
        let text = text.to_owned();
        tokio::spawn(async move { client.echo(text).await })
    };
    let first = call("first");
    let (stream, _) = within("the channel connects", listener.accept()).await.expect("accept");
    let mut server = RawPeer::new(stream);
    let theirs = server.handshake("liar").await;
    assert_eq!(theirs.compressions, [1, 2, 3], "the channel announces what it decodes");
    let answer = |id, payload: Vec<u8>| ResponseFrame {
        id,
        flags: flags::COMPRESSED,
        code: 0,
        message: Bytes::new(),
        metadata: Metadata::new(),
        payload: Bytes::from(payload),
    };

    // Over the channel's 64 KiB: ResourceExhausted, from the header.
    let request = server.next_request().await;
    server.send_response(&answer(request.id, zstd_declaring(&[0; 4096], 1 << 20))).await;
    let status = within("the first call", first).await.expect("the task").expect_err("a bomb");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("declares 1048576 bytes uncompressed, over the limit of 65536"), "{status}");

    // Corrupt: DataLoss.
    let second = call("second");
    let request = server.next_request().await;
    server.send_response(&answer(request.id, [&[2, 0, 0, 0, 100][..], &[0xff; 8]].concat())).await;
    let status = within("the second call", second).await.expect("the task").expect_err("corrupt");
    assert_eq!(status.code(), Code::DataLoss, "{status}");
    assert!(status.message().starts_with("the answer to Test.echo from liar could not be decompressed"), "{status}");

    // The connection is still up: a well-formed compressed answer arrives.
    let third = call("third");
    let request = server.next_request().await;
    let payload = raw::postcard(&text(4096));
    server
        .send_response(&answer(
            request.id,
            compression::compress(Compression::Lz4, &payload).expect("shrinks").to_vec(),
        ))
        .await;
    assert_eq!(within("the third call", third).await.expect("the task"), Ok(text(4096)));
    assert_eq!(stats(&channel).compressed_frames_received, 3);
}
