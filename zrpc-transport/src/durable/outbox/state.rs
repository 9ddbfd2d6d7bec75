//! What an outbox knows of its log: per destination, its sequences and where its undelivered
//! messages are; per segment, how many of its bytes are still needed.
//!
//! A destination's undelivered messages are a [`Queue`] of *runs* (`log/runs.rs`, shared with
//! the inbox): consecutive sequences in one segment, so that memory and checkpoints grow with
//! the number of runs, not of messages.
//!
//! Records of an outbox (after the log's framing):
//!
//! | kind | body |
//! |---|---|
//! | [`MESSAGE`] `1` | destination (`len u8`, UTF-8) \| sequence `u64` \| message bytes |
//! | [`ACK`] `2` | destination \| up_to `u64`: every message of the destination up to it is done |
//! | checkpoint `0` | destinations `u32`, each: name \| first `u64` \| next `u64` \| runs `u32`, each run: segment `u64` \| offset `u64` \| first `u64` \| last `u64` \| bytes `u64` |
//!
//! Integers are little-endian. Every count is checked against the bytes left before anything is
//! allocated for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::Pending;
use crate::durable::DurableError;
use crate::durable::log::record::{self, CHECKPOINT, Fields, Malformed};
use crate::durable::log::runs::{
    self, Key, LAST_SEQUENCE, Owner, QUEUE_BYTES, Queue, Space, Stored, malformed, missing,
};
use crate::durable::log::{Cursor, Location, Log};

/// Kind of a message record.
pub(crate) const MESSAGE: u8 = 1;
/// Kind of an acknowledgement record.
pub(crate) const ACK: u8 = 2;

/// Fewest bytes of one destination in a checkpoint (an empty name, no runs).
const DESTINATION_BYTES: usize = 1 + QUEUE_BYTES;

/// A destination's messages are the message records that carry its name.
impl Key for str {
    const MESSAGE: u8 = MESSAGE;

    fn message<'a>(&self, body: &'a [u8]) -> Result<Option<(u64, &'a [u8])>, Malformed> {
        let (destination, sequence, message) = parse_message(body)?;
        Ok((destination == self).then_some((sequence, message)))
    }
}

/// The outbox's state, owned by its writer: per destination, the queue of its
/// undelivered messages (`first` the first unacknowledged sequence, `next` the next to give).
#[derive(Debug, Default)]
pub(crate) struct State {
    destinations: BTreeMap<Arc<str>, Queue>,
    /// Bytes of undelivered messages, per segment and in all: what `max_bytes` limits.
    space: Space,
}

impl Owner for State {
    type Key = str;

    fn queues(&mut self) -> (Vec<(&str, &mut Queue)>, &mut Space) {
        (self.destinations.iter_mut().map(|(name, queue)| (&**name, queue)).collect(), &mut self.space)
    }

    fn checkpoint(&self) -> Vec<u8> {
        State::checkpoint(self)
    }
}

impl State {
    /// Bytes of undelivered messages (record bytes, headers included).
    pub(crate) fn used(&self) -> u64 {
        self.space.used()
    }

    /// The sequence the next message to `destination` will get.
    pub(crate) fn next_sequence(&self, destination: &str) -> u64 {
        self.destinations.get(destination).map_or(1, |d| d.next)
    }

    /// Records that message `sequence` of `destination` (the next one) is at `at`; keeps
    /// `message` in memory for delivery if there is room (`log/runs.rs`).
    pub(crate) fn add(&mut self, destination: &str, sequence: u64, at: Location, size: u64, message: Option<Bytes>) {
        let queue = match self.destinations.get_mut(destination) {
            Some(queue) => queue,
            None => self.destinations.entry(destination.into()).or_insert_with(|| Queue::starting_at(1)),
        };
        queue.add(&mut self.space, sequence, at, size, message);
    }

    /// Appends a message record for `destination` to the log's batch and records it; returns
    /// its sequence. The caller checked the name's and the message's bounds.
    ///
    /// # Errors
    /// [`InvalidSequence`](DurableError::InvalidSequence) when the destination's next sequence
    /// is past [`LAST_SEQUENCE`], which no outbox reaches but a log written by something else
    /// may say; nothing is appended.
    pub(crate) fn append(&mut self, log: &mut Log, destination: &str, message: Bytes) -> Result<u64, DurableError> {
        let sequence = self.next_sequence(destination);
        if sequence > LAST_SEQUENCE {
            return Err(DurableError::InvalidSequence { sequence });
        }
        let (at, size) = log.append(MESSAGE, |b| {
            record::put_name(b, destination);
            b.extend_from_slice(&sequence.to_le_bytes());
            b.extend_from_slice(&message);
        });
        // Kept by value, not cloned: a clone of a buffer frozen from a `BytesMut` allocates
        // (the `bytes` crate makes it shared on its first clone).
        self.add(destination, sequence, at, size, Some(message));
        Ok(sequence)
    }

