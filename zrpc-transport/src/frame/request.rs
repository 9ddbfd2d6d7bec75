//! `REQUEST`: a call, with its method, remaining deadline, trace, metadata and payload.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use zrpc_core::{Metadata, Request, TraceContext};

use super::compressed::{self, CompressedHeader};
use super::wire::{Reader, frame_len, metadata_len, put_header_with, put_metadata};
use super::{FrameError, HEADER_LEN, flags, kind};

/// Bytes of a trace context on the wire: trace id, span id, trace flags.
const TRACE_LEN: usize = 16 + 8 + 1;

/// Bytes of a durable message's identity on the wire before its sender name: outbox, sequence,
/// acknowledged, sender length.
const DURABLE_FIXED_LEN: usize = 8 + 8 + 8 + 1;

/// Bytes of a batch's count, after the sender name ([`flags::BATCH`]).
const BATCH_COUNT_LEN: usize = 4;

/// Most messages in one durable batch (`docs/PROTOCOL.md` §19): what bounds the records one
/// request makes on the receiver, beside its frame's bytes.
pub const MAX_DURABLE_BATCH: u32 = 1024;

/// The identity a [`flags::DURABLE`] request carries (`docs/PROTOCOL.md` §19): which sender's
/// outbox log, and the message's place in that log's stream to this receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableFields {
    /// The sender's outbox id, 64 random bits fixed when its log was created.
    pub outbox: u64,
    /// The message's sequence in the stream (sender, outbox) to this receiver: from 1, no gaps.
    pub sequence: u64,
    /// The highest sequence of the stream the receiver has acknowledged to the sender (0 for
    /// none), below `sequence`: a receiver that no longer knows the stream (it forgot it after
    /// its retention, or lost its inbox) resumes it there instead of waiting for messages the
    /// sender has deleted.
    pub acknowledged: u64,
    /// The sender's name as its outbox recorded it: 0 to 255 bytes of UTF-8 (validated when
    /// decoded; see [`DurableFields::sender_str`]).
    pub sender: Bytes,
    /// How many messages the request carries: 1, or a batch's count (at least 2, with
    /// [`flags::BATCH`]): then the payload is that many stored REQUEST frames, of sequences
    /// `sequence` to `sequence + count - 1`.
    pub count: u32,
}

impl DurableFields {
    /// The sender's name; `""` if `sender` was set by hand to bytes that are not UTF-8.
    pub fn sender_str(&self) -> &str {
        std::str::from_utf8(&self.sender).unwrap_or_default()
    }
}

/// A decoded `REQUEST` frame.
///
/// The server builds a [`Request`] from it; the frame keeps the wire's view (raw flags and codec
/// byte) so that the connection can answer an unknown codec itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    /// The request id, chosen by the side that opened the request.
    pub id: u64,
    /// The flags byte as received: [`flags::ONEWAY`], [`flags::COMPRESSED`], [`flags::TRACE`],
    /// [`flags::IDEMPOTENT`], [`flags::DURABLE`]; unknown bits are kept and ignored.
    pub flags: u8,
    /// The codec the payload was encoded with (a [`zrpc_core::CodecId`] wire value, possibly one
    /// this build does not know).
    pub codec: u8,
    /// Time left until the caller's deadline, or `None` without one. A peer may send up to
    /// `u64::MAX` microseconds: add it to an instant with `checked_add`.
    pub timeout: Option<Duration>,
    /// The method's wire name, `Service.method`: 1 to 255 bytes of validated UTF-8 (see
    /// [`RequestFrame::method_str`]).
    pub method: Bytes,
    /// The caller's trace, when the `TRACE` flag was set and both ids were non-zero.
    pub trace: Option<TraceContext>,
    /// The message's identity, exactly when [`flags::DURABLE`] is set. Boxed: every request
    /// frame is moved from the decoder to a handler, and most are not durable.
    pub durable: Option<Box<DurableFields>>,
    /// The request metadata.
    pub metadata: Metadata,
    /// The encoded arguments, sharing the frame's buffer. With [`flags::COMPRESSED`] they are
    /// compressed and start with a [`CompressedHeader`] (see
    /// [`compressed_header`](RequestFrame::compressed_header)).
    pub payload: Bytes,
}

impl RequestFrame {
    /// The method name; `""` if `method` was set by hand to bytes that are not UTF-8 (a
    /// decoded frame's always are).
    pub fn method_str(&self) -> &str {
        std::str::from_utf8(&self.method).unwrap_or_default()
    }

