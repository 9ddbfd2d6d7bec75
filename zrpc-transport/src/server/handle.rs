//! [`ServerHandle`]: stopping a server from outside the task that serves it, and learning when
//! it has stopped.
//!
//! A server's life moves one way: serving → shutting down (gracefully, or aborting) → stopped.
//! The handle reads and drives that one state, kept in a `watch` channel shared by every handle,
//! the accept loop and each connection task, so that a request made by any of them is seen by
//! all, and a wait that starts after a change still sees it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

use crate::conn::Shared;
use crate::mux::ConnectionStats;
use crate::peers::Peers;

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
    /// Connections accepted and not yet closed, by the order they came in.
    connections: Mutex<BTreeMap<u64, Open>>,
    /// Those whose handshake is not done (TLS, the HELLO, the authenticator's answer), by the
    /// order they came in, each with the way to close it once its task is spawned; see
    /// `ServerBuilder::max_handshakes`.
    handshaking: Mutex<BTreeMap<u64, Option<AbortHandle>>>,
    /// Connections closed in their handshake to make room for a newer one.
    handshakes_evicted: AtomicU64,
    /// Connections refused because `max_connections` were open.
    connections_refused: AtomicU64,
    /// Of the connections in `connections`, those being refused: changed and read under its
    /// lock, so that the connections served are counted exactly (see `count_connection`).
    refusing: AtomicUsize,
    next_connection: AtomicU64,
    /// Woken when a connection opens or closes, and when one's stats cross a line worth
    /// waiting for (see `Shared::publish`).
    changed: Arc<Notify>,
    /// The connected clients by name.
    peers: Peers,
}

/// One accepted connection: where from, and its state once its handshake (TLS) is done.
struct Open {
    remote: String,
    shared: Option<Arc<Shared>>,
}

/// What one of a server's connections holds; see [`ServerHandle::connections`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The client's address.
    pub remote: String,
    /// The name the client announced in its HELLO, once it has.
    pub name: Option<Arc<str>>,
    /// Its bounded buffers and calls, as of the connection's last turn (all zero until its TLS
    /// handshake is done).
    pub stats: ConnectionStats,
}

impl ServerHandle {
    pub(crate) fn new() -> ServerHandle {
        ServerHandle::listing_in(Peers::new())
    }

    /// A handle whose server lists its clients in `peers` (a node's, shared with its channels).
    pub(crate) fn listing_in(peers: Peers) -> ServerHandle {
        let (phase, _) = watch::channel(Phase::Serving);
        let control = Control {
            phase,
            connections: Mutex::new(BTreeMap::new()),
            handshaking: Mutex::new(BTreeMap::new()),
            handshakes_evicted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            refusing: AtomicUsize::new(0),
            next_connection: AtomicU64::new(0),
            changed: Arc::new(Notify::new()),
            peers,
        };
        ServerHandle { control: Arc::new(control) }
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

    /// The connected clients by the names they announced: call one by name, broadcast to all,
    /// watch them come and go (see [`peers`](crate::peers)). A client is listed from the end
    /// of its handshake until its connection closes.
    pub fn peers(&self) -> Peers {
        self.control.peers.clone()
    }

    /// Connections accepted and not yet closed (TLS handshakes in progress included).
    pub fn connection_count(&self) -> usize {
        self.control.lock().len()
    }

    /// Connections accepted whose handshake is not done yet: their TLS handshake, their HELLO,
    /// or the authenticator's answer. At most
    /// [`ServerBuilder::max_handshakes`](crate::ServerBuilder::max_handshakes).
    pub fn handshake_count(&self) -> usize {
        lock(&self.control.handshaking).len()
    }

    /// Connections closed in their handshake, since the server was built, to make room for a
    /// newer one (see [`ServerBuilder::max_handshakes`](crate::ServerBuilder::max_handshakes)).
    pub fn handshakes_evicted(&self) -> u64 {
        self.control.handshakes_evicted.load(Ordering::Relaxed)
    }

    /// Connections refused, since the server was built, because
    /// [`max_connections`](crate::ServerBuilder::max_connections) were open.
    pub fn connections_refused(&self) -> u64 {
        self.control.connections_refused.load(Ordering::Relaxed)
    }

    /// The open connections, oldest first, with what each holds: its queued output, its
    /// client's requests in progress and their bytes, and the most of each it ever held (see
    /// [`ConnectionStats`] and [`limits`](crate::limits)).
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.control
            .lock()
            .values()
            .map(|open| ConnectionInfo {
                remote: open.remote.clone(),
                name: open.shared.as_ref().and_then(|shared| shared.peer_name_if_known()),
                stats: open.shared.as_ref().map(|shared| shared.stats()).unwrap_or_default(),
            })
            .collect()
    }

