//! The header a compressed payload starts with: which algorithm, and how long the payload is
//! once decompressed.

use super::FrameError;

/// Bytes of a compressed payload's header: `compression u8`, `len u32`.
pub const COMPRESSED_HEADER_LEN: usize = 5;

/// The header of a `REQUEST` or `RESPONSE` payload sent with the `COMPRESSED` flag
/// (docs/PROTOCOL.md §5, "Compressed payloads"): the compressed bytes follow it.
///
/// The uncompressed length comes first so that a receiver can check it against its limit
/// before allocating anything, and then decompress into a buffer of exactly that size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressedHeader {
    /// The compression id ([`zrpc_core::Compression::id`]); the receiver must have announced it.
    pub compression: u8,
    /// The length of the payload once decompressed.
    pub len: u32,
}

impl CompressedHeader {
    /// The header at the front of `payload` and the compressed bytes after it; `None` when
    /// `payload` is shorter than [`COMPRESSED_HEADER_LEN`].
    pub fn split(payload: &[u8]) -> Option<(CompressedHeader, &[u8])> {
        let (&[compression, a, b, c, d], rest) = payload.split_first_chunk::<COMPRESSED_HEADER_LEN>()?;
        Some((CompressedHeader { compression, len: u32::from_be_bytes([a, b, c, d]) }, rest))
    }

    /// The header's bytes.
    pub fn to_bytes(self) -> [u8; COMPRESSED_HEADER_LEN] {
        let [a, b, c, d] = self.len.to_be_bytes();
        [self.compression, a, b, c, d]
    }
}

/// Checks that a compressed payload holds at least its header: a shorter one is a malformed
/// frame, since its fields run past the end of the body. Everything else about the payload (an
/// unknown id, a length over the limit, corrupt data) concerns that call only, and is decided
/// where the payload is decompressed.
pub(super) fn check(kind: &'static str, payload: &[u8]) -> Result<(), FrameError> {
    if payload.len() < COMPRESSED_HEADER_LEN {
        return Err(FrameError::Malformed { kind, reason: "a compressed payload is shorter than its 5-byte header" });
    }
    Ok(())
}
