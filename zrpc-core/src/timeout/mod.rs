//! Deadlines: fail a call with [`Code::DeadlineExceeded`](crate::Code::DeadlineExceeded) when
//! it takes too long, and tell the server and the layers below when that is.
//!
//! A [`Timeout`] does not keep its limit to itself: it writes the resulting deadline into the
//! request's [`Context`](crate::Context), from where it travels to the server (as the remaining
//! time) and bounds the layers below — the retry layer never sleeps past it, a per-attempt timeout
//! never extends it.
//!
//! # Semantics
//!
//! For each request, at the moment `call` is made (`now`):
//!
//! 1. The deadline becomes the earlier of the request's own deadline (if any) and `now + timeout`,
//!    and is set in the request's context before the request goes down the stack. A caller's
//!    tighter deadline always wins; a layer never loosens one. A call that opted out of
//!    deadlines ([`Context::without_deadline`](crate::Context::without_deadline)) is capped all
//!    the same: the opt-out is from *default* deadlines, not from limits a stack imposes.
//! 2. When the request carries no [`PickRecord`] in its hints, a fresh one is
//!    put there, so that the balancer below notes the endpoint it picks; an existing record is
//!    kept (and shared), so the caller still learns the pick.
//! 3. If the deadline has already passed, the inner service is not called and the call fails at
//!    once.
//! 4. If the inner service answers (success or error) before the deadline, that answer is
//!    returned unchanged — also when it is ready at the very instant the deadline fires.
//! 5. Otherwise, at the deadline the inner future is dropped — which cancels the call on the wire
//!    — and the call fails with `DeadlineExceeded` and a message naming the allowed time (rounded
//!    to whole milliseconds), the method and, when the balancer has picked one, the endpoint:
//!    `deadline of 500ms exceeded calling Greeter.hello on tcp://127.0.0.1:4000`. When the
//!    request's own deadline was a default ([`Context::deadline_origin`](crate::Context::deadline_origin)),
//!    the message says whose: `deadline of 10000ms (the client's default) exceeded calling ...`.
//!
//! # Whole call and per attempt
//!
//! [`TimeoutLayer::new`] bounds the whole call and goes above the retry layer (see
//! [`retry`](crate::retry)); [`TimeoutLayer::per_attempt`] bounds each attempt and goes below it.
//! Both apply the rules above; they differ in where they sit and in the message when the
//! per-attempt limit, not the call's deadline, was the tighter one: `attempt timeout of 200ms
//! exceeded calling Greeter.hello on tcp://127.0.0.1:4000`.
//!
//! An attempt that timed out and a call whose deadline passed both fail with `DeadlineExceeded`.
//! The retry layer tells them apart by the clock, not by the status: it remembers the deadline
//! the call came in with and compares it with [`Instant::now`] when an attempt fails. Past it, the
//! call is over and nothing is retried; before it, the failure was the attempt's own and is retried
//! like any other lost answer (idempotent methods only). Comparing instants needs no marker to be
//! carried on the status, and it stays right whatever layer produced the error (this one, the
//! transport's own deadline, the server's).
//!
//! With a whole-call timeout above a retry layer, the endpoint named on expiry is the one the
//! first attempt went to: the retry layer hands the caller's record to the first attempt and
//! fresh ones to the others.

mod future;
mod layer;

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::Service;

pub use self::future::ResponseFuture;
pub use self::layer::TimeoutLayer;
use crate::context::PickRecord;
use crate::request::{Method, Request, Response};
use crate::status::Status;

/// Fails calls that outlive their deadline, after tightening that deadline to at most `timeout`
/// from the call. See the [module docs](self) for the exact rules.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use zrpc_core::timeout::Timeout;
/// use zrpc_core::{Request, Response, Status};
///
/// let inner = tower::service_fn(|_req: Request| async { Ok::<_, Status>(Response::default()) });
/// let svc = Timeout::new(inner, Duration::from_millis(500));
/// # let _ = svc;
/// ```
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    limit: Duration,
    scope: Scope,
}

