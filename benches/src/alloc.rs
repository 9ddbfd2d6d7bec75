//! A counting global allocator: how many heap allocations a process made, and how many bytes it
//! holds.
//!
//! [`CountingAlloc`] wraps [`System`](std::alloc::System) (mimalloc with the feature
//! `mimalloc`) and counts every call that may allocate: `alloc`,
//! `alloc_zeroed` and `realloc` (a `realloc` that grows in place still counts: it is a call into
//! the allocator the code asked for). Frees are not counted. The `compare` binary installs it as
//! its `#[global_allocator]`, so both the client (the parent process) and the servers (children
//! running the same binary) are counted; [`allocations`] reads the process's total.
//! [`CountingAlloc::WITH_BYTES`] also keeps the bytes allocated and not yet freed, [`live_bytes`]:
//! what the process holds on the heap, the counter memory-bound tests assert on (unlike RSS, it
//! does not depend on what the allocator returned to the system). `compare` does not track bytes,
//! so that the count costs the frameworks it measures one add per allocation and no more.
//!
//! The count is kept in cache-line-sized shards rather than in one atomic: a single counter
//! bounced between cores on every allocation would slow the most allocation-heavy framework down
//! by more than the others and so distort the throughput being measured. The first `SHARDS`
//! threads of a process each own a shard, which only they write, so counting is a plain load
//! and store (no locked instruction); later threads, and a thread past its thread-locals'
//! destruction, share one more shard and add to it with `fetch_add`. Readers sum the shards
//! with relaxed loads. A shard is never handed to a second thread (a thread's exit would need a
//! destructor to give it back, and registering one may allocate, inside the allocator), so
//! `SHARDS` is far above the threads a benchmark process starts: `compare`'s client builds a
//! runtime of its own for every point of every round, two or more workers each: about 90
//! threads a round of every framework at four points (`strace -f`, 2026-12-01), so 270 in
//! `--rounds 3`.
//!
//! A locked `fetch_add` per allocation, uncontended, was itself about 2.5% of all samples of
//! `compare --frameworks zrpc --points 100x1` (Intel Xeon, 2026-12-01; `perf record -a`): more
//! than `malloc`'s fast path, and paid 19 times a call by the serde frameworks against once by
//! `raw-mux`, a bias the harness added to every ratio against the floor.

#[cfg(not(feature = "mimalloc"))]
use std::alloc::System;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shards owned by one thread each; one more is shared by every other thread. 128 KiB of
/// counters in all.
const SHARDS: usize = 1024;
/// The shard of threads that own none.
const SHARED: usize = SHARDS;

/// One shard's counters on a cache line of their own: allocations, and bytes allocated minus
/// bytes freed (which wraps within a shard, since a block may be freed on another thread: only
/// the sum over shards is meaningful).
#[repr(align(128))]
struct Shard(AtomicU64, AtomicU64);

impl Shard {
    /// Adds `n` (wrapping) to `counter` of shard `index`: a plain load and store when this
    /// thread owns the shard, a `fetch_add` on the shared one.
    fn add(index: usize, counter: impl Fn(&Shard) -> &AtomicU64, n: u64) {
        let counter = counter(&COUNTS[index]);
        if index == SHARED {
            counter.fetch_add(n, Ordering::Relaxed);
        } else {
            // Only this thread writes this shard: the load sees its own last store.
            counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        }
    }
}

static COUNTS: [Shard; SHARDS + 1] = [const { Shard(AtomicU64::new(0), AtomicU64::new(0)) }; SHARDS + 1];
/// The next shard to give a thread; past `SHARDS`, every thread gets `SHARED`.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // A const-initialised thread local without `Drop` needs no allocation and no destructor
    // registration, so it is safe to touch from inside the allocator.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's shard: its own while there were any left to give, else `SHARED`.
fn shard() -> usize {
    SHARD
        .try_with(|slot| {
            let mut shard = slot.get();
            if shard == usize::MAX {
                shard = NEXT_SHARD.fetch_add(1, Ordering::Relaxed).min(SHARED);
                slot.set(shard);
            }
            shard
        })
        // The thread-locals are gone: never write a shard another thread may own.
        .unwrap_or(SHARED)
}

impl CountingAlloc {
    /// Counts allocations only.
    pub const COUNT: CountingAlloc = CountingAlloc { bytes: false };
    /// Counts allocations and the bytes held ([`live_bytes`]).
    pub const WITH_BYTES: CountingAlloc = CountingAlloc { bytes: true };

    /// Counts an allocation of `bytes`.
    fn count(&self, bytes: usize) {
        let shard = shard();
        Shard::add(shard, |s| &s.0, 1);
        if self.bytes {
            Shard::add(shard, |s| &s.1, bytes as u64);
        }
    }

    /// Counts `bytes` freed.
    fn free(&self, bytes: usize) {
        if self.bytes {
            Shard::add(shard(), |s| &s.1, (bytes as u64).wrapping_neg());
        }
    }
}

/// Bytes allocated and not yet freed by this process (see the module docs).
///
/// Only meaningful when [`CountingAlloc::WITH_BYTES`] is the global allocator; 0 otherwise.
pub fn live_bytes() -> u64 {
    COUNTS.iter().fold(0u64, |sum, shard| sum.wrapping_add(shard.1.load(Ordering::Relaxed)))
}

/// The number of allocations this process has made so far (see the module docs for what counts).
///
/// Only meaningful when [`CountingAlloc`] is the global allocator; 0 otherwise.
pub fn allocations() -> u64 {
    COUNTS.iter().map(|shard| shard.0.load(Ordering::Relaxed)).sum()
}

/// The number of allocations this thread has made so far, or `None` on a thread past the first
/// `SHARDS`, which shares its shard with others. For counts other threads must not disturb: a
/// test on a current-thread runtime, whose harness may allocate on a thread of its own
/// meanwhile (in a CI run on 2026-12-02, 4 allocations the test's code does not make landed in
/// a window of 1,000 calls measured with [`allocations`], most likely libtest's main thread's
/// as it began to wait for the result).
pub fn thread_allocations() -> Option<u64> {
    let shard = shard();
    COUNTS.get(shard).filter(|_| shard != SHARED).map(|counts| counts.0.load(Ordering::Relaxed))
}

/// The allocator [`CountingAlloc`] counts the calls to: the system's, or mimalloc with the
/// feature `mimalloc`.
#[cfg(not(feature = "mimalloc"))]
static INNER: System = System;
#[cfg(feature = "mimalloc")]
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Which allocator the counting one forwards to, for reports.
pub const ALLOCATOR: &str = if cfg!(feature = "mimalloc") { "mimalloc" } else { "the system's (glibc)" };

/// [`System`](std::alloc::System) (or mimalloc, feature `mimalloc`), counting allocations;
/// install with `#[global_allocator]`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc {
    bytes: bool,
}

// SAFETY: every method forwards to `INNER` with the caller's arguments unchanged, so its
// guarantees carry over; counting touches no memory the allocator hands out.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.count(layout.size());
        // SAFETY: forwarded unchanged (see above).
        unsafe { INNER.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.count(layout.size());
        // SAFETY: forwarded unchanged (see above).
        unsafe { INNER.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.free(layout.size());
        // SAFETY: forwarded unchanged (see above).
        unsafe { INNER.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.count(new_size);
        self.free(layout.size());
        // SAFETY: forwarded unchanged (see above).
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}
