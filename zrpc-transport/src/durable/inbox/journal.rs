//! The inbox's side of the writer: the commands callers send (records from connections,
//! takes and "handled" marks from the dispatcher), and how each is applied to the state and the
//! log, answered once its batch reached the inbox's level, and followed by upkeep.

use std::sync::Arc;

use tokio::sync::{Notify, oneshot};

use super::held::{Held, Taken};
use super::state::{Limits, Outcome, State, StreamKey};
use super::{Incoming, StreamInfo};
use crate::durable::DurableError;
use crate::durable::error::again;
use crate::durable::log::Log;
use crate::durable::log::writer::{Control, Flow, Journal};

/// Seconds of the inbox's clock between two looks for streams to forget.
const SWEEP_EVERY: u64 = 60;

/// The inbox's source of time, in Unix seconds: the system clock, or a test's.
#[derive(Clone)]
pub(crate) struct Clock(pub(crate) Arc<dyn Fn() -> u64 + Send + Sync>);

impl Clock {
    pub(crate) fn system() -> Clock {
        Clock(Arc::new(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
        }))
    }

    pub(crate) fn now(&self) -> u64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// A request to the writer, with where to send its answer.
#[derive(Debug)]
pub(crate) enum Command {
    /// Record each message that is its stream's next, in order; answered, one outcome per
    /// message, once the batch reached the level.
    Record { records: Vec<Incoming>, reply: oneshot::Sender<Vec<Result<Outcome, DurableError>>> },
    /// Take the next unhandled messages (up to `per_stream` each) of up to `max` ready
    /// streams, after the batch (and its "handled" marks) reached the level.
    Take { max: usize, per_stream: usize, reply: oneshot::Sender<Result<Taken, DurableError>> },
    /// The messages after `after` of a stream its handler holds up to `after`, which it then
    /// holds too: answered after the batch, as a take.
    Extend { key: StreamKey, after: u64, max: usize, reply: oneshot::Sender<Result<Taken, DurableError>> },
    /// Mark a stream's messages handled up to a sequence; answered once the mark reached the
    /// level, and only then is the stream's next message given to a take.
    Handled { key: StreamKey, up_to: u64, reply: oneshot::Sender<Result<u64, DurableError>> },
    /// List the streams (answered with the batch, so that a caller's next command comes in a
    /// batch after this one's upkeep).
    Streams { reply: oneshot::Sender<Vec<StreamInfo>> },
    /// Closing, and the tests' hooks.
    Control(Control),
}

/// An answer waiting for its batch to be written.
#[derive(Debug)]
enum Waiting {
    Recorded(oneshot::Sender<Vec<Result<Outcome, DurableError>>>, Vec<Result<Outcome, DurableError>>),
    Handled(oneshot::Sender<Result<u64, DurableError>>, u64),
    Take(usize, usize, oneshot::Sender<Result<Taken, DurableError>>),
    Extend(StreamKey, u64, usize, oneshot::Sender<Result<Taken, DurableError>>),
    Streams(oneshot::Sender<Vec<StreamInfo>>),
}

/// How the inbox's writer is configured.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) limits: Limits,
    /// `stream_retention`, in seconds.
    pub(crate) retention: u64,
    pub(crate) clock: Clock,
    /// Woken when a stream has a message ready for a handler.
    pub(crate) ready: Arc<Notify>,
    /// Counts what takes and extensions hand out.
    pub(crate) held: Arc<Held>,
}

/// The inbox's state and the answers of the batch being built.
#[derive(Debug)]
pub(crate) struct Writer {
    state: State,
    settings: Settings,
    waiting: Vec<Waiting>,
    /// The clock at the batch's first command.
    now: u64,
    /// When streams were last looked at for forgetting.
    swept: u64,
    /// A "handled" mark in this batch: compaction may have something to do.
    handled: bool,
    closing: Option<oneshot::Sender<()>>,
}

impl Writer {
    pub(crate) fn new(state: State, settings: Settings) -> Writer {
        let now = settings.clock.now();
        Writer { state, settings, waiting: Vec::new(), now, swept: now, handled: false, closing: None }
    }

