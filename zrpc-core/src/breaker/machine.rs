//! The breaker's state machine: pure state, every method told the time, no I/O and no locking,
//! so that the service in `mod.rs` is a thin shell around it and the transitions are testable
//! on their own.

use std::time::Duration;

use tokio::time::Instant;

use super::BreakerState;
use super::config::BreakerConfig;
use crate::request::Response;
use crate::status::{Code, Status};

/// What one call's result means to the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An `Ok` response, application errors included: they are part of the payload.
    Success,
    /// A counted failure that reached the endpoint or may have: `Internal`, `DeadlineExceeded`,
    /// or `Unavailable` after the request went out.
    Failure,
    /// `Unavailable` marked unprocessed: the endpoint could not be reached at all.
    ConnectFailure,
    /// A status that is the caller's fault or says nothing about the endpoint's health
    /// (`NotFound`, `InvalidArgument`, …): not counted, but proof that the endpoint answered.
    Ignored,
    /// The call future was dropped before it finished: counts as nothing at all.
    Cancelled,
}

impl Outcome {
    pub(crate) fn of(result: &Result<Response, Status>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(status) => match status.code() {
                Code::Unavailable if status.is_unprocessed() => Outcome::ConnectFailure,
                Code::Unavailable | Code::Internal | Code::DeadlineExceeded => Outcome::Failure,
                _ => Outcome::Ignored,
            },
        }
    }
}

/// Proof that a call was let through, and in which phase: the outcome is applied only if the
/// machine is still in that phase, so a call admitted while closed that finishes after the
/// breaker opened (or a probe of an earlier half-open spell) changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) generation: u64,
    pub(crate) probe: bool,
}

/// Why a call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Open; half-open in `remaining`.
    Open { remaining: Duration },
    /// Half-open with every probe slot taken.
    ProbesBusy { in_flight: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

/// The state of one endpoint's breaker.
///
/// Invariant: `generation` changes on every change of phase (closed → open → half-open → …),
/// and only then, so a [`Ticket`] with the current generation was issued in the current phase.
#[derive(Debug)]
pub(crate) struct Machine {
    config: BreakerConfig,
    phase: Phase,
    generation: u64,
    window: Window,
    /// Connect failures in a row while closed.
    consecutive: u32,
    /// The cool-down of the current (or next) open spell: `config.cooldown` after closing,
    /// doubled up to `config.max_cooldown` by each failed probe.
    cooldown: Duration,
}

impl Machine {
    pub(crate) fn new(config: BreakerConfig, now: Instant) -> Machine {
        let window = Window::new(config.window, config.buckets, now);
        let cooldown = config.cooldown;
        Machine { config, phase: Phase::Closed, generation: 0, window, consecutive: 0, cooldown }
    }

    pub(crate) fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The generation and phase packed for the service's lock-free fast path: the generation
    /// shifted left by 2, the phase in the low bits (see [`Machine::closed_generation`]).
    pub(crate) fn tag(&self) -> u64 {
        let phase = match self.phase {
            Phase::Closed => TAG_CLOSED,
            Phase::Open { .. } => TAG_OPEN,
            Phase::HalfOpen { .. } => TAG_HALF_OPEN,
        };
        (self.generation << 2) | phase
    }

    /// The phase a [`tag`](Machine::tag) names: `closed`, `open` or `half_open`.
    pub(crate) fn phase_name(tag: u64) -> &'static str {
        match tag & 0b11 {
            TAG_CLOSED => "closed",
            TAG_OPEN => "open",
            _ => "half_open",
        }
    }

    /// The generation a [`tag`](Machine::tag) names, if it was taken while closed.
    pub(crate) fn closed_generation(tag: u64) -> Option<u64> {
        (tag & 0b11 == TAG_CLOSED).then_some(tag >> 2)
    }

    /// The state as a caller sees it: an open breaker whose cool-down has passed is half-open,
    /// since the next call will be its probe.
    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a call made now would be let through.
    pub(crate) fn would_admit(&self, now: Instant) -> bool {
        match self.phase {
            Phase::Closed => true,
            Phase::Open { until } => now >= until,
            Phase::HalfOpen { in_flight, .. } => in_flight < self.config.probes,
        }
    }

    /// Lets a call through, or says why not. An open breaker whose cool-down has passed turns
    /// half-open here, and the call is its first probe.
    pub(crate) fn admit(&mut self, now: Instant) -> Result<Ticket, Rejection> {
        let probe = Ticket { generation: self.generation, probe: true };
        match self.phase {
            Phase::Closed => Ok(Ticket { generation: self.generation, probe: false }),
            Phase::Open { until } if now < until => Err(Rejection::Open { remaining: until - now }),
            Phase::Open { .. } => {
                self.enter(Phase::HalfOpen { in_flight: 1, successes: 0 });
                Ok(Ticket { generation: self.generation, probe: true })
            }
            Phase::HalfOpen { in_flight, successes } if in_flight < self.config.probes => {
                self.phase = Phase::HalfOpen { in_flight: in_flight + 1, successes };
                Ok(probe)
            }
            Phase::HalfOpen { in_flight, .. } => Err(Rejection::ProbesBusy { in_flight }),
        }
    }

    /// Applies the outcome of an admitted call. Stale tickets (from an earlier phase) are ignored.
    pub(crate) fn finish(&mut self, ticket: Ticket, outcome: Outcome, now: Instant) {
        if ticket.generation != self.generation {
            return;
        }
        match self.phase {
            Phase::Closed if !ticket.probe => self.finish_closed(outcome, now),
            Phase::HalfOpen { in_flight, successes } if ticket.probe => {
                let in_flight = in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Success if successes + 1 >= self.config.successes_to_close => self.close(now),
                    Outcome::Success => self.phase = Phase::HalfOpen { in_flight, successes: successes + 1 },
                    Outcome::Failure | Outcome::ConnectFailure => {
                        self.cooldown = self.cooldown.saturating_mul(2).min(self.config.max_cooldown);
                        self.open(now);
                    }
                    // The probe slot is free again; the next call probes.
                    Outcome::Ignored | Outcome::Cancelled => self.phase = Phase::HalfOpen { in_flight, successes },
                }
            }
            // A ticket's kind always matches the phase of its generation.
            _ => {}
        }
    }

    fn finish_closed(&mut self, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Success => {
                self.consecutive = 0;
                self.window.record(now, false);
            }
            Outcome::Failure | Outcome::ConnectFailure => {
                self.consecutive = if outcome == Outcome::ConnectFailure { self.consecutive + 1 } else { 0 };
                self.window.record(now, true);
                let streak = self.config.consecutive_failures;
                if (streak > 0 && self.consecutive >= streak) || self.rate_exceeded(now) {
                    self.open(now);
                }
            }
            // The endpoint answered, so the connection works: a connect-failure streak is over.
            Outcome::Ignored => self.consecutive = 0,
            Outcome::Cancelled => {}
        }
    }

    fn rate_exceeded(&self, now: Instant) -> bool {
        let (calls, failures) = self.window.totals(now);
        calls >= u64::from(self.config.min_calls) && failures as f64 > self.config.failure_rate * calls as f64
    }

    fn open(&mut self, now: Instant) {
        // An `Instant` this far out cannot be built on some platforms; a year is "open" enough.
        let cooldown = self.cooldown.min(Duration::from_secs(365 * 24 * 3600));
        self.enter(Phase::Open { until: now + cooldown });
    }

    fn close(&mut self, now: Instant) {
        self.window.reset(now);
        self.consecutive = 0;
        self.cooldown = self.config.cooldown;
        self.enter(Phase::Closed);
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation += 1;
    }
}

