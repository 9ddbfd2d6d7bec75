//! Segment files: their names, their header, and the repair of a torn tail.
//!
//! A segment is the file `NNNNNNNN.log` (its number, from 1, in at least 8 decimal digits) and
//! holds, in order:
//!
//! 1. the magic `ZRPCLOG\0`;
//! 2. a header record ([`HEADER`] kind, framed like every record, so its CRC covers it):
//!    `version u16 | role u8 | owner name (len u8, UTF-8) | outbox id u64 | segment u64`;
//! 3. a checkpoint record (the owner's state when the segment was started), unless it was too
//!    large to write or a crash cut it short;
//! 4. records, up to about the configured segment size (the record that passes it still goes in
//!    whole, so a segment may exceed the size by one batch).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{self, FRAME_HEADER, Fields, Frame, Malformed};
use crate::durable::OutboxId;

/// The first bytes of every segment.
pub(crate) const MAGIC: &[u8; 8] = b"ZRPCLOG\0";

/// The format version this code writes and reads.
pub(crate) const VERSION: u16 = 1;

/// Kind of the header record (after the magic).
const HEADER: u8 = 0xff;

/// Which end's log a segment belongs to: an outbox must not open an inbox's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A sender's outbox.
    Outbox = 1,
    /// A receiver's inbox.
    Inbox = 2,
}

/// What every segment of one log repeats in its header: fixed when the log is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) role: Role,
    /// The owner's name (an outbox's sender name; for an inbox, `inbox`), at most 255 bytes.
    pub(crate) name: Arc<str>,
    /// Random bits drawn at creation (an outbox's [`OutboxId`]; an inbox's own, unused so far).
    pub(crate) id: OutboxId,
}

/// The path of segment `number` in `dir`.
pub(crate) fn path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:08}.log"))
}

/// The numbers of the segments in `dir`, in order. Other files are left alone.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name.strip_suffix(".log") else { continue };
        if digits.len() >= 8
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(number) = digits.parse::<u64>()
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// The header record's fields before the name: the format version (u16) and the role (u8).
const BEFORE_NAME: usize = 2 + 1;
/// After the name: the outbox's id and the segment's number (u64 each).
const AFTER_NAME: usize = 8 + 8;

/// The `len` of a header record whose name is `name_len` bytes long: its kind byte, the fields
/// before the name, the name with its length byte, the fields after it. What [`put_header`]
/// writes (its tests check), and what [`short`] holds a cut header to.
fn header_len(name_len: usize) -> usize {
    1 + BEFORE_NAME + 1 + name_len + AFTER_NAME
}

/// Appends the magic and header of segment `number` to `buf`.
pub(crate) fn put_header(buf: &mut Vec<u8>, identity: &Identity, number: u64) {
    buf.extend_from_slice(MAGIC);
    let size = record::encode(buf, HEADER, |b| {
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.push(identity.role as u8);
        record::put_name(b, &identity.name);
        b.extend_from_slice(&identity.id.as_u64().to_le_bytes());
        b.extend_from_slice(&number.to_le_bytes());
    });
    debug_assert_eq!(size, FRAME_HEADER + header_len(identity.name.len()), "the header's layout");
}

/// Why a segment's first bytes are not a header.
#[derive(Debug)]
pub(crate) enum BadHeader {
    /// The file ends inside the header: a crash while the segment was being created.
    Short,
    /// The bytes are there and wrong.
    Invalid(Malformed),
}

/// Reads the header at the start of `bytes`: the identity, the segment's number, and the
/// header's size (magic included).
pub(crate) fn read_header(bytes: &[u8]) -> Result<(Identity, u64, usize), BadHeader> {
    let Some(magic) = bytes.get(..MAGIC.len()) else { return Err(BadHeader::Short) };
    if magic != MAGIC {
        return Err(BadHeader::Invalid(Malformed("not a zrpc durable log segment (bad magic)")));
    }
    let (body, size) = match record::frame(&bytes[MAGIC.len()..]) {
        Frame::Record { kind: HEADER, body, size } => (body, size),
        Frame::Record { .. } => return Err(BadHeader::Invalid(Malformed("the header record has another kind"))),
        Frame::Short => return Err(short(&bytes[MAGIC.len()..])),
        Frame::Bad => return Err(BadHeader::Invalid(Malformed("the header fails its checksum"))),
    };
    let invalid = BadHeader::Invalid;
    let mut f = Fields::new(body);
    let version = f.u16().map_err(invalid)?;
    if version != VERSION {
        return Err(BadHeader::Invalid(Malformed("a segment of an unknown format version")));
    }
    let role = match f.u8().map_err(invalid)? {
        1 => Role::Outbox,
        2 => Role::Inbox,
        _ => return Err(BadHeader::Invalid(Malformed("a segment of an unknown role"))),
    };
    let name: Arc<str> = f.name().map_err(invalid)?.into();
    let id = OutboxId::from_u64(f.u64().map_err(invalid)?);
    let number = f.u64().map_err(invalid)?;
    f.end().map_err(invalid)?;
    Ok((Identity { role, name, id }, number, MAGIC.len() + size))
}

