//! A client for a whole service: discovery, balancing, fail modes, deadlines and circuit
//! breaking around lazy [`Channel`]s, assembled by [`Client::builder`].
//!
//! A [`Client`] is a `tower::Service<Request>`, so a generated `XClient` runs over it exactly as
//! over one [`Channel`]. Each call passes through these layers, from the caller inward
//! (DESIGN §5):
//!
//! 1. **Deadline** for the whole call, covering every attempt and backoff: the caller's own if
//!    it set one; otherwise the client's default ([`ClientBuilder::default_timeout`], 10 s
//!    unless configured), so that no call waits forever by accident. In either case a
//!    [`ClientBuilder::timeout`], if set, caps it (see [Deadlines](#deadlines)).
//! 2. **In-flight cap** ([`ClientBuilder::max_in_flight`], optional): calls beyond it wait for a
//!    slot, up to their deadline.
//! 3. **Retry** by the [`FailMode`] ([`ClientBuilder::fail_mode`], default `Failfast`), with capped
//!    exponential backoff and jitter, drawing on one retry budget shared by every clone of the
//!    client (see [`zrpc_core::retry`]).
//! 4. **Timeout per attempt** ([`ClientBuilder::attempt_timeout`], optional): an attempt that
//!    exceeds it is cancelled and, for idempotent methods, retried.
//! 5. **Balance**: picks the endpoint of each attempt with the [`Pick`] policy
//!    ([`ClientBuilder::balance`], default [`P2c`]) among the endpoints discovery reports that
//!    pass the [`Filter`], honouring the retry layer's hints (endpoints to avoid, to stick to),
//!    and records the pick for the layers above (see [`zrpc_core::balance`]).
//! 6. **Circuit breaker**, one per endpoint, named with its address
//!    ([`ClientBuilder::breaker`], on by default): an open breaker makes its endpoint
//!    unavailable, so it is not picked (see [`zrpc_core::breaker`]).
//! 7. **The endpoint's channels**: [`connections_per_endpoint`](ClientBuilder::connections_per_endpoint)
//!    lazy [`Channel`]s (default 1), over which calls are spread in turn. A channel that failed to
//!    connect and is backing off is unavailable, so an endpoint that is down is not picked until
//!    its next connection attempt is due.
//!
//! Nothing connects when the client is built (building needs no runtime): discovery starts with
//! the first call, and each endpoint connects on its first call. Endpoints that leave discovery
//! get no more calls; their connections close once their calls in flight are done.
//!
//! Besides ordinary calls, [`Client::broadcast`] sends a request to every endpoint and
//! [`Client::fork`] to several at once, keeping the first success. A client is a
//! [`Spread`], so the generated clients' views call them typed:
//! `GreeterClient::new(client).broadcast().hello(..)` answers with every endpoint's address and
//! result, `.fork(2).hello(..)` with the first success and its endpoint.
//!
//! # Deadlines
//!
//! Two settings bound a call, and they differ in whom they overrule:
//!
//! | setting | applies to | default |
//! |---|---|---|
//! | [`default_timeout`](ClientBuilder::default_timeout) | calls whose caller set no deadline; a caller's deadline, longer or shorter, is kept | `Some(10 s)` |
//! | [`timeout`](ClientBuilder::timeout) | every call: the deadline becomes the tighter of the caller's (or the default) and this | none |
//!
//! The default is a safety net: without it, a call to a server that answers pings but never
//! answers the call would wait forever. It is set in the call's [`Context`] as the call enters
//! the client, so it covers every attempt, retry and backoff, and servers see the time left. A
//! call that must wait without limit (a long poll, a watch) opts out with
//! [`Context::without_deadline`]; a client built with `default_timeout(None)` applies no default
//! at all. Neither escapes a `timeout`: a cap caps every call.
//!
//! The client's channels apply no default of their own (they are built with
//! [`ChannelBuilder::default_timeout`]`(None)` before [`ClientBuilder::channel`] configures them),
//! so the client's default is the only one and no attempt is cut short by a channel's. A
//! channel default set deliberately in [`ClientBuilder::channel`] bounds each attempt of the
//! calls that reach it with no deadline: those of a client built with `default_timeout(None)`
//! whose caller set none (not calls made `without_deadline`, to which no default applies).
//!
//! [`Context`]: zrpc_core::Context
//! [`Context::without_deadline`]: zrpc_core::Context::without_deadline
//!
//! # Cost
//!
//! The stack is made of concrete types: a call allocates what its layers do (the retry layer's
//! state machine, the balancer's and the channel's futures), and nothing more.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{self, BoxFuture, Ready};
use pin_project_lite::pin_project;
use tower::util::Either;
use tower::{Service, ServiceExt};
use zrpc_core::balance::{Available, Balance, Connect, P2c, Pick};
use zrpc_core::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use zrpc_core::discover::{Discover, Filter, Instance, Static};
use zrpc_core::limit::concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer};
use zrpc_core::retry::{Retry, RetryLayer, TpsBudget};
use zrpc_core::spread::{self, Answers, Spread};
use zrpc_core::timeout::Timeout;
use zrpc_core::{FailMode, Request, Response, Routable, Router, Status};

