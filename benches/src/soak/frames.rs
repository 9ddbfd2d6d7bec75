//! The bytes the hostile clients send, built once per scenario with the public frame encoder
//! (`zrpc::transport::frame`), no I/O.
//!
//! A flood of requests needs distinct ids (PROTOCOL.md §7: an id already in flight is a
//! connection error), but re-encoding a 64 KiB frame per request would make the client, not the
//! server, the bottleneck. [`Requests`] encodes one frame and rewrites its id field in place.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use zrpc::transport::frame::{self, Hello};
use zrpc::{CodecId, Metadata, Request};

use crate::BoxError;

/// Where a frame's `id` field starts: after `length u32`, `kind u8`, `flags u8` (PROTOCOL.md §4).
const ID_OFFSET: usize = 6;
/// The bytes of the `id` field.
const ID_LEN: usize = 8;

/// A frame kind no version defines, which receivers must skip (PROTOCOL.md §10).
pub const UNKNOWN_KIND: u8 = 0x7f;

/// The postcard encoding of `value`: the payload of a method whose one argument is `value`.
///
/// # Errors
/// If postcard cannot encode it.
pub fn postcard<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, BoxError> {
    let mut buf = BytesMut::new();
    CodecId::Postcard.encode(value, &mut buf)?;
    Ok(buf.freeze())
}

/// The preface alone: 8 bytes.
pub fn preface() -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode_preface(&mut out);
    out
}

/// The first `sent` bytes of a first frame whose header claims the longest a receiver reads
/// before the HELLO ([`frame::MAX_HELLO`]): what a client that never finishes its HELLO makes
/// a connection hold.
pub fn part_of_the_longest_hello(sent: usize) -> BytesMut {
    let mut out = BytesMut::with_capacity(sent);
    out.put_u32(frame::MAX_HELLO);
    out.resize(sent.max(4), 0);
    out
}

/// The preface and a HELLO announcing `name`, postcard, the default frame limit, no token and no
/// flow control (a client that ignores the server's limits, as a hostile one does): all a client
/// sends before its first request.
///
/// # Errors
/// If the name is longer than 255 bytes.
pub fn handshake(name: &str) -> Result<BytesMut, BoxError> {
    let mut out = BytesMut::new();
    frame::encode_preface(&mut out);
    let hello = Hello {
        name: name.to_owned(),
        max_frame: frame::DEFAULT_MAX_FRAME,
        codecs: vec![CodecId::Postcard.as_u8()],
        compressions: Vec::new(),
        token: Bytes::new(),
        flow: None,
        inbox: false,
        inbox_batches: false,
    };
    frame::encode_hello(&mut out, &hello)?;
    Ok(out)
}

/// One REQUEST frame (no deadline, no flags, postcard) whose id is rewritten for each use.
#[derive(Debug, Clone)]
pub struct Requests {
    frame: Vec<u8>,
}

impl Requests {
    /// A request to `method` with `payload` and `metadata`, as a zrpc client would encode it
    /// with no deadline.
    ///
    /// # Errors
    /// If the frame would be malformed or larger than the default 16 MiB limit.
    pub fn new(method: &'static str, payload: Bytes, metadata: Metadata) -> Result<Requests, BoxError> {
        let mut request = Request::new(method, payload);
        *request.ctx_mut().metadata_mut() = metadata;
        let mut out = BytesMut::new();
        frame::encode_request(&mut out, 1, &request, frame::DEFAULT_MAX_FRAME)?;
        Ok(Requests { frame: out.to_vec() })
    }

    /// The frame, as request `id`.
    pub fn with_id(&mut self, id: u64) -> &[u8] {
        self.frame[ID_OFFSET..ID_OFFSET + ID_LEN].copy_from_slice(&id.to_be_bytes());
        &self.frame
    }

    /// Bytes in one frame.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Never: a frame has a header. Here because `len` is.
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }
}

/// The id of a connector's `n`th request, from 0: 1, 3, 5… (PROTOCOL.md §7: odd for the
/// connecting side).
pub fn request_id(n: u64) -> u64 {
    2 * n + 1
}

/// `count` requests to `method` with `payload`, ids 1, 3, 5…, back to back: a pipeline that
/// one write sends.
///
/// # Errors
/// As [`Requests::new`].
pub fn pipeline(method: &'static str, payload: Bytes, count: u64) -> Result<Bytes, BoxError> {
    let mut requests = Requests::new(method, payload, Metadata::new())?;
    let mut out = BytesMut::with_capacity(requests.len() * count as usize);
    for n in 0..count {
        out.put_slice(requests.with_id(request_id(n)));
    }
    Ok(out.freeze())
}

/// `count` PING frames back to back, nonces 0, 1, 2…
pub fn pings(count: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(frame::HEADER_LEN * count as usize);
    for nonce in 0..count {
        frame::encode_ping(&mut out, nonce);
    }
    out.freeze()
}

