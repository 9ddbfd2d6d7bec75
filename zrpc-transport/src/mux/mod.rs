//! The connection state machine: many calls in flight both ways over one byte stream, with
//! flow control, and no I/O.
//!
//! A [`Mux`] is one end of a zrpc connection. It is fed the bytes that arrived
//! ([`Mux::recv`]), told what the local side wants (send a request, cancel one, answer one, go
//! away), what it managed to write and what time it is; it keeps the bytes to send
//! ([`Mux::transmit`]) and reports what happened as [`Event`]s ([`Mux::poll_event`]) and the
//! peer's requests as they may start ([`Mux::next_request`]). A driver (`crate::conn`) connects it
//! to a socket; tests drive two muxes against each other deterministically, with no sockets and
//! no clock.
//!
//! The contract, in order of a connection's life (the wire format is in `docs/PROTOCOL.md`):
//!
//! 1. On creation the mux queues its preface and a HELLO announcing its frame limit and its FLOW
//!    limits ([`MuxConfig::max_requests`], [`MuxConfig::max_request_bytes`]). Until the peer's
//!    preface and HELLO have arrived it reports nothing and sends no request: calls made
//!    meanwhile wait, since the peer's limits are unknown. The peer's first frame may be at
//!    most [`frame::MAX_HELLO`] long (128 KiB; or `max_frame` if lower), later ones
//!    `max_frame`: a peer that has not shown a token cannot make the connection hold more.
//! 2. Ids: the connecting side opens odd ids, the accepting side even ids, never 0. The mux
//!    hands them out through [`Mux::call_ids`], to callers on any task, before their calls reach
//!    it, so that a caller can cancel its call without a round trip through the driver; calls
//!    may then reach [`Mux::send_request`] out of id order, which is allowed. (Tests may pick
//!    their own ids of this side's parity.) An id is never reused.
//! 3. A request from the peer with the wrong parity, or with the id of one still in progress, is
//!    a protocol violation. So is a RESPONSE for an id above any this side sent. A RESPONSE for
//!    an id that is no longer pending (it was cancelled or timed out here) is ignored: the two
//!    crossed on the wire.
//! 4. Every protocol violation — including any [`FrameError`] — is returned as a
//!    [`ProtocolError`]; the mux has then queued a GOAWAY saying why, and the driver writes it
//!    and closes. Nothing a peer sends can make the mux panic or allocate beyond the bounds
//!    below.
//! 5. Flow control, this side's calls: a call is sent only while the peer's FLOW limits admit it
//!    and less than [`MuxConfig::max_queued_output`] waits to be written; otherwise it waits in
//!    order. It is in progress at the peer until its answer arrives, this side cancels it, or
//!    (oneway) a CREDIT returns it; each of those lets waiting calls go.
//! 6. Flow control, the peer's calls: a request read is counted until it is answered, cancelled
//!    or (oneway) finished, and waits in the mux until [`Mux::next_request`] hands it over, which
//!    it does only while fewer than `max_requests` are being handled and less than
//!    `max_queued_output` waits to be written: past that bound new work waits, while handlers
//!    already running finish. The mux keeps reading — answers, cancels, credit and pings arrive
//!    whatever the output — so that two sides calling each other never wait on each other. A
//!    peer that exceeds this side's limits is read no further ([`Mux::wants_read`] is false)
//!    until it is back within them. Oneway requests that end are returned to the peer with
//!    CREDIT, gathered into one frame per write.
//! 7. Heartbeat: when nothing has arrived for `heartbeat_interval`, a PING is queued; when nothing
//!    has arrived for `heartbeat_timeout` after it, the peer is dead ([`Mux::on_timeout`]); while
//!    the mux does not read because the peer is over its limits, neither happens. When output
//!    has waited and the peer took none of it for `interval + timeout`, the peer is not reading
//!    and is given up too. After either, nothing more it sends is read. Any frame counts as a
//!    sign of life, so a busy connection is never pinged. PONGs count against the output bound:
//!    past it, several PINGs get one PONG (the latest nonce) once the output drains; CREDIT
//!    waits the same way, gathered into one frame.
//! 8. GOAWAY from the peer: no new requests may be sent (they fail with `Unavailable`), pending
//!    ones still complete. [`Mux::go_away`] does the same from this side: requests arriving after
//!    it are answered `Unavailable` without being handed over.
//! 9. Deadlines of this side's calls are the mux's: at a call's deadline ([`Mux::on_timeout`],
//!    whose [`next_timeout`](Mux::next_timeout) includes the earliest) it fails with
//!    `DeadlineExceeded`, and a call that was sent is cancelled on the wire; one that never left
//!    is marked unprocessed. One clock for every call, rather than a timer each.
//! 10. Sizes: a frame larger than the peer's announced maximum is never sent. An oversized
//!     request fails that call with `ResourceExhausted`; an oversized response is replaced by a
//!     `ResourceExhausted` error response, so the caller learns why. A request carrying more
//!     metadata entries than [`MuxConfig::max_metadata_entries`] is refused with
//!     `ResourceExhausted` (unprocessed) and never handed over; a response with more fails its
//!     call the same way.
//! 11. Compression: the HELLO announces the algorithms this build decodes
//!     ([`crate::compression::available`]); the peer's are in [`Peer::compressions`]. The mux
//!     never compresses or decompresses: a request or answer handed to it compressed
//!     ([`Mux::send_compressed_request_at`], [`Mux::finish_compressed`]) goes out with
//!     `COMPRESSED`, and a response that came compressed is reported as it came
//!     ([`Event::Response`]'s `compressed`), for the caller's task to decompress. For flow
//!     control a compressed request counts as its size on the wire plus its declared length
//!     (docs/PROTOCOL.md §15), on both sides, so that the peer's requests in progress are bounded
//!     once decompressed too.
//!
//! # Bounds
//!
//! What the mux holds for the peer is bounded: its queued output by `max_queued_output` plus the
//! frame that passed it and the answers of handlers that were running then (PONG and CREDIT
//! wait for room; only this side's CANCELs and PINGs and a GOAWAY are queued past it as well:
//! the exact slack is derived in `zrpc_transport::fuzz`'s `mux_local`), the peer's requests in progress by its FLOW limits (`max_requests` requests of
//! `max_request_bytes` in all, or one request up to `max_frame`; one frame more from a peer that
//! breaks the rule, before reading stops), the read buffer by one frame being assembled. What
//! the local side holds — its calls waiting to be sent — is its own.

mod flow;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;
use zrpc_core::{Code, CodecId, Request, Response, Status};

use self::flow::{Inbound, Limits, Outstanding, Owed, OwnIds, PeerIds};
use crate::compression::Accepted;
use crate::frame::{self, CompressedHeader, Decoder, FlowLimits, Frame, FrameError, GoAway, Hello, RequestFrame};

/// Which end of the connection this is; decides the parity of the ids it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection; opens odd ids.
    Connector,
    /// Accepted the connection; opens even ids.
    Acceptor,
}

impl Role {
    /// The first id this side opens.
    pub fn first_id(self) -> u64 {
        match self {
            Role::Connector => 1,
            Role::Acceptor => 2,
        }
    }

    /// Whether this side opens `id`: its parity, and never 0.
    pub(crate) fn opens(self, id: u64) -> bool {
        id != 0 && (id % 2 == 1) == (self == Role::Connector)
    }
}

/// The ids of this side's calls, handed out by its mux (docs/PROTOCOL.md §7): of this side's
/// parity, never 0, never reused.
///
/// Callers on any task take an id here before their call reaches the connection's task, so that
/// they can name the call (to cancel it) with no round trip; clones share the sequence. Two
/// callers may hand their calls to the mux in the opposite order of their ids, which §7 allows.
#[derive(Clone, Debug)]
pub struct CallIds(Arc<AtomicU64>);

impl CallIds {
    fn new(role: Role) -> CallIds {
        CallIds(Arc::new(AtomicU64::new(role.first_id())))
    }

    /// A fresh id for a call.
    pub fn next(&self) -> u64 {
        // 2^63 calls, one a nanosecond, take 292 years: the sequence does not wrap.
        self.0.fetch_add(2, Ordering::Relaxed)
    }
}

