//! Power of two choices on in-flight calls × latency: the default balancer.
//!
//! Each pick draws two distinct candidates at random and takes the one with the lower cost
//! (Mitzenmacher, "The power of two choices in randomized load balancing", IEEE TPDS 2001:
//! choosing the less loaded of two random bins shrinks the maximum load from
//! `Θ(log n / log log n)` to `Θ(log log n)`, with no shared state). The cost is Finagle's
//! (`Balancers.p2cPeakEwma`, from Twitter's Finagle, also used by Linkerd):
//!
//! ```text
//! cost = (in_flight + 1) × latency_ewma / weight
//! ```
//!
//! so an endpoint that is slow, or already busy, is chosen less, and the `+ 1` keeps an idle but
//! slow endpoint costlier than an idle fast one. The layer maintains the EWMA, peak-sensitive as
//! Finagle's: it jumps up to a slow response at once and decays slowly, so a degrading endpoint
//! sheds load before its average catches up.
//!
//! An endpoint with no latency yet (EWMA 0, typically just connected) is costed at the mean of
//! the candidates that have one, not at 0, which would flood it, nor at a large penalty, which
//! would starve it: it competes on its in-flight count. When no candidate has a latency yet all
//! are costed equally and the in-flight counts decide. Dividing by the weight lets discovery's
//! weights steer the default balancer too; equal weights cancel out.
//!
//! Picking among random pairs rather than always taking the global minimum avoids herding: many
//! clients with slightly stale views do not all pile onto the one endpoint that looked idlest.

use super::rng::SharedRng;
use super::{Candidates, Drawn, EndpointView, Pick, PickContext, ReadySet};
use crate::status::Status;

/// The latency assumed when no candidate has one; any constant gives the same choices.
const UNKNOWN_LATENCY_NS: u64 = 1_000_000;

/// Picks the cheaper of two random endpoints by (in-flight + 1) × latency EWMA ÷ weight; the
/// default balancer.
///
/// Mitzenmacher's power of two choices with Finagle's peak-EWMA cost. An endpoint without a
/// latency yet is costed at the mean of those that have one.
#[derive(Debug)]
pub struct P2c {
    rng: SharedRng,
}

impl P2c {
    /// A picker seeded from fastrand.
    pub fn new() -> P2c {
        P2c { rng: SharedRng::new() }
    }

    /// A picker whose choices, for the same inputs from one thread, depend only on `seed`.
    pub fn with_seed(seed: u64) -> P2c {
        P2c { rng: SharedRng::with_seed(seed) }
    }
}

impl Default for P2c {
    fn default() -> P2c {
        P2c::new()
    }
}

impl Pick for P2c {
    fn pick(&self, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>) -> Result<usize, Status> {
        let candidates = Candidates::new(endpoints, ctx)?;
        if let Some(pinned) = candidates.pinned() {
            return Ok(pinned);
        }
        let n = candidates.count();
        if n == 1 {
            return Ok(candidates.first());
        }
        let a = self.rng.index(n);
        // A second draw from the n - 1 others, so the two are distinct.
        let mut b = self.rng.index(n - 1);
        if b >= a {
            b += 1;
        }
        let (a, b) = (candidates.nth(a), candidates.nth(b));
        let (ea, eb) = (&endpoints[a], &endpoints[b]);
        let unknown =
            if ea.latency_ewma_ns == 0 || eb.latency_ewma_ns == 0 { mean_latency(endpoints, &candidates) } else { 0 };
        // On a tie the first draw wins, which is itself uniformly random.
        Ok(if cost(eb, unknown) < cost(ea, unknown) { b } else { a })
    }

    /// Two: the balancing layer draws the pair, so a pick reads two endpoints whatever the
    /// set's size. The mean latency that stands in for an unknown one is then the pair's.
    fn draw(&self, ready: &ReadySet, ctx: &PickContext<'_>, drawn: &mut Drawn) -> bool {
        ready.draw_uniform(2, ctx, &self.rng, drawn);
        true
    }
}

/// The endpoint's cost; `unknown` stands in for a latency of 0.
fn cost(endpoint: &EndpointView<'_>, unknown: u64) -> f64 {
    let latency = if endpoint.latency_ewma_ns == 0 { unknown } else { endpoint.latency_ewma_ns };
    // f64 keeps the product of two u64s and a division by the weight (never 0 for a candidate)
    // free of overflow; its 53-bit mantissa is ample to rank costs.
    (endpoint.in_flight as f64 + 1.0) * latency as f64 / f64::from(endpoint.weight.max(1))
}

