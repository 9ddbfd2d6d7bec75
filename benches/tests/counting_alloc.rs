//! The counting allocator counts every allocation of every thread, also of the threads past
//! those that own a shard (which share one and add to it atomically), and its byte count comes
//! back to where it was once what was allocated on one thread is freed on another. One test
//! function, so that no other test's allocations land in the count.

use std::sync::Barrier;
use std::sync::mpsc;

use zrpc_benches::alloc::{CountingAlloc, allocations, live_bytes};

#[global_allocator]
static COUNTING: CountingAlloc = CountingAlloc::WITH_BYTES;

#[test]
fn every_threads_allocations_are_counted_and_their_bytes_freed_anywhere() {
    // More threads than own a shard, all allocating at once.
    const THREADS: usize = 100;
    const EACH: usize = 20_000;
    const BYTES: usize = 48;
    let start = Barrier::new(THREADS);
    let (freed_here, blocks) = mpsc::channel::<Vec<u8>>();
    let (bytes_before, before) = (live_bytes(), allocations());
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            let (start, freed_here) = (&start, freed_here.clone());
            scope.spawn(move || {
                start.wait();
                for i in 0..EACH {
                    let block = std::hint::black_box(Vec::<u8>::with_capacity(BYTES));
                    if i % 100 == 0 {
                        // Freed by the test's thread, which allocated none of it.
                        freed_here.send(block).expect("the test's thread receives");
                    }
                }
            });
        }
        drop(freed_here);
        for block in blocks {
            drop(block);
        }
    });
    let counted = allocations() - before;
    let expected = (THREADS * EACH) as u64;
    // Spawning a thread and the channel's blocks allocate a little more; a lost update would
    // be a count below `expected`.
    assert!(
        (expected..expected + 100 * THREADS as u64).contains(&counted),
        "{counted} allocations counted, {expected} made"
    );
    let held = live_bytes().wrapping_sub(bytes_before) as i64;
    assert!(held.unsigned_abs() < (BYTES * EACH) as u64, "{held} bytes still counted as held");
}
