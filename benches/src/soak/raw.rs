//! A hostile client's connection: raw bytes out, counted, and — for the clients that read —
//! the frames that come back, tallied.
//!
//! A [`RawConn`] enforces nothing: it writes what its client gives it and never answers a PING.
//! Every wait goes through the scenario's [`Stop`], and a failed write or read is recorded as
//! how the connection ended ([`Seen::end`]), never returned as an error: the server closing a
//! hostile connection is an outcome to report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{Instant, timeout};
use zrpc::Code;
use zrpc::transport::frame::{self, Decoder, Frame};

use super::frames;
use super::stop::Stop;
use crate::BoxError;

/// The longest a connect, or the handshake's write, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes one read asks for.
const READ_CHUNK: usize = 64 * 1024;
/// How often a rate-limited reader checks whether it may read again.
const RATE_TICK: Duration = Duration::from_millis(10);

/// What a connection sent after its handshake.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    /// Bytes the socket took.
    pub bytes: u64,
    /// Whole frames the socket took.
    pub frames: u64,
}

impl std::ops::Add for Sent {
    type Output = Sent;

    /// What two connections sent together.
    fn add(self, other: Sent) -> Sent {
        Sent { bytes: self.bytes + other.bytes, frames: self.frames + other.frames }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// `EOF`, or what failed: the I/O error's kind and the direction (`broken pipe on write`).
    pub how: String,
    /// When, counted from the connection's opening; `None` when it was only noticed after the
    /// scenario, by a client that reads nothing while the scenario runs.
    pub after: Option<Duration>,
}

/// What a connection saw of the server.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Bytes read while the scenario ran.
    pub read: u64,
    /// Successful RESPONSEs read.
    pub answered: u64,
    /// Error RESPONSEs read, by code.
    pub refused: BTreeMap<Code, u64>,
    /// PINGs read (never answered).
    pub pings: u64,
    /// When the first PING came, counted from the connection's opening.
    pub first_ping: Option<Duration>,
    /// The server's GOAWAY, if one came: its code and message.
    pub goaway: Option<(Code, String)>,
    /// How the connection ended, if it did.
    pub end: Option<End>,
}

impl Seen {
    /// Error responses of every code.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// Records the end, unless one was recorded already (the first is the cause).
    fn ended(&mut self, how: String, after: Option<Duration>) {
        if self.end.is_none() {
            self.end = Some(End { how, after });
        }
    }
}

/// A hostile client's TCP connection, after its handshake.
#[derive(Debug)]
pub struct RawConn {
    write: OwnedWriteHalf,
    /// `None` once a [`Reader`] has it.
    read: Option<OwnedReadHalf>,
    opened: Instant,
    /// What it sent after the handshake.
    pub sent: Sent,
    /// What it saw of the server.
    pub seen: Seen,
}

impl RawConn {
    /// Connects to `addr` and sends the preface and a HELLO; reads nothing (the server's own
    /// preface and HELLO wait in the socket).
    ///
    /// # Errors
    /// If the connection cannot be made, or the handshake written, within 5 s (or the
    /// handshake cannot be encoded).
    pub async fn open(addr: SocketAddr) -> Result<RawConn, BoxError> {
        RawConn::open_with(addr, &frames::handshake("soak-hostile")?).await
    }

