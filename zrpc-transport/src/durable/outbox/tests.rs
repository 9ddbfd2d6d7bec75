//! The outbox's local half over real files in temp dirs: sequences, recovery, torn tails,
//! corruption, checkpoints, compaction, the limit, group commit and power loss.
//!
//! No test waits on time: concurrency is made deterministic by holding the writer
//! (`Control::Hold`) while commands queue, and every count asserted comes from the log's
//! counters or the files on disk.

use std::fs;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::Bytes;
use futures::future::join_all;
use tokio::sync::oneshot;

use super::journal::Command;
use super::*;
use crate::durable::log::writer::Control;

const SEGMENT: u64 = 4096;

fn config() -> OutboxConfig {
    OutboxConfig::new("shop-1").segment_bytes(SEGMENT)
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temp dir")
}

async fn open(dir: &Path, config: OutboxConfig) -> Outbox {
    Outbox::open(dir, config).await.expect("the outbox opens")
}

fn msg(n: u64) -> Bytes {
    Bytes::from(format!("message {n:04}"))
}

/// A new outbox in a temp dir, with messages `range` appended for `destination`.
async fn filled(
    config: OutboxConfig,
    destination: &str,
    range: std::ops::RangeInclusive<u64>,
) -> (tempfile::TempDir, Outbox) {
    let dir = temp();
    let outbox = open(dir.path(), config).await;
    append_all(&outbox, destination, range).await;
    (dir, outbox)
}

async fn append_all(outbox: &Outbox, destination: &str, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        outbox.append(destination, msg(n)).await.expect("append");
    }
}

async fn read_all(outbox: &Outbox, destination: &str) -> Vec<(u64, Bytes)> {
    let read = outbox.read(destination, 1, usize::MAX, usize::MAX).await.expect("read");
    read.into_iter().map(|s| (s.sequence, s.message)).collect()
}

fn numbered(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Bytes)> {
    range.map(|n| (n, msg(n))).collect()
}

/// The segment files in `dir`, in order, with their sizes.
fn segment_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .expect("list the dir")
        .map(|e| e.expect("a dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| {
            let len = fs::metadata(&p).expect("a segment's size").len();
            (p, len)
        })
        .collect();
    files.sort();
    files
}

fn counter(outbox: &Outbox, pick: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64) -> u64 {
    Counters::get(pick(outbox.counters()))
}

/// Waits until the writer has finished its current batch and the upkeep after it (rolling,
/// compaction): a command is taken only after both.
async fn settle(outbox: &Outbox) {
    outbox.pending().await.expect("pending");
}

/// Holds the writer until the returned sender is dropped or sends.
async fn hold(outbox: &Outbox) -> oneshot::Sender<()> {
    let (release, until) = oneshot::channel();
    outbox.inner.writer.send(Command::Control(Control::Hold(until))).await;
    release
}

/// Queues the power-loss hook; the receiver answers once the log is closed.
async fn lose_power(outbox: &Outbox) -> oneshot::Receiver<()> {
    let (closed, lost) = oneshot::channel();
    outbox.inner.writer.send(Command::Control(Control::LosePower(closed))).await;
    lost
}

type Append<'a> = Pin<Box<dyn Future<Output = Result<u64, DurableError>> + Send + 'a>>;

/// Starts an append and polls it once, so that its command is queued.
async fn queued<'a>(outbox: &'a Outbox, destination: &'a str, n: u64) -> Append<'a> {
    let mut append: Append<'a> = Box::pin(outbox.append(destination, msg(n)));
    assert!(futures::poll!(append.as_mut()).is_pending(), "an append completed while the writer was held");
    append
}

