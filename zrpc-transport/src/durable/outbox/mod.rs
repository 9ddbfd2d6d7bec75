//! The sender's durable outbox: a directory of segments where messages wait, per destination
//! and in sequence order, until their receiver acknowledges them.
//!
//! Opening (and recovering), appending at a durability level, the limit, acknowledgements and
//! compaction, listing and discarding are here; [`Destination`] (`destination.rs`) is the
//! service a generated client calls through, and `delivery.rs` the task that delivers a
//! destination's messages.

mod delivery;
mod destination;
mod journal;
mod state;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

pub use self::delivery::{ATTEMPT_TIMEOUT, BACKOFF_INITIAL, BACKOFF_MAX, WINDOW};
pub use self::destination::Destination;
use self::journal::{Command, Read, Writer};
use self::state::State;
use super::log::record::MAX_MESSAGE;
pub(crate) use super::log::runs::Stored;
use super::log::segment::{Identity, Role};
use super::log::writer::{Control, Handle};
use super::log::{Counters, DEFAULT_SEGMENT_BYTES, Log, LogConfig, runs};
use super::{Durability, DurableError, OutboxId};

/// Default [`OutboxConfig::max_bytes`] and [`InboxConfig::max_bytes`](super::InboxConfig::max_bytes): 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// How an [`Outbox`] is opened.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OutboxConfig {
    sender: Arc<str>,
    durability: Durability,
    max_bytes: u64,
    segment_bytes: u64,
}

impl OutboxConfig {
    /// An outbox of `sender` (the sender name recorded when the outbox is created, 1 to 255
    /// bytes), at [`Durability::Process`], with a limit of [`DEFAULT_MAX_BYTES`] and segments of
    /// 64 MiB.
    pub fn new(sender: impl Into<Arc<str>>) -> OutboxConfig {
        OutboxConfig {
            sender: sender.into(),
            durability: Durability::default(),
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }

    /// How far an append has gone when it returns.
    pub fn durability(mut self, durability: Durability) -> OutboxConfig {
        self.durability = durability;
        self
    }

    /// Bytes of undelivered messages (as stored: with their destination, sequence and record
    /// header, about 20 bytes more than the message plus the destination's name) past which an
    /// append fails with [`DurableError::Full`].
    pub fn max_bytes(mut self, max_bytes: u64) -> OutboxConfig {
        self.max_bytes = max_bytes;
        self
    }

    /// Size at which a segment file is closed and the next one started (at least 4 KiB).
    /// Smaller segments are compacted sooner; each costs a file and a checkpoint.
    pub fn segment_bytes(mut self, segment_bytes: u64) -> OutboxConfig {
        self.segment_bytes = segment_bytes.max(4096);
        self
    }
}

/// A destination with undelivered messages, as [`Outbox::pending`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pending {
    /// The destination's name.
    pub destination: String,
    /// Its first unacknowledged sequence.
    pub first_unacknowledged: u64,
    /// The sequence its next message will get: `next_sequence - first_unacknowledged`
    /// messages wait.
    pub next_sequence: u64,
    /// Bytes they take in the log (counted against [`OutboxConfig::max_bytes`]).
    pub bytes: u64,
}

