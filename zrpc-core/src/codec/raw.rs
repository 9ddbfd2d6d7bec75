//! Raw bytes (feature `raw`): the payload is the bytes themselves.

use std::fmt::{self, Display};

use bytes::BytesMut;
use serde::de::{self, DeserializeOwned, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{self, Impossible, Serialize};

use super::{Codec, CodecError, CodecId};

/// Raw bytes (feature `raw`): the payload is one byte string, with no framing, length or tag.
///
/// For methods that move opaque bytes (blobs, files, payloads of another format) and for
/// callers in other languages that have bytes and no serde format. A method fits when its one
/// argument and its result are byte strings:
///
/// - a byte string is a value that serializes with `serialize_bytes`: [`Blob`](crate::Blob),
///   `bytes::Bytes`, `serde_bytes::ByteBuf`, a `Vec<u8>` or `&[u8]` under
///   `#[serde(with = "serde_bytes")]`; and also a plain `Vec<u8>` (serde's sequence of `u8`);
/// - a unit (`()`, a unit struct, or a struct with no fields) is the empty payload, so a method
///   without arguments fits too;
/// - a struct, tuple, tuple struct or newtype of exactly one field that fits is that field's
///   bytes: a method's generated arguments struct with one byte-string argument fits.
///
/// Anything else is refused with a [`CodecError`] saying what the value was: integers, strings,
/// options, maps, sequences of anything but bytes, structs of two fields, and enums, so a
/// method returning `Result<Vec<u8>, E>` cannot use this codec (nothing could tell `Ok` from
/// `Err`). Whether a type fits is checked on each value, as it is encoded or decoded.
///
/// Decoding hands the whole payload to the byte string, and with
/// [`CodecId::decode_shared`] a [`Blob`](crate::Blob) is a slice of the frame, not a copy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Raw;

impl Codec for Raw {
    const ID: CodecId = CodecId::Raw;

    fn encode<T: Serialize + ?Sized>(value: &T, dst: &mut BytesMut) -> Result<(), CodecError> {
        let start = dst.len();
        value.serialize(Writer { dst: &mut *dst }).map_err(|e| {
            dst.truncate(start);
            CodecError::Encode { codec: Self::ID, reason: e.0 }
        })
    }

    fn decode<T: DeserializeOwned>(src: &[u8]) -> Result<T, CodecError> {
        T::deserialize(Reader { src }).map_err(|e| CodecError::Decode { codec: Self::ID, len: src.len(), reason: e.0 })
    }
}

/// Why a value does not fit the raw codec; the `reason` of a [`CodecError`].
#[derive(Debug)]
struct Unfit(String);

impl Unfit {
    fn encoding(what: impl Display) -> Unfit {
        Unfit(format!("it carries a byte string, a unit, or a struct of one such field, not {what}"))
    }

    fn decoding(what: impl Display) -> Unfit {
        Unfit(format!("a raw payload is a byte string, it cannot be read as {what}"))
    }
}

impl Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unfit {}

impl ser::Error for Unfit {
    fn custom<T: Display>(msg: T) -> Unfit {
        Unfit(msg.to_string())
    }
}

impl de::Error for Unfit {
    fn custom<T: Display>(msg: T) -> Unfit {
        Unfit(msg.to_string())
    }
}

/// `serialize_*` methods that refuse a value, each naming what it was.
macro_rules! refuse {
    ($($method:ident($($arg:ty),*) => $what:expr;)*) => {
        $(
            fn $method(self, $(_: $arg),*) -> Result<(), Unfit> {
                Err(Unfit::encoding($what))
            }
        )*
    };
}

/// Writes a value that fits straight into the payload.
struct Writer<'a> {
    dst: &'a mut BytesMut,
}

