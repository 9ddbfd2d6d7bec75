//! Delivery: a destination's messages from the outbox's log to its receiver, in order, until
//! acknowledged, whatever fails in between.
//!
//! One task per destination ([`Outbox::destination`]) reads the destination's messages from
//! its first unacknowledged one on and sends each as a durable request (`docs/PROTOCOL.md` §19)
//! through the service it was given: a `Channel`, or a `Client` with discovery. The connection
//! sends a durable request only to a peer that announced `INBOX` under the destination's name
//! (`zrpc_core::durable::Durable`), so a server that took over the address never gets another's
//! messages.
//!
//! - **Window.** Up to [`WINDOW`] messages await their acknowledgement at once, sent in
//!   sequence order; the task reads more from the log once half the window is free, so that
//!   each read (a round trip to the writer thread) brings many. After a start or a failure only one goes out until it is acknowledged (a
//!   connection being set up could otherwise let a later message overtake an earlier one, which
//!   the receiver would refuse as a gap), then the window opens.
//! - **Acknowledgements.** Each carries the receiver's `recorded`: every message up to it is
//!   done. The task writes "acknowledged up to n" to the log when the window has drained, or
//!   every half window, so compaction can reclaim the space: one write for many messages.
//! - **Failures.** Any failure (no connection, a lost one, no acknowledgement within
//!   [`ATTEMPT_TIMEOUT`], a gap, a refusal) stops new sends; once the window's answers are in,
//!   the task waits a capped exponential backoff with full jitter ([`BACKOFF_INITIAL`] doubling
//!   up to [`BACKOFF_MAX`]) and starts again
//!   from the first unacknowledged message. It never gives up: a durable message is dropped
//!   only by [`Outbox::discard`]. The first failure after a success is logged at `warn`, the
//!   ones after it at `debug`.
//! - **Waking.** A call through the destination wakes the task once its message is logged;
//!   with nothing to send, the task sleeps until then.
//! - **Ending.** The task ends when the outbox is closed ([`Outbox::close`]) or its log
//!   stopped after a failed write. It holds a clone of the outbox, so an outbox with a
//!   destination delivers in the background until it is closed or the runtime stops.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tower::Service;
use zrpc_core::backoff::Backoff;
use zrpc_core::durable::{Durable, MessageId};
use zrpc_core::{Method, Request, Response, Status};

use super::{Outbox, Stored};
use crate::durable::{DurableError, wire};

/// Most messages of one destination awaiting their acknowledgement at once.
///
/// 512 rather than 256 since session 16: with the receiver recording a turn's messages at
/// once, 256 left the pipeline short (the machine a quarter idle in the bench's delivery
/// phase); 512 took one sender's delivery from 256k–264k to 281k–284k messages/s, 1,024 to
/// 282k–293k (`benches/src/bin/durable.rs`, four rounds each, taking turns). 512 stays within
/// half of a zrpc receiver's default `max_requests` (1,000), so that a destination's
/// deliveries leave room for other calls on their connection.
pub const WINDOW: usize = 512;

/// How long one delivery attempt waits for its acknowledgement.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The first wait before trying again after a failure, drawn with full jitter; it doubles
/// with each failure in a row up to [`BACKOFF_MAX`].
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(20);

/// The longest wait before trying again.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Bytes of messages read from the log at once, about.
const READ_BYTES: usize = 4 << 20;

/// A destination's delivery: what its task owns.
pub(super) struct Delivery<S> {
    pub(super) outbox: Outbox,
    pub(super) destination: Arc<str>,
    pub(super) service: S,
    pub(super) progress: Arc<super::Progress>,
}

/// Where a delivery stands.
#[derive(Debug, Default)]
struct Progress {
    /// The highest sequence the receiver acknowledged (recorded).
    acknowledged: u64,
    /// The highest acknowledgement written to the log.
    persisted: u64,
    /// The sequence after the last one sent.
    next: u64,
    /// An answer came since the last start or failure: the window may open.
    flowing: bool,
    /// The first failure since the window was last whole: no more sends until it drains.
    failed: Option<Status>,
    /// Failures in a row, for the backoff.
    failures: u32,
}

