//! A client's connection to one endpoint: shared by every clone, reconnected when lost.
//!
//! A [`Channel`] is a `tower::Service<Request>`. All its clones share one connection, over which
//! any number of calls are in flight at once. A background task owns the connection's life:
//!
//! 1. It connects when the first call is made (or at once with [`ChannelBuilder::connect`]).
//! 2. When the connection is lost or the server sends GOAWAY, it reconnects at once; calls in
//!    flight on the old connection finish there (GOAWAY) or fail with `Unavailable` (loss).
//! 3. When connecting fails, it waits with capped exponential backoff and jitter before the next
//!    attempt. Meanwhile calls fail at once with `Unavailable` saying why and when the next
//!    attempt is, so that a retry layer can go elsewhere — unless the channel was built with
//!    [`ChannelBuilder::wait_for_ready`], in which case they wait (up to their deadline).
//! 4. When the last clone is dropped, the task ends and the connection drains and closes (see
//!    [Serving](#serving)).
//!
//! # Serving
//!
//! Every connection carries calls both ways: a channel built with [`ChannelBuilder::serve`]
//! (and [`ChannelBuilder::layer`]) answers the server's calls on its connection, which the
//! server makes through its handlers' [`Context::peer`] or its directory of peers
//! ([`crate::peers`]). A channel that serves nothing answers them `NotFound`. When the last
//! clone is dropped, the connection drains like a server shutting down: a GOAWAY tells the server
//! to start no new calls on it, and calls in progress either way finish before it closes.
//!
//! # Deadlines
//!
//! No call through a channel waits forever by default. A request whose [`Context`] has no
//! deadline is given one as it enters the channel: now plus the channel's default timeout
//! ([`ChannelBuilder::default_timeout`], 10 s unless configured, as in tarpc). It is sent to the
//! server like any other deadline, so the handler sees the time it has left too, and the call
//! fails with `DeadlineExceeded` when it passes, whether the server is slow, stuck, or still
//! answering pings while it never answers the call.
//!
//! A caller's own deadline is never changed, longer or shorter. A call that must wait without
//! limit (a long poll, a watch) opts out with [`Context::without_deadline`];
//! `default_timeout(None)` turns the default off for the whole channel. A [`Client`](crate::Client)
//! applies its own default to the whole call instead and turns its channels' off.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tower::Service;
use tower::layer::Layer;
use tower::util::BoxCloneService;
use zrpc_core::backoff::Backoff;
use zrpc_core::balance::Available;
use zrpc_core::{Compression, Context, Request, Response, Routable, Router, Status};

use crate::address::{Address, ToAddress};
use crate::conn::{CallFuture, Connection, DefaultTimeout, Handle};
use crate::limits::ConnectionLimits;
use crate::listener;
use crate::mux::ConnectionStats;
use crate::mux::{MuxConfig, Role};
use crate::peers::{self, Peers};

/// The deadline a call without one gets by default, in a [`Channel`] or a
/// [`Client`](crate::Client): long enough for any ordinary call, short enough that a stuck one is
/// noticed (tarpc's default too).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whose default a channel's default deadline is, in error messages.
const ORIGIN: &str = "the channel's default";

/// Settings of a [`Channel`]; built with [`Channel::builder`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ChannelConfig {
    /// The name announced to servers, seen by handlers as `ctx.caller()`.
    pub name: String,
    /// Largest frame accepted from the server.
    pub max_frame: u32,
    /// Idle time after which the server is pinged.
    pub heartbeat_interval: Duration,
    /// Silence after a ping after which the connection is declared dead.
    pub heartbeat_timeout: Duration,
    /// Limit on connecting plus the handshake.
    pub connect_timeout: Duration,
    /// Delays between failed connection attempts.
    pub backoff: Backoff,
    /// Whether calls wait for a connection instead of failing while reconnecting.
    pub wait_for_ready: bool,
    /// The deadline given to calls that have none, from when they enter the channel; `None`
    /// for none (see the [module docs](self#deadlines)).
    pub default_timeout: Option<Duration>,
    /// Auth token sent in the HELLO.
    pub token: bytes::Bytes,
    /// What the server can make the connection hold (see [`limits`](crate::limits)).
    pub limits: ConnectionLimits,
    /// The algorithm requests are compressed with (see [`crate::compression`]); `None` for
    /// none unless a call chooses one.
    pub compression: Option<Compression>,
    /// The smallest payload compressed (default 1024 bytes).
    pub compression_threshold: usize,
    /// TLS under the protocol, if any.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ClientTls>,
    /// The services that answer the server's calls, with their layers.
    served: Served,
    /// The deadline given to calls the served handlers make back to the server that have
    /// none: the channel's own default, unless a client sets its own.
    peer_default: DefaultTimeout,
    /// Where each connection is listed by the server's name while it lives (a node's).
    directory: Option<Peers>,
    /// Where the server's durable calls are recorded, if anywhere.
    #[cfg(feature = "durable")]
    inbox: Option<ChannelInbox>,
}

