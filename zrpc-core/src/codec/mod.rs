//! Codecs: how typed arguments and results become payload bytes.
//!
//! A codec is a pair of serde functions behind the [`Codec`] trait. Which codec a request used
//! travels on the wire as a [`CodecId`], so a server decodes every request with the codec its
//! caller chose and answers with the same one; one server serves postcard and JSON callers at
//! once. postcard is the default: compact and fast. JSON (feature `json`) is for debugging and
//! for callers in other languages; several arguments become an object keyed by argument name.

use std::cell::RefCell;
use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A serde format that can carry zrpc payloads.
pub trait Codec {
    /// The identifier sent on the wire.
    const ID: CodecId;

    /// Appends the encoding of `value` to `dst`.
    ///
    /// # Errors
    /// When the value cannot be represented in this format.
    fn encode<T: Serialize + ?Sized>(value: &T, dst: &mut BytesMut) -> Result<(), CodecError>;

    /// Decodes a whole value from `src`; trailing bytes are an error for formats that can tell.
    ///
    /// # Errors
    /// When `src` is not a valid encoding of a `T`.
    fn decode<T: DeserializeOwned>(src: &[u8]) -> Result<T, CodecError>;
}

/// Size of the per-thread buffers [`CodecId::encode_to_bytes`] encodes into.
pub const SCRATCH_CHUNK: usize = 16 * 1024;

/// The codecs zrpc knows, by their wire identifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum CodecId {
    /// [`Postcard`], the default.
    #[default]
    Postcard = 0,
    /// [`Json`] (feature `json`).
    Json = 1,
}

impl CodecId {
    /// The codec for a wire value, if this version knows it.
    pub fn from_u8(value: u8) -> Option<CodecId> {
        match value {
            0 => Some(CodecId::Postcard),
            1 => Some(CodecId::Json),
            _ => None,
        }
    }

    /// The value sent on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Whether this build can encode and decode with the codec.
    pub fn is_enabled(self) -> bool {
        match self {
            CodecId::Postcard => true,
            CodecId::Json => cfg!(feature = "json"),
        }
    }

    /// The codecs this build can use, in order of preference.
    pub fn enabled() -> impl Iterator<Item = CodecId> {
        [CodecId::Postcard, CodecId::Json].into_iter().filter(|c| c.is_enabled())
    }

    /// Encodes with the codec this identifies.
    ///
    /// # Errors
    /// When the codec is not enabled in this build or cannot represent the value.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T, dst: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            CodecId::Postcard => Postcard::encode(value, dst),
            #[cfg(feature = "json")]
            CodecId::Json => Json::encode(value, dst),
            #[cfg(not(feature = "json"))]
            CodecId::Json => Err(CodecError::Disabled(self)),
        }
    }

    /// Encodes into a new [`Bytes`] with the codec this identifies.
    ///
    /// The bytes are split off a per-thread scratch buffer of [`SCRATCH_CHUNK`] bytes, so that
    /// encoding does not grow a fresh buffer by doubling for every value (about eight
    /// allocations for a 600-byte message); many values share one allocation, which is freed
    /// when the last of them is dropped.
    ///
    /// # Errors
    /// As [`CodecId::encode`].
    pub fn encode_to_bytes<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes, CodecError> {
        thread_local! {
            static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
        }
        SCRATCH.with(|scratch| {
            // A `Serialize` impl that itself encodes a zrpc value would find the buffer busy.
            let Ok(mut buf) = scratch.try_borrow_mut() else {
                let mut fresh = BytesMut::new();
                self.encode(value, &mut fresh)?;
                return Ok(fresh.freeze());
            };
            if buf.capacity() < SCRATCH_CHUNK / 4 {
                buf.reserve(SCRATCH_CHUNK);
            }
            match self.encode(value, &mut buf) {
                Ok(()) => Ok(buf.split().freeze()),
                Err(e) => {
                    buf.clear();
                    Err(e)
                }
            }
        })
    }

    /// Decodes with the codec this identifies.
    ///
    /// # Errors
    /// When the codec is not enabled in this build or `src` is not a valid `T`.
    pub fn decode<T: DeserializeOwned>(self, src: &[u8]) -> Result<T, CodecError> {
        match self {
            CodecId::Postcard => Postcard::decode(src),
            #[cfg(feature = "json")]
            CodecId::Json => Json::decode(src),
            #[cfg(not(feature = "json"))]
            CodecId::Json => Err(CodecError::Disabled(self)),
        }
    }
}

impl CodecId {
    /// Decodes like [`decode`](CodecId::decode), letting the value's [`Text`](crate::Text) and
    /// [`Blob`](crate::Blob) fields be slices of `src` instead of copies (with postcard; other
    /// codecs copy). The generated client and server decode this way.
    ///
    /// # Errors
    /// As [`decode`](CodecId::decode).
    pub fn decode_shared<T: DeserializeOwned>(self, src: &Bytes) -> Result<T, CodecError> {
        match self {
            CodecId::Postcard => crate::zero_copy::sharing(src, || Postcard::decode(src)),
            _ => self.decode(src),
        }
    }
}

