//! [MessagePack](https://msgpack.org) through [rmp-serde](https://docs.rs/rmp-serde) (feature
//! `msgpack`).

use std::io;

use bytes::BytesMut;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::{Codec, CodecError, CodecId};

/// MessagePack via rmp-serde (feature `msgpack`): binary and self-describing, readable by a
/// MessagePack library in any language.
///
/// The layout, as rmp-serde writes it with structs as maps:
/// - a struct is a map keyed by field name, so the arguments of a call, always one struct, are
///   a map keyed by argument name (`{"a": 40, "b": 2}` is `82 a1 61 28 a1 62 02`; one argument
///   is a map of one entry, none an empty map `80`); decoding also accepts a struct as an array
///   of its fields in declaration order, never a bare value;
/// - a unit enum variant is its name as a string (`"Overflow"`); any other variant is a map of
///   one entry from its name to its content (`Ok(42)` is `{"Ok": 42}`, `81 a2 4f 6b 2a`), a
///   tuple variant's content being an array and a struct variant's a map;
/// - byte strings (`serde_bytes`, [`Blob`](crate::Blob), `bytes::Bytes`) are `bin`, a plain
///   `Vec<u8>` an array of integers; `Option` is `nil` or the value; integers take the smallest
///   encoding that holds them.
///
/// Decoding checks that the value is the whole payload, and nests at most 1024 deep.
#[derive(Clone, Copy, Debug, Default)]
pub struct MsgPack;

impl Codec for MsgPack {
    const ID: CodecId = CodecId::MsgPack;

    /// Staged in a `Vec` and copied into `dst` in one piece, as postcard does.
    fn encode<T: Serialize + ?Sized>(value: &T, dst: &mut BytesMut) -> Result<(), CodecError> {
        super::staged(Self::ID, dst, |buf| rmp_serde::encode::write_named(buf, value))
    }

    fn decode<T: DeserializeOwned>(src: &[u8]) -> Result<T, CodecError> {
        let err = |reason: String| CodecError::Decode { codec: Self::ID, len: src.len(), reason };
        let mut de = rmp_serde::Deserializer::from_read_ref(src);
        let value = T::deserialize(&mut de).map_err(|e| err(e.to_string()))?;
        // rmp-serde does not tell where the value ended. Reading one more value does: running
        // out of input before its first byte is the only way for that read to fail cleanly.
        match IgnoredAny::deserialize(&mut de) {
            Err(rmp_serde::decode::Error::InvalidMarkerRead(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Ok(value)
            }
            _ => Err(err("trailing bytes after the value".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::Blob;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AddArgs {
        a: i64,
        b: i64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum MathError {
        Overflow,
        Odd(u8),
    }

    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        let mut buf = BytesMut::new();
        MsgPack::encode(value, &mut buf).expect("encodes");
        buf.to_vec()
    }

    #[test]
    fn an_args_struct_is_a_map_keyed_by_argument_name() {
        // fixmap of 2, fixstr "a", 40, fixstr "b", 2: the layout the codec docs and
        // docs/PROTOCOL.md describe.
        assert_eq!(encode(&AddArgs { a: 40, b: 2 }), [0x82, 0xa1, b'a', 40, 0xa1, b'b', 2]);
        let back: AddArgs = MsgPack::decode(&[0x82, 0xa1, b'b', 2, 0xa1, b'a', 40]).expect("decodes");
        assert_eq!(back, AddArgs { a: 40, b: 2 }, "keys in any order");
    }

    #[test]
    fn the_worked_example_of_protocol_md_in_msgpack() {
        #[derive(Serialize)]
        struct GreeterHelloArgs {
            name: String,
        }
        let args = GreeterHelloArgs { name: "zrpc".into() };
        assert_eq!(encode(&args), [0x81, 0xa4, b'n', b'a', b'm', b'e', 0xa4, b'z', b'r', b'p', b'c']);
        let mut answer = vec![0xab];
        answer.extend_from_slice(b"hello, zrpc");
        assert_eq!(encode(&"hello, zrpc"), answer);
    }

    #[test]
    fn an_args_struct_also_decodes_from_an_array() {
        // fixarray of 2: the fields in declaration order, as rmp-serde writes by default.
        let back: AddArgs = MsgPack::decode(&[0x92, 40, 2]).expect("decodes");
        assert_eq!(back, AddArgs { a: 40, b: 2 });
    }

    #[test]
    fn enums_are_a_name_or_a_map_of_one_entry() {
        let ok: Result<i64, MathError> = Ok(42);
        assert_eq!(encode(&ok), [0x81, 0xa2, b'O', b'k', 42]);
        let overflow: Result<i64, MathError> = Err(MathError::Overflow);
        let mut expected = vec![0x81, 0xa3, b'E', b'r', b'r', 0xa8];
        expected.extend_from_slice(b"Overflow");
        assert_eq!(encode(&overflow), expected);
        for value in [ok, overflow, Err(MathError::Odd(7))] {
            assert_eq!(MsgPack::decode::<Result<i64, MathError>>(&encode(&value)).expect("decodes"), value);
        }
    }

    #[test]
    fn byte_strings_are_bin_and_blobs_share_the_frame() {
        let frame = Bytes::from(encode(&Blob::from_static(&[0, 1, 2])));
        assert_eq!(frame.as_ref(), [0xc4, 3, 0, 1, 2], "bin 8 of 3 bytes");
        let blob: Blob = CodecId::MsgPack.decode_shared(&frame).expect("decodes");
        assert_eq!(&*blob, [0, 1, 2]);
        assert!(frame.as_ptr_range().contains(&blob.as_ptr()), "the blob is a slice of the frame");
    }

    #[test]
    fn trailing_and_truncated_bytes_are_refused() {
        let mut buf = encode(&AddArgs { a: 40, b: 300 });
        for cut in 0..buf.len() {
            assert!(MsgPack::decode::<AddArgs>(&buf[..cut]).is_err(), "accepted {cut} of {} bytes", buf.len());
        }
        buf.push(0xc0);
        let err = MsgPack::decode::<AddArgs>(&buf).expect_err("a trailing nil");
        assert!(err.to_string().contains("trailing bytes"), "{err}");
        buf.pop();
        buf.push(0xc1); // never used in MessagePack
        assert!(MsgPack::decode::<AddArgs>(&buf).is_err());
    }
}
