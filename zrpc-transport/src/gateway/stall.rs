//! A connection's socket whose writes fail once its client has taken none of their bytes for
//! the [`write_timeout`](super::GatewayBuilder::write_timeout).
//!
//! hyper bounds the wait for a request's head (its header timeout) and the gateway the wait for
//! its body (the call's deadline), but nothing bounded the wait for a client to read an answer:
//! one that asked for a large answer and never read it kept the connection, and the answer's
//! bytes, for as long as it stayed connected. Here a write that cannot proceed arms a timer,
//! which any write that does disarms; when it fires the write fails with `TimedOut`, hyper ends
//! the connection with that error, and the connection's memory is freed. As a zrpc connection
//! closes a peer that reads none of its output for its heartbeat timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::tracker::Tracker;

/// A gateway connection's socket; see the module docs.
pub(crate) struct WriteBounded {
    tcp: TcpStream,
    timeout: Duration,
    /// The timer of the write that is stalled, if one is: allocated at the first stall, reset
    /// at each one after.
    stall: Option<Pin<Box<Sleep>>>,
    stalled: bool,
    tracker: Arc<Tracker>,
}

impl WriteBounded {
    pub(crate) fn new(tcp: TcpStream, timeout: Duration, tracker: Arc<Tracker>) -> WriteBounded {
        WriteBounded { tcp, timeout, stall: None, stalled: false, tracker }
    }

    /// Passes on what a write polled, unless it has been stalled for the timeout.
    fn bound<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stalled = false;
            return polled;
        }
        if self.timeout.is_zero() {
            return polled;
        }
        let stall = match &mut self.stall {
            Some(stall) => {
                if !self.stalled {
                    stall.as_mut().reset(deadline(self.timeout));
                }
                stall
            }
            None => self.stall.insert(Box::pin(tokio::time::sleep(self.timeout))),
        };
        self.stalled = true;
        ready!(stall.as_mut().poll(cx));
        self.tracker.write_timed_out();
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client took none of the answer for {:?}", self.timeout),
        )))
    }
}

/// `timeout` from now, or as far as the clock goes: as `tokio::time::sleep` reckons it.
fn deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

impl AsyncRead for WriteBounded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteBounded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.bound(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.bound(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.tcp).poll_flush(cx);
        self.bound(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.tcp).poll_shutdown(cx);
        self.bound(cx, polled)
    }
}