/// Why a header record runs past the end of `record` (the bytes after the magic): cut short, a
/// crash while its segment was created, only if the fields that are there agree with it. A
/// `len` changed on disk also runs past the end; taken for a cut header, it had the segment
/// removed with every record in it (a single segment: the whole log, reopened empty under a
/// new id). The kind byte and the name's length, which give a header's `len`, tell them apart.
fn short(record: &[u8]) -> BadHeader {
    // The record's frame (len u32, crc u32), its kind byte, the fields before the name, the
    // name's length byte.
    const NAME_LEN_AT: usize = FRAME_HEADER + 1 + BEFORE_NAME;
    let declared = record.first_chunk::<4>().map(|b| u32::from_le_bytes(*b));
    let kind = record.get(FRAME_HEADER);
    let fields_len = record.get(NAME_LEN_AT).map(|&name| header_len(usize::from(name)));
    if kind.is_some_and(|&k| k != HEADER) {
        return BadHeader::Invalid(Malformed("the header record has another kind"));
    }
    match (declared, fields_len) {
        (Some(declared), Some(fields)) if usize::try_from(declared).ok() != Some(fields) => {
            BadHeader::Invalid(Malformed("the header's length disagrees with its fields"))
        }
        _ => BadHeader::Short,
    }
}

/// How the records of a segment's tail end.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Every byte from the start belongs to a whole, valid record.
    Clean,
    /// The records end at `valid` (an offset in the bytes given); what follows is a write cut
    /// short: no valid record starts anywhere after it.
    Torn { valid: usize },
    /// The record at `at` is bad but valid records follow it: not a torn write.
    Corrupt { at: usize },
}

/// Walks the records of `bytes` (a segment's bytes from a record boundary to its end) and says
/// how they end.
///
/// A record that runs past the end or fails its CRC is a torn write unless some later offset
/// starts a chain of valid records that reaches exactly the end of the file: then it is
/// corruption in the middle. (A chain to the end, rather than one valid-looking frame, so that a
/// message body that happens to contain frame-like bytes does not make a torn tail look
/// corrupt.)
///
/// Each offset's frame is read at most twice (as a chain's start, and within one chain): a
/// chain that breaks off leaves every offset it passed marked, and a later chain that reaches a
/// marked offset stops there, since it would break off the same way. Without the marks, a bad
/// record early in a segment whose tail is also torn made every later record start a walk to
/// the tail: quadratic in the records, hours for a segment of a million.
pub(crate) fn check_tail(bytes: &[u8]) -> Tail {
    check_tail_counting(bytes).0
}

/// [`check_tail`], and how many frames it read (for the test that holds it linear).
fn check_tail_counting(bytes: &[u8]) -> (Tail, usize) {
    let mut at = 0;
    let mut frames = 0;
    loop {
        if at == bytes.len() {
            return (Tail::Clean, frames);
        }
        frames += 1;
        match record::frame(&bytes[at..]) {
            Frame::Record { size, .. } => at += size,
            Frame::Short | Frame::Bad => {
                let mut broken = Offsets::new(bytes.len());
                let later = (at + 1..bytes.len().saturating_sub(FRAME_HEADER))
                    .any(|p| chains_to_end(bytes, p, &mut broken, &mut frames));
                let tail = if later { Tail::Corrupt { at } } else { Tail::Torn { valid: at } };
                return (tail, frames);
            }
        }
    }
}

/// Whether `bytes[start..]` is a non-empty sequence of valid records ending exactly at the end.
/// The offsets of a chain that breaks off are added to `broken`; one that reaches an offset
/// already there breaks off too.
fn chains_to_end(bytes: &[u8], start: usize, broken: &mut Offsets, frames: &mut usize) -> bool {
    let mut at = start;
    let mut passed = Vec::new();
    loop {
        if broken.contains(at) {
            break;
        }
        *frames += 1;
        match record::frame(&bytes[at..]) {
            Frame::Record { size, .. } => {
                passed.push(at);
                at += size;
                if at == bytes.len() {
                    return true;
                }
            }
            Frame::Short | Frame::Bad => {
                // Marked directly: most starts tried are not a record at all, and must not
                // cost an allocation each.
                broken.insert(at);
                break;
            }
        }
    }
    for offset in passed {
        broken.insert(offset);
    }
    false
}

