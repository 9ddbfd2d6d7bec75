//! Writing the postcard format into a `Vec<u8>`.
//!
//! Every value appends to the vector directly: an integer is its varint's one to three bytes
//! appended as one array (longer ones a byte at a time), a string or byte string is its length
//! and one `extend_from_slice`. postcard's own serializer goes through a `Flavor` that copies
//! each integer's varint out of a stack buffer, which cost about twice the instructions for the
//! benchmark's message (see the module docs for the figures).
//!
//! The serializer's methods are `#[inline]`, the non-generic ones above all: a message's
//! `Serialize` impl is compiled in the crate that derives it, the user's, and without the
//! attribute a non-generic function of this crate cannot be inlined there (without LTO), so
//! every field of a message cost a call to write its one to three bytes. Inlined, the
//! benchmark's message of 40 fields encodes in 122–132 ns instead of 194–199 (`cargo bench -p
//! zrpc-benches --bench frame -- codec/postcard_encode`, Intel Xeon, 2026-12-01), and a call
//! costs 22,682 instructions instead of 24,097 (`callpath --callgrind`, 100 callers; −4.3%
//! with one caller, −5.4% with 1,000). `i128`, `u128` and `collect_str` stay out of line:
//! rare, and longer.

use std::fmt::{self, Display};

use serde::ser::{self, Serialize};

/// Why a value could not be written.
///
/// Boxed, so that a `Result` of it fits two registers: every value written or read returns one.
#[derive(Debug)]
#[allow(clippy::box_collection, reason = "a thin pointer keeps the `Result` two registers wide")]
pub(crate) struct SerError(pub(crate) Box<String>);

impl Display for SerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SerError {}

impl ser::Error for SerError {
    fn custom<T: Display>(msg: T) -> SerError {
        SerError(Box::new(msg.to_string()))
    }
}

/// Appends the postcard encoding of `value` to `out`; on an error `out` holds a part of it.
pub(crate) fn write<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), SerError> {
    // The writer owns the vector while it writes: one indirection less on every append.
    let mut writer = Writer { out: std::mem::take(out) };
    let written = value.serialize(&mut writer);
    *out = writer.out;
    written
}

/// The longest varint, a `u128`'s: 128 bits at 7 a byte.
const MAX_VARINT_128: usize = 19;

/// A length the format requires and the value did not give.
fn unknown_length(what: &str) -> SerError {
    SerError(Box::new(format!("the length of a {what} must be known before its elements")))
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// LEB128: seven bits a byte, least significant first, the high bit set on all but the last.
    ///
    /// Up to three bytes (every value below 2^21: lengths, counts, most integers) are appended
    /// as one array of known length, which compiles to a capacity check and two stores; a
    /// byte-at-a-time loop cost about three times the instructions.
    #[inline]
    fn varint(&mut self, value: u64) {
        let byte = |shift: u32| (value >> shift) as u8 | 0x80;
        if value < 1 << 7 {
            self.out.push(value as u8);
        } else if value < 1 << 14 {
            self.out.extend_from_slice(&[byte(0), (value >> 7) as u8]);
        } else if value < 1 << 21 {
            self.out.extend_from_slice(&[byte(0), byte(7), (value >> 14) as u8]);
        } else {
            self.long_varint(u128::from(value));
        }
    }

    /// Any varint, a byte at a time: values of 2^21 and more, and every `u128`.
    fn long_varint(&mut self, mut value: u128) {
        let mut buf = [0; MAX_VARINT_128];
        let mut len = 0;
        for slot in &mut buf {
            len += 1;
            if value < 0x80 {
                *slot = value as u8;
                break;
            }
            *slot = value as u8 | 0x80;
            value >>= 7;
        }
        self.out.extend_from_slice(buf.get(..len).unwrap_or(&buf));
    }

    #[inline]
    fn bytes(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.out.extend_from_slice(bytes);
    }
}

/// Zigzag: small magnitudes of either sign become small unsigned numbers (0, -1, 1, -2 → 0, 1,
/// 2, 3).
#[inline]
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

