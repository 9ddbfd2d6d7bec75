//! A counting global allocator: how many heap allocations a process made, and how many bytes it
//! holds.
//!
//! [`CountingAlloc`] wraps [`System`] and counts every call that may allocate: `alloc`,
//! `alloc_zeroed` and `realloc` (a `realloc` that grows in place still counts: it is a call into
//! the allocator the code asked for). Frees are not counted. The `compare` binary installs it as
//! its `#[global_allocator]`, so both the client (the parent process) and the servers (children
//! running the same binary) are counted; [`allocations`] reads the process's total.
//! [`CountingAlloc::WITH_BYTES`] also keeps the bytes allocated and not yet freed, [`live_bytes`]:
//! what the process holds on the heap, the counter memory-bound tests assert on (unlike RSS, it
//! does not depend on what the allocator returned to the system). `compare` does not track bytes,
//! so that the count costs the frameworks it measures one relaxed add per allocation and no more.
//!
//! The count is kept in a few cache-line-sized shards, one picked per thread, rather than in one
//! atomic: a single counter bounced between cores on every allocation would slow the most
//! allocation-heavy framework down by more than the others and so distort the throughput being
//! measured. Each increment is one uncontended relaxed `fetch_add`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const SHARDS: usize = 16;

/// One shard's counters on a cache line of their own: allocations, and bytes allocated minus
/// bytes freed (which wraps within a shard, since a block may be freed on another thread: only
/// the sum over shards is meaningful).
#[repr(align(128))]
struct Shard(AtomicU64, AtomicU64);

static COUNTS: [Shard; SHARDS] = [const { Shard(AtomicU64::new(0), AtomicU64::new(0)) }; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // A const-initialised thread local without `Drop` needs no allocation and no destructor
    // registration, so it is safe to touch from inside the allocator.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard() -> &'static Shard {
    let shard = SHARD
        .try_with(|slot| {
            let mut shard = slot.get();
            if shard == usize::MAX {
                shard = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
                slot.set(shard);
            }
            shard
        })
        .unwrap_or(0);
    &COUNTS[shard]
}

impl CountingAlloc {
    /// Counts allocations only.
    pub const COUNT: CountingAlloc = CountingAlloc { bytes: false };
    /// Counts allocations and the bytes held ([`live_bytes`]).
    pub const WITH_BYTES: CountingAlloc = CountingAlloc { bytes: true };

    /// Counts an allocation of `bytes`.
    fn count(&self, bytes: usize) {
        let shard = shard();
        shard.0.fetch_add(1, Ordering::Relaxed);
        if self.bytes {
            shard.1.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// Counts `bytes` freed.
    fn free(&self, bytes: usize) {
        if self.bytes {
            shard().1.fetch_sub(bytes as u64, Ordering::Relaxed);
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

/// [`System`], counting allocations; install with `#[global_allocator]`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc {
    bytes: bool,
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees carry over; counting touches no memory the allocator hands out.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.count(layout.size());
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.count(layout.size());
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.free(layout.size());
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.count(new_size);
        self.free(layout.size());
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
