//! What an outbox knows of its log: per destination, its sequences and where its undelivered
//! messages are; per segment, how many of its bytes are still needed.
//!
//! A destination's undelivered messages are kept as *runs*: consecutive sequences in one
//! segment, found by scanning that segment from the run's first record. Memory and checkpoints
//! grow with the number of runs (about one per destination per segment), not with the number of
//! messages, which is what keeps a checkpoint small and a reopen of a million messages short.
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

use std::collections::{BTreeMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;

use super::Pending;
use crate::durable::DurableError;
use crate::durable::log::record::{self, CHECKPOINT, Fields, Malformed};
use crate::durable::log::{Counters, Cursor, Entry, Location, Log};

/// Kind of a message record.
pub(crate) const MESSAGE: u8 = 1;
/// Kind of an acknowledgement record.
pub(crate) const ACK: u8 = 2;

/// Bytes of one run in a checkpoint.
const RUN_BYTES: usize = 40;
/// Fewest bytes of one destination in a checkpoint (an empty name, no runs).
const DESTINATION_BYTES: usize = 1 + 8 + 8 + 4;

/// Consecutive sequences `first..=last` of one destination in one segment, whose first record
/// is at `offset`. Later records of the run are further on in the same segment, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    segment: u64,
    offset: u64,
    first: u64,
    last: u64,
    /// Record bytes of the run's messages (headers included).
    bytes: u64,
}

/// One destination's sequences and undelivered messages.
#[derive(Debug)]
struct Destination {
    /// The first unacknowledged sequence (1 before any acknowledgement).
    first: u64,
    /// The sequence the next message will get.
    next: u64,
    /// The undelivered messages `first..next`, in sequence order.
    runs: VecDeque<Run>,
}

impl Destination {
    fn new() -> Destination {
        Destination { first: 1, next: 1, runs: VecDeque::new() }
    }
}

/// A message read back for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) sequence: u64,
    pub(crate) message: Bytes,
}

/// The outbox's state, owned by its writer thread.
#[derive(Debug, Default)]
pub(crate) struct State {
    destinations: BTreeMap<Arc<str>, Destination>,
    /// Bytes of undelivered messages per segment. A segment absent here holds none.
    live: BTreeMap<u64, u64>,
    /// Bytes of undelivered messages in all: what `max_bytes` limits.
    used: u64,
}

impl State {
    /// Bytes of undelivered messages (record bytes, headers included).
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// The sequence the next message to `destination` will get.
    pub(crate) fn next_sequence(&self, destination: &str) -> u64 {
        self.destinations.get(destination).map_or(1, |d| d.next)
    }

    /// Records that message `sequence` of `destination` (the next one) is at `at`.
    pub(crate) fn add(&mut self, destination: &str, sequence: u64, at: Location, size: u64) {
        let dest = match self.destinations.get_mut(destination) {
            Some(dest) => dest,
            None => self.destinations.entry(destination.into()).or_insert_with(Destination::new),
        };
        debug_assert_eq!(sequence, dest.next);
        match dest.runs.back_mut() {
            Some(run) if run.segment == at.segment && run.last + 1 == sequence => {
                run.last = sequence;
                run.bytes += size;
            }
            _ => dest.runs.push_back(Run {
                segment: at.segment,
                offset: at.offset,
                first: sequence,
                last: sequence,
                bytes: size,
            }),
        }
        dest.next = sequence + 1;
        *self.live.entry(at.segment).or_default() += size;
        self.used += size;
    }

    /// Appends a message record for `destination` to the log's batch and records it. The caller
    /// checked the name's and the message's bounds.
    pub(crate) fn append(&mut self, log: &mut Log, destination: &str, message: &[u8]) -> u64 {
        let sequence = self.next_sequence(destination);
        let (at, size) = log.append(MESSAGE, |b| {
            record::put_name(b, destination);
            b.extend_from_slice(&sequence.to_le_bytes());
            b.extend_from_slice(message);
        });
        self.add(destination, sequence, at, size);
        sequence
    }

    /// The record bytes a message would take: to check the limit before appending.
    pub(crate) fn record_size(destination: &str, message: &[u8]) -> u64 {
        (record::FRAME_HEADER + 1 + 1 + destination.len() + 8 + message.len()) as u64
    }

    /// Marks every message of `destination` up to `up_to` (clamped to the last appended) as
    /// done, appending an acknowledgement record when that moves anything. Returns how many
    /// messages it released.
    pub(crate) fn acknowledge(&mut self, log: &mut Log, destination: &str, up_to: u64) -> Result<u64, DurableError> {
        let Some(dest) = self.destinations.get(destination) else { return Ok(0) };
        let up_to = up_to.min(dest.next - 1);
        if up_to < dest.first {
            return Ok(0);
        }
        log.append(ACK, |b| {
            record::put_name(b, destination);
            b.extend_from_slice(&up_to.to_le_bytes());
        });
        self.release(log, destination, up_to)
    }

