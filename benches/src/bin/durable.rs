//! Durable calls measured end to end, for issue 13's targets and the README's numbers: the same
//! oneway call sent plainly and through an outbox to a server with an inbox, in one run.
//!
//! ```text
//! cargo build --release -p zrpc-benches --features durable --bin durable
//! target/release/durable --messages 200000 --callers 100 --rounds 3 --recovery 1000000
//! ```
//!
//! - `oneway`: the plain floor: a generated client's oneway calls over one `Channel`, counted
//!   when the receiver's handler has run.
//! - `process`: through an outbox at `Durability::Process` to a server with an inbox at the
//!   same level: from the first call until the receiver has handled the last message.
//! - `power`: both at `Durability::Power` (group-committed `fdatasync`), with the calls'
//!   latency (until the message is synced in the outbox) as percentiles.
//! - `backlog`: the process level with the receiver's handlers held until every message is
//!   recorded in its inbox, then let go: handled/s is how fast one stream's backlog is
//!   drained (its handlers run one at a time, in order), acked/s how fast it was recorded.
//! - `recovery`: an outbox filled with `--recovery` undelivered messages, closed and opened
//!   again: the time `Outbox::open` takes.
//!
//! `--unsynced-marks N` (default 0) is the power level's inbox's `InboxConfig::unsynced_marks`:
//! with 0 one stream is handled at the disk's sync rate; with more its marks share syncs.
//!
//! `--outbox-level process` keeps the senders' outboxes at the process level in the `power`
//! mode, so that only the receiver syncs: what one receiver takes from many senders that each
//! have a disk of their own, rather than `S` outboxes syncing one after another on this one.
//!
//! `--senders S` (default 1) spreads the callers over `S` senders, each with its own outbox
//! (its own name, log and writer) and its own connection: the receiver then sees `S`
//! streams, whose handled marks share its syncs at the power level, where one stream waits for
//! a sync per handled message (its next handler starts only once the last one's return is
//! durable; see `zrpc::durable`). With `--senders`, `oneway` uses as many connections.
//!
//! Sender and receiver share the process and its two cores, as they share the machine in the
//! rest of the benchmarks. Logs go to `--dir` (default: a temp dir under `target/`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Notify;
use zrpc::durable::{Durability, Inbox, InboxConfig, Outbox, OutboxConfig};
use zrpc::{Channel, Server};
use zrpc_benches::BoxError;

/// The receiver's service.
#[zrpc::service]
pub trait Ledger {
    /// Records entry `n` with its memo.
    #[zrpc(oneway)]
    async fn record(&self, n: u64, memo: String);
}

/// Counts handled messages and wakes the bench at the target; in the `backlog` mode, holds
/// the handlers until `held` is let go.
#[derive(Clone)]
struct Books {
    handled: Arc<AtomicU64>,
    target: Arc<AtomicU64>,
    done: Arc<Notify>,
    held: Arc<tokio::sync::watch::Sender<bool>>,
    /// Whether `held` may be true: a plain load on the handlers' path, not the watch's lock.
    holding: Arc<std::sync::atomic::AtomicBool>,
}

impl Ledger for Books {
    async fn record(&self, _n: u64, _memo: String) {
        if self.holding.load(Ordering::Acquire) {
            let _ = self.held.subscribe().wait_for(|held| !held).await;
        }
        let handled = self.handled.fetch_add(1, Ordering::Relaxed) + 1;
        if handled == self.target.load(Ordering::Relaxed) {
            self.done.notify_one();
        }
    }
}

/// What one run measured.
struct Measured {
    per_second: f64,
    /// Durable modes: messages acknowledged by the receiver's inbox per second.
    acknowledged_per_second: Option<f64>,
    latency: Histogram<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Oneway,
    Durable(Durability),
    /// The process level, handled only once all is recorded.
    Backlog,
}

struct Args {
    messages: u64,
    callers: u64,
    /// Outboxes (durable modes) or connections (oneway) the callers are spread over.
    senders: u64,
    /// `InboxConfig::unsynced_marks` at the power level.
    unsynced_marks: usize,
    /// The outboxes' level when it is not the mode's (`--outbox-level process`).
    outbox_level: Option<Durability>,
    rounds: u32,
    recovery: u64,
    dir: PathBuf,
    /// The modes to run (all by default).
    only: Option<String>,
}

