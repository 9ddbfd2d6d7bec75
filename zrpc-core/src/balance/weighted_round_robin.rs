//! Smooth weighted round-robin, as nginx balances upstreams.
//!
//! The algorithm is nginx's (`ngx_http_upstream_get_peer` in
//! `src/http/ngx_http_upstream_round_robin.c`, introduced in nginx 1.3.1 as "smooth weighted
//! round-robin balancing"). Every endpoint keeps a *current weight*, starting at 0. For each pick:
//!
//! 1. every candidate's current weight grows by its weight, and `total` is the sum of those
//!    weights;
//! 2. the candidate with the largest current weight is chosen (the first in slice order on a
//!    tie);
//! 3. the chosen one's current weight drops by `total`.
//!
//! Over any `total` consecutive picks on a stable set, each endpoint is chosen exactly `weight`
//! times, and the choices are interleaved rather than bunched: weights 3, 2, 1 for A, B, C give
//! `A B A C B A`, then the same again, where a naive weighted rotation would give `A A A B B C`.
//!
//! The current weights are shared mutable state read and written together, so they live in a
//! `Mutex<Vec<i64>>` in the order of the last endpoint slice, held for one O(n) pass per pick.
//! When the set changes, current weights carry over by address: an endpoint that stays keeps its
//! place in the cycle, a new one starts at 0.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::{Candidates, EndpointView, Pick, PickContext};
use crate::status::Status;

/// Picks endpoints in proportion to their weights, interleaved (nginx's smooth weighted
/// round-robin).
///
/// Over every `Σ weight` consecutive picks on a stable set, each endpoint is chosen exactly
/// `weight` times: weights 3, 2, 1 for A, B, C give `A B A C B A`, repeated. The per-endpoint
/// current weights sit behind a `Mutex`, held for one O(n) pass per pick.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The addresses of the last slice seen, in its order; `current[i]` belongs to
    /// `addresses[i]`.
    addresses: Vec<Box<str>>,
    current: Vec<i64>,
}

impl State {
    fn matches(&self, endpoints: &[EndpointView<'_>]) -> bool {
        self.addresses.len() == endpoints.len()
            && self.addresses.iter().zip(endpoints).all(|(known, endpoint)| **known == *endpoint.address)
    }

    fn resync(&mut self, endpoints: &[EndpointView<'_>]) {
        let carried: HashMap<&str, i64> =
            self.addresses.iter().map(|a| &**a).zip(self.current.iter().copied()).collect();
        let current = endpoints.iter().map(|e| carried.get(e.address).copied().unwrap_or(0)).collect();
        self.current = current;
        self.addresses = endpoints.iter().map(|e| e.address.into()).collect();
    }
}

impl WeightedRoundRobin {
    /// A picker with every current weight at 0.
    pub fn new() -> WeightedRoundRobin {
        WeightedRoundRobin::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while the lock is held, and the weights are valid at every step anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Pick for WeightedRoundRobin {
    fn pick(&self, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>) -> Result<usize, Status> {
        let candidates = Candidates::new(endpoints, ctx)?;
        if let Some(pinned) = candidates.pinned() {
            return Ok(pinned);
        }
        let mut state = self.lock();
        if !state.matches(endpoints) {
            state.resync(endpoints);
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in candidates.iter() {
            let weight = i64::from(endpoints[i].weight);
            total = total.saturating_add(weight);
            state.current[i] = state.current[i].saturating_add(weight);
            if best.is_none_or(|b| state.current[i] > state.current[b]) {
                best = Some(i);
            }
        }
        let chosen = best.unwrap_or(candidates.first());
        state.current[chosen] = state.current[chosen].saturating_sub(total);
        Ok(chosen)
    }

    fn update(&self, endpoints: &[EndpointView<'_>]) {
        let mut state = self.lock();
        if !state.matches(endpoints) {
            state.resync(endpoints);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn sequence(picker: &dyn Pick, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>, n: usize) -> String {
        (0..n).map(|_| picker.pick(endpoints, ctx).map_or("!", |i| endpoints[i].address)).collect()
    }

    fn abc() -> [EndpointView<'static>; 3] {
        [
            EndpointView::new("A").with_weight(3),
            EndpointView::new("B").with_weight(2),
            EndpointView::new("C").with_weight(1),
        ]
    }

    #[test]
    fn weights_3_2_1_give_the_nginx_sequence_and_repeat_it() {
        let picker = WeightedRoundRobin::new();
        assert_eq!(sequence(&picker, &abc(), &PickContext::new(), 6), "ABACBA");
        assert_eq!(sequence(&picker, &abc(), &PickContext::new(), 12), "ABACBAABACBA");
    }

    #[test]
    fn every_cycle_gives_each_endpoint_its_weight() {
        let endpoints = [
            EndpointView::new("a").with_weight(5),
            EndpointView::new("b").with_weight(1),
            EndpointView::new("c").with_weight(0),
            EndpointView::new("d").with_weight(4),
        ];
        let picker = WeightedRoundRobin::new();
        for _ in 0..3 {
            let mut counts = [0; 4];
            for _ in 0..10 {
                counts[picker.pick(&endpoints, &PickContext::new()).expect("eligible")] += 1;
            }
            assert_eq!(counts, [5, 1, 0, 4]);
        }
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        let endpoints = ["A", "B", "C"].map(|a| EndpointView::new(a).with_weight(7));
        assert_eq!(sequence(&WeightedRoundRobin::new(), &endpoints, &PickContext::new(), 6), "ABCABC");
    }

    #[test]
    fn skips_unavailable_and_excluded_endpoints() {
        let mut endpoints = abc();
        endpoints[0].available = false;
        assert_eq!(sequence(&WeightedRoundRobin::new(), &endpoints, &PickContext::new(), 6), "BCBBCB");
        let exclude: [Arc<str>; 1] = ["B".into()];
        let ctx = PickContext::new().with_exclude(&exclude);
        assert_eq!(sequence(&WeightedRoundRobin::new(), &endpoints, &ctx, 3), "CCC");
    }

    #[test]
    fn current_weights_follow_addresses_when_the_set_changes() {
        let picker = WeightedRoundRobin::new();
        assert_eq!(sequence(&picker, &abc(), &PickContext::new(), 2), "AB");
        // The same endpoints in another order, plus a drained one: the current weights follow
        // the addresses, so the cycle completes with A 3, B 2 and C 1 times. (The tie on the
        // third pick now goes to C, which comes first in the new order.)
        let [a, b, c] = abc();
        let reordered = [c, EndpointView::new("D").with_weight(0), a, b];
        picker.update(&reordered);
        assert_eq!(sequence(&picker, &reordered, &PickContext::new(), 4), "CABA");
        // Every weight is back at 0: a full cycle in the new order.
        assert_eq!(sequence(&picker, &reordered, &PickContext::new(), 6), "ABCABA");
    }
}
