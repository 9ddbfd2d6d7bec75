//! Entry point for fuzzing the payload decoder: zrpc's own postcard over arbitrary bytes, with
//! the `postcard` crate as the oracle (feature `fuzzing`; not a stable API).
//!
//! The target `payload` in `zrpc-transport/fuzz/` (beside the protocol's targets) is a line
//! around [`postcard`], and the codec's seeded tests call it too, so the checks are written
//! once. A payload is what a peer chooses byte for byte, and zrpc decodes it with a decoder of
//! its own (`codec::postcard`), so [`postcard`] panics, which is what a fuzzer reports, when one
//! of these breaks:
//!
//! 1. Nothing panics, whatever the bytes.
//! 2. A value of every kind serde has but floats and `char` (`Everything`: integers of every
//!    width, strings, byte strings, options, sequences, maps, tuples, enums, nesting) gets the
//!    `postcard` crate's verdict: both refuse the bytes, or both accept them with the same
//!    value and the same bytes left after it; except that zrpc refuses values nested
//!    [`MAX_DEPTH`](crate::codec::MAX_DEPTH) levels deep, which the crate takes: only those,
//!    and always those (see `nested` for how close the check comes).
//! 3. A value accepted encodes back to the bytes the `postcard` crate writes for it, and they
//!    decode to the same value.
//! 4. Decoded the way the generated code decodes ([`CodecId::decode_shared`]), strings and
//!    byte strings as [`Text`] and [`Blob`] that may share the input get the verdict and the
//!    values that `String` and `Vec<u8>` get.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::postcard::{de, ser};
use crate::{Blob, CodecId, Text};

/// What the input decoded as, for tests that check both verdicts were reached.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verdicts {
    /// The input began with a valid `Everything` (check 2).
    pub everything: bool,
    /// The input was exactly a valid `Strings` (check 4).
    pub strings: bool,
}

/// Runs the checks of the module's docs on `input`.
///
/// # Panics
/// When one of them breaks.
pub fn postcard(input: &[u8]) -> Verdicts {
    Verdicts { everything: same_verdict(input), strings: shared_like_owned(input) }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Unit;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Newtype(pub(crate) i32);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pair(pub(crate) u16, pub(crate) String);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Shape {
    Empty,
    Circle(u32),
    Rect(i64, i64),
    Named { name: String, sides: Option<u8> },
}

/// Every kind of value serde has, but `char` and floats (the codec's tests check those).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Everything {
    pub(crate) flag: bool,
    pub(crate) i8: i8,
    pub(crate) i16: i16,
    pub(crate) i32: i32,
    pub(crate) i64: i64,
    pub(crate) i128: i128,
    pub(crate) u8: u8,
    pub(crate) u16: u16,
    pub(crate) u32: u32,
    pub(crate) u64: u64,
    pub(crate) u128: u128,
    pub(crate) usize: usize,
    pub(crate) isize: isize,
    pub(crate) text: String,
    pub(crate) seq_of_u8: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub(crate) bytes: Vec<u8>,
    pub(crate) maybe: Option<u32>,
    pub(crate) nothing: (),
    pub(crate) unit: Unit,
    pub(crate) newtype: Newtype,
    pub(crate) tuple: (u8, i64, bool),
    pub(crate) pair: Pair,
    pub(crate) shapes: Vec<Shape>,
    pub(crate) map: BTreeMap<String, i64>,
    pub(crate) nested: Option<Box<Everything>>,
}

/// Strings and byte strings as a message declares them by default...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Strings {
    pub(crate) text: String,
    #[serde(with = "serde_bytes")]
    pub(crate) blob: Vec<u8>,
    pub(crate) texts: Vec<String>,
    pub(crate) maybe: Option<serde_bytes::ByteBuf>,
    pub(crate) count: u32,
}

/// ...and the same on the wire as slices of the frame.
#[derive(Debug, Deserialize)]
struct Shared {
    text: Text,
    blob: Blob,
    texts: Vec<Text>,
    maybe: Option<Blob>,
    count: u32,
}

