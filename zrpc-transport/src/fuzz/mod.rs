//! Entry points for fuzzing: the frame decoder, the mux and the connection driver run over
//! arbitrary bytes, with the protocol's invariants checked (feature `fuzzing`; not a stable API).
//! With a compression feature, `compressed` runs compressed payloads through `decompress`,
//! its bound checked; with `durable`, `durable` opens an outbox's or an inbox's log that was
//! damaged, or written by something other than zrpc (modules of their own: their checks are
//! not the numbered ones below).
//!
//! The targets in `zrpc-transport/fuzz/` are a line each around these functions, and this
//! crate's seeded tests call them too, as does its replay of what the fuzzers found
//! (`fuzz/regressions/`, docs/PROTOCOL.md §17), so the checks are written once. Each function
//! takes the fuzzer's bytes, drives the code the way a connection would, and panics (which is
//! what a fuzzer reports) when one of these breaks:
//!
//! 1. Nothing panics, whatever the bytes.
//! 2. Input is consumed only from the front, and a decoded frame consumes exactly its own bytes
//!    (and those of any frames of unknown kinds before it, which are skipped).
//! 3. The outcome does not depend on how the bytes were split into reads: fed all at once or in
//!    small pieces, with the driver acting at the same points, the frames, events, requests
//!    handed over, queued output and error are the same.
//! 4. A decoded frame encodes back to the same frame.
//! 5. The mux's bookkeeping matches a model of it: a response only for a call this side has not
//!    ended (never for one it cancelled), a oneway call's end once written, a request handed
//!    over once, oldest first, a cancel only for a call handed over; this side's own calls,
//!    cancels, answers, GOAWAY, drain, writes and heartbeat do what the mux's docs promise; the
//!    handshake succeeds or fails exactly as `docs/PROTOCOL.md` §3 and §5 say.
//! 6. Everything the mux queues is valid protocol within the peer's `max_frame` (1024 bytes
//!    before its HELLO).
//! 7. After an error the connection is over: the mux reads nothing more, and when the peer broke
//!    the protocol its last queued frame is a GOAWAY saying why (a peer found dead is sent
//!    nothing).
//! 8. Flow control and the bounds hold (`docs/PROTOCOL.md` §15, `crate::mux` "Bounds"): this
//!    side's calls stay within the peer's FLOW limits and go in order; the peer's requests in
//!    progress stay within this side's limits plus the one frame read before reading stops,
//!    and reading stops exactly while they are over; CREDIT returns exactly the oneway
//!    requests that ended, to a peer that announced FLOW; the queued output stays within
//!    `max_queued_output` plus the slack `mux_local` derives; and, through the real driver over
//!    a stream that stalls, the same bounds hold of what a connection holds, and it ends
//!    cleanly, every caller answered.
//!
//! The mux under test has small limits (`small_config`) and the peer small FLOW limits
//! (`PEER_FLOW`), or none (a peer that predates FLOW), so that every bound is in reach with
//! fuzz-sized inputs.
//!
//! `docs/PROTOCOL.md` ("Fuzzing") says how to run the targets.

#[cfg(any(feature = "zstd", feature = "lz4", feature = "gzip"))]
mod compressed;
mod conn;
#[cfg(feature = "durable")]
mod durable;
mod frames;
mod handshake;
mod mux;
mod mux_local;

#[cfg(test)]
mod tests;

use bytes::{Bytes, BytesMut};

use crate::frame::{self, Decoder, FlowLimits, Frame, Hello};
use crate::mux::{MuxConfig, ProtocolError, Role};

/// The peer's endpoint name in its (valid) HELLO.
const PEER_NAME: &str = "fuzz-peer";

/// The FLOW limits a modern peer announces: small, so that a few calls reach them.
const PEER_FLOW: FlowLimits = FlowLimits { max_requests: 3, request_bytes: 2048 };

/// The limits of the mux under test: small, so that every bound is in reach with fuzz-sized
/// inputs (a few requests of up to 1024 bytes).
fn small_config() -> MuxConfig {
    MuxConfig {
        name: "fuzz".into(),
        max_frame: frame::MIN_MAX_FRAME,
        max_requests: 3,
        max_request_bytes: 2000,
        max_queued_output: 2048,
        max_metadata_entries: 2,
        ..MuxConfig::default()
    }
}