#[tokio::test]
async fn appends_get_sequences_per_destination_and_survive_a_reopen() {
    let dir = temp();
    let outbox = open(dir.path(), config()).await;
    for (destination, expected) in [("ledger", 1), ("ledger", 2), ("mail", 1), ("ledger", 3), ("mail", 2)] {
        assert_eq!(outbox.append(destination, msg(expected)).await.ok(), Some(expected));
    }
    let (id, sender) = (outbox.id(), outbox.sender().to_owned());
    outbox.close().await.expect("close");

    let outbox = open(dir.path(), OutboxConfig::new("renamed").segment_bytes(SEGMENT)).await;
    assert_eq!((outbox.id(), outbox.sender()), (id, sender.as_str()), "the identity is fixed at creation");
    let pending = outbox.pending().await.expect("pending");
    let summary: Vec<_> =
        pending.iter().map(|p| (p.destination.as_str(), p.first_unacknowledged, p.next_sequence)).collect();
    assert_eq!(summary, [("ledger", 1, 4), ("mail", 1, 3)]);
    assert_eq!(read_all(&outbox, "ledger").await, numbered(1..=3));
    assert_eq!(read_all(&outbox, "mail").await, numbered(1..=2));
    assert_eq!(outbox.append("ledger", msg(4)).await.ok(), Some(4));
    let some = outbox.read("ledger", 2, 2, usize::MAX).await.expect("read");
    assert_eq!(some.iter().map(|s| s.sequence).collect::<Vec<_>>(), [2, 3]);
    let one = outbox.read("ledger", 1, 10, 1).await.expect("read");
    assert_eq!(one.len(), 1, "max_bytes stops a read after the message that reaches it");
}

#[tokio::test]
async fn acknowledgements_survive_a_reopen() {
    let (dir, outbox) = filled(config(), "ledger", 1..=5).await;
    assert_eq!(outbox.acknowledge("ledger", 3).await.ok(), Some(3));
    assert_eq!(outbox.acknowledge("ledger", 2).await.ok(), Some(0), "an older acknowledgement releases nothing");
    outbox.close().await.expect("close");

    let outbox = open(dir.path(), config()).await;
    let pending = outbox.pending().await.expect("pending");
    assert_eq!((pending[0].first_unacknowledged, pending[0].next_sequence), (4, 6));
    assert_eq!(read_all(&outbox, "ledger").await, numbered(4..=5));
    assert_eq!(outbox.acknowledge("ledger", 100).await.ok(), Some(2), "clamped to the last message");
    assert!(outbox.pending().await.expect("pending").is_empty());
    assert_eq!(outbox.append("ledger", msg(6)).await.ok(), Some(6));
}

#[tokio::test]
async fn a_torn_tail_is_truncated_at_every_byte_of_the_last_record() {
    let (dir, outbox) = filled(config(), "ledger", 1..=5).await;
    outbox.close().await.expect("close");
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    let path = &files[0].0;
    let whole = fs::read(path).expect("read the segment");
    let last = State::record_size("ledger", &msg(5)) as usize;
    let start = whole.len() - last;

    for kept in 0..last {
        fs::write(path, &whole[..start + kept]).expect("cut the segment");
        let outbox = open(dir.path(), config()).await;
        assert_eq!(read_all(&outbox, "ledger").await, numbered(1..=4), "{kept} bytes of the last record kept");
        assert_eq!(fs::metadata(path).expect("size").len(), start as u64, "truncated exactly, {kept} kept");
        assert_eq!(outbox.append("ledger", msg(5)).await.ok(), Some(5));
        outbox.close().await.expect("close");
    }
}

#[tokio::test]
async fn a_segment_whose_header_was_cut_short_is_removed() {
    let (dir, outbox) = filled(config(), "ledger", 1..=3).await;
    outbox.close().await.expect("close");
    let torn = dir.path().join("00000002.log");
    fs::write(&torn, b"ZRPCL").expect("a torn new segment");

    let outbox = open(dir.path(), config()).await;
    assert!(!torn.exists());
    assert_eq!(read_all(&outbox, "ledger").await, numbered(1..=3));
}

