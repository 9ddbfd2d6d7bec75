//! Capped exponential backoff with full jitter.
//!
//! Before retry `n` (counting from 0) the layer sleeps a duration drawn uniformly from
//! `0..=min(max, initial × 2ⁿ)`: "Full Jitter" in Marc Brooker, "Exponential Backoff And Jitter",
//! AWS Architecture Blog, 2015
//! (<https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>). Of the variants
//! compared there it spreads competing clients best for the least total work, which is what
//! matters when many callers retry against the same struggling cluster at once.

use std::time::Duration;

/// The backoff settings of a [`RetryLayer`](super::RetryLayer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The ceiling before the first retry.
    pub(crate) initial: Duration,
    /// The largest ceiling, however many retries came before.
    pub(crate) max: Duration,
}

impl Backoff {
    pub(crate) const DEFAULT: Backoff = Backoff { initial: Duration::from_millis(10), max: Duration::from_secs(1) };

    /// The ceiling before retry `retry` (from 0): `min(max, initial × 2^retry)`, without overflow.
    pub(crate) fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The sleep before retry `retry`: uniform in `0..=ceiling(retry)`.
    pub(crate) fn delay(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.u64(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let backoff = Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(70) };
        let ceilings: Vec<_> = (0..5).map(|n| backoff.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [10, 20, 40, 70, 70]);
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_millis(70));
        let huge = Backoff { initial: Duration::MAX, max: Duration::MAX };
        assert_eq!(huge.ceiling(40), Duration::MAX);
    }

    #[test]
    fn delays_stay_within_the_ceiling_and_spread_over_it() {
        let backoff = Backoff::DEFAULT;
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<_> = (0..1000).map(|_| backoff.delay(3, &mut rng)).collect();
        let ceiling = backoff.ceiling(3);
        assert!(delays.iter().all(|d| *d <= ceiling));
        assert!(delays.iter().any(|d| *d < ceiling / 4));
        assert!(delays.iter().any(|d| *d > ceiling * 3 / 4));
        assert_eq!(Backoff { initial: Duration::ZERO, max: Duration::ZERO }.delay(2, &mut rng), Duration::ZERO);
    }
}
