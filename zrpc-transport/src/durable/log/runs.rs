//! Queues of messages kept as *runs*, for every owner of a log (the outbox's destinations, the
//! inbox's streams): where the messages still needed are, how many bytes they hold per segment,
//! and the compaction that reclaims the rest.
//!
//! A run is consecutive sequences of one key in one segment, found by scanning that segment
//! from the run's first record. Memory and checkpoints grow with the number of runs (about one
//! per key per segment), not with the number of messages, which is what keeps a checkpoint small
//! and a reopen of a million messages short.
//!
//! A [`Queue`] holds the messages `first..next` of one key; a [`Space`] counts their bytes per
//! segment and in all. The owner keeps its queues in its own map with its own extra state, and
//! tells this module how to recognise a key's message records ([`Key`]) and how to list its
//! queues and write its checkpoint ([`Owner`]).
//!
//! **The recent tail in memory.** A queue also keeps its newest messages, as the bytes its owner
//! appended (a `Bytes`, shared, not copied), with where each record is and its size: the
//! delivery task's and the dispatcher's reads are then served without reading the log back
//! (a file opened, read and checked per read: 12% of the CPU of a durable message, measured),
//! and an acknowledgement inside a run learns the bytes it frees without a scan. The rules:
//!
//! 1. The cached messages are consecutive: a window `c0..=c1` of the queue's. A message is
//!    added only at the window's end (`c1 + 1`), and only while the log's budget has room; a
//!    message that finds no room closes the window, which then only shrinks, as messages are
//!    released, until it is empty and the next message appended opens a new one. So a
//!    receiver that keeps up reads everything from memory, and one that lags (a backlog larger
//!    than the budget) reads the oldest part from memory and the rest from the log, with no
//!    message cached only to be dropped unread.
//! 2. A message is cached only once its record is in the log's batch, and reads are answered
//!    after the batch was written (and synced), as before: what is read from memory is what the
//!    log holds, at its level. A log reopened starts with nothing cached (replay reads the log).
//! 3. **Bound:** [`CACHE_BYTES`] per log (per owner, shared by its queues), counting each
//!    message's bytes plus [`CACHED_OVERHEAD`]. Released messages leave the cache at once; a
//!    compaction that moves a queue's records empties its cache.
//!
//! **Where messages read back are.** A read from the log also notes, for the messages it
//! walked, where each record is and its size (consecutive sequences per queue): an
//! acknowledgement inside a run that the cache does not hold then learns the bytes it frees and
//! where the rest starts from these notes, not by reading the run's done part a second time
//! (which was half of what a backlog read from the log). The notes go with the messages they
//! describe (released), and all of a queue's when a compaction moves its records. **Bound:**
//! [`LOCATED`] notes per log (shared by its queues, 32 bytes each); past it reads note nothing
//! and acknowledgements walk, as before.
//!
//! In a checkpoint a queue is `first u64 | next u64 | runs u32`, each run
//! `segment u64 | offset u64 | first u64 | last u64 | bytes u64` (little-endian); the owner
//! writes what identifies the key before it.

use std::collections::{BTreeMap, VecDeque};
use std::ops::ControlFlow;

use bytes::Bytes;

use super::record::{self, Fields, Malformed};
use super::{Counters, Entry, Location, Log};
use crate::durable::DurableError;

/// Bytes of one run in a checkpoint.
const RUN_BYTES: usize = 40;

/// The highest sequence a log holds: 2^63 − 1. No stream reaches it (2^63 messages), and every
/// `+ 1` on a sequence below it is far from overflowing, so a checkpoint or record that says
/// more was not written by zrpc and is `Corrupt` at open, and an inbox refuses a peer's message
/// above it. Without the bound, a sequence at `u64::MAX` overflowed the queue's `next` (a
/// panic of the writer in a debug build, a wrapped `next` that no checkpoint reads back in a
/// release build).
pub(crate) const LAST_SEQUENCE: u64 = (1 << 63) - 1;

/// Bytes of a queue in a checkpoint before its runs.
pub(crate) const QUEUE_BYTES: usize = 8 + 8 + 4;

