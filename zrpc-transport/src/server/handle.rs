//! [`ServerHandle`]: stopping a server from outside the task that serves it, and learning when
//! it has stopped.
//!
//! A server's life moves one way: serving → shutting down (gracefully, or aborting) → stopped.
//! The handle reads and drives that one state, kept in a `watch` channel shared by every handle,
//! the accept loop and each connection task, so that a request made by any of them is seen by
//! all, and a wait that starts after a change still sees it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;

/// How far a server has got in stopping; only ever moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Serving,
    /// Graceful shutdown has begun: the server stops accepting and deregisters.
    ShuttingDown,
    /// Graceful shutdown, deregistered and no longer listening: GOAWAY on every connection,
    /// and calls in progress drain. Only after the listener is closed, so that clients told to
    /// go away do not reconnect here.
    Draining,
    /// Stopping hard: the listener closed, every connection aborted.
    Aborting,
    /// Serving has ended and every connection is closed.
    Stopped,
}

/// Controls a [`Server`](crate::Server) from outside the task serving it: begins a graceful
/// shutdown or stops it at once, and tells when it has.
///
/// Obtained with [`Server::handle`](crate::Server::handle), before or while the server serves.
/// Cheap to clone; every clone controls the same server. Holding a handle does not keep the
/// server alive: a server dropped without serving, or whose serving future is dropped, counts
/// as stopped.
///
/// # Examples
///
/// ```
/// use zrpc_transport::Server;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let server = Server::builder().name("ops").bind("tcp://127.0.0.1:0").await?;
/// let handle = server.handle();
/// let serving = tokio::spawn(server.serve());
///
/// handle.shutdown(); // from an admin endpoint, a signal handler, a test...
/// handle.stopped().await;
/// assert!(handle.is_stopped());
/// # serving.await??;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ServerHandle {
    control: Arc<Control>,
}

struct Control {
    phase: watch::Sender<Phase>,
    /// Connections accepted and not yet closed.
    connections: AtomicUsize,
}

impl ServerHandle {
    pub(crate) fn new() -> ServerHandle {
        let (phase, _) = watch::channel(Phase::Serving);
        ServerHandle { control: Arc::new(Control { phase, connections: AtomicUsize::new(0) }) }
    }

    /// Begins a graceful shutdown, as the signal given to
    /// [`Server::serve_with_shutdown`](crate::Server::serve_with_shutdown) does: the server
    /// deregisters, stops accepting, sends GOAWAY on every connection and lets calls in progress
    /// finish for up to its drain timeout, then closes what is left. Returns at once; await
    /// [`stopped`](ServerHandle::stopped) to know when it is done.
    ///
    /// Idempotent, and a no-op once the server is aborting or stopped. Asked before the server
    /// serves, it makes serving end as soon as it starts.
    pub fn shutdown(&self) {
        self.advance(Phase::ShuttingDown);
    }

    /// Stops the server at once: the listener closes and every connection task is aborted, so
    /// handlers are dropped mid-call and clients' calls in flight fail promptly with
    /// `Unavailable`. Works before serving, while serving, and during a graceful shutdown (which
    /// it cuts short); a no-op once stopped.
    ///
    /// Like a crash, it does not deregister the server: a registration is dropped and expires
    /// with its lease (see [`registry`](crate::registry)). Use [`shutdown`](ServerHandle::shutdown)
    /// to leave discovery first.
    pub fn abort(&self) {
        self.advance(Phase::Aborting);
    }

    /// Whether shutdown, graceful or not, has begun (it stays `true` once the server stopped).
    pub fn is_shutting_down(&self) -> bool {
        self.phase() >= Phase::ShuttingDown
    }

    /// Resolves once shutdown, graceful or not, has begun: at once if it already has.
    ///
    /// # Cancel safety
    /// Cancel safe: it only watches.
    pub async fn shutting_down(&self) {
        self.reached(Phase::ShuttingDown).await;
    }

    /// Whether serving has ended and every connection is closed.
    pub fn is_stopped(&self) -> bool {
        self.phase() == Phase::Stopped
    }

    /// Resolves once serving has ended and every connection is closed: at once if it already
    /// has. A server that is never served stops when it is dropped.
    ///
    /// # Cancel safety
    /// Cancel safe: it only watches.
    pub async fn stopped(&self) {
        self.reached(Phase::Stopped).await;
    }

    /// Connections accepted and not yet closed (TLS handshakes in progress included).
    pub fn connection_count(&self) -> usize {
        self.control.connections.load(Ordering::Relaxed)
    }

    fn phase(&self) -> Phase {
        *self.control.phase.borrow()
    }

    /// Moves the server to `to`, unless it is there or further already.
    pub(crate) fn advance(&self, to: Phase) {
        self.control.phase.send_if_modified(|phase| {
            let moves = *phase < to;
            if moves {
                *phase = to;
            }
            moves
        });
    }

    /// Resolves once the server has reached `phase` or gone past it.
    pub(crate) async fn reached(&self, phase: Phase) {
        let mut changes = self.control.phase.subscribe();
        // Fails only once the sender is dropped, which `self` prevents.
        let _ = changes.wait_for(|now| *now >= phase).await;
    }

    /// Counts a connection as open until the returned guard is dropped, with its task.
    pub(crate) fn count_connection(&self) -> OpenConnection {
        self.control.connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.control.clone())
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("phase", &self.phase())
            .field("connections", &self.connection_count())
            .finish()
    }
}

/// One open connection, counted by [`ServerHandle::connection_count`] while it lives.
pub(crate) struct OpenConnection(Arc<Control>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The server's own handle: marks the server stopped when dropped, which happens when serving
/// ends (after every connection closed), or when the server or its serving future is dropped.
pub(crate) struct StopOnDrop(pub(crate) ServerHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.advance(Phase::Stopped);
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward() {
        let handle = ServerHandle::new();
        assert!(!handle.is_shutting_down());
        assert!(handle.shutting_down().now_or_never().is_none());

        handle.abort();
        handle.shutdown();
        assert_eq!(handle.phase(), Phase::Aborting, "a graceful shutdown does not undo an abort");
        assert_eq!(handle.shutting_down().now_or_never(), Some(()));
        assert!(handle.stopped().now_or_never().is_none());

        drop(StopOnDrop(handle.clone()));
        handle.abort();
        assert!(handle.is_stopped());
        assert!(handle.is_shutting_down());
        assert_eq!(handle.stopped().now_or_never(), Some(()));
    }

    #[tokio::test]
    async fn a_wait_begun_before_the_change_sees_it() {
        let handle = ServerHandle::new();
        let mut stopped = std::pin::pin!(handle.stopped());
        assert!(futures::poll!(stopped.as_mut()).is_pending());
        handle.shutdown();
        assert!(futures::poll!(stopped.as_mut()).is_pending(), "shutting down is not stopped");
        drop(StopOnDrop(handle.clone()));
        assert!(futures::poll!(stopped.as_mut()).is_ready());
    }

    #[test]
    fn connections_are_counted_while_their_guards_live() {
        let handle = ServerHandle::new();
        let (a, b) = (handle.count_connection(), handle.count_connection());
        assert_eq!(handle.connection_count(), 2);
        drop(a);
        assert_eq!(handle.connection_count(), 1);
        drop(b);
        assert_eq!(handle.connection_count(), 0);
    }
}
