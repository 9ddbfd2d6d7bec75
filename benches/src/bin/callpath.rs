//! Instructions per call: the one figure of zrpc's call path that does not move with the
//! machine's load.
//!
//! `compare` measures time, which on a shared 2-core VM moves by 10–20% between runs of the same
//! binary; a change of 1% in the call path's work is invisible there. This program makes echo
//! calls of the rpcx benchmark message (postcard, `String` fields), client and server in one
//! process on one current-thread runtime, over a real loopback TCP connection, so that the work
//! per call is the same on every run. Under `valgrind --tool=callgrind` it counts the
//! instructions of client and server together; `--callgrind` runs it so twice, with `calls` and
//! `3 × calls` calls, and prints the difference per call, which leaves out start-up and
//! connecting. Repeated on one machine, the figure moves by less than 0.1%.
//!
//! ```text
//! cargo build --release -p zrpc-benches --bin callpath
//! target/release/callpath --callgrind [--callers 100] [--calls 10000] [--keep DIR]
//! ```
//!
//! With `--keep DIR` the two callgrind profiles stay in `DIR`
//! (`callgrind_annotate DIR/callpath-30000.out` shows where the instructions go). Built with
//! `--features observe`, zrpc's metrics are compiled in, and `--observe metrics,spans` installs
//! a Prometheus recorder and a `tracing` registry first, as `compare --observe` does. Without
//! `--callgrind` it just makes the calls, for a profiler of your choice.
//!
//! With `--framework NAME` it runs `compare`'s echo server and callers of that framework
//! instead, on the same one thread over one connection: `--framework raw-mux` counts the floor's
//! instructions per call, which `compare` can only show as time, and that on a shared VM. On
//! 2026-11-29 (AMD EPYC, 100 callers): raw-mux 2,706, zrpc 27,089, zrpc-text 27,261, tarpc
//! 51,120.

use std::process::Command;

use zrpc::{Channel, Server};
use zrpc_benches::framework::{Caller, Framework, Name, Visit};
use zrpc_benches::{BenchmarkMessage, BoxError};

type Message = BenchmarkMessage<String>;

/// The echo service.
#[zrpc::service]
pub trait Bench {
    /// Returns the message it was given.
    async fn echo(&self, m: Message) -> Message;
}

#[derive(Clone, Copy)]
struct Echo;

impl Bench for Echo {
    async fn echo(&self, m: Message) -> Message {
        m
    }
}

const USAGE: &str = "usage: callpath [--callgrind] [--calls N] [--callers N] [--keep DIR] [--observe LIST]
                [--framework NAME]

Echo calls over loopback, client and server on one current-thread runtime (see the source's
docs). With --callgrind: runs itself under valgrind's callgrind with N and 3N calls and prints the
instructions per call, client and server together.

  --calls N     calls in all, shared by the callers (default 10000)
  --callers N   concurrent callers on the one connection (default 100)
  --keep DIR    with --callgrind: keep the callgrind profiles in DIR
  --observe L   install what L names first: metrics (a Prometheus recorder), spans (a tracing
                registry); needs the feature `observe`
  --framework N instead of this program's own zrpc service, `compare`'s echo server and callers
                of framework N (raw-mux, tarpc, zrpc, zrpc-text, ...), on the same one thread:
                the floor's instructions per call against zrpc's
";

struct Args {
    callgrind: bool,
    calls: u64,
    callers: u64,
    keep: Option<String>,
    observe: String,
    framework: Option<Name>,
}

fn parse(args: &[String]) -> Result<Args, BoxError> {
    let mut parsed =
        Args { callgrind: false, calls: 10_000, callers: 100, keep: None, observe: String::new(), framework: None };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n\n{USAGE}"));
        match arg.as_str() {
            "--callgrind" => parsed.callgrind = true,
            "--calls" => parsed.calls = value()?.parse()?,
            "--callers" => parsed.callers = value()?.parse()?,
            "--keep" => parsed.keep = Some(value()?.clone()),
            "--observe" => parsed.observe = value()?.clone(),
            "--framework" => parsed.framework = Some(value()?.parse()?),
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n\n{USAGE}").into()),
        }
    }
    if parsed.callers == 0 || parsed.calls < parsed.callers {
        return Err(format!(
            "--calls ({}) must be at least --callers ({}), which must be at least 1",
            parsed.calls, parsed.callers
        )
        .into());
    }
    Ok(parsed)
}

