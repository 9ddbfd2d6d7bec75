//! JSON through [serde_json](https://docs.rs/serde_json) (feature `json`).

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Codec, CodecError, CodecId};

/// JSON via serde_json (feature `json`).
///
/// A struct is an object keyed by field name, so the arguments of a call are an object keyed
/// by argument name; enums are externally tagged (`{"Ok":42}`, `"Overflow"`); byte strings are
/// arrays of numbers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    const ID: CodecId = CodecId::Json;

    /// Staged in a `Vec` and copied into `dst` in one piece, as postcard does.
    fn encode<T: Serialize + ?Sized>(value: &T, dst: &mut BytesMut) -> Result<(), CodecError> {
        super::staged(Self::ID, dst, |buf| serde_json::to_writer(buf, value))
    }

    fn decode<T: DeserializeOwned>(src: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(src).map_err(|e| CodecError::Decode {
            codec: Self::ID,
            len: src.len(),
            reason: e.to_string(),
        })
    }
}