    /// Connects to `addr` and sends `greeting` (the preface alone, for a client that never
    /// finishes its handshake); reads nothing.
    ///
    /// # Errors
    /// If the connection cannot be made, or the greeting written, within 5 s.
    pub async fn open_with(addr: SocketAddr, greeting: &[u8]) -> Result<RawConn, BoxError> {
        let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} took over {CONNECT_TIMEOUT:?}"))??;
        let (read, mut write) = stream.into_split();
        timeout(CONNECT_TIMEOUT, write.write_all(greeting))
            .await
            .map_err(|_| format!("writing the greeting took over {CONNECT_TIMEOUT:?}"))??;
        Ok(RawConn { write, read: Some(read), opened: Instant::now(), sent: Sent::default(), seen: Seen::default() })
    }

    /// Writes `bytes`, which hold `frames` whole frames, as fast as the socket takes them.
    /// Returns `true` when all were written; `false` when the scenario ended first or the write
    /// failed (recorded in [`Seen::end`]), and the client should send no more.
    pub async fn send(&mut self, bytes: &[u8], frames: u64, stop: &Stop) -> bool {
        let mut rest = bytes;
        while !rest.is_empty() {
            // One `write` at a time: dropped by `stop`, it has written nothing.
            match stop.run(self.write.write(rest)).await {
                None => return false,
                Some(Ok(0)) => {
                    self.seen.ended("the socket took no more bytes (write returned 0)".into(), Some(self.age()));
                    return false;
                }
                Some(Ok(n)) => {
                    self.sent.bytes += n as u64;
                    rest = &rest[n..];
                }
                Some(Err(e)) => {
                    self.seen.ended(format!("{} on write", e.kind()), Some(self.age()));
                    return false;
                }
            }
        }
        self.sent.frames += frames;
        true
    }

    /// Hands the read half to a [`Reader`]; `None` if one has it already.
    pub fn reader(&mut self) -> Option<Reader> {
        let read = self.read.take()?;
        Some(Reader {
            read,
            opened: self.opened,
            buf: BytesMut::new(),
            decoder: Decoder::default(),
            preface: false,
            seen: Seen::default(),
        })
    }

    /// Takes in what `reader`, which read this connection while the scenario ran, saw.
    pub fn absorb(&mut self, reader: Reader) {
        let seen = reader.seen;
        self.seen.read += seen.read;
        self.seen.answered += seen.answered;
        for (code, n) in seen.refused {
            *self.seen.refused.entry(code).or_default() += n;
        }
        self.seen.pings += seen.pings;
        self.seen.first_ping = self.seen.first_ping.into_iter().chain(seen.first_ping).min();
        self.take_end(seen.goaway, seen.end);
    }

    /// For a client that read nothing while the scenario ran, once the server's memory has been
    /// measured: reads for at most `within`, counting nothing, to learn whether the server had
    /// sent GOAWAY or closed the connection meanwhile. A connection still open after `within`
    /// keeps [`Seen::end`] empty.
    pub async fn look_back(&mut self, within: Duration) {
        let Some(mut reader) = self.reader() else { return };
        reader.read_until(&Stop::at(Instant::now() + within), None).await;
        let end = reader.seen.end.map(|end| End { after: None, ..end });
        self.take_end(reader.seen.goaway, end);
    }

    fn take_end(&mut self, goaway: Option<(Code, String)>, end: Option<End>) {
        self.seen.goaway = self.seen.goaway.take().or(goaway);
        self.seen.end = match (self.seen.end.take(), end) {
            // Both directions failed: the first seen is the cause.
            (Some(a), Some(b)) if b.after.is_some() && (a.after.is_none() || b.after < a.after) => Some(b),
            (a, b) => a.or(b),
        };
    }

    fn age(&self) -> Duration {
        self.opened.elapsed()
    }
}

/// The read half of a [`RawConn`], decoding what the server sends. PINGs are read and never
/// answered.
#[derive(Debug)]
pub struct Reader {
    read: OwnedReadHalf,
    opened: Instant,
    buf: BytesMut,
    decoder: Decoder,
    /// Whether the server's preface has been read.
    preface: bool,
    seen: Seen,
}

impl Reader {
    /// Reads until the server closes the connection or the scenario ends; at most `rate` bytes
    /// per second (on average since this call) when given.
    pub async fn read_until(&mut self, stop: &Stop, rate: Option<u64>) {
        let started = Instant::now();
        let mut chunk = vec![0; READ_CHUNK];
        while self.seen.end.is_none() {
            let mut want = READ_CHUNK;
            if let Some(rate) = rate {
                let allowed = (rate as f64 * started.elapsed().as_secs_f64()) as u64;
                let budget = allowed.saturating_sub(self.seen.read);
                if budget == 0 {
                    if stop.run(tokio::time::sleep(RATE_TICK)).await.is_none() {
                        return;
                    }
                    continue;
                }
                want = want.min(budget as usize);
            }
            match stop.run(self.read.read(&mut chunk[..want])).await {
                None => return,
                Some(Ok(0)) => self.seen.ended("EOF".into(), Some(self.opened.elapsed())),
                Some(Ok(n)) => {
                    self.seen.read += n as u64;
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.decode();
                }
                Some(Err(e)) => self.seen.ended(format!("{} on read", e.kind()), Some(self.opened.elapsed())),
            }
        }
    }

    /// What it has seen so far.
    pub fn seen(&self) -> &Seen {
        &self.seen
    }

