//! [`mux_local`]: a [`Mux`] driven from both ends at once — the peer's frames interleaved with
//! this side's own calls, cancels, hand-overs, answers, GOAWAY, drain, writes and clock —
//! checked against a model of the calls in flight both ways, of flow control, of the output
//! bound and of the heartbeat.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use zrpc_core::{Code, Context, Request, Response, Status};

use super::{PEER_NAME, Report, Setup, decode_frames, decode_output, small_config};
use crate::frame::{self, Decoder, FlowLimits, Frame, GoAway, RequestFrame};
use crate::mux::{Event, Mux, MuxConfig, ProtocolError, Role};

/// The mux's heartbeat, as in [`MuxConfig::default`]: waits of up to 65.5 s reach both.
const INTERVAL: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a script of steps over a mux and checks invariants 1 to 7 of the [module docs](super)
/// against a model of the mux written from its docs and `docs/PROTOCOL.md` §13 and §15:
///
/// - events come exactly as the model predicts: a response only for a call that has not ended
///   (never for one cancelled or drained), a oneway call's end once its last byte is written, a
///   cancel only for a call handed over, calls refused after a GOAWAY either way or over the
///   peer's `max_frame` (`Unavailable` or `ResourceExhausted`, unprocessed);
/// - each step queues exactly the frames the model predicts: this side's calls as encoded, in
///   the order they were made (a waiting call never goes out before the ones ahead of it), and
///   only while the peer's FLOW limits admit them (requests and bytes; one alone may exceed the
///   bytes), the output is under its bound and the peer's HELLO has come; answers to calls
///   handed over (or a `ResourceExhausted` error when over the peer's limit); refusals, once the
///   output has room; PONGs; CREDIT for exactly the oneway requests that ended, and only to a
///   peer that announced FLOW; CANCEL, GOAWAY and PING;
/// - the peer's requests in progress (`stats()`) never exceed `max_requests` + 1, nor
///   `max(max_request_bytes, one frame)` + one frame when more than one, and `wants_read()` is
///   false exactly when the peer is over the limits; `next_request` hands over the oldest
///   waiting request, and only while fewer than `max_requests` run and the output is under its
///   bound;
/// - the output: see below;
/// - `drain_pending` hands back every call not ended, unprocessed exactly when it was never
///   sent or its id is above the `last_id` of the peer's GOAWAY;
/// - `next_timeout` is when the heartbeat model says, `on_timeout` acts exactly when it has come
///   (a PING with a fresh nonce, the peer declared dead, or not reading our output for
///   `interval + timeout`) and, while reading is paused because the peer is over the limits,
///   neither pings nor declares the peer dead and starts the clock again; once it has returned
///   `Ok`, `next_timeout` is later than the clock;
/// - once the mux has failed it reads nothing more and queues nothing after its GOAWAY (after a
///   timeout, nothing at all).
///
/// **The output bound.** Past `max_queued_output` only these may be queued: answers of calls
/// handed over (each handed over while the output was under the bound, so at most
/// `max_requests` of them since it was last under), CANCELs of this side's calls, a PING and
/// GOAWAYs. Requests, refusals, PONGs (folded: one, for the latest nonce) and CREDIT (gathered
/// into one) wait for room. Each of those is queued while the output is under the bound, so it
/// passes the bound by at most its own size. Hence, with `F` = 4 + the peer's `max_frame` (the
/// largest frame this side sends):
///
/// ```text
/// queued ≤ max_queued_output − 1 + F            (the frame that crossed the bound)
///          + max_requests × F                   (answers of the calls running then)
///          + 14 × (CANCELs + PINGs) + GOAWAYs   (queued past the bound)
/// ```
///
/// The run checks the exact form of this after every step (the sizes of what crossed and of
/// what was queued past the bound), and the mux's `peak_queued_output` against it.
///
/// The first byte sets up the run (`Setup`): bit 0 the mux's role, bit 1 the peer's
/// `max_frame` (1024 or the 16 MiB default), bit 3 whether the peer predates FLOW (else it
/// announces 3 requests, 2 KiB). The mux has the small limits of `small_config`. The second
/// byte seeds the read sizes of the second pass, which splits each of the peer's steps into
/// small reads (the first reads each step whole). The rest is the script, a step at a time: an
/// opcode in the low 4 bits of a byte (bit 7 a flag, bit 6 a second one), then its arguments,
/// missing ones read as 0. A `pick` chooses among the ids the step could concern, counting one
/// never used; sizes are in units of 5 bytes, so the 1024-byte limits are in reach.
///
/// | opcode | the peer / this side does                      | flags          | arguments          |
/// |-------:|------------------------------------------------|----------------|--------------------|
/// | 0      | the peer sends raw bytes                       |                | length n, n bytes  |
/// | 1      | the peer sends a REQUEST (new id, or reused)   | oneway, crowded (3 metadata entries) | pick, size |
/// | 2      | the peer answers one of our calls              | error          | pick               |
/// | 3      | the peer cancels one of its calls              |                | pick               |
/// | 4      | the peer sends a PING, or with the flag a PONG | PONG           | nonce              |
/// | 5      | the peer sends GOAWAY                          | its code: `ResourceExhausted`, `Unauthenticated`, both `PermissionDenied`, neither `Unavailable` | pick (`last_id`)   |
/// | 6      | the peer sends CREDIT for some of our oneway calls | bogus (one more than in progress) | pick |
/// | 7      | `send_request`                                 | oneway         | size               |
/// | 8      | `cancel`                                       |                | pick               |
/// | 9      | `next_request`                                 |                |                    |
/// | 10     | `finish` (a call handed over, or not in progress) | error       | pick, size         |
/// | 11     | `go_away`                                      |                |                    |
/// | 12     | `drain_pending`                                |                |                    |
/// | 13     | `written(16 × n)` (n = 255: all)               |                | n                  |
/// | 14     | `write_blocked`                                |                |                    |
/// | 15     | the clock moves on, then `on_timeout`          |                | milliseconds, `u16` big-endian |
///
/// After every step the run calls `transmit()`, as a driver does before each write, and checks
/// what was queued; and when the peer's bytes wait unread and the mux wants to read, it reads
/// them, as a driver does. The peer's preface and a valid HELLO go before its first step, so
/// that steps before it run ahead of the handshake (calls wait, the handshake timeout runs).
///
/// # Panics
/// When an invariant breaks.
pub fn mux_local(input: &[u8]) -> Report {
    let [control, seed, script @ ..] = input else {
        return Report::default();
    };
    let setup = Setup::new(*control);
    let whole = Run::new(setup, None).play(script);
    let mut rng = fastrand::Rng::with_seed(u64::from(*seed));
    let largest = rng.usize(1..=64);
    let pieces = Run::new(setup, Some((rng, largest))).play(script);
    assert_eq!(whole, pieces, "the run depends on how the input was split into reads of at most {largest} bytes");
    Report { count: whole.events, error: whole.error }
}

