//! What a hostile client can make a server hold, measured with the benchmark's counting
//! allocator: the heap bytes the process holds ([`live_bytes`]), before and while the client does
//! its worst. Each test serves over real TCP in this process, speaks raw frames as the client,
//! and waits for the server's handlers to report in (no sleeps); the bounds asserted are loose
//! (the point is the order of magnitude: before these bounds existed, the same clients grew the
//! server by hundreds of MiB). The tests take turns, so that one's allocations never land in
//! another's count.

use std::future::Future;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use zrpc::transport::frame::{self, RequestFrame};
use zrpc::{CodecId, Context, Metadata, Server};
use zrpc_benches::alloc::{CountingAlloc, live_bytes};

#[global_allocator]
static COUNTING: CountingAlloc = CountingAlloc::WITH_BYTES;

/// One test at a time: [`live_bytes`] is the whole process's.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `test` on a runtime of its own, alone: the runtime, with every task and buffer of the
/// test's server, is gone before the next test measures anything.
fn alone(test: impl Future<Output = ()>) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    runtime.expect("a runtime").block_on(test);
}

const MIB: u64 = 1024 * 1024;

/// Holds each call, and with it the request it came in, until told to let go.
#[zrpc::service]
pub trait Hold {
    /// Reports its arrival, then waits for the release.
    async fn hold(&self, ctx: &Context);
}

#[derive(Clone)]
struct Holder {
    arrived: mpsc::UnboundedSender<usize>,
    release: watch::Receiver<bool>,
}

impl Hold for Holder {
    async fn hold(&self, ctx: &Context) {
        let _ = self.arrived.send(ctx.metadata().len());
        let mut release = self.release.clone();
        let _ = release.wait_for(|go| *go).await;
        // The request, metadata included, is kept until here.
        std::hint::black_box(ctx.metadata().get("k"));
    }
}

/// A serving server, the channel its handlers report on, and the switch that releases them.
struct Serving {
    address: String,
    arrived: mpsc::UnboundedReceiver<usize>,
    release: watch::Sender<bool>,
}

async fn serve(configure: impl FnOnce(zrpc::ServerBuilder) -> zrpc::ServerBuilder) -> Serving {
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let (release, release_rx) = watch::channel(false);
    let builder = Server::builder()
        .name("memory")
        .add_service(HoldServer::new(Holder { arrived: arrived_tx, release: release_rx }));
    let server = configure(builder).bind("tcp://127.0.0.1:0").await.expect("bind");
    let address = server.local_addr().to_string().trim_start_matches("tcp://").to_owned();
    tokio::spawn(server.serve());
    Serving { address, arrived, release }
}

/// A raw client's connection, after its preface and a HELLO that announces no flow control (a
/// client that knows nothing of the server's limits).
async fn connect(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let greeting = zrpc_benches::soak::frames::handshake("hostile").expect("a short name");
    stream.write_all(&greeting).await.expect("write");
    stream
}

/// A `Hold.hold` REQUEST frame with `metadata`.
fn hold(id: u64, metadata: Metadata) -> BytesMut {
    let request = RequestFrame {
        id,
        flags: 0,
        codec: CodecId::Postcard.as_u8(),
        timeout: None,
        method: Bytes::from_static(b"Hold.hold"),
        trace: None,
        durable: None,
        metadata,
        payload: CodecId::Postcard.encode_to_bytes(&()).expect("unit encodes"),
    };
    let mut out = BytesMut::new();
    frame::encode_request_frame(&mut out, &request, frame::DEFAULT_MAX_FRAME).expect("a valid request");
    out
}

/// Waits until `n` handlers have arrived; returns the metadata entries each saw.
async fn arrivals(serving: &mut Serving, n: usize) -> Vec<usize> {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let arrived = tokio::time::timeout(Duration::from_secs(120), serving.arrived.recv()).await;
        seen.push(arrived.expect("the handlers arrive").expect("the server runs"));
    }
    seen
}

#[test]
fn small_calls_behind_large_frames_pin_only_their_own_buffers() {
    alone(pinned_buffers());
}

