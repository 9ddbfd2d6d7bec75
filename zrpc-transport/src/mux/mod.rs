//! The connection state machine: many calls in flight over one byte stream, with no I/O.
//!
//! A [`Mux`] is one end of a zrpc connection. It is fed the bytes that arrived
//! ([`Mux::recv`]), told what the local side wants (send a request, cancel one, answer one, go
//! away) and what time it is; it appends the bytes to send to [`Mux::out`] and reports what the
//! peer did as [`Event`]s. A driver (`crate::conn`) connects it to a socket; tests drive two
//! muxes against each other deterministically, with no sockets and no clock.
//!
//! The contract, in order of a connection's life (the wire format is in `docs/PROTOCOL.md`):
//!
//! 1. On creation the mux queues its preface and HELLO. Until the peer's preface and HELLO have
//!    arrived it reports nothing; requests queued meanwhile are written after our HELLO, which
//!    is allowed because the peer reads our HELLO first.
//! 2. Ids: the connecting side opens odd ids, the accepting side even ids, never 0. The caller
//!    picks ids ([`Mux::send_request`] takes one) so that it can cancel a call without a round
//!    trip through the driver; ids must increase.
//! 3. A request from the peer with the wrong parity, or with the id of one still in progress, is
//!    a protocol violation. So is a RESPONSE for an id this side never opened. A RESPONSE for an
//!    id that was opened but is no longer pending (it was cancelled or timed out here) is
//!    ignored: the two crossed on the wire.
//! 4. Every protocol violation — including any [`FrameError`] — is returned as a
//!    [`ProtocolError`]; the mux has then queued a GOAWAY saying why, and the driver writes it
//!    and closes. Nothing a peer sends can make the mux panic or allocate beyond the frame limit.
//! 5. Heartbeat: when nothing has arrived for `heartbeat_interval`, a PING is queued; when nothing
//!    has arrived for `heartbeat_timeout` after it, the peer is dead ([`Mux::on_timeout`]), and
//!    as after a violation nothing more it sends is read. Any frame counts as a sign of life, so
//!    a busy connection is never pinged.
//! 6. GOAWAY from the peer: no new requests may be sent (they fail with `Unavailable`), pending
//!    ones still complete. [`Mux::go_away`] does the same from this side: requests arriving after
//!    it are answered `Unavailable` without being reported.
//! 7. Sizes: a frame larger than the peer's announced maximum is never sent. An oversized
//!    request fails that call with `ResourceExhausted`; an oversized response is replaced by a
//!    `ResourceExhausted` error response, so the caller learns why.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;
use zrpc_core::{Code, CodecId, Request, Response, Status};

use crate::frame::{self, Decoder, Frame, FrameError, GoAway, Hello, RequestFrame};

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

/// What a mux needs to know about its own side.
#[derive(Clone, Debug)]
pub struct MuxConfig {
    /// The name announced in the HELLO.
    pub name: String,
    /// Largest frame this side accepts.
    pub max_frame: u32,
    /// Idle time after which the peer is pinged.
    pub heartbeat_interval: Duration,
    /// Silence after a ping after which the peer is declared dead.
    pub heartbeat_timeout: Duration,
    /// Auth token sent in the HELLO.
    pub token: bytes::Bytes,
}

