//! `compare --scale`: one [`Client`] in front of many endpoints, as a service mesh's client
//! sees them, to measure what the balancer costs as the set grows.
//!
//! Each set is `LIVE[xCONNS][+DEAD]`: `LIVE` zrpc servers, all in one server child process
//! (each its own listener, each serving the echo service), `CONNS` connections to each (default
//! 1), and `DEAD` addresses where nothing listens (ports bound and released, so a connection is
//! refused at once). The client discovers them all from a static list, balances with
//! [`P2c`] (or the balancer `--balance` names), has a circuit breaker per endpoint (the
//! default), and retries
//! with `Failover { retries: 3 }`, which resends a call refused by a dead endpoint elsewhere;
//! `SCALE_CALLERS` callers load it, as `compare` loads its points. The default sets are
//! `1,1x100,100,1+99,1+1999`: one endpoint, the same over 100 connections, 100 live endpoints,
//! and one live endpoint hidden among 99 and 1,999 dead ones.
//!
//! For each set the table gives calls/s, p50 and p99 latency, and the calls that failed (after
//! their retries) with the first failure's message.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use zrpc::balance::{ConsistentHash, LeastActive, P2c, Pick, Random, RoundRobin, WeightedRoundRobin};
use zrpc::discover::Static;
use zrpc::{Client, FailMode};

use crate::BoxError;
use crate::framework::zrpc::Zrpc;
use crate::framework::zrpc::owned::{BenchClient, Message, ZrpcCaller};
use crate::framework::{Framework, check_echo};
use crate::load::{self, Plan};
use crate::proc::ServerProcess;

/// Callers loading each set, as in the measurements issue 15 reports.
pub const SCALE_CALLERS: usize = 100;

/// The sets measured when `--scale` names none.
pub const DEFAULT_SETS: &str = "1,1x100,100,1+99,1+1999";

/// The server name of a child serving `live` echo servers: `zrpc-scale-<live>`.
pub const CHILD_PREFIX: &str = "zrpc-scale-";

/// The balancers `--balance` names, the default first.
pub const BALANCERS: [&str; 6] =
    ["p2c", "least-active", "random", "round-robin", "weighted-round-robin", "consistent-hash"];

/// The balancer named `name`, one of [`BALANCERS`].
///
/// # Errors
/// If `name` is not one of them.
pub fn balancer(name: &str) -> Result<Box<dyn Pick>, BoxError> {
    Ok(match name {
        "p2c" => Box::new(P2c::default()),
        "least-active" => Box::new(LeastActive::default()),
        "random" => Box::new(Random::default()),
        "round-robin" => Box::new(RoundRobin::random_start()),
        "weighted-round-robin" => Box::new(WeightedRoundRobin::new()),
        "consistent-hash" => Box::new(ConsistentHash::new()),
        other => return Err(format!("unknown balancer {other:?}: one of {}", BALANCERS.join(", ")).into()),
    })
}

/// One set of endpoints: `LIVE[xCONNS][+DEAD]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Set {
    /// Endpoints that serve.
    pub live: usize,
    /// Connections the client opens to each endpoint.
    pub conns: usize,
    /// Addresses where nothing listens.
    pub dead: usize,
}

impl FromStr for Set {
    type Err = BoxError;

    fn from_str(s: &str) -> Result<Set, BoxError> {
        let malformed = || format!("a scale set is LIVE[xCONNS][+DEAD], e.g. 100 or 1x100 or 1+1999, not {s:?}");
        let (served, dead) = match s.split_once('+') {
            Some((served, dead)) => (served, dead.parse().map_err(|_| malformed())?),
            None => (s, 0),
        };
        let (live, conns) = match served.split_once('x') {
            Some((live, conns)) => (live.parse().map_err(|_| malformed())?, conns.parse().map_err(|_| malformed())?),
            None => (served.parse().map_err(|_| malformed())?, 1),
        };
        if live == 0 || conns == 0 {
            return Err(format!("a scale set needs at least one live endpoint and one connection: {s:?}").into());
        }
        Ok(Set { live, conns, dead })
    }
}

impl std::fmt::Display for Set {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.live)?;
        if self.conns > 1 {
            write!(f, "x{}", self.conns)?;
        }
        if self.dead > 0 {
            write!(f, "+{}", self.dead)?;
        }
        Ok(())
    }
}

/// What one set measured.
#[derive(Debug)]
struct ScaleRow {
    set: Set,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    failed: u64,
    first_error: Option<String>,
    /// After the run: how many endpoints the balancer may pick, and their connections' states.
    after: String,
}

/// Measures every set in `sets` under `plan`; prints the table on stdout, progress on stderr.
///
/// # Errors
/// If a server child cannot be started, or a set's client cannot make its first call.
pub fn run(sets: &[Set], balance: &str, plan: Plan) -> Result<(), BoxError> {
    let mut rows = Vec::with_capacity(sets.len());
    for &set in sets {
        let row = measure(set, balance, plan)?;
        eprintln!(
            "  {:>10}: {:>9.0} calls/s  p50 {:>8.1} µs  p99 {:>8.1} µs  {} failed",
            set.to_string(),
            row.rps,
            row.p50_us,
            row.p99_us,
            row.failed
        );
        rows.push(row);
    }
    println!(
        "zrpc compare --scale, {}: {}, {} cores, loopback; {SCALE_CALLERS} callers on one Client ({balance}, Failover \
         {{ retries: 3 }}, a breaker per endpoint), live servers in one child process\n\
         warm-up {:?}, window {:?} per set; set = LIVE[xCONNECTIONS][+DEAD]\n",
        crate::machine::today(),
        crate::machine::cpu_model(),
        crate::machine::cores(),
        plan.warmup,
        plan.duration,
    );
    println!(
        "{:>10} {:>6} {:>6} {:>6} {:>10} {:>9} {:>9} {:>8}",
        "set", "live", "conns", "dead", "calls/s", "p50 µs", "p99 µs", "failed"
    );
    for row in &rows {
        println!(
            "{:>10} {:>6} {:>6} {:>6} {:>10.0} {:>9.1} {:>9.1} {:>8}",
            row.set.to_string(),
            row.set.live,
            row.set.conns,
            row.set.dead,
            row.rps,
            row.p50_us,
            row.p99_us,
            row.failed
        );
    }
    for row in &rows {
        println!("{}: after the run, {}", row.set, row.after);
    }
    for row in rows.iter().filter(|row| row.first_error.is_some()) {
        println!("{}: first failure: {}", row.set, row.first_error.as_deref().unwrap_or_default());
    }
    Ok(())
}

