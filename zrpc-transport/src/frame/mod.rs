//! zrpc's wire format, version 1: frames to bytes and back, with no I/O.
//!
//! This module is the protocol's reference implementation; `docs/PROTOCOL.md` specifies the
//! same bytes for people writing clients in other languages or fuzzing a server. The connection
//! state machine ([`mux`](crate::mux)) owns the state — which ids are in flight, deadlines,
//! heartbeats — and calls into this module to turn bytes into [`Frame`]s and back.
//!
//! # The contract
//!
//! 1. Each side first sends an 8-byte preface ([`encode_preface`]): `ZRPC`, the version byte
//!    [`VERSION`], three reserved bytes. [`decode_preface`] accepts a partial preface and fails on
//!    the first byte that differs, so an HTTP client on the port is refused after one byte.
//! 2. Then come frames: `length u32` · `kind u8` · `flags u8` · `id u64` · body, all integers
//!    big-endian. `length` counts the bytes after itself, so it is at least 10.
//! 3. [`Decoder::decode`] checks `length` against its limit as soon as the 4 length bytes have
//!    arrived, before reserving or allocating anything: a peer claiming a 4 GiB frame costs
//!    nothing. It returns `Ok(None)` until a whole frame is buffered and consumes exactly one
//!    frame's bytes when it returns one.
//! 4. Decoding is zero-copy for payloads and metadata values (slices of the read buffer) and
//!    never panics: every byte a peer controls is bounds-checked, and a frame whose `length`
//!    disagrees with its fields is [`FrameError::Malformed`].
//! 5. Unknown kinds are skipped and unknown flag bits ignored, so that later versions can add
//!    both. A `REQUEST` or `RESPONSE` with `COMPRESSED` is decoded as it came: its payload
//!    stays compressed, and must hold at least its [`CompressedHeader`] (else the frame is
//!    [`FrameError::Malformed`]). Decompressing it, and every check on what the header says, is
//!    [`crate::compression`]'s, for that call alone.
//! 6. The `encode_*` functions append one whole frame, reserving its size once, and return
//!    that size. Those that can fail validate everything first and leave `dst` unchanged on
//!    error; a frame larger than the peer's `max_frame` (from its [`Hello`]) is
//!    [`FrameError::FrameTooLarge`], never sent.
//! 7. Every [`FrameError`] from decoding is a connection error: the stream cannot be
//!    resynchronised, so the connection sends [`GoAway`] and closes.
//!
//! # Example
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use zrpc_core::Request;
//! use zrpc_transport::frame::{self, Decoder, Frame};
//!
//! let mut buf = BytesMut::new();
//! let req = Request::new("Greeter.hello", Bytes::from_static(b"\x04zrpc"));
//! frame::encode_request(&mut buf, 1, &req, frame::DEFAULT_MAX_FRAME)?;
//!
//! let mut decoder = Decoder::default();
//! let Some(Frame::Request(frame)) = decoder.decode(&mut buf)? else { panic!("a request") };
//! assert_eq!((frame.id, frame.method_str(), &frame.payload[..]), (1, "Greeter.hello", &b"\x04zrpc"[..]));
//! assert!(buf.is_empty());
//! # Ok::<(), frame::FrameError>(())
//! ```

mod compressed;
mod control;
mod decoder;
mod error;
mod hello;
mod preface;
mod request;
mod response;
mod wire;

#[cfg(test)]
mod tests;

pub use compressed::{COMPRESSED_HEADER_LEN, CompressedHeader};
pub use control::{GoAway, encode_cancel, encode_credit, encode_goaway, encode_ping, encode_pong};
pub(crate) use decoder::grow_within;
pub use decoder::{Decoder, RESERVE_AHEAD};
pub use error::FrameError;
pub use hello::{FlowLimits, Hello, encode_hello};
pub use preface::{decode_preface, encode_preface};
pub use request::{
    DurableFields, MAX_DURABLE_BATCH, RequestFrame, encode_compressed_request_at, encode_request, encode_request_at,
    encode_request_frame,
};
pub use response::{ResponseFrame, encode_compressed_response, encode_response, encode_response_frame};

