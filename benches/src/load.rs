//! The load loop: N callers, each making one call after another, timed one by one.
//!
//! Every caller is a task of its own, running `loop { t = now; call().await; record(now - t) }`.
//! A caller records into a buffer of its own, 256 latencies long and allocated before the
//! window, and empties it into one histogram shared by all callers when it is full (a lock per
//! 256 calls). A histogram per caller, as this loop had before, is about 220 KiB at these
//! bounds: 1,000 callers kept 220 MB of them (the client's resident memory was 230 MB), every
//! call was recorded into a cold one (12% of the client's CPU at 1000 × 1 in `perf`), and doing
//! so evicted the framework's own state from the caches: a cost the load generator put on every
//! framework, more on the ones with less work of their own per call. A shared phase flag moves
//! from warm-up to measuring to stop:
//!
//! 1. Warm-up: calls are made and not recorded (connections, buffers, the allocator and the
//!    CPU caches settle).
//! 2. The window opens: [`run`] calls the `probe` (which reads the allocation counters), then
//!    flips the phase. Calls that *complete* while measuring are recorded, so throughput is
//!    completions per second of window, the usual definition.
//! 3. The window closes: the phase flips to stop, the `probe` runs again, and each caller
//!    finishes the call it has in flight and hands its histogram back; they are merged.
//!
//! Latency is recorded in nanoseconds with three significant figures (HdrHistogram), from just
//! before the call's future is first polled to just after it completes: it includes the time a
//! call waits for a worker thread of the client's runtime, as a user's call would.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::BoxError;
use crate::framework::Caller;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// The largest latency recorded exactly; longer calls are recorded as this.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Latencies a caller gathers before it records them into the shared histogram.
const FLUSH: usize = 256;

/// How long to load a server.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Calls made before measuring.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
}

/// What a measured window saw.
#[derive(Debug)]
pub struct Measured<T> {
    /// Latency of every call completed in the window, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Calls completed in the window, successfully.
    pub calls: u64,
    /// Calls that failed in the window.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// The window's length, as measured.
    pub window: Duration,
    /// The probe's answer as the window opened.
    pub start: T,
    /// The probe's answer as the window closed.
    pub end: T,
}

impl<T> Measured<T> {
    /// Completed calls per second of window.
    pub fn throughput(&self) -> f64 {
        self.calls as f64 / self.window.as_secs_f64()
    }
}

/// One caller's tally (its latencies are in the shared histogram).
struct Tally {
    calls: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `callers` through a warm-up and a measured window, calling `probe` as the window opens and
/// as it closes.
///
/// Must run inside a multi-threaded tokio runtime: the callers are spawned on it.
///
/// # Errors
/// If a caller task panics, or does not finish its last call within 30 s of the window closing.
pub async fn run<C, T>(callers: Vec<C>, plan: Plan, mut probe: impl AsyncFnMut() -> T) -> Result<Measured<T>, BoxError>
where
    C: Caller,
{
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let latency = Arc::new(Mutex::new(Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)?));
    let mut tasks = Vec::with_capacity(callers.len());
    for caller in callers {
        // Buffers are made here, before the window, so that the window counts no allocation of
        // the load generator's own.
        let recorder = Recorder { pending: Vec::with_capacity(FLUSH), into: latency.clone() };
        tasks.push(tokio::spawn(drive(caller, phase.clone(), recorder)));
    }

    tokio::time::sleep(plan.warmup).await;
    let start = probe().await;
    phase.store(MEASURE, Ordering::Relaxed);
    let opened = Instant::now();
    tokio::time::sleep(plan.duration).await;
    phase.store(STOP, Ordering::Relaxed);
    let window = opened.elapsed();
    let end = probe().await;

    let (mut calls, mut errors, mut first_error) = (0, 0, None);
    let joined = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks)).await;
    for tally in joined.map_err(|_| "a caller did not finish its last call within 30 s")? {
        let tally = tally?;
        calls += tally.calls;
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
    }
    let latency = Arc::try_unwrap(latency)
        .map_err(|_| "a caller still holds the histogram")?
        .into_inner()
        .map_err(|_| "a caller panicked while recording")?;
    Ok(Measured { latency, calls, errors, first_error, window, start, end })
}

/// A caller's latencies on their way to the shared histogram.
struct Recorder {
    pending: Vec<u64>,
    into: Arc<Mutex<Histogram<u64>>>,
}

impl Recorder {
    fn record(&mut self, elapsed: Duration) {
        self.pending.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        if self.pending.len() == FLUSH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        // A poisoned lock means another caller panicked; `run` reports that from its join.
        if let Ok(mut histogram) = self.into.lock() {
            for &ns in &self.pending {
                histogram.saturating_record(ns);
            }
        }
        self.pending.clear();
    }
}

async fn drive<C: Caller>(mut caller: C, phase: Arc<AtomicU8>, mut recorder: Recorder) -> Tally {
    let (mut calls, mut errors, mut first_error) = (0, 0, None);
    loop {
        let started = Instant::now();
        let result = caller.call().await;
        let elapsed = started.elapsed();
        let failed = result.is_err();
        match (phase.load(Ordering::Relaxed), result) {
            (WARMUP, _) => {}
            (MEASURE, Ok(())) => {
                recorder.record(elapsed);
                calls += 1;
            }
            (MEASURE, Err(e)) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            _ => break,
        }
        if failed {
            // A dead server fails calls at once; do not spin a core on it.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    recorder.flush();
    Tally { calls, errors, first_error }
}

/// A load point: how many callers, over how many connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Point {
    /// Concurrent callers.
    pub callers: usize,
    /// Connections they share (ignored by frameworks with a connection per caller).
    pub conns: usize,
}

impl Point {
    /// The points: 1, 100 and 1000 callers over one connection, 1000 over eight.
    pub const DEFAULT: [Point; 4] = [
        Point { callers: 1, conns: 1 },
        Point { callers: 100, conns: 1 },
        Point { callers: 1000, conns: 1 },
        Point { callers: 1000, conns: 8 },
    ];
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&format!("{}x{}", self.callers, self.conns))
    }
}

impl std::str::FromStr for Point {
    type Err = BoxError;

    /// Parses `CALLERSxCONNS`, e.g. `100x1`.
    fn from_str(s: &str) -> Result<Point, BoxError> {
        let (callers, conns) = s.split_once('x').ok_or_else(|| format!("a point is CALLERSxCONNS, not {s:?}"))?;
        let point = Point { callers: callers.trim().parse()?, conns: conns.trim().parse()? };
        if point.callers == 0 || point.conns == 0 || point.conns > point.callers {
            return Err(format!("point {s:?}: need 1 <= connections <= callers").into());
        }
        Ok(point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_latency_reaches_the_shared_histogram_whole_buffers_and_the_rest() {
        let shared = Arc::new(Mutex::new(Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("bounds")));
        let mut recorder = Recorder { pending: Vec::with_capacity(FLUSH), into: shared.clone() };
        let calls = 2 * FLUSH + 7;
        for i in 0..calls {
            recorder.record(Duration::from_micros(100 + i as u64));
        }
        assert_eq!(shared.lock().expect("lock").len(), 2 * FLUSH as u64, "two full buffers, flushed as they filled");
        recorder.flush();
        let histogram = shared.lock().expect("lock");
        assert_eq!(histogram.len(), calls as u64);
        assert_eq!(histogram.min(), histogram.lowest_equivalent(100_000));
        assert!(recorder.pending.capacity() >= FLUSH, "the buffer is kept, so recording never allocates");
    }
}
