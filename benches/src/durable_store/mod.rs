//! The `durable_store` program: storage engines measured as the log of a durable outbox (issue
//! 13), to choose one by numbers.
//!
//! Every engine is driven through one `Store` trait with 300-byte messages keyed
//! by (destination, sequence), spread over 8 destinations. Each configuration runs on a fresh
//! directory for `--secs` seconds, every configuration `--rounds` times:
//!
//! | configuration | what it is |
//! |---|---|
//! | `process 1/txn` | one thread appends one message per transaction, handed to the OS (no fsync) |
//! | `process 64/txn` | the same, 64 messages per transaction, as a sender batches |
//! | `process steady` | 10,000 undelivered, then each step appends 64 and removes the 64 oldest (delete after ack) |
//! | `power 1 writer` | one thread, one message per transaction, durable (fsync) before returning |
//! | `power 100 writers` | 100 threads hand messages to one committer that writes everything waiting as one transaction and one fsync (group commit) |
//!
//! Then `--recovery` messages (1,000,000 by default) are appended by a child process, 64 per
//! transaction at the process level, and the child is killed with SIGKILL; the parent measures
//! the disk space and the time to reopen (open, then each destination's first and last sequence:
//! what an outbox reads to start delivering) and to read every message.
//!
//! Engines: `redb` (its only crash-safe durability is `Immediate`, an fsync per commit, so its
//! process level fsyncs too; `redb-none` shows it without, not crash-safe), `fjall`, `sqlite`
//! (rusqlite, bundled SQLite, WAL, `synchronous` OFF or FULL) and `seglog`, a minimal segment log
//! of our own (`seglog.rs`).

mod fjall;
mod redb;
mod seglog;
mod sqlite;
mod store;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use self::store::{Key, Level, PAYLOAD, Store, key};
use crate::BoxError;

const USAGE: &str = "\
durable_store: storage engines measured as the log of a durable outbox (issue 13)

usage: durable_store [--secs S] [--rounds N] [--engines a,b] [--recovery N] [--dir PATH]

  --secs S       seconds per configuration (default 3)
  --rounds N     runs of every configuration (default 2)
  --engines LIST among redb, redb-none, fjall, sqlite, seglog (default: all)
  --recovery N   messages for the reopen measurement, 0 to skip (default 1000000)
  --dir PATH     where the stores are written (default: a new directory under the system's temp dir)
";

/// The child mode that fills a store and waits to be killed.
const FILL: &str = "--fill";

/// The options of a run.
#[derive(Debug)]
pub struct Options {
    secs: Duration,
    rounds: usize,
    engines: Vec<String>,
    recovery: u64,
    dir: PathBuf,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, BoxError> {
        let mut options = Options {
            secs: Duration::from_secs(3),
            rounds: 2,
            engines: ENGINES.iter().map(|e| (*e).to_owned()).collect(),
            recovery: 1_000_000,
            dir: std::env::temp_dir().join(format!("zrpc-durable-store-{}", std::process::id())),
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))?;
            match flag.as_str() {
                "--secs" => options.secs = crate::args::seconds(value)?,
                "--rounds" => options.rounds = value.parse()?,
                "--engines" => options.engines = value.split(',').map(String::from).collect(),
                "--recovery" => options.recovery = value.parse()?,
                "--dir" => options.dir = PathBuf::from(value),
                _ => return Err(format!("unknown option {flag}\n\n{USAGE}").into()),
            }
        }
        if let Some(unknown) = options.engines.iter().find(|e| !ENGINES.contains(&e.as_str())) {
            return Err(format!("unknown engine {unknown}; the engines are {}", ENGINES.join(", ")).into());
        }
        Ok(options)
    }
}

const ENGINES: [&str; 5] = ["redb", "redb-none", "fjall", "sqlite", "seglog"];

fn open(engine: &str, dir: &Path) -> Result<Box<dyn Store>, BoxError> {
    std::fs::create_dir_all(dir)?;
    Ok(match engine {
        "redb" => Box::new(redb::Redb::open(dir, false)?),
        "redb-none" => Box::new(redb::Redb::open(dir, true)?),
        "fjall" => Box::new(fjall::Fjall::open(dir)?),
        "sqlite" => Box::new(sqlite::Sqlite::open(dir)?),
        "seglog" => Box::new(seglog::SegLog::open(dir)?),
        _ => return Err(format!("unknown engine {engine}").into()),
    })
}