#[tokio::test]
async fn a_header_whose_length_was_changed_refuses_to_open_rather_than_pass_for_cut_short() {
    // One bit of the length of the only segment's header: the header then runs past the end of
    // the file, as a header cut short by a crash does. It was removed as one, with every
    // message after it: the outbox opened empty, under a new id.
    let (dir, outbox) = filled(config(), "ledger", 1..=3).await;
    let id = outbox.id();
    outbox.close().await.expect("close");
    let path = segment_files(dir.path())[0].0.clone();
    let whole = fs::read(&path).expect("read the segment");
    // The magic, then the header record's `len u32`: its second and third bytes.
    for (at, bit) in [(9, 0x10), (10, 0x01), (10, 0x80)] {
        let mut bad = whole.clone();
        bad[at] ^= bit;
        fs::write(&path, &bad).expect("write the damaged segment");
        match Outbox::open(dir.path(), config()).await {
            Err(DurableError::Corrupt { what, .. }) => assert!(what.contains("00000001.log"), "{what}"),
            Ok(outbox) => panic!("byte {at} ^ {bit:#x}: opened with {:?}", outbox.pending().await),
            Err(e) => panic!("byte {at} ^ {bit:#x}: {e}"),
        }
    }
    fs::write(&path, &whole).expect("restore the segment");
    let outbox = open(dir.path(), config()).await;
    assert_eq!((outbox.id(), read_all(&outbox, "ledger").await), (id, numbered(1..=3)), "refusing changed nothing");
}

#[tokio::test]
async fn a_bad_byte_anywhere_in_a_record_followed_by_valid_ones_refuses_to_open() {
    let (dir, outbox) = filled(config(), "ledger", 1..=5).await;
    outbox.close().await.expect("close");
    let path = segment_files(dir.path())[0].0.clone();
    let whole = fs::read(&path).expect("read the segment");
    let size = State::record_size("ledger", &msg(1)) as usize;
    let third = whole.len() - 3 * size;

    for at in third..third + size {
        let mut bad = whole.clone();
        bad[at] ^= 0xff;
        fs::write(&path, &bad).expect("write the damaged segment");
        match Outbox::open(dir.path(), config()).await {
            Err(DurableError::Corrupt { what, .. }) => assert!(what.contains("00000001.log"), "{what}"),
            other => panic!("a flipped byte at {at} opened as {other:?}"),
        }
    }
    fs::write(&path, &whole).expect("restore the segment");
    let outbox = open(dir.path(), config()).await;
    assert_eq!(read_all(&outbox, "ledger").await, numbered(1..=5), "refusing changed nothing");
}

#[tokio::test]
async fn a_reopen_scans_only_the_records_after_the_last_checkpoint() {
    let (dir, outbox) = filled(config(), "ledger", 1..=2000).await;
    outbox.close().await.expect("close");
    let files = segment_files(dir.path());
    assert!(files.len() >= 10, "{} segments", files.len());

    let outbox = open(dir.path(), config()).await;
    let per_segment = SEGMENT / State::record_size("ledger", &msg(1));
    let scanned = counter(&outbox, |c| &c.scanned);
    assert!(
        scanned <= per_segment + 2,
        "reopen read {scanned} records of 2,000 over {} segments; a segment holds {per_segment}",
        files.len()
    );
    assert_eq!(read_all(&outbox, "ledger").await, numbered(1..=2000));
}

#[tokio::test]
async fn compaction_deletes_the_segments_with_nothing_undelivered() {
    let (dir, outbox) = filled(config(), "ledger", 1..=1000).await;
    let before = segment_files(dir.path()).len() as u64;
    assert!(before >= 5, "{before} segments");

    assert_eq!(outbox.acknowledge("ledger", 1000).await.ok(), Some(1000));
    settle(&outbox).await;
    let after = segment_files(dir.path());
    assert_eq!(after.len(), 1, "only the head is left: {after:?}");
    assert_eq!(counter(&outbox, |c| &c.deleted), before - 1);
    assert!(after[0].1 <= SEGMENT + 256, "{} bytes left", after[0].1);
    assert_eq!(outbox.append("ledger", msg(1001)).await.ok(), Some(1001));
}