/// `value` as zrpc's postcard writes it.
pub(crate) fn ours<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(e) = ser::write(value, &mut out) {
        panic!("a value that serializes does not encode: {e}");
    }
    out
}

/// `value` as the `postcard` crate writes it.
pub(crate) fn theirs<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    match ::postcard::to_allocvec(value) {
        Ok(bytes) => bytes,
        Err(e) => panic!("the postcard crate does not encode it: {e}"),
    }
}

/// Checks 2 and 3: decodes `input` both ways, and checks that the verdicts agree, and the values
/// and what is left; then that the value encodes as postcard writes it and decodes back.
pub(crate) fn same_verdict(input: &[u8]) -> bool {
    let ours_read = de::read::<Everything>(input);
    let theirs_read = ::postcard::take_from_bytes::<Everything>(input);
    let value = match (ours_read, theirs_read) {
        (Ok((a, rest_a)), Ok((b, rest_b))) => {
            assert_eq!((&a, rest_a.len()), (&b, rest_b.len()), "input {input:02x?}");
            assert!(nested(&a) < 64, "{} values nested in one another: 129 levels or more, decoded", nested(&a));
            a
        }
        (Err(_), Err(_)) => return false,
        // The `postcard` crate has no depth limit: zrpc refuses what nests `MAX_DEPTH` deep.
        (Err(e), Ok((b, _))) if e.0.contains("levels deep") => {
            assert!(nested(&b) >= 62, "refused as too deep with {} values nested: {e}", nested(&b));
            return false;
        }
        (ours_read, theirs_read) => panic!("ours {ours_read:?}, postcard {theirs_read:?}, input {input:02x?}"),
    };
    let bytes = ours(&value);
    assert_eq!(bytes, theirs(&value), "{value:?} encodes as postcard writes it");
    match de::read::<Everything>(&bytes) {
        Ok((back, rest)) => assert_eq!((&back, rest.len()), (&value, 0), "{value:?} decodes back"),
        Err(e) => panic!("{value:?} encoded does not decode: {e}"),
    }
    true
}

/// How many `Everything`s `value` holds in one another (its `nested` chain).
///
/// zrpc's decoder counts a level for the struct and one for the `Some` around each nested one,
/// and at most three more inside the innermost (its shapes, a shape's variant, its `Some`):
/// the deepest level is between `1 + 2n` and `4 + 2n` for `n` nested, so with the limit at
/// 128 levels ([`MAX_DEPTH`](crate::codec::MAX_DEPTH)) a refusal needs `n >= 62`, and
/// `n >= 64` is always refused.
fn nested(value: &Everything) -> usize {
    let (mut n, mut at) = (0, value);
    while let Some(inner) = &at.nested {
        (n, at) = (n + 1, inner);
    }
    n
}

/// Check 4: `input` as `Strings` copied and as `Shared`, the way the generated code decodes.
fn shared_like_owned(input: &[u8]) -> bool {
    let owned = CodecId::Postcard.decode::<Strings>(input);
    let shared = CodecId::Postcard.decode_shared::<Shared>(&Bytes::copy_from_slice(input));
    match (owned, shared) {
        (Ok(owned), Ok(shared)) => {
            let same = shared.text == *owned.text
                && shared.blob.as_ref() == owned.blob.as_slice()
                && shared.texts.len() == owned.texts.len()
                && shared.texts.iter().zip(&owned.texts).all(|(s, o)| *s == **o)
                && shared.maybe.as_ref().map(AsRef::as_ref) == owned.maybe.as_ref().map(|b| b.as_slice())
                && shared.count == owned.count;
            assert!(same, "shared {shared:?}, owned {owned:?}, input {input:02x?}");
            true
        }
        (Err(_), Err(_)) => false,
        (owned, shared) => panic!("owned {owned:?}, shared {shared:?}, input {input:02x?}"),
    }
}