/// Most bytes of recent messages one log's owner keeps in memory for reads (see the module
/// docs): 8 MiB, tens of thousands of small messages, several windows of large ones.
pub(crate) const CACHE_BYTES: u64 = 8 << 20;

/// What a cached message counts against [`CACHE_BYTES`] besides its bytes: its entry and the
/// allocation holding the bytes, about.
pub(crate) const CACHED_OVERHEAD: u64 = 96;

/// Most notes of where messages read back are, per log (see the module docs): 512 KiB, the
/// delivery windows or runs of 64 queues reading from the log at once.
pub(crate) const LOCATED: usize = 16_384;

/// What a queue is the queue of: a key whose message records it can recognise.
pub(crate) trait Key {
    /// Kind of the records that hold messages (of every key of the owner).
    const MESSAGE: u8;

    /// If `body` (a record of kind [`MESSAGE`](Key::MESSAGE)) is a message of this key: its
    /// sequence and its message bytes.
    fn message<'a>(&self, body: &'a [u8]) -> Result<Option<(u64, &'a [u8])>, Malformed>;
}

/// What compaction needs of a log's owner.
pub(crate) trait Owner {
    /// The owner's key type.
    type Key: Key + ?Sized;

    /// Every queue with its key, and the space they count in.
    fn queues(&mut self) -> (Vec<(&Self::Key, &mut Queue)>, &mut Space);

    /// The owner's checkpoint body, for the segment a compaction starts.
    fn checkpoint(&self) -> Vec<u8>;
}

/// Consecutive sequences `first..=last` of one key in one segment, whose first record is at
/// `offset`. Later records of the run are further on in the same segment, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    segment: u64,
    offset: u64,
    first: u64,
    last: u64,
    /// Record bytes of the run's messages (headers included).
    bytes: u64,
}

/// The messages `first..next` of one key, in sequence order.
#[derive(Debug)]
pub(crate) struct Queue {
    /// The first sequence still held (1 before any release).
    pub(crate) first: u64,
    /// The sequence the next message will have.
    pub(crate) next: u64,
    runs: VecDeque<Run>,
    /// A window of its messages kept in memory (rule 1 of the module docs).
    cache: VecDeque<Cached>,
    /// The window found no room for a message: nothing is added until it is empty.
    cache_closed: bool,
    /// Messages read back from the log: consecutive sequences, with where their records are.
    located: VecDeque<Located>,
}

/// Where the record of a message read back from the log is (see the module docs).
#[derive(Clone, Copy, Debug)]
struct Located {
    sequence: u64,
    at: Location,
    /// The record's size on disk.
    size: u64,
}

/// A recent message kept in memory, with where its record is.
#[derive(Debug)]
struct Cached {
    sequence: u64,
    at: Location,
    /// The record's size on disk.
    size: u64,
    message: Bytes,
}

impl Cached {
    fn cost(&self) -> u64 {
        self.message.len() as u64 + CACHED_OVERHEAD
    }
}

/// Bytes of the messages still held, per segment and in all.
#[derive(Debug, Default)]
pub(crate) struct Space {
    /// A segment absent here holds none.
    live: BTreeMap<u64, u64>,
    used: u64,
    /// What the queues' cached messages count against [`CACHE_BYTES`].
    cached: u64,
    /// The queues' notes of where messages read back are, against [`LOCATED`].
    located: usize,
}

/// A message read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) sequence: u64,
    pub(crate) message: Bytes,
}

/// A read being filled, with its bounds.
struct Reading {
    out: Vec<Stored>,
    /// Message bytes in `out`.
    bytes: usize,
    max: usize,
    max_bytes: usize,
}

impl Reading {
    /// Whether it holds `max` messages or `max_bytes` (the message that reaches it included).
    fn full(&self) -> bool {
        self.out.len() >= self.max || self.bytes >= self.max_bytes
    }

    fn push(&mut self, sequence: u64, message: Bytes) {
        self.bytes += message.len();
        self.out.push(Stored { sequence, message });
    }
}

