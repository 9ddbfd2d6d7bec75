//! The segment log under an outbox and an inbox: files of checksummed records, appended by one
//! writer.
//!
//! - [`record`]: a record's framing and field codec; [`segment`]: files, headers, torn tails;
//!   [`writer`]: the loop that owns the log and commits batches (group commit; a task at the
//!   process level, a thread at the power level); [`runs`]: the owners' queues of messages
//!   still needed, their byte counts and compaction.
//! - [`Log`] is used by its writer only: it is not `Sync` and needs no lock. Its
//!   owner (the outbox) decides what records mean and which segments are still needed; the
//!   log writes, syncs, reads back, rolls, deletes and repairs.
//!
//! Opening a log:
//!
//! 1. The directory is locked (`LOCK`, an advisory lock held while the log is open): a second
//!    process fails with [`DurableError::Locked`] instead of interleaving sequences.
//! 2. The last segment is read whole and its tail checked ([`segment::check_tail`]): a torn tail
//!    is truncated with a `tracing::warn!` naming the file, the offset and the bytes dropped; a
//!    bad record followed by valid ones is [`DurableError::Corrupt`]. A last segment whose
//!    header was cut short (a crash while rolling) is removed the same way; a header whose
//!    length disagrees with its fields runs past the end too, but is a bad header (`Corrupt`),
//!    not a cut one.
//! 3. The newest segment whose first record is a checkpoint gives the owner's state, and the
//!    owner replays the records after it ([`Opened::replay`]): one segment, normally, whatever
//!    the size of the log.
//! 4. Every run of the state rebuilt must be in a segment that is there ([`runs::after_open`]),
//!    else `Corrupt`, naming the run's file and offset. A crash never leaves a run in a deleted
//!    segment; damage that cuts the last segment's checkpoint, with the records after it that
//!    emptied older segments, does: the open falls back to a checkpoint that counts messages in
//!    them.
//!
//! Reading back part of a segment (a run of messages that is not in memory: a backlog larger
//! than the owners' in-memory tail) goes through [`Log::walk_from`] and [`Log::park`]: the
//! reader a walk ended with, its file open and its buffer ([`READ_BUFFER`]) filled, is kept
//! for the next walk of the same segment, which moves within the buffer when its start is
//! there. A delivery task's read starts at its first message not yet acknowledged, behind where
//! its last read ended, so most walks then cost no system call; each used to open the file,
//! allocate the buffer and fill it (6% of a durable message's CPU with a backlog, in `perf`).
//! (Acknowledgements inside a run mostly walk nothing: see `runs.rs`.) Bound: one reader per
//! log, [`READ_BUFFER`] bytes and a file handle.

pub(crate) mod record;
pub(crate) mod runs;
pub(crate) mod segment;
pub(crate) mod writer;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use self::record::{CHECKPOINT, FRAME_HEADER, MAX_RECORD};
use self::segment::{BadHeader, Identity, Tail};
use crate::durable::{Durability, DurableError};

/// Default size at which the head segment is closed and a new one started: 64 MiB.
pub(crate) const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// How a log writes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogConfig {
    /// Size at which the head segment is rolled.
    pub(crate) segment_bytes: u64,
    /// Whether a batch is synced before its appends complete.
    pub(crate) durability: Durability,
}

/// What the log has done, for tests and (later) metrics. Monotonic counts.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// `fdatasync` calls (batches at the power level, and segment rolls).
    pub(crate) syncs: AtomicU64,
    /// `write` calls of batches.
    pub(crate) writes: AtomicU64,
    /// Records read back through a [`Cursor`]: at open, the replay after the checkpoint.
    pub(crate) scanned: AtomicU64,
    /// Segment files opened to read records back.
    pub(crate) opened: AtomicU64,
    /// Segments deleted (nothing left in them, or rewritten).
    pub(crate) deleted: AtomicU64,
    /// Segments whose live records were copied to the head before deletion.
    pub(crate) rewritten: AtomicU64,
    /// Commands the writer took (`log/writer.rs`).
    pub(crate) commands: AtomicU64,
    /// An inbox's runs that a stream's handler went on to without a take (`Inbox::extend`).
    pub(crate) extended: AtomicU64,
}

