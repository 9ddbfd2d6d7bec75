//! The receiver's durable inbox: a directory of segments where durable messages are recorded,
//! per stream (sender, outbox) and in sequence order, until their handler has returned.
//!
//! This is the inbox's local half: opening (and recovering), recording at a durability level
//! with deduplication by watermark, the dispatcher's side (take a stream's next message, mark it
//! handled), the limits, retention and compaction. The server that records from connections and
//! runs handlers is the next step (see the module docs of [`durable`](crate::durable),
//! "Status").

mod dispatcher;
mod held;
mod journal;
pub(crate) mod marks;
mod state;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

pub use self::dispatcher::MAX_RUNNING;
pub(crate) use self::dispatcher::{Dispatching, run as run_inbox};
use self::held::{Held, Taken};
use self::journal::{Clock, Command, Settings, Writer};
#[cfg_attr(not(test), allow(unused_imports))]
pub(crate) use self::state::{Delivery, Outcome};
use self::state::{Limits, State, StreamKey};
use super::log::record::MAX_MESSAGE;
use super::log::segment::{Identity, Role};
use super::log::writer::{Control, Handle};
use super::log::{Counters, DEFAULT_SEGMENT_BYTES, Log, LogConfig, runs};
use super::{DEFAULT_MAX_BYTES, Durability, DurableError, MessageId, OutboxId};

/// Most [`InboxConfig::unsynced_marks`]: a run's messages, since a run ends with every mark
/// synced.
pub const MAX_UNSYNCED_MARKS: usize = dispatcher::RUN - 1;

/// Default [`InboxConfig::max_streams`].
pub const DEFAULT_MAX_STREAMS: usize = 65_536;

/// Default [`InboxConfig::stream_retention`]: 30 days.
pub const DEFAULT_STREAM_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The name an inbox's segments carry in their header (an inbox has no name of its own: the
/// server's is the one its senders know, and it may change).
const INBOX_NAME: &str = "inbox";

/// How an [`Inbox`] is opened.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InboxConfig {
    durability: Durability,
    max_bytes: u64,
    max_streams: usize,
    stream_retention: Duration,
    segment_bytes: u64,
    unsynced_marks: usize,
    handler_timeout: Option<Duration>,
    clock: Clock,
}

impl Default for InboxConfig {
    /// [`Durability::Process`], a limit of [`DEFAULT_MAX_BYTES`] unhandled bytes and
    /// [`DEFAULT_MAX_STREAMS`] streams, a retention of [`DEFAULT_STREAM_RETENTION`], segments of
    /// 64 MiB, no unsynced marks (the exact guarantee through a power loss), no handler timeout.
    fn default() -> InboxConfig {
        InboxConfig {
            durability: Durability::default(),
            max_bytes: DEFAULT_MAX_BYTES,
            max_streams: DEFAULT_MAX_STREAMS,
            stream_retention: DEFAULT_STREAM_RETENTION,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            unsynced_marks: 0,
            handler_timeout: None,
            clock: Clock::system(),
        }
    }
}

impl InboxConfig {
    /// How far a record has gone before the message is acknowledged, and a "handled" mark
    /// before the stream's next handler starts.
    pub fn durability(mut self, durability: Durability) -> InboxConfig {
        self.durability = durability;
        self
    }

    /// Bytes of recorded, unhandled messages (as stored: with their sender, outbox, sequence
    /// and record header, about 26 bytes more than the message plus the sender's name) past
    /// which a new message is refused with [`DurableError::Full`] (`ResourceExhausted`; the
    /// sender keeps it and retries).
    pub fn max_bytes(mut self, max_bytes: u64) -> InboxConfig {
        self.max_bytes = max_bytes;
        self
    }

    /// Streams (sender, outbox) tracked, past which a message of a new stream is refused with
    /// [`DurableError::TooManyStreams`] (`ResourceExhausted`). Each costs about 100 bytes of
    /// memory and of every checkpoint.
    pub fn max_streams(mut self, max_streams: usize) -> InboxConfig {
        self.max_streams = max_streams;
        self
    }

    /// How long a stream with nothing unhandled is remembered without a message. A sender
    /// that redelivers an old message after its stream was forgotten is refused as a gap
    /// (PROTOCOL.md §19: an unknown stream starts at sequence 1); keep it longer than any
    /// sender may stay away.
    pub fn stream_retention(mut self, retention: Duration) -> InboxConfig {
        self.stream_retention = retention;
        self
    }

    /// Size at which a segment file is closed and the next one started (at least 4 KiB).
    pub fn segment_bytes(mut self, segment_bytes: u64) -> InboxConfig {
        self.segment_bytes = segment_bytes.max(4096);
        self
    }

