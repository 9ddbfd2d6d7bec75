//! The transport-independent core of [zrpc](https://docs.rs/zrpc): what a call is, what can go
//! wrong with it, and how its values become bytes.
//!
//! Most users depend on the `zrpc` facade, which re-exports everything here.
//!
//! | module | what it holds |
//! |---|---|
//! | [`context`] | [`Context`]: deadline, metadata, caller name, trace, balancing hints |
//! | [`status`] | [`Status`] and [`Code`], the framework's error |
//! | [`codec`] | the [`Codec`] trait and [`CodecId`]: [`Postcard`] (default), JSON, MessagePack and raw bytes (features) |
//! | [`compression`] | [`Compression`]: the payload compression algorithms, by wire id |
//! | [`request`] | the [`Request`] and [`Response`] envelopes middleware sees |
//! | [`router`] | [`Router`]: many named services behind one `tower::Service` |
//! | [`descriptor`] | [`ServiceDescriptor`]: a service's methods, flags, arguments and types as data, for reflection |
//! | [`spread`] | [`Spread`]: one call to several endpoints at once, broadcast and fork |
//! | [`balance`] | load-balancing policies ([`balance::Pick`]): p2c, least-active, random, (weighted) round-robin, consistent hash |
//! | [`breaker`] | [`breaker::CircuitBreaker`]: a per-endpoint circuit breaker (closed / open / half-open) |
//! | [`backoff`] | capped exponential backoff with jitter, shared by retries and reconnects |
//! | [`limit`] | concurrency and rate limits that refuse (or wait) instead of queueing |
//! | [`discover`] | where endpoints are: [`discover::Instance`], [`discover::Static`], filters |
//! | [`timeout`] | [`TimeoutLayer`]: whole-call and per-attempt deadlines |
//! | [`retry`] | [`RetryLayer`] and [`FailMode`]: failfast, failover, failtry, failbackup; backoff and retry budget |
//! | [`metadata`], [`trace`] | call metadata and W3C trace context |
//! | [`observe`] | a `tracing` span per call on each side, and metrics through the `metrics` facade (feature `metrics`) |
//! | [`zero_copy`] | [`Text`] and [`Blob`]: strings and bytes decoded as slices of the frame, without copying (a `Text` when it is ASCII) |
//!
//! # Features
//! - `json`: the JSON codec (a default of the `zrpc` facade, not of this crate).
//! - `metrics`: counters, gauges and histograms of calls through the `metrics` facade.
//! - `msgpack`: the MessagePack codec (rmp-serde).
//! - `raw`: the raw-bytes codec, for methods whose argument and result are byte strings.
//! - `schema`: JSON Schemas (schemars) in the descriptors of services marked
//!   `#[zrpc::service(schema)]`; implies `json`.
//! - `fuzzing`: `zrpc_core::fuzz`, the entry point of the `payload` fuzz target in
//!   `zrpc-transport/fuzz/` (zrpc's postcard decoder against the `postcard` crate's); not a
//!   stable API.

pub mod backoff;
pub mod balance;
pub mod breaker;
pub mod codec;
pub mod compression;
pub mod context;
pub mod descriptor;
pub mod discover;
pub mod durable;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
pub mod identity;
pub mod limit;
pub mod metadata;
pub mod observe;
pub mod peer;
pub mod request;
pub mod retry;
pub mod router;
pub mod spread;
pub mod status;
pub mod timeout;
pub mod trace;
pub mod zero_copy;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

#[cfg(feature = "json")]
pub use codec::Json;
#[cfg(feature = "msgpack")]
pub use codec::MsgPack;
#[cfg(feature = "raw")]
pub use codec::Raw;
pub use codec::{Codec, CodecError, CodecId, Postcard};
pub use compression::Compression;
pub use context::{Context, Hints, PickRecord};
pub use descriptor::ServiceDescriptor;
pub use identity::Identity;
pub use metadata::Metadata;
pub use peer::Peer;
pub use request::{Method, Request, Response};
pub use retry::{FailMode, RetryLayer};
pub use router::{NamedService, Routable, Router};
pub use spread::Spread;
pub use status::{Code, Status};
pub use timeout::TimeoutLayer;
pub use trace::TraceContext;
pub use zero_copy::{Blob, Text};