impl Default for MuxConfig {
    fn default() -> MuxConfig {
        MuxConfig {
            name: String::new(),
            max_frame: frame::DEFAULT_MAX_FRAME,
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(20),
            token: bytes::Bytes::new(),
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
}

/// Something the peer did that the driver must act on.
#[derive(Debug)]
pub enum Event<T> {
    /// The handshake finished.
    Ready,
    /// The peer opened a call; answer it with [`Mux::respond`] (unless oneway).
    Request(RequestFrame),
    /// The answer to a call this side made, with the token given to [`Mux::send_request`].
    Response {
        /// The caller's token.
        token: T,
        /// The answer.
        result: Result<Response, Status>,
    },
    /// The peer cancelled a call it made; the handler should be dropped. No response is owed.
    Cancel {
        /// The cancelled request.
        id: u64,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Preface,
    Hello,
    Open,
    /// The peer broke the protocol or stopped answering: nothing more it sends is read.
    Broken,
}

/// One end of a zrpc connection; `T` is what the caller attaches to each call it makes (a
/// oneshot sender in the driver, a plain value in tests).
pub struct Mux<T> {
    role: Role,
    config: MuxConfig,
    phase: Phase,
    decoder: Decoder,
    out: BytesMut,
    peer: Option<Peer>,
    /// Calls this side made that await a response.
    pending: HashMap<u64, T>,
    /// Highest id this side has sent; responses above it were never asked for.
    highest_sent: u64,
    /// Calls the peer made that are still being handled here, and whether each is oneway.
    inbound: HashMap<u64, bool>,
    /// Highest id the peer has opened; sent in our GOAWAY.
    highest_received: u64,
    goaway_sent: bool,
    /// The `last_id` of the peer's GOAWAY, once one arrived.
    goaway_received: Option<u64>,
    last_received: Instant,
    ping: Option<Instant>,
    next_nonce: u64,
}

impl<T> Mux<T> {
    /// A new connection end that has queued its preface and HELLO.
    pub fn new(role: Role, config: MuxConfig, now: Instant) -> Mux<T> {
        let mut out = BytesMut::with_capacity(256);
        frame::encode_preface(&mut out);
        let hello = Hello {
            name: config.name.clone(),
            max_frame: config.max_frame,
            codecs: CodecId::enabled().map(CodecId::as_u8).collect(),
            compressions: Vec::new(),
            token: config.token.clone(),
        };
        if let Err(e) = frame::encode_hello(&mut out, &hello) {
            // Only an over-long name can fail; announce it without the name rather than not at all.
            tracing::warn!("endpoint name not announced: {e}");
            let anonymous = Hello { name: String::new(), ..hello };
            let _ = frame::encode_hello(&mut out, &anonymous);
        }
        Mux {
            role,
            decoder: Decoder::new(config.max_frame),
            config,
            phase: Phase::Preface,
            out,
            peer: None,
            pending: HashMap::new(),
            highest_sent: 0,
            inbound: HashMap::new(),
            highest_received: 0,
            goaway_sent: false,
            goaway_received: None,
            last_received: now,
            ping: None,
            next_nonce: 1,
        }
    }

    /// Bytes waiting to be written; the driver writes from the front and `advance`s.
    pub fn out(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// The peer, once its HELLO has arrived.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// Whether the handshake is complete.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Number of calls this side made that await an answer.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Number of the peer's calls being handled here.
    pub fn inbound_len(&self) -> usize {
        self.inbound.len()
    }

    /// Whether either side has sent GOAWAY.
    pub fn is_draining(&self) -> bool {
        self.goaway_sent || self.goaway_received.is_some()
    }

    /// Whether the connection has nothing left to do after a GOAWAY: no calls either way.
    pub fn is_drained(&self) -> bool {
        self.is_draining() && self.pending.is_empty() && self.inbound.is_empty()
    }

    /// Queues a request. `id` must be of this side's parity and larger than any sent before.
    /// Oneway requests are not remembered: no answer will come, and `token` is handed back.
    ///
    /// # Errors
    /// `Unavailable` after a GOAWAY either way; `ResourceExhausted` when the request is larger
    /// than the peer accepts. Each is marked unprocessed, and the token is handed back with it.
    pub fn send_request(&mut self, id: u64, req: &Request, token: T) -> Result<Option<T>, (Status, T)> {
        debug_assert!(self.role.opens(id), "request ids must have this side's parity");
        if self.goaway_received.is_some() {
            return Err((Status::unavailable("the peer is shutting down (it sent GOAWAY)").mark_unprocessed(), token));
        }
        if self.goaway_sent {
            return Err((Status::unavailable("the connection is shutting down").mark_unprocessed(), token));
        }
        // Before the peer's HELLO only the protocol minimum is known to be safe.
        let max = self.peer.as_ref().map_or(frame::MIN_MAX_FRAME, |p| p.max_frame);
        if let Err(e) = frame::encode_request(&mut self.out, id, req, max) {
            let status = match e {
                FrameError::FrameTooLarge { .. } => {
                    Status::resource_exhausted(format!("request to {} not sent: {e}", req.method()))
                }
                e => Status::invalid_argument(format!("request to {} not sent: {e}", req.method())),
            };
            // Provably never processed: another endpoint, with a larger limit, may take it.
            return Err((status.mark_unprocessed(), token));
        }
        self.highest_sent = self.highest_sent.max(id);
        if req.is_oneway() {
            return Ok(Some(token));
        }
        self.pending.insert(id, token);
        Ok(None)
    }

    /// Forgets a call this side made and tells the peer to stop working on it. Returns its
    /// token, or `None` when the call had already completed (then nothing is sent).
    pub fn cancel(&mut self, id: u64) -> Option<T> {
        let token = self.pending.remove(&id)?;
        frame::encode_cancel(&mut self.out, id);
        Some(token)
    }

    /// Answers a call the peer made. Answers to calls that were cancelled are dropped, and so
    /// are answers to oneway calls, which never get one: [`finish_oneway`](Mux::finish_oneway)
    /// ends those.
    pub fn respond(&mut self, id: u64, result: &Result<Response, Status>) {
        if self.end_inbound(id, false) {
            self.encode_response(id, result);
        }
    }

    /// Ends the peer's call `id` if it is in progress and is oneway or not as `oneway` says.
    fn end_inbound(&mut self, id: u64, oneway: bool) -> bool {
        match self.inbound.entry(id) {
            Entry::Occupied(call) if *call.get() == oneway => {
                call.remove();
                true
            }
            _ => false,
        }
    }

    fn encode_response(&mut self, id: u64, result: &Result<Response, Status>) {
        let max = self.peer.as_ref().map_or(frame::MIN_MAX_FRAME, |p| p.max_frame);
        if let Err(e) = frame::encode_response(&mut self.out, id, result, max) {
            let status = Err(Status::resource_exhausted(format!("the response was not sent: {e}")));
            // A short error response without metadata or details fits the minimum frame size.
            let _ = frame::encode_response(&mut self.out, id, &status, max);
        }
    }

    /// Marks a peer's oneway call as finished. A two-way call is left to
    /// [`respond`](Mux::respond): its caller waits for an answer.
    pub fn finish_oneway(&mut self, id: u64) {
        self.end_inbound(id, true);
    }

    /// Queues a GOAWAY: the peer should send new calls elsewhere; calls in progress continue.
    pub fn go_away(&mut self, code: Code, message: &str) {
        if !self.goaway_sent {
            self.queue_goaway(code, message);
        }
    }

    fn queue_goaway(&mut self, code: Code, message: &str) {
        self.goaway_sent = true;
        let goaway = GoAway { last_id: self.highest_received, code: code.as_u8(), message: message.to_owned() };
        frame::encode_goaway(&mut self.out, &goaway);
    }

    /// Takes every pending call, e.g. because the connection died. Each token comes with
    /// whether the call is known to be unprocessed: the peer's GOAWAY promised to process no
    /// request above its `last_id`.
    pub fn drain_pending(&mut self) -> impl Iterator<Item = (T, bool)> + '_ {
        let last_id = self.goaway_received;
        self.pending.drain().map(move |(id, token)| (token, last_id.is_some_and(|last| id > last)))
    }

    /// When [`Mux::on_timeout`] must be called next.
    pub fn next_timeout(&self) -> Instant {
        if self.phase != Phase::Open {
            return self.last_received + self.config.heartbeat_timeout;
        }
        match self.ping {
            Some(sent) => sent + self.config.heartbeat_timeout,
            None => self.last_received + self.config.heartbeat_interval,
        }
    }

    /// Advances the heartbeat: queues a PING when the connection has been quiet, and fails
    /// when a PING went unanswered.
    ///
    /// # Errors
    /// [`ProtocolError::HandshakeTimeout`] or [`ProtocolError::HeartbeatTimeout`] when the peer
    /// is considered dead. As after an error from [`Mux::recv`], nothing more it sends is read.
    pub fn on_timeout(&mut self, now: Instant) -> Result<(), ProtocolError> {
        if self.phase != Phase::Open {
            if now < self.last_received + self.config.heartbeat_timeout {
                return Ok(());
            }
            self.phase = Phase::Broken;
            return Err(ProtocolError::HandshakeTimeout(self.config.heartbeat_timeout));
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

    /// Decodes the next frame from `buf` and returns what it means for the driver, or `None`
    /// when `buf` holds no whole frame that needs attention. Call until `None`.
    ///
    /// # Errors
    /// On a protocol violation; a GOAWAY explaining it has been queued.
    pub fn recv(&mut self, buf: &mut BytesMut, now: Instant) -> Result<Option<Event<T>>, ProtocolError> {
        if self.phase == Phase::Broken {
            return Ok(None);
        }
        match self.recv_inner(buf, now) {
            Err(e) => {
                self.phase = Phase::Broken;
                // Say why, even after a graceful GOAWAY: this one ends the connection.
                self.queue_goaway(Code::InvalidArgument, &e.to_string());
                Err(e)
            }
            ok => ok,
        }
    }

    fn recv_inner(&mut self, buf: &mut BytesMut, now: Instant) -> Result<Option<Event<T>>, ProtocolError> {
        loop {
            if self.phase == Phase::Preface {
                if !frame::decode_preface(buf)? {
                    return Ok(None);
                }
                // Not a sign of life that extends the handshake: the preface and the HELLO must
                // both arrive within the timeout of connecting (PROTOCOL.md §12).
                self.phase = Phase::Hello;
            }
            let before = buf.len();
            let decoded = self.decoder.decode(buf)?;
            // Any whole frame shows the peer is alive (PROTOCOL.md §12), also one of a kind this
            // version skips; but while the handshake's clock runs, only the HELLO stops it.
            if buf.len() < before && (self.phase == Phase::Open || decoded.is_some()) {
                self.last_received = now;
                self.ping = None;
            }
            let Some(frame) = decoded else {
                return Ok(None);
            };
            if self.phase == Phase::Hello {
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
                });
                self.phase = Phase::Open;
                return Ok(Some(Event::Ready));
            }
            if let Some(event) = self.on_frame(frame)? {
                return Ok(Some(event));
            }
        }
    }

    fn on_frame(&mut self, frame: Frame) -> Result<Option<Event<T>>, ProtocolError> {
        match frame {
            Frame::Hello(_) => Err(violation("HELLO sent twice")),
            Frame::Request(req) => {
                let id = req.id;
                if id == 0 || self.role.opens(id) {
                    return Err(violation(format!("request id {id} does not have the parity of ids the peer opens")));
                }
                if self.inbound.contains_key(&id) {
                    return Err(violation(format!("request id {id} is already in progress")));
                }
                self.highest_received = self.highest_received.max(id);
                if self.goaway_sent {
                    if !req.is_oneway() {
                        let refused =
                            Err(Status::unavailable("the server is shutting down; the call was not processed")
                                .mark_unprocessed());
                        self.encode_response(id, &refused);
                    }
                    return Ok(None);
                }
                self.inbound.insert(id, req.is_oneway());
                Ok(Some(Event::Request(req)))
            }
            Frame::Response(resp) => {
                let id = resp.id;
                if !self.role.opens(id) || id > self.highest_sent {
                    return Err(violation(format!("response for id {id}, which this side never opened")));
                }
                Ok(self.pending.remove(&id).map(|token| Event::Response { token, result: resp.into_result() }))
            }
            Frame::Cancel { id } => Ok(self.inbound.remove(&id).map(|_| Event::Cancel { id })),
            Frame::Ping { nonce } => {
                frame::encode_pong(&mut self.out, nonce);
                Ok(None)
            }
            Frame::Pong { .. } => Ok(None),
            Frame::GoAway(goaway) => {
                self.goaway_received = Some(goaway.last_id);
                Ok(Some(Event::GoAway(goaway)))
            }
        }
    }
}

fn violation(message: impl Into<String>) -> ProtocolError {
    ProtocolError::Violation(message.into())
}

impl<T> fmt::Debug for Mux<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mux")
            .field("role", &self.role)
            .field("phase", &self.phase)
            .field("peer", &self.peer.as_ref().map(|p| &p.name))
            .field("pending", &self.pending.len())
            .field("inbound", &self.inbound.len())
            .field("goaway_sent", &self.goaway_sent)
            .field("goaway_received", &self.goaway_received)
            .finish()
    }
}
