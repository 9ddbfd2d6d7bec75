//! The handled marks' sidecar: "handled up to n" per stream, written by the dispatcher itself,
//! so that a stream's next handler starts after a store into a mapped file rather than a round
//! trip through the log's writer.
//!
//! The guarantee (see the module docs of [`durable`](crate::durable), "The exact guarantee")
//! needs each handler's return recorded at the inbox's level before the stream's next handler
//! starts. Through the log's writer that is a command, a thread wake-up, a `write` and an answer
//! per message: one stream then handled about 7,000 messages a second on the project's VM. The
//! dispatcher instead takes a run of a stream's messages at once and, after each handler, writes
//! one of the stream's slots in this file (32 bytes; at the power level then synced, off the
//! runtime's threads). The log gets one "handled" record per run, when the run is done, which
//! releases the run's bytes for compaction.
//!
//! - **A store, not a `pwrite`.** The file is mapped shared, and a mark is a 32-byte copy into
//!   the mapping: the page it lands in is the page cache's own, so the mark is with the OS the
//!   moment the copy ends, and a `kill -9` after it keeps it, as after a `write`. Until session
//!   17 each mark was a `pwrite`, the one system call per message of the durable path, about
//!   1 µs of the process level's ~6 µs of CPU per message (a sixth of its `perf` profile).
//!   That copy is the library's one `unsafe` block (the workspace denies `unsafe` everywhere
//!   else): [`Mapped::put`] says why it is sound.
//! - **Two slots per stream, taken in turn.** A store can be cut by a `kill -9` between its
//!   instructions, where a `pwrite` of 32 bytes never is. So a stream's marks alternate between
//!   its two slots, and a mark cut short leaves the other slot whole with the mark before it:
//!   the stream then reruns the one handler whose mark was being written (which the exact
//!   guarantee allows: its return was not recorded), not the whole run since the log's mark.
//! - **Slots.** 32 bytes each: outbox `u64`, the sender name's FNV-1a hash `u64`, handled `u64`,
//!   CRC-32 of those 24 bytes `u32`, 4 zero bytes; little-endian. A stream gets the next free
//!   pair of slots the first time one of its messages is handled in this run of the inbox, so
//!   the file holds 64 bytes per stream handled since the inbox was opened (at most
//!   `max_streams` of them: 4 MiB for the default 65,536), in a length that doubles from
//!   [`INITIAL_LEN`] as streams come; the zeroed slots past the last are empty.
//! - **Group commit** (power level): a mark is written at once and synced by whichever caller
//!   finds no sync running; one `fdatasync` covers every mark written before it started, of
//!   any stream, and the marks written meanwhile wait for the next one. So concurrent streams
//!   share syncs, and a stream that lets its next handlers run before its marks are synced
//!   (`InboxConfig::unsynced_marks`) shares them among its own marks too. (On Linux, whose
//!   page cache is the mapping, `fdatasync` writes back pages dirtied through it: a page
//!   written back is write-protected again, and the next store marks it dirty.)
//! - **At open** every slot whose checksum holds is read, the higher of a stream's two taken,
//!   and a stream whose mark says more than the log (within what it recorded) is marked handled
//!   up to it in the log; the log is written (and at the power level synced), and only then is
//!   the file emptied. A slot whose checksum fails (a store cut by a crash, a write torn by a
//!   power loss on a disk without atomic sector writes) is skipped. Streams are matched by
//!   outbox id (64 random bits) and the sender's hash, so a slot of a stream the inbox no longer
//!   tracks is ignored, and not kept: the file is read in pieces, so one that damage made long
//!   (sparse) or filled with forged slots costs the open time, not memory. Damage to the file
//!   alone never makes the inbox unopenable: a slot it breaks is skipped, at worst sending its
//!   stream back to the log's mark (its handlers since then run again); a forged slot can mark
//!   messages handled, never past what the log recorded.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use memmap2::MmapRaw;
use tokio::sync::watch;

use super::super::{Durability, DurableError, MessageId};

/// The sidecar's file name in the inbox's directory.
pub(crate) const FILE: &str = "HANDLED";

/// Bytes of one slot.
pub(crate) const SLOT: usize = 32;

/// The sidecar's first length: 64 streams' pairs of slots. It doubles when a stream's pair
/// would not fit.
pub(crate) const INITIAL_LEN: usize = 4096;

