//! What an inbox knows of its log: per stream, its two watermarks and where its recorded,
//! unhandled messages are; which streams have a message ready for a handler.
//!
//! A stream's unhandled messages are a [`Queue`] of runs (`log/runs.rs`, shared with the
//! outbox): `first` is `handled + 1`, `next` is `recorded + 1`.
//!
//! Records of an inbox (after the log's framing):
//!
//! | kind | body |
//! |---|---|
//! | [`MESSAGE`] `1` | sender (`len u8`, UTF-8) \| outbox `u64` \| sequence `u64` \| message bytes |
//! | [`HANDLED`] `2` | sender \| outbox \| up_to `u64`: every handler of the stream up to it has returned |
//! | checkpoint `0` | streams `u32`, each: sender \| outbox `u64` \| last_seen `u64` (Unix seconds) \| the queue (`first`, `next`, runs: see `log/runs.rs`) |
//!
//! Integers are little-endian. Every count is checked against the bytes left before anything is
//! allocated for it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::durable::log::record::{self, CHECKPOINT, Fields, Malformed};
use crate::durable::log::runs::{self, Key, LAST_SEQUENCE, Owner, QUEUE_BYTES, Queue, Space, malformed, missing};
use crate::durable::log::{Counters, Cursor, Location, Log};
use crate::durable::{DurableError, MessageId, OutboxId};

/// Kind of a message record.
pub(crate) const MESSAGE: u8 = 1;
/// Kind of a "handled up to n" record.
pub(crate) const HANDLED: u8 = 2;
/// Kind of a "the stream resumes after n" record: a stream this inbox forgot (or lost), whose
/// sender was told that every message up to n was recorded (PROTOCOL.md §19).
pub(crate) const RESUMED: u8 = 3;

/// Fewest bytes of one stream in a checkpoint (an empty name, no runs).
/// Bytes of messages one take reads from a stream, about (at least one message).
pub(super) const TAKE_BYTES: usize = 1 << 20;

const STREAM_BYTES: usize = 1 + 8 + 8 + QUEUE_BYTES;

/// A stream: the messages of one sender's outbox to this inbox.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct StreamKey {
    pub(crate) sender: Arc<str>,
    pub(crate) outbox: OutboxId,
}

/// A stream's messages are the message records that carry its sender and outbox.
impl Key for StreamKey {
    const MESSAGE: u8 = MESSAGE;

    fn message<'a>(&self, body: &'a [u8]) -> Result<Option<(u64, &'a [u8])>, Malformed> {
        let (sender, outbox, sequence, message) = parse_message(body)?;
        Ok((*sender == *self.sender && outbox == self.outbox).then_some((sequence, message)))
    }
}

/// What [`State::record`] did with a message: what its acknowledgement is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The message was the stream's next and is now recorded: acknowledge with `recorded`.
    Recorded { recorded: u64 },
    /// The stream already has it (a redelivery): not recorded again; acknowledge with
    /// `recorded`.
    Duplicate { recorded: u64 },
    /// An earlier message is missing: refused, unprocessed; the sender resumes at
    /// `recorded + 1`.
    Gap { recorded: u64 },
}

/// A recorded message given to a handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub(crate) id: MessageId,
    pub(crate) message: Bytes,
}

/// The limits a record is checked against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_bytes: u64,
    pub(crate) max_streams: usize,
}

/// One stream's state.
#[derive(Debug)]
struct Stream {
    /// Its unhandled messages: `first` is `handled + 1`, `next` is `recorded + 1`.
    queue: Queue,
    /// When a message of it was last seen (Unix seconds): for `stream_retention`.
    last_seen: u64,
    /// The sequence a handler is running for, if any (not logged: after a restart it is
    /// unhandled again, which is the guarantee).
    taken: Option<u64>,
}

/// The inbox's state, owned by its writer.
#[derive(Debug, Default)]
pub(crate) struct State {
    streams: BTreeMap<StreamKey, Stream>,
    /// Bytes of recorded, unhandled messages, per segment and in all: what `max_bytes` limits.
    space: Space,
    /// Streams with an unhandled message and no handler running, in the order they became so:
    /// a stream is here exactly when that holds.
    ready: VecDeque<StreamKey>,
}

impl Owner for State {
    type Key = StreamKey;

    fn queues(&mut self) -> (Vec<(&StreamKey, &mut Queue)>, &mut Space) {
        (self.streams.iter_mut().map(|(key, s)| (key, &mut s.queue)).collect(), &mut self.space)
    }