/// Makes `calls` echo calls (rounded down to a multiple of `callers`) from `callers` tasks.
fn run(calls: u64, callers: u64) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let server = Server::builder().add_service(BenchServer::new(Echo)).bind("tcp://127.0.0.1:0").await?;
        let address = server.local_addr().clone();
        tokio::spawn(server.serve());
        let channel = Channel::builder(address).connect().await?;
        let callers: Vec<_> = (0..callers)
            .map(|_| {
                let client = BenchClient::new(channel.clone());
                let each = calls / callers;
                tokio::spawn(async move {
                    let mut message = Message::filled();
                    for _ in 0..each {
                        message = client.echo(message).await?;
                    }
                    Ok::<_, zrpc::Status>(())
                })
            })
            .collect();
        for caller in callers {
            caller.await??;
        }
        Ok(())
    })
}

/// [`run`] with `compare`'s server and callers of one framework: one connection (one per caller
/// for raw-pingpong), each caller making `calls / callers` calls, after the one call with which
/// `callers` checks the echo.
struct RunFramework {
    calls: u64,
    callers: u64,
}

impl Visit for RunFramework {
    type Output = Result<(), BoxError>;

    fn visit<F: Framework>(self) -> Self::Output {
        let RunFramework { calls, callers } = self;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let serving = F::serve().await?;
            tokio::spawn(serving.run);
            let each = calls / callers;
            let callers: Vec<_> = F::callers(serving.addr, 1, usize::try_from(callers)?)
                .await?
                .into_iter()
                .map(|mut caller| {
                    tokio::spawn(async move {
                        for _ in 0..each {
                            caller.call().await?;
                        }
                        Ok::<_, BoxError>(())
                    })
                })
                .collect();
            for caller in callers {
                caller.await??;
            }
            Ok(())
        })
    }
}

/// The instructions callgrind counted running this program with `calls` calls.
fn instructions(args: &Args, calls: u64, out: &str) -> Result<u64, BoxError> {
    let program = std::env::current_exe()?;
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", &format!("--callgrind-out-file={out}")])
        .arg(program)
        .args(["--calls", &calls.to_string(), "--callers", &args.callers.to_string(), "--observe", &args.observe])
        .args(args.framework.iter().flat_map(|name| ["--framework", name.as_str()]))
        .output()
        .map_err(|e| format!("could not run valgrind (is it installed?): {e}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("callpath under callgrind failed:\n{log}").into());
    }
    // callgrind's summary line: `==PID== Collected : 123456789`.
    let collected = log
        .lines()
        .find_map(|line| line.split_once("Collected :").map(|(_, n)| n.trim().to_owned()))
        .ok_or_else(|| format!("no instruction count in callgrind's output:\n{log}"))?;
    Ok(collected.parse()?)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = parse(&args).and_then(|args| {
        if !args.callgrind {
            zrpc_benches::observe::install(&args.observe)?;
            return match args.framework {
                Some(name) => name.visit(RunFramework { calls: args.calls, callers: args.callers })?,
                None => run(args.calls, args.callers),
            };
        }
        let dir = match &args.keep {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                dir.clone()
            }
            None => std::env::temp_dir().display().to_string(),
        };
        let (small, large) = (args.calls, 3 * args.calls);
        let path = |calls: u64| format!("{dir}/callpath-{calls}.out");
        let fewer = instructions(&args, small, &path(small))?;
        let more = instructions(&args, large, &path(large))?;
        if args.keep.is_none() {
            let _ = std::fs::remove_file(path(small));
            let _ = std::fs::remove_file(path(large));
        }
        let per_call = more.saturating_sub(fewer) as f64 / (large - small) as f64;
        println!(
            "{per_call:.0} instructions per call, client and server together ({}, {} callers, observing {:?}, {}: {} \
             calls {fewer}, {} calls {more})",
            args.framework.map_or("callpath's own zrpc service", Name::as_str),
            args.callers,
            args.observe,
            zrpc_benches::machine::cpu_model(),
            small,
            large,
        );
        Ok(())
    }) {
        eprintln!("callpath: {e}");
        std::process::exit(1);
    }
}
