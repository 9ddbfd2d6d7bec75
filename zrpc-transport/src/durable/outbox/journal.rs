//! The outbox's side of the writer: the commands callers send, and how each is applied
//! to the state and the log, answered, and followed by upkeep.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::Pending;
use super::state::State;
use crate::durable::DurableError;
use crate::durable::error::again;
use crate::durable::log::Log;
use crate::durable::log::runs::Stored;
use crate::durable::log::writer::{Control, Flow, Journal};

/// A request to the writer, with where to send its answer.
#[derive(Debug)]
pub(crate) enum Command {
    /// Log a message for a destination; answered with its sequence once it reached the level.
    Append { destination: Arc<str>, message: Bytes, reply: oneshot::Sender<Result<u64, DurableError>> },
    /// Mark a destination's messages up to a sequence done; answered with how many that
    /// released once the acknowledgement reached the level.
    Acknowledge { destination: Arc<str>, up_to: u64, reply: oneshot::Sender<Result<u64, DurableError>> },
    /// Read a destination's messages from a sequence on, after the batch was written, so that
    /// nothing is read that has not reached the level.
    Read(Read),
    /// List the destinations with undelivered messages.
    Pending { reply: oneshot::Sender<Vec<Pending>> },
    /// The sequence a destination's next message will get.
    NextSequence { destination: Arc<str>, reply: oneshot::Sender<u64> },
    /// Drop every undelivered message of a destination (its sequences go on).
    Discard { destination: Arc<str>, reply: oneshot::Sender<Result<u64, DurableError>> },
    /// Closing, and the tests' hooks.
    Control(Control),
}

/// An answer waiting for its batch to be written.
#[derive(Debug)]
enum Waiting {
    Appended(oneshot::Sender<Result<u64, DurableError>>, u64),
    Acknowledged(oneshot::Sender<Result<u64, DurableError>>, u64),
    Read(Read),
}

/// A read of up to `max` messages (about `max_bytes`) of a destination from `from` on.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) destination: Arc<str>,
    pub(crate) from: u64,
    pub(crate) max: usize,
    pub(crate) max_bytes: usize,
    pub(crate) reply: oneshot::Sender<Result<Vec<Stored>, DurableError>>,
}

/// The outbox's state and the answers of the batch being built.
#[derive(Debug)]
pub(crate) struct Writer {
    state: State,
    max_bytes: u64,
    waiting: Vec<Waiting>,
    /// An acknowledgement in this batch: compaction may have something to do.
    acknowledged: bool,
    closing: Option<oneshot::Sender<()>>,
}

impl Writer {
    pub(crate) fn new(state: State, max_bytes: u64) -> Writer {
        Writer { state, max_bytes, waiting: Vec::new(), acknowledged: false, closing: None }
    }

    fn upkeep(&mut self, log: &mut Log) -> Result<(), DurableError> {
        if log.wants_roll() {
            log.roll(&self.state.checkpoint())?;
        }
        if std::mem::take(&mut self.acknowledged) {
            self.state.compact(log)?;
        }
        Ok(())
    }
}

impl Journal for Writer {
    type Command = Command;

    fn apply(&mut self, log: &mut Log, command: Command) -> Flow {
        match command {
            Command::Append { destination, message, reply } => {
                let size = State::record_size(&destination, &message);
                let used = self.state.used();
                if used.saturating_add(size) > self.max_bytes {
                    let _ =
                        reply.send(Err(DurableError::Full { path: log.dir().to_owned(), used, limit: self.max_bytes }));
                } else {
                    match self.state.append(log, &destination, message) {
                        Ok(sequence) => self.waiting.push(Waiting::Appended(reply, sequence)),
                        Err(refused) => {
                            let _ = reply.send(Err(refused));
                        }
                    }
                }
            }
            Command::Acknowledge { destination, up_to, reply } => {
                match self.state.acknowledge(log, &destination, up_to) {
                    Ok(released) => {
                        self.acknowledged |= released > 0;
                        self.waiting.push(Waiting::Acknowledged(reply, released));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Read(read) => self.waiting.push(Waiting::Read(read)),
            Command::Pending { reply } => {
                let _ = reply.send(self.state.pending());
            }
            Command::NextSequence { destination, reply } => {
                let _ = reply.send(self.state.next_sequence(&destination));
            }
            Command::Discard { destination, reply } => {
                let next = self.state.next_sequence(&destination);
                match self.state.acknowledge(log, &destination, next.saturating_sub(1)) {
                    Ok(released) => {
                        if released > 0 {
                            tracing::warn!(
                                dir = %log.dir().display(), destination = %destination, messages = released,
                                "durable outbox: discarded undelivered messages on request"
                            );
                        }
                        self.acknowledged |= released > 0;
                        self.waiting.push(Waiting::Acknowledged(reply, released));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Control(control) => return control.apply(log, &mut self.closing),
        }
        Flow::Continue
    }

    fn complete(&mut self, log: &mut Log, written: Result<(), DurableError>) {
        for waiting in self.waiting.drain(..) {
            let failed = written.as_ref().err().map(again);
            match waiting {
                Waiting::Appended(reply, sequence) => {
                    let _ = reply.send(failed.map_or(Ok(sequence), Err));
                }
                Waiting::Acknowledged(reply, released) => {
                    let _ = reply.send(failed.map_or(Ok(released), Err));
                }
                Waiting::Read(Read { destination, from, max, max_bytes, reply }) => {
                    let read = match failed {
                        Some(e) => Err(e),
                        None => self.state.read(log, &destination, from, max, max_bytes),
                    };
                    let _ = reply.send(read);
                }
            }
        }
        if written.is_ok()
            && let Err(e) = self.upkeep(log)
        {
            tracing::error!(dir = %log.dir().display(), error = %e, "durable outbox: rolling or compacting the log failed");
        }
    }

    fn closed(self) {
        if let Some(reply) = self.closing {
            let _ = reply.send(());
        }
    }
}