    fn checkpoint(&self) -> Vec<u8> {
        State::checkpoint(self)
    }
}

impl State {
    /// Bytes of recorded, unhandled messages (record bytes, headers included).
    pub(crate) fn used(&self) -> u64 {
        self.space.used()
    }

    /// Streams tracked.
    pub(crate) fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// The record bytes a message would take: to check the limit before recording.
    pub(crate) fn record_size(sender: &str, message: &[u8]) -> u64 {
        (record::FRAME_HEADER + 1 + 1 + sender.len() + 8 + 8 + message.len()) as u64
    }

    /// Records message `sequence` of `key` if it is the stream's next, after checking the
    /// limits; says what it did. A stream the inbox does not know starts at sequence 1, unless
    /// the sender says it was told more was recorded (`acknowledged`, below `sequence`): a
    /// stream with nothing left to handle whose `recorded` is below that resumes after it
    /// (the inbox forgot it after its retention, or lost it), with a record saying so before
    /// the message's.
    #[allow(clippy::too_many_arguments, reason = "the request's fields, then the writer's context")]
    pub(crate) fn record(
        &mut self,
        log: &mut Log,
        key: &StreamKey,
        sequence: u64,
        acknowledged: u64,
        message: Bytes,
        now: u64,
        limits: Limits,
    ) -> Result<Outcome, DurableError> {
        let (recorded, idle) = match self.streams.get_mut(key) {
            Some(stream) => {
                stream.last_seen = stream.last_seen.max(now);
                (stream.queue.next - 1, stream.queue.is_empty())
            }
            None => (0, true),
        };
        // With unhandled messages the stream cannot skip past them; the gap stands then.
        let resumed = idle && acknowledged > recorded && acknowledged < sequence;
        let recorded = if resumed { acknowledged } else { recorded };
        if sequence <= recorded {
            return Ok(Outcome::Duplicate { recorded });
        }
        if sequence > recorded + 1 {
            return Ok(Outcome::Gap { recorded });
        }
        if recorded == 0 && !self.streams.contains_key(key) && self.stream_count() >= limits.max_streams {
            return Err(DurableError::TooManyStreams { path: log.dir().to_owned(), limit: limits.max_streams });
        }
        let size = State::record_size(&key.sender, &message);
        let used = self.used();
        if used.saturating_add(size) > limits.max_bytes {
            return Err(DurableError::Full { path: log.dir().to_owned(), used, limit: limits.max_bytes });
        }
        if resumed {
            log.append(RESUMED, |b| put_mark(b, key, acknowledged));
            self.resume(key, acknowledged, now);
        }
        let (at, size) = log.append(MESSAGE, |b| {
            record::put_name(b, &key.sender);
            b.extend_from_slice(&key.outbox.as_u64().to_le_bytes());
            b.extend_from_slice(&sequence.to_le_bytes());
            b.extend_from_slice(&message);
        });
        // Kept by value, not cloned: a clone of a buffer frozen from a `BytesMut` allocates
        // (the `bytes` crate makes it shared on its first clone).
        self.add(key, sequence, at, size, now, Some(message));
        Ok(Outcome::Recorded { recorded: sequence })
    }

    /// Makes `key`'s next message `after + 1`: a stream unknown, or with nothing unhandled and
    /// recorded below `after`. An empty queue holds no bytes, so nothing is counted off.
    fn resume(&mut self, key: &StreamKey, after: u64, now: u64) {
        let queue = Queue::starting_at(after + 1);
        match self.streams.get_mut(key) {
            Some(stream) if stream.queue.is_empty() && stream.queue.next <= after => stream.queue = queue,
            Some(_) => {}
            None => {
                self.streams.insert(key.clone(), Stream { queue, last_seen: now, taken: None });
            }
        }
    }

    /// Adds message `sequence` of `key` (its next), whose record is at `at`; keeps `message`
    /// in memory for the dispatcher if there is room (`log/runs.rs`).
    fn add(&mut self, key: &StreamKey, sequence: u64, at: Location, size: u64, now: u64, message: Option<Bytes>) {
        let stream = match self.streams.get_mut(key) {
            Some(stream) => stream,
            None => self.streams.entry(key.clone()).or_insert_with(|| Stream {
                queue: Queue::starting_at(sequence),
                last_seen: now,
                taken: None,
            }),
        };
        let was_empty = stream.queue.is_empty();
        stream.queue.add(&mut self.space, sequence, at, size, message);
        if was_empty && stream.taken.is_none() {
            self.ready.push_back(key.clone());
        }
    }