impl Space {
    /// Bytes of the messages held (record bytes, headers included).
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Bytes held in segment `number`.
    #[cfg(test)]
    pub(crate) fn live(&self, number: u64) -> Option<u64> {
        self.live.get(&number).copied()
    }

    /// Saturating, as [`free`](Space::free) is: a checkpoint may count any bytes (one not
    /// written by zrpc), and too many make appends `Full`, not a panic.
    fn hold(&mut self, segment: u64, bytes: u64) {
        let live = self.live.entry(segment).or_default();
        *live = live.saturating_add(bytes);
        self.used = self.used.saturating_add(bytes);
    }

    fn free(&mut self, segment: u64, bytes: u64) {
        if let Some(l) = self.live.get_mut(&segment) {
            *l = l.saturating_sub(bytes);
        }
        self.used = self.used.saturating_sub(bytes);
    }
}

impl Queue {
    /// An empty queue whose first message will be `first`.
    pub(crate) fn starting_at(first: u64) -> Queue {
        Queue {
            first,
            next: first,
            runs: VecDeque::new(),
            cache: VecDeque::new(),
            cache_closed: false,
            located: VecDeque::new(),
        }
    }

    /// Whether it holds no message.
    pub(crate) fn is_empty(&self) -> bool {
        self.first == self.next
    }

    /// Record bytes of the messages it holds.
    pub(crate) fn bytes(&self) -> u64 {
        self.runs.iter().fold(0, |sum, r| sum.saturating_add(r.bytes))
    }

    /// Adds message `sequence` (the next one), whose record of `size` bytes is at `at`; keeps
    /// `message` (its bytes, when the caller has them: not in a replay) in memory for reads, if
    /// there is room.
    pub(crate) fn add(&mut self, space: &mut Space, sequence: u64, at: Location, size: u64, message: Option<Bytes>) {
        debug_assert_eq!(sequence, self.next);
        match message {
            Some(message) => self.cache_add(space, Cached { sequence, at, size, message }),
            // Not cached: the window, if any, ends before it.
            None => self.cache_closed = !self.cache.is_empty(),
        }
        match self.runs.back_mut() {
            Some(run) if run.segment == at.segment && run.last + 1 == sequence => {
                run.last = sequence;
                run.bytes = run.bytes.saturating_add(size);
            }
            _ => self.runs.push_back(Run {
                segment: at.segment,
                offset: at.offset,
                first: sequence,
                last: sequence,
                bytes: size,
            }),
        }
        self.next = sequence + 1;
        space.hold(at.segment, size);
    }

    /// Caches `cached`, the queue's new last message, at the end of the window if it is open
    /// and the log's budget has room (rule 1).
    fn cache_add(&mut self, space: &mut Space, cached: Cached) {
        if self.cache.is_empty() {
            self.cache_closed = false;
        }
        let cost = cached.cost();
        if self.cache_closed || space.cached + cost > CACHE_BYTES {
            self.cache_closed = !self.cache.is_empty();
            return;
        }
        space.cached += cost;
        self.cache.push_back(cached);
    }

    /// Drops the cached messages up to `up_to`.
    fn cache_release(&mut self, space: &mut Space, up_to: u64) {
        while let Some(oldest) = self.cache.front() {
            if oldest.sequence > up_to {
                break;
            }
            space.cached -= oldest.cost().min(space.cached);
            self.cache.pop_front();
        }
    }

    /// Drops every cached message.
    fn cache_clear(&mut self, space: &mut Space) {
        self.cache_release(space, u64::MAX);
    }

    /// The cached messages from `from` on, if the window holds `from`.
    fn cached_from(&self, from: u64) -> impl Iterator<Item = &Cached> {
        let first = self.cache.front().map_or(u64::MAX, |c| c.sequence);
        let skip = if from < first { usize::MAX } else { usize::try_from(from - first).unwrap_or(usize::MAX) };
        self.cache.iter().skip(skip)
    }

