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
//!    the next point on the ring that is; when the owner returns, so do its keys. Availability is
//!    not part of the ring, so a flapping endpoint costs no rebuild.
//!
//! The ring is built from the addresses and weights, in [`Pick::update`] or on the first pick that
//! sees a different set, and read under an `RwLock`; a lookup is a binary search. Under a
//! balancing layer the lookup checks the owner (and, when it is down, the next points') against
//! the layer's set of eligible endpoints by address ([`Pick::draw`]), so a pick reads no other
//! endpoint: O(log n) in the set's size.

use std::sync::{PoisonError, RwLock};

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
#[derive(Debug)]
pub struct ConsistentHash {
    replicas: u32,
    ring: RwLock<Ring>,
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
        ConsistentHash { replicas: replicas.clamp(1, ConsistentHash::MAX_REPLICAS), ring: RwLock::default() }
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
            let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
            if ring.matches(endpoints) {
                return Ok(ring.owner(point, &candidates));
            }
        }
        let ring = Ring::build(endpoints, self.replicas);
        let owner = ring.owner(point, &candidates);
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = ring;
        Ok(owner)
    }

    fn update(&self, endpoints: &[EndpointView<'_>]) {
        if self.ring.read().unwrap_or_else(PoisonError::into_inner).matches(endpoints) {
            return;
        }
        let ring = Ring::build(endpoints, self.replicas);
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = ring;
    }

    fn draw(&self, ready: &ReadySet, ctx: &PickContext<'_>, drawn: &mut Drawn) -> bool {
        let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
        if ring.points.is_empty() {
            // Never told of a set: the whole set is handed to `pick`, which builds the ring.
            return false;
        }
        let ready_owner = |owner: usize| {
            let position = ready.position(&ring.members[owner].0)?;
            (!ctx.is_excluded(ready.address(position))).then_some(position)
        };
        if let Some(position) = ring.walk(mix64(ctx.key())).find_map(ready_owner) {
            drawn.push(position);
        }
        true
    }
}

#[derive(Debug, Default)]
struct Ring {
    /// The address and weight of each endpoint of the slice the ring was built from, in its order.
    members: Vec<(Box<str>, u32)>,
    /// Sorted by hash; `owner` indexes `members` (and so the matching slice).
    points: Vec<Point>,
}

#[derive(Clone, Copy, Debug)]
struct Point {
    hash: u64,
    owner: usize,
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
        Ring { members, points }
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

    /// The owners of the points from `point` on, wrapping around once.
    fn walk(&self, point: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|p| p.hash < point);
        let (before, after) = self.points.split_at(start);
        after.iter().chain(before).map(|p| p.owner)
    }

    /// The first candidate at or after `point`, wrapping around.
    fn owner(&self, point: u64, candidates: &Candidates<'_>) -> usize {
        self.walk(point)
            .find(|&owner| candidates.contains(owner))
            // Every candidate has a non-zero weight and so points on the ring: not reached.
            .unwrap_or(candidates.first())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

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
        let points = ring.ring.read().map(|r| r.points.len()).unwrap_or(0);
        assert_eq!(points, 160 * (1 + 1 + 16));
    }
}
