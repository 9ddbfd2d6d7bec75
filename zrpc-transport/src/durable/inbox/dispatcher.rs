//! The inbox's dispatcher: runs the handlers of recorded messages, one at a time per stream,
//! in sequence order, streams concurrently, and marks each handled when its handler returns.
//!
//! A server with an inbox runs one dispatcher beside its connections. Each message goes
//! through the server's service (its layers, then the router) like a call from a connection,
//! observed like one (a `zrpc.server` span whose peer is the sender, the server's metrics),
//! with a context that has the sender's name as caller, the stored metadata and trace, the
//! deadline of `InboxConfig::handler_timeout` if set (none by default), and
//! [`Context::durable_id`](zrpc_core::Context::durable_id). A handler past that deadline is
//! dropped. Whatever the handler does (returns, fails with a `Status`, panics, runs out of
//! time), the message counts as handled: the inbox delivers, it is not a job queue (see the
//! module docs of [`durable`](crate::durable), "Open questions").
//!
//! - **Runs.** A take gives up to 256 of a ready stream's messages at once; its task runs their
//!   handlers one after another, writing "handled up to n" to the sidecar after each (`marks.rs`: a
//!   store into a mapped file, at the power level then `fdatasync`) and to the log once the run is
//!   done. At the process level, as a full run starts (256 messages, or about 1 MiB: the stream may
//!   have more), the task asks for the stream's next 256 ([`Inbox::extend`]), and goes on with them
//!   when the run is done; after a shorter run, when none came, at the power level, or when the
//!   dispatcher stops or every slot is taken, the run's mark is waited for, which makes the stream
//!   ready for a later take. A busy stream's handlers so never wait between runs for the log's
//!   write and a take: `durable --only backlog` (1,000,000 messages recorded, then handled) drained
//!   459k–486k messages/s before, 549k–571k after.
//! - **Bound:** at most [`MAX_RUNNING`] streams' runs at once; past it, ready streams wait for a
//!   run to end. A run holds its messages in memory (read from the log, about 1 MiB per run
//!   at most, and one message however large), and a stream's task holds its run and the next
//!   it asked for, so what senders can make the dispatcher hold is at most 1,024 streams' two
//!   runs of about 1 MiB, and never more than the inbox's unhandled bytes
//!   (`InboxConfig::max_bytes`). The writer counts what it hands out until each run ends
//!   (`held.rs`; a test holds three streams within it). A byte budget shared by the runs would
//!   bound it lower; not done.
//! - **Stopping:** when the server stops, the dispatcher takes no more messages and waits for
//!   the running handlers (the server bounds the wait with its drain timeout, then aborts them:
//!   an aborted handler runs again at the inbox's next open, as after a crash inside it). A
//!   stream's task finishes the run it holds and the next one if it had already asked for it
//!   (at most 512 messages), then releases the stream.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use zrpc_core::durable::Durable;
use zrpc_core::observe::{self, InSpan, MetricsCache, Observed, Side};
use zrpc_core::{Method, Request, Response, Router, Status};

use super::held::Taken;
use super::marks::Written;
use super::state::TAKE_BYTES;
use super::{Delivery, Inbox};
use crate::channel::Served;
use crate::durable::{Durability, DurableError, MessageId, wire};

/// Most streams whose handlers run at once.
pub const MAX_RUNNING: usize = 1024;

/// Most messages of one stream taken at once, to be handled one after another (a run).
pub(super) const RUN: usize = 256;

/// Runs the handlers of `inbox`'s recorded messages with `service` until `stop` completes and
/// the running handlers have returned. `local` is the server's name (a message's
/// destination); `names` interns method names.
pub(crate) async fn run<S>(inbox: Inbox, service: S, names: Router, local: Arc<str>, stop: impl Future<Output = ()>)
where
    S: Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut running = JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    let mut stopping = false;
    let go_on = Arc::new(GoOn::default());
    loop {
        while running.try_join_next().is_some() {}
        go_on.stopping.store(stopping, Ordering::Relaxed);
        go_on.full.store(running.len() >= MAX_RUNNING, Ordering::Relaxed);
        if !stopping && running.len() < MAX_RUNNING {
            match inbox.take_runs(MAX_RUNNING - running.len(), RUN).await {
                Ok(taken) if !taken.is_empty() => {
                    for run in taken.into_runs() {
                        let handler = handle_run(
                            inbox.clone(),
                            service.clone(),
                            names.clone(),
                            local.clone(),
                            run,
                            go_on.clone(),
                        );
                        running.spawn(handler);
                    }
                    continue;
                }
                Ok(_) => {}
                Err(DurableError::Closed { .. }) => stopping = true,
                Err(e) => {
                    // The log stopped (a failed write); it takes nothing until reopened.
                    tracing::error!(error = %e, "durable inbox: no more messages are handled");
                    stopping = true;
                }
            }
        }
        if stopping && running.is_empty() {
            return;
        }
        tokio::select! {
            () = inbox.ready().notified(), if !stopping => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            () = &mut stop, if !stopping => stopping = true,
        }
    }
}