#[tokio::test]
async fn compaction_rewrites_segments_held_by_a_slow_destination() {
    let dir = temp();
    let outbox = open(dir.path(), config()).await;
    let mut slow = 0;
    for n in 1..=1800 {
        outbox.append("fast", msg(n)).await.expect("append");
        if n % 30 == 0 {
            slow += 1;
            outbox.append("slow", msg(slow)).await.expect("append");
        }
    }
    let before = segment_files(dir.path());
    assert!(before.len() >= 10, "{} segments", before.len());

    outbox.acknowledge("fast", 1800).await.expect("acknowledge");
    settle(&outbox).await;
    let after = segment_files(dir.path());
    let bytes: u64 = after.iter().map(|(_, len)| len).sum();
    assert!(counter(&outbox, |c| &c.rewritten) >= 1);
    assert!(after.len() <= 3, "{} segments left: {after:?}", after.len());
    assert!(bytes <= 3 * SEGMENT, "{bytes} bytes left for {slow} small messages");
    assert_eq!(read_all(&outbox, "slow").await, numbered(1..=slow));
    outbox.close().await.expect("close");

    let outbox = open(dir.path(), config()).await;
    assert_eq!(read_all(&outbox, "slow").await, numbered(1..=slow), "the copies are what a reopen finds");
    let pending = outbox.pending().await.expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].destination.as_str(), pending[0].next_sequence), ("slow", slow + 1));
    assert_eq!(outbox.append("fast", msg(1801)).await.ok(), Some(1801));
}

#[tokio::test]
async fn a_full_outbox_refuses_new_messages_and_keeps_the_old_until_acknowledged() {
    let dir = temp();
    let size = State::record_size("ledger", &msg(1));
    let outbox = open(dir.path(), config().max_bytes(10 * size)).await;
    append_all(&outbox, "ledger", 1..=10).await;
    match outbox.append("ledger", msg(11)).await {
        Err(DurableError::Full { used, limit, .. }) => assert_eq!((used, limit), (10 * size, 10 * size)),
        other => panic!("an append past the limit gave {other:?}"),
    }
    assert_eq!(read_all(&outbox, "ledger").await, numbered(1..=10), "nothing was dropped");

    outbox.acknowledge("ledger", 4).await.expect("acknowledge");
    append_all(&outbox, "ledger", 11..=14).await;
    assert!(matches!(outbox.append("ledger", msg(15)).await, Err(DurableError::Full { .. })));
    outbox.close().await.expect("close");
    let outbox = open(dir.path(), config().max_bytes(10 * size)).await;
    assert!(matches!(outbox.append("ledger", msg(15)).await, Err(DurableError::Full { .. })), "the count survives");
    assert_eq!(read_all(&outbox, "ledger").await, numbered(5..=14));
}

#[tokio::test]
async fn concurrent_appends_at_the_power_level_share_one_sync() {
    let dir = temp();
    let outbox = open(dir.path(), config().durability(Durability::Power).segment_bytes(1 << 20)).await;
    let syncs = counter(&outbox, |c| &c.syncs);

    let release = hold(&outbox).await;
    let mut appends = Vec::new();
    for n in 1..=64 {
        appends.push(queued(&outbox, "ledger", n).await);
    }
    let _ = release.send(());
    let mut sequences: Vec<u64> = join_all(appends).await.into_iter().map(|r| r.expect("append")).collect();
    sequences.sort_unstable();

    assert_eq!(sequences, (1..=64).collect::<Vec<_>>());
    assert_eq!(counter(&outbox, |c| &c.syncs) - syncs, 1, "64 appends, one sync");
    assert_eq!(counter(&outbox, |c| &c.writes), 1, "and one write");
}