    /// Drops the runs up to `up_to` from the state (no record written).
    fn release(&mut self, log: &mut Log, destination: &str, up_to: u64) -> Result<u64, DurableError> {
        let Some(dest) = self.destinations.get_mut(destination) else { return Ok(0) };
        let up_to = up_to.min(dest.next - 1);
        if up_to < dest.first {
            return Ok(0);
        }
        let released = up_to + 1 - dest.first;
        dest.first = up_to + 1;
        while let Some(run) = dest.runs.front_mut() {
            if run.first > up_to {
                break;
            }
            if run.last <= up_to {
                let bytes = run.bytes;
                let segment = run.segment;
                dest.runs.pop_front();
                free(&mut self.live, &mut self.used, segment, bytes);
                continue;
            }
            // Part of the run is done: find how many bytes, and where the rest starts.
            let mut freed = 0;
            let mut rest = None;
            walk(log, destination, run, |sequence, entry, _| {
                if sequence <= up_to {
                    freed += entry.size;
                    ControlFlow::Continue(())
                } else {
                    rest = Some((sequence, entry.at.offset));
                    ControlFlow::Break(())
                }
            })?;
            let Some((first, offset)) = rest else {
                return Err(missing(log, run.segment, "a run ends before its last message"));
            };
            run.first = first;
            run.offset = offset;
            run.bytes -= freed.min(run.bytes);
            let segment = run.segment;
            free(&mut self.live, &mut self.used, segment, freed);
            break;
        }
        Ok(released)
    }

