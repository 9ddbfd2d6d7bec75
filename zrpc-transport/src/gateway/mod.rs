//! An HTTP/JSON gateway: `POST /{service}/{method}` with a JSON body calls a zrpc method and
//! answers its result as JSON (feature `gateway`).
//!
//! The gateway is an [axum](https://docs.rs/axum/0.8) [`Router`] in front of one
//! [`Client`]: whatever the client reaches (static addresses, DNS, etcd; see
//! [`dynamic::Target`](crate::dynamic::Target)) is what the gateway serves. Calls go through
//! [`DynamicClient`], so the gateway needs no generated code: the
//! method's flags (oneway) and whether it has application errors come from the server's
//! reflection. Serve it on its own with [`GatewayBuilder::bind`] (hyper's HTTP/1.1, with calls
//! answered without the router: see [`Gateway::serve_with_shutdown`]), or mount
//! [`GatewayBuilder::into_router`] in your own axum application; both answer alike.
//!
//! ```no_run
//! use zrpc_transport::dynamic::Target;
//! use zrpc_transport::gateway::Gateway;
//! use zrpc_transport::Client;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let target: Target = "tcp://127.0.0.1:7000".parse()?;
//! let client = target.client(Client::builder().name("gateway")).await?;
//! let gateway = Gateway::builder(client).bind("tcp://127.0.0.1:8080").await?;
//! println!("listening on http://{}", gateway.local_addr());
//! gateway.serve().await?; // or .serve_with_shutdown(signal): stop accepting, finish what is in progress
//! # Ok(())
//! # }
//! ```
//!
//! # Routes
//!
//! | route | answer |
//! |---|---|
//! | `POST /{service}/{method}` | calls `service.method` (a service's name may hold dots: `/pkg.Greeter/hello`) |
//! | `GET /-/instances` | the target's endpoints: address, weight, connection and breaker states, calls in flight, latency, availability |
//! | `GET /-/health` | `200` when at least one endpoint may be picked, `503` otherwise, with the counts |
//!
//! Both start the target's discovery if no call has yet, and wait up to 1 s for its first
//! answer (an etcd that is down), so that a fresh gateway does not report an empty target.
//! | `GET /`, `GET /-/console.js`, `GET /-/console.css` | the web console (on by default, [`GatewayBuilder::console`]); its paths are relative, so nested under a prefix it is opened with the trailing slash (`/rpc/`) |
//!
//! Any other path is `404`, any other method on a known path `405`, both with a JSON error body.
//!
//! # A call
//!
//! The request body is the JSON of the arguments as [PROTOCOL.md §9] lays them out: an object
//! keyed by argument name (`{"a":40,"b":2}`) or an array in order (`[40,2]`); an empty body means
//! no arguments. The gateway does not parse it: the server decodes it, and a body that does not
//! decode (malformed JSON included) is the server's `InvalidArgument`, so `400`. The
//! `Content-Type` is not checked, so that `curl -d` works as typed.
//!
//! | outcome | HTTP | body |
//! |---|---|---|
//! | result | `200 OK` | the result's JSON (`null` for `()`) |
//! | application error (`Result<T, E>`'s `Err`) | `422 Unprocessable Content` | `{"error": E}` |
//! | oneway method | `202 Accepted` | empty: no answer will come |
//! | a status | see below | `{"code":5,"status":"NotFound","message":"..."}` |
//!
//! Application errors are answered `422` because the call reached the method and the method
//! refused what was asked: that is neither success (a `200` would let HTTP clients, proxies and
//! dashboards count a refusal as a success) nor a framework failure (every code a status maps to is
//! left to statuses, so the HTTP code alone says which of the two happened). The error is wrapped
//! in `{"error": ...}` so that its body cannot be mistaken for a status body, whatever `E` is.
//!
//! Statuses map to HTTP codes as grpc-gateway maps gRPC's:
//!
//! | status | HTTP |
//! |---|---|
//! | `InvalidArgument`, `FailedPrecondition`, `OutOfRange` | 400 |
//! | `Unauthenticated` | 401 |
//! | `PermissionDenied` | 403 |
//! | `NotFound` | 404 |
//! | `AlreadyExists`, `Aborted` | 409 |
//! | `ResourceExhausted` | 429 |
//! | `Cancelled` | 499 (nginx's "client closed request") |
//! | `Unknown`, `Internal`, `DataLoss` | 500 |
//! | `Unimplemented` | 501 |
//! | `Unavailable` | 503 |
//! | `DeadlineExceeded` | 504 |
//!
//! # Headers
//!
//! - **Deadline**: `zrpc-timeout: 250ms` (any duration [`parse_duration`] takes: `2s`, `1.5s`,
//!   `100us`; a unit is required). Without it a call gets the gateway's default deadline
//!   ([`GatewayBuilder::default_timeout`], 10 s as for a [`Client`]), so no HTTP request waits
//!   forever, and none may ask for more than [`GatewayBuilder::max_timeout`] (5 minutes by
//!   default, or the default deadline if longer; a longer one is cut to it). A malformed value
//!   is `400` before any call. gRPC's `grpc-timeout` is not read: its unit letters (`250m` is
//!   250 *milliseconds*) differ from this syntax and would be misread.
//! - **Metadata**: each `zrpc-meta-<key>: value` header becomes metadata `<key>` (lowercase, as
//!   HTTP header names are case-insensitive), and `Authorization` is forwarded as metadata
//!   `authorization`, for a server's [`Authenticator`](crate::auth::Authenticator) to check per
//!   call. Other headers are not forwarded. Values are passed as their bytes, except that
//!   `zrpc-meta-<key>-bin` carries base64 (see below); one that is not base64 is `400`.
//! - **Response metadata**: each entry the server answered with (a handler's, or a server
//!   layer's) comes back as a `zrpc-meta-<key>` header of the `200` or `422` answer, read
//!   through [`DynamicClient::call_with_metadata`](crate::dynamic::DynamicClient::call_with_metadata).
//!   A value that is printable ASCII (`0x20..=0x7e`, no space at either end, which HTTP would
//!   trim) is sent as it is; any other value, and any value of a key that itself ends in `-bin`,
//!   is sent in standard base64 as `zrpc-meta-<key>-bin`, as gRPC carries binary metadata, so
//!   that a header ending in `-bin` always holds base64 and reads back to exactly one entry.
//!   Keys are lowercased; an entry whose key cannot be part of a header name (a space, a `:`,
//!   non-ASCII) is left out and logged at debug level rather than failing a call the handler
//!   answered. Statuses carry no metadata in the protocol, so error answers have none.
//!
//! # Bounds
//!
//! - A request body is read up to [`GatewayBuilder::max_body`] (1 MiB by default); past it the
//!   answer is `413` and nothing is called. A request's head is read up to
//!   [`GatewayBuilder::max_header_bytes`] (64 KiB by default; it was hyper's 400 KiB until
//!   2026-12-01), and at most 100 headers (hyper's); past either the answer is `431`.
//! - In time: a connection waits at most [`GatewayBuilder::header_timeout`] (30 s by default)
//!   for a request's headers, counted from when it opened or answered the request before, and
//!   is closed past it; a request's body must arrive within the call's deadline (its
//!   `zrpc-timeout`, at most [`GatewayBuilder::max_timeout`], else
//!   [`GatewayBuilder::default_timeout`]), or the answer is `408` and nothing is called. So a
//!   client that sends slowly, or holds connections open without calling, keeps each for that
//!   long at most. (Until 2026-12-01 neither held: hyper's own 30 s header timeout needs a
//!   timer its builder was not given, and a client could name any deadline, `zrpc-timeout:
//!   100000h`, and send its body for as long; one too long for the clock panicked the
//!   connection's task.)
//!   An answer must be taken by its client: a connection whose client takes none of an
//!   answer's bytes for [`GatewayBuilder::write_timeout`] (30 s by default) is closed (until
//!   2026-12-01 one that never read kept the connection and the answer for as long as it
//!   stayed connected).
//! - In number: at most [`GatewayBuilder::max_connections`] connections are open at once
//!   (4,096 by default); past it the one that has waited longest for a request is closed to make
//!   room, so clients that hold connections open without calling push out only each other, and a
//!   request being answered is never cut short. With the bounds above, each connection holds at
//!   most a head or a body and an answer, so the gateway's memory is bounded
//!   (until 2026-12-01 connections were not: each held up to its 64 KiB head for 30 s, however many
//!   a client opened). [`Gateway::handle`] counts them ([`GatewayStats`]).
//! - Calls in flight are the [`Client`]'s to bound (`ClientBuilder::max_in_flight`); the
//!   gateway adds no queue of its own.
//! - No input panics: every failure is an HTTP answer with a JSON body.
//!
//! [PROTOCOL.md §9]: https://example.invalid/zrpc/docs/PROTOCOL.md#9-payloads