#[tokio::test]
async fn a_power_loss_keeps_every_synced_append_and_loses_only_the_unsynced() {
    let power = || config().durability(Durability::Power);
    let (dir, outbox) = filled(power(), "ledger", 1..=10).await;

    // Five appends and an acknowledgement in one batch; the acknowledgement reads the log,
    // which writes the batch so far without its sync: then the power goes.
    let release = hold(&outbox).await;
    let mut appends = Vec::new();
    for n in 11..=15 {
        appends.push(queued(&outbox, "ledger", n).await);
    }
    let mut ack = Box::pin(outbox.acknowledge("ledger", 12));
    assert!(futures::poll!(ack.as_mut()).is_pending());
    let lost = lose_power(&outbox).await;
    let _ = release.send(());
    for append in join_all(appends).await {
        assert!(matches!(append, Err(DurableError::Io { .. })), "an unsynced append returned {append:?}");
    }
    assert!(ack.await.is_err());
    lost.await.expect("the log closes");

    let outbox = open(dir.path(), power()).await;
    assert_eq!(read_all(&outbox, "ledger").await, numbered(1..=10), "every synced append, no other");
    assert_eq!(outbox.append("ledger", msg(11)).await.ok(), Some(11));
    outbox.close().await.expect("close");

    // At the process level nothing is synced: a power loss may take every append.
    let (dir, outbox) = filled(config(), "ledger", 1..=10).await;
    lose_power(&outbox).await.await.expect("the log closes");
    let outbox = open(dir.path(), config()).await;
    assert!(read_all(&outbox, "ledger").await.is_empty());
}

#[tokio::test]
async fn a_second_open_of_one_directory_is_refused_until_the_first_closes() {
    let dir = temp();
    let outbox = open(dir.path(), config()).await;
    assert!(matches!(Outbox::open(dir.path(), config()).await, Err(DurableError::Locked { .. })));
    outbox.close().await.expect("close");
    assert!(matches!(outbox.append("ledger", msg(1)).await, Err(DurableError::Closed { .. })));
    let outbox = open(dir.path(), config()).await;
    assert_eq!(outbox.append("ledger", msg(1)).await.ok(), Some(1));
}

#[tokio::test]
async fn discard_drops_a_destinations_messages_and_keeps_its_sequence() {
    let (dir, outbox) = filled(config(), "gone", 1..=3).await;
    append_all(&outbox, "kept", 1..=2).await;
    assert_eq!(outbox.discard("gone").await.ok(), Some(3));
    assert_eq!(outbox.discard("gone").await.ok(), Some(0));
    outbox.close().await.expect("close");

    let outbox = open(dir.path(), config()).await;
    let pending = outbox.pending().await.expect("pending");
    assert_eq!(pending.iter().map(|p| p.destination.as_str()).collect::<Vec<_>>(), ["kept"]);
    assert_eq!(outbox.append("gone", msg(4)).await.ok(), Some(4), "a receiver never sees a sequence twice");
}

#[tokio::test]
async fn names_and_sizes_are_checked_before_anything_is_logged() {
    let dir = temp();
    assert!(matches!(Outbox::open(dir.path(), OutboxConfig::new("")).await, Err(DurableError::InvalidName { .. })));
    let outbox = open(dir.path(), config()).await;
    let long = "d".repeat(256);
    assert!(matches!(outbox.append("", msg(1)).await, Err(DurableError::InvalidName { len: 0, .. })));
    assert!(matches!(outbox.append(&long, msg(1)).await, Err(DurableError::InvalidName { len: 256, .. })));
    let huge = Bytes::from(vec![0; MAX_MESSAGE + 1]);
    assert!(matches!(outbox.append("ledger", huge).await, Err(DurableError::TooLarge { .. })));
    assert!(outbox.pending().await.expect("pending").is_empty());
    assert_eq!(outbox.append(&long[..255], msg(1)).await.ok(), Some(1));
}