/// A serving channel's inbox, and whether the channel runs its handlers (a node's channels
/// leave that to the node, which runs one dispatcher for all its connections).
#[cfg(feature = "durable")]
#[derive(Clone, Debug)]
struct ChannelInbox {
    inbox: crate::durable::Inbox,
    dispatch: bool,
}

impl Default for ChannelConfig {
    fn default() -> ChannelConfig {
        let mux = MuxConfig::default();
        ChannelConfig {
            name: crate::default_name(),
            max_frame: mux.max_frame,
            heartbeat_interval: mux.heartbeat_interval,
            heartbeat_timeout: mux.heartbeat_timeout,
            connect_timeout: Duration::from_secs(5),
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(5)),
            wait_for_ready: false,
            default_timeout: Some(DEFAULT_TIMEOUT),
            token: bytes::Bytes::new(),
            limits: ConnectionLimits::default(),
            compression: None,
            compression_threshold: crate::compression::DEFAULT_THRESHOLD,
            #[cfg(feature = "tls")]
            tls: None,
            served: Served::default(),
            peer_default: DefaultTimeout { timeout: Some(DEFAULT_TIMEOUT), origin: ORIGIN },
            directory: None,
            #[cfg(feature = "durable")]
            inbox: None,
        }
    }
}

impl ChannelConfig {
    fn mux(&self) -> MuxConfig {
        let mut config = MuxConfig::named(self.name.clone());
        config.max_frame = self.max_frame;
        config.heartbeat_interval = self.heartbeat_interval;
        config.heartbeat_timeout = self.heartbeat_timeout;
        config.token = self.token.clone();
        config.compression = self.compression;
        config.compression_threshold = self.compression_threshold;
        self.limits.apply(&mut config);
        #[cfg(feature = "durable")]
        {
            config.inbox = self.inbox.is_some();
        }
        config
    }
}

/// Served services with their layers, type-erased.
pub(crate) type BoxService = BoxCloneService<Request, Response, Status>;

/// The services a channel answers the server's calls with, and the layers around them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Served {
    pub(crate) router: Router,
    pub(crate) layers: Layers,
}

impl Served {
    /// The services in their layers, for one connection.
    pub(crate) fn service(&self) -> ServedStack {
        self.layers.layer(self.router.clone())
    }
}

/// The services in their layers: the router itself when there are none, so that a call costs no
/// box beyond the router's own.
#[derive(Clone)]
pub(crate) enum ServedStack {
    Bare(Router),
    Layered(BoxService),
}

impl Service<Request> for ServedStack {
    type Response = Response;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Response, Status>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        match self {
            ServedStack::Bare(router) => router.poll_ready(cx),
            ServedStack::Layered(service) => service.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self {
            ServedStack::Bare(router) => router.call(request),
            ServedStack::Layered(service) => service.call(request),
        }
    }
}

/// Layers added one by one, each boxing the service it wraps, in the order they were added
/// (the first is the outermost); a [`Layer`] from a [`Router`] to the boxed stack.
#[derive(Clone, Default)]
pub(crate) struct Layers(Vec<Arc<dyn Fn(BoxService) -> BoxService + Send + Sync>>);

impl Layers {
    /// Adds `layer` inside those added before.
    pub(crate) fn push<L>(&mut self, layer: L)
    where
        L: Layer<BoxService> + Send + Sync + 'static,
        L::Service: Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.0.push(Arc::new(move |inner| BoxCloneService::new(layer.layer(inner))));
    }
}

impl Layer<Router> for Layers {
    type Service = ServedStack;

