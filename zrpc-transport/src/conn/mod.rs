//! Running a [`Mux`] over a [`Stream`]: the one task that owns a connection, in both directions.
//!
//! Every connection carries calls both ways: each end calls through [`Handle`]s (see
//! [`calling`]) and answers the other's calls with a service (see [`dispatch`]). This module is
//! the driver between them and the socket; the per-call state of both directions is the mux's.
//!
//! Each connection is driven by a single task that polls, in one loop: commands from local
//! callers, answers from local handlers, bytes from the socket, the heartbeat timer, the
//! shutdown signal, and writes. Everything produced in one turn of the loop lands in the mux's
//! output buffer before one write, so under load one syscall carries many frames (write
//! coalescing) with no extra buffering layer, and no lock is shared between reading and writing.
//! Under load the task also steps aside, so that both ends keep working: once to let callers
//! that are about to call queue their calls for the same write, and after handing answers from
//! a full read to their callers, so that their next calls go out before the rest is read.
//!
//! Flow control and every bound on what a peer can make the connection hold are the mux's (see
//! [`crate::mux`]): the driver reads only while [`Mux::wants_read`], starts the peer's requests
//! only as [`Mux::next_request`] hands them over, and writes what [`Mux::transmit`] gives it.
//! Requests also wait while the service is not ready (a limit layer) and, on a server, for a unit
//! of the server-wide [`Budget`] when a handler has to wait (see [`crate::budget`]).
//!
//! The heartbeat's timer is re-armed whenever the mux's next deadline moves earlier than the one
//! armed (the handshake done, a PONG, output that blocks), and lazily, when it fires, when the
//! deadline moved later, so that frames arriving cost no timer work.

mod calling;
mod dispatch;
mod kept;
mod reply;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::{Instant, Sleep};
use tower::Service;
use zrpc_core::observe::{self, Side};
use zrpc_core::{Request, Response, Router, Status};

use self::calling::{Answer, CLOSED, Command, DRAINING, READY, Reply};
pub(crate) use self::calling::{CallFuture, DefaultTimeout, Handle, Shared};
use self::dispatch::Dispatch;
use crate::auth::SharedAuthenticator;
use crate::budget::Budget;
use crate::channel::DEFAULT_TIMEOUT;
use crate::compression::Settings;
use crate::frame;
use crate::mux::{Event, Mux, MuxConfig, ProtocolError, Role};
use crate::stream::Stream;

/// Most commands or completions handled in one turn, so no source starves the others.
const BATCH: usize = 256;
/// Read in chunks of at least this many bytes...
const READ_CHUNK: usize = 8 * 1024;
/// ...and, while each read fills the room it was given, of up to this many (see `poll_read`).
const MAX_READ_CHUNK: usize = 64 * 1024;
/// How long a closing connection may spend writing its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The connection's state machine: its calls carry the callers' reply channels, the peer's calls
/// the abort handles of the handler tasks that run them.
pub(super) type ConnectionMux = Mux<Reply, AbortHandle>;

/// The task that owns a connection; `S` answers the peer's calls.
pub(crate) struct Connection<S: Service<Request>> {
    io: Stream,
    mux: ConnectionMux,
    rbuf: BytesMut,
    /// The most `rbuf` could hold at once, and how many times it was given back, for
    /// [`ConnectionStats`](crate::mux::ConnectionStats).
    peak_read_buffer: usize,
    reads_trimmed: u64,
    read_closed: bool,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_closed: bool,
    /// Drain and close once no handle is left (client connections; see `poll_commands`).
    close_when_unused: bool,
    /// The peer's calls: the service and the handlers running.
    dispatch: Dispatch<S>,
    /// The room to give the next read: grows while reads fill it, shrinks when they do not.
    read_chunk: usize,
    /// The last write found the socket full: the peer is not taking our output.
    write_blocked: bool,
    /// Requests were left waiting so that the output goes first (see
    /// [`Dispatch::start_requests`]).
    deferred: bool,
    /// Whether this connection already stepped aside once to gather calls for the next write.
    gathered: bool,
    /// The last read filled the room it was given: more is likely waiting in the socket.
    read_full: bool,
    /// Answers were handed to local callers since this connection last stepped aside for them.
    answered: bool,
    /// The sources found waiting in this poll of the task (see [`Registered`]).
    registered: Registered,
    timer: Pin<Box<Sleep>>,
    /// The deadline `timer` is armed for.
    timer_at: Instant,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    shared: Arc<Shared>,
    /// Which side opened it, for the connection metrics.
    side: Side,
}

/// The outside sources a poll of the connection's task found waiting: each has registered the
/// task's waker, so it wakes the task when it has something, and polling it again before the
/// task returns would find nothing new and register the waker once more. A turn that made
/// progress loops to poll everything again; these are skipped in the loop, until the next poll
/// of the task. At one call per wake-up that was about 1,700 instructions of the command queue
/// and 450 of the timer per turn (`callpath --callgrind --callers 1`). What the connection's
/// own progress changes (flow control, handlers, output) is polled on every loop.
#[derive(Debug, Default)]
struct Registered {
    commands: bool,
    socket: bool,
    timer: bool,
    shutdown: bool,
}

impl<S: Service<Request>> Drop for Connection<S> {
    /// A connection task can be aborted (the server's drain deadline) without reaching
    /// `finish`: its handlers must not outlive it, its budget units must go back, and its
    /// handles must learn it is gone.
    fn drop(&mut self) {
        observe::connection_closed(self.side);
        self.dispatch.abort_all(&mut self.mux);
        if self.shared.state() != CLOSED {
            let _ = self.shared.closed_because.set(Status::unavailable("the connection was shut down"));
            self.shared.set_state(CLOSED);
        }
    }
}

