//! The `compare` program: zrpc against tarpc, tonic and two raw TCP floors, in one run.
//!
//! ```text
//! cargo run -p zrpc-benches --release --bin compare -- [--duration SECS] [--warmup SECS]
//!     [--rounds N] [--frameworks zrpc,tarpc,...] [--points 1x1,100x1,...] [--csv PATH]
//!     [--chart PATH.svg] [--codec postcard|json|msgpack]
//! ```
//!
//! # What is measured, and how
//!
//! - Every framework serves the same echo: the rpcx benchmark message
//!   ([`BenchmarkMessage::filled`](crate::BenchmarkMessage::filled), ~40 fields; the raw floors
//!   send its postcard encoding as opaque bytes; `zrpc-text` declares its strings as
//!   `zrpc::Text`, the same bytes on the wire). Callers send the reply back as the next request,
//!   so no framework pays for building a message per call.
//! - Server and client are separate processes on loopback: in each round a fresh server child
//!   per framework (`compare serve <framework>`, the same binary) serves all its points; the
//!   parent is the client. Within a round the frameworks take turns at each point before the
//!   next point, a different one first each round (`--by-framework`: each framework at all
//!   its points before the next, the order until 2026-12-02), so that the figures a ratio
//!   compares are measured seconds apart on a machine whose speed moves (see
//!   `measure_round`). Both use tokio's multi-threaded runtime with its default worker count (one
//!   per core), as a user's `#[tokio::main]` would; the client gets a fresh runtime per point.
//! - A point is `CALLERSxCONNS`: that many concurrent callers spread round-robin over that many
//!   connections (`raw-pingpong` always uses one connection per caller). Each point runs a
//!   warm-up, then a measured window (see [`load`]).
//! - Reported per point: completed calls per second; mean, p50, p99, p99.9 latency (HdrHistogram,
//!   one for all callers, see [`load`]); allocations per call in the client and in the server (the
//!   counting allocator of [`alloc`](crate::alloc), read at both edges of the window on both
//!   sides; the server's count over the `STATS` pipe of [`proc`](crate::proc)), CPU time per
//!   call of both processes together (`/proc/PID/stat`, 10 ms ticks, read at the same edges),
//!   and the server's peak RSS (`VmHWM`) so far. CPU per call moves far less from run to run
//!   than throughput on a shared machine, which makes it the number to compare builds by.
//!   Each point's line on stderr also says, per thousand calls in the window, how often the
//!   kernel moved each process's threads between CPUs and preempted them
//!   (`/proc/PID/task/*/sched`): on a 2-core VM a pass of one build runs in one of two modes,
//!   fewer moves and faster or more and slower, and these help tell a round's apart
//!   (docs/PERFORMANCE.md). Built with `RUSTFLAGS="--cfg tokio_unstable"`, the line also says
//!   how often the client runtime's workers parked (ran out of work and slept until woken: a
//!   system call to sleep and one to wake, a context switch each) and stole from each other.
//! - Then the ratios the project's targets are stated in: zrpc's throughput over tarpc's, the
//!   raw multiplexer's and tonic's, p99 over tarpc's, and at one caller the p50 over the raw
//!   ping-pong's.
//!
//! Loopback on one machine means client and server compete for the same cores: what is compared
//! is CPU cost per call as much as latency. Absolute numbers move between runs and machines;
//! the ratios are what to read.

use std::path::PathBuf;
use std::time::Duration;

use crate::BoxError;
use crate::framework::{Framework, Name, Visit};
use crate::load::{self, Plan, Point};
use crate::proc::{CpuTime, SERVE, Scheduling, ServerProcess};
use crate::report::{self, MessageAllocs, Row};
use crate::scale::Set;