    fn layer(&self, router: Router) -> ServedStack {
        if self.0.is_empty() {
            return ServedStack::Bare(router);
        }
        let mut service = BoxCloneService::new(router);
        for layer in self.0.iter().rev() {
            service = layer(service);
        }
        ServedStack::Layered(service)
    }
}

impl fmt::Debug for Layers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Layers({})", self.0.len())
    }
}

/// Builds a [`Channel`].
#[derive(Debug)]
pub struct ChannelBuilder {
    address: Address,
    config: ChannelConfig,
}

impl ChannelBuilder {
    /// The name announced to servers (default: this program's name).
    pub fn name(mut self, name: impl Into<String>) -> ChannelBuilder {
        self.config.name = name.into();
        self
    }

    /// Largest frame accepted from the server (default 16 MiB; at least 1 KiB).
    pub fn max_frame(mut self, bytes: u32) -> ChannelBuilder {
        self.config.max_frame = bytes.max(crate::frame::MIN_MAX_FRAME);
        self
    }

    /// Ping after `interval` of silence; give up `timeout` after an unanswered ping
    /// (defaults 10 s and 20 s). Zero, or `Duration::MAX` (anything from thirty years), is
    /// never: no PING, no server given up for its silence (connecting, the handshake included,
    /// is still bounded by the [connect timeout](ChannelBuilder::connect_timeout)).
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> ChannelBuilder {
        self.config.heartbeat_interval = interval;
        self.config.heartbeat_timeout = timeout;
        self
    }

