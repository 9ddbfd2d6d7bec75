//! A record's framing (`len u32 | crc u32 | kind u8 | body`) and the bounds-checked field codec
//! its bodies are written with.
//!
//! 1. `len` (little-endian) counts the bytes after `crc`: the kind byte and the body. It is at
//!    least 1 and at most [`MAX_RECORD`]; a larger value is rejected before anything is read or
//!    allocated for it.
//! 2. `crc` (little-endian) is the CRC-32 (IEEE, `crc32fast`) of those `len` bytes.
//! 3. `kind` says what the body is; the owner of the log (outbox, inbox) gives the kinds their
//!    meaning, except [`CHECKPOINT`], which the log itself places first in every segment.

/// Bytes before a record's kind: `len u32 | crc u32`.
pub(crate) const FRAME_HEADER: usize = 8;

/// The largest `len` a record may have (kind and body): 32 MiB. A message body is at most
/// [`MAX_MESSAGE`], which leaves room for its destination and sequence; a checkpoint that would
/// be larger is not written (the reopen then scans from an earlier one).
pub(crate) const MAX_RECORD: usize = 32 << 20;

/// The largest message an outbox or inbox takes: 16 MiB, the default frame limit of the
/// protocol (PROTOCOL.md §2), since a message must fit in one REQUEST to be delivered.
pub(crate) const MAX_MESSAGE: usize = 16 << 20;

/// Kind of the record that opens every segment: the owner's state when the segment was started.
pub(crate) const CHECKPOINT: u8 = 0;

/// Appends one record (`len | crc | kind | body`) to `buf`, the body written by `body`.
///
/// Returns the record's size in bytes (header included). The caller checks the body's bound
/// before (`MAX_RECORD` is a debug assertion here, since every body is built from checked parts).
pub(crate) fn encode(buf: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER]);
    buf.push(kind);
    body(buf);
    let len = buf.len() - start - FRAME_HEADER;
    debug_assert!(len <= MAX_RECORD, "record of {len} bytes built past MAX_RECORD");
    // len <= MAX_RECORD (32 MiB) fits a u32.
    let len32 = len as u32;
    let crc = crc32fast::hash(&buf[start + FRAME_HEADER..]);
    buf[start..start + 4].copy_from_slice(&len32.to_le_bytes());
    buf[start + 4..start + FRAME_HEADER].copy_from_slice(&crc.to_le_bytes());
    buf.len() - start
}

/// What the bytes at an offset of a segment hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A whole record whose CRC matches: its kind, its body, and its size (header included).
    Record { kind: u8, body: &'a [u8], size: usize },
    /// The bytes end before the record does (a header cut short, or a `len` running past them).
    Short,
    /// A `len` of 0 or above [`MAX_RECORD`], or a CRC that does not match.
    Bad,
}

/// Reads the record at the start of `bytes`, checking its bounds and its CRC.
pub(crate) fn frame(bytes: &[u8]) -> Frame<'_> {
    let Some(header) = bytes.first_chunk::<FRAME_HEADER>() else { return Frame::Short };
    let Some((len, crc)) = header_fields(header) else { return Frame::Bad };
    let Some(rest) = bytes.get(FRAME_HEADER..FRAME_HEADER + len) else { return Frame::Short };
    let (kind, body) = (rest[0], &rest[1..]);
    if !crc_matches(crc, kind, body) {
        return Frame::Bad;
    }
    Frame::Record { kind, body, size: FRAME_HEADER + len }
}

/// A record header's `len` and `crc`; `None` for a `len` of 0 or above [`MAX_RECORD`].
pub(crate) fn header_fields(header: &[u8; FRAME_HEADER]) -> Option<(usize, u32)> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    (len != 0 && len <= MAX_RECORD).then_some((len, crc))
}

/// Whether `crc` is the CRC of a record's kind and body: for a reader that holds them apart.
pub(crate) fn crc_matches(crc: u32, kind: u8, body: &[u8]) -> bool {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(body);
    hasher.finalize() == crc
}

/// A record body or header that does not decode: a field runs past its end or is not valid.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Malformed(pub(crate) &'static str);

/// Reads fields off a body, each read bounds-checked.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Fields<'a> {
        Fields { rest: bytes }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.rest.len() {
            return Err(Malformed("a field runs past the end of its record"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Malformed> {
        let mut b = [0; 8];
        b.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(b))
    }

    /// A string of at most 255 bytes: `len u8 | UTF-8`.
    pub(crate) fn name(&mut self) -> Result<&'a str, Malformed> {
        let n = self.u8()? as usize;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| Malformed("a name is not UTF-8"))
    }

    /// Everything not read yet.
    pub(crate) fn rest(self) -> &'a [u8] {
        self.rest
    }

    /// Fails unless every byte was read.
    pub(crate) fn end(self) -> Result<(), Malformed> {
        if self.rest.is_empty() { Ok(()) } else { Err(Malformed("a record has bytes after its last field")) }
    }
}

/// Writes a name of at most 255 bytes as `len u8 | UTF-8`; the caller checked the bound.
pub(crate) fn put_name(buf: &mut Vec<u8>, name: &str) {
    debug_assert!(name.len() <= 255, "name of {} bytes", name.len());
    buf.push(name.len() as u8);
    buf.extend_from_slice(name.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        let size = encode(&mut buf, kind, |b| b.extend_from_slice(body));
        assert_eq!(size, buf.len());
        buf
    }

    #[test]
    fn a_record_reads_back_and_every_prefix_is_short() {
        let buf = one(7, b"hello");
        assert_eq!(frame(&buf), Frame::Record { kind: 7, body: b"hello", size: buf.len() });
        for cut in 0..buf.len() {
            assert_eq!(frame(&buf[..cut]), Frame::Short, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_after_the_length_fails_the_crc() {
        let buf = one(7, b"hello");
        for at in 4..buf.len() {
            let mut bad = buf.clone();
            bad[at] ^= 0x10;
            assert_eq!(frame(&bad), Frame::Bad, "flip at {at}");
        }
    }

    #[test]
    fn a_length_of_zero_or_past_the_maximum_is_bad_before_any_read() {
        let mut buf = vec![0; 16];
        assert_eq!(frame(&buf), Frame::Bad);
        buf[..4].copy_from_slice(&((MAX_RECORD + 1) as u32).to_le_bytes());
        assert_eq!(frame(&buf), Frame::Bad);
    }

    #[test]
    fn fields_refuse_to_read_past_the_end() {
        let mut f = Fields::new(&[3, b'a', b'b']);
        assert!(f.name().is_err());
        let mut f = Fields::new(&[1, 2, 3]);
        assert!(f.u64().is_err());
        let mut f = Fields::new(&[2, b'o', b'k', 9]);
        assert_eq!(f.name().ok(), Some("ok"));
        assert!(Fields::new(&[1]).end().is_err());
    }
}
