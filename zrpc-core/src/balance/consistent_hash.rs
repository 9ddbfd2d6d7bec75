//! Consistent hashing on a ring of virtual nodes: calls with the same key go to the same
//! endpoint, and a change in the set moves few keys.
//!
//! The scheme is Karger et al.'s ("Consistent hashing and random trees", STOC 1997) as ketama
//! (libketama, 2007) applies it to servers: each endpoint is hashed onto a 64-bit ring at many
//! points, its *virtual nodes*, and a key belongs to the first point at or after the key's own
//! hash, wrapping around. With `n` endpoints each owns about `1/n` of the ring; removing one hands
//! only its keys to the endpoints that follow its points, and no key moves between the others;
//! adding it back restores the old mapping exactly.
//!
//! 1. An endpoint of weight `w` gets `replicas × min(w, 16)` points (160 replicas per unit by
//!    default, as ketama), so its share grows with its weight. The cap bounds the ring's memory
//!    (at most 2,560 points, 40 KiB, per endpoint) whatever weights discovery reports; weights
//!    above 16 count as 16 here.
//! 2. Point `r` of the endpoint at `address` sits at `mix64(fnv1a(address ‖ r as 4 LE bytes))`:
//!    64-bit FNV-1a, then SplitMix64's finaliser for avalanche (FNV alone clusters the points of
//!    similar addresses). Both are written out here, so positions are the same on every run,
//!    platform and build: clients of one service agree on the owner of a key.
//! 3. The key is the context's hash key, else the FNV-1a hash of the method name and payload
//!    ([`PickContext::key`]); it is mixed the same way before lookup, so sequential keys spread
//!    over the ring.
//! 4. A key whose owner is not a candidate (unavailable, drained, or excluded by a retry) goes to
//!    the next point on the ring that is; when the owner returns, so do its keys.
//!
//! The ring is built from the addresses and weights, in [`Pick::update`] or on the first pick that
//! sees a different set, and read under an `RwLock`; a lookup is a binary search.
//!
//! # Under a balancing layer: a ring of the ready endpoints
//!
//! The layer hands [`Pick::draw`] its [`ReadySet`], the endpoints last found eligible. Walking
//! the whole ring from the key's point to the first owner in that set would cost, with most of
//! the set down (1 live endpoint among 2,000 addresses), about as many steps as there are dead
//! endpoints: the live one's points are 1 in 2,000. So the picker keeps beside the whole ring a
//! *ready ring*: the whole ring's points whose owner is in the ready set, in the same order, each
//! naming its owner's position in that set. A draw is then one binary search of the ready ring
//! and, unless a retry excluded the owner, one step: O(log n) in the set's size, whatever the
//! number of endpoints that are down.
//!
//! 1. The ready ring is derived from the whole ring by filtering, never hashed anew, so it holds
//!    exactly the same points: a key lands on the ready owner that the walk of the whole ring
//!    would find (the next ready point after its own owner's); with every endpoint ready, every
//!    key maps as on the whole ring, and an owner that comes back takes its keys back.
//! 2. It is keyed by the ready set's [`id`](ReadySet::id). The first draw handed a new ready set
//!    (the layer builds one when the set changes, when a drawn endpoint was found down, and every
//!    [`READY_REFRESH`](super::READY_REFRESH)) derives it: O(n) address lookups to map the ring's
//!    endpoints to the set's positions, and only when that mapping differs from the last one
//!    (an endpoint came or went) O(points) to filter the whole ring. A refresh that finds the
//!    same endpoints ready costs no filtering; with every endpoint ready, in the whole set's
//!    order, the ready ring shares the whole ring's points and costs no memory.
//! 3. One draw derives at a time; draws that find a new ready set while another one derives walk
//!    the whole ring instead, as before this ring existed: same answer, more steps, for the
//!    moment the derivation takes.
//! 4. Replacing the whole ring (a new set, a new weight) drops the ready ring with it, so a
//!    ready ring is always derived from the ring it is stored beside.
//!
//! The cost moves from the picks to the changes of the ready set: an endpoint that flaps makes
//! each ready set built meanwhile filter the ring again (O(points), about 0.3 million at 2,000
//! endpoints), paid by one caller per change, not by every pick.

