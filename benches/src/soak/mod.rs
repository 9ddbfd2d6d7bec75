//! The `soak` program: hostile and slow clients against a zrpc server, one scenario at a time,
//! measuring how much memory the server takes and what a well-behaved client sees meanwhile.
//!
//! ```text
//! cargo run -p zrpc-benches --release --bin soak -- [--duration SECS] [--long-duration SECS]
//!     [--scenarios a,b,...] [--rss-cap MIB]
//! ```
//!
//! DESIGN.md §6 promises that no peer, however slow or hostile, grows a server past its bounds,
//! and that one connection cannot get the others refused. This program checks both from the
//! outside, on loopback:
//!
//! - Each scenario gets a **fresh server child** (`soak serve soak`, this same binary; see
//!   [`proc`](crate::proc)) serving the [`Soak`](server::Soak) service with default settings,
//!   so that its `VmHWM` is that scenario's peak. One exception: `connection-flood`'s server
//!   is open to at most [`FLOOD_MAX_CONNECTIONS`](server::FLOOD_MAX_CONNECTIONS) connections
//!   (`soak serve soak-limited`), since the default bound is past what one client process can
//!   open.
//! - A **hostile client** ([`hostile`]) writes raw frames ([`frames`]) on real TCP sockets: the
//!   preface and a HELLO, then what its scenario says, with tokio's `AsyncWriteExt`. Unless the
//!   scenario says it reads, it reads nothing while the scenario runs.
//! - Meanwhile a **well-behaved client** ([`well_behaved`]), a real zrpc client on a connection
//!   of its own, calls `echo` up to 1000 times a second with a 1 s deadline.
//! - A scenario ends after its duration (`--duration`, default 10 s; `--long-duration`,
//!   default 45 s, for the two that watch the heartbeat), or earlier when the server's `VmRSS`
//!   passes the cap (`--rss-cap`, default 4096 MiB), so that a server without bounds cannot
//!   exhaust the machine. Then the child is killed. Every wait has a timeout (see
//!   [`measure`]), so the run ends in bounded time whatever the server does.
//!
//! # Scenarios
//!
//! | name | the hostile client | what it shows |
//! |---|---|---|
//! | `never-read` | one connection writes 1 GiB of 64 KiB `echo` requests (distinct odd ids, no deadline) as fast as the socket takes them; never reads | whether the server bounds the answers it queues for a peer that does not read. A server that stops reading when its output is full pushes back through TCP, and the client sends far less than 1 GiB |
//! | `never-read-x4` | the same on 4 connections at once | whether the bound is per connection or the growth multiplies |
//! | `slow-reader` | the same flood, reading (and tallying) at 1 MiB/s | a slow peer rather than a dead one |
//! | `keepalive-never-read` | 1024 `echo` requests (64 MiB), then one PING every 5 s; never reads. Long duration | the heartbeat sees a live peer: does the server hold the connection, and the answers it queued, for ever? |
//! | `pipeline-flood` | 200 connections each write 5,000 calls to `sleep(100)` at once, then read and tally the answers | load rather than a non-reader: how many calls are answered and how many refused (by code), and what the extra tasks cost |
//! | `pinned-buffers` | 40 times: a 15 MiB frame of an unknown kind (0x7f, skipped by receivers, PROTOCOL.md §10), then a `hold` call with one metadata entry of a 1-byte value; never reads | the frame decoder reads the big frame into the read buffer, and the `hold` call's metadata is a zero-copy slice of the same buffer: does 1 retained byte pin 15 MiB? |
//! | `metadata-bomb` | 40 `hold` calls, each with 65,535 metadata entries of an empty key and a 1-byte value (15.7 MB on the wire in all); never reads | what the server's decoded form of a tiny entry costs, held for as long as the call runs |
//! | `ping-flood` | 10 million PINGs (140 MB); never reads the PONGs | whether the server bounds the PONGs it queues |
//! | `silent-peer` | the handshake, then nothing: it answers no PING. It reads only to notice the close. Long duration | after how long the server closes a dead peer (PROTOCOL.md §13: PING after 10 s of silence, dead 20 s later, so 30 s) |
//! | `half-hellos` | 4,096 connections each send the preface and the first 96 KiB of a HELLO whose header claims 128 KiB, the most a first frame may be, then nothing; they read only to notice the close | what connections that have not said who they are make the server hold in all: each holds its part of a HELLO until the handshake's timeout (20 s), and the server keeps at most `max_handshakes` (1,024) of them, closing the one waiting longest |
//! | `large-answers` | 32 connections each make one echo call of 8 MiB, read the answer, and then only send a PING every 5 s | what a burst leaves behind: the server's output buffer held each 8 MiB answer, and a connection kept it for its life until 2026-12-01; now it is given back at the first heartbeat tick after the burst, at most once a heartbeat interval (10 s), so RSS at the end is the column to read |
//! | `connection-flood` | 4,096 connections at once, each a whole handshake (preface, HELLO) and then nothing, against a server open to 1,024 (`max_connections`); they read only to see what the server says and when it closes | what a flood of connections that get in costs, and that the bound holds: the server keeps the first 1,023 beside the well-behaved client's and refuses the rest with a GOAWAY `ResourceExhausted` once their HELLO is in, so that their clients can go elsewhere |
//!
//! `hold` calls sleep for an hour: they outlive their scenario, and the server child is killed
//! at its end. The three heartbeat scenarios run by default, for `--long-duration` (default 45 s:
//! the heartbeat's 30 s and a margin), since a shorter run could not show what they are about;
//! leave them out of `--scenarios` for a quicker run.
//!
//! # The table
//!
//! One row per scenario, printed as soon as it ends:
//!
//! - **ran**: how long the scenario ran, and why it was cut short if it was (`RSS cap`, `server
//!   gone`).
//! - **hostile client sent**: whole frames and bytes its sockets took after the handshake, over
//!   all its connections; less than it meant to send when the server stopped reading (TCP
//!   pushed back) or closed the connection.
//! - **it read**: for the clients that read, bytes read, the server's PINGs among them (and
//!   when the first came, from the connection's opening), and the answers: successful, and
//!   refused by status code.
//! - **server's end of it**: `open`, or how the server closed each hostile connection: its
//!   GOAWAY (code and message) if one was read, then `closed` (EOF) or the error the socket
//!   returned (`broken pipe on write`, `connection reset on read`), with the time since the
//!   connection opened. A client that read nothing learns this afterwards: once the server's
//!   memory has been measured, it reads for up to 1 s, and what it finds there has no time.
//! - **RSS start, peak, growth, end** (MiB): the server child's `VmRSS` once the well-behaved
//!   client is connected; its `VmHWM` at the end; peak − start; its `VmRSS` at the end, the
//!   hostile connections still open (what the server still holds for them). Memory the server
//!   freed but its allocator kept counts as held: that is what the machine sees.
//! - **calls, failed, p50, p99**: the well-behaved client's successful calls, its failed calls
//!   by status code (`no answer` when even its own deadline did not end a call), and the
//!   latency of every completed call, failed ones included.
//!
//! Notes below the table say what did not fit: why a scenario was cut short, a server child
//! that died, connections that could not be opened.

