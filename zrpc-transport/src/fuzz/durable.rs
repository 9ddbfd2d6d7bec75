//! [`durable`]: the durable log's recovery path (`durable/log/mod.rs`, "Opening a log"): an
//! outbox's or an inbox's log written through its API and then damaged as the input says (for
//! an inbox, its handled marks' sidecar too), or segments of records zrpc did not write, opened
//! again.
//!
//! Each run works in a directory of its own under [`std::env::temp_dir`] (the process id and a
//! counter), removed when the run ends, and drives the outbox or inbox on a current-thread
//! runtime of its own.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{Report, arg};
use crate::durable::marks;
use crate::durable::record::{self, CHECKPOINT, Frame};
use crate::durable::segment::{self, Identity, Role, Tail};
use crate::durable::{Durability, DurableError, Inbox, InboxConfig, MessageId, Outbox, OutboxConfig, OutboxId};

/// Segments as small as the configs allow, so that a few messages fill several.
const SEGMENT_BYTES: u64 = 4096;

/// The outbox's destinations, and the inbox's senders.
const NAMES: [&str; 2] = ["ledger", "mail"];

/// The outboxes the inbox's streams come from.
const OUTBOXES: [u64; 2] = [7, 9];

/// The sender name of the outbox under test.
const SENDER: &str = "fuzz";

/// Most operations a damaged log is written with.
const MAX_STEPS: u8 = 16;

/// Bits 2 to 7 of byte 0 that give a damaged inbox's input a sidecar section (see [`durable`]):
/// byte 0 is then `0x11`. Inputs from before the section existed left these bits at any value,
/// and the regressions kept then (`fuzz/regressions/durable/`) at others than this one, so
/// that they still mean what they meant.
const SIDECAR: u8 = 0x10;

/// Kinds of the owners' records (their `state.rs` tables): written here by hand, as a writer
/// other than zrpc would.
const MESSAGE: u8 = 1;
const ACK_OR_HANDLED: u8 = 2;
const RESUMED: u8 = 3;

/// Opens an outbox's or an inbox's log (bit 0 of the first byte) that was either written
/// through its API and then damaged (bit 1 clear) or written here, record by record, as
/// something other than zrpc would (bit 1 set); the report counts the messages read back
/// after the reopen.
///
/// **Damage** (bit 1 clear). A script of up to 16 steps, two bytes each, appends messages (of
/// up to about 1 KiB, in 4 KiB segments) and acknowledges (outbox) or marks handled (inbox)
/// up to a few of them, and notes the owner's state after each step; then up to four kinds of
/// damage: the last segment cut at an offset, one to four bytes of a segment changed, bytes
/// appended to a segment, a segment deleted or cut. Checked, whatever the damage:
///
/// - nothing panics (the writer's and the open's panics show as
///   [`Closed`](DurableError::Closed), which is checked for too);
/// - before the damage, every segment is a header and whole records with their CRCs;
/// - the reopen succeeds or fails with [`Corrupt`](DurableError::Corrupt);
/// - a message read back is one that was written, under its own sequence;
/// - a log that reopened reopens again to the same state.
///
/// And where `durable/log/mod.rs` promises more, for a log that never deleted a segment and one
/// damage confined to its last segment:
///
/// - cut at any offset (a torn tail), it opens, with the state as of the last record wholly
///   before the cut, every message of it read back: nothing written whole before the cut is
///   lost, and nothing acknowledged before it comes back;
/// - a record changed in it opens the same way when it is the segment's last record, and is
///   [`Corrupt`](DurableError::Corrupt) when valid records follow it (its header included: "a
///   bad header" is `Corrupt`);
/// - bytes appended that hold no valid record are dropped, and the log opens as it was.
///
/// **The handled marks' sidecar** (an inbox, damaged, byte 0 `0x11`: see `SIDECAR`). After
/// the log's damage, a section: up to four entries of marks written into the closed inbox's
/// `HANDLED` through the dispatcher's own `Marks` (a stream, and one to four of its next
/// messages past the log's mark, within what it recorded: a crash inside runs), then up to
/// four damages to the file: cut at an offset, one to four bytes changed, bytes appended, its
/// length set (sparse, up to 128 MiB, or shorter), deleted, or a slot written with a valid
/// checksum (a stream's or any outbox id and sender hash, any handled count, `u64::MAX`
/// included). The log is first opened without the file (the checks above), then with it.
/// Checked, from `inbox/marks.rs` ("At open") and "The exact guarantee" in `durable/mod.rs`:
///
/// - sidecar damage alone never makes an inbox unopenable: the open succeeds whenever the log
///   opened without the file (or fails with `Corrupt` when the log's own messages did not read
///   back: applying a mark reads runs);
/// - each stream's handled mark is the log's raised to its highest valid slot's, within what
///   the log recorded, and no stream is added or lost: never past the log, never below a mark
///   the log had (no handler runs again for a message the log had marked);
/// - damage that forged no valid slot never marks more than the marks written did (a message is
///   at worst handled again, never skipped);
/// - exactly the messages above the marks are handed out again, those read back without the
///   file;
/// - it opens again to the same state (or `Corrupt`, as above: its compaction now reads what
///   the marks left sparse).
///
/// **Records zrpc did not write** (bit 1 set). One to three segments, each a valid header (its
/// number, or with one flag another) followed by records with correct CRCs whose kinds and
/// bodies come from the input: messages, acknowledgements, handled and resumed marks and
/// checkpoints (counts, sequences and runs drawn from small numbers and edge values like
/// `u64::MAX`), raw records of any kind, and bytes that are no record. Checked: nothing panics,
/// nothing allocates without bound from a count or a length in a body (run with
/// `-malloc_limit_mb=64`), the open succeeds or fails with `Corrupt`, and an owner that opened
/// reads, acknowledges or marks handled, takes a new message, closes and reopens to the
/// sequences it had, or fails with `Corrupt` (a checkpoint's runs are read only when needed).
///
/// # Panics
/// When one of these breaks.
pub fn durable(input: &[u8]) -> Report {
    run(input).0
}