mod call;
mod console;
mod headers;
mod instances;
mod serve;
mod stall;
mod status;
mod tracker;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::address::{Address, ToAddress};
use crate::client::Client;
use crate::dynamic::DynamicClient;
#[cfg(doc)]
use crate::dynamic::parse_duration;

pub use status::http_status;
pub use tracker::{GatewayHandle, GatewayStats};

/// The largest request body read by default: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// The deadline of a call whose request sets none: 10 s, as a [`Client`]'s default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest deadline a request may ask for with `zrpc-timeout` by default: 5 minutes.
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a connection of [`Gateway::serve`] waits for a request's headers by default: 30 s,
/// hyper's default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The most bytes of a request's head (its request line and headers) a connection of
/// [`Gateway::serve`] reads by default: 64 KiB, Envoy's 60 KiB rounded up.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 << 10;

/// The most connections a [`Gateway::serve`] keeps open at once by default: 4,096.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How long a connection of [`Gateway::serve`] may take none of an answer's bytes by default
/// before it is closed: 30 s, as long as a zrpc connection waits for a peer that reads none of
/// its output.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP/JSON gateway; see the [module docs](self). Built with [`Gateway::builder`].
pub struct Gateway {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    connections: serve::Connections,
    router: Router,
    shared: Arc<Shared>,
    tracker: Arc<tracker::Tracker>,
}