fn parse(args: &[String]) -> Result<Args, BoxError> {
    let mut parsed = Args {
        messages: 200_000,
        callers: 100,
        senders: 1,
        unsynced_marks: 0,
        outbox_level: None,
        rounds: 3,
        recovery: 1_000_000,
        dir: PathBuf::from("target/durable-bench"),
        only: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--messages" => parsed.messages = value()?.parse()?,
            "--callers" => parsed.callers = value()?.parse()?,
            "--senders" => parsed.senders = value()?.parse()?,
            "--unsynced-marks" => parsed.unsynced_marks = value()?.parse()?,
            "--outbox-level" => {
                parsed.outbox_level = match value()?.as_str() {
                    "process" => Some(Durability::Process),
                    "power" => Some(Durability::Power),
                    other => return Err(format!("--outbox-level is process or power, not {other}").into()),
                }
            }
            "--rounds" => parsed.rounds = value()?.parse()?,
            "--recovery" => parsed.recovery = value()?.parse()?,
            "--dir" => parsed.dir = PathBuf::from(value()?),
            "--only" => parsed.only = Some(value()?.clone()),
            "--help" | "-h" => {
                println!(
                    "durable [--messages N] [--callers C] [--senders S] [--unsynced-marks N] [--outbox-level process|power] [--rounds R] [--recovery N] [--dir PATH] [--only oneway|process|power|backlog]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args).await {
        eprintln!("durable: {e}");
        std::process::exit(1);
    }
}

async fn run(args: &[String]) -> Result<(), BoxError> {
    let args = parse(args)?;
    println!(
        "cpu: {}  messages: {}  callers: {}  senders: {}  unsynced marks: {}  outbox level: {}  rounds: {}",
        zrpc_benches::machine::cpu_model(),
        args.messages,
        args.callers,
        args.senders,
        args.unsynced_marks,
        args.outbox_level.map_or("the mode's", |level| if level == Durability::Process { "process" } else { "power" }),
        args.rounds
    );
    println!(
        "{:<10} {:>5} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "mode", "round", "handled/s", "acked/s", "p50 µs", "p99 µs", "p999 µs"
    );
    for round in 1..=args.rounds {
        for mode in [Mode::Oneway, Mode::Durable(Durability::Process), Mode::Durable(Durability::Power), Mode::Backlog]
        {
            let name = match mode {
                Mode::Oneway => "oneway",
                Mode::Durable(Durability::Process) => "process",
                Mode::Durable(_) => "power",
                Mode::Backlog => "backlog",
            };
            if args.only.as_deref().is_some_and(|only| only != name) {
                continue;
            }
            let dir = args.dir.join(format!("{name}-{round}"));
            let _ = std::fs::remove_dir_all(&dir);
            let measured = measure(mode, &args, &dir).await?;
            let _ = std::fs::remove_dir_all(&dir);
            let q = |q: f64| measured.latency.value_at_quantile(q);
            let acknowledged = measured.acknowledged_per_second.map_or("-".to_owned(), |a| format!("{a:.0}"));
            println!(
                "{name:<10} {round:>5} {:>12.0} {acknowledged:>12} {:>10} {:>10} {:>10}",
                measured.per_second,
                q(0.5),
                q(0.99),
                q(0.999)
            );
        }
    }
    if args.recovery > 0 {
        let dir = args.dir.join("recovery");
        let _ = std::fs::remove_dir_all(&dir);
        let (filled, reopened) = recovery(&dir, args.recovery).await?;
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "recovery: {} undelivered messages logged in {:.2} s; Outbox::open took {:.3} s",
            args.recovery,
            filled.as_secs_f64(),
            reopened.as_secs_f64()
        );
    }
    Ok(())
}

/// One run of `mode`: `args.messages` calls from `args.callers` tasks, timed until the
/// receiver has handled the last.
async fn measure(mode: Mode, args: &Args, dir: &Path) -> Result<Measured, BoxError> {
    let books = Books {
        handled: Arc::default(),
        target: Arc::new(AtomicU64::new(args.messages)),
        done: Arc::default(),
        held: Arc::new(tokio::sync::watch::Sender::new(mode == Mode::Backlog)),
        holding: Arc::new(std::sync::atomic::AtomicBool::new(mode == Mode::Backlog)),
    };
    let level = match mode {
        Mode::Durable(level) => level,
        Mode::Oneway | Mode::Backlog => Durability::Process,
    };
    let mut builder = Server::builder().name("ledger");
    let inbox = match mode {
        Mode::Oneway => None,
        Mode::Durable(_) | Mode::Backlog => {
            let config = InboxConfig::default().durability(level).unsynced_marks(args.unsynced_marks);
            let inbox = Inbox::open(dir.join("inbox"), config).await?;
            builder = builder.inbox(inbox.clone());
            Some(inbox)
        }
    };
    let server = builder.add_service(LedgerServer::new(books.clone())).bind("tcp://127.0.0.1:0").await?;
    let address = server.local_addr().clone();
    let handle = server.handle();
    let serving = tokio::spawn(server.serve());
    if args.senders == 0 || args.senders > args.callers {
        return Err("--senders must be between 1 and --callers".into());
    }
    let mut clients = Vec::new();
    let mut outboxes = Vec::new();
    for sender in 1..=args.senders {
        let name = format!("shop-{sender}");
        let channel = Channel::builder(address.clone()).name(name.as_str()).connect().await?;
        clients.push(match mode {
            Mode::Oneway => LedgerClient::new(Caller::Plain(channel)),
            Mode::Durable(_) | Mode::Backlog => {
                let config = OutboxConfig::new(name.as_str()).durability(args.outbox_level.unwrap_or(level));
                let outbox = Outbox::open(dir.join(format!("outbox-{sender}")), config).await?;
                let destination = outbox.destination("ledger", channel);
                outboxes.push(outbox);
                LedgerClient::new(Caller::Durable(destination))
            }
        });
    }
    let memo = "x".repeat(64);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut callers = Vec::new();
    // Each caller keeps its latencies in a vector sized for its share, recorded into one
    // histogram once the clock has stopped: a histogram per caller was a cold one touched on
    // every call (3% of the process bench's samples in `perf`).
    let share = (args.messages / args.callers + 1) as usize;
    for caller in 0..args.callers {
        let client = clients[(caller % args.senders) as usize].clone();
        let (next, memo, total) = (next.clone(), memo.clone(), args.messages);
        callers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<_, zrpc::Status>(latencies);
                }
                let sent = Instant::now();
                client.record(n, memo.clone()).await?;
                latencies.push(sent.elapsed().as_micros() as u64);
            }
        }));
    }
    let mut latencies = Vec::with_capacity(callers.len());
    for caller in callers {
        latencies.push(caller.await??);
    }
    let mut acknowledged_per_second = None;
    for client in &clients {
        if let Caller::Durable(destination) = client.inner() {
            destination.delivered().await?;
            acknowledged_per_second = Some(args.messages as f64 / started.elapsed().as_secs_f64());
        }
    }
    // The backlog: every message is recorded and none handled (the first is held in its
    // handler); from here, only the draining is timed.
    let started = if mode == Mode::Backlog {
        books.holding.store(false, Ordering::Release);
        books.held.send_replace(false);
        Instant::now()
    } else {
        started
    };
    if books.handled.load(Ordering::Relaxed) < args.messages {
        tokio::time::timeout(Duration::from_secs(600), books.done.notified()).await?;
    }
    let elapsed = started.elapsed();
    for outbox in outboxes {
        outbox.close().await?;
    }
    handle.shutdown();
    serving.await??;
    if let Some(inbox) = inbox {
        inbox.close().await?;
    }
    // Recorded after the clock stopped.
    let mut latency = Histogram::<u64>::new(3)?;
    for micros in latencies.into_iter().flatten() {
        latency.record(micros)?;
    }
    Ok(Measured { per_second: args.messages as f64 / elapsed.as_secs_f64(), acknowledged_per_second, latency })
}