use crate::address::Address;
use crate::channel::{Channel, ChannelBuilder, ChannelState, DEFAULT_TIMEOUT};
use crate::conn::DefaultTimeout;

/// Whose default a client's default deadline is, in error messages.
const ORIGIN: &str = "the client's default";

/// How each endpoint's channels are configured, after the client's name is set.
type Configure = Arc<dyn Fn(ChannelBuilder) -> ChannelBuilder + Send + Sync>;

/// Builds a [`Client`]; see [`Client::builder`].
pub struct ClientBuilder {
    name: Option<String>,
    discover: Option<Box<dyn Discover>>,
    picker: Box<dyn Pick>,
    filter: Filter,
    fail_mode: FailMode,
    default_timeout: Option<Duration>,
    timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
    breaker: Option<BreakerConfig>,
    connections_per_endpoint: usize,
    channel: Option<Configure>,
    /// How every channel compresses its requests.
    compression: crate::compression::Settings,
    /// What every connection serves to its server.
    served: Router,
    retry_backoff: Option<(Duration, Duration)>,
    budget: Budget,
    max_in_flight: Option<usize>,
}

/// The retry budget a builder gives its client.
#[derive(Clone, Debug)]
enum Budget {
    /// A fresh default budget of the client's own.
    Default,
    Shared(Arc<TpsBudget>),
    Unlimited,
}

impl ClientBuilder {
    /// The name announced to servers in the HELLO of every connection, seen by handlers as
    /// `ctx.caller()` (default: this program's name).
    pub fn name(mut self, name: impl Into<String>) -> ClientBuilder {
        self.name = Some(name.into());
        self
    }

    /// Where the endpoints are: any discovery source, such as
    /// [`Static`]`::new([address, ...])`. Without one the client has no endpoints and every
    /// call fails with `Unavailable`.
    pub fn discover(mut self, discover: impl Discover) -> ClientBuilder {
        self.discover = Some(Box::new(discover));
        self
    }

    /// The load-balancing policy (default [`P2c`]).
    pub fn balance(mut self, picker: impl Pick) -> ClientBuilder {
        self.picker = Box::new(picker);
        self
    }

    /// Keeps only the discovered instances `filter` accepts (default: those that are up).
    pub fn filter(mut self, filter: Filter) -> ClientBuilder {
        self.filter = filter;
        self
    }

    /// What to do when an attempt fails or is slow (default [`FailMode::Failfast`]).
    pub fn fail_mode(mut self, mode: FailMode) -> ClientBuilder {
        self.fail_mode = mode;
        self
    }

