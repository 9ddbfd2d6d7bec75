//! Codecs: how typed arguments and results become payload bytes.
//!
//! A codec is a pair of serde functions behind the [`Codec`] trait. Which codec a request used
//! travels on the wire as a [`CodecId`], so a server decodes every request with the codec its
//! caller chose and answers with the same one: one server serves callers of every codec it was
//! built with at once, and answers a request in a codec it lacks with `Unimplemented`. A
//! client picks its codec with the generated `with_codec`.
//!
//! | codec | id | feature | for | a call's arguments are |
//! |---|---:|---|---|---|
//! | [`Postcard`] | 0 | always | the default: compact and fast, Rust at both ends | the arguments one after the other, no names |
//! | `Json` | 1 | `json` (default in `zrpc`) | debugging, callers in other languages | an object keyed by argument name: `{"name":"zrpc"}`, `{}` for none |
//! | `MsgPack` | 2 | `msgpack` | binary and self-describing, callers in other languages | a map keyed by argument name, empty for none |
//! | `Raw` | 3 | `raw` | methods that move opaque bytes | the one byte-string argument's bytes, nothing else |
//!
//! A call's arguments, however many, travel as one generated arguments struct
//! (`GreeterAddArgs { a, b }`, `GreeterHelloArgs { name }`, `GreeterPingArgs {}`): one argument
//! is a struct of one field, never the bare value, so in JSON `hello("zrpc")` is
//! `{"name":"zrpc"}`, not `"zrpc"` (postcard, which writes no names, is the exception: a
//! struct of one field is exactly that field). A method's result is encoded as it is, so
//! `Result<i64, MathError>` is an enum and `()` is a unit. Each codec's docs give its layout;
//! `docs/PROTOCOL.md` §9 gives them, with exact bytes, for implementers in other languages.
//!
//! With [`CodecId::decode_shared`], as the generated code decodes, [`Blob`](crate::Blob)
//! fields are slices of the received frame with postcard, MessagePack and raw, and
//! [`Text`](crate::Text) fields with postcard; see [`zero_copy`](crate::zero_copy).

use std::cell::RefCell;
use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How deep a decoded value may nest: a payload whose values nest this deep or deeper is
/// refused (`InvalidArgument` for a request's arguments, `DataLoss` for an answer), by every
/// codec: a value that holds others (a struct, a sequence, a map, an enum's variant; in
/// postcard also a tuple, a newtype and an option's `Some`) takes a level, so 127 levels
/// decode. serde_json's own limit, which the JSON codec keeps; a MessagePack payload is
/// checked for it before it is decoded (rmp-serde counts arrays and maps against 1,024 by
/// default, which overflowed a 1 MiB stack in a debug build, and an enum's variant not at
/// all). Without a limit a recursive type (a tree, an expression) is decoded as deep as a
/// peer's bytes say, a few frames of the decoding thread's stack per level, and a stack that
/// overflows aborts the whole process: 100 KB of postcard for an
/// `enum List { Nil, Cons(Box<List>) }` overflowed a 2 MiB stack, a tokio worker's.
pub const MAX_DEPTH: u32 = 128;

#[cfg(feature = "json")]
mod json;
#[cfg(feature = "msgpack")]
mod msgpack;
pub(crate) mod postcard;
#[cfg(feature = "raw")]
mod raw;

#[cfg(feature = "json")]
pub use self::json::Json;
#[cfg(feature = "msgpack")]
pub use self::msgpack::MsgPack;
pub use self::postcard::Postcard;
#[cfg(feature = "raw")]
pub use self::raw::Raw;

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

/// A staging buffer larger than this is not kept for the next value.
const STAGING_KEEP: usize = 64 * 1024;