/// The requests of the peer's this side takes in progress at once, unless configured otherwise.
pub const DEFAULT_MAX_REQUESTS: u32 = 1000;
/// Their total size on the wire, unless configured otherwise: 16 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = 16 * 1024 * 1024;
/// Queued output past which no new work starts, unless configured otherwise: 1 MiB.
pub const DEFAULT_MAX_QUEUED_OUTPUT: usize = 1024 * 1024;
/// Metadata entries accepted per request or response, unless configured otherwise.
pub const DEFAULT_MAX_METADATA_ENTRIES: u16 = 256;

/// An output buffer larger than this, and than four times the most queued in it over a trim
/// window, is given back once it is empty (see `Mux::trim_output`).
const TRIM_OUTPUT_ABOVE: usize = 64 * 1024;

/// The longest a trim window lasts: a window is the heartbeat's interval, or this when the
/// heartbeat is slower or off, so that a connection with no heartbeat gives back a burst's
/// buffers too (until 2026-12-01 it kept them for its life: nothing fired its timer).
const MAX_TRIM_WINDOW: Duration = Duration::from_secs(10);

/// A heartbeat time that stands for never: far enough, and still addable to any instant.
const NEVER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// A heartbeat's time as a connection keeps it: zero, and anything from thirty years
/// (`Duration::MAX`), is never. Zero is "no timeout" for POSIX sockets and Go's servers alike,
/// where here it pinged on every quiet instant and failed every handshake at once; an instant
/// plus `Duration::MAX` panics.
pub(crate) fn heartbeat_time(time: Duration) -> Duration {
    if time.is_zero() { NEVER } else { time.min(NEVER) }
}

/// What a mux needs to know about its own side.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MuxConfig {
    /// The name announced in the HELLO.
    pub name: String,
    /// Largest frame this side accepts.
    pub max_frame: u32,
    /// Idle time after which the peer is pinged. Zero, or thirty years or more
    /// (`Duration::MAX`), is never, as for `heartbeat_timeout`.
    pub heartbeat_interval: Duration,
    /// Silence after a ping after which the peer is declared dead.
    pub heartbeat_timeout: Duration,
    /// Auth token sent in the HELLO.
    pub token: bytes::Bytes,
    /// Most of the peer's requests in progress here at once (announced in the HELLO; at least
    /// 1), oneway ones included.
    pub max_requests: u32,
    /// Most bytes of the peer's requests in progress here at once (announced in the HELLO).
    pub max_request_bytes: u32,
    /// Bytes waiting to be written past which no new handler starts and no new call is sent.
    pub max_queued_output: usize,
    /// Most metadata entries accepted in one request or response.
    pub max_metadata_entries: u16,
    /// The algorithm this side compresses what it sends with (its calls' requests, the
    /// answers to uncompressed requests), if any. The connection's driver and callers
    /// compress; the mux only announces what this build decodes (contract item 11).
    pub compression: Option<zrpc_core::Compression>,
    /// The smallest payload compressed.
    pub compression_threshold: usize,
    /// This side records durable requests (it has an inbox): it announces `INBOX` in its
    /// HELLO, with batches, and hands DURABLE requests over like any other; without, it
    /// refuses them with `Unimplemented`, unprocessed (`docs/PROTOCOL.md` §19).
    pub inbox: bool,
}

impl MuxConfig {
    /// A configuration with the defaults and `name`.
    pub fn named(name: impl Into<String>) -> MuxConfig {
        MuxConfig { name: name.into(), ..MuxConfig::default() }
    }
}

impl Default for MuxConfig {
    fn default() -> MuxConfig {
        MuxConfig {
            name: String::new(),
            max_frame: frame::DEFAULT_MAX_FRAME,
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(20),
            token: bytes::Bytes::new(),
            max_requests: DEFAULT_MAX_REQUESTS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_queued_output: DEFAULT_MAX_QUEUED_OUTPUT,
            max_metadata_entries: DEFAULT_MAX_METADATA_ENTRIES,
            compression: None,
            compression_threshold: crate::compression::DEFAULT_THRESHOLD,
            inbox: false,
        }
    }
}

/// What the peer announced in its HELLO.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The peer's endpoint name, shared with every request it makes.
    pub name: Arc<str>,
    /// Largest frame the peer accepts.
    pub max_frame: u32,
    /// Codecs the peer can decode.
    pub codecs: Vec<u8>,
    /// The peer's auth token.
    pub token: bytes::Bytes,
    /// The peer's FLOW limits; `None` from a peer that predates flow control.
    pub flow: Option<FlowLimits>,
    /// The compression algorithms the peer decodes, of those this version knows.
    pub compressions: Accepted,
    /// The peer records durable requests (it announced `INBOX`).
    pub inbox: bool,
    /// The peer records them in batches too (its `INBOX` said so).
    pub inbox_batches: bool,
}

/// Something that happened that the driver must act on.
#[derive(Debug)]
pub enum Event<T, H = ()> {
    /// The handshake finished.
    Ready,
    /// A call this side made has ended, with the token given to [`Mux::send_request`]: the
    /// peer's answer; for a oneway call, `Ok` once its bytes were written; or an error when it
    /// could not be sent.
    Response {
        /// The caller's token.
        token: T,
        /// The answer.
        result: Result<Response, Status>,
        /// The answer's payload (an error's details) is still compressed, header included, as
        /// it came: see [`crate::compression::decompress`].
        compressed: bool,
    },
    /// The peer cancelled a call handed over by [`Mux::next_request`]; the handler should be
    /// dropped. No response is owed.
    Cancel {
        /// The cancelled request.
        id: u64,
        /// What ran it, if the local side [attached](Mux::attach_handler) something.
        handler: Option<H>,
    },
    /// The peer is going away: send new calls elsewhere.
    GoAway(GoAway),
}

/// The peer broke the protocol or stopped answering; the connection must close.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame could not be decoded.
    #[error("malformed input from the peer: {0}")]
    Frame(#[from] FrameError),
    /// A frame was valid on its own but not allowed here.
    #[error("protocol violation by the peer: {0}")]
    Violation(String),
    /// The peer's preface and HELLO did not arrive within the heartbeat timeout.
    #[error("the peer did not complete the handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// Nothing arrived within the heartbeat timeout.
    #[error("the peer did not answer a ping within {0:?}")]
    HeartbeatTimeout(Duration),
    /// Output waited and the peer took none of it for this long.
    #[error("the peer read none of our output for {0:?}")]
    NotReading(Duration),
}

/// A snapshot of what a connection holds, for operators and for tests of its bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Bytes waiting to be written.
    pub queued_output: usize,
    /// The most bytes that ever waited to be written at once.
    pub peak_queued_output: usize,
    /// The peer's requests in progress here: waiting to start, or being handled.
    pub requests_in_progress: usize,
    /// The most of them at once.
    pub peak_requests_in_progress: usize,
    /// Their size on the wire.
    pub request_bytes_in_progress: usize,
    /// The most bytes of them at once.
    pub peak_request_bytes_in_progress: usize,
    /// The peer's requests that wait to be handed over.
    pub requests_waiting: usize,
    /// This side's calls sent and not answered yet.
    pub calls_pending: usize,
    /// This side's calls waiting to be sent (flow control, or the output bound).
    pub calls_waiting: usize,
    /// Whether the peer is over this side's limits, so that it is not read.
    pub reading_paused: bool,
    /// Whether a handler that has to wait is held until the server's budget of running
    /// handlers has room for it (set by the connection's driver; see `ServerBuilder::max_concurrent_requests`).
    pub waiting_for_budget: bool,
    /// Bytes the connection's read buffer holds room for: what was read and not yet decoded (a
    /// frame still arriving) and room for the next read (set by the connection's driver; see
    /// [`crate::limits`]). Frames decoded from it and still in use (requests in progress) may
    /// keep earlier buffers alive: they are counted in `request_bytes_in_progress`.
    pub read_buffer: usize,
    /// The most bytes the read buffer held room for at once: the largest frame read, when it was
    /// larger than 64 KiB, and otherwise at most 256 KiB.
    pub peak_read_buffer: usize,
    /// Bytes the output buffer has room for: what waits to be written and room for more; given
    /// back once a burst is over (see [`crate::limits`]).
    pub output_buffer: usize,
    /// How many times the connection gave back a buffer a burst had grown, its output buffer's
    /// or its read buffer's, once the burst was over (see [`crate::limits`]).
    pub buffers_trimmed: u64,
    /// Frames this side sent with a compressed payload (requests and responses).
    pub compressed_frames_sent: u64,
    /// Frames the peer sent with a compressed payload.
    pub compressed_frames_received: u64,
    /// Bytes compression saved on the frames this side sent: their uncompressed payloads' size
    /// less the compressed payloads', headers included.
    pub compression_bytes_saved: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Preface,
    Hello,
    Open,
    /// The peer broke the protocol or stopped answering: nothing more it sends is read.
    Broken,
}

