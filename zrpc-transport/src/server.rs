//! Serving services on an address: the accept loop and graceful shutdown.
//!
//! A [`Server`] hosts any number of services on one listener, behind any tower layers. Each
//! accepted connection gets its own task (see `conn`); calls on it run concurrently.
//!
//! A server given a [`Registry`] ([`ServerBuilder::register`]) registers its real address there
//! when it is bound (see [`registry`]).
//!
//! # Stopping
//!
//! A server stops when the signal given to [`Server::serve_with_shutdown`] completes or when a
//! [`ServerHandle`] (from [`Server::handle`], obtainable before serving) asks, whichever comes
//! first. Graceful shutdown ([`ServerHandle::shutdown`], or the signal):
//! 1. the server deregisters, if registered, so clients stop choosing it; then the listener is
//!    closed, so new connections are refused;
//! 2. every connection sends GOAWAY: clients send new calls elsewhere, and a request that
//!    crosses the GOAWAY is answered `Unavailable` without being processed;
//! 3. calls in progress finish, for up to the drain timeout;
//! 4. whatever is still running then is aborted and its connection closed.
//!
//! [`ServerHandle::abort`] stops at once instead, also in the middle of a graceful shutdown:
//! the listener closes and every connection task is aborted, so clients' calls in flight fail
//! with `Unavailable` promptly. It does not deregister, as a crash would not. Either way the
//! handle tells when shutdown began ([`ServerHandle::shutting_down`]) and when serving has ended
//! with every connection closed ([`ServerHandle::stopped`]).
//!
//! # Listen backlog
//!
//! A TCP or Unix listener holds up to [`ServerBuilder::backlog`] connections (default 1024) that
//! the kernel has accepted and the server has not yet: a burst of connects beyond it waits in
//! SYN retries (TCP) or is refused (Unix). The kernel caps the value at `net.core.somaxconn` on
//! Linux (`kern.ipc.somaxconn` on the BSDs and macOS); raise that too for a larger queue.
//!
//! Once accepted, a connection counts towards two server-wide bounds: at most
//! [`ServerBuilder::max_handshakes`] in their handshake (past it the one waiting longest is
//! closed) and at most [`ServerBuilder::max_connections`] open (past it the newcomer is refused
//! with a GOAWAY `ResourceExhausted` once its HELLO is in); see [`limits`](crate::limits).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::task::JoinSet;
use tower::Service;
use tower::layer::Layer;
use tower::layer::util::{Identity, Stack};
use zrpc_core::{Request, Response, Routable, Router, Status};

mod handle;

pub use self::handle::{ConnectionInfo, ServerHandle};
use self::handle::{Phase, StopOnDrop};
use crate::address::{Address, ToAddress};
use crate::auth::{Authenticator, Credentials, SharedAuthenticator};
use crate::budget::{Budget, DEFAULT_MAX_CONCURRENT_REQUESTS};
use crate::conn::{Connection, DefaultTimeout};
use crate::limits::ConnectionLimits;
use crate::listener::Listener;
use crate::mux::{MuxConfig, Role};
use crate::peers::{self, Peers};
use crate::registry::{self, Registry};

/// The listen backlog unless configured: what busy servers use (nginx's default is 511, and
/// Go's is `somaxconn`), well above the 128 of `std` and tokio that a burst of connects overran.
pub(crate) const DEFAULT_BACKLOG: u32 = 1024;

/// Connections in their handshake at once unless configured: as many as the listen backlog
/// holds; see [`ServerBuilder::max_handshakes`].
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;

/// Connections open at once unless configured; see [`ServerBuilder::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 65_536;

/// Whose default a call to a peer's default deadline is, in error messages.
const ORIGIN: &str = "the server's default";