pub mod frames;
pub mod hostile;
pub mod measure;
pub mod raw;
pub mod report;
pub mod scenario;
pub mod server;
pub mod stop;
pub mod well_behaved;

use std::io::Write as _;
use std::time::Duration;

use self::scenario::Scenario;
use crate::BoxError;
use crate::proc::SERVE;

/// The command line, parsed.
#[derive(Debug, Clone)]
pub struct Options {
    /// The scenarios to run, in order.
    pub scenarios: Vec<Scenario>,
    /// How long each scenario runs.
    pub duration: Duration,
    /// How long the scenarios that watch the heartbeat run.
    pub long_duration: Duration,
    /// The server `VmRSS` at which a scenario is stopped early, MiB.
    pub rss_cap_mib: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            scenarios: Scenario::ALL.to_vec(),
            duration: Duration::from_secs(10),
            long_duration: Duration::from_secs(45),
            rss_cap_mib: 4096,
        }
    }
}

/// The usage text.
pub const USAGE: &str = "\
usage: soak [--duration SECS] [--long-duration SECS] [--scenarios a,b,...] [--rss-cap MIB]

Runs hostile and slow clients against a zrpc server child (default settings but for
connection-flood's connection bound, loopback, a fresh child per scenario) while a
well-behaved client calls it on its own connection; prints one markdown table row per
scenario: what the hostile client did and saw, the server's RSS at the start, its peak and
growth, and the well-behaved client's calls, failures and latency.

  --duration SECS       how long each scenario runs (default 10)
  --long-duration SECS  how long keepalive-never-read, silent-peer and large-answers run: they
                        watch the heartbeat, which gives up on a silent peer after 30 s (default 45)
  --scenarios LIST      any of never-read, never-read-x4, slow-reader, keepalive-never-read,
                        pipeline-flood, pinned-buffers, metadata-bomb, ping-flood, silent-peer,
                        half-hellos, large-answers, connection-flood (default: all, in that
                        order; connection-flood's server is open to 1,024 connections)
  --rss-cap MIB         stop a scenario early when the server's RSS passes this (default 4096)
";

impl Options {
    /// Parses the arguments after the program name.
    ///
    /// # Errors
    /// On an unknown option or scenario, a missing or malformed value.
    pub fn parse(args: &[String]) -> Result<Options, BoxError> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n\n{USAGE}"));
            match arg.as_str() {
                "--duration" => options.duration = crate::args::seconds(value()?)?,
                "--long-duration" => options.long_duration = crate::args::seconds(value()?)?,
                "--scenarios" => options.scenarios = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?,
                "--rss-cap" => options.rss_cap_mib = value()?.parse()?,
                other => return Err(format!("unknown argument {other:?}\n\n{USAGE}").into()),
            }
        }
        if options.scenarios.is_empty() {
            return Err("no scenario to run".into());
        }
        Ok(options)
    }
}

