//! The well-behaved client: a real zrpc client, on a connection of its own, calling `echo` at a
//! steady pace while the hostile clients do their worst. What it sees is what every other user
//! of an attacked server sees.
//!
//! It calls `echo` with [`MESSAGE_BYTES`] bytes every [`PACE`] (at most 1000 calls a second, so
//! that it measures the server rather than loading it; a slow call delays the next one rather
//! than stacking calls up), each with a [`CALL_TIMEOUT`] deadline, one call at a time. Latency
//! is that of every call that completed, failed ones included: a call that timed out counts at
//! its timeout. A call still in flight when the scenario ends is not counted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::{Instant, MissedTickBehavior, timeout};
use zrpc::{Blob, Channel, Context};

use super::server::SoakClient;
use super::stop::Stop;
use crate::BoxError;

/// Bytes echoed per call.
pub const MESSAGE_BYTES: usize = 100;
/// The time between the starts of two calls.
pub const PACE: Duration = Duration::from_millis(1);
/// Each call's deadline.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How much longer than its deadline a call may take before it is given up on here, in case the
/// client's own deadline fails too.
const GIVE_UP_AFTER: Duration = Duration::from_secs(2);
/// The longest latency recorded exactly; anything longer is recorded as this.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// What the well-behaved client saw in one scenario.
#[derive(Debug, Clone)]
pub struct Calls {
    /// Calls answered with the bytes sent.
    pub ok: u64,
    /// Calls that failed, by what happened: a status code's name, `no answer` (given up on
    /// here), or `wrong echo`.
    pub failed: BTreeMap<String, u64>,
    /// Latency of every completed call, in nanoseconds.
    pub latency: Histogram<u64>,
}

impl Calls {
    fn new() -> Result<Calls, BoxError> {
        Ok(Calls { ok: 0, failed: BTreeMap::new(), latency: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)? })
    }

    /// Calls that failed, of every kind.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    fn record(&mut self, took: Duration, outcome: Result<(), String>) {
        let _ = self.latency.record(u64::try_from(took.as_nanos()).unwrap_or(MAX_LATENCY_NS).clamp(1, MAX_LATENCY_NS));
        match outcome {
            Ok(()) => self.ok += 1,
            Err(what) => *self.failed.entry(what).or_default() += 1,
        }
    }
}

/// A connected well-behaved client.
#[derive(Debug)]
pub struct Caller {
    client: SoakClient<Channel>,
    message: Blob,
}

impl Caller {
    /// Connects to `addr` and makes one call, so that the connection is up before the scenario
    /// starts.
    ///
    /// # Errors
    /// If connecting or the first call fails, or takes over 5 s.
    pub async fn connect(addr: SocketAddr) -> Result<Caller, BoxError> {
        let channel =
            timeout(Duration::from_secs(5), Channel::builder(addr.into()).name("soak-well-behaved").connect())
                .await
                .map_err(|_| "the well-behaved client could not connect within 5 s")??;
        let caller = Caller { client: SoakClient::new(channel), message: Blob::from(vec![0x5a; MESSAGE_BYTES]) };
        caller.call().await.map_err(|e| format!("the well-behaved client's first call failed: {e}"))?;
        Ok(caller)
    }

    /// Calls until the scenario ends.
    ///
    /// # Errors
    /// Only if the histogram cannot be made.
    pub async fn call_until(self, stop: Stop) -> Result<Calls, BoxError> {
        let mut calls = Calls::new()?;
        let mut ticks = tokio::time::interval(PACE);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        while stop.run(ticks.tick()).await.is_some() {
            let started = Instant::now();
            let Some(outcome) = stop.run(self.call()).await else { break };
            calls.record(started.elapsed(), outcome);
        }
        Ok(calls)
    }

    /// One call; `Err` says how it failed.
    async fn call(&self) -> Result<(), String> {
        let client = self.client.with_context(Context::new().with_timeout(CALL_TIMEOUT));
        match timeout(CALL_TIMEOUT + GIVE_UP_AFTER, client.echo(self.message.clone())).await {
            Ok(Ok(echo)) if *echo == *self.message => Ok(()),
            Ok(Ok(_)) => Err("wrong echo".into()),
            Ok(Err(status)) => Err(format!("{:?}", status.code())),
            Err(_) => Err("no answer".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_kind_and_every_call_is_timed() -> Result<(), BoxError> {
        let mut calls = Calls::new()?;
        calls.record(Duration::from_micros(100), Ok(()));
        calls.record(Duration::from_secs(1), Err("DeadlineExceeded".into()));
        calls.record(Duration::from_secs(1), Err("DeadlineExceeded".into()));
        calls.record(Duration::from_secs(120), Err("no answer".into()));
        assert_eq!((calls.ok, calls.failed_total()), (1, 3));
        assert_eq!(calls.failed.get("DeadlineExceeded"), Some(&2));
        assert_eq!(calls.latency.len(), 4);
        assert!(calls.latency.max() >= MAX_LATENCY_NS / 1000 * 999, "a call past the range is recorded at its top");
        Ok(())
    }
}