    /// Whether the caller expects no response.
    pub fn is_oneway(&self) -> bool {
        self.flags & flags::ONEWAY != 0
    }

    /// Whether the method may safely run twice.
    pub fn is_idempotent(&self) -> bool {
        self.flags & flags::IDEMPOTENT != 0
    }

    /// The header of the payload, when it is compressed: `None` without
    /// [`flags::COMPRESSED`] (a decoded frame's compressed payload always has one).
    #[inline]
    pub fn compressed_header(&self) -> Option<CompressedHeader> {
        if self.flags & flags::COMPRESSED == 0 {
            return None;
        }
        CompressedHeader::split(&self.payload).map(|(header, _)| header)
    }
}

/// A request's fields as they go on the wire.
struct Parts<'a> {
    id: u64,
    flags: u8,
    codec: u8,
    timeout: Option<Duration>,
    method: &'a str,
    trace: Option<TraceContext>,
    durable: Option<DurableParts<'a>>,
    metadata: &'a Metadata,
    payload: &'a [u8],
    /// The payload is compressed, header included: `COMPRESSED` is set.
    compressed: bool,
}

/// A durable request's identity as it goes on the wire, from a decoded frame's
/// [`DurableFields`] or from a call's [`Durable`](zrpc_core::durable::Durable).
#[derive(Clone, Copy)]
struct DurableParts<'a> {
    outbox: u64,
    sequence: u64,
    acknowledged: u64,
    sender: &'a [u8],
    count: u32,
}