/// The command line, parsed.
#[derive(Debug, Clone)]
pub struct Options {
    /// Warm-up and window per point.
    pub plan: Plan,
    /// Frameworks to measure, in order.
    pub frameworks: Vec<Name>,
    /// Points to measure, in order.
    pub points: Vec<Point>,
    /// Where to write the CSV, if anywhere.
    pub csv: Option<PathBuf>,
    /// Where to write the SVG chart, if anywhere.
    pub chart: Option<PathBuf>,
    /// How many times to measure every framework; each reported figure is the median.
    pub rounds: usize,
    /// Instead of the comparison: hold this many idle zrpc connections and report the server's
    /// memory per connection.
    pub idle_conns: Option<usize>,
    /// What to install in both processes to record zrpc's calls (see [`crate::observe`]).
    pub observe: Option<String>,
    /// The codec the `zrpc` and `zrpc-text` callers use (the server answers in it).
    pub codec: zrpc::CodecId,
    /// Instead of the comparison: these sets of endpoints behind one `Client` (see
    /// [`crate::scale`]).
    pub scale: Option<Vec<Set>>,
    /// The balancer of `--scale`'s client (see [`crate::scale::BALANCERS`]).
    pub balance: String,
    /// Worker threads of the client's runtime; `None`: tokio's default, one per core.
    pub client_workers: Option<usize>,
    /// Worker threads of the server child's runtime; `None`: tokio's default.
    pub server_workers: Option<usize>,
    /// Measure each framework at all its points before the next framework's turn (the order
    /// until 2026-12-02), rather than every framework at a point before the next point.
    pub by_framework: bool,
}

/// The usage text.
pub const USAGE: &str = "\
usage: compare [--duration SECS] [--warmup SECS] [--rounds N] [--frameworks a,b,...]
               [--points CxN,...] [--csv PATH] [--chart PATH.svg] [--codec NAME]
               [--observe metrics,spans] [--scale SETS [--balance NAME]]
               [--client-workers N] [--server-workers N] [--by-framework]

Measures echo RPCs of the rpcx benchmark message over loopback, server and client in separate
processes: throughput, latency percentiles, allocations per call, server peak RSS.

  --duration SECS    measured window per point (default 5)
  --warmup SECS      warm-up per point, not measured (default 1)
  --rounds N         measure every framework N times, taking turns, and report the median of
                     each figure (default 1)
  --frameworks LIST  any of zrpc, zrpc-text, zrpc-reverse (the server calls the client),
                     zrpc-zstd (zstd on every message), tarpc, tonic (feature `tonic`),
                     raw-mux, raw-mux-postcard (raw-mux encoding the message as zrpc
                     does), raw-pingpong (default: all compiled in)
  --points LIST      CALLERSxCONNECTIONS, e.g. 100x1 (default 1x1,100x1,1000x1,1000x8)
  --csv PATH         also write the rows as CSV
  --chart PATH.svg   also draw throughput and p99 by framework and point
  --codec NAME       the codec of the zrpc and zrpc-text callers: postcard (default), json, or
                     msgpack (built with `--features codecs`)
  --idle-conns N     instead: open N idle zrpc connections and report the server's resident
                     memory per connection (each process needs N file descriptors)
  --observe LIST     record zrpc's calls in both processes: metrics (a Prometheus recorder),
                     spans (a tracing subscriber); needs the feature `observe`, which also
                     compiles zrpc's metrics in
  --scale [SETS]     instead: 100 callers on one Client (P2c, Failover) over each set of
                     endpoints, LIVE[xCONNECTIONS][+DEAD] (default 1,1x100,100,1+99,1+1999):
                     live servers in one child process, dead addresses refusing connections
  --balance NAME     the balancer of --scale's client: p2c (default), least-active, random,
                     round-robin, weighted-round-robin, consistent-hash
  --client-workers N worker threads of the client's tokio runtime (default: tokio's, one per
                     core, or TOKIO_WORKER_THREADS)
  --server-workers N the same for the server child's runtime
  --by-framework     within a round, measure each framework at all points before the next
                     (the order until 2026-12-02); by default every framework takes its turn
                     at a point before the next point, the first a different one each round
";