/// Settings of a [`Server`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The name announced to clients, shown in error messages.
    pub name: String,
    /// Largest frame accepted from a client.
    pub max_frame: u32,
    /// Idle time after which a client is pinged.
    pub heartbeat_interval: Duration,
    /// Silence after a ping after which a client is dropped.
    pub heartbeat_timeout: Duration,
    /// How long graceful shutdown waits for calls in progress.
    pub drain_timeout: Duration,
    /// Most handlers running at once across all connections; connections wait their turn
    /// for more (see [`ServerBuilder::max_concurrent_requests`]).
    pub max_concurrent_requests: usize,
    /// What each client can make its connection hold (see [`limits`](crate::limits)).
    pub limits: ConnectionLimits,
    /// The algorithm answers to uncompressed requests are compressed with, and the server's
    /// calls to its peers (see [`ServerBuilder::compression`]).
    pub compression: Option<zrpc_core::Compression>,
    /// The smallest payload compressed (default 1024 bytes).
    pub compression_threshold: usize,
    /// Connections the kernel may hold for the server before it accepts them (TCP and Unix
    /// listeners; capped by the kernel's `somaxconn`).
    pub backlog: u32,
    /// Most connections in their handshake at once; past it the one that has waited longest is
    /// closed (see [`ServerBuilder::max_handshakes`]).
    pub max_handshakes: usize,
    /// Most connections open at once; one accepted past it is refused (see
    /// [`ServerBuilder::max_connections`]).
    pub max_connections: usize,
    /// The deadline given to calls the server makes to its peers that have none; `None` for
    /// none (see [`ServerBuilder::default_timeout`]).
    pub default_timeout: Option<Duration>,
    /// Whether the server also serves the built-in reflection service, `zrpc.Reflection`
    /// (default `true`; see [`ServerBuilder::reflection`]).
    pub reflection: bool,
    /// Where the server registers when bound, if anywhere.
    pub(crate) registry: Option<std::sync::Arc<dyn Registry>>,
    /// TLS under the protocol, if any.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::ServerTls>,
    /// Where clients are listed, when not a directory of the server's own (a node's).
    pub(crate) directory: Option<Peers>,
    /// Who may connect and call, if anyone decides.
    pub(crate) authenticator: Option<SharedAuthenticator>,
    /// Where durable requests are recorded, if the server takes them.
    #[cfg(feature = "durable")]
    pub(crate) inbox: Option<crate::durable::Inbox>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        let mux = MuxConfig::default();
        ServerConfig {
            name: crate::default_name(),
            max_frame: mux.max_frame,
            heartbeat_interval: mux.heartbeat_interval,
            heartbeat_timeout: mux.heartbeat_timeout,
            drain_timeout: Duration::from_secs(30),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            limits: ConnectionLimits::default(),
            compression: None,
            compression_threshold: crate::compression::DEFAULT_THRESHOLD,
            backlog: DEFAULT_BACKLOG,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            default_timeout: Some(crate::channel::DEFAULT_TIMEOUT),
            reflection: true,
            registry: None,
            #[cfg(feature = "tls")]
            tls: None,
            directory: None,
            authenticator: None,
            #[cfg(feature = "durable")]
            inbox: None,
        }
    }
}

/// The authenticator of a connection accepted past
/// [`max_connections`](ServerBuilder::max_connections): it refuses with the status it holds.
struct AtLimit(Status);

impl Authenticator for AtLimit {
    fn authenticate(&self, _: &Credentials) -> Result<zrpc_core::Identity, Status> {
        Err(self.0.clone())
    }
}

/// Builds a [`Server`]: name it, add services and layers, bind it.
pub struct ServerBuilder<L = Identity> {
    config: ServerConfig,
    router: Router,
    layer: L,
}

impl ServerBuilder<Identity> {
    fn new() -> ServerBuilder<Identity> {
        ServerBuilder { config: ServerConfig::default(), router: Router::new(), layer: Identity::new() }
    }
}

impl<L> ServerBuilder<L> {
    /// The name announced to clients (default: this program's name).
    pub fn name(mut self, name: impl Into<String>) -> ServerBuilder<L> {
        self.config.name = name.into();
        self
    }

    /// Largest frame accepted from a client (default 16 MiB; at least 1 KiB).
    pub fn max_frame(mut self, bytes: u32) -> ServerBuilder<L> {
        self.config.max_frame = bytes.max(crate::frame::MIN_MAX_FRAME);
        self
    }

    /// Ping a client after `interval` of silence; drop it `timeout` after an unanswered ping
    /// (defaults 10 s and 20 s). Zero, or `Duration::MAX` (anything from thirty years), is
    /// never: no PING, no peer given up for its silence, and for a timeout no limit on the
    /// handshake either (a server still closes the connection waiting longest when
    /// [`max_handshakes`](crate::ServerBuilder::max_handshakes) are in theirs).
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> ServerBuilder<L> {
        self.config.heartbeat_interval = interval;
        self.config.heartbeat_timeout = timeout;
        self
    }

