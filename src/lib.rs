//! zrpc: an RPC framework in which a plain Rust trait is the service definition.
//!
//! `#[zrpc::service]` on a trait generates a typed client stub (`XClient`) and a server dispatch
//! table (`XServer`). Both are ordinary [`tower::Service`](https://docs.rs/tower/latest/tower/trait.Service.html)s, so timeouts, retries, load
//! balancing and limits are layers you compose. Calls travel over zrpc's own multiplexed
//! protocol (`docs/PROTOCOL.md`): many calls in flight per connection, cancellation, deadlines,
//! heartbeats and graceful shutdown, over TCP, Unix sockets or in-memory pipes.
//!
//! ```
//! use zrpc::{Channel, Context, Server};
//!
//! /// Greets people.
//! #[zrpc::service]
//! pub trait Greeter {
//!     /// Greets a caller by name.
//!     async fn hello(&self, ctx: &Context, name: String) -> String;
//! }
//!
//! struct Hello;
//!
//! impl Greeter for Hello {
//!     async fn hello(&self, ctx: &Context, name: String) -> String {
//!         format!("hello {name}, from {}", ctx.caller())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder()
//!     .name("greeter-1")
//!     .add_service(GreeterServer::new(Hello))
//!     .bind("tcp://127.0.0.1:0")
//!     .await?;
//! let channel = Channel::builder(server.local_addr().clone()).name("docs").connect_lazy();
//! tokio::spawn(server.serve());
//!
//! let greeter = GreeterClient::new(channel);
//! assert_eq!(greeter.hello("world".into()).await?, "hello world, from docs");
//!
//! // The same client type calls an implementation in-process, with no network: for tests.
//! let local = GreeterClient::new(GreeterServer::new(Hello));
//! assert_eq!(local.hello("test".into()).await?, "hello test, from ");
//! # Ok(())
//! # }
//! ```
//!
//! # Crate map
//!
//! | crate | what it holds |
//! |---|---|
//! | `zrpc-macros` | [`service`], the attribute macro |
//! | `zrpc-core` | [`Context`], [`Status`]/[`Code`], codecs, [`Request`]/[`Response`], [`Router`]; the governance layers: [`discover`], [`balance`], [`breaker`], [`retry`] ([`FailMode`]), [`timeout`] |
//! | `zrpc-transport` | the protocol ([`transport::frame`], [`transport::mux`]), [`reflection`] (what a server serves, asked over the wire), [`Server`] (and [`ServerHandle`] to stop it), [`Channel`], [`Client`] (discovery, balancing, fail modes, timeouts and breakers over channels), [`Node`] (a named peer that serves and calls on every connection) and [`Peers`] (connected peers by name) |
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tcp` | yes | `tcp://host:port` addresses |
//! | `unix` | yes | `unix:///path` addresses (Unix-domain sockets) |
//! | `json` | yes | the JSON codec ([`CodecId::Json`]), so that callers in other languages are answered (serde_json), and [`dynamic`]: any method called by name in JSON |
//! | `msgpack` | no | the MessagePack codec ([`CodecId::MsgPack`], rmp-serde): arguments as a map keyed by name |
//! | `raw` | no | the raw-bytes codec ([`CodecId::Raw`]): the payload is the one byte-string argument or result |
//! | `etcd` | no | discovery and registration through etcd: `etcd::{Etcd, EtcdRegistry}` |
//! | `tls` | no | TLS under the protocol: `tls::{ServerTls, ClientTls}` (rustls, ring provider) |
//! | `zstd`, `lz4`, `gzip` | no | payload compression with that algorithm, negotiated in the HELLO ([`Compression`], [`transport::compression`]) |
//! | `compression` | no | `zstd`, `lz4` and `gzip` |
//! | `metrics` | no | counters, gauges and histograms of calls and connections through the `metrics` facade ([`observe`]) |
//! | `schema` | no | JSON Schemas (schemars) of the argument, result and error types of services marked `#[zrpc::service(schema)]`, in [`reflection`]; implies `json` |
//! | `opentelemetry` | no | the call spans joined into OpenTelemetry traces across processes, with `tracing-opentelemetry`'s layer ([`observe`]) |
//! | `gateway` | no | [`gateway`]: an HTTP/JSON gateway (`POST /{service}/{method}`) in front of a [`Client`], with a web console (axum); implies `json` |
//! | `durable` | no | [`durable`]: oneway calls logged on disk by an `Outbox` and delivered in order until acknowledged, recorded by a server's `Inbox` and handled once, across crashes of either end |
//! | `full` | no | everything above |
//! | `cli` | no | the `zrpc` command (a binary, no API): list, describe, call, bench and watch servers from a terminal; `cargo install zrpc --features cli`. Not in `full` |
//!
//! In-memory addresses (`mem://name`) are always available.

