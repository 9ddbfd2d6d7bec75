//! A directory of connected peers by name: call one by name, broadcast to all, watch them come
//! and go.
//!
//! Every connection's other end announces a name in its HELLO (a channel's
//! [`name`](crate::ChannelBuilder::name), a server's [`name`](crate::ServerBuilder::name)). A
//! [`Peers`] lists the connections of a [`Server`](crate::Server) (from
//! [`ServerHandle::peers`](crate::ServerHandle::peers)) or of a [`Node`](crate::Node) by those
//! names, from the moment a connection's handshake is done until it closes:
//!
//! ```no_run
//! use zrpc_transport::{PeerEvent, Server};
//!
//! /// What the clients serve.
//! #[zrpc_macros::service(crate = "zrpc_core")]
//! pub trait Notify {
//!     /// Shows `text` to the user.
//!     async fn notify(&self, text: String);
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder().name("hub").bind("tcp://127.0.0.1:7000").await?;
//! let peers = server.peers();
//! tokio::spawn(server.serve());
//!
//! // One peer, by name: resolved at each call, `Unavailable` (unprocessed) while not connected.
//! NotifyClient::new(peers.named("alice")).notify("hello".into()).await?;
//! // Every connected peer, concurrently, typed:
//! for (name, answer) in NotifyClient::new(peers.clone()).broadcast().notify("to all".into()).await {
//!     println!("{name}: {answer:?}");
//! }
//! // Or anything per peer:
//! let alive = peers.broadcast(|peer| async move { peer.is_connected() }).await;
//! // Arrivals and departures, starting with those connected now:
//! let mut watch = peers.watch();
//! while let Some(event) = watch.next().await {
//!     if let PeerEvent::Joined { name, .. } = event {
//!         println!("{name} is here");
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Two connections with one name
//!
//! Names are the peers' own claims, so two connections may announce the same one: a client that
//! reconnects while its old connection is not yet known to be dead, or two processes configured
//! alike. Both are listed ([`all`](Peers::all), [`broadcast`](Peers::broadcast) and
//! [`watch`](Peers::watch) see each connection) and each can be called through its own
//! [`Peer`]; **the newest connection answers to the name** ([`get`](Peers::get),
//! [`named`](Peers::named)), and when it closes the name goes back to the newest one left. The
//! newest wins because the common case is a reconnect, whose new connection is the live one;
//! refusing the second claimant would lock a restarted client out until the server noticed
//! that its old connection was dead (up to the heartbeat's 30 s). A name is not an identity:
//! authenticate peers (a token, mutual TLS; see [`crate::auth`]) before trusting what they call
//! themselves. On a server with an authenticator, peers are listed under the identity it
//! accepted, not the name they announced.
//!
//! # Bounds
//!
//! The directory holds one entry per open connection, which the server's connections already
//! bound. Each watcher has a queue of at most [`WATCH_CAPACITY`] events; one that falls further
//! behind is told how many it missed ([`PeerEvent::Lagged`]) and can re-read
//! [`all`](Peers::all).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use tokio::sync::broadcast;
use tower::Service;
use zrpc_core::peer::{Link, PeerCall};
use zrpc_core::spread::{self, Answers, Spread};
use zrpc_core::{Peer, Request, Response, Status};

use crate::conn::Shared;

/// Events a [`PeerWatch`] may fall behind by before it is told it lagged.
pub const WATCH_CAPACITY: usize = 1024;

/// The connected peers of a server or a node, by name; see the [module docs](self).
///
/// Cheap to clone; clones share the directory.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<Directory>,
}

struct Directory {
    state: Mutex<State>,
    events: broadcast::Sender<PeerEvent>,
}

#[derive(Default)]
struct State {
    /// Every listed connection under its name, oldest first.
    by_name: HashMap<Arc<str>, Vec<Peer>>,
    /// How many connections are listed.
    count: usize,
}

/// A peer arriving or leaving; see [`Peers::watch`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum PeerEvent {
    /// A connection's handshake is done: the peer can be called.
    Joined {
        /// The name it announced.
        name: Arc<str>,
        /// The peer, to call.
        peer: Peer,
    },
    /// A connection closed.
    Left {
        /// The name it announced.
        name: Arc<str>,
        /// The peer it was (calls through it now fail), to tell which of two with one name left.
        peer: Peer,
    },
    /// The watcher fell more than [`WATCH_CAPACITY`] events behind and missed this many;
    /// [`Peers::all`] says who is connected now.
    Lagged {
        /// Events missed.
        missed: u64,
    },
}