/// Which timeout a [`Timeout`] applies; only the expiry message differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The whole call, above the retry layer.
    Call,
    /// One attempt, below the retry layer.
    Attempt,
}

impl<S> Timeout<S> {
    /// A whole-call timeout of `timeout` around `inner`; see [`TimeoutLayer::new`].
    pub const fn new(inner: S, timeout: Duration) -> Timeout<S> {
        Timeout::with_scope(inner, timeout, Scope::Call)
    }

    /// A per-attempt timeout of `timeout` around `inner`; see [`TimeoutLayer::per_attempt`].
    pub const fn per_attempt(inner: S, timeout: Duration) -> Timeout<S> {
        Timeout::with_scope(inner, timeout, Scope::Attempt)
    }

    pub(crate) const fn with_scope(inner: S, limit: Duration, scope: Scope) -> Timeout<S> {
        Timeout { inner, limit, scope }
    }

    /// The configured timeout.
    pub const fn timeout(&self) -> Duration {
        self.limit
    }

    /// The wrapped service.
    pub const fn get_ref(&self) -> &S {
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

impl<S> Service<Request> for Timeout<S>
where
    S: Service<Request, Response = Response, Error = Status>,
{
    type Response = Response;
    type Error = Status;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let now = Instant::now();
        // `None` only when `now + limit` does not fit in an `Instant`: no limit in practice.
        let ours = now.checked_add(self.limit);
        let theirs = req.ctx().deadline();
        let (deadline, ours_binds) = match (theirs, ours) {
            (Some(theirs), Some(ours)) if ours < theirs => (Some(ours), true),
            (Some(theirs), _) => (Some(theirs), false),
            (None, ours) => (ours, ours.is_some()),
        };
        // Only a deadline of ours is written: the request's own keeps its origin (a default's
        // name, for the message) and an unbounded request with no limit of ours stays unbounded.
        if ours_binds {
            req.ctx_mut().set_deadline(deadline);
        }
        let origin = req.ctx().deadline_origin();

        let record = req.ctx_mut().pick_record_or_insert().clone();
        let expiry = Expiry {
            method: req.method().clone(),
            record,
            allowed: deadline.map_or(self.limit, |d| d.saturating_duration_since(now)),
            attempt_limit: ours_binds && self.scope == Scope::Attempt,
            origin,
        };

        match deadline {
            Some(deadline) if deadline <= now => ResponseFuture::new(None, None, expiry),
            deadline => {
                let sleep = deadline.map(tokio::time::sleep_until);
                ResponseFuture::new(Some(self.inner.call(req)), sleep, expiry)
            }
        }
    }
}

/// What a timed-out call reports: kept from `call` until the deadline passes.
#[derive(Clone)]
pub(crate) struct Expiry {
    method: Method,
    record: PickRecord,
    /// The time the call was given: from `call` to the deadline.
    allowed: Duration,
    /// Whether a per-attempt limit, not the call's deadline, set the deadline.
    attempt_limit: bool,
    /// Whose default set the call's deadline, when one did: `the client's default`.
    origin: Option<&'static str>,
}

impl Expiry {
    pub(crate) fn status(&self) -> Status {
        let what = if self.attempt_limit { "attempt timeout" } else { "deadline" };
        let millis = (self.allowed.as_nanos() + 500_000) / 1_000_000;
        let origin = self.origin.map(|origin| format!(" ({origin})")).unwrap_or_default();
        let message = match self.record.get() {
            Some(endpoint) => format!("{what} of {millis}ms{origin} exceeded calling {} on {endpoint}", self.method),
            None => format!("{what} of {millis}ms{origin} exceeded calling {}", self.method),
        };
        Status::deadline_exceeded(message)
    }
}

impl fmt::Debug for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expiry")
            .field("method", &self.method)
            .field("endpoint", &self.record.get())
            .field("allowed", &self.allowed)
            .field("attempt_limit", &self.attempt_limit)
            .field("origin", &self.origin)
            .finish()
    }
}

#[cfg(test)]
mod tests;