impl<S> Connection<S>
where
    S: Service<Request, Response = Response, Error = Status> + Send + 'static,
    S::Future: Send + Unpin + 'static,
{
    /// A connection over `io` answering the peer's calls with `service`, and a handle to make
    /// calls through it. `names` lets known method names be reused instead of allocated;
    /// `budget`, if any, is shared with the server's other connections.
    pub(crate) fn new(
        io: Stream,
        role: Role,
        config: MuxConfig,
        service: S,
        names: Router,
        budget: Option<Budget>,
    ) -> (Connection<S>, Handle) {
        let now = Instant::now();
        let side = if role == Role::Connector { Side::Client } else { Side::Server };
        observe::connection_opened(side);
        let local_name: Arc<str> = config.name.as_str().into();
        let compression = Settings { algorithm: config.compression, threshold: config.compression_threshold };
        let max_frame = config.max_frame;
        let mux = Mux::new(role, config, now);
        let timer_at = mux.next_timeout();
        let timer = Box::pin(tokio::time::sleep_until(timer_at));
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(mux.call_ids(), compression, max_frame));
        let handle = Handle::new(commands_tx, shared.clone());
        let peer = handle.peer(DefaultTimeout { timeout: Some(DEFAULT_TIMEOUT), origin: "the connection's default" });
        let conn = Connection {
            io,
            mux,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            peak_read_buffer: READ_CHUNK,
            reads_trimmed: 0,
            read_chunk: READ_CHUNK,
            read_closed: false,
            commands,
            commands_closed: false,
            close_when_unused: role == Role::Connector,
            dispatch: Dispatch::new(service, names, local_name, peer, budget, compression),
            write_blocked: false,
            deferred: false,
            gathered: false,
            read_full: false,
            answered: false,
            registered: Registered::default(),
            timer,
            timer_at,
            shutdown: None,
            shared,
            side,
        };
        (conn, handle)
    }

    /// Hands `peer` (made from this connection's [`Handle::peer`], with the default deadline
    /// its owner chose) to handlers' [`Context::peer`](zrpc_core::Context::peer); by default
    /// their calls without a deadline get 10 s.
    pub(crate) fn with_peer(mut self, peer: zrpc_core::Peer) -> Connection<S> {
        self.dispatch.set_peer(peer);
        self
    }

    /// Labels the calls made through this connection with `endpoint` (a channel's address) in
    /// spans and metrics, rather than the peer's name.
    pub(crate) fn with_endpoint(self, endpoint: Arc<str>) -> Connection<S> {
        let _ = self.shared.endpoint.set(endpoint);
        self
    }

    /// Checks the peer's credentials with `authenticator` when its HELLO arrives, and every call
    /// it makes (see [`crate::auth`]); `credentials` holds what is known before the HELLO.
    pub(crate) fn with_authenticator(
        mut self,
        authenticator: SharedAuthenticator,
        credentials: crate::auth::Credentials,
    ) -> Connection<S> {
        self.dispatch.authenticate_with(authenticator, credentials);
        self
    }

    /// Records the peer's durable requests in `inbox` (the mux's config must announce it:
    /// [`MuxConfig::inbox`](crate::mux::MuxConfig::inbox)); see [`crate::durable`].
    #[cfg(feature = "durable")]
    pub(crate) fn with_inbox(mut self, inbox: crate::durable::Inbox) -> Connection<S> {
        self.dispatch.record_in(inbox);
        self
    }

    /// On `signal`, send GOAWAY, finish the calls in progress, then close.
    pub(crate) fn with_shutdown(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Connection<S> {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// Runs the connection to its end.
    ///
    /// The task's future holds the connection once while it lives (an `async move` block, not
    /// an `async fn`, which would keep its argument beside the moved value), and `finish` runs
    /// boxed, so that its state (the connection again, and the last write's) is allocated only
    /// when the connection ends: 3.5 KiB less per idle connection.
    #[allow(clippy::manual_async_fn, reason = "an async fn would hold the connection twice")]
    pub(crate) fn run(mut self) -> impl Future<Output = ()> + Send + 'static {
        async move {
            let result = std::future::poll_fn(|cx| self.poll_turns(cx)).await;
            Box::pin(self.finish(result)).await;
        }
    }

    fn poll_turns(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        let result = self.poll_turns_inner(cx);
        self.publish();
        result
    }

    fn publish(&self) {
        let mut stats = self.mux.stats();
        stats.waiting_for_budget = self.dispatch.waits_for_budget();
        stats.read_buffer = self.rbuf.capacity();
        stats.peak_read_buffer = self.peak_read_buffer;
        stats.buffers_trimmed += self.reads_trimmed;
        self.shared.publish(stats);
    }

    fn poll_turns_inner(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        self.registered = Registered::default();
        loop {
            let mut progress = self.poll_shutdown_signal(cx);
            // Other calls in flight mean other callers are active: tokio runs a task woken by
            // another right after it, so the caller that woke us is done but callers behind it
            // have not queued their calls yet. Step aside once so they can, and send them all
            // in one write rather than one each. A lone caller is written at once. (Stepping
            // aside as `yield_now` does, woken only once the worker has nothing else to run,
            // cost an `epoll_wait` a time and made calls slower in every round:
            // benches/results/step-aside-deferred-6c54849-amd.)
            if self.poll_commands(cx) && !self.gathered && self.mux.pending_len() > 1 {
                self.gathered = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            progress |= self.dispatch.poll_completions(&mut self.mux, cx);
            progress |= self.poll_read(cx)?;
            progress |= self.poll_timer(cx)?;
            progress |= self.handle_events();
            progress |= self.start_requests(cx);
            progress |= self.poll_write(cx)?;
            progress |= self.handle_events();
            // Answers just woke their callers, queued behind this task on its worker, and more
            // are waiting in the socket. Step aside before reading them, so that these callers
            // run and queue their next calls, which the next turn writes while the peer still
            // has work. Reading on would wake every caller of the whole batch first, and their
            // next calls would leave together after all of them ran, the peer idle meanwhile:
            // at 1,000 callers one write of 170–650 calls, then nothing.
            if self.answered && self.read_full {
                self.answered = false;
                self.read_full = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }

            if self.read_closed {
                return Poll::Ready(if self.mux.is_drained() {
                    Ok(())
                } else {
                    Err(Status::unavailable(format!("{} closed the connection", self.shared.peer_name())))
                });
            }
            let idle = self.mux.queued_output() == 0;
            if idle && self.mux.is_drained() {
                return Poll::Ready(Ok(()));
            }
            if !progress {
                self.arm_timer(cx);
                return Poll::Pending;
            }
        }
    }

    fn poll_shutdown_signal(&mut self, cx: &mut TaskContext<'_>) -> bool {
        let Some(signal) = &mut self.shutdown else { return false };
        if self.registered.shutdown {
            return false;
        }
        if signal.as_mut().poll(cx).is_pending() {
            self.registered.shutdown = true;
            return false;
        }
        self.shutdown = None;
        self.mux.go_away(zrpc_core::Code::Unavailable, "the server is shutting down");
        // No new calls go out either: the mux refuses them, and peers say so.
        self.shared.set_state(DRAINING);
        true
    }

    /// Hands local callers' calls and cancels to the mux, which sends them or keeps them in
    /// order until flow control lets them go.
    fn poll_commands(&mut self, cx: &mut TaskContext<'_>) -> bool {
        if self.commands_closed || self.registered.commands {
            return false;
        }
        let mut progress = false;
        let mut now = None;
        for _ in 0..BATCH {
            match self.commands.poll_recv(cx) {
                Poll::Ready(Some(Command::Call { id, request, compressed, reply })) => {
                    progress = true;
                    if reply.is_closed() {
                        continue; // the caller gave up before the request was sent
                    }
                    // One reading of the clock for the batch: the time left each call carries.
                    let now = *now.get_or_insert_with(Instant::now);
                    let sent = if compressed {
                        self.mux.send_compressed_request_at(id, request, reply, now)
                    } else {
                        self.mux.send_request_at(id, request, reply, now)
                    };
                    if let Err((status, reply)) = sent {
                        let _ = reply.send(Err(status).into());
                    }
                }
                Poll::Ready(Some(Command::Cancel { id })) => {
                    progress = true;
                    self.mux.cancel(id);
                }
                Poll::Ready(None) => {
                    // Nobody can call through this connection any more. A client's connection
                    // then has no reason to live: it drains like a server shutting down (GOAWAY,
                    // so the peer starts no new calls; those in progress either way finish) and
                    // closes once nothing is in flight.
                    self.commands_closed = true;
                    if self.close_when_unused {
                        self.mux.go_away(zrpc_core::Code::Unavailable, "the client closed its channel");
                        self.shared.set_state(DRAINING);
                    }
                    return true;
                }
                Poll::Pending => {
                    self.registered.commands = true;
                    break;
                }
            }
        }
        progress
    }

    /// Reads what the peer sent and hands it to the mux, while the mux wants to read.
    fn poll_read(&mut self, cx: &mut TaskContext<'_>) -> Result<bool, Status> {
        if self.read_closed || !self.mux.wants_read() {
            return Ok(false);
        }
        let mut progress = false;
        if !self.rbuf.is_empty() {
            // Frames left while the peer was over its limits, now that it no longer is.
            let before = self.rbuf.len();
            self.recv()?;
            progress = self.rbuf.len() < before;
            if !self.mux.wants_read() {
                return Ok(progress);
            }
        }
        if self.registered.socket {
            return Ok(progress);
        }
        let limit = self.make_room();
        let room = self.rbuf.capacity() - self.rbuf.len();
        let read = match limit {
            Some(limit) => {
                tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut (&mut self.rbuf).limit(limit))
            }
            None => tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf),
        };
        match read {
            Poll::Pending => {
                self.registered.socket = true;
                Ok(progress)
            }
            Poll::Ready(Ok(0)) => {
                // Whatever the peer sent before its end of stream is still handled.
                self.recv()?;
                self.read_closed = true;
                Ok(true)
            }
            Poll::Ready(Ok(n)) => {
                self.read_full = n >= room;
                self.read_chunk = if self.read_full {
                    (self.read_chunk * 2).min(MAX_READ_CHUNK)
                } else if n < room / 4 {
                    (self.read_chunk / 2).max(READ_CHUNK)
                } else {
                    self.read_chunk
                };
                self.recv()?;
                Ok(true)
            }
            Poll::Ready(Err(e)) => {
                Err(Status::unavailable(format!("reading from {} failed: {e}", self.shared.peer_name())))
            }
        }
    }

    /// Makes room in the read buffer for the next read, and returns how far it may read: no
    /// further than the end of a large frame, so that what follows goes to a buffer of its own
    /// and the frame's buffer never grows past its size.
    fn make_room(&mut self) -> Option<usize> {
        // Under load a read that fills its room means more is waiting: give the next one more,
        // so that one syscall brings many frames (requests read earlier may still share the
        // buffer, so it cannot simply be reused). An idle connection keeps a small buffer.
        let limit = self.mux.read_limit(&self.rbuf);
        match limit {
            Some(rest) => {
                let end = self.rbuf.len() + rest;
                frame::grow_within(&mut self.rbuf, rest.min(self.read_chunk), end);
            }
            None if self.rbuf.capacity() - self.rbuf.len() < self.read_chunk / 2 => self.rbuf.reserve(self.read_chunk),
            None => {}
        }
        self.note_read_buffer();
        limit
    }

    fn recv(&mut self) -> Result<(), Status> {
        let received = self.mux.recv(&mut self.rbuf, Instant::now());
        // The decoder makes room for the rest of a frame that has not all arrived.
        self.note_read_buffer();
        received.map_err(|e| self.protocol_error(&e))
    }

    /// Keeps the read buffer's largest size for
    /// [`ConnectionStats::peak_read_buffer`](crate::mux::ConnectionStats::peak_read_buffer): it grows
    /// only before a read and where the decoder makes room.
    fn note_read_buffer(&mut self) {
        self.peak_read_buffer = self.peak_read_buffer.max(self.rbuf.capacity());
    }

    /// Acts on what the mux reports: answers to local callers, cancelled handlers, the
    /// handshake and the peer's GOAWAY.
    fn handle_events(&mut self) -> bool {
        let mut progress = false;
        while let Some(event) = self.mux.poll_event() {
            progress = true;
            match event {
                Event::Ready => {
                    if let Some(peer) = self.mux.peer() {
                        let _ = self.shared.peer.set(peer.name.clone());
                        self.shared.set_accepted(peer.compressions);
                    }
                    if let Some(identity) = self.dispatch.admit(&mut self.mux) {
                        let _ = self.shared.identity.set(identity);
                    }
                    self.shared.set_state(if self.mux.is_draining() { DRAINING } else { READY });
                }
                Event::Response { token, result, compressed } => {
                    let _ = token.send(Answer { result, compressed });
                    self.answered = true;
                }
                Event::Cancel { id, handler } => self.dispatch.cancel(id, handler),
                Event::GoAway(goaway) => {
                    tracing::debug!(peer = self.shared.peer_name(), message = %goaway.message, "peer sent GOAWAY");
                    if let Some(refusal) = self.mux.refused_by_peer() {
                        let _ = self.shared.refused.set(refusal.clone());
                    }
                    self.shared.set_state(DRAINING);
                }
            }
        }
        progress
    }

    fn protocol_error(&self, e: &ProtocolError) -> Status {
        tracing::debug!(peer = self.shared.peer_name(), error = %e, "closing the connection");
        Status::unavailable(format!("connection to {} closed: {e}", self.shared.peer_name()))
    }

    /// Starts the peer's requests the mux lets start; the output goes first unless the peer
    /// is not taking it or has ended its stream (see [`Dispatch::start_requests`]).
    fn start_requests(&mut self, cx: &mut TaskContext<'_>) -> bool {
        let output_first = !self.write_blocked && !self.read_closed;
        let progress = self.dispatch.start_requests(&mut self.mux, output_first, cx);
        self.deferred = progress.deferred;
        progress.started
    }

    fn poll_timer(&mut self, cx: &mut TaskContext<'_>) -> Result<bool, Status> {
        if self.registered.timer {
            return Ok(false);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            self.registered.timer = true;
            return Ok(false);
        }
        if let Err(e) = self.mux.on_timeout(Instant::now()) {
            return Err(self.protocol_error(&e));
        }
        // A read buffer grown under load (up to 256 KiB) that nothing is left in is given back
        // when the mux's trim window ends, at most every 10 s, as the mux gives back its output
        // buffer: an idle connection would otherwise keep its last burst's buffer, every page
        // written, for good. The next read makes room again.
        if self.mux.trim_window_ended() && self.rbuf.is_empty() && self.rbuf.capacity() > READ_CHUNK {
            self.rbuf = BytesMut::new();
            self.reads_trimmed += 1;
        }
        self.timer_at = self.next_wake();
        self.timer.as_mut().reset(self.timer_at);
        Ok(true)
    }

    /// When the timer must fire next: the mux's next deadline, or the end of its trim window
    /// when nothing else would fire it by then and a buffer is left to give back (see
    /// [`Mux::trim_timeout`]).
    fn next_wake(&self) -> Instant {
        let next = self.mux.next_timeout();
        match self.mux.trim_timeout(self.rbuf.capacity() > READ_CHUNK) {
            Some(trim) => next.min(trim),
            None => next,
        }
    }

    /// Re-arms the connection's timer when its next deadline is earlier than the one armed. A
    /// later one is left for the timer to find when it fires, so that the frames that push the
    /// deadline back cost no timer work.
    fn arm_timer(&mut self, cx: &mut TaskContext<'_>) {
        let next = self.next_wake();
        if next < self.timer_at {
            self.timer_at = next;
            self.timer.as_mut().reset(next);
            // Register the waker with the re-armed timer.
            if self.timer.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
    }

    fn poll_write(&mut self, cx: &mut TaskContext<'_>) -> Result<bool, Status> {
        let mut progress = false;
        loop {
            let out = self.mux.transmit();
            if out.is_empty() {
                break;
            }
            match Pin::new(&mut self.io).poll_write(cx, out) {
                Poll::Ready(Ok(0)) => {
                    return Err(Status::unavailable(format!("{} stopped accepting bytes", self.shared.peer_name())));
                }
                Poll::Ready(Ok(n)) => {
                    self.mux.written(n);
                    self.write_blocked = false;
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    return Err(Status::unavailable(format!("writing to {} failed: {e}", self.shared.peer_name())));
                }
                Poll::Pending => {
                    self.write_blocked = true;
                    self.mux.write_blocked(Instant::now());
                    // Requests held back for this write are started now, in another turn.
                    progress |= self.deferred;
                    break;
                }
            }
        }
        if progress {
            self.gathered = false;
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx) {
                return Err(Status::unavailable(format!("writing to {} failed: {e}", self.shared.peer_name())));
            }
        }
        Ok(progress)
    }

    /// Handles what the peer sent before the connection failed, read or not yet read: answers
    /// complete their calls, CANCELs stop their handlers, and a GOAWAY tells which pending
    /// calls were never processed. A write can fail on a connection whose GOAWAY sits unread
    /// in the socket, and a turn that fails on the peer's bytes leaves the events of the valid
    /// frames before them unhandled.
    async fn read_last_words(&mut self) {
        if !self.read_closed && self.mux.wants_read() {
            // A zero timeout still polls the read once: only what has already arrived is taken.
            let limit = self.make_room().unwrap_or(usize::MAX);
            let mut room = (&mut self.rbuf).limit(limit);
            let read = tokio::io::AsyncReadExt::read_buf(&mut self.io, &mut room);
            let _ = tokio::time::timeout(Duration::ZERO, read).await;
        }
        let _ = self.mux.recv(&mut self.rbuf, Instant::now());
        self.note_read_buffer();
        while let Some(event) = self.mux.poll_event() {
            match event {
                Event::Response { token, result, compressed } => {
                    let _ = token.send(Answer { result, compressed });
                }
                // A dropped handle would not stop the handler, and its unit of the server's
                // budget would stay taken for good: one lost for every connection whose peer
                // cancelled a call and then broke the protocol in the same read (found by the
                // `conn` fuzz target).
                Event::Cancel { id, handler } => self.dispatch.cancel(id, handler),
                // The connection is over: nothing to set up, and the GOAWAY's refusal is the
                // mux's already.
                Event::Ready | Event::GoAway(_) => {}
            }
        }
    }

    /// Fails what is left, tells the peer why (best effort, briefly), and closes.
    async fn finish(mut self, result: Result<(), Status>) {
        // A peer that refused this side closed the connection for that reason, whatever else
        // went wrong after.
        let status = match self.mux.refused_by_peer() {
            Some(refusal) => refusal.clone(),
            None => result.err().unwrap_or_else(|| Status::unavailable("the connection closed")),
        };
        let _ = self.shared.closed_because.set(status.clone());
        self.shared.set_state(CLOSED);
        self.publish();
        self.read_last_words().await;
        for (reply, unprocessed) in self.mux.drain_pending() {
            let status = if unprocessed { status.clone().mark_unprocessed() } else { status.clone() };
            let _ = reply.send(Err(status).into());
        }
        self.commands.close();
        // Calls still queued never reached the peer.
        let unsent = status.clone().mark_unprocessed();
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Call { reply, .. } = command {
                let _ = reply.send(Err(unsent.clone()).into());
            }
        }
        self.dispatch.abort_all(&mut self.mux);
        let out = self.mux.take_output();
        let io = &mut self.io;
        let _ = tokio::time::timeout(CLOSE_GRACE, async move {
            io.write_all(&out).await?;
            io.shutdown().await
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use tokio::io::{AsyncRead, DuplexStream, ReadBuf};

    use super::*;
    use crate::peers::Peers;

    /// A pipe end that counts the writes made to it.
    #[derive(Debug)]
    struct CountingWrites {
        inner: DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for CountingWrites {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut TaskContext<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountingWrites {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let written = Pin::new(&mut self.inner).poll_write(cx, buf);
            if matches!(written, Poll::Ready(Ok(_))) {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            written
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    fn config(name: &str) -> MuxConfig {
        MuxConfig::named(name)
    }

    #[tokio::test]
    async fn calls_made_together_leave_in_one_write() {
        let (near, far) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let near = Stream::Other(Box::new(CountingWrites { inner: near, writes: writes.clone() }));
        let (client, handle) = Connection::new(near, Role::Connector, config("c"), Router::new(), Router::new(), None);
        let (server, _) =
            Connection::new(Stream::Memory(far), Role::Acceptor, config("s"), Router::new(), Router::new(), None);
        tokio::spawn(client.run());
        tokio::spawn(server.run());
        handle.ready().await.expect("handshake");
        let before = writes.load(Ordering::Relaxed);

        // On this single-threaded runtime all 100 callers queue their request before the
        // connection task runs again, so it takes them all in one turn.
        let calls: Vec<_> =
            (0..100).map(|_| tokio::spawn(handle.clone().call(Request::new("Nobody.home", Bytes::new())))).collect();
        for call in calls {
            let status = call.await.expect("task").expect_err("no such service");
            assert_eq!(status.code(), zrpc_core::Code::NotFound);
        }
        let request_writes = writes.load(Ordering::Relaxed) - before;
        assert_eq!(request_writes, 1, "100 requests, {request_writes} writes");
    }

    /// How many writes a server's connection makes to answer `calls` calls queued at once, each
    /// with `payload` bytes, to a method it lacks: `NotFound`, each naming the long method asked
    /// for.
    async fn writes_to_answer(calls: usize, payload: usize) -> usize {
        let (near, far) = tokio::io::duplex(4 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let far = Stream::Other(Box::new(CountingWrites { inner: far, writes: writes.clone() }));
        let (client, handle) =
            Connection::new(Stream::Memory(near), Role::Connector, config("c"), Router::new(), Router::new(), None);
        let (server, _) = Connection::new(far, Role::Acceptor, config("s"), Router::new(), Router::new(), None);
        tokio::spawn(client.run());
        tokio::spawn(server.run());
        handle.ready().await.expect("handshake");
        let before = writes.load(Ordering::Relaxed);

        let method = "Nobody.home_with_a_long_name_that_makes_each_answer_larger";
        let calls: Vec<_> = (0..calls)
            .map(|_| tokio::spawn(handle.clone().call(Request::new(method, Bytes::from(vec![7; payload])))))
            .collect();
        for call in calls {
            let status = call.await.expect("task").expect_err("no such service");
            assert_eq!(status.code(), zrpc_core::Code::NotFound);
        }
        writes.load(Ordering::Relaxed) - before
    }

    #[tokio::test]
    async fn a_large_batch_of_calls_is_answered_in_pieces() {
        // The 60 requests leave in one write (see above) and arrive in one read; their answers
        // come to about 8 KiB, which used to leave in one write once all were handled.
        let answer_writes = writes_to_answer(60, 0).await;
        assert!(answer_writes >= 2, "60 answers left in {answer_writes} write: only after the whole batch was handled");
    }

    #[tokio::test]
    async fn a_deeper_backlog_is_answered_in_larger_pieces() {
        // Requests of 400 bytes; the answers come to about 130 KiB: 34 writes in pieces of
        // 4 KiB, 12 in pieces of half the backlog.
        let answer_writes = writes_to_answer(1000, 400).await;
        assert!(answer_writes <= 16, "1,000 answers left in {answer_writes} writes");
    }

    /// A server's connection running `service` with `budget`, over a pipe: its task, and the
    /// pipe's other end for the test to play the client.
    fn serving_with_budget<S>(service: S, budget: &Budget) -> (tokio::task::JoinHandle<()>, DuplexStream)
    where
        S: Service<Request, Response = Response, Error = Status> + Send + 'static,
        S::Future: Send + Unpin + 'static,
    {
        let (near, far) = tokio::io::duplex(1 << 16);
        let (server, _) = Connection::new(
            Stream::Memory(near),
            Role::Acceptor,
            config("s"),
            service,
            Router::new(),
            Some(budget.clone()),
        );
        (tokio::spawn(server.run()), far)
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_read_with_bytes_that_break_the_protocol_still_stops_its_handler() {
        // Found by the `conn` fuzz target: the peer's CANCEL for a running handler, and bytes
        // that break the protocol, in one read. The connection ended on the error before it
        // acted on the CANCEL: the handler ran on, and its unit of the server's budget was
        // never returned, one unit lost for every such connection until no handler could start.
        let budget = Budget::new(1);
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let (dropped_tx, dropped) = tokio::sync::oneshot::channel::<()>();
        let mut signals = Some((started_tx, dropped_tx));
        let service = tower::service_fn(move |_: Request| {
            let signals = signals.take();
            Box::pin(async move {
                // The second sender goes with the handler's future.
                let _dropped = signals.map(|(started, dropped)| (started.send(()), dropped));
                std::future::pending::<Result<Response, Status>>().await
            })
        });
        let (server, mut far) = serving_with_budget(service, &budget);

        let mut peer: Mux<()> = Mux::new(Role::Connector, config("c"), Instant::now());
        let mut bytes = peer.take_output();
        let call = Request::new("Slow.call", Bytes::new());
        crate::frame::encode_request(&mut bytes, 1, &call, crate::frame::DEFAULT_MAX_FRAME).expect("encodes");
        far.write_all(&bytes).await.expect("the peer's HELLO and call");
        started.await.expect("the handler started");
        assert_eq!(budget.in_use(), 1, "the waiting handler holds the unit");

        // The CANCEL, then a request with an id of the server's parity: a protocol violation.
        let mut bytes = BytesMut::new();
        crate::frame::encode_cancel(&mut bytes, 1);
        crate::frame::encode_request(&mut bytes, 2, &call, crate::frame::DEFAULT_MAX_FRAME).expect("encodes");
        far.write_all(&bytes).await.expect("the CANCEL and the violation");
        tokio::time::timeout(Duration::from_secs(60), server).await.expect("the connection ended").expect("task");

        assert_eq!(budget.in_use(), 0, "the cancelled handler's unit came back");
        let gone = tokio::time::timeout(Duration::from_secs(60), dropped).await;
        assert!(matches!(gone, Ok(Err(_))), "the cancelled handler was stopped: {gone:?}");
    }

    /// What [`waits_for_a_turn`] saw of its third request (of the fourth, when the third was
    /// oneway).
    #[derive(Debug, PartialEq, Eq)]
    struct ThirdCall {
        /// Its answer: the time left as its handler saw it, in ms, or the refusal's code and
        /// whether it was marked unprocessed.
        answer: Result<u64, (u8, bool)>,
        /// How often its handler ran.
        handled: usize,
    }

    /// The third call of [`waits_for_a_turn`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Third {
        /// Two-way, its payload plain.
        Plain,
        /// Oneway: no answer comes.
        Oneway,
        /// Two-way, flagged compressed with a payload no algorithm can decompress.
        Garbled,
    }

    /// A server connection with a budget of one running handler: two calls that wait hold the
    /// unit and the connection's one parked place, so a third call, with a deadline of
    /// `timeout`, waits in the connection; the clock moves on by `waited`, the first call is
    /// let go, and the third starts in its turn. A oneway third call has no answer: a fourth,
    /// two-way and without a deadline, follows it, and its answer is what is returned, with the
    /// count of both handlers' runs.
    async fn waits_for_a_turn(timeout: Duration, waited: Duration, third: Third) -> ThirdCall {
        let oneway = third == Third::Oneway;
        let budget = Budget::new(1);
        let (go, release) = tokio::sync::watch::channel(false);
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
        let handled = Arc::new(AtomicUsize::new(0));
        let counted = handled.clone();
        let service = tower::service_fn(move |request: Request| {
            let (mut release, started, counted) = (release.clone(), started_tx.clone(), counted.clone());
            Box::pin(async move {
                if request.method().as_str() == "Time.left" {
                    counted.fetch_add(1, Ordering::Relaxed);
                    let left = request.ctx().remaining().map_or(u64::MAX, |left| left.as_millis() as u64);
                    return Ok(Response::new(Bytes::copy_from_slice(&left.to_le_bytes())));
                }
                let _ = started.send(());
                let _ = release.wait_for(|go| *go).await;
                Ok::<_, Status>(Response::default())
            })
        });
        let (_server, mut far) = serving_with_budget(service, &budget);

        let mut peer: Mux<()> = Mux::new(Role::Connector, config("c"), Instant::now());
        let mut bytes = peer.take_output();
        let wait = Request::new("Slow.wait", Bytes::new());
        let left = Request::from_parts("Time.left", zrpc_core::Context::new().with_timeout(timeout), Bytes::new())
            .with_oneway(oneway);
        let after = Request::new("Time.left", Bytes::new());
        let calls = [(1, &wait), (3, &wait), (5, &left), (7, &after)];
        for (id, request) in &calls[..if oneway { 4 } else { 3 }] {
            let max = crate::frame::DEFAULT_MAX_FRAME;
            if *id == 5 && third == Third::Garbled {
                // Compression id 1 (zstd), 1,024 bytes declared, and no zstd stream after it.
                let payload = Bytes::from_static(b"\x01\x00\x00\x04\x00not zstd at all");
                let garbled =
                    Request::from_parts("Time.left", zrpc_core::Context::new().with_timeout(timeout), payload);
                crate::frame::encode_compressed_request_at(&mut bytes, 5, &garbled, max, Instant::now())
                    .expect("encodes");
            } else {
                crate::frame::encode_request(&mut bytes, *id, request, max).expect("encodes");
            }
        }
        far.write_all(&bytes).await.expect("the peer's HELLO and its calls");
        started.recv().await.expect("the first call started");
        started.recv().await.expect("the second call started, and is parked for the unit");
        assert_eq!(budget.in_use(), 1, "the first call holds the unit");

        tokio::time::advance(waited).await;
        go.send_replace(true);
        let mut from_server = BytesMut::new();
        let (mut decoder, mut preface) = (crate::frame::Decoder::default(), false);
        loop {
            preface = preface || crate::frame::decode_preface(&mut from_server).expect("the server's preface");
            while let Some(frame) = preface.then(|| decoder.decode(&mut from_server).expect("valid frames")).flatten() {
                if let crate::frame::Frame::Response(response) = frame
                    && response.id == if oneway { 7 } else { 5 }
                {
                    let answer = match response.code {
                        0 => Ok(u64::from_le_bytes(response.payload[..].try_into().expect("8 bytes"))),
                        code => Err((code, response.flags & crate::frame::flags::UNPROCESSED != 0)),
                    };
                    return ThirdCall { answer, handled: handled.load(Ordering::Relaxed) };
                }
            }
            let read = tokio::io::AsyncReadExt::read_buf(&mut far, &mut from_server).await.expect("read");
            assert_ne!(read, 0, "the connection closed before answering the third call");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_waited_for_a_turn_has_its_deadline_counted_from_its_arrival() {
        // Until 2026-12-02 its deadline counted from when it started: 10 s left, after 4 s of
        // waiting, where its caller had 6.
        let third = waits_for_a_turn(Duration::from_secs(10), Duration::from_secs(4), Third::Plain).await;
        assert_eq!(third, ThirdCall { answer: Ok(6_000), handled: 1 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_whose_deadline_passed_while_it_waited_is_not_started() {
        let third = waits_for_a_turn(Duration::from_secs(2), Duration::from_secs(4), Third::Plain).await;
        let expired = (zrpc_core::Code::DeadlineExceeded.as_u8(), true);
        assert_eq!(third, ThirdCall { answer: Err(expired), handled: 0 }, "answered unprocessed, never handled");
    }

    #[tokio::test(start_paused = true)]
    async fn a_oneway_call_whose_deadline_passed_while_it_waited_is_dropped() {
        // The fourth call, without a deadline, is answered; only its handler ran.
        let fourth = waits_for_a_turn(Duration::from_secs(2), Duration::from_secs(4), Third::Oneway).await;
        assert_eq!(fourth, ThirdCall { answer: Ok(u64::MAX), handled: 1 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_compressed_call_whose_deadline_passed_while_it_waited_is_not_decompressed() {
        // Its deadline is checked first: until 2026-12-02 it was decompressed on its way to
        // becoming a request, and this one was answered as undecodable.
        let expired = waits_for_a_turn(Duration::from_secs(2), Duration::from_secs(4), Third::Garbled).await;
        let deadline_exceeded = (zrpc_core::Code::DeadlineExceeded.as_u8(), true);
        assert_eq!(expired, ThirdCall { answer: Err(deadline_exceeded), handled: 0 });
        // Within its deadline the same bytes go on to decompression and are refused there.
        let in_time = waits_for_a_turn(Duration::from_secs(10), Duration::from_secs(4), Third::Garbled).await;
        let undecodable = (zrpc_core::Code::InvalidArgument.as_u8(), true);
        assert_eq!(in_time, ThirdCall { answer: Err(undecodable), handled: 0 });
    }

    /// A client's connection, ready, over a pipe of `capacity` bytes whose other end is a bare
    /// mux the test drives: the handle to call through, that mux, and its end of the pipe.
    async fn client_and_raw_peer(capacity: usize) -> (Handle, Mux<()>, DuplexStream) {
        let (near, mut far) = tokio::io::duplex(capacity);
        let (client, handle) =
            Connection::new(Stream::Memory(near), Role::Connector, config("c"), Router::new(), Router::new(), None);
        tokio::spawn(client.run());
        let mut peer: Mux<()> = Mux::new(Role::Acceptor, config("s"), Instant::now());
        far.write_all(&peer.take_output()).await.expect("the peer's HELLO");
        handle.ready().await.expect("handshake");
        (handle, peer, far)
    }

    /// Reads what the client wrote into `from_client` until `peer` hands over a request; its id.
    async fn next_request_id(far: &mut DuplexStream, peer: &mut Mux<()>, from_client: &mut BytesMut) -> u64 {
        loop {
            tokio::io::AsyncReadExt::read_buf(far, from_client).await.expect("read");
            peer.recv(from_client, Instant::now()).expect("valid frames");
            if let Some((frame, _)) = peer.next_request() {
                return frame.id;
            }
        }
    }

    #[tokio::test]
    async fn callers_send_their_next_calls_before_a_large_batch_of_answers_is_all_read() {
        // 1,000 answers of about 130 KiB arrive at once. Each caller, answered, makes its next
        // call. Read and handed over all at once, the answers would wake every caller before
        // the connection wrote anything again: the first next call would leave after the last
        // answer was read, and the peer, with nothing to do, would wait for all of them.
        let (handle, mut peer, mut far) = client_and_raw_peer(4 << 20).await;

        let answered = Arc::new(AtomicUsize::new(0));
        for _ in 0..1000 {
            let (handle, answered) = (handle.clone(), answered.clone());
            tokio::spawn(async move {
                let _ = handle.clone().call(Request::new("First.call", Bytes::new())).await;
                answered.fetch_add(1, Ordering::Relaxed);
                let _ = handle.call(Request::new("Next.call", Bytes::new())).await;
            });
        }
        let mut from_client = BytesMut::new();
        let mut first = Vec::new();
        while first.len() < 1000 {
            tokio::io::AsyncReadExt::read_buf(&mut far, &mut from_client).await.expect("read");
            peer.recv(&mut from_client, Instant::now()).expect("valid frames");
            while let Some((frame, _)) = peer.next_request() {
                first.push(frame.id);
            }
        }
        for id in first {
            peer.finish(id, &Ok(Response::new(Bytes::from(vec![7; 100]))));
        }
        far.write_all(&peer.take_output()).await.expect("the answers");

        let answered_then = loop {
            tokio::io::AsyncReadExt::read_buf(&mut far, &mut from_client).await.expect("read");
            peer.recv(&mut from_client, Instant::now()).expect("valid frames");
            if peer.next_request().is_some() {
                break answered.load(Ordering::Relaxed);
            }
        };
        assert!(answered_then < 1000, "the first next call left after all {answered_then} answers were read");
    }

    #[tokio::test]
    async fn an_answer_read_with_bytes_that_break_the_protocol_reaches_its_caller() {
        // The answer was a valid frame, read before the bytes that end the connection.
        let (handle, mut peer, mut far) = client_and_raw_peer(64 * 1024).await;
        let call = tokio::spawn(handle.call(Request::new("Some.call", Bytes::new())));
        let id = next_request_id(&mut far, &mut peer, &mut BytesMut::new()).await;
        peer.finish(id, &Ok(Response::new(Bytes::from_static(b"done"))));
        let mut bytes = peer.take_output();
        // A request with an id of the client's parity: a protocol violation.
        crate::frame::encode_request(
            &mut bytes,
            1,
            &Request::new("X.y", Bytes::new()),
            crate::frame::DEFAULT_MAX_FRAME,
        )
        .expect("encodes");
        far.write_all(&bytes).await.expect("the answer and the violation");

        let answer = call.await.expect("task").expect("answered before the connection ended");
        assert_eq!(answer.payload(), &Bytes::from_static(b"done"));
        assert!(!handle.is_ready(), "the violation ended the connection");
    }

    #[tokio::test]
    async fn answers_reach_their_callers_while_the_peer_is_not_reading() {
        // A peer that stops reading (as a server does while its handlers are busy) while our
        // large call is stuck in our output: its answer to our small call must still reach the
        // caller. Handling what we read waits for our output only while the peer takes it.
        let (handle, mut peer, mut far) = client_and_raw_peer(64 * 1024).await;

        let small = tokio::spawn(handle.call(Request::new("Small.call", Bytes::new())));
        let small_id = next_request_id(&mut far, &mut peer, &mut BytesMut::new()).await;
        // From here the peer reads nothing: most of this call stays in the client's output.
        let big = handle.call(Request::new("Big.call", Bytes::from(vec![0; 1 << 20])));
        peer.finish(small_id, &Ok(Response::new(Bytes::from_static(b"done"))));
        far.write_all(&peer.take_output()).await.expect("the answer");

        let answer = tokio::time::timeout(Duration::from_secs(60), small).await;
        let answer = answer.expect("the answer reached its caller").expect("task").expect("answered");
        assert_eq!(answer.payload(), &Bytes::from_static(b"done"));
        // Not from the connection's last words: a connection whose peer stops answering its
        // heartbeats is given up (after tens of seconds), and its unread answers delivered then.
        assert!(handle.is_ready(), "the answer came only once the connection was given up");
        drop(big);
    }

    /// A raw peer's preface and HELLO, without flow control, as a client that knows nothing of
    /// it would send.
    fn greeting() -> BytesMut {
        let mut out = BytesMut::new();
        crate::frame::encode_preface(&mut out);
        let hello = crate::frame::Hello {
            name: "raw".into(),
            max_frame: crate::frame::DEFAULT_MAX_FRAME,
            codecs: vec![0],
            compressions: Vec::new(),
            token: Bytes::new(),
            flow: None,
            inbox: false,
            inbox_batches: false,
        };
        crate::frame::encode_hello(&mut out, &hello).expect("encodes");
        out
    }

    /// A peer speaking raw frames over one end of a pipe, with a decoder for what it reads.
    struct RawPeer {
        io: DuplexStream,
        rbuf: BytesMut,
        decoder: crate::frame::Decoder,
    }

    impl RawPeer {
        /// Sends its preface and HELLO and reads ours.
        async fn handshake(io: DuplexStream) -> RawPeer {
            let mut peer = RawPeer { io, rbuf: BytesMut::new(), decoder: crate::frame::Decoder::default() };
            peer.io.write_all(&greeting()).await.expect("write");
            while !crate::frame::decode_preface(&mut peer.rbuf).expect("a preface") {
                peer.fill().await;
            }
            assert!(matches!(peer.next().await, Some(crate::frame::Frame::Hello(_))));
            peer
        }

        async fn fill(&mut self) -> usize {
            tokio::io::AsyncReadExt::read_buf(&mut self.io, &mut self.rbuf).await.expect("read")
        }

        /// The next frame, or `None` at the end of the stream.
        async fn next(&mut self) -> Option<crate::frame::Frame> {
            loop {
                if let Some(frame) = self.decoder.decode(&mut self.rbuf).expect("valid frames") {
                    return Some(frame);
                }
                if self.fill().await == 0 {
                    return None;
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_heartbeat_keeps_its_schedule_after_the_handshake_and_after_a_pong() {
        // docs/PROTOCOL.md §13 with the defaults: a PING 10 s after the last frame, whatever it
        // was, and the peer dead 20 s after an unanswered PING. The timer used to stay armed
        // for the handshake's deadline (20 s) when the handshake finished, and for the PING's
        // deadline when a PONG came, so that PINGs came 10 s late.
        let (near, far) = tokio::io::duplex(64 * 1024);
        let (server, _) =
            Connection::new(Stream::Memory(near), Role::Acceptor, config("s"), Router::new(), Router::new(), None);
        let task = tokio::spawn(server.run());
        let mut peer = RawPeer::handshake(far).await;
        let start = Instant::now();

        let Some(crate::frame::Frame::Ping { nonce }) = peer.next().await else { panic!("a PING") };
        assert_eq!(Instant::now() - start, Duration::from_secs(10), "the first PING, after the handshake");
        let mut pong = BytesMut::new();
        crate::frame::encode_pong(&mut pong, nonce);
        peer.io.write_all(&pong).await.expect("write");
        let answered = Instant::now();

        assert!(matches!(peer.next().await, Some(crate::frame::Frame::Ping { .. })));
        assert_eq!(Instant::now() - answered, Duration::from_secs(10), "the next PING, 10 s after the PONG");
        let pinged = Instant::now();
        // No answer this time: the connection is closed 20 s after the PING.
        assert!(peer.next().await.is_none(), "the connection closes");
        assert_eq!(Instant::now() - pinged, Duration::from_secs(20), "dead 20 s after the unanswered PING");
        task.await.expect("the connection task ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_reads_nothing_is_given_up_after_interval_and_timeout() {
        // A peer that pipelines calls and never reads their answers, yet keeps sending frames
        // (its PINGs): once its socket is full and it has taken no byte for 30 s, it is dropped.
        let (near, mut far) = tokio::io::duplex(4 * 1024);
        let (server, handle) =
            Connection::new(Stream::Memory(near), Role::Acceptor, config("s"), Router::new(), Router::new(), None);
        tokio::spawn(server.run());
        let mut out = greeting();
        let method = "Nobody.home_with_a_long_name_that_makes_each_answer_larger";
        for id in 0..200 {
            crate::frame::encode_request(&mut out, 2 * id + 1, &Request::new(method, Bytes::new()), u32::MAX)
                .expect("encodes");
        }
        far.write_all(&out).await.expect("write");
        let start = Instant::now();
        let mut ping = BytesMut::new();
        for second in 1..=40 {
            tokio::time::sleep_until(start + Duration::from_secs(second)).await;
            if handle.shared().state() == CLOSED {
                assert_eq!(second, 31, "given up 30 s after the output stopped moving");
                let reason = handle.closed_status().to_string();
                assert!(reason.contains("read none of our output for 30s"), "{reason}");
                return;
            }
            crate::frame::encode_ping(&mut ping, second);
            far.write_all(&ping.split()).await.expect("the server still reads");
        }
        panic!("a peer that reads nothing was kept for 40 s");
    }

    #[tokio::test]
    async fn a_connections_task_holds_the_connection_once() {
        // Every idle connection costs its task's future: it must hold the connection once, not
        // once per layer of futures around it (an `async fn` keeps its argument beside the
        // value it moved on; this was 9.4 KiB, 4.7 KiB of it the server's directory listing).
        let (near, _far) = tokio::io::duplex(64);
        let io = Stream::Memory(near);
        let (conn, handle) = Connection::new(io, Role::Acceptor, config("s"), Router::new(), Router::new(), None);
        let connection = std::mem::size_of_val(&conn);
        let peer = handle.peer(DefaultTimeout { timeout: None, origin: "the test's" });
        let task = crate::peers::listed_while(conn.run(), handle.shared().clone(), peer, Some(Peers::new()));
        let size = std::mem::size_of_val(&task);
        assert!(size < connection + 512, "the task's future is {size} bytes for a connection of {connection}");
    }
}
