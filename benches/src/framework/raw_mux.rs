//! The multiplexed floor: a minimal hand-written multiplexer, what any multiplexing framework
//! pays at least.
//!
//! Frames are `[u32 len][u64 id][payload]`, big-endian, `len` counting the payload only. There is
//! no encoding: the payload is the postcard encoding of the message, prepared once
//! ([`payload`]), so the floor moves as many bytes per call as zrpc does.
//!
//! - Client: a caller takes an id from an atomic counter, registers a `oneshot` sender under it in
//!   a `Mutex<HashMap>`, and pushes `(id, payload)` to an mpsc queue. One writer task drains the
//!   queue into one buffer and writes it with one `write_all` (so writes coalesce under load); one
//!   reader task parses frames and completes the matching `oneshot`.
//! - Server: per connection, a reader parses frames and hands each `(id, payload)` to a writer
//!   task that coalesces the echoes the same way. No task per request: the floor does no work a
//!   handler could need a task for.
//!
//! Nothing here is hardened beyond a frame size limit: it is a floor, not a protocol.
//!
//! [`RawMuxPostcard`] is the same multiplexer doing the work of the workload: the client
//! encodes the message for every call and decodes the echo, the server decodes every request
//! and encodes it back, with zrpc's own postcard codec ([`CodecId::Postcard`], the bytes and
//! the code zrpc's calls use), where zrpc does it (the caller's task, the connection's reader).
//! So `zrpc / raw-mux-postcard` is what the framework costs over a hand-written multiplexer for
//! the same calls, and `raw-mux-postcard / raw-mux` what the codec costs: the two parts of the
//! gap between zrpc and the floor that issue 15 asks about.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use zrpc::CodecId;

use super::{Caller, Framework, Name, Serving, accept_tcp, check_echo, payload};
use crate::{BenchmarkMessage, BoxError};

/// `[u32 len][u64 id]`.
const HEADER: usize = 12;
/// Larger frames are refused: they would be a bug or a stranger.
const MAX_FRAME: usize = 16 << 20;
/// The writer stops gathering and writes once this much is buffered.
const WRITE_BATCH: usize = 64 << 10;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>;

/// The hand-written multiplexer.
#[derive(Debug, Clone, Copy)]
pub struct RawMux;

impl Framework for RawMux {
    const NAME: Name = Name::RawMux;
    type Caller = MuxCaller;

    async fn serve() -> Result<Serving, BoxError> {
        // The echo: every frame read goes straight back through the writer.
        serve_with(Ok).await
    }

    async fn callers(addr: SocketAddr, conns: usize, callers: usize) -> Result<Vec<MuxCaller>, BoxError> {
        let mut clients = Vec::with_capacity(conns);
        for _ in 0..conns {
            clients.push(MuxClient::connect(addr).await?);
        }
        let payload = payload()?;
        check_echo(Name::RawMux, &payload, &clients[0].call(payload.clone()).await?)?;
        Ok((0..callers).map(|i| MuxCaller { client: clients[i % conns].clone(), payload: payload.clone() }).collect())
    }
}

/// Binds on `127.0.0.1:0` and serves every connection with a reader that hands each frame's
/// payload to `answer` and the answer to a writer task; a payload `answer` refuses ends the
/// connection.
async fn serve_with(answer: fn(Bytes) -> Result<Bytes, BoxError>) -> Result<Serving, BoxError> {
    accept_tcp(move |stream| {
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_frames(write, rx));
        tokio::spawn(async move {
            let _ = read_frames(read, |id, payload| match answer(payload) {
                Ok(answer) => tx.send((id, answer)).is_ok(),
                Err(_) => false,
            })
            .await;
        });
    })
    .await
}

/// The multiplexer with the workload's codec work (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct RawMuxPostcard;

impl Framework for RawMuxPostcard {
    const NAME: Name = Name::RawMuxPostcard;
    type Caller = PostcardCaller;

    async fn serve() -> Result<Serving, BoxError> {
        serve_with(|payload| {
            let message: BenchmarkMessage = CodecId::Postcard.decode(&payload)?;
            Ok(CodecId::Postcard.encode_to_bytes(&message)?)
        })
        .await
    }