#[tokio::test]
async fn a_roll_cut_short_is_repaired_with_a_new_checkpointed_head() {
    use crate::durable::log::segment;

    let (dir, outbox) = filled(config(), "ledger", 1..=300).await;
    outbox.close().await.expect("close");
    // A crash while rolling: segment N+1 has its header and half its checkpoint.
    let (last, _) = segment_files(dir.path()).pop().expect("a segment");
    let bytes = fs::read(&last).expect("read the last segment");
    let (identity, number, header) = segment::read_header(&bytes).expect("its header");
    let mut torn = Vec::new();
    segment::put_header(&mut torn, &identity, number + 1);
    torn.extend_from_slice(&bytes[header..header + 12]);
    fs::write(segment::path(dir.path(), number + 1), &torn).expect("write the torn segment");

    let outbox = open(dir.path(), config()).await;
    assert!(segment::path(dir.path(), number + 2).exists(), "a new head with a checkpoint");
    assert_eq!(read_all(&outbox, "ledger").await, numbered(1..=300));
    outbox.acknowledge("ledger", 300).await.expect("acknowledge");
    settle(&outbox).await;
    assert_eq!(segment_files(dir.path()).len(), 1, "the old segments, the torn one too, are compacted");
    outbox.close().await.expect("close");

    let outbox = open(dir.path(), config()).await;
    assert!(outbox.pending().await.expect("pending").is_empty());
    assert_eq!(outbox.append("ledger", msg(301)).await.ok(), Some(301));
}

#[tokio::test]
async fn a_last_checkpoint_cut_after_compaction_emptied_older_segments_refuses_to_open() {
    use crate::durable::log::{record, segment};

    let (dir, outbox) = filled(config(), "ledger", 1..=600).await;
    let first = segment::path(dir.path(), 1);
    let bytes = fs::read(&first).expect("read segment 1");
    let (_, _, header) = segment::read_header(&bytes).expect("its header");
    let record::Frame::Record { size: checkpoint, .. } = record::frame(&bytes[header..]) else {
        panic!("segment 1 starts with a checkpoint")
    };
    let run = header + checkpoint;
    let mut in_first = 0;
    let mut at = run;
    while let record::Frame::Record { size, .. } = record::frame(&bytes[at..]) {
        in_first += 1;
        at += size;
    }
    // Segment 1's messages acknowledged in the head, after its checkpoint: segment 1 is
    // deleted, segment 2 (a fifth of it acknowledged) is kept as it is.
    let acknowledged = in_first + 20;
    assert_eq!(outbox.acknowledge("ledger", acknowledged).await.ok(), Some(acknowledged));
    settle(&outbox).await;
    assert!(!first.exists(), "segment 1 was deleted");
    assert_eq!(counter(&outbox, |c| &c.rewritten), 0, "no segment was rewritten");
    outbox.close().await.expect("close");
    // Damage, not a crash: the head cut inside its checkpoint, so that the acknowledgement
    // after it goes too and the open falls back to the checkpoint before, which counts messages
    // in segment 1. (A crash cuts a checkpoint only while rolling, before anything follows it
    // and before a segment it empties is deleted.)
    let (last, _) = segment_files(dir.path()).pop().expect("a segment");
    let bytes = fs::read(&last).expect("read the last segment");
    let (_, _, last_header) = segment::read_header(&bytes).expect("its header");
    fs::write(&last, &bytes[..last_header + 12]).expect("cut the last segment");

    match Outbox::open(dir.path(), config()).await {
        Err(DurableError::Corrupt { what, .. }) => {
            let at = format!(
                "{}, offset {}: a segment that holds messages is missing",
                first.display(),
                header + checkpoint
            );
            assert!(what.starts_with(&at), "{what}");
        }
        other => panic!("opened, or failed otherwise: {other:?}"),
    }
}

