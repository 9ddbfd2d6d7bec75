//! The load loop: N callers, each making one call after another, timed one by one.
//!
//! Every caller is a task of its own, running `loop { t = now; call().await; record(now - t) }`
//! into a histogram of its own (no sharing on the hot path). A shared phase flag moves from
//! warm-up to measuring to stop:
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

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::BoxError;
use crate::framework::Caller;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// The largest latency recorded exactly; longer calls are recorded as this.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

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

/// One caller's tally.
struct Tally {
    latency: Histogram<u64>,
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
    let mut tasks = Vec::with_capacity(callers.len());
    for caller in callers {
        // Histograms are made here, before the window, so that the window counts no allocation
        // of the load generator's own.
        let latency = Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)?;
        tasks.push(tokio::spawn(drive(caller, phase.clone(), latency)));
    }

    tokio::time::sleep(plan.warmup).await;
    let start = probe().await;
    phase.store(MEASURE, Ordering::Relaxed);
    let opened = Instant::now();
    tokio::time::sleep(plan.duration).await;
    phase.store(STOP, Ordering::Relaxed);
    let window = opened.elapsed();
    let end = probe().await;

    let mut latency = Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)?;
    let (mut calls, mut errors, mut first_error) = (0, 0, None);
    let joined = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks)).await;
    for tally in joined.map_err(|_| "a caller did not finish its last call within 30 s")? {
        let tally = tally?;
        latency.add(&tally.latency)?;
        calls += tally.calls;
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
    }
    Ok(Measured { latency, calls, errors, first_error, window, start, end })
}

async fn drive<C: Caller>(mut caller: C, phase: Arc<AtomicU8>, mut latency: Histogram<u64>) -> Tally {
    let (mut calls, mut errors, mut first_error) = (0, 0, None);
    loop {
        let started = Instant::now();
        let result = caller.call().await;
        let elapsed = started.elapsed();
        let failed = result.is_err();
        match (phase.load(Ordering::Relaxed), result) {
            (WARMUP, _) => {}
            (MEASURE, Ok(())) => {
                latency.saturating_record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
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
    Tally { latency, calls, errors, first_error }
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
