//! Strings and byte strings that share the frame they were decoded from.
//!
//! Decoding a `String` or `Vec<u8>` field copies it out of the received frame into an allocation
//! of its own: a message with eight strings costs eight allocations to decode. [`Text`] and
//! [`Blob`] hold a reference-counted slice of a [`Bytes`] buffer instead. When zrpc decodes a
//! call's arguments or its result with postcard (the default codec), each `Blob` in it is a
//! slice of the frame itself: no allocation, no copy; so is each `Text` that starts with 64
//! bytes of ASCII or is ASCII, while other text is copied, because checking it as a shared
//! string would cost several times the copy (see [when they pay](#when-they-pay)). With
//! MessagePack and raw bytes, each `Blob` is a slice. Elsewhere they copy like `String` and
//! `Vec<u8>` do: `Text` with MessagePack, both with JSON, and both when a user deserializes
//! them from their own data.
//!
//! On the wire they are a string and a byte string, so a peer may declare the same field as
//! `String` or `Vec<u8>`.
//!
//! A slice keeps its whole frame alive: a `Text` kept for long keeps every byte of the message
//! it came in. Convert it to a `String` to keep a small part of a large message.
//!
//! # When they pay
//!
//! Sharing is not free: each slice counts a reference to the frame (an atomic add, and a
//! subtract when dropped), which costs about what allocating and copying a short string does,
//! and a shared `Text` is checked for UTF-8 by `str::from_utf8` (the `bytestring` crate builds
//! the shared string and takes no text checked elsewhere without `unsafe`, which zrpc does not
//! use in parsing). That check is quick over ASCII and takes other text a character at a time,
//! where a `String` of 32 bytes or more is checked 64 bytes at a time: shared, a Chinese text
//! of 16 KiB decoded in 12.9 µs, against 1.6 µs as a `String`. So a `Text` is shared only when
//! its first 64 bytes are ASCII (or all of it, when shorter), and copied and checked as a
//! `String` is otherwise; text that turns to other characters after the first 64 bytes is
//! shared and checked as before. Measured with `cargo bench -p zrpc-benches --bench frame --
//! codec/text` and, for the benchmark's message, `codec/postcard_decode` against
//! `codec/postcard_decode_text` (Intel Xeon, 2026-12-01):
//!
//! | one field of | as `String` | as `Text` | as `Text`, when it was always shared |
//! |---|---:|---:|---:|
//! | Chinese, about 1 KiB | 135 ns | 167 ns | 964 ns |
//! | Chinese, 16 KiB | 1.84 µs | 1.84 µs | 12.9 µs |
//! | Chinese, 256 KiB | 32.3 µs | 32.6 µs | 175 µs |
//! | ASCII, about 1 KiB | 77 ns | 132 ns | 116 ns |
//! | ASCII, 16 KiB | 357 ns | 408 ns | 383 ns |
//! | ASCII, 256 KiB | 12.8 µs | 6.6 µs | 6.0 µs |
//! | the benchmark's message, eight short strings, four Chinese | 412 ns | 597 ns | 690–790 ns |
//!
//! So `Text` saves time only for long ASCII text (about 16 KiB and more), and allocations for
//! ASCII text of any length (the message: 5 allocations instead of 9, since its four Chinese
//! strings are copied); `String` is the faster choice for short strings. A shared `Text`
//! keeps its frame alive.
//!
//! `Blob` pays at every size: serde reads a `Vec<u8>` one element at a time, so a 64 KiB
//! `Vec<u8>` field decodes in 59 µs, and a 64 KiB `Blob` in 40 ns.
//!
//! # How decoding finds the frame
//!
//! [`CodecId::decode_shared`](crate::CodecId::decode_shared) (used by the generated client and
//! server) names the frame in a thread-local while it decodes. A `Text` or `Blob` whose bytes lie
//! inside that frame takes a slice of it; any other bytes are copied. Decoding is synchronous, so
//! the name never outlives the call that set it, and a panicking `Deserialize` impl restores the
//! previous one on its way out.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Unexpected, Visitor};
use serde::{Serialize, Serializer};

