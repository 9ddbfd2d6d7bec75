//! The handled marks' sidecar: "handled up to n" per stream, written by the dispatcher itself,
//! so that a stream's next handler starts after one `pwrite` rather than a round trip through
//! the log's writer thread.
//!
//! The guarantee (see the module docs of [`durable`](crate::durable), "The exact guarantee")
//! needs each handler's return recorded at the inbox's level before the stream's next handler
//! starts. Through the log's writer that is a command, a thread wake-up, a `write` and an answer
//! per message: one stream then handled about 7,000 messages a second on the project's VM. The
//! dispatcher instead takes a run of a stream's messages at once and, after each handler, writes
//! the stream's slot in this file (32 bytes, one `pwrite`; at the power level followed by
//! `fdatasync`, off the runtime's threads). The log gets one "handled" record per run, when the
//! run is done, which releases the run's bytes for compaction.
//!
//! - **Slots.** 32 bytes each: outbox `u64`, the sender name's FNV-1a hash `u64`, handled `u64`,
//!   CRC-32 of those 24 bytes `u32`, 4 zero bytes; little-endian. A stream gets the next free
//!   slot the first time one of its messages is handled in this run of the inbox. The file has
//!   one slot per stream handled since the inbox was opened.
//! - **Group commit** (power level): a mark is written at once and synced by whichever caller
//!   finds no sync running; one `fdatasync` covers every mark written before it started, of
//!   any stream, and the marks written meanwhile wait for the next one. So concurrent streams
//!   share syncs, and a stream that lets its next handlers run before its marks are synced
//!   (`InboxConfig::unsynced_marks`) shares them among its own marks too.
//! - **At open** every slot whose checksum holds is read, and a stream whose slot says more
//!   than the log (within what it recorded) is marked handled up to it in the log; the log is
//!   written (and at the power level synced), and only then is the file emptied. A slot whose
//!   checksum fails (a write torn by a power loss on a disk without atomic sector writes) is
//!   skipped: its stream reruns from the log's mark, at most one run. Streams are matched by
//!   outbox id (64 random bits) and the sender's hash, so a slot of a stream the inbox no longer
//!   tracks is ignored.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::super::{Durability, DurableError, MessageId};

/// The sidecar's file name in the inbox's directory.
pub(crate) const FILE: &str = "HANDLED";

/// Bytes of one slot.
const SLOT: usize = 32;

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

/// Every valid slot of the sidecar in `dir`; none if it does not exist.
pub(crate) fn read(dir: &Path) -> Result<Vec<Mark>, DurableError> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(DurableError::Io { path, source }),
    };
    let mut marks = Vec::new();
    for (index, slot) in bytes.chunks_exact(SLOT).enumerate() {
        match decode(slot) {
            Some(mark) => marks.push(mark),
            None if slot.iter().all(|&b| b == 0) => {}
            None => {
                tracing::warn!(path = %path.display(), slot = index, "durable inbox: a handled mark failed its checksum; its stream reruns from the log's mark")
            }
        }
    }
    Ok(marks)
}

fn encode(mark: Mark) -> [u8; SLOT] {
    let mut slot = [0; SLOT];
    slot[0..8].copy_from_slice(&mark.outbox.to_le_bytes());
    slot[8..16].copy_from_slice(&mark.sender_hash.to_le_bytes());
    slot[16..24].copy_from_slice(&mark.handled.to_le_bytes());
    let crc = crc32fast::hash(&slot[..24]);
    slot[24..28].copy_from_slice(&crc.to_le_bytes());
    slot
}

fn decode(slot: &[u8]) -> Option<Mark> {
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
    slots: Mutex<HashMap<(u64, u64), u64>>,
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

/// A mark written to the file: [`Marks::synced`] waits until a sync covers it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Written(u64);

impl Marks {
    /// Creates the sidecar in `dir`, empty: what it held must have been read and written to
    /// the log before.
    pub(crate) fn create(dir: &Path, durability: Durability) -> Result<Marks, DurableError> {
        let path = dir.join(FILE);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|source| DurableError::Io { path: path.clone(), source })?;
        if durability == Durability::Power {
            file.sync_all().map_err(|source| DurableError::Io { path: path.clone(), source })?;
        }
        Ok(Marks {
            file: Arc::new(file),
            path,
            durability,
            slots: Mutex::default(),
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

    /// Writes "handled up to `id`'s sequence" to the stream's slot (one `pwrite`): enough for
    /// a process crash. At the power level, [`synced`](Marks::synced) then waits for a sync.
    ///
    /// # Errors
    /// [`Io`](DurableError::Io) if the write failed.
    /// The inbox's level: whether marks are synced.
    pub(crate) fn durability(&self) -> Durability {
        self.durability
    }

    pub(crate) fn write(&self, id: &MessageId) -> Result<Written, DurableError> {
        let mark = Mark { outbox: id.outbox().as_u64(), sender_hash: sender_hash(id.sender()), handled: id.sequence() };
        let offset = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let next = slots.len() as u64;
            *slots.entry((mark.outbox, mark.sender_hash)).or_insert(next) * SLOT as u64
        };
        write_all_at(&self.file, &encode(mark), offset).map_err(|source| self.io(source))?;
        // Numbered after the write: a sync that reads a count including this one started after it.
        let mut syncing = self.syncing.lock().unwrap_or_else(PoisonError::into_inner);
        syncing.written += 1;
        Ok(Written(syncing.written))
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

#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

#[cfg(windows)]
fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    let written = std::os::windows::fs::FileExt::seek_write(file, bytes, offset)?;
    if written == bytes.len() { Ok(()) } else { Err(io::Error::from(io::ErrorKind::WriteZero)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::OutboxId;

    #[tokio::test]
    async fn marks_are_read_back_one_slot_per_stream_and_a_torn_slot_is_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let marks = Marks::create(dir.path(), Durability::Process).expect("created");
        for (sender, sequence) in [("a", 1), ("b", 1), ("a", 2), ("a", 3)] {
            marks.mark(&MessageId::new(sender, OutboxId::from_u64(9), sequence)).await.expect("marked");
        }
        let read_back = read(dir.path()).expect("read");
        let expected = [
            Mark { outbox: 9, sender_hash: sender_hash("a"), handled: 3 },
            Mark { outbox: 9, sender_hash: sender_hash("b"), handled: 1 },
        ];
        assert_eq!(read_back, expected);

        let mut bytes = std::fs::read(dir.path().join(FILE)).expect("file");
        bytes[16] ^= 0xff;
        std::fs::write(dir.path().join(FILE), &bytes).expect("torn");
        assert_eq!(read(dir.path()).expect("read"), expected[1..]);

        drop(Marks::create(dir.path(), Durability::Process).expect("recreated"));
        assert_eq!(read(dir.path()).expect("read"), []);
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
        assert_eq!(read(dir.path()).expect("read"), [Mark { outbox: 9, sender_hash: sender_hash("a"), handled: 1 }]);
    }
}
