//! The breaker's thresholds and timings.

use std::time::Duration;

/// How a [`CircuitBreaker`](super::CircuitBreaker) decides to open, how long it stays open, and
/// how it probes its way closed again. See the [module docs](super) for the state machine.
///
/// Every setter accepts any value: out-of-range values are clamped as each setter says, never
/// rejected, so no configuration makes the breaker panic.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use zrpc_core::breaker::{BreakerConfig, CircuitBreakerLayer};
///
/// let config = BreakerConfig::default()
///     .failure_rate(0.25)
///     .min_calls(50)
///     .cooldown(Duration::from_millis(500))
///     .max_cooldown(Duration::from_secs(10));
/// let layer = CircuitBreakerLayer::new(config).with_name("10.0.0.7:7070");
/// # let _ = layer;
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BreakerConfig {
    pub(crate) window: Duration,
    pub(crate) buckets: u32,
    pub(crate) failure_rate: f64,
    pub(crate) min_calls: u32,
    pub(crate) consecutive_failures: u32,
    pub(crate) cooldown: Duration,
    pub(crate) max_cooldown: Duration,
    pub(crate) probes: u32,
    pub(crate) successes_to_close: u32,
}

/// The most buckets a window may have: more buys no precision worth the memory and the scan.
const MAX_BUCKETS: u32 = 1024;

impl Default for BreakerConfig {
    /// A 10 s window of 10 buckets; open above a 50% failure rate over at least 20 calls, or
    /// after 5 consecutive connect failures; a cool-down of 1 s doubling up to 30 s; 1 probe at a
    /// time, 3 successes to close.
    fn default() -> BreakerConfig {
        BreakerConfig {
            window: Duration::from_secs(10),
            buckets: 10,
            failure_rate: 0.5,
            min_calls: 20,
            consecutive_failures: 5,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(30),
            probes: 1,
            successes_to_close: 3,
        }
    }
}

impl BreakerConfig {
    /// The span of the rolling window over which the failure rate is measured (default 10 s).
    /// A zero span is raised to 1 ms.
    pub fn window(mut self, window: Duration) -> BreakerConfig {
        self.window = window.max(Duration::from_millis(1));
        self
    }

    /// How many buckets the window is split into (default 10): the window moves on by one
    /// bucket at a time, so outcomes age out in steps of `window / buckets`. Clamped to 1..=1024.
    pub fn buckets(mut self, buckets: u32) -> BreakerConfig {
        self.buckets = buckets.clamp(1, MAX_BUCKETS);
        self
    }

    /// The failure rate, from 0 to 1, that the window must *exceed* to open (default 0.5).
    /// Clamped to 0..=1; NaN becomes 1, which never opens on the rate.
    pub fn failure_rate(mut self, rate: f64) -> BreakerConfig {
        self.failure_rate = if rate.is_nan() { 1.0 } else { rate.clamp(0.0, 1.0) };
        self
    }

    /// How many counted outcomes the window must hold before its failure rate can open the
    /// breaker (default 20), so a handful of early failures does not. 0 acts as 1.
    pub fn min_calls(mut self, min_calls: u32) -> BreakerConfig {
        self.min_calls = min_calls.max(1);
        self
    }

    /// How many connect failures in a row open the breaker whatever the window says (default 5);
    /// 0 turns this trigger off.
    pub fn consecutive_failures(mut self, count: u32) -> BreakerConfig {
        self.consecutive_failures = count;
        self
    }

    /// The first cool-down after the breaker opens from closed (default 1 s). Raises
    /// [`max_cooldown`](BreakerConfig::max_cooldown) to match if it was lower.
    pub fn cooldown(mut self, cooldown: Duration) -> BreakerConfig {
        self.cooldown = cooldown;
        self.max_cooldown = self.max_cooldown.max(cooldown);
        self
    }

    /// The longest cool-down, however many probes fail in a row (default 30 s). Raised to
    /// [`cooldown`](BreakerConfig::cooldown) if lower.
    pub fn max_cooldown(mut self, max_cooldown: Duration) -> BreakerConfig {
        self.max_cooldown = max_cooldown.max(self.cooldown);
        self
    }

    /// How many probe calls a half-open breaker lets through at once (default 1). 0 acts as 1.
    pub fn probes(mut self, probes: u32) -> BreakerConfig {
        self.probes = probes.max(1);
        self
    }

    /// How many probe successes in a row close a half-open breaker (default 3). 0 acts as 1.
    pub fn successes_to_close(mut self, successes: u32) -> BreakerConfig {
        self.successes_to_close = successes.max(1);
        self
    }
}
