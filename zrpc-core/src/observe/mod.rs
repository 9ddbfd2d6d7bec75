//! Observing calls: a [`tracing`] span per call on each side, and, with the feature `metrics`,
//! counters, gauges and histograms through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! Transports open an [`Observed`] when a call starts (a client sending it, a server starting
//! its handler) and finish it with the call's result; a call dropped before it finished is
//! recorded as `Cancelled`. Users do nothing but install a `tracing` subscriber or a `metrics`
//! recorder (Prometheus, StatsD, ...); nothing is recorded until they do. While nothing can
//! record a call ([`enabled`] is false: no subscriber was ever set and the feature `metrics` is
//! off), transports make no [`Observed`] at all and run the handler bare, not in an
//! [`InSpan`]: a call then pays one atomic load per side for being observable.
//!
//! # Spans
//!
//! One span per call and side, named `zrpc.client` and `zrpc.server`, at level `INFO`, with the
//! fields OpenTelemetry's RPC conventions name (so that `tracing-opentelemetry` exports them as
//! they are): `otel.name` (`Service/method`), `otel.kind` (`client`, `server`), `rpc.system`
//! (`zrpc`), `rpc.service`, `rpc.method`, `peer` (the other end's name, or the endpoint's
//! address), and, once the call ends, `rpc.code` (the [`Code`]'s name), `otel.status_code`
//! (`ERROR` for a failed call) and `latency_us`. A server's span is entered while its handler is
//! polled, so the handler's own events and spans nest in it.
//!
//! The spans carry the call's W3C trace context (see [`crate::trace`]): `trace_id` and
//! `span_id` on both sides, and `parent_span_id` on the server, where it is the client span's
//! `span_id`, so that logs of both processes join into one trace. A call sent while its span is
//! recorded gets a trace context if it had none (a new trace); the handler's context carries the
//! server span's id, so that its own calls (made with [`Context::child`](crate::Context::child)) continue the trace.
//! Without a subscriber interested in the spans, no trace context is made and nothing more is
//! sent.
//!
//! With the feature `opentelemetry` and `tracing-opentelemetry`'s layer installed, the ids are
//! OpenTelemetry's own: a client sends its span's ids, a server makes the caller's span the
//! remote parent of its own, and the exporter sees one distributed trace (tested with the SDK's
//! in-memory exporter in `tests/opentelemetry.rs`).
//!
//! # Metrics (feature `metrics`)
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `zrpc_client_calls_total` | counter | `service`, `method`, `endpoint`, `code` |
//! | `zrpc_client_call_duration_seconds` | histogram | `service`, `method`, `endpoint` |
//! | `zrpc_client_calls_in_flight` | gauge | `service`, `method`, `endpoint` |
//! | `zrpc_server_calls_total` | counter | `service`, `method`, `code` |
//! | `zrpc_server_call_duration_seconds` | histogram | `service`, `method` |
//! | `zrpc_server_calls_in_flight` | gauge | `service`, `method` |
//! | `zrpc_connections` | gauge | `side` (`client`, `server`) |
//! | `zrpc_connections_opened_total` | counter | `side` |
//! | `zrpc_client_retries_total` | counter | `service`, `method` |
//! | `zrpc_breaker_transitions_total` | counter | `endpoint`, `state` (`open`, `half_open`, `closed`) |
//!
//! `code` is `Ok` or the failure's [`Code`] (`Unavailable`, `DeadlineExceeded`, ...), so errors
//! by code are the calls whose code is not `Ok`. `endpoint` is the address a client's channel
//! connects to, or the other end's name for calls made back over a server's connection.
//!
//! Label values are bounded by what this process defines, never by what a peer sends: a method
//! gets its own labels only when its name is one of the process's own (a generated client's, a
//! served method's); a server counts calls of methods it does not serve under `service` and
//! `method` `unknown`, and a client those it names at run time (a gateway forwarding any name)
//! under `other`. Each connection keeps the handles of the methods it has seen (at most
//! 1,024 of them, `MAX_CACHED`), so the recorder is asked for a metric once per method and
//! connection, not once per call. Install the recorder before the first connection: handles
//! taken before it record nothing, as the `metrics` crate says of every metric.

#[cfg(feature = "metrics")]
mod metrics;
#[cfg(feature = "opentelemetry")]
mod otel;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use tracing::Span;
use tracing::field::Empty;

use crate::request::{Method, Request, Response};
use crate::status::{Code, Status};
use crate::trace::TraceContext;

#[cfg(feature = "metrics")]
pub use self::metrics::{
    MAX_CACHED, MetricsCache, connection_closed, connection_opened, record_breaker, record_connection_refused,
    record_handshake_evicted, record_retry,
};