use std::sync::{Arc, Mutex, PoisonError, RwLock, TryLockError};

use super::rng::mix64;
use super::{Candidates, Drawn, EndpointView, Pick, PickContext, ReadySet};
use crate::status::Status;

/// The 64-bit FNV-1a offset basis: the hash of no bytes.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Continues a 64-bit FNV-1a hash (Fowler, Noll and Vo) over `bytes`.
pub(crate) fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// Picks the endpoint that owns the call's key on a ring of virtual nodes.
///
/// Karger et al.'s consistent hashing, ketama-style: 160 virtual nodes per unit of weight
/// (weights above [`MAX_WEIGHT`](Self::MAX_WEIGHT) count as that), placed by a hash that is
/// the same on every run and platform. The key is [`PickContext::key`]: the hash key, else a
/// hash of the method and payload. Removing one of `n` endpoints moves only its keys, about
/// `1/n` of them; a key whose owner is unavailable or excluded goes to the next endpoint on the
/// ring.
///
/// Under a balancing layer ([`Pick::draw`]) a pick is a binary search of a second ring: the
/// whole ring's points whose endpoints are in the layer's [`ReadySet`], filtered from it (so
/// every key maps as on the whole ring) when the ready set's [`id`](ReadySet::id) changes. A
/// pick then costs the same with 1,999 endpoints down as with none; the filtering, O(points),
/// is paid once per change of the ready endpoints, by one caller.
#[derive(Debug)]
pub struct ConsistentHash {
    replicas: u32,
    rings: RwLock<Rings>,
    /// Held by the one draw that derives a ready ring (module docs on the ready ring, point 3).
    deriving: Mutex<()>,
    #[cfg(test)]
    counters: tests::Counters,
}

impl ConsistentHash {
    /// Virtual nodes per unit of weight when not configured: ketama's 160.
    pub const DEFAULT_REPLICAS: u32 = 160;
    /// The most virtual nodes per unit of weight [`with_replicas`](Self::with_replicas) accepts.
    pub const MAX_REPLICAS: u32 = 4096;
    /// Weights above this count as this many units on the ring.
    pub const MAX_WEIGHT: u32 = 16;

    /// A picker with [`DEFAULT_REPLICAS`](Self::DEFAULT_REPLICAS) virtual nodes per unit of
    /// weight.
    pub fn new() -> ConsistentHash {
        ConsistentHash::with_replicas(ConsistentHash::DEFAULT_REPLICAS)
    }

    /// A picker with `replicas` virtual nodes per unit of weight, clamped to
    /// `1..=MAX_REPLICAS`. More replicas even out the endpoints' shares (their spread shrinks
    /// as `1/√replicas`) at the cost of memory and rebuild time.
    pub fn with_replicas(replicas: u32) -> ConsistentHash {
        ConsistentHash {
            replicas: replicas.clamp(1, ConsistentHash::MAX_REPLICAS),
            rings: RwLock::default(),
            deriving: Mutex::default(),
            #[cfg(test)]
            counters: tests::Counters::default(),
        }
    }

