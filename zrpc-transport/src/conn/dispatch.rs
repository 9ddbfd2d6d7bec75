//! Dispatching the peer's calls: how a request the mux hands over becomes a running handler,
//! and its answer goes back to the mux.
//!
//! A request becomes a [`Request`] (its codec checked, its method name interned, its deadline
//! counted from its arrival) and goes to the connection's service, which is polled once at once:
//! a handler that finishes without waiting is answered in the same turn, with no task, no
//! channel hop, no unit of the budget and no wake-up. One that waits moves to a task of its own
//! (so a slow handler never blocks the connection), which enforces the call's deadline and
//! turns a panic into `Internal`, and reports back over a channel. The task's abort handle is
//! kept by the mux with the rest of the call's state, and comes back with the call's end:
//! cancelling a call aborts its task, which drops the handler future.
//!
//! On a server, a handler that has to wait first needs a unit of the server-wide [`Budget`];
//! while it waits for one it is parked here, polled once and not again until granted, and no
//! other request of this connection starts (see [`crate::budget`]).
//!
//! A request's deadline counts from the moment the mux read it, not from when its turn came
//! (`docs/PROTOCOL.md` §12): one that waited behind a parked handler, or for a service that was
//! not ready, has that much less time, and one whose deadline passed meanwhile is answered
//! `DeadlineExceeded`, unprocessed (a oneway one is dropped), without its handler ever running.
//! Until 2026-12-02 the deadline counted from the start, so an overloaded server went on to run
//! calls whose callers had already given up on them.
//!
//! A compressed request is decompressed once it is to start, since the service takes it whole,
//! but after its deadline is checked, so that one that expired while it waited costs no
//! decompression; one that cannot be (over this side's `max_frame`, an id it did not announce,
//! corrupt) is answered at once with the reason, unprocessed. The answer is compressed with
//! the request's algorithm, or for an uncompressed request with this side's own, when it is
//! above the threshold and the peer announced it: in the handler's task when it has one, else
//! here (see [`crate::compression`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tower::Service;
use zrpc_core::observe::{self, InSpan, MetricsCache, Observed, Side};
use zrpc_core::{CodecId, Compression, Context, Identity, Method, Peer, Request, Response, Router, Status};

use super::{BATCH, ConnectionMux};
use crate::auth::{Credentials, SharedAuthenticator};
use crate::budget::{Budget, Slot};
use crate::compression::{self, Accepted, Settings};
use crate::frame::RequestFrame;
use crate::mux::Rounded;

/// The least output that makes a piece: the peer's requests are started while less than a
/// piece waits to be written (see [`Dispatch::start_requests`])...
const MIN_PIECE: usize = 4 * 1024;
/// ...and the most, however deep the peer's backlog.
const MAX_PIECE: usize = 64 * 1024;

/// How much output makes a piece, while the peer's requests in progress here come to
/// `inbound_bytes`: half as much, within [`MIN_PIECE`] and [`MAX_PIECE`] (see
/// [`Dispatch::start_requests`]).
fn piece(inbound_bytes: usize) -> usize {
    (inbound_bytes / 2).clamp(MIN_PIECE, MAX_PIECE)
}

