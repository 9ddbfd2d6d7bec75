//! [`conn`]: the connection driver, `crate::conn::Connection`, over a simulated stream whose
//! reads and writes the input splits and stalls, on a runtime whose clock the input moves,
//! checked against the bounds of `crate::mux` ("Bounds") and `docs/PROTOCOL.md` §15.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zrpc_core::{Code, Context, Request, Response, Router, Status};

use super::{PEER_FLOW, Report, peer_handshake, small_config};
use crate::budget::Budget;
use crate::conn::{Connection, Handle};
use crate::frame::{self, Decoder, FlowLimits, Frame, GoAway};
use crate::mux::{MuxConfig, Role};
use crate::stream::Stream;

/// Handlers that may run at once when the run has a budget: fewer than the mux's
/// `max_requests`, so that requests wait for it.
const BUDGET: usize = 2;
/// The largest frame the connection sends in a run: the answer to the largest request it
/// accepts (1024 bytes) or a call of the largest payload a step makes (1275 bytes), with
/// their headers. Checked on every frame it writes.
const LARGEST_FRAME: usize = 1400;
/// A GOAWAY's size, its message included, at most (checked likewise).
const LARGEST_GOAWAY: usize = 400;
/// The heartbeat of the connection under test, as in [`MuxConfig::default`].
const INTERVAL: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a real connection (the acceptor's side, with the small limits of the mux targets) over
/// a simulated stream, driven by the input as a script, and checks after every step:
///
/// - what the connection holds, as its published [`ConnectionStats`](crate::mux::ConnectionStats) show: the peer's
///   requests in progress within `max_requests` + 1 and `max(max_request_bytes, one frame)` +
///   one frame, reading paused exactly while the peer is over them; queued output (and its
///   peak) within the bound `mux_local` derives: `max_queued_output − 1` + one frame + the
///   answers of `max_requests` handlers + the control frames queued past it (CANCELs of the
///   local calls, PINGs, GOAWAYs);
/// - with a budget, no more handlers running than it holds;
/// - a read is never offered more room than twice a read chunk plus the decoder's reserve
///   ahead (the buffer may round its growth up): the read buffer does not grow with what the
///   peer sends;
/// - what the connection writes, decoded by the peer: whole valid frames within the peer's
///   `max_frame`, a response only to a two-way request of the peer's and at most once, a PONG
///   only for a PING, CREDIT only to a peer that announced FLOW and never for more oneway
///   requests than it sent, and its own calls within the peer's FLOW limits (one alone of any
///   size);
/// - nothing panics, in the connection task or its handlers.
///
/// When the script ends, the peer closes its end and reads everything, and the clock runs on:
/// the connection must end within two minutes plus the time the sleeps the peer asked for
/// take one after another (what it sent before closing is still handled, a few requests at
/// a time), every local caller must have its answer, and the budget must be whole again.
///
/// The first byte sets up the run: bit 0 the peer predates FLOW (else it announces 3
/// requests, 2 KiB), bit 1 its `max_frame` is 16 MiB (else 1024), bit 2 the server has a
/// budget of 2 handlers, bit 3 the peer never sends its preface and HELLO (raw bytes only). The
/// rest is the script: an opcode in the low 4 bits of a byte (bit 7 a flag), then its
/// arguments, missing ones read as 0. Request ids are the peer's own (odd), new each time.
///
/// | opcode | what happens                                          | flag    | arguments            |
/// |-------:|-------------------------------------------------------|---------|----------------------|
/// | 0      | the peer calls `Fuzz.echo` with `5 × size` bytes       | oneway  | size                 |
/// | 1      | the peer calls `Fuzz.sleep` for `10 × ms` ms, with a deadline of `100 × d` ms (0: none) | oneway | ms, d |
/// | 2      | the peer cancels one of its requests                  |         | pick                 |
/// | 3      | the peer sends a PING, or with the flag a PONG         | PONG    | nonce                |
/// | 4      | the peer returns CREDIT for some of the connection's oneway calls | bogus | pick          |
/// | 5      | the peer sends raw bytes                              |         | length n, n bytes    |
/// | 6      | the peer answers one of the connection's calls         | error   | pick                 |
/// | 7      | reads return at most `1 + 4 × n` bytes                 |         | n                    |
/// | 8      | the peer reads `16 × n` bytes (255: all) off the socket, letting writes go on | | n   |
/// | 9      | writes take at most `1 + 4 × n` bytes                  |         | n                    |
/// | 10     | the clock moves on                                    |         | ms, `u16` big-endian |
/// | 11     | a local caller calls the peer with `5 × size` bytes (deadline 5 s) | oneway | size   |
/// | 12     | the server shuts down (GOAWAY, drain)                  |         |                      |
/// | 13     | the peer sends GOAWAY, `Unavailable` (or with the flag `ResourceExhausted`, a refusal) | refusal |  |
/// | 14     | the peer closes its end: the script ends               |         |                      |
/// | 15     | the peer calls a method nobody serves                 | oneway  |                      |
///
/// The socket starts with room for 1 KiB of the connection's output; only the peer's reads
/// (opcode 8) make more, so writes stall until the script drains them.
///
/// # Panics
/// When an invariant breaks.
pub fn conn(input: &[u8]) -> Report {
    run(input).0
}

/// Which of the bounds a run reached, for tests that check the inputs reach deep enough.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reached {
    /// The peer was over the limits: reading paused.
    pub(super) paused: bool,
    /// The output was at or past its bound.
    pub(super) output: bool,
    /// Every unit of the budget was in use.
    pub(super) budget: bool,
}

