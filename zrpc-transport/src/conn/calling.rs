//! Calling through a connection: the handles local callers hold, and the future of each call.
//!
//! A [`Handle`] is cheap to clone and talks to the connection's task over a channel: a call
//! becomes a [`Command::Call`] carrying the request and a [`reply`](super::reply) slot for its
//! answer; the task hands it to the mux, which owns it from then on (flow control, its
//! deadline, its answer). A
//! [`CallFuture`] dropped before its answer came sends [`Command::Cancel`], so that the call is
//! cancelled on the wire. A [`Peer`] calls the same way through a [`ConnectionLink`], which
//! does not keep the connection open. The handle also reads what the task publishes in [`Shared`]: whether
//! the connection is ready, the peer's name, why it closed, and its [`ConnectionStats`].
//!
//! Compression is the caller's work, not the connection task's (see [`crate::compression`]):
//! a request is compressed here before it becomes a command, when this side's settings or the
//! call's context choose an algorithm the peer announced, and a compressed answer is
//! decompressed when the [`CallFuture`] is polled, on the caller's task.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use zrpc_core::observe::{self, MetricsCache, Observed, Side};
use zrpc_core::peer::{Link, LinkCall, Peer, PeerCall};
use zrpc_core::{Method, Request, Response, Status};

use crate::compression::{self, Accepted, Settings};
use crate::mux::{CallIds, ConnectionStats};

pub(super) type Reply = super::reply::Sender;

/// A call's end as the connection task hands it to the caller.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(super) result: Result<Response, Status>,
    /// The payload (an error's details) is still compressed, for the caller to decompress.
    pub(super) compressed: bool,
}

impl From<Result<Response, Status>> for Answer {
    fn from(result: Result<Response, Status>) -> Answer {
        Answer { result, compressed: false }
    }
}

/// What local callers ask of the connection task.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "boxing the request would cost an allocation per call")]
pub(crate) enum Command {
    /// A call; with `compressed`, its payload is compressed, header included.
    Call {
        id: u64,
        request: Request,
        compressed: bool,
        reply: Reply,
    },
    Cancel {
        id: u64,
    },
}

pub(super) const CONNECTING: u8 = 0;
pub(super) const READY: u8 = 1;
pub(super) const DRAINING: u8 = 2;
pub(super) const CLOSED: u8 = 3;

/// State shared between the connection task and the handles that call through it.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The mux's sequence of call ids.
    ids: CallIds,
    /// How this side compresses its calls' requests.
    compression: Settings,
    /// The most a compressed answer may declare: this side's `max_frame`.
    max_frame: u32,
    /// The compressions the peer announced, as [`Accepted::bits`]; none until its HELLO.
    accepted: AtomicU8,
    state: AtomicU8,
    changed: Notify,
    pub(super) peer: OnceLock<Arc<str>>,
    pub(super) closed_because: OnceLock<Status>,
    /// Why the peer refused this side (its GOAWAY said `Unauthenticated`), if it did.
    pub(super) refused: OnceLock<Status>,
    /// Who the peer is, if this side's authenticator accepted it.
    pub(super) identity: OnceLock<zrpc_core::Identity>,
    /// The mux's [`ConnectionStats`] as of the end of the connection's last turn.
    stats: Mutex<ConnectionStats>,
    /// Woken when the stats cross a line worth waiting for: reading pauses or resumes, calls
    /// start or stop waiting (see [`Shared::publish`]); the server's, for its handle.
    observer: OnceLock<Arc<Notify>>,
    /// What this side's calls are labelled with: the address a channel connects to; else the
    /// peer's name, as known at the first call.
    pub(super) endpoint: OnceLock<Arc<str>>,
    /// The metric handles of the methods called through this connection.
    #[cfg(feature = "metrics")]
    metrics: Mutex<Option<MetricsCache>>,
}