    async fn callers(addr: SocketAddr, conns: usize, callers: usize) -> Result<Vec<PostcardCaller>, BoxError> {
        let mux = RawMux::callers(addr, conns, callers).await?;
        let mut callers =
            mux.into_iter().map(|caller| PostcardCaller { client: caller.client, message: BenchmarkMessage::filled() });
        let mut probe = callers.next().ok_or("raw-mux-postcard: no callers")?;
        probe.call().await?;
        check_echo(Name::RawMuxPostcard, &BenchmarkMessage::filled(), &probe.message)?;
        Ok(std::iter::once(probe).chain(callers).collect())
    }
}

/// A raw-mux-postcard caller: encodes its message for every call and keeps the decoded echo.
#[derive(Debug)]
pub struct PostcardCaller {
    client: MuxClient,
    message: BenchmarkMessage,
}

impl Caller for PostcardCaller {
    async fn call(&mut self) -> Result<(), BoxError> {
        let request = CodecId::Postcard.encode_to_bytes(&self.message)?;
        let echo = self.client.call(request).await?;
        self.message = CodecId::Postcard.decode(&echo)?;
        Ok(())
    }
}

/// A client connection of the multiplexer; cheap to clone.
#[derive(Debug, Clone)]
pub struct MuxClient {
    next_id: Arc<AtomicU64>,
    pending: Pending,
    frames: mpsc::UnboundedSender<(u64, Bytes)>,
}

impl MuxClient {
    /// Connects and starts the reader and writer tasks.
    ///
    /// # Errors
    /// If the connection cannot be made.
    pub async fn connect(addr: SocketAddr) -> Result<MuxClient, BoxError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let (frames, rx) = mpsc::unbounded_channel();
        let pending = Pending::default();
        tokio::spawn(write_frames(write, rx));
        let completing = pending.clone();
        tokio::spawn(async move {
            let _ = read_frames(read, |id, payload| {
                if let Some(done) = completing.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
                    let _ = done.send(payload);
                }
                true
            })
            .await;
            // The connection is gone: fail every call still waiting by dropping its sender.
            completing.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        Ok(MuxClient { next_id: Arc::new(AtomicU64::new(1)), pending, frames })
    }

    /// Sends `payload` and waits for the frame that answers it.
    ///
    /// # Errors
    /// If the connection is gone.
    pub async fn call(&self, payload: Bytes) -> Result<Bytes, BoxError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, reply) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, done);
        self.frames.send((id, payload)).map_err(|_| "raw-mux: the connection is closed")?;
        Ok(reply.await.map_err(|_| "raw-mux: the connection closed before the reply")?)
    }
}

/// A raw-mux caller.
#[derive(Debug)]
pub struct MuxCaller {
    client: MuxClient,
    payload: Bytes,
}

impl Caller for MuxCaller {
    async fn call(&mut self) -> Result<(), BoxError> {
        self.payload = self.client.call(self.payload.clone()).await?;
        Ok(())
    }
}

/// Writes frames from `rx`, gathering whatever is queued into one write.
async fn write_frames(mut write: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<(u64, Bytes)>) {
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    while let Some(frame) = rx.recv().await {
        put_frame(&mut buf, frame);
        while buf.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(frame) => put_frame(&mut buf, frame),
                Err(_) => break,
            }
        }
        if write.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
}

fn put_frame(buf: &mut BytesMut, (id, payload): (u64, Bytes)) {
    buf.reserve(HEADER + payload.len());
    // A payload over `u32::MAX` cannot come from `MAX_FRAME`-limited readers or the bench payload.
    buf.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    buf.put_u64(id);
    buf.put_slice(&payload);
}

/// Reads frames until the stream ends or `frame` returns `false`.
async fn read_frames(mut read: OwnedReadHalf, mut frame: impl FnMut(u64, Bytes) -> bool) -> Result<(), BoxError> {
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    loop {
        while buf.len() >= HEADER {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len > MAX_FRAME {
                return Err(format!("raw-mux: a {len}-byte frame is over the limit").into());
            }
            if buf.len() < HEADER + len {
                buf.reserve(HEADER + len - buf.len());
                break;
            }
            buf.advance(4);
            let id = buf.get_u64();
            if !frame(id, buf.split_to(len).freeze()) {
                return Ok(());
            }
        }
        if buf.capacity() - buf.len() < HEADER {
            buf.reserve(WRITE_BATCH);
        }
        if read.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}
