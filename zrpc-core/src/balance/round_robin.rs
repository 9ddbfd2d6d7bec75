//! Round-robin balancing: each eligible endpoint in turn.
//!
//! One atomic counter, incremented by every pick, indexes the candidates modulo their number, so
//! with a stable set each endpoint gets every n-th call whatever the number of threads picking.
//! Weights are ignored except that weight 0 drains; use
//! [`WeightedRoundRobin`](super::WeightedRoundRobin) to honour them. When the candidates change
//! (an endpoint goes down, a retry excludes one) the rotation carries on over the new set rather
//! than restarting, so no endpoint is favoured by the change.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Candidates, Drawn, EndpointView, Pick, PickContext, ReadySet};
use crate::status::Status;

/// Picks the eligible endpoints in turn, ignoring weights (but never choosing weight 0).
///
/// One shared atomic counter: with a stable set, each endpoint gets exactly every n-th call,
/// from however many threads.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A picker that starts with the first endpoint.
    pub fn new() -> RoundRobin {
        RoundRobin::default()
    }

    /// A picker that starts at a random position, so that many clients started together do not
    /// all send their first call to the same endpoint.
    pub fn random_start() -> RoundRobin {
        RoundRobin { next: AtomicUsize::new(fastrand::usize(..)) }
    }
}

impl Pick for RoundRobin {
    fn pick(&self, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>) -> Result<usize, Status> {
        let candidates = Candidates::new(endpoints, ctx)?;
        if let Some(pinned) = candidates.pinned() {
            return Ok(pinned);
        }
        // Relaxed: the counter only has to hand out distinct values; wrapping at usize::MAX
        // merely skips a step of the rotation once.
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(candidates.nth(turn))
    }

    fn draw(&self, ready: &ReadySet, ctx: &PickContext<'_>, drawn: &mut Drawn) -> bool {
        ready.draw_in_turn(self.next.fetch_add(1, Ordering::Relaxed), ctx, drawn);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn sequence(picker: &RoundRobin, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>, n: usize) -> String {
        (0..n).map(|_| picker.pick(endpoints, ctx).map_or("!", |i| endpoints[i].address)).collect()
    }

    #[test]
    fn takes_each_endpoint_in_turn() {
        let endpoints = ["A", "B", "C"].map(EndpointView::new);
        assert_eq!(sequence(&RoundRobin::new(), &endpoints, &PickContext::new(), 7), "ABCABCA");
    }

    #[test]
    fn ignores_weights_but_not_weight_zero() {
        let endpoints =
            [EndpointView::new("A").with_weight(5), EndpointView::new("B").with_weight(0), EndpointView::new("C")];
        assert_eq!(sequence(&RoundRobin::new(), &endpoints, &PickContext::new(), 6), "ACACAC");
    }

    #[test]
    fn skips_unavailable_and_excluded_endpoints() {
        let endpoints = [
            EndpointView::new("A"),
            EndpointView::new("B").with_available(false),
            EndpointView::new("C"),
            EndpointView::new("D"),
        ];
        let exclude: [Arc<str>; 1] = ["C".into()];
        let ctx = PickContext::new().with_exclude(&exclude);
        assert_eq!(sequence(&RoundRobin::new(), &endpoints, &ctx, 6), "ADADAD");
    }

    #[test]
    fn revisits_excluded_endpoints_when_nothing_else_is_left() {
        let endpoints = [EndpointView::new("A"), EndpointView::new("B").with_available(false), EndpointView::new("C")];
        let exclude: [Arc<str>; 2] = ["A".into(), "C".into()];
        let ctx = PickContext::new().with_exclude(&exclude);
        assert_eq!(sequence(&RoundRobin::new(), &endpoints, &ctx, 4), "ACAC");
    }

    #[test]
    fn a_pin_wins_over_the_rotation() {
        let endpoints = ["A", "B", "C"].map(EndpointView::new);
        let ctx = PickContext::new().with_pin("C");
        assert_eq!(sequence(&RoundRobin::new(), &endpoints, &ctx, 3), "CCC");
        let gone = PickContext::new().with_pin("Z");
        assert_eq!(sequence(&RoundRobin::new(), &endpoints, &gone, 3), "ABC");
    }
}
