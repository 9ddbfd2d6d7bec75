use std::sync::Arc;
use std::time::Duration;

use tower::Layer;
use tower::retry::budget::TpsBudget;

use super::{FailMode, Retry, Settings};
use crate::backoff::Backoff;

/// Applies [`Retry`] with a [`FailMode`], a backoff and a retry budget to services.
///
/// The budget is created with the layer and shared by every service it wraps and all their
/// clones: build one layer per client, or pass the same [`budget`](RetryLayer::budget) to several
/// layers to make them draw on one.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use zrpc_core::retry::{FailMode, RetryLayer};
///
/// let layer = RetryLayer::new(FailMode::Failover { retries: 2 })
///     .initial_backoff(Duration::from_millis(20))
///     .max_backoff(Duration::from_millis(500));
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct RetryLayer {
    settings: Settings,
}

impl RetryLayer {
    /// A layer for `mode` with the default backoff (10 ms initial ceiling, 1 s cap) and a fresh
    /// default budget (tower's: deposits count for 10 s, 10 retries a second allowed regardless,
    /// plus retries up to 20% of calls).
    pub fn new(mode: FailMode) -> RetryLayer {
        RetryLayer {
            settings: Settings {
                mode,
                backoff: Backoff::new(Duration::from_millis(10), Duration::from_secs(1)),
                budget: Some(Arc::new(TpsBudget::default())),
                seed: None,
            },
        }
    }

    /// Sets the ceiling of the first backoff; each further retry doubles it up to
    /// [`max_backoff`](RetryLayer::max_backoff). Zero retries at once.
    pub fn initial_backoff(mut self, initial: Duration) -> RetryLayer {
        self.settings.backoff.initial = initial;
        self
    }

    /// Sets the largest backoff ceiling.
    pub fn max_backoff(mut self, max: Duration) -> RetryLayer {
        self.settings.backoff.max = max;
        self
    }

    /// Draws retries (and backups) from `budget`, shared with whoever else holds it.
    ///
    /// Build one with [`TpsBudget::new`]`(ttl, min_per_sec, retry_percent)`.
    pub fn budget(mut self, budget: Arc<TpsBudget>) -> RetryLayer {
        self.settings.budget = Some(budget);
        self
    }

    /// Retries without a budget: only the fail mode's count limits them.
    pub fn without_budget(mut self) -> RetryLayer {
        self.settings.budget = None;
        self
    }

    /// The fail mode.
    pub fn mode(&self) -> FailMode {
        self.settings.mode
    }

    /// Makes the backoff jitter reproducible: each call draws from a generator seeded with `seed`.
    #[cfg(test)]
    pub(crate) fn with_seed(mut self, seed: u64) -> RetryLayer {
        self.settings.seed = Some(seed);
        self
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::with_settings(inner, self.settings.clone())
    }
}