thread_local! {
    /// The frame being decoded by `decode_shared` on this thread, if any.
    static FRAME: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` with `frame` as the buffer [`Text`] and [`Blob`] fields may share.
// Inlined so that the decoded value is not moved once more on its way out (see
// `Served::decode`).
#[inline]
pub(crate) fn sharing<R>(frame: &Bytes, decode: impl FnOnce() -> R) -> R {
    /// Puts back the frame of an enclosing decode, also when `decode` panics.
    struct Restore(Option<Bytes>);

    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            FRAME.with(|frame| *frame.borrow_mut() = previous);
        }
    }

    let previous = FRAME.with(|current| current.replace(Some(frame.clone())));
    let _restore = Restore(previous);
    decode()
}

fn is_sharing() -> bool {
    FRAME.with(|frame| frame.borrow().is_some())
}

/// `bytes` as a slice of the frame being decoded when it lies inside it, else a copy.
fn share(bytes: &[u8]) -> Bytes {
    FRAME.with(|frame| match &*frame.borrow() {
        Some(frame) if contains(frame, bytes) => frame.slice_ref(bytes),
        _ => Bytes::copy_from_slice(bytes),
    })
}

fn contains(outer: &[u8], inner: &[u8]) -> bool {
    let (outer, inner) = (outer.as_ptr_range(), inner.as_ptr_range());
    outer.start <= inner.start && inner.end <= outer.end
}

/// An immutable UTF-8 string that may share the buffer it was decoded from; see the
/// [module docs](self).
///
/// Use it for long ASCII string fields of arguments and results, or where allocations count
/// more than time: `String` decodes faster for short strings, and text that is not ASCII is
/// copied as a `String` would be (see [when they pay](self#when-they-pay)). It dereferences to
/// `&str`.
///
/// # Examples
///
/// ```
/// use zrpc_core::{CodecId, Text};
///
/// let frame = CodecId::Postcard.encode_to_bytes(&("hello", 7u32))?;
/// let (text, n): (Text, u32) = CodecId::Postcard.decode_shared(&frame)?;
/// assert_eq!((&*text, n), ("hello", 7));
/// // No copy: the text is a slice of the frame.
/// assert!(frame.as_ptr_range().contains(&text.as_ptr()));
/// # Ok::<(), zrpc_core::CodecError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(ByteString);

impl Text {
    /// An empty text.
    pub const fn new() -> Text {
        Text(ByteString::new())
    }

    /// A text of a string constant, without copying it.
    pub const fn from_static(text: &'static str) -> Text {
        Text(ByteString::from_static(text))
    }

    /// The text as a `&str`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text's UTF-8 bytes, sharing its buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text(text.into())
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Text {
        Text(text.into())
    }
}

impl From<Text> for String {
    fn from(text: Text) -> String {
        text.as_str().to_owned()
    }
}

impl TryFrom<Bytes> for Text {
    type Error = std::str::Utf8Error;

    /// Checks that `bytes` is UTF-8, and shares it.
    fn try_from(bytes: Bytes) -> Result<Text, std::str::Utf8Error> {
        ByteString::try_from(bytes).map(Text)
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        // In a binary format a string is its bytes (postcard: a length and the bytes). Asking
        // for bytes lets the frame be shared, and the UTF-8 check runs once, here, rather than
        // once in the codec and again to build the `ByteString`.
        if is_sharing() && !deserializer.is_human_readable() {
            deserializer.deserialize_bytes(TextVisitor)
        } else {
            deserializer.deserialize_str(TextVisitor)
        }
    }
}

struct TextVisitor;

/// How much of a text [`TextVisitor`] looks at to decide whether to share it.
const ASCII_PREFIX: usize = 64;

impl TextVisitor {
    fn checked<E: de::Error>(bytes: Bytes) -> Result<Text, E> {
        Text::try_from(bytes).map_err(|_| TextVisitor::not_utf8())
    }

    fn not_utf8<E: de::Error>() -> E {
        E::invalid_value(Unexpected::Other("bytes that are not UTF-8"), &TextVisitor)
    }
}

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a UTF-8 string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Text, E> {
        Ok(Text::from(text))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Text, E> {
        Ok(Text::from(text))
    }

    /// Text that starts with [`ASCII_PREFIX`] bytes of ASCII (or is ASCII, if shorter) is
    /// shared: `str::from_utf8`, which the shared string runs, checks ASCII quickly. Other text
    /// is copied, checked 64 bytes at a time as a `String` is, several times faster than the
    /// check sharing it would take (see [when they pay](self#when-they-pay)). Only the prefix
    /// is looked at, so that ASCII is read once, not twice; text that turns to other
    /// characters after it is shared and checked as before.
    fn visit_borrowed_bytes<E: de::Error>(self, bytes: &'de [u8]) -> Result<Text, E> {
        if bytes.get(..ASCII_PREFIX).unwrap_or(bytes).is_ascii() {
            return TextVisitor::checked(share(bytes));
        }
        crate::codec::postcard::utf8::copied(bytes, |text| Text::from(text)).map_err(|_| TextVisitor::not_utf8())
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Text, E> {
        TextVisitor::checked(Bytes::copy_from_slice(bytes))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Text, E> {
        TextVisitor::checked(Bytes::from(bytes))
    }
}

/// An immutable byte string that may share the buffer it was decoded from; see the
/// [module docs](self).
///
/// Use it for byte fields of arguments and results instead of `Vec<u8>`; it dereferences to
/// `&[u8]` and converts to and from [`Bytes`] without copying.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Blob(Bytes);

impl Blob {
    /// An empty blob.
    pub const fn new() -> Blob {
        Blob(Bytes::new())
    }

    /// A blob of a byte-string constant, without copying it.
    pub const fn from_static(bytes: &'static [u8]) -> Blob {
        Blob(Bytes::from_static(bytes))
    }

    /// The bytes, sharing the blob's buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Bytes> for Blob {
    fn from(bytes: Bytes) -> Blob {
        Blob(bytes)
    }
}

impl From<Vec<u8>> for Blob {
    fn from(bytes: Vec<u8>) -> Blob {
        Blob(bytes.into())
    }
}

impl From<&[u8]> for Blob {
    fn from(bytes: &[u8]) -> Blob {
        Blob(Bytes::copy_from_slice(bytes))
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Blob, D::Error> {
        deserializer.deserialize_bytes(BlobVisitor)
    }
}

struct BlobVisitor;

impl<'de> Visitor<'de> for BlobVisitor {
    type Value = Blob;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, bytes: &'de [u8]) -> Result<Blob, E> {
        Ok(Blob(share(bytes)))
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Blob, E> {
        Ok(Blob::from(bytes))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Blob, E> {
        Ok(Blob::from(bytes))
    }

    /// JSON writes bytes as an array of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        Ok(Blob::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::CodecId;

    fn within(frame: &Bytes, bytes: &[u8]) -> bool {
        frame.as_ptr_range().contains(&bytes.as_ptr())
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Message {
        name: Text,
        data: Blob,
        note: String,
    }

    fn message() -> Message {
        Message { name: "many things past".into(), data: Blob::from_static(b"\x00\x01\x02"), note: "copied".into() }
    }

    #[test]
    fn postcard_decoding_shares_the_frame() {
        let frame = CodecId::Postcard.encode_to_bytes(&message()).expect("encode");
        let decoded: Message = CodecId::Postcard.decode_shared(&frame).expect("decode");
        assert_eq!(decoded, message());
        assert!(within(&frame, decoded.name.as_bytes()), "the text is a slice of the frame");
        assert!(within(&frame, &decoded.data), "the blob is a slice of the frame");
    }

    #[test]
    fn text_that_is_not_ascii_is_copied_and_checked_like_a_string() {
        // Every length around the 32- and 64-byte thresholds of the check a copy gets.
        for len in [1, 2, 10, 31, 32, 33, 63, 64, 65, 200] {
            let text: String = "许多往事在眼前一幕一幕，é ß 😀".chars().cycle().take(len).collect();
            let frame =
                CodecId::Postcard.encode_to_bytes(&(Text::from(text.as_str()), Text::from("ascii"))).expect("encode");
            let (wide, narrow): (Text, Text) = CodecId::Postcard.decode_shared(&frame).expect("decode");
            assert_eq!(wide, text.as_str());
            assert!(!within(&frame, wide.as_bytes()), "{len} characters: copied");
            assert!(within(&frame, narrow.as_bytes()), "the ASCII text beside it is shared");
        }
        // Text that turns to other characters only after the prefix is shared, and checked.
        let late: String = "a".repeat(ASCII_PREFIX) + "许多往事";
        let frame = CodecId::Postcard.encode_to_bytes(&late).expect("encode");
        let shared: Text = CodecId::Postcard.decode_shared(&frame).expect("decode");
        assert_eq!(shared, late.as_str());
        assert!(within(&frame, shared.as_bytes()), "shared after an ASCII prefix");
        // A character cut short after a valid one: not ASCII, not UTF-8, an error either way.
        let after_prefix: Vec<u8> = [b'a'; ASCII_PREFIX].iter().chain(&[0xe4, 0xb8]).copied().collect();
        for broken in [
            &[0xe4, 0xb8, 0xad, 0xe5, 0x9b][..],
            &[b'a'; 40].iter().chain(&[0xe4, 0xb8]).copied().collect::<Vec<_>>(),
            &after_prefix,
        ] {
            let mut frame = vec![broken.len() as u8];
            frame.extend_from_slice(broken);
            assert!(CodecId::Postcard.decode_shared::<Text>(&Bytes::from(frame)).is_err(), "{broken:?}");
        }
    }

    #[test]
    fn plain_decoding_copies() {
        let frame = CodecId::Postcard.encode_to_bytes(&message()).expect("encode");
        let decoded: Message = CodecId::Postcard.decode(&frame).expect("decode");
        assert_eq!(decoded, message());
        assert!(!within(&frame, decoded.name.as_bytes()));
        assert!(!within(&frame, &decoded.data));
    }

    #[test]
    fn on_the_wire_text_and_blob_are_string_and_bytes() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Plain {
            name: String,
            data: Vec<u8>,
            note: String,
        }
        let plain = Plain { name: "many things past".into(), data: vec![0, 1, 2], note: "copied".into() };
        let ours = CodecId::Postcard.encode_to_bytes(&message()).expect("encode");
        let theirs = CodecId::Postcard.encode_to_bytes(&plain).expect("encode");
        assert_eq!(ours, theirs);
        let back: Plain = CodecId::Postcard.decode_shared(&ours).expect("decode");
        assert_eq!(back, plain);
    }

    #[test]
    fn invalid_utf8_is_a_decode_error() {
        // postcard: a length of 2, then two bytes that are not UTF-8.
        let frame = Bytes::from_static(&[2, 0xff, 0xfe]);
        assert!(CodecId::Postcard.decode_shared::<Text>(&frame).is_err());
        assert!(CodecId::Postcard.decode::<Text>(&frame).is_err());
        assert!(Text::try_from(Bytes::from_static(&[0xff, 0xfe])).is_err());
    }

    #[test]
    fn a_nested_decode_restores_the_outer_frame_even_when_it_panics() {
        let outer = CodecId::Postcard.encode_to_bytes("outer").expect("encode");
        let inner = CodecId::Postcard.encode_to_bytes("inner").expect("encode");
        let text = sharing(&outer, || {
            let nested: Text = CodecId::Postcard.decode_shared(&inner).expect("decode");
            assert!(within(&inner, nested.as_bytes()));
            let panicked = std::panic::catch_unwind(|| sharing(&inner, || panic!("a Deserialize impl panics")));
            assert!(panicked.is_err());
            share(&outer[1..])
        });
        assert!(within(&outer, &text), "the outer frame is current again");
        assert!(!is_sharing(), "and nothing is once the outer decode is done");
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_round_trips_by_copying() {
        let frame = CodecId::Json.encode_to_bytes(&message()).expect("encode");
        let decoded: Message = CodecId::Json.decode_shared(&frame).expect("decode");
        assert_eq!(decoded, message());
    }
}