    /// At the power level, how many of a stream's "handled" marks may still wait for their sync
    /// when its next handler starts (default 0; at most [`MAX_UNSYNCED_MARKS`]).
    ///
    /// With 0, each handler's return is synced before the stream's next handler starts: a
    /// power loss reruns at most the one handler per stream that was running, but one stream
    /// is handled at the disk's sync rate (streams share syncs, whatever this is). With `n`, a
    /// stream's marks share syncs too, and a power loss may rerun up to its last `n + 1`
    /// handlers, each with its same [`MessageId`]: for handlers that record the id with their
    /// effect and skip ids they have seen. Every mark is still written to the OS before the
    /// next handler starts, so a process crash (`kill -9`) reruns at most the one that was
    /// running, as at the process level. No effect at the process level.
    pub fn unsynced_marks(mut self, n: usize) -> InboxConfig {
        self.unsynced_marks = n.min(MAX_UNSYNCED_MARKS);
        self
    }

    /// How long a handler may run (default: no limit). Its context has the deadline; one that
    /// runs past it is dropped and its message counts as handled, with `DeadlineExceeded` in
    /// the log, as a failed handler's does: the inbox delivers, it does not retry. Without a
    /// limit, a handler that never returns holds its stream (its sender's later messages)
    /// until the server stops.
    pub fn handler_timeout(mut self, timeout: Option<Duration>) -> InboxConfig {
        self.handler_timeout = timeout;
        self
    }

    /// The source of time for retention (Unix seconds): tests move it by hand.
    #[cfg(test)]
    pub(crate) fn clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> InboxConfig {
        self.clock = Clock(Arc::new(clock));
        self
    }
}

/// A stream as [`Inbox::streams`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The sender's name, as its outbox recorded it.
    pub sender: String,
    /// The sender's outbox.
    pub outbox: OutboxId,
    /// Every message up to this sequence is recorded (acknowledged to the sender).
    pub recorded: u64,
    /// Every handler up to this sequence has returned.
    pub handled: u64,
    /// Bytes the `recorded - handled` unhandled messages take in the log (counted against
    /// [`InboxConfig::max_bytes`]).
    pub bytes: u64,
}

/// A receiver's durable inbox. Cheap to clone: every clone sends to the same writer.
///
/// The log is closed when [`close`](Inbox::close) is called, or when the last clone is dropped
/// (then in the background: a reopen right after may find it still [`Locked`](DurableError::Locked)).
#[derive(Clone)]
pub struct Inbox {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Handle<Command>,
    /// The handled marks' sidecar, written by the dispatcher.
    marks: marks::Marks,
    /// [`InboxConfig::unsynced_marks`] (0 at the process level, where marks are not synced).
    unsynced_marks: usize,
    /// [`InboxConfig::handler_timeout`].
    handler_timeout: Option<Duration>,
    /// Woken when a stream has a message ready for a handler (one stored permit: no wake-up
    /// is lost between a take that found nothing and the wait).
    #[cfg_attr(not(test), allow(dead_code))]
    ready: Arc<Notify>,
    /// Shared with the log; read by the tests (and by metrics, once they exist).
    #[cfg_attr(not(test), allow(dead_code))]
    counters: Arc<Counters>,
    /// The bytes of the messages handed to the dispatcher whose runs have not ended, counted
    /// by the writer as it hands them out; read by the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    held: Arc<Held>,
}

/// A durable message a connection received, checked ([`Inbox::incoming`]) and ready to be
/// recorded with the others of its turn ([`Inbox::submit_records`]).
#[derive(Debug)]
pub(crate) struct Incoming {
    key: StreamKey,
    sequence: u64,
    acknowledged: u64,
    message: Bytes,
}

/// What [`Inbox::submit_records`] answers: each record's [`Outcome`], in the order submitted,
/// once their batch reached the inbox's level. A future of its own type rather than an
/// `async` block, so that a connection keeps its turns' answers in a queue, in the order it
/// submitted them, with no box and no task node. The writer takes commands in the order they
/// were queued and answers a batch's in that order.
pub(crate) struct RecordAnswers {
    answer: oneshot::Receiver<Vec<Result<Outcome, DurableError>>>,
    /// How many records: each is answered `Closed` should the writer have gone.
    count: usize,
    /// For the directory's path, should the writer have gone: not a copy per message.
    inbox: Inbox,
}

impl Future for RecordAnswers {
    type Output = Vec<Result<Outcome, DurableError>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| {
                let path = self.inbox.inner.writer.dir();
                (0..self.count).map(|_| Err(DurableError::Closed { path: path.to_owned() })).collect()
            })
        })
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox").field("dir", &self.inner.writer.dir()).finish_non_exhaustive()
    }
}

