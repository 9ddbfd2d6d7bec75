//! `RESPONSE`: the outcome of a call, a success with its payload or a status.

use bytes::{Bytes, BytesMut};
use zrpc_core::{Code, Metadata, Response, Status};

use super::compressed::{self, CompressedHeader};
use super::wire::{Reader, frame_len, metadata_len, put_header_with, put_metadata, truncate_str};
use super::{FrameError, HEADER_LEN, flags, kind};

/// A decoded `RESPONSE` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseFrame {
    /// The id of the request this answers.
    pub id: u64,
    /// Flag bits ([`flags::UNPROCESSED`]; unknown bits are kept).
    pub flags: u8,
    /// 0 for success, otherwise a [`Code`] wire value (possibly one this build does not know).
    pub code: u8,
    /// The status message, validated UTF-8 (empty on success; see
    /// [`ResponseFrame::message_str`]).
    pub message: Bytes,
    /// The response metadata.
    pub metadata: Metadata,
    /// The encoded result on success, the status details on error; shares the frame's buffer.
    /// With [`flags::COMPRESSED`] it is compressed and starts with a [`CompressedHeader`] (see
    /// [`compressed_header`](ResponseFrame::compressed_header)).
    pub payload: Bytes,
}

impl ResponseFrame {
    /// The status message; `""` if `message` was set by hand to bytes that are not UTF-8 (a
    /// decoded frame's always are).
    pub fn message_str(&self) -> &str {
        std::str::from_utf8(&self.message).unwrap_or_default()
    }

    /// The header of the payload, when it is compressed: `None` without
    /// [`flags::COMPRESSED`] (a decoded frame's compressed payload always has one).
    pub fn compressed_header(&self) -> Option<CompressedHeader> {
        if self.flags & flags::COMPRESSED == 0 {
            return None;
        }
        CompressedHeader::split(&self.payload).map(|(header, _)| header)
    }

    /// The call's outcome: code 0 is a [`Response`] with the metadata and payload; any other
    /// code a [`Status`] with [`Code::from_u8`] of it, the message, and the payload as details
    /// (an error's metadata is dropped: a `Status` carries none). A compressed payload stays
    /// compressed, header included: see [`compressed_header`](ResponseFrame::compressed_header).
    pub fn into_result(self) -> Result<Response, Status> {
        if self.code == 0 {
            let mut response = Response::new(self.payload);
            *response.metadata_mut() = self.metadata;
            Ok(response)
        } else {
            let message = self.message_str().to_owned();
            let status = Status::new(Code::from_u8(self.code), message).with_details(self.payload);
            Err(if self.flags & flags::UNPROCESSED != 0 { status.mark_unprocessed() } else { status })
        }
    }
}

/// Appends a `RESPONSE` frame for `result` under `id` and returns its total size.
///
/// An error's message is truncated to 65535 bytes at a char boundary and its details become
/// the payload; a `Status` whose code is [`Code::Ok`] is sent as [`Code::Unknown`] so that it
/// still reads as an error.
///
/// # Errors
/// [`FrameError::FrameTooLarge`] when the frame would exceed `max_frame`, the limit the peer
/// announced in its `HELLO` (the caller then sends a `ResourceExhausted` status instead);
/// [`FrameError::FieldTooLong`] for response metadata that does not fit. `dst` is left unchanged.
pub fn encode_response(
    dst: &mut BytesMut,
    id: u64,
    result: &Result<Response, Status>,
    max_frame: u32,
) -> Result<usize, FrameError> {
    encode(dst, id, result, 0, max_frame)
}