    /// The deadline of calls whose caller set none, for the whole call, every attempt and
    /// backoff included (default `Some(10 s)`); `None` lets such calls wait as long as their
    /// attempts do. A caller's own deadline is kept, longer or shorter, and a call made with
    /// [`Context::without_deadline`](zrpc_core::Context::without_deadline) gets none.
    ///
    /// Unlike [`timeout`](ClientBuilder::timeout), which caps every call, this only fills in a
    /// missing deadline (see the [module docs](crate::client#deadlines)).
    pub fn default_timeout(mut self, timeout: Option<Duration>) -> ClientBuilder {
        self.default_timeout = timeout;
        self
    }

    /// A limit on the whole call, every attempt and backoff included, whatever deadline the
    /// caller set or [`default_timeout`](ClientBuilder::default_timeout) gave (default none).
    /// The caller's deadline still wins when it is tighter; a call made
    /// [`without_deadline`](zrpc_core::Context::without_deadline) is capped too.
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// A limit on each attempt (default none). An attempt that exceeds it is cancelled and, for
    /// idempotent methods, retried as the fail mode allows.
    pub fn attempt_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Puts a circuit breaker with `config` in front of each endpoint (the default, with
    /// [`BreakerConfig::default`]).
    pub fn breaker(mut self, config: BreakerConfig) -> ClientBuilder {
        self.breaker = Some(config);
        self
    }

    /// Sends calls to endpoints without circuit breakers.
    pub fn no_breaker(mut self) -> ClientBuilder {
        self.breaker = None;
        self
    }

    /// How many connections to open to each endpoint (default 1; 0 acts as 1). Calls are spread
    /// over them in turn, skipping those that are down.
    pub fn connections_per_endpoint(mut self, count: usize) -> ClientBuilder {
        self.connections_per_endpoint = count.max(1);
        self
    }

    /// Configures every endpoint's channels: heartbeat, backoff between connection attempts,
    /// connect timeout, frame limit, token. Applied after [`name`](ClientBuilder::name) and
    /// after turning the channels' own default deadline off (the client has its own, see
    /// [`default_timeout`](ClientBuilder::default_timeout)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use zrpc_transport::{Backoff, Client};
    ///
    /// let builder = Client::builder().channel(|channel| {
    ///     channel
    ///         .heartbeat(Duration::from_secs(5), Duration::from_secs(10))
    ///         .backoff(Backoff::new(Duration::from_millis(100), Duration::from_secs(10)))
    /// });
    /// # let _ = builder;
    /// ```
    pub fn channel(
        mut self,
        configure: impl Fn(ChannelBuilder) -> ChannelBuilder + Send + Sync + 'static,
    ) -> ClientBuilder {
        self.channel = Some(Arc::new(configure));
        self
    }

    /// Compresses the requests of at least the
    /// [threshold](ClientBuilder::compression_threshold) with `compression` on every channel,
    /// as [`ChannelBuilder::compression`] does for one (applied before
    /// [`channel`](ClientBuilder::channel), which may change it). Off by default.
    ///
    /// # Examples
    ///
    /// ```
    /// use zrpc_transport::{Client, Compression};
    ///
    /// let client = Client::builder().compression(Compression::Gzip).compression_threshold(8 * 1024).build();
    /// # let _ = client;
    /// ```
    pub fn compression(mut self, compression: zrpc_core::Compression) -> ClientBuilder {
        self.compression.algorithm = crate::compression::usable(compression, "a client");
        self
    }

    /// The smallest request payload [compressed](ClientBuilder::compression) (default 1024
    /// bytes).
    pub fn compression_threshold(mut self, bytes: usize) -> ClientBuilder {
        self.compression.threshold = bytes;
        self
    }

    /// Answers the calls of every server this client connects to with `service`, a service
    /// generated by `#[zrpc::service]` (or any [`Routable`] service); any number may be added. Each
    /// of the client's connections serves them, as [`ChannelBuilder::serve`] does for one
    /// channel; layers around them go in [`channel`](ClientBuilder::channel)'s
    /// [`ChannelBuilder::layer`]. A server reaches them from its handlers' `ctx.peer()`, or by
    /// the client's [name](ClientBuilder::name) in its directory, once the client has connected
    /// to it (on its first call there).
    pub fn serve<S: Routable>(mut self, service: S) -> ClientBuilder {
        self.served = self.served.add_service(service);
        self
    }

    /// The backoff before retries: retry `n` waits a random time up to
    /// `min(max, initial × 2ⁿ)` (default 10 ms and 1 s). Zero retries at once.
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> ClientBuilder {
        self.retry_backoff = Some((initial, max));
        self
    }

    /// Draws retries and backups from `budget`, which may be shared with other clients
    /// (default: a budget of the client's own allowing 10 retries a second plus 20% of calls).
    pub fn retry_budget(mut self, budget: Arc<TpsBudget>) -> ClientBuilder {
        self.budget = Budget::Shared(budget);
        self
    }

    /// Retries without a budget: only the fail mode limits them.
    pub fn no_retry_budget(mut self) -> ClientBuilder {
        self.budget = Budget::Unlimited;
        self
    }

    /// At most `max` calls in flight through this client and its clones; more wait for a slot
    /// up to their deadline (then fail with `DeadlineExceeded`, unprocessed). Unlimited by
    /// default.
    pub fn max_in_flight(mut self, max: usize) -> ClientBuilder {
        self.max_in_flight = Some(max);
        self
    }

    /// The client. Nothing connects yet, and no runtime is needed: discovery starts, and each
    /// endpoint connects, on the first call (which must be made within a tokio runtime).
    pub fn build(self) -> Client {
        let connector = Connector {
            name: self.name.unwrap_or_else(crate::default_name),
            breaker: self.breaker,
            connections: self.connections_per_endpoint,
            configure: self.channel,
            compression: self.compression,
            served: self.served,
            default_timeout: self.default_timeout,
        };
        let discover = self.discover.unwrap_or_else(|| Box::new(Static::new(Vec::<Instance>::new())));
        let balance = Balance::new(discover, connector, self.picker, self.filter);
        let attempt = match self.attempt_timeout {
            Some(limit) => Either::Left(Timeout::per_attempt(balance.clone(), limit)),
            None => Either::Right(balance.clone()),
        };
        let mut retry = RetryLayer::new(self.fail_mode);
        if let Some((initial, max)) = self.retry_backoff {
            retry = retry.initial_backoff(initial).max_backoff(max);
        }
        retry = match self.budget {
            Budget::Default => retry,
            Budget::Shared(budget) => retry.budget(budget),
            Budget::Unlimited => retry.without_budget(),
        };
        let retry = tower::Layer::layer(&retry, attempt);
        let retry = match self.max_in_flight {
            Some(max) => Either::Left(tower::Layer::layer(&ConcurrencyLimitLayer::waiting(max), retry)),
            None => Either::Right(retry),
        };
        let stack = match self.timeout {
            Some(limit) => Either::Left(Timeout::new(retry, limit)),
            None => Either::Right(retry),
        };
        Client {
            stack,
            balance,
            settings: Arc::new(Settings {
                fail_mode: self.fail_mode,
                default_timeout: self.default_timeout,
                timeout: self.timeout,
                attempt_timeout: self.attempt_timeout,
            }),
        }
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("name", &self.name)
            .field("discover", &self.discover.as_ref().map(|_| "..."))
            .field("picker", &self.picker)
            .field("filter", &self.filter)
            .field("fail_mode", &self.fail_mode)
            .field("default_timeout", &self.default_timeout)
            .field("timeout", &self.timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("breaker", &self.breaker)
            .field("connections_per_endpoint", &self.connections_per_endpoint)
            .field("channel", &self.channel.as_ref().map(|_| "..."))
            .field("compression", &self.compression)
            .field("retry_backoff", &self.retry_backoff)
            .field("budget", &self.budget)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// A client for every endpoint of a service, with the governance layers of the
/// [module docs](self) around their connections.
///
/// Cheap to clone: clones share the endpoints, their connections, breakers and the retry
/// budget.
#[derive(Clone)]
pub struct Client {
    stack: Stack,
    /// The same balancer the stack ends in, for [`Client::endpoints`], broadcast and fork.
    balance: Balance<Connector, Box<dyn Pick>>,
    settings: Arc<Settings>,
}

/// What [`Debug`](fmt::Debug) shows of a client's configuration.
#[derive(Debug)]
struct Settings {
    fail_mode: FailMode,
    default_timeout: Option<Duration>,
    timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
}

impl Client {
    /// Starts building a client.
    ///
    /// # Examples
    ///
    /// Three endpoints of which two are down: with `Failover` every call still reaches the
    /// third. (A generated `XClient::new(client)` makes typed calls; this one sends a raw
    /// request, which the method-less server answers with `NotFound`.)
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::ServiceExt;
    /// use zrpc_core::balance::P2c;
    /// use zrpc_core::discover::Static;
    /// use zrpc_core::{Code, FailMode, Request};
    /// use zrpc_transport::{Address, Client, Server};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = Server::builder().name("up").bind("tcp://127.0.0.1:0").await?;
    /// let up = server.local_addr().clone();
    /// tokio::spawn(server.serve());
    /// // Nothing listens at these two once the probes are dropped.
    /// let down: Vec<Address> = (0..2)
    ///     .map(|_| std::net::TcpListener::bind("127.0.0.1:0").map(|l| l.local_addr().map(Address::from)))
    ///     .collect::<Result<Result<_, _>, _>>()??;
    ///
    /// let client = Client::builder()
    ///     .name("docs")
    ///     .discover(Static::new([down[0].clone(), down[1].clone(), up.clone()]))
    ///     .balance(P2c::default())
    ///     .fail_mode(FailMode::Failover { retries: 2 })
    ///     .timeout(Duration::from_secs(5))
    ///     .build();
    ///
    /// for _ in 0..5 {
    ///     let request = Request::new("Greeter.hello", bytes::Bytes::new());
    ///     let status = client.clone().oneshot(request).await.expect_err("no such service");
    ///     assert_eq!(status.code(), Code::NotFound, "{status}");
    /// }
    /// assert_eq!(client.endpoints().len(), 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            name: None,
            discover: None,
            picker: Box::new(P2c::default()),
            filter: Filter::default(),
            fail_mode: FailMode::Failfast,
            default_timeout: Some(DEFAULT_TIMEOUT),
            timeout: None,
            attempt_timeout: None,
            breaker: Some(BreakerConfig::default()),
            connections_per_endpoint: 1,
            channel: None,
            compression: crate::compression::Settings::default(),
            served: Router::new(),
            retry_backoff: None,
            budget: Budget::Default,
            max_in_flight: None,
        }
    }

    /// Starts discovery now rather than at the first call, and resolves once its first set of
    /// endpoints is applied, so that [`endpoints`](Client::endpoints) lists them. Bound it with
    /// a timeout: a source that never answers never resolves it.
    pub async fn discovered(&self) {
        self.balance.first_set().await;
    }

    /// [`discovered`](Client::discovered), then waits until every endpoint's first connection
    /// attempt has its answer (connected, or failed): the client connects to each endpoint as
    /// discovery reports it, and until one is known to be up it is drawn only when none is.
    /// For a service that wants its calls spread over every live endpoint from the first, and
    /// for tests. Bound it with a timeout: an attempt may take up to the connect timeout.
    pub async fn probed(&self) {
        self.balance.probed().await;
    }

    /// The addresses of the endpoints in use: those discovery reported that pass the filter,
    /// as of the last change applied. Empty until discovery starts, at the first call or
    /// [`discovered`](Client::discovered).
    pub fn endpoints(&self) -> Vec<Arc<str>> {
        self.balance.addresses()
    }

    /// A snapshot of every endpoint in use: its address, its connections' states, its breaker's
    /// state, its calls in flight and its latency average, for dashboards and health pages.
    /// Empty until discovery starts, as [`endpoints`](Client::endpoints).
    pub fn endpoint_status(&self) -> Vec<EndpointStatus> {
        self.balance
            .snapshot()
            .into_iter()
            .map(|endpoint| {
                let (breaker, pool) = match &endpoint.service {
                    Either::Left(breaker) => (Some(breaker.state()), breaker.get_ref()),
                    Either::Right(pool) => (None, pool),
                };
                EndpointStatus {
                    connections: pool.0.channels.iter().map(Channel::state).collect(),
                    address: endpoint.address,
                    weight: endpoint.weight,
                    breaker,
                    in_flight: endpoint.in_flight,
                    latency: endpoint.latency,
                    available: endpoint.available,
                }
            })
            .collect()
    }

    /// Resolves when discovery next changes the endpoints in use (or first reports them), or
    /// an endpoint's first connection attempt ends, so a caller can wait for a set (or for a
    /// new endpoint to connect) without polling: take this future, check
    /// [`Client::endpoints`] (or [`Client::endpoint_status`]), then await it. It watches from the moment it is made, so a change
    /// between the check and the await is not missed.
    pub fn endpoints_changed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut changes = self.balance.changes();
        async move {
            // `changed` only fails once the balancer is gone, which a live client rules out.
            let _ = changes.changed().await;
        }
    }

    /// Sends `request` to every endpoint in use at once, bypassing retries, and returns each
    /// endpoint's result. The broadcast succeeded when every result is `Ok`; an endpoint whose
    /// breaker is open or that cannot connect answers with its `Unavailable` error, and a
    /// client with no endpoint returns that error under an empty address.
    ///
    /// The client's deadlines apply as to any call: the default, if the caller set no deadline,
    /// is set once for the broadcast, and the whole-call timeout applies to each endpoint's
    /// call. Before the client's first call discovery has not started yet: it starts now, and
    /// the broadcast waits (up to the deadline) for its first set of endpoints.
    pub async fn broadcast(&self, request: Request) -> Vec<(Arc<str>, Result<Response, Status>)> {
        let request = self.with_default_deadline(request);
        let endpoints = match self.spread(&request, usize::MAX).await {
            Ok(endpoints) => endpoints,
            Err(status) => return vec![(Arc::from(""), Err(status))],
        };
        let calls = endpoints.iter().map(|(_, endpoint)| self.call_endpoint(endpoint, request.clone()));
        let results = futures::future::join_all(calls).await;
        endpoints.into_iter().map(|(address, _)| address).zip(results).collect()
    }

    /// Sends `request` to `n` endpoints at once (all of them when `n` is 0 or more than there
    /// are), available ones first, bypassing retries, and returns the first success with
    /// the address of the endpoint that gave it. The other calls are then cancelled on the wire.
    /// Deadlines apply as in [`broadcast`](Client::broadcast).
    ///
    /// # Errors
    ///
    /// When every call fails: the last error, with the number of endpoints tried appended to its
    /// message when there were several; `Unavailable` when there is no endpoint.
    pub async fn fork(&self, request: Request, n: usize) -> Result<(Arc<str>, Response), Status> {
        let n = if n == 0 { usize::MAX } else { n };
        let request = self.with_default_deadline(request);
        let endpoints = self.spread(&request, n).await?;
        let calls = endpoints
            .into_iter()
            .map(|(address, endpoint)| (address, self.call_endpoint(&endpoint, request.clone())))
            .collect();
        spread::first_success(request.method().as_str(), calls).await
    }

    /// The endpoints a broadcast or fork of `request` to up to `n` endpoints goes to: available
    /// ones first, in discovery order, once discovery has its first set.
    ///
    /// # Errors
    /// `Unavailable`, unprocessed, when discovery has no set by the request's deadline, or has
    /// no endpoint.
    async fn spread(&self, request: &Request, n: usize) -> Result<Vec<(Arc<str>, Endpoint)>, Status> {
        self.balance.discovered(request).await?;
        let mut endpoints = self.balance.services();
        if endpoints.is_empty() {
            let message = format!("{} not sent: the client has no endpoints", request.method());
            return Err(Status::unavailable(message).mark_unprocessed());
        }
        // Stable: available endpoints first, in discovery order.
        endpoints.sort_by_key(|(_, endpoint)| !endpoint.is_available());
        endpoints.truncate(n);
        Ok(endpoints)
    }

    /// `request` with the client's default deadline if it has none and has not opted out.
    fn with_default_deadline(&self, mut request: Request) -> Request {
        if let Some(timeout) = self.settings.default_timeout {
            request.ctx_mut().apply_default_timeout(timeout, ORIGIN);
        }
        request
    }

    fn call_endpoint(
        &self,
        endpoint: &Endpoint,
        request: Request,
    ) -> impl Future<Output = Result<Response, Status>> + Send + use<> {
        self.under_timeout(endpoint.clone()).oneshot(request)
    }

    /// `service` under the whole-call timeout, if the client has one.
    fn under_timeout<S>(&self, service: S) -> Either<Timeout<S>, S> {
        match self.settings.timeout {
            Some(limit) => Either::Left(Timeout::new(service, limit)),
            None => Either::Right(service),
        }
    }
}

/// Over the endpoints discovery gives the client: [`Client::broadcast`] and [`Client::fork`],
/// for the generated clients' `broadcast()` and `fork(n)` views.
impl Spread for Client {
    fn broadcast(&self, request: Request) -> impl Future<Output = Answers<Response>> + Send + 'static {
        let client = self.clone();
        async move { Client::broadcast(&client, request).await }
    }