impl<S> Delivery<S>
where
    S: Service<Request, Response = Response, Error = Status> + Send + 'static,
    S::Future: Send + 'static,
{
    /// Delivers until the outbox is closed.
    pub(super) async fn run(mut self) {
        let mut progress = Progress::default();
        let mut in_flight = FuturesOrdered::new();
        let mut method = None;
        let mut rng = fastrand::Rng::new();
        let backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX);
        loop {
            let window = if progress.flowing { WINDOW } else { 1 };
            // Refill once half the window is free, not after each answer: a read is a round
            // trip to the writer thread, and should bring many messages, not one or two.
            if progress.failed.is_none() && in_flight.len() <= window / 2 {
                let from = if in_flight.is_empty() { progress.acknowledged + 1 } else { progress.next };
                match self.outbox.read(&self.destination, from, window - in_flight.len(), READ_BYTES).await {
                    Ok(batch) => {
                        if in_flight.is_empty()
                            && let Some(first) = batch.first()
                        {
                            // Read from the first unacknowledged: all before it were acknowledged.
                            progress.acknowledged = progress.acknowledged.max(first.sequence - 1);
                        }
                        for stored in batch {
                            progress.next = stored.sequence + 1;
                            match self.send(&stored, progress.acknowledged, &mut method).await {
                                Ok(answer) => in_flight.push_back(answer.map(move |answer| (stored.sequence, answer))),
                                Err(status) => {
                                    self.failed(&mut progress, status);
                                    break;
                                }
                            }
                        }
                    }
                    Err(DurableError::Closed { .. }) => return,
                    Err(e) => {
                        tracing::error!(destination = %self.destination, error = %e, "durable outbox: delivery stopped");
                        return;
                    }
                }
            }
            if in_flight.is_empty() {
                if !self.persist(&mut progress, true).await {
                    return;
                }
                if progress.failed.take().is_some() {
                    tokio::time::sleep(backoff.full_jitter(progress.failures.saturating_sub(1), &mut rng)).await;
                    continue;
                }
                // The read found nothing to send (messages sent but unanswered were discarded
                // meanwhile, if any): wait for the next one logged.
                self.progress.wake.notified().await;
                continue;
            }
            let room = progress.failed.is_none() && in_flight.len() <= window / 2;
            tokio::select! {
                Some((sequence, answer)) = in_flight.next() => {
                    self.answered(&mut progress, sequence, answer);
                    // The answers already in, at once: one acknowledgement write for them all.
                    while let Some(Some((sequence, answer))) = in_flight.next().now_or_never() {
                        self.answered(&mut progress, sequence, answer);
                    }
                    if !self.persist(&mut progress, in_flight.is_empty()).await {
                        return;
                    }
                }
                () = self.progress.wake.notified(), if room => {}
            }
        }
    }

    /// Sends message `stored` once the service is ready, and returns its answer's future.
    ///
    /// `method` is the method of the message sent last: a message of the same method shares
    /// its name rather than allocating it again (a destination's messages are mostly of a
    /// few methods, and the delivery task has no router to intern them with).
    async fn send(
        &mut self,
        stored: &Stored,
        acknowledged: u64,
        method: &mut Option<Method>,
    ) -> Result<S::Future, Status> {
        let same = |name: &[u8]| method.as_ref().filter(|last| last.as_str().as_bytes() == name).cloned();
        let mut request = wire::restore_request(&stored.message, same)?.with_oneway(false);
        *method = Some(request.method().clone());
        let id = MessageId::new(self.outbox.inner.sender.clone(), self.outbox.id(), stored.sequence);
        let ctx = request.ctx_mut();
        ctx.set_deadline(Some(tokio::time::Instant::now() + ATTEMPT_TIMEOUT));
        ctx.set_durable(Some(Durable::new(id, acknowledged, self.destination.clone())));
        std::future::poll_fn(|cx| self.service.poll_ready(cx)).await?;
        Ok(self.service.call(request))
    }

    /// Takes the answer to message `sequence`.
    fn answered(&self, progress: &mut Progress, sequence: u64, answer: Result<Response, Status>) {
        let recorded = wire::recorded(&answer);
        if let Some(recorded) = recorded {
            progress.acknowledged = progress.acknowledged.max(recorded);
        }
        match (answer, recorded) {
            (Ok(_), Some(recorded)) if recorded >= sequence => {
                progress.flowing = true;
                progress.failures = 0;
            }
            (Ok(_), Some(recorded)) => {
                let status = Status::internal(format!(
                    "the acknowledgement of durable message {sequence} says only {recorded} are recorded"
                ));
                self.failed(progress, status);
            }
            (Ok(_), None) => {
                let status = Status::internal(format!(
                    "the answer to durable message {sequence} is not an acknowledgement: the receiver is not a zrpc inbox"
                ));
                self.failed(progress, status);
            }
            (Err(status), _) => self.failed(progress, status),
        }
    }

    /// Notes a failure: no more sends until the window has drained, then a backoff.
    fn failed(&self, progress: &mut Progress, status: Status) {
        progress.flowing = false;
        if progress.failed.is_none() {
            progress.failures = progress.failures.saturating_add(1);
            if progress.failures == 1 {
                tracing::warn!(destination = %self.destination, %status, "durable delivery failed; retrying with backoff");
            } else {
                tracing::debug!(destination = %self.destination, %status, failures = progress.failures, "durable delivery failed again");
            }
            progress.failed = Some(status);
        }
    }

    /// Writes the acknowledgement to the log when it has moved, and `drained` or by half a
    /// window; `false` when the log is closed.
    async fn persist(&mut self, progress: &mut Progress, drained: bool) -> bool {
        let moved = progress.acknowledged - progress.persisted.min(progress.acknowledged);
        if moved == 0 || (!drained && moved < WINDOW as u64 / 2) {
            return true;
        }
        match self.outbox.acknowledge(&self.destination, progress.acknowledged).await {
            Ok(_) => {
                progress.persisted = progress.acknowledged;
                self.progress.acknowledged.send_replace(progress.acknowledged);
                true
            }
            Err(DurableError::Closed { .. }) => false,
            Err(e) => {
                tracing::error!(destination = %self.destination, error = %e, "durable outbox: delivery stopped");
                false
            }
        }
    }
}