#[cfg(any(feature = "zstd", feature = "lz4", feature = "gzip"))]
pub use compressed::compressed;
pub use conn::conn;
#[cfg(feature = "durable")]
pub use durable::durable;
pub use frames::frames;
pub use handshake::handshake;
pub use mux::mux;
pub use mux_local::mux_local;

/// How far a run got, for tests that check the inputs reach deep enough.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Frames decoded (`frames`); the handshake done (`handshake`); events the mux reported and
    /// requests it handed over (`mux`, `mux_local`); frames the peer decoded and local callers
    /// answered (`conn`); payloads decompressed (`compressed`); messages read back from the log
    /// opened (`durable`).
    pub count: usize,
    /// The error that ended the run; `None` when the input ran out first.
    pub error: Option<ProtocolError>,
}

/// What a well-behaved peer sends first: its preface and a HELLO announcing `max_frame` and,
/// unless it predates them, its FLOW limits.
fn peer_handshake(max_frame: u32, flow: Option<FlowLimits>) -> BytesMut {
    let mut stream = BytesMut::new();
    frame::encode_preface(&mut stream);
    let hello = Hello {
        name: PEER_NAME.into(),
        max_frame,
        codecs: vec![0],
        compressions: Vec::new(),
        token: Bytes::new(),
        flow,
        inbox: false,
        inbox_batches: false,
    };
    if let Err(e) = frame::encode_hello(&mut stream, &hello) {
        panic!("the peer's HELLO does not encode: {e}");
    }
    stream
}

/// How a mux run is set up, from its first byte: bit 0 the mux's role (connector, acceptor),
/// bit 1 the peer's `max_frame` (1024 or the 16 MiB default), bit 2 (`mux` only) whether the mux
/// sends a graceful GOAWAY as soon as the handshake is done, bit 3 whether the peer predates
/// flow control (its HELLO has no FLOW; otherwise it announces `PEER_FLOW`).
#[derive(Debug, Clone, Copy)]
struct Setup {
    role: Role,
    peer_max_frame: u32,
    go_away: bool,
    peer_flow: Option<FlowLimits>,
}

impl Setup {
    fn new(control: u8) -> Setup {
        Setup {
            role: if control & 1 == 0 { Role::Connector } else { Role::Acceptor },
            peer_max_frame: if control & 2 == 0 { frame::MIN_MAX_FRAME } else { frame::DEFAULT_MAX_FRAME },
            go_away: control & 4 != 0,
            peer_flow: if control & 8 == 0 { Some(PEER_FLOW) } else { None },
        }
    }

    /// The peer's preface and HELLO.
    fn peer_handshake(&self) -> BytesMut {
        peer_handshake(self.peer_max_frame, self.peer_flow)
    }
}

/// Takes the next byte off the front of a script, or 0 once it ran out: a script cut short
/// still means something.
fn arg(script: &mut &[u8]) -> u8 {
    match script.split_first() {
        Some((&byte, rest)) => {
            *script = rest;
            byte
        }
        None => 0,
    }
}

/// Decodes what a mux queued: its preface, then whole frames of at most `max_frame`.
///
/// # Panics
/// When the output is not exactly that: the peer would refuse it.
fn decode_output(out: &[u8], max_frame: u32) -> Vec<Frame> {
    let mut out = BytesMut::from(out);
    assert_eq!(frame::decode_preface(&mut out), Ok(true), "the output starts with our preface");
    decode_frames(out, max_frame)
}

/// Decodes `out`, whole frames of at most `max_frame` that a mux queued.
///
/// # Panics
/// When `out` is not exactly that: the peer would refuse it.
fn decode_frames(mut out: BytesMut, max_frame: u32) -> Vec<Frame> {
    let mut decoder = Decoder::new(max_frame);
    let mut frames = Vec::new();
    loop {
        match decoder.decode(&mut out) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => break,
            Err(e) => panic!("the mux queued a frame its peer refuses: {e}"),
        }
    }
    assert!(out.is_empty(), "the mux queued a partial frame: {out:?}");
    frames
}

/// Checks that a mux that just failed with `error` said so in a GOAWAY, its last queued frame.
fn assert_goaway_explains(frames: &[Frame], error: &ProtocolError) {
    let Some(Frame::GoAway(goaway)) = frames.last() else {
        panic!("after {error:?} the last frame queued is not a GOAWAY: {frames:?}");
    };
    assert_eq!(goaway.code, zrpc_core::Code::InvalidArgument.as_u8(), "{goaway:?}");
    assert_eq!(goaway.message, error.to_string());
}
