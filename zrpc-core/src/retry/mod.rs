//! Fail modes: what a client does when an attempt fails or is slow — give up, try another
//! endpoint, try the same one again, or hedge with a backup request.
//!
//! [`Retry`] sits between the whole-call [`Timeout`](crate::timeout) and the balancer. It sends
//! each attempt down with [`Hints`](crate::Hints) that steer the balancer — endpoints to avoid,
//! an endpoint to stick to — and a fresh [`PickRecord`] in which the balancer notes where the
//! attempt went. Requests are cheap to clone (the payload is shared `Bytes`), so every attempt
//! sends the very same bytes.
//!
//! # Fail modes
//!
//! 1. [`FailMode::Failfast`]: one attempt; its result is the call's.
//! 2. [`FailMode::Failover { retries }`](FailMode::Failover): up to `retries + 1` attempts, one
//!    after the other. Each attempt's `hints.exclude` holds the caller's own exclusions plus every
//!    endpoint this call has tried, so the balancer picks an endpoint not tried yet; it falls back
//!    to tried ones only when every eligible endpoint was tried.
//! 3. [`FailMode::Failtry { retries }`](FailMode::Failtry): up to `retries + 1` attempts, one after
//!    the other, on the same endpoint: every attempt after the first has `hints.pin` set to the
//!    endpoint the first went to (the balancer reconnects to it if needed). Should that endpoint
//!    become ineligible (down, breaker open), the balancer ignores the pin and picks another.
//! 4. [`FailMode::Failbackup { delay }`](FailMode::Failbackup): the first attempt goes out; if it
//!    has not answered within `delay`, one backup goes out whose `hints.exclude` adds the first
//!    attempt's endpoint. If the first attempt fails before `delay`, the backup goes out at once,
//!    provided the failure may be retried (rule 6). The first success wins and the other attempt
//!    is dropped, which cancels it on the wire. The call fails only when both attempts fail, with
//!    the later error. A hedge runs a request twice at the same time: use it for methods that
//!    tolerate that (the timed backup does not wait for proof that the first was not processed).
//!
//! # Which failures are retried
//!
//! [`is_retryable`] decides, in this order; `Ok` responses, including application errors (which
//! travel inside the payload), are never retried:
//!
//! 5. Never, once the caller's deadline has passed, and never for `Cancelled`,
//!    `InvalidArgument`, `NotFound`, `Unauthenticated` or `PermissionDenied`, whatever else the
//!    status says: another attempt would fail the same way, or the caller gave up.
//! 6. Always when [`Status::is_unprocessed`]: the request provably never ran (connect failure,
//!    GOAWAY refusal, breaker open, load shed), so running it elsewhere is safe.
//! 7. For idempotent methods only ([`Request::is_idempotent`], `#[zrpc(idempotent)]`):
//!    `Unavailable` (a connection lost after sending) and `DeadlineExceeded` (an attempt timed
//!    out while the caller's deadline had not passed). The request may have run.
//! 8. Never, for everything else: `Internal`, `Unknown`, `DataLoss`, `Unimplemented`, and
//!    `ResourceExhausted` not marked unprocessed.
//!
//! An attempt that timed out and a call whose deadline passed both report `DeadlineExceeded`;
//! the layer tells them apart by comparing the clock with the deadline the call came in with
//! (which a whole-call [`Timeout`](crate::timeout::Timeout) above has set), not by the status.
//!
//! # Backoff and budget
//!
//! 9. Before each retry of `Failover` and `Failtry` the layer sleeps a capped exponential backoff
//!    with full jitter: retry `n` (from 0) waits a uniform random time in
//!    `0..=min(max, initial × 2ⁿ)` (Marc Brooker, ["Exponential Backoff And Jitter"](https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/),
//!    AWS Architecture Blog, 2015). It never sleeps after the last attempt, and never past the
//!    caller's deadline: when the backoff would end at or after it, the last error is returned
//!    at once. `Failbackup` has no backoff: its `delay` is the hedge delay.
//! 10. Every call in a mode that can retry deposits into a retry budget (tower's
//!     [`TpsBudget`]); every retry, and the backup of `Failbackup`, withdraws from it. When the
//!     budget refuses, the last error is returned (a refused hedge just waits for the first
//!     attempt). The default allows 10 retries a second plus 20% of the calls of the last 10
//!     seconds, so a failing cluster sees at most about 1.2 times its usual traffic, not
//!     `retries + 1` times. The budget is shared by every clone of the service: one per client.
//! 11. A call that fails after several attempts returns the last attempt's status — code,
//!     message, details and unprocessed mark — with `; N attempts` appended to the message, and
//!     `; retry budget exhausted` or `; no time left before the deadline to retry` when that is
//!     why it stopped.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use zrpc_core::retry::{FailMode, RetryLayer};
//! use zrpc_core::timeout::TimeoutLayer;
//! use zrpc_core::{Request, Response, Status};
//!
//! # let balancer = tower::service_fn(|_req: Request| async { Ok::<_, Status>(Response::default()) });
//! let client = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(2)))
//!     .layer(RetryLayer::new(FailMode::Failover { retries: 2 }))
//!     .layer(TimeoutLayer::per_attempt(Duration::from_millis(500)))
//!     .service(balancer);
//! # let _ = client;
//! ```

