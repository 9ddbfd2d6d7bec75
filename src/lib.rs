//! zrpc: an RPC framework in which a plain Rust trait is the service definition.
//!
//! (Crate docs are completed with the transport; see README.md.)

#[doc(inline)]
pub use zrpc_macros::service;

#[cfg(feature = "json")]
pub use zrpc_core::Json;
pub use zrpc_core::{
    Code, Codec, CodecError, CodecId, Context, Hints, Metadata, Method, NamedService, Postcard, Request, Response,
    Router, Status, TraceContext,
};

pub use zrpc_transport::{
    Address, Backoff, Channel, ChannelBuilder, ChannelConfig, Server, ServerBuilder, ServerConfig,
};

/// The wire protocol, the connection state machine and the byte streams, for people writing
/// other transports, clients in other languages, or fuzzers.
pub use zrpc_transport as transport;

/// Modules of the core, for paths such as `zrpc::codec::Codec`.
pub use zrpc_core::{codec, context, metadata, request, router, status, trace};

#[doc(hidden)]
pub use zrpc_core::__private;
