//! What a peer can make one connection hold, and how the bounds compose with a server's own
//! limits.
//!
//! Every buffer a peer can fill has a bound, the same on both ends of a connection (a
//! [`Server`](crate::Server)'s connections and a [`Channel`](crate::Channel)'s), set with
//! [`ConnectionLimits`]:
//!
//! | bound | default | past it |
//! |---|---:|---|
//! | the peer's requests in progress (waiting or being handled), oneway included: [`max_requests`](ConnectionLimits::max_requests) | 1,000 | announced in the HELLO: a zrpc peer sends no more and its callers wait, in order; a peer that ignores it is not read until it is back within it, and TCP holds it back |
//! | their total size on the wire: [`max_request_bytes`](ConnectionLimits::max_request_bytes) | 16 MiB | the same (one request alone may be larger, up to the frame limit) |
//! | bytes waiting to be written: [`max_queued_output`](ConnectionLimits::max_queued_output) | 1 MiB | no new handler starts and no new call is sent; handlers already running finish; several PINGs get one PONG |
//! | metadata entries in one request or response: [`max_metadata_entries`](ConnectionLimits::max_metadata_entries) | 256 | the request is refused with `ResourceExhausted`, unprocessed; the connection stays |
//! | the frame being read | `max_frame`, 16 MiB | the connection fails: `GOAWAY`, close |
//! | the read buffer | the frame being read, when over 64 KiB; else 256 KiB | never passed: a frame over 64 KiB is assembled in a buffer that grows, doubling, up to exactly its size (counted by [`ConnectionStats::peak_read_buffer`](crate::ConnectionStats::peak_read_buffer)) |
//! | the first frame, before the peer's HELLO has shown its name and token | [`MAX_HELLO`](crate::frame::MAX_HELLO), 128 KiB (or `max_frame` if lower) | the same, from the frame's header |
//! | a [compressed](crate::compression) payload, once decompressed | `max_frame`, 16 MiB | refused from its header before allocating: the request is answered `ResourceExhausted`, unprocessed (an answer fails its call); the connection stays |
//!
//! A compressed request in progress counts towards `max_request_bytes` as its size on the wire
//! plus its declared uncompressed length, so the bounds hold once the peer's requests are
//! decompressed.
//!
//! So a connection holds at most about `max_queued_output` + `max_request_bytes` +
//! `max_frame` of the peer's making, plus the answers of the handlers that were running when the
//! output passed its bound, whatever the peer does: a client that never reads, pipelines a
//! million calls, or floods PINGs. Metadata that arrived stays as it came, a slice of its frame,
//! so it costs its wire size. A frame larger than 64 KiB gets a buffer of its own, so a small
//! slice a handler keeps (a metadata value, a [`Blob`](zrpc_core::Blob)) pins at most its own
//! read buffer (8 to 64 KiB), never a large frame's.
//!
//! Buffers grown by a burst are given back once it is over: once a trim window (the heartbeat
//! interval, 10 s by default, or 10 s when the heartbeat is slower or off), a connection
//! replaces an empty output buffer larger than 64 KiB and than four times the most queued in it
//! over the window, and an empty read buffer larger than 8 KiB, with empty ones; its timer
//! fires for that only while it holds such a buffer. Until 2026-12-01 a connection kept them
//! for its life (one with no heartbeat, whose timer nothing else fires, until later that day),
//! so that one large answer left up to twice `max_queued_output` plus a frame allocated, every
//! page of it written. A connection under steady load keeps buffers about the size of its batches.
//! [`ConnectionStats`](crate::ConnectionStats) shows both buffers' sizes and counts the
//! trims (`buffers_trimmed`).
//!
//! # Why the peer is held back rather than refused
//!
//! Past `max_requests` the connection stops reading instead of answering `ResourceExhausted`:
//! a refusal is itself output, which a peer that does not read would pile up again, and a
//! well-behaved zrpc peer never gets there since it knows the limit from the HELLO. Nothing is
//! dropped, nothing reordered, and the peer's requests wait in TCP, where they cost this side
//! nothing.
//!
//! # With the server's limits
//!
//! A [`Server`](crate::Server) also bounds the handlers running at once across all its
//! connections, [`ServerBuilder::max_concurrent_requests`](crate::ServerBuilder::max_concurrent_requests)
//! (default 100,000), and shares that budget fairly: a connection that finds it spent queues for
//! one unit at a time, so connections take turns, and one flooding connection gets no more of it
//! than a well-behaved one with a single call (see `budget.rs`). Nobody is refused; a connection
//! that waits stops reading once its peer reaches `max_requests`.
//!
//! Before a client is through its handshake (its TLS handshake, its HELLO, the authenticator's
//! answer) it has shown nothing, so what such connections hold is bounded for the whole server:
//! at most [`ServerBuilder::max_handshakes`](crate::ServerBuilder::max_handshakes) of them at
//! once (default 1,024, as many as the listen backlog), each holding at most a first frame of
//! `MAX_HELLO` (or a TLS handshake's messages) until the handshake's timeout (the heartbeat's,
//! 20 s by default). A connection accepted past it makes room by
//! closing the one that has waited longest: peers that connect and say nothing only ever push
//! out each other, while a client's own handshake, one round trip, is closed only if that many
//! connections arrive within it. (Refusing new connections instead would let 1,024 silent ones
//! shut everyone else out for 20 s at a time; the price is paid by bursts of TLS clients larger
//! than the bound on a server too slow for their handshakes, whose oldest are closed half-way
//! and retry.) [`ServerHandle::handshake_count`](crate::ServerHandle::handshake_count)
//! and [`ServerHandle::handshakes_evicted`](crate::ServerHandle::handshakes_evicted) count them.
//!
//! Connections open at once, in their handshake or past it, are bounded by
//! [`ServerBuilder::max_connections`](crate::ServerBuilder::max_connections) (default 65,536;
//! hyper and tonic have no such bound): one accepted while that many others are open (those
//! being refused not counted) is refused with a GOAWAY `ResourceExhausted` once its HELLO is in, its calls answered so, unprocessed, so that
//! a zrpc client fails over to another endpoint and backs off before it connects here again.
//! The connections already open keep their places: one past its handshake is a client that was
//! let in, and may be called back even while it calls nothing. So a server holds at most
//! `max_connections` connections, each about 17 KiB idle (`compare --idle-conns`) and at most
//! the per-connection bounds above busy, and keeps file descriptors for everything else however
//! many clients leak connections.
//! [`ServerHandle::connections_refused`](crate::ServerHandle::connections_refused) counts the
//! refusals (until 2026-12-01 there was no bound).
//!
//! Over TLS the GOAWAY travels inside TLS, so a refused connection first completes its TLS
//! handshake: it costs the server one handshake's CPU, as every connection it accepts does, and
//! counts towards `max_handshakes` until it is closed. Closing it unencrypted instead would save
//! that CPU only while the server is at its limit, and its client would see a failed connect
//! where the GOAWAY tells it the server is full, with the reason in the status. What bounds the
//! CPU a flood of new connections costs is a connection rate limit in front of the server (a
//! firewall's, a load balancer's), not a bound on connections held.
//!
//! Limit layers (`zrpc::limit::ConcurrencyLimitLayer`, `RateLimitLayer`) refuse rather than wait,
//! and see only what these bounds let through: with the default `max_requests` of 1,000, a
//! `ConcurrencyLimitLayer::new(10_000)` cannot be filled by fewer than ten connections, so one
//! flooding client cannot get the others refused. To keep a server's refusals for real overload,
//! set the layer's limit above `max_requests`, and use `max_concurrent_requests` to bound the
//! total fairly.