impl Counters {
    #[cfg(test)]
    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a record starts: its segment and its offset in the segment's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
}

/// A record read back.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) at: Location,
    pub(crate) kind: u8,
    pub(crate) body: Vec<u8>,
    /// The record's size on disk, header included.
    pub(crate) size: u64,
}

/// Bytes a reader of a segment reads at once.
pub(crate) const READ_BUFFER: usize = 128 << 10;

/// A reader kept from one walk of a segment to the next (see the module docs).
#[derive(Debug)]
struct Parked {
    segment: u64,
    /// The offset in the segment the reader is at.
    at: u64,
    reader: BufReader<File>,
}

/// A reading position: the records of one segment from an offset, or of the whole log from
/// there on.
#[derive(Debug)]
pub(crate) struct Cursor {
    at: Location,
    whole_log: bool,
    reader: Option<(u64, BufReader<File>)>,
}

impl Cursor {
    /// Reads segment `at.segment` from `at.offset` to its end.
    pub(crate) fn in_segment(at: Location) -> Cursor {
        Cursor { at, whole_log: false, reader: None }
    }
}

/// One segment as the log knows it.
#[derive(Clone, Copy, Debug)]
struct Seg {
    /// Bytes in the file (for the head: written so far, not counting the batch being built).
    /// A record is read only within it ([`Log::read_one`]), so it is current wherever a record
    /// is read: a closed segment's is final, the open reads each segment's (the last one's
    /// after its tail is repaired), and [`Log::next`] writes the batch before reading the head.
    len: u64,
    /// Bytes of the magic and header: records start here.
    start: u64,
}

/// A log just opened: the log, its recorded identity, the state to start from and where to
/// replay from.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) log: Log,
    /// The last checkpoint's body; `None` when no segment starts with one (the state is then
    /// empty and the replay starts at the first segment's first record).
    pub(crate) checkpoint: Option<Vec<u8>>,
    /// The records after the checkpoint, for [`Log::next`]. Checkpoints met in it (of later
    /// segments that were not the newest readable one) are records of kind
    /// [`record::CHECKPOINT`] to skip.
    pub(crate) replay: Cursor,
}

/// The files of one log, its head segment open for appending, and the batch being built.
#[derive(Debug)]
pub(crate) struct Log {
    dir: PathBuf,
    identity: Identity,
    config: LogConfig,
    segments: BTreeMap<u64, Seg>,
    head: File,
    head_number: u64,
    /// Bytes of the head known to be on disk (synced); what a power loss keeps.
    synced: u64,
    /// The segment whose checkpoint a reopen would start from. It and every later segment are
    /// never deleted: the replay reads them all. Normally the head.
    checkpoint_segment: u64,
    /// The batch being built: records not written yet.
    buf: Vec<u8>,
    /// A write or sync failed: what reached the file is unknown, so nothing more is written
    /// until the log is opened again (which repairs the tail).
    failed: bool,
    counters: Arc<Counters>,
    /// The reader the last walk ended with ([`Log::park`]).
    parked: Option<Parked>,
    /// Held for the advisory lock on `LOCK`.
    _lock: File,
}

