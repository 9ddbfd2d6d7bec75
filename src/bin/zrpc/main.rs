//! `zrpc`: list, describe, call, load-test and watch any zrpc server from a terminal, in JSON.
//!
//! Built with the facade's feature `cli` (`cargo install zrpc --features cli`, plus `etcd` for
//! `etcd://` targets). Every command talks to a server through [`zrpc::dynamic`]: the server's
//! reflection service (`zrpc.Reflection`, on by default) says what it serves, and calls travel
//! in the JSON codec (a default feature of servers), so no generated client and no rebuild of
//! the server are needed.
//!
//! | command | file |
//! |---|---|
//! | `zrpc list ADDR` | [`list`](mod@list) |
//! | `zrpc describe ADDR Service[.method]` | [`describe`](mod@describe) |
//! | `zrpc call ADDR Service.method [JSON]` | [`call`](mod@call) |
//! | `zrpc bench ADDR Service.method [JSON]` | [`bench`](mod@bench) |
//! | `zrpc watch ADDR` | [`watch`](mod@watch) |
//! | `zrpc gateway ADDR [--listen HOST:PORT]` | [`gateway`](mod@gateway) |
//!
//! Decisions, and why:
//! - **Exit codes** ([`Failure::exit_code`]): 0 done; 1 a status (the server's or the
//!   transport's: `NotFound`, `Unavailable`, `DeadlineExceeded`...); 2 a usage mistake (the
//!   command line, the address, arguments that are not JSON, a duration without a unit), which
//!   is also clap's own code; 3 an application error, the `Err` of a method returning
//!   `Result<T, E>`, so a script can tell "the server refused the call" from "the method said
//!   no".
//! - **One line per error**, on stderr, `zrpc: ` then what went wrong (for a status, its code's
//!   name then its message); clap's usage errors are cut to their first line too. Nothing a user
//!   or a server does makes the command panic.
//! - **Output for people on stdout, progress and errors on stderr**, so `zrpc call ... | jq`
//!   works and `zrpc bench` can draw its progress bar without spoiling its report.

use std::fmt;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zrpc::Status;

mod bench;
mod call;
mod describe;
mod gateway;
mod list;
mod options;
mod pretty;
mod watch;

/// Talk to zrpc servers: list and describe what they serve, call methods in JSON, load-test
/// them, watch the instances a registry holds, and serve them over HTTP with a web console.
///
/// ADDR is `tcp://host:port` (or just `host:port`), `unix:///path`, several addresses
/// separated by commas, `dns://host:port`, or `etcd://host:port[,host:port]/prefix` (when
/// built with the feature `etcd`).
///
/// Exit status: 0 done, 1 a status error (from the server or the connection), 2 a usage
/// mistake, 3 an application error (the method's own `Err`).
#[derive(Debug, Parser)]
#[command(name = "zrpc", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    List(list::Args),
    Describe(describe::Args),
    Call(call::Args),
    Bench(bench::Args),
    Watch(watch::Args),
    Gateway(gateway::Args),
}

/// Why a command did not succeed, and so how `zrpc` exits.
#[derive(Debug)]
enum Failure {
    /// A mistake on the command line: exit 2.
    Usage(String),
    /// The server or the connection answered a status: exit 1.
    Status(Status),
    /// Calls failed, as this says (`zrpc bench`): exit 1.
    Failed(String),
    /// The method answered its application error, already printed, or calls did, as this
    /// says: exit 3.
    Application(Option<String>),
}

impl Failure {
    /// The process's exit status for this failure.
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Status(_) | Failure::Failed(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Application(_) => 3,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(message) | Failure::Failed(message) | Failure::Application(Some(message)) => {
                f.write_str(message)
            }
            Failure::Status(status) => write!(f, "{}: {status}", status.code().name()),
            Failure::Application(None) => f.write_str("the method answered an application error"),
        }
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Failure {
        Failure::Status(status)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage(&error),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("zrpc: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::List(args) => list::run(args).await,
            Command::Describe(args) => describe::run(args).await,
            Command::Call(args) => call::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Watch(args) => watch::run(args).await,
            Command::Gateway(args) => gateway::run(args).await,
        }
    });
    // Connections and watches still running are dropped with the runtime, without waiting.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // An application error's JSON is already on stdout: it needs no line of its own.
            if !matches!(failure, Failure::Application(None)) {
                eprintln!("zrpc: {failure}");
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

/// Prints what clap says about the command line: help and version in full, a mistake as one
/// line with where to find help.
fn usage(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        // Help goes to stdout, which may be closed (`zrpc --help | head`): nothing to do then.
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = error.print();
        return ExitCode::from(2);
    }
    // The first paragraph says what is wrong (its later lines list what is missing); the rest
    // is usage and tips.
    let rendered = error.render().to_string();
    let said: Vec<&str> = rendered.lines().take_while(|line| !line.trim().is_empty()).map(str::trim).collect();
    let said = said.join(" ");
    let said = said.strip_prefix("error: ").unwrap_or(&said);
    eprintln!("zrpc: {said} (see zrpc --help)");
    ExitCode::from(2)
}