/// Runs the program with its command-line arguments.
///
/// # Errors
/// If an option is wrong, a store fails, or stdout cannot be written.
pub fn main(args: &[String]) -> Result<(), BoxError> {
    match args {
        [fill, engine, dir, n] if fill == FILL => fill_and_wait(engine, Path::new(dir), n.parse()?),
        [help] if help == "--help" || help == "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        _ => {
            let options = Options::parse(args)?;
            let result = run(&options);
            // The stores are scratch; remove them whatever happened.
            let _ = std::fs::remove_dir_all(&options.dir);
            result
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    ProcessOne,
    ProcessBatch,
    ProcessSteady,
    PowerOne,
    PowerGroup,
}

const CONFIGS: [Config; 5] =
    [Config::ProcessOne, Config::ProcessBatch, Config::ProcessSteady, Config::PowerOne, Config::PowerGroup];

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::ProcessOne => "process 1/txn",
            Config::ProcessBatch => "process 64/txn",
            Config::ProcessSteady => "process steady +64 -64",
            Config::PowerOne => "power 1 writer",
            Config::PowerGroup => "power 100 writers, group",
        }
    }
}

/// One configuration's result.
#[derive(Debug)]
struct Row {
    rate: f64,
    /// p50 and p99 latency of one append, µs, where measured.
    latency: Option<(u64, u64)>,
    /// Messages per transaction (group commit), where it varies.
    per_txn: Option<f64>,
}

fn run(options: &Options) -> Result<(), BoxError> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "durable_store: messages of {PAYLOAD} bytes over {} destinations; {:.1} s per configuration, {} rounds",
        store::DESTINATIONS,
        options.secs.as_secs_f64(),
        options.rounds
    )?;
    writeln!(
        out,
        "machine: {}, {} cores (shared with other builds), {}; stores in {}",
        crate::machine::cpu_model(),
        crate::machine::cores(),
        crate::machine::today(),
        options.dir.display()
    )?;
    writeln!(out, "fdatasync floor (300 B write + fdatasync, 1 thread): {:.0}/s\n", fsync_floor(options)?)?;
    writeln!(
        out,
        "{:<10} {:<26} {:>5} {:>12} {:>9} {:>9} {:>9}",
        "engine", "configuration", "round", "msg/s", "p50 µs", "p99 µs", "msg/txn"
    )?;
    let mut rows: Vec<(String, Config, Vec<Row>)> = Vec::new();
    for round in 1..=options.rounds {
        for engine in &options.engines {
            for config in CONFIGS {
                // redb-none differs from redb only where nothing is fsynced.
                if engine == "redb-none" && matches!(config, Config::PowerOne | Config::PowerGroup) {
                    continue;
                }
                let dir = options.dir.join(format!("{engine}-{round}-{config:?}"));
                let row = measure(engine, config, &dir, options.secs)?;
                std::fs::remove_dir_all(&dir)?;
                writeln!(out, "{}", line(engine, config, &round.to_string(), &row))?;
                out.flush()?;
                match rows.iter_mut().find(|(e, c, _)| e == engine && *c == config) {
                    Some((_, _, runs)) => runs.push(row),
                    None => rows.push((engine.clone(), config, vec![row])),
                }
            }
        }
    }
    writeln!(out, "\nsummary: mean of the rounds, spread = (max - min) / mean; latency of the last round")?;
    writeln!(
        out,
        "{:<10} {:<26} {:>12} {:>8} {:>9} {:>9} {:>9}",
        "engine", "configuration", "msg/s", "spread", "p50 µs", "p99 µs", "msg/txn"
    )?;
    for (engine, config, runs) in &rows {
        let rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let spread =
            (rates.iter().cloned().fold(f64::MIN, f64::max) - rates.iter().cloned().fold(f64::MAX, f64::min)) / mean;
        let last = runs.last().ok_or("a configuration with no run")?;
        let (p50, p99) = last.latency.map_or(("-".into(), "-".into()), |(a, b)| (a.to_string(), b.to_string()));
        let per_txn = last.per_txn.map_or("-".into(), |m| format!("{m:.1}"));
        writeln!(
            out,
            "{engine:<10} {:<26} {mean:>12.0} {:>7.0}% {p50:>9} {p99:>9} {per_txn:>9}",
            config.name(),
            spread * 100.0
        )?;
    }
    if options.recovery > 0 {
        writeln!(out, "\nreopen after SIGKILL with {} undelivered messages (page cache warm)", options.recovery)?;
        writeln!(
            out,
            "{:<10} {:>10} {:>12} {:>10} {:>10} {:>12}",
            "engine", "fill msg/s", "disk MiB", "open ms", "scan ms", "messages"
        )?;
        for engine in &options.engines {
            if engine == "redb-none" {
                continue; // not crash-safe: a killed fill keeps nothing
            }
            let dir = options.dir.join(format!("{engine}-recovery"));
            let recovery = recover(engine, &dir, options.recovery)?;
            std::fs::remove_dir_all(&dir)?;
            writeln!(
                out,
                "{engine:<10} {:>10.0} {:>12.1} {:>10.0} {:>10.0} {:>12}",
                recovery.fill_rate,
                recovery.disk as f64 / (1 << 20) as f64,
                recovery.open.as_secs_f64() * 1e3,
                recovery.scan.as_secs_f64() * 1e3,
                recovery.messages
            )?;
            out.flush()?;
        }
    }
    Ok(())
}