    /// Takes the next unhandled messages (up to `per_stream`, and about [`TAKE_BYTES`]) of up
    /// to `max` streams that have no handler running, in order, each stream's together, and
    /// marks those streams as running until a "handled" mark reaches the last message taken.
    pub(crate) fn take(&mut self, log: &mut Log, max: usize, per_stream: usize) -> Result<Vec<Delivery>, DurableError> {
        let mut out = Vec::new();
        let mut streams = 0;
        while streams < max {
            let Some(key) = self.ready.pop_front() else { break };
            let Some(stream) = self.streams.get_mut(&key) else { continue };
            let first = stream.queue.first;
            let taken = stream.queue.read(&mut self.space, log, &key, first, per_stream.max(1), TAKE_BYTES)?;
            let Some(last) = taken.last() else {
                return Err(missing(log, 0, "a stream's first unhandled message is not in the log"));
            };
            stream.taken = Some(last.sequence);
            streams += 1;
            out.extend(taken.into_iter().map(|stored| Delivery {
                id: MessageId::new(key.sender.clone(), key.outbox, stored.sequence),
                message: stored.message,
            }));
        }
        Ok(out)
    }

    /// The unhandled messages after `after` (up to `max`, and about [`TAKE_BYTES`]) of stream
    /// `key`, taken up to `after` by a [`take`](State::take) or an earlier extension: its
    /// handler then holds them too, and the stream stays taken until a "handled" mark reaches
    /// the last. None if nothing was recorded after `after`, or the stream is not taken up to
    /// exactly it.
    pub(crate) fn extend(
        &mut self,
        log: &mut Log,
        key: &StreamKey,
        after: u64,
        max: usize,
    ) -> Result<Vec<Delivery>, DurableError> {
        let Some(stream) = self.streams.get_mut(key) else { return Ok(Vec::new()) };
        if stream.taken != Some(after) || after + 1 >= stream.queue.next {
            return Ok(Vec::new());
        }
        let taken = stream.queue.read(&mut self.space, log, key, after + 1, max.max(1), TAKE_BYTES)?;
        if let Some(last) = taken.last() {
            stream.taken = Some(last.sequence);
            Counters::bump(&log.counters().extended);
        }
        Ok(taken
            .into_iter()
            .map(|stored| Delivery {
                id: MessageId::new(key.sender.clone(), key.outbox, stored.sequence),
                message: stored.message,
            })
            .collect())
    }

    /// Marks every message of `key` up to `up_to` (clamped to `recorded`) handled, appending a
    /// "handled" record when that moves anything, and lets the stream's next message be taken.
    /// Returns how many messages it released.
    pub(crate) fn handled(&mut self, log: &mut Log, key: &StreamKey, up_to: u64) -> Result<u64, DurableError> {
        let Some(stream) = self.streams.get_mut(key) else { return Ok(0) };
        let up_to = up_to.min(stream.queue.next - 1);
        let mut released = 0;
        if up_to >= stream.queue.first {
            log.append(HANDLED, |b| put_mark(b, key, up_to));
            released = stream.queue.release(&mut self.space, log, key, up_to)?;
        }
        if stream.taken.is_some_and(|t| t <= up_to) {
            stream.taken = None;
            if !stream.queue.is_empty() {
                self.ready.push_back(key.clone());
            }
        } else if released > 0 && stream.taken.is_none() && stream.queue.is_empty() {
            // Marked handled without being taken: no longer ready.
            self.ready.retain(|k| k != key);
        }
        Ok(released)
    }

    /// Forgets the streams with nothing unhandled, no handler running and no message seen for
    /// `retention` seconds before `now`. Returns how many.
    pub(crate) fn forget_idle(&mut self, now: u64, retention: u64) -> usize {
        let before = self.streams.len();
        self.streams
            .retain(|_, s| !(s.queue.is_empty() && s.taken.is_none() && now.saturating_sub(s.last_seen) >= retention));
        before - self.streams.len()
    }

    /// Every stream: its key, `recorded`, `handled` and unhandled bytes.
    pub(crate) fn streams(&self) -> impl Iterator<Item = (&StreamKey, u64, u64, u64)> {
        self.streams.iter().map(|(k, s)| (k, s.queue.next - 1, s.queue.first - 1, s.queue.bytes()))
    }

