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
//! Done as written, a pick is a pass over every endpoint. [`Pick::pick`], handed a slice of
//! endpoints, does that: the current weights live in a `Mutex<Vec<i64>>` in the order of the
//! last slice, and when the set changes they carry over by address (an endpoint that stays keeps
//! its place in the cycle, a new one starts at 0).
//!
//! Under a balancing layer the picker [draws](Pick::draw) instead, from the ready set, and a pick
//! costs a pass over the set's *distinct weights*, not its endpoints: a handful in a real
//! cluster, however many endpoints share each. It gives the same sequence, because endpoints of
//! equal weight move together: all of them gain the same weight every pick, so the one chosen,
//! `total` below the others, is not chosen again before they are. Between two picks of one
//! endpoint every other endpoint of its weight is picked once, in set order, and their current
//! weights take at most two values: the group's, for those not yet chosen in its round, and the
//! group's less `total`, for those chosen. A `Group` keeps that one current weight and the
//! position of the next member in its round: a pick adds each group's weight to its current
//! weight, chooses the group with the largest (on a tie, the one whose next member comes first
//! in the set, as nginx's first in slice order), takes that member, and lowers the group by
//! `total` once its round is complete. A test checks the two against each other on random sets.
//!
//! The groups are built, at O(n), for each ready set (by [`ReadySet::id`], which a rebuild that
//! finds the same endpoints keeps), and the cycle starts anew. A call that excludes an endpoint
//! of the ready set (a retry) is picked over the whole set.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{Candidates, Drawn, EndpointView, Pick, PickContext, ReadySet};
use crate::status::Status;

/// Picks endpoints in proportion to their weights, interleaved (nginx's smooth weighted
/// round-robin).
///
/// Over every `Σ weight` consecutive picks on a stable set, each endpoint is chosen exactly
/// `weight` times: weights 3, 2, 1 for A, B, C give `A B A C B A`, repeated. Under a balancing
/// layer a pick costs a pass over the set's distinct weights (see the module); handed a slice,
/// one over its endpoints. Either holds a `Mutex` for its pass.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    state: Mutex<State>,
    cycle: Mutex<Cycle>,
}

#[derive(Debug, Default)]
struct State {
    /// The addresses of the last slice seen, in its order; `current[i]` belongs to
    /// `addresses[i]`.
    addresses: Vec<Box<str>>,
    current: Vec<i64>,
}

/// The cycle over a ready set, by groups of equal weight (see the module).
#[derive(Debug, Default)]
struct Cycle {
    /// The [`ReadySet::id`] the groups were built for.
    set: u64,
    groups: Vec<Group>,
    /// The weights of all endpoints added up: what a chosen endpoint's current weight drops by.
    total: i64,
}

/// The endpoints of one weight.
#[derive(Debug)]
struct Group {
    weight: i64,
    /// The current weight of the members not yet chosen in this round; those chosen are
    /// `total` below it.
    current: i64,
    /// Positions in the ready set, ascending.
    members: Vec<usize>,
    /// The index in `members` of the next one to choose.
    next: usize,
}

impl Group {
    /// What a pick chooses the largest of: the current weight, then the earlier next member.
    fn rank(&self) -> (i64, Reverse<usize>) {
        (self.current, Reverse(self.members[self.next]))
    }
}

impl Cycle {
    /// A new cycle over `ready`.
    fn follow(&mut self, ready: &ReadySet) {
        self.set = ready.id();
        let mut by_weight: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for p in 0..ready.len() {
            by_weight.entry(ready.weight(p)).or_default().push(p);
        }
        self.groups = by_weight
            .into_iter()
            .map(|(weight, members)| Group { weight: i64::from(weight), current: 0, members, next: 0 })
            .collect();
        self.total = i64::try_from(ready.total_weight()).unwrap_or(i64::MAX);
    }

    /// The next position of the cycle; `None` for an empty set.
    fn next(&mut self) -> Option<usize> {
        let mut best: Option<usize> = None;
        for g in 0..self.groups.len() {
            let group = &mut self.groups[g];
            group.current = group.current.saturating_add(group.weight);
            if best.is_none_or(|b| self.groups[g].rank() > self.groups[b].rank()) {
                best = Some(g);
            }
        }
        let group = &mut self.groups[best?];
        let chosen = group.members[group.next];
        group.next += 1;
        if group.next == group.members.len() {
            group.next = 0;
            group.current = group.current.saturating_sub(self.total);
        }
        Some(chosen)
    }
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

    fn lock(&self) -> MutexGuard<'_, State> {
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

