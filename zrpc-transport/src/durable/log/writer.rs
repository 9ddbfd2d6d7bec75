//! The writer: the one owner of a log, which commits what every caller queued with one write
//! and, at the power level, one sync (group commit).
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
//! Under load, commands queue while the previous batch is written, so one write (and one sync)
//! serves them all: the rate at the power level is batches per second times the batch, not the
//! disk's syncs per second. Callers wait on a `oneshot`, never on the writer.
//!
//! Where the loop runs depends on the level, because of what a batch waits for:
//!
//! - **Power: a thread of its own.** `fdatasync` waits for the disk, milliseconds, which must
//!   not hold a runtime's worker.
//! - **Process: a task on the runtime that opened the log.** Nothing there waits for the disk: a
//!   batch's `write` is a copy into the page cache, like a socket's, and reading a message back
//!   mostly finds it in the page cache too. As a thread, the writer cost more than its work: it
//!   slept between batches, every batch woke it (a futex and a context switch, taking the core
//!   from a worker) and every answer woke its caller from outside the runtime (through the
//!   runtime's shared queue, often unparking a worker). In the durable bench at 100 callers
//!   that was about 100,000 context switches per million messages, with the two cores idle a
//!   sixth of the time; as tasks, 809, and the million messages took 2.3 s of CPU instead of
//!   4.3 (README, "Durable calls"). What can still block the worker: reading back messages the
//!   page cache no longer holds (a backlog after a restart, read in 128 KiB pieces), creating
//!   and deleting segments (once per `segment_bytes`), and a `write` the kernel throttles when
//!   too much of the page cache is dirty. Opening the log (reading the last segment whole,
//!   replaying from the checkpoint) runs on tokio's blocking pool, at both levels.
//!
//! The loop does not yield between batches: taking batch after batch while commands keep
//! coming is bounded by tokio's budget (its `recv` counts, 128 per turn). Tried and measured:
//! `yield_now` after each batch cut the process bench's call p999 from 3.6–4.2 ms to 0.7–1.3 ms
//! (the thread's was 3.4–4.2) for 5–8% fewer messages a second, but with 100 single-caller
//! outboxes on one runtime it cut what they had acknowledged from 122k–140k to 76k–83k a second
//! and raised the call p50 from about 0.1 to 0.8 ms: a yielded task waits for the worker's next
//! driver poll, which a busy worker makes every 61 tasks.
//!
//! What the task loses: a thread read a backlog back in parallel with the handlers, on the
//! other core. A task woken by the dispatcher's request for more runs next on the dispatcher's
//! worker (tokio's LIFO slot), so reading and handling mostly take turns: one stream's
//! recorded backlog of 1,000,000 messages drains at 0.96M–1.10M/s instead of 1.29M–1.36M (three
//! of four rounds; `durable --only backlog`), while it is recorded at 537k–871k/s instead of
//! 373k–546k.

use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, oneshot};

use super::Log;
use crate::durable::{Durability, DurableError};

/// Commands queued for a writer before callers wait for room: bounds the memory of
/// messages handed over and not yet written. An inbox's record command carries the durable
/// requests one turn of a connection started; each is a request in progress until answered,
/// so the connection's own limits (`max_requests`, `max_request_bytes`) bound what it holds.
pub(crate) const QUEUE: usize = 8192;

/// Most commands taken into one batch.
pub(crate) const MAX_BATCH: usize = 4096;

/// Most record bytes a batch grows to before it is written (a command is never split: the batch
/// that passes this ends with it).
pub(crate) const MAX_BATCH_BYTES: usize = 4 << 20;

/// Whether the loop goes on after a command.
#[derive(Debug)]
pub(crate) enum Flow {
    Continue,
    /// Finish this batch, then close the log.
    Stop,
    /// Test hook: wait until the sender is dropped or sends, then go on taking commands into
    /// this batch (see [`Control::Hold`]).
    #[cfg(test)]
    Hold(oneshot::Receiver<()>),
}

/// What a log's owner does with the commands sent to its writer.
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
pub(crate) async fn run<J: Journal>(mut log: Log, mut journal: J, mut commands: mpsc::Receiver<J::Command>) {
    while let Some(first) = commands.recv().await {
        let mut flow = journal.apply(&mut log, first);
        let mut taken = 1;
        loop {
            #[cfg(test)]
            if let Flow::Hold(until) = flow {
                let _ = until.await;
                flow = Flow::Continue;
            }
            if !matches!(flow, Flow::Continue) || taken >= MAX_BATCH || log.batch_bytes() >= MAX_BATCH_BYTES {
                break;
            }
            match commands.try_recv() {
                Ok(command) => flow = journal.apply(&mut log, command),
                Err(_) => break,
            }
            taken += 1;
        }
        log.counters.commands.fetch_add(taken as u64, std::sync::atomic::Ordering::Relaxed);
        let written = log.flush();
        journal.complete(&mut log, written);
        if matches!(flow, Flow::Stop) {
            break;
        }
    }
    drop(log);
    journal.closed();
}

