//! `HELLO`: what each side announces about itself right after the preface.

use bytes::{BufMut, Bytes, BytesMut};

use super::wire::{Reader, check_len, frame_len, put_header};
use super::{FrameError, MIN_MAX_FRAME, kind};

/// The first frame each side sends: who it is, what it accepts, and how it authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's endpoint name, shown to the peer as the caller (at most 255 bytes; may be
    /// empty).
    pub name: String,
    /// The largest frame `length` the sender accepts; the peer never sends more. At least
    /// [`MIN_MAX_FRAME`].
    pub max_frame: u32,
    /// The codec ids the sender can decode, in order of preference.
    pub codecs: Vec<u8>,
    /// The compression ids the sender can decode ([`zrpc_core::Compression::id`]); the peer
    /// compresses towards it only with one of these.
    pub compressions: Vec<u8>,
    /// An authentication token for the peer to check (may be empty; at most 65535 bytes).
    pub token: Bytes,
    /// The sender's flow-control limits (the `FLOW` extension), if it announces them; see
    /// `docs/PROTOCOL.md` §15.
    pub flow: Option<FlowLimits>,
    /// The sender records durable requests (the `INBOX` extension, `docs/PROTOCOL.md` §19):
    /// the peer may send it [`flags::DURABLE`](super::flags::DURABLE) requests.
    pub inbox: bool,
    /// With `inbox`, the sender also records batches of them (bit 0 of `INBOX`'s value): the
    /// peer may send it [`flags::BATCH`](super::flags::BATCH) requests.
    pub inbox_batches: bool,
}

/// The `FLOW` extension of a `HELLO`: how many of the receiver's requests the sender takes in
/// progress at once, and their total size.
///
/// Announcing it also promises that the sender follows the receiver's limits and returns
/// credit for oneway requests with `CREDIT` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// Most requests in progress at once; at least 1.
    pub max_requests: u32,
    /// Most bytes of requests in progress at once (`4 + length` of each); one request alone may
    /// be larger, up to `max_frame`.
    pub request_bytes: u32,
}

/// Tags of `HELLO` extensions.
mod ext {
    /// [`super::FlowLimits`].
    pub(super) const FLOW: u8 = 0x01;
    /// `INBOX`: the sender records durable requests; a value byte's bit 0 says it also takes
    /// them in batches ([`INBOX_BATCHES`]).
    pub(super) const INBOX: u8 = 0x02;
    /// Bit 0 of `INBOX`'s value: the sender records batches.
    pub(super) const INBOX_BATCHES: u8 = 0x01;
}

/// Bytes of the `FLOW` extension's value.
const FLOW_LEN: u16 = 8;