/// [`encode_response`] for a result whose payload (a response's, or an error's details) is
/// already compressed: it starts with a [`CompressedHeader`], and the frame is sent with
/// `COMPRESSED`.
///
/// # Errors
/// As [`encode_response`], plus [`FrameError::Malformed`] for a payload shorter than its header.
/// `dst` is left unchanged.
pub fn encode_compressed_response(
    dst: &mut BytesMut,
    id: u64,
    result: &Result<Response, Status>,
    max_frame: u32,
) -> Result<usize, FrameError> {
    let payload = match result {
        Ok(response) => response.payload(),
        Err(status) => status.details(),
    };
    compressed::check("response", payload)?;
    encode(dst, id, result, flags::COMPRESSED, max_frame)
}

fn encode(
    dst: &mut BytesMut,
    id: u64,
    result: &Result<Response, Status>,
    bits: u8,
    max_frame: u32,
) -> Result<usize, FrameError> {
    let empty = Metadata::new();
    match result {
        Ok(response) => write(dst, id, bits, 0, "", response.metadata(), response.payload(), max_frame),
        Err(status) => {
            let code = match status.code() {
                Code::Ok => Code::Unknown,
                code => code,
            };
            let bits = if status.is_unprocessed() { bits | flags::UNPROCESSED } else { bits };
            write(dst, id, bits, code.as_u8(), status.message(), &empty, status.details(), max_frame)
        }
    }
}

/// Appends a `RESPONSE` frame built from a decoded (or hand-made) frame and returns its total
/// size.
///
/// With `COMPRESSED` the payload goes as it is, header included.
///
/// # Errors
/// As [`encode_response`], plus [`FrameError::Malformed`] for a message that is not UTF-8 or a
/// compressed payload shorter than its header, and [`FrameError::FieldTooLong`] for a message
/// over 65535 bytes. `dst` is left unchanged.
pub fn encode_response_frame(dst: &mut BytesMut, frame: &ResponseFrame, max_frame: u32) -> Result<usize, FrameError> {
    if frame.flags & flags::COMPRESSED != 0 {
        compressed::check("response", &frame.payload)?;
    }
    let message = std::str::from_utf8(&frame.message)
        .map_err(|_| FrameError::Malformed { kind: "response", reason: "message is not utf-8" })?;
    super::wire::check_len("message", message.len(), usize::from(u16::MAX))?;
    write(dst, frame.id, frame.flags, frame.code, message, &frame.metadata, &frame.payload, max_frame)
}

#[allow(clippy::too_many_arguments, reason = "one call per field of the frame, in wire order")]
fn write(
    dst: &mut BytesMut,
    id: u64,
    bits: u8,
    code: u8,
    message: &str,
    metadata: &Metadata,
    payload: &[u8],
    max_frame: u32,
) -> Result<usize, FrameError> {
    let message = truncate_str(message, usize::from(u16::MAX));
    let fixed = (1 + 2 + message.len()) as u64;
    let body = fixed.saturating_add(metadata_len(metadata)?).saturating_add(payload.len() as u64);
    let len = frame_len(body, max_frame)?;
    // Truncated above to fit its two bytes.
    let message_len = message.len() as u16;
    let total = put_header_with::<{ HEADER_LEN + 3 }>(dst, len, kind::RESPONSE, bits, id, |fixed| {
        fixed[0] = code;
        fixed[1..3].copy_from_slice(&message_len.to_be_bytes());
    });
    dst.extend_from_slice(message.as_bytes());
    put_metadata(dst, metadata);
    dst.extend_from_slice(payload);
    Ok(total)
}

/// Decodes a `RESPONSE` body, read by `r` after the frame's header.
pub(super) fn decode_response(id: u64, bits: u8, mut r: Reader) -> Result<ResponseFrame, FrameError> {
    let code = r.u8("body ends inside the code")?;
    let message_len = r.u16("body ends inside the message length")?;
    let message = r.utf8(usize::from(message_len), "body ends inside the message", "message is not utf-8")?;
    let metadata = r.metadata()?;
    let payload = r.rest();
    if bits & flags::COMPRESSED != 0 {
        compressed::check("response", &payload)?;
    }
    Ok(ResponseFrame { id, flags: bits, code, message, metadata, payload })
}