impl Inbox {
    /// Opens the inbox in `dir`, creating it if it holds no log, and recovers every stream's
    /// watermarks and unhandled messages. A message whose handler was running when the inbox
    /// last stopped is unhandled again: its handler will run again with the same
    /// [`MessageId`].
    ///
    /// At [`Durability::Process`] the log's writer is a task on the runtime this is called on
    /// (at [`Durability::Power`] a thread; see `log/writer.rs`): the inbox works as long as that
    /// runtime runs.
    ///
    /// # Errors
    /// [`Locked`](DurableError::Locked) if another process has it open;
    /// [`Corrupt`](DurableError::Corrupt) if a record other than a torn tail fails its checksum
    /// or does not decode, or the directory holds an outbox; [`Io`](DurableError::Io) if the
    /// files cannot be read or written.
    pub async fn open(dir: impl AsRef<Path>, config: InboxConfig) -> Result<Inbox, DurableError> {
        let dir = dir.as_ref().to_owned();
        let counters = Arc::new(Counters::default());
        let ready = Arc::new(Notify::new());
        let held = Arc::new(Held::default());
        let settings = Settings {
            limits: Limits { max_bytes: config.max_bytes, max_streams: config.max_streams },
            retention: config.stream_retention.as_secs(),
            clock: config.clock.clone(),
            ready: ready.clone(),
            held: held.clone(),
        };
        let thread_dir = dir.clone();
        let thread_counters = counters.clone();
        let durability = config.durability;
        let unsynced_marks = if durability == Durability::Power { config.unsynced_marks } else { 0 };
        let handler_timeout = config.handler_timeout;
        let (writer, marks) = Handle::spawn("zrpc-inbox", &dir, durability, move || {
            let (log, state) = open_log(&thread_dir, &config, thread_counters)?;
            let marks = marks::Marks::create(&thread_dir, durability)?;
            Ok((log, Writer::new(state, settings), marks))
        })
        .await?;
        Ok(Inbox { inner: Arc::new(Inner { writer, marks, unsynced_marks, handler_timeout, ready, counters, held }) })
    }

    /// The inbox's directory.
    pub fn dir(&self) -> &Path {
        self.inner.writer.dir()
    }

    /// Every stream the inbox tracks, with its watermarks and unhandled bytes.
    ///
    /// # Errors
    /// [`Closed`](DurableError::Closed).
    pub async fn streams(&self) -> Result<Vec<StreamInfo>, DurableError> {
        self.inner.writer.call(|reply| Command::Streams { reply }).await
    }

    /// Finishes the writes queued, closes the log and releases its lock, for every clone.
    ///
    /// # Errors
    /// [`Closed`](DurableError::Closed) if it was closed already.
    pub async fn close(&self) -> Result<(), DurableError> {
        self.inner.writer.call(|reply| Command::Control(Control::Close(reply))).await
    }

    /// [`submit_record`](Inbox::submit_record), awaited: how the tests record.
    #[cfg(test)]
    pub(crate) async fn record(
        &self,
        sender: &str,
        outbox: OutboxId,
        sequence: u64,
        acknowledged: u64,
        message: Bytes,
    ) -> Result<Outcome, DurableError> {
        self.submit_record(sender.into(), outbox, sequence, acknowledged, message)?.await
    }

    /// [`submit_records`](Inbox::submit_records) of one message: how the tests record.
    #[cfg(test)]
    pub(crate) fn submit_record(
        &self,
        sender: Arc<str>,
        outbox: OutboxId,
        sequence: u64,
        acknowledged: u64,
        message: Bytes,
    ) -> Result<impl Future<Output = Result<Outcome, DurableError>> + use<>, DurableError> {
        let records = self.submit_records(vec![Inbox::incoming(sender, outbox, sequence, acknowledged, message)?])?;
        let path = self.inner.writer.dir().to_owned();
        Ok(async move { records.await.pop().unwrap_or(Err(DurableError::Closed { path })) })
    }

