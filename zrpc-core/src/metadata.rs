//! Request and response metadata: string keys and byte values, like gRPC headers.
//!
//! Metadata that arrived over a connection stays as it came: the frame's metadata block,
//! validated once and shared with the frame ([`Metadata::decode_wire`]), read in place by
//! [`Metadata::get`] and [`Metadata::iter`]. It costs a fixed few dozen bytes whatever the number
//! of entries, so a peer's metadata never takes more memory than its own bytes on the wire (a
//! parsed list would take 60 to 90 bytes per entry, 15 times a 6-byte entry). The first change
//! ([`insert`](Metadata::insert), [`append`](Metadata::append), [`remove`](Metadata::remove))
//! turns it into a list of its own.
//!
//! The block's layout is the protocol's (`docs/PROTOCOL.md` §6): per entry `key_len u8`, the key
//! (UTF-8), `value_len u32` big-endian, the value; the entry count travels before the block.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

/// An ordered list of `key → value` entries carried beside a call's payload.
///
/// Keys are short strings (at most 255 bytes on the wire), values opaque bytes. A key may appear
/// more than once; [`Metadata::get`] returns the first. An empty `Metadata` does not allocate.
#[derive(Clone, Default)]
pub struct Metadata {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Entries(Vec<(Cow<'static, str>, Bytes)>),
    /// `len` entries as they arrived, checked by [`Metadata::decode_wire`]: every length within
    /// the block, every key UTF-8.
    Wire {
        block: Bytes,
        len: u16,
    },
}

impl Default for Repr {
    fn default() -> Repr {
        Repr::Entries(Vec::new())
    }
}

/// Why a metadata block could not be decoded; each reason names the field that ran short or
/// was invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub &'static str);

impl Metadata {
    /// An empty set.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Checks `count` entries at the front of `src` and returns them, sharing `src`'s memory,
    /// with the number of bytes they take.
    ///
    /// # Errors
    /// When an entry runs past the end of `src` or a key is not UTF-8.
    pub fn decode_wire(src: &Bytes, count: u16) -> Result<(Metadata, usize), WireError> {
        let mut pos = 0;
        for _ in 0..count {
            let (key, value) = entry_at(src, pos)?;
            std::str::from_utf8(&src[key.clone()]).map_err(|_| WireError("metadata key is not utf-8"))?;
            pos = value.end;
        }
        let metadata = match count {
            0 => Metadata::new(),
            len => Metadata { repr: Repr::Wire { block: src.slice(..pos), len } },
        };
        Ok((metadata, pos))
    }

    /// The first value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The first value stored under `key`, sharing the memory it arrived in (no copy).
    pub fn get_bytes(&self, key: &str) -> Option<Bytes> {
        match &self.repr {
            Repr::Entries(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()),
            Repr::Wire { block, .. } => {
                WireEntries::new(block).find(|(k, _)| &block[k.clone()] == key.as_bytes()).map(|(_, v)| block.slice(v))
            }
        }
    }

    /// Replaces every value under `key` with `value`.
    pub fn insert(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Bytes>) {
        let key = key.into();
        let entries = self.entries_mut();
        entries.retain(|(k, _)| *k != key);
        entries.push((key, value.into()));
    }

    /// Adds a value under `key`, keeping the ones already there.
    pub fn append(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Bytes>) {
        self.entries_mut().push((key.into(), value.into()));
    }

    /// Removes every value under `key`, returning the first.
    pub fn remove(&mut self, key: &str) -> Option<Bytes> {
        let first = self.get_bytes(key)?;
        self.entries_mut().retain(|(k, _)| k != key);
        Some(first)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Entries(entries) => entries.len(),
            Repr::Wire { len, .. } => usize::from(*len),
        }
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> Iter<'_> {
        let inner = match &self.repr {
            Repr::Entries(entries) => IterInner::Entries(entries.iter()),
            Repr::Wire { block, len } => IterInner::Wire { block, entries: WireEntries::new(block), left: *len },
        };
        Iter { inner }
    }

    /// The entries as a list of their own, made from the received block on first use.
    fn entries_mut(&mut self) -> &mut Vec<(Cow<'static, str>, Bytes)> {
        if let Repr::Wire { block, .. } = &self.repr {
            let entries = WireEntries::new(block)
                .map(|(k, v)| (Cow::Owned(String::from_utf8_lossy(&block[k]).into_owned()), block.slice(v)))
                .collect();
            self.repr = Repr::Entries(entries);
        }
        match &mut self.repr {
            Repr::Entries(entries) => entries,
            Repr::Wire { .. } => unreachable!("made a list just above"),
        }
    }
}

/// The byte ranges of the key and the value of the entry at `pos` in a block.
fn entry_at(block: &[u8], pos: usize) -> Result<(std::ops::Range<usize>, std::ops::Range<usize>), WireError> {
    let key_len = *block.get(pos).ok_or(WireError("body ends inside a metadata key length"))?;
    let key = pos + 1..pos + 1 + usize::from(key_len);
    let len_at = key.end;
    let value_len = block.get(len_at..len_at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()).ok_or(WireError(
        if block.len() < len_at {
            "body ends inside a metadata key"
        } else {
            "body ends inside a metadata value length"
        },
    ))?;
    let value_len =
        usize::try_from(u32::from_be_bytes(value_len)).map_err(|_| WireError("metadata value runs past the body"))?;
    let value_start = len_at + 4;
    let value_end = value_start
        .checked_add(value_len)
        .filter(|&end| end <= block.len())
        .ok_or(WireError("metadata value runs past the body"))?;
    Ok((key, value_start..value_end))
}

/// The entries of a checked block, as byte ranges; stops at the first that does not parse (none
/// does not, once [`Metadata::decode_wire`] accepted the block).
struct WireEntries<'a> {
    block: &'a [u8],
    pos: usize,
}