    /// Limit on connecting plus the handshake (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> ChannelBuilder {
        self.config.connect_timeout = timeout;
        self
    }

    /// Delays between failed connection attempts (default 50 ms doubling to 5 s).
    pub fn backoff(mut self, backoff: Backoff) -> ChannelBuilder {
        self.config.backoff = backoff;
        self
    }

    /// Make calls wait for a connection, up to their deadline, instead of failing with
    /// `Unavailable` while the endpoint is unreachable (default `false`).
    pub fn wait_for_ready(mut self, wait: bool) -> ChannelBuilder {
        self.config.wait_for_ready = wait;
        self
    }

    /// The deadline of calls that have none, counted from when they enter the channel (default
    /// `Some(10 s)`); `None` lets such calls wait as long as the connection lives. A caller's
    /// own deadline is never changed, and a call made with [`Context::without_deadline`] gets
    /// none. See the [module docs](crate::channel#deadlines).
    pub fn default_timeout(mut self, timeout: Option<Duration>) -> ChannelBuilder {
        self.config.default_timeout = timeout;
        self.config.peer_default = DefaultTimeout { timeout, origin: ORIGIN };
        self
    }

    /// The default deadline of calls back to the server from the served handlers, when it is
    /// not the channel's (a [`Client`](crate::Client)'s channels have none of their own).
    pub(crate) fn peer_default_timeout(mut self, default: DefaultTimeout) -> ChannelBuilder {
        self.config.peer_default = default;
        self
    }

    /// Lists each connection in `peers` under the server's name, from its handshake to its end.
    pub(crate) fn listed_in(mut self, peers: Peers) -> ChannelBuilder {
        self.config.directory = Some(peers);
        self
    }

    /// Serves the services with the layers of `served` (a node's).
    pub(crate) fn served(mut self, served: Served) -> ChannelBuilder {
        self.config.served = served;
        self
    }

    /// Records the server's durable calls (those its outbox sends to this channel's name) in
    /// `inbox`, and runs their handlers with the services this channel serves, as a server
    /// with an inbox does (see [`durable`](crate::durable)): for a receiver that dials its
    /// senders. The channel announces INBOX on every connection, and runs the handlers from its
    /// first connection attempt until it is dropped (the last clone). Its name is the
    /// destination senders address.
    #[cfg(feature = "durable")]
    pub fn inbox(mut self, inbox: crate::durable::Inbox) -> ChannelBuilder {
        self.config.inbox = Some(ChannelInbox { inbox, dispatch: true });
        self
    }

    /// Records the server's durable calls in `inbox`, whose handlers something else runs (a
    /// node's dispatcher).
    #[cfg(feature = "durable")]
    pub(crate) fn records_in(mut self, inbox: crate::durable::Inbox) -> ChannelBuilder {
        self.config.inbox = Some(ChannelInbox { inbox, dispatch: false });
        self
    }

    /// Serves the services in `router` (before any added with [`serve`](ChannelBuilder::serve)).
    pub(crate) fn serve_router(mut self, router: Router) -> ChannelBuilder {
        self.config.served.router = router;
        self
    }

    /// Auth token sent to the server in the HELLO.
    pub fn token(mut self, token: impl Into<bytes::Bytes>) -> ChannelBuilder {
        self.config.token = token.into();
        self
    }

    /// Most of the server's requests in progress on the connection at once (default 1,000; at
    /// least 1). Announced to the server; it matters once the server calls back (see
    /// [`limits`](crate::limits)).
    pub fn max_requests(mut self, max: u32) -> ChannelBuilder {
        self.config.limits.max_requests = max.max(1);
        self
    }

    /// Most bytes of the server's requests in progress on the connection at once (default
    /// 16 MiB).
    pub fn max_request_bytes(mut self, bytes: u32) -> ChannelBuilder {
        self.config.limits.max_request_bytes = bytes;
        self
    }

    /// Bytes waiting to be written past which new calls wait their turn (default 1 MiB).
    pub fn max_queued_output(mut self, bytes: usize) -> ChannelBuilder {
        self.config.limits.max_queued_output = bytes;
        self
    }

    /// Most metadata entries accepted in one response (default 256); a response with more
    /// fails its call with `ResourceExhausted`.
    pub fn max_metadata_entries(mut self, entries: u16) -> ChannelBuilder {
        self.config.limits.max_metadata_entries = entries;
        self
    }

    /// Compresses the payloads of requests of at least the
    /// [threshold](ChannelBuilder::compression_threshold) (1 KiB by default) with `compression`,
    /// when the server announced it; a server answers them compressed the same way. Off by
    /// default. A payload that does not shrink goes uncompressed, and a call can choose
    /// otherwise with [`Context::with_compression`]. See [`crate::compression`].
    ///
    /// An algorithm whose feature (`zstd`, `lz4`, `gzip`) this build lacks is not used: requests
    /// go uncompressed, and a warning is logged.
    ///
    /// # Examples
    ///
    /// ```
    /// use zrpc_transport::{Channel, Compression};
    ///
    /// # fn main() -> Result<(), zrpc_transport::InvalidAddress> {
    /// // zstd for requests of 4 KiB or more (feature `zstd`); the server's answers to them too.
    /// let channel = Channel::builder("tcp://127.0.0.1:7070".parse()?)
    ///     .compression(Compression::Zstd)
    ///     .compression_threshold(4 * 1024)
    ///     .connect_lazy();
    /// # let _ = channel;
    /// # Ok(())
    /// # }
    /// ```
    pub fn compression(mut self, compression: Compression) -> ChannelBuilder {
        self.config.compression = crate::compression::usable(compression, "a channel");
        self
    }

    /// The smallest request payload [compressed](ChannelBuilder::compression) (default 1024
    /// bytes): under it, compressing costs more than the bytes it saves.
    pub fn compression_threshold(mut self, bytes: usize) -> ChannelBuilder {
        self.config.compression_threshold = bytes;
        self
    }

    /// Compresses as a [`Client`](crate::Client) configured it, its algorithm already checked.
    pub(crate) fn compression_settings(mut self, settings: crate::compression::Settings) -> ChannelBuilder {
        self.config.compression = settings.algorithm;
        self.config.compression_threshold = settings.threshold;
        self
    }

    /// Opens every connection with a TLS handshake, trusting what `tls` trusts (feature `tls`;
    /// see [`tls`](crate::tls)).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> ChannelBuilder {
        self.config.tls = Some(tls);
        self
    }

    /// Answers the server's calls on this channel's connection with `service`, a service
    /// generated by `#[zrpc::service]` (or any [`Routable`] service); any number of services may be
    /// added. The server calls them through its handlers' [`Context::peer`] or its directory of
    /// peers. A channel that serves nothing refuses every call from the server with `NotFound`.
    ///
    /// A channel connects on its first call; one that serves should usually be made with
    /// [`connect`](ChannelBuilder::connect), so that the server can call it from the start.
    /// When the connection is lost and made again, the server sees a new connection.
    pub fn serve<S: Routable>(mut self, service: S) -> ChannelBuilder {
        self.config.served.router = self.config.served.router.add_service(service);
        self
    }

    /// Wraps the services this channel [serves](ChannelBuilder::serve) in `layer`, as
    /// [`ServerBuilder::layer`](crate::ServerBuilder::layer) does on a server: the first layer
    /// added is the outermost. Each layer's service is boxed (a channel's type does not name
    /// its layers), which costs one allocation per layer per call from the server.
    pub fn layer<L>(mut self, layer: L) -> ChannelBuilder
    where
        L: Layer<BoxService> + Send + Sync + 'static,
        L::Service: Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.config.served.layers.push(layer);
        self
    }

    /// A channel that connects on its first call.
    pub fn connect_lazy(self) -> Channel {
        let (tx, rx) = watch::channel(State::Idle);
        Channel {
            inner: Arc::new(Inner {
                address: self.address,
                config: self.config,
                state: rx,
                manager: Mutex::new(Some(tx)),
                started: AtomicBool::new(false),
                progress: Arc::new(Progress { connects: AtomicU64::new(0), available: AtomicBool::new(true) }),
            }),
        }
    }

    /// A channel that has connected once.
    ///
    /// # Errors
    /// `Unavailable` when the first attempt fails; the channel is dropped.
    pub async fn connect(self) -> Result<Channel, Status> {
        let channel = self.connect_lazy();
        channel.inner.start();
        let mut state = channel.inner.state.clone();
        loop {
            match &*state.borrow_and_update() {
                State::Ready(_) => return Ok(channel.clone()),
                State::Failed { status, .. } => return Err(status.clone()),
                State::Idle | State::Connecting { .. } => {}
            }
            if state.changed().await.is_err() {
                return Err(Status::unavailable("the channel's connection task ended"));
            }
        }
    }
}