impl Log {
    /// Opens the log in `dir`, creating the directory and a first segment (with `identity` and
    /// the checkpoint `empty`) if it holds none.
    ///
    /// # Errors
    /// `Locked` if another process has it open, `Corrupt` for a bad record before valid ones, a
    /// bad header or a log of another role (an inbox's opened as an outbox), `Io` if the files
    /// cannot be read or written.
    pub(crate) fn open(
        dir: &Path,
        config: LogConfig,
        identity: Identity,
        empty: &[u8],
        counters: Arc<Counters>,
    ) -> Result<Opened, DurableError> {
        let io = |source| DurableError::Io { path: dir.to_owned(), source };
        fs::create_dir_all(dir).map_err(io)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK")).map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(DurableError::Locked { path: dir.to_owned() }),
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut numbers = segment::list(dir).map_err(io)?;
        let Some(&last) = numbers.last() else {
            return Log::create(dir, config, identity, empty, counters, lock);
        };
        // The last segment: header, then the tail check and repair.
        let last_path = segment::path(dir, last);
        let bytes = fs::read(&last_path).map_err(io)?;
        let (found, header_len) = match segment::read_header(&bytes) {
            Ok((found, number, len)) if number == last => (found, len),
            Ok(_) => return Err(corrupt(dir, &last_path, 0u64, "its header names another segment number")),
            Err(BadHeader::Invalid(why)) => return Err(corrupt(dir, &last_path, 0u64, why.0)),
            Err(BadHeader::Short) => {
                tracing::warn!(
                    file = %last_path.display(), offset = 0, dropped = bytes.len(),
                    "durable log: removed a segment whose header was cut short (a crash while it was created)"
                );
                fs::remove_file(&last_path).map_err(io)?;
                numbers.pop();
                if numbers.is_empty() {
                    return Log::create(dir, config, identity, empty, counters, lock);
                }
                // Open again from the segment before, which is now the last: the lock is
                // released first, as this process would otherwise find it held.
                drop(lock);
                return Log::open(dir, config, identity, empty, counters);
            }
        };
        let mut last_len = bytes.len() as u64;
        match segment::check_tail(&bytes[header_len..]) {
            Tail::Clean => {}
            Tail::Torn { valid } => {
                let offset = header_len + valid;
                tracing::warn!(
                    file = %last_path.display(), offset, dropped = bytes.len() - offset,
                    "durable log: truncated a torn tail (a write cut short by a crash)"
                );
                let file = OpenOptions::new().write(true).open(&last_path).map_err(io)?;
                file.set_len(offset as u64).map_err(io)?;
                file.sync_all().map_err(io)?;
                last_len = offset as u64;
            }
            Tail::Corrupt { at } => {
                return Err(corrupt(
                    dir,
                    &last_path,
                    (header_len + at) as u64,
                    "a record fails its checksum and valid records follow it",
                ));
            }
        }
        // The other segments' headers, checked against the last one's.
        if found.role != identity.role {
            return Err(corrupt(dir, &last_path, 0u64, "the log belongs to another role (an outbox's or an inbox's)"));
        }
        let mut segments = BTreeMap::new();
        segments.insert(last, Seg { len: last_len, start: header_len as u64 });
        for &number in &numbers[..numbers.len() - 1] {
            let path = segment::path(dir, number);
            let mut file = File::open(&path).map_err(io)?;
            let len = file.metadata().map_err(io)?.len();
            let mut head = Vec::with_capacity(512);
            Read::by_ref(&mut file).take(512).read_to_end(&mut head).map_err(io)?;
            match segment::read_header(&head) {
                Ok((identity, n, start)) if identity == found && n == number => {
                    segments.insert(number, Seg { len, start: start as u64 });
                }
                Ok(_) => return Err(corrupt(dir, &path, 0u64, "its header names another log or segment")),
                Err(BadHeader::Short) => return Err(corrupt(dir, &path, 0u64, "its header is cut short")),
                Err(BadHeader::Invalid(why)) => return Err(corrupt(dir, &path, 0u64, why.0)),
            }
        }
        let head = OpenOptions::new().append(true).open(&last_path).map_err(io)?;
        let mut log = Log {
            dir: dir.to_owned(),
            identity: found,
            config,
            segments,
            head,
            head_number: last,
            synced: last_len,
            checkpoint_segment: numbers[0],
            buf: Vec::new(),
            failed: false,
            counters,
            parked: None,
            _lock: lock,
        };
        // The newest checkpoint: the first record of a segment, from the last one back.
        for &number in numbers.iter().rev() {
            let start = log.segments[&number].start;
            let mut cursor = Cursor::in_segment(Location { segment: number, offset: start });
            let first = log.read_one(&mut cursor)?;
            if let Some(entry) = first.filter(|e| e.kind == CHECKPOINT) {
                log.checkpoint_segment = number;
                let replay = Cursor { at: cursor.at, whole_log: true, reader: None };
                return Ok(Opened { log, checkpoint: Some(entry.body), replay });
            }
        }
        let first = numbers[0];
        let at = Location { segment: first, offset: log.segments[&first].start };
        Ok(Opened { log, checkpoint: None, replay: Cursor { at, whole_log: true, reader: None } })
    }