impl Shared {
    pub(super) fn new(ids: CallIds, compression: Settings, max_frame: u32) -> Shared {
        Shared {
            ids,
            compression,
            max_frame,
            accepted: AtomicU8::new(0),
            state: AtomicU8::new(CONNECTING),
            changed: Notify::new(),
            peer: OnceLock::new(),
            closed_because: OnceLock::new(),
            refused: OnceLock::new(),
            identity: OnceLock::new(),
            stats: Mutex::new(ConnectionStats::default()),
            observer: OnceLock::new(),
            endpoint: OnceLock::new(),
            #[cfg(feature = "metrics")]
            metrics: Mutex::new(None),
        }
    }

    /// Starts observing a call this side sends (see [`zrpc_core::observe`]); `None` while
    /// nothing records calls.
    fn observe_call(&self, request: &mut Request) -> Option<Observed> {
        if !observe::enabled() {
            return None;
        }
        let endpoint = match self.endpoint.get() {
            Some(endpoint) => endpoint,
            None => self.peer_name(),
        };
        #[cfg(feature = "metrics")]
        {
            let mut cache = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
            let cache = cache.get_or_insert_with(|| MetricsCache::new(Side::Client, Some(endpoint.into())));
            Some(Observed::client(request, endpoint, cache))
        }
        #[cfg(not(feature = "metrics"))]
        Some(Observed::client(request, endpoint, &mut MetricsCache::new(Side::Client, None)))
    }

