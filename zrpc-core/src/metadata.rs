//! Request and response metadata: string keys and byte values, like gRPC headers.

use std::borrow::Cow;

use bytes::Bytes;

/// An ordered list of `key → value` entries carried beside a call's payload.
///
/// Keys are short strings (at most 255 bytes on the wire), values opaque bytes. A key may appear
/// more than once; [`Metadata::get`] returns the first. An empty `Metadata` does not allocate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(Cow<'static, str>, Bytes)>,
}

impl Metadata {
    /// An empty set.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// The first value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Replaces every value under `key` with `value`.
    pub fn insert(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Bytes>) {
        let key = key.into();
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push((key, value.into()));
    }

    /// Adds a value under `key`, keeping the ones already there.
    pub fn append(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Bytes>) {
        self.entries.push((key.into(), value.into()));
    }

    /// Removes every value under `key`, returning the first.
    pub fn remove(&mut self, key: &str) -> Option<Bytes> {
        let first = self.get(key).cloned();
        self.entries.retain(|(k, _)| k != key);
        first
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Bytes)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

impl<K: Into<Cow<'static, str>>, V: Into<Bytes>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Metadata {
        Metadata { entries: iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_append_keeps() {
        let mut md = Metadata::new();
        md.append("k", "a");
        md.append("k", "b");
        assert_eq!(md.get("k").map(|v| &v[..]), Some(&b"a"[..]));
        md.insert("k", "c");
        assert_eq!(md.len(), 1);
        assert_eq!(md.remove("k").as_deref(), Some(&b"c"[..]));
        assert!(md.is_empty());
    }
}