/// The first four bytes of the preface: ASCII `ZRPC`.
pub const MAGIC: [u8; 4] = *b"ZRPC";
/// The protocol version this module speaks.
pub const VERSION: u8 = 1;
/// Bytes in the preface: magic, version, three reserved bytes.
pub const PREFACE_LEN: usize = 8;
/// Bytes in a frame header: `length u32`, `kind u8`, `flags u8`, `id u64`.
pub const HEADER_LEN: usize = 14;
/// The frame limit a side announces unless configured otherwise: 16 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 16 * 1024 * 1024;
/// The smallest `max_frame` a `HELLO` may announce.
pub const MIN_MAX_FRAME: u32 = 1024;
/// The longest first frame a side reads, whatever its own `max_frame`: 128 KiB. The largest
/// `HELLO` zrpc writes (a 65,535-byte token, three lists of 255) is about 66 KiB. Before its
/// `HELLO` a peer has not said who it is, nor shown a token: it should not be able to make a
/// connection hold a frame as large as an authenticated peer's requests (16 MiB by default).
pub const MAX_HELLO: u32 = 128 * 1024;

/// Bits of a frame's `flags` byte. Bits a receiver does not know are ignored.
pub mod flags {
    /// `REQUEST`: the caller expects no response.
    pub const ONEWAY: u8 = 1;
    /// `REQUEST`, `RESPONSE`: the payload is compressed, with an algorithm the receiver
    /// announced in its `HELLO`, and starts with a [`super::CompressedHeader`].
    pub const COMPRESSED: u8 = 2;
    /// `REQUEST`: a trace context follows the method.
    pub const TRACE: u8 = 4;
    /// `REQUEST`: the method may safely run twice.
    pub const IDEMPOTENT: u8 = 8;
    /// `RESPONSE` (errors only): the handler never ran, so the call may be resent anywhere
    /// (a request refused after GOAWAY or by a limit).
    pub const UNPROCESSED: u8 = 16;
    /// `REQUEST`: a durable message (`docs/PROTOCOL.md` §19): its identity follows the trace,
    /// and its RESPONSE is the receiver's acknowledgement. Never with [`ONEWAY`].
    pub const DURABLE: u8 = 32;
    /// `REQUEST`, with [`DURABLE`]: a batch of a stream's consecutive messages (`docs/PROTOCOL.md`
    /// §19): a count follows the sender name, and the payload is that many stored REQUEST
    /// frames. Sent only to a peer whose `INBOX` announced batches.
    pub const BATCH: u8 = 64;
}

/// Values of a frame's `kind` byte. Frames of other kinds are skipped.
pub mod kind {
    /// [`super::Hello`]: first frame each way.
    pub const HELLO: u8 = 0x01;
    /// [`super::RequestFrame`].
    pub const REQUEST: u8 = 0x02;
    /// [`super::ResponseFrame`].
    pub const RESPONSE: u8 = 0x03;
    /// [`super::Frame::Cancel`].
    pub const CANCEL: u8 = 0x04;
    /// [`super::Frame::Ping`].
    pub const PING: u8 = 0x05;
    /// [`super::Frame::Pong`].
    pub const PONG: u8 = 0x06;
    /// [`super::GoAway`].
    pub const GOAWAY: u8 = 0x07;
    /// [`super::Frame::Credit`].
    pub const CREDIT: u8 = 0x08;
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The peer's announcement, first frame each way.
    Hello(Hello),
    /// A call.
    Request(RequestFrame),
    /// A call's outcome.
    Response(ResponseFrame),
    /// The peer gave up on request `id`.
    Cancel {
        /// The request to cancel.
        id: u64,
    },
    /// A liveness probe; answer with [`Frame::Pong`] carrying the same nonce.
    Ping {
        /// An opaque value to echo.
        nonce: u64,
    },
    /// The answer to a [`Frame::Ping`].
    Pong {
        /// The nonce of the ping it answers.
        nonce: u64,
    },
    /// The peer is closing the connection.
    GoAway(GoAway),
    /// Flow-control credit for the receiver's oneway requests that the sender stopped tracking.
    Credit {
        /// How many requests.
        requests: u64,
        /// Their total size on the wire.
        bytes: u64,
    },
}