/// Configures a [`Gateway`]; see [`Gateway::builder`].
#[derive(Clone)]
pub struct GatewayBuilder {
    client: Client,
    default_timeout: Duration,
    max_timeout: Duration,
    max_body: usize,
    connections: serve::Connections,
    max_connections: usize,
    backlog: u32,
    console: bool,
}

/// What every request handler shares.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) dynamic: DynamicClient<Client>,
    pub(crate) default_timeout: Duration,
    pub(crate) max_timeout: Duration,
    pub(crate) max_body: usize,
}

impl Gateway {
    /// Starts building a gateway in front of `target`: every call goes to the endpoints it
    /// discovers, with its balancing, fail mode, timeouts and breakers. Build it from a string
    /// with [`Target::client`](crate::dynamic::Target::client).
    pub fn builder(target: Client) -> GatewayBuilder {
        GatewayBuilder {
            client: target,
            default_timeout: DEFAULT_TIMEOUT,
            max_timeout: DEFAULT_MAX_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            connections: serve::Connections {
                header_timeout: DEFAULT_HEADER_TIMEOUT,
                max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
                write_timeout: DEFAULT_WRITE_TIMEOUT,
            },
            max_connections: DEFAULT_MAX_CONNECTIONS,
            backlog: crate::server::DEFAULT_BACKLOG,
            console: true,
        }
    }

    /// The address the gateway listens on, with the real port when bound to port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Watches the gateway's connections (how many are open, evicted, closed for not
    /// reading), before or while it serves.
    pub fn handle(&self) -> GatewayHandle {
        self.tracker.handle()
    }

    /// Serves until the process ends.
    ///
    /// # Errors
    /// Those of [`axum::serve()`]: none at present.
    pub async fn serve(self) -> io::Result<()> {
        self.serve_with_shutdown(std::future::pending::<()>()).await
    }