    /// Notes the compressions the peer announced in its HELLO.
    pub(super) fn set_accepted(&self, accepted: Accepted) {
        self.accepted.store(accepted.bits(), Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> ConnectionStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `stats`, waking watchers when a state they wait for changed.
    pub(super) fn publish(&self, stats: ConnectionStats) {
        let mut current = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let crossed = current.reading_paused != stats.reading_paused
            || current.waiting_for_budget != stats.waiting_for_budget
            || (current.calls_waiting == 0) != (stats.calls_waiting == 0)
            || (current.requests_waiting == 0) != (stats.requests_waiting == 0)
            // It grows a bounded number of times, doubling: a bound's test can wait for it.
            || current.peak_read_buffer != stats.peak_read_buffer
            // At most about once a heartbeat interval.
            || current.buffers_trimmed != stats.buffers_trimmed;
        *current = stats;
        drop(current);
        if crossed && let Some(observer) = self.observer.get() {
            observer.notify_waiters();
        }
    }

    /// Wakes `observer` whenever the stats cross a line worth waiting for.
    pub(crate) fn observe(&self, observer: Arc<Notify>) {
        let _ = self.observer.set(observer);
    }

    /// The name the peer is known by: its authenticated identity's when this side has an
    /// authenticator, else the name it announced; once the handshake is done.
    pub(crate) fn known_as(&self) -> Option<Arc<str>> {
        match self.identity.get() {
            Some(identity) => Some(identity.name().into()),
            None => self.peer_name_if_known(),
        }
    }

    /// The peer's announced name, once the handshake is done.
    pub(crate) fn peer_name_if_known(&self) -> Option<Arc<str>> {
        self.peer.get().cloned()
    }

    pub(super) fn set_state(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.changed.notify_waiters();
    }

    pub(super) fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    pub(super) fn peer_name(&self) -> &str {
        self.peer.get().map_or("the peer", |p| p)
    }

    /// Waits until the handshake is done: `true`, or `false` when the connection was closed
    /// or began draining first.
    pub(crate) async fn ready(&self) -> bool {
        self.wait_until(|state| state != CONNECTING).await;
        self.state() == READY
    }

    async fn wait_until(&self, done: impl Fn(u8) -> bool) {
        loop {
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            // Register before checking, so a change between the check and the wait is not missed.
            notified.as_mut().enable();
            if done(self.state()) {
                return;
            }
            notified.await;
        }
    }
}

/// A cheap, cloneable way to make calls over one connection.
///
/// One `Arc` around the connection's command sender and its shared state, so that a clone (one
/// for every call's future) is one reference count, not three: the sender's two and the
/// state's, on lines every caller's thread writes. The connection's commands close when the
/// last handle and the last call's future are gone, as they would with a sender each.
#[derive(Clone, Debug)]
pub(crate) struct Handle {
    calling: Arc<Calling>,
}

/// What a [`Handle`] shares with its clones.
#[derive(Debug)]
struct Calling {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

impl Handle {
    pub(super) fn new(commands: mpsc::UnboundedSender<Command>, shared: Arc<Shared>) -> Handle {
        Handle { calling: Arc::new(Calling { commands, shared }) }
    }

    /// The state shared with the connection task.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.calling.shared
    }

    /// What the connection holds, as of its last turn.
    pub(crate) fn stats(&self) -> ConnectionStats {
        self.calling.shared.stats()
    }

    /// Whether new calls may go through this connection.
    pub(crate) fn is_ready(&self) -> bool {
        self.calling.shared.state() == READY
    }

    /// The peer's announced name, once the handshake is done.
    pub(crate) fn peer_name(&self) -> Option<&str> {
        self.calling.shared.peer.get().map(|p| &**p)
    }

    /// Waits until the handshake is done (`Ok`) or the connection closed first (`Err`).
    pub(crate) async fn ready(&self) -> Result<(), Status> {
        if self.calling.shared.ready().await {
            return Ok(());
        }
        // Refused at once (a GOAWAY right behind the peer's HELLO): say so, not just "closed".
        Err(self.calling.shared.refused.get().cloned().unwrap_or_else(|| self.closed_status()))
    }

    /// Why the peer refused this connection (an authenticator said no), if it did.
    pub(crate) fn refused(&self) -> Option<&Status> {
        self.calling.shared.refused.get()
    }

    /// Waits until the connection can take no new calls: either end is draining, or it closed.
    pub(crate) async fn unusable(&self) {
        self.calling.shared.wait_until(|state| state >= DRAINING).await;
    }

    pub(super) fn closed_status(&self) -> Status {
        self.calling.shared.closed_because.get().cloned().unwrap_or_else(|| {
            Status::unavailable(format!("the connection to {} is closed", self.calling.shared.peer_name()))
        })
    }

    /// Sends `request` now and returns the future of its answer, which ends with the answer,
    /// the request's deadline (the connection's mux keeps it: one clock for all calls, not a
    /// timer each), or the connection's end. Dropping the future before the answer came cancels
    /// the call on the wire.
    pub(crate) fn call(&self, request: Request) -> CallFuture {
        self.clone().into_call(request)
    }

    /// [`call`](Handle::call), the future keeping this handle (its sender and state).
    fn into_call(self, mut request: Request) -> CallFuture {
        let Calling { commands, shared } = &*self.calling;
        let id = shared.ids.next();
        let method = request.method().clone();
        let observed = shared.observe_call(&mut request);
        let compressed = compress(shared, &mut request);
        let (reply, answer) = super::reply::channel();
        if commands.send(Command::Call { id, request, compressed, reply }).is_err() {
            let failed = Err(closed_status(shared, &method).mark_unprocessed());
            if let Some(observed) = observed {
                observed.finish(&failed);
            }
            return CallFuture { state: CallState::Failed(failed.err()) };
        }
        CallFuture {
            state: CallState::Waiting(Waiting {
                answer,
                cancel: CancelOnDrop { calling: self.calling, id, armed: true },
                method,
                observed,
            }),
        }
    }
}

/// The answer to one call made through a [`Handle`]: a plain struct rather than an `async`
/// block, so that a [`Channel`](crate::Channel)'s future can name it and need no box.
pub(crate) struct CallFuture {
    state: CallState,
}

enum CallState {
    Waiting(Waiting),
    /// The request never left: the connection was closed.
    Failed(Option<Status>),
}

struct Waiting {
    answer: super::reply::Receiver,
    /// Also the connection's state, for the answer's decompression and a closed connection.
    cancel: CancelOnDrop,
    method: Method,
    /// Finished with the answer; dropped with the future, it records a cancelled call. `None`
    /// while nothing records calls, and once finished.
    observed: Option<Observed>,
}

impl Future for CallFuture {
    type Output = Result<Response, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let call = match &mut self.get_mut().state {
            CallState::Waiting(call) => call,
            CallState::Failed(status) => {
                return Poll::Ready(Err(status.take().expect("a CallFuture is not polled after it completed")));
            }
        };
        let answer = std::task::ready!(Pin::new(&mut call.answer).poll(cx));
        call.cancel.armed = false;
        let answer = match answer {
            Ok(Answer { result, compressed: false }) => result,
            Ok(Answer { result, compressed: true }) => decompress(result, &call.cancel.calling.shared, &call.method),
            Err(_) => Err(closed_status(&call.cancel.calling.shared, &call.method)),
        };
        if let Some(observed) = call.observed.take() {
            observed.finish(&answer);
        }
        Poll::Ready(answer)
    }
}

/// Compresses `request`'s payload in place if this side's settings or the call's context
/// choose an algorithm the peer announced, the payload is at least the threshold and it
/// shrinks, and says whether it did; else leaves it, at the cost of a few comparisons.
#[inline]
fn compress(shared: &Shared, request: &mut Request) -> bool {
    let choice = request.ctx().compression();
    if choice.is_none() && shared.compression.algorithm.is_none() {
        return false;
    }
    let accepted = Accepted::from_bits(shared.accepted.load(Ordering::Relaxed));
    let Some(algorithm) = shared.compression.pick(choice, request.payload().len(), accepted) else {
        return false;
    };
    match compression::compress(algorithm, request.payload()) {
        Some(payload) => {
            *request.payload_mut() = payload;
            true
        }
        None => false,
    }
}

/// A compressed answer decompressed, or the call's failure saying why it could not be.
fn decompress(result: Result<Response, Status>, shared: &Shared, method: &Method) -> Result<Response, Status> {
    let failed = |e: compression::DecompressError| {
        let message = format!("the answer to {method} from {} could not be decompressed: {e}", shared.peer_name());
        Status::new(e.response_code(), message)
    };
    match result {
        Ok(mut response) => {
            *response.payload_mut() = compression::decompress(response.payload(), shared.max_frame).map_err(failed)?;
            Ok(response)
        }
        Err(status) => {
            let details = compression::decompress(status.details(), shared.max_frame).map_err(failed)?;
            Err(status.with_details(details))
        }
    }
}

fn closed_status(shared: &Shared, method: &Method) -> Status {
    let reason = shared.closed_because.get().map_or_else(|| "the connection closed".to_owned(), Status::to_string);
    Status::unavailable(format!("{method} to {} was not answered: {reason}", shared.peer_name()))
}

/// Sends CANCEL for a call whose future is dropped before its answer came.
struct CancelOnDrop {
    calling: Arc<Calling>,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.calling.commands.send(Command::Cancel { id: self.id });
        }
    }
}

