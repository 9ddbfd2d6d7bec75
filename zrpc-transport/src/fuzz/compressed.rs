//! [`compressed`]: a peer's compressed payloads (PROTOCOL.md §5, "Compressed payloads") into
//! [`decompress`], the bound on what they may expand to checked, and arbitrary bytes round
//! tripped through every algorithm this build has.

use zrpc_core::Compression;

use super::Report;
use crate::compression::{DecompressError, available, compress, decompress};
use crate::frame::CompressedHeader;

/// Runs `input` through [`decompress`] and every algorithm's round trip; the report counts 1
/// when the payload decompressed.
///
/// The first byte sets the receiver's limit, `256 × byte` bytes (at most 64 KiB, so that the
/// limit is in reach); the rest is a payload as received with the `COMPRESSED` flag, its
/// header first. Checked:
///
/// - nothing panics, whatever the bytes, and nothing allocates far past the limit (run with
///   `-malloc_limit_mb=64`, libFuzzer fails the run on an allocation of more than 64 MiB;
///   the limit is at most 64 KiB), as a stream that expands more than it declares could;
/// - a payload decompresses only to exactly the length its header declares, and only when
///   that is within the limit; a length over the limit is refused from the header alone;
/// - the same bytes as data: compressed by each algorithm (when that makes them smaller), they
///   decompress to themselves with the limit at their length, and are refused with one byte
///   less.
///
/// # Panics
/// When one of these breaks.
pub fn compressed(input: &[u8]) -> Report {
    let Some((&limit, payload)) = input.split_first() else { return Report::default() };
    let limit = u32::from(limit) * 256;
    let mut count = 0;
    match (decompress(payload, limit), CompressedHeader::split(payload)) {
        (Ok(out), Some((header, _))) => {
            assert!(header.len <= limit, "{} bytes decompressed over the limit of {limit}", header.len);
            assert_eq!(out.len(), header.len as usize, "decompressed to other than the declared length");
            count += 1;
        }
        (Ok(out), None) => panic!("{} bytes decompressed from a payload without a header", out.len()),
        (Err(DecompressError::TooLarge { declared, limit: said }), header) => {
            assert_eq!(said, limit);
            assert!(declared > limit && header.is_some_and(|(h, _)| h.len == declared), "{header:?}");
        }
        (Err(_), _) => {}
    }
    for algorithm in available() {
        round_trip(algorithm, payload);
    }
    Report { count, error: None }
}

/// Compresses `data` with `algorithm`, if that makes it smaller, and decompresses it back.
fn round_trip(algorithm: Compression, data: &[u8]) {
    let Some(payload) = compress(algorithm, data) else { return };
    assert!(payload.len() < data.len(), "{algorithm}: compressed to no fewer bytes");
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    assert_eq!(decompress(&payload, len).as_deref(), Ok(data), "{algorithm}: the round trip");
    // Not empty: nothing is gained by compressing nothing.
    let refused = decompress(&payload, len - 1);
    assert!(
        matches!(refused, Err(DecompressError::TooLarge { declared, .. }) if declared == len),
        "{algorithm}: with a limit one byte short: {refused:?}"
    );
}