    /// Takes durable calls (feature `durable`): the server announces `INBOX`, records each
    /// durable request in `inbox` before acknowledging it, and runs its handler once, through
    /// the server's layers, with the message's [`durable_id`](zrpc_core::Context::durable_id)
    /// in its context (see [`durable`](crate::durable), "The inbox"). Senders address the
    /// server by its [name](ServerBuilder::name), which should therefore be stable.
    ///
    /// The server keeps a clone of `inbox`; when serving has ended, [`Inbox::close`](crate::durable::Inbox::close)
    /// releases its directory at once (else it is closed when the last clone is dropped).
    #[cfg(feature = "durable")]
    pub fn inbox(mut self, inbox: crate::durable::Inbox) -> ServerBuilder<L> {
        self.config.inbox = Some(inbox);
        self
    }

    /// How long graceful shutdown waits for calls in progress (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> ServerBuilder<L> {
        self.config.drain_timeout = timeout;
        self
    }

    /// Most handlers running at once across all connections (default 100,000). A connection
    /// that finds them all in use waits its turn, first come first served, one request at a
    /// time: connections share the server fairly, and nobody is refused (see
    /// [`limits`](crate::limits)). A handler that answers without waiting does not count.
    /// Waiting takes from a call's deadline, which counts from its arrival: a call whose
    /// deadline passes before its turn is answered `DeadlineExceeded`, unprocessed (a oneway
    /// call is dropped), and its handler never runs.
    pub fn max_concurrent_requests(mut self, max: usize) -> ServerBuilder<L> {
        self.config.max_concurrent_requests = max.max(1);
        self
    }

    /// Most of a client's requests in progress on its connection at once, oneway included
    /// (default 1,000; at least 1). Announced to clients, which send no more; one that does is
    /// not read until it is back within the limit (see [`limits`](crate::limits)).
    pub fn max_requests(mut self, max: u32) -> ServerBuilder<L> {
        self.config.limits.max_requests = max.max(1);
        self
    }

    /// Most bytes of a client's requests in progress on its connection at once (default 16 MiB;
    /// one request alone may be larger, up to the frame limit).
    pub fn max_request_bytes(mut self, bytes: u32) -> ServerBuilder<L> {
        self.config.limits.max_request_bytes = bytes;
        self
    }

    /// Bytes waiting to be written to a client past which its connection starts no new handler
    /// (default 1 MiB).
    pub fn max_queued_output(mut self, bytes: usize) -> ServerBuilder<L> {
        self.config.limits.max_queued_output = bytes;
        self
    }

    /// Most metadata entries accepted in one request (default 256); a request with more is
    /// refused with `ResourceExhausted`, unprocessed.
    pub fn max_metadata_entries(mut self, entries: u16) -> ServerBuilder<L> {
        self.config.limits.max_metadata_entries = entries;
        self
    }

    /// Compresses answers of at least the [threshold](ServerBuilder::compression_threshold)
    /// (1 KiB by default) with `compression` when the client announced it, and the server's own
    /// calls to its peers. Off by default. Whatever this says, a compressed request is answered
    /// with its own algorithm (above the threshold): this sets what uncompressed requests get.
    /// An algorithm whose feature this build lacks is not used, and a warning is logged. See
    /// [`crate::compression`].
    ///
    /// # Examples
    ///
    /// ```
    /// use zrpc_transport::{Compression, Server};
    ///
    /// let builder = Server::builder().name("archive").compression(Compression::Lz4).compression_threshold(512);
    /// # let _ = builder;
    /// ```
    pub fn compression(mut self, compression: zrpc_core::Compression) -> ServerBuilder<L> {
        self.config.compression = crate::compression::usable(compression, "a server");
        self
    }

    /// The smallest payload [compressed](ServerBuilder::compression) (default 1024 bytes).
    pub fn compression_threshold(mut self, bytes: usize) -> ServerBuilder<L> {
        self.config.compression_threshold = bytes;
        self
    }

    /// How many connections the kernel may hold for the server before it accepts them, on TCP
    /// and Unix listeners (default 1024). Beyond it, connects wait in SYN retries (TCP) or are
    /// refused (Unix). The kernel silently caps it at `net.core.somaxconn` on Linux (4096 on
    /// recent kernels, 128 on older ones), `kern.ipc.somaxconn` on the BSDs and macOS.
    pub fn backlog(mut self, backlog: u32) -> ServerBuilder<L> {
        self.config.backlog = backlog;
        self
    }

    /// Most connections in their handshake at once (default [`DEFAULT_MAX_HANDSHAKES`], 1,024;
    /// at least 1): accepted, and not yet through their TLS handshake, their HELLO and the
    /// [authenticator](ServerBuilder::authenticate)'s answer. A connection accepted past it
    /// makes room by closing the one that has waited longest, so peers that connect and say
    /// nothing hold at most this many connections, and the memory of a first frame each
    /// ([`MAX_HELLO`](crate::frame::MAX_HELLO)), whatever they do; a client's own handshake,
    /// a round trip, is closed only if this many connections arrive within it.
    ///
    /// Raise it for an authenticator that takes long to answer, or for more clients than this
    /// that connect at the same moment over TLS (after a restart, say) to a server whose CPU
    /// cannot keep up with their handshakes: the oldest would be closed half-way, and retry.
    /// See [`limits`](crate::limits).
    pub fn max_handshakes(mut self, max: usize) -> ServerBuilder<L> {
        self.config.max_handshakes = max.max(1);
        self
    }

    /// Most connections open at once (default [`DEFAULT_MAX_CONNECTIONS`], 65,536; at least
    /// 1), in their handshake or past it. A connection accepted while this many others are open
    /// (not counting those being refused, so that a flood of refused connections cannot keep a
    /// freed place from the next client) is refused: once its client's HELLO arrives it gets a
    /// GOAWAY `ResourceExhausted` saying the server is at its limit, its calls are answered so,
    /// unprocessed, and it is closed. A zrpc client takes that as a refusal: its calls fail
    /// over to another endpoint, and its channel waits its backoff before it connects here
    /// again. The connections already open are untouched.
    ///
    /// Without a bound a server holds as many connections as its file descriptors allow, each
    /// up to what [`limits`](crate::limits) lets a client make it hold; a client that leaks
    /// connections, or a flood of them, would take the descriptors the process needs for
    /// everything else. Refusing the newcomer, rather than closing an idle connection to make
    /// room as [`max_handshakes`](ServerBuilder::max_handshakes) does, is because an idle
    /// connection past its handshake is a client that was let in and may still call or be
    /// called back; and rather than leaving it in the listen backlog, so that its client learns
    /// at once and goes elsewhere instead of waiting out its connect timeout. This bounds
    /// clients that were let in; that strangers cannot take every place is an
    /// [authenticator](ServerBuilder::authenticate)'s job (its refusals close their
    /// connections). See [`limits`](crate::limits).
    pub fn max_connections(mut self, max: usize) -> ServerBuilder<L> {
        self.config.max_connections = max.max(1);
        self
    }

    /// The deadline of calls this server makes to its clients (through a handler's
    /// [`Context::peer`](zrpc_core::Context::peer)) that have none, counted from when they are
    /// made (default `Some(10 s)`, as on a [`Channel`](crate::Channel)); `None` lets them wait as
    /// long as the connection lives. A caller's own deadline is never changed.
    pub fn default_timeout(mut self, timeout: Option<Duration>) -> ServerBuilder<L> {
        self.config.default_timeout = timeout;
        self
    }

    /// Checks every client's credentials when it connects, and every call before its handler
    /// runs, with `authenticator` (see [`auth`](crate::auth)): a refused client is told why
    /// (`Unauthenticated`) and disconnected, a refused call answered with the refusal, and
    /// handlers see the accepted identity in [`Context::identity`](zrpc_core::Context::identity).
    /// [`Tokens`](crate::auth::Tokens) accepts a fixed set of tokens. Without one, every client
    /// may connect and the token a client sends is ignored.
    pub fn authenticate(mut self, authenticator: impl Authenticator) -> ServerBuilder<L> {
        self.config.authenticator = Some(SharedAuthenticator::new(authenticator));
        self
    }

    /// Registers the server in `registry` when it is bound, under its real local address and
    /// its name, until it shuts down; deregisters it on graceful shutdown, before draining (see
    /// [`registry`]).
    pub fn register(mut self, registry: impl Registry) -> ServerBuilder<L> {
        self.config.registry = Some(std::sync::Arc::new(registry));
        self
    }

    /// Speaks only TLS, presenting what `tls` holds (feature `tls`; see [`tls`](crate::tls)).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ServerTls) -> ServerBuilder<L> {
        self.config.tls = Some(tls);
        self
    }

    /// Adds a service generated by `#[zrpc::service]` (or any [`Routable`] service).
    pub fn add_service<S: Routable>(mut self, service: S) -> ServerBuilder<L> {
        self.router = self.router.add_service(service);
        self
    }

    /// Serves the built-in reflection service, `zrpc.Reflection`, beside the others (the
    /// default), or not (`false`): calls to it then get the `NotFound` of any unknown service.
    /// It lists and describes every service the server has (see
    /// [`reflection`](crate::reflection)): switch it off where what a server serves is not for
    /// its callers to know.
    pub fn reflection(mut self, on: bool) -> ServerBuilder<L> {
        self.config.reflection = on;
        self
    }

    /// Serves the services in `router` and lists clients in `peers` (a node's). The node adds
    /// reflection to its router itself, as its dialed connections serve it too.
    pub(crate) fn for_node(mut self, router: Router, peers: Peers) -> ServerBuilder<L> {
        self.router = router;
        self.config.reflection = false;
        self.config.directory = Some(peers);
        self
    }

    /// Serves through `layer` as it is, with no pinning: for a stack known to return boxed
    /// futures (a node's).
    pub(crate) fn with_layer<N>(self, layer: N) -> ServerBuilder<N> {
        ServerBuilder { config: self.config, router: self.router, layer }
    }

    /// Binds the listener, and registers the server if it has a registry; the server is not
    /// serving until [`Server::serve`].
    ///
    /// # Errors
    /// An unparseable address (`InvalidInput`), the bind's I/O error, or the registry's error
    /// (`Other`).
    pub async fn bind(self, address: impl ToAddress) -> io::Result<Server<L::Service>>
    where
        L: Layer<Router>,
    {
        let address = address.to_address().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = Listener::bind(&address, self.config.backlog).await?;
        let registration =
            registry::register(self.config.registry.as_ref(), listener.local_addr(), &self.config.name).await?;
        let router = if self.config.reflection { crate::reflection::serve(self.router) } else { self.router };
        let service = self.layer.layer(router.clone());
        let control = StopOnDrop(match self.config.directory.clone() {
            Some(peers) => ServerHandle::listing_in(peers),
            None => ServerHandle::new(),
        });
        Ok(Server { listener, service, names: router, config: self.config, registration, control })
    }
}