/// The most boxes of calls through a [`Peer`] a thread keeps for its next ones (see
/// [`boxed`]), emptied: 120 bytes each on x86-64 (128 with the `metrics` feature, whose record
/// of a call is a word longer), 30–32 KiB a thread.
pub(crate) const FREE_CALLS_PER_THREAD: usize = 256;

thread_local! {
    /// Boxes of [`CallFuture`]s whose [`PeerCall`]s were dropped on this thread, all of them
    /// ended: [`CallState::Failed`] with nothing in it. The boxes are the point: they are
    /// handed out as they are.
    #[allow(clippy::vec_box, reason = "the allocations are what is kept")]
    static FREE_CALLS: RefCell<Vec<Box<CallFuture>>> = const { RefCell::new(Vec::new()) };
}

/// `call` in a box for a [`PeerCall`]: one this thread kept, if it has one. A `Peer` is a
/// type-erased link, so its calls' futures are boxed; a call back would otherwise allocate
/// once more than a call through a [`Channel`](crate::Channel), whose future is named.
fn boxed(call: CallFuture) -> Box<CallFuture> {
    match super::kept::take(&FREE_CALLS) {
        Some(mut kept) => {
            *kept = call;
            kept
        }
        None => Box::new(call),
    }
}

impl LinkCall for CallFuture {
    fn recycle(mut self: Box<Self>) {
        // Dropping the call's state here does what dropping the box would: cancels a call still
        // in flight, gives its answer's slot back, records a call given up.
        self.state = CallState::Failed(None);
        super::kept::keep(&FREE_CALLS, self, FREE_CALLS_PER_THREAD);
    }
}

