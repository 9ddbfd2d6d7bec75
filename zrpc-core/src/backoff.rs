//! Capped exponential backoff, with the two kinds of jitter zrpc uses.
//!
//! The ceiling before attempt `n` (counting from 0) is `min(max, initial × 2ⁿ)`. What is drawn
//! under it depends on what is backing off:
//!
//! - [`Backoff::full_jitter`], uniform in `0..=ceiling`, for calls retried by the retry layer:
//!   "Full Jitter" in Marc Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog,
//!   2015 (<https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>). Of the
//!   variants compared there it spreads competing clients best for the least total work, which
//!   matters when many callers retry against the same struggling cluster at once.
//! - [`Backoff::near_ceiling`], uniform in `0.8..=1.2 × ceiling`, for reconnecting and for
//!   registry keep-alives: a channel configured to wait a second after a refused connect should
//!   wait about a second, while many clients still do not retry in lockstep.

use std::time::Duration;

/// Capped exponential backoff: `initial`, doubling up to `max`. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// The ceiling before the first retry.
    pub initial: Duration,
    /// The largest ceiling, however many attempts came before.
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max` (at least `initial`).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max: max.max(initial) }
    }

    /// The ceiling before attempt `attempt` (from 0): `min(max, initial × 2^attempt)`, without
    /// overflow.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A delay uniform in `0..=ceiling(attempt)`, for retrying calls.
    pub fn full_jitter(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.u64(0..=ceiling))
    }

    /// A delay uniform in `0.8..=1.2 × ceiling(attempt)`, for reconnecting; at most
    /// `Duration::MAX` (`mul_f64` panics past it, for a backoff of `Duration::MAX`).
    pub fn near_ceiling(&self, attempt: u32) -> Duration {
        let seconds = self.ceiling(attempt).as_secs_f64() * (fastrand::f64() * 0.4 + 0.8);
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(70));
        let ceilings: Vec<_> = (0..5).map(|n| backoff.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [10, 20, 40, 70, 70]);
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_millis(70));
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.ceiling(40), Duration::MAX);
        assert_eq!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).max, Duration::from_secs(2));
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_ceiling() {
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<_> = (0..1000).map(|_| backoff.full_jitter(3, &mut rng)).collect();
        let ceiling = backoff.ceiling(3);
        assert!(delays.iter().all(|d| *d <= ceiling));
        assert!(delays.iter().any(|d| *d < ceiling / 4));
        assert!(delays.iter().any(|d| *d > ceiling * 3 / 4));
        assert_eq!(Backoff::new(Duration::ZERO, Duration::ZERO).full_jitter(2, &mut rng), Duration::ZERO);
    }

    #[test]
    fn near_ceiling_stays_within_a_fifth_of_it() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        for _ in 0..1000 {
            let delay = backoff.near_ceiling(5);
            assert!(delay >= Duration::from_millis(800) && delay <= Duration::from_millis(1200), "{delay:?}");
        }
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert!((0..100).all(|_| huge.near_ceiling(3) >= Duration::MAX.mul_f64(0.79)));
    }
}