/// One step of a script. A `pick` chooses among the ids the step could concern, in order, plus
/// one that never existed (the next free one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step<'a> {
    /// The peer's raw bytes, whatever they are.
    Bytes(&'a [u8]),
    /// The peer opens a call of `size` × 5 bytes of payload: a new id, or when `pick` is a
    /// multiple of 4, an id it opened before; `crowded`, with more metadata entries than the
    /// mux accepts.
    PeerRequest { pick: u8, size: u8, oneway: bool, crowded: bool },
    /// The peer answers one of this side's calls that went out.
    PeerResponse { pick: u8, error: bool },
    /// The peer cancels one of its calls.
    PeerCancel { pick: u8 },
    /// The peer pings, or sends a PONG nobody asked for.
    PeerPing { nonce: u8, pong: bool },
    /// The peer goes away, with the `last_id` of one of this side's calls (or 0) and `code`:
    /// `Unavailable` (it shuts down) or a refusal, which this side's calls then fail with.
    PeerGoAway { pick: u8, code: Code },
    /// The peer returns credit for the first `pick` (modulo their number plus one) of this
    /// side's oneway calls it counts; `bogus`, for one request or byte more.
    PeerCredit { pick: u8, bogus: bool },
    /// This side makes a call of `size` × 5 bytes of payload.
    Call { size: u8, oneway: bool },
    /// This side cancels one of its calls.
    Cancel { pick: u8 },
    /// The local side takes the next of the peer's requests, if the mux hands one over.
    Next,
    /// A handler ends one of the peer's calls (answering it with `size` × 5 bytes, unless it is
    /// oneway).
    Finish { pick: u8, size: u8, error: bool },
    /// This side goes away.
    GoAway,
    /// The connection died: take every call not ended.
    Drain,
    /// The driver wrote `16 × units` bytes of the output (255: all of it).
    Write { units: u8 },
    /// The driver found the socket full.
    WriteBlocked,
    /// The clock moves on, then the heartbeat runs.
    Wait { millis: u16 },
}

/// The opcodes, in the low 4 bits of a step's first byte; bit 7 is the step's flag (`oneway`,
/// `error`, `pong`, `bogus`), bit 6 its second (`crowded`).
mod op {
    pub(super) const BYTES: u8 = 0;
    pub(super) const PEER_REQUEST: u8 = 1;
    pub(super) const PEER_RESPONSE: u8 = 2;
    pub(super) const PEER_CANCEL: u8 = 3;
    pub(super) const PEER_PING: u8 = 4;
    pub(super) const PEER_GOAWAY: u8 = 5;
    pub(super) const PEER_CREDIT: u8 = 6;
    pub(super) const CALL: u8 = 7;
    pub(super) const CANCEL: u8 = 8;
    pub(super) const NEXT: u8 = 9;
    pub(super) const FINISH: u8 = 10;
    pub(super) const GOAWAY: u8 = 11;
    pub(super) const DRAIN: u8 = 12;
    pub(super) const WRITE: u8 = 13;
    pub(super) const WRITE_BLOCKED: u8 = 14;
    pub(super) const WAIT: u8 = 15;
    pub(super) const FLAG: u8 = 0x80;
    pub(super) const FLAG2: u8 = 0x40;
}

impl<'a> Step<'a> {
    /// Takes the next step off the front of `script` (the table in [`mux_local`]'s docs), or
    /// `None` when it is empty.
    fn parse(script: &mut &'a [u8]) -> Option<Step<'a>> {
        let (&opcode, rest) = script.split_first()?;
        *script = rest;
        let mut arg = || super::arg(script);
        let flag = opcode & op::FLAG != 0;
        let flag2 = opcode & op::FLAG2 != 0;
        let step = match opcode & 0x0f {
            op::BYTES => {
                let len = usize::from(arg()).min(script.len());
                let (bytes, rest) = script.split_at(len);
                *script = rest;
                Step::Bytes(bytes)
            }
            op::PEER_REQUEST => Step::PeerRequest { pick: arg(), size: arg(), oneway: flag, crowded: flag2 },
            op::PEER_RESPONSE => Step::PeerResponse { pick: arg(), error: flag },
            op::PEER_CANCEL => Step::PeerCancel { pick: arg() },
            op::PEER_PING => Step::PeerPing { nonce: arg(), pong: flag },
            op::PEER_GOAWAY => Step::PeerGoAway { pick: arg(), code: goaway_code(flag, flag2) },
            op::PEER_CREDIT => Step::PeerCredit { pick: arg(), bogus: flag },
            op::CALL => Step::Call { size: arg(), oneway: flag },
            op::CANCEL => Step::Cancel { pick: arg() },
            op::NEXT => Step::Next,
            op::FINISH => Step::Finish { pick: arg(), size: arg(), error: flag },
            op::GOAWAY => Step::GoAway,
            op::DRAIN => Step::Drain,
            op::WRITE => Step::Write { units: arg() },
            op::WRITE_BLOCKED => Step::WriteBlocked,
            op::WAIT.. => Step::Wait { millis: u16::from_be_bytes([arg(), arg()]) },
        };
        Some(step)
    }

    /// Appends the bytes [`Step::parse`] reads back as this step.
    #[cfg(test)]
    pub(super) fn encode(&self, dst: &mut Vec<u8>) {
        let flagged = |opcode: u8, flag: bool| if flag { opcode | op::FLAG } else { opcode };
        match *self {
            Step::Bytes(bytes) => {
                let len = u8::try_from(bytes.len()).expect("at most 255 raw bytes a step");
                dst.extend_from_slice(&[op::BYTES, len]);
                dst.extend_from_slice(bytes);
            }
            Step::PeerRequest { pick, size, oneway, crowded } => {
                let opcode = flagged(op::PEER_REQUEST, oneway) | if crowded { op::FLAG2 } else { 0 };
                dst.extend([opcode, pick, size]);
            }
            Step::PeerResponse { pick, error } => dst.extend([flagged(op::PEER_RESPONSE, error), pick]),
            Step::PeerCancel { pick } => dst.extend([op::PEER_CANCEL, pick]),
            Step::PeerPing { nonce, pong } => dst.extend([flagged(op::PEER_PING, pong), nonce]),
            Step::PeerGoAway { pick, code } => {
                let (flag, flag2) = match code {
                    Code::ResourceExhausted => (true, false),
                    Code::Unauthenticated => (false, true),
                    Code::PermissionDenied => (true, true),
                    _ => (false, false),
                };
                let opcode = flagged(op::PEER_GOAWAY, flag) | if flag2 { op::FLAG2 } else { 0 };
                dst.extend([opcode, pick]);
            }
            Step::PeerCredit { pick, bogus } => dst.extend([flagged(op::PEER_CREDIT, bogus), pick]),
            Step::Call { size, oneway } => dst.extend([flagged(op::CALL, oneway), size]),
            Step::Cancel { pick } => dst.extend([op::CANCEL, pick]),
            Step::Next => dst.push(op::NEXT),
            Step::Finish { pick, size, error } => dst.extend([flagged(op::FINISH, error), pick, size]),
            Step::GoAway => dst.push(op::GOAWAY),
            Step::Drain => dst.push(op::DRAIN),
            Step::Write { units } => dst.extend([op::WRITE, units]),
            Step::WriteBlocked => dst.push(op::WRITE_BLOCKED),
            Step::Wait { millis } => {
                dst.push(op::WAIT);
                dst.extend(millis.to_be_bytes());
            }
        }
    }
}

/// A payload of `size` × 5 bytes: up to 1275, so that both sides' 1024-byte limits are in reach.
fn payload(size: u8) -> Bytes {
    Bytes::from(vec![0xa5; usize::from(size) * 5])
}

/// The `pick`-th of `ids`, counting one past the end as `never`.
/// The code of the peer's GOAWAY, from its opcode's flags (the table in [`mux_local`]'s docs).
fn goaway_code(flag: bool, flag2: bool) -> Code {
    match (flag, flag2) {
        (false, false) => Code::Unavailable,
        (true, false) => Code::ResourceExhausted,
        (false, true) => Code::Unauthenticated,
        (true, true) => Code::PermissionDenied,
    }
}

fn pick(ids: &[u64], pick: u8, never: u64) -> u64 {
    ids.get(usize::from(pick) % (ids.len() + 1)).copied().unwrap_or(never)
}

/// What a run produced; two runs over the same script must produce the same.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Each step with how much it queued, and each event, as `Debug` text.
    transcript: Vec<String>,
    events: usize,
    out: Bytes,
    error: Option<ProtocolError>,
}

