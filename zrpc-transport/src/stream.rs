//! Byte streams a connection runs over: TCP, Unix sockets, in-memory pipes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// A bidirectional byte stream zrpc can run a connection over.
///
/// An enum rather than a boxed trait object so that the per-read and per-write dispatch is a
/// `match`, not a virtual call; [`Stream::Other`] takes any other stream (TLS, a test double).
#[derive(Debug)]
#[non_exhaustive]
pub enum Stream {
    /// A TCP connection.
    #[cfg(feature = "tcp")]
    Tcp(tokio::net::TcpStream),
    /// A Unix-domain socket connection.
    #[cfg(all(feature = "unix", unix))]
    Unix(tokio::net::UnixStream),
    /// One end of an in-memory pipe.
    Memory(DuplexStream),
    /// Any other stream.
    Other(Box<dyn Io>),
}

/// What [`Stream::Other`] needs of a stream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static> Io for T {}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            #[cfg(feature = "tcp")]
            Stream::Tcp($s) => $e,
            #[cfg(all(feature = "unix", unix))]
            Stream::Unix($s) => $e,
            Stream::Memory($s) => $e,
            Stream::Other($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            #[cfg(feature = "tcp")]
            Stream::Tcp(s) => s.is_write_vectored(),
            #[cfg(all(feature = "unix", unix))]
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Memory(s) => s.is_write_vectored(),
            Stream::Other(s) => s.is_write_vectored(),
        }
    }
}
