//! Random balancing, in proportion to weight.
//!
//! Each pick draws `r` uniformly from `0..W`, where `W` is the sum of the candidates' weights,
//! and takes the candidate whose cumulative-weight interval holds `r`: an endpoint of weight 3
//! gets three times the calls of one of weight 1, and equal weights give a uniform choice. It
//! keeps no state beyond the random source and ignores load, so short bursts can be uneven;
//! [`P2c`](super::P2c) corrects for that, which is why it is the default.

use super::rng::SharedRng;
use super::{Candidates, Drawn, EndpointView, Pick, PickContext, ReadySet};
use crate::status::Status;

/// Picks an eligible endpoint at random, weighted by [`EndpointView::weight`]; uniformly when
/// the weights are equal.
#[derive(Debug)]
pub struct Random {
    rng: SharedRng,
}

impl Random {
    /// A picker seeded from fastrand.
    pub fn new() -> Random {
        Random { rng: SharedRng::new() }
    }

    /// A picker whose choices, for the same inputs from one thread, depend only on `seed`.
    pub fn with_seed(seed: u64) -> Random {
        Random { rng: SharedRng::with_seed(seed) }
    }
}

impl Default for Random {
    fn default() -> Random {
        Random::new()
    }
}

impl Pick for Random {
    fn pick(&self, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>) -> Result<usize, Status> {
        let candidates = Candidates::new(endpoints, ctx)?;
        if let Some(pinned) = candidates.pinned() {
            return Ok(pinned);
        }
        Ok(weighted(&self.rng, endpoints, candidates.iter()))
    }

    fn draw(&self, ready: &ReadySet, ctx: &PickContext<'_>, drawn: &mut Drawn) -> bool {
        ready.draw_weighted(ctx, &self.rng, drawn);
        true
    }
}

/// One of `indexes` (non-empty, each with a non-zero weight) chosen with probability
/// proportional to its weight; uniformly, without summing, when the weights are equal.
pub(crate) fn weighted(
    rng: &SharedRng,
    endpoints: &[EndpointView<'_>],
    indexes: impl Iterator<Item = usize> + Clone,
) -> usize {
    let mut total = 0u64;
    let mut count = 0usize;
    let mut uniform = true;
    let mut first_weight = None;
    for i in indexes.clone() {
        let weight = endpoints[i].weight;
        uniform &= *first_weight.get_or_insert(weight) == weight;
        // At most 2^32 endpoints of weight below 2^32: the sum fits in a u64.
        total += u64::from(weight);
        count += 1;
    }
    if uniform {
        let n = rng.index(count);
        return indexes.clone().nth(n).or_else(|| indexes.clone().next()).unwrap_or(0);
    }
    let mut r = rng.below(total);
    let mut last = 0;
    for i in indexes {
        let weight = u64::from(endpoints[i].weight);
        if r < weight {
            return i;
        }
        r -= weight;
        last = i;
    }
    // Unreachable with r < total; kept so that no input can panic.
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(picker: &dyn Pick, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>, picks: usize) -> Vec<usize> {
        let mut counts = vec![0; endpoints.len()];
        for _ in 0..picks {
            counts[picker.pick(endpoints, ctx).expect("eligible endpoints")] += 1;
        }
        counts
    }

    #[test]
    fn equal_weights_are_uniform() {
        let endpoints = ["a", "b", "c", "d"].map(EndpointView::new);
        let counts = counts(&Random::with_seed(1), &endpoints, &PickContext::new(), 10_000);
        assert!(counts.iter().all(|&c| (2_250..2_750).contains(&c)), "{counts:?}");
    }

    #[test]
    fn weights_set_the_proportions() {
        let endpoints = [
            EndpointView::new("a").with_weight(3),
            EndpointView::new("b").with_weight(1),
            EndpointView::new("c").with_weight(0),
        ];
        let counts = counts(&Random::with_seed(2), &endpoints, &PickContext::new(), 10_000);
        assert!((7_250..7_750).contains(&counts[0]), "{counts:?}");
        assert!((2_250..2_750).contains(&counts[1]), "{counts:?}");
        assert_eq!(counts[2], 0, "weight 0 drains");
    }

    #[test]
    fn the_same_seed_gives_the_same_choices() {
        let endpoints: Vec<_> =
            ["a", "b", "c", "d", "e"].into_iter().zip(1..).map(|(a, w)| EndpointView::new(a).with_weight(w)).collect();
        let run = |seed| {
            let picker = Random::with_seed(seed);
            (0..50).map(|_| picker.pick(&endpoints, &PickContext::new())).collect::<Result<Vec<_>, _>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    #[test]
    fn skips_unavailable_and_excluded_endpoints() {
        let endpoints = [
            EndpointView::new("a").with_available(false),
            EndpointView::new("b").with_weight(5),
            EndpointView::new("c").with_weight(1),
        ];
        let exclude = ["b".into()];
        let ctx = PickContext::new().with_exclude(&exclude);
        assert_eq!(counts(&Random::with_seed(3), &endpoints, &ctx, 200), [0, 0, 200]);
    }
}