#[tokio::test]
async fn recent_messages_are_read_from_memory_and_the_same_bytes_come_from_the_log() {
    // One segment for all: an acknowledgement inside a run needs no scan when it is cached.
    let config = OutboxConfig::new("shop-1");
    let (dir, outbox) = filled(config.clone(), "ledger", 1..=100).await;
    let scanned = counter(&outbox, |c| &c.scanned);
    assert_eq!(read_all(&outbox, "ledger").await, numbered(1..=100));
    assert_eq!(outbox.acknowledge("ledger", 40).await.ok(), Some(40), "inside the run");
    assert_eq!(read_all(&outbox, "ledger").await, numbered(41..=100));
    let some = outbox.read("ledger", 60, 5, usize::MAX).await.expect("read");
    assert_eq!(some.iter().map(|s| (s.sequence, s.message.clone())).collect::<Vec<_>>(), numbered(60..=64));
    assert_eq!(counter(&outbox, |c| &c.scanned), scanned, "reads and the acknowledgement read no record");
    outbox.close().await.expect("close");

    // Reopened, nothing is cached: the log gives the same, and the run's bytes are counted
    // by reading it.
    let outbox = open(dir.path(), config).await;
    let scanned = counter(&outbox, |c| &c.scanned);
    assert_eq!(read_all(&outbox, "ledger").await, numbered(41..=100));
    assert!(counter(&outbox, |c| &c.scanned) >= scanned + 60, "read from the log");
    let used = outbox.pending().await.expect("pending")[0].bytes;
    assert_eq!(outbox.acknowledge("ledger", 70).await.ok(), Some(30));
    let after = outbox.pending().await.expect("pending")[0].bytes;
    assert_eq!(used - after, 30 * State::record_size("ledger", &msg(1)), "exact bytes, from the log");
}

#[tokio::test]
async fn reads_and_acknowledgements_from_the_log_share_one_open_reader() {
    let config = OutboxConfig::new("shop-1");
    let (dir, outbox) = filled(config.clone(), "ledger", 1..=100).await;
    outbox.close().await.expect("close");
    // Reopened, nothing is cached: a delivery's reads and the acknowledgements inside the run
    // both read the log, each starting behind where the last one ended.
    let outbox = open(dir.path(), config).await;
    let opened = counter(&outbox, |c| &c.opened);
    for first in (1..=91).step_by(10) {
        let read = outbox.read("ledger", first, 10, usize::MAX).await.expect("read");
        let expected = numbered(first..=first + 9);
        assert_eq!(read.iter().map(|s| (s.sequence, s.message.clone())).collect::<Vec<_>>(), expected);
        // Behind the last read's end: the reader moves back within its buffer.
        let again = outbox.read("ledger", first + 5, 2, usize::MAX).await.expect("read");
        assert_eq!(again.iter().map(|s| s.sequence).collect::<Vec<_>>(), [first + 5, first + 6]);
        let released = if first == 1 { 5 } else { 10 };
        assert_eq!(outbox.acknowledge("ledger", first + 4).await.ok(), Some(released), "inside the run");
    }
    assert_eq!(counter(&outbox, |c| &c.opened), opened + 1, "one segment, opened once for 30 walks");
    let used = outbox.pending().await.expect("pending")[0].bytes;
    assert_eq!(used, 5 * State::record_size("ledger", &msg(1)), "96 to 100 left");
}

#[tokio::test]
async fn an_acknowledgement_inside_a_run_read_back_from_the_log_reads_nothing_again() {
    let config = OutboxConfig::new("shop-1");
    let (dir, outbox) = filled(config.clone(), "ledger", 1..=100).await;
    outbox.close().await.expect("close");
    let outbox = open(dir.path(), config.clone()).await;
    let read = outbox.read("ledger", 1, 50, usize::MAX).await.expect("read");
    assert_eq!(read.len(), 50);
    let scanned = counter(&outbox, |c| &c.scanned);
    // Where the read ended, then inside what it read.
    assert_eq!(outbox.acknowledge("ledger", 50).await.ok(), Some(50));
    assert_eq!(counter(&outbox, |c| &c.scanned), scanned, "the read noted where its records are");
    let read = outbox.read("ledger", 51, 30, usize::MAX).await.expect("read");
    assert_eq!(read.first().map(|s| s.sequence), Some(51));
    let scanned = counter(&outbox, |c| &c.scanned);
    assert_eq!(outbox.acknowledge("ledger", 65).await.ok(), Some(15));
    assert_eq!(counter(&outbox, |c| &c.scanned), scanned);
    let size = State::record_size("ledger", &msg(1));
    assert_eq!(outbox.pending().await.expect("pending")[0].bytes, 35 * size, "exact bytes, from the notes");
    assert_eq!(read_all(&outbox, "ledger").await, numbered(66..=100), "the rest starts where the notes said");
    outbox.close().await.expect("close");

    // The log agrees: reopened, the same 35 messages.
    let outbox = open(dir.path(), config).await;
    assert_eq!(read_all(&outbox, "ledger").await, numbered(66..=100));
    assert_eq!(outbox.pending().await.expect("pending")[0].bytes, 35 * size);
}

