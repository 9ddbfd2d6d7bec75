//! Field-level reading and writing shared by every frame kind: a bounds-checked cursor over a
//! frame body, the frame header, and the metadata block.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use zrpc_core::Metadata;

use super::{FrameError, HEADER_LEN};

/// Bytes of a frame's `length` field.
pub(super) const LENGTH_LEN: usize = 4;

/// A cursor over a frame's bytes, which it owns. Every read is bounds-checked and fails with
/// [`FrameError::Malformed`] naming the frame kind; slices share the frame's buffer.
///
/// Each slice of a `Bytes` takes a reference count and later gives it back, two atomic
/// operations, which a frame pays for the names it carries only. Its body is read where it is,
/// after the header ([`Reader::body`]), rather than as a slice of its own; and its last field,
/// the payload, is the frame itself, advanced past the fields before it ([`Reader::rest`]). On a
/// client the answers of one read are dropped by callers on every worker, and the count they
/// share is a cache line that moves between cores: `perf` found its decrements 5% of a client's
/// CPU (`benches/results/kernel-share-08f2377-amd`). Until 2026-12-02 the payload was a slice,
/// and the frame, dropped once parsed, gave its count back: two more operations a frame.
pub(super) struct Reader {
    bytes: Bytes,
    pos: usize,
    kind: &'static str,
}

impl Reader {
    pub(super) fn new(bytes: Bytes, kind: &'static str) -> Reader {
        Reader { bytes, pos: 0, kind }
    }

    /// The rest of the same frame, read as a `kind` body: its errors name `kind`.
    pub(super) fn body(self, kind: &'static str) -> Reader {
        Reader { kind, ..self }
    }

    pub(super) fn malformed(&self, reason: &'static str) -> FrameError {
        FrameError::Malformed { kind: self.kind, reason }
    }

    /// How many bytes are left.
    pub(super) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn array<const N: usize>(&mut self, reason: &'static str) -> Result<[u8; N], FrameError> {
        let end = self.pos.checked_add(N).ok_or_else(|| self.malformed(reason))?;
        let bytes = self.bytes.get(self.pos..end).ok_or_else(|| self.malformed(reason))?;
        let array = <[u8; N]>::try_from(bytes).map_err(|_| self.malformed(reason))?;
        self.pos = end;
        Ok(array)
    }

    pub(super) fn u8(&mut self, reason: &'static str) -> Result<u8, FrameError> {
        self.array::<1>(reason).map(|[b]| b)
    }

    pub(super) fn u16(&mut self, reason: &'static str) -> Result<u16, FrameError> {
        self.array(reason).map(u16::from_be_bytes)
    }

    pub(super) fn u32(&mut self, reason: &'static str) -> Result<u32, FrameError> {
        self.array(reason).map(u32::from_be_bytes)
    }

    pub(super) fn u64(&mut self, reason: &'static str) -> Result<u64, FrameError> {
        self.array(reason).map(u64::from_be_bytes)
    }

    pub(super) fn u128(&mut self, reason: &'static str) -> Result<u128, FrameError> {
        self.array(reason).map(u128::from_be_bytes)
    }

    /// The next `len` bytes, sharing the frame's buffer.
    pub(super) fn bytes(&mut self, len: usize, reason: &'static str) -> Result<Bytes, FrameError> {
        let end =
            self.pos.checked_add(len).filter(|&end| end <= self.bytes.len()).ok_or_else(|| self.malformed(reason))?;
        let slice = self.bytes.slice(self.pos..end);
        self.pos = end;
        Ok(slice)
    }

    /// The next `len` bytes, which must be UTF-8.
    pub(super) fn utf8(
        &mut self,
        len: usize,
        truncated: &'static str,
        invalid: &'static str,
    ) -> Result<Bytes, FrameError> {
        let bytes = self.bytes(len, truncated)?;
        std::str::from_utf8(&bytes).map_err(|_| self.malformed(invalid))?;
        Ok(bytes)
    }

    /// The next `len` bytes as an owned string; they must be UTF-8.
    pub(super) fn string(
        &mut self,
        len: usize,
        truncated: &'static str,
        invalid: &'static str,
    ) -> Result<String, FrameError> {
        let bytes = self.bytes(len, truncated)?;
        let s = std::str::from_utf8(&bytes).map_err(|_| self.malformed(invalid))?;
        Ok(s.to_owned())
    }

    /// Everything after the cursor: the bytes read, advanced past what was read, with no
    /// reference count of their own (see [`Reader`]).
    pub(super) fn rest(mut self) -> Bytes {
        self.bytes.advance(self.pos.min(self.bytes.len()));
        self.bytes
    }

    /// A metadata block: `count u16`, then per entry `key_len u8`, key, `value_len u32`, value.
    /// The entries are checked and kept as they are, sharing the frame (see [`Metadata`]).
    pub(super) fn metadata(&mut self) -> Result<Metadata, FrameError> {
        let count = self.u16("body ends inside the metadata count")?;
        // Each entry takes at least 5 bytes; refuse an impossible count before parsing any.
        if usize::from(count).saturating_mul(5) > self.remaining() {
            return Err(self.malformed("metadata count exceeds what the body can hold"));
        }
        if count == 0 {
            return Ok(Metadata::new());
        }
        let rest = self.bytes.slice(self.pos.min(self.bytes.len())..);
        let (metadata, used) = Metadata::decode_wire(&rest, count).map_err(|e| self.malformed(e.0))?;
        self.pos += used;
        Ok(metadata)
    }
}

