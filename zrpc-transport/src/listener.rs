//! Listening for and opening connections on every kind of [`Address`].
//!
//! In-memory endpoints live in a process-wide table from name to listener, so a client in the
//! same process reaches a server by `mem://name` with no socket at all; binding `mem://` (no
//! name) picks a fresh unique one.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use crate::address::Address;
use crate::stream::Stream;

/// Buffer size of each direction of an in-memory pipe.
const MEMORY_PIPE_BYTES: usize = 256 * 1024;

type MemoryTable = HashMap<String, mpsc::UnboundedSender<DuplexStream>>;

static MEMORY: LazyLock<Mutex<MemoryTable>> = LazyLock::new(Default::default);
static MEMORY_NAMES: AtomicU64 = AtomicU64::new(1);

fn memory_table() -> std::sync::MutexGuard<'static, MemoryTable> {
    // The table holds no invariant a panicking holder could break half-way.
    MEMORY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A bound listener of any kind.
#[derive(Debug)]
pub(crate) struct Listener {
    kind: Kind,
    local: Address,
}

#[derive(Debug)]
enum Kind {
    #[cfg(feature = "tcp")]
    Tcp(tokio::net::TcpListener),
    #[cfg(all(feature = "unix", unix))]
    Unix(tokio::net::UnixListener),
    Memory(mpsc::UnboundedReceiver<DuplexStream>),
}

impl Listener {
    pub(crate) async fn bind(address: &Address) -> io::Result<Listener> {
        match address {
            #[cfg(feature = "tcp")]
            Address::Tcp(hostport) => {
                let listener = tokio::net::TcpListener::bind(hostport.as_str()).await?;
                let local = Address::from(listener.local_addr()?);
                Ok(Listener { kind: Kind::Tcp(listener), local })
            }
            #[cfg(all(feature = "unix", unix))]
            Address::Unix(path) => {
                let listener = tokio::net::UnixListener::bind(path)?;
                Ok(Listener { kind: Kind::Unix(listener), local: address.clone() })
            }
            Address::Memory(name) => {
                let name = if name.is_empty() {
                    format!("anonymous-{}", MEMORY_NAMES.fetch_add(1, Ordering::Relaxed))
                } else {
                    name.clone()
                };
                let mut table = memory_table();
                if table.get(&name).is_some_and(|tx| !tx.is_closed()) {
                    return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("mem://{name} is already bound")));
                }
                let (tx, rx) = mpsc::unbounded_channel();
                table.insert(name.clone(), tx);
                Ok(Listener { kind: Kind::Memory(rx), local: Address::Memory(name) })
            }
            #[allow(unreachable_patterns)]
            other => Err(unsupported(other)),
        }
    }

    pub(crate) fn local_addr(&self) -> &Address {
        &self.local
    }

    /// Waits for the next connection and returns it with a description of the peer.
    ///
    /// # Cancel safety
    /// Cancel safe: a connection is either returned or left in the backlog.
    pub(crate) async fn accept(&mut self) -> io::Result<(Stream, String)> {
        match &mut self.kind {
            #[cfg(feature = "tcp")]
            Kind::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok((Stream::Tcp(stream), peer.to_string()))
            }
            #[cfg(all(feature = "unix", unix))]
            Kind::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                Ok((Stream::Unix(stream), "unix peer".to_owned()))
            }
            Kind::Memory(rx) => match rx.recv().await {
                Some(stream) => Ok((Stream::Memory(stream), "memory peer".to_owned())),
                None => Err(io::Error::new(io::ErrorKind::NotConnected, "in-memory listener closed")),
            },
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Memory(_) => {
                if let Address::Memory(name) = &self.local {
                    memory_table().remove(name);
                }
            }
            #[cfg(all(feature = "unix", unix))]
            Kind::Unix(_) => {
                if let Address::Unix(path) = &self.local {
                    // We created the socket file; leaving it would make the next bind fail.
                    let _ = std::fs::remove_file(path);
                }
            }
            #[cfg(feature = "tcp")]
            Kind::Tcp(_) => {}
        }
    }
}

/// Opens a byte stream to `address`.
///
/// # Errors
/// The I/O error of the connect, or `ConnectionRefused` for an unbound in-memory name.
pub(crate) async fn connect(address: &Address) -> io::Result<Stream> {
    match address {
        #[cfg(feature = "tcp")]
        Address::Tcp(hostport) => {
            let stream = tokio::net::TcpStream::connect(hostport.as_str()).await?;
            stream.set_nodelay(true)?;
            Ok(Stream::Tcp(stream))
        }
        #[cfg(all(feature = "unix", unix))]
        Address::Unix(path) => Ok(Stream::Unix(tokio::net::UnixStream::connect(path).await?)),
        Address::Memory(name) => {
            let (local, remote) = tokio::io::duplex(MEMORY_PIPE_BYTES);
            let sent = memory_table().get(name).map(|tx| tx.send(remote));
            match sent {
                Some(Ok(())) => Ok(Stream::Memory(local)),
                _ => Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("nothing listens on mem://{name}"))),
            }
        }
        #[allow(unreachable_patterns)]
        other => Err(unsupported(other)),
    }
}

#[allow(dead_code)]
fn unsupported(address: &Address) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("{address}: this transport is not enabled in this build"))
}