/// The metric handles of the methods a connection has seen: nothing without the feature
/// `metrics`.
#[cfg(not(feature = "metrics"))]
#[derive(Debug, Default)]
pub struct MetricsCache;

#[cfg(not(feature = "metrics"))]
impl MetricsCache {
    /// A cache for one side of one connection; `endpoint` labels a client's calls.
    pub fn new(side: Side, endpoint: Option<std::sync::Arc<str>>) -> MetricsCache {
        let _ = (side, endpoint);
        MetricsCache
    }
}

/// Records that a connection opened on `side` (feature `metrics`).
#[cfg(not(feature = "metrics"))]
pub fn connection_opened(side: Side) {
    let _ = side;
}

/// Records that a connection on `side` closed (feature `metrics`).
#[cfg(not(feature = "metrics"))]
pub fn connection_closed(side: Side) {
    let _ = side;
}

/// Records that a server closed a connection still in its handshake to make room for a newer
/// one (feature `metrics`).
#[cfg(not(feature = "metrics"))]
pub fn record_handshake_evicted() {}

/// Records that a server refused a connection because its `max_connections` were open
/// (feature `metrics`).
#[cfg(not(feature = "metrics"))]
pub fn record_connection_refused() {}

/// Records that the retry layer resent a call of `method` (feature `metrics`).
#[cfg(not(feature = "metrics"))]
pub fn record_retry(method: &Method) {
    let _ = method;
}

/// Records that the breaker of `endpoint` moved to `state` (feature `metrics`).
#[cfg(not(feature = "metrics"))]
pub fn record_breaker(endpoint: &str, state: &'static str) {
    let _ = (endpoint, state);
}

/// Whether calls are observed at all: always with the feature `metrics`, else once a `tracing`
/// subscriber was set. When not, transports skip [`Observed`] (and the clock) entirely.
#[inline]
pub fn enabled() -> bool {
    cfg!(feature = "metrics") || !no_subscriber()
}

/// Which end of a call is observing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The end that sent the request.
    Client,
    /// The end that runs the handler.
    Server,
}

impl Side {
    /// `client` or `server`, as in labels and `otel.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// One call being observed on one side: its span, when it started and its metric handles;
/// finish it with [`Observed::finish`]. Dropped unfinished, it records the call as cancelled.
pub struct Observed {
    span: Span,
    /// `None` when nothing records the call: the clock is not read.
    started: Option<Instant>,
    #[cfg(feature = "metrics")]
    metrics: Option<std::sync::Arc<self::metrics::CallMetrics>>,
    finished: bool,
}

/// The span of one call on one side (`$name`, `$kind`): OpenTelemetry's RPC fields, the
/// outcome's fields left empty until the call ends, and `$extra` fields; no span at all while no
/// subscriber exists (see [`no_subscriber`]).
macro_rules! call_span {
    ($name:literal, $kind:literal, $method:expr, $peer:expr $(, $($extra:tt)*)?) => {
        if no_subscriber() {
            Span::none()
        } else {
            let method = $method;
            tracing::info_span!(
                $name,
                otel.name = %OtelName(method),
                otel.kind = $kind,
                otel.status_code = Empty,
                rpc.system = "zrpc",
                rpc.service = method.service(),
                rpc.method = method.name(),
                rpc.code = Empty,
                peer = $peer,
                trace_id = Empty,
                span_id = Empty,
                latency_us = Empty,
                $($($extra)*)?
            )
        }
    };
}

/// Records the trace ids `trace` gives the call on `span`.
fn record_ids(span: &Span, trace: &TraceContext) {
    span.record("trace_id", tracing::field::display(format_args!("{:032x}", trace.trace_id)));
    span.record("span_id", tracing::field::display(format_args!("{:016x}", trace.span_id)));
}

impl Observed {
    /// Starts observing `request` as its client sends it to `peer`. While the span is recorded,
    /// the request gets a trace context if it has none, and the span records its ids.
    pub fn client(request: &mut Request, peer: &str, cache: &mut MetricsCache) -> Observed {
        let span = call_span!("zrpc.client", "client", request.method(), peer);
        if !span.is_disabled() {
            let ctx = request.ctx_mut();
            // With an OpenTelemetry layer, the span's own ids are what the server joins.
            #[cfg(feature = "opentelemetry")]
            if let Some(ids) = otel::ids(&span) {
                ctx.set_trace(Some(ids));
            }
            record_ids(&span, &ctx.trace_or_insert_with(TraceContext::new_root));
        }
        Observed::start(span, request, cache)
    }