impl ServerBuilder<Identity> {
    /// Wraps all services in `layer`: any tower layer, whatever its futures (see [`Layered`]).
    /// As with `tower::ServiceBuilder`, the first layer added is the outermost: it sees each
    /// request first.
    pub fn layer<N>(self, layer: N) -> ServerBuilder<Layered<Stack<N, Identity>>> {
        ServerBuilder { config: self.config, router: self.router, layer: Layered(Stack::new(layer, self.layer)) }
    }
}

impl<L> ServerBuilder<Layered<L>> {
    /// Wraps all services in one more `layer`, inside those added before.
    pub fn layer<N>(self, layer: N) -> ServerBuilder<Layered<Stack<N, L>>> {
        let Layered(outer) = self.layer;
        ServerBuilder { config: self.config, router: self.router, layer: Layered(Stack::new(layer, outer)) }
    }
}

/// The layers of a [`ServerBuilder`], with its handlers' futures pinned in a box.
///
/// A connection polls each handler once in place, and gives it a task of its own only if it has
/// to wait: a handler that answers at once costs no task, no channel hop and no wake-up. That
/// needs futures it can move after polling, that is `Unpin` ones: the generated services' are
/// (boxed already), but a layer's may not be (`tower::util::AndThen` with an `async` block, or
/// any future holding one). So a server with layers boxes each call's future once, at the
/// outermost layer, and a server without (the common case, and the benchmark's) boxes nothing
/// more. Users never box by hand, and any layer works.
#[derive(Clone, Debug)]
pub struct Layered<L>(L);