/// Fills an outbox with `messages` undelivered messages, closes it and times its reopening.
async fn recovery(dir: &Path, messages: u64) -> Result<(Duration, Duration), BoxError> {
    let outbox = Outbox::open(dir, OutboxConfig::new("shop-1")).await?;
    // Nobody listens at this address: the messages stay undelivered.
    let channel = Channel::builder("tcp://127.0.0.1:9".parse::<zrpc::Address>()?).connect_lazy();
    let client = LedgerClient::new(outbox.destination("ledger", channel));
    let memo = "x".repeat(64);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..100 {
        let (client, next, memo) = (client.clone(), next.clone(), memo.clone());
        callers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < messages {
                client.record(0, memo.clone()).await?;
            }
            Ok::<_, zrpc::Status>(())
        }));
    }
    for caller in callers {
        caller.await??;
    }
    let filled = started.elapsed();
    outbox.close().await?;
    let started = Instant::now();
    let reopened = Outbox::open(dir, OutboxConfig::new("shop-1")).await?;
    let elapsed = started.elapsed();
    let pending: u64 = reopened.pending().await?.iter().map(|p| p.next_sequence - p.first_unacknowledged).sum();
    if pending != messages {
        return Err(format!("reopened with {pending} messages pending, not {messages}").into());
    }
    reopened.close().await?;
    Ok((filled, elapsed))
}

/// The plain channel or the outbox's destination, under one client type.
#[derive(Clone)]
enum Caller {
    Plain(Channel),
    Durable(zrpc::durable::Destination),
}

impl tower::Service<zrpc::Request> for Caller {
    type Response = zrpc::Response;
    type Error = zrpc::Status;
    type Future = futures::future::BoxFuture<'static, Result<zrpc::Response, zrpc::Status>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), zrpc::Status>> {
        match self {
            Caller::Plain(channel) => channel.poll_ready(cx),
            Caller::Durable(destination) => destination.poll_ready(cx),
        }
    }

    fn call(&mut self, request: zrpc::Request) -> Self::Future {
        match self {
            Caller::Plain(channel) => Box::pin(channel.call(request)),
            Caller::Durable(destination) => destination.call(request),
        }
    }
}
