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
/// Decoding checks that the value is the whole payload, and that its arrays and maps nest less
/// than [`MAX_DEPTH`](super::MAX_DEPTH) deep (in a pass over the markers first: see
/// `nests_less_than`).
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
        if !nests_less_than(src, super::MAX_DEPTH) {
            return Err(err(format!("values nest {} levels deep or more", super::MAX_DEPTH)));
        }
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

/// Whether the arrays and maps in `src` nest less than `levels` deep, an empty one included.
///
/// rmp-serde counts the arrays and maps it reads into a depth limit, but not an enum's variant
/// (`{"Cons": …}`, a map of one entry), so a recursive enum was decoded as deep as a peer's
/// bytes said, and overflowed the stack: hence this pass over the markers first, without
/// recursion. It reads only what nesting needs (markers, lengths and counts) and answers `true`
/// where the bytes end or are not MessagePack: the decoder then says what is wrong with them.
/// The open containers it keeps are at most `levels`.
fn nests_less_than(src: &[u8], levels: u32) -> bool {
    // Each open container's values still to come; a map's entries count two.
    let mut open: Vec<u64> = Vec::new();
    let mut at = 0;
    while let Some(&marker) = src.get(at) {
        if let Some(left) = open.last_mut() {
            *left -= 1;
        }
        let be = |len: usize| -> Option<u64> {
            let bytes = src.get(at + 1..at + 1 + len)?;
            Some(bytes.iter().fold(0, |n, &b| n << 8 | u64::from(b)))
        };
        // The bytes after the marker that this value's own data takes, and how many values it
        // contains: `None` for a value that runs past the end or a marker never used.
        let value = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => Some((0, None)),
            0x80..=0x8f => Some((0, Some(2 * u64::from(marker & 0x0f)))),
            0x90..=0x9f => Some((0, Some(u64::from(marker & 0x0f)))),
            0xa0..=0xbf => Some((u64::from(marker & 0x1f), None)),
            0xc4 | 0xd9 => be(1).map(|len| (1 + len, None)),
            0xc5 | 0xda => be(2).map(|len| (2 + len, None)),
            0xc6 | 0xdb => be(4).map(|len| (4 + len, None)),
            0xc7 => be(1).map(|len| (2 + len, None)),
            0xc8 => be(2).map(|len| (3 + len, None)),
            0xc9 => be(4).map(|len| (5 + len, None)),
            0xcc | 0xd0 => Some((1, None)),
            0xcd | 0xd1 | 0xd4 => Some((2, None)),
            0xd5 => Some((3, None)),
            0xca | 0xce | 0xd2 => Some((4, None)),
            0xd6 => Some((5, None)),
            0xcb | 0xcf | 0xd3 => Some((8, None)),
            0xd7 => Some((9, None)),
            0xd8 => Some((17, None)),
            0xdc => be(2).map(|count| (2, Some(count))),
            0xdd => be(4).map(|count| (4, Some(count))),
            0xde => be(2).map(|count| (2, Some(2 * count))),
            0xdf => be(4).map(|count| (4, Some(2 * count))),
            0xc1 => None,
        };
        let Some((skip, contains)) = value else { return true };
        if let Some(count) = contains {
            // One level more, whether or not it holds anything.
            if open.len() + 1 >= levels as usize {
                return false;
            }
            open.push(count);
        }
        while open.last() == Some(&0) {
            open.pop();
        }
        let Some(next) = usize::try_from(skip).ok().and_then(|skip| (at + 1).checked_add(skip)) else { return true };
        at = next;
    }
    true
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

    /// A MessagePack value of every format but ext, as rmp-serde writes it.
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Value {
        Int(i64),
        UInt(u64),
        Float(f64),
        Float32(f32),
        Text(String),
        Bin(serde_bytes::ByteBuf),
        Bool(bool),
        Nil(Option<()>),
        Array(Vec<Value>),
        Map(std::collections::BTreeMap<String, Value>),
    }

    impl Value {
        /// How deep its arrays and maps nest, each one a level, an empty one included.
        fn depth(&self) -> u32 {
            match self {
                Value::Array(values) => 1 + values.iter().map(Value::depth).max().unwrap_or(0),
                Value::Map(entries) => 1 + entries.values().map(Value::depth).max().unwrap_or(0),
                _ => 0,
            }
        }

        fn random(rng: &crate::balance::SharedRng, depth: u32) -> Value {
            // Lengths across each format's bounds: fix, 8, 16 and (for arrays and maps) 16 bits.
            let len = |rng: &crate::balance::SharedRng| [0, 1, 15, 16, 31, 32, 255, 256, 70_000][rng.below(9) as usize];
            match rng.below(if depth == 0 { 8 } else { 11 }) {
                0 => Value::Int(-(rng.u64() as i64 >> rng.below(64))),
                1 => Value::UInt(rng.u64() >> rng.below(64)),
                2 => Value::Float(1.5),
                3 => Value::Float32(2.5),
                4 => Value::Text("ü".repeat(len(rng) / 2)),
                5 => Value::Bin(serde_bytes::ByteBuf::from(vec![0xc1; len(rng)])),
                6 => Value::Bool(rng.below(2) == 0),
                7 => Value::Nil(None),
                8 => Value::Array(
                    (0..[0, 1, 3, 17][rng.below(4) as usize]).map(|_| Value::random(rng, depth - 1)).collect(),
                ),
                9 => Value::Array(vec![Value::random(rng, depth - 1)]),
                _ => Value::Map(
                    (0..[0, 1, 16][rng.below(3) as usize])
                        .map(|i| (i.to_string(), Value::random(rng, depth - 1)))
                        .collect(),
                ),
            }
        }
    }

    #[test]
    fn the_nesting_pass_counts_what_rmp_serde_writes() {
        let rng = crate::balance::SharedRng::with_seed(0x006d_706b);
        let mut deepest = 0;
        for _ in 0..300 {
            let value = Value::random(&rng, 8);
            let (bytes, depth) = (encode(&value), value.depth());
            deepest = deepest.max(depth);
            assert!(nests_less_than(&bytes, depth + 1), "{depth} levels, in {bytes:02x?}");
            if depth > 0 {
                assert!(!nests_less_than(&bytes, depth), "{depth} levels, in {bytes:02x?}");
            }
        }
        assert!(deepest >= 6, "the values nest {deepest} deep at most");
        // Ext values hold no others: fixext 1 and ext 8 of 3 bytes, in an array.
        assert!(nests_less_than(&[0x92, 0xd4, 0x01, 0x91, 0xc7, 0x03, 0x01, 0x91, 0x91, 0x91], 2));
        // Where the bytes end or a marker is never used, the decoder says what is wrong.
        assert!(nests_less_than(&[0x91, 0xdc, 0x00], 2));
        assert!(nests_less_than(&[0xc1, 0x91, 0x91], 2));
    }

    #[test]
    fn a_recursive_enum_is_refused_past_max_depth() {
        // `{"Cons":{"Cons":…"Nil"}}`, a map of one entry a cell: rmp-serde counts no level
        // for an enum's variant.
        use crate::codec::tests::List;
        let list = |cells: usize| [b"\x81\xa4Cons".repeat(cells), b"\xa3Nil".to_vec()].concat();
        let deepest = crate::codec::MAX_DEPTH as usize - 1;
        assert_eq!(MsgPack::decode::<List>(&list(deepest)).expect("127 levels decode").len(), deepest);
        let err = MsgPack::decode::<List>(&list(deepest + 1)).expect_err("128 levels");
        assert!(err.to_string().contains("values nest 128 levels deep or more"), "{err}");
    }
}
