//! The control frames: `CANCEL`, `PING`, `PONG`, `GOAWAY` and `CREDIT`.

use bytes::{BufMut, BytesMut};

use super::wire::{Reader, put_header, truncate_str};
use super::{FrameError, HEADER_LEN, kind};

/// A decoded `GOAWAY` frame: the sender will process no request above `last_id` and is closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// The highest id of a request opened by the receiver that the sender has seen; requests
    /// above it were not and will not be processed, so they may be retried elsewhere.
    pub last_id: u64,
    /// Why: a [`zrpc_core::Code`] wire value, `Unavailable` for a graceful shutdown,
    /// `InvalidArgument` for a protocol violation by the receiver.
    pub code: u8,
    /// What happened, for logs (at most 65535 bytes on the wire).
    pub message: String,
}

/// Appends a `CANCEL` frame for the request `id`.
pub fn encode_cancel(dst: &mut BytesMut, id: u64) {
    put_header(dst, (HEADER_LEN - 4) as u32, kind::CANCEL, 0, id);
}

/// Appends a `PING` frame carrying `nonce`.
pub fn encode_ping(dst: &mut BytesMut, nonce: u64) {
    put_header(dst, (HEADER_LEN - 4) as u32, kind::PING, 0, nonce);
}

/// Appends a `PONG` frame echoing `nonce`.
pub fn encode_pong(dst: &mut BytesMut, nonce: u64) {
    put_header(dst, (HEADER_LEN - 4) as u32, kind::PONG, 0, nonce);
}

/// Appends a `GOAWAY` frame; the message is truncated to 65535 bytes at a char boundary.
///
/// No peer limit is checked: keep the message short (under 1000 bytes) so that the frame fits
/// the smallest limit a peer may announce.
pub fn encode_goaway(dst: &mut BytesMut, goaway: &GoAway) {
    let message = truncate_str(&goaway.message, usize::from(u16::MAX));
    // At most 10 + 3 + 65535 bytes: always a valid length.
    let len = (HEADER_LEN - 4 + 3 + message.len()) as u32;
    put_header(dst, len, kind::GOAWAY, 0, goaway.last_id);
    dst.put_u8(goaway.code);
    dst.put_u16(message.len() as u16);
    dst.put_slice(message.as_bytes());
}

/// Appends a `CREDIT` frame returning flow-control credit for `requests` oneway requests of
/// `bytes` bytes in all.
pub fn encode_credit(dst: &mut BytesMut, requests: u64, bytes: u64) {
    put_header(dst, (HEADER_LEN - 4 + 8) as u32, kind::CREDIT, 0, requests);
    dst.put_u64(bytes);
}

/// Decodes a `CREDIT` body; trailing bytes are ignored.
pub(super) fn decode_credit(requests: u64, mut r: Reader) -> Result<super::Frame, FrameError> {
    let bytes = r.u64("body ends inside the byte count")?;
    Ok(super::Frame::Credit { requests, bytes })
}

/// Decodes a `GOAWAY` body; trailing bytes are ignored.
pub(super) fn decode_goaway(last_id: u64, mut r: Reader) -> Result<GoAway, FrameError> {
    let code = r.u8("body ends inside the code")?;
    let message_len = r.u16("body ends inside the message length")?;
    let message = r.string(usize::from(message_len), "body ends inside the message", "message is not utf-8")?;
    Ok(GoAway { last_id, code, message })
}