/// A frame of [`UNKNOWN_KIND`] with a body of `body` zero bytes: a receiver reads it whole, then
/// skips it.
pub fn unknown(body: usize) -> Bytes {
    let length = (frame::HEADER_LEN - 4 + body) as u32;
    let mut out = BytesMut::with_capacity(4 + length as usize);
    out.put_u32(length);
    out.put_u8(UNKNOWN_KIND);
    out.put_u8(0);
    out.put_u64(0);
    out.put_bytes(0, body);
    out.freeze()
}

/// `entries` metadata entries, each an empty key and a 1-byte value: 6 bytes apiece on the wire
/// (`key_len` 1, `value_len` 4, the value 1; PROTOCOL.md §6), the fewest an entry can take
/// with a value.
pub fn tiny_entries(entries: usize) -> Metadata {
    let mut metadata = Metadata::new();
    for _ in 0..entries {
        metadata.append("", Bytes::from_static(b"x"));
    }
    metadata
}

#[cfg(test)]
mod tests {
    use zrpc::Blob;
    use zrpc::transport::frame::{Decoder, Frame, RequestFrame};

    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, BoxError> {
        let mut buf = BytesMut::from(bytes);
        let mut decoder = Decoder::default();
        let mut frames = Vec::new();
        while let Some(frame) = decoder.decode(&mut buf)? {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        Ok(frames)
    }

    fn the_request(frames: Vec<Frame>) -> RequestFrame {
        match &frames[..] {
            [Frame::Request(request)] => request.clone(),
            other => panic!("expected one request, got {other:?}"),
        }
    }

    #[test]
    fn a_rewritten_id_is_the_only_change() -> Result<(), BoxError> {
        let payload = postcard(&Blob::from(vec![1u8; 64 * 1024]))?;
        let mut requests = Requests::new("Soak.echo", payload.clone(), Metadata::new())?;
        let request = the_request(decode_all(requests.with_id(request_id(41)))?);
        assert_eq!((request.id, request.method_str(), request.timeout), (83, "Soak.echo", None));
        assert_eq!(request.payload, payload);
        assert_eq!(CodecId::Postcard.decode::<Vec<u8>>(&request.payload)?.len(), 64 * 1024);
        Ok(())
    }

    #[test]
    fn a_pipeline_has_distinct_odd_ids_in_order() -> Result<(), BoxError> {
        let frames = decode_all(&pipeline("Soak.sleep", postcard(&100u64)?, 5)?)?;
        let ids: Vec<u64> = frames
            .iter()
            .map(|frame| match frame {
                Frame::Request(request) => request.id,
                other => panic!("expected requests, got {other:?}"),
            })
            .collect();
        assert_eq!(ids, [1, 3, 5, 7, 9]);
        Ok(())
    }

    #[test]
    fn pings_are_header_only_frames() -> Result<(), BoxError> {
        let bytes = pings(3);
        assert_eq!(bytes.len(), 3 * frame::HEADER_LEN);
        assert_eq!(decode_all(&bytes)?, [Frame::Ping { nonce: 0 }, Frame::Ping { nonce: 1 }, Frame::Ping { nonce: 2 }]);
        Ok(())
    }

    #[test]
    fn an_unknown_frame_is_skipped_whole() -> Result<(), BoxError> {
        let mut bytes = BytesMut::from(&unknown(1000)[..]);
        assert_eq!(bytes.len(), frame::HEADER_LEN + 1000);
        bytes.put_slice(&pings(1));
        assert_eq!(decode_all(&bytes)?, [Frame::Ping { nonce: 0 }]);
        Ok(())
    }

    #[test]
    fn a_metadata_bomb_is_six_bytes_an_entry() -> Result<(), BoxError> {
        let empty = Requests::new("Soak.hold", postcard(&1u64)?, Metadata::new())?;
        let mut bomb = Requests::new("Soak.hold", postcard(&1u64)?, tiny_entries(65_535))?;
        assert_eq!(bomb.len() - empty.len(), 6 * 65_535);
        let request = the_request(decode_all(bomb.with_id(1))?);
        assert_eq!(request.metadata.len(), 65_535);
        Ok(())
    }

    #[test]
    fn the_handshake_is_a_preface_and_a_hello() -> Result<(), BoxError> {
        let mut bytes = handshake("soak")?;
        assert_eq!(frame::decode_preface(&mut bytes), Ok(true));
        match &decode_all(&bytes)?[..] {
            [Frame::Hello(hello)] => {
                assert_eq!((hello.name.as_str(), hello.max_frame), ("soak", frame::DEFAULT_MAX_FRAME))
            }
            other => panic!("expected a HELLO, got {other:?}"),
        }
        Ok(())
    }
}