mod call;
mod future;
mod layer;

use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::Service;
pub use tower::retry::budget::TpsBudget;

use self::call::Call;
pub use self::future::ResponseFuture;
pub use self::layer::RetryLayer;
use crate::backoff::Backoff;
use crate::context::PickRecord;
use crate::request::{Request, Response};
use crate::status::{Code, Status};

/// What the client does when an attempt fails or is slow; see the [module docs](self) for the
/// exact rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailMode {
    /// One attempt.
    #[default]
    Failfast,
    /// Up to `retries + 1` attempts, each on an endpoint this call has not tried yet while one
    /// remains.
    Failover {
        /// Attempts after the first.
        retries: u32,
    },
    /// Up to `retries + 1` attempts, all on the endpoint the first went to.
    Failtry {
        /// Attempts after the first.
        retries: u32,
    },
    /// A backup on another endpoint when the first attempt has not answered within `delay`; the
    /// first success wins, the other attempt is cancelled.
    Failbackup {
        /// How long the first attempt has before the backup goes out.
        delay: Duration,
    },
}

/// Whether a failed attempt of `request` may be retried: rules 5 to 8 of the
/// [module docs](self).
///
/// "The caller's deadline" is `request`'s deadline as the retry layer received it, compared with
/// [`Instant::now`]; `status` is the attempt's error (`Ok` responses are never retried and never
/// reach this function).
///
/// # Examples
///
/// ```
/// use zrpc_core::retry::is_retryable;
/// use zrpc_core::{Request, Status};
///
/// let req = Request::new("Greeter.hello", bytes::Bytes::new());
/// assert!(is_retryable(&Status::unavailable("connection refused").mark_unprocessed(), &req));
/// assert!(!is_retryable(&Status::unavailable("connection reset"), &req));
/// assert!(is_retryable(&Status::unavailable("connection reset"), &req.clone().with_idempotent(true)));
/// ```
pub fn is_retryable(status: &Status, request: &Request) -> bool {
    if request.ctx().deadline().is_some_and(|deadline| Instant::now() >= deadline) {
        return false;
    }
    match status.code() {
        Code::Cancelled | Code::InvalidArgument | Code::NotFound | Code::Unauthenticated | Code::PermissionDenied => {
            false
        }
        _ if status.is_unprocessed() => true,
        Code::Unavailable | Code::DeadlineExceeded => request.is_idempotent(),
        _ => false,
    }
}

/// Resends failed or slow calls according to a [`FailMode`]; see the [module docs](self).
///
/// The inner service must be `Clone`: the first attempt uses the service made ready by
/// `poll_ready`, later attempts use clones of it (made ready in turn). Clones share the budget.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    settings: Settings,
}

/// What a [`RetryLayer`] hands each [`Retry`] it makes.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) mode: FailMode,
    pub(crate) backoff: Backoff,
    /// Shared by every service made by one layer and all their clones.
    pub(crate) budget: Option<std::sync::Arc<TpsBudget>>,
    /// Seeds the jitter of each call, for reproducible tests; `None` seeds from fastrand.
    pub(crate) seed: Option<u64>,
}

impl<S> Retry<S> {
    /// Wraps `inner` with `mode`, the default backoff and a budget of its own; see
    /// [`RetryLayer`] to configure them.
    pub fn new(inner: S, mode: FailMode) -> Retry<S> {
        tower::Layer::layer(&RetryLayer::new(mode), inner)
    }

    pub(crate) fn with_settings(inner: S, settings: Settings) -> Retry<S> {
        Retry { inner, settings }
    }

    /// The fail mode.
    pub fn mode(&self) -> FailMode {
        self.settings.mode
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Request> for Retry<S>
where
    S: Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Status;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> ResponseFuture<S::Future> {
        // The service `poll_ready` prepared takes the first attempt; `self` keeps a clone.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let (retries, same_endpoint) = match self.settings.mode {
            FailMode::Failover { retries } => (retries, false),
            FailMode::Failtry { retries } => (retries, true),
            FailMode::Failbackup { delay } => {
                let call = Call::new(req, self.settings.clone());
                let record = call.first_record();
                let first = ready.call(call.attempt(record.clone(), &[], None));
                return ResponseFuture::retrying(call::backup(call, ready, first, record, delay));
            }
            FailMode::Failfast => (0, false),
        };
        if retries == 0 {
            return ResponseFuture::once(ready.call(req));
        }
        let call = Call::new(req, self.settings.clone());
        let record: PickRecord = call.first_record();
        let first = ready.call(call.attempt(record.clone(), &[], None));
        ResponseFuture::retrying(call::sequential(call, ready, first, record, retries, same_endpoint))
    }
}

#[cfg(test)]
mod tests;