/// A sender's durable outbox. Cheap to clone: every clone sends to the same writer.
///
/// The log is closed when [`close`](Outbox::close) is called, or when the last clone is dropped
/// (then in the background: a reopen right after may find it still [`Locked`](DurableError::Locked)).
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Handle<Command>,
    sender: Arc<str>,
    id: OutboxId,
    /// Shared with the log; read by the tests (and by metrics, once they exist).
    #[cfg_attr(not(test), allow(dead_code))]
    counters: Arc<Counters>,
    /// The destinations whose delivery runs, each with what wakes its task and what it has
    /// acknowledged.
    deliveries: Mutex<HashMap<Arc<str>, Arc<Progress>>>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("dir", &self.inner.writer.dir())
            .field("sender", &self.inner.sender)
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// Opens the outbox in `dir`, creating it (and drawing its [`OutboxId`]) if it holds no
    /// log, and recovers every destination's sequences and undelivered messages.
    ///
    /// An existing outbox keeps the sender name and id recorded at its creation; a different
    /// `config` sender name is logged and ignored, since the messages already logged carry the
    /// old one.
    ///
    /// At [`Durability::Process`] the log's writer is a task on the runtime this is called on
    /// (at [`Durability::Power`] a thread; see `log/writer.rs`): the outbox works as long as
    /// that runtime runs, as the delivery tasks its destinations start do.
    ///
    /// # Errors
    /// [`DurableError::InvalidName`] for a sender name that is empty or over 255 bytes;
    /// [`Locked`](DurableError::Locked) if another process has it open;
    /// [`Corrupt`](DurableError::Corrupt) if a record other than a torn tail fails its checksum
    /// or does not decode; [`Io`](DurableError::Io) if the files cannot be read or written.
    pub async fn open(dir: impl AsRef<Path>, config: OutboxConfig) -> Result<Outbox, DurableError> {
        check_name(&config.sender)?;
        let dir = dir.as_ref().to_owned();
        let counters = Arc::new(Counters::default());
        let thread_dir = dir.clone();
        let thread_counters = counters.clone();
        let (writer, identity) = Handle::spawn("zrpc-outbox", &dir, config.durability, move || {
            let (log, state) = open_log(&thread_dir, &config, thread_counters)?;
            let identity = log.identity().clone();
            Ok((log, Writer::new(state, config.max_bytes), identity))
        })
        .await?;
        let deliveries = Mutex::default();
        Ok(Outbox { inner: Arc::new(Inner { writer, sender: identity.name, id: identity.id, counters, deliveries }) })
    }

    /// The service through which calls to the receiver named `destination` are logged, and the
    /// start of their delivery through `service` (a `Channel` to the receiver, or a `Client`
    /// that finds it): the generated client of any service works over it unchanged, for its
    /// `#[zrpc(oneway)]` methods.
    ///
    /// `destination` is the name the receiving server announces (`ServerBuilder::name`): the
    /// connection sends its messages only to a peer of that name that records durable calls.
    /// The first call of `destination` for a name starts its delivery (see [`WINDOW`],
    /// [`BACKOFF_INITIAL`]), with the messages a previous run of the program left; later calls for the
    /// same name share it, and their `service` is dropped.
    ///
    /// A name that is empty or over 255 bytes starts nothing, and every call through it fails
    /// with [`DurableError::InvalidName`] (`InvalidArgument`).
    ///
    /// # Panics
    /// Outside a Tokio runtime, which the delivery task runs on.
    pub fn destination<S>(&self, destination: impl Into<Arc<str>>, service: S) -> Destination
    where
        S: tower::Service<zrpc_core::Request, Response = zrpc_core::Response, Error = zrpc_core::Status>
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let destination = destination.into();
        let progress = if check_name(&destination).is_err() {
            Arc::new(Progress::default())
        } else {
            let mut deliveries = self.inner.deliveries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match deliveries.get(&destination) {
                Some(progress) => progress.clone(),
                None => {
                    let progress = Arc::new(Progress::default());
                    deliveries.insert(destination.clone(), progress.clone());
                    let delivery = delivery::Delivery {
                        outbox: self.clone(),
                        destination: destination.clone(),
                        service,
                        progress: progress.clone(),
                    };
                    tokio::spawn(delivery.run());
                    progress
                }
            }
        };
        Destination::new(self.clone(), destination, progress)
    }

    /// The outbox's id, drawn when it was created.
    pub fn id(&self) -> OutboxId {
        self.inner.id
    }

    /// The sender name recorded when the outbox was created.
    pub fn sender(&self) -> &str {
        &self.inner.sender
    }

    /// The outbox's directory.
    pub fn dir(&self) -> &Path {
        self.inner.writer.dir()
    }

    /// Logs `message` for `destination` and returns its sequence once the record has reached
    /// the outbox's [`Durability`] level (with every other record of its batch: one write, and
    /// at the power level one sync).
    ///
    /// This is what a destination does with an encoded request; the message is opaque bytes
    /// here.
    ///
    /// # Errors
    /// [`Full`](DurableError::Full) if the undelivered bytes would pass `max_bytes` (nothing is
    /// logged, nothing is dropped); [`TooLarge`](DurableError::TooLarge) above 16 MiB;
    /// [`InvalidName`](DurableError::InvalidName); [`Io`](DurableError::Io) if the batch's
    /// write or sync failed (at the power level its records may or may not be on disk);
    /// [`Closed`](DurableError::Closed).
    ///
    /// # Cancel safety
    /// Dropped after its record was handed over, the message may still be logged (and later
    /// delivered), as a plain call dropped after sending may still run.
    pub async fn append(&self, destination: &str, message: Bytes) -> Result<u64, DurableError> {
        self.append_to(destination.into(), message).await
    }

    /// [`append`](Outbox::append) for a destination whose name is shared already: a
    /// [`Destination`]'s calls, which would otherwise allocate the name per message.
    pub(super) async fn append_to(&self, destination: Arc<str>, message: Bytes) -> Result<u64, DurableError> {
        check_name(&destination)?;
        if message.len() > MAX_MESSAGE {
            return Err(DurableError::TooLarge { size: message.len(), limit: MAX_MESSAGE });
        }
        self.inner.writer.call(|reply| Command::Append { destination, message, reply }).await?
    }

    /// The destinations with undelivered messages, with their sequences and bytes: what waits
    /// for a destination the program no longer opens.
    ///
    /// # Errors
    /// [`Closed`](DurableError::Closed).
    pub async fn pending(&self) -> Result<Vec<Pending>, DurableError> {
        self.inner.writer.call(|reply| Command::Pending { reply }).await
    }

    /// The sequence the next message logged for `destination` will get: 1 for a destination
    /// never used, and one past its last message, delivered or not. A program that numbers its
    /// messages by their sequence resumes here after a restart, also once every message was
    /// acknowledged (when [`pending`](Outbox::pending) no longer lists the destination).
    ///
    /// # Errors
    /// [`InvalidName`](DurableError::InvalidName); [`Closed`](DurableError::Closed).
    pub async fn next_sequence(&self, destination: &str) -> Result<u64, DurableError> {
        check_name(destination)?;
        self.inner.writer.call(|reply| Command::NextSequence { destination: destination.into(), reply }).await
    }

    /// Drops every undelivered message of `destination`, as if its receiver had acknowledged
    /// them, and logs how many with a `tracing::warn!`. Its sequences go on (a receiver must
    /// not see a sequence again). Returns how many messages were dropped.
    ///
    /// # Errors
    /// As [`append`](Outbox::append), but never `Full`.
    pub async fn discard(&self, destination: &str) -> Result<u64, DurableError> {
        check_name(destination)?;
        self.inner.writer.call(|reply| Command::Discard { destination: destination.into(), reply }).await?
    }

    /// Finishes the writes queued, closes the log and releases its lock, for every clone, and
    /// ends the deliveries.
    ///
    /// # Errors
    /// [`Closed`](DurableError::Closed) if it was closed already.
    pub async fn close(&self) -> Result<(), DurableError> {
        let closed = self.inner.writer.call(|reply| Command::Control(Control::Close(reply))).await;
        // Deliveries waiting for a message find the log closed and end.
        let deliveries = self.inner.deliveries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for progress in deliveries.values() {
            progress.wake.notify_one();
        }
        closed
    }

    /// Up to `max` messages of `destination` (and about `max_bytes`) from sequence `from` on,
    /// in order; from its first unacknowledged one if `from` is below it. For the delivery
    /// task: reading from the first unacknowledged message or just after the last one read is
    /// cheap; from far inside a run it scans the run up to there.
    pub(crate) async fn read(
        &self,
        destination: &str,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, DurableError> {
        self.inner
            .writer
            .call(|reply| Command::Read(Read { destination: destination.into(), from, max, max_bytes, reply }))
            .await?
    }

    /// Marks every message of `destination` up to `up_to` as delivered (its receiver recorded
    /// them): they stop counting against the limit and compaction reclaims their space.
    /// Returns how many messages that released; an `up_to` at or below an earlier one
    /// releases none.
    pub(crate) async fn acknowledge(&self, destination: &str, up_to: u64) -> Result<u64, DurableError> {
        self.inner.writer.call(|reply| Command::Acknowledge { destination: destination.into(), up_to, reply }).await?
    }

    /// The log's counters (syncs, records scanned at open, segments deleted and rewritten).
    #[cfg(test)]
    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }
}