/// A call this side made that was sent and awaits its answer.
struct Pending<T> {
    token: T,
    size: usize,
    deadline: Option<CallDeadline>,
}

/// A call this side made that waits to be sent.
struct Waiting<T> {
    id: u64,
    request: Request,
    /// The request's payload is compressed, header included.
    compressed: bool,
    token: T,
    deadline: Option<CallDeadline>,
}

/// When a call this side made is given up, and what its failure then says.
struct CallDeadline {
    at: Instant,
    /// The time the caller allowed, as it was when the call reached the mux.
    budget: Duration,
    /// Whose default set the deadline, if one did.
    origin: Option<&'static str>,
    method: zrpc_core::Method,
}

impl CallDeadline {
    fn of(request: &Request, now: Instant) -> Option<CallDeadline> {
        let ctx = request.ctx();
        let at = ctx.deadline()?;
        Some(CallDeadline {
            at,
            budget: at.saturating_duration_since(now),
            origin: ctx.deadline_origin(),
            method: request.method().clone(),
        })
    }

    fn exceeded(&self, peer: &str) -> Status {
        let origin = self.origin.map(|origin| format!(" ({origin})")).unwrap_or_default();
        if self.budget.is_zero() {
            return Status::deadline_exceeded(format!(
                "the deadline{origin} had passed before {} reached the connection to {peer}",
                self.method
            ));
        }
        Status::deadline_exceeded(format!(
            "deadline of {}{origin} exceeded calling {} on {peer}",
            Rounded(self.budget),
            self.method
        ))
    }
}

/// A duration as people write it in messages: `500ms`, `1.5s`, `250µs`. A deadline measured at
/// the start of a call is a hair under what was asked for; rounding shows what was asked.
pub(crate) struct Rounded(pub(crate) Duration);

impl fmt::Display for Rounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_micros();
        match micros {
            0..1_000 => write!(f, "{micros}µs"),
            1_000..10_000_000 => write!(f, "{}ms", (micros + 500) / 1_000),
            _ => write!(f, "{:.1}s", self.0.as_secs_f64()),
        }
    }
}

/// One of the peer's requests that waits in the mux, with its place in the order of arrival.
enum Held {
    /// To hand over with [`Mux::next_request`], with when it was read.
    Start(u64, RequestFrame, Instant),
    /// To answer with this refusal, unprocessed.
    Refuse(u64, u64, Status),
}

impl Held {
    fn id(&self) -> u64 {
        match self {
            Held::Start(_, request, _) => request.id,
            Held::Refuse(_, id, _) => *id,
        }
    }
}

/// One end of a zrpc connection; `T` is what the caller attaches to each call it makes (a
/// oneshot sender in the driver, a plain value in tests), `H` what the local side attaches to
/// each of the peer's calls it runs (the driver: a handler task's abort handle), so that all
/// state of a call, either way, is here.
pub struct Mux<T, H = ()> {
    role: Role,
    /// Where this side's call ids come from.
    ids: CallIds,
    config: MuxConfig,
    phase: Phase,
    decoder: Decoder,
    out: BytesMut,
    /// Bytes taken from `out` by the driver since the start.
    written: u64,
    peer: Option<Peer>,
    events: VecDeque<Event<T, H>>,

    /// Calls this side made that await a response, by the ids this side chose.
    pending: HashMap<u64, Pending<T>, OwnIds>,
    /// Calls this side made that wait to be sent, in order.
    waiting: VecDeque<Waiting<T>>,
    /// Oneway calls sent, until their last byte is written: (end offset in the stream, token).
    unwritten_oneway: VecDeque<(u64, T)>,
    /// This side's requests in progress at the peer.
    outstanding: Outstanding,
    /// No call of this side's, pending or waiting, has a deadline before this: when it comes,
    /// [`on_timeout`](Mux::on_timeout) fails those whose deadline passed and finds the next.
    earliest_deadline: Option<Instant>,
    /// Highest id this side has sent; responses above it were never asked for.
    highest_sent: u64,

    /// The peer's calls in progress here.
    inbound: HashMap<u64, Inbound<H>, PeerIds>,
    /// Those not handed over yet, in order of arrival, and those to refuse once the output has
    /// room for the refusal.
    held: VecDeque<Held>,
    /// The peer's requests read so far: the next one's place in the order of arrival.
    arrivals: u64,
    /// Every request that arrived before this place has left `held` from its front (handed over
    /// or refused), or was cancelled: a call in progress is waiting exactly when its place is
    /// at or past it.
    dequeued: u64,
    inbound_bytes: usize,
    /// Credit owed to the peer for its oneway requests that ended.
    owed: Owed,
    /// A PING answered while the output was over its bound: its nonce waits for room.
    owed_pong: Option<u64>,
    /// Highest id the peer has opened; sent in our GOAWAY.
    highest_received: u64,

    goaway_sent: bool,
    /// The `last_id` of the peer's GOAWAY, once one arrived.
    goaway_received: Option<u64>,
    /// Its code and message, when it refused this side rather than shut down (`Unauthenticated`,
    /// `PermissionDenied`, `ResourceExhausted`): the status this side's calls fail with from
    /// then on.
    refused_by_peer: Option<Status>,
    last_received: Instant,
    ping: Option<Instant>,
    next_nonce: u64,
    /// The peer is over this side's limits and is not read: its silence is not its fault.
    paused: bool,
    /// Since when output has waited with the peer taking none of it.
    blocked_since: Option<Instant>,

    peak_output: usize,
    /// The most bytes queued since the output buffer was last looked at for trimming, and when.
    recent_output: usize,
    trimmed_at: Instant,
    outputs_trimmed: u64,
    /// A trim window ended at the last timeout: the driver gives back its read buffer on the
    /// same tick (see [`Mux::trim_window_ended`]).
    trim_window_ended: bool,
    /// The heartbeat is off or slower than a trim window: the driver's timer must fire for the
    /// windows to end (see [`Mux::trim_timeout`]).
    trim_needs_timer: bool,
    peak_inbound: usize,
    peak_inbound_bytes: usize,
    compressed_sent: u64,
    compressed_received: u64,
    compression_saved: u64,
}

impl<T, H> Mux<T, H> {
    /// A new connection end that has queued its preface and HELLO.
    pub fn new(role: Role, mut config: MuxConfig, now: Instant) -> Mux<T, H> {
        // The heartbeat's times are added to instants, which panics past the clock's range:
        // `Duration::MAX`, the natural way to ask for no heartbeat, did in the connection's task.
        config.heartbeat_interval = heartbeat_time(config.heartbeat_interval);
        config.heartbeat_timeout = heartbeat_time(config.heartbeat_timeout);
        let trim_needs_timer = config.heartbeat_interval > MAX_TRIM_WINDOW;
        let mut out = BytesMut::with_capacity(256);
        frame::encode_preface(&mut out);
        let hello = Hello {
            name: config.name.clone(),
            max_frame: config.max_frame,
            codecs: CodecId::enabled().map(CodecId::as_u8).collect(),
            compressions: crate::compression::available().map(zrpc_core::Compression::id).collect(),
            token: config.token.clone(),
            flow: Some(FlowLimits {
                max_requests: config.max_requests.max(1),
                request_bytes: config.max_request_bytes,
            }),
            inbox: config.inbox,
            inbox_batches: config.inbox,
        };
        if let Err(e) = frame::encode_hello(&mut out, &hello) {
            // Only an over-long name can fail; announce it without the name rather than not at all.
            tracing::warn!("endpoint name not announced: {e}");
            let anonymous = Hello { name: String::new(), ..hello };
            let _ = frame::encode_hello(&mut out, &anonymous);
        }
        Mux {
            role,
            ids: CallIds::new(role),
            // Until the peer's HELLO, its frames are held to the HELLO's bound (`on_hello`).
            decoder: Decoder::new(config.max_frame.min(frame::MAX_HELLO)),
            config,
            phase: Phase::Preface,
            out,
            written: 0,
            peer: None,
            events: VecDeque::new(),
            pending: HashMap::with_hasher(OwnIds),
            waiting: VecDeque::new(),
            unwritten_oneway: VecDeque::new(),
            outstanding: Outstanding::default(),
            earliest_deadline: None,
            highest_sent: 0,
            inbound: HashMap::with_hasher(PeerIds::new()),
            held: VecDeque::new(),
            arrivals: 0,
            dequeued: 0,
            inbound_bytes: 0,
            owed: Owed::default(),
            owed_pong: None,
            highest_received: 0,
            goaway_sent: false,
            goaway_received: None,
            refused_by_peer: None,
            last_received: now,
            ping: None,
            next_nonce: 1,
            paused: false,
            blocked_since: None,
            peak_output: 0,
            recent_output: 0,
            trimmed_at: now,
            outputs_trimmed: 0,
            trim_window_ended: false,
            trim_needs_timer,
            peak_inbound: 0,
            peak_inbound_bytes: 0,
            compressed_sent: 0,
            compressed_received: 0,
            compression_saved: 0,
        }
    }

