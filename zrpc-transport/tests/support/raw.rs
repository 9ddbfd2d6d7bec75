//! A raw zrpc peer over TCP, for hostile-peer tests.
//!
//! [`RawPeer`] writes exactly the bytes a test gives it and reads frames with the public
//! `frame` API. It enforces nothing itself — no deadlines, no id rules — so that what a test
//! observes is what the other side did. Every read is bounded by [`LIVENESS`](super::LIVENESS) so that a broken
//! peer fails the test instead of hanging it.

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zrpc_core::{CodecId, Metadata};
use zrpc_transport::frame::{self, Decoder, Frame, GoAway, Hello, RequestFrame, ResponseFrame};

use super::within;

/// The postcard encoding of `value`, as a well-behaved client would send it.
pub fn postcard<T: Serialize + ?Sized>(value: &T) -> Bytes {
    let mut buf = BytesMut::new();
    CodecId::Postcard.encode(value, &mut buf).expect("postcard encodes strings");
    buf.freeze()
}

/// A REQUEST with no deadline, no flags and postcard as its codec; tests change fields from here.
pub fn request(id: u64, method: &str, payload: Bytes) -> RequestFrame {
    RequestFrame {
        id,
        flags: 0,
        codec: CodecId::Postcard.as_u8(),
        timeout: None,
        method: Bytes::copy_from_slice(method.as_bytes()),
        trace: None,
        durable: None,
        metadata: Metadata::new(),
        payload,
    }
}

/// The HELLO a raw peer announces: postcard only, the default frame limit, no token, and no flow
/// control (a peer that knows nothing of the limits, or ignores them).
pub fn hello(name: &str) -> Hello {
    Hello {
        name: name.to_owned(),
        max_frame: frame::DEFAULT_MAX_FRAME,
        codecs: vec![CodecId::Postcard.as_u8()],
        compressions: Vec::new(),
        token: Bytes::new(),
        flow: None,
        inbox: false,
        inbox_batches: false,
    }
}

/// Checks that `bytes` start with a valid preface and consumes it.
pub fn expect_preface(bytes: &mut BytesMut) {
    assert_eq!(frame::decode_preface(bytes), Ok(true), "starts with the zrpc preface: {bytes:?}");
}

/// Decodes every frame in `bytes`, which must hold whole, well-formed frames only.
pub fn decode_all(bytes: &mut BytesMut) -> Vec<Frame> {
    let mut decoder = Decoder::default();
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(bytes).expect("the peer wrote well-formed frames") {
        frames.push(frame);
    }
    assert!(bytes.is_empty(), "no partial frame is left over: {bytes:?}");
    frames
}

/// The one GOAWAY among `frames`; fails the test when there is none or several.
pub fn the_goaway(frames: &[Frame]) -> &GoAway {
    let goaways: Vec<&GoAway> = frames
        .iter()
        .filter_map(|frame| match frame {
            Frame::GoAway(goaway) => Some(goaway),
            _ => None,
        })
        .collect();
    match goaways[..] {
        [goaway] => goaway,
        _ => panic!("expected exactly one GOAWAY, got {frames:?}"),
    }
}

/// One end of a TCP connection, speaking raw frames.
#[derive(Debug)]
pub struct RawPeer {
    stream: TcpStream,
    rbuf: BytesMut,
    decoder: Decoder,
}

impl RawPeer {
    /// Connects to `host:port`.
    pub async fn connect(address: &str) -> RawPeer {
        let stream = within("connecting", TcpStream::connect(address)).await.expect("the server accepts connections");
        RawPeer::new(stream)
    }

    /// Wraps a connected stream, e.g. one a fake server accepted.
    pub fn new(stream: TcpStream) -> RawPeer {
        RawPeer { stream, rbuf: BytesMut::new(), decoder: Decoder::default() }
    }

    /// Writes `bytes` as they are.
    pub async fn write(&mut self, bytes: &[u8]) {
        within("writing", self.stream.write_all(bytes)).await.expect("the write succeeds");
    }