    /// Tallies every whole frame buffered.
    fn decode(&mut self) {
        if !self.preface {
            match frame::decode_preface(&mut self.buf) {
                Ok(true) => self.preface = true,
                Ok(false) => return,
                Err(e) => return self.seen.ended(format!("not a zrpc preface: {e}"), Some(self.opened.elapsed())),
            }
        }
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(Frame::Response(response))) if response.code == 0 => self.seen.answered += 1,
                Ok(Some(Frame::Response(response))) => {
                    *self.seen.refused.entry(Code::from_u8(response.code)).or_default() += 1;
                }
                Ok(Some(Frame::GoAway(goaway))) => {
                    self.seen.goaway.get_or_insert((Code::from_u8(goaway.code), goaway.message));
                }
                Ok(Some(Frame::Ping { .. })) => {
                    self.seen.pings += 1;
                    self.seen.first_ping.get_or_insert(self.opened.elapsed());
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(e) => return self.seen.ended(format!("undecodable frame: {e}"), Some(self.opened.elapsed())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;
    use zrpc::transport::frame::GoAway;

    use super::*;

    /// A fake server that accepts one connection, reads the client's handshake, writes `bytes`,
    /// and closes it. (Closing with the handshake unread would reset the connection, not close
    /// it: the kernel answers unread data with RST.)
    async fn server_writing(bytes: BytesMut) -> Result<SocketAddr, BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut handshake = vec![0; frames::handshake("soak-hostile")?.len()];
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.read_exact(&mut handshake).await;
                let _ = stream.write_all(&bytes).await;
            }
        });
        Ok(addr)
    }

    #[tokio::test]
    async fn a_reader_tallies_responses_and_the_goaway_then_the_close() -> Result<(), BoxError> {
        let mut bytes = frames::handshake("fake")?;
        frame::encode_response(&mut bytes, 1, &Ok(zrpc::Response::new(bytes::Bytes::new())), frame::DEFAULT_MAX_FRAME)?;
        let refused = Err(zrpc::Status::new(Code::ResourceExhausted, "too many"));
        frame::encode_response(&mut bytes, 3, &refused, frame::DEFAULT_MAX_FRAME)?;
        frame::encode_ping(&mut bytes, 9);
        let goaway = GoAway { last_id: 3, code: Code::InvalidArgument.as_u8(), message: "enough".into() };
        frame::encode_goaway(&mut bytes, &goaway);
        let mut conn = RawConn::open(server_writing(bytes).await?).await?;
        let mut reader = conn.reader().ok_or("a fresh connection has its read half")?;
        reader.read_until(&Stop::at(Instant::now() + Duration::from_secs(10)), None).await;
        conn.absorb(reader);

        let seen = &conn.seen;
        assert_eq!((seen.answered, seen.refused_total(), seen.pings), (1, 1, 1));
        assert!(seen.first_ping.is_some());
        assert_eq!(seen.refused.get(&Code::ResourceExhausted), Some(&1));
        assert_eq!(seen.goaway, Some((Code::InvalidArgument, "enough".to_owned())));
        assert_eq!(seen.end.as_ref().map(|end| (end.how.as_str(), end.after.is_some())), Some(("EOF", true)));
        Ok(())
    }

    #[tokio::test]
    async fn looking_back_finds_the_close_but_no_time_and_counts_nothing() -> Result<(), BoxError> {
        let mut bytes = frames::handshake("fake")?;
        frame::encode_response(&mut bytes, 1, &Ok(zrpc::Response::new(bytes::Bytes::new())), frame::DEFAULT_MAX_FRAME)?;
        let mut conn = RawConn::open(server_writing(bytes).await?).await?;
        conn.look_back(Duration::from_secs(10)).await;
        assert_eq!((conn.seen.read, conn.seen.answered), (0, 0));
        assert_eq!(conn.seen.end, Some(End { how: "EOF".into(), after: None }));
        Ok(())
    }

    #[tokio::test]
    async fn writing_to_a_closed_connection_is_an_end_not_an_error() -> Result<(), BoxError> {
        let addr = server_writing(BytesMut::new()).await?;
        let mut conn = RawConn::open(addr).await?;
        let stop = Stop::at(Instant::now() + Duration::from_secs(10));
        let frame = vec![0; 64 * 1024];
        // The kernel takes a few writes before it has heard of the close; never a whole minute.
        let mut writes = 0;
        while conn.send(&frame, 1, &stop).await {
            writes += 1;
            assert!(writes < 1_000_000, "the writes never failed");
        }
        let end = conn.seen.end.as_ref().ok_or("the failed write is recorded")?;
        assert!(end.how.ends_with(" on write") && end.after.is_some(), "{end:?}");
        assert_eq!(conn.sent.frames, writes);
        Ok(())
    }

    #[tokio::test]
    async fn a_connection_the_server_holds_open_has_no_end() -> Result<(), BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let holding = tokio::spawn(async move { listener.accept().await });
        let mut conn = RawConn::open(addr).await?;
        let stop = Stop::at(Instant::now() + Duration::from_secs(10));
        assert!(conn.send(&frames::pings(2), 2, &stop).await);
        conn.look_back(Duration::from_millis(50)).await;
        assert_eq!((conn.sent.frames, conn.sent.bytes), (2, 2 * frame::HEADER_LEN as u64));
        assert_eq!(conn.seen.end, None);
        drop(holding);
        Ok(())
    }
}
