//! A circuit breaker per endpoint: stop sending calls to an endpoint that keeps failing, and
//! probe it back into use once it may have recovered.
//!
//! [`CircuitBreaker`] wraps the service of *one* endpoint and sits below the balancing layer
//! (DESIGN §5: timeout → retry → balance → breaker → connection). An open breaker makes its
//! endpoint [unavailable](crate::balance::Available), so the balancer does not pick it; a call
//! that reaches it anyway fails at once with an error the retry layer sends elsewhere.
//!
//! The pattern is Nygard's (*Release It!*, 2nd ed., 2018, "Circuit Breaker"); counting outcomes
//! in a rolling window of buckets with a minimum number of calls is Netflix Hystrix's
//! (`metrics.rollingStats`, `circuitBreaker.requestVolumeThreshold`), also used by Alibaba
//! Sentinel's sliding windows and resilience4j (`minimumNumberOfCalls`,
//! `permittedNumberOfCallsInHalfOpenState`).
//!
//! # Behaviour
//!
//! 1. **Closed.** Calls go through, and their outcomes are counted in a rolling window
//!    ([`window`](BreakerConfig::window), default 10 s, in [`buckets`](BreakerConfig::buckets),
//!    default 10, that age out one at a time). The breaker opens when the failure rate over the
//!    window *exceeds* [`failure_rate`](BreakerConfig::failure_rate) (default 50%) while the
//!    window holds at least [`min_calls`](BreakerConfig::min_calls) outcomes (default 20), or
//!    after [`consecutive_failures`](BreakerConfig::consecutive_failures) connect failures in a
//!    row (default 5) — `Unavailable` marked [unprocessed](Status::is_unprocessed), the
//!    endpoint never reached. Any answer from the endpoint ends such a streak.
//! 2. **What counts.** Failures are transport failures and the statuses `Unavailable`,
//!    `Internal` and `DeadlineExceeded`. Successes are `Ok` responses, which include
//!    application errors: those travel in the payload and say nothing against the endpoint.
//!    Every other status (`NotFound`, `InvalidArgument`, `PermissionDenied`, …) is the
//!    caller's business and is not counted.
//! 3. **Open.** Calls fail at once, without reaching the inner service, with `Unavailable`
//!    marked unprocessed: `circuit breaker open for 10.0.0.7:7070; retrying after 2s`, so a
//!    retry layer goes to another endpoint even for non-idempotent methods. After a cool-down
//!    ([`cooldown`](BreakerConfig::cooldown), default 1 s) the breaker is half-open. Each
//!    failed probe doubles the next cool-down, up to
//!    [`max_cooldown`](BreakerConfig::max_cooldown) (default 30 s), so an endpoint that stays
//!    down is probed less and less often; closing resets it.
//! 4. **Half-open.** Up to [`probes`](BreakerConfig::probes) calls at a time (default 1) go
//!    through as probes; the others fail fast as when open. A probe failure re-opens the breaker
//!    with the grown cool-down; [`successes_to_close`](BreakerConfig::successes_to_close)
//!    successful probes (default 3, with no failure between them, since a failure re-opens)
//!    close it, with an empty window. A probe answered with an uncounted status frees its slot
//!    and counts for neither side.
//! 5. **Cancellation.** A call whose future is dropped before it completes counts as nothing;
//!    if it was a probe, its slot is given back, so a cancelled probe never wedges the breaker
//!    half-open.
//!
//! Outcomes are applied only in the state that let the call through: a call admitted while
//! closed that fails after the breaker opened, or a probe that answers after another probe
//! re-opened the breaker, changes nothing. The breaker is open from the moment it trips, not
//! once the calls already in flight have drained.
//!
//! [`CircuitBreaker::is_available`](crate::balance::Available::is_available) says whether a
//! call made now would be let through — closed, open past its cool-down, or half-open with a
//! free probe slot — and whether the inner service is available.
//!
//! # Cost
//!
//! The state of a breaker is a few words behind a `Mutex`, shared by its clones: a closed
//! breaker admits a call with one atomic load, and records its outcome under the lock, which
//! is only contended by calls to the same endpoint finishing at the same instant. Nothing is
//! allocated per call except the message of a refusal.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use tower::{ServiceBuilder, service_fn};
//! use zrpc_core::breaker::{BreakerConfig, BreakerState, CircuitBreakerLayer};
//! use zrpc_core::{Request, Response, Status};
//!
//! let config = BreakerConfig::default().consecutive_failures(3).max_cooldown(Duration::from_secs(10));
//! let endpoint = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(config).with_name("10.0.0.7:7070"))
//!     .service(service_fn(|_: Request| async { Ok::<_, Status>(Response::new(Bytes::new())) }));
//! assert_eq!(endpoint.state(), BreakerState::Closed);
//! ```

mod config;
pub mod future;
mod layer;
mod machine;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::Service;

pub use config::BreakerConfig;
pub use layer::CircuitBreakerLayer;

use self::future::{Permit, ResponseFuture};
use self::machine::{Machine, Outcome, Rejection, Ticket};
use crate::balance::Available;
use crate::request::{Request, Response};
use crate::status::Status;

/// Where a [`CircuitBreaker`] is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through and their outcomes are counted.
    Closed,
    /// Calls fail at once until the cool-down has passed.
    Open,
    /// Probe calls go through, the rest fail at once; the probes decide between closed and open.
    /// An open breaker whose cool-down has passed reports this state: its next call is a probe.
    HalfOpen,
}