/// Ports on loopback where nothing listens, held for as long as this lives.
///
/// Each is a socket bound and never put to listen: a connection to it is refused (a reset, as
/// with no socket at all), and no other process can take the port and answer in the middle of
/// a run, as one could when the ports were bound and released at once.
struct DeadPorts {
    /// Bound, not listening; dropped with the set.
    _held: Vec<tokio::net::TcpSocket>,
    addresses: Vec<SocketAddr>,
}

fn dead_ports(count: usize) -> Result<DeadPorts, BoxError> {
    let mut held = Vec::with_capacity(count);
    let mut addresses = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        addresses.push(socket.local_addr()?);
        held.push(socket);
    }
    Ok(DeadPorts { _held: held, addresses })
}

fn measure(set: Set, balance: &str, plan: Plan) -> Result<ScaleRow, BoxError> {
    let server = ServerProcess::spawn_serving(&format!("{CHILD_PREFIX}{}", set.live))?;
    let dead = dead_ports(set.dead)?;
    // The live endpoints first, the dead after: a static list yields them in this order, and
    // the balancer must not depend on it.
    let addresses: Vec<String> =
        server.addrs().iter().chain(&dead.addresses).map(|addr| format!("tcp://{addr}")).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let live = server.addr();
    let measured = runtime.block_on(async {
        // The echo checked on a live server directly: through the client, the first call may
        // find only dead endpoints, which is what the load measures.
        let message = Message::filled();
        let probe = BenchClient::new(zrpc::Channel::connect(live).await?);
        check_echo(Zrpc::NAME, &message, &probe.echo(message.clone()).await?)?;
        let client = Client::builder()
            .discover(Static::new(addresses))
            .balance(balancer(balance)?)
            .fail_mode(FailMode::Failover { retries: 3 })
            .connections_per_endpoint(set.conns)
            .build();
        let echo = BenchClient::new(client.clone());
        let callers = (0..SCALE_CALLERS).map(|_| ZrpcCaller::new(echo.clone(), Message::filled())).collect();
        let measured = load::run(callers, plan, async || ()).await;
        Ok::<_, BoxError>((measured?, endpoints_after(&client)))
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    let (measured, after) = measured?;
    let latency = &measured.latency;
    Ok(ScaleRow {
        set,
        rps: measured.throughput(),
        p50_us: latency.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: latency.value_at_quantile(0.99) as f64 / 1000.0,
        failed: measured.errors,
        first_error: measured.first_error,
        after,
    })
}

/// What the client's balancer sees after a run: endpoints it may pick, and the states of
/// their connections, e.g. `1 of 2000 available; connections: 1 ready, 1999 failed`.
fn endpoints_after(client: &Client) -> String {
    let endpoints = client.endpoint_status();
    let available = endpoints.iter().filter(|e| e.available).count();
    let mut states = std::collections::BTreeMap::<&str, usize>::new();
    for state in endpoints.iter().flat_map(|e| &e.connections) {
        let name = match state {
            zrpc::ChannelState::Idle => "idle",
            zrpc::ChannelState::Connecting => "connecting",
            zrpc::ChannelState::Ready => "ready",
            zrpc::ChannelState::Failed { .. } => "failed",
            _ => "other",
        };
        *states.entry(name).or_default() += 1;
    }
    let states: Vec<String> = states.iter().map(|(name, count)| format!("{count} {name}")).collect();
    format!("{available} of {} available; connections: {}", endpoints.len(), states.join(", "))
}

/// The `serve zrpc-scale-<live>` child: `live` echo servers, as `compare`'s zrpc server.
///
/// # Errors
/// If the name does not end in a count, or a server cannot bind.
pub fn serve_child(name: &str) -> Result<(), BoxError> {
    let live: usize = name
        .strip_prefix(CHILD_PREFIX)
        .and_then(|count| count.parse().ok())
        .ok_or_else(|| format!("not a scale child: {name:?}"))?;
    crate::proc::serve_children(name, live, async || Zrpc::serve().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_parse_and_print_back() {
        for (text, set) in [
            ("1", Set { live: 1, conns: 1, dead: 0 }),
            ("1x100", Set { live: 1, conns: 100, dead: 0 }),
            ("1+1999", Set { live: 1, conns: 1, dead: 1999 }),
            ("10x2+5", Set { live: 10, conns: 2, dead: 5 }),
        ] {
            assert_eq!(text.parse::<Set>().expect(text), set);
            assert_eq!(set.to_string(), text);
        }
        for bad in ["", "0", "1x0", "x2", "1+", "a", "1+-1"] {
            assert!(bad.parse::<Set>().is_err(), "{bad:?} is not a set");
        }
        assert_eq!(DEFAULT_SETS.split(',').map(str::parse::<Set>).filter(Result::is_ok).count(), 5);
    }
}
