//! Listening for and opening connections on every kind of [`Address`].
//!
//! In-memory endpoints live in a process-wide table from name to listener, so a client in the
//! same process reaches a server by `mem://name` with no socket at all; binding `mem://` (no
//! name) picks a fresh unique one.
//!
//! TCP and Unix listeners are built socket by socket (tokio's `TcpSocket` and `UnixSocket`)
//! rather than with `TcpListener::bind`, whose listen backlog is fixed at 128, so that the
//! server's configured backlog reaches `listen(2)`. The kernel caps it at `somaxconn` without
//! saying so, and no portable call reads back the value in force: tests can check that binding
//! with a backlog works and that bursts of connects are all served, not the queue's length.

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
    /// Listens on `address`, with a listen queue of `backlog` connections for TCP and Unix
    /// sockets (in-memory listeners have no queue to size).
    ///
    /// # Errors
    /// The resolution's or the socket's I/O error, `AddrInUse` for an in-memory name already
    /// bound, `Unsupported` for a transport this build lacks.
    #[cfg_attr(not(any(feature = "tcp", all(feature = "unix", unix))), allow(unused_variables))]
    pub(crate) async fn bind(address: &Address, backlog: u32) -> io::Result<Listener> {
        match address {
            #[cfg(feature = "tcp")]
            Address::Tcp(hostport) => {
                let listener = bind_tcp(hostport, backlog).await?;
                let local = Address::from(listener.local_addr()?);
                Ok(Listener { kind: Kind::Tcp(listener), local })
            }
            #[cfg(all(feature = "unix", unix))]
            Address::Unix(path) => {
                let listener = match bind_unix(path, backlog) {
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse && remove_stale_socket(path).await => {
                        bind_unix(path, backlog)?
                    }
                    bound => bound?,
                };
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

#[cfg(all(feature = "unix", unix))]
fn bind_unix(path: &std::path::Path, backlog: u32) -> io::Result<tokio::net::UnixListener> {
    let socket = tokio::net::UnixSocket::new_stream()?;
    socket.bind(path)?;
    socket.listen(backlog)
}

/// Removes the socket file at `path` if nothing listens on it: a server that was killed (a
/// crash, `kill -9`) leaves its file behind, and a restart at the same path would otherwise
/// fail with `AddrInUse`. A file that is not a socket, or a socket someone accepts on, is left
/// alone (the bind then fails as it did). Returns whether it removed the file.
#[cfg(all(feature = "unix", unix))]
async fn remove_stale_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return false;
    }
    match tokio::net::UnixStream::connect(path).await {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing the socket file a stopped server left behind");
            std::fs::remove_file(path).is_ok()
        }
        _ => false,
    }
}

/// A TCP listener on the first address `hostport` resolves to that can be bound, as
/// `TcpListener::bind` does it (`SO_REUSEADDR` on Unix, so that a restarted server can bind
/// while its old connections linger in `TIME_WAIT`), but listening with `backlog`.
#[cfg(feature = "tcp")]
pub(crate) async fn bind_tcp(hostport: &str, backlog: u32) -> io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(hostport).await? {
        let attempt = (|| {
            let socket =
                if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            // Windows reads SO_REUSEADDR as leave to take over a port in use: std and mio do not
            // set it there, nor does this.
            #[cfg(unix)]
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(backlog)
        })();
        match attempt {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{hostport} resolved to no address"))))
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