impl<'a> DurableParts<'a> {
    fn of_fields(fields: &'a DurableFields) -> DurableParts<'a> {
        let DurableFields { outbox, sequence, acknowledged, sender, count } = fields;
        DurableParts { outbox: *outbox, sequence: *sequence, acknowledged: *acknowledged, sender, count: *count }
    }

    fn of_call(durable: &'a zrpc_core::durable::Durable) -> DurableParts<'a> {
        DurableParts {
            outbox: durable.id.outbox().as_u64(),
            sequence: durable.id.sequence(),
            acknowledged: durable.acknowledged,
            sender: durable.id.sender().as_bytes(),
            count: durable.count,
        }
    }

    fn is_batch(&self) -> bool {
        self.count > 1
    }
}

/// Appends a `REQUEST` frame for `req` under `id` and returns its total size.
///
/// The flags come from the request (oneway, idempotent) and its context (a trace sets
/// `TRACE`, a [durable message](zrpc_core::Context::durable) `DURABLE` with its identity); the timeout is the context's remaining time, rounded down to microseconds and at
/// least 1 µs when there is a deadline (even a passed one), so that the server still sees one.
///
/// # Errors
/// [`FrameError::FrameTooLarge`] when the frame would exceed `max_frame`, the limit the peer
/// announced in its `HELLO`; [`FrameError::FieldTooLong`] for a method, metadata key or
/// metadata count that does not fit its length field, or a durable sender name over 255
/// bytes; [`FrameError::Malformed`] for an empty method, and for a durable message that is
/// oneway, or whose sequence is 0 or not above its `acknowledged`. `dst` is left unchanged.
pub fn encode_request(dst: &mut BytesMut, id: u64, req: &Request, max_frame: u32) -> Result<usize, FrameError> {
    encode_request_at(dst, id, req, max_frame, tokio::time::Instant::now())
}

/// [`encode_request`] with the time left measured from `now`, for a caller that already read
/// the clock (a connection sending a batch of calls reads it once).
///
/// # Errors
/// As [`encode_request`].
pub fn encode_request_at(
    dst: &mut BytesMut,
    id: u64,
    req: &Request,
    max_frame: u32,
    now: tokio::time::Instant,
) -> Result<usize, FrameError> {
    write(dst, &parts(id, req, now, false), max_frame)
}

/// [`encode_request_at`] for a request whose payload is already compressed: it starts with a
/// [`CompressedHeader`] (as `crate::compression::compress` makes it), and the frame is sent
/// with `COMPRESSED`.
///
/// # Errors
/// As [`encode_request`], plus [`FrameError::Malformed`] for a payload shorter than its header.
/// `dst` is left unchanged.
pub fn encode_compressed_request_at(
    dst: &mut BytesMut,
    id: u64,
    req: &Request,
    max_frame: u32,
    now: tokio::time::Instant,
) -> Result<usize, FrameError> {
    compressed::check("request", req.payload())?;
    write(dst, &parts(id, req, now, true), max_frame)
}

fn parts(id: u64, req: &Request, now: tokio::time::Instant, compressed: bool) -> Parts<'_> {
    let ctx = req.ctx();
    let mut bits = 0;
    if req.is_oneway() {
        bits |= flags::ONEWAY;
    }
    if req.is_idempotent() {
        bits |= flags::IDEMPOTENT;
    }
    Parts {
        id,
        flags: bits,
        codec: req.codec().as_u8(),
        timeout: ctx.deadline().map(|deadline| deadline.saturating_duration_since(now)),
        method: req.method().as_str(),
        trace: ctx.trace(),
        durable: ctx.durable().map(DurableParts::of_call),
        metadata: ctx.metadata(),
        payload: req.payload(),
        compressed,
    }
}

/// Appends a `REQUEST` frame built from a decoded (or hand-made) frame, e.g. to forward it or
/// to test a peer; returns its total size.
///
/// `TRACE` is set exactly when `frame.trace` is, `DURABLE` exactly when `frame.durable` is,
/// `BATCH` exactly when its count is above 1; other unknown flag bits are sent as they are. With `COMPRESSED` the payload goes as it is,
/// header included.
///
/// # Errors
/// As [`encode_request`], plus [`FrameError::Malformed`] for a method that is not UTF-8, for
/// a compressed payload shorter than its header, and for a durable request that is oneway or has
/// sequence 0; [`FrameError::FieldTooLong`] for a durable sender name over 255 bytes. `dst` is
/// left unchanged.
pub fn encode_request_frame(dst: &mut BytesMut, frame: &RequestFrame, max_frame: u32) -> Result<usize, FrameError> {
    let compressed = frame.flags & flags::COMPRESSED != 0;
    if compressed {
        compressed::check("request", &frame.payload)?;
    }
    let method = std::str::from_utf8(&frame.method)
        .map_err(|_| FrameError::Malformed { kind: "request", reason: "method is not utf-8" })?;
    let parts = Parts {
        id: frame.id,
        flags: frame.flags,
        codec: frame.codec,
        timeout: frame.timeout,
        method,
        trace: frame.trace,
        durable: frame.durable.as_deref().map(DurableParts::of_fields),
        metadata: &frame.metadata,
        payload: &frame.payload,
        compressed,
    };
    write(dst, &parts, max_frame)
}

fn write(dst: &mut BytesMut, parts: &Parts<'_>, max_frame: u32) -> Result<usize, FrameError> {
    if parts.method.is_empty() {
        return Err(FrameError::Malformed { kind: "request", reason: "empty method" });
    }
    super::wire::check_len("method", parts.method.len(), usize::from(u8::MAX))?;
    let trace_len = if parts.trace.is_some() { TRACE_LEN } else { 0 };
    let durable_len = match parts.durable {
        None => 0,
        Some(durable) => {
            super::wire::check_len("durable sender", durable.sender.len(), usize::from(u8::MAX))?;
            if parts.flags & flags::ONEWAY != 0 {
                return Err(FrameError::Malformed { kind: "request", reason: "a durable request is never oneway" });
            }
            if durable.sequence == 0 {
                return Err(FrameError::Malformed { kind: "request", reason: "a durable sequence starts at 1" });
            }
            if durable.acknowledged >= durable.sequence {
                return Err(FrameError::Malformed {
                    kind: "request",
                    reason: "a durable message's acknowledged sequence is below its own",
                });
            }
            if durable.count == 0 || durable.count > MAX_DURABLE_BATCH {
                return Err(FrameError::Malformed {
                    kind: "request",
                    reason: "a durable batch of no message or more than 1024",
                });
            }
            if durable.sequence.checked_add(u64::from(durable.count) - 1).is_none() {
                return Err(FrameError::Malformed {
                    kind: "request",
                    reason: "a durable batch past the last sequence",
                });
            }
            DURABLE_FIXED_LEN + durable.sender.len() + if durable.is_batch() { BATCH_COUNT_LEN } else { 0 }
        }
    };
    let fixed = 1 + 8 + 1 + parts.method.len() + trace_len + durable_len;
    let body = (fixed as u64).saturating_add(metadata_len(parts.metadata)?).saturating_add(parts.payload.len() as u64);
    let len = frame_len(body, max_frame)?;

    let mut bits = parts.flags & !(flags::TRACE | flags::COMPRESSED | flags::DURABLE | flags::BATCH);
    if parts.trace.is_some() {
        bits |= flags::TRACE;
    }
    if let Some(durable) = parts.durable {
        bits |= flags::DURABLE;
        if durable.is_batch() {
            bits |= flags::BATCH;
        }
    }
    if parts.compressed {
        bits |= flags::COMPRESSED;
    }
    let timeout_us = match parts.timeout {
        None => 0,
        Some(t) => u64::try_from(t.as_micros()).unwrap_or(u64::MAX).max(1),
    };
    // The method's length was checked above to fit its byte.
    let method_len = parts.method.len() as u8;
    let total = put_header_with::<{ HEADER_LEN + 10 }>(dst, len, kind::REQUEST, bits, parts.id, |fixed| {
        fixed[0] = parts.codec;
        fixed[1..9].copy_from_slice(&timeout_us.to_be_bytes());
        fixed[9] = method_len;
    });
    dst.extend_from_slice(parts.method.as_bytes());
    if let Some(trace) = parts.trace {
        dst.put_u128(trace.trace_id);
        dst.put_u64(trace.span_id);
        dst.put_u8(trace.flags);
    }
    if let Some(durable) = parts.durable {
        dst.put_u64(durable.outbox);
        dst.put_u64(durable.sequence);
        dst.put_u64(durable.acknowledged);
        // Checked above to fit its byte.
        dst.put_u8(durable.sender.len() as u8);
        dst.extend_from_slice(durable.sender);
        if durable.is_batch() {
            dst.put_u32(durable.count);
        }
    }
    put_metadata(dst, parts.metadata);
    dst.extend_from_slice(parts.payload);
    Ok(total)
}

/// Decodes a `REQUEST` body, read by `r` after the frame's header.
pub(super) fn decode_request(id: u64, bits: u8, mut r: Reader) -> Result<RequestFrame, FrameError> {
    let codec = r.u8("body ends inside the codec")?;
    let timeout_us = r.u64("body ends inside the timeout")?;
    let method_len = r.u8("body ends inside the method length")?;
    if method_len == 0 {
        return Err(r.malformed("empty method"));
    }
    let method = r.utf8(usize::from(method_len), "body ends inside the method", "method is not utf-8")?;
    let trace = if bits & flags::TRACE != 0 {
        let trace_id = r.u128("body ends inside the trace id")?;
        let span_id = r.u64("body ends inside the span id")?;
        let flags = r.u8("body ends inside the trace flags")?;
        // W3C trace context: all-zero ids are invalid and are ignored, not an error.
        (trace_id != 0 && span_id != 0).then_some(TraceContext { trace_id, span_id, flags })
    } else {
        None
    };
    let durable = if bits & flags::DURABLE != 0 {
        if bits & flags::ONEWAY != 0 {
            return Err(r.malformed("a durable request is never oneway"));
        }
        let outbox = r.u64("body ends inside the durable outbox")?;
        let sequence = r.u64("body ends inside the durable sequence")?;
        if sequence == 0 {
            return Err(r.malformed("a durable sequence starts at 1"));
        }
        let acknowledged = r.u64("body ends inside the durable acknowledged sequence")?;
        if acknowledged >= sequence {
            return Err(r.malformed("a durable message's acknowledged sequence is below its own"));
        }
        let sender_len = r.u8("body ends inside the durable sender length")?;
        let sender =
            r.utf8(usize::from(sender_len), "body ends inside the durable sender", "durable sender is not utf-8")?;
        let count = if bits & flags::BATCH != 0 {
            let count = r.u32("body ends inside the durable batch's count")?;
            if !(2..=MAX_DURABLE_BATCH).contains(&count) {
                return Err(r.malformed("a durable batch of fewer than 2 messages or more than 1024"));
            }
            if sequence.checked_add(u64::from(count) - 1).is_none() {
                return Err(r.malformed("a durable batch past the last sequence"));
            }
            count
        } else {
            1
        };
        Some(Box::new(DurableFields { outbox, sequence, acknowledged, sender, count }))
    } else if bits & flags::BATCH != 0 {
        return Err(r.malformed("a batch that is not durable"));
    } else {
        None
    };
    let metadata = r.metadata()?;
    let payload = r.rest();
    if bits & flags::COMPRESSED != 0 {
        compressed::check("request", &payload)?;
    }
    Ok(RequestFrame {
        id,
        flags: bits,
        codec,
        timeout: (timeout_us != 0).then(|| Duration::from_micros(timeout_us)),
        method,
        trace,
        durable,
        metadata,
        payload,
    })
}
