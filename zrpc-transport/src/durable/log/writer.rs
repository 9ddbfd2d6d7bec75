//! The writer thread: the one owner of a log, which commits what every caller queued with one
//! write and one sync (group commit).
//!
//! The loop, per batch:
//!
//! 1. wait for a command; then take every command already queued, up to [`MAX_BATCH`] commands
//!    or [`MAX_BATCH_BYTES`] of records;
//! 2. [`Journal::apply`] each in order: it checks the command and adds its records to the log's
//!    batch, keeping its reply for later;
//! 3. [`Log::flush`]: one `write` and, at the power level, one `fdatasync` for the whole batch;
//! 4. [`Journal::complete`]: answer every command of the batch (so no append returns before
//!    its record reached the level), then upkeep (rolling, compaction).
//!
//! Under load, commands queue while the previous batch syncs, so one sync serves them all: the
//! rate at the power level is batches per second times the batch, not the disk's syncs per
//! second. A thread rather than a tokio task, since `write` and `fdatasync` block; callers wait on
//! a `oneshot`, never on the thread.

use tokio::sync::mpsc;

use super::Log;
use crate::durable::DurableError;

/// Most commands taken into one batch.
pub(crate) const MAX_BATCH: usize = 4096;

/// Most record bytes a batch grows to before it is written (a command is never split: the batch
/// that passes this ends with it).
pub(crate) const MAX_BATCH_BYTES: usize = 4 << 20;

/// Whether the loop goes on after a command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// Finish this batch, then close the log.
    Stop,
}

/// What a log's owner does with the commands sent to its writer thread.
pub(crate) trait Journal {
    /// A request from a caller, with its reply channel.
    type Command: Send;

    /// Takes one command: checks it, adds its records to `log`'s batch, keeps its reply until
    /// [`complete`](Journal::complete).
    fn apply(&mut self, log: &mut Log, command: Self::Command) -> Flow;

    /// The batch was written (and synced at the power level), or failed: answers the batch's
    /// commands, then does upkeep.
    fn complete(&mut self, log: &mut Log, written: Result<(), DurableError>);

    /// The loop ended and the log is closed (its lock released).
    fn closed(self);
}

/// Runs the writer loop until every sender is dropped or a command stops it.
pub(crate) fn run<J: Journal>(mut log: Log, mut journal: J, mut commands: mpsc::Receiver<J::Command>) {
    while let Some(first) = commands.blocking_recv() {
        let mut flow = journal.apply(&mut log, first);
        let mut taken = 1;
        while flow == Flow::Continue && taken < MAX_BATCH && log.batch_bytes() < MAX_BATCH_BYTES {
            match commands.try_recv() {
                Ok(command) => flow = journal.apply(&mut log, command),
                Err(_) => break,
            }
            taken += 1;
        }
        let written = log.flush();
        journal.complete(&mut log, written);
        if flow == Flow::Stop {
            break;
        }
    }
    drop(log);
    journal.closed();
}
