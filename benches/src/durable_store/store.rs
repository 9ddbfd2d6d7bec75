//! The interface every engine is measured through, and the messages it stores.

use crate::BoxError;

/// Bytes of a message's payload: the 300-byte message.
pub(crate) const PAYLOAD: usize = 300;

/// Destinations the messages are spread over, round robin, as an outbox with a few receivers.
pub(crate) const DESTINATIONS: u64 = 8;

/// A message's key: destination (`u32`) then sequence (`u64`), big-endian, so that byte order is
/// delivery order within a destination.
pub(crate) type Key = [u8; 12];

/// The key of the `n`th message appended: destination `n % DESTINATIONS`, sequence
/// `n / DESTINATIONS`.
pub(crate) fn key(n: u64) -> Key {
    let mut key = [0; 12];
    // The destination is below DESTINATIONS, so it fits a u32.
    key[..4].copy_from_slice(&((n % DESTINATIONS) as u32).to_be_bytes());
    key[4..].copy_from_slice(&(n / DESTINATIONS).to_be_bytes());
    key
}

/// The destination and sequence a key holds.
pub(crate) fn split(key: &[u8]) -> Option<(u32, u64)> {
    let dest = u32::from_be_bytes(key.get(..4)?.try_into().ok()?);
    let seq = u64::from_be_bytes(key.get(4..12)?.try_into().ok()?);
    Some((dest, seq))
}

/// How far a write must have gone when the call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// Handed to the OS (`write`): survives the process being killed, not a power loss.
    Process,
    /// On the disk (`fdatasync` or the engine's equivalent): survives a power loss.
    Power,
}

/// What reopening a store found: enough for an outbox to start delivering.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Recovered {
    /// Destinations with undelivered messages.
    pub(crate) destinations: usize,
    /// Undelivered messages, when the open counted them (the segment log must read them all).
    pub(crate) messages: Option<u64>,
}

/// One storage engine holding an outbox.
pub(crate) trait Store: Send {
    /// Appends `batch` (key, payload) as one transaction or one write, durable to `level` when
    /// it returns.
    fn append(&mut self, batch: &[(Key, &[u8])], level: Level) -> Result<(), BoxError>;

    /// Removes delivered messages, as one transaction, durable to `level`.
    fn remove(&mut self, keys: &[Key], level: Level) -> Result<(), BoxError>;

    /// What an outbox reads when it opens: per destination, its first undelivered and its last
    /// sequence.
    fn recover(&mut self) -> Result<Recovered, BoxError>;

    /// Reads every stored message (a full scan), returning how many there are.
    fn scan(&mut self) -> Result<u64, BoxError>;
}