/// The program: `serve soak` as the server child, the scenarios otherwise.
///
/// # Errors
/// Whatever stops the run; a message for the user.
pub fn main(args: &[String]) -> Result<(), BoxError> {
    match args {
        [serve, name] if serve == SERVE && name == server::NAME => {
            crate::proc::serve_child(server::NAME, server::serve())
        }
        [serve, name] if serve == SERVE && name == server::LIMITED => {
            crate::proc::serve_child(server::LIMITED, server::serve_limited())
        }
        [help] if help == "--help" || help == "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        _ => run(&Options::parse(args)?),
    }
}

/// Runs the scenarios: the table on stdout, a row as each scenario ends, progress on stderr.
///
/// A scenario that cannot be measured (its server does not start) gets a row that says so and a
/// note; the others still run.
///
/// # Errors
/// If stdout cannot be written.
pub fn run(options: &Options) -> Result<(), BoxError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}\n\n{}", heading(options), report::HEADER)?;
    stdout.flush()?;
    let mut notes = Vec::new();
    for &scenario in &options.scenarios {
        let duration = scenario.duration(options.duration, options.long_duration);
        eprintln!("{scenario}: {:.0} s", duration.as_secs_f64());
        match measure::measure(scenario, options) {
            Ok(row) => {
                writeln!(stdout, "{}", report::line(&row))?;
                notes.extend(report::notes(&row));
            }
            Err(e) => {
                writeln!(stdout, "{}", report::failed_line(scenario))?;
                notes.push(format!("{scenario}: not measured: {e}"));
            }
        }
        stdout.flush()?;
    }
    if !notes.is_empty() {
        writeln!(stdout, "\nNotes:")?;
        for note in notes {
            writeln!(stdout, "- {note}")?;
        }
    }
    Ok(())
}

/// What was run, where and when: the lines above the table.
fn heading(options: &Options) -> String {
    format!(
        "zrpc soak, {date}: {cpu}, {cores} cores, loopback; a fresh server child per scenario, default \
         settings (connection-flood's: max_connections {flood_max})\n\
         each scenario {duration:?} (keepalive-never-read, silent-peer and large-answers {long:?}), cut short when the \
         server's RSS passes {cap} MiB; memory in MiB (VmRSS, VmHWM); the well-behaved client echoes \
         {message} bytes every {pace:?} at most, deadline {deadline:?}",
        date = crate::machine::today(),
        cpu = crate::machine::cpu_model(),
        cores = crate::machine::cores(),
        duration = options.duration,
        long = options.long_duration,
        cap = options.rss_cap_mib,
        message = well_behaved::MESSAGE_BYTES,
        pace = well_behaved::PACE,
        deadline = well_behaved::CALL_TIMEOUT,
        flood_max = server::FLOOD_MAX_CONNECTIONS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::split as args;

    #[test]
    fn options_default_to_every_scenario() -> Result<(), BoxError> {
        let options = Options::parse(&[])?;
        assert_eq!(options.scenarios, Scenario::ALL);
        assert_eq!(
            (options.duration, options.long_duration, options.rss_cap_mib),
            (Duration::from_secs(10), Duration::from_secs(45), 4096)
        );
        Ok(())
    }

    #[test]
    fn options_parse_durations_scenarios_and_the_cap() -> Result<(), BoxError> {
        let options = Options::parse(&args(
            "--duration 2.5 --scenarios ping-flood,silent-peer --long-duration 31 --rss-cap 512",
        ))?;
        assert_eq!(options.scenarios, [Scenario::PingFlood, Scenario::SilentPeer]);
        assert_eq!((options.duration, options.long_duration), (Duration::from_millis(2500), Duration::from_secs(31)));
        assert_eq!(options.rss_cap_mib, 512);
        Ok(())
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        let error = |line: &str| Options::parse(&args(line)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error("--duration").starts_with("--duration needs a value"));
        assert!(error("--scenarios ping").starts_with("unknown scenario \"ping\""));
        assert!(error("--frobnicate").starts_with("unknown argument \"--frobnicate\""));
    }
}