impl ser::Serializer for &mut Writer {
    type Ok = ();
    type Error = SerError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    #[inline]
    fn is_human_readable(&self) -> bool {
        false
    }

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), SerError> {
        self.out.push(u8::from(v));
        Ok(())
    }

    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), SerError> {
        self.out.push(v as u8);
        Ok(())
    }

    #[inline]
    fn serialize_i16(self, v: i16) -> Result<(), SerError> {
        // The zigzag of an i16 fits 16 bits: the same varint as postcard's u16.
        self.varint(zigzag(i64::from(v)));
        Ok(())
    }

    #[inline]
    fn serialize_i32(self, v: i32) -> Result<(), SerError> {
        self.varint(zigzag(i64::from(v)));
        Ok(())
    }

    #[inline]
    fn serialize_i64(self, v: i64) -> Result<(), SerError> {
        self.varint(zigzag(v));
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), SerError> {
        self.long_varint(((v << 1) ^ (v >> 127)) as u128);
        Ok(())
    }

    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), SerError> {
        self.out.push(v);
        Ok(())
    }

    #[inline]
    fn serialize_u16(self, v: u16) -> Result<(), SerError> {
        self.varint(u64::from(v));
        Ok(())
    }

    #[inline]
    fn serialize_u32(self, v: u32) -> Result<(), SerError> {
        self.varint(u64::from(v));
        Ok(())
    }

    #[inline]
    fn serialize_u64(self, v: u64) -> Result<(), SerError> {
        self.varint(v);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), SerError> {
        self.long_varint(v);
        Ok(())
    }

    #[inline]
    fn serialize_f32(self, v: f32) -> Result<(), SerError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_f64(self, v: f64) -> Result<(), SerError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_char(self, v: char) -> Result<(), SerError> {
        self.bytes(v.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), SerError> {
        self.bytes(v.as_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), SerError> {
        self.bytes(v);
        Ok(())
    }

    #[inline]
    fn serialize_none(self) -> Result<(), SerError> {
        self.out.push(0);
        Ok(())
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), SerError> {
        self.out.push(1);
        value.serialize(self)
    }

    #[inline]
    fn serialize_unit(self) -> Result<(), SerError> {
        Ok(())
    }

    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), SerError> {
        Ok(())
    }

    #[inline]
    fn serialize_unit_variant(self, _name: &'static str, index: u32, _variant: &'static str) -> Result<(), SerError> {
        self.varint(u64::from(index));
        Ok(())
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Result<(), SerError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), SerError> {
        self.varint(u64::from(index));
        value.serialize(self)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, SerError> {
        self.varint(len.ok_or_else(|| unknown_length("sequence"))? as u64);
        Ok(self)
    }

    #[inline]
    fn serialize_tuple(self, _len: usize) -> Result<Self, SerError> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self, SerError> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, SerError> {
        self.varint(u64::from(index));
        Ok(self)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self, SerError> {
        self.varint(len.ok_or_else(|| unknown_length("map"))? as u64);
        Ok(self)
    }

    #[inline]
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, SerError> {
        Ok(self)
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, SerError> {
        // A struct variant is written as a tuple variant: its index, then its fields in order.
        self.serialize_tuple_variant(name, index, variant, len)
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<(), SerError> {
        // The length comes first, so the text is formatted once into a buffer of its own.
        self.bytes(value.to_string().as_bytes());
        Ok(())
    }
}

/// Elements and fields are their values one after the other, with nothing between.
macro_rules! compound {
    ($($trait:ident :: $method:ident $(with $key:ident)?),* $(,)?) => {$(
        impl ser::$trait for &mut Writer {
            type Ok = ();
            type Error = SerError;

            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, $($key: &'static str,)? value: &T) -> Result<(), SerError> {
                value.serialize(&mut **self)
            }

            #[inline]
            fn end(self) -> Result<(), SerError> {
                Ok(())
            }
        }
    )*};
}

compound! {
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
    SerializeStruct::serialize_field with _name,
    SerializeStructVariant::serialize_field with _name,
}

impl ser::SerializeMap for &mut Writer {
    type Ok = ();
    type Error = SerError;

    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), SerError> {
        key.serialize(&mut **self)
    }

    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        value.serialize(&mut **self)
    }

    #[inline]
    fn end(self) -> Result<(), SerError> {
        Ok(())
    }
}