impl<'a> WireEntries<'a> {
    fn new(block: &'a [u8]) -> WireEntries<'a> {
        WireEntries { block, pos: 0 }
    }
}

impl Iterator for WireEntries<'_> {
    type Item = (std::ops::Range<usize>, std::ops::Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.block.len() {
            return None;
        }
        let (key, value) = entry_at(self.block, self.pos).ok()?;
        self.pos = value.end;
        Some((key, value))
    }
}

/// The entries of a [`Metadata`], in order: `(key, value)`.
pub struct Iter<'a> {
    inner: IterInner<'a>,
}

enum IterInner<'a> {
    Entries(std::slice::Iter<'a, (Cow<'static, str>, Bytes)>),
    Wire { block: &'a Bytes, entries: WireEntries<'a>, left: u16 },
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            IterInner::Entries(entries) => entries.next().map(|(k, v)| (k.as_ref(), &v[..])),
            IterInner::Wire { block, entries, left } => {
                let (key, value) = entries.next()?;
                *left = left.saturating_sub(1);
                // Checked when the block was decoded.
                let key = std::str::from_utf8(&block[key]).unwrap_or_default();
                Some((key, &block[value]))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = match &self.inner {
            IterInner::Entries(entries) => entries.len(),
            IterInner::Wire { left, .. } => usize::from(*left),
        };
        (len, Some(len))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").field("left", &self.len()).finish()
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Metadata) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Metadata {}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter().map(|(k, v)| (k, Bytes::copy_from_slice(v)))).finish()
    }
}

impl<K: Into<Cow<'static, str>>, V: Into<Bytes>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Metadata {
        Metadata { repr: Repr::Entries(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block of `entries` as the protocol lays it out.
    fn block(entries: &[(&str, &[u8])]) -> Bytes {
        let mut out = Vec::new();
        for (key, value) in entries {
            out.push(key.len() as u8);
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value);
        }
        Bytes::from(out)
    }

    #[test]
    fn insert_replaces_and_append_keeps() {
        let mut md = Metadata::new();
        md.append("k", "a");
        md.append("k", "b");
        assert_eq!(md.get("k"), Some(&b"a"[..]));
        md.insert("k", "c");
        assert_eq!(md.len(), 1);
        assert_eq!(md.remove("k").as_deref(), Some(&b"c"[..]));
        assert!(md.is_empty());
    }

    #[test]
    fn received_metadata_is_read_in_place_and_shares_the_frame() {
        let mut src = block(&[("tenant", b"acme"), ("k", b"1"), ("k", b"2")]).to_vec();
        src.extend_from_slice(b"payload");
        let src = Bytes::from(src);
        let (md, used) = Metadata::decode_wire(&src, 3).expect("a valid block");
        assert_eq!(&src[used..], b"payload");
        assert_eq!(md.len(), 3);
        assert_eq!(md.get("k"), Some(&b"1"[..]));
        assert_eq!(md.iter().collect::<Vec<_>>(), [("tenant", &b"acme"[..]), ("k", b"1"), ("k", b"2")]);
        let value = md.get_bytes("tenant").expect("present");
        assert!(src.as_ptr_range().contains(&value.as_ptr()), "the value is a slice of the frame, not a copy");
        let list: Metadata = [("tenant", "acme"), ("k", "1"), ("k", "2")].into_iter().collect();
        assert_eq!(md, list, "a received block equals the same entries built by hand");
    }

    #[test]
    fn changing_received_metadata_keeps_the_other_entries() {
        let src = block(&[("a", b"1"), ("b", b"2"), ("a", b"3")]);
        let (mut md, _) = Metadata::decode_wire(&src, 3).expect("a valid block");
        md.insert("b", "two");
        md.append("c", "3");
        assert_eq!(md.iter().collect::<Vec<_>>(), [("a", &b"1"[..]), ("a", b"3"), ("b", b"two"), ("c", b"3")]);
        assert_eq!(md.remove("a").as_deref(), Some(&b"1"[..]));
        assert_eq!(md.len(), 2);
    }

    #[test]
    fn a_block_that_runs_short_or_is_not_utf8_is_refused() {
        let whole = block(&[("key", b"value")]);
        for cut in 0..whole.len() {
            assert!(Metadata::decode_wire(&whole.slice(..cut), 1).is_err(), "cut at {cut}");
        }
        assert_eq!(
            Metadata::decode_wire(&whole, 2).map(|_| ()),
            Err(WireError("body ends inside a metadata key length"))
        );
        let bad_key = block(&[("\u{e9}", b"")]);
        let mut bad_key = bad_key.to_vec();
        bad_key[1] = 0xff;
        assert_eq!(
            Metadata::decode_wire(&Bytes::from(bad_key), 1).map(|_| ()),
            Err(WireError("metadata key is not utf-8"))
        );
        let huge_value = Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            Metadata::decode_wire(&huge_value, 1).map(|_| ()),
            Err(WireError("metadata value runs past the body"))
        );
    }

    #[test]
    fn many_received_entries_cost_no_memory_per_entry() {
        let entries: Vec<(String, Vec<u8>)> = (0..1000).map(|i| (format!("k{i}"), vec![1])).collect();
        let borrowed: Vec<(&str, &[u8])> = entries.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
        let src = block(&borrowed);
        let (md, _) = Metadata::decode_wire(&src, 1000).expect("a valid block");
        assert_eq!(md.len(), 1000);
        assert_eq!(md.get("k999"), Some(&[1][..]));
        // The received form holds the block and a count: its size does not depend on the entries.
        assert!(std::mem::size_of::<Metadata>() <= 48);
    }
}
