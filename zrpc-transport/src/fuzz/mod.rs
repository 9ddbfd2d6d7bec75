//! Entry points for fuzzing: the frame decoder and the mux driven over arbitrary bytes, with the
//! protocol's invariants checked (feature `fuzzing`; not a stable API).
//!
//! The targets in `zrpc-transport/fuzz/` are a line each around these functions, and this
//! crate's seeded tests call them too, so the checks are written once. Each function takes the
//! fuzzer's bytes, drives the code the way a connection would, and panics (which is what a
//! fuzzer reports) when one of these breaks:
//!
//! 1. Nothing panics, whatever the bytes.
//! 2. Input is consumed only from the front, and a decoded frame consumes exactly its own bytes
//!    (and those of any frames of unknown kinds before it, which are skipped).
//! 3. The outcome does not depend on how the bytes were split into reads: fed all at once or in
//!    small pieces, the frames, events, queued output and error are the same.
//! 4. A decoded frame encodes back to the same frame.
//! 5. The mux's bookkeeping matches a model of it: a peer's request is reported once while in
//!    progress, a response only for a call this side has pending, a cancel only for a call in
//!    progress; the handshake succeeds or fails exactly as `docs/PROTOCOL.md` §3 and §5 say.
//! 6. Everything the mux queues is valid protocol within the peer's `max_frame`.
//! 7. After an error the connection is over: the mux's last queued frame is a GOAWAY saying why,
//!    and it reads nothing more.
//!
//! `docs/PROTOCOL.md` ("Fuzzing") says how to run the targets.

mod frames;
mod handshake;
mod mux;

#[cfg(test)]
mod tests;

use bytes::BytesMut;

use crate::frame::{self, Decoder, Frame};
use crate::mux::ProtocolError;

pub use frames::frames;
pub use handshake::handshake;
pub use mux::mux;

/// How far a run got, for tests that check the inputs reach deep enough.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Frames decoded (`frames`) or events the mux reported (`mux`, `handshake`).
    pub count: usize,
    /// The error that ended the run; `None` when the input ran out first.
    pub error: Option<ProtocolError>,
}

/// Decodes what a mux queued: its preface, then whole frames of at most `max_frame`.
///
/// # Panics
/// When the output is not exactly that: the peer would refuse it.
fn decode_output(out: &[u8], max_frame: u32) -> Vec<Frame> {
    let mut out = BytesMut::from(out);
    assert_eq!(frame::decode_preface(&mut out), Ok(true), "the output starts with our preface");
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
