//! One call through the retry layer: the attempts a fail mode makes, and the error it returns.

use std::fmt::Write as _;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{Either, select};
use tokio::time::Instant;
use tower::retry::budget::Budget as _;
use tower::{Service, ServiceExt};

use super::{Settings, is_retryable};
use crate::context::PickRecord;
use crate::request::{Request, Response};
use crate::status::Status;

/// The resolution of tokio's timer: a sleep ends up to this much after its deadline.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// The state one call keeps across its attempts.
pub(super) struct Call {
    /// The request as the caller sent it: its hints are the base of every attempt's, and its
    /// deadline is the caller's own, against which attempt failures are judged.
    req: Request,
    settings: Settings,
    rng: fastrand::Rng,
}

impl Call {
    /// Starts a call: deposits into the budget, since every call (not only failing ones) earns
    /// retries.
    pub(super) fn new(req: Request, settings: Settings) -> Call {
        if let Some(budget) = &settings.budget {
            budget.deposit();
        }
        let rng = settings.seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        Call { req, settings, rng }
    }

    /// The record for the first attempt: the caller's own when it put one in the context (so it
    /// learns where the call went, e.g. for a timeout message), else a fresh one.
    pub(super) fn first_record(&self) -> PickRecord {
        self.req.ctx().pick_record().cloned().unwrap_or_default()
    }

    /// The request for one attempt: the caller's request, whose hints also exclude `exclude`,
    /// pin `pin` when given, with `record` for the balancer to fill. A first attempt, which
    /// neither excludes nor pins, leaves the hints as the caller set them (none allocates
    /// none).
    pub(super) fn attempt(&self, record: PickRecord, exclude: &[Arc<str>], pin: Option<&Arc<str>>) -> Request {
        let mut req = self.req.clone();
        let ctx = req.ctx_mut();
        ctx.set_pick_record(Some(record));
        if exclude.is_empty() && pin.is_none() {
            return req;
        }
        let hints = ctx.hints_mut();
        for address in exclude {
            if !hints.exclude.contains(address) {
                hints.exclude.push(address.clone());
            }
        }
        if let Some(pin) = pin {
            hints.pin = Some(pin.clone());
        }
        req
    }

    fn may_retry(&self, status: &Status) -> bool {
        is_retryable(status, &self.req)
    }