    /// How many steps [`stepped`](Self::stepped) counted (tests only).
    #[cfg(test)]
    pub(crate) fn steps(&self) -> usize {
        self.counters.steps.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts `steps` of a draw's walk, or addresses looked up to derive a ready ring (tests
    /// only).
    fn stepped(&self, steps: usize) {
        #[cfg(test)]
        self.counters.steps.fetch_add(steps, std::sync::atomic::Ordering::Relaxed);
        let _ = steps;
    }

    /// Counts a filtering of the whole ring into a ready ring (tests only).
    fn filtered(&self) {
        #[cfg(test)]
        self.counters.filters.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Rings> {
        self.rings.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the whole ring, and so drops the ready ring derived from the old one.
    fn replace(&self, ring: Ring) {
        let mut rings = self.rings.write().unwrap_or_else(PoisonError::into_inner);
        let version = rings.ring.version.wrapping_add(1);
        *rings = Rings { ring: Ring { version, ..ring }, ready: ReadyRing::default() };
    }

    /// The first position of `ready` at or after `point` on the ready ring that `ctx` does not
    /// exclude.
    fn ready_owner(&self, ring: &ReadyRing, point: u64, ready: &ReadySet, ctx: &PickContext<'_>) -> Option<usize> {
        let check_exclude = !ctx.exclude().is_empty();
        ring_from(&ring.points, point).map(|p| p.owner).find(|&position| {
            self.stepped(1);
            // A position past the set's end would be a ready ring derived for another set:
            // never drawn.
            position < ready.len() && !(check_exclude && ctx.is_excluded(ready.address(position)))
        })
    }

    /// The same answer as [`ready_owner`](Self::ready_owner), by walking the whole ring and
    /// looking each owner up in `ready` by address: for the moment another draw derives.
    fn walked_owner(&self, ring: &Ring, point: u64, ready: &ReadySet, ctx: &PickContext<'_>) -> Option<usize> {
        ring_from(&ring.points, point).find_map(|p| {
            self.stepped(1);
            let position = ready.position(&ring.members[p.owner].0)?;
            (!ctx.is_excluded(ready.address(position))).then_some(position)
        })
    }
}

impl Default for ConsistentHash {
    fn default() -> ConsistentHash {
        ConsistentHash::new()
    }
}

impl Pick for ConsistentHash {
    fn pick(&self, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>) -> Result<usize, Status> {
        let candidates = Candidates::new(endpoints, ctx)?;
        if let Some(pinned) = candidates.pinned() {
            return Ok(pinned);
        }
        let point = mix64(ctx.key());
        {
            let rings = self.read();
            if rings.ring.matches(endpoints) {
                return Ok(rings.ring.owner(point, &candidates));
            }
        }
        let ring = Ring::build(endpoints, self.replicas);
        let owner = ring.owner(point, &candidates);
        self.replace(ring);
        Ok(owner)
    }

    fn update(&self, endpoints: &[EndpointView<'_>]) {
        if self.read().ring.matches(endpoints) {
            return;
        }
        self.replace(Ring::build(endpoints, self.replicas));
    }

    fn draw(&self, ready: &ReadySet, ctx: &PickContext<'_>, drawn: &mut Drawn) -> bool {
        let point = mix64(ctx.key());
        let rings = self.read();
        if rings.ring.points.is_empty() {
            // Never told of a set: the whole set is handed to `pick`, which builds the ring.
            return false;
        }
        let owner = if rings.ready.set_id == Some(ready.id()) {
            self.ready_owner(&rings.ready, point, ready, ctx)
        } else {
            let _deriving = match self.deriving.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    if let Some(position) = self.walked_owner(&rings.ring, point, ready, ctx) {
                        drawn.push(position);
                    }
                    return true;
                }
            };
            let (derived, filtered) = ReadyRing::derive(&rings.ring, ready, &rings.ready);
            // Its address lookups, one per endpoint of the ready set.
            self.stepped(ready.len());
            if filtered {
                self.filtered();
            }
            let owner = self.ready_owner(&derived, point, ready, ctx);
            let version = rings.ring.version;
            drop(rings);
            let mut rings = self.rings.write().unwrap_or_else(PoisonError::into_inner);
            // Beside the ring it was derived from only (module docs on the ready ring, point 4).
            if rings.ring.version == version {
                rings.ready = derived;
            }
            owner
        };
        if let Some(position) = owner {
            drawn.push(position);
        }
        true
    }
}

/// The whole ring and the ready ring derived from it (module docs on the ready ring, point 4).
#[derive(Debug, Default)]
struct Rings {
    ring: Ring,
    ready: ReadyRing,
}

#[derive(Debug, Default)]
struct Ring {
    /// Told apart from the ring it replaced, so that a ready ring derived meanwhile from that
    /// one is not stored beside this one.
    version: u64,
    /// The address and weight of each endpoint of the slice the ring was built from, in its order.
    members: Vec<(Box<str>, u32)>,
    /// Each member's index by address.
    by_address: std::collections::HashMap<Box<str>, usize>,
    /// Sorted by hash; `owner` indexes `members` (and so the matching slice).
    points: Arc<[Point]>,
}

/// A point on a ring: `owner` is the index of its endpoint among the whole ring's members, or,
/// on a ready ring, its position in the ready set.
#[derive(Clone, Copy, Debug)]
struct Point {
    hash: u64,
    owner: usize,
}

/// The points of a ring from the first at or after `point` on, wrapping around once.
fn ring_from(points: &[Point], point: u64) -> impl Iterator<Item = &Point> {
    let start = points.partition_point(|p| p.hash < point);
    let (before, after) = points.split_at(start);
    after.iter().chain(before)
}

impl Ring {
    fn build(endpoints: &[EndpointView<'_>], replicas: u32) -> Ring {
        let members: Vec<(Box<str>, u32)> = endpoints.iter().map(|e| (e.address.into(), e.weight)).collect();
        let size = endpoints.iter().map(|e| Ring::nodes(e.weight, replicas) as usize).sum();
        let mut points = Vec::with_capacity(size);
        for (owner, endpoint) in endpoints.iter().enumerate() {
            let base = fnv1a(FNV_OFFSET, endpoint.address.as_bytes());
            for replica in 0..Ring::nodes(endpoint.weight, replicas) {
                points.push(Point { hash: mix64(fnv1a(base, &replica.to_le_bytes())), owner });
            }
        }
        // Ties (vanishingly rare in 64 bits) are broken by address, so that the ring does not
        // depend on the order of the slice.
        points.sort_unstable_by(|a, b| a.hash.cmp(&b.hash).then_with(|| members[a.owner].0.cmp(&members[b.owner].0)));
        let by_address = members.iter().enumerate().map(|(i, (address, _))| (address.clone(), i)).collect();
        Ring { version: 0, members, by_address, points: points.into() }
    }

    fn nodes(weight: u32, replicas: u32) -> u32 {
        // Both factors are capped (4096 × 16 < 2^32): no overflow.
        replicas * weight.min(ConsistentHash::MAX_WEIGHT)
    }

    fn matches(&self, endpoints: &[EndpointView<'_>]) -> bool {
        self.members.len() == endpoints.len()
            && self
                .members
                .iter()
                .zip(endpoints)
                .all(|((address, weight), e)| *weight == e.weight && **address == *e.address)
    }

    /// The first candidate at or after `point`, wrapping around.
    fn owner(&self, point: u64, candidates: &Candidates<'_>) -> usize {
        ring_from(&self.points, point)
            .map(|p| p.owner)
            .find(|&owner| candidates.contains(owner))
            // Every candidate has a non-zero weight and so points on the ring: not reached.
            .unwrap_or(candidates.first())
    }
}

/// The points of a [`Ring`] whose owners are in one [`ReadySet`], each naming its owner's
/// position in that set (module docs).
#[derive(Debug)]
struct ReadyRing {
    /// The [`ReadySet::id`] it was derived for; `None` before the first.
    set_id: Option<u64>,
    /// For each member of the whole ring, its position in that set, if it is in it.
    positions: Vec<Option<usize>>,
    /// Sorted by hash; `owner` is a position in that set.
    points: Arc<[Point]>,
}

impl Default for ReadyRing {
    fn default() -> ReadyRing {
        ReadyRing { set_id: None, positions: Vec::new(), points: Arc::from(Vec::new()) }
    }
}

impl ReadyRing {
    /// The ready ring of `ring` for `ready`, sharing the points of `last` (derived from the same
    /// ring) when the same members sit at the same positions, and the whole ring's when every
    /// member is ready at its own index; and whether it had to filter the whole ring.
    fn derive(ring: &Ring, ready: &ReadySet, last: &ReadyRing) -> (ReadyRing, bool) {
        let mut positions = vec![None; ring.members.len()];
        for position in 0..ready.len() {
            if let Some(&member) = ring.by_address.get(ready.address(position)) {
                positions[member] = Some(position);
            }
        }
        let (points, filtered) = if last.set_id.is_some() && positions == last.positions {
            (last.points.clone(), false)
        } else if positions.iter().enumerate().all(|(member, &position)| position == Some(member)) {
            (ring.points.clone(), false)
        } else {
            let points = ring.points.iter().filter_map(|p| Some(Point { hash: p.hash, owner: positions[p.owner]? }));
            (points.collect(), true)
        };
        (ReadyRing { set_id: Some(ready.id()), positions, points }, filtered)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn addresses(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:7070")).collect()
    }

    fn views(addresses: &[String]) -> Vec<EndpointView<'_>> {
        addresses.iter().map(|a| EndpointView::new(a)).collect()
    }

    /// The address each of `keys` maps to.
    fn mapping<'a>(picker: &ConsistentHash, endpoints: &[EndpointView<'a>], keys: u64) -> Vec<&'a str> {
        (0..keys)
            .map(|key| {
                let i = picker.pick(endpoints, &PickContext::new().with_hash_key(key)).expect("eligible endpoints");
                endpoints[i].address
            })
            .collect()
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a(fnv1a(FNV_OFFSET, b"foo"), b"bar"), fnv1a(FNV_OFFSET, b"foobar"));
    }