/// [`durable`], and how its last reopen used the sidecar.
pub(crate) fn run(input: &[u8]) -> (Report, Sidecar) {
    let Some((&control, script)) = input.split_first() else { return (Report::default(), Sidecar::NotRun) };
    let kind = if control & 1 == 0 { Kind::Outbox } else { Kind::Inbox };
    let scratch = Scratch::new();
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(e) => panic!("a runtime for the run: {e}"),
    };
    let (count, sidecar) = runtime.block_on(async {
        if control & 2 == 0 {
            damaged(kind, scratch.path(), script, kind == Kind::Inbox && control & 0xfc == SIDECAR).await
        } else {
            (foreign(kind, scratch.path(), script).await, Sidecar::NotRun)
        }
    });
    (Report { count, error: None }, sidecar)
}

/// A directory for one run, removed with everything in it when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("zrpc-fuzz-durable-{}-{run}", std::process::id()));
        // Left by an earlier process of the same id.
        let _ = fs::remove_dir_all(&path);
        Scratch(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Outbox,
    Inbox,
}

/// An outbox or an inbox, open.
enum Owner {
    Outbox(Outbox),
    Inbox(Inbox),
}

/// What an owner knows, per key (a destination; a stream as `sender/outbox`): its first
/// sequence not acknowledged or handled, its next sequence, and the bytes its messages take.
/// Keys at `(1, 1, 0)`, as never used, are left out.
type State = BTreeMap<String, (u64, u64, u64)>;

/// A state's sequences, without its bytes.
fn sequences(state: &State) -> BTreeMap<&str, (u64, u64)> {
    state.iter().map(|(key, &(first, next, _))| (key.as_str(), (first, next))).collect()
}

/// The key of the `n`th name (and, for the inbox, outbox) as [`State`] names it.
fn key_name(kind: Kind, n: usize) -> String {
    match kind {
        Kind::Outbox => NAMES[n & 1].to_owned(),
        Kind::Inbox => format!("{}/{}", NAMES[n & 1], OUTBOXES[(n >> 1) & 1]),
    }
}

async fn open(kind: Kind, dir: &Path) -> Result<Owner, DurableError> {
    match kind {
        Kind::Outbox => {
            Outbox::open(dir, OutboxConfig::new(SENDER).segment_bytes(SEGMENT_BYTES)).await.map(Owner::Outbox)
        }
        Kind::Inbox => Inbox::open(dir, InboxConfig::default().segment_bytes(SEGMENT_BYTES)).await.map(Owner::Inbox),
    }
}

impl Owner {
    /// The owner's state. Answered after the writer's upkeep (rolling, compaction) of the
    /// batch before, so the files are settled when it returns.
    async fn state(&self) -> State {
        let mut state = State::new();
        match self {
            Owner::Outbox(outbox) => {
                for pending in alive(outbox.pending().await) {
                    let entry = (pending.first_unacknowledged, pending.next_sequence, pending.bytes);
                    state.insert(pending.destination, entry);
                }
                for name in NAMES {
                    let next = alive(outbox.next_sequence(name).await);
                    if next != 1 {
                        state.entry(name.to_owned()).or_insert((next, next, 0));
                    }
                }
            }
            Owner::Inbox(inbox) => {
                for stream in alive(inbox.streams().await) {
                    let entry = (stream.handled + 1, stream.recorded + 1, stream.bytes);
                    state.insert(format!("{}/{}", stream.sender, stream.outbox.as_u64()), entry);
                }
            }
        }
        state.retain(|_, entry| *entry != (1, 1, 0));
        state
    }

    /// Every message the owner holds, as (key, sequence, bytes): an outbox's read from each
    /// destination's first, an inbox's taken once from every stream ready.
    async fn messages(&self, state: &State) -> Result<Vec<(String, u64, Bytes)>, DurableError> {
        let mut out = Vec::new();
        match self {
            Owner::Outbox(outbox) => {
                for (name, &(first, next, _)) in state {
                    if first < next {
                        let read = outbox.read(name, first, usize::MAX, usize::MAX).await?;
                        out.extend(read.into_iter().map(|s| (name.clone(), s.sequence, s.message)));
                    }
                }
            }
            Owner::Inbox(inbox) => {
                let taken = inbox.take_runs(usize::MAX, usize::MAX).await?;
                out.extend(taken.iter().map(|d| {
                    (format!("{}/{}", d.id.sender(), d.id.outbox().as_u64()), d.id.sequence(), d.message.clone())
                }));
            }
        }
        Ok(out)
    }

    /// Appends (outbox) or records (inbox) the next message of key `n`, of `len` bytes; the
    /// state before says which sequence that is.
    async fn add(&self, kind: Kind, state: &State, n: usize, len: usize) -> Result<(), DurableError> {
        let key = key_name(kind, n);
        let next = state.get(&key).map_or(1, |entry| entry.1);
        match self {
            Owner::Outbox(outbox) => {
                let sequence = outbox.append(NAMES[n & 1], message(&key, next, len)).await?;
                assert_eq!(sequence, next, "{key}: an append got another sequence than the state's next");
            }
            Owner::Inbox(inbox) => {
                let outbox = OutboxId::from_u64(OUTBOXES[(n >> 1) & 1]);
                let incoming = Inbox::incoming(NAMES[n & 1].into(), outbox, next, 0, message(&key, next, len))?;
                let mut answers = inbox.submit_records(vec![incoming])?.await;
                let Some(answer) = answers.pop() else { panic!("{key}: a record was not answered") };
                answer?;
            }
        }
        Ok(())
    }