/// A dispatcher in a task of its own (a serving channel's, a node's): it takes no more
/// messages once this is dropped or [`stop`](Dispatching::stop)ped, and ends when its running
/// handlers have returned.
#[derive(Debug)]
pub(crate) struct Dispatching {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Dispatching {
    /// Runs `inbox`'s handlers with the services of `served`, as the endpoint named `local`.
    pub(crate) fn spawn(inbox: Inbox, served: &Served, local: &str) -> Dispatching {
        Dispatching::spawn_with(inbox, served.service(), served.router.clone(), local)
    }

    /// Runs `inbox`'s handlers with `service`, interning method names with `names`, as the
    /// endpoint named `local`.
    pub(crate) fn spawn_with<S>(inbox: Inbox, service: S, names: Router, local: &str) -> Dispatching
    where
        S: Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let running = run(inbox, service, names, Arc::from(local), stopped);
        Dispatching { stop, task: tokio::spawn(running) }
    }

    /// Takes no more messages and returns once the running handlers have.
    pub(crate) async fn stop(self) {
        drop(self.stop);
        let _ = self.task.await;
    }
}

/// Whether a stream's handler may go on with the stream's next run rather than give its slot
/// up: not once the dispatcher stops, nor while every slot is taken (other ready streams then
/// get their turn, as each run ends).
#[derive(Debug, Default)]
struct GoOn {
    stopping: AtomicBool,
    full: AtomicBool,
}

impl GoOn {
    fn allowed(&self) -> bool {
        !self.stopping.load(Ordering::Relaxed) && !self.full.load(Ordering::Relaxed)
    }
}

/// Runs the handlers of one stream's runs, one after another, each marked handled in the
/// sidecar before the next starts (written; synced too at the power level, unless
/// `unsynced_marks` lets the next ones start first); each run's mark then goes to the log,
/// which releases its messages.
///
/// A full run asks for the stream's next one as it starts ([`Inbox::extend`]), so that the
/// next is at hand when it is done: a backlogged stream's handlers do not wait between runs
/// for the log's write and a new take. After a shorter run (the stream had no more), with
/// nothing after the run, or when [`GoOn`] says no, the run's mark is written and waited for,
/// which releases the stream for a later take.
async fn handle_run<S>(inbox: Inbox, service: S, names: Router, local: Arc<str>, mut run: Taken, go_on: Arc<GoOn>)
where
    S: Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut metrics = MetricsCache::new(Side::Server, None);
    let unsynced_marks = inbox.unsynced_marks();
    let process_level = inbox.marks().durability() == Durability::Process;
    // Marks written and not known to be synced, oldest first: at most `unsynced_marks + 1`.
    let mut unsynced = VecDeque::with_capacity(unsynced_marks + 1);
    // One clone of the service for the stream's messages, not one each (a `Router` clone
    // allocates once per service in it); a fresh one after a handler panicked, as each
    // message had before.
    let mut serving = service.clone();
    loop {
        let Some(last) = run.last().map(|delivery| delivery.id.clone()) else { return };
        let count = run.len();
        // Only a full run (a take's bound reached) says more may be waiting: a shorter one was
        // all the stream had, and asking again would only add a round trip before its release.
        // And only at the process level: at the power level each handler waits for a sync, the
        // round trips between runs are little beside them, and an extension is one more
        // command whose batch the log syncs (100 streams at the power level handled about a
        // sixth fewer messages a second with it).
        let full = count >= RUN || run.bytes() >= TAKE_BYTES as u64;
        let extend = full && process_level && go_on.allowed();
        let next = if extend { inbox.extend(&last, RUN) } else { None };
        // The run's bytes count as held (`held.rs`) until its last handler has returned.
        let (deliveries, holding) = run.into_parts();
        for (index, delivery) in deliveries.into_iter().enumerate() {
            let id = delivery.id.clone();
            let panicked = handle(&mut serving, &names, &local, &mut metrics, inbox.handler_timeout(), delivery).await;
            if panicked {
                serving = service.clone();
            }
            // The run's last mark waits for every sync: a run ends with its marks at the level.
            let may_wait = if index + 1 == count { 0 } else { unsynced_marks };
            if let Err(e) = mark(&inbox, &id, &mut unsynced, may_wait).await {
                // The stream stays taken: its messages run again at the next open.
                tracing::error!(%id, error = %e, "durable message handled, but not marked so; its stream stops until the inbox is reopened");
                return;
            }
        }
        drop(holding);
        let more = match next {
            Some(next) => match next.await {
                Ok(more) => Some(more),
                Err(e) => {
                    // Closed: the inbox is closing, and the next open hands them out again.
                    if !matches!(e, DurableError::Closed { .. }) {
                        tracing::warn!(id = %last, error = %e, "durable inbox: the stream's next messages were not taken");
                    }
                    None
                }
            },
            None => None,
        };
        let Some(more) = more.filter(|more| !more.is_empty()) else {
            if let Err(e) = inbox.handled(&last).await {
                // Closed or failed: the sidecar has the marks, which the next open applies.
                tracing::warn!(id = %last, error = %e, "durable messages handled, but not written so to the log");
            }
            return;
        };
        inbox.handled_soon(&last);
        run = more;
    }
}