    /// Creates segment 1 in an empty directory.
    fn create(
        dir: &Path,
        config: LogConfig,
        identity: Identity,
        empty: &[u8],
        counters: Arc<Counters>,
        lock: File,
    ) -> Result<Opened, DurableError> {
        let (head, seg) = new_segment(dir, &identity, 1, Some(empty), config.durability, &counters)?;
        let mut segments = BTreeMap::new();
        segments.insert(1, seg);
        let replay = Cursor { at: Location { segment: 1, offset: seg.len }, whole_log: true, reader: None };
        let log = Log {
            dir: dir.to_owned(),
            identity,
            config,
            segments,
            head,
            head_number: 1,
            synced: seg.len,
            checkpoint_segment: 1,
            buf: Vec::new(),
            failed: false,
            counters,
            parked: None,
            _lock: lock,
        };
        Ok(Opened { log, checkpoint: Some(empty.to_vec()), replay })
    }

    /// The identity recorded in the log's segments (at creation).
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The log's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The head segment's number.
    pub(crate) fn head(&self) -> u64 {
        self.head_number
    }

    /// The segments, in order, with their sizes (the head's without the batch being built).
    pub(crate) fn segments(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.segments.iter().map(|(&n, seg)| (n, seg.len))
    }

    /// Whether segment `number` is in the log.
    pub(crate) fn has_segment(&self, number: u64) -> bool {
        self.segments.contains_key(&number)
    }

    /// Bytes in the batch being built.
    pub(crate) fn batch_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Adds a record to the batch; it is written by the next [`flush`](Log::flush) (or read).
    /// Returns where it will be and its size. The body must keep the record within
    /// [`MAX_RECORD`] (its parts are checked by the caller).
    pub(crate) fn append(&mut self, kind: u8, body: impl FnOnce(&mut Vec<u8>)) -> (Location, u64) {
        let offset = self.segments.get(&self.head_number).map_or(0, |s| s.len) + self.buf.len() as u64;
        let size = record::encode(&mut self.buf, kind, body);
        (Location { segment: self.head_number, offset }, size as u64)
    }

    /// Writes the batch with one `write`, without syncing.
    fn write_batch(&mut self) -> Result<(), DurableError> {
        if self.failed {
            return Err(self.io(io::Error::other("an earlier write or sync of this log failed; reopen it")));
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.head.write_all(&self.buf) {
            self.failed = true;
            return Err(self.io(e));
        }
        Counters::bump(&self.counters.writes);
        if let Some(seg) = self.segments.get_mut(&self.head_number) {
            seg.len += self.buf.len() as u64;
        }
        self.buf.clear();
        Ok(())
    }

    /// Writes the batch with one `write` and, at [`Durability::Power`], one `fdatasync`:
    /// when it returns `Ok`, every record appended so far has reached the log's level.
    pub(crate) fn flush(&mut self) -> Result<(), DurableError> {
        self.write_batch()?;
        let len = self.segments.get(&self.head_number).map_or(0, |s| s.len);
        if self.config.durability == Durability::Power && self.synced < len {
            if let Err(e) = self.head.sync_data() {
                self.failed = true;
                return Err(self.io(e));
            }
            Counters::bump(&self.counters.syncs);
            self.synced = len;
        }
        Ok(())
    }

    /// Whether the head has reached the segment size.
    pub(crate) fn wants_roll(&self) -> bool {
        self.segments.get(&self.head_number).map_or(0, |s| s.len) + self.buf.len() as u64 >= self.config.segment_bytes
    }

    /// Flushes, then starts segment `head + 1` with `checkpoint` as its first record (unless it
    /// would pass [`MAX_RECORD`]: then the segment has none and a reopen replays from an older
    /// one). Returns whether the checkpoint was written. At the power level the new file and
    /// the directory are synced before it returns.
    pub(crate) fn roll(&mut self, checkpoint: &[u8]) -> Result<bool, DurableError> {
        self.flush()?;
        let number = self.head_number + 1;
        let fits = checkpoint.len() < MAX_RECORD;
        if !fits {
            tracing::warn!(
                dir = %self.dir.display(), bytes = checkpoint.len(),
                "durable log: a checkpoint is too large to write; reopening will replay more"
            );
        }
        let (file, seg) = new_segment(
            &self.dir,
            &self.identity,
            number,
            fits.then_some(checkpoint),
            self.config.durability,
            &self.counters,
        )
        .inspect_err(|_| self.failed = true)?;
        self.head = file;
        self.head_number = number;
        self.synced = seg.len;
        self.segments.insert(number, seg);
        if fits {
            self.checkpoint_segment = number;
        }
        Ok(fits)
    }

    /// Whether the head starts with a checkpoint (a reopen would replay the head only).
    pub(crate) fn head_has_checkpoint(&self) -> bool {
        self.checkpoint_segment == self.head_number
    }

    /// Deletes segment `number`, unless a reopen would read it: the head, and every segment
    /// from the newest checkpoint's on, are kept (a later call deletes them once a newer
    /// checkpoint is written).
    pub(crate) fn delete(&mut self, number: u64) -> Result<(), DurableError> {
        if number >= self.checkpoint_segment {
            return Ok(());
        }
        match fs::remove_file(segment::path(&self.dir, number)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io(e)),
        }
        self.segments.remove(&number);
        if self.parked.as_ref().is_some_and(|p| p.segment == number) {
            self.parked = None;
        }
        Counters::bump(&self.counters.deleted);
        Ok(())
    }

