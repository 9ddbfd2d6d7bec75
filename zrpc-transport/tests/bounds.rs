//! No client can make a server hold more than its bounds (docs/PROTOCOL.md §15, `limits`):
//! hostile clients over real TCP, speaking raw frames and ignoring the server's limits, checked
//! through the counters the server's connections expose ([`ServerHandle::connections`]), never
//! RSS or timing. Each test waits for the state it checks (reading paused, handlers started),
//! announced by the server, rather than sleeping.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc};
use zrpc_core::limit::ConcurrencyLimitLayer;
use zrpc_core::{CodecId, Metadata, Request, Response, Router, Status};
use zrpc_transport::frame::{self, Decoder, Frame, RequestFrame};
use zrpc_transport::{Address, Channel, ConnectionInfo, Server, ServerBuilder, ServerHandle};

/// Echoes, and holds calls until the test releases them by tag.
#[zrpc_macros::service(crate = "zrpc_core")]
pub trait Bounded {
    /// Answers with `text` at once.
    async fn echo(&self, text: String) -> String;
    /// Yields once (so that it is a handler that has to wait), reports `tag`, and waits until
    /// `tag` is released.
    async fn hold(&self, tag: String) -> String;
    /// `hold`, one way.
    #[zrpc(oneway)]
    async fn note(&self, tag: String);
}

#[derive(Clone, Default)]
struct Holder {
    started: Arc<Mutex<Option<mpsc::UnboundedSender<String>>>>,
    gates: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    /// Once set, every hold returns at once.
    open: Arc<Mutex<bool>>,
}

impl Holder {
    fn gate(&self, tag: &str) -> Arc<Notify> {
        self.gates.lock().expect("not poisoned").entry(tag.to_owned()).or_default().clone()
    }

    /// Lets the hold tagged `tag` return, now or when it comes.
    fn release(&self, tag: &str) {
        self.gate(tag).notify_one();
    }

    /// Lets every hold return, those waiting and those to come.
    fn release_all(&self) {
        *self.open.lock().expect("not poisoned") = true;
        for gate in self.gates.lock().expect("not poisoned").values() {
            gate.notify_one();
        }
    }
}

impl Bounded for Holder {
    async fn echo(&self, text: String) -> String {
        text
    }

    async fn hold(&self, tag: String) -> String {
        tokio::task::yield_now().await;
        let gate = self.gate(&tag);
        if let Some(started) = &*self.started.lock().expect("not poisoned") {
            let _ = started.send(tag.clone());
        }
        if !*self.open.lock().expect("not poisoned") {
            gate.notified().await;
        }
        tag
    }

    async fn note(&self, tag: String) {
        self.hold(tag).await;
    }
}

struct Running {
    address: Address,
    tcp: String,
    handle: ServerHandle,
    holder: Holder,
    started: mpsc::UnboundedReceiver<String>,
}

async fn serve<L>(configure: impl FnOnce(ServerBuilder) -> ServerBuilder<L>) -> Running
where
    L: tower::Layer<Router>,
    L::Service: tower::Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
    <L::Service as tower::Service<Request>>::Future: Send + Unpin + 'static,
{
    let holder = Holder::default();
    let (tx, started) = mpsc::unbounded_channel();
    *holder.started.lock().expect("not poisoned") = Some(tx);
    let builder = Server::builder().name("bounded").add_service(BoundedServer::new(holder.clone()));
    let server = configure(builder).bind("tcp://127.0.0.1:0").await.expect("bind");
    let address = server.local_addr().clone();
    let Address::Tcp(tcp) = address.clone() else { panic!("a tcp address") };
    let handle = server.handle();
    tokio::spawn(server.serve());
    Running { address, tcp, handle, holder, started }
}

impl Running {
    /// The next tag a hold reported.
    async fn started(&mut self) -> String {
        within("a hold starts", self.started.recv()).await.expect("the server runs")
    }

    async fn wait_for(&self, what: &str, done: impl Fn(&[ConnectionInfo]) -> bool) -> Vec<ConnectionInfo> {
        within(what, self.handle.wait_for_connections(&done)).await;
        self.handle.connections()
    }
}

