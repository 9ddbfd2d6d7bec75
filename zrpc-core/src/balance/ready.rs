//! What a picker that draws ([`Pick::draw`](super::Pick::draw)) sees of a large set: the
//! endpoints last found eligible, with what does not change between rebuilds (address, weight),
//! and the few it drew.
//!
//! The balancing layer keeps a [`ReadySet`] per endpoint set and rebuilds it in O(n), off the
//! per-call path of all but one caller, when discovery changes the set, when a drawn endpoint
//! turns out to be down, and every [`READY_REFRESH`](super::READY_REFRESH). A pick then costs
//! O(1) (uniform and round-robin draws, an address lookup) or O(log n) (a weighted draw, a
//! consistent-hash lookup), whatever the set's size: the live figures (calls in flight, latency)
//! are read for the drawn endpoints only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use smallvec::SmallVec;

use super::rng::SharedRng;
use super::{EndpointView, ON_STACK, PickContext};

/// The endpoints a balancing layer last found eligible (available, weight above zero), in the
/// order of its set, lent to [`Pick::draw`](super::Pick::draw).
///
/// Positions (`0..len()`) are this set's own; [`index`](ReadySet::index) maps one back to the
/// endpoint's place in the whole set.
///
/// # Examples
///
/// ```
/// use zrpc_core::balance::{EndpointView, ReadySet};
///
/// let endpoints = [
///     EndpointView::new("a").with_weight(3),
///     EndpointView::new("b").with_available(false),
///     EndpointView::new("c"),
/// ];
/// let ready = ReadySet::new(&endpoints);
/// assert_eq!(ready.len(), 2);
/// assert_eq!((ready.address(1), ready.index(1)), ("c", 2));
/// assert_eq!(ready.total_weight(), 4);
/// // Points 0..3 of the total weight fall to "a", point 3 to "c".
/// assert_eq!((ready.by_weight(2), ready.by_weight(3)), (0, 1));
/// assert_eq!(ready.position("c"), Some(1));
/// // Every set built has an id of its own, even with the same endpoints.
/// assert_ne!(ReadySet::new(&endpoints).id(), ready.id());
/// ```
#[derive(Debug, Default)]
pub struct ReadySet {
    /// See [`id`](ReadySet::id); 0 for the empty default set.
    id: u64,
    entries: Vec<Entry>,
    /// `cumulative[i]`: the weights of entries `0..=i` added up. Empty when every weight is the
    /// same, where a uniform draw is a weighted one.
    cumulative: Vec<u64>,
    total_weight: u64,
    /// Built on the first lookup by address (a pinned call, a consistent-hash owner).
    by_address: OnceLock<HashMap<Arc<str>, usize>>,
}

/// The next [`ReadySet::id`]; from 1, since the default set has 0.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
struct Entry {
    address: Arc<str>,
    weight: u32,
    index: usize,
}

