//! Payload compression: zstd, lz4 and gzip, negotiated in the HELLO, with the decompressed size
//! capped before anything is allocated.
//!
//! # Negotiation
//!
//! Each side lists in its HELLO the compression ids it can decode: those whose feature this
//! build has ([`available`]). A side compresses a REQUEST or RESPONSE payload only with an
//! algorithm its peer listed, so nobody compresses towards a peer that predates compression
//! (it lists none) and the protocol version stays 1 (docs/PROTOCOL.md §5, "Compressed
//! payloads").
//!
//! | algorithm | id | feature | crate | format |
//! |---|---:|---|---|---|
//! | [`Compression::Zstd`] | 1 | `zstd` | [`zstd`](https://docs.rs/zstd) (libzstd) | a zstd frame, level 1 |
//! | [`Compression::Lz4`] | 2 | `lz4` | [`lz4_flex`](https://docs.rs/lz4_flex), safe encoder and decoder | an LZ4 *block*, no frame |
//! | [`Compression::Gzip`] | 3 | `gzip` | [`flate2`](https://docs.rs/flate2), pure-Rust backend | a gzip member, fast level |
//!
//! LZ4's block format rather than its frame format: the payload header already says how long
//! the block decompresses to, which is all the block lacks, and a block has no checksums or
//! frame header to pay for on small payloads.
//!
//! # What is sent
//!
//! A channel (or server) configured with an algorithm compresses the payloads of at least its
//! threshold (1 KiB by default) and sends the others as they are, at no cost: no allocation and
//! no copy happen unless a payload is compressed. A payload that does not shrink is sent
//! uncompressed. A call can choose its own algorithm, or none, with
//! [`Context::with_compression`](zrpc_core::Context::with_compression). A server answers a
//! compressed request with the same algorithm, and an uncompressed one with its own configured
//! algorithm, if any (in both cases only above its threshold).
//!
//! An algorithm whose feature this build lacks is neither announced nor used: asking for it
//! (on a builder or per call) sends payloads uncompressed, and the builder logs a warning once.
//! This is a fallback rather than an error because a payload can always go uncompressed, and a
//! channel's build is infallible; [`is_available`] tells which algorithms a build has.
//!
//! # The payload header, and why the length comes first
//!
//! A compressed payload is `compression u8`, the uncompressed length `u32` (big-endian), then
//! the compressed bytes ([`CompressedHeader`]). Declaring the length up front is what makes the
//! cap cheap and exact: the receiver checks the declared length against its limit **before
//! allocating** anything, then decompresses into a buffer of exactly that capacity and fails if
//! the stream produces more (it stops there: it never trusts the stream's own idea of its size)
//! or fewer bytes. A 1 KiB zstd bomb that expands to 4 GiB either declares 4 GiB and is refused
//! from its five header bytes, or declares less and is stopped when the buffer is full.
//!
//! The limit is the receiver's `max_frame` (16 MiB by default), already announced in its HELLO:
//! a payload may be as large decompressed as it could have been sent uncompressed, no more. Many
//! compressed requests in progress at once are bounded by flow control, which counts a
//! compressed request as its size on the wire plus its declared length (docs/PROTOCOL.md §15),
//! so that the peer's requests in progress stay within `max_request_bytes` decompressed too.
//!
//! # Where the work is done
//!
//! The connection's task only moves bytes: it decodes frame headers and never compresses or
//! decompresses a response. A call's request is compressed on the caller's task (in the
//! connection's handle, below every middleware, so that a retry to another peer compresses
//! again for that peer) and its response decompressed in the caller's future. On the serving
//! side a request is decompressed where it becomes a [`Request`](zrpc_core::Request), on the
//! connection's task, because a `tower::Service` takes the request whole before its handler
//! runs; its response is compressed in the handler's task when the handler had to wait, and on
//! the connection's task when it answered at once.
//!
//! # Errors
//!
//! A payload that cannot be decompressed fails that call only; the connection stays up
//! ([`DecompressError`] says why). A REQUEST's caller is answered `ResourceExhausted` when the
//! declared length is over the limit and `InvalidArgument` for an id this side did not announce
//! or corrupt data, marked unprocessed since the handler never ran. A RESPONSE fails its call
//! on the caller's side with `ResourceExhausted` over the limit, else `DataLoss`. Only a payload
//! too short to hold its header is a framing violation (a connection error).

use bytes::Bytes;
use zrpc_core::{Code, Compression};

use crate::frame::{COMPRESSED_HEADER_LEN, CompressedHeader};