/// A client's connection to one endpoint; see the [module docs](self).
///
/// Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

struct Inner {
    address: Address,
    config: ChannelConfig,
    state: watch::Receiver<State>,
    /// Handed to the background task when it starts.
    manager: Mutex<Option<watch::Sender<State>>>,
    started: AtomicBool,
    /// Kept up to date by the background task.
    progress: Arc<Progress>,
}

/// What a balancer asks of a channel for every pick that draws it, in atomics: reading the
/// state's `watch` takes and releases a lock that every caller of the channel also takes.
struct Progress {
    /// Connections made so far; the balancer forgets an endpoint's latency when it changes.
    connects: AtomicU64,
    /// [`Available::is_available`] of the state last published.
    available: AtomicBool,
}

impl Progress {
    /// Publishes `new` as the channel's state.
    fn publish(&self, state: &watch::Sender<State>, new: State) {
        let available = !matches!(new, State::Failed { .. } | State::Connecting { retry: true });
        self.available.store(available, Ordering::Relaxed);
        state.send_replace(new);
    }
}

/// Where a [`Channel`]'s connection stands, from [`Channel::state`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelState {
    /// Lazy and not called yet: nothing is connected.
    Idle,
    /// Connecting (or reconnecting after its connection ended).
    Connecting,
    /// Connected, its handshake done: calls go out at once.
    Ready,
    /// The last attempt failed, for `reason`; calls fail at once until the backoff ends.
    Failed {
        /// Why connecting failed.
        reason: Status,
    },
}

#[derive(Clone)]
enum State {
    Idle,
    /// An attempt under way; `retry` when it follows a failure (the background probe of an
    /// endpoint that was down), during which the channel is not offered to balancers.
    Connecting {
        retry: bool,
    },
    Ready(Handle),
    Failed {
        status: Status,
    },
}

impl Channel {
    /// Starts building a channel to `address`.
    pub fn builder(address: Address) -> ChannelBuilder {
        ChannelBuilder { address, config: ChannelConfig::default() }
    }

    /// Connects to `address` with default settings.
    ///
    /// # Errors
    /// `InvalidArgument` for an address that does not parse; `Unavailable` when the first
    /// connection attempt fails.
    pub async fn connect(address: impl ToAddress) -> Result<Channel, Status> {
        let address = address.to_address().map_err(|e| Status::invalid_argument(e.to_string()))?;
        Channel::builder(address).connect().await
    }