    // ---- output ----

    /// The bytes to write, from the front; the driver reports how many it wrote with
    /// [`written`](Mux::written). Control frames owed (a CREDIT, a PONG) are queued first, while
    /// the output is under its bound: past it they wait, gathering what comes meanwhile into
    /// one of each (contract item 7). A connection that failed owes nothing more: its GOAWAY is
    /// its last frame.
    pub fn transmit(&mut self) -> &[u8] {
        let room = |out: &BytesMut| out.len() < self.config.max_queued_output;
        if self.phase != Phase::Broken {
            if self.owed.requests > 0 && room(&self.out) {
                frame::encode_credit(&mut self.out, self.owed.requests, self.owed.bytes);
                self.owed = Owed::default();
            }
            if let Some(nonce) = self.owed_pong
                && room(&self.out)
            {
                frame::encode_pong(&mut self.out, nonce);
                self.owed_pong = None;
            }
        }
        self.peak_output = self.peak_output.max(self.out.len());
        self.recent_output = self.recent_output.max(self.out.len());
        &self.out
    }

    /// The driver wrote the first `n` bytes of [`transmit`](Mux::transmit): oneway calls whose
    /// last byte went out are done, and calls that waited for room in the output may go.
    pub fn written(&mut self, n: usize) {
        let n = n.min(self.out.len());
        if n > 0 {
            bytes::Buf::advance(&mut self.out, n);
            if self.out.is_empty() {
                // Everything is out: the next frames start at the front of the buffer again.
                // Left to `reserve`, the written prefix came back only once the free tail ran
                // out, mid-batch, by copying everything queued by then to the front: about 300
                // instructions a call at 100 callers (`callpath --callgrind`). Now nothing is
                // left to copy, and `try_reclaim` never allocates; it fails only while a part
                // split off by `take_output` still shares the buffer, which is then left to
                // `reserve` as before.
                let _ = self.out.try_reclaim(self.out.capacity() + n);
            }
            self.after_write(n);
        }
    }

    fn after_write(&mut self, n: usize) {
        self.written += n as u64;
        self.blocked_since = None;
        while self.unwritten_oneway.front().is_some_and(|(end, _)| *end <= self.written) {
            if let Some((_, token)) = self.unwritten_oneway.pop_front() {
                self.events.push_back(Event::Response { token, result: Ok(Response::default()), compressed: false });
            }
        }
        self.send_refusals();
        self.send_waiting();
    }

    /// The driver could write nothing: the peer is not taking our bytes for now. Starts the
    /// clock of the not-reading rule (contract item 7) unless it runs already.
    pub fn write_blocked(&mut self, now: Instant) {
        if !self.out.is_empty() {
            self.blocked_since.get_or_insert(now);
        }
    }

    /// Everything queued, as if written at once; for tests and for a last write at close.
    pub fn take_output(&mut self) -> BytesMut {
        self.transmit();
        let out = self.out.split();
        self.after_write(out.len());
        out
    }

    /// Bytes waiting to be written.
    pub fn queued_output(&self) -> usize {
        self.out.len()
    }

    // ---- state ----

    /// Hands out the ids of this side's calls (contract item 2).
    pub fn call_ids(&self) -> CallIds {
        self.ids.clone()
    }

