//! Reading the postcard format from a byte slice.
//!
//! Every read is bounds-checked against what is left of the input; a length prefix larger than
//! that is an error before anything is allocated, and a sequence's length is only a hint (serde
//! caps what it preallocates). Varints are read as postcard reads them: at most as many bytes
//! as the type's width needs, the last of them within the type's range, non-minimal encodings
//! (`80 00` for 0) accepted.
//!
//! Values nest less than [`MAX_DEPTH`] levels deep: every value that holds others (a struct,
//! tuple, sequence, map, enum variant, newtype, or an option's `Some`) takes one level while
//! they are read. A recursive type (a tree, an expression) is otherwise decoded as deep as a
//! peer's bytes say, a few frames per level of the decoding thread's stack: 100 KB of `01`
//! bytes for an `enum List { Nil, Cons(Box<List>) }` overflowed a 2 MiB stack (a tokio
//! worker's), which aborts the whole process, not just the call.

use std::fmt::{self, Display};
use std::str::Utf8Error;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::utf8;
use crate::codec::MAX_DEPTH;

/// Why the bytes are not a value of the type asked for.
///
/// Boxed, so that a `Result` of it fits two registers: every value written or read returns one.
#[derive(Debug)]
#[allow(clippy::box_collection, reason = "a thin pointer keeps the `Result` two registers wide")]
pub(crate) struct DeError(pub(crate) Box<String>);

impl Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: Display>(msg: T) -> DeError {
        DeError(Box::new(msg.to_string()))
    }
}

fn error(what: &str) -> DeError {
    DeError(Box::new(what.to_owned()))
}

/// Reads one `T` from the front of `input` and returns it with the bytes after it.
pub(crate) fn read<'de, T: de::Deserialize<'de>>(input: &'de [u8]) -> Result<(T, &'de [u8]), DeError> {
    let mut reader = Reader { input, levels: MAX_DEPTH };
    let value = T::deserialize(&mut reader)?;
    Ok((value, reader.input))
}

struct Reader<'de> {
    input: &'de [u8],
    /// How many more levels values may nest (see the module docs).
    levels: u32,
}

/// A varint's widest encoding for a type of `bits` bits, and the largest value its last byte
/// may hold.
const fn varint_limits(bits: u32) -> (usize, u8) {
    (bits.div_ceil(7) as usize, ((1u32 << (bits % 7)) - 1) as u8)
}

impl<'de> Reader<'de> {
    #[inline]
    fn byte(&mut self) -> Result<u8, DeError> {
        let (&first, rest) = self.input.split_first().ok_or_else(end)?;
        self.input = rest;
        Ok(first)
    }

    #[inline]
    fn take(&mut self, len: usize) -> Result<&'de [u8], DeError> {
        let (taken, rest) = self.input.split_at_checked(len).ok_or_else(end)?;
        self.input = rest;
        Ok(taken)
    }

    /// A varint of an integer type `BITS` wide (16, 32 or 64).
    ///
    /// Up to three bytes are matched as a slice pattern, with no loop: the benchmark's message
    /// is mostly such integers, and the loop cost about four times the instructions.
    #[inline]
    fn varint<const BITS: u32>(&mut self) -> Result<u64, DeError> {
        let low = |byte: u8| u64::from(byte & 0x7f);
        let (value, rest) = match *self.input {
            [b0, ref rest @ ..] if b0 < 0x80 => (u64::from(b0), rest),
            [b0, b1, ref rest @ ..] if b1 < 0x80 => (low(b0) | u64::from(b1) << 7, rest),
            // A 16-bit varint's third byte is its last: it must be in range.
            [b0, b1, b2, ref rest @ ..] if b2 < 0x80 && (BITS > 16 || b2 <= 0x03) => {
                (low(b0) | low(b1) << 7 | u64::from(b2) << 14, rest)
            }
            // The limits keep it within `BITS`, at most 64.
            _ => return self.long_varint(BITS).map(|value| value as u64),
        };
        self.input = rest;
        Ok(value)
    }

    /// Any varint of a type `bits` wide, a byte at a time.
    fn long_varint(&mut self, bits: u32) -> Result<u128, DeError> {
        let (most, last_max) = varint_limits(bits);
        let mut value = 0u128;
        for i in 0..most {
            let byte = self.byte()?;
            value |= u128::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if i == most - 1 && byte > last_max {
                    break;
                }
                return Ok(value);
            }
        }
        Err(bad_varint(bits))
    }

    /// A length: a `usize` varint, which this crate's targets make 64 bits.
    #[inline]
    fn len(&mut self) -> Result<usize, DeError> {
        let len = self.varint::<{ usize::BITS }>()?;
        // Lossless: the varint was read with usize's width.
        Ok(len as usize)
    }

    /// A length-prefixed byte string, borrowed from the input.
    #[inline]
    fn bytes(&mut self) -> Result<&'de [u8], DeError> {
        let len = self.len()?;
        self.take(len)
    }

    #[inline]
    fn str(&mut self) -> Result<&'de str, DeError> {
        utf8::borrowed(self.bytes()?).map_err(not_utf8)
    }

    /// Reads what a value holds with `read`, one level deeper; refused past [`MAX_DEPTH`].
    #[inline]
    fn nested<R>(&mut self, read: impl FnOnce(&mut Self) -> Result<R, DeError>) -> Result<R, DeError> {
        self.levels -= 1;
        if self.levels == 0 {
            return Err(too_deep());
        }
        let value = read(self);
        self.levels += 1;
        value
    }
}