    /// The endpoint this channel connects to.
    pub fn address(&self) -> &Address {
        &self.inner.address
    }

    /// Whether the channel is connected, connecting, or backing off after a failure.
    pub fn state(&self) -> ChannelState {
        match &*self.inner.state.borrow() {
            State::Idle => ChannelState::Idle,
            State::Connecting { .. } => ChannelState::Connecting,
            State::Ready(handle) if handle.is_ready() => ChannelState::Ready,
            // Connected, but the connection is draining or closed: the next call reconnects.
            State::Ready(_) => ChannelState::Connecting,
            State::Failed { status } => ChannelState::Failed { reason: status.clone() },
        }
    }

    /// What the current connection holds (queued output, calls waiting for flow control, the
    /// server's requests in progress), as of its last turn; `None` while not connected.
    pub fn stats(&self) -> Option<ConnectionStats> {
        match &*self.inner.state.borrow() {
            State::Ready(handle) => Some(handle.stats()),
            _ => None,
        }
    }

    /// The server's announced name, while connected.
    pub fn peer_name(&self) -> Option<String> {
        match &*self.inner.state.borrow() {
            State::Ready(handle) => handle.peer_name().map(str::to_owned),
            _ => None,
        }
    }
}

impl Channel {
    /// Starts connecting now, in the background, rather than on the first call.
    pub(crate) fn start(&self) {
        self.inner.start();
    }
}

impl Inner {
    fn start(&self) {
        // A plain load first: the swap is a write to a line every caller reads.
        if self.started.load(Ordering::Acquire) || self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let taken = self.manager.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = taken {
            tokio::spawn(manage(self.address.clone(), self.config.clone(), tx, self.progress.clone()));
        }
    }

    /// A connection to call through, waiting while one is being made, up to the deadline of
    /// `ctx` (whose origin the error names).
    async fn handle(&self, ctx: &Context) -> Result<Handle, Status> {
        self.start();
        match &*self.state.borrow() {
            State::Ready(handle) if handle.is_ready() => return Ok(handle.clone()),
            State::Failed { status, .. } if !self.config.wait_for_ready => return Err(status.clone()),
            _ => {}
        }
        let mut state = self.state.clone();
        let wait = async {
            loop {
                match &*state.borrow_and_update() {
                    State::Ready(handle) if handle.is_ready() => return Ok(handle.clone()),
                    State::Failed { status, .. } if !self.config.wait_for_ready => return Err(status.clone()),
                    _ => {}
                }
                if state.changed().await.is_err() {
                    let closed = Status::unavailable(format!("the channel to {} was closed", self.address));
                    return Err(closed.mark_unprocessed());
                }
            }
        };
        match ctx.deadline() {
            None => wait.await,
            Some(deadline) => tokio::time::timeout_at(deadline, wait).await.unwrap_or_else(|_| {
                let origin = ctx.deadline_origin().map(|origin| format!(" ({origin})")).unwrap_or_default();
                let message = format!("deadline{origin} exceeded while connecting to {}", self.address);
                Err(Status::deadline_exceeded(message).mark_unprocessed())
            }),
        }
    }
}

/// The background task: connects, watches the connection, reconnects with backoff.
async fn manage(address: Address, config: ChannelConfig, state: watch::Sender<State>, progress: Arc<Progress>) {
    // The inbox's handlers run while this task does: dropped with it, they take no more.
    #[cfg(feature = "durable")]
    let _dispatching = config
        .inbox
        .as_ref()
        .filter(|inbox| inbox.dispatch)
        .map(|inbox| crate::durable::Dispatching::spawn(inbox.inbox.clone(), &config.served, config.name.as_str()));
    let mut failures = 0;
    loop {
        progress.publish(&state, State::Connecting { retry: failures > 0 });
        let attempt = tokio::select! {
            attempt = connect_once(&address, &config) => attempt,
            () = state.closed() => return,
        };
        match attempt {
            Ok(handle) => {
                progress.connects.fetch_add(1, Ordering::Relaxed);
                progress.publish(&state, State::Ready(handle.clone()));
                tokio::select! {
                    () = handle.unusable() => {}
                    () = state.closed() => return,
                }
                // A server that refused this channel's credentials would refuse them again at
                // once: wait, as after a failed attempt (longer each time), and say why meanwhile.
                let Some(refusal) = handle.refused() else {
                    failures = 0;
                    continue;
                };
                failures += 1;
                if !back_off(&state, &progress, &config, failures, refusal).await {
                    return;
                }
            }
            Err(status) => {
                failures += 1;
                // Unavailable, unless the server refused the channel's credentials.
                if !back_off(&state, &progress, &config, failures, &status).await {
                    return;
                }
            }
        }
    }
}