    /// The peer, once its HELLO has arrived.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// Whether the handshake is complete.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Number of calls this side made that await an answer, sent or waiting to be.
    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.waiting.len()
    }

    /// The largest frame this side accepts, which is also the most a compressed payload may
    /// declare.
    pub fn max_frame(&self) -> u32 {
        self.config.max_frame
    }

    /// Number of the peer's calls in progress here, handed over or not.
    pub fn inbound_len(&self) -> usize {
        self.inbound.len()
    }

    /// Bytes of the peer's requests in progress here, handed over or not.
    pub fn inbound_bytes(&self) -> usize {
        self.inbound_bytes
    }

    /// Why the peer refused this side, if its first GOAWAY said `Unauthenticated` or
    /// `PermissionDenied` (an authenticator's answer) or `ResourceExhausted` (a server at its
    /// connection limit): the status calls on this connection fail with, and the connection's
    /// end.
    pub fn refused_by_peer(&self) -> Option<&Status> {
        self.refused_by_peer.as_ref()
    }

    /// Whether either side has sent GOAWAY.
    pub fn is_draining(&self) -> bool {
        self.goaway_sent || self.goaway_received.is_some()
    }

    /// Whether the connection has nothing left to do after a GOAWAY: no calls either way.
    pub fn is_drained(&self) -> bool {
        self.is_draining() && self.pending_len() == 0 && self.inbound.is_empty()
    }

    /// The most bytes the driver should read into `buf` next: the rest of a large frame being
    /// assembled there (see [`Decoder::large_frame_rest`]), so that the frames after it land in
    /// a buffer of their own; `None` for no limit.
    pub fn read_limit(&self, buf: &[u8]) -> Option<usize> {
        match self.phase {
            Phase::Hello | Phase::Open => self.decoder.large_frame_rest(buf),
            Phase::Preface | Phase::Broken => None,
        }
    }

    /// Whether the driver should read: false once the connection failed, and while the peer is
    /// over this side's limits (contract item 6), so that TCP holds it back.
    pub fn wants_read(&self) -> bool {
        self.phase != Phase::Broken && !self.over_limits()
    }

    /// What the connection holds now, and the most it held.
    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            queued_output: self.out.len(),
            peak_queued_output: self.peak_output.max(self.out.len()),
            requests_in_progress: self.inbound.len(),
            peak_requests_in_progress: self.peak_inbound,
            request_bytes_in_progress: self.inbound_bytes,
            peak_request_bytes_in_progress: self.peak_inbound_bytes,
            requests_waiting: self.held.len(),
            calls_pending: self.pending.len(),
            calls_waiting: self.waiting.len(),
            reading_paused: self.phase != Phase::Broken && self.over_limits(),
            waiting_for_budget: false,
            read_buffer: 0,
            peak_read_buffer: 0,
            output_buffer: self.out.capacity(),
            buffers_trimmed: self.outputs_trimmed,
            compressed_frames_sent: self.compressed_sent,
            compressed_frames_received: self.compressed_received,
            compression_bytes_saved: self.compression_saved,
        }
    }

    /// Whether the peer has more requests in progress here than this side allows.
    fn over_limits(&self) -> bool {
        let count = self.inbound.len();
        count > self.config.max_requests.max(1) as usize
            || (count > 1 && self.inbound_bytes > self.config.max_request_bytes as usize)
    }

    // ---- this side's calls ----

    /// Sends a request, or queues it until flow control and the output bound let it go
    /// (contract item 5). `id` comes from [`call_ids`](Mux::call_ids) (or is of this side's
    /// parity and never used before). Its end is
    /// reported as an [`Event::Response`] with `token`: the answer, or for a oneway request
    /// `Ok` once it is written.
    ///
    /// # Errors
    /// `Unavailable` after a GOAWAY either way; `ResourceExhausted` when the request is larger
    /// than the peer accepts; `DeadlineExceeded` when its deadline has passed already (a call
    /// that waits for room and whose deadline passes is not sent either). Each is marked
    /// unprocessed, and the token is handed back with it.
    pub fn send_request(&mut self, id: u64, request: Request, token: T) -> Result<(), (Status, T)> {
        self.send_request_at(id, request, token, Instant::now())
    }

    /// [`send_request`](Mux::send_request) at `now`, for a driver that read the clock once for
    /// a batch of calls.
    ///
    /// # Errors
    /// As [`send_request`](Mux::send_request).
    pub fn send_request_at(&mut self, id: u64, request: Request, token: T, now: Instant) -> Result<(), (Status, T)> {
        self.send(id, request, false, token, now)
    }

    /// [`send_request_at`](Mux::send_request_at) for a request whose payload is already
    /// compressed, header included (as [`crate::compression::compress`] makes it, with an
    /// algorithm the peer announced): it goes with `COMPRESSED`, and counts for flow control as
    /// its size on the wire plus its declared length.
    ///
    /// # Errors
    /// As [`send_request`](Mux::send_request); also `ResourceExhausted` when the declared
    /// length is over the peer's `max_frame`, and `InvalidArgument` for a payload shorter than
    /// its header.
    pub fn send_compressed_request_at(
        &mut self,
        id: u64,
        request: Request,
        token: T,
        now: Instant,
    ) -> Result<(), (Status, T)> {
        self.send(id, request, true, token, now)
    }

    fn send(&mut self, id: u64, request: Request, compressed: bool, token: T, now: Instant) -> Result<(), (Status, T)> {
        debug_assert!(self.role.opens(id), "request ids must have this side's parity");
        debug_assert!(!self.pending.contains_key(&id), "request ids are never reused");
        if let Some(status) = self.refusal() {
            return Err((status, token));
        }
        let deadline = CallDeadline::of(&request, now);
        // The peer would only answer that it is too late: the bytes and its work are saved.
        if let Some(deadline) = &deadline
            && deadline.at <= now
        {
            return Err((self.exceeded_unsent(deadline), token));
        }
        // Calls go in order: one that finds others waiting waits behind them.
        let attempt =
            if self.waiting.is_empty() { self.try_send(id, &request, compressed, now) } else { Attempt::Wait };
        if let Some(deadline) = &deadline
            && !matches!(attempt, Attempt::Refused(_))
        {
            self.earliest_deadline = Some(self.earliest_deadline.map_or(deadline.at, |at| at.min(deadline.at)));
        }
        match attempt {
            Attempt::Sent(size) => {
                self.book(id, request.is_oneway(), size, token, deadline);
                Ok(())
            }
            Attempt::Wait => {
                self.waiting.push_back(Waiting { id, request, compressed, token, deadline });
                Ok(())
            }
            Attempt::Refused(status) => Err((status, token)),
        }
    }

    /// Why no call may be sent now, if none may.
    fn refusal(&self) -> Option<Status> {
        if let Some(status) = &self.refused_by_peer {
            return Some(status.clone());
        }
        if self.goaway_received.is_some() {
            return Some(Status::unavailable("the peer is shutting down (it sent GOAWAY)").mark_unprocessed());
        }
        if self.goaway_sent || self.phase == Phase::Broken {
            return Some(Status::unavailable("the connection is shutting down").mark_unprocessed());
        }
        None
    }

    /// Encodes `request` if the peer's HELLO has come, the output bound and the peer's limits
    /// admit it now.
    fn try_send(&mut self, id: u64, request: &Request, compressed: bool, now: Instant) -> Attempt {
        let Some(peer) = &self.peer else { return Attempt::Wait };
        if self.out.len() >= self.config.max_queued_output {
            return Attempt::Wait;
        }
        if let Some(durable) = request.ctx().durable()
            && let Some(status) = durable_refusal(peer, durable, request, compressed)
        {
            return Attempt::Refused(status);
        }
        let limits = match peer.flow {
            Some(flow) => Limits::Flow(flow),
            None => Limits::None,
        };
        // What the payload takes once the peer decompressed it, beyond its size on the wire.
        let declared = match compressed.then(|| CompressedHeader::split(request.payload())) {
            None => 0,
            Some(None) => {
                let malformed = FrameError::Malformed {
                    kind: "request",
                    reason: "a compressed payload is shorter than its 5-byte header",
                };
                return Attempt::Refused(refused(request, &malformed));
            }
            Some(Some((header, _))) if header.len > peer.max_frame => {
                let too_large = FrameError::FrameTooLarge { len: u64::from(header.len), max: peer.max_frame };
                return Attempt::Refused(refused(request, &too_large));
            }
            Some(Some((header, _))) => header.len as usize,
        };
        let before = self.out.len();
        let encoded = if compressed {
            frame::encode_compressed_request_at(&mut self.out, id, request, peer.max_frame, now)
        } else {
            frame::encode_request_at(&mut self.out, id, request, peer.max_frame, now)
        };
        match encoded {
            Ok(size) if self.outstanding.admits(limits, size + declared) => {
                if compressed {
                    self.count_compressed_sent(declared, request.payload().len());
                }
                Attempt::Sent(size + declared)
            }
            Ok(_) => {
                self.out.truncate(before);
                Attempt::Wait
            }
            Err(e) => Attempt::Refused(refused(request, &e)),
        }
    }

    fn count_compressed_sent(&mut self, declared: usize, payload: usize) {
        self.compressed_sent += 1;
        self.compression_saved += declared.saturating_sub(payload) as u64;
    }

    /// Books a request of `size` bytes just encoded.
    fn book(&mut self, id: u64, oneway: bool, size: usize, token: T, deadline: Option<CallDeadline>) {
        let counted = self.peer.as_ref().is_some_and(|p| p.flow.is_some());
        self.outstanding.add(size, oneway, counted);
        self.highest_sent = self.highest_sent.max(id);
        if oneway {
            let end = self.written + self.out.len() as u64;
            self.unwritten_oneway.push_back((end, token));
        } else {
            self.pending.insert(id, Pending { token, size, deadline });
        }
    }

    /// Sends the calls that wait, in order, for as long as they are admitted.
    fn send_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        if let Some(status) = self.refusal() {
            for call in self.waiting.drain(..) {
                self.events.push_back(Event::Response {
                    token: call.token,
                    result: Err(status.clone()),
                    compressed: false,
                });
            }
            return;
        }
        let now = Instant::now();
        while let Some(call) = self.waiting.pop_front() {
            // Its deadline passed while it waited, before the timer came to fail it.
            if let Some(deadline) = &call.deadline
                && deadline.at <= now
            {
                let result = Err(self.exceeded_unsent(deadline));
                self.events.push_back(Event::Response { token: call.token, result, compressed: false });
                continue;
            }
            match self.try_send(call.id, &call.request, call.compressed, now) {
                Attempt::Sent(size) => {
                    self.book(call.id, call.request.is_oneway(), size, call.token, call.deadline);
                }
                Attempt::Wait => {
                    self.waiting.push_front(call);
                    return;
                }
                Attempt::Refused(status) => {
                    let result = Err(status);
                    self.events.push_back(Event::Response { token: call.token, result, compressed: false });
                }
            }
        }
    }

    /// Forgets a call this side made and, if it was sent, tells the peer to stop working on it
    /// (unless the connection failed: its GOAWAY stays the last frame). Returns its token, or
    /// `None` when the call had already completed (then nothing is sent).
    pub fn cancel(&mut self, id: u64) -> Option<T> {
        if let Some(call) = self.pending.remove(&id) {
            if self.phase != Phase::Broken {
                frame::encode_cancel(&mut self.out, id);
            }
            // The peer reads the CANCEL before anything sent after it: the slot is free.
            self.outstanding.release(call.size);
            self.send_waiting();
            return Some(call.token);
        }
        let at = self.waiting.iter().position(|call| call.id == id)?;
        self.waiting.remove(at).map(|call| call.token)
    }

    /// Takes every call this side made that has not ended, e.g. because the connection died.
    /// Each token comes with whether the call is known to be unprocessed: it was never sent, or
    /// the peer's GOAWAY promised to process no request above its `last_id`. Oneway calls not
    /// yet written come last, not known to be unprocessed (part of one may have gone).
    pub fn drain_pending(&mut self) -> impl Iterator<Item = (T, bool)> + '_ {
        let last_id = self.goaway_received;
        let sent = self.pending.drain().map(move |(id, call)| (call.token, last_id.is_some_and(|last| id > last)));
        let waiting = self.waiting.drain(..).map(|call| (call.token, true));
        let oneway = self.unwritten_oneway.drain(..).map(|(_, token)| (token, false));
        sent.chain(waiting).chain(oneway)
    }

    // ---- the peer's calls ----

    /// The next of the peer's requests the local side may start: the oldest waiting, if fewer
    /// than `max_requests` are being handled and less than `max_queued_output` waits to be
    /// written (contract item 6). With it, when it arrived: the `now` of the
    /// [`recv`](Mux::recv) that read it, from which its deadline counts (PROTOCOL.md §12),
    /// however long it then waited to be started.
    pub fn next_request(&mut self) -> Option<(RequestFrame, Instant)> {
        while self.has_request() {
            match self.held.pop_front()? {
                Held::Start(seq, request, arrived) => {
                    self.dequeued = seq + 1;
                    return Some((request, arrived));
                }
                Held::Refuse(seq, id, status) => {
                    self.dequeued = seq + 1;
                    self.refuse(id, status);
                }
            }
        }
        None
    }

    /// Answers the refusals at the front of the waiting requests, while the output has room:
    /// a refusal is output like any answer, so it waits for room like any other.
    fn send_refusals(&mut self) {
        while self.out.len() < self.config.max_queued_output
            && let Some(Held::Refuse(..)) = self.held.front()
        {
            if let Some(Held::Refuse(seq, id, status)) = self.held.pop_front() {
                self.dequeued = seq + 1;
                self.refuse(id, status);
            }
        }
    }

    fn refuse(&mut self, id: u64, status: Status) {
        if self.end_inbound(id).is_some() {
            self.encode_response(id, &Err(status), false);
        }
    }

    /// Whether [`next_request`](Mux::next_request) would hand one over now.
    pub fn has_request(&self) -> bool {
        let started = self.inbound.len() - self.held.len();
        !self.held.is_empty()
            && started < self.config.max_requests.max(1) as usize
            && self.out.len() < self.config.max_queued_output
    }

    /// Notes that `handler` runs the peer's call `id`, handed over by
    /// [`next_request`](Mux::next_request): it comes back with the call's end, from
    /// [`finish`](Mux::finish), [`Event::Cancel`] or [`take_handlers`](Mux::take_handlers).
    ///
    /// # Errors
    /// `handler` back when the call is no longer in progress (the peer cancelled it meanwhile),
    /// for the local side to stop it.
    pub fn attach_handler(&mut self, id: u64, handler: H) -> Result<(), H> {
        match self.inbound.get_mut(&id) {
            Some(call) if call.seq < self.dequeued => {
                call.handler = Some(handler);
                Ok(())
            }
            _ => Err(handler),
        }
    }

    /// Takes the handlers of every call of the peer's still in progress, for a connection that
    /// ends: the local side stops them.
    pub fn take_handlers(&mut self) -> impl Iterator<Item = H> + '_ {
        self.inbound.values_mut().filter_map(|call| call.handler.take())
    }

    /// Ends the peer's call `id`: a two-way call is answered with `result`, a oneway one owes
    /// the peer credit. Returns the handler [attached](Mux::attach_handler) to it, if any. Calls
    /// that are not in progress (cancelled meanwhile) are ignored.
    pub fn finish(&mut self, id: u64, result: &Result<Response, Status>) -> Option<H> {
        self.finish_with(id, result, false)
    }

    /// [`finish`](Mux::finish) with an answer whose payload (an error's details) is already
    /// compressed, header included, with an algorithm the peer announced: it goes with
    /// `COMPRESSED`.
    pub fn finish_compressed(&mut self, id: u64, result: &Result<Response, Status>) -> Option<H> {
        self.finish_with(id, result, true)
    }

    fn finish_with(&mut self, id: u64, result: &Result<Response, Status>, compressed: bool) -> Option<H> {
        let (call, _) = self.end_inbound(id)?;
        if !call.oneway {
            self.encode_response(id, result, compressed);
        }
        call.handler
    }

    /// Forgets the peer's call `id`, returning it and whether it had been handed over; a
    /// waiting one leaves the queue, and a oneway one is owed back as credit.
    fn end_inbound(&mut self, id: u64) -> Option<(Inbound<H>, bool)> {
        let call = self.inbound.remove(&id)?;
        self.inbound_bytes -= call.size;
        let started = call.seq < self.dequeued;
        if !started {
            self.held.retain(|held| held.id() != id);
        }
        if call.oneway {
            self.owe_credit(call.size);
        }
        Some((call, started))
    }

    fn owe_credit(&mut self, size: usize) {
        if self.peer.as_ref().is_some_and(|p| p.flow.is_some()) {
            self.owed.requests += 1;
            self.owed.bytes += size as u64;
        }
    }

    fn encode_response(&mut self, id: u64, result: &Result<Response, Status>, compressed: bool) {
        // A connection that failed owes nothing more: its GOAWAY, saying why, is its last frame,
        // whatever ends after it (a refusal waiting for room in the output, a handler).
        if self.phase == Phase::Broken {
            return;
        }
        let max = self.peer.as_ref().map_or(frame::MIN_MAX_FRAME, |p| p.max_frame);
        let encoded = if compressed {
            let payload = match result {
                Ok(response) => response.payload(),
                Err(status) => status.details(),
            };
            let declared = CompressedHeader::split(payload).map_or(0, |(header, _)| header.len as usize);
            let payload_len = payload.len();
            let encoded = frame::encode_compressed_response(&mut self.out, id, result, max);
            if encoded.is_ok() {
                self.count_compressed_sent(declared, payload_len);
            }
            encoded
        } else {
            frame::encode_response(&mut self.out, id, result, max)
        };
        if let Err(e) = encoded {
            let status = Err(Status::resource_exhausted(format!("the response was not sent: {e}")));
            // A short error response without metadata or details fits the minimum frame size.
            let _ = frame::encode_response(&mut self.out, id, &status, max);
        }
    }

    /// Queues a GOAWAY: the peer should send new calls elsewhere; calls in progress continue.
    /// Calls of this side's that wait to be sent fail, unprocessed.
    pub fn go_away(&mut self, code: Code, message: &str) {
        if !self.goaway_sent {
            self.queue_goaway(code, message);
            self.send_waiting();
        }
    }

    fn queue_goaway(&mut self, code: Code, message: &str) {
        self.goaway_sent = true;
        let goaway = GoAway { last_id: self.highest_received, code: code.as_u8(), message: message.to_owned() };
        frame::encode_goaway(&mut self.out, &goaway);
    }

    // ---- time ----

    /// When [`Mux::on_timeout`] must be called next: for the heartbeat, or for the deadline of a
    /// call this side made.
    pub fn next_timeout(&self) -> Instant {
        let heartbeat = self.next_heartbeat();
        match self.earliest_deadline {
            Some(at) => heartbeat.min(at),
            None => heartbeat,
        }
    }

    fn next_heartbeat(&self) -> Instant {
        let heartbeat = if self.phase != Phase::Open {
            self.last_received + self.config.heartbeat_timeout
        } else {
            match self.ping {
                Some(sent) => sent + self.config.heartbeat_timeout,
                None => self.last_received + self.config.heartbeat_interval,
            }
        };
        match self.blocked_since {
            Some(since) => heartbeat.min(since + self.not_reading_limit()),
            None => heartbeat,
        }
    }

    /// Fails the calls whose deadline has passed, and finds the next deadline. Scanning every
    /// call is cheap next to what it saves: a timer per call. It runs when the earliest deadline
    /// known comes, which for calls of the same timeout is about once per timeout.
    fn expire_calls(&mut self, now: Instant) {
        let peer = self.peer_name();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, call)| call.deadline.as_ref().is_some_and(|d| d.at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(Pending { token, size, deadline: Some(deadline) }) = self.pending.remove(&id) {
                // As a caller that gives up does: the peer stops working on it, its slot is free.
                frame::encode_cancel(&mut self.out, id);
                self.outstanding.release(size);
                self.events.push_back(Event::Response {
                    token,
                    result: Err(deadline.exceeded(&peer)),
                    compressed: false,
                });
            }
        }
        let mut waiting = VecDeque::with_capacity(self.waiting.len());
        for call in self.waiting.drain(..) {
            match &call.deadline {
                // Never sent: safe to send anywhere, were there time left.
                Some(deadline) if deadline.at <= now => {
                    let result = Err(deadline.exceeded(&peer).mark_unprocessed());
                    self.events.push_back(Event::Response { token: call.token, result, compressed: false });
                }
                _ => waiting.push_back(call),
            }
        }
        self.waiting = waiting;
        let pending = self.pending.values().filter_map(|call| call.deadline.as_ref());
        self.earliest_deadline =
            pending.chain(self.waiting.iter().filter_map(|call| call.deadline.as_ref())).map(|d| d.at).min();
        self.send_waiting();
    }

    /// The peer's name for messages, before its HELLO too.
    fn peer_name(&self) -> Arc<str> {
        self.peer.as_ref().map_or_else(|| "the peer".into(), |p| p.name.clone())
    }

    /// The failure of a call whose deadline passed before it was sent: never sent, so safe to
    /// send anywhere, were there time left.
    fn exceeded_unsent(&self, deadline: &CallDeadline) -> Status {
        deadline.exceeded(&self.peer_name()).mark_unprocessed()
    }

    fn not_reading_limit(&self) -> Duration {
        self.config.heartbeat_interval + self.config.heartbeat_timeout
    }

    /// Advances the clock: fails the calls this side made whose deadline has passed (reported as
    /// [`Event::Response`]s with `DeadlineExceeded`, and cancelled on the wire if they were sent),
    /// queues a PING when the connection has been quiet, and fails when a PING went unanswered
    /// or the peer has not read for too long.
    ///
    /// # Errors
    /// [`ProtocolError::HandshakeTimeout`], [`ProtocolError::HeartbeatTimeout`] or
    /// [`ProtocolError::NotReading`] when the peer is considered dead. As after an error from
    /// [`Mux::recv`], nothing more it sends is read.
    pub fn on_timeout(&mut self, now: Instant) -> Result<(), ProtocolError> {
        if self.phase == Phase::Broken {
            return Ok(());
        }
        self.trim_output(now);
        if self.earliest_deadline.is_some_and(|at| at <= now) {
            self.expire_calls(now);
        }
        if self.blocked_since.is_some_and(|since| now >= since + self.not_reading_limit()) {
            self.phase = Phase::Broken;
            return Err(ProtocolError::NotReading(self.not_reading_limit()));
        }
        if self.phase != Phase::Open {
            if now < self.last_received + self.config.heartbeat_timeout {
                return Ok(());
            }
            self.phase = Phase::Broken;
            return Err(ProtocolError::HandshakeTimeout(self.config.heartbeat_timeout));
        }
        self.resume_if_within(now);
        if self.paused {
            // Not reading is this side's choice: the silence says nothing of the peer.
            self.last_received = now;
            self.ping = None;
            return Ok(());
        }
        match self.ping {
            Some(sent) if now >= sent + self.config.heartbeat_timeout => {
                // A late frame must not revive a connection already reported dead.
                self.phase = Phase::Broken;
                Err(ProtocolError::HeartbeatTimeout(self.config.heartbeat_timeout))
            }
            None if now >= self.last_received + self.config.heartbeat_interval => {
                self.ping = Some(now);
                frame::encode_ping(&mut self.out, self.next_nonce);
                self.next_nonce = self.next_nonce.wrapping_add(1);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Gives back the output buffer's memory once a burst is over. The buffer keeps its
    /// capacity when written out (so that the next frames need no allocation), which after one
    /// large answer or a backlog held it at up to twice `max_queued_output` plus a frame for the
    /// connection's life: every page of it written, so resident. Once per trim window (the
    /// heartbeat's interval, at most [`MAX_TRIM_WINDOW`]), a buffer that is empty and larger
    /// than both 64 KiB and four times the most queued in it over that window is replaced by an
    /// empty one. A connection under steady load, whose buffer is about the size of its
    /// batches, keeps it.
    fn trim_output(&mut self, now: Instant) {
        if self.trimmed_at.checked_add(self.trim_window()).is_none_or(|due| now < due) {
            return;
        }
        self.trimmed_at = now;
        self.trim_window_ended = true;
        let recent = std::mem::take(&mut self.recent_output);
        if self.out.is_empty() && self.out.capacity() > TRIM_OUTPUT_ABOVE.max(4 * recent) {
            self.out = BytesMut::new();
            self.outputs_trimmed += 1;
        }
    }

    /// Whether a trim window ended at a timeout since this was last asked: the moment for the
    /// connection's driver to give back its own buffers too, so that they follow the output
    /// buffer's rule rather than every firing of the timer (a client's call deadlines fire it
    /// too).
    pub fn trim_window_ended(&mut self) -> bool {
        std::mem::take(&mut self.trim_window_ended)
    }

    /// When the connection's timer must fire for the current trim window to end, if nothing
    /// else fires it: the heartbeat is off or slower than a window's longest, 10 s (a heartbeat's
    /// ticks come at least once a window, busy or idle), and there is something to give back,
    /// the output buffer larger than it keeps or `grown` (the driver holds a buffer of its own
    /// larger than it keeps). An idle connection holding nothing to give back is not woken.
    pub fn trim_timeout(&self, grown: bool) -> Option<Instant> {
        if self.trim_needs_timer && (grown || self.out.capacity() > TRIM_OUTPUT_ABOVE) {
            self.trimmed_at.checked_add(self.trim_window())
        } else {
            None
        }
    }

    /// How often buffers are looked at for giving back: see [`MAX_TRIM_WINDOW`].
    fn trim_window(&self) -> Duration {
        self.config.heartbeat_interval.min(MAX_TRIM_WINDOW)
    }

    /// Starts the heartbeat's clock again once a peer that was over its limits is back within
    /// them and is read again.
    fn resume_if_within(&mut self, now: Instant) {
        if self.paused && !self.over_limits() {
            self.paused = false;
            self.last_received = now;
            self.ping = None;
        }
    }

    // ---- input ----

    /// The next thing that happened, or `None`. Call after each [`recv`](Mux::recv) and each
    /// local action until it returns `None`.
    pub fn poll_event(&mut self) -> Option<Event<T, H>> {
        self.events.pop_front()
    }

    /// Handles every whole frame at the front of `buf`, leaving a partial one there; stops early
    /// while the peer is over this side's limits (contract item 6), leaving the rest for later.
    /// What happened is reported by [`poll_event`](Mux::poll_event), the peer's requests by
    /// [`next_request`](Mux::next_request).
    ///
    /// # Errors
    /// On a protocol violation; a GOAWAY explaining it has been queued.
    pub fn recv(&mut self, buf: &mut BytesMut, now: Instant) -> Result<(), ProtocolError> {
        if self.phase == Phase::Broken {
            return Ok(());
        }
        match self.recv_inner(buf, now) {
            Err(e) => {
                self.phase = Phase::Broken;
                // Say why, even after a graceful GOAWAY: this one ends the connection.
                self.queue_goaway(Code::InvalidArgument, &e.to_string());
                Err(e)
            }
            Ok(()) => Ok(()),
        }
    }

    fn recv_inner(&mut self, buf: &mut BytesMut, now: Instant) -> Result<(), ProtocolError> {
        self.resume_if_within(now);
        loop {
            if self.phase == Phase::Preface {
                if !frame::decode_preface(buf)? {
                    return Ok(());
                }
                // Not a sign of life that extends the handshake: the preface and the HELLO must
                // both arrive within the timeout of connecting (PROTOCOL.md §13).
                self.phase = Phase::Hello;
            }
            if self.over_limits() {
                self.paused = true;
                return Ok(());
            }
            let before = buf.len();
            let decoded = self.decoder.decode(buf)?;
            // Any whole frame shows the peer is alive (PROTOCOL.md §13), also one of a kind this
            // version skips; but while the handshake's clock runs, only the HELLO stops it.
            if buf.len() < before && (self.phase == Phase::Open || decoded.is_some()) {
                self.last_received = now;
                self.ping = None;
            }
            let Some(frame) = decoded else {
                return Ok(());
            };
            if self.phase == Phase::Hello {
                self.on_hello(frame)?;
                continue;
            }
            let size = self.decoder.last_len();
            self.on_frame(frame, size, now)?;
        }
    }

    fn on_hello(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        let Frame::Hello(hello) = frame else {
            return Err(violation("the first frame must be HELLO"));
        };
        if hello.max_frame < frame::MIN_MAX_FRAME {
            return Err(violation(format!(
                "HELLO announces a max frame of {} bytes, below the minimum of {}",
                hello.max_frame,
                frame::MIN_MAX_FRAME
            )));
        }
        self.peer = Some(Peer {
            name: hello.name.into(),
            max_frame: hello.max_frame,
            codecs: hello.codecs,
            token: hello.token,
            flow: hello.flow,
            compressions: Accepted::from_ids(&hello.compressions),
            inbox: hello.inbox,
            inbox_batches: hello.inbox && hello.inbox_batches,
        });
        self.decoder = Decoder::new(self.config.max_frame);
        self.phase = Phase::Open;
        self.events.push_back(Event::Ready);
        self.send_waiting();
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame, size: usize, now: Instant) -> Result<(), ProtocolError> {
        match frame {
            Frame::Hello(_) => return Err(violation("HELLO sent twice")),
            Frame::Request(request) => self.on_request(request, size, now)?,
            Frame::Response(response) => {
                let id = response.id;
                if !self.role.opens(id) || id > self.highest_sent {
                    return Err(violation(format!("response for id {id}, which this side never opened")));
                }
                let compressed = response.flags & frame::flags::COMPRESSED != 0;
                if compressed {
                    self.compressed_received += 1;
                }
                if let Some(call) = self.pending.remove(&id) {
                    self.outstanding.release(call.size);
                    let entries = response.metadata.len();
                    let (result, compressed) = if entries > usize::from(self.config.max_metadata_entries) {
                        let status = Status::resource_exhausted(format!(
                            "the response carried {entries} metadata entries; this side accepts at most {}",
                            self.config.max_metadata_entries
                        ));
                        (Err(status), false)
                    } else {
                        (response.into_result(), compressed)
                    };
                    self.events.push_back(Event::Response { token: call.token, result, compressed });
                    self.send_waiting();
                }
            }
            Frame::Cancel { id } => {
                if let Some((call, true)) = self.end_inbound(id) {
                    self.events.push_back(Event::Cancel { id, handler: call.handler });
                }
            }
            Frame::Ping { nonce } => {
                if self.out.len() < self.config.max_queued_output {
                    frame::encode_pong(&mut self.out, nonce);
                } else {
                    self.owed_pong = Some(nonce);
                }
            }
            Frame::Pong { .. } => {}
            Frame::GoAway(goaway) => {
                let first = self.goaway_received.is_none();
                self.goaway_received = Some(goaway.last_id);
                let code = Code::from_u8(goaway.code);
                // Refusals (an authenticator's, or a server at its connection limit) rather
                // than a shutdown or a protocol error: the peer would refuse again at once.
                let refusal = matches!(code, Code::Unauthenticated | Code::PermissionDenied | Code::ResourceExhausted);
                if first && refusal {
                    let peer = self.peer.as_ref().map_or("the peer", |p| &*p.name);
                    let message = format!("{peer} refused the connection: {}", goaway.message);
                    self.refused_by_peer = Some(Status::new(code, message).mark_unprocessed());
                }
                if first {
                    self.send_waiting();
                    self.events.push_back(Event::GoAway(goaway));
                }
            }
            Frame::Credit { requests, bytes } => {
                if !self.outstanding.credit(requests, bytes) {
                    return Err(violation(format!(
                        "CREDIT for {requests} oneway requests of {bytes} bytes, more than are in progress"
                    )));
                }
                self.send_waiting();
            }
        }
        Ok(())
    }

    fn on_request(&mut self, request: RequestFrame, size: usize, now: Instant) -> Result<(), ProtocolError> {
        let id = request.id;
        if id == 0 || self.role.opens(id) {
            return Err(violation(format!("request id {id} does not have the parity of ids the peer opens")));
        }
        if self.inbound.contains_key(&id) {
            return Err(violation(format!("request id {id} is already in progress")));
        }
        self.highest_received = self.highest_received.max(id);
        // A compressed request counts as what it will take decompressed too (contract item
        // 11), as the peer counts it; a length over the limit is refused before it takes any.
        let size = match request.compressed_header() {
            Some(header) => {
                self.compressed_received += 1;
                size + header.len.min(self.config.max_frame) as usize
            }
            None => size,
        };
        let oneway = request.is_oneway();
        let entries = request.metadata.len();
        let refusal = if self.goaway_sent {
            Some(Status::unavailable("the server is shutting down; the call was not processed"))
        } else if request.durable.is_some() && !self.config.inbox {
            // This end announced no INBOX (PROTOCOL.md §19): it records no durable message, and
            // says so before running anything, so the sender keeps the message for another try.
            Some(Status::unimplemented(format!(
                "durable request to {} refused: this end records no durable calls (it announced no INBOX)",
                request.method_str()
            )))
        } else if entries > usize::from(self.config.max_metadata_entries) {
            Some(Status::resource_exhausted(format!(
                "request to {} carries {entries} metadata entries; {} accepts at most {}",
                request.method_str(),
                self.config.name,
                self.config.max_metadata_entries
            )))
        } else {
            None
        };
        if refusal.is_some() && oneway {
            // No answer is owed; the credit, one frame for many, is.
            self.owe_credit(size);
            return Ok(());
        }
        let seq = self.arrivals;
        self.arrivals += 1;
        self.inbound.insert(id, Inbound { oneway, size, seq, handler: None });
        self.inbound_bytes += size;
        self.peak_inbound = self.peak_inbound.max(self.inbound.len());
        self.peak_inbound_bytes = self.peak_inbound_bytes.max(self.inbound_bytes);
        self.held.push_back(match refusal {
            // In progress until the refusal is written: it counts against the peer's limits,
            // so that a peer sending calls it knows are refused is held back like any other.
            Some(status) => Held::Refuse(seq, id, status.mark_unprocessed()),
            None => Held::Start(seq, request, now),
        });
        self.send_refusals();
        Ok(())
    }
}

/// What [`Mux::try_send`] did with a request.
enum Attempt {
    /// Encoded, this many bytes.
    Sent(usize),
    /// Not now: no HELLO yet, the output is full, or the peer's limits are reached.
    Wait,
    /// Never: it cannot be encoded for this peer, or this peer may not have it; unprocessed.
    Refused(Status),
}

/// The status of a request that cannot be sent to this peer: too large for it, or invalid.
/// Provably never processed, so another endpoint, with a larger limit, may take it.
fn refused(request: &Request, e: &FrameError) -> Status {
    let status = match e {
        FrameError::FrameTooLarge { .. } => {
            Status::resource_exhausted(format!("request to {} not sent: {e}", request.method()))
        }
        e => Status::invalid_argument(format!("request to {} not sent: {e}", request.method())),
    };
    status.mark_unprocessed()
}

/// Why a durable message may not go to this peer, if it may not (`docs/PROTOCOL.md` §19): the
/// peer records no durable calls, or it is not the receiver the message is for (another server
/// took over the address, or a balancer picked another endpoint), or it is a batch and the
/// peer takes none (`FailedPrecondition`, which nothing on a receiver's recording path
/// answers: the outbox sends the messages one by one instead).
/// Unprocessed: the outbox keeps the message and tries again.
fn durable_refusal(
    peer: &Peer,
    durable: &zrpc_core::durable::Durable,
    request: &Request,
    compressed: bool,
) -> Option<Status> {
    if durable.is_batch() && peer.inbox && *peer.name == *durable.destination {
        // The batch's frame around its payload, as the peer will hold it (decompressed): a
        // header, a method and a sender of at most 255 bytes each, the durable fields; no
        // metadata.
        let payload = match compressed.then(|| CompressedHeader::split(request.payload())) {
            Some(Some((header, _))) => header.len as usize,
            _ => request.payload().len(),
        };
        let frame = payload.saturating_add(1024);
        let why = if !peer.inbox_batches {
            Some("records no batches (its INBOX did not say so)")
        } else if frame > peer.max_frame as usize {
            Some("takes frames too small for it")
        } else {
            None
        };
        if let Some(why) = why {
            let message = format!(
                "durable batch of {} from {} for {} not sent: {} {why}",
                durable.count,
                durable.id,
                request.method(),
                peer.name
            );
            return Some(Status::failed_precondition(message).mark_unprocessed());
        }
    }
    let message = if !peer.inbox {
        format!(
            "durable message {} for {} not sent: {} records no durable calls (it announced no INBOX)",
            durable.id,
            request.method(),
            peer.name
        )
    } else if *peer.name != *durable.destination {
        format!(
            "durable message {} for {} not sent: it is for {}, and this peer is {}",
            durable.id,
            request.method(),
            durable.destination,
            peer.name
        )
    } else {
        return None;
    };
    Some(Status::unavailable(message).mark_unprocessed())
}

fn violation(message: impl Into<String>) -> ProtocolError {
    ProtocolError::Violation(message.into())
}

impl<T, H> fmt::Debug for Mux<T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mux")
            .field("role", &self.role)
            .field("phase", &self.phase)
            .field("peer", &self.peer.as_ref().map(|p| &p.name))
            .field("pending", &self.pending.len())
            .field("waiting", &self.waiting.len())
            .field("inbound", &self.inbound.len())
            .field("held", &self.held.len())
            .field("goaway_sent", &self.goaway_sent)
            .field("goaway_received", &self.goaway_received)
            .finish()
    }
}