impl ReadySet {
    /// The eligible endpoints of `endpoints`, each at its index in the slice.
    pub fn new(endpoints: &[EndpointView<'_>]) -> ReadySet {
        let eligible = endpoints.iter().enumerate().filter(|(_, e)| e.is_eligible());
        ReadySet::from_eligible(eligible.map(|(index, e)| (Arc::from(e.address), e.weight, index)))
    }

    /// A set of `(address, weight, index in the whole set)`, every one eligible.
    pub(crate) fn from_eligible(eligible: impl Iterator<Item = (Arc<str>, u32, usize)>) -> ReadySet {
        let entries: Vec<Entry> = eligible.map(|(address, weight, index)| Entry { address, weight, index }).collect();
        let total_weight = entries.iter().map(|e| u64::from(e.weight)).sum();
        let uniform = entries.windows(2).all(|pair| pair[0].weight == pair[1].weight);
        let cumulative = if uniform {
            Vec::new()
        } else {
            entries
                .iter()
                .scan(0u64, |sum, e| {
                    *sum += u64::from(e.weight);
                    Some(*sum)
                })
                .collect()
        };
        // Relaxed: the id only has to be unique, not ordered with anything else.
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        ReadySet { id, entries, cumulative, total_weight, by_address: OnceLock::new() }
    }

    /// A number that tells this set apart from every other one built in the process (the empty
    /// [`default`](ReadySet::default) sets share 0): two sets with the same id hold the same
    /// endpoints at the same positions. The balancing layer rebuilds its set every
    /// [`READY_REFRESH`](super::READY_REFRESH) and keeps the id when nothing changed. A picker
    /// that derives state from the set it is handed keys that state by the id and derives it
    /// again when the id changes, as [`ConsistentHash`](super::ConsistentHash) does with its
    /// ring of the ready endpoints.
    pub const fn id(&self) -> u64 {
        self.id
    }

    /// Takes `previous`'s id when both hold the same endpoints (address, weight, place in the
    /// whole set) at the same positions: to the pickers a rebuild that found nothing changed is
    /// the same set, and what they derived from it stays.
    pub(crate) fn carry_id(&mut self, previous: &ReadySet) {
        let same = |a: &Entry, b: &Entry| a.address == b.address && a.weight == b.weight && a.index == b.index;
        if self.entries.len() == previous.entries.len()
            && self.entries.iter().zip(&previous.entries).all(|(a, b)| same(a, b))
        {
            self.id = previous.id;
        }
    }

    /// How many endpoints were eligible.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The address of the endpoint at `position`.
    ///
    /// # Panics
    /// If `position` is not below [`len`](ReadySet::len).
    pub fn address(&self, position: usize) -> &str {
        &self.entries[position].address
    }

    /// The weight of the endpoint at `position` (above zero).
    ///
    /// # Panics
    /// If `position` is not below [`len`](ReadySet::len).
    pub fn weight(&self, position: usize) -> u32 {
        self.entries[position].weight
    }

    /// Where the endpoint at `position` sits in the whole set.
    ///
    /// # Panics
    /// If `position` is not below [`len`](ReadySet::len).
    pub fn index(&self, position: usize) -> usize {
        self.entries[position].index
    }

    /// The position of the endpoint at `address`, if it is in the set: O(1), after an O(n) map
    /// built on the first lookup.
    pub fn position(&self, address: &str) -> Option<usize> {
        let by_address = self
            .by_address
            .get_or_init(|| self.entries.iter().enumerate().map(|(i, e)| (e.address.clone(), i)).collect());
        by_address.get(address).copied()
    }

    /// The weights added up.
    pub const fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// The position whose share of the total weight holds `point`: each endpoint owns as many
    /// consecutive points as its weight, in set order. Drawing `point` uniformly below
    /// [`total_weight`](ReadySet::total_weight) draws endpoints in proportion to weight. O(1)
    /// when the weights are equal, else a binary search. A `point` past the total gives the
    /// last position (0 in an empty set).
    pub fn by_weight(&self, point: u64) -> usize {
        let last = self.entries.len().saturating_sub(1);
        if self.cumulative.is_empty() {
            // Equal weights: every endpoint owns `total / len` points.
            let weight = self.entries.first().map_or(1, |e| u64::from(e.weight.max(1)));
            return usize::try_from(point / weight).map_or(last, |position| position.min(last));
        }
        self.cumulative.partition_point(|&sum| sum <= point).min(last)
    }

    /// The positions of the call's exclusions that are in the set, in ascending order: few (a
    /// retry's tried endpoints), found by address.
    fn excluded(&self, ctx: &PickContext<'_>) -> SmallVec<[usize; 4]> {
        if ctx.exclude().is_empty() {
            return SmallVec::new();
        }
        let mut excluded: SmallVec<[usize; 4]> = ctx.exclude().iter().filter_map(|a| self.position(a)).collect();
        excluded.sort_unstable();
        excluded.dedup();
        excluded
    }

    /// The first point of the total weight that the endpoint at `position` owns.
    fn first_point(&self, position: usize) -> u64 {
        match self.cumulative.get(position) {
            Some(&end) => end - u64::from(self.entries[position].weight),
            None => position as u64 * self.entries.first().map_or(0, |e| u64::from(e.weight)),
        }
    }

    /// Draws `count` endpoints uniformly, distinct and none excluded, into `drawn`: all that are
    /// not excluded when there are no more than `count`. Exact: it draws fewer only when fewer
    /// are drawable.
    pub(crate) fn draw_uniform(&self, count: usize, ctx: &PickContext<'_>, rng: &SharedRng, drawn: &mut Drawn) {
        let excluded = self.excluded(ctx);
        let drawable = self.len() - excluded.len();
        // Draw `count` distinct ranks among the drawable ones (Floyd's algorithm: one number
        // per rank, no retries, all reserved at once), then skip the exclusions to find each
        // rank's position.
        let mut ranks: SmallVec<[usize; ON_STACK]> = SmallVec::new();
        if drawable <= count {
            ranks.extend(0..drawable);
        } else {
            let mut rng = rng.reserve(count);
            for top in drawable - count..drawable {
                let rank = rng.index(top + 1);
                ranks.push(if ranks.contains(&rank) { top } else { rank });
            }
        }
        for rank in ranks {
            drawn.push(skip_excluded(rank, &excluded));
        }
    }

    /// Draws one endpoint in proportion to weight, not excluded, into `drawn`; none only when
    /// every endpoint is excluded.
    pub(crate) fn draw_weighted(&self, ctx: &PickContext<'_>, rng: &SharedRng, drawn: &mut Drawn) {
        let excluded = self.excluded(ctx);
        let excluded_weight: u64 = excluded.iter().map(|&p| u64::from(self.entries[p].weight)).sum();
        let drawable_weight = self.total_weight - excluded_weight;
        if drawable_weight == 0 {
            return;
        }
        // A point of the drawable weight, moved past the points the exclusions own (in order,
        // each shift can bring the point over the next exclusion's first point).
        let mut point = rng.below(drawable_weight);
        for &position in &excluded {
            if point >= self.first_point(position) {
                point += u64::from(self.entries[position].weight);
            }
        }
        drawn.push(self.by_weight(point));
    }

    /// Draws the first endpoint from `start` (taken modulo the set's size) on, in set order and
    /// wrapping, that is not excluded; none only when every endpoint is excluded.
    pub(crate) fn draw_in_turn(&self, start: usize, ctx: &PickContext<'_>, drawn: &mut Drawn) {
        let len = self.len();
        if len == 0 {
            return;
        }
        let excluded = self.excluded(ctx);
        // At most `excluded.len()` steps land on exclusions before one does not.
        let turns = (0..=excluded.len().min(len - 1)).map(|step| (start % len + step) % len);
        if let Some(position) = turns.into_iter().find(|p| excluded.binary_search(p).is_err()) {
            drawn.push(position);
        }
    }
}

/// The position of the `rank`-th (from 0) endpoint that is not excluded; `excluded` ascending.
fn skip_excluded(rank: usize, excluded: &[usize]) -> usize {
    let mut position = rank;
    for &skipped in excluded {
        if skipped <= position {
            position += 1;
        }
    }
    position
}

/// The positions in a [`ReadySet`] a [`Pick::draw`](super::Pick::draw) chose, in the order
/// drawn, without repeats; the layer hands the picker's `pick` their live views in this order.
///
/// # Examples
///
/// ```
/// use zrpc_core::balance::Drawn;
///
/// let mut drawn = Drawn::new();
/// assert!(drawn.push(4));
/// assert!(!drawn.push(4), "drawn already");
/// assert!(drawn.push(1));
/// assert_eq!(drawn.positions(), [4, 1]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Drawn {
    positions: SmallVec<[usize; ON_STACK]>,
}

