//! The identity of a durable message: who sent it, from which outbox log, at which position.
//! The types live in `zrpc-core` ([`zrpc_core::durable`]), since a call's `Context` carries
//! them; they are re-exported here with the rest of the durable API.

pub use zrpc_core::durable::{MessageId, OutboxId};