impl<L: Layer<Router>> Layer<Router> for Layered<L> {
    type Service = Pinned<L::Service>;

    fn layer(&self, router: Router) -> Pinned<L::Service> {
        Pinned(self.0.layer(router))
    }
}

/// A layered server's service: `S`, with its futures pinned in a box (see [`Layered`]).
#[derive(Clone, Debug)]
pub struct Pinned<S>(S);

impl<S> Service<Request> for Pinned<S>
where
    S: Service<Request, Response = Response, Error = Status>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Status;
    type Future = Pin<Box<S::Future>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        Box::pin(self.0.call(request))
    }
}

impl<L> fmt::Debug for ServerBuilder<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder").field("config", &self.config).field("router", &self.router).finish()
    }
}

/// A bound server; see the [module docs](self).
pub struct Server<S> {
    listener: Listener,
    service: S,
    names: Router,
    config: ServerConfig,
    /// Kept alive while the server lives; dropped with it when it dies without shutting down.
    registration: Option<registry::Registration>,
    /// Marks the server stopped once it, or the future serving it, is dropped.
    control: StopOnDrop,
}

impl Server<Router> {
    /// Starts building a server.
    pub fn builder() -> ServerBuilder<Identity> {
        ServerBuilder::new()
    }
}

impl<S> Server<S>
where
    S: Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
    // Unpin lets a connection poll a handler in place before deciding to give it a task. The
    // router's futures are, and a layered server's are pinned (see `Layered`).
    S::Future: Send + Unpin + 'static,
{
    /// The address the server listens on, with the real port when bound to port 0.
    pub fn local_addr(&self) -> &Address {
        self.listener.local_addr()
    }

    /// A handle to shut the server down, gracefully or at once, and to learn when it has; see
    /// [`ServerHandle`]. Take it before serving, since serving consumes the server.
    pub fn handle(&self) -> ServerHandle {
        self.control.0.clone()
    }

    /// The connected clients by name, to call back, broadcast to or watch; the same as
    /// [`ServerHandle::peers`]. Take it before serving, since serving consumes the server.
    pub fn peers(&self) -> Peers {
        self.control.0.peers()
    }

    /// Serves until a [`ServerHandle`] stops it, or the process ends.
    ///
    /// # Errors
    /// None at present; the `Result` leaves room for fatal listener errors.
    pub async fn serve(self) -> io::Result<()> {
        self.serve_with_shutdown(std::future::pending::<()>()).await
    }

    /// Serves until `signal` completes, then shuts down gracefully (see the
    /// [module docs](self#stopping)); a [`ServerHandle`] can stop it sooner. Returns once serving
    /// has ended and every connection is closed.
    ///
    /// # Errors
    /// None at present; the `Result` leaves room for fatal listener errors.
    pub async fn serve_with_shutdown<F: Future>(self, signal: F) -> io::Result<()> {
        let Server { mut listener, service, names, config, registration, control } = self;
        let handle = control.0.clone();
        let mut conn_config = MuxConfig::named(config.name.clone());
        conn_config.max_frame = config.max_frame;
        conn_config.heartbeat_interval = config.heartbeat_interval;
        conn_config.heartbeat_timeout = config.heartbeat_timeout;
        conn_config.compression = config.compression;
        conn_config.compression_threshold = config.compression_threshold;
        config.limits.apply(&mut conn_config);
        #[cfg(feature = "durable")]
        let dispatcher = config.inbox.clone().map(|inbox| {
            conn_config.inbox = true;
            let stop = {
                let handle = handle.clone();
                async move { handle.reached(Phase::Draining).await }
            };
            let local = std::sync::Arc::from(config.name.as_str());
            tokio::spawn(crate::durable::run_inbox(inbox, service.clone(), names.clone(), local, stop))
        });
        let budget = Budget::new(config.max_concurrent_requests);
        let at_limit = SharedAuthenticator::new(AtLimit(Status::resource_exhausted(format!(
            "{} is at its connection limit ({} open); try another server",
            config.name, config.max_connections
        ))));
        let mut connections = JoinSet::new();
        let mut signal = std::pin::pin!(signal);
        loop {
            tokio::select! {
                _ = signal.as_mut() => break,
                () = handle.reached(Phase::ShuttingDown) => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tracing::trace!(%peer, "accepted a connection");
                        let open = handle.count_connection(&peer, config.max_handshakes, config.max_connections);
                        let id = open.id();
                        let server = handle.clone();
                        let (conn_config, service, names) = (conn_config.clone(), service.clone(), names.clone());
                        let budget = budget.clone();
                        let default_timeout = config.default_timeout;
                        // Past the bound the connection is refused through the authenticator's
                        // path: a GOAWAY at its HELLO, its calls answered unprocessed.
                        let authenticator =
                            if open.refused() { Some(at_limit.clone()) } else { config.authenticator.clone() };
                        let remote = peer.clone();
                        #[cfg(feature = "durable")]
                        let inbox = config.inbox.clone();
                        #[cfg(feature = "tls")]
                        let (tls, handshake_timeout) = (config.tls.clone(), crate::mux::heartbeat_time(config.heartbeat_timeout));
                        let close = connections.spawn(async move {
                            #[cfg(feature = "tls")]
                            let Some((stream, certificate)) = secure(tls, stream, &peer, handshake_timeout, &server).await
                            else {
                                return;
                            };
                            #[cfg(not(feature = "tls"))]
                            let certificate = None;
                            let (conn, calls) =
                                Connection::new(stream, Role::Acceptor, conn_config, service, names, Some(budget));
                            open.attach(calls.shared());
                            let peer = calls.peer(DefaultTimeout { timeout: default_timeout, origin: ORIGIN });
                            let peers = server.peers();
                            let conn = conn.with_peer(peer.clone());
                            #[cfg(feature = "durable")]
                            let conn = match inbox {
                                Some(inbox) => conn.with_inbox(inbox),
                                None => conn,
                            };
                            let conn = match authenticator {
                                Some(authenticator) => {
                                    let credentials = Credentials::of_connection(remote, certificate);
                                    conn.with_authenticator(authenticator, credentials)
                                }
                                None => conn,
                            };
                            let conn = conn.with_shutdown(async move { server.reached(Phase::Draining).await });
                            let shared = calls.shared().clone();
                            let handshake = async {
                                shared.ready().await;
                                open.handshake_done();
                            };
                            let run = peers::listed_while(conn.run(), shared.clone(), peer, Some(peers));
                            futures::future::join(run, handshake).await;
                            drop(open);
                        });
                        handle.close_with(id, close);
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        // The signal's way in; a no-op when the handle asked (or aborted) first.
        handle.shutdown();
        let graceful = async {
            registry::deregister(registration).await;
            drop(listener);
            // GOAWAY only now: a client told to go away must find this address closed.
            handle.advance(Phase::Draining);
            let drain = async { while connections.join_next().await.is_some() {} };
            let drained = tokio::time::timeout(config.drain_timeout, drain).await.is_ok();
            if !drained {
                tracing::warn!(left = connections.len(), "drain timeout reached; closing the remaining connections");
            }
            drained
        };
        let drained = tokio::select! {
            biased;
            // An abort drops `graceful`, and with it the listener and the registration.
            () = handle.reached(Phase::Aborting) => false,
            drained = graceful => drained,
        };
        // Aborts every connection task left and waits until each has ended, so that every
        // connection is closed before the server counts as stopped.
        if !drained {
            connections.shutdown().await;
        }
        // The inbox's handlers finish within the drain timeout too; those still running are
        // aborted, and run again at the inbox's next open (as after a crash inside them).
        #[cfg(feature = "durable")]
        if let Some(mut dispatcher) = dispatcher {
            let finished = drained && tokio::time::timeout(config.drain_timeout, &mut dispatcher).await.is_ok();
            if !finished {
                dispatcher.abort();
                let _ = dispatcher.await;
            }
        }
        drop(control);
        Ok(())
    }
}

/// `stream` after the server side of a TLS handshake when the server has `tls`, with the
/// client's certificate if it presented one, or as it is; `None` when the handshake fails, takes
/// longer than `timeout`, or shutdown begins first.
#[cfg(feature = "tls")]
async fn secure(
    tls: Option<crate::tls::ServerTls>,
    stream: crate::stream::Stream,
    peer: &str,
    timeout: Duration,
    server: &ServerHandle,
) -> Option<(crate::stream::Stream, Option<bytes::Bytes>)> {
    let Some(tls) = tls else { return Some((stream, None)) };
    tokio::select! {
        handshake = tokio::time::timeout(timeout, tls.accept(stream)) => match handshake {
            Ok(Ok(secured)) => Some(secured),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, ?timeout, "no TLS handshake within the timeout");
                None
            }
        },
        () = server.reached(Phase::Draining) => None,
    }
}

impl<S> fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("local_addr", self.listener.local_addr()).field("config", &self.config).finish()
    }
}
