//! `zrpc bench ADDR Service.method [JSON] -c 100 -d 10s`: many concurrent callers, then a
//! report as ghz and wrk give one.
//!
//! `-c` callers share one [`zrpc::Client`] (`--connections` connections per endpoint, 1 by
//! default: zrpc multiplexes) and each calls in a loop, the next call as soon as the last
//! answered, until `-n` calls in all were started or `-d` has passed (whichever comes first;
//! `-d 10s` when neither is given). Calls in flight when the time is up are waited for and
//! counted, so every call started is in the report, and the count is what the server handled.
//!
//! While it runs, stderr shows a progress bar when it is a terminal, and a plain line a second
//! otherwise (a CI log, a pipe). Then stdout gets the report: count, duration, calls/s,
//! latency average, fastest and slowest, the percentiles p50, p90, p99 and p99.9 from an HDR
//! histogram (hdrhistogram, 3 significant digits, so a percentile is within 0.1% of the true
//! latency), a histogram of ten equal latency bands, and the calls by status (`OK`,
//! `application error`, or a status code with its first message).
//!
//! Latency is the time from starting a call to its answer, measured in the caller, so it
//! includes the client's own queueing: with more callers than the server keeps up with, it
//! grows, as wrk's does. A oneway method's latency is the time to send it.
//!
//! Exit status: 0 when every call succeeded; 1 when any failed with a status; 3 when none did
//! but some answered an application error (see [`crate::Failure`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use zrpc::dynamic::{DynamicClient, JsonAnswer};
use zrpc::{Client, Context};

use crate::Failure;
use crate::options::{self, CallOptions, MethodCall};

/// How long a run lasts when neither `-n` nor `-d` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// The longest latency the histogram tells apart, in nanoseconds (an hour); longer ones count as
/// this. Its size follows: about 250 KiB at 3 significant digits.
const SLOWEST: u64 = 3_600_000_000_000;
/// Latencies a caller keeps before adding them to the shared histogram under its lock.
const BATCH: usize = 256;
/// How often the plain progress line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(1);
/// How often the progress bar is redrawn.
const BAR_EVERY: Duration = Duration::from_millis(100);

/// Load-test a method: concurrent callers, then latency percentiles, a histogram and the calls
/// by status.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    call: MethodCall,

    /// Callers calling at once.
    #[arg(short = 'c', long, default_value = "10", value_name = "CALLERS")]
    concurrency: NonZeroUsize,

    /// Stop after this many calls in all.
    #[arg(short = 'n', long = "total", value_name = "CALLS")]
    total: Option<u64>,

    /// Stop starting calls after this long (`10s`, `1m`, `500ms`); 10s when neither -n nor -d is
    /// given.
    #[arg(short = 'd', long, value_name = "DURATION", value_parser = options::duration)]
    duration: Option<Duration>,

    /// Connections to each endpoint, shared by the callers.
    #[arg(long, default_value = "1", value_name = "N")]
    connections: NonZeroUsize,

    #[command(flatten)]
    options: CallOptions,
}

/// When the run stops starting calls.
#[derive(Debug)]
struct Stop {
    total: Option<u64>,
    until: Option<Instant>,
    duration: Option<Duration>,
}

/// What the callers share while they run.
#[derive(Debug)]
struct Progress {
    started: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    latencies: Mutex<Histogram<u64>>,
}

/// How calls ended, by status: `OK`, `application error`, or a code's name, with the first
/// message seen for a code.
type Outcomes = BTreeMap<&'static str, (u64, Option<String>)>;

/// Counts `count` calls that ended as `what`, keeping the first message.
fn tally(outcomes: &mut Outcomes, what: &'static str, count: u64, message: Option<String>) {
    let entry = outcomes.entry(what).or_insert((0, None));
    entry.0 += count;
    if entry.1.is_none() {
        entry.1 = message;
    }
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let payload = options::arguments(args.call.args.as_deref())?;
    let histogram = Histogram::new_with_bounds(1, SLOWEST, 3)
        .map_err(|error| Failure::Failed(format!("cannot make a histogram: {error}")))?;
    let client = options::connect(&args.call.target, args.connections.get()).await?;
    let duration = match (args.total, args.duration) {
        (None, None) => Some(DEFAULT_DURATION),
        (_, duration) => duration,
    };
    let progress = Arc::new(Progress {
        started: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies: Mutex::new(histogram),
    });
    let start = Instant::now();
    // A duration too long for the clock (`-d 18446744073709551615s`) has no end: `-n` or
    // Ctrl-C ends the run.
    let stop = Arc::new(Stop { total: args.total, until: duration.and_then(|d| start.checked_add(d)), duration });
    let method: Arc<str> = args.call.method.as_str().into();
    let base = args.options.metadata();
    let callers: Vec<_> = (0..args.concurrency.get())
        .map(|_| {
            let caller = Caller {
                client: client.clone(),
                method: method.clone(),
                payload: payload.clone(),
                base: base.clone(),
                options: args.options.clone(),
                stop: stop.clone(),
                progress: progress.clone(),
            };
            tokio::spawn(caller.run())
        })
        .collect();
    let reporter = tokio::spawn(report_progress(progress.clone(), stop.clone(), start));
    let mut outcomes = Outcomes::new();
    for caller in callers {
        let theirs = caller.await.map_err(|error| Failure::Failed(format!("a caller stopped: {error}")))?;
        for (what, (count, message)) in theirs {
            tally(&mut outcomes, what, count, message);
        }
    }
    let elapsed = start.elapsed();
    reporter.abort();
    let _ = reporter.await;
    let latencies = progress.latencies.lock().map_err(|_| Failure::Failed("a caller panicked".to_owned()))?;
    print!("{}", summary(&latencies, elapsed, &outcomes));
    verdict(&outcomes)
}

