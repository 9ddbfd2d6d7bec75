//! JSON through [serde_json](https://docs.rs/serde_json) (feature `json`).

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Codec, CodecError, CodecId};

/// JSON via serde_json (feature `json`).
///
/// A struct is an object keyed by field name, so the arguments of a call, which are always one
/// struct, are an object keyed by argument name, one argument (`{"name":"zrpc"}`) and none
/// (`{}`) included; decoding also accepts the values in an array (`["zrpc"]`, `[]`), never a
/// bare value. Enums are externally tagged (`{"Ok":42}`, `"Overflow"`); `()` and `None` are
/// `null`; byte strings are arrays of numbers; integers are exact decimal digits, `u64` and
/// `i128` included (beyond 2^53, more than a JavaScript number holds).
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