    /// Writes a preface and a HELLO announcing `name`.
    pub async fn send_preface_and_hello(&mut self, name: &str) {
        let mut out = BytesMut::new();
        frame::encode_preface(&mut out);
        frame::encode_hello(&mut out, &hello(name)).expect("a short name fits");
        self.write(&out).await;
    }

    /// Writes a REQUEST frame built from `request`.
    pub async fn send_request(&mut self, request: &RequestFrame) {
        self.write(&request_bytes(request)).await;
    }

    /// Writes our preface and HELLO, then reads the peer's; returns the peer's HELLO.
    pub async fn handshake(&mut self, name: &str) -> Hello {
        self.handshake_with(&hello(name)).await
    }

    /// [`handshake`](RawPeer::handshake) announcing `ours`, e.g. with compressions.
    pub async fn handshake_with(&mut self, ours: &Hello) -> Hello {
        let mut out = BytesMut::new();
        frame::encode_preface(&mut out);
        frame::encode_hello(&mut out, ours).expect("a valid HELLO");
        self.write(&out).await;
        self.read_preface().await;
        match self.next_frame().await {
            Frame::Hello(hello) => hello,
            other => panic!("expected HELLO after the preface, got {other:?}"),
        }
    }

    /// Reads until the peer's preface has arrived and consumes it.
    pub async fn read_preface(&mut self) {
        loop {
            if frame::decode_preface(&mut self.rbuf).expect("the peer speaks zrpc") {
                return;
            }
            self.fill("the preface").await;
        }
    }

    /// The next frame from the peer; PINGs are answered and skipped, as any live peer does.
    pub async fn next_frame(&mut self) -> Frame {
        loop {
            match self.decoder.decode(&mut self.rbuf).expect("the peer sends well-formed frames") {
                Some(Frame::Ping { nonce }) => {
                    let mut pong = BytesMut::new();
                    frame::encode_pong(&mut pong, nonce);
                    self.write(&pong).await;
                }
                Some(frame) => return frame,
                None => self.fill("a frame").await,
            }
        }
    }

    /// The next frame, which must be a REQUEST.
    pub async fn next_request(&mut self) -> RequestFrame {
        match self.next_frame().await {
            Frame::Request(request) => request,
            other => panic!("expected a REQUEST, got {other:?}"),
        }
    }

    /// Writes a RESPONSE frame built from `response`.
    pub async fn send_response(&mut self, response: &ResponseFrame) {
        let mut out = BytesMut::new();
        frame::encode_response_frame(&mut out, response, frame::DEFAULT_MAX_FRAME).expect("a valid response frame");
        self.write(&out).await;
    }

    /// The next frame, which must be a RESPONSE.
    pub async fn next_response(&mut self) -> ResponseFrame {
        match self.next_frame().await {
            Frame::Response(response) => response,
            other => panic!("expected a RESPONSE, got {other:?}"),
        }
    }

    /// Reads until the peer closes the connection; returns every byte not consumed yet.
    pub async fn read_to_eof(&mut self) -> BytesMut {
        loop {
            let read = within("the peer closes the connection", self.stream.read_buf(&mut self.rbuf)).await;
            match read {
                Ok(0) => return self.rbuf.split(),
                Ok(_) => {}
                Err(e) => panic!("the peer should close the connection cleanly, but reading failed: {e}"),
            }
        }
    }

    /// Closes our write direction (sends FIN); we can still read.
    pub async fn shutdown_write(&mut self) {
        within("shutting down", self.stream.shutdown()).await.expect("shutdown succeeds");
    }

    async fn fill(&mut self, what: &str) {
        let read = within(&format!("waiting for {what}"), self.stream.read_buf(&mut self.rbuf)).await;
        match read {
            Ok(0) => panic!("the peer closed the connection while we waited for {what}"),
            Ok(_) => {}
            Err(e) => panic!("reading {what} failed: {e}"),
        }
    }
}

/// The bytes of a REQUEST frame built from `request`.
pub fn request_bytes(request: &RequestFrame) -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode_request_frame(&mut out, request, frame::DEFAULT_MAX_FRAME).expect("a valid request frame");
    out
}