/// [`conn`], and which bounds the run reached.
pub(super) fn run(input: &[u8]) -> (Report, Reached) {
    let Some((&control, script)) = input.split_first() else { return Default::default() };
    let setup = Setup::new(control);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build() {
        Ok(runtime) => runtime,
        Err(e) => panic!("no runtime for the run: {e}"),
    };
    runtime.block_on(async move { Run::new(setup).play(script).await })
}

/// How a run is set up, from its first byte (see [`conn`]).
#[derive(Debug, Clone, Copy)]
struct Setup {
    flow: Option<FlowLimits>,
    peer_max_frame: u32,
    budget: bool,
    handshake: bool,
}

impl Setup {
    fn new(control: u8) -> Setup {
        Setup {
            flow: if control & 1 == 0 { Some(PEER_FLOW) } else { None },
            peer_max_frame: if control & 2 == 0 { frame::MIN_MAX_FRAME } else { frame::DEFAULT_MAX_FRAME },
            budget: control & 4 != 0,
            handshake: control & 8 == 0,
        }
    }
}

/// The simulated socket between the connection and the peer.
#[derive(Debug)]
struct Wire {
    /// The peer's bytes the connection has not read, and whether the peer closed its end.
    inbound: BytesMut,
    eof: bool,
    /// Most bytes one read returns, one write takes.
    read_max: usize,
    write_max: usize,
    /// Bytes the socket takes before writes stall.
    room: usize,
    /// The connection's bytes the peer has not decoded yet.
    outbound: BytesMut,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// The most room a read was offered.
    largest_read: usize,
}

/// The connection's end of the socket.
#[derive(Debug, Clone)]
struct SimStream(Arc<Mutex<Wire>>);