/// What a destination's delivery task shares with the destination's handles.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Woken when a message was logged for the destination.
    wake: Notify,
    /// The highest sequence acknowledged by the receiver and written to the log as such.
    acknowledged: tokio::sync::watch::Sender<u64>,
}

/// Opens or creates the log and rebuilds the state from it, makes sure the head starts with a
/// checkpoint, then compacts what the last run left (segments a crash kept after they were
/// emptied).
fn open_log(dir: &Path, config: &OutboxConfig, counters: Arc<Counters>) -> Result<(Log, State), DurableError> {
    let identity =
        Identity { role: Role::Outbox, name: config.sender.clone(), id: OutboxId::from_u64(fastrand::u64(..)) };
    let log_config = LogConfig { segment_bytes: config.segment_bytes, durability: config.durability };
    let opened = Log::open(dir, log_config, identity, &State::default().checkpoint(), counters)?;
    let mut log = opened.log;
    if *log.identity().name != *config.sender {
        tracing::warn!(
            dir = %dir.display(), recorded = %log.identity().name, configured = %config.sender,
            "durable outbox: keeps the sender name recorded at its creation"
        );
    }
    let mut state = State::replay(&mut log, opened.checkpoint.as_deref(), opened.replay)?;
    runs::after_open(&mut state, &mut log)?;
    Ok((log, state))
}

/// Checks a sender or destination name: 1 to 255 bytes, so that a record stores it with one
/// length byte.
pub(crate) fn check_name(name: &str) -> Result<(), DurableError> {
    if name.is_empty() || name.len() > 255 {
        return Err(DurableError::InvalidName { name: name.to_owned(), len: name.len() });
    }
    Ok(())
}
