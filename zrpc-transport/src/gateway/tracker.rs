//! The connections of a served gateway: how many are open, which wait for a request, and making
//! room for a new one past [`max_connections`](super::GatewayBuilder::max_connections).
//!
//! A connection *waits* while none of its requests is being answered: it has just opened, or
//! it has answered one and reads the next head (hyper's keep-alive). When `max_connections` are
//! open, the one that has waited longest is closed before the next is accepted, as a server
//! closes the connection longest in its handshake past `max_handshakes`: a client that opens
//! connections and sends nothing, or half a head at a time (slowloris), pushes out connections
//! that are doing nothing, itself first, and a request being answered is never cut short.
//!
//! Closing is hyper's graceful shutdown (an idle connection closes at once; one writing an
//! answer finishes it first, while its client takes it: at its first stalled write it is
//! dropped, so that a client that asks and does not read cannot hold up accepting), except for
//! a connection that has not had a request yet, which is dropped: hyper would keep reading a
//! first head already begun until its header timeout, which is all a slowloris client wants. If
//! every open connection is answering a request, the gateway accepts nothing until one is done
//! (new connections wait in the listen backlog); each request ends by its deadline.
//!
//! One mutex guards it all, taken on a connection's open and close and twice a request: a few
//! hundred nanoseconds against the request's parsing and its call.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// What a served gateway's connections are doing; see [`GatewayHandle::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GatewayStats {
    /// Connections open now.
    pub connections: usize,
    /// The most connections open at once since the gateway began serving: at most
    /// [`max_connections`](super::GatewayBuilder::max_connections).
    pub peak_connections: usize,
    /// Requests being answered now, each on a connection of its own (HTTP/1.1).
    pub requests: usize,
    /// Requests received since the gateway began serving.
    pub requests_total: u64,
    /// Connections closed to make room for a new one, `max_connections` being open.
    pub evicted: u64,
    /// Connections closed because their client took none of an answer's bytes for the
    /// [`write_timeout`](super::GatewayBuilder::write_timeout).
    pub write_timeouts: u64,
}

/// Watches a served [`Gateway`](super::Gateway)'s connections; from [`Gateway::handle`](super::Gateway::handle),
/// before or while it serves. Cheap to clone.
#[derive(Clone)]
pub struct GatewayHandle {
    tracker: Arc<Tracker>,
}

impl GatewayHandle {
    /// What the gateway's connections are doing now.
    pub fn stats(&self) -> GatewayStats {
        self.tracker.lock().stats
    }

    /// Waits until `done` holds of the gateway's stats, and returns them: a test's or an
    /// operator's way to wait for connections to open, close or be evicted without polling.
    pub async fn wait_for(&self, done: impl Fn(&GatewayStats) -> bool) -> GatewayStats {
        loop {
            let notified = self.tracker.changed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before checking, so that a change between the two is not missed.
            notified.as_mut().enable();
            let stats = self.stats();
            if done(&stats) {
                return stats;
            }
            notified.await;
        }
    }
}

impl fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayHandle").field("stats", &self.stats()).finish()
    }
}

/// The gateway's open connections; see the module docs.
pub(crate) struct Tracker {
    max: usize,
    state: Mutex<State>,
    /// Woken when a connection closes or begins to wait: the accept loop, the one waiter,
    /// waits on it for room.
    room: Notify,
    /// Woken on every change of the stats, for [`GatewayHandle::wait_for`].
    changed: Notify,
}

#[derive(Default)]
struct State {
    open: HashMap<u64, Open>,
    /// The waiting connections, by a number taken when each began to wait: oldest first.
    waiting: BTreeMap<u64, u64>,
    /// Numbers for connections and for their waits, from one count: both only grow.
    next: u64,
    /// Connections told to close that are still open.
    closing: usize,
    /// Set once the gateway stops serving: every connection is told to close, new waits too.
    stopping: bool,
    stats: GatewayStats,
}

struct Open {
    /// Its key in `waiting` while it waits.
    waiting: Option<u64>,
    had_request: bool,
    told_to_close: bool,
    close: Arc<Notify>,
}

impl Tracker {
    /// A tracker that keeps at most `max` connections open (at least one).
    pub(crate) fn new(max: usize) -> Arc<Tracker> {
        Arc::new(Tracker { max: max.max(1), state: Mutex::default(), room: Notify::new(), changed: Notify::new() })
    }

    pub(crate) fn handle(self: &Arc<Self>) -> GatewayHandle {
        GatewayHandle { tracker: self.clone() }
    }

    /// Locks the state, which no holder leaves half-changed across a panic (none can panic).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once fewer than `max` connections are open, closing those that have waited
    /// longest as needed (those already told to close count as gone).
    pub(crate) async fn make_room(&self) {
        loop {
            {
                let mut state = self.lock();
                if state.open.len() < self.max {
                    return;
                }
                let mut evicted = false;
                while state.open.len() - state.closing >= self.max {
                    let Some((_, id)) = state.waiting.pop_first() else { break };
                    state.tell_to_close(id);
                    state.stats.evicted += 1;
                    evicted = true;
                    tracing::debug!(connection = id, "gateway closed the connection waiting longest to make room");
                }
                drop(state);
                if evicted {
                    self.changed.notify_waiters();
                }
            }
            // A wake-up between the unlock and here is kept as the `Notify`'s permit.
            self.room.notified().await;
        }
    }