    /// The record bytes a message would take: to check the limit before appending.
    pub(crate) fn record_size(destination: &str, message: &[u8]) -> u64 {
        (record::FRAME_HEADER + 1 + 1 + destination.len() + 8 + message.len()) as u64
    }

    /// Marks every message of `destination` up to `up_to` (clamped to the last appended) as
    /// done, appending an acknowledgement record when that moves anything. Returns how many
    /// messages it released.
    pub(crate) fn acknowledge(&mut self, log: &mut Log, destination: &str, up_to: u64) -> Result<u64, DurableError> {
        let Some(queue) = self.destinations.get(destination) else { return Ok(0) };
        let up_to = up_to.min(queue.next - 1);
        if up_to < queue.first {
            return Ok(0);
        }
        log.append(ACK, |b| {
            record::put_name(b, destination);
            b.extend_from_slice(&up_to.to_le_bytes());
        });
        self.release(log, destination, up_to)
    }

    /// Drops the messages up to `up_to` from the state (no record written).
    fn release(&mut self, log: &mut Log, destination: &str, up_to: u64) -> Result<u64, DurableError> {
        let Some(queue) = self.destinations.get_mut(destination) else { return Ok(0) };
        queue.release(&mut self.space, log, destination, up_to)
    }

    /// Up to `max` messages of `destination` from `from` on (or from its first unacknowledged
    /// one, if later), stopping early after `max_bytes` of messages.
    pub(crate) fn read(
        &mut self,
        log: &mut Log,
        destination: &str,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, DurableError> {
        let Some(queue) = self.destinations.get_mut(destination) else { return Ok(Vec::new()) };
        queue.read(&mut self.space, log, destination, from, max, max_bytes)
    }

    /// Destinations with undelivered messages.
    pub(crate) fn pending(&self) -> Vec<Pending> {
        self.destinations
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(name, q)| Pending {
                destination: name.to_string(),
                first_unacknowledged: q.first,
                next_sequence: q.next,
                bytes: q.bytes(),
            })
            .collect()
    }

    /// Compacts the log ([`runs::compact`]). Returns the segments rewritten.
    pub(crate) fn compact(&mut self, log: &mut Log) -> Result<usize, DurableError> {
        runs::compact(self, log)
    }

    /// The checkpoint body: every destination, its sequences and its runs.
    pub(crate) fn checkpoint(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.destinations.len() * 64);
        b.extend_from_slice(&(self.destinations.len() as u32).to_le_bytes());
        for (name, queue) in &self.destinations {
            record::put_name(&mut b, name);
            queue.put(&mut b);
        }
        b
    }

    /// The state a checkpoint holds.
    fn from_checkpoint(body: &[u8]) -> Result<State, Malformed> {
        let mut f = Fields::new(body);
        let count = f.u32()? as usize;
        if count > body.len() / DESTINATION_BYTES {
            return Err(Malformed("a checkpoint counts more destinations than its bytes hold"));
        }
        let mut state = State::default();
        for _ in 0..count {
            let name: Arc<str> = f.name()?.into();
            let queue = Queue::parse(&mut f, body.len(), &mut state.space)?;
            state.destinations.insert(name, queue);
        }
        f.end()?;
        Ok(state)
    }

    /// Rebuilds the state from a log just opened: its checkpoint, then the records after it.
    ///
    /// A message whose sequence is below its destination's next is a copy made by a compaction
    /// whose checkpoint was not written (a crash in between): the original is still in place
    /// and the copy is skipped. Acknowledgements are applied last, each destination's highest
    /// once, so that no segment deleted since is read.
    pub(crate) fn replay(log: &mut Log, checkpoint: Option<&[u8]>, mut cursor: Cursor) -> Result<State, DurableError> {
        let mut state = match checkpoint {
            Some(body) => State::from_checkpoint(body).map_err(|e| malformed(log, "checkpoint", &e))?,
            None => State::default(),
        };
        let mut acks: BTreeMap<Arc<str>, u64> = BTreeMap::new();
        while let Some(entry) = log.next(&mut cursor)? {
            match entry.kind {
                CHECKPOINT => {}
                MESSAGE => {
                    let (destination, sequence, _) =
                        parse_message(&entry.body).map_err(|e| malformed(log, "message record", &e))?;
                    let next = state.next_sequence(destination);
                    if sequence > LAST_SEQUENCE {
                        return Err(missing(
                            log,
                            entry.at.segment,
                            "a message's sequence is past the last a log holds",
                        ));
                    }
                    if sequence > next {
                        return Err(missing(
                            log,
                            entry.at.segment,
                            "a message's sequence skips ahead of its destination's",
                        ));
                    }
                    if sequence == next {
                        state.add(destination, sequence, entry.at, entry.size, None);
                    }
                }
                ACK => {
                    let mut f = Fields::new(&entry.body);
                    let (destination, up_to) = f
                        .name()
                        .and_then(|d| Ok((d, f.u64()?)))
                        .map_err(|e| malformed(log, "acknowledgement record", &e))?;
                    // Written clamped to the messages logged before it: one past them is a
                    // record of another log, which would drop messages appended after it.
                    if up_to >= state.next_sequence(destination) {
                        return Err(missing(
                            log,
                            entry.at.segment,
                            "an acknowledgement of messages not logged before it",
                        ));
                    }
                    let highest = acks.entry(destination.into()).or_default();
                    *highest = (*highest).max(up_to);
                }
                _ => return Err(missing(log, entry.at.segment, "a record of an unknown kind")),
            }
        }
        for (destination, up_to) in acks {
            state.release(log, &destination, up_to)?;
        }
        Ok(state)
    }
}