/// The local side of the peer's calls on one connection: the service that answers them and the
/// handlers running in tasks of their own.
pub(super) struct Dispatch<S: Service<Request>> {
    service: S,
    names: Router,
    local_name: Arc<str>,
    /// The connection's other end, handed to each request's context to call it back.
    peer: Peer,
    /// Whether the peer may call, as the server's authenticator decided.
    admission: Admission,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// How this side compresses its answers to uncompressed requests.
    compression: Settings,
    /// The server-wide budget of running handlers, if any.
    budget: Option<Budget>,
    /// This connection's place in the budget's queue, while a handler waits for a unit.
    queued: Option<Arc<Slot>>,
    /// A handler that has to wait, polled once, kept here (not polled) until the budget grants
    /// it a unit; meanwhile no other request of this connection starts.
    parked: Option<Started<InSpan<S::Future>>>,
    /// The metric handles of the methods the peer called.
    metrics: MetricsCache,
    /// Where the peer's durable requests are recorded, on a side that has an inbox.
    #[cfg(feature = "durable")]
    inbox: Option<crate::durable::Inbox>,
    /// The durable requests of this turn, checked, with their ids and how many records each
    /// made (a batch makes one per message): queued on the inbox's writer together, as one
    /// command, when the turn's requests have all started
    /// ([`submit_records`](Dispatch::submit_records)). At most one request per request in
    /// progress, so bounded by the connection's `max_requests`, and a batch's records by
    /// [`MAX_DURABLE_BATCH`](crate::frame::MAX_DURABLE_BATCH) and its frame's bytes.
    #[cfg(feature = "durable")]
    records: (Vec<(u64, u32)>, Vec<crate::durable::Incoming>),
    /// The turns' records queued on the inbox's writer, with their ids, in the order they were
    /// queued, which is the order the writer answers them (see
    /// [`RecordAnswers`](crate::durable::RecordAnswers)): polled from the front with the
    /// handlers' answers, with no task, box or task node. Their records are requests in
    /// progress, so bounded by the connection's `max_requests`.
    #[cfg(feature = "durable")]
    recording: std::collections::VecDeque<(Vec<(u64, u32)>, crate::durable::RecordAnswers)>,
    /// The sender name of the last durable request recorded: the next, almost always from the
    /// same sender, shares it instead of validating and allocating it again. One name, at most
    /// the 255 bytes the protocol allows one.
    #[cfg(feature = "durable")]
    sender: Option<Arc<str>>,
}

/// A handler's answer from its task: the call, the result, and whether its payload is
/// compressed.
type Done = (u64, Result<Response, Status>, bool);

/// A handler that did not finish when first polled, with what its task needs.
struct Started<F> {
    id: u64,
    call: F,
    deadline: Option<Instant>,
    /// The time the caller allowed, for the message when it runs out.
    budget: Option<Duration>,
    method: Method,
    /// `None` while nothing records calls.
    observed: Option<Observed>,
    answer: AnswerCompression,
}

/// How the answer to one call is compressed: with which algorithm, from which size, for a peer
/// that decodes which.
#[derive(Clone, Copy, Debug)]
struct AnswerCompression {
    settings: Settings,
    accepted: Accepted,
}

impl AnswerCompression {
    /// Compresses `result`'s payload in place and says whether it did; an error, or a payload
    /// under the threshold or that does not shrink, stays as it is.
    fn apply(self, result: &mut Result<Response, Status>) -> bool {
        let Ok(response) = result else { return false };
        let compressed = self
            .settings
            .pick(None, response.payload().len(), self.accepted)
            .and_then(|algorithm| compression::compress(algorithm, response.payload()));
        match compressed {
            Some(payload) => {
                *response.payload_mut() = payload;
                true
            }
            None => false,
        }
    }

    /// Hands `result` to the mux as the answer to call `id`, compressed if it should be.
    #[inline]
    fn finish(self, mux: &mut ConnectionMux, id: u64, mut result: Result<Response, Status>) -> Option<AbortHandle> {
        if self.settings.algorithm.is_some() && self.apply(&mut result) {
            mux.finish_compressed(id, &result)
        } else {
            mux.finish(id, &result)
        }
    }
}

/// Whether the peer's calls may run, on a server with an authenticator (see [`crate::auth`]).
enum Admission {
    /// No authenticator: every call runs.
    Open,
    /// Waiting for the peer's HELLO, whose credentials decide.
    Pending { authenticator: SharedAuthenticator, credentials: Credentials },
    /// Accepted as `identity`; each call is authorized before it runs.
    Accepted { authenticator: SharedAuthenticator, identity: Identity },
    /// Refused: every call is answered with this, unprocessed, and the connection drains.
    Refused(Status),
}

/// What [`Dispatch::start_requests`] did.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Progress {
    /// A request started, was answered, or a parked handler was granted its unit.
    pub(super) started: bool,
    /// Requests were left waiting so that the output goes first.
    pub(super) deferred: bool,
}