async fn pinned_buffers() {
    let mut serving = serve(|builder| builder).await;
    let before = live_bytes();

    // 40 times: a 15 MiB frame of a kind receivers skip, then a call whose handler keeps its
    // request, and with it a 1-byte metadata value sliced from the read buffer.
    let mut stream = connect(&serving.address).await;
    let mut skipped = BytesMut::with_capacity(15 << 20);
    skipped.put_u32((15 << 20) - 4);
    skipped.put_u8(0x7f);
    skipped.put_bytes(0, (15 << 20) - 5);
    let skipped = skipped.freeze();
    for i in 0..40u8 {
        stream.write_all(&skipped).await.expect("write");
        let metadata: Metadata = [("k", vec![i])].into_iter().collect();
        stream.write_all(&hold(2 * u64::from(i) + 1, metadata)).await.expect("write");
    }
    drop(skipped);
    assert_eq!(arrivals(&mut serving, 40).await, [1; 40]);

    let held = live_bytes().saturating_sub(before);
    eprintln!("40 calls behind 15 MiB frames: {} KiB held", held / 1024);
    // Before: each call pinned the 16 to 32 MiB buffer its frame was read into, 903 MiB in all.
    assert!(held < 16 * MIB, "40 calls of a few dozen bytes hold {} KiB", held / 1024);
    serving.release.send_replace(true);
}

#[test]
fn metadata_costs_about_its_size_on_the_wire() {
    alone(metadata_bomb());
}

async fn metadata_bomb() {
    // The default allows 256 entries; this server takes the protocol's most, so that the cost
    // of the representation itself is what is measured.
    let mut serving = serve(|builder| builder.max_metadata_entries(u16::MAX)).await;
    let before = live_bytes();

    let mut stream = connect(&serving.address).await;
    let metadata: Metadata = (0..u16::MAX).map(|_| ("k", Bytes::new())).collect();
    let call = hold(1, metadata);
    let mut wire = 0;
    for i in 0..40u64 {
        let mut call = call.clone();
        call[6..14].copy_from_slice(&(2 * i + 1).to_be_bytes());
        wire += call.len() as u64;
        stream.write_all(&call).await.expect("write");
    }
    drop(call);
    assert_eq!(arrivals(&mut serving, 40).await, [usize::from(u16::MAX); 40]);

    let held = live_bytes().saturating_sub(before);
    eprintln!("40 calls of 65,535 metadata entries: {} KiB held for {} KiB on the wire", held / 1024, wire / 1024);
    // Before: 221 MiB for these 15.7 MB on the wire (14 times), a list entry per metadata entry.
    // Now the frames themselves, in buffers that may have grown to twice their size.
    assert!(held < 3 * wire, "{} KiB held for {} KiB on the wire", held / 1024, wire / 1024);
    serving.release.send_replace(true);
}

#[test]
fn a_request_with_too_many_metadata_entries_is_refused_and_the_connection_serves_on() {
    alone(crowded_metadata());
}

async fn crowded_metadata() {
    let mut serving = serve(|builder| builder).await;
    let channel = zrpc::Channel::connect(format!("tcp://{}", serving.address).as_str()).await.expect("connect");
    let client = HoldClient::new(channel);

    let mut crowded = Context::new();
    for i in 0..257 {
        crowded.metadata_mut().append(format!("k{i}"), "v");
    }
    let status = client.with_context(crowded).hold().await.expect_err("refused");
    assert_eq!(status.code(), zrpc::Code::ResourceExhausted, "{status}");
    assert!(status.is_unprocessed(), "never processed, so safe to send elsewhere");
    assert!(status.message().contains("257 metadata entries"), "{status}");

    // The connection is fine: the next call is served.
    let call = tokio::spawn(client.with_context(Context::new().with_metadata("k", "v")).hold());
    assert_eq!(arrivals(&mut serving, 1).await, [1]);
    serving.release.send_replace(true);
    call.await.expect("task").expect("served");
}