    fn draw(&self, ready: &ReadySet, ctx: &PickContext<'_>, drawn: &mut Drawn) -> bool {
        if ctx.exclude().iter().any(|address| ready.position(address).is_some()) {
            // The cycle has no way to leave an endpoint out of one pick: the whole set's pick does.
            return false;
        }
        // As `lock`: every step leaves the groups valid.
        let mut cycle = self.cycle.lock().unwrap_or_else(PoisonError::into_inner);
        if cycle.set != ready.id() {
            cycle.follow(ready);
        }
        if let Some(position) = cycle.next() {
            drawn.push(position);
        }
        true
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

    /// `n` draws from `ready`, as the addresses drawn.
    fn drawn(picker: &WeightedRoundRobin, ready: &ReadySet, n: usize) -> String {
        (0..n)
            .map(|_| {
                let mut drawn = Drawn::new();
                assert!(picker.draw(ready, &PickContext::new(), &mut drawn), "draws");
                drawn.positions().first().map_or("!".to_owned(), |&p| ready.address(p).to_owned())
            })
            .collect()
    }

    #[test]
    fn draws_follow_the_sequence_of_the_whole_set_s_pick() {
        let mut rng = fastrand::Rng::with_seed(0x7777_7272);
        let names: Vec<String> = (0..60).map(|i| format!("{i:02}")).collect();
        for round in 0..200 {
            // Few distinct weights, many endpoints sharing each, as in a cluster; u32::MAX too.
            let weights = [1, 2, 3, 5, 100, u32::MAX];
            let weights = &weights[..rng.usize(1..=weights.len())];
            let endpoints: Vec<EndpointView<'_>> = names[..rng.usize(1..=names.len())]
                .iter()
                .map(|a| EndpointView::new(a).with_weight(*rng.choice(weights).unwrap_or(&1)))
                .collect();
            let ready = ReadySet::new(&endpoints);
            let whole = WeightedRoundRobin::new();
            let cycle = WeightedRoundRobin::new();
            // Three cycles of the smaller sets, a few hundred picks of the others.
            let picks = usize::try_from(ready.total_weight().min(300)).unwrap_or(300) * 3;
            let expected = sequence(&whole, &endpoints, &PickContext::new(), picks);
            assert_eq!(drawn(&cycle, &ready, picks), expected, "round {round}: {endpoints:?}");
        }
    }

    #[test]
    fn a_pick_under_a_layer_passes_over_the_distinct_weights() {
        let names: Vec<String> = (0..2_000).map(|i| format!("e{i}")).collect();
        let endpoints: Vec<EndpointView<'_>> =
            names.iter().enumerate().map(|(i, a)| EndpointView::new(a).with_weight(1 + (i % 2) as u32)).collect();
        let ready = ReadySet::new(&endpoints);
        let picker = WeightedRoundRobin::new();
        let mut counts = vec![0u32; endpoints.len()];
        for _ in 0..3_000 {
            let mut drawn = Drawn::new();
            assert!(picker.draw(&ready, &PickContext::new(), &mut drawn));
            counts[ready.index(drawn.positions()[0])] += 1;
        }
        // One cycle: each endpoint its weight, from two groups rather than 2,000 current weights.
        assert!(counts.iter().zip(&endpoints).all(|(&count, e)| count == e.weight), "{counts:?}");
        assert_eq!(picker.cycle.lock().expect("not poisoned").groups.len(), 2);
    }

    #[test]
    fn a_rebuilt_ready_set_carries_on_the_cycle_and_a_changed_one_starts_anew() {
        let picker = WeightedRoundRobin::new();
        let first = ReadySet::new(&abc());
        assert_eq!(drawn(&picker, &first, 2), "AB");
        // A new ready set of the same endpoints, as the layer rebuilds one every READY_REFRESH.
        let mut rebuilt = ReadySet::new(&abc());
        rebuilt.carry_id(&first);
        assert_eq!(drawn(&picker, &rebuilt, 4), "ACBA");
        assert_eq!(drawn(&picker, &rebuilt, 1), "A");
        // C's weight changed: a new cycle over the new weights.
        let [a, b, _] = abc();
        let changed = [a, b, EndpointView::new("C").with_weight(3)];
        assert_eq!(drawn(&picker, &ReadySet::new(&changed), 8), "ACBACBAC");
    }

    #[test]
    fn a_retry_that_excludes_a_ready_endpoint_is_picked_over_the_whole_set() {
        let ready = ReadySet::new(&abc());
        let tried: [Arc<str>; 1] = ["B".into()];
        let mut drawn = Drawn::new();
        assert!(!WeightedRoundRobin::new().draw(&ready, &PickContext::new().with_exclude(&tried), &mut drawn));
        assert!(drawn.is_empty());
        // An exclusion the ready set does not hold leaves nothing out.
        let gone: [Arc<str>; 1] = ["Z".into()];
        assert!(WeightedRoundRobin::new().draw(&ready, &PickContext::new().with_exclude(&gone), &mut drawn));
        assert_eq!(drawn.positions(), [0]);
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