impl Options {
    /// Parses the arguments after the program name.
    ///
    /// # Errors
    /// On an unknown option, a missing or malformed value.
    pub fn parse(args: &[String]) -> Result<Options, BoxError> {
        let mut options = Options {
            plan: Plan { warmup: Duration::from_secs(1), duration: Duration::from_secs(5) },
            frameworks: Name::all(),
            points: Point::DEFAULT.to_vec(),
            csv: None,
            chart: None,
            rounds: 1,
            idle_conns: None,
            observe: None,
            codec: zrpc::CodecId::Postcard,
            scale: None,
            balance: crate::scale::BALANCERS[0].to_owned(),
            client_workers: None,
            server_workers: None,
            by_framework: false,
        };
        let mut args = args.iter().peekable();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n\n{USAGE}"));
            match arg.as_str() {
                "--duration" => options.plan.duration = crate::args::seconds(value()?)?,
                "--warmup" => options.plan.warmup = crate::args::seconds(value()?)?,
                "--frameworks" => {
                    options.frameworks = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?;
                }
                "--points" => options.points = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?,
                "--csv" => options.csv = Some(value()?.into()),
                "--chart" => options.chart = Some(value()?.into()),
                "--rounds" => options.rounds = value()?.parse::<usize>()?.max(1),
                "--idle-conns" => options.idle_conns = Some(value()?.parse()?),
                "--observe" => options.observe = Some(value()?.clone()),
                "--codec" => options.codec = codec(value()?)?,
                "--scale" => {
                    // The list is optional: the next argument is it unless it is an option.
                    let sets = match args.next_if(|next| !next.starts_with("--")) {
                        Some(sets) => sets.as_str(),
                        None => crate::scale::DEFAULT_SETS,
                    };
                    options.scale = Some(sets.split(',').map(str::parse).collect::<Result<_, _>>()?);
                }
                "--client-workers" => options.client_workers = Some(workers(value()?)?),
                "--server-workers" => options.server_workers = Some(workers(value()?)?),
                "--by-framework" => options.by_framework = true,
                "--balance" => {
                    let name = value()?;
                    crate::scale::balancer(name)?;
                    options.balance = name.clone();
                }
                other => return Err(format!("unknown argument {other:?}\n\n{USAGE}").into()),
            }
        }
        if options.frameworks.is_empty() || options.points.is_empty() {
            return Err("nothing to measure".into());
        }
        Ok(options)
    }
}

/// A count of worker threads: at least one.
fn workers(count: &str) -> Result<usize, BoxError> {
    match count.parse()? {
        0 => Err("a runtime needs at least one worker thread".into()),
        n => Ok(n),
    }
}

/// The codec named `name`, if this build has it and it can carry the benchmark message.
fn codec(name: &str) -> Result<zrpc::CodecId, BoxError> {
    let Some(codec) = zrpc::CodecId::ALL.into_iter().find(|codec| codec.to_string() == name) else {
        return Err(format!("unknown codec {name:?}\n\n{USAGE}").into());
    };
    if codec == zrpc::CodecId::Raw {
        return Err("the raw codec carries byte strings, not the benchmark message".into());
    }
    if !codec.is_enabled() {
        return Err(format!("the {codec} codec is not compiled in: build with `--features codecs`").into());
    }
    Ok(codec)
}

/// The program: `serve <framework>` as a server child, the comparison otherwise.
///
/// # Errors
/// Whatever stops the run; a message for the user.
pub fn main(args: &[String]) -> Result<(), BoxError> {
    match args {
        [serve, name] if serve == SERVE && name.starts_with(crate::scale::CHILD_PREFIX) => {
            crate::scale::serve_child(name)
        }
        [serve, framework] if serve == SERVE => serve_child(framework.parse()?),
        [help] if help == "--help" || help == "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        _ => {
            let options = Options::parse(args)?;
            if let Some(observe) = &options.observe {
                crate::observe::install(observe)?;
            }
            match (options.idle_conns, &options.scale) {
                (Some(conns), _) => idle_connections(conns),
                (None, Some(sets)) => crate::scale::run(sets, &options.balance, options.plan),
                (None, None) => run(&options),
            }
        }
    }
}