    fn upkeep(&mut self, log: &mut Log) -> Result<(), DurableError> {
        let mut roll = log.wants_roll();
        if self.now >= self.swept.saturating_add(SWEEP_EVERY) {
            self.swept = self.now;
            let forgotten = self.state.forget_idle(self.now, self.settings.retention);
            if forgotten > 0 {
                tracing::debug!(dir = %log.dir().display(), streams = forgotten, "durable inbox: forgot idle streams");
                // A new checkpoint without them, so that a reopen does not replay their records
                // and bring them back.
                roll = true;
            }
        }
        if roll {
            log.roll(&self.state.checkpoint())?;
        }
        if std::mem::take(&mut self.handled) {
            self.state.compact(log)?;
        }
        Ok(())
    }
}

impl Journal for Writer {
    type Command = Command;

    fn apply(&mut self, log: &mut Log, command: Command) -> Flow {
        if self.waiting.is_empty() {
            self.now = self.settings.clock.now();
        }
        match command {
            Command::Record { records, reply } => {
                let (now, limits) = (self.now, self.settings.limits);
                let outcomes = records
                    .into_iter()
                    .map(|Incoming { key, sequence, acknowledged, message }| {
                        self.state.record(log, &key, sequence, acknowledged, message, now, limits)
                    })
                    .collect();
                self.waiting.push(Waiting::Recorded(reply, outcomes));
            }
            Command::Take { max, per_stream, reply } => self.waiting.push(Waiting::Take(max, per_stream, reply)),
            Command::Extend { key, after, max, reply } => self.waiting.push(Waiting::Extend(key, after, max, reply)),
            Command::Handled { key, up_to, reply } => match self.state.handled(log, &key, up_to) {
                Ok(released) => {
                    self.handled |= released > 0;
                    self.waiting.push(Waiting::Handled(reply, released));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Streams { reply } => self.waiting.push(Waiting::Streams(reply)),
            Command::Control(control) => return control.apply(log, &mut self.closing),
        }
        Flow::Continue
    }

    fn complete(&mut self, log: &mut Log, written: Result<(), DurableError>) {
        // Drained, so that the next batch reuses its room (at most `MAX_BATCH` answers) rather
        // than growing a new vector from nothing.
        let mut batch = std::mem::take(&mut self.waiting);
        for waiting in batch.drain(..) {
            let failed = written.as_ref().err().map(again);
            match waiting {
                Waiting::Recorded(reply, mut outcomes) => {
                    if let Some(e) = failed {
                        for outcome in outcomes.iter_mut().filter(|outcome| outcome.is_ok()) {
                            *outcome = Err(again(&e));
                        }
                    }
                    let _ = reply.send(outcomes);
                }
                Waiting::Handled(reply, released) => {
                    let _ = reply.send(failed.map_or(Ok(released), Err));
                }
                Waiting::Streams(reply) => {
                    let streams = self
                        .state
                        .streams()
                        .map(|(key, recorded, handled, bytes)| StreamInfo {
                            sender: key.sender.to_string(),
                            outbox: key.outbox,
                            recorded,
                            handled,
                            bytes,
                        })
                        .collect();
                    let _ = reply.send(streams);
                }
                Waiting::Take(max, per_stream, reply) => {
                    let taken = match failed {
                        Some(e) => Err(e),
                        None => self.state.take(log, max, per_stream).map(|taken| self.settings.held.hand_out(taken)),
                    };
                    let _ = reply.send(taken);
                }
                Waiting::Extend(key, after, max, reply) => {
                    let taken = match failed {
                        Some(e) => Err(e),
                        None => {
                            self.state.extend(log, &key, after, max).map(|taken| self.settings.held.hand_out(taken))
                        }
                    };
                    let _ = reply.send(taken);
                }
            }
        }
        self.waiting = batch;
        if written.is_ok() {
            if self.state.any_ready() {
                self.settings.ready.notify_one();
            }
            if let Err(e) = self.upkeep(log) {
                tracing::error!(dir = %log.dir().display(), error = %e, "durable inbox: rolling or compacting the log failed");
            }
        }
    }

    fn closed(self) {
        if let Some(reply) = self.closing {
            let _ = reply.send(());
        }
    }
}