    /// Serves until `signal` completes, then stops accepting connections and returns once the
    /// requests in progress have been answered (hyper's graceful shutdown of each connection;
    /// one still on its first head, which no request has reached, is closed at once).
    ///
    /// Connections are hyper's HTTP/1.1 (keep-alive on, `TCP_NODELAY` set), without
    /// [`axum::serve()`]'s per-connection protocol detection, and a `POST /{service}/{method}`
    /// whose path needs no percent-decoding goes straight to the call, without the router's
    /// extractors; every other request goes through the router [`GatewayBuilder::into_router`]
    /// gives. Profiled under load, the two were about a tenth of the gateway's own time.
    ///
    /// # Errors
    /// None at present: a failed accept is logged and retried, as [`axum::serve()`] does.
    pub async fn serve_with_shutdown<F>(self, signal: F) -> io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        serve::serve(self.listener, self.router, self.shared, self.connections, self.tracker, signal).await
    }
}

impl GatewayBuilder {
    /// The deadline of calls whose request has no `zrpc-timeout` header (default
    /// [`DEFAULT_TIMEOUT`]).
    pub fn default_timeout(mut self, timeout: Duration) -> GatewayBuilder {
        self.default_timeout = timeout;
        self
    }

    /// The longest deadline a request may ask for with its `zrpc-timeout` header (default
    /// [`DEFAULT_MAX_TIMEOUT`]); a longer one is cut to it, as is a header too long for the
    /// clock. A request's body must arrive within its deadline, so this is also the longest a
    /// client can keep the gateway waiting for a body, whatever it asks for. Raise it for
    /// methods that wait longer (a long poll). A [`default_timeout`](GatewayBuilder::default_timeout)
    /// set longer wins: a client gets the default by sending no header, so a header is never
    /// cut below it.
    pub fn max_timeout(mut self, timeout: Duration) -> GatewayBuilder {
        self.max_timeout = timeout;
        self
    }

    /// The largest request body read, in bytes (default [`DEFAULT_MAX_BODY`]); a larger one is
    /// answered `413 Payload Too Large` without calling anything.
    pub fn max_body(mut self, bytes: usize) -> GatewayBuilder {
        self.max_body = bytes;
        self
    }

    /// How long a connection of [`Gateway::serve`] waits for a request's headers, from when it
    /// opened or answered the one before, until it is closed (default
    /// [`DEFAULT_HEADER_TIMEOUT`]): a client that sends its headers slowly, or keeps a
    /// connection open without calling, is not held onto for longer. (A router from
    /// [`into_router`](GatewayBuilder::into_router) is served by your own server, with its
    /// own timeouts.)
    pub fn header_timeout(mut self, timeout: Duration) -> GatewayBuilder {
        self.connections.header_timeout = timeout;
        self
    }

    /// The most bytes of a request's head, its request line and headers, that a connection of
    /// [`Gateway::serve`] reads (default [`DEFAULT_MAX_HEADER_BYTES`], 64 KiB; at least 8 KiB,
    /// hyper's smallest buffer): a longer head is answered `431 Request Header Fields Too Large`
    /// and the connection closed, so a client sending headers slowly holds at most this much
    /// for the [`header_timeout`](GatewayBuilder::header_timeout). Metadata travels in headers
    /// (`zrpc-meta-<key>`): raise it for calls that carry more of it.
    pub fn max_header_bytes(mut self, bytes: usize) -> GatewayBuilder {
        self.connections.max_header_bytes = bytes.max(serve::MIN_HEADER_BYTES);
        self
    }

    /// The most connections [`Gateway::serve`] keeps open at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`], 4,096; at least 1). With that many open, the one that has
    /// waited longest for a request is closed before the next is accepted (gracefully, if it
    /// has had one: an answer it is writing is finished while its client takes it, and dropped
    /// at the first write its client does not), so that clients holding connections open
    /// without calling push out only each other; a connection answering a request is never
    /// closed to make room, and if all are, new connections wait in the listen backlog until
    /// one is done. Counted by
    /// [`GatewayStats::connections`] and [`GatewayStats::evicted`].
    ///
    /// With the other bounds this bounds the gateway's memory: each connection holds at most
    /// a head of [`max_header_bytes`](GatewayBuilder::max_header_bytes) or a body of
    /// [`max_body`](GatewayBuilder::max_body), and an answer.
    pub fn max_connections(mut self, max: usize) -> GatewayBuilder {
        self.max_connections = max.max(1);
        self
    }