    /// Resolves once `done` holds of the open connections, checked now and each time one opens,
    /// finishes its handshake or closes, or crosses a line worth waiting for: its client's
    /// reading pauses or resumes, requests start or stop waiting, its read buffer grows past
    /// its peak, a buffer grown by a burst is given back. For operators' tools and tests
    /// of the bounds ("wait until the flooding client is held back").
    ///
    /// # Cancel safety
    /// Cancel safe: it only watches.
    pub async fn wait_for_connections(&self, done: impl Fn(&[ConnectionInfo]) -> bool) {
        loop {
            let notified = self.control.changed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before checking, so that a change between the two is not missed.
            notified.as_mut().enable();
            if done(&self.connections()) {
                return;
            }
            notified.await;
        }
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

    /// Counts a connection from `remote` as open until the returned guard is dropped, with its
    /// task, and as in its handshake until [`OpenConnection::handshake_done`]. When
    /// `max_handshakes` others are in their handshake, the one that has waited longest is
    /// closed first (with what [`close_with`](ServerHandle::close_with) armed it). When
    /// `max_connections` others are open, not counting those being refused, this one is to be
    /// refused ([`OpenConnection::refused`]), and counted so.
    pub(crate) fn count_connection(
        &self,
        remote: &str,
        max_handshakes: usize,
        max_connections: usize,
    ) -> OpenConnection {
        let id = self.control.next_connection.fetch_add(1, Ordering::Relaxed);
        {
            let mut handshaking = lock(&self.control.handshaking);
            while handshaking.len() >= max_handshakes.max(1) {
                // Every entry is armed by now: the accept loop arms each connection before it
                // accepts the next.
                let Some((oldest, close)) = handshaking.pop_first() else { break };
                if let Some(close) = close {
                    close.abort();
                }
                self.control.handshakes_evicted.fetch_add(1, Ordering::Relaxed);
                zrpc_core::observe::record_handshake_evicted();
                tracing::debug!(connection = oldest, "closed a connection still in its handshake to make room");
            }
            handshaking.insert(id, None);
        }
        let refused = {
            let mut open = self.control.lock();
            let refused = open.len() - self.control.refusing.load(Ordering::Relaxed) >= max_connections;
            open.insert(id, Open { remote: remote.to_owned(), shared: None });
            if refused {
                self.control.refusing.fetch_add(1, Ordering::Relaxed);
            }
            refused
        };
        if refused {
            self.control.connections_refused.fetch_add(1, Ordering::Relaxed);
            zrpc_core::observe::record_connection_refused();
            tracing::debug!(%remote, "refusing a connection: at the connection limit");
        }
        self.control.changed.notify_waiters();
        OpenConnection { control: self.control.clone(), id, refused }
    }

    /// Lets connection `id`'s handshake be cut short with `close`, its task's, if it is still in
    /// it.
    pub(crate) fn close_with(&self, id: u64, close: AbortHandle) {
        if let Some(slot) = lock(&self.control.handshaking).get_mut(&id) {
            *slot = Some(close);
        }
    }
}

/// Locks one of the handle's maps, none of which holds an invariant a panicking holder could
/// break half-way.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Open>> {
        lock(&self.connections)
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

/// One open connection, listed by [`ServerHandle::connections`] while it lives.
pub(crate) struct OpenConnection {
    control: Arc<Control>,
    id: u64,
    /// Being refused at the connection limit.
    refused: bool,
}

impl OpenConnection {
    /// The connection's number, to [arm](ServerHandle::close_with) its handshake.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether it came past the connection limit, to be refused.
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    /// Its handshake is done (or failed): it no longer counts towards the bound, and is not
    /// closed to make room.
    pub(crate) fn handshake_done(&self) {
        if lock(&self.control.handshaking).remove(&self.id).is_some() {
            self.control.changed.notify_waiters();
        }
    }