    /// The next record at `cursor`, or `None` at the end of its segment (or of the log, for a
    /// replay cursor). The batch being built is written first (not synced), so that a record
    /// appended in this batch can be read.
    ///
    /// # Errors
    /// `Corrupt` if a record does not read back whole with its CRC (the tail was repaired at
    /// open, so anything short or bad now is damage), `Io` if the file cannot be read.
    pub(crate) fn next(&mut self, cursor: &mut Cursor) -> Result<Option<Entry>, DurableError> {
        loop {
            if cursor.at.segment == self.head_number {
                self.write_batch()?;
            }
            let Some(seg) = self.segments.get(&cursor.at.segment).copied() else {
                if cursor.whole_log {
                    return Ok(None);
                }
                let path = segment::path(&self.dir, cursor.at.segment);
                return Err(corrupt(&self.dir, &path, cursor.at.offset, "a segment that holds messages is missing"));
            };
            if cursor.at.offset < seg.len {
                return self.read_one(cursor);
            }
            if !cursor.whole_log {
                return Ok(None);
            }
            let Some((&number, next)) = self.segments.range(cursor.at.segment + 1..).next() else { return Ok(None) };
            cursor.at = Location { segment: number, offset: next.start };
            cursor.reader = None;
        }
    }

    /// A cursor reading segment `at.segment` from `at.offset`, with the reader the last walk
    /// of that segment parked, moved to `at.offset` (within its buffer when it is there).
    pub(crate) fn walk_from(&mut self, at: Location) -> Cursor {
        let mut cursor = Cursor::in_segment(at);
        if let Some(Parked { segment, at: was, mut reader }) = self.parked.take()
            && segment == at.segment
            && let Ok(delta) = i64::try_from(i128::from(at.offset) - i128::from(was))
            && reader.seek_relative(delta).is_ok()
        {
            cursor.reader = Some((segment, reader));
        }
        cursor
    }

    /// Keeps the reader of a walk that ended well (after a whole record, at `cursor`'s
    /// offset) for the next [`walk_from`](Log::walk_from).
    pub(crate) fn park(&mut self, cursor: Cursor) {
        if let Some((segment, reader)) = cursor.reader
            && !cursor.whole_log
        {
            self.parked = Some(Parked { segment, at: cursor.at.offset, reader });
        }
    }

