//! [`Decoder`]: whole frames out of a byte stream, checked against a size limit.

use bytes::{Bytes, BytesMut};

use super::control::{decode_credit, decode_goaway};
use super::hello::decode_hello;
use super::request::decode_request;
use super::response::decode_response;
use super::wire::{LENGTH_LEN, Reader};
use super::{DEFAULT_MAX_FRAME, Frame, FrameError, HEADER_LEN, kind};

/// The most room [`Decoder::decode`] reserves for the rest of an incomplete frame at once.
pub const RESERVE_AHEAD: usize = 64 * 1024;

/// Makes room in `buf` for at least `room` more bytes (when it has less) without its capacity
/// passing `end` bytes, unless it already had that much.
///
/// For a buffer assembling a frame of `end` bytes: it grows by doubling, so that the bytes
/// copied while a frame arrives in small reads add up to about its size, but stops at the
/// frame's end. `BytesMut::reserve` doubles past it, so that
/// assembling a frame just over 8 MiB took a buffer of 16, and one of 16 MiB up to 32.
pub(crate) fn grow_within(buf: &mut BytesMut, room: usize, end: usize) {
    if buf.capacity() - buf.len() >= room {
        return;
    }
    let capacity = buf.capacity().saturating_mul(2).max(buf.len() + room).min(end.max(buf.len() + room));
    // Through a `Vec`, whose `reserve_exact` reallocates in place where the allocator can (a
    // large buffer is remapped, not copied, and never exists twice); the conversions copy
    // nothing when the buffer is not shared with frames decoded from it.
    let mut bytes = Vec::from(std::mem::take(buf));
    bytes.reserve_exact(capacity - bytes.len());
    *buf = BytesMut::from(Bytes::from(bytes));
}

/// Decodes frames from the front of a buffer, refusing any frame whose `length` exceeds the
/// limit this side announced in its `HELLO`.
///
/// It keeps no state between calls besides the limit: feed it the bytes read so far, as
/// often as they arrive.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_frame: u32,
    last_len: usize,
}

