//! [postcard](https://docs.rs/postcard), the default codec.

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
        super::staged(Self::ID, dst, |buf| {
            // postcard's own `Extend` flavor: faster than pushing byte by byte.
            *buf = ::postcard::to_extend(value, std::mem::take(buf))?;
            Ok::<(), ::postcard::Error>(())
        })
    }

    fn decode<T: DeserializeOwned>(src: &[u8]) -> Result<T, CodecError> {
        let err = |reason: String| CodecError::Decode { codec: Self::ID, len: src.len(), reason };
        match ::postcard::take_from_bytes(src) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(err(format!("{} trailing bytes", rest.len()))),
            Err(e) => Err(err(e.to_string())),
        }
    }
}