/// Appends a `HELLO` frame (id 0) and returns its total size.
///
/// No peer limit applies (the peer's `HELLO` may not have arrived), but the peer checks the
/// frame against its own maximum: a `HELLO` under [`MIN_MAX_FRAME`] bytes is accepted by every
/// peer.
///
/// # Errors
/// [`FrameError::FieldTooLong`] for a name, codec list or compression list over 255 bytes or a
/// token over 65535; [`FrameError::Malformed`] for a `max_frame` below [`MIN_MAX_FRAME`] or flow
/// limits of 0 requests. `dst` is left unchanged.
pub fn encode_hello(dst: &mut BytesMut, hello: &Hello) -> Result<usize, FrameError> {
    let u8_max = usize::from(u8::MAX);
    check_len("name", hello.name.len(), u8_max)?;
    check_len("codec list", hello.codecs.len(), u8_max)?;
    check_len("compression list", hello.compressions.len(), u8_max)?;
    check_len("token", hello.token.len(), usize::from(u16::MAX))?;
    if hello.max_frame < MIN_MAX_FRAME {
        return Err(FrameError::Malformed { kind: "hello", reason: "max_frame is below the minimum of 1024" });
    }
    if hello.flow.is_some_and(|flow| flow.max_requests == 0) {
        return Err(FrameError::Malformed { kind: "hello", reason: "flow limits allow no request" });
    }
    let extensions =
        if hello.flow.is_some() { 3 + usize::from(FLOW_LEN) } else { 0 } + if hello.inbox { 3 + 1 } else { 0 };
    let body = 1
        + hello.name.len()
        + 4
        + 1
        + hello.codecs.len()
        + 1
        + hello.compressions.len()
        + 2
        + hello.token.len()
        + extensions;
    let len = frame_len(body as u64, u32::MAX)?;
    let total = put_header(dst, len, kind::HELLO, 0, 0);
    dst.put_u8(hello.name.len() as u8);
    dst.put_slice(hello.name.as_bytes());
    dst.put_u32(hello.max_frame);
    dst.put_u8(hello.codecs.len() as u8);
    dst.put_slice(&hello.codecs);
    dst.put_u8(hello.compressions.len() as u8);
    dst.put_slice(&hello.compressions);
    dst.put_u16(hello.token.len() as u16);
    dst.put_slice(&hello.token);
    if let Some(flow) = hello.flow {
        dst.put_u8(ext::FLOW);
        dst.put_u16(FLOW_LEN);
        dst.put_u32(flow.max_requests);
        dst.put_u32(flow.request_bytes);
    }
    if hello.inbox {
        dst.put_u8(ext::INBOX);
        dst.put_u16(1);
        dst.put_u8(if hello.inbox_batches { ext::INBOX_BATCHES } else { 0 });
    }
    Ok(total)
}

/// Decodes a `HELLO` body, its extensions included; unknown extensions are skipped.
pub(super) fn decode_hello(mut r: Reader) -> Result<Hello, FrameError> {
    let name_len = r.u8("body ends inside the name length")?;
    let name = r.string(usize::from(name_len), "body ends inside the name", "name is not utf-8")?;
    let max_frame = r.u32("body ends inside max_frame")?;
    if max_frame < MIN_MAX_FRAME {
        return Err(r.malformed("max_frame is below the minimum of 1024"));
    }
    let codec_count = r.u8("body ends inside the codec count")?;
    let codecs = r.bytes(usize::from(codec_count), "body ends inside the codec list")?;
    let compression_count = r.u8("body ends inside the compression count")?;
    let compressions = r.bytes(usize::from(compression_count), "body ends inside the compression list")?;
    let token_len = r.u16("body ends inside the token length")?;
    let token = r.bytes(usize::from(token_len), "body ends inside the token")?;
    let mut flow = None;
    let mut inbox = false;
    let mut inbox_batches = false;
    while r.remaining() > 0 {
        let tag = r.u8("body ends inside an extension tag")?;
        let len = r.u16("body ends inside an extension length")?;
        let value = r.bytes(usize::from(len), "an extension runs past the body")?;
        if tag == ext::FLOW && flow.is_none() {
            flow = Some(decode_flow(&value)?);
        }
        if tag == ext::INBOX {
            // Empty from a version before batches; bits and bytes after bit 0 are ignored:
            // room to extend it.
            inbox = true;
            inbox_batches |= value.first().is_some_and(|bits| bits & ext::INBOX_BATCHES != 0);
        }
    }
    Ok(Hello {
        name,
        max_frame,
        codecs: codecs.to_vec(),
        compressions: compressions.to_vec(),
        token,
        flow,
        inbox,
        inbox_batches,
    })
}

/// The value of a `FLOW` extension; bytes after the fields it defines are ignored.
fn decode_flow(value: &Bytes) -> Result<FlowLimits, FrameError> {
    let mut r = Reader::new(value.clone(), "hello");
    let max_requests = r.u32("the flow extension is shorter than 8 bytes")?;
    let request_bytes = r.u32("the flow extension is shorter than 8 bytes")?;
    if max_requests == 0 {
        return Err(r.malformed("flow limits allow no request"));
    }
    Ok(FlowLimits { max_requests, request_bytes })
}