/// A valid slot, as read at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) outbox: u64,
    pub(crate) sender_hash: u64,
    pub(crate) handled: u64,
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike `std`'s hasher.
pub(crate) fn sender_hash(sender: &str) -> u64 {
    sender
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Bytes of the sidecar read at once at open.
const READ_BUFFER: usize = 64 << 10;

/// Every mark in the sidecar in `dir` of a stream that `wanted` accepts (by outbox id and
/// sender hash), the higher of its two slots' (a slot whose checksum fails is skipped), in the
/// order of the streams' first slots; none if the file does not exist.
///
/// The file is read [`READ_BUFFER`] bytes at a time and only the wanted streams are kept, so
/// memory is bounded by them whatever the file holds: a damaged sidecar may be long (sparse,
/// gigabytes of zeros) and forged slots may name any number of streams. Time is its length's.
///
/// # Errors
/// [`Io`](DurableError::Io) if the file exists and cannot be read.
pub(crate) fn read(dir: &Path, wanted: impl Fn(u64, u64) -> bool) -> Result<Vec<Mark>, DurableError> {
    let path = dir.join(FILE);
    let io = |source| DurableError::Io { path: path.clone(), source };
    let mut reader = match File::open(&path) {
        Ok(file) => BufReader::with_capacity(READ_BUFFER, file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io(source)),
    };
    let mut marks: Vec<Mark> = Vec::new();
    let mut streams = HashMap::new();
    // Slots whose checksum failed: how many, and the first.
    let mut failed: Option<(u64, u64)> = None;
    let mut slot = [0; SLOT];
    for index in 0u64.. {
        match reader.read_exact(&mut slot) {
            Ok(()) => {}
            // The end; a last slot cut short holds no mark.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(source) => return Err(io(source)),
        }
        if slot.iter().all(|&b| b == 0) {
            continue;
        }
        match decode(&slot) {
            Some(mark) if wanted(mark.outbox, mark.sender_hash) => match streams.entry((mark.outbox, mark.sender_hash))
            {
                std::collections::hash_map::Entry::Occupied(at) => {
                    let known: &mut Mark = &mut marks[*at.get()];
                    known.handled = known.handled.max(mark.handled);
                }
                std::collections::hash_map::Entry::Vacant(at) => {
                    at.insert(marks.len());
                    marks.push(mark);
                }
            },
            Some(_) => {}
            None => failed = Some(failed.map_or((1, index), |(count, first)| (count + 1, first))),
        }
    }
    if let Some((count, first)) = failed {
        tracing::warn!(
            path = %path.display(), slots = count, first,
            "durable inbox: handled marks failed their checksums; a stream's other slot holds the mark before its last"
        );
    }
    Ok(marks)
}

/// A slot holding `mark`, its checksum computed.
pub(crate) fn encode(mark: Mark) -> [u8; SLOT] {
    let mut slot = [0; SLOT];
    slot[0..8].copy_from_slice(&mark.outbox.to_le_bytes());
    slot[8..16].copy_from_slice(&mark.sender_hash.to_le_bytes());
    slot[16..24].copy_from_slice(&mark.handled.to_le_bytes());
    let crc = crc32fast::hash(&slot[..24]);
    slot[24..28].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// The mark a slot holds, if its checksum holds and it marks something (`handled` above 0).
pub(crate) fn decode(slot: &[u8]) -> Option<Mark> {
    let u64_at = |at: usize| slot.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let crc = slot.get(24..28).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)?;
    if crc != crc32fast::hash(slot.get(..24)?) || u64_at(16)? == 0 {
        return None;
    }
    Some(Mark { outbox: u64_at(0)?, sender_hash: u64_at(8)?, handled: u64_at(16)? })
}

/// The sidecar, open for the dispatcher's marks.
#[derive(Debug)]
pub(crate) struct Marks {
    file: Arc<File>,
    path: PathBuf,
    durability: Durability,
    slots: Mutex<Slots>,
    /// The group commit's state (power level).
    syncing: Mutex<Syncing>,
    /// The last [`Written`] number a finished sync covers; every change wakes the waiters.
    synced: watch::Sender<u64>,
    /// `fdatasync` calls made, for the tests.
    syncs: AtomicU64,
}

/// Which marks are written, and whether a sync is under way.
#[derive(Debug, Default)]
struct Syncing {
    /// Marks written so far; a mark's [`Written`] is this count just after its write.
    written: u64,
    /// A caller is syncing (for the marks written up to the count it read when it started).
    running: bool,
    /// A sync failed: whether the file's earlier writes reached the disk is unknown (a later
    /// `fdatasync` may report success without them), so no mark is synced any more.
    failed: bool,
}

/// The streams' slots and the mapping they are written through.
#[derive(Debug)]
struct Slots {
    /// Per stream (outbox, sender hash): its pair's index.
    streams: HashMap<(u64, u64), usize>,
    /// Per pair: which of its two slots the stream's next mark goes to.
    turns: Vec<u8>,
    /// The stream marked last: its sender's name (as its messages' ids share it), outbox,
    /// sender hash and pair. A stream's marks mostly come one after another, and then neither
    /// the name's hash nor the map's is computed again.
    last: Option<(Arc<str>, u64, u64, usize)>,
    /// The whole file, mapped.
    mapped: Mapped,
}

impl Slots {
    /// The sender hash and the pair of `id`'s stream, given one if it has none yet.
    fn stream(&mut self, id: &MessageId) -> (u64, usize) {
        let outbox = id.outbox().as_u64();
        if let Some((sender, last_outbox, hash, pair)) = &self.last
            && *last_outbox == outbox
            && Arc::ptr_eq(sender, id.sender_arc())
        {
            return (*hash, *pair);
        }
        let hash = sender_hash(id.sender());
        let next = self.streams.len();
        let pair = *self.streams.entry((outbox, hash)).or_insert(next);
        if pair == self.turns.len() {
            self.turns.push(0);
        }
        self.last = Some((id.sender_arc().clone(), outbox, hash, pair));
        (hash, pair)
    }
}

/// The sidecar mapped shared and writable, as long as the file.
#[derive(Debug)]
struct Mapped(MmapRaw);

impl Mapped {
    /// Copies `slot` to the file at `offset`.
    ///
    /// # Panics
    /// If the slot does not lie inside the mapping (the caller grows it first).
    fn put(&self, offset: usize, slot: &[u8; SLOT]) {
        assert!(offset.checked_add(SLOT).is_some_and(|end| end <= self.0.len()), "a mark past the mapping");
        // SAFETY: the destination lies inside the mapping (checked above), which is writable
        // and lives as long as `self`. `MmapRaw` hands out no references, so no Rust reference
        // can alias the bytes written, and nothing in this process reads them through the
        // mapping (`read` reads the file, before it is mapped). The file's length only changes
        // under the `Slots` lock, by `grow`, which replaces this mapping before any slot past
        // the old end is written; another process is kept out by the inbox's lock file, and
        // one that ignored it and truncated the file would make this copy raise SIGBUS, a
        // crash, not a read of memory that is not ours.
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(slot.as_ptr(), self.0.as_mut_ptr().add(offset), SLOT);
        }
    }
}