/// Payloads of at least this many bytes are compressed, unless configured otherwise.
pub const DEFAULT_THRESHOLD: usize = 1024;

/// Whether this build can compress and decompress with `compression`: its feature is on.
#[allow(clippy::match_like_matches_macro, reason = "one feature per arm, all true in some builds")]
pub fn is_available(compression: Compression) -> bool {
    match compression {
        Compression::Zstd => cfg!(feature = "zstd"),
        Compression::Lz4 => cfg!(feature = "lz4"),
        Compression::Gzip => cfg!(feature = "gzip"),
        _ => false,
    }
}

/// The algorithms this build can use, as it announces them in its HELLO.
pub fn available() -> impl Iterator<Item = Compression> {
    Compression::ALL.into_iter().filter(|&compression| is_available(compression))
}

/// How one side compresses what it sends: with which algorithm, from which size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The algorithm for payloads at or above the threshold; `None` sends everything as it is.
    pub(crate) algorithm: Option<Compression>,
    /// The smallest payload compressed.
    pub(crate) threshold: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { algorithm: None, threshold: DEFAULT_THRESHOLD }
    }
}

/// `algorithm`, if this build has it; else `None`, with a warning naming `owner` (see the
/// [module docs](self)): what a builder asked for it does.
pub(crate) fn usable(algorithm: Compression, owner: &str) -> Option<Compression> {
    if !is_available(algorithm) {
        tracing::warn!(
            "{owner} asked for {algorithm} compression, but this build lacks the `{algorithm}` feature: \
             payloads go uncompressed"
        );
        return None;
    }
    Some(algorithm)
}

impl Settings {
    /// The algorithm to compress a payload of `len` bytes with, for a peer that decodes
    /// `accepted` (see [`Accepted`]), given a call's own `choice` (as
    /// [`Context::compression`](zrpc_core::Context::compression) returns it).
    #[inline]
    pub(crate) fn pick(
        &self,
        choice: Option<Option<Compression>>,
        len: usize,
        accepted: Accepted,
    ) -> Option<Compression> {
        let algorithm = choice.unwrap_or(self.algorithm)?;
        (len >= self.threshold && accepted.contains(algorithm) && is_available(algorithm)).then_some(algorithm)
    }
}

/// The compression ids a peer announced that this build knows, as a set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accepted(u8);

impl Accepted {
    /// The algorithms among `ids` (a HELLO's list) that this version knows; others are ignored.
    pub fn from_ids(ids: &[u8]) -> Accepted {
        Accepted(ids.iter().filter_map(|&id| Compression::from_id(id)).fold(0, |set, c| set | 1 << c.id()))
    }

    /// The set as one byte, to share in an atomic.
    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    /// The set from [`bits`](Accepted::bits).
    pub(crate) fn from_bits(bits: u8) -> Accepted {
        Accepted(bits)
    }

    /// Whether the peer decodes `compression`.
    pub fn contains(self, compression: Compression) -> bool {
        self.0 & (1 << compression.id()) != 0
    }
}

/// Why a compressed payload was not decompressed. Each concerns one call; see the
/// [module docs](self#errors).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecompressError {
    /// The payload is shorter than its 5-byte header (the frame decoder refuses such a frame
    /// before it gets here).
    #[error("the compressed payload is shorter than its 5-byte header")]
    Truncated,
    /// The compression id is not one this side announced: unknown to this version, or its
    /// feature is off in this build.
    #[error("compression id {0} was not announced by this side")]
    NotAnnounced(u8),
    /// The declared uncompressed length is over the limit; nothing was allocated.
    #[error("the payload declares {declared} bytes uncompressed, over the limit of {limit}")]
    TooLarge {
        /// The length the header declares.
        declared: u32,
        /// The receiver's limit, its `max_frame`.
        limit: u32,
    },
    /// The compressed bytes are not a valid stream of their algorithm.
    #[error("corrupt {compression} payload: {reason}")]
    Corrupt {
        /// The algorithm.
        compression: Compression,
        /// What its decoder said.
        reason: String,
    },
    /// The stream produces more bytes than the header declares; decompression stopped there.
    #[error("the {compression} payload expands past its declared {declared} bytes")]
    Longer {
        /// The algorithm.
        compression: Compression,
        /// The length the header declares.
        declared: u32,
    },
    /// The stream ends before the length the header declares.
    #[error("the {compression} payload ends after {actual} of its declared {declared} bytes")]
    Shorter {
        /// The algorithm.
        compression: Compression,
        /// The length the header declares.
        declared: u32,
        /// The bytes the stream produced.
        actual: usize,
    },
}