/// The encoded size of a metadata block, or the first field that cannot be encoded.
pub(super) fn metadata_len(metadata: &Metadata) -> Result<u64, FrameError> {
    if metadata.len() > usize::from(u16::MAX) {
        return Err(FrameError::FieldTooLong {
            field: "metadata count",
            len: metadata.len(),
            max: usize::from(u16::MAX),
        });
    }
    let mut len = 2u64;
    for (key, value) in metadata.iter() {
        check_len("metadata key", key.len(), usize::from(u8::MAX))?;
        check_len("metadata value", value.len(), u32::MAX as usize)?;
        len = len.saturating_add(1 + key.len() as u64 + 4 + value.len() as u64);
    }
    Ok(len)
}

/// Writes a metadata block already validated by [`metadata_len`].
pub(super) fn put_metadata(dst: &mut BytesMut, metadata: &Metadata) {
    dst.extend_from_slice(&(metadata.len() as u16).to_be_bytes());
    for (key, value) in metadata.iter() {
        dst.put_u8(key.len() as u8);
        dst.put_slice(key.as_bytes());
        dst.put_u32(value.len() as u32);
        dst.put_slice(value);
    }
}

/// Fails with [`FrameError::FieldTooLong`] when `len > max`.
pub(super) fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), FrameError> {
    if len > max { Err(FrameError::FieldTooLong { field, len, max }) } else { Ok(()) }
}

/// The `length` of a frame with `body_len` body bytes, checked against the peer's `max_frame`.
pub(super) fn frame_len(body_len: u64, max_frame: u32) -> Result<u32, FrameError> {
    let len = body_len.saturating_add((HEADER_LEN - LENGTH_LEN) as u64);
    u32::try_from(len).ok().filter(|&len| len <= max_frame).ok_or(FrameError::FrameTooLarge { len, max: max_frame })
}

/// Reserves room for the whole frame and writes its header followed by `N - HEADER_LEN` bytes
/// of the body's fixed fields, which the caller fills in `fixed`; returns the frame's total
/// size. One copy for all of them: a `put_u8` or `put_u64` on a `BytesMut` is a capacity check
/// and a call to `memcpy` each, and a call's two frames had 17 of them.
pub(super) fn put_header_with<const N: usize>(
    dst: &mut BytesMut,
    len: u32,
    kind: u8,
    flags: u8,
    id: u64,
    fixed: impl FnOnce(&mut [u8]),
) -> usize {
    // `len` came from `frame_len`, so it fits in memory once the frame's fields do.
    let total = LENGTH_LEN + len as usize;
    dst.reserve(total);
    let mut bytes = [0u8; N];
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    bytes[4] = kind;
    bytes[5] = flags;
    bytes[6..HEADER_LEN].copy_from_slice(&id.to_be_bytes());
    fixed(&mut bytes[HEADER_LEN..]);
    dst.extend_from_slice(&bytes);
    total
}

/// Reserves room for the whole frame and writes its header; returns the frame's total size.
pub(super) fn put_header(dst: &mut BytesMut, len: u32, kind: u8, flags: u8, id: u64) -> usize {
    put_header_with::<HEADER_LEN>(dst, len, kind, flags, id, |_| {})
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub(super) fn truncate_str(s: &str, max: usize) -> &str {
    s.get(..s.floor_char_boundary(max)).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_reads_past_the_end_and_keeps_its_position() {
        let body = Bytes::from_static(&[0, 1, 2]);
        let mut r = Reader::new(body, "test");
        assert_eq!(r.u16("a"), Ok(1));
        assert_eq!(r.u16("b"), Err(FrameError::Malformed { kind: "test", reason: "b" }));
        assert_eq!(r.bytes(2, "c"), Err(FrameError::Malformed { kind: "test", reason: "c" }));
        assert_eq!(r.bytes(usize::MAX, "d"), Err(FrameError::Malformed { kind: "test", reason: "d" }));
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.rest(), Bytes::from_static(&[2]));
    }

    #[test]
    fn truncate_str_stops_at_a_char_boundary() {
        assert_eq!(truncate_str("héllo", 2), "h");
        assert_eq!(truncate_str("héllo", 3), "hé");
        assert_eq!(truncate_str("abc", 10), "abc");
    }

    #[test]
    fn frame_len_is_checked_against_the_limit() {
        assert_eq!(frame_len(0, 1024), Ok(10));
        assert_eq!(frame_len(1014, 1024), Ok(1024));
        assert_eq!(frame_len(1015, 1024), Err(FrameError::FrameTooLarge { len: 1025, max: 1024 }));
        assert_eq!(frame_len(u64::MAX, u32::MAX), Err(FrameError::FrameTooLarge { len: u64::MAX, max: u32::MAX }));
    }
}