    #[test]
    fn removing_one_of_ten_moves_only_its_keys_and_adding_it_back_restores_them() {
        let all = addresses(10);
        let picker = ConsistentHash::new();
        let before = mapping(&picker, &views(&all), 10_000);

        let removed = &all[3];
        let rest: Vec<String> = all.iter().filter(|a| *a != removed).cloned().collect();
        let after = mapping(&picker, &views(&rest), 10_000);
        let moved: Vec<usize> = (0..before.len()).filter(|&k| before[k] != after[k]).collect();
        assert!((500..=1_500).contains(&moved.len()), "{} of 10000 keys moved", moved.len());
        assert!(moved.iter().all(|&k| before[k] == removed), "a key owned by another endpoint moved");
        assert_eq!(moved.len(), before.iter().filter(|a| **a == removed).count());

        let restored = mapping(&picker, &views(&all), 10_000);
        assert_eq!(restored, before);
    }

    #[test]
    fn every_endpoint_owns_a_fair_share() {
        let all = addresses(10);
        let mut owned: HashMap<&str, usize> = HashMap::new();
        for address in mapping(&ConsistentHash::new(), &views(&all), 10_000) {
            *owned.entry(address).or_default() += 1;
        }
        assert_eq!(owned.len(), 10);
        assert!(owned.values().all(|&n| (700..1_300).contains(&n)), "{owned:?}");
    }