#[cold]
fn too_deep() -> DeError {
    DeError(Box::new(format!("values nest {MAX_DEPTH} levels deep or more")))
}

fn not_utf8(e: Utf8Error) -> DeError {
    DeError(Box::new(format!("a string is not UTF-8: {e}")))
}

fn end() -> DeError {
    error("the input ended in the middle of a value")
}

fn bad_varint(bits: u32) -> DeError {
    DeError(Box::new(format!("a varint is too long for a {bits}-bit integer")))
}

/// Undoes [`zigzag`](super::ser): 0, 1, 2, 3 → 0, -1, 1, -2.
#[inline]
fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = DeError;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DeError> {
        Err(error("postcard does not describe its values: the type must be known to decode it"))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.byte()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            other => Err(DeError(Box::new(format!("a bool is 0 or 1, not {other}")))),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_i8(self.byte()? as i8)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // A 16-bit varint holds at most u16::MAX, whose unzigzag fits an i16.
        visitor.visit_i16(unzigzag(self.varint::<16>()?) as i16)
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_i32(unzigzag(self.varint::<32>()?) as i32)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_i64(unzigzag(self.varint::<64>()?))
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let value = self.long_varint(128)?;
        visitor.visit_i128(((value >> 1) as i128) ^ -((value & 1) as i128))
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_u8(self.byte()?)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // The varint's limits keep it within 16 bits.
        visitor.visit_u16(self.varint::<16>()? as u16)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_u32(self.varint::<32>()? as u32)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_u64(self.varint::<64>()?)
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_u128(self.long_varint(128)?)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let bytes = self.take(4)?.try_into().map_err(|_| end())?;
        visitor.visit_f32(f32::from_le_bytes(bytes))
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let bytes = self.take(8)?.try_into().map_err(|_| end())?;
        visitor.visit_f64(f64::from_le_bytes(bytes))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.str()?;
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => visitor.visit_char(c),
            _ => Err(DeError(Box::new(format!("a char is one character, not {} bytes of text", text.len())))),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_borrowed_str(self.str()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // The value owns its text (a `String`), so the visitor copies it anyway: validated on
        // a copy where that is faster (see `utf8`).
        utf8::copied(self.bytes()?, |text| visitor.visit_str(text)).map_err(not_utf8)?
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_borrowed_bytes(self.bytes()?)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_borrowed_bytes(self.bytes()?)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.byte()? {
            0 => visitor.visit_none(),
            1 => self.nested(|reader| visitor.visit_some(reader)),
            other => Err(DeError(Box::new(format!("an option is 0 (none) or 1 (some), not {other}")))),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        self.nested(|reader| visitor.visit_newtype_struct(reader))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let left = self.len()?;
        self.nested(|reader| visitor.visit_seq(Elements { reader, left }))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.nested(|reader| visitor.visit_seq(Elements { reader, left: len }))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let left = self.len()?;
        self.nested(|reader| visitor.visit_map(Elements { reader, left }))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // A struct is its fields in order, with no names and no count.
        self.deserialize_tuple(fields.len(), visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // The variant's content, if any, is read inside `visit_enum`: one level for both.
        self.nested(|reader| visitor.visit_enum(reader))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DeError> {
        Err(error("postcard writes no names: fields are in order and variants by index"))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DeError> {
        Err(error("postcard does not describe its values: an unknown field cannot be skipped"))
    }
}

/// The elements of a sequence, tuple or struct, or the entries of a map: `left` more values.
struct Elements<'a, 'de> {
    reader: &'a mut Reader<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = DeError;

    /// What a derived `Deserialize` calls for each field of a struct (and `Vec`'s for each
    /// element). serde's default calls `next_element_seed`, and at the benchmark message's 40
    /// fields LLVM kept that a call per field, about 29 instructions each; inlined into the
    /// derived code it is a few (`callpath --callgrind`, 100 callers: 22,595 → 22,040
    /// instructions a call, client and server together, two decodes of 40 fields each).
    #[inline(always)]
    fn next_element<T: de::Deserialize<'de>>(&mut self) -> Result<Option<T>, DeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        T::deserialize(&mut *self.reader).map(Some)
    }

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.reader).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_, 'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.reader).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        seed.deserialize(&mut *self.reader)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::EnumAccess<'de> for &mut Reader<'de> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        // The variant's index, as a u32 the derived impls match against their variants.
        let index = self.varint::<32>()? as u32;
        let variant = seed.deserialize(IntoDeserializer::<DeError>::into_deserializer(index))?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Reader<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_seq(Elements { reader: self, left: len })
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_seq(Elements { reader: self, left: fields.len() })
    }
}
