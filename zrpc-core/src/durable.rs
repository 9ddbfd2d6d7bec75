//! The identity of a durable message, as a call carries it in its [`Context`](crate::Context).
//!
//! Durable calls (the `durable` feature of `zrpc-transport`) are oneway calls that a sender's
//! outbox logs on disk and delivers in order, and that a receiver's inbox records before
//! acknowledging and hands to its handler once. Their storage and delivery live in
//! `zrpc_transport::durable`; the types here are the ones a call's context carries, so that a
//! handler can read [`Context::durable_id`](crate::Context::durable_id) and a connection can
//! put a message's identity on the wire, in any build.

use std::fmt;
use std::sync::Arc;

/// The identity of one outbox log: 64 random bits drawn when the log is created.
///
/// It tells apart two logs of the same sender name: an outbox deleted and created again starts
/// its sequences at 1 again, and without a new id a receiver would take its first messages for
/// duplicates of the old log's and never run them. Shown as 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboxId(u64);

impl OutboxId {
    /// The id with these bits, as read from a log's header or from the wire.
    pub const fn from_u64(bits: u64) -> OutboxId {
        OutboxId(bits)
    }

    /// The id's bits, as written to a log's header and to the wire.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for OutboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The stable identity of a durable message: (sender, outbox, sequence).
///
/// The same message has the same id wherever and however often it is seen: on every delivery
/// attempt, in the receiver's inbox, and in the handler's [`Context`](crate::Context) each time
/// its handler runs, so that a handler that runs again after a crash inside it can recognise
/// the message and skip what it already did.
///
/// - `sender`: the sender's name as recorded in the outbox log when it was created (not the
///   process's current endpoint name, so that renaming a process does not change the ids of the
///   messages it already logged).
/// - `outbox`: the [`OutboxId`] of that log.
/// - `sequence`: the message's position among the messages of that outbox to one destination,
///   from 1, without gaps. A receiver sees one destination's sequence only, so for it the id is
///   unique; two destinations of one outbox both see a sequence 1.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MessageId {
    sender: Arc<str>,
    outbox: OutboxId,
    sequence: u64,
}

impl MessageId {
    /// The id of the message at `sequence` (from 1) in `sender`'s outbox `outbox`.
    pub fn new(sender: impl Into<Arc<str>>, outbox: OutboxId, sequence: u64) -> MessageId {
        MessageId { sender: sender.into(), outbox, sequence }
    }

    /// The sender's name, as recorded in its outbox.
    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// The sender's name, shared.
    pub fn sender_arc(&self) -> &Arc<str> {
        &self.sender
    }

    /// The outbox log the message was appended to.
    pub fn outbox(&self) -> OutboxId {
        self.outbox
    }

    /// The message's position in its outbox's stream to this receiver, from 1.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

/// `sender/outbox/sequence`, as in `shop-1/3f2a9c0d11e4b7a5/42`: one token for logs.
impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.sender, self.outbox, self.sequence)
    }
}

/// A durable message on a call: what [`Context::durable`](crate::Context::durable) holds.
///
/// - On the sending side an outbox's delivery task sets it on the call that delivers the
///   message; the connection then sends the request as a durable one (`docs/PROTOCOL.md` §19),
///   and only to a peer that records durable calls and announced `destination` as its name.
/// - On the receiving side the inbox sets it on the call that hands the message to its
///   handler: `destination` is the server's own name and `acknowledged` is the sequence
///   before the message's (every message before it was recorded).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Durable {
    /// The message's identity.
    pub id: MessageId,
    /// The highest sequence of the message's stream that the receiver has acknowledged to the
    /// sender (0 for none); below `id.sequence()`.
    pub acknowledged: u64,
    /// The receiver's endpoint name.
    pub destination: Arc<str>,
    /// How many messages the call carries: 1, or a batch's count, from `id` on in sequence;
    /// the call's payload is then that many stored REQUEST frames (`docs/PROTOCOL.md` §19),
    /// and the connection sends it only to a peer that takes batches.
    pub count: u32,
}

impl Durable {
    /// Message `id` on its way to `destination`, which has acknowledged its stream up to
    /// `acknowledged`.
    pub fn new(id: MessageId, acknowledged: u64, destination: impl Into<Arc<str>>) -> Durable {
        Durable { id, acknowledged, destination: destination.into(), count: 1 }
    }

    /// A batch of `count` messages from `id` on, on its way to `destination`; see
    /// [`Durable::count`].
    pub fn batch(id: MessageId, count: u32, acknowledged: u64, destination: impl Into<Arc<str>>) -> Durable {
        Durable { id, acknowledged, destination: destination.into(), count }
    }

    /// Whether the call carries a batch of messages rather than one.
    pub fn is_batch(&self) -> bool {
        self.count > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_as_one_token_with_the_outbox_in_fixed_width_hex() {
        let id = MessageId::new("shop-1", OutboxId::from_u64(0x3f2a), 42);
        assert_eq!(id.to_string(), "shop-1/0000000000003f2a/42");
        assert_eq!((id.sender(), id.outbox().as_u64(), id.sequence()), ("shop-1", 0x3f2a, 42));
    }

    #[test]
    fn ids_differ_by_outbox_even_under_one_sender_name() {
        let old = MessageId::new("shop-1", OutboxId::from_u64(1), 1);
        let recreated = MessageId::new("shop-1", OutboxId::from_u64(2), 1);
        assert_ne!(old, recreated);
    }
}