    #[test]
    fn the_same_key_goes_to_the_same_endpoint_from_any_instance_and_order() {
        let all = addresses(7);
        let first = mapping(&ConsistentHash::new(), &views(&all), 1_000);
        let mut reversed = views(&all);
        reversed.reverse();
        assert_eq!(mapping(&ConsistentHash::new(), &reversed, 1_000), first);
        // Positions are fixed by the algorithm, not by a per-process hasher: these hold on every
        // run and platform.
        assert_eq!(&first[..6], GOLDEN);
    }

    const GOLDEN: &[&str] =
        &["10.0.0.0:7070", "10.0.0.5:7070", "10.0.0.6:7070", "10.0.0.5:7070", "10.0.0.1:7070", "10.0.0.4:7070"];

    #[test]
    fn without_a_hash_key_the_method_and_payload_are_the_key() {
        let all = addresses(10);
        let endpoints = views(&all);
        let picker = ConsistentHash::new();
        let pick = |method, payload: &[u8]| {
            picker.pick(&endpoints, &PickContext::new().with_call(method, payload)).expect("eligible endpoints")
        };
        assert_eq!(pick("Cache.get", b"user:1"), pick("Cache.get", b"user:1"));
        let payloads: Vec<String> = (0..1_000).map(|i| format!("user:{i}")).collect();
        let mut owners = [0usize; 10];
        for payload in &payloads {
            owners[pick("Cache.get", payload.as_bytes())] += 1;
        }
        assert!(owners.iter().all(|&n| n > 50), "{owners:?}");
        // The boundary between method and payload counts: these keys differ.
        assert_ne!(PickContext::new().with_call("ab", b"c").key(), PickContext::new().with_call("a", b"bc").key());
        // A hash key, when set, wins over the payload.
        let ctx = PickContext::new().with_call("Cache.get", b"user:1").with_hash_key(5);
        assert_eq!(ctx.key(), 5);
    }