    /// Starts observing `request` as a server begins handling it for `peer`. While the span
    /// is recorded, the handler's context gets a trace context naming this span (a child of the
    /// caller's, or a new trace), and the span records the caller's span as its parent.
    pub fn server(request: &mut Request, peer: &str, cache: &mut MetricsCache) -> Observed {
        let span = call_span!("zrpc.server", "server", request.method(), peer, parent_span_id = Empty);
        if !span.is_disabled() {
            let ctx = request.ctx_mut();
            let here = match ctx.trace() {
                Some(caller) => {
                    span.record("parent_span_id", tracing::field::display(format_args!("{:016x}", caller.span_id)));
                    #[cfg(feature = "opentelemetry")]
                    otel::set_remote_parent(&span, &caller);
                    caller.child()
                }
                None => TraceContext::new_root(),
            };
            // With an OpenTelemetry layer, the handler's calls continue from this span's ids.
            #[cfg(feature = "opentelemetry")]
            let here = otel::ids(&span).unwrap_or(here);
            ctx.set_trace(Some(here));
            record_ids(&span, &here);
        }
        Observed::start(span, request, cache)
    }

    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn start(span: Span, request: &Request, cache: &mut MetricsCache) -> Observed {
        #[cfg(feature = "metrics")]
        let metrics = Some(cache.get(request.method()));
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &metrics {
            metrics.started();
        }
        #[cfg(feature = "metrics")]
        let recording = true;
        #[cfg(not(feature = "metrics"))]
        let recording = false;
        let started = (recording || !span.is_disabled()).then(Instant::now);
        Observed {
            span,
            started,
            #[cfg(feature = "metrics")]
            metrics,
            finished: false,
        }
    }

    /// The call's span: a server enters it while polling the handler.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Records the call's outcome: its code, latency, and (feature `metrics`) its counters.
    pub fn finish(mut self, result: &Result<Response, Status>) {
        self.record(result.as_ref().map_or_else(Status::code, |_| Code::Ok));
    }

    fn record(&mut self, code: Code) {
        self.finished = true;
        let Some(started) = self.started else { return };
        let elapsed = started.elapsed();
        if !self.span.is_disabled() {
            self.span.record("rpc.code", code.name());
            self.span.record("latency_us", elapsed.as_micros() as u64);
            if code != Code::Ok {
                self.span.record("otel.status_code", "ERROR");
            }
        }
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.finished(code, elapsed);
        }
    }
}

impl Drop for Observed {
    /// A call dropped before its end (its caller gave up, its handler was aborted) counts as
    /// cancelled.
    fn drop(&mut self) {
        if !self.finished {
            self.record(Code::Cancelled);
        }
    }
}

impl fmt::Debug for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed").field("span", &self.span).field("started", &self.started).finish_non_exhaustive()
    }
}

pin_project_lite::pin_project! {
    /// A handler's future, polled inside its call's span when the span is recorded, else bare;
    /// dropped inside it too, so that what a handler logs while it is cut short (the caller
    /// cancelled, the deadline passed) belongs to its call.
    pub struct InSpan<F> {
        // `None` once dropped, in place, inside the span.
        #[pin]
        inner: Option<F>,
        span: Option<Span>,
    }

    impl<F> PinnedDrop for InSpan<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            let _entered = this.span.as_ref().map(Span::enter);
            this.inner.set(None);
        }
    }
}

impl<F> InSpan<F> {
    /// `inner`, to be polled inside `observed`'s span if there is one that records.
    pub fn new(inner: F, observed: Option<&Observed>) -> InSpan<F> {
        let span = observed.map(Observed::span).filter(|span| !span.is_disabled()).cloned();
        InSpan { inner: Some(inner), span }
    }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.as_ref().map(Span::enter);
        // Only the drop empties it, and nothing polls a future being dropped.
        this.inner.as_pin_mut().expect("an InSpan is polled only before it is dropped").poll(cx)
    }
}

impl<F> fmt::Debug for InSpan<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InSpan").field("span", &self.span).finish_non_exhaustive()
    }
}

/// Whether no `tracing` subscriber was ever set, globally or for a scope: the calls' spans are
/// then not made at all. A disabled span is not free when `tracing`'s `log` feature is on (a
/// dependency may turn it on): it still offers its fields to the `log` crate. Measured with
/// `compare` at 100 callers, the spans of both sides cost about 2.5% of the CPU time without a
/// subscriber before this check.
fn no_subscriber() -> bool {
    !tracing::dispatcher::has_been_set()
}

/// `Service/method`, the span name OpenTelemetry's RPC conventions ask for.
struct OtelName<'a>(&'a Method);

impl fmt::Display for OtelName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.service(), self.0.name())
    }
}