/// A message record's destination, sequence and message.
fn parse_message(body: &[u8]) -> Result<(&str, u64, &[u8]), Malformed> {
    let mut f = Fields::new(body);
    let destination = f.name()?;
    let sequence = f.u64()?;
    Ok((destination, sequence, f.rest()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        let mut state = State::default();
        for (n, destination) in ["ledger", "ledger", "mail"].into_iter().enumerate() {
            let sequence = state.next_sequence(destination);
            state.add(destination, sequence, Location { segment: 3, offset: 100 * n as u64 }, 40, None);
        }
        state
    }

    #[test]
    fn an_append_past_the_last_sequence_is_refused_and_logs_nothing() {
        use crate::durable::log::LogConfig;
        use crate::durable::log::segment::{Identity, Role};
        use crate::durable::{Durability, OutboxId};

        let dir = tempfile::tempdir().expect("temp dir");
        let identity = Identity { role: Role::Outbox, name: "test".into(), id: OutboxId::from_u64(1) };
        let config = LogConfig { segment_bytes: 1 << 20, durability: Durability::Process };
        let mut log = Log::open(dir.path(), config, identity, b"", Arc::default()).expect("opened").log;
        // A destination whose next is past the last sequence, as a log zrpc did not write may
        // say: appended, its record would make the log `Corrupt` at the next open.
        let mut state = State::default();
        state.destinations.insert("ledger".into(), Queue::starting_at(LAST_SEQUENCE + 1));
        let refused = state.append(&mut log, "ledger", Bytes::from_static(b"m"));
        assert!(
            matches!(refused, Err(DurableError::InvalidSequence { sequence }) if sequence == LAST_SEQUENCE + 1),
            "{refused:?}"
        );
        assert_eq!(log.batch_bytes(), 0, "nothing was appended");
        assert_eq!(state.append(&mut log, "mail", Bytes::from_static(b"m")).ok(), Some(1));
    }

    #[test]
    fn a_checkpoint_reads_back_with_its_runs_and_counts() {
        let body = state().checkpoint();
        let back = State::from_checkpoint(&body).expect("the checkpoint decodes");
        assert_eq!(back.checkpoint(), body);
        assert_eq!((back.used(), back.space.live(3)), (120, Some(120)));
        assert_eq!((back.next_sequence("ledger"), back.next_sequence("mail"), back.next_sequence("new")), (3, 2, 1));
    }

    #[test]
    fn a_checkpoint_with_counts_past_its_bytes_or_broken_runs_is_refused() {
        assert!(State::from_checkpoint(&u32::MAX.to_le_bytes()).is_err(), "destinations past the bytes");
        let mut body = state().checkpoint();
        // The first destination's run count ("ledger": 4 + 1 + 6 + 8 + 8 bytes in).
        body[27..31].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(State::from_checkpoint(&body).is_err(), "runs past the bytes");
        let mut body = state().checkpoint();
        body[27..31].copy_from_slice(&0u32.to_le_bytes());
        assert!(State::from_checkpoint(&body).is_err(), "runs that do not cover first..next");
        for cut in 0..state().checkpoint().len() {
            assert!(State::from_checkpoint(&state().checkpoint()[..cut]).is_err(), "cut at {cut}");
        }
    }
}