/// An event as the model predicts it: calls' results by code and unprocessed mark.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Ready,
    Response { token: u64, result: Result<(), (Code, bool)> },
    Cancel { id: u64 },
    GoAway { last_id: u64 },
}

impl Expect {
    fn of(event: &Event<u64>) -> Expect {
        match event {
            Event::Ready => Expect::Ready,
            Event::Response { token, result, .. } => Expect::Response {
                token: *token,
                result: result.as_ref().map(|_| ()).map_err(|s| (s.code(), s.is_unprocessed())),
            },
            Event::Cancel { id, .. } => Expect::Cancel { id: *id },
            Event::GoAway(goaway) => Expect::GoAway { last_id: goaway.last_id },
        }
    }

    fn refused(token: u64, code: Code) -> Expect {
        Expect::Response { token, result: Err((code, true)) }
    }
}

/// What the model queues, for the output bound: the kinds that wait for room, and those that
/// may be queued past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Refusal,
    Pong,
    Credit,
    Answer,
    Cancel,
    Ping,
    GoAway,
}

impl Kind {
    /// Whether this kind is queued only while the output is under its bound.
    fn waits_for_room(self) -> bool {
        matches!(self, Kind::Request | Kind::Refusal | Kind::Pong | Kind::Credit)
    }
}

/// The error the model predicts: exactly, or a violation with whatever message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    Exactly(ProtocolError),
    Violation,
}

/// One of the peer's requests in progress here.
#[derive(Debug)]
struct Inbound {
    oneway: bool,
    size: usize,
    state: InState,
    /// The clock when the mux read it: what it must hand over with it.
    arrived: Instant,
}

#[derive(Debug)]
enum InState {
    /// Waiting to be handed over.
    Held,
    /// Waiting for room in the output to be refused with this status.
    Refuse(Status),
    /// Handed over.
    Started,
}

/// One mux and the model it is checked against.
struct Run {
    setup: Setup,
    config: MuxConfig,
    mux: Mux<u64>,
    now: Instant,
    /// The second pass's read sizes: a generator and the largest read.
    pieces: Option<(fastrand::Rng, usize)>,
    /// The peer's preface and HELLO, until its first step sends them.
    handshake: Option<BytesMut>,
    /// Bytes the mux has not consumed yet, and every byte it was given.
    inbox: BytesMut,
    fed: Vec<u8>,
    /// The mux's output not yet written, as `transmit` last showed it, and all of it.
    unwritten: BytesMut,
    out: BytesMut,

    // ---- the model: reading ----
    /// The same bytes through a decoder of its own: which frames the mux has read.
    model_inbox: BytesMut,
    model_decoder: Decoder,
    model_preface: bool,
    /// The peer's HELLO has come: the flow limits it announced, its `max_frame`.
    peer: Option<(u32, Option<FlowLimits>)>,
    failure: Option<Failure>,
    /// Events to come, in order.
    expected: VecDeque<Expect>,

    // ---- the model: output ----
    /// Frames queued during this step, in order, and the size of the output.
    queued: Vec<Frame>,
    out_len: usize,
    written_total: u64,
    /// Since the output was last under its bound: the size of the frame that crossed it, and
    /// the bytes and answers queued past it.
    crossed: usize,
    past: usize,
    answers_past: usize,
    /// The CANCELs, PINGs and GOAWAYs among what was queued past it, in bytes.
    control_past: usize,
    /// The most the output held when `transmit` was called.
    peak: usize,
    /// Credit owed, a PONG held back for room.
    owed: (u64, u64),
    owed_pong: Option<u64>,
    /// CREDIT queued so far, and oneway requests of the peer's that ended, in requests and bytes.
    credited: (u64, u64),
    oneway_ended: (u64, u64),

    // ---- the model: this side's calls ----
    next_id: u64,
    /// Every call made, in order.
    made: Vec<u64>,
    /// Calls that went out, in order.
    on_wire: Vec<u64>,
    waiting: VecDeque<(u64, Request)>,
    /// Two-way calls sent that await an answer, and their size.
    pending: BTreeMap<u64, usize>,
    /// Oneway calls sent and not all written: where they end in the stream.
    unwritten_oneway: VecDeque<(u64, u64)>,
    /// This side's requests in progress at the peer, and the sizes of the oneway ones among
    /// them (only CREDIT returns those).
    outstanding: (u64, u64),
    oneway_at_peer: VecDeque<usize>,
    oneway_at_peer_bytes: u64,
    highest_sent: u64,
    peer_goaway: Option<u64>,
    /// The code of the peer's first GOAWAY, if it was a refusal rather than a shutdown.
    peer_refusal: Option<Code>,

    // ---- the model: the peer's calls ----
    peer_ids: Vec<u64>,
    highest_peer: u64,
    inbound: BTreeMap<u64, Inbound>,
    held: VecDeque<u64>,
    inbound_bytes: usize,
    went_away: bool,

    // ---- the model: heartbeat ----
    /// When a frame last arrived (creation until the HELLO), when our unanswered PING went,
    /// whether reading is paused, since when output waited with nothing written.
    heard: Instant,
    ping: Option<Instant>,
    paused: bool,
    blocked_since: Option<Instant>,
    nonces: Vec<u64>,

    transcript: Vec<String>,
    events: usize,
    error: Option<ProtocolError>,
}