    /// How many connections the kernel may hold for the gateway before it accepts them
    /// (default 1024, as a [server's](crate::ServerBuilder::backlog)). Beyond it, connects wait
    /// in SYN retries, a second at first: a burst of clients, or connections opened faster than
    /// the gateway accepts them, then costs a newcomer that second. The kernel silently caps it
    /// at `net.core.somaxconn` on Linux (4096 on recent kernels, 128 on older ones),
    /// `kern.ipc.somaxconn` on the BSDs and macOS. Until 2026-12-02 it was tokio's fixed 128.
    pub fn backlog(mut self, backlog: u32) -> GatewayBuilder {
        self.backlog = backlog;
        self
    }

    /// How long a connection of [`Gateway::serve`] may take none of an answer's bytes before
    /// it is closed (default [`DEFAULT_WRITE_TIMEOUT`]): a client that asks for answers and
    /// does not read them holds neither the connection nor the answers for longer. A client
    /// reading slowly is not cut off: the time counts from the last byte it took. Zero is no
    /// timeout, as a zero socket timeout is none. Counted by [`GatewayStats::write_timeouts`].
    pub fn write_timeout(mut self, timeout: Duration) -> GatewayBuilder {
        self.connections.write_timeout = timeout;
        self
    }

    /// Whether to serve the web console at `/` (default on): it lists what the target serves
    /// through reflection, calls methods from forms and shows the live instances. It shows
    /// nothing a caller of the gateway could not learn by calling `zrpc.Reflection` and
    /// `/-/instances` itself; turn it off where a browser UI is not wanted.
    pub fn console(mut self, on: bool) -> GatewayBuilder {
        self.console = on;
        self
    }

    /// The gateway as an axum [`Router`], to serve with your own server or nest in your own
    /// application (`app.nest_service("/rpc", gateway)`).
    pub fn into_router(self) -> Router {
        let shared = self.shared();
        self.router(shared)
    }

    /// What the handlers share; the gateway's own server shares it with its router.
    fn shared(&self) -> Arc<Shared> {
        Arc::new(Shared {
            dynamic: DynamicClient::new(self.client.clone()),
            client: self.client.clone(),
            default_timeout: self.default_timeout,
            max_timeout: self.max_timeout,
            max_body: self.max_body,
        })
    }

    fn router(self, shared: Arc<Shared>) -> Router {
        let mut router = Router::new()
            .route("/{service}/{method}", post(call::call).fallback(status::method_not_allowed))
            .route("/-/instances", get(instances::instances).fallback(status::method_not_allowed))
            .route("/-/health", get(instances::health).fallback(status::method_not_allowed));
        if self.console {
            router = console::routes(router);
        }
        router
            .fallback(status::no_route)
            // The handler reads the body with its own limit, so that going past it answers JSON.
            .layer(DefaultBodyLimit::disable())
            .with_state(shared)
    }

    /// Binds a TCP address (`"tcp://127.0.0.1:8080"`, `"127.0.0.1:0"`, a `SocketAddr`).
    ///
    /// # Errors
    /// An address that is not TCP, or binding failed.
    pub async fn bind(self, address: impl ToAddress) -> io::Result<Gateway> {
        let address = address.to_address().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let Address::Tcp(hostport) = address else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the gateway listens on tcp:// addresses only, not {address}"),
            ));
        };
        let listener = crate::listener::bind_tcp(hostport.as_str(), self.backlog).await?;
        let local_addr = listener.local_addr()?;
        let shared = self.shared();
        let connections = self.connections;
        let tracker = tracker::Tracker::new(self.max_connections);
        Ok(Gateway { listener, local_addr, connections, router: self.router(shared.clone()), shared, tracker })
    }
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("client", &self.client)
            .field("default_timeout", &self.default_timeout)
            .field("max_body", &self.max_body)
            .field("connections", &self.connections)
            .field("max_connections", &self.max_connections)
            .field("backlog", &self.backlog)
            .field("console", &self.console)
            .finish()
    }
}
