//! [`mux_local`]: a [`Mux`] driven from both ends at once — the peer's frames interleaved with
//! this side's own calls, cancels, answers, GOAWAY and drain, on a clock the input moves —
//! checked against a model of the calls in flight and of the heartbeat.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use zrpc_core::{Code, Request, Response, Status};

use super::{PEER_NAME, Report, Setup, assert_goaway_explains, decode_frames, decode_output, peer_handshake};
use crate::frame::{self, Decoder, Frame, GoAway};
use crate::mux::{Event, Mux, MuxConfig, ProtocolError, Role};

/// The mux's heartbeat, as in [`MuxConfig::default`]: waits of up to 65.5 s reach both.
const INTERVAL: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a script of steps over a mux and checks invariants 1, 2, 3, 5, 6 and 7 of the
/// [module docs](super), and what the local side's actions promise:
///
/// - a call is queued byte for byte as the frame encoder writes it, or refused as the mux's
///   docs say (`Unavailable` and unprocessed after a GOAWAY either way, `ResourceExhausted` when
///   it is over the peer's limit, or over 1024 bytes before the peer's HELLO), queuing nothing;
/// - a cancelled or drained call never yields a response event; cancelling a call that is not
///   pending returns nothing and queues nothing;
/// - answering (or finishing) a peer's call that is not in progress queues nothing; answering
///   one that is queues exactly its response, or a `ResourceExhausted` error when that is over
///   the peer's limit;
/// - `drain_pending` hands back every pending call, unprocessed exactly when its id is above
///   the `last_id` of the peer's GOAWAY;
/// - `next_timeout` is when the heartbeat model says, `on_timeout` acts exactly when it has come
///   (a PING with a fresh nonce, or the peer declared dead), and once `on_timeout` has returned
///   `Ok`, `next_timeout` is later than the clock;
/// - once the mux has failed, whether from the peer's bytes or from `on_timeout`, it reads
///   nothing more.
///
/// The first byte sets up the run: bit 0 the mux's role, bit 1 the peer's `max_frame` (1024 or
/// the 16 MiB default). The second byte seeds the read sizes of the second pass, which splits
/// each of the peer's steps into small reads (the first reads each step whole). The rest is the
/// script, a step at a time: an opcode in the low 4 bits of a byte (bit 7 a flag), then its
/// arguments, missing ones read as 0. A `pick` chooses among the ids the step could concern,
/// counting one never used; sizes are in units of 5 bytes, so both 1024-byte limits are in reach.
///
/// | opcode | the peer / this side does                      | flag    | arguments                      |
/// |-------:|------------------------------------------------|---------|--------------------------------|
/// | 0      | the peer sends raw bytes                       |         | length n, n bytes              |
/// | 1      | the peer sends a REQUEST (new id, or reused)   | oneway  | pick, size                     |
/// | 2      | the peer answers one of our calls              | error   | pick                           |
/// | 3      | the peer cancels one of its calls              |         | pick                           |
/// | 4      | the peer sends a PING, or with the flag a PONG | PONG    | nonce                          |
/// | 5      | the peer sends GOAWAY                          |         | pick (`last_id`)               |
/// | 6      | `send_request`                                 | oneway  | size                           |
/// | 7      | `cancel`                                       |         | pick                           |
/// | 8      | `respond`                                      | error   | pick, size                     |
/// | 9      | `finish_oneway`                                |         | pick                           |
/// | 10     | `go_away`                                      |         |                                |
/// | 11     | `drain_pending`                                |         |                                |
/// | 12-15  | the clock moves on, then `on_timeout`          |         | milliseconds, `u16` big-endian |
///
/// The peer's preface and a valid HELLO go before its first step, so that steps before it run
/// ahead of the handshake (calls limited to 1024 bytes, the handshake timeout).
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
    /// multiple of 4, an id it opened before.
    PeerRequest { pick: u8, size: u8, oneway: bool },
    /// The peer answers one of this side's calls.
    PeerResponse { pick: u8, error: bool },
    /// The peer cancels one of its calls.
    PeerCancel { pick: u8 },
    /// The peer pings, or sends a PONG nobody asked for.
    PeerPing { nonce: u8, pong: bool },
    /// The peer goes away, with the `last_id` of one of this side's calls (or 0).
    PeerGoAway { pick: u8 },
    /// This side makes a call of `size` × 5 bytes of payload.
    Call { size: u8, oneway: bool },
    /// This side cancels one of its calls.
    Cancel { pick: u8 },
    /// A handler answers one of the peer's calls (which, for a oneway one, sends nothing).
    Respond { pick: u8, size: u8, error: bool },
    /// A handler of one of the peer's oneway calls ends (a two-way one stays in progress).
    FinishOneway { pick: u8 },
    /// This side goes away.
    GoAway,
    /// The connection died: take every pending call.
    Drain,
    /// The clock moves on, then the heartbeat runs.
    Wait { millis: u16 },
}