/// Encodes into this thread's staging buffer, emptied first, with `write`, and copies the result
/// into `dst`; a failure of `write` is `codec`'s [`CodecError::Encode`].
///
/// serde formats write a value a field at a time, and appending a field to a `Vec` is much
/// cheaper than appending it to a `BytesMut`: encoding the benchmark message (40 small fields)
/// took 326 ns through a `BytesMut` and 156 ns staged in a `Vec` with the `postcard` crate (and
/// with zrpc's own postcard writer, 28,845 instructions a call against 28,384 staged); on a slower
/// machine, 2.4 µs and 1.4 µs with MessagePack, 3.9 µs and 1.7 µs with JSON. So codecs stage the value here and copy it into the destination in
/// one piece. A `Serialize` impl that itself encodes a zrpc value finds the buffer busy and
/// gets a fresh one.
fn staged<E: fmt::Display>(
    codec: CodecId,
    dst: &mut BytesMut,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), CodecError> {
    thread_local! {
        static STAGING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    STAGING.with(|staging| {
        let mut fresh = Vec::new();
        let mut staging = staging.try_borrow_mut();
        let buf = staging.as_deref_mut().unwrap_or(&mut fresh);
        buf.clear();
        let written = write(buf);
        if written.is_ok() {
            dst.extend_from_slice(buf);
        }
        if buf.capacity() > STAGING_KEEP {
            *buf = Vec::new();
        }
        written.map_err(|e| CodecError::Encode { codec, reason: e.to_string() })
    })
}

/// The codecs zrpc knows, by their wire identifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum CodecId {
    /// [`Postcard`], the default.
    #[default]
    Postcard = 0,
    /// JSON (feature `json`, a default of the `zrpc` facade).
    Json = 1,
    /// MessagePack (feature `msgpack`).
    MsgPack = 2,
    /// Raw bytes (feature `raw`).
    Raw = 3,
}

impl CodecId {
    /// The codec for a wire value, if this version knows it.
    pub fn from_u8(value: u8) -> Option<CodecId> {
        match value {
            0 => Some(CodecId::Postcard),
            1 => Some(CodecId::Json),
            2 => Some(CodecId::MsgPack),
            3 => Some(CodecId::Raw),
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
            CodecId::MsgPack => cfg!(feature = "msgpack"),
            CodecId::Raw => cfg!(feature = "raw"),
        }
    }

    /// Every codec this version knows, enabled in this build or not.
    pub const ALL: [CodecId; 4] = [CodecId::Postcard, CodecId::Json, CodecId::MsgPack, CodecId::Raw];

    /// The codecs this build can use, in order of preference: what a HELLO announces.
    pub fn enabled() -> impl Iterator<Item = CodecId> {
        CodecId::ALL.into_iter().filter(|c| c.is_enabled())
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
            #[cfg(feature = "msgpack")]
            CodecId::MsgPack => MsgPack::encode(value, dst),
            #[cfg(feature = "raw")]
            CodecId::Raw => Raw::encode(value, dst),
            #[allow(unreachable_patterns)]
            disabled => Err(CodecError::Disabled(disabled)),
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
            #[cfg(feature = "msgpack")]
            CodecId::MsgPack => MsgPack::decode(src),
            #[cfg(feature = "raw")]
            CodecId::Raw => Raw::decode(src),
            #[allow(unreachable_patterns)]
            disabled => Err(CodecError::Disabled(disabled)),
        }
    }
}

impl CodecId {
    /// Decodes like [`decode`](CodecId::decode), letting the value's [`Text`](crate::Text) and
    /// [`Blob`](crate::Blob) fields be slices of `src` instead of copies where the format
    /// allows: `Text` and `Blob` with postcard, `Blob` with MessagePack and raw; JSON copies.
    /// The generated client and server decode this way.
    ///
    /// # Errors
    /// As [`decode`](CodecId::decode).
    // Inlined so that the value is not moved once more on its way out (see `Served::decode`).
    #[inline]
    pub fn decode_shared<T: DeserializeOwned>(self, src: &Bytes) -> Result<T, CodecError> {
        match self {
            // JSON has no byte strings to share, and copies its strings (escapes or not).
            CodecId::Json => self.decode(src),
            _ => crate::zero_copy::sharing(src, || self.decode(src)),
        }
    }
}