impl Peers {
    /// An empty directory.
    pub(crate) fn new() -> Peers {
        let (events, _) = broadcast::channel(WATCH_CAPACITY);
        Peers { inner: Arc::new(Directory { state: Mutex::new(State::default()), events }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is made whole under the lock; a panic cannot leave half of one.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest connected peer that announced `name` (see the [module docs](self#two-connections-with-one-name)).
    pub fn get(&self, name: &str) -> Option<Peer> {
        self.lock().by_name.get(name).and_then(|peers| peers.last().cloned())
    }

    /// The newest peer named `name` once one is connected: at once if one is. Bound the wait
    /// with a timeout where the peer may never come.
    pub async fn wait_for(&self, name: &str) -> Peer {
        let mut watch = self.watch();
        loop {
            if let Some(peer) = self.get(name) {
                return peer;
            }
            // Never `None`: `self` keeps the directory alive. A `Lagged` leads to the check above.
            if watch.next().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Whether a peer named `name` is connected.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().by_name.contains_key(name)
    }

    /// A peer to call by `name`, looked up at each call: calls reach the newest connection with
    /// that name, and while none is connected fail with `Unavailable` naming it, marked
    /// unprocessed. A [`Peer`] like any other, so any generated client works on it; unlike one
    /// from [`get`](Peers::get), it follows the name from connection to connection.
    pub fn named(&self, name: impl Into<Arc<str>>) -> Peer {
        Peer::new(ByName { peers: self.clone(), name: name.into() })
    }

    /// The names of the connected peers, sorted, each once.
    pub fn names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<_> = self.lock().by_name.keys().cloned().collect();
        names.sort();
        names
    }

    /// Every connected peer, one per connection, by name and then oldest first.
    pub fn all(&self) -> Vec<Peer> {
        self.listed().into_iter().map(|(_, peer)| peer).collect()
    }

    /// Every connected peer with the name it is listed under, in the order of [`all`](Peers::all).
    fn listed(&self) -> Vec<(Arc<str>, Peer)> {
        let state = self.lock();
        let mut names: Vec<_> = state.by_name.keys().collect();
        names.sort();
        names.into_iter().flat_map(|name| state.by_name[name].iter().map(|peer| (name.clone(), peer.clone()))).collect()
    }

    /// How many connections are listed.
    pub fn len(&self) -> usize {
        self.lock().count
    }

    /// Whether no peer is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls every connected peer at once with `call` (typically a generated client's method)
    /// and returns the name each peer is listed under with what its call returned, in the order of
    /// [`all`](Peers::all): rpcx's push to every client (see the [module docs](self) for an
    /// example).
    pub async fn broadcast<F, Fut, T>(&self, mut call: F) -> Vec<(Arc<str>, T)>
    where
        F: FnMut(Peer) -> Fut,
        Fut: Future<Output = T>,
    {
        // The name each is listed under: an authenticated peer's identity, not its claim.
        let calls = self.listed().into_iter().map(|(name, peer)| {
            let answer = call(peer);
            async move { (name, answer.await) }
        });
        futures::future::join_all(calls).await
    }

    /// Peers arriving and leaving: first a [`PeerEvent::Joined`] for every peer connected now,
    /// then each change as it happens, none missed in between.
    pub fn watch(&self) -> PeerWatch {
        let state = self.lock();
        // Subscribed under the lock, which every change is announced under: the snapshot and
        // the live events meet with nothing lost or repeated.
        let events = self.inner.events.subscribe();
        let current = state
            .by_name
            .iter()
            .flat_map(|(name, peers)| {
                peers.iter().map(|peer| PeerEvent::Joined { name: name.clone(), peer: peer.clone() })
            })
            .collect();
        PeerWatch { current, events }
    }

    /// Lists `peer` under `name` until the returned guard is dropped.
    pub(crate) fn join(&self, name: Arc<str>, peer: Peer) -> Listed {
        let mut state = self.lock();
        state.by_name.entry(name.clone()).or_default().push(peer.clone());
        state.count += 1;
        let _ = self.inner.events.send(PeerEvent::Joined { name: name.clone(), peer: peer.clone() });
        drop(state);
        Listed { peers: self.clone(), name, peer }
    }

    fn leave(&self, name: &Arc<str>, peer: &Peer) {
        let mut state = self.lock();
        let Some(peers) = state.by_name.get_mut(name) else { return };
        let Some(index) = peers.iter().position(|listed| listed.same_connection(peer)) else { return };
        peers.remove(index);
        if peers.is_empty() {
            state.by_name.remove(name);
        }
        state.count -= 1;
        let _ = self.inner.events.send(PeerEvent::Left { name: name.clone(), peer: peer.clone() });
    }
}

/// Over the connected peers, listed as [`all`](Peers::all) lists them: the generated clients'
/// `broadcast()` and `fork(n)` views over a directory call every peer, or the first `n`, typed
/// (`NotifyClient::new(peers).broadcast().notify(..)`).
impl Spread for Peers {
    fn broadcast(&self, request: Request) -> impl Future<Output = Answers<Response>> + Send + 'static {
        let calls: Vec<_> =
            self.listed().into_iter().map(|(name, mut peer)| (name, peer.call(request.clone()))).collect();
        async move {
            if calls.is_empty() {
                let status = Status::unavailable(format!("{} not sent: no peer is connected", request.method()));
                return vec![(Arc::from(""), Err(status.mark_unprocessed()))];
            }
            let (names, calls): (Vec<_>, Vec<_>) = calls.into_iter().unzip();
            names.into_iter().zip(futures::future::join_all(calls).await).collect()
        }
    }

    fn fork(
        &self,
        request: Request,
        n: usize,
    ) -> impl Future<Output = Result<(Arc<str>, Response), Status>> + Send + 'static {
        let n = if n == 0 { usize::MAX } else { n };
        let calls: Vec<_> =
            self.listed().into_iter().take(n).map(|(name, mut peer)| (name, peer.call(request.clone()))).collect();
        async move { spread::first_success(request.method().as_str(), calls).await }
    }
}
impl fmt::Debug for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peers").field("names", &self.names()).finish()
    }
}

/// A connection listed in a [`Peers`], until dropped.
pub(crate) struct Listed {
    peers: Peers,
    name: Arc<str>,
    peer: Peer,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.peers.leave(&self.name, &self.peer);
    }
}