use crate::mux::{
    DEFAULT_MAX_METADATA_ENTRIES, DEFAULT_MAX_QUEUED_OUTPUT, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_REQUESTS, MuxConfig,
};

/// Bounds on what the peer of one connection can make this side hold; see the
/// [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionLimits {
    /// The peer's requests in progress here at once (waiting or being handled), oneway included.
    /// At least 1.
    pub max_requests: u32,
    /// Their total size on the wire; one request alone may be larger, up to the frame limit.
    pub max_request_bytes: u32,
    /// Bytes waiting to be written past which no new work starts.
    pub max_queued_output: usize,
    /// Metadata entries accepted in one request or response.
    pub max_metadata_entries: u16,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            max_requests: DEFAULT_MAX_REQUESTS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_queued_output: DEFAULT_MAX_QUEUED_OUTPUT,
            max_metadata_entries: DEFAULT_MAX_METADATA_ENTRIES,
        }
    }
}

impl ConnectionLimits {
    /// Copies these bounds into a mux's configuration.
    pub(crate) fn apply(&self, config: &mut MuxConfig) {
        config.max_requests = self.max_requests.max(1);
        config.max_request_bytes = self.max_request_bytes;
        config.max_queued_output = self.max_queued_output;
        config.max_metadata_entries = self.max_metadata_entries;
    }
}
