//! A lock-free random source shared by every thread that picks through one balancer.
//!
//! `fastrand::Rng` is a `Cell` and not `Sync`, and a `Mutex<Rng>` would serialise every pick, so
//! the balancers use SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
//! generators", OOPSLA 2014) over one atomic counter: each draw is a `fetch_add` and a few
//! multiplies. fastrand seeds it; `with_seed` makes a sequence reproducible for tests.
//!
//! The counter is one cache line that every thread picking through the balancer writes, so a
//! pick that needs several numbers ([`LeastActive`](super::LeastActive) draws 16 endpoints)
//! [reserves](SharedRng::reserve) them with one `fetch_add` and computes them on its own: the
//! same numbers as as many draws in a row.

use std::sync::atomic::{AtomicU64, Ordering};

/// SplitMix64's increment: the odd integer closest to 2^64 / φ.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Debug)]
pub(crate) struct SharedRng {
    state: AtomicU64,
}

impl SharedRng {
    /// A generator seeded from fastrand's thread-local generator.
    pub(crate) fn new() -> SharedRng {
        SharedRng::with_seed(fastrand::u64(..))
    }

    /// A generator whose sequence (when drawn from one thread) depends only on `seed`.
    pub(crate) fn with_seed(seed: u64) -> SharedRng {
        SharedRng { state: AtomicU64::new(seed) }
    }

    /// The next `count` numbers of the sequence, for one atomic operation: drawn from the
    /// [`Reserved`] in turn, they are what `count` single draws in a row would have given.
    /// Draw no more than `count` from it.
    pub(crate) fn reserve(&self, count: usize) -> Reserved {
        // Relaxed is enough: each caller only needs counter values of its own, not ordering
        // with other memory.
        let start = self.state.fetch_add(GAMMA.wrapping_mul(count as u64), Ordering::Relaxed);
        Reserved { state: start }
    }

    /// A uniformly distributed `u64` (the pickers draw indices; tests draw these).
    #[cfg(test)]
    pub(crate) fn u64(&self) -> u64 {
        self.reserve(1).u64()
    }

    /// A number in `0..n` (0 when `n` is 0): see [`Reserved::below`].
    pub(crate) fn below(&self, n: u64) -> u64 {
        self.reserve(1).below(n)
    }

    /// An index in `0..n` (0 when `n` is 0).
    pub(crate) fn index(&self, n: usize) -> usize {
        self.reserve(1).index(n)
    }
}

/// Numbers of a [`SharedRng`]'s sequence that one caller [reserved](SharedRng::reserve).
#[derive(Debug)]
pub(crate) struct Reserved {
    state: u64,
}

impl Reserved {
    /// A uniformly distributed `u64`.
    pub(crate) fn u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix64(self.state)
    }

    /// A number in `0..n` (0 when `n` is 0), by Lemire's multiply-shift; the bias is below
    /// n / 2^64, far under anything a balancer could observe.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.u64()) * u128::from(n)) >> 64) as u64
    }

    /// An index in `0..n` (0 when `n` is 0).
    pub(crate) fn index(&mut self, n: usize) -> usize {
        // usize fits in u64 on every supported target, and the result is below n.
        self.below(n as u64) as usize
    }
}

/// SplitMix64's output function: a bijective mix with full avalanche, also used to spread hash
/// keys over the consistent-hash ring.
pub(crate) const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // First outputs of the reference SplitMix64 seeded with 0.
        let rng = SharedRng::with_seed(0);
        assert_eq!(rng.u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn a_reserved_block_is_the_next_draws_of_the_sequence() {
        let (one_by_one, reserving) = (SharedRng::with_seed(42), SharedRng::with_seed(42));
        let expected: Vec<u64> = (0..20).map(|_| one_by_one.u64()).collect();
        let mut block = reserving.reserve(16);
        let mut drawn: Vec<u64> = (0..16).map(|_| block.u64()).collect();
        // The next draw starts after the block.
        drawn.extend((0..4).map(|_| reserving.u64()));
        assert_eq!(drawn, expected);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let rng = SharedRng::with_seed(7);
        let mut seen = [0u32; 5];
        for _ in 0..5_000 {
            let n = rng.below(5);
            seen[n as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.below(1), 0);
    }
}