    /// The connection's state, once its task has made it: listed from now on, and watched.
    pub(crate) fn attach(&self, shared: &Arc<Shared>) {
        shared.observe(self.control.changed.clone());
        if let Some(open) = self.control.lock().get_mut(&self.id) {
            open.shared = Some(shared.clone());
        }
        self.control.changed.notify_waiters();
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.handshake_done();
        {
            let mut open = self.control.lock();
            open.remove(&self.id);
            if self.refused {
                self.control.refusing.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.control.changed.notify_waiters();
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

    #[tokio::test]
    async fn the_connection_longest_in_its_handshake_is_closed_to_make_room() {
        /// Counts a connection as the accept loop does, with a task that runs until closed.
        fn accept(handle: &ServerHandle, remote: &str) -> (OpenConnection, tokio::task::JoinHandle<()>) {
            let connection = handle.count_connection(remote, 2, usize::MAX);
            let task = tokio::spawn(std::future::pending::<()>());
            handle.close_with(connection.id(), task.abort_handle());
            (connection, task)
        }
        let handle = ServerHandle::new();
        let mut open = vec![accept(&handle, "a"), accept(&handle, "b")];
        assert_eq!((handle.handshake_count(), handle.handshakes_evicted()), (2, 0));

        open.push(accept(&handle, "c"));
        assert_eq!((handle.handshake_count(), handle.handshakes_evicted()), (2, 1));
        let (_, a) = open.remove(0);
        assert!(a.await.expect_err("a's task was closed").is_cancelled());

        // b is done with its handshake: it no longer counts, and d makes room by closing c.
        open[0].0.handshake_done();
        open.push(accept(&handle, "d"));
        assert_eq!((handle.handshake_count(), handle.handshakes_evicted()), (2, 1));
        open.push(accept(&handle, "e"));
        assert_eq!((handle.handshake_count(), handle.handshakes_evicted()), (2, 2));
        let (_, c) = open.remove(1);
        assert!(c.await.expect_err("c's task was closed").is_cancelled());
        assert!(open.iter().all(|(_, task)| !task.is_finished()), "b, d and e are left alone");
        assert_eq!(handle.connection_count(), 3, "b, d and e");

        // A guard dropped in its handshake leaves room.
        drop(open.pop());
        assert_eq!(handle.handshake_count(), 1);
    }

    #[test]
    fn connections_are_counted_while_their_guards_live_and_refused_past_the_limit() {
        let handle = ServerHandle::new();
        let accept = |remote| handle.count_connection(remote, 10, 2);
        let (a, b, c) = (accept("a"), accept("b"), accept("c"));
        assert_eq!([a.refused(), b.refused(), c.refused()], [false, false, true]);
        assert_eq!((handle.connection_count(), handle.connections_refused()), (3, 1));
        // A place freed goes to the next, whatever is being refused.
        drop(a);
        let d = accept("d");
        assert!(!d.refused(), "b and d served, c refused");
        assert!(accept("e").refused());
        assert_eq!((handle.connection_count(), handle.connections_refused()), (3, 2), "the refused e is gone");
        drop(c);
        drop(b);
        drop(d);
        assert_eq!(handle.connection_count(), 0);
        assert!(!accept("f").refused());
    }
}
