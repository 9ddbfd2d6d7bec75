//! A counting global allocator: how many heap allocations a process made.
//!
//! [`CountingAlloc`] wraps [`System`] and counts every call that may allocate: `alloc`,
//! `alloc_zeroed` and `realloc` (a `realloc` that grows in place still counts: it is a call into
//! the allocator the code asked for). Frees are not counted. The `compare` binary installs it as
//! its `#[global_allocator]`, so both the client (the parent process) and the servers (children
//! running the same binary) are counted; [`allocations`] reads the process's total.
//!
//! The count is kept in a few cache-line-sized shards, one picked per thread, rather than in one
//! atomic: a single counter bounced between cores on every allocation would slow the most
//! allocation-heavy framework down by more than the others and so distort the throughput being
//! measured. Each increment is one uncontended relaxed `fetch_add`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const SHARDS: usize = 16;

/// One counter on a cache line of its own.
#[repr(align(128))]
struct Shard(AtomicU64);

static COUNTS: [Shard; SHARDS] = [const { Shard(AtomicU64::new(0)) }; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // A const-initialised thread local without `Drop` needs no allocation and no destructor
    // registration, so it is safe to touch from inside the allocator.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn count() {
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
    COUNTS[shard].0.fetch_add(1, Ordering::Relaxed);
}

/// The number of allocations this process has made so far (see the module docs for what counts).
///
/// Only meaningful when [`CountingAlloc`] is the global allocator; 0 otherwise.
pub fn allocations() -> u64 {
    COUNTS.iter().map(|shard| shard.0.load(Ordering::Relaxed)).sum()
}

/// [`System`], counting allocations; install with `#[global_allocator]`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees carry over; counting touches no memory the allocator hands out.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