    fn deadline_passed(&self) -> bool {
        self.req.ctx().deadline().is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Whether a sleep of `backoff` starting now would end at or after the caller's deadline,
    /// leaving the next attempt no time. Tokio's timer fires up to one tick (1 ms) late, so the
    /// sleep is taken to last that much longer.
    fn outlives_deadline(&self, backoff: Duration) -> bool {
        self.req
            .ctx()
            .deadline()
            .is_some_and(|deadline| Instant::now().checked_add(backoff + TIMER_TICK).is_none_or(|end| end >= deadline))
    }

    fn withdraw(&self) -> bool {
        self.settings.budget.as_ref().is_none_or(|budget| budget.withdraw())
    }
}

/// Why the layer stopped before using every attempt its mode allows, when the reason is not in
/// the status itself.
#[derive(Clone, Copy)]
enum Stop {
    Budget,
    Deadline,
}

/// The error a call returns: the last attempt's status, code, details and unprocessed mark kept,
/// with the number of attempts and the reason for stopping early appended to the message.
fn summarise(last: Status, attempts: u32, stop: Option<Stop>) -> Status {
    if attempts <= 1 && stop.is_none() {
        return last;
    }
    let mut message =
        if last.message().is_empty() { last.code().description().to_owned() } else { last.message().to_owned() };
    if attempts > 1 {
        let _ = write!(message, "; {attempts} attempts");
    }
    match stop {
        Some(Stop::Budget) => message.push_str("; retry budget exhausted"),
        Some(Stop::Deadline) => message.push_str("; no time left before the deadline to retry"),
        None => {}
    }
    let status = Status::new(last.code(), message).with_details(last.details().clone());
    if last.is_unprocessed() { status.mark_unprocessed() } else { status }
}

/// `Failover` (`same_endpoint == false`) and `Failtry` (`true`): attempts one after the other,
/// with backoff, up to `retries` after `first`.
pub(super) async fn sequential<S>(
    mut call: Call,
    svc: S,
    first: S::Future,
    first_record: PickRecord,
    retries: u32,
    same_endpoint: bool,
) -> Result<Response, Status>
where
    S: Service<Request, Response = Response, Error = Status> + Clone,
{
    // Failover: the endpoints tried so far. Failtry: the endpoint of the first attempt.
    let mut tried: Vec<Arc<str>> = Vec::new();
    let mut pinned: Option<Arc<str>> = None;
    let mut record = first_record;
    let mut result = first.await;
    let mut attempts = 1u32;
    loop {
        let last = match result {
            Ok(response) => return Ok(response),
            Err(status) => status,
        };
        if let Some(address) = record.get() {
            if same_endpoint {
                pinned.get_or_insert_with(|| address.clone());
            } else if !tried.contains(address) {
                tried.push(address.clone());
            }
        }
        if attempts > retries || !call.may_retry(&last) {
            return Err(summarise(last, attempts, None));
        }
        let backoff = call.settings.backoff.full_jitter(attempts - 1, &mut call.rng);
        if call.outlives_deadline(backoff) {
            return Err(summarise(last, attempts, Some(Stop::Deadline)));
        }
        if !call.withdraw() {
            return Err(summarise(last, attempts, Some(Stop::Budget)));
        }
        if !backoff.is_zero() {
            tokio::time::sleep(backoff).await;
        }
        record = PickRecord::new();
        let req = call.attempt(record.clone(), &tried, pinned.as_ref());
        crate::observe::record_retry(req.method());
        result = svc.clone().oneshot(req).await;
        attempts = attempts.saturating_add(1);
    }
}

/// `Failbackup`: `first`, and one backup elsewhere when `first` has not answered within `delay`
/// (or at once when it fails sooner); the first success wins.
pub(super) async fn backup<S>(
    call: Call,
    svc: S,
    first: S::Future,
    first_record: PickRecord,
    delay: Duration,
) -> Result<Response, Status>
where
    S: Service<Request, Response = Response, Error = Status>,
{
    let mut first = pin!(first);
    let early_failure = match select(first.as_mut(), pin!(tokio::time::sleep(delay))).await {
        Either::Left((Ok(response), _)) => return Ok(response),
        Either::Left((Err(status), _)) => Some(status),
        Either::Right(((), _)) => None,
    };
    // Known once the balancer has picked, which it does before sending: normally by now.
    let exclude: Vec<Arc<str>> = first_record.get().cloned().into_iter().collect();

    if let Some(status) = early_failure {
        // The first attempt is over; the backup is a plain retry and obeys the same rules.
        if !call.may_retry(&status) {
            return Err(status);
        }
        if !call.withdraw() {
            return Err(summarise(status, 1, Some(Stop::Budget)));
        }
        let req = call.attempt(PickRecord::new(), &exclude, None);
        crate::observe::record_retry(req.method());
        return svc.oneshot(req).await.map_err(|status| summarise(status, 2, None));
    }

    // The first attempt is still out after `delay`: hedge, unless the call is already over or the
    // budget says the cluster has had enough extra traffic.
    if call.deadline_passed() || !call.withdraw() {
        return first.await;
    }
    let req = call.attempt(PickRecord::new(), &exclude, None);
    crate::observe::record_retry(req.method());
    let second = pin!(svc.oneshot(req));
    // Returning drops whichever attempt is still running, which cancels it on the wire.
    match select(first, second).await {
        Either::Left((Ok(response), _)) | Either::Right((Ok(response), _)) => Ok(response),
        Either::Left((Err(_), second)) => second.await.map_err(|status| summarise(status, 2, None)),
        Either::Right((Err(_), first)) => first.await.map_err(|status| summarise(status, 2, None)),
    }
}