impl DecompressError {
    /// The status code a request that fails this way is answered with: `ResourceExhausted`
    /// over the limit, else `InvalidArgument`.
    pub fn request_code(&self) -> Code {
        match self {
            DecompressError::TooLarge { .. } => Code::ResourceExhausted,
            _ => Code::InvalidArgument,
        }
    }

    /// The status code a call whose response fails this way fails with: `ResourceExhausted`
    /// over the limit, else `DataLoss`.
    pub fn response_code(&self) -> Code {
        match self {
            DecompressError::TooLarge { .. } => Code::ResourceExhausted,
            _ => Code::DataLoss,
        }
    }
}

/// Compresses `payload` with `compression` into a payload to send with the `COMPRESSED` flag:
/// its [`CompressedHeader`], then the compressed bytes, in one buffer. `None` when the result
/// would not be smaller than `payload`, when `payload` is longer than a header can declare, or
/// when this build lacks the algorithm: send `payload` as it is then.
pub fn compress(compression: Compression, payload: &[u8]) -> Option<Bytes> {
    let len = u32::try_from(payload.len()).ok()?;
    let out: Option<Vec<u8>> = match compression {
        #[cfg(feature = "zstd")]
        Compression::Zstd => zstd_codec::compress(payload),
        #[cfg(feature = "lz4")]
        Compression::Lz4 => lz4_codec::compress(payload),
        #[cfg(feature = "gzip")]
        Compression::Gzip => gzip_codec::compress(payload),
        _ => None,
    };
    let mut out = out?;
    // Each codec left room for the header at the front; a result that did not shrink is not
    // worth the receiver's work.
    if out.len() >= payload.len() {
        return None;
    }
    out[..COMPRESSED_HEADER_LEN].copy_from_slice(&CompressedHeader { compression: compression.id(), len }.to_bytes());
    Some(Bytes::from(out))
}

/// Decompresses a payload received with the `COMPRESSED` flag (header included), whose declared
/// length may be at most `limit`.
///
/// The declared length is checked before anything is allocated; the output buffer has exactly
/// that capacity, and decoding stops when it is full.
///
/// # Errors
/// See [`DecompressError`]; none of them panics or allocates more than `limit` bytes.
pub fn decompress(payload: &[u8], limit: u32) -> Result<Bytes, DecompressError> {
    #[allow(unused_variables, reason = "`stream` is unused when no algorithm's feature is on")]
    let (header, stream) = CompressedHeader::split(payload).ok_or(DecompressError::Truncated)?;
    let compression = Compression::from_id(header.compression)
        .filter(|&compression| is_available(compression))
        .ok_or(DecompressError::NotAnnounced(header.compression))?;
    if header.len > limit {
        return Err(DecompressError::TooLarge { declared: header.len, limit });
    }
    let declared = header.len;
    // `declared` is at most `limit`, a u32: it fits in memory's address space on every target
    // tokio runs on.
    let capacity = declared as usize;
    let out: Result<Vec<u8>, Failure> = match compression {
        #[cfg(feature = "zstd")]
        Compression::Zstd => zstd_codec::decompress(stream, capacity),
        #[cfg(feature = "lz4")]
        Compression::Lz4 => lz4_codec::decompress(stream, capacity),
        #[cfg(feature = "gzip")]
        Compression::Gzip => gzip_codec::decompress(stream, capacity),
        // Not reached: `is_available` let only these through.
        _ => Err(Failure::Unavailable),
    };
    let out = out.map_err(|failure| match failure {
        Failure::Unavailable => DecompressError::NotAnnounced(header.compression),
        Failure::Longer => DecompressError::Longer { compression, declared },
        Failure::Corrupt(reason) => DecompressError::Corrupt { compression, reason },
    })?;
    if out.len() != capacity {
        return Err(DecompressError::Shorter { compression, declared, actual: out.len() });
    }
    Ok(Bytes::from(out))
}

/// How a codec failed, before the algorithm and the declared length are added.
#[allow(dead_code, reason = "some are unused when no algorithm's feature is on")]
enum Failure {
    /// This build lacks the algorithm.
    Unavailable,
    /// The stream had more to give than the buffer's capacity.
    Longer,
    /// The stream is invalid.
    Corrupt(String),
}

#[cfg(feature = "zstd")]
mod zstd_codec {
    //! zstd through libzstd's one-shot API, with a compression and a decompression context kept
    //! per thread (making one costs more than compressing a small payload).

    use std::cell::RefCell;