/// Lists the connection `shared` describes in `peers`, under the name its peer announces, from
/// the end of its handshake until `run` (the connection's task) ends.
///
/// Not an `async fn`: one would keep `run` in its state beside the join that polls it, a second
/// copy of a connection's whole future (4.7 KiB) for every connection.
pub(crate) fn listed_while<F: Future<Output = ()>>(
    run: F,
    shared: Arc<Shared>,
    peer: Peer,
    peers: Option<Peers>,
) -> impl Future<Output = ()> {
    let listed = async move {
        let peers = peers?;
        if !shared.ready().await {
            return None;
        }
        let name = shared.known_as().unwrap_or_else(|| Arc::from(""));
        Some(peers.join(name, peer))
    };
    // Both in one task: the guard, once made, lives until the connection's task ends.
    futures::future::join(run, listed).map(drop)
}

/// Arrivals and departures of peers; see [`Peers::watch`].
pub struct PeerWatch {
    current: VecDeque<PeerEvent>,
    events: broadcast::Receiver<PeerEvent>,
}

impl PeerWatch {
    /// The next event; `None` once the directory is gone (its server or node dropped).
    pub async fn next(&mut self) -> Option<PeerEvent> {
        if let Some(event) = self.current.pop_front() {
            return Some(event);
        }
        match self.events.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(PeerEvent::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl fmt::Debug for PeerWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerWatch").field("pending", &(self.current.len() + self.events.len())).finish()
    }
}

/// The link of a peer called by name ([`Peers::named`]): looked up at each call.
struct ByName {
    peers: Peers,
    name: Arc<str>,
}

impl Link for ByName {
    fn call(&self, request: Request) -> PeerCall {
        if let Some(peer) = self.peers.get(&self.name) {
            return peer.send(request);
        }
        let status = Status::unavailable(format!(
            "no peer named {:?} is connected (calling {}); connected: {}",
            self.name,
            request.method(),
            connected(&self.peers.names())
        ));
        PeerCall::ended(Err(status.mark_unprocessed()))
    }

    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn is_connected(&self) -> bool {
        self.peers.get(&self.name).is_some_and(|peer| peer.is_connected())
    }
}

impl fmt::Debug for ByName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByName").field("name", &self.name).finish()
    }
}

/// The names, for a message: a few, then how many more.
fn connected(names: &[Arc<str>]) -> String {
    const SHOWN: usize = 8;
    if names.is_empty() {
        return "none".to_owned();
    }
    let mut text = names.iter().take(SHOWN).map(|name| format!("{name:?}")).collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_told_how_much_it_missed() {
        let peers = Peers::new();
        let mut watch = peers.watch();
        // Each connection that comes and goes is two events; the watcher reads none of them.
        let connections = WATCH_CAPACITY + 10;
        for i in 0..connections {
            drop(peers.join(Arc::from(format!("peer-{i}")), Peer::detached()));
        }
        let events = 2 * connections;
        match watch.next().await {
            Some(PeerEvent::Lagged { missed }) => assert_eq!(missed, (events - WATCH_CAPACITY) as u64),
            other => panic!("expected Lagged, got {other:?}"),
        }
        // What it holds is the last WATCH_CAPACITY events, and the directory is empty again.
        let mut held = 0;
        while let Ok(Some(_)) = tokio::time::timeout(std::time::Duration::ZERO, watch.next()).await {
            held += 1;
        }
        assert_eq!(held, WATCH_CAPACITY);
        assert!(peers.is_empty());
    }
}