/// A mark written to the file: [`Marks::synced`] waits until a sync covers it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Written(u64);

impl Marks {
    /// Creates the sidecar in `dir`, empty: what it held must have been read and written to
    /// the log before.
    pub(crate) fn create(dir: &Path, durability: Durability) -> Result<Marks, DurableError> {
        let path = dir.join(FILE);
        let io = |source| DurableError::Io { path: path.clone(), source };
        let file = OpenOptions::new().create(true).read(true).write(true).truncate(true).open(&path).map_err(io)?;
        file.set_len(INITIAL_LEN as u64).map_err(io)?;
        if durability == Durability::Power {
            file.sync_all().map_err(io)?;
        }
        let mapped = Mapped(MmapRaw::map_raw(&file).map_err(io)?);
        Ok(Marks {
            file: Arc::new(file),
            path,
            durability,
            slots: Mutex::new(Slots { streams: HashMap::new(), turns: Vec::new(), last: None, mapped }),
            syncing: Mutex::default(),
            synced: watch::Sender::new(0),
            syncs: AtomicU64::new(0),
        })
    }

    /// Writes "handled up to `id`'s sequence" for its stream, at the inbox's level: returns
    /// once the slot is written to the file (and synced at the power level).
    ///
    /// # Errors
    /// [`Io`](DurableError::Io) if the write or the sync failed.
    #[cfg(test)]
    pub(crate) async fn mark(&self, id: &MessageId) -> Result<(), DurableError> {
        let written = self.write(id)?;
        self.synced(written).await
    }

    /// The inbox's level: whether marks are synced.
    pub(crate) fn durability(&self) -> Durability {
        self.durability
    }