impl fmt::Display for CodecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodecId::Postcard => "postcard",
            CodecId::Json => "json",
            CodecId::MsgPack => "msgpack",
            CodecId::Raw => "raw",
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
        // Raw carries byte strings only: its own tests round-trip those.
        for codec in CodecId::enabled().filter(|c| *c != CodecId::Raw) {
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
    fn a_codec_left_out_of_the_build_says_so() {
        for codec in CodecId::ALL.into_iter().filter(|c| !c.is_enabled()) {
            let err = codec.encode_to_bytes(&()).expect_err("disabled");
            assert!(matches!(err, CodecError::Disabled(c) if c == codec), "{err}");
            assert!(matches!(codec.decode::<()>(&[]), Err(CodecError::Disabled(_))));
        }
        assert_eq!(CodecId::enabled().next(), Some(CodecId::Postcard), "postcard is always first");
        assert_eq!(CodecId::enabled().any(|c| c == CodecId::MsgPack), cfg!(feature = "msgpack"));
        assert_eq!(CodecId::enabled().any(|c| c == CodecId::Raw), cfg!(feature = "raw"));
    }

    /// A list as long as its bytes say: in postcard, `01` for each `Cons` and `00` for `Nil`.
    #[derive(Debug, serde::Deserialize)]
    pub(super) enum List {
        Nil,
        Cons(Box<List>),
    }

    impl List {
        pub(super) fn len(&self) -> usize {
            let (mut len, mut at) = (0, self);
            while let List::Cons(next) = at {
                (len, at) = (len + 1, next);
            }
            len
        }
    }

    /// A tree as deep as its bytes say: trees inside a sequence.
    #[derive(Debug, serde::Deserialize)]
    struct Tree(#[allow(dead_code, reason = "only its depth matters")] Vec<Tree>);

    /// Decodes `payload` on a thread of `stack` bytes (a tokio worker has 2 MiB); a decoder
    /// that recurses as deep as the bytes say overflows it, which aborts the test binary.
    fn decode_on_small_stack<T: DeserializeOwned + Send + 'static>(
        codec: CodecId,
        payload: Vec<u8>,
        stack: usize,
    ) -> Result<(), String> {
        let thread = std::thread::Builder::new().stack_size(stack).spawn(move || {
            // A decoded value is dropped here, on the same stack.
            codec.decode::<T>(&payload).map(drop).map_err(|e| e.to_string())
        });
        thread.expect("a thread").join().expect("decoding does not panic")
    }

    #[test]
    fn postcard_decodes_values_nested_less_than_max_depth() {
        // A list of `n` cells is `n + 1` enums, one level each.
        let list = |cells: usize| [vec![1; cells], vec![0]].concat();
        let deepest = MAX_DEPTH as usize - 2;
        let decoded = Postcard::decode::<List>(&list(deepest)).expect("127 levels decode");
        assert_eq!(decoded.len(), deepest);
        let err = Postcard::decode::<List>(&list(deepest + 1)).expect_err("128 levels");
        assert!(err.to_string().contains("values nest 128 levels deep or more"), "{err}");
    }

    #[test]
    fn a_payload_nested_a_million_deep_is_refused_without_overflowing_the_stack() {
        const DEEP: usize = 1_000_000;
        let postcard = [vec![1; DEEP], vec![0]].concat();
        let err = decode_on_small_stack::<List>(CodecId::Postcard, postcard, 1 << 20).expect_err("too deep");
        assert!(err.contains("nest"), "{err}");
        // The same tree in every codec that describes its values (raw's depth is its type's).
        let tree_in = |codec: CodecId| -> Option<Vec<u8>> {
            match codec {
                CodecId::Postcard => Some([vec![1; DEEP], vec![0]].concat()),
                CodecId::Json => Some([vec![b'['; DEEP], vec![b']'; DEEP]].concat()),
                CodecId::MsgPack => Some([vec![0x91; DEEP], vec![0x90]].concat()),
                CodecId::Raw => None,
            }
        };
        let mut refused = 0;
        for codec in CodecId::enabled() {
            let Some(payload) = tree_in(codec) else { continue };
            let err = decode_on_small_stack::<Tree>(codec, payload, 1 << 20).expect_err("too deep");
            assert!(err.contains("nest") || err.contains("limit"), "{codec}: {err}");
            refused += 1;
        }
        assert_eq!(refused, CodecId::enabled().filter(|c| *c != CodecId::Raw).count());
        // Enums nest too: `{"Cons":{"Cons":…}}`, each variant a map of one entry.
        let list_in = |codec: CodecId| -> Option<Vec<u8>> {
            match codec {
                CodecId::Postcard => Some([vec![1; DEEP], vec![0]].concat()),
                CodecId::Json => Some([br#"{"Cons":"#.repeat(DEEP), br#""Nil""#.to_vec(), b"}".repeat(DEEP)].concat()),
                CodecId::MsgPack => Some([b"\x81\xa4Cons".repeat(DEEP), b"\xa3Nil".to_vec()].concat()),
                CodecId::Raw => None,
            }
        };
        for codec in CodecId::enabled() {
            let Some(payload) = list_in(codec) else { continue };
            let err = decode_on_small_stack::<List>(codec, payload, 1 << 20).expect_err("too deep");
            assert!(err.contains("nest") || err.contains("limit"), "{codec}: {err}");
        }
    }

    #[test]
    fn wire_ids_round_trip() {
        for (id, codec) in CodecId::ALL.into_iter().enumerate() {
            assert_eq!(codec.as_u8() as usize, id, "docs/PROTOCOL.md §8 gives {codec} id {id}");
            assert_eq!(CodecId::from_u8(codec.as_u8()), Some(codec));
        }
        assert_eq!(CodecId::from_u8(4), None);
    }
}