    /// Acknowledges (outbox) or marks handled (inbox) key `n`'s messages up to `up_to`; returns
    /// how many that released (a record was written exactly when some were).
    async fn release(&self, n: usize, up_to: u64) -> Result<u64, DurableError> {
        match self {
            Owner::Outbox(outbox) => outbox.acknowledge(NAMES[n & 1], up_to).await,
            Owner::Inbox(inbox) => {
                inbox.handled(&MessageId::new(NAMES[n & 1], OutboxId::from_u64(OUTBOXES[(n >> 1) & 1]), up_to)).await
            }
        }
    }

    async fn close(&self) {
        let closed = match self {
            Owner::Outbox(outbox) => outbox.close().await,
            Owner::Inbox(inbox) => inbox.close().await,
        };
        alive(closed);
    }
}

/// A writer that answers `Closed` while the owner is open has stopped: a panic in it.
fn alive<T>(answer: Result<T, DurableError>) -> T {
    match answer {
        Ok(value) => value,
        Err(e) => panic!("the owner's writer stopped (a panic in it?): {e}"),
    }
}

/// Fails unless `e` is an error an owner may give for a log it cannot use: `Corrupt` (an open
/// that panicked shows as `Closed`).
fn assert_corrupt(e: &DurableError, what: &str) {
    assert!(matches!(e, DurableError::Corrupt { .. }), "{what}: not Corrupt: {e:?}");
}

/// Message `sequence` of `key`, `len` bytes: its key's length, its key, its sequence, then
/// bytes that follow from the sequence; [`check_message`] knows it again.
fn message(key: &str, sequence: u64, len: usize) -> Bytes {
    let mut bytes = Vec::with_capacity(len.max(key.len() + 9));
    bytes.push(key.len() as u8);
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(&sequence.to_le_bytes());
    let fill = bytes.len()..len.max(bytes.len());
    bytes.extend(fill.map(|i| (sequence as u8) ^ (i as u8)));
    Bytes::from(bytes)
}

/// Fails unless `bytes` is a message [`message`] wrote for `key` and `sequence`.
fn check_message(key: &str, sequence: u64, bytes: &[u8]) {
    let head = 1 + key.len() + 8;
    let written = message(key, sequence, bytes.len());
    assert!(bytes.len() >= head && bytes == &written[..], "{key} {sequence}: read back other bytes: {bytes:?}");
}

/// A message's length from a script byte: up to about 1 KiB.
fn message_len(byte: u8) -> usize {
    usize::from(byte % 64) * 16
}

/// A 16-bit number off the script.
fn arg16(script: &mut &[u8]) -> usize {
    usize::from(u16::from_le_bytes([arg(script), arg(script)]))
}

// ---- damage to a real log ----

/// What a step of the script did: the state after it, and whether it wrote a record.
struct Step {
    state: State,
    wrote: bool,
}

/// A segment as written: its number, bytes, header size and records (start, end, kind).
struct Written {
    number: u64,
    bytes: Vec<u8>,
    header: usize,
    records: Vec<(usize, usize, u8)>,
}

/// One damage to the files, off the script.
#[derive(Debug)]
enum Damage {
    /// The last segment cut to `at` bytes.
    Cut { at: usize },
    /// Bytes `at..at + xor.len()` of segment `index` xored with `xor` (none of it zero).
    Flip { index: usize, at: usize, xor: Vec<u8> },
    /// `bytes` appended to segment `index`.
    Append { index: usize, bytes: Vec<u8> },
    /// Segment `index` removed.
    Delete { index: usize },
    /// Segment `index` cut to `at` bytes.
    Truncate { index: usize, at: usize },
}

