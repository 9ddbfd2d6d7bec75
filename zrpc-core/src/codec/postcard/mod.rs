//! [postcard](https://docs.rs/postcard), the default codec, written and read by zrpc itself.
//!
//! The format is postcard 1's, byte for byte (its wire format is a stable specification); the
//! `postcard` crate encodes the same bytes and decodes the same values, which the tests check
//! on random values and on damaged encodings. zrpc writes and reads it with a serializer and a
//! deserializer of its own ([`ser`], [`de`]) because the codec is most of what a call costs
//! beyond the raw floor (issue 15), and postcard's serializer appends every integer through a
//! `Flavor` that copies its varint out of a stack buffer.
//!
//! What it changed, in `callpath --callgrind` (client and server together, 100 callers, the
//! benchmark's message of 40 fields, AMD EPYC, 2026-11-29): serializing the message twice per
//! call went from 4,614 to 3,820 instructions, and the whole call from 29,180 to 28,340 (-2.9%).
//! Decoding stayed at about 10,100 a call, as with postcard's deserializer: more than half of
//! it is the message's eight `String`s (an allocation, a copy and `str::from_utf8`, about 360
//! instructions each), which no format can avoid; `Text` fields do (see
//! [`zero_copy`](crate::zero_copy)). Measured worse and not kept: writing straight into the
//! destination `BytesMut` instead of staging in a `Vec` (28,845 against 28,384 for the same
//! code staged), and a first version that read and wrote varints a byte at a time in a loop
//! and returned unboxed errors (33,069).
//!
//! Then the strings' validation (`str::from_utf8`, 3,790 instructions a call, 14% of all: four
//! of the eight are Chinese, a character at a time): a string of 32 bytes or more is checked 64
//! bytes at a time, on a zero-padded copy when it is shorter than that and about to be copied
//! anyway ([`utf8`]). 26,534 → 24,841 instructions per call at 100 callers (−6.4%), 26,557 →
//! 24,812 at 1,000; one thread's time for a million calls at 1,000 callers (`callpath`
//! without valgrind, six runs each, taking turns, AMD EPYC, 2026-11-30), medians 3.50 → 3.41 s.
//!
//! What differs from the `postcard` crate, on input it would not produce:
//! - a `char` must be exactly one character (postcard takes the first of up to four bytes);
//! - errors say what was wrong, including the messages of `Deserialize` impls, which postcard
//!   replaces with "Serde Deserialization Error".

pub(crate) mod de;
pub(crate) mod ser;
#[cfg(test)]
mod tests;
pub(crate) mod utf8;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Codec, CodecError, CodecId};

/// [postcard](https://docs.rs/postcard): a compact, non-self-describing binary format. The default.
///
/// A struct is its fields in declaration order, with no names and no count, so the arguments
/// struct of a one-argument method is exactly that argument; integers wider than a byte are
/// varints (signed ones zigzag-encoded first), lengths too, and floats are little-endian. Both
/// ends must agree on the types.
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

impl Codec for Postcard {
    const ID: CodecId = CodecId::Postcard;

    /// Staged in a `Vec` and copied into `dst` in one piece: see `staged` in the module.
    fn encode<T: Serialize + ?Sized>(value: &T, dst: &mut BytesMut) -> Result<(), CodecError> {
        super::staged(Self::ID, dst, |buf| ser::write(value, buf))
    }

    fn decode<T: DeserializeOwned>(src: &[u8]) -> Result<T, CodecError> {
        let err = |reason: String| CodecError::Decode { codec: Self::ID, len: src.len(), reason };
        match de::read(src) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(err(format!("{} trailing bytes", rest.len()))),
            Err(e) => Err(err(*e.0)),
        }
    }
}