/// After the `failures`-th failure in a row, for `why`: reports the channel failed (saying when
/// it tries again) and waits out the backoff; `false` when the channel was dropped meanwhile.
async fn back_off(
    state: &watch::Sender<State>,
    progress: &Progress,
    config: &ChannelConfig,
    failures: u32,
    why: &Status,
) -> bool {
    let delay = config.backoff.near_ceiling(failures - 1);
    let status = Status::new(why.code(), format!("{why}; next attempt in {delay:?}"));
    progress.publish(state, State::Failed { status: status.mark_unprocessed() });
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = state.closed() => false,
    }
}

async fn connect_once(address: &Address, config: &ChannelConfig) -> Result<Handle, Status> {
    let attempt = async {
        let stream = listener::connect(address)
            .await
            .map_err(|e| Status::unavailable(format!("could not connect to {address}: {e}")))?;
        #[cfg(feature = "tls")]
        let stream = match &config.tls {
            Some(tls) => tls
                .connect(address, stream)
                .await
                .map_err(|e| Status::unavailable(format!("TLS handshake with {address} failed: {e}")))?,
            None => stream,
        };
        let served = &config.served;
        let (conn, handle) =
            Connection::new(stream, Role::Connector, config.mux(), served.service(), served.router.clone(), None);
        let peer = handle.peer(config.peer_default);
        let conn = conn.with_peer(peer.clone()).with_endpoint(address.to_string().into());
        #[cfg(feature = "durable")]
        let conn = match &config.inbox {
            Some(inbox) => conn.with_inbox(inbox.inbox.clone()),
            None => conn,
        };
        let run = peers::listed_while(conn.run(), handle.shared().clone(), peer, config.directory.clone());
        // Until the handshake is done nobody else holds `handle`: an abandoned attempt (the
        // connect timeout, or the channel dropped) must close its socket now, not at the
        // handshake timeout, which may be much later.
        let mut abandon = AbortOnDrop(Some(tokio::spawn(run).abort_handle()));
        handle.ready().await?;
        abandon.0 = None;
        Ok(handle)
    };
    tokio::time::timeout(config.connect_timeout, attempt).await.unwrap_or_else(|_| {
        Err(Status::unavailable(format!("connecting to {address} timed out after {:?}", config.connect_timeout)))
    })
}

/// Aborts a task when dropped, unless disarmed by taking the handle out.
struct AbortOnDrop(Option<AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl Available for Channel {
    /// Unavailable from a failed connection attempt until an attempt succeeds: while backing
    /// off, and while the channel's own task tries again after the backoff (the probe). An idle
    /// channel, one making its first attempt, and one reconnecting after a connection that
    /// worked are worth a call. So an endpoint that is down stays out of a balancer's draw
    /// until the background probe finds it up, instead of failing a caller's call each time its
    /// backoff ends.
    fn is_available(&self) -> bool {
        self.inner.progress.available.load(Ordering::Relaxed)
    }

    /// How many connections the channel has made.
    fn generation(&self) -> u64 {
        self.inner.progress.connects.load(Ordering::Relaxed)
    }

    /// Never connected, and no attempt has failed yet: idle, or making its first attempt.
    fn is_unproven(&self) -> bool {
        self.inner.progress.connects.load(Ordering::Relaxed) == 0
            && matches!(&*self.inner.state.borrow(), State::Idle | State::Connecting { retry: false })
    }

    /// Starts connecting, as the first call would; the answer is in once the first attempt
    /// connected or failed.
    fn probe(&self) -> Option<BoxFuture<'static, ()>> {
        self.inner.start();
        let mut state = self.inner.state.clone();
        Some(Box::pin(async move {
            // Ends early only if the channel is dropped, which also settles the question.
            let _ = state.wait_for(|state| !matches!(state, State::Idle | State::Connecting { retry: false })).await;
        }))
    }
}