/// The exit status a run's outcomes call for.
fn verdict(outcomes: &Outcomes) -> Result<(), Failure> {
    let count = |what: &str| outcomes.get(what).map_or(0, |(count, _)| *count);
    let total: u64 = outcomes.values().map(|(count, _)| count).sum();
    let failed = total - count(OK) - count(APPLICATION);
    if failed > 0 {
        return Err(Failure::Failed(format!("{failed} of {total} calls failed with a status")));
    }
    if count(APPLICATION) > 0 {
        return Err(Failure::Application(Some(format!(
            "{} of {total} calls answered an application error",
            count(APPLICATION)
        ))));
    }
    Ok(())
}

const OK: &str = "OK";
const APPLICATION: &str = "application error";

/// One caller: calls one after another until the run stops.
struct Caller {
    client: DynamicClient<Client>,
    method: Arc<str>,
    payload: Bytes,
    /// The metadata every call carries.
    base: Context,
    options: CallOptions,
    stop: Arc<Stop>,
    progress: Arc<Progress>,
}

impl Caller {
    async fn run(self) -> Outcomes {
        let mut outcomes = Outcomes::new();
        let mut batch = Vec::with_capacity(BATCH);
        while self.may_start() {
            let ctx = self.options.deadline(self.base.clone());
            let began = Instant::now();
            let answer = self.client.call(&self.method, self.payload.clone(), ctx).await;
            batch.push(u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX));
            match answer {
                Ok(JsonAnswer::Err(_)) => tally(&mut outcomes, APPLICATION, 1, None),
                Ok(_) => tally(&mut outcomes, OK, 1, None),
                Err(status) => {
                    self.progress.failed.fetch_add(1, Ordering::Relaxed);
                    // The message only once per code: a failing run should not format every one.
                    let name = status.code().name();
                    let message = (!outcomes.contains_key(name)).then(|| status.to_string());
                    tally(&mut outcomes, name, 1, message);
                }
            }
            self.progress.done.fetch_add(1, Ordering::Relaxed);
            if batch.len() == BATCH {
                self.flush(&mut batch);
            }
        }
        self.flush(&mut batch);
        outcomes
    }

    /// Whether another call may start, counting it as started if so.
    fn may_start(&self) -> bool {
        if self.stop.until.is_some_and(|until| Instant::now() >= until) {
            return false;
        }
        match self.stop.total {
            Some(total) => self.progress.started.fetch_add(1, Ordering::Relaxed) < total,
            None => true,
        }
    }

    fn flush(&self, batch: &mut Vec<u64>) {
        // A poisoned lock means another caller panicked; its latencies are lost with it.
        if let Ok(mut latencies) = self.progress.latencies.lock() {
            for &nanos in batch.iter() {
                latencies.saturating_record(nanos);
            }
        }
        batch.clear();
    }
}

/// Shows how far the run is on stderr until aborted: a bar on a terminal, a line a second
/// elsewhere.
async fn report_progress(progress: Arc<Progress>, stop: Arc<Stop>, start: Instant) {
    let line = |elapsed: Duration| {
        let done = progress.done.load(Ordering::Relaxed);
        let failed = progress.failed.load(Ordering::Relaxed);
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
        format!("{done} calls, {rate:.0}/s, {failed} failed")
    };
    if !std::io::stderr().is_terminal() {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PLAIN_EVERY, PLAIN_EVERY);
        loop {
            tick.tick().await;
            let elapsed = start.elapsed();
            eprintln!("zrpc bench: {:.0}s: {}", elapsed.as_secs_f64(), line(elapsed));
        }
    }
    // By calls when a count is given, else by time.
    let (length, template) = match (stop.total, stop.duration) {
        (Some(total), _) => (total, "{elapsed:>4} [{wide_bar}] {pos}/{len} calls; {msg}"),
        (None, duration) => (
            duration.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            "{elapsed:>4} [{wide_bar}] {msg}",
        ),
    };
    let bar = ProgressBar::new(length);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut tick = tokio::time::interval(BAR_EVERY);
    let _clear = ClearOnDrop(bar.clone());
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        match stop.total {
            Some(_) => bar.set_position(progress.done.load(Ordering::Relaxed)),
            None => bar.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
        }
        bar.set_message(line(elapsed));
    }
}