    /// Writes "handled up to `id`'s sequence" to the one of its stream's two slots that its
    /// last mark did not take (a store into the mapped file): enough for a process crash. At the
    /// power level, [`synced`](Marks::synced) then waits for a sync.
    ///
    /// # Errors
    /// [`Io`](DurableError::Io) if the file could not grow for a new stream's slots.
    pub(crate) fn write(&self, id: &MessageId) -> Result<Written, DurableError> {
        {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let (sender_hash, pair) = slots.stream(id);
            let turn = &mut slots.turns[pair];
            let offset = (pair * 2 + usize::from(*turn)) * SLOT;
            *turn ^= 1;
            if offset + SLOT > slots.mapped.0.len() {
                self.grow(&mut slots, offset + SLOT)?;
            }
            let mark = Mark { outbox: id.outbox().as_u64(), sender_hash, handled: id.sequence() };
            slots.mapped.put(offset, &encode(mark));
        }
        // Numbered after the write: a sync that reads a count including this one started after it.
        let mut syncing = self.syncing.lock().unwrap_or_else(PoisonError::into_inner);
        syncing.written += 1;
        Ok(Written(syncing.written))
    }

    /// Doubles the file until `needed` bytes fit, and maps it again. The added bytes read as
    /// zeros: empty slots. At the power level the new length reaches the disk with the next
    /// sync, which the marks written into it wait for.
    fn grow(&self, slots: &mut Slots, needed: usize) -> Result<(), DurableError> {
        let mut len = slots.mapped.0.len().max(INITIAL_LEN);
        while len < needed {
            len *= 2;
        }
        self.file.set_len(len as u64).map_err(|source| self.io(source))?;
        slots.mapped = Mapped(MmapRaw::map_raw(&*self.file).map_err(|source| self.io(source))?);
        Ok(())
    }

    /// The file's length, as mapped: 64 bytes per stream marked since the inbox was opened,
    /// rounded up to [`INITIAL_LEN`] times a power of two.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).mapped.0.len()
    }

    /// Returns once `written` is synced (at once at the process level): by a sync already
    /// under way that covers it, or by one this caller starts for every mark written so far.
    ///
    /// # Errors
    /// [`Io`](DurableError::Io) if a sync failed (this one or an earlier one).
    ///
    /// # Cancel safety
    /// Dropped while syncing, the sync finishes on its blocking thread and the next waiter
    /// starts another.
    pub(crate) async fn synced(&self, written: Written) -> Result<(), DurableError> {
        if self.durability != Durability::Power {
            return Ok(());
        }
        let mut covered = self.synced.subscribe();
        loop {
            let target = {
                let mut syncing = self.syncing.lock().unwrap_or_else(PoisonError::into_inner);
                if syncing.failed {
                    return Err(self.io(io::Error::other("an earlier sync of the handled marks failed")));
                }
                if *covered.borrow_and_update() >= written.0 {
                    return Ok(());
                }
                if syncing.running {
                    None
                } else {
                    syncing.running = true;
                    Some(syncing.written)
                }
            };
            let Some(target) = target else {
                // The sender lives in `self`: `changed` cannot fail while we borrow it.
                let _ = covered.changed().await;
                continue;
            };
            let mut running = Running { marks: self, synced: None };
            let file = self.file.clone();
            let result = tokio::task::spawn_blocking(move || file.sync_data()).await;
            self.syncs.fetch_add(1, Ordering::Relaxed);
            let result = result.unwrap_or_else(|e| Err(io::Error::other(e)));
            running.synced = Some(result.is_ok().then_some(target));
            drop(running);
            result.map_err(|source| self.io(source))?;
        }
    }

    /// `fdatasync` calls made so far.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    fn io(&self, source: io::Error) -> DurableError {
        DurableError::Io { path: self.path.clone(), source }
    }
}