async fn damaged(kind: Kind, dir: &Path, mut script: &[u8], sidecar: bool) -> (usize, Sidecar) {
    let script = &mut script;
    let owner = match open(kind, dir).await {
        Ok(owner) => owner,
        Err(e) => panic!("a new log does not open: {e}"),
    };
    let mut steps = vec![Step { state: owner.state().await, wrote: false }];
    for _ in 0..arg(script) % MAX_STEPS + 1 {
        let (op, a) = (arg(script), arg(script));
        let n = usize::from(op >> 1);
        let before = &steps[steps.len() - 1].state;
        let wrote = if op & 1 == 0 {
            alive(owner.add(kind, before, n, message_len(a)).await);
            true
        } else {
            let first = before.get(&key_name(kind, n)).map_or(1, |entry| entry.0);
            // Up to three messages past the first not yet released (none, with 0).
            alive(owner.release(n, first - 1 + u64::from(a % 4)).await) > 0
        };
        steps.push(Step { state: owner.state().await, wrote });
    }
    owner.close().await;

    let written = read_segments(dir);
    let damage = damages(script, &written);
    // The sidecar's section follows the log's damage, so that an input without it means what
    // it meant before there was one.
    let sidecar = sidecar.then(|| SidecarScript::new(script));
    let marked = match &sidecar {
        Some(sidecar) => sidecar.write_marks(dir, &steps[steps.len() - 1].state),
        None => Vec::new(),
    };
    for d in &damage {
        apply(dir, &written, d);
    }
    let expected = expectation(&written, &steps, &damage);
    // The log alone first: what it opens to is what the sidecar's marks are applied to.
    let aside = dir.join(AWAY);
    if sidecar.is_some() {
        rename(&dir.join(marks::FILE), &aside);
    }

    let (count, opened) = match open(kind, dir).await {
        Ok(owner) => {
            let state = owner.state().await;
            let messages = owner.messages(&state).await;
            let count = messages.as_ref().map_or(0, Vec::len);
            check_messages(&state, &messages);
            if let Some(Expected::Opens(expected)) = &expected {
                assert_eq!(&state, expected, "damage {damage:?}: reopened to another state");
                let all: usize = state.values().map(|&(first, next, _)| (next - first) as usize).sum();
                assert!(
                    messages.as_ref().is_ok_and(|m| m.len() == all),
                    "damage {damage:?}: not every message held reads back: {messages:?} of {state:?}"
                );
            }
            assert!(
                !matches!(expected, Some(Expected::Corrupt)),
                "damage {damage:?}: a bad record with valid records after it opened, to {state:?}"
            );
            assert_reopens(kind, dir, owner, &state, &damage).await;
            (count, Some((state, messages.ok())))
        }
        Err(e) => {
            assert_corrupt(&e, &format!("damage {damage:?}"));
            assert!(
                !matches!(expected, Some(Expected::Opens(_))),
                "damage {damage:?}: did not open, though the damage is a torn tail's: {e}"
            );
            (0, None)
        }
    };
    match (sidecar, opened) {
        (Some(sidecar), Some((state, messages))) => {
            rename(&aside, &dir.join(marks::FILE));
            let reached = sidecar.reopen(dir, &state, messages.as_deref(), &marked).await;
            (count, reached)
        }
        _ => (count, Sidecar::NotRun),
    }
}

/// Fails unless every message read back (when the reads succeeded; they may fail with
/// `Corrupt`) is within its key's held sequences, once, with the bytes written for it.
fn check_messages(state: &State, messages: &Result<Vec<(String, u64, Bytes)>, DurableError>) {
    let messages = match messages {
        Ok(messages) => messages,
        Err(e) => return assert_corrupt(e, "reading the messages back"),
    };
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (key, sequence, bytes) in messages {
        let Some(&(first, next, _)) = state.get(key) else { panic!("{key} {sequence}: read from a key not held") };
        assert!((first..next).contains(sequence), "{key} {sequence}: read outside {first}..{next}");
        let before = last.insert(key, *sequence);
        assert!(before.is_none_or(|b| b + 1 == *sequence), "{key} {sequence}: read after {before:?}");
        check_message(key, *sequence, bytes);
    }
}

/// Closes `owner`, which opened to `state`, and opens the log again: to the same state.
async fn assert_reopens(kind: Kind, dir: &Path, owner: Owner, state: &State, damage: &[Damage]) {
    owner.close().await;
    match open(kind, dir).await {
        Ok(again) => {
            assert_eq!(&again.state().await, state, "damage {damage:?}: a second reopen gave another state");
            again.close().await;
        }
        Err(e) => panic!("damage {damage:?}: a log that opened does not open again: {e}"),
    }
}

/// The segments in `dir`, each checked to be a header and whole valid records.
fn read_segments(dir: &Path) -> Vec<Written> {
    let numbers = match segment::list(dir) {
        Ok(numbers) => numbers,
        Err(e) => panic!("listing the segments: {e}"),
    };
    numbers
        .into_iter()
        .map(|number| {
            let bytes = match fs::read(segment::path(dir, number)) {
                Ok(bytes) => bytes,
                Err(e) => panic!("reading segment {number}: {e}"),
            };
            let header = match segment::read_header(&bytes) {
                Ok((_, n, header)) if n == number => header,
                other => panic!("segment {number} as written has a bad header: {other:?}"),
            };
            assert_eq!(segment::check_tail(&bytes[header..]), Tail::Clean, "segment {number} as written");
            let mut records = Vec::new();
            let mut at = header;
            while let Frame::Record { kind, size, .. } = record::frame(&bytes[at..]) {
                records.push((at, at + size, kind));
                at += size;
            }
            Written { number, bytes, header, records }
        })
        .collect()
}

/// Up to four damages off the script (one at least, if there is a segment).
fn damages(script: &mut &[u8], written: &[Written]) -> Vec<Damage> {
    let Some(last) = written.last() else { return Vec::new() };
    let count = written.len();
    // From the last segment back: 0 is the last.
    let pick = |byte: u8| count - 1 - usize::from(byte) % count;
    let mut out = Vec::new();
    for _ in 0..arg(script) % 4 + 1 {
        let d = match arg(script) % 5 {
            0 => Damage::Cut { at: arg16(script) % (last.bytes.len() + 1) },
            1 => {
                let index = pick(arg(script));
                let len = written[index].bytes.len();
                let at = arg16(script) % len;
                let width = (usize::from(arg(script)) % 4 + 1).min(len - at);
                let xor = (0..width).map(|_| arg(script).max(1)).collect();
                Damage::Flip { index, at, xor }
            }
            2 => {
                let index = pick(arg(script));
                let n = usize::from(arg(script) % 32);
                let bytes = (0..n).map(|_| arg(script)).collect();
                Damage::Append { index, bytes }
            }
            3 => Damage::Delete { index: pick(arg(script)) },
            _ => {
                let index = pick(arg(script));
                Damage::Truncate { index, at: arg16(script) % (written[index].bytes.len() + 1) }
            }
        };
        out.push(d);
    }
    out
}