const TAG_CLOSED: u64 = 0;
const TAG_OPEN: u64 = 1;
const TAG_HALF_OPEN: u64 = 2;

/// Outcomes over the last `span`, in `buckets` slices (Hystrix's rolling statistical window):
/// recording touches one bucket, and a bucket is reused once it is a whole window old.
///
/// A bucket holds the outcomes of one slice of time, identified by its index since `origin`;
/// the window is the current slice and the `n - 1` before it, so it reaches back between
/// `span - span / n` and `span`.
#[derive(Debug)]
struct Window {
    buckets: Box<[Bucket]>,
    width: Duration,
    origin: Instant,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    slice: u64,
    calls: u32,
    failures: u32,
}

impl Window {
    fn new(span: Duration, buckets: u32, now: Instant) -> Window {
        let n = buckets.max(1);
        let width = (span / n).max(Duration::from_nanos(1));
        Window { buckets: vec![Bucket::default(); n as usize].into_boxed_slice(), width, origin: now }
    }

    fn slice(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.width.as_nanos()).unwrap_or(u64::MAX)
    }

    fn record(&mut self, now: Instant, failure: bool) {
        let slice = self.slice(now);
        let n = self.buckets.len() as u64;
        let bucket = &mut self.buckets[(slice % n) as usize];
        if bucket.slice != slice {
            *bucket = Bucket { slice, calls: 0, failures: 0 };
        }
        bucket.calls = bucket.calls.saturating_add(1);
        bucket.failures = bucket.failures.saturating_add(u32::from(failure));
    }

    /// The calls and failures in the window at `now`.
    fn totals(&self, now: Instant) -> (u64, u64) {
        let slice = self.slice(now);
        let n = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|b| b.slice <= slice && slice - b.slice < n)
            .fold((0, 0), |(calls, failures), b| (calls + u64::from(b.calls), failures + u64::from(b.failures)))
    }

    fn reset(&mut self, now: Instant) {
        self.buckets.fill(Bucket::default());
        self.origin = now;
    }
}