    /// Checks message `sequence` of the stream (`sender`, `outbox`) for
    /// [`submit_records`](Inbox::submit_records): its sender's name and its size.
    ///
    /// `acknowledged` is the request's (PROTOCOL.md §19): the highest sequence the sender was
    /// told is recorded, 0 for none. A stream this inbox forgot after its retention (or lost),
    /// with nothing left to handle, resumes after it instead of refusing the sender's next
    /// message as a gap that no message the sender still has could fill.
    ///
    /// `message` is opaque here: the server stores the request's method, codec, metadata,
    /// trace and payload in it.
    ///
    /// # Errors
    /// [`TooLarge`](DurableError::TooLarge) above 16 MiB; [`InvalidName`](DurableError::InvalidName);
    /// [`InvalidSequence`](DurableError::InvalidSequence) for a sequence past the last a log
    /// holds (2^63 − 1), which no outbox reaches: recorded, it would leave its stream no next.
    pub(crate) fn incoming(
        sender: Arc<str>,
        outbox: OutboxId,
        sequence: u64,
        acknowledged: u64,
        message: Bytes,
    ) -> Result<Incoming, DurableError> {
        super::outbox::check_name(&sender)?;
        if message.len() > MAX_MESSAGE {
            return Err(DurableError::TooLarge { size: message.len(), limit: MAX_MESSAGE });
        }
        if sequence > runs::LAST_SEQUENCE {
            return Err(DurableError::InvalidSequence { sequence });
        }
        Ok(Incoming { key: StreamKey { sender, outbox }, sequence, acknowledged, message })
    }

    /// Records each of `records`, in order, that is its stream's next, and answers once they
    /// reached the inbox's level (with every other record and mark of their batch: one write,
    /// and at the power level one sync). A connection submits the durable messages of one
    /// turn together: one command, one answer and one wake-up for all of them. The answers are
    /// what the acknowledgements are built from ([`Outcome`]); a duplicate or a gap is answered
    /// after the same batch, so that no acknowledgement covers a record not yet at the level.
    ///
    /// Each record's answer may be [`Full`](DurableError::Full) or
    /// [`TooManyStreams`](DurableError::TooManyStreams) (a message that would be recorded;
    /// duplicates and gaps are answered even when full), [`Io`](DurableError::Io) if the
    /// batch's write or sync failed, or [`Closed`](DurableError::Closed).
    ///
    /// # Errors
    /// [`Busy`](DurableError::Busy), at once, when the writer's queue is full (the messages
    /// are refused, unprocessed, and their sender tries again); [`Closed`](DurableError::Closed).
    ///
    /// The command is queued before this returns, so a connection records its messages in
    /// the order they arrived, whatever order the answers are then awaited in (a stream's
    /// message queued after its successor would be refused as a gap).
    ///
    /// # Cancel safety
    /// The returned future, dropped, leaves the messages to be recorded all the same; the
    /// sender's retry is then answered as a duplicate.
    pub(crate) fn submit_records(&self, records: Vec<Incoming>) -> Result<RecordAnswers, DurableError> {
        let count = records.len();
        let answer = self.inner.writer.submit(|reply| Command::Record { records, reply })?;
        Ok(RecordAnswers { answer, count, inbox: self.clone() })
    }