fn line(engine: &str, config: Config, round: &str, row: &Row) -> String {
    let (p50, p99) = row.latency.map_or(("-".into(), "-".into()), |(a, b)| (a.to_string(), b.to_string()));
    let per_txn = row.per_txn.map_or("-".into(), |m| format!("{m:.1}"));
    format!("{engine:<10} {:<26} {round:>5} {:>12.0} {p50:>9} {p99:>9} {per_txn:>9}", config.name(), row.rate)
}

/// 300-byte writes, each followed by `fdatasync`, for a second: the disk's floor for the
/// power level without group commit.
fn fsync_floor(options: &Options) -> Result<f64, BoxError> {
    std::fs::create_dir_all(&options.dir)?;
    let path = options.dir.join("fsync-floor");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let start = Instant::now();
    let mut n = 0_u64;
    while start.elapsed() < Duration::from_secs(1) {
        file.write_all(&[7; PAYLOAD])?;
        file.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(rate)
}

fn payload() -> Vec<u8> {
    (0..PAYLOAD).map(|i| (i * 31 % 251) as u8).collect()
}

fn histogram() -> Result<Histogram<u64>, BoxError> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

fn measure(engine: &str, config: Config, dir: &Path, secs: Duration) -> Result<Row, BoxError> {
    let mut store = open(engine, dir)?;
    let body = payload();
    let mut next = 0_u64;
    let batch_of = |n: usize, next: &mut u64| -> Vec<(Key, &[u8])> {
        let batch = (0..n as u64).map(|i| (key(*next + i), body.as_slice())).collect();
        *next += n as u64;
        batch
    };
    match config {
        Config::ProcessOne | Config::ProcessBatch | Config::PowerOne => {
            let (n, level) = match config {
                Config::ProcessOne => (1, Level::Process),
                Config::ProcessBatch => (64, Level::Process),
                _ => (1, Level::Power),
            };
            let mut latencies = histogram()?;
            let start = Instant::now();
            while start.elapsed() < secs {
                let batch = batch_of(n, &mut next);
                let t = Instant::now();
                store.append(&batch, level)?;
                latencies.saturating_record(t.elapsed().as_micros() as u64);
            }
            let rate = next as f64 / start.elapsed().as_secs_f64();
            let latency =
                (level == Level::Power).then(|| (latencies.value_at_quantile(0.5), latencies.value_at_quantile(0.99)));
            Ok(Row { rate, latency, per_txn: None })
        }
        Config::ProcessSteady => {
            // 10,000 undelivered first, untimed; then append 64, remove the 64 oldest.
            for _ in 0..10_000 / 64 {
                let batch = batch_of(64, &mut next);
                store.append(&batch, Level::Process)?;
            }
            let (first, mut oldest) = (next, 0_u64);
            let start = Instant::now();
            while start.elapsed() < secs {
                let batch = batch_of(64, &mut next);
                store.append(&batch, Level::Process)?;
                let acked: Vec<Key> = (oldest..oldest + 64).map(key).collect();
                store.remove(&acked, Level::Process)?;
                oldest += 64;
            }
            Ok(Row { rate: (next - first) as f64 / start.elapsed().as_secs_f64(), latency: None, per_txn: None })
        }
        Config::PowerGroup => group_commit(store, secs, 100),
    }
}

/// `writers` threads each append one message at a time and wait until it is durable; one
/// committer thread writes whatever is waiting as one transaction with one fsync.
fn group_commit(mut store: Box<dyn Store>, secs: Duration, writers: usize) -> Result<Row, BoxError> {
    let (jobs, queue) = mpsc::channel::<(u64, usize)>();
    let mut replies = Vec::with_capacity(writers);
    let mut waits = Vec::with_capacity(writers);
    for _ in 0..writers {
        let (reply, wait) = mpsc::sync_channel::<bool>(1);
        replies.push(reply);
        waits.push(wait);
    }
    let counter = AtomicU64::new(0);
    let body = payload();
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<Row, BoxError> {
        let committer = scope.spawn(move || -> Result<(u64, u64), BoxError> {
            let (mut txns, mut messages) = (0_u64, 0_u64);
            let mut waiting = Vec::with_capacity(writers);
            while let Ok(job) = queue.recv() {
                waiting.push(job);
                while let Ok(job) = queue.try_recv() {
                    waiting.push(job);
                }
                let batch: Vec<(Key, &[u8])> = waiting.iter().map(|(n, _)| (key(*n), body.as_slice())).collect();
                let ok = store.append(&batch, Level::Power).is_ok();
                for (_, writer) in waiting.drain(..) {
                    // A writer that stopped waiting has gone; nothing to tell it.
                    let _ = replies[writer].send(ok);
                }
                txns += 1;
                messages += batch.len() as u64;
            }
            Ok((txns, messages))
        });
        let handles: Vec<_> = waits
            .into_iter()
            .enumerate()
            .map(|(writer, wait)| {
                let (jobs, counter) = (jobs.clone(), &counter);
                scope.spawn(move || -> Result<Histogram<u64>, BoxError> {
                    let mut latencies = histogram()?;
                    while start.elapsed() < secs {
                        let t = Instant::now();
                        jobs.send((counter.fetch_add(1, Ordering::Relaxed), writer))?;
                        if !wait.recv()? {
                            return Err("an append failed".into());
                        }
                        latencies.saturating_record(t.elapsed().as_micros() as u64);
                    }
                    Ok(latencies)
                })
            })
            .collect();
        drop(jobs);
        let mut latencies = histogram()?;
        for handle in handles {
            latencies.add(handle.join().map_err(|_| "a writer panicked")??)?;
        }
        let elapsed = start.elapsed();
        let (txns, messages) = committer.join().map_err(|_| "the committer panicked")??;
        Ok(Row {
            rate: messages as f64 / elapsed.as_secs_f64(),
            latency: Some((latencies.value_at_quantile(0.5), latencies.value_at_quantile(0.99))),
            per_txn: Some(messages as f64 / txns.max(1) as f64),
        })
    })
}