impl Run {
    fn new(setup: Setup, pieces: Option<(fastrand::Rng, usize)>) -> Run {
        let now = Instant::now();
        let config = MuxConfig { heartbeat_interval: INTERVAL, heartbeat_timeout: TIMEOUT, ..small_config() };
        let mut mux = Mux::new(setup.role, config.clone(), now);
        let unwritten = BytesMut::from(mux.transmit());
        assert!(
            matches!(decode_output(&unwritten, frame::MIN_MAX_FRAME).as_slice(), [Frame::Hello(h)] if h.flow.is_some()),
            "a new mux queues its preface and a HELLO announcing FLOW, nothing else"
        );
        let out_len = unwritten.len();
        Run {
            setup,
            mux,
            now,
            pieces,
            handshake: Some(setup.peer_handshake()),
            inbox: BytesMut::new(),
            fed: Vec::new(),
            out: unwritten.clone(),
            out_len,
            unwritten,
            model_inbox: BytesMut::new(),
            model_decoder: Decoder::new(config.max_frame.min(frame::MAX_HELLO)),
            config,
            model_preface: false,
            peer: None,
            failure: None,
            expected: VecDeque::new(),
            queued: Vec::new(),
            written_total: 0,
            crossed: 0,
            past: 0,
            answers_past: 0,
            control_past: 0,
            peak: out_len,
            owed: (0, 0),
            owed_pong: None,
            credited: (0, 0),
            oneway_ended: (0, 0),
            next_id: setup.role.first_id(),
            made: Vec::new(),
            on_wire: Vec::new(),
            waiting: VecDeque::new(),
            pending: BTreeMap::new(),
            unwritten_oneway: VecDeque::new(),
            outstanding: (0, 0),
            oneway_at_peer: VecDeque::new(),
            oneway_at_peer_bytes: 0,
            highest_sent: 0,
            peer_goaway: None,
            peer_refusal: None,
            peer_ids: Vec::new(),
            highest_peer: 0,
            inbound: BTreeMap::new(),
            held: VecDeque::new(),
            inbound_bytes: 0,
            went_away: false,
            heard: now,
            ping: None,
            paused: false,
            blocked_since: None,
            nonces: Vec::new(),
            transcript: Vec::new(),
            events: 0,
            error: None,
        }
    }

    fn max_out(&self) -> usize {
        self.config.max_queued_output
    }

    fn max_requests(&self) -> usize {
        self.config.max_requests as usize
    }

    /// The largest frame this side may send now.
    fn limit(&self) -> u32 {
        self.peer.map_or(frame::MIN_MAX_FRAME, |(max_frame, _)| max_frame)
    }

    fn play(mut self, mut script: &[u8]) -> Outcome {
        while self.error.is_none() {
            let Some(step) = Step::parse(&mut script) else { break };
            self.step(step);
            if self.error.is_none() && !self.inbox.is_empty() && self.mux.wants_read() {
                // A driver reads what is left once the peer is back within the limits.
                self.read(&[]);
            }
            self.after(&step);
        }
        if let Some(error) = self.error.clone() {
            self.assert_reads_nothing_more(&error);
        }
        Outcome { transcript: self.transcript, events: self.events, out: self.out.freeze(), error: self.error }
    }

    fn step(&mut self, step: Step<'_>) {
        let mut peer = BytesMut::new();
        match step {
            Step::Bytes(bytes) => peer.extend_from_slice(bytes),
            Step::PeerRequest { pick: which, size, oneway, crowded } => {
                let new = self.next_peer_id();
                let id = match which % 4 {
                    0 => pick(&self.peer_ids, which / 4, new),
                    _ => new,
                };
                let mut ctx = Context::new();
                if crowded {
                    for key in ["a", "b", "c"] {
                        ctx.metadata_mut().append(key, "v");
                    }
                }
                let request = Request::new("Fuzz.peer", payload(size)).with_oneway(oneway).with_ctx(ctx);
                if let Err(e) = frame::encode_request(&mut peer, id, &request, frame::DEFAULT_MAX_FRAME) {
                    panic!("the peer's request does not encode: {e}");
                }
            }
            Step::PeerResponse { pick: which, error } => {
                let id = pick(&self.on_wire, which, self.next_id);
                let result =
                    if error { Err(Status::not_found("fuzz: no such method")) } else { Ok(Response::default()) };
                if let Err(e) = frame::encode_response(&mut peer, id, &result, frame::DEFAULT_MAX_FRAME) {
                    panic!("the peer's response does not encode: {e}");
                }
            }
            Step::PeerCancel { pick: which } => {
                let id = pick(&self.peer_ids, which, self.next_peer_id());
                frame::encode_cancel(&mut peer, id);
            }
            Step::PeerPing { nonce, pong: false } => frame::encode_ping(&mut peer, nonce.into()),
            Step::PeerPing { nonce, pong: true } => frame::encode_pong(&mut peer, nonce.into()),
            Step::PeerGoAway { pick: which, code } => {
                let last_id = pick(&self.on_wire, which, 0);
                let goaway = GoAway { last_id, code: code.as_u8(), message: "fuzz: peer going away".into() };
                frame::encode_goaway(&mut peer, &goaway);
            }
            Step::PeerCredit { pick, bogus } => {
                let n = usize::from(pick) % (self.oneway_at_peer.len() + 1);
                let mut credit = (n as u64, self.oneway_at_peer.iter().take(n).map(|&size| size as u64).sum::<u64>());
                if bogus {
                    let more = if pick.is_multiple_of(2) { &mut credit.0 } else { &mut credit.1 };
                    *more += 1;
                }
                frame::encode_credit(&mut peer, credit.0, credit.1);
            }
            Step::Call { size, oneway } => return self.call(size, oneway),
            Step::Cancel { pick: which } => return self.cancel(pick(&self.made, which, self.next_id)),
            Step::Next => return self.next_request(),
            Step::Finish { pick, size, error } => return self.finish(pick, size, error),
            Step::GoAway => return self.go_away(),
            Step::Drain => return self.drain(),
            Step::Write { units } => return self.write(units),
            Step::WriteBlocked => {
                self.mux.write_blocked(self.now);
                if self.out_len > 0 {
                    self.blocked_since.get_or_insert(self.now);
                }
                return;
            }
            Step::Wait { millis } => return self.wait(Duration::from_millis(millis.into())),
        }
        self.deliver(&peer);
    }

    /// The id the peer would open next: above every one it used.
    fn next_peer_id(&self) -> u64 {
        match self.highest_peer {
            0 => match self.setup.role {
                Role::Connector => 2,
                Role::Acceptor => 1,
            },
            highest => highest.saturating_add(2),
        }
    }

    // ---- the peer's bytes ----