    /// Up to `max` messages of `destination` from `from` on (or from its first unacknowledged
    /// one, if later), stopping early after `max_bytes` of messages.
    pub(crate) fn read(
        &self,
        log: &mut Log,
        destination: &str,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, DurableError> {
        let Some(dest) = self.destinations.get(destination) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        let mut bytes = 0;
        for run in dest.runs.iter().filter(|r| r.last >= from) {
            if out.len() >= max || bytes >= max_bytes {
                break;
            }
            walk(log, destination, run, |sequence, _, message| {
                if sequence >= from {
                    bytes += message.len();
                    out.push(Stored { sequence, message: Bytes::copy_from_slice(message) });
                    if out.len() >= max || bytes >= max_bytes {
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            })?;
        }
        Ok(out)
    }

    /// Destinations with undelivered messages.
    pub(crate) fn pending(&self) -> Vec<Pending> {
        self.destinations
            .iter()
            .filter(|(_, d)| d.first < d.next)
            .map(|(name, d)| Pending {
                destination: name.to_string(),
                first_unacknowledged: d.first,
                next_sequence: d.next,
                bytes: d.runs.iter().map(|r| r.bytes).sum(),
            })
            .collect()
    }

    /// Deletes the segments (but the head) that hold no undelivered message, and rewrites those
    /// whose undelivered bytes are below a quarter of their size: their messages are copied to
    /// the head (same sequences), a new segment is started with a checkpoint that points at the
    /// copies, and only then are they deleted. Returns the segments rewritten.
    pub(crate) fn compact(&mut self, log: &mut Log) -> Result<usize, DurableError> {
        let head = log.head();
        let mut sparse = Vec::new();
        let closed: Vec<(u64, u64)> = log.segments().filter(|&(n, _)| n != head).collect();
        for (number, len) in closed {
            match self.live.get(&number).copied().unwrap_or(0) {
                0 => {
                    self.live.remove(&number);
                    log.delete(number)?;
                }
                live if live.saturating_mul(4) < len => sparse.push(number),
                _ => {}
            }
        }
        // A checkpoint too large to write would leave the copies unreferenced after a reopen:
        // rewrite only when it will be written (the copies change no sizes in it).
        if sparse.is_empty() || self.checkpoint().len() >= record::MAX_RECORD {
            return Ok(0);
        }
        for &number in &sparse {
            self.rewrite(log, number)?;
        }
        if log.roll(&self.checkpoint())? {
            for &number in &sparse {
                self.live.remove(&number);
                log.delete(number)?;
                Counters::bump(&log.counters().rewritten);
            }
        }
        Ok(sparse.len())
    }

    /// Copies the undelivered messages in segment `number` to the head and points their runs
    /// at the copies.
    fn rewrite(&mut self, log: &mut Log, number: u64) -> Result<(), DurableError> {
        for (name, dest) in &mut self.destinations {
            for run in dest.runs.iter_mut().filter(|r| r.segment == number) {
                let mut bodies = Vec::new();
                walk(log, name, run, |_, entry, _| {
                    bodies.push(entry.body.clone());
                    ControlFlow::Continue(())
                })?;
                let mut start = None;
                for body in &bodies {
                    let (at, _) = log.append(MESSAGE, |b| b.extend_from_slice(body));
                    start.get_or_insert(at);
                }
                let Some(at) = start else { continue };
                free(&mut self.live, &mut self.used, number, run.bytes);
                *self.live.entry(at.segment).or_default() += run.bytes;
                self.used += run.bytes;
                run.segment = at.segment;
                run.offset = at.offset;
            }
        }
        Ok(())
    }

    /// The checkpoint body: every destination, its sequences and its runs.
    pub(crate) fn checkpoint(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.destinations.len() * 64);
        b.extend_from_slice(&(self.destinations.len() as u32).to_le_bytes());
        for (name, dest) in &self.destinations {
            record::put_name(&mut b, name);
            b.extend_from_slice(&dest.first.to_le_bytes());
            b.extend_from_slice(&dest.next.to_le_bytes());
            b.extend_from_slice(&(dest.runs.len() as u32).to_le_bytes());
            for run in &dest.runs {
                for field in [run.segment, run.offset, run.first, run.last, run.bytes] {
                    b.extend_from_slice(&field.to_le_bytes());
                }
            }
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
            let first = f.u64()?;
            let next = f.u64()?;
            let runs = f.u32()? as usize;
            if runs > body.len() / RUN_BYTES {
                return Err(Malformed("a checkpoint counts more runs than its bytes hold"));
            }
            if first == 0 || first > next {
                return Err(Malformed("a checkpoint's sequences are out of order"));
            }
            let mut dest = Destination { first, next, runs: VecDeque::with_capacity(runs) };
            let mut expected = first;
            for _ in 0..runs {
                let run = Run { segment: f.u64()?, offset: f.u64()?, first: f.u64()?, last: f.u64()?, bytes: f.u64()? };
                if run.first != expected || run.last < run.first || run.last >= next {
                    return Err(Malformed("a checkpoint's runs do not cover the undelivered sequences"));
                }
                expected = run.last + 1;
                *state.live.entry(run.segment).or_default() += run.bytes;
                state.used += run.bytes;
                dest.runs.push_back(run);
            }
            if expected != next {
                return Err(Malformed("a checkpoint's runs do not cover the undelivered sequences"));
            }
            state.destinations.insert(name, dest);
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
                    if sequence > next {
                        return Err(missing(
                            log,
                            entry.at.segment,
                            "a message's sequence skips ahead of its destination's",
                        ));
                    }
                    if sequence == next {
                        state.add(destination, sequence, entry.at, entry.size);
                    }
                }
                ACK => {
                    let mut f = Fields::new(&entry.body);
                    let (destination, up_to) = f
                        .name()
                        .and_then(|d| Ok((d, f.u64()?)))
                        .map_err(|e| malformed(log, "acknowledgement record", &e))?;
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

/// Calls `f` with each message of `run` in order (sequence, record, message bytes) until it
/// breaks or the run's last message.
fn walk(
    log: &mut Log,
    destination: &str,
    run: &Run,
    mut f: impl FnMut(u64, &Entry, &[u8]) -> ControlFlow<()>,
) -> Result<(), DurableError> {
    let mut cursor = Cursor::in_segment(Location { segment: run.segment, offset: run.offset });
    while let Some(entry) = log.next(&mut cursor)? {
        if entry.kind != MESSAGE {
            continue;
        }
        let (name, sequence, message) = parse_message(&entry.body).map_err(|e| malformed(log, "message record", &e))?;
        if name != destination || sequence < run.first || sequence > run.last {
            continue;
        }
        if f(sequence, &entry, message).is_break() || sequence == run.last {
            return Ok(());
        }
    }
    Err(missing(log, run.segment, "a segment ends before the last message of a run in it"))
}

/// A message record's destination, sequence and message.
fn parse_message(body: &[u8]) -> Result<(&str, u64, &[u8]), Malformed> {
    let mut f = Fields::new(body);
    let destination = f.name()?;
    let sequence = f.u64()?;
    Ok((destination, sequence, f.rest()))
}

fn free(live: &mut BTreeMap<u64, u64>, used: &mut u64, segment: u64, bytes: u64) {
    if let Some(l) = live.get_mut(&segment) {
        *l = l.saturating_sub(bytes);
    }
    *used = used.saturating_sub(bytes);
}

fn malformed(log: &Log, what: &str, e: &Malformed) -> DurableError {
    DurableError::Corrupt { path: log.dir().to_owned(), what: format!("a {what} does not decode: {e}") }
}

fn missing(log: &Log, segment: u64, what: &str) -> DurableError {
    DurableError::Corrupt { path: log.dir().to_owned(), what: format!("segment {segment}: {what}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        let mut state = State::default();
        for (n, destination) in ["ledger", "ledger", "mail"].into_iter().enumerate() {
            let sequence = state.next_sequence(destination);
            state.add(destination, sequence, Location { segment: 3, offset: 100 * n as u64 }, 40);
        }
        state
    }

    #[test]
    fn a_checkpoint_reads_back_with_its_runs_and_counts() {
        let body = state().checkpoint();
        let back = State::from_checkpoint(&body).expect("the checkpoint decodes");
        assert_eq!(back.checkpoint(), body);
        assert_eq!((back.used(), back.live.get(&3).copied()), (120, Some(120)));
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