fn apply(dir: &Path, written: &[Written], damage: &Damage) {
    let index = match damage {
        Damage::Cut { .. } => written.len() - 1,
        Damage::Truncate { index, .. }
        | Damage::Flip { index, .. }
        | Damage::Append { index, .. }
        | Damage::Delete { index } => *index,
    };
    let path = segment::path(dir, written[index].number);
    // A segment deleted by an earlier damage stays deleted.
    let Ok(mut bytes) = fs::read(&path) else { return };
    match damage {
        Damage::Cut { at } | Damage::Truncate { at, .. } => bytes.truncate(*at),
        Damage::Flip { at, xor, .. } => {
            for (byte, x) in bytes.iter_mut().skip(*at).zip(xor) {
                *byte ^= x;
            }
        }
        Damage::Append { bytes: more, .. } => bytes.extend_from_slice(more),
        Damage::Delete { .. } => {
            if let Err(e) = fs::remove_file(&path) {
                panic!("deleting {}: {e}", path.display());
            }
            return;
        }
    }
    if let Err(e) = fs::write(&path, bytes) {
        panic!("damaging {}: {e}", path.display());
    }
}

/// What the contract says of a reopen after `damage`, when it says something precise.
enum Expected {
    /// The log opens to this state, every message of it read back.
    Opens(State),
    /// The open fails with `Corrupt`.
    Corrupt,
}

/// See [`durable`]: only a log that never deleted a segment (numbers 1, 2, ... without a gap:
/// every record it wrote is there), with one damage, in its last segment.
fn expectation(written: &[Written], steps: &[Step], damage: &[Damage]) -> Option<Expected> {
    let [damage] = damage else { return None };
    let last = written.last()?;
    let whole = written.iter().enumerate().all(|(i, w)| w.number == i as u64 + 1);
    if !whole {
        return None;
    }
    // The state as of the records that end at or before `offset` of the last segment.
    let as_of = |offset: usize| {
        let kept = written
            .iter()
            .flat_map(|w| w.records.iter().map(move |r| (w.number, r)))
            .filter(|&(number, &(_, end, kind))| kind != CHECKPOINT && (number < last.number || end <= offset))
            .count();
        let mut wrote = 0;
        let mut state = &steps[0].state;
        for step in &steps[1..] {
            wrote += usize::from(step.wrote);
            if wrote > kept {
                break;
            }
            state = &step.state;
        }
        Expected::Opens(state.clone())
    };
    // Where the record of the last segment that holds `offset` starts, and whether an
    // undamaged record (one starting at or after `end`) follows it.
    let record_at = |offset: usize, end: usize| {
        let &(start, _, _) = last.records.iter().find(|&&(start, end, _)| start <= offset && offset < end)?;
        Some((start, last.records.iter().any(|&(s, _, _)| s >= end)))
    };
    let last_index = written.len() - 1;
    match damage {
        Damage::Cut { at } => Some(as_of(*at)),
        Damage::Truncate { index, at } if *index == last_index => Some(as_of(*at)),
        Damage::Flip { index, at, xor } if *index == last_index => {
            if *at < last.header {
                return Some(Expected::Corrupt);
            }
            let (start, followed) = record_at(*at, at + xor.len())?;
            Some(if followed { Expected::Corrupt } else { as_of(start) })
        }
        Damage::Append { index, bytes } if *index == last_index => {
            // Bytes that hold valid records (a fuzzer can forge their CRCs) are records.
            (bytes.is_empty() || segment::check_tail(bytes) == (Tail::Torn { valid: 0 }))
                .then(|| as_of(last.bytes.len()))
        }
        _ => None,
    }
}

// ---- the handled marks' sidecar ----

/// Where the sidecar waits while the log is opened without it.
const AWAY: &str = "HANDLED.away";

/// How a run's last reopen used the handled marks' sidecar (see [`durable`]), for the replay of
/// the regressions: whether the corpus still reaches both outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sidecar {
    /// No sidecar section, or the log did not open without it.
    NotRun,
    /// Every stream reopened where the log alone had it.
    Kept,
    /// Some stream's handled mark was raised from the sidecar.
    Raised,
}

/// The sidecar's section of an input: marks written as the dispatcher writes them, then up to
/// four damages.
struct SidecarScript {
    /// Per entry a stream (as [`key_name`] numbers them) and how many of its next messages
    /// (one to four) are marked handled.
    marks: Vec<(usize, u64)>,
    damage: Vec<SidecarDamage>,
}

/// One damage to the sidecar file.
#[derive(Debug)]
enum SidecarDamage {
    /// Cut to `at` bytes (modulo its length plus one).
    Cut { at: u64 },
    /// The bytes at `at` (modulo its length) xored with `xor` (none of it zero).
    Flip { at: u64, xor: Vec<u8> },
    /// `bytes` appended (the file created if it was deleted).
    Append { bytes: Vec<u8> },
    /// Its length set to `len`: sparse, up to 128 MiB, or shorter.
    Resize { len: u64 },
    /// The file removed.
    Delete,
    /// Slot number `slot` written with a valid checksum: a stream's or any outbox id and sender
    /// hash, and any handled count.
    Forge { slot: u64, mark: marks::Mark },
}