    /// The next unhandled message of up to `max` streams that have no handler running, in
    /// the order the streams became ready; each such stream then has its handler running
    /// until [`handled`](Inbox::handled) is called for its message. Empty when none is ready:
    /// wait on [`ready`](Inbox::ready) and take again.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) async fn take(&self, max: usize) -> Result<Taken, DurableError> {
        self.take_runs(max, 1).await
    }

    /// [`take`](Inbox::take) with up to `per_stream` messages of each stream, in order, each
    /// stream's together; the stream's handler counts as running until
    /// [`handled`](Inbox::handled) is called for the last of them.
    pub(crate) async fn take_runs(&self, max: usize, per_stream: usize) -> Result<Taken, DurableError> {
        self.inner.writer.call(|reply| Command::Take { max, per_stream, reply }).await?
    }

    /// Asks for the messages after `id` (up to `per_stream`) of its stream, whose handler holds
    /// it up to `id` and then holds them too ([`State::extend`](state::State::extend)). Queued
    /// now, answered after the writer's batch: a handler asks for its stream's next run when
    /// it starts one, and has it when that one is done. `None` when the writer's queue is full.
    pub(crate) fn extend(
        &self,
        id: &MessageId,
        per_stream: usize,
    ) -> Option<impl Future<Output = Result<Taken, DurableError>> + Send + use<>> {
        let key = StreamKey { sender: id.sender_arc().clone(), outbox: id.outbox() };
        let (after, path) = (id.sequence(), self.inner.writer.dir().to_owned());
        let answer = self.inner.writer.submit(|reply| Command::Extend { key, after, max: per_stream, reply }).ok()?;
        Some(async move { answer.await.unwrap_or(Err(DurableError::Closed { path })) })
    }

    /// Writes "handled up to `id`" to the log without waiting for it: for a handler that goes
    /// on with its stream's next run, whose own mark covers this one's should this one be
    /// lost (the writer's queue full, or closed). The sidecar has each handler's mark already.
    pub(crate) fn handled_soon(&self, id: &MessageId) {
        let key = StreamKey { sender: id.sender_arc().clone(), outbox: id.outbox() };
        let up_to = id.sequence();
        let _ = self.inner.writer.submit(|reply| Command::Handled { key, up_to, reply });
    }

    /// Records that the handler of message `id` has returned ("handled up to its sequence",
    /// at the inbox's level) and only then lets its stream's next message be taken. Returns
    /// how many messages that released (0 for a mark at or below an earlier one).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) async fn handled(&self, id: &MessageId) -> Result<u64, DurableError> {
        let key = StreamKey { sender: id.sender().into(), outbox: id.outbox() };
        let up_to = id.sequence();
        self.inner.writer.call(|reply| Command::Handled { key, up_to, reply }).await?
    }

    /// Records in the sidecar that the handler of message `id` has returned, at the inbox's
    /// level, so that the stream's next message of the same run may start; [`handled`](Inbox::handled)
    /// for the run's last message then writes it to the log and releases the stream.
    #[cfg(test)]
    pub(crate) async fn mark(&self, id: &MessageId) -> Result<(), DurableError> {
        self.inner.marks.mark(id).await
    }

    /// The sidecar's marks: [`write`](marks::Marks::write) as a handler returns,
    /// [`synced`](marks::Marks::synced) before the stream's next handler when more than
    /// [`unsynced_marks`](Inbox::unsynced_marks) wait.
    pub(crate) fn marks(&self) -> &marks::Marks {
        &self.inner.marks
    }

    /// [`InboxConfig::unsynced_marks`] at the power level, 0 at the process level.
    pub(crate) fn unsynced_marks(&self) -> usize {
        self.inner.unsynced_marks
    }

    /// [`InboxConfig::handler_timeout`].
    pub(crate) fn handler_timeout(&self) -> Option<Duration> {
        self.inner.handler_timeout
    }

    /// Notified (one stored permit) after a batch that left a stream with a message ready.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn ready(&self) -> &Notify {
        &self.inner.ready
    }

    /// The log's counters (syncs, writes, records scanned at open, segments deleted and
    /// rewritten).
    #[cfg(test)]
    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// What the dispatcher holds: see [`Held`].
    #[cfg(test)]
    pub(crate) fn held(&self) -> &Held {
        &self.inner.held
    }
}

/// Opens or creates the log and rebuilds the state from it, makes sure the head starts with a
/// checkpoint, then compacts what the last run left.
fn open_log(dir: &Path, config: &InboxConfig, counters: Arc<Counters>) -> Result<(Log, State), DurableError> {
    let identity = Identity { role: Role::Inbox, name: INBOX_NAME.into(), id: OutboxId::from_u64(fastrand::u64(..)) };
    let log_config = LogConfig { segment_bytes: config.segment_bytes, durability: config.durability };
    let opened = Log::open(dir, log_config, identity, &State::default().checkpoint(), counters)?;
    let mut log = opened.log;
    let mut state = State::replay(&mut log, opened.checkpoint.as_deref(), opened.replay, config.clock.now())?;
    runs::after_open(&mut state, &mut log)?;
    apply_marks(dir, &mut log, &mut state)?;
    Ok((log, state))
}

/// Moves the sidecar's handled marks (see `marks.rs`) into the log, then empties the sidecar.
fn apply_marks(dir: &Path, log: &mut Log, state: &mut State) -> Result<(), DurableError> {
    // Only the streams the log has: a mark of any other is ignored, and is not kept in memory.
    let tracked: std::collections::HashSet<(u64, u64)> =
        state.streams().map(|(key, ..)| (key.outbox.as_u64(), marks::sender_hash(&key.sender))).collect();
    let marks: std::collections::HashMap<(u64, u64), u64> =
        marks::read(dir, |outbox, hash| tracked.contains(&(outbox, hash)))?
            .into_iter()
            .map(|m| ((m.outbox, m.sender_hash), m.handled))
            .collect();
    if !marks.is_empty() {
        let ahead: Vec<(StreamKey, u64)> = state
            .streams()
            .filter_map(|(key, recorded, handled, _)| {
                let mark = *marks.get(&(key.outbox.as_u64(), marks::sender_hash(&key.sender)))?;
                (mark > handled).then(|| (key.clone(), mark.min(recorded)))
            })
            .collect();
        for (key, up_to) in ahead {
            state.handled(log, &key, up_to)?;
        }
        log.flush()?;
    }
    Ok(())
}
