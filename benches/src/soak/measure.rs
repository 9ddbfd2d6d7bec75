//! One scenario against a fresh server child, from start to kill.
//!
//! 1. Start the server child and connect the well-behaved client (one call, so its connection
//!    is up). The server's `VmRSS` now is the start.
//! 2. Start the well-behaved client's calls, a watcher sampling the server's `VmRSS` every
//!    [`SAMPLE_EVERY`], and the hostile client. The watcher ends the scenario early when the
//!    server passes the memory cap or is gone.
//! 3. At the end, with every hostile connection still open, read `VmRSS` (end) and `VmHWM`
//!    (peak: the child is fresh, so its high-water mark is this scenario's).
//! 4. Then collect the well-behaved client's calls and let each hostile connection that read
//!    nothing look back for a close ([`RawConn::look_back`](super::raw::RawConn::look_back)),
//!    close everything, and kill the child.
//!
//! Every wait is bounded: the clients stop at the scenario's end, each is given
//! [`GRACE`] more before it is abandoned, the runtime is shut down with a timeout, and the child
//! is killed whatever happened.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::{Instant, timeout, timeout_at};

use super::Options;
use super::hostile::Attack;
use super::report::{Cut, Hostile, Row, Rss};
use super::scenario::Scenario;
use super::stop::Stop;
use super::well_behaved::Caller;
use crate::BoxError;
use crate::proc::{self, ServerProcess};

/// How often the server's `VmRSS` is sampled against the cap.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// How long past the scenario's end a client may take to stop before it is abandoned.
pub const GRACE: Duration = Duration::from_secs(10);
/// How long a connection that read nothing reads afterwards, looking for a close.
pub const LOOK_BACK: Duration = Duration::from_secs(1);

/// Runs `scenario` against a fresh server child.
///
/// # Errors
/// If the server cannot be started, its memory cannot be read, or the well-behaved client
/// cannot connect. What happens once the scenario runs is reported, not returned.
pub fn measure(scenario: Scenario, options: &Options) -> Result<Row, BoxError> {
    // Dropped last: the child is killed after the runtime, and every connection in it, is gone.
    let mut server = ServerProcess::spawn_serving(scenario.server())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let row = runtime.block_on(run(scenario, options, server.addr(), server.id()));
    runtime.shutdown_timeout(Duration::from_secs(2));
    let mut row = row?;
    row.server_exit = server.exited().map(|status| status.to_string());
    Ok(row)
}

async fn run(scenario: Scenario, options: &Options, addr: SocketAddr, pid: u32) -> Result<Row, BoxError> {
    let caller = Caller::connect(addr).await?;
    let start_kib = proc::rss_kib(pid).ok_or("cannot read the server's VmRSS in /proc")?;
    let started = Instant::now();
    let stop = Stop::at(started + scenario.duration(options.duration, options.long_duration));
    let calling = tokio::spawn(caller.call_until(stop.clone()));
    let watching = tokio::spawn(watch_memory(pid, options.rss_cap_mib.saturating_mul(1024), stop.clone()));
    let attack = timeout_at(stop.deadline() + GRACE, scenario.attack(addr, stop.clone())).await;
    // A normal attack returns at the end; one that failed early ends the scenario with it.
    stop.now();
    let ran = started.elapsed();
    let rss = Rss { start_kib, peak_kib: proc::peak_rss_kib(pid), end_kib: proc::rss_kib(pid) };

    let cut = match timeout(GRACE, watching).await {
        Ok(Ok(cut)) => cut,
        _ => None,
    };
    let calls = match timeout(GRACE, calling).await {
        Ok(Ok(Ok(calls))) => Ok(calls),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(format!("the well-behaved client failed: {e}")),
        Err(_) => Err(format!("the well-behaved client did not stop within {GRACE:?}")),
    };
    let mut attack = match attack {
        Ok(Ok(attack)) => attack,
        Ok(Err(e)) => Attack { failed: vec![format!("the hostile client could not start: {e}")], ..Attack::default() },
        Err(_) => {
            Attack { failed: vec![format!("the hostile client did not stop within {GRACE:?}")], ..Attack::default() }
        }
    };
    futures::future::join_all(attack.conns.iter_mut().map(|conn| conn.look_back(LOOK_BACK))).await;
    Ok(Row { scenario, ran, cut, rss, hostile: Hostile::from(attack), calls, server_exit: None })
}

/// Samples the server's `VmRSS` until the scenario ends, and ends it early when the server passes
/// `cap_kib` or is gone; returns why it ended it, if it did.
async fn watch_memory(pid: u32, cap_kib: u64, stop: Stop) -> Option<Cut> {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    while stop.run(ticks.tick()).await.is_some() {
        let cut = match proc::rss_kib(pid) {
            Some(kib) if kib > cap_kib => Cut::RssCap { cap_mib: cap_kib / 1024 },
            Some(_) => continue,
            // A child that exited is a zombie until reaped: its status has no VmRSS line.
            None => Cut::ServerGone,
        };
        stop.now();
        return Some(cut);
    }
    None
}