impl Drawn {
    /// Nothing drawn.
    pub fn new() -> Drawn {
        Drawn::default()
    }

    /// Adds `position` unless it is drawn already; whether it was added.
    pub fn push(&mut self, position: usize) -> bool {
        if self.positions.contains(&position) {
            return false;
        }
        self.positions.push(position);
        true
    }

    /// How many are drawn.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The positions, in the order drawn.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// Empties it, for the next pick.
    pub fn clear(&mut self) {
        self.positions.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views(weights: &[u32]) -> Vec<EndpointView<'static>> {
        const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
        weights.iter().zip(NAMES).map(|(&w, name)| EndpointView::new(name).with_weight(w)).collect()
    }

    #[test]
    fn a_rebuild_with_the_same_endpoints_keeps_the_id() {
        let first = ReadySet::new(&views(&[1, 2, 3]));
        let mut same = ReadySet::new(&views(&[1, 2, 3]));
        same.carry_id(&first);
        assert_eq!(same.id(), first.id());
        let mut reweighted = ReadySet::new(&views(&[1, 2, 4]));
        reweighted.carry_id(&first);
        assert_ne!(reweighted.id(), first.id(), "a weight changed");
        let mut one_down = views(&[1, 2, 3]);
        one_down[1].available = false;
        let mut smaller = ReadySet::new(&one_down);
        smaller.carry_id(&first);
        assert_ne!(smaller.id(), first.id(), "an endpoint left the set");
    }