    /// The peer's `bytes` arrive: at once, or in pieces in the second pass.
    fn deliver(&mut self, bytes: &[u8]) {
        let mut bytes = bytes.to_vec();
        if let Some(handshake) = self.handshake.take() {
            bytes.splice(..0, handshake);
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() && self.error.is_none() {
            let n = match &mut self.pieces {
                Some((rng, largest)) => rng.usize(1..=*largest).min(rest.len()),
                None => rest.len(),
            };
            let piece = rest[..n].to_vec();
            rest = &rest[n..];
            self.read(&piece);
        }
    }

    /// `piece` arrives, and the mux reads what it can; so does the model.
    fn read(&mut self, piece: &[u8]) {
        self.inbox.extend_from_slice(piece);
        self.fed.extend_from_slice(piece);
        self.model_inbox.extend_from_slice(piece);
        let result = self.mux.recv(&mut self.inbox, self.now);
        assert!(self.fed.ends_with(&self.inbox), "the mux consumed bytes from somewhere other than the front");
        if self.failure.is_none() {
            self.model_recv();
        }
        let unread = self.model_inbox.len();
        match (result, &self.failure) {
            (Ok(()), None) => {
                assert_eq!(self.inbox.len(), unread, "the mux read other frames than the model");
            }
            (Err(e), Some(failure)) => {
                match failure {
                    Failure::Exactly(expected) => assert_eq!(&e, expected),
                    Failure::Violation => assert!(matches!(e, ProtocolError::Violation(_)), "{e:?}"),
                }
                self.error = Some(e);
            }
            (result, failure) => panic!("recv returned {result:?}, the model expected {failure:?}"),
        }
    }

    /// What `recv` does with the bytes the model has: PROTOCOL.md §4 to §8 and §10 to §15, and the mux docs.
    fn model_recv(&mut self) {
        self.resume_if_within();
        loop {
            if !self.model_preface {
                match frame::decode_preface(&mut self.model_inbox) {
                    Ok(true) => self.model_preface = true,
                    Ok(false) => return,
                    Err(e) => return self.fail(Failure::Exactly(e.into())),
                }
            }
            if self.over_limits() {
                self.paused = true;
                return;
            }
            let before = self.model_inbox.len();
            let decoded = match self.model_decoder.decode(&mut self.model_inbox) {
                Ok(decoded) => decoded,
                Err(e) => return self.fail(Failure::Exactly(e.into())),
            };
            // Any whole frame is heard, also one of a kind the decoder skips; before the HELLO,
            // only the HELLO (docs/PROTOCOL.md §13).
            if self.model_inbox.len() < before && (self.peer.is_some() || decoded.is_some()) {
                self.heard = self.now;
                self.ping = None;
            }
            let Some(frame) = decoded else { return };
            let size = self.model_decoder.last_len();
            if let Err(failure) = self.on_frame(frame, size) {
                return self.fail(failure);
            }
        }
    }

    fn fail(&mut self, failure: Failure) {
        self.failure = Some(failure);
    }

    fn on_frame(&mut self, frame: Frame, size: usize) -> Result<(), Failure> {
        let Some((_, flow)) = self.peer else {
            let Frame::Hello(hello) = frame else { return Err(Failure::Violation) };
            assert_eq!((hello.name.as_str(), hello.flow), (PEER_NAME, self.setup.peer_flow));
            self.peer = Some((hello.max_frame, hello.flow));
            // Only the first frame is held to the HELLO's bound (docs/PROTOCOL.md §5).
            self.model_decoder = Decoder::new(self.config.max_frame);
            self.expected.push_back(Expect::Ready);
            self.send_waiting();
            return Ok(());
        };
        match frame {
            Frame::Hello(_) => return Err(Failure::Violation),
            Frame::Request(request) => self.on_request(request, size, flow.is_some())?,
            Frame::Response(response) => {
                let id = response.id;
                if !self.setup.role.opens(id) || id > self.highest_sent {
                    return Err(Failure::Violation);
                }
                if let Some(size) = self.pending.remove(&id) {
                    self.release(size);
                    let result = if response.metadata.len() > usize::from(self.config.max_metadata_entries) {
                        Err((Code::ResourceExhausted, false))
                    } else {
                        response.into_result().map(|_| ()).map_err(|s| (s.code(), s.is_unprocessed()))
                    };
                    self.expected.push_back(Expect::Response { token: id, result });
                    self.send_waiting();
                }
            }
            Frame::Cancel { id } => {
                if let Some(call) = self.end_inbound(id)
                    && matches!(call.state, InState::Started)
                {
                    self.expected.push_back(Expect::Cancel { id });
                }
            }
            Frame::Ping { nonce } => {
                if self.out_len < self.max_out() {
                    self.queue_bare(Kind::Pong, |b| frame::encode_pong(b, nonce));
                } else {
                    self.owed_pong = Some(nonce);
                }
            }
            Frame::Pong { .. } => {}
            Frame::GoAway(goaway) => {
                let first = self.peer_goaway.is_none();
                self.peer_goaway = Some(goaway.last_id);
                let code = Code::from_u8(goaway.code);
                if first && matches!(code, Code::ResourceExhausted | Code::Unauthenticated | Code::PermissionDenied) {
                    self.peer_refusal = Some(code);
                }
                if first {
                    self.send_waiting();
                    self.expected.push_back(Expect::GoAway { last_id: goaway.last_id });
                }
            }
            Frame::Credit { requests, bytes } => {
                let (n, total) = (self.oneway_at_peer.len() as u64, self.oneway_at_peer_bytes);
                if requests > n || bytes > total || (requests == 0 && bytes > 0) {
                    return Err(Failure::Violation);
                }
                for _ in 0..requests {
                    self.oneway_at_peer.pop_front();
                }
                self.oneway_at_peer_bytes -= bytes;
                self.outstanding.0 -= requests;
                self.outstanding.1 -= bytes;
                self.send_waiting();
            }
        }
        Ok(())
    }

    fn on_request(&mut self, request: RequestFrame, size: usize, flow: bool) -> Result<(), Failure> {
        let id = request.id;
        if id == 0 || self.setup.role.opens(id) || self.inbound.contains_key(&id) {
            return Err(Failure::Violation);
        }
        if !self.peer_ids.contains(&id) {
            self.peer_ids.push(id);
        }
        self.highest_peer = self.highest_peer.max(id);
        let entries = request.metadata.len();
        let max_entries = self.config.max_metadata_entries;
        let refusal = if self.went_away {
            Some(Status::unavailable("the server is shutting down; the call was not processed"))
        } else if entries > usize::from(max_entries) {
            Some(Status::resource_exhausted(format!(
                "request to {} carries {entries} metadata entries; {} accepts at most {max_entries}",
                request.method_str(),
                self.config.name,
            )))
        } else {
            None
        };
        let oneway = request.is_oneway();
        if refusal.is_some() && oneway {
            self.owe_credit(size, flow);
            return Ok(());
        }
        let state = match refusal {
            Some(status) => InState::Refuse(status.mark_unprocessed()),
            None => InState::Held,
        };
        self.inbound.insert(id, Inbound { oneway, size, state, arrived: self.now });
        self.inbound_bytes += size;
        self.held.push_back(id);
        self.send_refusals();
        Ok(())
    }

    fn owe_credit(&mut self, size: usize, flow: bool) {
        if flow {
            self.owed.0 += 1;
            self.owed.1 += size as u64;
            self.oneway_ended.0 += 1;
            self.oneway_ended.1 += size as u64;
        }
    }

    /// Ends the peer's call `id`, if in progress: it leaves the queue, and a oneway one is owed.
    fn end_inbound(&mut self, id: u64) -> Option<Inbound> {
        let call = self.inbound.remove(&id)?;
        self.inbound_bytes -= call.size;
        self.held.retain(|&held| held != id);
        if call.oneway {
            let flow = self.peer.is_some_and(|(_, flow)| flow.is_some());
            self.owe_credit(call.size, flow);
        }
        Some(call)
    }

    /// Refusals at the front of the queue go while the output has room.
    fn send_refusals(&mut self) {
        while self.out_len < self.max_out()
            && let Some(&id) = self.held.front()
            && matches!(self.inbound.get(&id), Some(Inbound { state: InState::Refuse(_), .. }))
        {
            self.refuse_front();
        }
    }

    fn refuse_front(&mut self) {
        let Some(id) = self.held.pop_front() else { return };
        if let Some(Inbound { state: InState::Refuse(status), .. }) = self.end_inbound(id) {
            self.queue_response(Kind::Refusal, id, &Err(status));
        }
    }

    /// Whether the peer has more requests in progress here than this side allows (§15).
    fn over_limits(&self) -> bool {
        let count = self.inbound.len();
        count > self.max_requests() || (count > 1 && self.inbound_bytes > self.config.max_request_bytes as usize)
    }

    fn started(&self) -> usize {
        self.inbound.values().filter(|call| matches!(call.state, InState::Started)).count()
    }

    fn has_request(&self) -> bool {
        !self.held.is_empty() && self.started() < self.max_requests() && self.out_len < self.max_out()
    }

    // ---- the output ----

    /// Queues `bytes`, one frame of `kind`, checking the output bound's rule.
    fn queue(&mut self, kind: Kind, bytes: BytesMut) {
        let size = bytes.len();
        if self.out_len < self.max_out() {
            self.crossed = size;
            self.past = 0;
            self.answers_past = 0;
            self.control_past = 0;
        } else {
            assert!(!kind.waits_for_room(), "a {kind:?} was queued with the output over its bound");
            self.past += size;
            if kind == Kind::Answer {
                self.answers_past += 1;
                assert!(self.answers_past <= self.max_requests(), "more answers past the bound than handlers run");
            } else {
                self.control_past += size;
            }
        }
        self.out_len += size;
        self.queued.extend(decode_frames(bytes, frame::DEFAULT_MAX_FRAME));
    }

    fn queue_bare(&mut self, kind: Kind, encode: impl FnOnce(&mut BytesMut)) {
        let mut bytes = BytesMut::new();
        encode(&mut bytes);
        self.queue(kind, bytes);
    }

    /// Queues the answer to the peer's call `id`, or the error that replaces one too large.
    fn queue_response(&mut self, kind: Kind, id: u64, result: &Result<Response, Status>) {
        let max = self.limit();
        let mut bytes = BytesMut::new();
        if let Err(e) = frame::encode_response(&mut bytes, id, result, max) {
            let status = Err(Status::resource_exhausted(format!("the response was not sent: {e}")));
            if let Err(e) = frame::encode_response(&mut bytes, id, &status, max) {
                panic!("a short error response does not fit: {e}");
            }
        }
        self.queue(kind, bytes);
    }

    /// What `transmit` queues first: the credit owed and a PONG held back, when there is room.
    fn model_transmit(&mut self) {
        if self.owed.0 > 0 && self.out_len < self.max_out() {
            let (requests, bytes) = std::mem::take(&mut self.owed);
            self.queue_bare(Kind::Credit, |b| frame::encode_credit(b, requests, bytes));
        }
        if let Some(nonce) = self.owed_pong
            && self.out_len < self.max_out()
        {
            self.owed_pong = None;
            self.queue_bare(Kind::Pong, |b| frame::encode_pong(b, nonce));
        }
    }

    /// After each step: `transmit`, then what must hold of the output, the events and the state.
    fn after(&mut self, step: &Step<'_>) {
        if self.error.is_none() {
            self.model_transmit();
        }
        let out = Bytes::copy_from_slice(self.mux.transmit());
        self.peak = self.peak.max(out.len());
        assert!(out.starts_with(&self.unwritten), "the mux changed output it had queued");
        let new = out.slice(self.unwritten.len()..);
        self.unwritten = BytesMut::from(&out[..]);
        self.out.extend_from_slice(&new);
        self.transcript.push(format!("{step:?} queued {} bytes", new.len()));
        let mut frames = decode_frames(BytesMut::from(&new[..]), self.limit());
        let queued = std::mem::take(&mut self.queued);
        match &self.error {
            Some(
                ProtocolError::HeartbeatTimeout(_) | ProtocolError::HandshakeTimeout(_) | ProtocolError::NotReading(_),
            ) => {
                assert_eq!(frames, queued, "a peer found dead is sent nothing");
            }
            Some(error) => {
                let Some(Frame::GoAway(goaway)) = frames.pop() else {
                    panic!("after {error:?} the last frame queued is not a GOAWAY: {frames:?}");
                };
                assert_eq!((goaway.code, &goaway.message), (Code::InvalidArgument.as_u8(), &error.to_string()));
                assert_eq!(goaway.last_id, self.highest_peer, "the GOAWAY's last id");
                assert_eq!(frames, queued, "the mux's output for {step:?}, up to its error");
            }
            None => assert_eq!(frames, queued, "the mux's output for {step:?}"),
        }
        for frame in &frames {
            match frame {
                Frame::Request(request) => {
                    assert!(
                        self.on_wire.last().is_none_or(|&last| last < request.id),
                        "call {} overtook another",
                        request.id
                    );
                    self.on_wire.push(request.id);
                }
                Frame::Credit { requests, bytes } => {
                    self.credited.0 += requests;
                    self.credited.1 += bytes;
                }
                Frame::Ping { nonce } => {
                    assert!(!self.nonces.contains(nonce), "PING nonce {nonce} was used before");
                    self.nonces.push(*nonce);
                }
                _ => {}
            }
        }
        while let Some(event) = self.mux.poll_event() {
            self.transcript.push(format!("{event:?}"));
            self.events += 1;
            let expected = self.expected.pop_front();
            assert_eq!(Some(Expect::of(&event)), expected, "after {step:?}");
        }
        assert!(self.expected.is_empty(), "events that did not come: {:?}", self.expected);
        if self.error.is_none() {
            self.check_state();
        }
    }

    // ---- this side's calls ----

    fn call(&mut self, size: u8, oneway: bool) {
        let id = self.next_id;
        self.next_id += 2;
        self.made.push(id);
        let request = Request::new("Fuzz.call", payload(size)).with_oneway(oneway);
        let result = self.mux.send_request(id, request.clone(), id);
        let expected = if let Some(code) = self.refusal() {
            Err(code)
        } else if !self.waiting.is_empty() {
            self.waiting.push_back((id, request));
            Ok(())
        } else {
            match self.try_send(id, &request) {
                Some(true) => Ok(()),
                Some(false) => Err(Code::ResourceExhausted),
                None => {
                    self.waiting.push_back((id, request));
                    Ok(())
                }
            }
        };
        match (result, expected) {
            (Ok(()), Ok(())) => {}
            (Err((status, token)), Err(code)) => {
                assert_eq!((status.code(), status.is_unprocessed(), token), (code, true, id), "call {id} refused");
            }
            (result, expected) => panic!("call {id} (oneway: {oneway}) returned {result:?}, expected {expected:?}"),
        }
    }

    /// Why no call may be sent now, if none may.
    fn refusal(&self) -> Option<Code> {
        self.peer_refusal.or((self.peer_goaway.is_some() || self.went_away).then_some(Code::Unavailable))
    }

    /// Sends the call if the peer's HELLO came, the output has room and the peer's limits admit
    /// it: `Some(true)` sent, `Some(false)` too large for the peer, `None` not now.
    fn try_send(&mut self, id: u64, request: &Request) -> Option<bool> {
        let (max_frame, flow) = self.peer?;
        if self.out_len >= self.max_out() {
            return None;
        }
        let mut bytes = BytesMut::new();
        let Ok(size) = frame::encode_request(&mut bytes, id, request, max_frame) else { return Some(false) };
        if let Some(FlowLimits { max_requests, request_bytes }) = flow {
            let (requests, total) = self.outstanding;
            let alone = requests == 0;
            if !alone && (requests >= u64::from(max_requests) || total + size as u64 > u64::from(request_bytes)) {
                return None;
            }
        }
        self.queue(Kind::Request, bytes);
        self.highest_sent = self.highest_sent.max(id);
        if request.is_oneway() {
            if flow.is_some() {
                self.outstanding.0 += 1;
                self.outstanding.1 += size as u64;
                self.oneway_at_peer.push_back(size);
                self.oneway_at_peer_bytes += size as u64;
            }
            self.unwritten_oneway.push_back((self.written_total + self.out_len as u64, id));
        } else {
            self.outstanding.0 += 1;
            self.outstanding.1 += size as u64;
            self.pending.insert(id, size);
        }
        Some(true)
    }

    fn release(&mut self, size: usize) {
        self.outstanding.0 -= 1;
        self.outstanding.1 -= size as u64;
    }

    /// The calls that wait go, in order, while they may.
    fn send_waiting(&mut self) {
        if let Some(code) = self.refusal() {
            for (id, _) in self.waiting.drain(..) {
                self.expected.push_back(Expect::refused(id, code));
            }
            return;
        }
        while let Some((id, request)) = self.waiting.pop_front() {
            match self.try_send(id, &request) {
                Some(true) => {}
                Some(false) => self.expected.push_back(Expect::refused(id, Code::ResourceExhausted)),
                None => {
                    self.waiting.push_front((id, request));
                    return;
                }
            }
        }
    }

    fn cancel(&mut self, id: u64) {
        let token = self.mux.cancel(id);
        let expected = if let Some(size) = self.pending.remove(&id) {
            self.queue_bare(Kind::Cancel, |b| frame::encode_cancel(b, id));
            self.release(size);
            self.send_waiting();
            Some(id)
        } else if let Some(at) = self.waiting.iter().position(|(waiting, _)| *waiting == id) {
            self.waiting.remove(at);
            Some(id)
        } else {
            None
        };
        assert_eq!(token, expected, "cancelling call {id}");
    }

    fn go_away(&mut self) {
        self.mux.go_away(Code::Unavailable, "fuzz: going away");
        if !self.went_away {
            let goaway = GoAway {
                last_id: self.highest_peer,
                code: Code::Unavailable.as_u8(),
                message: "fuzz: going away".into(),
            };
            self.queue_bare(Kind::GoAway, |b| frame::encode_goaway(b, &goaway));
            self.went_away = true;
            self.send_waiting();
        }
    }

    fn drain(&mut self) {
        let mut drained: Vec<_> = self.mux.drain_pending().collect();
        drained.sort_unstable();
        let last_id = self.peer_goaway;
        let mut expected: Vec<_> = self.pending.keys().map(|&id| (id, last_id.is_some_and(|last| id > last))).collect();
        expected.extend(self.waiting.drain(..).map(|(id, _)| (id, true)));
        expected.extend(self.unwritten_oneway.drain(..).map(|(_, id)| (id, false)));
        expected.sort_unstable();
        self.pending.clear();
        assert_eq!(drained, expected, "drained (token, unprocessed) after a GOAWAY with last id {last_id:?}");
    }

    // ---- the peer's calls ----

    fn next_request(&mut self) {
        let stats = self.mux.stats();
        let handed = self.mux.next_request();
        let mut expected = None;
        while self.has_request() {
            let Some(&id) = self.held.front() else { break };
            if let Some(Inbound { state: state @ InState::Held, arrived, .. }) = self.inbound.get_mut(&id) {
                *state = InState::Started;
                self.held.pop_front();
                expected = Some((id, *arrived));
                break;
            }
            self.refuse_front();
        }
        let handed_arrived = handed.as_ref().map(|(request, arrived)| (request.id, *arrived));
        assert_eq!(handed_arrived, expected, "the request handed over, and when it arrived");
        if let Some((request, _)) = handed {
            self.transcript.push(format!("handed over {}", request.id));
            self.events += 1;
            assert!(stats.requests_in_progress - stats.requests_waiting < self.max_requests(), "{stats:?}");
            assert!(stats.queued_output < self.max_out(), "handed over with the output over its bound: {stats:?}");
            assert!(request.metadata.len() <= usize::from(self.config.max_metadata_entries));
        }
    }

    fn finish(&mut self, which: u8, size: u8, error: bool) {
        // A driver finishes only what it was handed: calls handed over, and ids not in progress.
        let ids: Vec<u64> = self
            .peer_ids
            .iter()
            .copied()
            .filter(|id| self.inbound.get(id).is_none_or(|call| matches!(call.state, InState::Started)))
            .collect();
        let id = pick(&ids, which, self.next_peer_id());
        let result = match error {
            true => Err(Status::internal("fuzz: the handler failed").with_details(payload(size))),
            false => Ok(Response::new(payload(size))),
        };
        self.mux.finish(id, &result);
        if let Some(call) = self.end_inbound(id)
            && !call.oneway
        {
            self.queue_response(Kind::Answer, id, &result);
        }
    }

    // ---- writes and time ----

    fn write(&mut self, units: u8) {
        let n = if units == u8::MAX { usize::MAX } else { usize::from(units) * 16 };
        self.mux.written(n);
        let n = n.min(self.out_len);
        if n == 0 {
            return;
        }
        bytes::Buf::advance(&mut self.unwritten, n);
        self.out_len -= n;
        self.written_total += n as u64;
        self.blocked_since = None;
        while let Some(&(end, id)) = self.unwritten_oneway.front()
            && end <= self.written_total
        {
            self.unwritten_oneway.pop_front();
            self.expected.push_back(Expect::Response { token: id, result: Ok(()) });
        }
        self.send_refusals();
        self.send_waiting();
    }

    /// When the heartbeat model says `on_timeout` must run next.
    fn deadline(&self) -> Instant {
        let heartbeat = match (self.peer, self.ping) {
            (None, _) => self.heard + TIMEOUT,
            (Some(_), Some(sent)) => sent + TIMEOUT,
            (Some(_), None) => self.heard + INTERVAL,
        };
        match self.blocked_since {
            Some(since) => heartbeat.min(since + INTERVAL + TIMEOUT),
            None => heartbeat,
        }
    }

    /// Reading again after the peer was over the limits: its silence since was our doing.
    fn resume_if_within(&mut self) {
        if self.paused && !self.over_limits() {
            self.paused = false;
            self.heard = self.now;
            self.ping = None;
        }
    }

    fn wait(&mut self, by: Duration) {
        self.now += by;
        let result = self.mux.on_timeout(self.now);
        let expected = self.model_on_timeout();
        assert_eq!(result, expected, "on_timeout at {by:?}");
        match result {
            Err(e) => self.error = Some(e),
            Ok(()) => assert!(self.mux.next_timeout() > self.now, "on_timeout ran, yet next_timeout is not later"),
        }
    }

    /// PROTOCOL.md §13: the handshake's timeout, PING and dead peer, the pause, not reading.
    fn model_on_timeout(&mut self) -> Result<(), ProtocolError> {
        if self.blocked_since.is_some_and(|since| self.now >= since + INTERVAL + TIMEOUT) {
            return Err(ProtocolError::NotReading(INTERVAL + TIMEOUT));
        }
        if self.peer.is_none() {
            return match self.now < self.heard + TIMEOUT {
                true => Ok(()),
                false => Err(ProtocolError::HandshakeTimeout(TIMEOUT)),
            };
        }
        self.resume_if_within();
        if self.paused {
            self.heard = self.now;
            self.ping = None;
            return Ok(());
        }
        match self.ping {
            Some(sent) if self.now >= sent + TIMEOUT => Err(ProtocolError::HeartbeatTimeout(TIMEOUT)),
            None if self.now >= self.heard + INTERVAL => {
                let nonce = self.nonces.len() as u64 + 1;
                self.queue_bare(Kind::Ping, |b| frame::encode_ping(b, nonce));
                self.ping = Some(self.now);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    // ---- checks ----

    /// What must hold after every step that did not fail.
    fn check_state(&self) {
        let stats = self.mux.stats();
        let draining = self.went_away || self.peer_goaway.is_some();
        assert_eq!(
            (stats.calls_pending, stats.calls_waiting, self.mux.pending_len()),
            (self.pending.len(), self.waiting.len(), self.pending.len() + self.waiting.len()),
            "this side's calls (sent, waiting)"
        );
        assert_eq!(
            (stats.requests_in_progress, stats.request_bytes_in_progress, stats.requests_waiting),
            (self.inbound.len(), self.inbound_bytes, self.held.len()),
            "the peer's calls (in progress, bytes, waiting)"
        );
        assert_eq!((self.mux.is_ready(), self.mux.is_draining()), (self.peer.is_some(), draining));
        let drained = draining && self.pending.is_empty() && self.waiting.is_empty() && self.inbound.is_empty();
        assert_eq!(self.mux.is_drained(), drained, "is_drained");
        assert_eq!(self.mux.next_timeout(), self.deadline(), "next_timeout disagrees with the heartbeat model");
        assert_eq!(self.mux.has_request(), self.has_request(), "has_request");

        // The peer's requests in progress here: within the limits, plus the one frame read
        // before reading stopped; and reading stops exactly while the peer is over them.
        let over = self.over_limits();
        assert_eq!((self.mux.wants_read(), stats.reading_paused), (!over, over), "{stats:?}");
        let frame = 4 + self.config.max_frame as usize;
        let bytes = (self.config.max_request_bytes as usize).max(frame) + frame;
        assert!(stats.peak_requests_in_progress <= self.max_requests() + 1, "{stats:?}");
        assert!(stats.peak_request_bytes_in_progress <= bytes, "{stats:?}");

        // This side's requests in progress at the peer, as the peer counts them from the wire:
        // within its FLOW limits, one alone of any size.
        if let Some((_, Some(flow))) = self.peer {
            let (requests, total) = self.outstanding;
            assert!(requests <= u64::from(flow.max_requests), "{requests} requests in progress at the peer");
            assert!(requests <= 1 || total <= u64::from(flow.request_bytes), "{total} bytes in progress at the peer");
        }
        // CREDIT returns exactly the oneway requests that ended, to a peer that asked for it.
        let owed = (self.oneway_ended.0 - self.owed.0, self.oneway_ended.1 - self.owed.1);
        assert_eq!(self.credited, owed, "CREDIT sent for the oneway requests ended");
        if self.peer.is_some_and(|(_, flow)| flow.is_none()) {
            assert_eq!(self.credited, (0, 0), "CREDIT to a peer that did not announce FLOW");
        }

        // The output bound (see `mux_local`'s docs).
        assert_eq!(stats.queued_output, self.out_len, "queued output");
        let bound = match self.out_len < self.max_out() {
            true => self.max_out() - 1,
            false => self.max_out() - 1 + self.crossed + self.past,
        };
        assert!(self.out_len <= bound, "{} bytes queued, over the bound of {bound}", self.out_len);
        let frame = 4 + self.limit() as usize;
        let documented = self.max_out() - 1 + frame + self.max_requests() * frame + self.control_past;
        assert!(self.out_len <= documented, "{} bytes queued, over the documented {documented}", self.out_len);
        assert_eq!(stats.peak_queued_output, self.peak, "the peak of the queued output");
    }

    /// A failed connection is over: a PING from the peer is neither read nor answered.
    fn assert_reads_nothing_more(&mut self, error: &ProtocolError) {
        let mut ping = BytesMut::new();
        frame::encode_ping(&mut ping, 1);
        let before = ping.clone();
        let queued = self.mux.queued_output();
        let result = self.mux.recv(&mut ping, self.now);
        assert!(matches!(result, Ok(())), "after {error:?} the mux read on: {result:?}");
        assert_eq!(ping, before, "after {error:?} the mux consumed bytes");
        assert!(!self.mux.wants_read(), "after {error:?} the mux wants to read");
        assert_eq!(self.mux.transmit().len(), queued, "after {error:?} the mux queued more");
        let result = self.mux.on_timeout(self.now + TIMEOUT);
        assert!(matches!(result, Ok(())), "after {error:?} the heartbeat ran on: {result:?}");
    }
}