    /// Drops the messages up to `up_to` (clamped to the last one added). Returns how many.
    pub(crate) fn release<K: Key + ?Sized>(
        &mut self,
        space: &mut Space,
        log: &mut Log,
        key: &K,
        up_to: u64,
    ) -> Result<u64, DurableError> {
        let up_to = up_to.min(self.next - 1);
        if up_to < self.first {
            return Ok(0);
        }
        let released = up_to + 1 - self.first;
        self.first = up_to + 1;
        while let Some(run) = self.runs.front_mut() {
            if run.first > up_to {
                break;
            }
            if run.last <= up_to {
                let (segment, bytes) = (run.segment, run.bytes);
                self.runs.pop_front();
                space.free(segment, bytes);
                continue;
            }
            // Part of the run is done: find how many bytes, and where the rest starts, in the
            // cache, in the notes of a read from the log, or else by reading the run's done part.
            let cached = |c: &Cached| Located { sequence: c.sequence, at: c.at, size: c.size };
            let known = known_prefix(&self.cache, cached, run.first, up_to)
                .or_else(|| known_prefix(&self.located, |l| *l, run.first, up_to))
                .filter(|(_, at)| at.segment == run.segment);
            let (freed, first, offset) = match known {
                // The rest starts at the next message, or (when the entries end at `up_to`)
                // right after `up_to`'s record: other records between are skipped as a walk of
                // the run skips them.
                Some((freed, at)) => (freed, up_to + 1, at.offset),
                None => {
                    let mut freed = 0;
                    let mut rest = None;
                    walk(log, key, run, |sequence, entry, _| {
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
                    (freed, first, offset)
                }
            };
            run.first = first;
            run.offset = offset;
            run.bytes -= freed.min(run.bytes);
            let segment = run.segment;
            space.free(segment, freed);
            break;
        }
        self.cache_release(space, up_to);
        while self.located.front().is_some_and(|l| l.sequence <= up_to) {
            self.located.pop_front();
            space.located = space.located.saturating_sub(1);
        }
        Ok(released)
    }

    /// Up to `max` messages from `from` on (or from the first held, if later), stopping early
    /// after `max_bytes` of messages: from the cache where its window holds them, else from
    /// the log.
    pub(crate) fn read<K: Key + ?Sized>(
        &mut self,
        space: &mut Space,
        log: &mut Log,
        key: &K,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, DurableError> {
        // Room for what is asked, up to what the queue holds from `from` on and a delivery
        // window or a run at most (256), rather than growing by pushes.
        let held = usize::try_from(self.next.saturating_sub(from.max(self.first))).unwrap_or(usize::MAX);
        let out = Vec::with_capacity(max.min(held).min(256));
        let mut read = Reading { out, bytes: 0, max, max_bytes };
        let window = self.cache.front().zip(self.cache.back()).map(|(first, last)| (first.sequence, last.sequence));
        let mut from = from.max(self.first);
        while !read.full() && from < self.next {
            let before = read.out.len();
            match window {
                Some((c0, c1)) if (c0..=c1).contains(&from) => {
                    for cached in self.cached_from(from) {
                        if read.full() {
                            break;
                        }
                        read.push(cached.sequence, cached.message.clone());
                    }
                }
                // From the log, up to the window if it is ahead.
                Some((c0, _)) if from < c0 => {
                    let until = before.saturating_add(usize::try_from(c0 - from).unwrap_or(usize::MAX));
                    self.read_log(space, log, key, from, until, &mut read)?;
                }
                _ => self.read_log(space, log, key, from, usize::MAX, &mut read)?,
            }
            match read.out.last() {
                Some(last) if read.out.len() > before => from = last.sequence + 1,
                _ => break,
            }
        }
        Ok(read.out)
    }

    /// Reads messages from `from` on from the log into `read` until it is full or holds
    /// `until` messages. The walk stops after the last message wanted, not at the next.
    fn read_log<K: Key + ?Sized>(
        &mut self,
        space: &mut Space,
        log: &mut Log,
        key: &K,
        from: u64,
        until: usize,
        read: &mut Reading,
    ) -> Result<(), DurableError> {
        let done = |read: &Reading| read.full() || read.out.len() >= until;
        for run in self.runs.iter().filter(|r| r.last >= from) {
            if done(read) {
                break;
            }
            let located = &mut self.located;
            walk(log, key, run, |sequence, entry, message| {
                note(space, located, Located { sequence, at: entry.at, size: entry.size });
                if sequence >= from {
                    read.push(sequence, Bytes::copy_from_slice(message));
                    if done(read) {
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            })?;
        }
        Ok(())
    }

    /// Copies the messages held in segment `number` to the head and points their runs at the
    /// copies.
    fn rewrite<K: Key + ?Sized>(
        &mut self,
        space: &mut Space,
        log: &mut Log,
        key: &K,
        number: u64,
    ) -> Result<(), DurableError> {
        if self.runs.iter().any(|r| r.segment == number) {
            // The copies are elsewhere: the cached and noted locations would be wrong.
            self.cache_clear(space);
            space.located = space.located.saturating_sub(self.located.len());
            self.located.clear();
        }
        for run in self.runs.iter_mut().filter(|r| r.segment == number) {
            let mut bodies = Vec::new();
            walk(log, key, run, |_, entry, _| {
                bodies.push(entry.body.clone());
                ControlFlow::Continue(())
            })?;
            let mut start = None;
            for body in &bodies {
                let (at, _) = log.append(K::MESSAGE, |b| b.extend_from_slice(body));
                start.get_or_insert(at);
            }
            let Some(at) = start else { continue };
            space.free(number, run.bytes);
            space.hold(at.segment, run.bytes);
            run.segment = at.segment;
            run.offset = at.offset;
        }
        Ok(())
    }

    /// Appends the queue's checkpoint fields to `b`.
    pub(crate) fn put(&self, b: &mut Vec<u8>) {
        b.extend_from_slice(&self.first.to_le_bytes());
        b.extend_from_slice(&self.next.to_le_bytes());
        b.extend_from_slice(&(self.runs.len() as u32).to_le_bytes());
        for run in &self.runs {
            for field in [run.segment, run.offset, run.first, run.last, run.bytes] {
                b.extend_from_slice(&field.to_le_bytes());
            }
        }
    }

    /// Reads a queue's checkpoint fields from `f` (a checkpoint of `total` bytes), counting its
    /// runs' bytes into `space`.
    pub(crate) fn parse(f: &mut Fields<'_>, total: usize, space: &mut Space) -> Result<Queue, Malformed> {
        let first = f.u64()?;
        let next = f.u64()?;
        let runs = f.u32()? as usize;
        if runs > total / RUN_BYTES {
            return Err(Malformed("a checkpoint counts more runs than its bytes hold"));
        }
        if first == 0 || first > next {
            return Err(Malformed("a checkpoint's sequences are out of order"));
        }
        if next > LAST_SEQUENCE + 1 {
            return Err(Malformed("a checkpoint's sequences are past the last a log holds"));
        }
        let mut queue = Queue {
            first,
            next,
            runs: VecDeque::with_capacity(runs),
            cache: VecDeque::new(),
            cache_closed: false,
            located: VecDeque::new(),
        };
        let mut expected = first;
        for _ in 0..runs {
            let run = Run { segment: f.u64()?, offset: f.u64()?, first: f.u64()?, last: f.u64()?, bytes: f.u64()? };
            if run.first != expected || run.last < run.first || run.last >= next {
                return Err(Malformed("a checkpoint's runs do not cover the sequences held"));
            }
            expected = run.last + 1;
            space.hold(run.segment, run.bytes);
            queue.runs.push_back(run);
        }
        if expected != next {
            return Err(Malformed("a checkpoint's runs do not cover the sequences held"));
        }
        Ok(queue)
    }
}

/// Finishes opening a log whose owner's state was just rebuilt: checks that every segment its
/// runs are in is there, makes sure the head starts with a checkpoint (a head without one,
/// after a crash cut it short while rolling, would make every later reopen replay from an older
/// segment, which compaction could then not delete), then compacts what the last run left
/// (segments a crash kept after they were emptied).
///
/// # Errors
/// `Corrupt`, naming the run's file and offset, if a run is in a segment that is gone. A crash
/// never leaves that: a segment is deleted only once nothing is left in it by the records up to
/// the newest checkpoint's and after it, which the replay applies. Damage does: the last
/// segment's checkpoint cut, with the records after it, while the segments those records
/// emptied are deleted already, so that the open falls back to an older checkpoint that still
/// counts messages in them. Found at open rather than at the first read of the run.
pub(crate) fn after_open<O: Owner>(owner: &mut O, log: &mut Log) -> Result<(), DurableError> {
    {
        let (queues, _) = owner.queues();
        let gone = queues.iter().flat_map(|(_, queue)| &queue.runs).find(|run| !log.has_segment(run.segment));
        if let Some(run) = gone {
            return Err(super::corrupt(
                log.dir(),
                &super::segment::path(log.dir(), run.segment),
                run.offset,
                "a segment that holds messages is missing (an older checkpoint counts messages in it)",
            ));
        }
    }
    if !log.head_has_checkpoint() {
        log.roll(&owner.checkpoint())?;
    }
    compact(owner, log)?;
    Ok(())
}

/// Deletes the segments (but the head) that hold no message, and rewrites those whose held
/// bytes are below a quarter of their size: their messages are copied to the head (same
/// sequences, same bytes), a new segment is started with a checkpoint that points at the copies,
/// and only then are they deleted. Returns the segments rewritten.
pub(crate) fn compact<O: Owner>(owner: &mut O, log: &mut Log) -> Result<usize, DurableError> {
    let head = log.head();
    let mut sparse = Vec::new();
    let closed: Vec<(u64, u64)> = log.segments().filter(|&(n, _)| n != head).collect();
    {
        let (_, space) = owner.queues();
        for (number, len) in closed {
            match space.live.get(&number).copied().unwrap_or(0) {
                0 => {
                    space.live.remove(&number);
                    log.delete(number)?;
                }
                live if live.saturating_mul(4) < len => sparse.push(number),
                _ => {}
            }
        }
    }
    // A checkpoint too large to write would leave the copies unreferenced after a reopen:
    // rewrite only when it will be written (the copies change no sizes in it).
    if sparse.is_empty() || owner.checkpoint().len() >= record::MAX_RECORD {
        return Ok(0);
    }
    {
        let (queues, space) = owner.queues();
        for (key, queue) in queues {
            for &number in &sparse {
                queue.rewrite(space, log, key, number)?;
            }
        }
    }
    if log.roll(&owner.checkpoint())? {
        let (_, space) = owner.queues();
        for &number in &sparse {
            space.live.remove(&number);
            log.delete(number)?;
            Counters::bump(&log.counters().rewritten);
        }
    }
    Ok(sparse.len())
}

/// Notes where a message read back is, keeping a queue's notes consecutive and the log's at
/// most [`LOCATED`]. At the bound a queue keeps the notes it has: its oldest messages are the
/// ones acknowledgements come for.
fn note(space: &mut Space, located: &mut VecDeque<Located>, message: Located) {
    let full = space.located >= LOCATED;
    match located.back() {
        Some(last) if message.sequence <= last.sequence => return,
        Some(last) if message.sequence != last.sequence + 1 => {
            if full {
                return;
            }
            space.located = space.located.saturating_sub(located.len());
            located.clear();
        }
        _ => {}
    }
    if space.located < LOCATED {
        space.located += 1;
        located.push_back(message);
    }
}

/// The bytes of a run's records `run_first..=up_to` and where the rest starts (the record of
/// `up_to + 1`, or the end of `up_to`'s when the entries end there), from consecutive entries
/// whose places `place` gives: a queue's cached window or its notes. `None` unless they hold
/// every one of those messages, in the rest's segment.
fn known_prefix<T>(
    entries: &VecDeque<T>,
    place: impl Fn(&T) -> Located,
    run_first: u64,
    up_to: u64,
) -> Option<(u64, Location)> {
    let first = place(entries.front()?).sequence;
    if first > run_first {
        return None;
    }
    let index = |sequence: u64| usize::try_from(sequence - first).ok();
    let last = place(entries.get(index(up_to)?)?);
    let rest = match entries.get(index(up_to + 1)?) {
        Some(next) => place(next).at,
        None => Location { segment: last.at.segment, offset: last.at.offset + last.size },
    };
    let mut freed = 0;
    for done in entries.range(index(run_first)?..=index(up_to)?).map(&place) {
        if done.at.segment != rest.segment {
            return None;
        }
        freed += done.size;
    }
    Some((freed, rest))
}

/// Calls `f` with each message of `run` in order (sequence, record, message bytes) until it
/// breaks or the run's last message.
fn walk<K: Key + ?Sized>(
    log: &mut Log,
    key: &K,
    run: &Run,
    mut f: impl FnMut(u64, &Entry, &[u8]) -> ControlFlow<()>,
) -> Result<(), DurableError> {
    let mut cursor = log.walk_from(Location { segment: run.segment, offset: run.offset });
    while let Some(entry) = log.next(&mut cursor)? {
        if entry.kind != K::MESSAGE {
            continue;
        }
        let Some((sequence, message)) = key.message(&entry.body).map_err(|e| malformed(log, "message record", &e))?
        else {
            continue;
        };
        if sequence < run.first || sequence > run.last {
            continue;
        }
        if f(sequence, &entry, message).is_break() || sequence == run.last {
            log.park(cursor);
            return Ok(());
        }
    }
    Err(missing(log, run.segment, "a segment ends before the last message of a run in it"))
}

/// A record of the log that does not decode.
pub(crate) fn malformed(log: &Log, what: &str, e: &Malformed) -> DurableError {
    DurableError::Corrupt { path: log.dir().to_owned(), what: format!("a {what} does not decode: {e}") }
}

/// The log does not hold what its owner's state says it holds.
pub(crate) fn missing(log: &Log, segment: u64, what: &str) -> DurableError {
    DurableError::Corrupt { path: log.dir().to_owned(), what: format!("segment {segment}: {what}") }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::{LOCATED, Located, Location, Space, known_prefix, note};

    fn at(sequence: u64, offset: u64) -> Located {
        Located { sequence, at: Location { segment: 3, offset }, size: 100 }
    }

    #[test]
    fn notes_stay_consecutive_and_within_the_logs_bound() {
        let mut space = Space::default();
        let (mut a, mut b) = (VecDeque::new(), VecDeque::new());
        for n in 1..=10 {
            note(&mut space, &mut a, at(n, 1000 + 100 * n));
        }
        note(&mut space, &mut a, at(5, 0));
        assert_eq!((a.len(), space.located), (10, 10), "a message noted again changes nothing");
        note(&mut space, &mut a, at(20, 3000));
        assert_eq!((a.len(), space.located), (1, 1), "a gap starts the notes again");
        for n in 1..=(LOCATED as u64 + 50) {
            note(&mut space, &mut b, at(n, 100 * n));
        }
        assert_eq!(space.located, LOCATED, "the log's bound holds across its queues");
        assert_eq!(b.len(), LOCATED - 1);
    }

    #[test]
    fn a_prefix_of_the_notes_gives_the_bytes_freed_and_where_the_rest_starts() {
        let mut space = Space::default();
        let mut notes = VecDeque::new();
        for n in 11..=20 {
            note(&mut space, &mut notes, at(n, 100 * n));
        }
        // Inside the notes: the next message's record.
        assert_eq!(known_prefix(&notes, |l| *l, 11, 14), Some((400, Location { segment: 3, offset: 1500 })));
        // At their end: right after the last record.
        assert_eq!(known_prefix(&notes, |l| *l, 12, 20), Some((900, Location { segment: 3, offset: 2100 })));
        assert_eq!(known_prefix(&notes, |l| *l, 10, 14), None, "the run starts before the notes");
        assert_eq!(known_prefix(&notes, |l| *l, 15, 21), None, "the notes end before `up_to`");
        notes[3].at.segment = 4;
        assert_eq!(known_prefix(&notes, |l| *l, 11, 15), None, "records of another segment");
    }
}