    /// Whether a stream has a message ready for a handler.
    pub(crate) fn any_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Compacts the log ([`runs::compact`]). Returns the segments rewritten.
    pub(crate) fn compact(&mut self, log: &mut Log) -> Result<usize, DurableError> {
        runs::compact(self, log)
    }

    /// The checkpoint body: every stream, its last sighting and its queue.
    pub(crate) fn checkpoint(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.streams.len() * 80);
        b.extend_from_slice(&(self.streams.len() as u32).to_le_bytes());
        for (key, stream) in &self.streams {
            record::put_name(&mut b, &key.sender);
            b.extend_from_slice(&key.outbox.as_u64().to_le_bytes());
            b.extend_from_slice(&stream.last_seen.to_le_bytes());
            stream.queue.put(&mut b);
        }
        b
    }

    /// The state a checkpoint holds.
    fn from_checkpoint(body: &[u8]) -> Result<State, Malformed> {
        let mut f = Fields::new(body);
        let count = f.u32()? as usize;
        if count > body.len() / STREAM_BYTES {
            return Err(Malformed("a checkpoint counts more streams than its bytes hold"));
        }
        let mut state = State::default();
        for _ in 0..count {
            let sender: Arc<str> = f.name()?.into();
            let outbox = OutboxId::from_u64(f.u64()?);
            let last_seen = f.u64()?;
            let queue = Queue::parse(&mut f, body.len(), &mut state.space)?;
            state.streams.insert(StreamKey { sender, outbox }, Stream { queue, last_seen, taken: None });
        }
        f.end()?;
        Ok(state)
    }

    /// Rebuilds the state from a log just opened: its checkpoint, then the records after it.
    /// Every stream with an unhandled message is ready again: a handler that was running when
    /// the inbox stopped had not had its return recorded, so its message runs again.
    ///
    /// A message whose sequence is below its stream's next is a copy made by a compaction whose
    /// checkpoint was not written (its original is still in place) and is skipped. "Handled"
    /// marks are applied last, each stream's highest once, so that no segment deleted since is
    /// read. A stream seen in the replay counts as seen at `now` (the records carry no time):
    /// retention may keep it longer, never shorter.
    pub(crate) fn replay(
        log: &mut Log,
        checkpoint: Option<&[u8]>,
        mut cursor: Cursor,
        now: u64,
    ) -> Result<State, DurableError> {
        let mut state = match checkpoint {
            Some(body) => State::from_checkpoint(body).map_err(|e| malformed(log, "checkpoint", &e))?,
            None => State::default(),
        };
        let mut marks: BTreeMap<StreamKey, u64> = BTreeMap::new();
        while let Some(entry) = log.next(&mut cursor)? {
            match entry.kind {
                CHECKPOINT => {}
                MESSAGE => {
                    let (sender, outbox, sequence, _) =
                        parse_message(&entry.body).map_err(|e| malformed(log, "message record", &e))?;
                    let key = StreamKey { sender: sender.into(), outbox };
                    let next = state.streams.get(&key).map_or(1, |s| s.queue.next);
                    if sequence > LAST_SEQUENCE {
                        return Err(missing(
                            log,
                            entry.at.segment,
                            "a message's sequence is past the last a log holds",
                        ));
                    }
                    if sequence > next {
                        return Err(missing(log, entry.at.segment, "a message's sequence skips ahead of its stream's"));
                    }
                    if sequence == next {
                        state.add(&key, sequence, entry.at, entry.size, now, None);
                    }
                    if let Some(stream) = state.streams.get_mut(&key) {
                        stream.last_seen = stream.last_seen.max(now);
                    }
                }
                HANDLED => {
                    let (key, up_to) = parse_handled(&entry.body).map_err(|e| malformed(log, "handled record", &e))?;
                    // Written clamped to the messages recorded before it: one past them is a
                    // record of another log, which would mark messages recorded after it handled
                    // before their handlers ran.
                    if up_to >= state.streams.get(&key).map_or(1, |s| s.queue.next) {
                        return Err(missing(
                            log,
                            entry.at.segment,
                            "a handled mark of messages not recorded before it",
                        ));
                    }
                    let highest = marks.entry(key).or_default();
                    *highest = (*highest).max(up_to);
                }
                RESUMED => {
                    let (key, after) = parse_handled(&entry.body).map_err(|e| malformed(log, "resumed record", &e))?;
                    // Written only below a sequence the inbox took (`record`), so at most
                    // `LAST_SEQUENCE - 1`: its stream resumes at `after + 1`.
                    if after >= LAST_SEQUENCE {
                        return Err(missing(log, entry.at.segment, "a stream resumes past the last sequence"));
                    }
                    // It was written with nothing left to handle, but the marks that said so are
                    // applied last: apply this stream's now, when they cover its whole queue
                    // (whole runs are freed without reading the log).
                    if let (Some(&mark), Some(stream)) = (marks.get(&key), state.streams.get_mut(&key))
                        && mark >= stream.queue.next - 1
                    {
                        stream.queue.release(&mut state.space, log, &key, mark)?;
                    }
                    state.resume(&key, after, now);
                }
                _ => return Err(missing(log, entry.at.segment, "a record of an unknown kind")),
            }
        }
        for (key, up_to) in marks {
            if let Some(stream) = state.streams.get_mut(&key) {
                stream.queue.release(&mut state.space, log, &key, up_to)?;
            }
        }
        state.ready = state.streams.iter().filter(|(_, s)| !s.queue.is_empty()).map(|(k, _)| k.clone()).collect();
        Ok(state)
    }
}