impl SidecarScript {
    fn new(script: &mut &[u8]) -> SidecarScript {
        let marks = (0..arg(script) % 5)
            .map(|_| {
                let byte = arg(script);
                (usize::from(byte & 3), u64::from(byte >> 2) % 4 + 1)
            })
            .collect();
        let damage = (0..arg(script) % 5)
            .map(|_| match arg(script) % 6 {
                0 => SidecarDamage::Cut { at: arg16(script) as u64 },
                1 => {
                    let at = arg16(script) as u64;
                    let width = usize::from(arg(script)) % 4 + 1;
                    SidecarDamage::Flip { at, xor: (0..width).map(|_| arg(script).max(1)).collect() }
                }
                2 => SidecarDamage::Append { bytes: some_bytes(script, 80) },
                3 => SidecarDamage::Resize { len: (marks::INITIAL_LEN as u64 >> 4) << (arg(script) % 20) },
                4 => SidecarDamage::Delete,
                _ => {
                    let slot = match arg(script) {
                        byte @ 0..0xf0 => u64::from(byte),
                        _ => arg16(script) as u64,
                    };
                    let pick = arg(script);
                    let outbox = if pick & 4 == 0 { OUTBOXES[usize::from(pick & 1)] } else { value(script) };
                    let sender_hash = if pick & 8 == 0 {
                        marks::sender_hash(NAMES[usize::from(pick >> 1) & 1])
                    } else {
                        value(script)
                    };
                    SidecarDamage::Forge { slot, mark: marks::Mark { outbox, sender_hash, handled: value(script) } }
                }
            })
            .collect();
        SidecarScript { marks, damage }
    }

    /// Writes the section's marks into the closed inbox's sidecar, through the dispatcher's
    /// [`Marks`](marks::Marks), each stream's from the one after its handled mark in `state`
    /// (the log's) and within what it recorded; returns every mark written.
    fn write_marks(&self, dir: &Path, state: &State) -> Vec<marks::Mark> {
        let sidecar = match marks::Marks::create(dir, Durability::Process) {
            Ok(sidecar) => sidecar,
            Err(e) => panic!("the sidecar does not open: {e}"),
        };
        let mut last: BTreeMap<usize, u64> = BTreeMap::new();
        let mut written = Vec::new();
        for &(n, count) in &self.marks {
            let (first, next, _) = state.get(&key_name(Kind::Inbox, n)).copied().unwrap_or((1, 1, 0));
            let from = *last.entry(n).or_insert(first - 1);
            for sequence in from + 1..=(from + count).min(next - 1) {
                let outbox = OutboxId::from_u64(OUTBOXES[(n >> 1) & 1]);
                if let Err(e) = sidecar.write(&MessageId::new(NAMES[n & 1], outbox, sequence)) {
                    panic!("writing a mark: {e}");
                }
                last.insert(n, sequence);
                written.push(stream_mark(n, sequence));
            }
        }
        written
    }

    /// Damages the sidecar and opens the inbox with it, on the log that opened without it to
    /// `state` and read back `messages` (`None`: the reads failed); checks what the marks did
    /// (see [`durable`]).
    async fn reopen(
        &self,
        dir: &Path,
        state: &State,
        messages: Option<&[(String, u64, Bytes)]>,
        marked: &[marks::Mark],
    ) -> Sidecar {
        let path = dir.join(marks::FILE);
        for d in &self.damage {
            damage_sidecar(&path, d);
        }
        let (slots, forged) = valid_slots(&path, marked);
        // Per stream: the log's handled mark raised to its highest valid slot's, within what
        // it recorded.
        let mut expected = state.clone();
        for n in 0..4 {
            let Some((first, next, _)) = expected.get_mut(&key_name(Kind::Inbox, n)) else { continue };
            let slot = slots.get(&stream_key(n)).copied().unwrap_or(0);
            *first = (*first).max(slot.min(*next - 1) + 1);
            // A damage that forges nothing never marks more than the marks written did.
            let most = marked.iter().filter(|m| (m.outbox, m.sender_hash) == stream_key(n)).map(|m| m.handled).max();
            assert!(
                forged || *first - 1 <= most.unwrap_or(0).max(state[&key_name(Kind::Inbox, n)].0 - 1),
                "{}: damage {:?} to marks {marked:?} that forged no mark raised it to {first}",
                key_name(Kind::Inbox, n),
                self.damage
            );
        }
        let inbox = match open(Kind::Inbox, dir).await {
            Ok(inbox) => inbox,
            // Marking handled reads the log's runs: a log whose messages did not read back
            // may fail there too.
            Err(e) if messages.is_none() => {
                assert_corrupt(&e, "opening a damaged log with its sidecar");
                return Sidecar::NotRun;
            }
            Err(e) => panic!("sidecar damage {:?} made an inbox that opens without it fail: {e}", self.damage),
        };
        let reopened = inbox.state().await;
        assert_eq!(
            sequences(&reopened),
            sequences(&expected),
            "sidecar damage {:?} to marks {marked:?} (valid slots {slots:?}): reopened from {state:?}",
            self.damage
        );
        let again = inbox.messages(&reopened).await;
        check_messages(&reopened, &again);
        if let Some(before) = messages {
            // Exactly the messages above the marks come back; none at or below them.
            let above: Vec<_> = before.iter().filter(|(key, sequence, _)| *sequence >= reopened[key].0).collect();
            let again = match &again {
                Ok(again) => again,
                Err(e) => panic!("the messages read back without the sidecar do not read back with it: {e}"),
            };
            assert_eq!(again.iter().collect::<Vec<_>>(), above, "sidecar damage {:?}", self.damage);
        }
        inbox.close().await;
        match open(Kind::Inbox, dir).await {
            Ok(again) => {
                assert_eq!(again.state().await, reopened, "sidecar damage {:?}: a second reopen", self.damage);
                again.close().await;
            }
            // The marks released messages after the open's compaction; this one rewrites the
            // segments they left sparse, reading records that did not read back before.
            Err(e) if messages.is_none() => assert_corrupt(&e, "reopening a damaged log after its sidecar's marks"),
            Err(e) => panic!("sidecar damage {:?}: an inbox that opened does not open again: {e}", self.damage),
        }
        if sequences(&reopened) == sequences(state) { Sidecar::Kept } else { Sidecar::Raised }
    }
}