    /// Reads the record at `cursor` and moves past it; `None` at the end of the segment's file.
    fn read_one(&mut self, cursor: &mut Cursor) -> Result<Option<Entry>, DurableError> {
        // The segment's path is built when needed (a file to open, an error), not per record.
        let io = |source| DurableError::Io { path: self.dir.clone(), source };
        let reader = match &mut cursor.reader {
            Some((n, reader)) if *n == cursor.at.segment => reader,
            slot => {
                let mut file = File::open(segment::path(&self.dir, cursor.at.segment)).map_err(io)?;
                Counters::bump(&self.counters.opened);
                file.seek(SeekFrom::Start(cursor.at.offset)).map_err(io)?;
                &mut slot.insert((cursor.at.segment, BufReader::with_capacity(READ_BUFFER, file))).1
            }
        };
        // The frame's header and the record's kind byte, then its body into a buffer of its
        // own: one allocation per record, of its size, and no bytes moved after reading.
        let mut header = [0; FRAME_HEADER + 1];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            // At the segment's end, the end of its records; before it, a file shorter than the
            // log knows it to be.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                let len = self.segments.get(&cursor.at.segment).map_or(0, |s| s.len);
                if cursor.at.offset >= len {
                    return Ok(None);
                }
                return Err(corrupt(
                    &self.dir,
                    &segment::path(&self.dir, cursor.at.segment),
                    cursor.at.offset,
                    "a segment ends inside a record header",
                ));
            }
            Err(e) => return Err(io(e)),
        }
        let Some((len, crc)) = header.first_chunk().and_then(record::header_fields) else {
            return Err(corrupt(
                &self.dir,
                &segment::path(&self.dir, cursor.at.segment),
                cursor.at.offset,
                "a record length is out of bounds",
            ));
        };
        // A record ends within its segment's length, which is current here (`Seg`): a `len`
        // from damage is refused before a buffer of its size (up to `MAX_RECORD`) is allocated.
        let seg_len = self.segments.get(&cursor.at.segment).map_or(0, |s| s.len);
        if cursor.at.offset.saturating_add((FRAME_HEADER + len) as u64) > seg_len {
            return Err(corrupt(
                &self.dir,
                &segment::path(&self.dir, cursor.at.segment),
                cursor.at.offset,
                "a record runs past the end of its segment",
            ));
        }
        let mut body = vec![0; len - 1];
        // Short only if the file is shorter than the log knows it to be.
        reader.read_exact(&mut body).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                corrupt(
                    &self.dir,
                    &segment::path(&self.dir, cursor.at.segment),
                    cursor.at.offset,
                    "a record runs past the end of its segment",
                )
            } else {
                io(e)
            }
        })?;
        let kind = header[FRAME_HEADER];
        if !record::crc_matches(crc, kind, &body) {
            return Err(corrupt(
                &self.dir,
                &segment::path(&self.dir, cursor.at.segment),
                cursor.at.offset,
                "a record fails its checksum",
            ));
        }
        let at = cursor.at;
        let size = (FRAME_HEADER + len) as u64;
        cursor.at.offset += size;
        Counters::bump(&self.counters.scanned);
        Ok(Some(Entry { at, kind, body, size }))
    }

    /// What a `kill -9` does to the log: the batch being built is lost, what was written stays
    /// (in the page cache), and the log writes nothing more.
    #[cfg(test)]
    pub(crate) fn crash(&mut self) {
        self.buf.clear();
        self.failed = true;
    }

    /// What a power loss does to the log: the head loses every byte written after its last
    /// sync (and the batch being built), and the log writes nothing more. Earlier segments were
    /// synced when they were rolled (at the power level).
    #[cfg(test)]
    pub(crate) fn lose_power(&mut self) {
        self.buf.clear();
        // A test hook: a failure to cut the file shows as records surviving, which the
        // tests assert against.
        let _ = self.head.set_len(self.synced);
        self.parked = None;
        self.failed = true;
    }

    fn io(&self, source: io::Error) -> DurableError {
        DurableError::Io { path: self.dir.clone(), source }
    }
}