    #[test]
    fn an_unavailable_owner_hands_its_keys_on_and_takes_them_back() {
        let all = addresses(5);
        let picker = ConsistentHash::new();
        let before = mapping(&picker, &views(&all), 2_000);
        let mut endpoints = views(&all);
        endpoints[2].available = false;
        let during = mapping(&picker, &endpoints, 2_000);
        for key in 0..before.len() {
            if before[key] == all[2] {
                assert_ne!(during[key], all[2]);
            } else {
                assert_eq!(during[key], before[key], "key {key} moved");
            }
        }
        endpoints[2].available = true;
        assert_eq!(mapping(&picker, &endpoints, 2_000), before);
    }

    #[test]
    fn an_excluded_owner_is_skipped_until_all_are_excluded() {
        let all = addresses(4);
        let endpoints = views(&all);
        let picker = ConsistentHash::new();
        let owner = picker.pick(&endpoints, &PickContext::new().with_hash_key(77)).expect("eligible");

        let tried: Vec<Arc<str>> = vec![all[owner].as_str().into()];
        let ctx = PickContext::new().with_hash_key(77).with_exclude(&tried);
        let next = picker.pick(&endpoints, &ctx).expect("eligible");
        assert_ne!(next, owner);
        assert_eq!(picker.pick(&endpoints, &ctx), Ok(next), "the successor is deterministic");

        let everything: Vec<Arc<str>> = all.iter().map(|a| a.as_str().into()).collect();
        let ctx = PickContext::new().with_hash_key(77).with_exclude(&everything);
        assert_eq!(picker.pick(&endpoints, &ctx), Ok(owner));
    }

    /// The index in the whole set of what `picker` draws from `ready` for `key`.
    fn drawn(picker: &ConsistentHash, ready: &ReadySet, ctx: &PickContext<'_>) -> Option<usize> {
        let mut drawn = Drawn::new();
        assert!(picker.draw(ready, ctx, &mut drawn), "the ring was built: the picker draws");
        assert!(drawn.len() <= 1, "{drawn:?}");
        drawn.positions().first().map(|&position| ready.index(position))
    }

    /// A picker told of `endpoints`, as the balancing layer tells it of each new set.
    fn told(endpoints: &[EndpointView<'_>]) -> ConsistentHash {
        let picker = ConsistentHash::new();
        picker.update(endpoints);
        picker
    }

    fn filters(picker: &ConsistentHash) -> usize {
        picker.counters.filters.load(Ordering::Relaxed)
    }

    /// 12 endpoints of weights 1, 2, 3, 1, 2, ... and one of 20 (capped at 16).
    fn weighted(all: &[String]) -> Vec<EndpointView<'_>> {
        let mut endpoints = views(all);
        for (i, endpoint) in endpoints.iter_mut().enumerate() {
            endpoint.weight = [1, 2, 3][i % 3];
        }
        if let Some(last) = endpoints.last_mut() {
            last.weight = 20;
        }
        endpoints
    }