impl fmt::Display for CodecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodecId::Postcard => "postcard",
            CodecId::Json => "json",
        })
    }
}

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("{codec} could not encode the value: {reason}")]
    Encode {
        /// Which codec.
        codec: CodecId,
        /// What the format said.
        reason: String,
    },
    /// The bytes were not a valid encoding.
    #[error("{codec} could not decode {len} bytes: {reason}")]
    Decode {
        /// Which codec.
        codec: CodecId,
        /// How many bytes were offered.
        len: usize,
        /// What the format said.
        reason: String,
    },
    /// The codec exists but this build does not include it.
    #[error("the {0} codec is not enabled in this build")]
    Disabled(CodecId),
}

/// [postcard](https://docs.rs/postcard): a compact, non-self-describing binary format. The default.
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

/// A staging buffer larger than this is not kept for the next value.
const STAGING_KEEP: usize = 64 * 1024;

impl Codec for Postcard {
    const ID: CodecId = CodecId::Postcard;

    /// postcard writes a value a field at a time, and appending a field to a `Vec` is much
    /// cheaper than appending it to a `BytesMut`: encoding the benchmark message (40 small
    /// fields) with [`CodecId::encode_to_bytes`] took 326 ns through a `BytesMut` flavor and
    /// 156 ns staged like this. So the value is staged in a per-thread `Vec` and copied into
    /// `dst` in one piece.
    fn encode<T: Serialize + ?Sized>(value: &T, dst: &mut BytesMut) -> Result<(), CodecError> {
        thread_local! {
            static STAGING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        STAGING.with(|staging| {
            let mut fresh = Vec::new();
            // A `Serialize` impl that itself encodes a zrpc value finds the buffer busy.
            let mut staging = staging.try_borrow_mut();
            let buf = staging.as_deref_mut().unwrap_or(&mut fresh);
            buf.clear();
            // postcard's own `Extend` flavor: faster than pushing byte by byte.
            let encoded = postcard::to_extend(value, std::mem::take(buf))
                .map_err(|e| CodecError::Encode { codec: Self::ID, reason: e.to_string() })?;
            dst.extend_from_slice(&encoded);
            if encoded.capacity() <= STAGING_KEEP {
                *buf = encoded;
            }
            Ok(())
        })
    }

    fn decode<T: DeserializeOwned>(src: &[u8]) -> Result<T, CodecError> {
        let err = |reason: String| CodecError::Decode { codec: Self::ID, len: src.len(), reason };
        match postcard::take_from_bytes(src) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(err(format!("{} trailing bytes", rest.len()))),
            Err(e) => Err(err(e.to_string())),
        }
    }
}

/// JSON via serde_json (feature `json`).
#[cfg(feature = "json")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

#[cfg(feature = "json")]
impl Codec for Json {
    const ID: CodecId = CodecId::Json;

    fn encode<T: Serialize + ?Sized>(value: &T, dst: &mut BytesMut) -> Result<(), CodecError> {
        serde_json::to_writer(bytes::BufMut::writer(dst), value)
            .map_err(|e| CodecError::Encode { codec: Self::ID, reason: e.to_string() })
    }

    fn decode<T: DeserializeOwned>(src: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(src).map_err(|e| CodecError::Decode {
            codec: Self::ID,
            len: src.len(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        name: String,
        n: i64,
        tags: Vec<u8>,
    }

    fn sample() -> Sample {
        Sample { name: "zrpc".into(), n: -42, tags: vec![1, 2, 3] }
    }

    #[test]
    fn every_enabled_codec_round_trips() {
        for codec in CodecId::enabled() {
            let mut buf = BytesMut::new();
            codec.encode(&sample(), &mut buf).expect("encodes");
            assert_eq!(codec.decode::<Sample>(&buf).expect("decodes"), sample(), "{codec}");
        }
    }

    #[test]
    fn postcard_refuses_truncated_and_trailing_bytes() {
        let mut buf = BytesMut::new();
        Postcard::encode(&sample(), &mut buf).expect("encodes");
        for cut in 0..buf.len() {
            assert!(Postcard::decode::<Sample>(&buf[..cut]).is_err(), "accepted {cut} of {} bytes", buf.len());
        }
        buf.extend_from_slice(&[0]);
        let err = Postcard::decode::<Sample>(&buf).expect_err("trailing byte");
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
    }

    #[test]
    fn values_encoded_to_bytes_do_not_overlap() {
        let values: Vec<Sample> =
            (0..2_000).map(|n| Sample { name: "x".repeat(n % 97), n: n as i64, tags: vec![n as u8; n % 13] }).collect();
        let encoded: Vec<Bytes> =
            values.iter().map(|v| CodecId::Postcard.encode_to_bytes(v).expect("encodes")).collect();
        for (value, bytes) in values.iter().zip(&encoded) {
            assert_eq!(&Postcard::decode::<Sample>(bytes).expect("decodes"), value);
        }
    }

    #[test]
    fn wire_ids_round_trip() {
        for codec in [CodecId::Postcard, CodecId::Json] {
            assert_eq!(CodecId::from_u8(codec.as_u8()), Some(codec));
        }
        assert_eq!(CodecId::from_u8(9), None);
    }
}