pin_project_lite::pin_project! {
    /// The answer to a call through a [`Channel`].
    ///
    /// While the channel is connected (nearly always) this is the call itself, not boxed; while
    /// it connects, a boxed wait for the connection followed by the call.
    pub struct ResponseFuture {
        #[pin]
        kind: Kind,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind {
        Call { #[pin] call: CallFuture },
        Connecting { wait: BoxFuture<'static, Result<Response, Status>> },
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Call { call } => call.poll(cx),
            KindProj::Connecting { wait } => wait.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Service<Request> for Channel {
    type Response = Response;
    type Error = Status;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        // Calls queue inside the connection; readiness is decided per call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.send(request)
    }
}

impl Channel {
    /// [`Service::call`], which needs no `&mut`.
    pub(crate) fn send(&self, mut request: Request) -> ResponseFuture {
        if let Some(timeout) = self.inner.config.default_timeout {
            request.ctx_mut().apply_default_timeout(timeout, ORIGIN);
        }
        self.inner.start();
        if let State::Ready(handle) = &*self.inner.state.borrow()
            && handle.is_ready()
        {
            return ResponseFuture { kind: Kind::Call { call: handle.call(request) } };
        }
        let inner = self.inner.clone();
        let wait = async move {
            let handle = inner.handle(request.ctx()).await?;
            handle.call(request).await
        };
        ResponseFuture { kind: Kind::Connecting { wait: Box::pin(wait) } }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel").field("address", &self.inner.address).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::Server;

    /// The states the channel's task goes through, each with what a balancer is told in it,
    /// until `until` says stop.
    async fn watch_states(channel: &Channel, mut until: impl FnMut(&State) -> bool) -> Vec<(&'static str, bool)> {
        let mut state = channel.inner.state.clone();
        let mut seen = Vec::new();
        loop {
            let stop = {
                let now = state.borrow_and_update();
                let name = match &*now {
                    State::Idle => "idle",
                    State::Connecting { retry: false } => "connecting",
                    State::Connecting { retry: true } => "retrying",
                    State::Ready(_) => "ready",
                    State::Failed { .. } => "failed",
                };
                if seen.last().map(|&(last, _)| last) != Some(name) {
                    seen.push((name, channel.is_available()));
                }
                until(&now)
            };
            if stop {
                return seen;
            }
            state.changed().await.expect("the channel's task runs while the channel exists");
        }
    }

    #[tokio::test]
    async fn an_endpoint_that_was_down_is_offered_again_only_once_a_probe_reaches_it() {
        // A listener that never accepts: the kernel completes TCP connections into its backlog
        // and nothing answers the HELLO, so each attempt lasts the connect timeout, long
        // enough for this test to see it, and fails.
        let silent = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let address: Address = format!("tcp://{}", silent.local_addr().expect("bound")).parse().expect("address");
        let channel = Channel::builder(address.clone())
            .backoff(Backoff::new(Duration::from_millis(1), Duration::from_millis(5)))
            .connect_timeout(Duration::from_millis(50))
            .connect_lazy();
        assert!(channel.is_available(), "an idle channel is worth a call");
        channel.inner.start();

        // First attempt, failure, the probe after the backoff, failure again: out of the draw
        // from the first failure on, the probe included.
        let mut probes = 0;
        let seen = watch_states(&channel, |state| {
            probes += usize::from(matches!(state, State::Connecting { retry: true }));
            probes == 2
        })
        .await;
        // (Idle first: on this current-thread runtime the channel's task starts at the first wait.)
        let expected =
            [("connecting", true), ("failed", false), ("retrying", false), ("failed", false), ("retrying", false)];
        assert_eq!(seen[1..], expected, "{seen:?}");

        // The endpoint comes up: a probe connects and the channel is offered again.
        drop(silent);
        let server = Server::builder().bind(address).await.expect("the port is free again");
        tokio::spawn(server.serve());
        let seen = watch_states(&channel, |state| matches!(state, State::Ready(_))).await;
        assert_eq!(seen.last(), Some(&("ready", true)), "{seen:?}");
        assert!(seen.iter().all(|&(name, available)| available == (name == "ready")), "{seen:?}");
    }
}
