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
//! - **Window.** Up to [`WINDOW`] messages await their acknowledgement at once, sent in sequence
//!   order; the task reads more from the log once half the window is free, so that each read (a
//!   round trip to the writer) brings many. After a start or a failure only one goes out until it
//!   is acknowledged (a connection being set up could otherwise let a later message overtake an
//!   earlier one, which the receiver would refuse as a gap), then the window opens.
//! - **Batches.** Once the window is open, consecutive messages go as batches of up to
//!   [`BATCH`] messages and about [`BATCH_BYTES`] (`docs/PROTOCOL.md` §19): one request, one
//!   frame and one acknowledgement for all of them, and the stored frames go as they are, with
//!   no decoding and encoding again per message. A receiver that takes no batches (its `INBOX`
//!   did not say so, or its frames are too small for one) has the connection refuse them
//!   `FailedPrecondition`, unprocessed: the task then sends one message per request, for as
//!   long as it runs. (Not `Unimplemented`, which a receiver answers for a codec it lacks.) A
//!   batch refused for one of its messages (an unknown method, say) is sent again one message
//!   per request, so that the messages before that one are recorded at the next attempt, as
//!   without batches, and the refused one alone waits.
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

use bytes::BytesMut;
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

/// Most messages in one batch.
const BATCH: usize = 64;

/// Bytes of stored messages in one batch, about: a batch ends before the message that would
/// pass it, and a larger message goes alone.
const BATCH_BYTES: usize = 64 << 10;

/// How many of `messages` the next request takes: as many as fit a batch ([`BATCH`],
/// [`BATCH_BYTES`]) with consecutive sequences, and at least one.
fn batch_len(messages: &[Stored]) -> usize {
    let (mut count, mut bytes) = (0, 0);
    let first = messages.first().map_or(0, |stored| stored.sequence);
    for (stored, sequence) in messages.iter().take(BATCH).zip(first..) {
        if count > 0 && (stored.sequence != sequence || bytes + stored.message.len() > BATCH_BYTES) {
            break;
        }
        bytes += stored.message.len();
        count += 1;
    }
    count.max(1)
}

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
    /// Messages sent and not yet answered: the window's count (a batch counts its messages).
    in_flight: usize,
    /// The receiver takes batches, as far as the task knows: until one is refused as such.
    batching: bool,
    /// The last sequence of a batch the receiver refused for one of its messages: up to it
    /// messages go one per request, so that those before the refused one are recorded at
    /// once, as they would have been without batches.
    singles_through: u64,
}

impl<S> Delivery<S>
where
    S: Service<Request, Response = Response, Error = Status> + Send + 'static,
    S::Future: Send + 'static,
{
    /// Delivers until the outbox is closed.
    pub(super) async fn run(mut self) {
        let mut progress = Progress { batching: true, ..Progress::default() };
        let mut in_flight = FuturesOrdered::new();
        let mut method = None;
        let mut rng = fastrand::Rng::new();
        let backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX);
        loop {
            let window = if progress.flowing { WINDOW } else { 1 };
            // Refill once half the window is free, not after each answer: a read is a round
            // trip to the writer, and should bring many messages, not one or two.
            if progress.failed.is_none() && progress.in_flight <= window / 2 {
                let from = if in_flight.is_empty() { progress.acknowledged + 1 } else { progress.next };
                match self.outbox.read(&self.destination, from, window - progress.in_flight, READ_BYTES).await {
                    Ok(batch) => {
                        if in_flight.is_empty()
                            && let Some(first) = batch.first()
                        {
                            // Read from the first unacknowledged: all before it were acknowledged.
                            progress.acknowledged = progress.acknowledged.max(first.sequence - 1);
                        }
                        let mut rest = &batch[..];
                        while !rest.is_empty() {
                            let batch =
                                progress.flowing && progress.batching && rest[0].sequence > progress.singles_through;
                            let count = if batch { batch_len(rest) } else { 1 };
                            let (chunk, after) = rest.split_at(count);
                            rest = after;
                            let (first, last) = (chunk[0].sequence, chunk[count - 1].sequence);
                            progress.next = last + 1;
                            match self.send(chunk, progress.acknowledged, &mut method).await {
                                Ok(answer) => {
                                    progress.in_flight += count;
                                    in_flight.push_back(answer.map(move |answer| (first, last, answer)));
                                }
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
            let room = progress.failed.is_none() && progress.in_flight <= window / 2;
            tokio::select! {
                Some((first, last, answer)) = in_flight.next() => {
                    self.answered(&mut progress, first, last, answer);
                    // The answers already in, at once: one acknowledgement write for them all.
                    while let Some(Some((first, last, answer))) = in_flight.next().now_or_never() {
                        self.answered(&mut progress, first, last, answer);
                    }
                    if !self.persist(&mut progress, in_flight.is_empty()).await {
                        return;
                    }
                }
                () = self.progress.wake.notified(), if room => {}
            }
        }
    }

    /// Sends `chunk` (one message, or a batch of consecutive ones) once the service is ready,
    /// and returns its answer's future.
    ///
    /// `method` is the method of the message sent last: a message of the same method shares
    /// its name rather than allocating it again (a destination's messages are mostly of a
    /// few methods, and the delivery task has no router to intern them with). A batch goes
    /// under its first message's method and codec, for logs and layers; its payload is the
    /// stored frames as they are.
    async fn send(
        &mut self,
        chunk: &[Stored],
        acknowledged: u64,
        method: &mut Option<Method>,
    ) -> Result<S::Future, Status> {
        let first = &chunk[0];
        let same = |name: &[u8]| method.as_ref().filter(|last| last.as_str().as_bytes() == name).cloned();
        let mut request = wire::restore_request(&first.message, same)?.with_oneway(false);
        *method = Some(request.method().clone());
        let id = MessageId::new(self.outbox.inner.sender.clone(), self.outbox.id(), first.sequence);
        let durable = if let [_, _, ..] = chunk {
            let mut payload = BytesMut::with_capacity(chunk.iter().map(|stored| stored.message.len()).sum());
            for stored in chunk {
                payload.extend_from_slice(&stored.message);
            }
            request = Request::new(request.method().clone(), payload.freeze()).with_codec(request.codec());
            // At most `BATCH` messages: the count fits.
            Durable::batch(id, chunk.len() as u32, acknowledged, self.destination.clone())
        } else {
            Durable::new(id, acknowledged, self.destination.clone())
        };
        let ctx = request.ctx_mut();
        ctx.set_deadline(Some(tokio::time::Instant::now() + ATTEMPT_TIMEOUT));
        ctx.set_durable(Some(durable));
        std::future::poll_fn(|cx| self.service.poll_ready(cx)).await?;
        Ok(self.service.call(request))
    }

    /// Takes the answer to messages `first` to `last` (one message, or a batch).
    fn answered(&self, progress: &mut Progress, first: u64, last: u64, answer: Result<Response, Status>) {
        progress.in_flight -= usize::try_from(last - first + 1).unwrap_or(usize::MAX).min(progress.in_flight);
        if last > first
            && let Err(status) = &answer
            && status.code() == zrpc_core::Code::FailedPrecondition
            && status.is_unprocessed()
            && progress.batching
        {
            tracing::info!(destination = %self.destination, %status, "durable delivery: the receiver takes no batches; sending one message per request");
            progress.batching = false;
        }
        let sequence = last;
        let recorded = wire::recorded(&answer);
        if last > first && answer.is_err() && recorded.is_none() {
            // Refused for one of its messages (not a gap): the ones before it go alone next.
            progress.singles_through = progress.singles_through.max(last);
        }
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