    use super::{COMPRESSED_HEADER_LEN, Failure};

    /// zstd's fastest regular level: most of the ratio of the default (3) at about twice its
    /// speed, for payloads that are sent once.
    const LEVEL: i32 = 1;

    thread_local! {
        static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
        static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    }

    pub(super) fn compress(payload: &[u8]) -> Option<Vec<u8>> {
        // Room for the header and at most as many bytes as the payload: a result that does
        // not fit would not be worth sending, and libzstd stops with an error at the end.
        let mut out = vec![0; COMPRESSED_HEADER_LEN + payload.len()];
        let written = COMPRESSOR.with(|cell| {
            let mut cell = cell.try_borrow_mut().ok()?;
            if cell.is_none() {
                *cell = Some(zstd::bulk::Compressor::new(LEVEL).ok()?);
            }
            cell.as_mut()?.compress_to_buffer(payload, &mut out[COMPRESSED_HEADER_LEN..]).ok()
        })?;
        out.truncate(COMPRESSED_HEADER_LEN + written);
        Some(out)
    }

    pub(super) fn decompress(stream: &[u8], capacity: usize) -> Result<Vec<u8>, Failure> {
        let mut out = Vec::with_capacity(capacity);
        DECOMPRESSOR.with(|cell| {
            let mut cell = cell.try_borrow_mut().map_err(|_| Failure::Corrupt("decompressor busy".into()))?;
            if cell.is_none() {
                let decompressor = zstd::bulk::Decompressor::new().map_err(|e| Failure::Corrupt(e.to_string()))?;
                *cell = Some(decompressor);
            }
            let Some(decompressor) = cell.as_mut() else { return Err(Failure::Corrupt("no decompressor".into())) };
            // Writes into `out`'s capacity and no further: a stream that has more fails with
            // "Destination buffer is too small" instead of growing anything.
            match decompressor.decompress_to_buffer(stream, &mut out) {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().contains("too small") => Err(Failure::Longer),
                Err(e) => Err(Failure::Corrupt(e.to_string())),
            }
        })?;
        Ok(out)
    }
}

#[cfg(feature = "lz4")]
mod lz4_codec {
    //! LZ4 blocks through lz4_flex's safe encoder and decoder.

    use super::{COMPRESSED_HEADER_LEN, Failure};

    pub(super) fn compress(payload: &[u8]) -> Option<Vec<u8>> {
        // lz4_flex wants room for the worst case up front (about 110% of the input).
        let bound = lz4_flex::block::get_maximum_output_size(payload.len());
        let mut out = vec![0; COMPRESSED_HEADER_LEN + bound];
        let written = lz4_flex::block::compress_into(payload, &mut out[COMPRESSED_HEADER_LEN..]).ok()?;
        out.truncate(COMPRESSED_HEADER_LEN + written);
        Some(out)
    }

    pub(super) fn decompress(stream: &[u8], capacity: usize) -> Result<Vec<u8>, Failure> {
        let mut out = vec![0; capacity];
        match lz4_flex::block::decompress_into(stream, &mut out) {
            Ok(written) => {
                out.truncate(written);
                Ok(out)
            }
            Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) => Err(Failure::Longer),
            Err(e) => Err(Failure::Corrupt(e.to_string())),
        }
    }
}

#[cfg(feature = "gzip")]
mod gzip_codec {
    //! gzip members through flate2 (miniz_oxide, pure Rust).

    use std::io::{Read, Write};

    use super::{COMPRESSED_HEADER_LEN, Failure};

    pub(super) fn compress(payload: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(COMPRESSED_HEADER_LEN + payload.len());
        out.resize(COMPRESSED_HEADER_LEN, 0);
        let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        encoder.write_all(payload).ok()?;
        encoder.finish().ok()
    }

    pub(super) fn decompress(stream: &[u8], capacity: usize) -> Result<Vec<u8>, Failure> {
        let mut decoder = flate2::read::GzDecoder::new(stream);
        let mut out = Vec::with_capacity(capacity);
        // At most `capacity` bytes: `read_to_end` cannot grow `out` past what was reserved.
        (&mut decoder).take(capacity as u64).read_to_end(&mut out).map_err(|e| Failure::Corrupt(e.to_string()))?;
        if out.len() < capacity {
            return Ok(out);
        }
        // Full: the stream must end here, its trailer (CRC and length) checked.
        let mut one = [0; 1];
        match decoder.read(&mut one) {
            Ok(0) => Ok(out),
            Ok(_) => Err(Failure::Longer),
            Err(e) => Err(Failure::Corrupt(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