/// Writes `id`'s mark to the sidecar, then waits for syncs until at most `may_wait` of the
/// stream's marks are not synced.
async fn mark(
    inbox: &Inbox,
    id: &MessageId,
    unsynced: &mut VecDeque<Written>,
    may_wait: usize,
) -> Result<(), DurableError> {
    unsynced.push_back(inbox.marks().write(id)?);
    let excess = unsynced.len().saturating_sub(may_wait);
    // Syncs cover every mark written before them: waiting for the newest of the excess is enough.
    if let Some(newest) = unsynced.drain(..excess).next_back() {
        inbox.marks().synced(newest).await?;
    }
    Ok(())
}

/// Runs the handler of one message, observed as a call from its sender (a `zrpc.server` span
/// and the server's metrics, as a call from a connection gets), within `timeout` if any.
/// Returns whether it panicked.
async fn handle<S>(
    service: &mut S,
    names: &Router,
    local: &Arc<str>,
    metrics: &mut MetricsCache,
    timeout: Option<Duration>,
    delivery: Delivery,
) -> bool
where
    S: Service<Request, Response = Response, Error = Status> + Send + 'static,
    S::Future: Send + 'static,
{
    let Delivery { id, message } = delivery;
    let mut request = match wire::restore_request(&message, |method| names.intern_bytes(method).map(Method::from)) {
        // Its answer goes to no one, however it was delivered (a batch keeps the original
        // call's ONEWAY, a single durable request is two-way on the wire): oneway either way.
        Ok(request) => request.with_oneway(true),
        Err(status) => {
            tracing::error!(%id, %status, "durable message not handled: it cannot be read");
            return false;
        }
    };
    let ctx = request.ctx_mut();
    ctx.set_caller(Some(id.sender_arc().clone()));
    ctx.set_durable(Some(Durable::new(id.clone(), id.sequence() - 1, local.clone())));
    let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
    ctx.set_deadline(deadline);
    let method = request.method().clone();
    let observed = observe::enabled().then(|| Observed::server(&mut request, id.sender(), metrics));
    let call = AssertUnwindSafe(InSpan::new(service.oneshot(request), observed.as_ref())).catch_unwind();
    let finished = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, call).await.unwrap_or_else(|_| {
            let after = timeout.unwrap_or_default();
            Ok(Err(Status::deadline_exceeded(format!("the handler of {method} on {local} ran past {after:?}"))))
        }),
        None => call.await,
    };
    let panicked = finished.is_err();
    let result = finished.unwrap_or_else(|_| {
        tracing::error!(%id, %method, "the handler of a durable message panicked");
        Err(Status::internal(format!("the handler of {method} on {local} panicked")))
    });
    if let Some(observed) = observed {
        observed.finish(&result);
    }
    if let Err(status) = result {
        tracing::warn!(%id, %method, %status, "durable message handled with an error");
    }
    panicked
}