    /// Counts a newly accepted connection as open, and waiting, until the returned guard is
    /// dropped.
    pub(crate) fn opened(self: &Arc<Self>) -> Opened {
        let close = Arc::new(Notify::new());
        let id = {
            let mut state = self.lock();
            let id = state.take_number();
            state
                .open
                .insert(id, Open { waiting: None, had_request: false, told_to_close: false, close: close.clone() });
            state.begin_waiting(id);
            if state.stopping {
                state.tell_to_close(id);
            }
            state.stats.connections = state.open.len();
            state.stats.peak_connections = state.stats.peak_connections.max(state.open.len());
            id
        };
        self.changed.notify_waiters();
        Opened { tracker: self.clone(), id, close }
    }

    /// Tells every open connection to close, and any opened from now on; returns once all
    /// have.
    pub(crate) async fn close_all(&self) {
        {
            let mut state = self.lock();
            state.stopping = true;
            let ids: Vec<u64> = state.open.keys().copied().collect();
            for id in ids {
                state.tell_to_close(id);
            }
        }
        loop {
            if self.lock().open.is_empty() {
                return;
            }
            self.room.notified().await;
        }
    }

    /// Connection `id` began answering a request: it no longer waits, until the guard is
    /// dropped with the answer.
    pub(crate) fn request_started(self: &Arc<Self>, id: u64) -> Request {
        {
            let mut state = self.lock();
            if let Some(open) = state.open.get_mut(&id) {
                open.had_request = true;
                if let Some(key) = open.waiting.take() {
                    state.waiting.remove(&key);
                }
            }
            state.stats.requests += 1;
            state.stats.requests_total += 1;
        }
        self.changed.notify_waiters();
        Request { tracker: self.clone(), id }
    }

    /// One of the gateway's connections took none of an answer's bytes for the write timeout;
    /// it is closing.
    pub(crate) fn write_timed_out(&self) {
        self.lock().stats.write_timeouts += 1;
        self.changed.notify_waiters();
    }
}

impl State {
    fn take_number(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Connection `id`, open and not told to close, waits from now on.
    fn begin_waiting(&mut self, id: u64) {
        let key = self.take_number();
        if let Some(open) = self.open.get_mut(&id)
            && !open.told_to_close
            && open.waiting.is_none()
        {
            open.waiting = Some(key);
            self.waiting.insert(key, id);
        }
    }

    /// Tells connection `id` to close, once; it is no longer a candidate for making room.
    fn tell_to_close(&mut self, id: u64) {
        let Some(open) = self.open.get_mut(&id) else { return };
        if open.told_to_close {
            return;
        }
        open.told_to_close = true;
        if let Some(key) = open.waiting.take() {
            self.waiting.remove(&key);
        }
        // A permit if its task is not waiting yet: it sees it the next time it looks.
        open.close.notify_one();
        self.closing += 1;
    }
}

/// How a connection told to close closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// At once: no request of it has reached the service, so nothing is lost but part of a
    /// first head, which hyper's graceful shutdown would wait for.
    Now,
    /// Gracefully, an answer being written finished within the write timeout: the gateway stops.
    AfterAnswer,
    /// Gracefully, but dropped at the first write its client does not take: closed to make
    /// room, so that a client that does not read cannot hold up accepting.
    AfterAnswerWhileTaken,
}

/// An open connection, counted until dropped with its task.
pub(crate) struct Opened {
    tracker: Arc<Tracker>,
    id: u64,
    close: Arc<Notify>,
}

impl Opened {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Completes once the connection is told to close: to make room, or as the gateway stops.
    pub(crate) async fn told_to_close(&self) {
        self.close.notified().await;
    }

    /// How the connection, told to close, closes; see the module docs.
    pub(crate) fn how_to_close(&self) -> Close {
        let state = self.tracker.lock();
        if !state.open.get(&self.id).is_some_and(|open| open.had_request) {
            Close::Now
        } else if state.stopping {
            Close::AfterAnswer
        } else {
            Close::AfterAnswerWhileTaken
        }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        {
            let mut state = self.tracker.lock();
            if let Some(open) = state.open.remove(&self.id) {
                if let Some(key) = open.waiting {
                    state.waiting.remove(&key);
                }
                if open.told_to_close {
                    state.closing -= 1;
                }
            }
            state.stats.connections = state.open.len();
        }
        self.tracker.room.notify_one();
        self.tracker.changed.notify_waiters();
    }
}

/// A request being answered, until dropped with its answer's future.
pub(crate) struct Request {
    tracker: Arc<Tracker>,
    id: u64,
}

impl Drop for Request {
    fn drop(&mut self) {
        {
            let mut state = self.tracker.lock();
            state.stats.requests -= 1;
            state.begin_waiting(self.id);
        }
        self.tracker.room.notify_one();
        self.tracker.changed.notify_waiters();
    }
}