/// Creates segment `number` with its header and `checkpoint` (if any), synced with its directory at the
/// power level.
fn new_segment(
    dir: &Path,
    identity: &Identity,
    number: u64,
    checkpoint: Option<&[u8]>,
    durability: Durability,
    counters: &Counters,
) -> Result<(File, Seg), DurableError> {
    let io = |source| DurableError::Io { path: dir.to_owned(), source };
    let mut bytes = Vec::with_capacity(checkpoint.map_or(0, <[u8]>::len) + 512);
    segment::put_header(&mut bytes, identity, number);
    let start = bytes.len() as u64;
    if let Some(checkpoint) = checkpoint {
        record::encode(&mut bytes, CHECKPOINT, |b| b.extend_from_slice(checkpoint));
    }
    let mut file = OpenOptions::new().create_new(true).append(true).open(segment::path(dir, number)).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    if durability == Durability::Power {
        file.sync_data().map_err(io)?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Counters::bump(&counters.syncs);
    }
    Ok((file, Seg { len: bytes.len() as u64, start }))
}

fn corrupt(dir: &Path, file: &Path, offset: impl Into<u64>, what: &str) -> DurableError {
    DurableError::Corrupt {
        path: dir.to_owned(),
        what: format!("{}, offset {}: {what}", file.display(), offset.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::OutboxId;
    use crate::durable::log::segment::Role;

    /// Opens a log in `dir` with one record of 100 bytes after segment 1's checkpoint, rolled
    /// to segment 2; returns it and the record's offset.
    fn with_a_closed_record(dir: &Path) -> (Log, u64) {
        let identity = Identity { role: Role::Outbox, name: "test".into(), id: OutboxId::from_u64(1) };
        let config = LogConfig { segment_bytes: 1 << 20, durability: Durability::Process };
        let mut log = Log::open(dir, config, identity, b"", Arc::default()).expect("opened").log;
        let (at, _) = log.append(1, |b| b.extend_from_slice(&[7; 100]));
        assert!(log.roll(b"").expect("rolled"), "segment 2 has a checkpoint");
        (log, at.offset)
    }

    /// The error of reading that record after `damage` changed segment 1's bytes (given the
    /// record's offset in them), and the one expected of a record running past the segment.
    fn read_after(damage: impl FnOnce(&mut Vec<u8>, usize)) -> (Result<Option<Entry>, DurableError>, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut log, offset) = with_a_closed_record(dir.path());
        let path = segment::path(dir.path(), 1);
        let mut bytes = fs::read(&path).expect("segment 1");
        damage(&mut bytes, usize::try_from(offset).expect("an offset"));
        fs::write(&path, &bytes).expect("damaged");
        let mut cursor = log.walk_from(Location { segment: 1, offset });
        let expected = format!("{}, offset {offset}: a record runs past the end of its segment", path.display());
        (log.next(&mut cursor), expected)
    }

    #[test]
    fn a_record_is_read_only_within_its_segments_length() {
        // Why the check matters: a `len` changed by damage (up to `MAX_RECORD`, 32 MiB, passes
        // its bound) was allocated whole before the read found the segment too short; now it
        // is refused from the header. The error and its offset are those of the short read, so
        // this case cannot tell the two apart (allocations are not counted here).
        let (read, expected) =
            read_after(|bytes, at| bytes[at..at + 4].copy_from_slice(&(record::MAX_RECORD as u32).to_le_bytes()));
        assert!(matches!(&read, Err(DurableError::Corrupt { what, .. }) if *what == expected), "{read:?}");

        // This one can: the record rewritten longer, whole and with its checksum, past the
        // length the log knows for the segment. The file has its bytes, so only the check
        // against the segment's length refuses it.
        let (read, expected) = read_after(|bytes, at| {
            bytes.truncate(at);
            record::encode(bytes, 1, |b| b.extend_from_slice(&[7; 300]));
        });
        assert!(matches!(&read, Err(DurableError::Corrupt { what, .. }) if *what == expected), "{read:?}");
    }

    #[test]
    fn records_of_the_head_are_read_back_as_they_are_appended() {
        // The head's length grows with each write, and a read of the head writes the batch
        // first: a record appended just before is within the length, not past it.
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut log, _) = with_a_closed_record(dir.path());
        for n in 0..3u8 {
            let (at, size) = log.append(1, |b| b.extend_from_slice(&[n; 50]));
            let mut cursor = log.walk_from(at);
            let entry = log.next(&mut cursor).expect("read").expect("a record");
            assert_eq!((entry.at, entry.size, entry.body), (at, size, vec![n; 50]));
        }
    }
}