#[derive(Debug)]
struct Recovery {
    fill_rate: f64,
    disk: u64,
    open: Duration,
    scan: Duration,
    messages: u64,
}

/// Fills a store in a child process, kills it with SIGKILL once it says it is done, then reopens
/// the store here.
fn recover(engine: &str, dir: &Path, n: u64) -> Result<Recovery, BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([FILL, engine, &dir.display().to_string(), &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut said = String::new();
    BufReader::new(child.stdout.take().ok_or("the child's stdout")?).read_line(&mut said)?;
    child.kill()?; // SIGKILL
    child.wait()?;
    let fill_rate: f64 = said.trim().parse().map_err(|e| format!("the fill child said {said:?}: {e}"))?;
    let disk = disk_usage(dir)?;
    let start = Instant::now();
    let mut store = open(engine, dir)?;
    let recovered = store.recover()?;
    let open = start.elapsed();
    let start = Instant::now();
    let messages = store.scan()?;
    let scan = start.elapsed();
    let counted_at_open = recovered.messages.unwrap_or(messages);
    if recovered.destinations as u64 != store::DESTINATIONS || messages != n || counted_at_open != n {
        return Err(format!(
            "{engine} reopened with {} destinations and {messages} messages, {} and {n} written",
            recovered.destinations,
            store::DESTINATIONS
        )
        .into());
    }
    Ok(Recovery { fill_rate, disk, open, scan, messages })
}

/// The child: appends `n` messages, 64 per transaction at the process level, prints the rate,
/// and waits for its parent's SIGKILL without closing the store.
fn fill_and_wait(engine: &str, dir: &Path, n: u64) -> Result<(), BoxError> {
    let mut store = open(engine, dir)?;
    let body = payload();
    let start = Instant::now();
    let mut next = 0;
    while next < n {
        let batch: Vec<(Key, &[u8])> = (next..n.min(next + 64)).map(|i| (key(i), body.as_slice())).collect();
        store.append(&batch, Level::Process)?;
        next += batch.len() as u64;
    }
    println!("{:.0}", n as f64 / start.elapsed().as_secs_f64());
    std::io::stdout().flush()?;
    // Parked until killed: the store is never closed, as in a crash.
    loop {
        std::thread::park();
    }
}

/// Bytes allocated on disk under `dir` (blocks, not lengths: a preallocated file counts what it
/// holds on the disk).
fn disk_usage(dir: &Path) -> Result<u64, BoxError> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { disk_usage(&entry.path())? } else { meta.blocks() * 512 };
    }
    Ok(total)
}