/// Stream `n`'s outbox id and sender hash, as its slots hold them.
fn stream_key(n: usize) -> (u64, u64) {
    (OUTBOXES[(n >> 1) & 1], marks::sender_hash(NAMES[n & 1]))
}

fn stream_mark(n: usize, handled: u64) -> marks::Mark {
    let (outbox, sender_hash) = stream_key(n);
    marks::Mark { outbox, sender_hash, handled }
}

fn rename(from: &Path, to: &Path) {
    if let Err(e) = fs::rename(from, to) {
        panic!("moving {} to {}: {e}", from.display(), to.display());
    }
}

fn damage_sidecar(path: &Path, damage: &SidecarDamage) {
    use std::os::unix::fs::FileExt;

    let file = || match fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path) {
        Ok(file) => file,
        Err(e) => panic!("opening {}: {e}", path.display()),
    };
    let len = fs::metadata(path).map_or(0, |m| m.len());
    let done = match damage {
        SidecarDamage::Cut { at } => file().set_len(at % (len + 1)),
        SidecarDamage::Flip { .. } if len == 0 => Ok(()),
        SidecarDamage::Flip { at, xor } => {
            let at = at % len;
            let mut bytes = vec![0; xor.len().min((len - at) as usize)];
            let file = file();
            file.read_exact_at(&mut bytes, at).and_then(|()| {
                for (byte, x) in bytes.iter_mut().zip(xor) {
                    *byte ^= x;
                }
                file.write_all_at(&bytes, at)
            })
        }
        SidecarDamage::Append { bytes } => file().write_all_at(bytes, len),
        SidecarDamage::Resize { len } => file().set_len(*len),
        SidecarDamage::Delete => match fs::remove_file(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
        SidecarDamage::Forge { slot, mark } => file().write_all_at(&marks::encode(*mark), slot * marks::SLOT as u64),
    };
    if let Err(e) = done {
        panic!("damaging {} ({damage:?}): {e}", path.display());
    }
}

/// The highest handled count of each stream's valid slots in the sidecar at `path` (read a slot
/// at a time: it may be sparse and long), and whether one of them is not a mark of `marked`.
fn valid_slots(path: &Path, marked: &[marks::Mark]) -> (BTreeMap<(u64, u64), u64>, bool) {
    let mut slots = BTreeMap::new();
    let mut forged = false;
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (slots, forged),
        Err(e) => panic!("reading {}: {e}", path.display()),
    };
    let mut reader = std::io::BufReader::with_capacity(64 << 10, file);
    let mut slot = [0; marks::SLOT];
    loop {
        match std::io::Read::read_exact(&mut reader, &mut slot) {
            Ok(()) => {}
            // The end, or a last slot cut short, which holds no mark.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("reading {}: {e}", path.display()),
        }
        if let Some(mark) = marks::decode(&slot) {
            forged |= !marked.contains(&mark);
            let highest = slots.entry((mark.outbox, mark.sender_hash)).or_insert(0);
            *highest = mark.handled.max(*highest);
        }
    }
    (slots, forged)
}

// ---- records zrpc did not write ----

/// A number off the script: a byte below `0xf0` as itself, the rest edge values or eight bytes.
fn value(script: &mut &[u8]) -> u64 {
    match arg(script) {
        b @ 0..0xf0 => u64::from(b),
        0xf0 => u64::MAX,
        0xf1 => u64::MAX - 1,
        0xf2 => u64::from(u32::MAX),
        0xf3 => 1 << 32,
        0xf4 => 1 << 63,
        0xf5 => arg16(script) as u64,
        _ => u64::from_le_bytes(std::array::from_fn(|_| arg(script))),
    }
}

/// Bytes off the script: a length byte (below `max`), then that many.
fn some_bytes(script: &mut &[u8], max: u8) -> Vec<u8> {
    let n = arg(script) % max;
    (0..n).map(|_| arg(script)).collect()
}

/// A key's fields as a record of the owner writes them: the name, and for the inbox the outbox.
fn put_key(b: &mut Vec<u8>, kind: Kind, n: u8) {
    record::put_name(b, NAMES[usize::from(n) & 1]);
    if kind == Kind::Inbox {
        b.extend_from_slice(&OUTBOXES[usize::from(n >> 1) & 1].to_le_bytes());
    }
}

/// A checkpoint body as the owner's `state.rs` documents it, its counts and numbers off the
/// script (so they may disagree with the bytes).
fn checkpoint(script: &mut &[u8], kind: Kind) -> Vec<u8> {
    let mut b = Vec::new();
    let keys = arg(script);
    // Mostly a count that matches, sometimes any.
    let count = if keys & 0x80 == 0 { u32::from(keys % 3) } else { value(script) as u32 };
    b.extend_from_slice(&count.to_le_bytes());
    for _ in 0..keys % 3 {
        put_key(&mut b, kind, arg(script));
        if kind == Kind::Inbox {
            b.extend_from_slice(&value(script).to_le_bytes()); // last seen
        }
        let (first, next) = (value(script), value(script));
        b.extend_from_slice(&first.to_le_bytes());
        b.extend_from_slice(&next.to_le_bytes());
        let runs = arg(script);
        let count = if runs & 0x80 == 0 { u32::from(runs % 3) } else { value(script) as u32 };
        b.extend_from_slice(&count.to_le_bytes());
        for _ in 0..runs % 3 {
            // segment, offset, first, last, bytes
            for _ in 0..5 {
                b.extend_from_slice(&value(script).to_le_bytes());
            }
        }
    }
    b
}