/// A default deadline for calls that carry none, and whose default it is (for messages).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DefaultTimeout {
    pub(crate) timeout: Option<Duration>,
    pub(crate) origin: &'static str,
}

/// What a [`Peer`] calls through: the connection's handle, without keeping it open.
#[derive(Debug)]
struct ConnectionLink {
    calling: Weak<Calling>,
    shared: Arc<Shared>,
    default: DefaultTimeout,
}

impl ConnectionLink {
    fn closed(&self, request: &Request) -> Status {
        closed_status(&self.shared, request.method()).mark_unprocessed()
    }
}

impl Link for ConnectionLink {
    fn call(&self, mut request: Request) -> PeerCall {
        let Some(calling) = self.calling.upgrade() else {
            return PeerCall::ended(Err(self.closed(&request)));
        };
        if let Some(timeout) = self.default.timeout {
            request.ctx_mut().apply_default_timeout(timeout, self.default.origin);
        }
        PeerCall::linked(boxed(Handle { calling }.into_call(request)))
    }

    fn name(&self) -> Option<&str> {
        self.shared.peer.get().map(|name| &**name)
    }

    fn is_connected(&self) -> bool {
        self.shared.state() == READY && self.calling.strong_count() > 0
    }
}

impl Handle {
    /// The connection's other end as a [`Peer`], whose calls get `default` when they carry no
    /// deadline; it does not keep the connection open.
    pub(crate) fn peer(&self, default: DefaultTimeout) -> Peer {
        let shared = self.calling.shared.clone();
        Peer::new(ConnectionLink { calling: Arc::downgrade(&self.calling), shared, default })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that never left, as a closed connection's: no connection needed.
    fn failed(n: usize) -> CallFuture {
        CallFuture { state: CallState::Failed(Some(Status::unavailable(format!("call {n}")))) }
    }

    fn kept() -> usize {
        FREE_CALLS.with(|free| free.borrow().len())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_peer_calls_box_is_kept_for_the_next_call_and_starts_afresh() {
        FREE_CALLS.with(|free| free.borrow_mut().clear());
        let first = boxed(failed(1));
        let address: *const CallFuture = &*first;
        let status = PeerCall::linked(first).await.expect_err("failed");
        assert_eq!(status.message(), "call 1");
        assert_eq!(kept(), 1, "dropping the PeerCall gave its box back");
        let second = boxed(failed(2));
        assert!(std::ptr::eq(&*second, address), "the kept box is taken again");
        assert_eq!(kept(), 0);
        // It holds the new call, not the old one's end.
        let status = PeerCall::linked(second).await.expect_err("failed");
        assert_eq!(status.message(), "call 2");
    }

    #[test]
    fn a_thread_keeps_a_bounded_number_of_boxes() {
        let calls: Vec<_> = (0..FREE_CALLS_PER_THREAD + 10).map(|n| PeerCall::linked(boxed(failed(n)))).collect();
        drop(calls);
        assert_eq!(kept(), FREE_CALLS_PER_THREAD);
        let size = std::mem::size_of::<CallFuture>();
        let documented = if cfg!(feature = "metrics") { 128 } else { 120 };
        assert!(size <= documented, "FREE_CALLS_PER_THREAD's docs say {documented} bytes a box, not {size}");
    }
}