    /// An FNV-1a hash of the owners of keys 0..20,000: the whole mapping in one number.
    fn fingerprint(owner: impl Fn(u64) -> usize) -> u64 {
        (0..20_000u64).fold(FNV_OFFSET, |hash, key| fnv1a(hash, &(owner(key) as u32).to_le_bytes()))
    }

    /// The fingerprint of the weighted set's mapping as c691cad computed it, before the ready
    /// ring: what existing users' keys map to.
    const MAPPING_AT_C691CAD: u64 = 0x4a9d_8d32_1fe6_4109;

    #[test]
    fn with_every_endpoint_ready_a_draw_maps_every_key_as_before_the_ready_ring() {
        let all = addresses(12);
        let endpoints = weighted(&all);
        let picker = ConsistentHash::new();
        let by_pick = fingerprint(|key| {
            picker.pick(&endpoints, &PickContext::new().with_hash_key(key)).expect("eligible endpoints")
        });
        assert_eq!(by_pick, MAPPING_AT_C691CAD, "the whole set's pick");
        let ready = ReadySet::new(&endpoints);
        let by_draw = fingerprint(|key| drawn(&picker, &ready, &PickContext::new().with_hash_key(key)).unwrap_or(99));
        assert_eq!(by_draw, MAPPING_AT_C691CAD, "the draw from the ready ring");
        assert_eq!(filters(&picker), 0, "every endpoint ready: the ready ring is the whole ring");
    }

    #[test]
    fn a_draw_looks_at_one_point_however_many_endpoints_are_down() {
        let all = addresses(2_000);
        let mut endpoints = views(&all);
        let picker = told(&endpoints);
        for (i, endpoint) in endpoints.iter_mut().enumerate() {
            endpoint.available = i == 1_234;
        }
        let ready = ReadySet::new(&endpoints);
        for key in 0..1_000 {
            assert_eq!(drawn(&picker, &ready, &PickContext::new().with_hash_key(key)), Some(1_234));
        }
        // Walking the whole ring to the live endpoint's points would take about 2,000 steps a key.
        assert_eq!(picker.steps(), 1 + 1_000, "one address looked up to derive, then one step per draw");
        assert_eq!(filters(&picker), 1, "the ready ring was derived once, by the first draw");

        // A retry that excluded the live one: nothing to draw, after its 160 points.
        let tried: Vec<Arc<str>> = vec![all[1_234].as_str().into()];
        assert_eq!(drawn(&picker, &ready, &PickContext::new().with_hash_key(7).with_exclude(&tried)), None);
        assert_eq!(picker.steps(), 1 + 1_000 + 160);

        // A new ready set with the same endpoint (the layer's periodic refresh): no filtering.
        let refreshed = ReadySet::new(&endpoints);
        assert_eq!(drawn(&picker, &refreshed, &PickContext::new().with_hash_key(1)), Some(1_234));
        assert_eq!((picker.steps(), filters(&picker)), (1 + 1_000 + 160 + 2, 1));
    }

    #[test]
    fn an_owner_that_goes_down_hands_its_keys_to_the_next_ready_owner_and_takes_them_back() {
        let all = addresses(10);
        let mut endpoints = views(&all);
        let picker = told(&endpoints);
        let keys = 5_000;
        let mapping = |endpoints: &[EndpointView<'_>]| -> Vec<usize> {
            let ready = ReadySet::new(endpoints);
            (0..keys).map(|key| drawn(&picker, &ready, &PickContext::new().with_hash_key(key)).unwrap_or(99)).collect()
        };
        let before = mapping(&endpoints);
        // The owner's successor on the whole ring, as its points were placed.
        let next_up = |key: u64, down: &[usize]| {
            let ring = picker.read();
            ring_from(&ring.ring.points, mix64(key)).map(|p| p.owner).find(|owner| !down.contains(owner))
        };

        // e3 down, then e3 and e4 (neighbours on the ring at many points) down together.
        for down in [&[3][..], &[3, 4]] {
            for &i in down {
                endpoints[i].available = false;
            }
            let during = mapping(&endpoints);
            for key in 0..keys {
                let k = key as usize;
                if down.contains(&before[k]) {
                    assert_eq!(Some(during[k]), next_up(key, down), "key {key} went past its next ready owner");
                } else {
                    assert_eq!(during[k], before[k], "key {key} moved though its owner stayed up");
                }
            }
            assert!(during.iter().all(|owner| !down.contains(owner)));
            // The whole set's pick (the walk of the whole ring) agrees.
            for key in 0..500 {
                let whole = picker.pick(&endpoints, &PickContext::new().with_hash_key(key));
                assert_eq!(whole, Ok(during[key as usize]));
            }
            for &i in down {
                endpoints[i].available = true;
            }
            assert_eq!(mapping(&endpoints), before, "back up: every key back with its owner");
        }
    }

