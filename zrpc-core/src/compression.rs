//! Payload compression algorithms, by their wire id.
//!
//! Compression is negotiated per connection: each side lists in its HELLO the algorithms it can
//! decode, and a sender compresses a payload only with one its peer listed (docs/PROTOCOL.md
//! §5, "Compressed payloads"). This module only names the algorithms, so that a
//! [`Context`](crate::Context) can choose one per call; the algorithms themselves, the payload
//! header and the limits checked on receipt are in `zrpc-transport`'s `compression` module,
//! each behind a feature of its own (`zstd`, `lz4`, `gzip`).
//!
//! A channel or server compresses with its configured algorithm the payloads at or above its
//! threshold; a call overrides that with [`Context::with_compression`](crate::Context::with_compression).

use std::fmt;

/// A compression algorithm a payload may travel in.
///
/// # Examples
///
/// ```
/// use zrpc_core::Compression;
///
/// assert_eq!(Compression::Zstd.id(), 1);
/// assert_eq!(Compression::from_id(2), Some(Compression::Lz4));
/// assert_eq!(Compression::from_id(0), None);
/// assert_eq!(Compression::Gzip.to_string(), "gzip");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum Compression {
    /// [Zstandard](https://facebook.github.io/zstd/) (RFC 8878), a zstd frame.
    Zstd = 1,
    /// [LZ4](https://github.com/lz4/lz4/blob/dev/doc/lz4_Block_format.md)'s block format: the
    /// uncompressed size comes from the payload header, not from the block.
    Lz4 = 2,
    /// gzip (RFC 1952): a deflate stream in a gzip member.
    Gzip = 3,
}

impl Compression {
    /// Every algorithm this version knows, in order of preference.
    pub const ALL: [Compression; 3] = [Compression::Zstd, Compression::Lz4, Compression::Gzip];

    /// The id sent on the wire: in HELLO's `compressions` list and in a compressed payload's
    /// header. Never 0.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The algorithm with wire id `id`, if this version knows it.
    pub fn from_id(id: u8) -> Option<Compression> {
        match id {
            1 => Some(Compression::Zstd),
            2 => Some(Compression::Lz4),
            3 => Some(Compression::Gzip),
            _ => None,
        }
    }

    /// The algorithm's name in lowercase, as in the feature that enables it: `zstd`, `lz4`,
    /// `gzip`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::Gzip => "gzip",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_zero_is_none() {
        for compression in Compression::ALL {
            assert_eq!(Compression::from_id(compression.id()), Some(compression));
        }
        assert_eq!(Compression::ALL.map(Compression::id), [1, 2, 3]);
        assert_eq!(Compression::from_id(0), None);
        assert_eq!(Compression::from_id(4), None);
    }
}