/// A raw client that announces no flow control, as one that ignores the server's limits, split
/// so that it can write and read at once.
async fn hostile(tcp: &str, name: &str) -> (OwnedReadHalf, OwnedWriteHalf) {
    let stream = within("connect", TcpStream::connect(tcp)).await.expect("connects");
    let (read, mut write) = stream.into_split();
    let mut out = BytesMut::new();
    frame::encode_preface(&mut out);
    frame::encode_hello(&mut out, &support::raw::hello(name)).expect("a short HELLO");
    write.write_all(&out).await.expect("write");
    (read, write)
}

/// A REQUEST to `method` with a postcard-encoded string argument.
fn request(id: u64, method: &'static str, arg: &str) -> BytesMut {
    let request = RequestFrame {
        id,
        flags: 0,
        codec: CodecId::Postcard.as_u8(),
        timeout: None,
        method: Bytes::from_static(method.as_bytes()),
        trace: None,
        durable: None,
        metadata: Metadata::new(),
        payload: CodecId::Postcard.encode_to_bytes(arg).expect("a string encodes"),
    };
    let mut out = BytesMut::new();
    frame::encode_request_frame(&mut out, &request, frame::DEFAULT_MAX_FRAME).expect("a valid request");
    out
}

/// Reads the server's preface and HELLO, then `n` responses; returns their ids and payloads.
async fn responses(read: &mut OwnedReadHalf, n: usize) -> Vec<(u64, Bytes)> {
    let mut buf = BytesMut::new();
    while !frame::decode_preface(&mut buf).expect("the server's preface") {
        within("the preface", read.read_buf(&mut buf)).await.expect("read");
    }
    let mut decoder = Decoder::default();
    let mut answers = Vec::with_capacity(n);
    while answers.len() < n {
        match decoder.decode(&mut buf).expect("well-formed frames") {
            Some(Frame::Response(response)) => answers.push((response.id, response.payload)),
            Some(_) => {}
            None => {
                let read = within("the answers", read.read_buf(&mut buf)).await.expect("read");
                assert!(read > 0, "the server closed the connection after {} answers", answers.len());
            }
        }
    }
    answers
}

fn the_one(connections: &[ConnectionInfo], name: &str) -> ConnectionInfo {
    connections
        .iter()
        .find(|c| c.name.as_deref() == Some(name))
        .cloned()
        .unwrap_or_else(|| panic!("{name} is connected"))
}