    fn fork(
        &self,
        request: Request,
        n: usize,
    ) -> impl Future<Output = Result<(Arc<str>, Response), Status>> + Send + 'static {
        let client = self.clone();
        async move { Client::fork(&client, request, n).await }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints())
            .field("fail_mode", &self.settings.fail_mode)
            .field("default_timeout", &self.settings.default_timeout)
            .field("timeout", &self.settings.timeout)
            .field("attempt_timeout", &self.settings.attempt_timeout)
            .field("balance", &self.balance)
            .finish()
    }
}

impl Service<Request> for Client {
    type Response = Response;
    type Error = Status;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        self.stack.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> ResponseFuture {
        let request = self.with_default_deadline(request);
        ResponseFuture { inner: self.stack.call(request) }
    }
}

pin_project! {
    /// The response of a [`Client`] call.
    ///
    /// # Cancel safety
    ///
    /// Dropping it cancels every attempt in flight on the wire.
    pub struct ResponseFuture {
        #[pin]
        inner: <Stack as Service<Request>>::Future,
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// The layers above the balancer: the whole-call timeout, if any, over the in-flight cap, if any,
/// over the retry layer, over one attempt.
type Stack = Either<Timeout<Calls>, Calls>;

/// The calls of the client: under an in-flight cap, or not.
type Calls = Either<ConcurrencyLimit<Retry<Attempt>>, Retry<Attempt>>;

/// One attempt: the per-attempt timeout, if any, over the balancer.
type Attempt = Either<Timeout<Balance<Connector, Box<dyn Pick>>>, Balance<Connector, Box<dyn Pick>>>;

/// Makes each discovered endpoint's service: channels behind a breaker.
struct Connector {
    name: String,
    breaker: Option<BreakerConfig>,
    connections: usize,
    configure: Option<Configure>,
    compression: crate::compression::Settings,
    served: Router,
    /// The client's default deadline, which its channels give the calls their handlers make
    /// back to the server.
    default_timeout: Option<Duration>,
}

impl Connect for Connector {
    type Service = Endpoint;

    fn connect(&self, instance: &Instance) -> Endpoint {
        let pool = match instance.address.parse::<Address>() {
            Ok(address) => {
                let channels = (0..self.connections)
                    .map(|_| {
                        // The client's default covers the whole call; a channel's own would
                        // cut attempts short, so it is off unless `configure` sets one.
                        let builder = Channel::builder(address.clone())
                            .name(self.name.clone())
                            .default_timeout(None)
                            .peer_default_timeout(DefaultTimeout { timeout: self.default_timeout, origin: ORIGIN })
                            .compression_settings(self.compression)
                            .serve_router(self.served.clone());
                        let builder = match &self.configure {
                            Some(configure) => configure(builder),
                            None => builder,
                        };
                        builder.connect_lazy()
                    })
                    .collect();
                Pool::new(channels, None)
            }
            Err(e) => {
                tracing::warn!(address = %instance.address, error = %e, "discovered an endpoint whose address does not parse; it gets no calls");
                Pool::new(Box::new([]), Some(e.to_string()))
            }
        };
        match &self.breaker {
            Some(config) => Either::Left(CircuitBreaker::new(pool, config.clone()).with_name(instance.address.clone())),
            None => Either::Right(pool),
        }
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("name", &self.name)
            .field("breaker", &self.breaker)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

/// One endpoint of a [`Client`] as it is now, from [`Client::endpoint_status`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EndpointStatus {
    /// The address discovery gave it.
    pub address: Arc<str>,
    /// Its weight; 0 while it is drained.
    pub weight: u32,
    /// The state of each of its connections ([`ClientBuilder::connections_per_endpoint`]).
    pub connections: Vec<ChannelState>,
    /// Its circuit breaker's state; `None` for a client built without breakers.
    pub breaker: Option<BreakerState>,
    /// Calls sent to it that have not completed.
    pub in_flight: u64,
    /// The moving average of its calls' latency, decayed while idle; `None` before a success.
    pub latency: Option<Duration>,
    /// Whether the balancer may pick it now.
    pub available: bool,
}

/// One endpoint's service: its breaker, if any, over its channels. Clones share them.
type Endpoint = Either<CircuitBreaker<Pool>, Pool>;

type ChannelFuture = future::Either<crate::channel::ResponseFuture, Ready<Result<Response, Status>>>;

/// An endpoint's channels, used in turn; clones share them.
#[derive(Clone)]
struct Pool(Arc<PoolInner>);

struct PoolInner {
    channels: Box<[Channel]>,
    next: AtomicUsize,
    /// Why there are no channels: the address does not parse.
    invalid: Option<String>,
}

impl Pool {
    fn new(channels: Box<[Channel]>, invalid: Option<String>) -> Pool {
        Pool(Arc::new(PoolInner { channels, next: AtomicUsize::new(0), invalid }))
    }

    /// Sends `request` on the next channel that is not down, or on the next one if all are.
    fn send(&self, request: Request) -> ChannelFuture {
        let PoolInner { channels, next, invalid } = &*self.0;
        let count = channels.len();
        let start = if count > 1 { next.fetch_add(1, Ordering::Relaxed) } else { 0 };
        let channel = (0..count)
            .map(|i| &channels[(start + i) % count])
            .find(|channel| channel.is_available())
            .or_else(|| channels.get(start % count.max(1)));
        match channel {
            Some(channel) => future::Either::Left(channel.send(request)),
            None => {
                let reason = invalid.as_deref().unwrap_or("the endpoint has no channels");
                let status = Status::invalid_argument(format!("{} not sent: {reason}", request.method()));
                future::Either::Right(futures::future::ready(Err(status.mark_unprocessed())))
            }
        }
    }
}

impl Available for Pool {
    fn is_available(&self) -> bool {
        self.0.channels.iter().any(Available::is_available)
    }

    fn generation(&self) -> u64 {
        self.0.channels.iter().map(Available::generation).fold(0, u64::wrapping_add)
    }

    /// Until one of its connections has connected or failed.
    fn is_unproven(&self) -> bool {
        self.0.channels.iter().all(Available::is_unproven)
    }

    /// Probes every connection; the answer is in when the first one's is.
    fn probe(&self) -> Option<BoxFuture<'static, ()>> {
        let answers: Vec<_> = self.0.channels.iter().filter_map(Available::probe).collect();
        (!answers.is_empty())
            .then(|| Box::pin(futures::future::select_all(answers).map(drop)) as BoxFuture<'static, ()>)
    }
}

impl Service<Request> for Pool {
    type Response = Response;
    type Error = Status;
    type Future = ChannelFuture;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> ChannelFuture {
        self.send(request)
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("channels", &self.0.channels).field("invalid", &self.0.invalid).finish()
    }
}
