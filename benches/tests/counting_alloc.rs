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
    // Waves of threads allocating at once, more threads in all than own a shard (1,024): the
    // last waves share one.
    const WAVES: usize = 12;
    const THREADS: usize = 100;
    const EACH: usize = 5_000;
    const BYTES: usize = 48;
    let (bytes_before, before) = (live_bytes(), allocations());
    for _ in 0..WAVES {
        let start = Barrier::new(THREADS);
        let (freed_here, blocks) = mpsc::channel::<Vec<u8>>();
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
    }
    let counted = allocations() - before;
    let expected = (WAVES * THREADS * EACH) as u64;
    // Spawning a thread and the channel's blocks allocate a little more; a lost update would
    // be a count below `expected`.
    let slack = 100 * (WAVES * THREADS) as u64;
    assert!((expected..expected + slack).contains(&counted), "{counted} allocations counted, {expected} made");
    let held = live_bytes().wrapping_sub(bytes_before) as i64;
    assert!(held.unsigned_abs() < (BYTES * EACH) as u64, "{held} bytes still counted as held");
}