/// Takes the progress bar off the terminal when the reporting task is aborted.
struct ClearOnDrop(ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// The report.
fn summary(latencies: &Histogram<u64>, elapsed: Duration, outcomes: &Outcomes) -> String {
    let count = latencies.len();
    let mut out = String::new();
    let _ = writeln!(out, "Summary:");
    let _ = writeln!(out, "  Count:      {count}");
    let _ = writeln!(out, "  Total:      {}", latency(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)));
    let _ = writeln!(out, "  Calls/s:    {:.1}", count as f64 / elapsed.as_secs_f64().max(1e-9));
    if count > 0 {
        let _ = writeln!(out, "  Average:    {}", latency(latencies.mean() as u64));
        let _ = writeln!(out, "  Fastest:    {}", latency(latencies.min()));
        let _ = writeln!(out, "  Slowest:    {}", latency(latencies.max()));
        let _ = writeln!(out, "\nLatency distribution:");
        for (name, quantile) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
            let _ = writeln!(out, "  {name:<6} {}", latency(latencies.value_at_quantile(quantile)));
        }
        let _ = writeln!(out, "\nLatency histogram:");
        out.push_str(&histogram(latencies));
    }
    let _ = writeln!(out, "\nStatus distribution:");
    let width = outcomes.keys().map(|what| what.len()).max().unwrap_or(0) + 2;
    for (what, (count, message)) in outcomes {
        let label = format!("[{what}]");
        match message {
            Some(message) => {
                let _ = writeln!(out, "  {label:<width$} {count} calls; first: {message}");
            }
            None => {
                let _ = writeln!(out, "  {label:<width$} {count} calls");
            }
        }
    }
    out
}

/// Ten bands of equal width from the fastest to the slowest call, each with its count and a
/// bar, as ghz draws them.
fn histogram(latencies: &Histogram<u64>) -> String {
    const BANDS: u64 = 10;
    const BAR: u64 = 40;
    let (min, max) = (latencies.min(), latencies.max());
    let width = ((max - min) / BANDS).max(1);
    let mut counts = [0u64; BANDS as usize];
    for value in latencies.iter_recorded() {
        let band = ((value.value_iterated_to().saturating_sub(min)) / width).min(BANDS - 1);
        counts[band as usize] += value.count_at_value();
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    let labels: Vec<String> = (0..BANDS).map(|band| latency(min + width * (band + 1))).collect();
    let label_width = labels.iter().map(String::len).max().unwrap_or(0);
    let count_width = counts.iter().map(|count| count.to_string().len()).max().unwrap_or(1);
    let mut out = String::new();
    for (label, count) in labels.iter().zip(counts) {
        let bar = "∎".repeat((count * BAR / most) as usize);
        let _ = writeln!(out, "  {label:>label_width$} [{count:>count_width$}] |{bar}");
    }
    out
}

/// A latency in nanoseconds for people: `850ns`, `42.3µs`, `1.25ms`, `2.004s`.
fn latency(nanos: u64) -> String {
    let n = nanos as f64;
    match nanos {
        0..1_000 => format!("{nanos}ns"),
        1_000..1_000_000 => format!("{:.1}µs", n / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", n / 1e6),
        _ => format!("{:.3}s", n / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_read_in_the_unit_that_suits_them() {
        assert_eq!(latency(850), "850ns");
        assert_eq!(latency(42_300), "42.3µs");
        assert_eq!(latency(1_250_000), "1.25ms");
        assert_eq!(latency(2_004_000_000), "2.004s");
    }

    #[test]
    fn the_histogram_counts_every_call_once() {
        let mut latencies = Histogram::<u64>::new(3).expect("a histogram");
        for nanos in [1_000, 1_000, 5_000, 10_000] {
            latencies.record(nanos).expect("recorded");
        }
        let drawn = histogram(&latencies);
        let counts: u64 = drawn
            .lines()
            .map(|line| line.split('[').nth(1).and_then(|rest| rest.split(']').next()).unwrap_or("0"))
            .map(|count| count.trim().parse::<u64>().expect("a count"))
            .sum();
        assert_eq!(counts, 4);
        assert_eq!(drawn.lines().count(), 10);
    }

    #[test]
    fn the_exit_status_follows_the_worst_outcome() {
        let mut outcomes = Outcomes::new();
        outcomes.insert(OK, (5, None));
        assert!(verdict(&outcomes).is_ok());
        outcomes.insert(APPLICATION, (1, None));
        assert!(matches!(verdict(&outcomes), Err(Failure::Application(Some(_)))));
        outcomes.insert("Unavailable", (2, Some("gone".to_owned())));
        assert!(matches!(verdict(&outcomes), Err(Failure::Failed(m)) if m == "2 of 8 calls failed with a status"));
    }
}