/// A "handled up to n" or "resumed after n" record's body: the stream and n.
fn put_mark(b: &mut Vec<u8>, key: &StreamKey, up_to: u64) {
    record::put_name(b, &key.sender);
    b.extend_from_slice(&key.outbox.as_u64().to_le_bytes());
    b.extend_from_slice(&up_to.to_le_bytes());
}

/// A message record's sender, outbox, sequence and message.
fn parse_message(body: &[u8]) -> Result<(&str, OutboxId, u64, &[u8]), Malformed> {
    let mut f = Fields::new(body);
    let sender = f.name()?;
    let outbox = OutboxId::from_u64(f.u64()?);
    let sequence = f.u64()?;
    Ok((sender, outbox, sequence, f.rest()))
}

/// A "handled" or "resumed" record's stream and mark.
fn parse_handled(body: &[u8]) -> Result<(StreamKey, u64), Malformed> {
    let mut f = Fields::new(body);
    let sender: Arc<str> = f.name()?.into();
    let outbox = OutboxId::from_u64(f.u64()?);
    let up_to = f.u64()?;
    f.end()?;
    Ok((StreamKey { sender, outbox }, up_to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sender: &str, outbox: u64) -> StreamKey {
        StreamKey { sender: sender.into(), outbox: OutboxId::from_u64(outbox) }
    }

    fn state() -> State {
        let mut state = State::default();
        for (n, k) in [key("shop-1", 7), key("shop-1", 7), key("mail", 9)].into_iter().enumerate() {
            let sequence = state.streams.get(&k).map_or(1, |s| s.queue.next);
            state.add(&k, sequence, Location { segment: 3, offset: 100 * n as u64 }, 40, 1_000, None);
        }
        state
    }

    #[test]
    fn a_checkpoint_reads_back_with_its_streams_and_counts() {
        let body = state().checkpoint();
        let back = State::from_checkpoint(&body).expect("the checkpoint decodes");
        assert_eq!(back.checkpoint(), body);
        assert_eq!((back.used(), back.stream_count()), (120, 2));
        let streams: Vec<_> = back.streams().map(|(k, r, h, b)| (k.sender.to_string(), r, h, b)).collect();
        assert_eq!(streams, [("mail".to_owned(), 1, 0, 40), ("shop-1".to_owned(), 2, 0, 80)]);
    }

    #[test]
    fn a_checkpoint_with_counts_past_its_bytes_is_refused_and_every_prefix_too() {
        assert!(State::from_checkpoint(&u32::MAX.to_le_bytes()).is_err(), "streams past the bytes");
        let body = state().checkpoint();
        for cut in 0..body.len() {
            assert!(State::from_checkpoint(&body[..cut]).is_err(), "cut at {cut}");
        }
        // The first stream's run count ("mail": 4 + 1 + 4 + 8 + 8 + 8 + 8 bytes in).
        let mut bad = body.clone();
        bad[41..45].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(State::from_checkpoint(&bad).is_err(), "runs past the bytes");
    }

    #[test]
    fn records_decode_and_refuse_short_bodies() {
        let mut b = Vec::new();
        put_mark(&mut b, &key("shop-1", 7), 42);
        assert_eq!(parse_handled(&b).ok(), Some((key("shop-1", 7), 42)));
        for cut in 0..b.len() {
            assert!(parse_handled(&b[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse_message(&b[..5]).is_err());
    }
}
