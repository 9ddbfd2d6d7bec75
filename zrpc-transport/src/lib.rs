//! zrpc's wire protocol, connection multiplexing, and transports.
//!
//! Most users depend on the `zrpc` facade, which re-exports what is here as `zrpc::Server`,
//! `zrpc::Channel` and friends.
//!
//! | module | what it holds |
//! |---|---|
//! | [`compression`] | payload compression (zstd, lz4, gzip) negotiated in the HELLO, with the decompressed size capped before allocating |
//! | [`frame`] | the wire format (`docs/PROTOCOL.md`): preface, HELLO, frames; encode and decode, no I/O |
//! | [`mux`] | one end of a connection as a state machine: calls both ways, flow control, deadlines, heartbeat, GOAWAY; no I/O |
//! | [`limits`] | [`ConnectionLimits`]: what a peer can make a connection hold, and how the bounds compose with a server's limits |
//! | [`server`] | [`Server`]: accept loop, many services on one address, graceful shutdown; [`ServerHandle`] to stop it and watch it stop |
//! | [`channel`] | [`Channel`]: a client's shared connection to one endpoint, with reconnect |
//! | [`client`] | [`Client`]: a whole service's endpoints behind discovery, balancing, fail modes, timeouts and breakers |
//! | `durable` | durable calls (feature `durable`): `Outbox` and its `Destination` (logged oneway calls, delivered until acknowledged), `Inbox` (given to a server: recorded, deduplicated, handled once), their segment log and design |
//! | `dynamic` | `DynamicClient`: any method called by name with JSON arguments and answers (feature `json`); `Target`, where a tool calls |
//! | `gateway` | the HTTP/JSON gateway and its web console (feature `gateway`): `POST /{service}/{method}` through a [`Client`] |
//! | [`dns`] | [`Dns`]: discovery from a DNS name, resolved again on an interval |
//! | [`registry`] | [`Registry`]: where a server registers itself while it serves |
//! | [`reflection`] | the built-in `zrpc.Reflection` service: what an endpoint serves, listed and described over the wire |
//! | `etcd` | `Etcd` and `EtcdRegistry`: discovery and registration through etcd (feature `etcd`) |
//! | [`address`] | [`Address`]: `tcp://`, `unix://`, `mem://` |
//! | [`stream`] | [`Stream`]: the byte streams connections run over |
//! | `tls` | `ServerTls` and `ClientTls`: TLS under the protocol (feature `tls`) |
//!
//! # Features
//! - `tcp` (default): TCP transport.
//! - `unix` (default): Unix-domain socket transport.
//! - `etcd`: discovery and registration through etcd (the `etcd-client` crate).
//! - `tls`: TLS over TCP (rustls with the ring provider).
//! - `json`: `zrpc_transport::dynamic`, calls by name in JSON (gateways, the `zrpc` CLI).
//! - `gateway`: `zrpc_transport::gateway`, an HTTP/JSON gateway with a web console (axum); implies
//!   `json`.
//! - `durable`: `zrpc_transport::durable`, durable calls: an outbox that logs oneway calls and
//!   delivers them, an inbox a server records them in (a segment log, CRC-32 by `crc32fast`).
//! - `zstd`, `lz4`, `gzip`: payload compression with that algorithm (the `zstd`, `lz4_flex` and
//!   `flate2` crates), announced in the HELLO; `compression` turns on all three.
//! - `fuzzing`: `zrpc_transport::fuzz`, the entry points of the fuzz targets in `fuzz/`; not a
//!   stable API.
//!
//! The in-memory transport (`mem://name`) is always available.

pub mod address;
pub mod auth;
mod budget;
pub mod channel;
pub mod client;
pub mod compression;
mod conn;
pub mod dns;
#[cfg(feature = "durable")]
pub mod durable;
#[cfg(feature = "json")]
pub mod dynamic;
#[cfg(feature = "etcd")]
pub mod etcd;
mod feed;
pub mod frame;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod limits;
mod listener;
pub mod mux;
pub mod node;
pub mod peers;
pub mod reflection;
pub mod registry;
pub mod server;
pub mod stream;
#[cfg(feature = "tls")]
pub mod tls;

pub use address::{Address, InvalidAddress, ToAddress};
pub use channel::{Channel, ChannelBuilder, ChannelConfig, ChannelState};
pub use client::{Client, ClientBuilder, EndpointStatus};
pub use dns::Dns;
#[cfg(feature = "etcd")]
pub use etcd::{Etcd, EtcdRegistry};
pub use limits::ConnectionLimits;
pub use mux::ConnectionStats;
pub use node::{Node, NodeBuilder};
pub use peers::{PeerEvent, PeerWatch, Peers};
pub use registry::{Registration, Registry};
pub use server::{ConnectionInfo, Server, ServerBuilder, ServerConfig, ServerHandle};
pub use stream::Stream;
#[cfg(feature = "tls")]
pub use tls::{ClientTls, ServerTls, TlsError};
pub use zrpc_core::Compression;
pub use zrpc_core::backoff::Backoff;

/// The endpoint name used when none is configured: the program's file name.
fn default_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|stem| stem.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "zrpc".to_owned())
}
