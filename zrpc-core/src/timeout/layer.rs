use std::time::Duration;

use tower::Layer;

use super::{Scope, Timeout};

/// Applies [`Timeout`] to services: a whole-call timeout ([`TimeoutLayer::new`], above the retry
/// layer) or a per-attempt one ([`TimeoutLayer::per_attempt`], below it).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use zrpc_core::retry::{FailMode, RetryLayer};
/// use zrpc_core::timeout::TimeoutLayer;
///
/// // From the caller inward: 2 s for the whole call, up to 3 attempts of at most 500 ms each.
/// let stack = tower::ServiceBuilder::new()
///     .layer(TimeoutLayer::new(Duration::from_secs(2)))
///     .layer(RetryLayer::new(FailMode::Failover { retries: 2 }))
///     .layer(TimeoutLayer::per_attempt(Duration::from_millis(500)));
/// # let _ = stack;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutLayer {
    limit: Duration,
    scope: Scope,
}

impl TimeoutLayer {
    /// A whole-call timeout: each call's deadline becomes the earlier of its own and `timeout`
    /// from now. Place it above the retry layer, so that it bounds every attempt and backoff.
    pub const fn new(timeout: Duration) -> TimeoutLayer {
        TimeoutLayer { limit: timeout, scope: Scope::Call }
    }

    /// A per-attempt timeout: each attempt's deadline becomes the earlier of the call's deadline
    /// and `timeout` from now. Place it below the retry layer, which then retries an attempt
    /// that timed out (idempotent methods only) while the call's own deadline has not passed.
    pub const fn per_attempt(timeout: Duration) -> TimeoutLayer {
        TimeoutLayer { limit: timeout, scope: Scope::Attempt }
    }

    /// The configured timeout.
    pub const fn timeout(&self) -> Duration {
        self.limit
    }

    /// Whether this is a per-attempt timeout.
    pub const fn is_per_attempt(&self) -> bool {
        matches!(self.scope, Scope::Attempt)
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::with_scope(inner, self.limit, self.scope)
    }
}
