//! Limits: how many calls run at once, and how many start per second.
//!
//! | layer | at its limit |
//! |---|---|
//! | [`ConcurrencyLimitLayer::new`] | refuses the call at once |
//! | [`ConcurrencyLimitLayer::waiting`] | makes the call wait for a slot, up to its deadline |
//! | [`RateLimitLayer`] | refuses the call (token bucket) |
//!
//! A refusal is [`Code::ResourceExhausted`](crate::Code::ResourceExhausted) marked
//! [unprocessed](crate::Status::mark_unprocessed): a server's refusal crosses the wire with that
//! mark, and the client's fail mode resends the call to another endpoint whether or not the
//! method is idempotent, since it never ran. Refusing rather than queueing is what an overloaded
//! server should do: a queue only hides the overload until deadlines expire in it.
//!
//! On a server, add them with `Server::builder().layer(...)`; on a client, the waiting
//! concurrency limit caps the calls a client has in flight.

pub mod concurrency;
pub mod rate;

pub use concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer};
pub use rate::{RateLimit, RateLimitLayer};
