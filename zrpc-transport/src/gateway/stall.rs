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
//!
//! Whether a write is stalled now is also told to the connection's task ([`Stall`]): a
//! connection closed to make room finishes the answer it is writing only while its client
//! takes it, rather than holding up the gateway's accepting for the write timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
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
    /// `stalled`, told to the connection's task.
    told: Arc<Stall>,
    tracker: Arc<Tracker>,
}

/// Whether a connection's writes are stalled now: its client takes none of what it is sent.
#[derive(Default)]
pub(crate) struct Stall {
    now: AtomicBool,
    began: Notify,
}

impl Stall {
    fn set(&self, stalled: bool) {
        self.now.store(stalled, Ordering::Release);
        if stalled {
            self.began.notify_one();
        }
    }

    /// Completes once the connection's writes are stalled, at once if they are now.
    pub(crate) async fn stalled(&self) {
        loop {
            // A stall that begins between the check and the wait leaves the `Notify` a permit.
            let began = self.began.notified();
            if self.now.load(Ordering::Acquire) {
                return;
            }
            began.await;
        }
    }
}

impl WriteBounded {
    /// `tcp`, its stalls told to `told`.
    pub(crate) fn new(tcp: TcpStream, timeout: Duration, told: Arc<Stall>, tracker: Arc<Tracker>) -> WriteBounded {
        WriteBounded { tcp, timeout, stall: None, stalled: false, told, tracker }
    }

    /// Passes on what a write polled, unless it has been stalled for the timeout.
    fn bound<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            if self.stalled {
                self.stalled = false;
                self.told.set(false);
            }
            return polled;
        }
        if !self.stalled {
            self.stalled = true;
            self.told.set(true);
            if !self.timeout.is_zero() {
                match &mut self.stall {
                    Some(stall) => stall.as_mut().reset(deadline(self.timeout)),
                    None => self.stall = Some(Box::pin(tokio::time::sleep(self.timeout))),
                }
            }
        }
        // Armed above, unless there is no timeout.
        let Some(stall) = self.stall.as_mut().filter(|_| !self.timeout.is_zero()) else { return polled };
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