/// Commands every writer takes besides its owner's: closing, and the tests' hooks.
#[derive(Debug)]
pub(crate) enum Control {
    /// Finish the batch, close the log, then answer.
    Close(oneshot::Sender<()>),
    /// Test hook: hold the writer until the sender is dropped or sends, so that a test can
    /// queue commands that will share one batch.
    #[cfg(test)]
    Hold(oneshot::Receiver<()>),
    /// Test hook: stop as a `kill -9` would (the batch being built is lost), then answer.
    #[cfg(test)]
    Crash(oneshot::Sender<()>),
    /// Test hook: lose what was not synced, as a power loss would, then answer.
    #[cfg(test)]
    LosePower(oneshot::Sender<()>),
}

impl Control {
    /// Applies it. A command that stops the log leaves its reply in `closing`, for
    /// [`Journal::closed`] to answer once the log is closed.
    #[cfg_attr(not(test), allow(unused_variables))]
    pub(crate) fn apply(self, log: &mut Log, closing: &mut Option<oneshot::Sender<()>>) -> Flow {
        match self {
            Control::Close(reply) => {
                *closing = Some(reply);
                Flow::Stop
            }
            #[cfg(test)]
            Control::Hold(until) => Flow::Hold(until),
            #[cfg(test)]
            Control::Crash(reply) => {
                log.crash();
                *closing = Some(reply);
                Flow::Stop
            }
            #[cfg(test)]
            Control::LosePower(reply) => {
                log.lose_power();
                *closing = Some(reply);
                Flow::Stop
            }
        }
    }
}

/// The callers' side of a writer: where its commands go.
#[derive(Debug)]
pub(crate) struct Handle<C> {
    dir: PathBuf,
    commands: mpsc::Sender<C>,
}

impl<C: Send + 'static> Handle<C> {
    /// Opens the log with `open` on tokio's blocking pool, then starts the writer loop with the
    /// journal it returned: at [`Durability::Power`] on a thread named `name`, at
    /// [`Durability::Process`] as a task on the current runtime (see the module docs). Returns
    /// once the log is open, with the third thing `open` returned.
    ///
    /// # Errors
    /// What `open` returned; [`Io`](DurableError::Io) if the thread cannot start;
    /// [`Closed`](DurableError::Closed) if `open` panicked.
    pub(crate) async fn spawn<J, T>(
        name: &str,
        dir: &Path,
        durability: Durability,
        open: impl FnOnce() -> Result<(Log, J, T), DurableError> + Send + 'static,
    ) -> Result<(Handle<C>, T), DurableError>
    where
        J: Journal<Command = C> + Send + 'static,
        T: Send + 'static,
    {
        let (log, journal, value) =
            tokio::task::spawn_blocking(open).await.map_err(|_| DurableError::Closed { path: dir.to_owned() })??;
        let (commands, queue) = mpsc::channel(QUEUE);
        match durability {
            Durability::Process => {
                tokio::spawn(run(log, journal, queue));
            }
            Durability::Power => {
                // A runtime of the thread's own, without I/O or timers: the loop only waits
                // on its queue (and the tests' hold).
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .map_err(|source| DurableError::Io { path: dir.to_owned(), source })?;
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || runtime.block_on(run(log, journal, queue)))
                    .map_err(|source| DurableError::Io { path: dir.to_owned(), source })?;
            }
        }
        Ok((Handle { dir: dir.to_owned(), commands }, value))
    }

    /// The log's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends a command to the writer and waits for its answer.
    ///
    /// # Errors
    /// [`Closed`](DurableError::Closed) if the writer has stopped.
    pub(crate) async fn call<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> C) -> Result<T, DurableError> {
        let closed = || DurableError::Closed { path: self.dir.clone() };
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())
    }

    /// Queues a command now, without waiting for room, and returns where its answer will
    /// come: for callers whose commands must reach the writer in the order they were made
    /// (an inbox records a connection's messages in arrival order).
    ///
    /// # Errors
    /// [`Busy`](DurableError::Busy) if the queue is full (its bound, 8,192 commands, is what
    /// keeps a flood of callers from growing it); [`Closed`](DurableError::Closed) if the writer
    /// has stopped.
    pub(crate) fn submit<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> C,
    ) -> Result<oneshot::Receiver<T>, DurableError> {
        let (reply, answer) = oneshot::channel();
        self.commands.try_send(command(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DurableError::Busy { path: self.dir.clone() },
            mpsc::error::TrySendError::Closed(_) => DurableError::Closed { path: self.dir.clone() },
        })?;
        Ok(answer)
    }

    /// Sends a command without waiting for its answer: for the tests' hooks.
    #[cfg(test)]
    pub(crate) async fn send(&self, command: C) {
        let _ = self.commands.send(command).await;
    }
}