/// One to three segments written here, then the owner opened on them (see [`durable`]).
async fn foreign(kind: Kind, dir: &Path, mut script: &[u8]) -> usize {
    let script = &mut script;
    let setup = arg(script);
    let (role, name) = match kind {
        Kind::Outbox => (Role::Outbox, SENDER),
        Kind::Inbox => (Role::Inbox, "inbox"),
    };
    let identity = Identity { role, name: name.into(), id: OutboxId::from_u64(0x5eed) };
    if let Err(e) = fs::create_dir_all(dir) {
        panic!("creating {}: {e}", dir.display());
    }
    let segments = u64::from(setup % 3) + 1;
    for number in 1..=segments {
        let mut bytes = Vec::new();
        // Bit 2: the last segment's header names another number; bit 3: another role.
        let mut header_identity = identity.clone();
        let mut header_number = number;
        if number == segments {
            if setup & 4 != 0 {
                header_number += 1;
            }
            if setup & 8 != 0 {
                header_identity.role = match role {
                    Role::Outbox => Role::Inbox,
                    Role::Inbox => Role::Outbox,
                };
            }
        }
        segment::put_header(&mut bytes, &header_identity, header_number);
        // Records until a 0xff, or the script's end.
        loop {
            if script.is_empty() {
                break;
            }
            let op = arg(script);
            if op == 0xff {
                break;
            }
            match op % 8 {
                0 => {
                    let kind = arg(script);
                    let body = some_bytes(script, 64);
                    record::encode(&mut bytes, kind, |b| b.extend_from_slice(&body));
                }
                1 => {
                    let n = arg(script);
                    let sequence = value(script);
                    let payload = some_bytes(script, 32);
                    record::encode(&mut bytes, MESSAGE, |b| {
                        put_key(b, kind, n);
                        b.extend_from_slice(&sequence.to_le_bytes());
                        b.extend_from_slice(&payload);
                    });
                }
                2 | 3 => {
                    let record_kind = if op % 8 == 2 { ACK_OR_HANDLED } else { RESUMED };
                    let n = arg(script);
                    let up_to = value(script);
                    record::encode(&mut bytes, record_kind, |b| {
                        put_key(b, kind, n);
                        b.extend_from_slice(&up_to.to_le_bytes());
                    });
                }
                4 | 5 => {
                    let body = checkpoint(script, kind);
                    record::encode(&mut bytes, CHECKPOINT, |b| b.extend_from_slice(&body));
                }
                6 => bytes.extend(some_bytes(script, 16)),
                _ => {
                    let body = some_bytes(script, 64);
                    record::encode(&mut bytes, CHECKPOINT, |b| b.extend_from_slice(&body));
                }
            }
        }
        if let Err(e) = fs::write(segment::path(dir, number), &bytes) {
            panic!("writing segment {number}: {e}");
        }
    }

    let owner = match open(kind, dir).await {
        Ok(owner) => owner,
        Err(e) => {
            assert_corrupt(&e, "opening records zrpc did not write");
            return 0;
        }
    };
    let state = owner.state().await;
    let messages = owner.messages(&state).await;
    let count = messages.as_ref().map_or(0, Vec::len);
    // Whatever their bytes, the messages read back are within their keys' sequences, in order.
    let mut clean = match &messages {
        Ok(messages) => {
            for (key, sequence, _) in messages {
                let Some(&(first, next, _)) = state.get(key) else { panic!("{key} {sequence}: not held") };
                assert!((first..next).contains(sequence), "{key} {sequence}: read outside {first}..{next}");
            }
            true
        }
        Err(e) => {
            assert_corrupt(e, "reading records zrpc did not write");
            false
        }
    };
    // The owner goes on: each key's messages released up to a number, and one added.
    for n in 0..if kind == Kind::Inbox { 4 } else { 2 } {
        let up_to = value(script);
        match owner.release(n, up_to).await {
            Ok(_) => {}
            Err(DurableError::Closed { .. }) => panic!("the writer stopped releasing {}", key_name(kind, n)),
            Err(e) => {
                assert_corrupt(&e, "releasing messages of records zrpc did not write");
                clean = false;
            }
        }
        let before = owner.state().await;
        match owner.add(kind, &before, n, 8).await {
            Ok(()) => {}
            Err(DurableError::Closed { .. }) => panic!("the writer stopped adding to {}", key_name(kind, n)),
            // Full: checkpoints may count any bytes; InvalidSequence: and put a key's next past
            // the last sequence, where an outbox takes no more.
            Err(DurableError::Full { .. } | DurableError::InvalidSequence { .. }) => {}
            Err(e) => {
                assert_corrupt(&e, "adding to records zrpc did not write");
                clean = false;
            }
        }
    }
    let state = owner.state().await;
    owner.close().await;
    match open(kind, dir).await {
        Ok(again) => {
            // The sequences, not the bytes: those of a run are counted by walking it, and a
            // walk counts records of the run's sequences that zrpc would not have written there
            // (a message again, inside a run).
            if clean {
                assert_eq!(sequences(&again.state().await), sequences(&state), "reopened to other sequences");
            }
            again.close().await;
        }
        // A checkpoint's runs say where messages are, which an open does not read to check (it
        // reads the records after the checkpoint only): a run released whole at the first open
        // may be read at the next, when a message logged since extends it.
        Err(e) => assert_corrupt(&e, "reopening records zrpc did not write"),
    }
    count
}
