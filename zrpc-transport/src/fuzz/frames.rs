//! [`frames`]: arbitrary bytes through the [`Decoder`], checked against the framing rules of
//! `docs/PROTOCOL.md` §4.

use bytes::BytesMut;

use super::Report;
use crate::frame::{self, Decoder, Frame, FrameError, HEADER_LEN, RequestFrame, flags, kind};
use crate::mux::ProtocolError;

/// Decodes `input` with a decoder limited to `max_frame` until it fails or needs more bytes,
/// once from a buffer holding all of it and once fed a byte at a time, checking invariants 1 to 4
/// of the [module docs](super).
///
/// # Panics
/// When an invariant breaks.
pub fn frames(input: &[u8], max_frame: u32) -> Report {
    let (frames, error) = decode(input, max_frame, input.len());
    let trickled = decode(input, max_frame, 1);
    assert_eq!((&frames, &error), (&trickled.0, &trickled.1), "the frames depend on how the input was split");
    for frame in &frames {
        assert_round_trip(frame, max_frame);
    }
    Report { count: frames.len(), error: error.map(ProtocolError::Frame) }
}

/// Feeds `input` to a decoder `chunk` bytes at a time, checking every call against [`next`].
fn decode(input: &[u8], max_frame: u32, chunk: usize) -> (Vec<Frame>, Option<FrameError>) {
    let mut decoder = Decoder::new(max_frame);
    let mut src = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    for piece in input.chunks(chunk.max(1)) {
        src.extend_from_slice(piece);
        fed += piece.len();
        loop {
            let before = src.len();
            let (skipped, expected) = next(&src, max_frame);
            let result = decoder.decode(&mut src);
            let used = before - src.len();
            assert!(input[..fed].ends_with(&src), "bytes were consumed from somewhere other than the front");
            match (result, expected) {
                (Ok(Some(frame)), Next::Frame(len)) => {
                    assert_eq!(used, skipped + len, "a frame consumes exactly its bytes: {frame:?}");
                    frames.push(frame);
                }
                (Ok(None), Next::Incomplete) => {
                    assert_eq!(used, skipped, "only whole frames of unknown kinds are consumed while waiting");
                    break;
                }
                // A body that breaks the rules: the frame was taken whole, then refused.
                (Err(e @ (FrameError::Malformed { .. } | FrameError::Unsupported(_))), Next::Frame(len)) => {
                    assert_eq!(used, skipped + len, "{e}");
                    return (frames, Some(e));
                }
                (Err(FrameError::FrameTooLarge { len, max }), Next::TooLarge(want)) => {
                    assert_eq!((len, max, used), (u64::from(want), max_frame, skipped));
                    return (frames, Some(FrameError::FrameTooLarge { len, max }));
                }
                (Err(FrameError::TooShort { len }), Next::TooShort(want)) => {
                    assert_eq!((len, used), (want, skipped));
                    return (frames, Some(FrameError::TooShort { len }));
                }
                (got, want) => panic!("the decoder returned {got:?} where the protocol says {want:?}"),
            }
        }
    }
    (frames, None)
}

/// What `docs/PROTOCOL.md` §4 says comes next in a buffer, once frames of unknown kinds are
/// skipped.
#[derive(Debug)]
enum Next {
    /// A whole frame of a known kind, this many bytes long on the wire.
    Frame(usize),
    /// Not enough bytes yet.
    Incomplete,
    /// A `length` above the limit, refused as soon as its 4 bytes are there.
    TooLarge(u32),
    /// A `length` below the header, refused as soon as its 4 bytes are there.
    TooShort(u32),
}

/// Walks the frame headers at the front of `src`: the bytes of whole frames of unknown kinds
/// (which the decoder skips), then what follows them. A model of the decoder written from the
/// spec, not from the decoder.
fn next(src: &[u8], max_frame: u32) -> (usize, Next) {
    let mut skipped = 0;
    loop {
        let rest = &src[skipped..];
        let Some(&[a, b, c, d]) = rest.get(..4) else { return (skipped, Next::Incomplete) };
        let len = u32::from_be_bytes([a, b, c, d]);
        if len > max_frame {
            return (skipped, Next::TooLarge(len));
        }
        if (len as usize) < HEADER_LEN - 4 {
            return (skipped, Next::TooShort(len));
        }
        let total = 4 + len as usize;
        if rest.len() < total {
            return (skipped, Next::Incomplete);
        }
        if (kind::HELLO..=kind::CREDIT).contains(&rest[4]) {
            return (skipped, Next::Frame(total));
        }
        skipped += total;
    }
}

/// Encodes a decoded frame and decodes it again: it must come back the same, within the same
/// limit. A request whose trace was dropped (all-zero ids) comes back
/// without the `TRACE` flag, since the encoder sets it exactly when there is a trace.
fn assert_round_trip(frame: &Frame, max_frame: u32) {
    let mut buf = BytesMut::new();
    let encoded = match frame {
        Frame::Hello(hello) => frame::encode_hello(&mut buf, hello),
        Frame::Request(request) => frame::encode_request_frame(&mut buf, request, max_frame),
        Frame::Response(response) => frame::encode_response_frame(&mut buf, response, max_frame),
        Frame::Cancel { id } => {
            frame::encode_cancel(&mut buf, *id);
            Ok(HEADER_LEN)
        }
        Frame::Ping { nonce } => {
            frame::encode_ping(&mut buf, *nonce);
            Ok(HEADER_LEN)
        }
        Frame::Pong { nonce } => {
            frame::encode_pong(&mut buf, *nonce);
            Ok(HEADER_LEN)
        }
        Frame::GoAway(goaway) => {
            frame::encode_goaway(&mut buf, goaway);
            Ok(buf.len())
        }
        Frame::Credit { requests, bytes } => {
            frame::encode_credit(&mut buf, *requests, *bytes);
            Ok(buf.len())
        }
    };
    let size = encoded.unwrap_or_else(|e| panic!("{frame:?} was decoded but does not encode: {e}"));
    assert_eq!(size, buf.len(), "the encoder returned the wrong size for {frame:?}");
    let expected = match frame {
        Frame::Request(request) if request.trace.is_none() => {
            Frame::Request(RequestFrame { flags: request.flags & !flags::TRACE, ..request.clone() })
        }
        other => other.clone(),
    };
    assert_eq!(Decoder::new(max_frame).decode(&mut buf), Ok(Some(expected)), "a round trip changed the frame");
    assert!(buf.is_empty(), "a round trip left bytes behind");
}