/// The sync under way: ends it when dropped, finished or not, and wakes the waiters.
struct Running<'a> {
    marks: &'a Marks,
    /// `Some(Some(n))`: synced up to `n`; `Some(None)`: failed; `None`: dropped unfinished.
    synced: Option<Option<u64>>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut syncing = self.marks.syncing.lock().unwrap_or_else(PoisonError::into_inner);
        syncing.running = false;
        match self.synced {
            Some(Some(target)) => self.marks.synced.send_modify(|covered| *covered = (*covered).max(target)),
            Some(None) => {
                syncing.failed = true;
                self.marks.synced.send_modify(|_| {});
            }
            None => self.marks.synced.send_modify(|_| {}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::OutboxId;

    /// Every stream's mark.
    fn read_all(dir: &Path) -> Vec<Mark> {
        read(dir, |_, _| true).expect("read")
    }

    #[tokio::test]
    async fn marks_are_read_back_per_stream_and_a_torn_slot_leaves_the_mark_before_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let marks = Marks::create(dir.path(), Durability::Process).expect("created");
        for (sender, sequence) in [("a", 1), ("b", 1), ("a", 2), ("a", 3)] {
            marks.mark(&MessageId::new(sender, OutboxId::from_u64(9), sequence)).await.expect("marked");
        }
        let a = |handled| Mark { outbox: 9, sender_hash: sender_hash("a"), handled };
        let b = Mark { outbox: 9, sender_hash: sender_hash("b"), handled: 1 };
        assert_eq!(read_all(dir.path()), [a(3), b]);

        // "a" took its first slot for 1 and 3, its second for 2: 3's slot torn, 2 is left.
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).expect("file");
        bytes[16] ^= 0xff;
        std::fs::write(&path, &bytes).expect("torn");
        assert_eq!(read_all(dir.path()), [a(2), b]);
        // Both torn: nothing of "a" is left.
        bytes[SLOT + 16] ^= 0xff;
        std::fs::write(&path, &bytes).expect("torn");
        assert_eq!(read_all(dir.path()), [b]);

        drop(Marks::create(dir.path(), Durability::Process).expect("recreated"));
        assert_eq!(read_all(dir.path()), []);
    }

    #[tokio::test]
    async fn streams_marked_in_turn_through_shared_names_keep_their_own_slots() {
        // A stream's ids share its sender's name, as the dispatcher's do: the stream marked
        // last is found without hashing, and a change of stream (or of outbox) is seen.
        let dir = tempfile::tempdir().expect("temp dir");
        let marks = Marks::create(dir.path(), Durability::Process).expect("created");
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let id =
            |sender: &Arc<str>, outbox, sequence| MessageId::new(sender.clone(), OutboxId::from_u64(outbox), sequence);
        for (sender, outbox, sequence) in
            [(&a, 9, 1), (&a, 9, 2), (&b, 9, 1), (&a, 9, 3), (&a, 8, 1), (&a, 9, 4), (&b, 9, 2)]
        {
            marks.write(&id(sender, outbox, sequence)).expect("written");
        }
        let mark = |sender, outbox, handled| Mark { outbox, sender_hash: sender_hash(sender), handled };
        assert_eq!(read_all(dir.path()), [mark("a", 9, 4), mark("b", 9, 2), mark("a", 8, 1)]);
        // Stream "a"/9 took its two slots in turn: 1 and 3 in the first, 2 and 4 in the second.
        let bytes = std::fs::read(dir.path().join(FILE)).expect("file");
        assert_eq!(
            (decode(&bytes[..SLOT]), decode(&bytes[SLOT..2 * SLOT])),
            (Some(mark("a", 9, 3)), Some(mark("a", 9, 4)))
        );
    }

    #[tokio::test]
    async fn the_file_doubles_as_streams_come_and_keeps_every_mark() {
        let dir = tempfile::tempdir().expect("temp dir");
        let marks = Marks::create(dir.path(), Durability::Process).expect("created");
        let streams = INITIAL_LEN / (2 * SLOT);
        let mark = |n: usize, sequence| {
            let id = MessageId::new(format!("sender-{n}"), OutboxId::from_u64(n as u64), sequence);
            marks.write(&id).expect("written");
        };
        for n in 0..streams {
            mark(n, 1);
        }
        assert_eq!(marks.len(), INITIAL_LEN, "{streams} streams fit the first length");
        mark(streams, 1);
        assert_eq!(marks.len(), 2 * INITIAL_LEN, "one more doubles it");
        for n in streams + 1..3 * streams {
            mark(n, 1);
        }
        for n in 0..3 * streams {
            mark(n, 2);
        }
        assert_eq!(marks.len(), 4 * INITIAL_LEN, "64 bytes a stream, rounded up to a doubling");
        assert_eq!(std::fs::metadata(dir.path().join(FILE)).expect("file").len(), 4 * INITIAL_LEN as u64);
        let read_back = read_all(dir.path());
        assert_eq!(read_back.len(), 3 * streams);
        for (n, mark) in read_back.iter().enumerate() {
            let expected = Mark { outbox: n as u64, sender_hash: sender_hash(&format!("sender-{n}")), handled: 2 };
            assert_eq!(*mark, expected, "stream {n}");
        }
    }

    #[tokio::test]
    async fn a_long_sparse_sidecar_is_read_to_its_end_keeping_only_the_streams_asked_for() {
        // Damage (or a forger) made the file 8 MiB of zeros with valid slots at its end, of a
        // stream the inbox tracks and of one it does not: read in bounded pieces to the end,
        // only the tracked one kept (forged slots may name any number of streams).
        let dir = tempfile::tempdir().expect("temp dir");
        let marks = Marks::create(dir.path(), Durability::Process).expect("created");
        for (sender, sequence) in [("a", 1), ("b", 1), ("a", 2)] {
            marks.write(&MessageId::new(sender, OutboxId::from_u64(9), sequence)).expect("written");
        }
        drop(marks);
        let mark = |sender, handled| Mark { outbox: 9, sender_hash: sender_hash(sender), handled };
        let file = OpenOptions::new().write(true).open(dir.path().join(FILE)).expect("file");
        let end = 8 << 20;
        file.set_len(end).expect("longer");
        std::os::unix::fs::FileExt::write_all_at(&file, &encode(mark("a", 7)), end - 2 * SLOT as u64).expect("a");
        std::os::unix::fs::FileExt::write_all_at(&file, &encode(mark("c", 5)), end - SLOT as u64).expect("c");
        // And a slot cut short at the end, which holds nothing.
        std::os::unix::fs::FileExt::write_all_at(&file, &encode(mark("a", 9))[..SLOT - 1], end).expect("cut");
        let tracked = [sender_hash("a"), sender_hash("b")];
        let read_back = read(dir.path(), |outbox, hash| outbox == 9 && tracked.contains(&hash)).expect("read");
        assert_eq!(read_back, [mark("a", 7), mark("b", 1)]);
        assert_eq!(read_all(dir.path()), [mark("a", 7), mark("b", 1), mark("c", 5)]);
    }

    #[tokio::test]
    async fn a_sync_covers_every_mark_written_before_it_of_any_stream() {
        let dir = tempfile::tempdir().expect("temp dir");
        let marks = Marks::create(dir.path(), Durability::Power).expect("created");
        let mut written = Vec::new();
        for (sender, sequence) in [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("a", 3)] {
            written.push(marks.write(&MessageId::new(sender, OutboxId::from_u64(9), sequence)).expect("written"));
        }
        marks.synced(written[4]).await.expect("synced");
        assert_eq!(marks.syncs(), 1, "one sync for the five marks");
        for earlier in &written[..4] {
            marks.synced(*earlier).await.expect("synced");
        }
        assert_eq!(marks.syncs(), 1, "the earlier marks were covered by it");
        let later = marks.write(&MessageId::new("b", OutboxId::from_u64(9), 2)).expect("written");
        marks.synced(later).await.expect("synced");
        assert_eq!(marks.syncs(), 2, "a mark written after a sync needs the next");

        let process = tempfile::tempdir().expect("temp dir");
        let marks = Marks::create(process.path(), Durability::Process).expect("created");
        let written = marks.write(&MessageId::new("a", OutboxId::from_u64(9), 1)).expect("written");
        marks.synced(written).await.expect("synced");
        assert_eq!(marks.syncs(), 0, "the process level does not sync");
    }

    #[tokio::test]
    async fn a_sync_dropped_unfinished_leaves_the_next_waiter_to_sync() {
        let dir = tempfile::tempdir().expect("temp dir");
        let marks = Marks::create(dir.path(), Durability::Power).expect("created");
        let written = marks.write(&MessageId::new("a", OutboxId::from_u64(9), 1)).expect("written");
        let mut first = Box::pin(marks.synced(written));
        let finished = futures::poll!(first.as_mut()).is_ready();
        drop(first);
        // Dropped while syncing, the first left no sync running: this one must not wait
        // forever for one, and syncs itself (the dropped sync is not counted).
        marks.synced(written).await.expect("synced");
        assert_eq!(marks.syncs(), 1, "first finished at its first poll: {finished}");
        assert_eq!(read_all(dir.path()), [Mark { outbox: 9, sender_hash: sender_hash("a"), handled: 1 }]);
    }
}