#[doc(inline)]
pub use zrpc_macros::service;

#[cfg(feature = "json")]
pub use zrpc_core::Json;
#[cfg(feature = "msgpack")]
pub use zrpc_core::MsgPack;
#[cfg(feature = "raw")]
pub use zrpc_core::Raw;
pub use zrpc_core::{
    Blob, Code, Codec, CodecError, CodecId, Compression, Context, FailMode, Hints, Metadata, Method, NamedService,
    Peer, Postcard, Request, Response, Routable, Router, Spread, Status, Text, TraceContext,
};

pub use zrpc_transport::{
    Address, Backoff, Channel, ChannelBuilder, ChannelConfig, ChannelState, Client, ClientBuilder, ConnectionInfo,
    ConnectionLimits, ConnectionStats, EndpointStatus, Node, NodeBuilder, PeerEvent, PeerWatch, Peers, Server,
    ServerBuilder, ServerConfig, ServerHandle, ToAddress,
};

/// The wire protocol, the connection state machine and the byte streams, for people writing
/// other transports, clients in other languages, or fuzzers.
pub use zrpc_transport as transport;

/// Modules of the core, for paths such as `zrpc::codec::Codec`.
pub use zrpc_core::{codec, context, metadata, observe, peer, request, router, spread, status, trace, zero_copy};

/// The governance layers, for paths such as `zrpc::discover::Static` and `zrpc::balance::P2c`;
/// [`Client`] assembles them.
pub use zrpc_core::{backoff, balance, breaker, discover, limit, retry, timeout};

#[doc(hidden)]
pub use zrpc_core::__private;

/// The built-in reflection service, `zrpc.Reflection`: [`reflection::ReflectionClient`] lists
/// and describes what an endpoint serves, as [`reflection::ServiceDescriptor`]s.
pub use zrpc_transport::reflection;

/// Calls by name with JSON arguments and answers, learning each method's flags from reflection:
/// what the gateway and the `zrpc` CLI call with ([`dynamic::DynamicClient`], [`dynamic::Target`]).
#[cfg(feature = "json")]
pub use zrpc_transport::dynamic;

/// schemars, whose `JsonSchema` the types of a `#[zrpc::service(schema)]` implement (feature
/// `schema`): derive it with `#[derive(zrpc::schemars::JsonSchema)]` and
/// `#[schemars(crate = "zrpc::schemars")]`, or depend on `schemars` 1.x yourself.
#[cfg(feature = "schema")]
pub use schemars;

/// The HTTP/JSON gateway (feature `gateway`): `POST /{service}/{method}` with a JSON body calls
/// a method through a [`Client`], statuses become HTTP codes, and `/` serves a web console.
#[cfg(feature = "gateway")]
pub use zrpc_transport::gateway;

/// Durable calls (feature `durable`): oneway calls logged in an outbox on disk and delivered in
/// order until the receiver's inbox has recorded them; each handler runs once, again (with the
/// same [`MessageId`](durable::MessageId) in its context) only if the receiver died inside it.
#[cfg(feature = "durable")]
pub use zrpc_transport::durable;

/// Discovery by DNS, and registration of servers in a service registry.
pub use zrpc_transport::{Dns, Registration, Registry};

/// Discovery and registration through etcd: [`etcd::Etcd`] for clients, [`etcd::EtcdRegistry`]
/// for servers.
#[cfg(feature = "etcd")]
pub use zrpc_transport::etcd;

/// TLS under the protocol: [`tls::ServerTls`] for servers, [`tls::ClientTls`] for channels and
/// clients.
#[cfg(feature = "tls")]
pub use zrpc_transport::tls;