/// The mean latency of the candidates that have one, or a constant when none has.
fn mean_latency(endpoints: &[EndpointView<'_>], candidates: &Candidates<'_>) -> u64 {
    let (sum, known) = candidates
        .iter()
        .map(|i| endpoints[i].latency_ewma_ns)
        .filter(|&ns| ns > 0)
        .fold((0u128, 0u128), |(sum, known), ns| (sum + u128::from(ns), known + 1));
    // The mean of u64s fits in a u64; None only when no latency is known.
    sum.checked_div(known).map_or(UNKNOWN_LATENCY_NS, |mean| u64::try_from(mean).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    const MS: u64 = 1_000_000;

    fn shares(picker: &P2c, endpoints: &[EndpointView<'_>], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; endpoints.len()];
        for _ in 0..picks {
            counts[picker.pick(endpoints, &PickContext::new()).expect("eligible endpoints")] += 1;
        }
        counts
    }

    #[test]
    fn a_slow_endpoint_gets_clearly_less_traffic_under_load() {
        // Three endpoints, the third ten times slower. Calls arrive 20 per tick; each occupies
        // its endpoint for its latency in ticks; the EWMA is the steady latency.
        let latency_ticks = [1u64, 1, 10];
        let mut in_flight = [0u64; 3];
        let mut completions: VecDeque<Vec<usize>> = VecDeque::new();
        let mut counts = [0usize; 3];
        let picker = P2c::with_seed(0x9c2);
        for _tick in 0..500 {
            if let Some(done) = completions.pop_front() {
                for i in done {
                    in_flight[i] -= 1;
                }
            }
            for _ in 0..20 {
                let views: Vec<EndpointView<'_>> = ["fast-1", "fast-2", "slow"]
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        EndpointView::new(a).with_in_flight(in_flight[i]).with_latency_ewma_ns(latency_ticks[i] * MS)
                    })
                    .collect();
                let i = picker.pick(&views, &PickContext::new()).expect("eligible endpoints");
                counts[i] += 1;
                in_flight[i] += 1;
                let due = latency_ticks[i] as usize - 1;
                if completions.len() <= due {
                    completions.resize(due + 1, Vec::new());
                }
                completions[due].push(i);
            }
        }
        let total: usize = counts.iter().sum();
        assert_eq!(total, 10_000);
        let slow = counts[2] as f64 / total as f64;
        assert!(slow < 0.20, "slow endpoint got {counts:?}");
        assert!(counts[2] > 0, "under load the slow endpoint still takes overflow: {counts:?}");
        assert!(counts[0].abs_diff(counts[1]) < 600, "the fast ones share evenly: {counts:?}");
    }

    #[test]
    fn the_costliest_of_three_is_never_chosen() {
        let slow = [
            EndpointView::new("a").with_latency_ewma_ns(MS),
            EndpointView::new("b").with_latency_ewma_ns(MS),
            EndpointView::new("c").with_latency_ewma_ns(10 * MS),
        ];
        let counts = shares(&P2c::with_seed(1), &slow, 10_000);
        assert_eq!(counts[2], 0, "{counts:?}");
        assert!(counts[0].abs_diff(counts[1]) < 400, "{counts:?}");

        let busy = [
            EndpointView::new("a").with_latency_ewma_ns(MS),
            EndpointView::new("b").with_latency_ewma_ns(MS).with_in_flight(8),
            EndpointView::new("c").with_latency_ewma_ns(MS).with_in_flight(1),
        ];
        assert_eq!(shares(&P2c::with_seed(2), &busy, 1_000)[1], 0);
    }

    #[test]
    fn an_endpoint_without_latency_competes_at_the_mean() {
        let endpoints = [
            EndpointView::new("old-1").with_latency_ewma_ns(MS),
            EndpointView::new("old-2").with_latency_ewma_ns(3 * MS),
            EndpointView::new("new"),
        ];
        // The newcomer is costed at the 2 ms mean: of the three equally likely pairs, old-1 wins
        // two and the newcomer one (against old-2); costed at 0 it would win two.
        let counts = shares(&P2c::with_seed(3), &endpoints, 9_000);
        assert!((2_600..3_400).contains(&counts[2]), "{counts:?}");
        assert!((5_600..6_400).contains(&counts[0]), "{counts:?}");
        assert_eq!(counts[1], 0, "{counts:?}");
    }

    #[test]
    fn weight_divides_the_cost() {
        let endpoints = [
            EndpointView::new("small").with_latency_ewma_ns(MS).with_in_flight(1),
            EndpointView::new("big").with_latency_ewma_ns(MS).with_in_flight(2).with_weight(4),
        ];
        // 2 ms for "small" against 3 ms / 4 for "big".
        assert_eq!(shares(&P2c::with_seed(4), &endpoints, 100), [0, 100]);
    }

    #[test]
    fn a_single_candidate_is_chosen_without_drawing() {
        let endpoints = [EndpointView::new("a").with_available(false), EndpointView::new("b")];
        assert_eq!(shares(&P2c::with_seed(5), &endpoints, 10), [0, 10]);
    }
}