    #[test]
    fn by_weight_gives_each_endpoint_as_many_points_as_its_weight() {
        for weights in [&[1, 1, 1][..], &[7, 7], &[3, 0, 1, 2], &[1, 5, 1, 1, 9], &[u32::MAX, 1]] {
            let endpoints = views(weights);
            let ready = ReadySet::new(&endpoints);
            let eligible: Vec<u32> = weights.iter().copied().filter(|&w| w > 0).collect();
            assert_eq!(ready.total_weight(), eligible.iter().map(|&w| u64::from(w)).sum::<u64>());
            // Walk the boundaries: point p belongs to the endpoint whose cumulative range holds it.
            let mut start = 0u64;
            for (position, &weight) in eligible.iter().enumerate() {
                let end = start + u64::from(weight);
                assert_eq!(ready.by_weight(start), position, "{weights:?} at {start}");
                assert_eq!(ready.by_weight(end - 1), position, "{weights:?} at {}", end - 1);
                start = end;
            }
            assert_eq!(ready.by_weight(u64::MAX), eligible.len() - 1, "past the end: the last");
        }
        assert_eq!(ReadySet::new(&[]).by_weight(5), 0, "an empty set does not panic");
    }

    #[test]
    fn the_draws_skip_exclusions_and_never_repeat() {
        let endpoints = views(&[1, 2, 3, 4, 5, 6]);
        let ready = ReadySet::new(&endpoints);
        let exclude: [Arc<str>; 2] = ["b".into(), "e".into()];
        let ctx = PickContext::new().with_exclude(&exclude);
        let rng = SharedRng::with_seed(5);
        for _ in 0..500 {
            let mut drawn = Drawn::new();
            ready.draw_uniform(3, &ctx, &rng, &mut drawn);
            ready.draw_weighted(&ctx, &rng, &mut drawn);
            for &position in drawn.positions() {
                assert!(!ctx.is_excluded(ready.address(position)), "{drawn:?}");
            }
            let mut distinct = drawn.positions().to_vec();
            distinct.dedup();
            assert_eq!(distinct.len(), drawn.len());
        }
        let mut drawn = Drawn::new();
        ready.draw_in_turn(1, &ctx, &mut drawn);
        assert_eq!(drawn.positions(), [2], "b is excluded: its turn passes to c");
    }

    #[test]
    fn draws_around_exclusions_keep_their_proportions() {
        let endpoints = views(&[3, 1, 2, 4, 1]);
        let ready = ReadySet::new(&endpoints);
        let exclude: [Arc<str>; 2] = ["c".into(), "e".into()];
        let ctx = PickContext::new().with_exclude(&exclude);
        let rng = SharedRng::with_seed(11);
        let (mut weighted, mut uniform) = ([0usize; 5], [0usize; 5]);
        for _ in 0..16_000 {
            let mut drawn = Drawn::new();
            ready.draw_weighted(&ctx, &rng, &mut drawn);
            weighted[drawn.positions()[0]] += 1;
            drawn.clear();
            ready.draw_uniform(2, &ctx, &rng, &mut drawn);
            assert_eq!(drawn.len(), 2, "two of the three drawable");
            for &position in drawn.positions() {
                uniform[position] += 1;
            }
        }
        // a, b and d share the draws 3 : 1 : 4 by weight, and each is in 2 of 3 uniform pairs.
        let near = |count: usize, expected: usize| count.abs_diff(expected) * 20 < expected;
        assert!(near(weighted[0], 6_000) && near(weighted[1], 2_000) && near(weighted[3], 8_000), "{weighted:?}");
        assert!([0, 1, 3].iter().all(|&p| near(uniform[p], 10_667)), "{uniform:?}");
        assert_eq!((weighted[2], weighted[4], uniform[2], uniform[4]), (0, 0, 0, 0));
    }

    #[test]
    fn a_set_with_every_endpoint_excluded_draws_nothing() {
        let endpoints = views(&[1, 1]);
        let ready = ReadySet::new(&endpoints);
        let exclude: [Arc<str>; 2] = ["a".into(), "b".into()];
        let ctx = PickContext::new().with_exclude(&exclude);
        let rng = SharedRng::with_seed(1);
        let mut drawn = Drawn::new();
        ready.draw_uniform(2, &ctx, &rng, &mut drawn);
        ready.draw_weighted(&ctx, &rng, &mut drawn);
        ready.draw_in_turn(0, &ctx, &mut drawn);
        assert!(drawn.is_empty(), "{drawn:?}");
    }
}