/// Whether `name`'s connection has a handler waiting for the server's budget.
fn held_back(connections: &[ConnectionInfo], name: &str) -> bool {
    connections.iter().any(|c| c.name.as_deref() == Some(name) && c.stats.waiting_for_budget)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_held_back_by_tcp_and_loses_nothing() {
    const OUTPUT: usize = 256 * 1024;
    const REQUESTS: u32 = 1024 * 1024;
    let server = serve(|b| b.max_queued_output(OUTPUT).max_request_bytes(REQUESTS)).await;
    let (mut read, mut write) = hostile(&server.tcp, "never-reads").await;

    // 48 MiB of 64 KiB echoes, far more than the server's bounds and both sockets' buffers hold.
    let text = "x".repeat(64 * 1024 - 64);
    let calls = 768u64;
    let writer = tokio::spawn(async move {
        for i in 0..calls {
            write.write_all(&request(2 * i + 1, "Bounded.echo", &text)).await.expect("write");
        }
        write
    });

    let connections = server.wait_for("the client is held back", |c| c.iter().any(|c| c.stats.reading_paused)).await;
    let stats = the_one(&connections, "never-reads").stats;
    let frame = 64 * 1024 + 64;
    // The answers of the handlers started before the output reached its bound go beyond it,
    // one at most here: each of these handlers answers as soon as it starts.
    assert!(stats.peak_queued_output <= OUTPUT + frame, "{stats:?}");
    assert!(stats.peak_request_bytes_in_progress <= REQUESTS as usize + frame, "{stats:?}");
    // Frames of 64 KiB or less are read into a buffer of at most 256 KiB (`ConnectionStats`).
    assert!(stats.peak_read_buffer <= 256 * 1024, "{stats:?}");
    assert!(!writer.is_finished(), "TCP holds the client back: it could not write all it wanted");

    // Once it reads, everything comes back, in order.
    let answers = responses(&mut read, calls as usize).await;
    let ids: Vec<u64> = answers.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (0..calls).map(|i| 2 * i + 1).collect::<Vec<_>>(), "every call answered once, in order");
    assert!(answers.iter().all(|(_, payload)| payload.len() > 64 * 1000));
    within("the writer finishes", writer).await.expect("the writer did not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_frame_is_read_into_a_buffer_of_its_own_size() {
    // One request in progress at a time, so that the request after the large one pauses the
    // reading, which the test can wait for: by then the large frame has been read whole.
    let server = serve(|b| b.max_requests(1)).await;
    let (_read, mut write) = hostile(&server.tcp, "large").await;
    // Just over 3 MiB: a buffer grown by doubling alone would have taken 4.
    let large = request(1, "Bounded.hold", &"x".repeat(3 << 20));
    let mut out = large.clone();
    out.extend_from_slice(&request(3, "Bounded.hold", "next"));
    write.write_all(&out).await.expect("write");

    let connections = server.wait_for("the client is held back", |c| c.iter().any(|c| c.stats.reading_paused)).await;
    let stats = the_one(&connections, "large").stats;
    assert_eq!(stats.peak_read_buffer, large.len(), "{stats:?}");
    // And what follows the frame was read into a small buffer of its own.
    assert!(stats.read_buffer <= 64 * 1024, "{stats:?}");
}

// On one thread, so that the connection's turn that read the answer (and published its stats)
// ended before the caller reads them.
#[tokio::test]
async fn a_client_reads_a_large_answer_into_a_buffer_of_its_own_size() {
    let server = serve(|b| b).await;
    let channel = Channel::builder(server.address.clone()).name("reader").connect().await.expect("connects");
    let client = BoundedClient::new(channel.clone());
    let text = "y".repeat(3 << 20);
    assert_eq!(within("a large echo", client.echo(text.clone())).await.as_deref(), Ok(text.as_str()));
    let stats = channel.stats().expect("connected");
    // The answer's frame: its header, a varint of the length and the text (4,718,542 bytes
    // of buffer for it with `BytesMut`'s doubling, until 2026-12-01).
    let (least, most) = (text.len(), text.len() + 64);
    assert!((least..=most).contains(&stats.peak_read_buffer), "{stats:?}");
    // The server's, for the request.
    let served = the_one(&server.handle.connections(), "reader").stats;
    assert!((least..=most).contains(&served.peak_read_buffer), "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffers_a_burst_grew_are_given_back_once_it_is_over() {
    // A short heartbeat interval: the connection looks at its buffers that often. The 3 MiB
    // answer's output buffer, and the read buffer of what followed the request, were held for
    // the connection's life until 2026-12-01.
    let heartbeat = Duration::from_millis(100);
    a_burst_is_given_back("burst", (heartbeat, Duration::from_secs(20)), (heartbeat, Duration::from_secs(20))).await;
}

// With the heartbeat off at both ends nothing else fires the connection's timer: until later
// on 2026-12-01 such a connection kept a burst's buffers for its life. The windows are 10 s,
// so this takes about 20 s: the read buffer goes at the first window's end, the output buffer
// at the second's (the first was the burst's own, whose traffic it was the size of).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_heartbeat_buffers_a_burst_grew_are_given_back_too() {
    a_burst_is_given_back("quiet", (Duration::ZERO, Duration::ZERO), (Duration::ZERO, Duration::ZERO)).await;
}

/// A client named `name` with the heartbeat `(interval, timeout)` `client` makes a 3 MiB echo
/// call to a server with `server`'s; then the server's end of the connection gives back the
/// buffers the burst grew, and still answers.
async fn a_burst_is_given_back(name: &str, server: (Duration, Duration), client: (Duration, Duration)) {
    let server = serve(|b| b.heartbeat(server.0, server.1)).await;
    let channel = Channel::builder(server.address.clone())
        .name(name)
        .heartbeat(client.0, client.1)
        .connect()
        .await
        .expect("connects");
    let client = BoundedClient::new(channel);
    let text = "z".repeat(3 << 20);
    assert_eq!(within("a large echo", client.echo(text.clone())).await.as_deref(), Ok(text.as_str()));

    let given_back = |c: &[ConnectionInfo]| {
        c.iter().any(|c| {
            c.name.as_deref() == Some(name)
                && c.stats.buffers_trimmed > 0
                && c.stats.output_buffer <= 64 * 1024
                && c.stats.read_buffer <= 8 * 1024
        })
    };
    within("the buffers are given back", server.handle.wait_for_connections(given_back)).await;
    let burst = the_one(&server.handle.connections(), name).stats;
    assert!(burst.peak_queued_output > text.len(), "{burst:?}");
    assert_eq!(within("an echo after", client.echo("after".into())).await.as_deref(), Ok("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pipelining_far_past_the_limit_gets_a_thousand_handlers_and_waits() {
    let mut server = serve(|b| b).await;
    let (mut read, mut write) = hostile(&server.tcp, "pipeliner").await;
    let calls = 5000u64;
    let mut batch = BytesMut::new();
    for i in 0..calls {
        batch.extend_from_slice(&request(2 * i + 1, "Bounded.hold", &format!("p{i}")));
    }
    write.write_all(&batch).await.expect("write");

    let connections = server.wait_for("the client is held back", |c| c.iter().any(|c| c.stats.reading_paused)).await;
    let stats = the_one(&connections, "pipeliner").stats;
    // The default limit, 1,000 in progress; the one request read past it waits.
    assert_eq!((stats.requests_in_progress, stats.requests_waiting), (1001, 1), "{stats:?}");
    assert_eq!(stats.peak_requests_in_progress, 1001, "{stats:?}");
    let mut started = BTreeSet::new();
    while started.len() < 1000 {
        started.insert(server.started().await);
    }

    server.holder.release_all();
    let answers = responses(&mut read, calls as usize).await;
    let ids: BTreeSet<u64> = answers.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len() as u64, calls, "every call answered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flooding_client_does_not_get_others_refused_by_a_global_limit_layer() {
    // A server-wide limit layer above the per-connection limit: a single client cannot fill it.
    let mut server = serve(|b| b.layer(ConcurrencyLimitLayer::new(150)).max_requests(100)).await;
    let (_read, mut write) = hostile(&server.tcp, "flooder").await;
    let mut batch = BytesMut::new();
    for i in 0..500u64 {
        batch.extend_from_slice(&request(2 * i + 1, "Bounded.hold", &format!("f{i}")));
    }
    write.write_all(&batch).await.expect("write");
    server.wait_for("the flooder is held back", |c| c.iter().any(|c| c.stats.reading_paused)).await;

    let channel = Channel::builder(server.address.clone()).name("polite").connect().await.expect("connects");
    let polite = BoundedClient::new(channel);
    let call = tokio::spawn(async move { polite.hold("polite".into()).await });
    while server.started().await != "polite" {}
    server.holder.release("polite");
    let answer = within("the polite call", call).await.expect("task");
    assert_eq!(answer, Ok("polite".to_owned()), "served, not refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_take_turns_at_the_servers_budget_of_running_handlers() {
    let mut server = serve(|b| b.max_concurrent_requests(10).max_requests(50)).await;
    // Two clients flood with calls that wait; the budget of 10 fills, and each then has a
    // handler held back, in the budget's queue.
    let mut floods = Vec::new();
    for name in ["flood-a", "flood-b"] {
        let (read, mut write) = hostile(&server.tcp, name).await;
        let mut batch = BytesMut::new();
        for i in 0..200u64 {
            batch.extend_from_slice(&request(2 * i + 1, "Bounded.hold", &format!("{name}-{i}")));
        }
        write.write_all(&batch).await.expect("write");
        floods.push((read, write));
        server.wait_for("the flood is held back", |c| held_back(c, name)).await;
    }
    let mut running: Vec<String> = Vec::new();
    while running.len() < 10 {
        running.push(server.started().await);
    }

    // A polite client's one call queues behind them...
    let channel = Channel::builder(server.address.clone()).name("polite").connect().await.expect("connects");
    let polite = BoundedClient::new(channel);
    let call = tokio::spawn(async move { polite.hold("polite".into()).await });
    server.wait_for("the polite call is held back", |c| held_back(c, "polite")).await;

    // ...and is the third to run as handlers end: after one of each flood, not after the 390
    // calls the floods have waiting.
    let mut order = Vec::new();
    loop {
        let done = running.remove(0);
        server.holder.release(&done);
        let next = server.started().await;
        order.push(next.clone());
        if next == "polite" {
            break;
        }
        running.push(next);
        assert!(order.len() < 3, "the polite call still waits after {order:?}");
    }
    assert_eq!(order.len(), 3, "{order:?}");
    server.holder.release("polite");
    assert_eq!(within("the polite call", call).await.expect("task"), Ok("polite".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zrpc_client_keeps_to_the_servers_limits_so_the_server_never_stops_reading() {
    let mut server = serve(|b| b.max_requests(2)).await;
    let channel = Channel::builder(server.address.clone()).name("polite").connect().await.expect("connects");
    let client = BoundedClient::new(channel.clone());
    let calls: Vec<_> = (0..5)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.hold(format!("c{i}")).await })
        })
        .collect();
    // Two-way calls: each answer lets the next waiting call go.
    for _ in 0..5 {
        let tag = server.started().await;
        server.holder.release(&tag);
    }
    for call in calls {
        assert!(within("a call", call).await.expect("task").is_ok());
    }
    // Oneway calls: the server's CREDIT lets the next go (each call ends when it is written,
    // which for the third is once a CREDIT made room for it).
    let notes: Vec<_> = (0..3)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.note(format!("n{i}")).await })
        })
        .collect();
    for _ in 0..3 {
        let tag = server.started().await;
        server.holder.release(&tag);
    }
    for note in notes {
        assert!(within("a oneway call", note).await.expect("task").is_ok());
    }
    let stats = the_one(&server.handle.connections(), "polite").stats;
    assert_eq!(stats.peak_requests_in_progress, 2, "the client never had more in progress: {stats:?}");
    assert!(!stats.reading_paused);
    assert_eq!(channel.stats().map(|s| s.calls_waiting), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_while_its_handler_waits_for_the_budget_never_runs() {
    let mut server = serve(|b| b.max_concurrent_requests(1)).await;
    let first = BoundedClient::new(Channel::builder(server.address.clone()).name("first").connect().await.expect("up"));
    let holding = tokio::spawn(async move { first.hold("a".into()).await });
    assert_eq!(server.started().await, "a", "the one unit of the budget");

    // A second client's handler has to wait for the unit: polled once, then parked.
    let second =
        BoundedClient::new(Channel::builder(server.address.clone()).name("second").connect().await.expect("up"));
    let parked = tokio::spawn({
        let second = second.clone();
        async move { second.hold("b".into()).await }
    });
    server.wait_for("the second handler waits for the budget", |c| held_back(c, "second")).await;
    // Its caller gives up: the CANCEL drops the parked handler and the connection's place in
    // the queue.
    parked.abort();
    server.wait_for("the cancelled handler is gone", |c| !held_back(c, "second")).await;

    // The next call of that client runs once the unit is free; the cancelled one never did.
    let next = tokio::spawn(async move { second.hold("c".into()).await });
    server.wait_for("the next call waits for the budget", |c| held_back(c, "second")).await;
    server.holder.release("a");
    assert_eq!(within("the first call", holding).await.expect("task"), Ok("a".to_owned()));
    assert_eq!(server.started().await, "c", "the cancelled call's handler was never run");
    server.holder.release("c");
    assert_eq!(within("the next call", next).await.expect("task"), Ok("c".to_owned()));
}
