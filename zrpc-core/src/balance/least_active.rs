//! Least-active balancing: the endpoint with the fewest calls in flight.
//!
//! As Dubbo's `LeastActiveLoadBalance`: every pick scans the candidates for the lowest in-flight
//! count and, among those that share it, chooses at random in proportion to weight (uniformly
//! when the weights are equal), so that idle endpoints are not always taken in slice order. It
//! reacts to load at once but ignores latency; with many clients all seeing the same idle
//! endpoint it can herd, which [`P2c`](super::P2c) avoids.
//!
//! Under a balancing layer, a set of up to [`LeastActive::DRAWN`] eligible endpoints is scanned
//! whole, as Dubbo does. A larger one is not: the pick takes the least loaded of `DRAWN`
//! endpoints drawn at random from it ([`Pick::draw`]), so it costs the same at 2,000 endpoints
//! as at 16. That is the "power of d choices" (Mitzenmacher, 2001): the best of 16 random
//! endpoints ranks on average among the least loaded 6%, which is what least-active is for,
//! without a scan of the whole set on every call.

use super::random::weighted;
use super::rng::SharedRng;
use super::{Candidates, Drawn, EndpointView, Pick, PickContext, ReadySet};
use crate::status::Status;

/// Picks the endpoint with the fewest calls in flight; ties by weighted random.
///
/// As Dubbo's `LeastActiveLoadBalance`, exactly for sets of up to [`DRAWN`](Self::DRAWN)
/// eligible endpoints. Over larger sets, under a balancing layer, the least loaded of `DRAWN`
/// drawn at random: the "power of d choices" (Mitzenmacher, 2001). The best of 16 random
/// endpoints ranks on average among the least loaded 6% (1/17), and among the least loaded
/// fifth with probability 97% (1 − 0.8¹⁶), without a scan of the whole set on every call.
#[derive(Debug)]
pub struct LeastActive {
    rng: SharedRng,
}

impl LeastActive {
    /// How many endpoints a pick under a balancing layer looks at, at most.
    pub const DRAWN: usize = super::ON_STACK;

    /// A picker seeded from fastrand.
    pub fn new() -> LeastActive {
        LeastActive { rng: SharedRng::new() }
    }

    /// A picker whose tie-breaking, for the same inputs from one thread, depends only on `seed`.
    pub fn with_seed(seed: u64) -> LeastActive {
        LeastActive { rng: SharedRng::with_seed(seed) }
    }
}

impl Default for LeastActive {
    fn default() -> LeastActive {
        LeastActive::new()
    }
}

impl Pick for LeastActive {
    fn pick(&self, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>) -> Result<usize, Status> {
        let candidates = Candidates::new(endpoints, ctx)?;
        if let Some(pinned) = candidates.pinned() {
            return Ok(pinned);
        }
        let fewest = candidates.iter().map(|i| endpoints[i].in_flight).min().unwrap_or(0);
        let idlest = candidates.iter().filter(move |&i| endpoints[i].in_flight == fewest);
        Ok(weighted(&self.rng, endpoints, idlest))
    }

    fn draw(&self, ready: &ReadySet, ctx: &PickContext<'_>, drawn: &mut Drawn) -> bool {
        ready.draw_uniform(LeastActive::DRAWN, ctx, &self.rng, drawn);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(picker: &LeastActive, endpoints: &[EndpointView<'_>], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; endpoints.len()];
        for _ in 0..picks {
            counts[picker.pick(endpoints, &PickContext::new()).expect("eligible endpoints")] += 1;
        }
        counts
    }

    #[test]
    fn picks_the_fewest_in_flight_and_spreads_ties() {
        let endpoints = [
            EndpointView::new("a").with_in_flight(3),
            EndpointView::new("b").with_in_flight(1),
            EndpointView::new("c").with_in_flight(1),
            EndpointView::new("d").with_in_flight(5),
        ];
        let counts = counts(&LeastActive::with_seed(1), &endpoints, 10_000);
        assert_eq!((counts[0], counts[3]), (0, 0), "{counts:?}");
        assert!((4_600..5_400).contains(&counts[1]), "{counts:?}");
        assert!((4_600..5_400).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn ties_follow_weights() {
        let endpoints = [EndpointView::new("a").with_weight(1), EndpointView::new("b").with_weight(3)];
        let counts = counts(&LeastActive::with_seed(2), &endpoints, 10_000);
        assert!((2_250..2_750).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn an_idle_endpoint_wins_even_if_unavailable_ones_are_idler() {
        let endpoints = [
            EndpointView::new("a").with_in_flight(0).with_available(false),
            EndpointView::new("b").with_in_flight(4),
            EndpointView::new("c").with_in_flight(0).with_weight(0),
            EndpointView::new("d").with_in_flight(2),
        ];
        assert_eq!(counts(&LeastActive::with_seed(3), &endpoints, 100), [0, 0, 0, 100]);
    }
}