/// Opens `conns` zrpc connections to a server child, waits until each has finished its
/// handshake (so the server holds its whole per-connection state), and reports how much the
/// server's resident memory grew per connection.
///
/// # Errors
/// If the server cannot be started or a connection cannot be made (raise `ulimit -n`).
pub fn idle_connections(conns: usize) -> Result<(), BoxError> {
    let server = ServerProcess::spawn(Name::Zrpc, None)?;
    let addr = server.addr();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let before = crate::proc::rss_kib(server.id()).ok_or("cannot read the server's VmRSS")?;
    let channels = runtime.block_on(async {
        let mut channels = Vec::with_capacity(conns);
        for opened in 0..conns {
            let channel = zrpc::Channel::builder(addr.into())
                .connect()
                .await
                .map_err(|e| format!("connection {opened} of {conns} failed: {e}"))?;
            channels.push(channel);
        }
        Ok::<_, BoxError>(channels)
    })?;
    let after = crate::proc::rss_kib(server.id()).ok_or("cannot read the server's VmRSS")?;
    let grown = after.saturating_sub(before);
    println!(
        "zrpc server holding {conns} idle connections: VmRSS {before} KiB -> {after} KiB, \
         {:.1} KiB per connection (target: under 64 KiB)",
        grown as f64 / conns.max(1) as f64
    );
    drop(channels);
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// Runs the comparison: prints the table on stdout, progress on stderr.
///
/// # Errors
/// If a server cannot be started or a point cannot be measured.
pub fn run(options: &Options) -> Result<(), BoxError> {
    crate::framework::zrpc::set_codec(options.codec);
    let mut rounds = Vec::with_capacity(options.rounds);
    for round in 1..=options.rounds {
        if options.rounds > 1 {
            eprintln!("round {round} of {}", options.rounds);
        }
        rounds.push(measure_round(options, round - 1)?);
    }
    let rows = report::median_rows(&rounds);
    let heading = heading(options);
    let message_allocs = decode_allocations();
    print!("{heading}\n\n{}", report::table(&rows, message_allocs));
    if rounds.len() > 1 {
        print!("{}", report::round_ratios(&rounds));
    }
    print!("{}", report::target_rounds(&rounds, message_allocs));
    if let Some(path) = &options.csv {
        std::fs::write(path, report::csv(&rows))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &options.chart {
        let title = format!("zrpc vs peers, echo of the rpcx message on loopback ({})", crate::machine::today());
        crate::chart::render(&rows, path, &title)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// One round: every framework at every point, a server child per framework.
///
/// The frameworks take turns at each point, so that the figures a ratio compares were measured
/// seconds apart, not a whole framework's points apart: this VM's speed moves by tens of
/// percent within seconds (docs/PERFORMANCE.md, "The machine's own speed").
/// Round `index` starts with framework `index` (modulo their number), so that no framework is
/// always the one measured first, or always after the same other. Rows come back in the
/// options' order, frameworks then points, whatever order they were measured in.
fn measure_round(options: &Options, index: usize) -> Result<Vec<Row>, BoxError> {
    let frameworks = &options.frameworks;
    // Every server is up for the whole round, in the frameworks' order; those not being
    // measured are idle.
    let mut servers = Vec::with_capacity(frameworks.len());
    for &name in frameworks {
        servers.push(ServerProcess::spawn(name, options.server_workers)?);
    }
    let mut rows = Vec::new();
    for turn @ (framework, point) in turns(options, index) {
        let name = frameworks[framework];
        eprintln!("{name}:");
        let point = options.points[point];
        rows.push((turn, name.visit(MeasurePoint { options, server: &mut servers[framework], point })??));
    }
    rows.sort_by_key(|&(turn, _)| turn);
    Ok(rows.into_iter().map(|(_, row)| row).collect())
}

/// The order of round `index`'s measurements (see [`measure_round`]): each a framework and a
/// point, by their places in the options.
fn turns(options: &Options, index: usize) -> Vec<(usize, usize)> {
    let (count, points) = (options.frameworks.len(), options.points.len());
    if options.by_framework {
        return (0..count).flat_map(|framework| (0..points).map(move |point| (framework, point))).collect();
    }
    let rotated = move |turn: usize| (turn + index) % count;
    (0..points).flat_map(|point| (0..count).map(move |turn| (rotated(turn), point))).collect()
}

/// [`measure`] for the framework a [`Name`] chooses, at one point, against its server.
struct MeasurePoint<'a> {
    options: &'a Options,
    server: &'a mut ServerProcess,
    point: Point,
}

impl Visit for MeasurePoint<'_> {
    type Output = Result<Row, BoxError>;

    fn visit<F: Framework>(self) -> Self::Output {
        measure::<F>(self.options, self.server, self.point)
    }
}

/// What is read at both edges of a measured window.
struct Probe {
    client_allocs: u64,
    server_allocs: u64,
    /// CPU time of the client and of the server, where `/proc` tells.
    cpu: Option<(CpuTime, CpuTime)>,
    /// What the scheduler did to the client's threads and the server's, where `/proc` tells.
    sched: Option<(Scheduling, Scheduling)>,
    /// What the client's runtime did, where tokio tells (see [`Workers`]).
    workers: Option<Workers>,
}

/// Counts of the client runtime's workers, summed over them: how often they parked (ran out of
/// work and slept until woken) and stole from each other. tokio counts these only when built
/// with `--cfg tokio_unstable` (see the module docs); otherwise there are none.
#[derive(Clone, Copy, Debug, Default)]
struct Workers {
    parks: u64,
    steals: u64,
}

impl Workers {
    /// The current runtime's counts so far.
    #[cfg(tokio_unstable)]
    fn now() -> Option<Workers> {
        let metrics = tokio::runtime::Handle::current().metrics();
        let workers = 0..metrics.num_workers();
        let parks = workers.clone().map(|w| metrics.worker_park_count(w)).sum();
        let steals = workers.map(|w| metrics.worker_steal_operations(w)).sum();
        Some(Workers { parks, steals })
    }

    #[cfg(not(tokio_unstable))]
    fn now() -> Option<Workers> {
        None
    }
}

/// Measures `F` at `point`, against its server child.
fn measure<F: Framework>(options: &Options, server: &mut ServerProcess, point: Point) -> Result<Row, BoxError> {
    let addr = server.addr();
    let conns = if F::NAME.connection_per_caller() { point.callers } else { point.conns };
    // A fresh client runtime per point: nothing of the previous point keeps running.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = options.client_workers {
        runtime.worker_threads(workers);
    }
    let runtime = runtime.enable_all().build()?;
    let measured = runtime.block_on(async {
        let callers = F::callers(addr, conns, point.callers).await?;
        // The probe talks to the child over blocking pipes; it runs on the thread that
        // blocks on this future, not on a runtime worker, so callers are not held up.
        load::run(callers, options.plan, async || -> Result<Probe, BoxError> {
            Ok(Probe {
                client_allocs: crate::alloc::allocations(),
                server_allocs: server.allocations()?,
                cpu: crate::proc::cpu_time(std::process::id()).zip(crate::proc::cpu_time(server.id())),
                sched: crate::proc::scheduling(std::process::id()).zip(crate::proc::scheduling(server.id())),
                workers: Workers::now(),
            })
        })
        .await
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    let measured = measured?;
    let (start, end) = (measured.start?, measured.end?);
    let calls = measured.calls.max(1) as f64;
    let us = |ns: f64| ns / 1000.0;
    let latency = &measured.latency;
    // Each process's CPU time in the window: (client, server).
    let cpu = end.cpu.zip(start.cpu).map(|((client, server), (client_before, server_before))| {
        (client.since(client_before), server.since(server_before))
    });
    let per_call = |time: Duration| us(time.as_nanos() as f64) / calls;
    let row = Row {
        framework: F::NAME,
        point,
        conns,
        rps: measured.calls as f64 / measured.window.as_secs_f64(),
        mean_us: us(latency.mean()),
        p50_us: us(latency.value_at_quantile(0.5) as f64),
        p99_us: us(latency.value_at_quantile(0.99) as f64),
        p999_us: us(latency.value_at_quantile(0.999) as f64),
        client_allocs: end.client_allocs.saturating_sub(start.client_allocs) as f64 / calls,
        server_allocs: end.server_allocs.saturating_sub(start.server_allocs) as f64 / calls,
        cpu_us: cpu.map(|(client, server)| per_call(client.total() + server.total())),
        server_rss_kib: server.peak_rss_kib(),
        errors: measured.errors,
    };
    let side = |time: Option<CpuTime>| {
        time.map_or_else(
            || "-".to_owned(),
            |time| format!("{:.2} ({:.0}% kernel)", per_call(time.total()), share(time.system, time.total())),
        )
    };
    eprintln!(
        "  {point:>7}: {:>9.0} calls/s  p50 {:>8.1} µs  p99 {:>8.1} µs  allocs/call {:.1}  cpu/call {:.2} µs \
         (client {}, server {}){}{}",
        row.rps,
        row.p50_us,
        row.p99_us,
        row.allocs_per_call(),
        row.cpu_us.unwrap_or(f64::NAN),
        side(cpu.map(|(client, _)| client)),
        side(cpu.map(|(_, server)| server)),
        scheduled(start.sched, end.sched, calls),
        parked(start.workers, end.workers, calls),
    );
    if let Some(error) = &measured.first_error {
        eprintln!("  {point:>7}: {} calls failed; the first: {error}", measured.errors);
    }
    Ok(row)
}

/// `part` as a percentage of `whole` (0 of nothing).
fn share(part: Duration, whole: Duration) -> f64 {
    if whole.is_zero() { 0.0 } else { part.as_secs_f64() * 100.0 / whole.as_secs_f64() }
}

/// What the scheduler did in the window, per thousand calls, for the per-point line: how often
/// it moved the client's and the server's threads between CPUs, and preempted them. On a VM
/// with two cores a pass of one build falls into one of two modes, which these help tell apart
/// (see docs/PERFORMANCE.md, "The gap to the floor, run by run"). Empty where `/proc` does not
/// tell.
fn scheduled(start: Option<(Scheduling, Scheduling)>, end: Option<(Scheduling, Scheduling)>, calls: f64) -> String {
    let Some(((client, server), (client_before, server_before))) = end.zip(start) else {
        return String::new();
    };
    let (client, server) = (client.since(client_before), server.since(server_before));
    let per_kcall = |count: u64| count as f64 * 1000.0 / calls;
    format!(
        "  moved/kcall {:.2}, {:.2}  preempted/kcall {:.1}, {:.1} (client, server)",
        per_kcall(client.migrations),
        per_kcall(server.migrations),
        per_kcall(client.preempted),
        per_kcall(server.preempted),
    )
}

/// How often the client runtime's workers parked and stole in the window, per thousand calls,
/// for the per-point line; empty unless tokio counts them.
fn parked(start: Option<Workers>, end: Option<Workers>, calls: f64) -> String {
    let Some((end, start)) = end.zip(start) else {
        return String::new();
    };
    let per_kcall = |count: u64| count as f64 * 1000.0 / calls;
    format!(
        "  client workers parked/kcall {:.1}, stole/kcall {:.1}",
        per_kcall(end.parks.saturating_sub(start.parks)),
        per_kcall(end.steals.saturating_sub(start.steals)),
    )
}

/// The `serve <framework>` child: runs `F`'s server, answers the parent until its stdin closes.
fn serve_child(name: Name) -> Result<(), BoxError> {
    name.visit(Serve)?
}

/// The `serve` child's work for the framework a [`Name`] chooses.
struct Serve;

impl Visit for Serve {
    type Output = Result<(), BoxError>;

    fn visit<F: Framework>(self) -> Self::Output {
        crate::proc::serve_child(F::NAME.as_str(), F::serve())
    }
}

/// What was run, where and when: the lines above the table.
fn heading(options: &Options) -> String {
    let cpu = crate::machine::cpu_model();
    let cores = crate::machine::cores();
    let MessageAllocs { owned, shared } = decode_allocations();
    format!(
        "zrpc compare, {date}: {cpu}, {cores} cores, loopback, server and client in separate processes\n\
         warm-up {warmup:?}, window {window:?} per point{rounds}; echo of the rpcx BenchmarkMessage \
         ({size} bytes in postcard{protobuf}){codec}\n\
         allocs/c = client + server allocations per call; decoding the message alone allocates \
         {owned} times (its Strings and Vec), on each side, in every serde framework ({shared} with \
         zrpc::Text strings);\n\
         own/c = allocs/c less those 2 x {owned} (2 x {shared}): the framework's own; cpu µs/c = CPU \
         time of client and server per call\n\
         zrpc's metrics {compiled}; recording in both processes: {observe}; allocator: {allocator}{workers}",
        workers = match (options.client_workers, options.server_workers) {
            (None, None) => String::new(),
            (client, server) => {
                let count = |n: Option<usize>| n.map_or_else(|| "tokio's default".to_owned(), |n| n.to_string());
                format!("\nworker threads: client {}, server {}", count(client), count(server))
            }
        },
        allocator = crate::alloc::ALLOCATOR,
        compiled = if cfg!(feature = "observe") { "compiled in (feature observe)" } else { "not compiled in" },
        observe = options.observe.as_deref().unwrap_or("nothing"),
        date = crate::machine::today(),
        warmup = options.plan.warmup,
        window = options.plan.duration,
        rounds = match options.rounds {
            1 => String::new(),
            n => format!(", {n} rounds, each figure the median of its {n} measurements"),
        },
        size = crate::framework::payload().map(|p| p.len()).unwrap_or(0),
        protobuf = protobuf_size(),
        codec = match options.codec {
            zrpc::CodecId::Postcard => String::new(),
            codec => format!("; zrpc and zrpc-text call in {codec}"),
        },
    )
}

/// `", N in protobuf"` when tonic is compiled in.
fn protobuf_size() -> String {
    #[cfg(feature = "tonic")]
    {
        use crate::framework::tonic::pb::BenchmarkMessage;
        let message = BenchmarkMessage::from(&crate::BenchmarkMessage::filled());
        format!(", {} in protobuf", prost::Message::encoded_len(&message))
    }
    #[cfg(not(feature = "tonic"))]
    String::new()
}

/// How many allocations decoding the message takes, with owned strings (postcard; any serde
/// format allocates the same Strings and Vec) and with `zrpc::Text` strings as zrpc decodes them.
fn decode_allocations() -> MessageAllocs {
    let Ok(payload) = crate::framework::payload() else { return MessageAllocs::default() };
    // A frame read from a socket is already shared; this one becomes so on its first clone,
    // which allocates once. Clone it before counting.
    let _shared = payload.clone();
    let count = |decode: &dyn Fn()| {
        let before = crate::alloc::allocations();
        decode();
        crate::alloc::allocations() - before
    };
    MessageAllocs {
        owned: count(&|| drop(zrpc::CodecId::Postcard.decode::<crate::BenchmarkMessage>(&payload))),
        shared: count(&|| drop(zrpc::CodecId::Postcard.decode_shared::<crate::BenchmarkMessage<zrpc::Text>>(&payload))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::split as args;

    #[test]
    fn worker_counts_default_to_tokio_and_parse_per_process() -> Result<(), BoxError> {
        let options = Options::parse(&[])?;
        assert_eq!((options.client_workers, options.server_workers), (None, None));
        let options = Options::parse(&args("--client-workers 1 --server-workers 3"))?;
        assert_eq!((options.client_workers, options.server_workers), (Some(1), Some(3)));
        assert!(heading(&options).ends_with("\nworker threads: client 1, server 3"));
        let options = Options::parse(&args("--client-workers 2"))?;
        assert!(heading(&options).ends_with("\nworker threads: client 2, server tokio's default"));
        Ok(())
    }

    #[test]
    fn frameworks_take_turns_at_each_point_a_different_one_first_each_round() -> Result<(), BoxError> {
        let args = |extra: &[&str]| -> Vec<String> {
            ["--frameworks", "zrpc,raw-mux,tarpc", "--points", "1x1,100x1"]
                .iter()
                .chain(extra)
                .map(|a| a.to_string())
                .collect()
        };
        let options = Options::parse(&args(&[]))?;
        let names = |options: &Options, index| {
            let named = |&(framework, point): &(usize, usize)| {
                format!("{} {}", options.frameworks[framework], options.points[point])
            };
            turns(options, index).iter().map(named).collect::<Vec<_>>()
        };
        assert_eq!(
            names(&options, 0),
            ["zrpc 1x1", "raw-mux 1x1", "tarpc 1x1", "zrpc 100x1", "raw-mux 100x1", "tarpc 100x1"]
        );
        assert_eq!(names(&options, 1)[..3], ["raw-mux 1x1", "tarpc 1x1", "zrpc 1x1"]);
        assert_eq!(names(&options, 2)[..3], ["tarpc 1x1", "zrpc 1x1", "raw-mux 1x1"]);
        assert_eq!(names(&options, 3), names(&options, 0), "the rotation repeats");
        let by_framework = Options::parse(&args(&["--by-framework"]))?;
        assert_eq!(
            names(&by_framework, 1),
            ["zrpc 1x1", "zrpc 100x1", "raw-mux 1x1", "raw-mux 100x1", "tarpc 1x1", "tarpc 100x1"]
        );
        Ok(())
    }

    #[test]
    fn a_runtime_without_workers_is_refused() {
        let error = |line: &str| Options::parse(&args(line)).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(error("--server-workers 0"), "a runtime needs at least one worker thread");
        assert!(error("--client-workers").starts_with("--client-workers needs a value"));
        assert!(error("--client-workers many").contains("invalid digit"));
    }
}