impl SimStream {
    fn wire(&self) -> MutexGuard<'_, Wire> {
        // Nothing holds the lock across a panic that matters: the run is over then.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AsyncRead for SimStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut wire = self.wire();
        wire.largest_read = wire.largest_read.max(buf.remaining());
        if wire.inbound.is_empty() {
            if wire.eof {
                return Poll::Ready(Ok(()));
            }
            wire.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = wire.inbound.len().min(wire.read_max).min(buf.remaining());
        let bytes = wire.inbound.split_to(n);
        buf.put_slice(&bytes);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut wire = self.wire();
        if wire.room == 0 {
            wire.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(wire.room).min(wire.write_max);
        wire.room -= n;
        wire.outbound.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Status>> + Send>>;

/// The server's service: `Fuzz.echo` answers at once, `Fuzz.sleep` after `10 ×` its first
/// payload byte milliseconds, anything else is not found.
fn serve(request: Request) -> Answer {
    let payload = request.payload().clone();
    match request.method().as_str() {
        "Fuzz.echo" => Box::pin(std::future::ready(Ok(Response::new(payload)))),
        "Fuzz.sleep" => Box::pin(async move {
            let ms = payload.first().copied().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(u64::from(ms) * 10)).await;
            Ok(Response::new(payload))
        }),
        other => Box::pin(std::future::ready(Err(Status::not_found(format!("fuzz: no method {other}"))))),
    }
}

/// One step of a script (the table in [`conn`]'s docs).
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Echo { size: u8, oneway: bool },
    Sleep { ms: u8, deadline: u8, oneway: bool },
    Cancel { pick: u8 },
    Ping { nonce: u8, pong: bool },
    Credit { pick: u8, bogus: bool },
    Bytes(&'a [u8]),
    Answer { pick: u8, error: bool },
    ReadSplit { n: u8 },
    Drain { n: u8 },
    WriteSplit { n: u8 },
    Wait { millis: u16 },
    Call { size: u8, oneway: bool },
    Shutdown,
    GoAway { refusal: bool },
    Close,
    Unknown { oneway: bool },
}

impl<'a> Step<'a> {
    fn parse(script: &mut &'a [u8]) -> Option<Step<'a>> {
        let (&opcode, rest) = script.split_first()?;
        *script = rest;
        let mut arg = || super::arg(script);
        let flag = opcode & 0x80 != 0;
        Some(match opcode & 0x0f {
            0 => Step::Echo { size: arg(), oneway: flag },
            1 => Step::Sleep { ms: arg(), deadline: arg(), oneway: flag },
            2 => Step::Cancel { pick: arg() },
            3 => Step::Ping { nonce: arg(), pong: flag },
            4 => Step::Credit { pick: arg(), bogus: flag },
            5 => {
                let len = usize::from(arg()).min(script.len());
                let (bytes, rest) = script.split_at(len);
                *script = rest;
                Step::Bytes(bytes)
            }
            6 => Step::Answer { pick: arg(), error: flag },
            7 => Step::ReadSplit { n: arg() },
            8 => Step::Drain { n: arg() },
            9 => Step::WriteSplit { n: arg() },
            10 => Step::Wait { millis: u16::from_be_bytes([arg(), arg()]) },
            11 => Step::Call { size: arg(), oneway: flag },
            12 => Step::Shutdown,
            13 => Step::GoAway { refusal: flag },
            14 => Step::Close,
            _ => Step::Unknown { oneway: flag },
        })
    }
}

/// What the peer knows, from what it sent and what it decoded of the connection's output.
#[derive(Debug, Default)]
struct Peer {
    decoder: Option<Decoder>,
    preface: bool,
    hello: bool,
    next_id: u64,
    /// Its two-way requests not answered (and whether it cancelled them), its oneway ones.
    asked: BTreeMap<u64, bool>,
    answered: BTreeSet<u64>,
    oneway: (u64, u64),
    pings: BTreeSet<u64>,
    /// The connection's calls it received and has not answered, their sizes; the oneway ones
    /// it has not returned with CREDIT.
    calls: BTreeMap<u64, usize>,
    oneway_calls: Vec<usize>,
    /// The time the `Fuzz.sleep` calls it made sleep, all together.
    slept: Duration,
    /// CREDIT received, in requests and bytes.
    credited: (u64, u64),
    frames: usize,
    /// The peer sent raw bytes, which may hold requests and PINGs it does not know of: what
    /// answers them is not checked against what it asked.
    raw: bool,
    /// The peer returned credit it did not owe (a bogus CREDIT, or raw bytes, which may hold
    /// one). The connection can refuse such a CREDIT only when it returns more oneway calls
    /// than the connection has in progress at the peer, and a call still on the wire is in
    /// progress, so the lie may pass for the truth and the connection send more than the
    /// peer's FLOW limits allow. A peer that lies about its credit only gets more than it
    /// asked for: its limits are no longer checked.
    lied: bool,
}

/// A run: the connection's task, its handle, the socket, the peer, the local callers.
struct Run {
    setup: Setup,
    config: MuxConfig,
    wire: SimStream,
    handle: Handle,
    task: Option<JoinHandle<()>>,
    shutdown: Option<oneshot::Sender<()>>,
    budget: Option<Budget>,
    peer: Peer,
    callers: Vec<JoinHandle<Result<Response, Status>>>,
    steps: usize,
    reached: Reached,
}

impl Run {
    fn new(setup: Setup) -> Run {
        let config = MuxConfig {
            name: "fuzz-conn".into(),
            heartbeat_interval: INTERVAL,
            heartbeat_timeout: TIMEOUT,
            ..small_config()
        };
        let wire = SimStream(Arc::new(Mutex::new(Wire {
            inbound: BytesMut::new(),
            eof: false,
            read_max: usize::MAX,
            write_max: usize::MAX,
            room: 1024,
            outbound: BytesMut::new(),
            reader: None,
            writer: None,
            largest_read: 0,
        })));
        let budget = setup.budget.then(|| Budget::new(BUDGET));
        let service = tower::service_fn(serve);
        let io = Stream::Other(Box::new(wire.clone()));
        let (conn, handle) =
            Connection::new(io, Role::Acceptor, config.clone(), service, Router::new(), budget.clone());
        let (shutdown, signal) = oneshot::channel::<()>();
        let conn = conn.with_shutdown(async move {
            let _ = signal.await;
        });
        let task = tokio::spawn(conn.run());
        let peer = Peer { next_id: 1, decoder: Some(Decoder::new(setup.peer_max_frame)), ..Peer::default() };
        Run {
            setup,
            config,
            wire,
            handle,
            task: Some(task),
            shutdown: Some(shutdown),
            budget,
            peer,
            callers: Vec::new(),
            steps: 0,
            reached: Reached::default(),
        }
    }

    async fn play(mut self, mut script: &[u8]) -> (Report, Reached) {
        if self.setup.handshake {
            self.send(&peer_handshake(self.setup.peer_max_frame, self.setup.flow));
        }
        self.settle().await;
        while let Some(step) = Step::parse(&mut script) {
            self.steps += 1;
            if !self.step(step).await {
                break;
            }
            self.settle().await;
        }
        self.end().await
    }

    /// Runs every task until none can go on, the clock moved by a millisecond at most; then
    /// the peer reads what it may and the bounds are checked.
    async fn settle(&mut self) {
        // With the clock paused, the runtime moves it only when every task waits: the sleep
        // returns once all is quiet.
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.hear();
        self.check();
    }

    /// Does one step; `false` when the script ends there.
    async fn step(&mut self, step: Step<'_>) -> bool {
        let mut bytes = BytesMut::new();
        match step {
            Step::Echo { size, oneway } => {
                self.request(&mut bytes, "Fuzz.echo", Bytes::from(vec![0x5a; usize::from(size) * 5]), None, oneway);
            }
            Step::Sleep { ms, deadline, oneway } => {
                self.peer.slept += Duration::from_millis(u64::from(ms) * 10);
                let timeout = (deadline > 0).then(|| Duration::from_millis(u64::from(deadline) * 100));
                self.request(&mut bytes, "Fuzz.sleep", Bytes::from(vec![ms]), timeout, oneway);
            }
            Step::Unknown { oneway } => self.request(&mut bytes, "Fuzz.none", Bytes::new(), None, oneway),
            Step::Cancel { pick } => {
                let ids: Vec<u64> = self.peer.asked.keys().copied().collect();
                let id = ids.get(usize::from(pick) % (ids.len() + 1)).copied().unwrap_or(self.peer.next_id);
                if let Some(cancelled) = self.peer.asked.get_mut(&id) {
                    *cancelled = true;
                }
                frame::encode_cancel(&mut bytes, id);
            }
            Step::Ping { nonce, pong: false } => {
                self.peer.pings.insert(u64::from(nonce));
                frame::encode_ping(&mut bytes, u64::from(nonce));
            }
            Step::Ping { nonce, pong: true } => frame::encode_pong(&mut bytes, u64::from(nonce)),
            Step::Credit { pick, bogus } => {
                let n = usize::from(pick) % (self.peer.oneway_calls.len() + 1);
                let returned: Vec<usize> = self.peer.oneway_calls.drain(..n).collect();
                let mut credit = (returned.len() as u64, returned.iter().map(|&s| s as u64).sum::<u64>());
                if bogus {
                    credit.0 += 1;
                    self.peer.lied = true;
                }
                frame::encode_credit(&mut bytes, credit.0, credit.1);
            }
            Step::Bytes(raw) => {
                self.peer.raw = true;
                self.peer.lied = true;
                bytes.extend_from_slice(raw);
            }
            Step::Answer { pick, error } => {
                let ids: Vec<u64> = self.peer.calls.keys().copied().collect();
                if let Some(&id) = ids.get(usize::from(pick) % ids.len().max(1)) {
                    self.peer.calls.remove(&id);
                    let result =
                        if error { Err(Status::internal("fuzz: peer failed")) } else { Ok(Response::default()) };
                    if let Err(e) = frame::encode_response(&mut bytes, id, &result, frame::MIN_MAX_FRAME) {
                        panic!("the peer's answer does not encode: {e}");
                    }
                }
            }
            Step::ReadSplit { n } => self.wire.wire().read_max = 1 + usize::from(n) * 4,
            Step::WriteSplit { n } => self.wire.wire().write_max = 1 + usize::from(n) * 4,
            Step::Drain { n } => {
                let mut wire = self.wire.wire();
                wire.room = wire.room.saturating_add(if n == u8::MAX { usize::MAX } else { usize::from(n) * 16 });
                if let Some(writer) = wire.writer.take() {
                    writer.wake();
                }
            }
            Step::Wait { millis } => tokio::time::sleep(Duration::from_millis(u64::from(millis))).await,
            Step::Call { size, oneway } => {
                let ctx = Context::new().with_timeout(Duration::from_secs(5));
                let request = Request::new("Peer.m", Bytes::from(vec![0x33; usize::from(size) * 5]))
                    .with_oneway(oneway)
                    .with_ctx(ctx);
                self.callers.push(tokio::spawn(self.handle.call(request)));
            }
            Step::Shutdown => {
                if let Some(shutdown) = self.shutdown.take() {
                    let _ = shutdown.send(());
                }
            }
            Step::GoAway { refusal } => {
                let code = if refusal { Code::ResourceExhausted } else { Code::Unavailable };
                let goaway = GoAway { last_id: 0, code: code.as_u8(), message: "fuzz: peer leaving".into() };
                frame::encode_goaway(&mut bytes, &goaway);
            }
            Step::Close => return false,
        }
        if !bytes.is_empty() {
            self.send(&bytes);
        }
        true
    }

    /// Encodes a request of the peer's under a new id.
    fn request(
        &mut self,
        dst: &mut BytesMut,
        method: &'static str,
        payload: Bytes,
        timeout: Option<Duration>,
        oneway: bool,
    ) {
        let id = self.peer.next_id;
        self.peer.next_id += 2;
        let mut ctx = Context::new();
        if let Some(timeout) = timeout {
            ctx = ctx.with_timeout(timeout);
        }
        let request = Request::new(method, payload).with_oneway(oneway).with_ctx(ctx);
        let Ok(size) = frame::encode_request(dst, id, &request, frame::DEFAULT_MAX_FRAME) else {
            panic!("the peer's request does not encode");
        };
        if oneway {
            self.peer.oneway.0 += 1;
            self.peer.oneway.1 += size as u64;
        } else {
            self.peer.asked.insert(id, false);
        }
    }

    /// The peer's bytes go into the socket, and the connection is woken to read them.
    fn send(&mut self, bytes: &[u8]) {
        let mut wire = self.wire.wire();
        wire.inbound.extend_from_slice(bytes);
        if let Some(reader) = wire.reader.take() {
            reader.wake();
        }
    }

    /// The peer decodes what the connection wrote, checking it.
    fn hear(&mut self) {
        let mut out = std::mem::take(&mut self.wire.wire().outbound);
        let Some(decoder) = &mut self.peer.decoder else { return };
        if !self.peer.preface {
            match frame::decode_preface(&mut out) {
                Ok(true) => self.peer.preface = true,
                Ok(false) => {
                    self.wire.wire().outbound = out;
                    return;
                }
                Err(e) => panic!("the connection's preface is wrong: {e}"),
            }
        }
        let mut frames = Vec::new();
        loop {
            let before = out.len();
            match decoder.decode(&mut out) {
                Ok(Some(frame)) => frames.push((frame, before - out.len())),
                Ok(None) => break,
                Err(e) => panic!("the connection wrote a frame its peer refuses: {e}"),
            }
        }
        // The rest of a frame comes with the next write.
        self.wire.wire().outbound = out;
        for (frame, size) in frames {
            self.on_frame(frame, size);
        }
    }

    fn on_frame(&mut self, frame: Frame, size: usize) {
        self.peer.frames += 1;
        let largest = if matches!(frame, Frame::GoAway(_)) { LARGEST_GOAWAY } else { LARGEST_FRAME };
        assert!(size <= largest, "a frame of {size} bytes: {frame:?}");
        let first = !self.peer.hello;
        self.peer.hello = true;
        match frame {
            Frame::Hello(hello) => {
                assert!(first, "a second HELLO");
                assert_eq!(hello.flow, Some(FlowLimits { max_requests: 3, request_bytes: 2000 }), "{hello:?}");
            }
            _ if first => panic!("the first frame is not a HELLO: {frame:?}"),
            Frame::Response(response) => {
                let id = response.id;
                let asked = self.peer.asked.remove(&id).is_some();
                assert!(asked || self.peer.raw, "a response to {id}, which the peer did not ask or got already");
                assert!(self.peer.answered.insert(id), "a second response to {id}");
            }
            Frame::Pong { nonce } => {
                assert!(self.peer.pings.contains(&nonce) || self.peer.raw, "a PONG for {nonce}, never pinged");
            }
            Frame::Credit { requests, bytes } => {
                assert!(self.setup.flow.is_some(), "CREDIT to a peer that did not announce FLOW");
                self.peer.credited.0 += requests;
                self.peer.credited.1 += bytes;
                assert!(
                    self.peer.raw
                        || (self.peer.credited.0 <= self.peer.oneway.0 && self.peer.credited.1 <= self.peer.oneway.1),
                    "CREDIT for {:?}, more than the oneway requests sent, {:?}",
                    self.peer.credited,
                    self.peer.oneway
                );
            }
            Frame::Request(request) => {
                assert!(request.id.is_multiple_of(2) && request.id != 0, "the acceptor opened id {}", request.id);
                if request.is_oneway() {
                    if self.setup.flow.is_some() {
                        self.peer.oneway_calls.push(size);
                    }
                } else {
                    self.peer.calls.insert(request.id, size);
                }
                if let Some(flow) = self.setup.flow.filter(|_| !self.peer.lied) {
                    let count = self.peer.calls.len() + self.peer.oneway_calls.len();
                    let bytes: usize =
                        self.peer.calls.values().sum::<usize>() + self.peer.oneway_calls.iter().sum::<usize>();
                    assert!(count <= flow.max_requests as usize, "{count} calls in progress at the peer");
                    assert!(count <= 1 || bytes <= flow.request_bytes as usize, "{bytes} bytes of calls at the peer");
                }
            }
            Frame::Cancel { id } => {
                // The slot is free once the CANCEL is read; an answer may still cross it.
                self.peer.calls.remove(&id);
            }
            Frame::Ping { .. } | Frame::GoAway(_) => {}
        }
    }

    /// The bounds, after every step.
    fn check(&mut self) {
        let stats = self.handle.stats();
        self.reached.paused |= stats.reading_paused;
        self.reached.output |= stats.peak_queued_output >= self.config.max_queued_output;
        self.reached.budget |= self.budget.as_ref().is_some_and(|b| b.in_use() == BUDGET);
        let config = &self.config;
        let max_requests = config.max_requests as usize;
        let frame = 4 + config.max_frame as usize;
        let over = stats.requests_in_progress > max_requests
            || (stats.requests_in_progress > 1 && stats.request_bytes_in_progress > config.max_request_bytes as usize);
        if self.handle.is_ready() {
            assert_eq!(stats.reading_paused, over, "{stats:?}");
        }
        assert!(stats.peak_requests_in_progress <= max_requests + 1, "{stats:?}");
        let request_bytes = (config.max_request_bytes as usize).max(frame) + frame;
        assert!(stats.peak_request_bytes_in_progress <= request_bytes, "{stats:?}");
        // Past the bound: CANCELs of local calls, a PING or two, GOAWAYs.
        let control = 14 * (self.callers.len() + 2) + 2 * LARGEST_GOAWAY;
        let bound = config.max_queued_output - 1 + LARGEST_FRAME + max_requests * LARGEST_FRAME + control;
        assert!(stats.peak_queued_output <= bound, "{stats:?}, over {bound}");
        if let Some(budget) = &self.budget {
            assert!(budget.in_use() <= BUDGET, "{} handlers hold the budget of {BUDGET}", budget.in_use());
        }
        // The read buffer: a frame over 64 KiB is assembled in a buffer of its own size;
        // smaller ones, with the room for the next read, in at most 256 KiB.
        let read_buffer = frame.max(256 * 1024);
        assert!(stats.peak_read_buffer <= read_buffer, "{stats:?}, over {read_buffer}");
        let largest_read = self.wire.wire().largest_read;
        assert!(
            largest_read <= 2 * (8 * 1024 + frame::RESERVE_AHEAD),
            "a read was offered {largest_read} bytes of room"
        );
    }

    /// The peer closes its end and reads everything; the connection must end cleanly.
    async fn end(mut self) -> (Report, Reached) {
        {
            let mut wire = self.wire.wire();
            wire.eof = true;
            wire.room = usize::MAX;
            if let Some(reader) = wire.reader.take() {
                reader.wake();
            }
            if let Some(writer) = wire.writer.take() {
                writer.wake();
            }
        }
        let Some(mut task) = self.task.take() else { return Default::default() };
        let mut finished = None;
        // Found by the `conn` fuzz target: 160 oneway sleeps of 2.4 s from a peer that predates
        // FLOW, still waiting when it closed, take two minutes at three in progress.
        let seconds = 120 + self.peer.slept.as_secs() + 1;
        for _ in 0..seconds {
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.hear();
            self.check();
            if task.is_finished() {
                finished = Some((&mut task).await);
                break;
            }
        }
        match finished {
            None => panic!("the connection did not end within {seconds} s of the peer closing"),
            Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Some(_) => {}
        }
        assert!(!self.handle.is_ready(), "the connection ended but takes calls");
        let mut answered = 0;
        for caller in std::mem::take(&mut self.callers) {
            match tokio::time::timeout(Duration::from_secs(1), caller).await {
                Ok(Ok(_)) => answered += 1,
                Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Ok(Err(e)) => panic!("a local caller was cancelled: {e}"),
                Err(_) => panic!("a local caller was not answered when the connection ended"),
            }
        }
        if let Some(budget) = &self.budget {
            assert_eq!(budget.in_use(), 0, "units of the budget outlived the connection");
        }
        self.hear();
        (Report { count: self.peer.frames + answered, error: None }, self.reached)
    }
}