#[tokio::test]
async fn the_memory_of_messages_is_bounded_and_the_rest_comes_from_the_log() {
    // Messages of 1 MiB: the window (8 MiB) holds the first 7 of 12; 8 finds no room and
    // closes it.
    let big = |n: u64| Bytes::from(vec![n as u8; 1 << 20]);
    let dir = temp();
    let outbox = open(dir.path(), OutboxConfig::new("shop-1")).await;
    for n in 1..=12 {
        outbox.append("ledger", big(n)).await.expect("append");
    }
    let scanned = counter(&outbox, |c| &c.scanned);
    let window = outbox.read("ledger", 1, 7, usize::MAX).await.expect("read");
    assert_eq!(window.iter().map(|s| s.sequence).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
    assert_eq!(counter(&outbox, |c| &c.scanned), scanned, "the window is read from memory");
    let read = outbox.read("ledger", 1, usize::MAX, usize::MAX).await.expect("read");
    assert_eq!(read.iter().map(|s| s.sequence).collect::<Vec<_>>(), (1..=12).collect::<Vec<_>>());
    assert!(read.iter().all(|s| s.message == big(s.sequence)), "the same bytes from the log and from memory");
    assert!(counter(&outbox, |c| &c.scanned) >= scanned + 5, "8 to 12 are read from the log");
    let used = outbox.pending().await.expect("pending")[0].bytes;
    assert_eq!(outbox.acknowledge("ledger", 9).await.ok(), Some(9), "past the window's end");
    let after = outbox.pending().await.expect("pending")[0].bytes;
    assert_eq!(used - after, 9 * State::record_size("ledger", &big(1)));
    let rest = outbox.read("ledger", 1, usize::MAX, usize::MAX).await.expect("read");
    assert_eq!(rest.iter().map(|s| s.sequence).collect::<Vec<_>>(), [10, 11, 12]);

    // Everything released, the next message opens a new window.
    assert_eq!(outbox.acknowledge("ledger", 12).await.ok(), Some(3));
    outbox.append("ledger", big(13)).await.expect("append");
    let scanned = counter(&outbox, |c| &c.scanned);
    let next = outbox.read("ledger", 1, usize::MAX, usize::MAX).await.expect("read");
    assert_eq!(next.iter().map(|s| (s.sequence, s.message.clone())).collect::<Vec<_>>(), [(13, big(13))]);
    assert_eq!(counter(&outbox, |c| &c.scanned), scanned, "from memory again");
}

/// Where each level's writer lives (`log/writer.rs`): at the process level a task on the runtime
/// that opened the outbox, which ends with that runtime, so later appends fail `Closed` rather
/// than hang; at the power level a thread of its own, which outlives it.
#[test]
fn the_process_levels_writer_lives_on_the_opening_runtime_and_the_power_levels_on_a_thread() {
    let runtime = || tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    for (durability, works_after) in [(Durability::Process, false), (Durability::Power, true)] {
        let dir = temp();
        let opening = runtime();
        let outbox = opening.block_on(async {
            let outbox = open(dir.path(), config().durability(durability)).await;
            outbox.append("ledger", msg(1)).await.expect("an append while the runtime runs");
            outbox
        });
        drop(opening);
        let appended = runtime().block_on(outbox.append("ledger", msg(2)));
        match appended {
            Ok(sequence) => assert!(works_after, "{durability:?}: appended as {sequence} after its runtime ended"),
            Err(e) => assert!(
                !works_after && matches!(e, DurableError::Closed { .. }),
                "{durability:?}: {e} after its runtime ended"
            ),
        }
    }
}