impl<S> Dispatch<S>
where
    S: Service<Request, Response = Response, Error = Status> + Send + 'static,
    S::Future: Send + Unpin + 'static,
{
    /// Answers the calls of `peer` with `service`; `names` lets known method names be reused
    /// instead of allocated.
    pub(super) fn new(
        service: S,
        names: Router,
        local_name: Arc<str>,
        peer: Peer,
        budget: Option<Budget>,
        compression: Settings,
    ) -> Dispatch<S> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Dispatch {
            service,
            names,
            local_name,
            peer,
            admission: Admission::Open,
            done_tx,
            done_rx,
            compression,
            budget,
            queued: None,
            parked: None,
            metrics: MetricsCache::new(Side::Server, None),
            #[cfg(feature = "durable")]
            inbox: None,
            #[cfg(feature = "durable")]
            records: (Vec::new(), Vec::new()),
            #[cfg(feature = "durable")]
            recording: std::collections::VecDeque::new(),
            #[cfg(feature = "durable")]
            sender: None,
        }
    }

    /// Records the peer's durable requests in `inbox`.
    #[cfg(feature = "durable")]
    pub(super) fn record_in(&mut self, inbox: crate::durable::Inbox) {
        self.inbox = Some(inbox);
    }

    /// Has `authenticator` decide, when the peer's HELLO arrives, whether it may call (see
    /// [`crate::auth`]); `credentials` holds what is known before (address, certificate).
    pub(super) fn authenticate_with(&mut self, authenticator: SharedAuthenticator, credentials: Credentials) {
        self.admission = Admission::Pending { authenticator, credentials };
    }

    /// The peer's HELLO has arrived: its credentials are checked, if there is an authenticator,
    /// and the identity it accepted is returned. A refused peer gets a GOAWAY saying why, with
    /// the refusal's code.
    pub(super) fn admit(&mut self, mux: &mut ConnectionMux) -> Option<Identity> {
        let Admission::Pending { authenticator, credentials } = &self.admission else { return None };
        let hello = mux.peer()?;
        let credentials = Credentials { name: hello.name.clone(), token: hello.token.clone(), ..credentials.clone() };
        match authenticator.authenticate(&credentials) {
            Ok(identity) => {
                self.admission =
                    Admission::Accepted { authenticator: authenticator.clone(), identity: identity.clone() };
                Some(identity)
            }
            Err(status) => {
                tracing::debug!(peer = %credentials.name, remote = %credentials.remote, reason = %status, "refused a connection");
                mux.go_away(status.code(), status.message());
                self.admission = Admission::Refused(status.mark_unprocessed());
                None
            }
        }
    }

    /// Hands `peer` to the contexts of the requests started from now on.
    pub(super) fn set_peer(&mut self, peer: Peer) {
        self.peer = peer;
    }

    /// Whether a handler waits for a unit of the budget.
    pub(super) fn waits_for_budget(&self) -> bool {
        self.parked.is_some()
    }

    /// Hands the answers of handlers that ran in tasks of their own to the mux.
    pub(super) fn poll_completions(&mut self, mux: &mut ConnectionMux, cx: &mut TaskContext<'_>) -> bool {
        #[allow(unused_mut, reason = "only durable recordings add to it")]
        let mut progress = self.poll_answers(mux, cx);
        #[cfg(feature = "durable")]
        for _ in 0..BATCH {
            let Some((_, answer)) = self.recording.front_mut() else { break };
            let Poll::Ready(outcomes) = Pin::new(answer).poll(cx) else { break };
            let Some((ids, _)) = self.recording.pop_front() else { break };
            progress = true;
            let mut outcomes = outcomes.into_iter();
            for (id, count) in ids {
                mux.finish(id, &crate::durable::acknowledgement(outcomes.by_ref().take(count as usize)));
            }
        }
        progress
    }

    /// The answers of handlers in tasks of their own, up to a batch: whether any came.
    fn poll_answers(&mut self, mux: &mut ConnectionMux, cx: &mut TaskContext<'_>) -> bool {
        // Only this struct holds a sender and nothing was sent: no handler runs in a task, so
        // no answer can come, and no waker needs registering. A handler spawned later is polled
        // for in the turn that spawns it (starting one is progress: the turn goes round again).
        // Polling the empty channel cost about 400 instructions a turn, several turns a call
        // when calls come one at a time. Ordering: a task sends before it drops its sender, and
        // the count is read with `Acquire`, so a count of one shows any answer already sent.
        if self.done_tx.strong_count() == 1 && self.done_rx.is_empty() {
            return false;
        }
        let mut progress = false;
        for _ in 0..BATCH {
            // Never `None`: this struct holds a sender.
            let Poll::Ready(Some((id, result, compressed))) = self.done_rx.poll_recv(cx) else { break };
            progress = true;
            let handler = if compressed { mux.finish_compressed(id, &result) } else { mux.finish(id, &result) };
            // Its task's handle comes back with the call's end, and with it the unit of the
            // budget the task held. None when the call was cancelled meanwhile: it went then.
            if handler.is_some() {
                self.release_units(1);
            }
        }
        progress
    }

    /// The peer cancelled call `id`: its handler's task, if it has one, is aborted; a handler
    /// parked for the budget is dropped, and the connection leaves the budget's queue.
    pub(super) fn cancel(&mut self, id: u64, handler: Option<AbortHandle>) {
        if let Some(handler) = handler {
            handler.abort();
            self.release_units(1);
        } else if self.parked.as_ref().is_some_and(|parked| parked.id == id) {
            self.leave_budget();
        }
    }

    fn release_units(&self, n: usize) {
        if let Some(budget) = &self.budget {
            budget.release(n);
        }
    }

    /// Starts the peer's requests that the mux hands over, while the service is ready and no
    /// handler waits for the budget.
    ///
    /// With `output_first`, requests start only while less than a [`piece`] waits to be
    /// written: a large batch of the peer's calls is answered in pieces, each written before
    /// the next is handled, while the socket is still read every turn, so the peer starts on
    /// the first answers while the rest are handled, rather than waiting for all of them. A
    /// piece is half the bytes of the peer's requests in progress here, at least 4 KiB and at
    /// most 64 KiB: two pieces keep both ends busy, and a deeper backlog is answered in fewer,
    /// larger writes. Pieces of 4 KiB took 100 callers on one connection from a median of 358k
    /// to 460k calls/s (six alternating runs of each build; CPU per call 4.5 to 4.0 µs), but at
    /// 1,000 callers they made the peer wake up for every 12 answers: 0.084 writes a call,
    /// 0.105 context switches and 3.7–4.1 µs of CPU, against 0.021, 0.038 and 3.2 µs with
    /// pieces of half the backlog (AMD EPYC, 2026-11-30, `perf stat -a`; see
    /// docs/PERFORMANCE.md). The driver turns it off while the peer is not taking the output
    /// (waiting for the write would gain nothing) and after the peer's end of stream (the
    /// connection ends with this turn, and what the peer sent before is still handled).
    pub(super) fn start_requests(
        &mut self,
        mux: &mut ConnectionMux,
        output_first: bool,
        cx: &mut TaskContext<'_>,
    ) -> Progress {
        let mut progress = Progress::default();
        if self.parked.is_some() {
            if !self.resume_parked(mux, cx) {
                return progress;
            }
            progress.started = true;
        }
        // One reading of the clock for the requests started in this turn, against which their
        // deadlines are checked: each counts from the request's arrival (docs/PROTOCOL.md §12),
        // however long it waited for this turn.
        let mut now = None;
        while mux.has_request() && self.parked.is_none() {
            if output_first && mux.queued_output() >= piece(mux.inbound_bytes()) {
                progress.deferred = true;
                break;
            }
            let ready = match self.service.poll_ready(cx) {
                Poll::Pending => break,
                Poll::Ready(ready) => ready,
            };
            let Some((frame, arrived)) = mux.next_request() else { break };
            self.start_handler(mux, frame, arrived, ready, &mut now, cx);
            progress.started = true;
        }
        #[cfg(feature = "durable")]
        self.submit_records(mux);
        if self.parked.is_some() {
            // Queue for a unit now, so that the grant wakes this task.
            progress.started |= self.resume_parked(mux, cx);
        }
        progress
    }

    /// Queues the durable requests of this turn on the inbox's writer, as one command; if the
    /// writer cannot take it, they are all refused, unprocessed.
    #[cfg(feature = "durable")]
    fn submit_records(&mut self, mux: &mut ConnectionMux) {
        let (Some(inbox), false) = (&self.inbox, self.records.0.is_empty()) else { return };
        let (ids, records) = std::mem::take(&mut self.records);
        match inbox.submit_records(records) {
            Ok(answer) => self.recording.push_back((ids, answer)),
            Err(e) => {
                let refused = Err(Status::from(e));
                for (id, _) in ids {
                    mux.finish(id, &refused);
                }
            }
        }
    }

    /// Spawns the parked handler once the budget grants it a unit; `false` while it waits (in
    /// the budget's queue, which wakes this task).
    fn resume_parked(&mut self, mux: &mut ConnectionMux, cx: &mut TaskContext<'_>) -> bool {
        let Some(budget) = &self.budget else { return false };
        if budget.poll_acquire(&mut self.queued, cx).is_pending() {
            return false;
        }
        match self.parked.take() {
            Some(parked) => {
                self.spawn_handler(mux, parked);
                true
            }
            // Not reached: only a parked handler queues. Give the unit back.
            None => {
                budget.release(1);
                false
            }
        }
    }

    /// Starts a handler for the peer's call, which arrived at `arrived`, or answers at once when
    /// the service is not ready, the request cannot become a [`Request`], or its deadline passed
    /// while it waited to be started.
    fn start_handler(
        &mut self,
        mux: &mut ConnectionMux,
        frame: RequestFrame,
        arrived: Instant,
        ready: Result<(), Status>,
        now: &mut Option<Instant>,
        cx: &mut TaskContext<'_>,
    ) {
        let id = frame.id;
        #[cfg(feature = "durable")]
        if frame.durable.is_some() {
            self.record_durable(mux, frame, arrived, ready);
            return;
        }
        let budget = frame.timeout;
        let answer = self.answer_compression(mux, &frame);
        let limit = mux.max_frame();
        let request = ready.and_then(|()| self.to_request(frame, arrived));
        let (mut request, compressed) = match request {
            Ok(request) => request,
            Err(status) => {
                mux.finish(id, &Err(status));
                return;
            }
        };
        let observed = observe::enabled().then(|| Observed::server(&mut request, self.peer.name(), &mut self.metrics));
        let deadline = request.ctx().deadline();
        // Checked before the payload is decompressed: an overloaded server, where requests wait
        // past their deadlines, spends nothing on one whose caller has given up.
        let refused = if let Some(deadline) = deadline
            && deadline <= *now.get_or_insert_with(Instant::now)
        {
            // It waited for a turn (the server's budget, a layer not ready) until its caller's
            // time was up: the handler is not started at all.
            Err(self.expired(budget, request.method()))
        } else if compressed {
            self.decompress_payload(&mut request, limit).and_then(|()| self.admit_call(&mut request))
        } else {
            self.admit_call(&mut request)
        };
        if let Err(status) = refused {
            let refused = Err(status);
            if let Some(observed) = observed {
                observed.finish(&refused);
            }
            mux.finish(id, &refused);
            return;
        }
        let method = request.method().clone();
        let mut call = InSpan::new(self.service.call(request), observed.as_ref());
        // Poll once here: a handler that finishes without waiting is answered in this turn,
        // and its answer leaves in the same write as the others of this turn. One that waits
        // moves to a task of its own, once the budget has a unit for it.
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut call).poll(cx))) {
            Ok(Poll::Ready(result)) => Some(result),
            Err(_) => Some(Err(panicked(&method, &self.local_name))),
            Ok(Poll::Pending) => None,
        };
        if let Some(result) = outcome {
            if let Some(observed) = observed {
                observed.finish(&result);
            }
            answer.finish(mux, id, result);
            return;
        }
        let started = Started { id, call, deadline, budget, method, observed, answer };
        match &self.budget {
            Some(budget) if !budget.is_open() => self.parked = Some(started),
            Some(budget) => {
                budget.take();
                self.spawn_handler(mux, started);
            }
            None => self.spawn_handler(mux, started),
        }
    }

    /// Records a durable request in the inbox and acknowledges it, rather than running its
    /// handler (the inbox's dispatcher runs it; see [`crate::durable`], "The inbox").
    ///
    /// Its method, codec and the peer's right to call it are checked first, so that a message
    /// that could never run is refused unprocessed and stays with its sender. The record joins
    /// the turn's others, which are queued together in the order the connection's requests
    /// arrived: a stream's messages reach the inbox in order, and one recorded out of turn
    /// would be refused as a gap. The answer is polled with the handlers'
    /// ([`poll_completions`](Dispatch::poll_completions)); it needs no unit of the budget (it
    /// runs no handler) and a CANCEL does not drop it (recording is short, and a message
    /// recorded after all is a duplicate when it comes again). A batch makes a record of each
    /// of its messages ([`batch_records`](Dispatch::batch_records)) and is answered once, for
    /// all of them.
    #[cfg(feature = "durable")]
    fn record_durable(
        &mut self,
        mux: &mut ConnectionMux,
        mut frame: RequestFrame,
        arrived: Instant,
        ready: Result<(), Status>,
    ) {
        let id = frame.id;
        let (true, Some(fields)) = (self.inbox.is_some(), frame.durable.take()) else {
            let status = Status::unimplemented("this end records no durable calls").mark_unprocessed();
            mux.finish(id, &Err(status));
            return;
        };
        let sender = match &self.sender {
            Some(last) if last.as_bytes() == fields.sender => last.clone(),
            _ => self.sender.insert(Arc::from(fields.sender_str())).clone(),
        };
        let limit = mux.max_frame();
        if fields.count > 1 {
            match ready.and_then(|()| self.batch_records(&frame, &fields, sender, limit)) {
                Ok(records) => {
                    self.records.0.push((id, fields.count));
                    self.records.1.extend(records);
                }
                Err(status) => {
                    mux.finish(id, &Err(status));
                }
            }
            return;
        }
        let recorded = ready
            .and_then(|()| self.to_request(frame, arrived))
            .and_then(|(mut request, compressed)| {
                if compressed {
                    self.decompress_payload(&mut request, limit)?;
                }
                // `to_request` made the method static exactly when the router knows it.
                if request.method().as_static().is_none() {
                    return Err(self.no_method(request.method().as_str()));
                }
                self.admit_call(&mut request)?;
                crate::durable::stored_request(request).map_err(Status::mark_unprocessed)
            })
            .and_then(|message| {
                let outbox = crate::durable::OutboxId::from_u64(fields.outbox);
                crate::durable::Inbox::incoming(sender, outbox, fields.sequence, fields.acknowledged, message)
                    .map_err(Status::from)
            });
        match recorded {
            Ok(record) => {
                self.records.0.push((id, 1));
                self.records.1.push(record);
            }
            Err(status) => {
                mux.finish(id, &Err(status));
            }
        }
    }

    /// The records of a batch of durable messages (`docs/PROTOCOL.md` §19): each stored request
    /// of its payload, checked as a single durable request's method, codec and right to call
    /// are, and copied out of the connection's buffer (the inbox may keep it in memory a
    /// while). Any message that fails refuses the whole batch, unprocessed: the stream's
    /// messages are recorded in order, so none after it could be anyway.
    #[cfg(feature = "durable")]
    fn batch_records(
        &self,
        frame: &RequestFrame,
        fields: &crate::frame::DurableFields,
        sender: Arc<str>,
        limit: u32,
    ) -> Result<Vec<crate::durable::Incoming>, Status> {
        let payload = if frame.flags & crate::frame::flags::COMPRESSED != 0 {
            self.decompress(&frame.payload, limit, &"durable batch")?
        } else {
            frame.payload.clone()
        };
        let outbox = crate::durable::OutboxId::from_u64(fields.outbox);
        let mut records = Vec::with_capacity(fields.count as usize);
        let messages = crate::durable::batch_messages(&payload, fields.count).map_err(Status::mark_unprocessed)?;
        for (sequence, (message, inner)) in (fields.sequence..).zip(messages) {
            if self.names.intern_bytes(&inner.method).is_none() {
                return Err(self.no_method(inner.method_str()));
            }
            self.codec(inner.codec).map_err(Status::mark_unprocessed)?;
            if !matches!(self.admission, Admission::Open) {
                let mut request = crate::durable::restored(inner, |_| None)?;
                self.admit_call(&mut request)?;
            }
            let record =
                crate::durable::Inbox::incoming(sender.clone(), outbox, sequence, fields.acknowledged, message)
                    .map_err(|e| Status::from(e).mark_unprocessed())?;
            records.push(record);
        }
        Ok(records)
    }

    /// Runs a handler that has to wait in a task of its own, holding a unit of the budget if
    /// there is one, and enforces its deadline there.
    fn spawn_handler(&mut self, mux: &mut ConnectionMux, started: Started<InSpan<S::Future>>) {
        let Started { id, call, deadline, budget, method, observed, answer } = started;
        let local = self.local_name.clone();
        let call = AssertUnwindSafe(call).catch_unwind();
        let done = self.done_tx.clone();
        let task = tokio::spawn(async move {
            let outcome = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, call).await.unwrap_or_else(|_| {
                    let budget = Rounded(budget.unwrap_or_default());
                    Ok(Err(Status::deadline_exceeded(format!(
                        "deadline of {budget} exceeded handling {method} on {local}"
                    ))))
                }),
                None => call.await,
            };
            let mut result = outcome.unwrap_or_else(|_| Err(panicked(&method, &local)));
            // An aborted task (the call cancelled) drops `observed` unfinished: cancelled.
            if let Some(observed) = observed {
                observed.finish(&result);
            }
            let compressed = answer.apply(&mut result);
            let _ = done.send((id, result, compressed));
        });
        // A handler parked for the budget may have been cancelled meanwhile: stopped at once.
        if let Err(handler) = mux.attach_handler(id, task.abort_handle()) {
            handler.abort();
            self.release_units(1);
        }
    }

    /// The answer to a call whose deadline, `budget` from its arrival, passed before it could
    /// start: `DeadlineExceeded`, unprocessed, since its handler never ran.
    fn expired(&self, budget: Option<Duration>, method: &Method) -> Status {
        let budget = Rounded(budget.unwrap_or_default());
        let local = &self.local_name;
        Status::deadline_exceeded(format!("deadline of {budget} passed before {method} could start on {local}"))
            .mark_unprocessed()
    }

    /// Gives `request` the caller's identity, if the peer may make it.
    fn admit_call(&self, request: &mut Request) -> Result<(), Status> {
        match &self.admission {
            Admission::Open => Ok(()),
            Admission::Accepted { authenticator, identity } => {
                authenticator.authorize(identity, request).map_err(Status::mark_unprocessed)?;
                request.ctx_mut().set_identity(Some(identity.clone()));
                Ok(())
            }
            Admission::Refused(status) => Err(status.clone()),
            // Not reached: requests are handed over only after the HELLO, which decides.
            Admission::Pending { .. } => {
                Err(Status::unauthenticated("the connection is not authenticated yet").mark_unprocessed())
            }
        }
    }

    /// How to compress the answer to `frame`: with the request's algorithm if it came
    /// compressed, else with this side's own, if any.
    fn answer_compression(&self, mux: &ConnectionMux, frame: &RequestFrame) -> AnswerCompression {
        let requested = frame.compressed_header().and_then(|header| Compression::from_id(header.compression));
        let algorithm = requested.or(self.compression.algorithm);
        let accepted = match algorithm {
            Some(_) => mux.peer().map(|peer| peer.compressions).unwrap_or_default(),
            None => Accepted::default(),
        };
        AnswerCompression { settings: Settings { algorithm, ..self.compression }, accepted }
    }

    /// The request `frame` carries, its deadline counted from `arrived`, and whether its payload
    /// is still compressed, as it came: [`decompress_payload`](Dispatch::decompress_payload)
    /// before anything reads it.
    fn to_request(&self, frame: RequestFrame, arrived: Instant) -> Result<(Request, bool), Status> {
        let codec = self.codec(frame.codec)?;
        let method: Method = match self.names.intern_bytes(&frame.method) {
            Some(known) => known.into(),
            None => Arc::<str>::from(frame.method_str()).into(),
        };
        let compressed = frame.flags & crate::frame::flags::COMPRESSED != 0;
        let payload = frame.payload;
        let mut ctx = Context::new();
        // A peer may send any timeout up to u64::MAX µs; one beyond the clock's range is no deadline.
        ctx.set_deadline(frame.timeout.and_then(|timeout| arrived.checked_add(timeout)));
        // The caller's name comes with the peer: one reference count for both.
        ctx.set_peer(Some(self.peer.clone()));
        ctx.set_trace(frame.trace);
        *ctx.metadata_mut() = frame.metadata;
        let request = Request::from_parts(method, ctx, payload)
            .with_codec(codec)
            .with_oneway(frame.flags & crate::frame::flags::ONEWAY != 0)
            .with_idempotent(frame.flags & crate::frame::flags::IDEMPOTENT != 0);
        Ok((request, compressed))
    }

    /// Replaces `request`'s compressed payload with its decompressed bytes, at most `limit`.
    fn decompress_payload(&self, request: &mut Request, limit: u32) -> Result<(), Status> {
        let payload = self.decompress(request.payload(), limit, &format_args!("request to {}", request.method()))?;
        *request.payload_mut() = payload;
        Ok(())
    }

    /// The codec of wire value `codec`; `Unimplemented` for one this build does not have.
    #[inline]
    fn codec(&self, codec: u8) -> Result<CodecId, Status> {
        CodecId::from_u8(codec)
            .filter(|codec| codec.is_enabled())
            .ok_or_else(|| Status::unimplemented(format!("codec {codec} is not supported by {}", self.local_name)))
    }

    /// A compressed `payload` decompressed, to at most `limit` bytes (`what` names it in the
    /// refusal, unprocessed: nothing ran).
    fn decompress(&self, payload: &Bytes, limit: u32, what: &dyn std::fmt::Display) -> Result<Bytes, Status> {
        compression::decompress(payload, limit).map_err(|e| {
            let message = format!("{what} not decompressed by {}: {e}", self.local_name);
            Status::new(e.request_code(), message).mark_unprocessed()
        })
    }

    /// The refusal of a durable message for a method this side does not have: unprocessed, so
    /// that its sender keeps it (this side may be upgraded).
    #[cfg(feature = "durable")]
    fn no_method(&self, method: &str) -> Status {
        Status::not_found(format!("{} has no method {method}", self.local_name)).mark_unprocessed()
    }
}

impl<S: Service<Request>> Dispatch<S> {
    /// Aborts every handler still running (their handles are the mux's) and gives back every
    /// unit of the budget this connection holds or waits for. Idempotent.
    pub(super) fn abort_all(&mut self, mux: &mut ConnectionMux) {
        for handler in mux.take_handlers() {
            handler.abort();
            if let Some(budget) = &self.budget {
                budget.release(1);
            }
        }
        self.leave_budget();
    }

    /// Drops a parked handler and leaves the budget's queue.
    fn leave_budget(&mut self) {
        self.parked = None;
        if let Some(budget) = &self.budget {
            budget.leave(&mut self.queued);
        }
    }
}

impl<S: Service<Request>> Drop for Dispatch<S> {
    /// Whatever happened to the connection, a parked handler goes and the budget's queue is
    /// left (the running handlers go with the connection's `Drop`, from the mux).
    fn drop(&mut self) {
        self.leave_budget();
    }
}

fn panicked(method: &Method, local: &str) -> Status {
    Status::internal(format!("the handler of {method} on {local} panicked"))
}