/// A set of offsets into a segment's bytes: one bit each.
struct Offsets(Vec<u64>);

impl Offsets {
    fn new(len: usize) -> Offsets {
        Offsets(vec![0; len.div_ceil(64)])
    }

    fn contains(&self, offset: usize) -> bool {
        self.0.get(offset / 64).is_some_and(|word| word & 1 << (offset % 64) != 0)
    }

    fn insert(&mut self, offset: usize) {
        if let Some(word) = self.0.get_mut(offset / 64) {
            *word |= 1 << (offset % 64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity { role: Role::Outbox, name: "shop-1".into(), id: OutboxId::from_u64(0xabc) }
    }

    #[test]
    fn a_header_reads_back_and_every_prefix_is_short() {
        let mut buf = Vec::new();
        put_header(&mut buf, &identity(), 42);
        let (id, number, size) = read_header(&buf).expect("the header reads back");
        assert_eq!((id, number, size), (identity(), 42, buf.len()));
        // The layout `short` holds a cut header to is the one written, for any name's length.
        for name in ["", "shop-1", &"n".repeat(255)] {
            let mut buf = Vec::new();
            put_header(&mut buf, &Identity { name: name.into(), ..identity() }, 1);
            assert_eq!(buf.len(), MAGIC.len() + FRAME_HEADER + header_len(name.len()), "a name of {}", name.len());
        }
        for cut in 0..buf.len() {
            assert!(matches!(read_header(&buf[..cut]), Err(BadHeader::Short)), "cut at {cut}");
        }
        buf[0] = b'X';
        assert!(matches!(read_header(&buf), Err(BadHeader::Invalid(_))));
    }

    #[test]
    fn a_header_whose_length_disagrees_with_its_fields_is_invalid_not_short() {
        let mut buf = Vec::new();
        put_header(&mut buf, &identity(), 42);
        // A segment's records follow its header: the file is longer than any header.
        buf.extend_from_slice(&[0; 600]);
        let len_at = MAGIC.len();
        for (at, bit) in [(len_at, 0x01), (len_at, 0x40), (len_at + 1, 0x01), (len_at + 2, 0x10)] {
            let mut bad = buf.clone();
            bad[at] ^= bit;
            assert!(matches!(read_header(&bad), Err(BadHeader::Invalid(_))), "byte {at} ^ {bit:#x}");
        }
    }

    #[test]
    fn names_list_in_numeric_order_and_other_files_are_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["00000010.log", "00000002.log", "LOCK", "7.log", "000000ab.log", "123456789.log"] {
            fs::write(dir.path().join(name), b"").expect("write a file");
        }
        assert_eq!(list(dir.path()).ok(), Some(vec![2, 10, 123_456_789]));
        assert_eq!(path(dir.path(), 3).file_name().and_then(|n| n.to_str()), Some("00000003.log"));
    }

    #[test]
    fn a_tail_is_clean_torn_or_corrupt() {
        let mut buf = Vec::new();
        for n in 0..3u8 {
            record::encode(&mut buf, 1, |b| b.extend_from_slice(&[n; 20]));
        }
        assert_eq!(check_tail(&buf), Tail::Clean);
        let one = buf.len() / 3;
        assert_eq!(check_tail(&buf[..buf.len() - 1]), Tail::Torn { valid: 2 * one });
        let mut bad = buf.clone();
        bad[one + 12] ^= 1;
        assert_eq!(check_tail(&bad), Tail::Corrupt { at: one });
        bad.truncate(2 * one);
        assert_eq!(check_tail(&bad), Tail::Torn { valid: one });
    }

    #[test]
    fn a_bad_record_early_and_a_torn_tail_take_linear_work() {
        // The second of 2,000 records is damaged and the last is cut short: every record after
        // the damage starts a chain that breaks off at the tail. Each must be walked once.
        const RECORDS: usize = 2_000;
        let mut buf = Vec::new();
        for n in 0..RECORDS {
            record::encode(&mut buf, 1, |b| b.extend_from_slice(&(n as u64).to_le_bytes()));
        }
        let one = buf.len() / RECORDS;
        buf[one + FRAME_HEADER] ^= 1;
        buf.truncate(buf.len() - 1);
        let (tail, frames) = check_tail_counting(&buf);
        assert_eq!(tail, Tail::Torn { valid: one });
        // One frame read per offset tried, plus each record once: without the marks it was
        // about RECORDS² / 2, two million.
        assert!(frames <= buf.len() + RECORDS, "{frames} frames read for {} bytes", buf.len());
    }
}