/// A circuit breaker in front of one endpoint's service; see the [module docs](self).
///
/// Clones share one state, so a breaker can be cloned per call as tower services are.
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
    name: Option<Arc<str>>,
}

impl<S> CircuitBreaker<S> {
    /// A closed breaker in front of `inner`.
    pub fn new(inner: S, config: BreakerConfig) -> CircuitBreaker<S> {
        let machine = Machine::new(config, Instant::now());
        let shared = Shared { tag: AtomicU64::new(machine.tag()), machine: Mutex::new(machine), name: OnceLock::new() };
        CircuitBreaker { inner, shared: Arc::new(shared), name: None }
    }

    /// Names the endpoint in the breaker's errors, e.g. its address.
    pub fn with_name(mut self, name: impl Into<Arc<str>>) -> CircuitBreaker<S> {
        let name = name.into();
        // The breaker's transitions are counted under its first name (feature `metrics`).
        let _ = self.shared.name.set(name.clone());
        self.name = Some(name);
        self
    }

    /// The endpoint's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        self.shared.lock().state(Instant::now())
    }

    /// The configuration the breaker was made with.
    pub fn config(&self) -> BreakerConfig {
        self.shared.lock().config().clone()
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service, leaving the breaker's state to any clones.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn refusal(&self, rejection: Rejection) -> Status {
        let name = match &self.name {
            Some(name) => format!(" for {name}"),
            None => String::new(),
        };
        let message = match rejection {
            Rejection::Open { remaining } => {
                format!("circuit breaker open{name}; retrying after {:?}", round_up_to_millis(remaining))
            }
            Rejection::ProbesBusy { in_flight: 1 } => format!("circuit breaker half-open{name}; waiting for its probe"),
            Rejection::ProbesBusy { in_flight } => {
                format!("circuit breaker half-open{name}; waiting for {in_flight} probes")
            }
        };
        Status::unavailable(message).mark_unprocessed()
    }
}

impl<S: Clone> Clone for CircuitBreaker<S> {
    fn clone(&self) -> CircuitBreaker<S> {
        CircuitBreaker { inner: self.inner.clone(), shared: Arc::clone(&self.shared), name: self.name.clone() }
    }
}

impl<S: fmt::Debug> fmt::Debug for CircuitBreaker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S> Service<Request> for CircuitBreaker<S>
where
    S: Service<Request, Response = Response, Error = Status>,
{
    type Response = Response;
    type Error = Status;
    type Future = ResponseFuture<S::Future>;

    /// Polls the inner service: whether a call is let through is decided by `call`, when the
    /// call is made.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> ResponseFuture<S::Future> {
        match self.shared.admit() {
            Ok(ticket) => {
                // Taken before calling in, so a panicking inner service still frees a probe slot.
                let permit = Permit::new(Arc::clone(&self.shared), ticket);
                ResponseFuture::admitted(self.inner.call(request), permit)
            }
            Err(rejection) => ResponseFuture::rejected(self.refusal(rejection)),
        }
    }
}

impl<S: Available> Available for CircuitBreaker<S> {
    /// Whether a call made now would be let through (closed, open past its cool-down, or
    /// half-open with a free probe slot) and the inner service is available.
    fn is_available(&self) -> bool {
        self.shared.would_admit() && self.inner.is_available()
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    fn is_unproven(&self) -> bool {
        self.inner.is_unproven()
    }

    fn probe(&self) -> Option<futures::future::BoxFuture<'static, ()>> {
        self.inner.probe()
    }
}

/// The state shared by a breaker's clones.
struct Shared {
    machine: Mutex<Machine>,
    /// [`Machine::tag`] as of the last change, so that a closed breaker admits a call without
    /// the lock. Written only under the lock; a stale read at worst admits a call that races
    /// with the breaker opening, which was in flight anyway, and whose outcome is then ignored.
    tag: AtomicU64,
    /// The endpoint's name, for the transitions' metric.
    name: OnceLock<Arc<str>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Machine> {
        // The machine panics nowhere, and no invariant spans a lock, so poison carries no news.
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(&self) -> Result<Ticket, Rejection> {
        if let Some(generation) = Machine::closed_generation(self.tag.load(Ordering::Acquire)) {
            return Ok(Ticket { generation, probe: false });
        }
        let mut machine = self.lock();
        let admitted = machine.admit(Instant::now());
        self.store_tag(machine.tag());
        admitted
    }

    /// Publishes the machine's new tag, counting a transition when the phase changed.
    fn store_tag(&self, tag: u64) {
        let before = self.tag.swap(tag, Ordering::AcqRel);
        if before != tag {
            let name = self.name.get().map_or("", |name| name);
            crate::observe::record_breaker(name, Machine::phase_name(tag));
        }
    }

    fn finish(&self, ticket: Ticket, outcome: Outcome) {
        // Nothing to record, nothing to give back.
        if outcome == Outcome::Cancelled && !ticket.probe {
            return;
        }
        let mut machine = self.lock();
        machine.finish(ticket, outcome, Instant::now());
        self.store_tag(machine.tag());
    }

    fn would_admit(&self) -> bool {
        Machine::closed_generation(self.tag.load(Ordering::Acquire)).is_some()
            || self.lock().would_admit(Instant::now())
    }
}

/// `remaining` rounded up to whole milliseconds, for messages: `2s`, `1.5s`, `250ms`.
fn round_up_to_millis(remaining: Duration) -> Duration {
    let millis = remaining.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