    #[test]
    fn a_new_ring_drops_the_ready_ring_derived_from_the_old_one() {
        let all = addresses(4);
        let mut endpoints = views(&all);
        endpoints[1].available = false;
        let picker = told(&endpoints);
        let ready = ReadySet::new(&endpoints);
        let owners = |picker: &ConsistentHash| -> Vec<Option<usize>> {
            (0..2_000).map(|key| drawn(picker, &ready, &PickContext::new().with_hash_key(key))).collect()
        };
        let light = owners(&picker);
        // Same addresses, e0 now of weight 16: the same ready set must see the new ring.
        endpoints[0].weight = 16;
        picker.update(&endpoints);
        let heavy = owners(&picker);
        assert_eq!(heavy, owners(&told(&endpoints)), "as a picker that never knew the old ring");
        let share = |owners: &[Option<usize>]| owners.iter().filter(|&&o| o == Some(0)).count();
        assert!(share(&heavy) > 2 * share(&light), "{} then {}", share(&light), share(&heavy));
    }

    #[test]
    fn while_one_draw_derives_the_others_walk_the_whole_ring_to_the_same_owner() {
        let all = addresses(50);
        let mut endpoints = views(&all);
        for endpoint in endpoints.iter_mut().skip(1) {
            endpoint.available = false;
        }
        let picker = ConsistentHash::with_replicas(16);
        picker.update(&endpoints);
        let ready = ReadySet::new(&endpoints);
        let deriving = picker.deriving.lock().expect("not poisoned");
        for key in 0..100 {
            assert_eq!(drawn(&picker, &ready, &PickContext::new().with_hash_key(key)), Some(0));
        }
        assert!(picker.steps() > 100 * 5, "walked past the dead: {} steps", picker.steps());
        assert_eq!(filters(&picker), 0, "nothing derived while the lock was held");
        drop(deriving);
        let before = picker.steps();
        assert_eq!(drawn(&picker, &ready, &PickContext::new().with_hash_key(1)), Some(0));
        assert_eq!((picker.steps() - before, filters(&picker)), (1 + 1, 1), "one address, one point");
    }

    /// What the picker counts in tests.
    #[derive(Debug, Default)]
    pub(super) struct Counters {
        /// Ring points a draw looked at, and addresses it looked up to derive a ready ring.
        pub(super) steps: AtomicUsize,
        /// Ready rings made by filtering the whole ring.
        pub(super) filters: AtomicUsize,
    }

    #[test]
    fn weight_scales_the_share_up_to_the_cap() {
        let all = addresses(3);
        let mut endpoints = views(&all);
        endpoints[2].weight = 2;
        let owned = |endpoints: &[EndpointView<'_>]| {
            mapping(&ConsistentHash::new(), endpoints, 10_000).iter().filter(|a| **a == all[2]).count()
        };
        assert!((4_300..5_700).contains(&owned(&endpoints)), "weight 2 of 4");
        endpoints[2].weight = u32::MAX;
        let capped = owned(&endpoints);
        // 16 of 18 units.
        assert!((8_400..9_300).contains(&capped), "{capped}");
        let ring = ConsistentHash::new();
        ring.update(&endpoints);
        let points = ring.read().ring.points.len();
        assert_eq!(points, 160 * (1 + 1 + 16));
    }
}