impl Default for Decoder {
    /// A decoder with [`DEFAULT_MAX_FRAME`].
    fn default() -> Decoder {
        Decoder::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder {
    /// A decoder that accepts frames whose `length` is at most `max_frame`.
    ///
    /// Announce the same value in `HELLO`; the protocol requires at least [`super::MIN_MAX_FRAME`].
    pub fn new(max_frame: u32) -> Decoder {
        Decoder { max_frame, last_len: 0 }
    }

    /// The size on the wire (`4 + length`) of the frame [`decode`](Decoder::decode) returned
    /// last, frames of unknown kinds skipped before it not included.
    pub fn last_len(&self) -> usize {
        self.last_len
    }

    /// The largest `length` this decoder accepts.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// How many bytes the frame at the front of `src` still lacks, when it is larger than
    /// [`RESERVE_AHEAD`]; `None` for a smaller frame, or while its length has not arrived.
    ///
    /// A reader that reads no more than this keeps the bytes after a large frame out of the
    /// large frame's buffer, so that the small frames that follow it never share its memory
    /// (see [`decode`](Decoder::decode)).
    pub fn large_frame_rest(&self, src: &[u8]) -> Option<usize> {
        let len = u32::from_be_bytes(src.get(..LENGTH_LEN)?.try_into().ok()?);
        let total = usize::try_from(len).ok()?.checked_add(LENGTH_LEN)?;
        (len <= self.max_frame && total > RESERVE_AHEAD && src.len() < total).then(|| total - src.len())
    }

    /// Decodes the next whole frame from the front of `src`, consuming exactly its bytes.
    ///
    /// Returns `Ok(None)` when `src` does not hold a whole frame yet; nothing is consumed, and
    /// once the length passed the limit `src` is reserved room for the rest of the frame, up to
    /// [`RESERVE_AHEAD`] bytes at a time.
    /// Frames of unknown kinds are consumed and skipped. Payloads share `src`'s allocation:
    /// nothing is copied. After a frame larger than [`RESERVE_AHEAD`], whatever follows it in
    /// `src` is moved to a fresh buffer, so that no frame shares an allocation with a much
    /// larger one: a slice of a frame that is kept pins at most about twice the frame, or
    /// [`RESERVE_AHEAD`] plus one read for a small one.
    ///
    /// # Errors
    /// [`FrameError::FrameTooLarge`] as soon as the 4 length bytes arrived and exceed the limit
    /// (before anything is allocated), [`FrameError::TooShort`] as soon as they arrived and are
    /// under 10, and
    /// [`FrameError::Malformed`] for a body that breaks the protocol. Every error is a connection error: the stream cannot be resynchronised.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            let Some(&[a, b, c, d]) = src.get(..LENGTH_LEN) else {
                return Ok(None);
            };
            let len = u32::from_be_bytes([a, b, c, d]);
            let too_large = FrameError::FrameTooLarge { len: u64::from(len), max: self.max_frame };
            if len > self.max_frame {
                return Err(too_large);
            }
            if len < (HEADER_LEN - LENGTH_LEN) as u32 {
                // Decided from the length alone, as for a frame too large: no byte after it can
                // make the frame valid, so none is waited for.
                return Err(FrameError::TooShort { len });
            }
            let total = usize::try_from(len).ok().and_then(|len| len.checked_add(LENGTH_LEN)).ok_or(too_large)?;
            if src.len() < total {
                // Room for what is coming, but never far ahead of what arrived: a peer that only
                // claims a large frame costs at most this much (the buffer then grows, doubling,
                // as the bytes actually come, up to the frame's size).
                let room = (total - src.len()).min(RESERVE_AHEAD);
                if total > RESERVE_AHEAD {
                    grow_within(src, room, total);
                } else {
                    src.reserve(room);
                }
                return Ok(None);
            }
            let frame = src.split_to(total).freeze();
            if total > RESERVE_AHEAD {
                // The buffer grew to hold this frame, and what follows it shares that memory: a
                // small frame kept from there (a handler holding a metadata value) would pin the
                // large one's whole allocation long after it is gone. Move the rest to a buffer
                // of its own: nothing, for a reader that follows `large_frame_rest`.
                *src = BytesMut::from(&src[..]);
            }
            // Returned as parsed, where `parse` wrote it: unwrapping the frame to wrap it again,
            // or binding it by a pattern, copied all of it.
            let parsed = parse(frame);
            match parsed {
                Ok(None) => continue,
                Ok(Some(_)) => self.last_len = total,
                Err(_) => {}
            }
            return parsed;
        }
    }

    /// Decodes `frame`, which must be exactly one whole frame (length field included), without
    /// copying it: the frame's fields and payload are slices of it. For frames stored whole
    /// (a durable log's messages), not for a stream. `Ok(None)` for a frame of an unknown kind.
    ///
    /// # Errors
    /// As [`decode`](Decoder::decode), and [`FrameError::Malformed`] when `frame` is shorter or
    /// longer than its length field says.
    pub fn decode_whole(&self, frame: &Bytes) -> Result<Option<Frame>, FrameError> {
        let malformed = |reason| FrameError::Malformed { kind: "frame", reason };
        let Some(&[a, b, c, d]) = frame.get(..LENGTH_LEN) else {
            return Err(malformed("shorter than its length field"));
        };
        let len = u32::from_be_bytes([a, b, c, d]);
        if len > self.max_frame {
            return Err(FrameError::FrameTooLarge { len: u64::from(len), max: self.max_frame });
        }
        if len < (HEADER_LEN - LENGTH_LEN) as u32 {
            return Err(FrameError::TooShort { len });
        }
        if usize::try_from(len).ok().and_then(|len| len.checked_add(LENGTH_LEN)) != Some(frame.len()) {
            return Err(malformed("not as long as its length field says"));
        }
        parse(frame.clone())
    }
}

/// Parses one whole frame (length field included); `None` for an unknown kind. A payload is
/// the frame itself, advanced past its header and fields (see [`Reader::rest`]).
fn parse(frame: Bytes) -> Result<Option<Frame>, FrameError> {
    let mut header = Reader::new(frame, "frame");
    header.u32("missing length")?;
    let kind = header.u8("missing kind")?;
    let bits = header.u8("missing flags")?;
    let id = header.u64("missing id")?;
    let frame = match kind {
        kind::HELLO => Frame::Hello(decode_hello(header.body("hello"))?),
        kind::REQUEST => Frame::Request(decode_request(id, bits, header.body("request"))?),
        kind::RESPONSE => Frame::Response(decode_response(id, bits, header.body("response"))?),
        kind::CANCEL => Frame::Cancel { id },
        kind::PING => Frame::Ping { nonce: id },
        kind::PONG => Frame::Pong { nonce: id },
        kind::GOAWAY => Frame::GoAway(decode_goaway(id, header.body("goaway"))?),
        kind::CREDIT => decode_credit(id, header.body("credit"))?,
        _ => return Ok(None),
    };
    Ok(Some(frame))
}