/// The opcodes, in the low 4 bits of a step's first byte; bit 7 is the step's flag (`oneway`,
/// `error`, `pong`). Opcodes above `WAIT` are waits too.
mod op {
    pub(super) const BYTES: u8 = 0;
    pub(super) const PEER_REQUEST: u8 = 1;
    pub(super) const PEER_RESPONSE: u8 = 2;
    pub(super) const PEER_CANCEL: u8 = 3;
    pub(super) const PEER_PING: u8 = 4;
    pub(super) const PEER_GOAWAY: u8 = 5;
    pub(super) const CALL: u8 = 6;
    pub(super) const CANCEL: u8 = 7;
    pub(super) const RESPOND: u8 = 8;
    pub(super) const FINISH_ONEWAY: u8 = 9;
    pub(super) const GOAWAY: u8 = 10;
    pub(super) const DRAIN: u8 = 11;
    pub(super) const WAIT: u8 = 12;
    pub(super) const FLAG: u8 = 0x80;
}

impl<'a> Step<'a> {
    /// Takes the next step off the front of `script` (the table in [`mux_local`]'s docs), or
    /// `None` when it is empty.
    fn parse(script: &mut &'a [u8]) -> Option<Step<'a>> {
        let (&opcode, rest) = script.split_first()?;
        *script = rest;
        let mut arg = || match script.split_first() {
            Some((&byte, rest)) => {
                *script = rest;
                byte
            }
            None => 0,
        };
        let flag = opcode & op::FLAG != 0;
        let step = match opcode & 0x0f {
            op::BYTES => {
                let len = usize::from(arg()).min(script.len());
                let (bytes, rest) = script.split_at(len);
                *script = rest;
                Step::Bytes(bytes)
            }
            op::PEER_REQUEST => Step::PeerRequest { pick: arg(), size: arg(), oneway: flag },
            op::PEER_RESPONSE => Step::PeerResponse { pick: arg(), error: flag },
            op::PEER_CANCEL => Step::PeerCancel { pick: arg() },
            op::PEER_PING => Step::PeerPing { nonce: arg(), pong: flag },
            op::PEER_GOAWAY => Step::PeerGoAway { pick: arg() },
            op::CALL => Step::Call { size: arg(), oneway: flag },
            op::CANCEL => Step::Cancel { pick: arg() },
            op::RESPOND => Step::Respond { pick: arg(), size: arg(), error: flag },
            op::FINISH_ONEWAY => Step::FinishOneway { pick: arg() },
            op::GOAWAY => Step::GoAway,
            op::DRAIN => Step::Drain,
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
            Step::PeerRequest { pick, size, oneway } => dst.extend([flagged(op::PEER_REQUEST, oneway), pick, size]),
            Step::PeerResponse { pick, error } => dst.extend([flagged(op::PEER_RESPONSE, error), pick]),
            Step::PeerCancel { pick } => dst.extend([op::PEER_CANCEL, pick]),
            Step::PeerPing { nonce, pong } => dst.extend([flagged(op::PEER_PING, pong), nonce]),
            Step::PeerGoAway { pick } => dst.extend([op::PEER_GOAWAY, pick]),
            Step::Call { size, oneway } => dst.extend([flagged(op::CALL, oneway), size]),
            Step::Cancel { pick } => dst.extend([op::CANCEL, pick]),
            Step::Respond { pick, size, error } => dst.extend([flagged(op::RESPOND, error), pick, size]),
            Step::FinishOneway { pick } => dst.extend([op::FINISH_ONEWAY, pick]),
            Step::GoAway => dst.push(op::GOAWAY),
            Step::Drain => dst.push(op::DRAIN),
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
fn pick(mut ids: impl ExactSizeIterator<Item = u64>, pick: u8, never: u64) -> u64 {
    let n = usize::from(pick) % (ids.len() + 1);
    ids.nth(n).unwrap_or(never)
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

/// One mux and the model it is checked against.
struct Run {
    setup: Setup,
    mux: Mux<u64>,
    now: Instant,
    /// The second pass's read sizes: a generator and the largest read.
    pieces: Option<(fastrand::Rng, usize)>,
    /// The peer's preface and HELLO, until its first step sends them.
    handshake: Option<BytesMut>,
    /// Bytes the mux has not consumed yet, and every byte it was given.
    inbox: BytesMut,
    fed: Vec<u8>,
    /// The same bytes through a decoder of its own: which frames the mux has seen.
    model_inbox: BytesMut,
    model_decoder: Decoder,
    model_preface: bool,
    /// Whether the model has decoded the peer's first frame, its HELLO.
    model_hello: bool,
    /// Everything queued so far, the preface and HELLO first.
    out: BytesMut,

    next_id: u64,
    /// Calls this side queued, in order.
    sent: Vec<u64>,
    /// Calls this side made that await an answer.
    pending: BTreeSet<u64>,
    /// Calls this side cancelled or drained: no answer may be reported for them.
    forgotten: BTreeSet<u64>,
    /// Every id of the peer's parity its requests used, and the highest.
    peer_ids: BTreeSet<u64>,
    highest_peer: u64,
    /// The peer's calls in progress here, and whether each is oneway.
    inbound: BTreeMap<u64, bool>,
    /// The peer's calls that were reported, and the highest.
    reported: BTreeSet<u64>,
    ready: bool,
    went_away: bool,
    peer_goaway: Option<u64>,

    /// When a frame last arrived (creation until the HELLO), and when our unanswered PING went.
    heard: Instant,
    ping: Option<Instant>,
    nonces: BTreeSet<u64>,

    transcript: Vec<String>,
    events: usize,
    error: Option<ProtocolError>,
}

impl Run {
    fn new(setup: Setup, pieces: Option<(fastrand::Rng, usize)>) -> Run {
        let now = Instant::now();
        let config = MuxConfig {
            name: "fuzz".into(),
            max_frame: frame::MIN_MAX_FRAME,
            heartbeat_interval: INTERVAL,
            heartbeat_timeout: TIMEOUT,
            ..MuxConfig::default()
        };
        let mut mux = Mux::new(setup.role, config, now);
        let out = mux.out().split();
        assert!(
            matches!(decode_output(&out, frame::MIN_MAX_FRAME).as_slice(), [Frame::Hello(_)]),
            "a new mux queues its preface and HELLO, nothing else"
        );
        Run {
            setup,
            mux,
            now,
            pieces,
            handshake: Some(peer_handshake(setup.peer_max_frame)),
            inbox: BytesMut::new(),
            fed: Vec::new(),
            model_inbox: BytesMut::new(),
            model_decoder: Decoder::new(frame::MIN_MAX_FRAME),
            model_preface: false,
            model_hello: false,
            out,
            next_id: setup.role.first_id(),
            sent: Vec::new(),
            pending: BTreeSet::new(),
            forgotten: BTreeSet::new(),
            peer_ids: BTreeSet::new(),
            highest_peer: 0,
            inbound: BTreeMap::new(),
            reported: BTreeSet::new(),
            ready: false,
            went_away: false,
            peer_goaway: None,
            heard: now,
            ping: None,
            nonces: BTreeSet::new(),
            transcript: Vec::new(),
            events: 0,
            error: None,
        }
    }

    fn play(mut self, mut script: &[u8]) -> Outcome {
        while self.error.is_none() {
            let Some(step) = Step::parse(&mut script) else { break };
            self.step(step);
            if self.error.is_none() {
                self.check_state();
            }
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
            Step::PeerRequest { pick: which, size, oneway } => {
                let new = self.next_peer_id();
                let id = match which % 4 {
                    0 => pick(self.peer_ids.iter().copied(), which / 4, new),
                    _ => new,
                };
                let request = Request::new("Fuzz.peer", payload(size)).with_oneway(oneway);
                if let Err(e) = frame::encode_request(&mut peer, id, &request, frame::DEFAULT_MAX_FRAME) {
                    panic!("the peer's request does not encode: {e}");
                }
            }
            Step::PeerResponse { pick: which, error } => {
                let id = pick(self.sent.iter().copied(), which, self.next_id);
                let result =
                    if error { Err(Status::not_found("fuzz: no such method")) } else { Ok(Response::default()) };
                if let Err(e) = frame::encode_response(&mut peer, id, &result, frame::DEFAULT_MAX_FRAME) {
                    panic!("the peer's response does not encode: {e}");
                }
            }
            Step::PeerCancel { pick: which } => {
                let id = pick(self.peer_ids.iter().copied(), which, self.next_peer_id());
                frame::encode_cancel(&mut peer, id);
            }
            Step::PeerPing { nonce, pong: false } => frame::encode_ping(&mut peer, nonce.into()),
            Step::PeerPing { nonce, pong: true } => frame::encode_pong(&mut peer, nonce.into()),
            Step::PeerGoAway { pick: which } => {
                let last_id = pick(self.sent.iter().copied(), which, 0);
                let goaway =
                    GoAway { last_id, code: Code::Unavailable.as_u8(), message: "fuzz: peer going away".into() };
                frame::encode_goaway(&mut peer, &goaway);
            }
            Step::Call { size, oneway } => return self.call(size, oneway),
            Step::Cancel { pick: which } => return self.cancel(pick(self.sent.iter().copied(), which, self.next_id)),
            Step::Respond { pick, size, error } => return self.respond(pick, size, error),
            Step::FinishOneway { pick } => return self.finish_oneway(pick),
            Step::GoAway => return self.go_away(),
            Step::Drain => return self.drain(),
            Step::Wait { millis } => return self.wait(Duration::from_millis(millis.into())),
        }
        self.deliver(&peer, &step);
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

    /// The largest frame the mux may send now.
    fn limit(&self) -> u32 {
        self.mux.peer().map_or(frame::MIN_MAX_FRAME, |peer| peer.max_frame)
    }

    /// Takes what the mux queued since the last step, checking it is whole frames within the
    /// limit, and records it with `step` in the transcript.
    fn queued(&mut self, step: impl std::fmt::Debug) -> (Bytes, Vec<Frame>) {
        let bytes = self.mux.out().split().freeze();
        let frames = decode_frames(BytesMut::from(&bytes[..]), self.limit());
        self.out.extend_from_slice(&bytes);
        // The bytes themselves are compared in `out`.
        self.transcript.push(format!("{step:?} queued {} bytes", bytes.len()));
        (bytes, frames)
    }

    /// The peer's `bytes` arrive: at once, or in pieces in the second pass.
    fn deliver(&mut self, bytes: &[u8], step: &Step<'_>) {
        let mut bytes = bytes.to_vec();
        if let Some(handshake) = self.handshake.take() {
            bytes.splice(..0, handshake);
        }
        let replies = self.hear(&bytes);
        let mut rest = &bytes[..];
        while !rest.is_empty() && self.error.is_none() {
            let n = match &mut self.pieces {
                Some((rng, largest)) => rng.usize(1..=*largest).min(rest.len()),
                None => rest.len(),
            };
            self.inbox.extend_from_slice(&rest[..n]);
            self.fed.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            self.read();
        }
        let (_, mut frames) = self.queued(step);
        if let Some(error) = &self.error {
            assert_goaway_explains(&frames, error);
            if let Some(Frame::GoAway(goaway)) = frames.pop() {
                // The model may have read past the frame that failed, never short of it.
                let reported = self.reported.last().copied().unwrap_or(0);
                assert!(
                    (reported..=self.highest_peer).contains(&goaway.last_id),
                    "the GOAWAY's last id {} is not the highest request id the peer opened",
                    goaway.last_id
                );
            }
        }
        // The mux answers PINGs and, after its GOAWAY, refuses calls; nothing else. Up to an
        // error, which stops it part way.
        let whole = if self.error.is_some() { replies.len().min(frames.len()) } else { replies.len() };
        assert_eq!(frames, replies[..whole], "the mux's answers to the peer's {step:?}");
    }

    /// Runs the peer's bytes through the model's decoder, keeps the heartbeat and the peer's ids
    /// up to date, and returns what the mux should answer: a PONG for each PING, and after our
    /// GOAWAY a refusal for each two-way call.
    fn hear(&mut self, bytes: &[u8]) -> Vec<Frame> {
        self.model_inbox.extend_from_slice(bytes);
        if !self.model_preface {
            match frame::decode_preface(&mut self.model_inbox) {
                Ok(true) => self.model_preface = true,
                _ => return Vec::new(),
            }
        }
        let mut replies = Vec::new();
        // Which calls are in progress as the mux reads: cancels end them, and (before our GOAWAY)
        // requests start them.
        let mut inbound: BTreeSet<u64> = self.inbound.keys().copied().collect();
        loop {
            let before = self.model_inbox.len();
            let Ok(decoded) = self.model_decoder.decode(&mut self.model_inbox) else { break };
            // Any whole frame is heard, also one of a kind the decoder skips; before the HELLO,
            // only the HELLO (docs/PROTOCOL.md §12).
            if self.model_inbox.len() < before && (self.model_hello || decoded.is_some()) {
                self.heard = self.now;
                self.ping = None;
            }
            let Some(frame) = decoded else { break };
            // The first frame is the HELLO, or a violation that ends the run.
            self.model_hello = true;
            match frame {
                Frame::Ping { nonce } => replies.push(Frame::Pong { nonce }),
                Frame::Cancel { id } => {
                    inbound.remove(&id);
                }
                Frame::Request(request) if request.id != 0 && !self.setup.role.opens(request.id) => {
                    self.peer_ids.insert(request.id);
                    self.highest_peer = self.highest_peer.max(request.id);
                    if !self.went_away {
                        inbound.insert(request.id);
                    } else if !request.is_oneway() && !inbound.contains(&request.id) {
                        let mut refusal = BytesMut::new();
                        let status = Status::unavailable("the server is shutting down; the call was not processed");
                        let result = Err(status.mark_unprocessed());
                        if let Err(e) = frame::encode_response(&mut refusal, request.id, &result, self.limit()) {
                            panic!("a refusal does not encode: {e}");
                        }
                        replies.extend(decode_frames(refusal, frame::DEFAULT_MAX_FRAME));
                    }
                }
                _ => {}
            }
        }
        replies
    }

    /// Lets the mux read what it was given until it needs more or fails.
    fn read(&mut self) {
        loop {
            let result = self.mux.recv(&mut self.inbox, self.now);
            assert!(self.fed.ends_with(&self.inbox), "the mux consumed bytes from somewhere other than the front");
            match result {
                Ok(Some(event)) => self.on_event(event),
                Ok(None) => return,
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, event: Event<u64>) {
        self.transcript.push(format!("{event:?}"));
        self.events += 1;
        if !self.ready {
            assert!(matches!(event, Event::Ready), "{event:?} before Ready");
        }
        match event {
            Event::Ready => {
                assert!(!self.ready, "Ready twice");
                self.ready = true;
                let peer = self.mux.peer().map(|p| (&*p.name, p.max_frame));
                assert_eq!(peer, Some((PEER_NAME, self.setup.peer_max_frame)));
            }
            Event::Request(request) => {
                let id = request.id;
                assert!(id != 0 && !self.setup.role.opens(id), "request {id} has this side's parity");
                assert!(!self.went_away, "request {id} was reported after our GOAWAY");
                let oneway = request.is_oneway();
                assert!(self.inbound.insert(id, oneway).is_none(), "request {id} was reported while in progress");
                self.reported.insert(id);
            }
            Event::Response { token, .. } => {
                assert!(
                    !self.forgotten.contains(&token),
                    "a response for call {token}, which was cancelled or drained"
                );
                assert!(self.pending.remove(&token), "a response for call {token}, which is not pending");
            }
            Event::Cancel { id } => {
                assert!(self.inbound.remove(&id).is_some(), "a cancel for {id}, which is not in progress");
            }
            Event::GoAway(goaway) => {
                self.peer_goaway = Some(goaway.last_id);
                assert!(self.mux.is_draining());
            }
        }
    }

    fn call(&mut self, size: u8, oneway: bool) {
        let id = self.next_id;
        self.next_id += 2;
        let request = Request::new("Fuzz.call", payload(size)).with_oneway(oneway);
        let mut expected = BytesMut::new();
        let fits = frame::encode_request(&mut expected, id, &request, self.limit()).is_ok();
        let draining = self.went_away || self.peer_goaway.is_some();
        let result = self.mux.send_request(id, &request, id);
        let (queued, _) = self.queued(("call", id, oneway, &result));
        let sent = match result {
            Err((status, token)) if draining => {
                assert_eq!((status.code(), status.is_unprocessed(), token), (Code::Unavailable, true, id));
                false
            }
            Err((status, token)) if !fits => {
                assert_eq!((status.code(), status.is_unprocessed(), token), (Code::ResourceExhausted, true, id));
                false
            }
            Ok(None) if fits && !draining && !oneway => self.pending.insert(id),
            Ok(Some(token)) if fits && !draining && oneway => token == id,
            other => panic!("call {id} (oneway: {oneway}, fits: {fits}, draining: {draining}) returned {other:?}"),
        };
        if sent {
            self.sent.push(id);
            assert_eq!(queued, expected, "call {id} was not queued as encoded");
        } else {
            assert!(queued.is_empty(), "the refused call {id} queued bytes");
        }
    }

    fn cancel(&mut self, id: u64) {
        let token = self.mux.cancel(id);
        let (_, frames) = self.queued(("cancel", id, token));
        if self.pending.remove(&id) {
            assert_eq!((token, &frames[..]), (Some(id), &[Frame::Cancel { id }][..]), "cancelling pending call {id}");
            self.forgotten.insert(id);
        } else {
            assert_eq!((token, &frames[..]), (None, &[][..]), "cancelling call {id}, which is not pending");
        }
    }

    /// Ids of the peer's calls a handler might finish: those it used and one it never did.
    fn finishable(&self, pick_: u8) -> u64 {
        pick(self.peer_ids.iter().copied(), pick_, self.next_peer_id())
    }

    fn respond(&mut self, pick: u8, size: u8, error: bool) {
        let id = self.finishable(pick);
        let result = match error {
            true => Err(Status::internal("fuzz: the handler failed").with_details(payload(size))),
            false => Ok(Response::new(payload(size))),
        };
        let mut expected = BytesMut::new();
        let fits = frame::encode_response(&mut expected, id, &result, self.limit()).is_ok();
        self.mux.respond(id, &result);
        let (queued, frames) = self.queued(("respond", id, &result));
        if self.inbound.get(&id) != Some(&false) {
            assert!(frames.is_empty(), "answering call {id}, not a two-way call in progress, queued {frames:?}");
            return;
        }
        self.inbound.remove(&id);
        if fits {
            assert_eq!(queued, expected, "the answer to call {id} was not queued as encoded");
        } else {
            let [Frame::Response(response)] = &frames[..] else { panic!("answering call {id} queued {frames:?}") };
            assert_eq!((response.id, response.code), (id, Code::ResourceExhausted.as_u8()), "an oversized answer");
        }
    }

    fn finish_oneway(&mut self, pick: u8) {
        let id = self.finishable(pick);
        self.mux.finish_oneway(id);
        let (_, frames) = self.queued(("finish oneway", id));
        assert!(frames.is_empty(), "finishing call {id} as oneway queued {frames:?}");
        // A two-way call stays in progress: its caller waits for an answer.
        if self.inbound.get(&id) == Some(&true) {
            self.inbound.remove(&id);
        }
    }

    fn go_away(&mut self) {
        self.mux.go_away(Code::Unavailable, "fuzz: going away");
        let (_, frames) = self.queued("go away");
        if self.went_away {
            assert!(frames.is_empty(), "a second GOAWAY: {frames:?}");
        } else {
            let goaway = GoAway {
                last_id: self.highest_peer,
                code: Code::Unavailable.as_u8(),
                message: "fuzz: going away".into(),
            };
            assert_eq!(frames, [Frame::GoAway(goaway)]);
        }
        self.went_away = true;
    }

    fn drain(&mut self) {
        let mut drained: Vec<_> = self.mux.drain_pending().collect();
        drained.sort_unstable();
        let (_, frames) = self.queued(("drain", &drained));
        assert!(frames.is_empty(), "draining queued {frames:?}");
        let last_id = self.peer_goaway;
        let expected: Vec<_> = self.pending.iter().map(|&id| (id, last_id.is_some_and(|last| id > last))).collect();
        assert_eq!(drained, expected, "drained (token, unprocessed) after a GOAWAY with last id {last_id:?}");
        self.forgotten.append(&mut self.pending);
    }

    /// When the heartbeat model says `on_timeout` must run next.
    fn deadline(&self) -> Instant {
        match (self.ready, self.ping) {
            (false, _) => self.heard + TIMEOUT,
            (true, Some(sent)) => sent + TIMEOUT,
            (true, None) => self.heard + INTERVAL,
        }
    }

    fn wait(&mut self, by: Duration) {
        self.now += by;
        let due = self.deadline();
        let result = self.mux.on_timeout(self.now);
        let (_, frames) = self.queued(("wait", by, &result));
        match result {
            Err(e) => {
                let expected = match self.ready {
                    true => ProtocolError::HeartbeatTimeout(TIMEOUT),
                    false => ProtocolError::HandshakeTimeout(TIMEOUT),
                };
                assert!(self.now >= due && (!self.ready || self.ping.is_some()), "{e} before it was due");
                assert_eq!(e, expected);
                assert!(frames.is_empty(), "declaring the peer dead queued {frames:?}");
                self.error = Some(e);
                return;
            }
            Ok(()) if self.now < due => assert!(frames.is_empty(), "on_timeout acted before it was due: {frames:?}"),
            Ok(()) => {
                assert!(self.ready && self.ping.is_none(), "the peer should have been declared dead");
                let [Frame::Ping { nonce }] = frames[..] else { panic!("a quiet connection queued {frames:?}") };
                assert!(self.nonces.insert(nonce), "PING nonce {nonce} was used before");
                self.ping = Some(self.now);
            }
        }
        assert!(self.mux.next_timeout() > self.now, "on_timeout ran, yet next_timeout is not later than the clock");
    }

    /// What must hold after every step that did not fail.
    fn check_state(&self) {
        let counts = (self.mux.pending_len(), self.mux.inbound_len(), self.mux.is_draining());
        let draining = self.went_away || self.peer_goaway.is_some();
        assert_eq!(counts, (self.pending.len(), self.inbound.len(), draining), "(pending, in progress, draining)");
        assert_eq!(self.mux.is_ready(), self.ready);
        let drained = draining && self.pending.is_empty() && self.inbound.is_empty();
        assert_eq!(self.mux.is_drained(), drained, "is_drained");
        assert_eq!(self.mux.next_timeout(), self.deadline(), "next_timeout disagrees with the heartbeat model");
    }

    /// A failed connection is over: a PING from the peer is neither read nor answered.
    fn assert_reads_nothing_more(&mut self, error: &ProtocolError) {
        let mut ping = BytesMut::new();
        frame::encode_ping(&mut ping, 1);
        let before = ping.clone();
        let result = self.mux.recv(&mut ping, self.now);
        assert!(matches!(result, Ok(None)), "after {error:?} the mux read on: {result:?}");
        assert_eq!(ping, before, "after {error:?} the mux consumed bytes");
        assert!(self.mux.out().is_empty(), "after {error:?} the mux queued {:?}", self.mux.out());
    }
}
