//! The ping-pong floor: one TCP connection per caller, one frame out, one frame in.
//!
//! Frames are the raw multiplexer's (`[u32 len][u64 id][payload]`, the id always 0), the payload
//! the postcard encoding of the message, with no encoding per call. Each side writes a frame with
//! one `write_all` and reads it with (usually) one `read` into a buffer it reuses: the least a round trip
//! over TCP can cost. The point's connection count is ignored: every caller connects on its own.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Caller, Framework, Name, Serving, accept_tcp, check_echo, payload};
use crate::BoxError;

/// `[u32 len][u64 id]`.
const HEADER: usize = 12;
/// Larger frames are refused.
const MAX_FRAME: usize = 16 << 20;

/// The hand-written ping-pong.
#[derive(Debug, Clone, Copy)]
pub struct RawPingpong;

impl Framework for RawPingpong {
    const NAME: Name = Name::RawPingpong;
    type Caller = PingpongCaller;

    async fn serve() -> Result<Serving, BoxError> {
        accept_tcp(|mut stream| {
            tokio::spawn(async move {
                let mut frame = Vec::new();
                // The frame read is the frame written back: header and payload unchanged.
                while read_frame(&mut stream, &mut frame).await.is_ok() {
                    if stream.write_all(&frame).await.is_err() {
                        break;
                    }
                }
            });
        })
        .await
    }

    async fn callers(addr: SocketAddr, _conns: usize, callers: usize) -> Result<Vec<PingpongCaller>, BoxError> {
        let payload = payload()?;
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(&u32::try_from(payload.len())?.to_be_bytes());
        frame.extend_from_slice(&0u64.to_be_bytes());
        frame.extend_from_slice(&payload);
        let mut all = Vec::with_capacity(callers);
        for _ in 0..callers {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            all.push(PingpongCaller { stream, frame: frame.clone(), reply: Vec::with_capacity(frame.len()) });
        }
        if let Some(first) = all.first_mut() {
            first.call().await?;
            check_echo(Name::RawPingpong, &first.frame, &first.reply)?;
        }
        Ok(all)
    }
}

/// A ping-pong caller: its own connection.
#[derive(Debug)]
pub struct PingpongCaller {
    stream: TcpStream,
    /// The frame sent on every call.
    frame: Vec<u8>,
    /// The last frame received.
    reply: Vec<u8>,
}

impl Caller for PingpongCaller {
    async fn call(&mut self) -> Result<(), BoxError> {
        self.stream.write_all(&self.frame).await?;
        read_frame(&mut self.stream, &mut self.reply).await
    }
}

/// Reads one whole frame, header included, into `frame`: one `read` once `frame`'s capacity has
/// grown to a frame.
async fn read_frame(stream: &mut TcpStream, frame: &mut Vec<u8>) -> Result<(), BoxError> {
    frame.clear();
    fill(stream, frame, HEADER).await?;
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    if len > MAX_FRAME {
        return Err(format!("raw-pingpong: a {len}-byte frame is over the limit").into());
    }
    fill(stream, frame, HEADER + len).await?;
    if frame.len() != HEADER + len {
        return Err("raw-pingpong: the peer sent more than one frame".into());
    }
    Ok(())
}

/// Reads until `frame` holds at least `len` bytes.
async fn fill(stream: &mut TcpStream, frame: &mut Vec<u8>, len: usize) -> Result<(), BoxError> {
    while frame.len() < len {
        frame.reserve(len - frame.len());
        if stream.read_buf(frame).await? == 0 {
            return Err("raw-pingpong: the connection closed".into());
        }
    }
    Ok(())
}