impl<'a> ser::Serializer for Writer<'a> {
    type Ok = ();
    type Error = Unfit;
    type SerializeSeq = ByteSeq<'a>;
    type SerializeTuple = OneField<'a>;
    type SerializeTupleStruct = OneField<'a>;
    type SerializeTupleVariant = Impossible<(), Unfit>;
    type SerializeMap = Impossible<(), Unfit>;
    type SerializeStruct = OneField<'a>;
    type SerializeStructVariant = Impossible<(), Unfit>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bytes(self, bytes: &[u8]) -> Result<(), Unfit> {
        self.dst.extend_from_slice(bytes);
        Ok(())
    }

    fn serialize_unit(self) -> Result<(), Unfit> {
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Unfit> {
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<(), Unfit> {
        value.serialize(self)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<ByteSeq<'a>, Unfit> {
        self.dst.reserve(len.unwrap_or(0));
        Ok(ByteSeq { dst: self.dst })
    }

    fn serialize_tuple(self, len: usize) -> Result<OneField<'a>, Unfit> {
        OneField::new(self.dst, len, || format!("a tuple of {len} fields"))
    }

    fn serialize_tuple_struct(self, name: &'static str, len: usize) -> Result<OneField<'a>, Unfit> {
        OneField::new(self.dst, len, || format!("a tuple struct of {len} fields ({name})"))
    }

    fn serialize_struct(self, name: &'static str, len: usize) -> Result<OneField<'a>, Unfit> {
        OneField::new(self.dst, len, || format!("a struct of {len} fields ({name})"))
    }

    fn serialize_unit_variant(self, name: &'static str, _: u32, variant: &'static str) -> Result<(), Unfit> {
        Err(Unfit::encoding(format_args!("an enum variant ({name}::{variant})")))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> Result<(), Unfit> {
        Err(Unfit::encoding(format_args!("an enum variant ({name}::{variant})")))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Unfit> {
        Err(Unfit::encoding(format_args!("an enum variant ({name}::{variant})")))
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Unfit> {
        Err(Unfit::encoding(format_args!("an enum variant ({name}::{variant})")))
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Unfit> {
        Err(Unfit::encoding("an option"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Unfit> {
        Err(Unfit::encoding("a map"))
    }

    refuse! {
        serialize_bool(bool) => "a bool";
        serialize_i8(i8) => "an i8";
        serialize_i16(i16) => "an i16";
        serialize_i32(i32) => "an i32";
        serialize_i64(i64) => "an i64";
        serialize_i128(i128) => "an i128";
        serialize_u8(u8) => "a u8";
        serialize_u16(u16) => "a u16";
        serialize_u32(u32) => "a u32";
        serialize_u64(u64) => "a u64";
        serialize_u128(u128) => "a u128";
        serialize_f32(f32) => "an f32";
        serialize_f64(f64) => "an f64";
        serialize_char(char) => "a char";
        serialize_str(&str) => "a string";
        serialize_none() => "an option";
    }
}

/// A struct or tuple of at most one field: the field is the payload (none: the empty payload).
struct OneField<'a> {
    dst: &'a mut BytesMut,
    written: bool,
}

impl<'a> OneField<'a> {
    fn new(dst: &'a mut BytesMut, len: usize, what: impl FnOnce() -> String) -> Result<OneField<'a>, Unfit> {
        if len > 1 {
            return Err(Unfit::encoding(what()));
        }
        Ok(OneField { dst, written: false })
    }

    fn field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unfit> {
        // A `Serialize` impl may write more fields than the length it announced.
        if std::mem::replace(&mut self.written, true) {
            return Err(Unfit::encoding("a struct or tuple of more than one field"));
        }
        value.serialize(Writer { dst: self.dst })
    }
}

impl ser::SerializeStruct for OneField<'_> {
    type Ok = ();
    type Error = Unfit;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> Result<(), Unfit> {
        self.field(value)
    }

    fn end(self) -> Result<(), Unfit> {
        Ok(())
    }
}

impl ser::SerializeTuple for OneField<'_> {
    type Ok = ();
    type Error = Unfit;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unfit> {
        self.field(value)
    }

    fn end(self) -> Result<(), Unfit> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for OneField<'_> {
    type Ok = ();
    type Error = Unfit;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unfit> {
        self.field(value)
    }

    fn end(self) -> Result<(), Unfit> {
        Ok(())
    }
}

/// A sequence, which fits when every element is a `u8`: a plain `Vec<u8>`.
struct ByteSeq<'a> {
    dst: &'a mut BytesMut,
}

impl ser::SerializeSeq for ByteSeq<'_> {
    type Ok = ();
    type Error = Unfit;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unfit> {
        let byte = value.serialize(ByteElement)?;
        self.dst.extend_from_slice(&[byte]);
        Ok(())
    }

    fn end(self) -> Result<(), Unfit> {
        Ok(())
    }
}

/// An element of a sequence: a `u8`, or a refusal.
struct ByteElement;

impl ByteElement {
    fn unfit() -> Unfit {
        Unfit::encoding("a sequence of anything but u8")
    }
}

/// `serialize_*` methods of [`ByteElement`] that refuse their element.
macro_rules! not_a_byte {
    ($($method:ident($($arg:ty),*);)*) => {
        $(
            fn $method(self, $(_: $arg),*) -> Result<u8, Unfit> {
                Err(ByteElement::unfit())
            }
        )*
    };
}

impl ser::Serializer for ByteElement {
    type Ok = u8;
    type Error = Unfit;
    type SerializeSeq = Impossible<u8, Unfit>;
    type SerializeTuple = Impossible<u8, Unfit>;
    type SerializeTupleStruct = Impossible<u8, Unfit>;
    type SerializeTupleVariant = Impossible<u8, Unfit>;
    type SerializeMap = Impossible<u8, Unfit>;
    type SerializeStruct = Impossible<u8, Unfit>;
    type SerializeStructVariant = Impossible<u8, Unfit>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_u8(self, byte: u8) -> Result<u8, Unfit> {
        Ok(byte)
    }

    not_a_byte! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_u128(u128);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<u8, Unfit> {
        Err(ByteElement::unfit())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, _: &T) -> Result<u8, Unfit> {
        Err(ByteElement::unfit())
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<u8, Unfit> {
        Err(ByteElement::unfit())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Unfit> {
        Err(ByteElement::unfit())
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Unfit> {
        Err(ByteElement::unfit())
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Unfit> {
        Err(ByteElement::unfit())
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Unfit> {
        Err(ByteElement::unfit())
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Unfit> {
        Err(ByteElement::unfit())
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Unfit> {
        Err(ByteElement::unfit())
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Unfit> {
        Err(ByteElement::unfit())
    }
}

/// `deserialize_*` methods that refuse, each naming what was asked for.
macro_rules! cannot_read {
    ($($method:ident($($arg:ty),*) => $what:expr;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, $(_: $arg,)* _: V) -> Result<V::Value, Unfit> {
                Err(Unfit::decoding($what))
            }
        )*
    };
}

/// Reads the whole payload as one value that fits.
struct Reader<'de> {
    src: &'de [u8],
}

impl<'de> Reader<'de> {
    /// A struct or tuple of `len` fields: one reads the whole payload, none the empty payload.
    fn one_field<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
        what: impl FnOnce() -> String,
    ) -> Result<V::Value, Unfit> {
        match len {
            1 => visitor.visit_seq(Field(Some(self))),
            0 if self.src.is_empty() => visitor.visit_seq(Field(None)),
            0 => Err(Unfit(format!("{} bytes where a value without fields was expected", self.src.len()))),
            _ => Err(Unfit::decoding(what())),
        }
    }
}

impl<'de> de::Deserializer<'de> for Reader<'de> {
    type Error = Unfit;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unfit> {
        visitor.visit_borrowed_bytes(self.src)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unfit> {
        visitor.visit_borrowed_bytes(self.src)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unfit> {
        match self.src.len() {
            0 => visitor.visit_unit(),
            n => Err(Unfit(format!("{n} bytes where a unit was expected"))),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Unfit> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Unfit> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unfit> {
        visitor.visit_seq(Bytewise(self.src))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Unfit> {
        self.one_field(len, visitor, || format!("a tuple of {len} fields"))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Unfit> {
        self.one_field(len, visitor, || format!("a tuple struct of {len} fields ({name})"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Unfit> {
        self.one_field(fields.len(), visitor, || format!("a struct of {} fields ({name})", fields.len()))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Unfit> {
        Err(Unfit::decoding(format_args!("an enum ({name})")))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unfit> {
        visitor.visit_unit()
    }

    cannot_read! {
        deserialize_any() => "a value that describes itself";
        deserialize_bool() => "a bool";
        deserialize_i8() => "an i8";
        deserialize_i16() => "an i16";
        deserialize_i32() => "an i32";
        deserialize_i64() => "an i64";
        deserialize_i128() => "an i128";
        deserialize_u8() => "a u8";
        deserialize_u16() => "a u16";
        deserialize_u32() => "a u32";
        deserialize_u64() => "a u64";
        deserialize_u128() => "a u128";
        deserialize_f32() => "an f32";
        deserialize_f64() => "an f64";
        deserialize_char() => "a char";
        deserialize_str() => "a string";
        deserialize_string() => "a string";
        deserialize_option() => "an option";
        deserialize_map() => "a map";
        deserialize_identifier() => "an identifier";
    }
}

/// The one field of a struct or tuple, or none.
struct Field<'de>(Option<Reader<'de>>);

impl<'de> SeqAccess<'de> for Field<'de> {
    type Error = Unfit;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Unfit> {
        self.0.take().map(|reader| seed.deserialize(reader)).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(usize::from(self.0.is_some()))
    }
}

/// The payload as a sequence of `u8`: a plain `Vec<u8>`.
struct Bytewise<'de>(&'de [u8]);

impl<'de> SeqAccess<'de> for Bytewise<'de> {
    type Error = Unfit;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Unfit> {
        let Some((&byte, rest)) = self.0.split_first() else { return Ok(None) };
        self.0 = rest;
        seed.deserialize(Byte(byte)).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// One element of [`Bytewise`]: readable as a `u8` only.
struct Byte(u8);

impl<'de> de::Deserializer<'de> for Byte {
    type Error = Unfit;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unfit> {
        visitor.visit_u8(self.0)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Unfit> {
        Err(Unfit::decoding("a sequence of anything but u8"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::Blob;

    /// What `#[zrpc::service]` generates for `async fn put(&self, data: Blob) -> ...`.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct PutArgs {
        data: Blob,
    }

    /// With a plain `Vec<u8>` argument.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct PutVecArgs {
        data: Vec<u8>,
    }

    /// With no arguments.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct PingArgs {}

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct TwoArgs {
        a: Blob,
        b: Blob,
    }

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
        let mut buf = BytesMut::from(&b"kept"[..]);
        let result = Raw::encode(value, &mut buf);
        assert_eq!(&buf[..4], b"kept", "what was in the buffer before stays");
        result.map(|()| buf[4..].to_vec())
    }

    fn reason(err: CodecError) -> String {
        match err {
            CodecError::Encode { codec: CodecId::Raw, reason }
            | CodecError::Decode { codec: CodecId::Raw, reason, .. } => reason,
            other => panic!("not a raw codec error: {other}"),
        }
    }

    #[test]
    fn the_payload_is_the_bytes() {
        let bytes = b"\x00\xffzrpc".as_slice();
        assert_eq!(encode(&Blob::from(bytes)).expect("blob"), bytes);
        assert_eq!(encode(&Bytes::from_static(bytes)).expect("bytes"), bytes);
        assert_eq!(encode(&serde_bytes::ByteBuf::from(bytes)).expect("byte buf"), bytes);
        assert_eq!(encode(serde_bytes::Bytes::new(bytes)).expect("serde_bytes"), bytes);
        assert_eq!(encode(&bytes.to_vec()).expect("plain vec"), bytes);
        assert_eq!(encode(&PutArgs { data: Blob::from(bytes) }).expect("args struct"), bytes);
        assert_eq!(encode(&(Blob::from(bytes),)).expect("one-tuple"), bytes);
        assert_eq!(encode(&()).expect("unit"), b"");
        assert_eq!(encode(&PingArgs {}).expect("no arguments"), b"");
    }

    #[test]
    fn args_structs_round_trip() {
        let args = PutArgs { data: Blob::from_static(b"\x00\x01\x02") };
        assert_eq!(Raw::decode::<PutArgs>(&encode(&args).expect("encodes")).expect("decodes"), args);
        let args = PutVecArgs { data: vec![0, 1, 2, 255] };
        assert_eq!(Raw::decode::<PutVecArgs>(&encode(&args).expect("encodes")).expect("decodes"), args);
        let empty = PutVecArgs { data: vec![] };
        assert_eq!(Raw::decode::<PutVecArgs>(&[]).expect("decodes"), empty);
        assert_eq!(Raw::decode::<PingArgs>(&[]).expect("decodes"), PingArgs {});
        assert_eq!(Raw::decode::<()>(&[]).expect("decodes"), ());
        let bytes: serde_bytes::ByteBuf = Raw::decode(b"abc").expect("decodes");
        assert_eq!(bytes.as_slice(), b"abc");
        let bytes: Bytes = Raw::decode(b"abc").expect("decodes");
        assert_eq!(bytes, "abc");
    }

    #[test]
    fn a_shared_decode_slices_the_frame() {
        let frame = Bytes::from_static(b"a frame of bytes");
        let args: PutArgs = CodecId::Raw.decode_shared(&frame).expect("decodes");
        assert_eq!(&*args.data, b"a frame of bytes");
        assert_eq!(args.data.as_ptr(), frame.as_ptr(), "the blob is the frame, not a copy");
    }

    #[test]
    fn values_that_are_not_bytes_are_refused_naming_what_they_are() {
        let cases: Vec<(Result<Vec<u8>, CodecError>, &str)> = vec![
            (encode(&Ok::<Vec<u8>, String>(vec![1])), "an enum variant (Result::Ok)"),
            (encode(&"text"), "not a string"),
            (encode(&7u64), "not a u64"),
            (encode(&Some(Blob::new())), "not an option"),
            (encode(&vec![1u16, 2]), "a sequence of anything but u8"),
            (encode(&TwoArgs { a: Blob::new(), b: Blob::new() }), "a struct of 2 fields (TwoArgs)"),
            (encode(&std::collections::BTreeMap::<u8, u8>::new()), "not a map"),
        ];
        for (result, expected) in cases {
            let reason = reason(result.expect_err(expected));
            assert!(reason.contains(expected), "{reason:?} does not say {expected:?}");
            assert!(reason.starts_with("it carries a byte string"), "{reason}");
        }
        let err = CodecId::Raw.encode_to_bytes(&Ok::<Blob, ()>(Blob::new())).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "raw could not encode the value: it carries a byte string, a unit, or a struct of one such \
             field, not an enum variant (Result::Ok)"
        );
    }

    #[test]
    fn payloads_are_refused_as_anything_but_bytes() {
        let cases: Vec<(Result<(), CodecError>, &str)> = vec![
            (Raw::decode::<Result<Blob, String>>(b"x").map(drop), "cannot be read as an enum (Result)"),
            (Raw::decode::<String>(b"x").map(drop), "cannot be read as a string"),
            (Raw::decode::<u8>(b"x").map(drop), "cannot be read as a u8"),
            (Raw::decode::<Option<Blob>>(b"x").map(drop), "cannot be read as an option"),
            (Raw::decode::<TwoArgs>(b"x").map(drop), "cannot be read as a struct of 2 fields (TwoArgs)"),
            (Raw::decode::<Vec<u16>>(b"x").map(drop), "cannot be read as a sequence of anything but u8"),
            (Raw::decode::<()>(b"x").map(drop), "1 bytes where a unit was expected"),
            (Raw::decode::<PingArgs>(b"xy").map(drop), "2 bytes where a value without fields was expected"),
        ];
        for (result, expected) in cases {
            let reason = reason(result.expect_err(expected));
            assert!(reason.contains(expected), "{reason:?} does not say {expected:?}");
        }
    }
}
