//! Every transition of the breaker, against a scripted inner service on paused time.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::status::Code;

const NAME: &str = "10.0.0.7:7070";

/// What the inner service does with its next call.
enum Step {
    /// An `Ok` response carrying `payload` (an application error is one too).
    Ok(&'static [u8]),
    /// Fails with this status.
    Fail(Status),
    /// Answers `Ok` after a delay.
    Slow(Duration),
    /// Answers `Ok` once the sender is used or dropped.
    Gate(tokio::sync::oneshot::Receiver<()>),
    /// Never answers.
    Hang,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Status>> + Send>>;

/// The scripted endpoint: steps are taken in order, `Ok` once they run out.
#[derive(Clone)]
struct Script {
    steps: Arc<Mutex<VecDeque<Step>>>,
    calls: Arc<AtomicUsize>,
    up: Arc<AtomicBool>,
}

impl Script {
    fn push(&self, times: usize, step: impl Fn() -> Step) {
        let mut steps = self.steps.lock().expect("no test panics while holding the script");
        steps.extend((0..times).map(|_| step()));
    }

    fn push_one(&self, step: Step) {
        self.steps.lock().expect("no test panics while holding the script").push_back(step);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    fn next(&self) -> BoxFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let step = self.steps.lock().expect("no test panics while holding the script").pop_front();
        match step.unwrap_or(Step::Ok(b"")) {
            Step::Ok(payload) => Box::pin(std::future::ready(Ok(Response::new(Bytes::from_static(payload))))),
            Step::Fail(status) => Box::pin(std::future::ready(Err(status))),
            Step::Slow(delay) => Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(Response::new(Bytes::new()))
            }),
            Step::Gate(gate) => Box::pin(async move {
                let _ = gate.await;
                Ok(Response::new(Bytes::new()))
            }),
            Step::Hang => Box::pin(std::future::pending()),
        }
    }
}

/// An endpoint's service as the breaker sees it: the script, plus an availability flag.
#[derive(Clone)]
struct Endpoint {
    service: BoxCloneService<Request, Response, Status>,
    up: Arc<AtomicBool>,
}

impl Service<Request> for Endpoint {
    type Response = Response;
    type Error = Status;
    type Future = <BoxCloneService<Request, Response, Status> as Service<Request>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.service.call(request)
    }
}

impl Available for Endpoint {
    fn is_available(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }
}

fn breaker(config: BreakerConfig) -> (CircuitBreaker<Endpoint>, Script) {
    let script = Script { steps: Arc::default(), calls: Arc::default(), up: Arc::new(AtomicBool::new(true)) };
    let scripted = script.clone();
    let service = BoxCloneService::new(service_fn(move |_: Request| scripted.next()));
    let endpoint = Endpoint { service, up: Arc::clone(&script.up) };
    (CircuitBreakerLayer::new(config).with_name(NAME).layer(endpoint), script)
}

fn request() -> Request {
    Request::new("Greeter.hello", Bytes::from_static(b"hi"))
}

/// Starts a call without awaiting it.
async fn start(breaker: &mut CircuitBreaker<Endpoint>) -> ResponseFuture<BoxFuture> {
    breaker.ready().await.expect("the scripted service is always ready").call(request())
}

async fn send(breaker: &mut CircuitBreaker<Endpoint>) -> Result<Response, Status> {
    start(breaker).await.await
}

/// Sends `n` calls one after another and returns their codes (`Code::Ok` for responses).
async fn send_n(breaker: &mut CircuitBreaker<Endpoint>, n: usize) -> Vec<Code> {
    let mut codes = Vec::with_capacity(n);
    for _ in 0..n {
        codes.push(send(breaker).await.map_or_else(|status| status.code(), |_| Code::Ok));
    }
    codes
}

fn internal() -> Step {
    Step::Fail(Status::internal("handler panicked"))
}

fn connect_failure() -> Step {
    Step::Fail(Status::unavailable("connection refused").mark_unprocessed())
}

/// Opens a breaker with the default config by 20 `Internal` failures.
async fn trip(breaker: &mut CircuitBreaker<Endpoint>, script: &Script) {
    script.push(20, internal);
    send_n(breaker, 20).await;
    assert_eq!(breaker.state(), BreakerState::Open);
}

async fn advance(duration: Duration) {
    tokio::time::advance(duration).await;
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[tokio::test(start_paused = true)]
async fn opens_when_the_failure_rate_exceeds_the_threshold_over_enough_calls() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    script.push(10, || Step::Ok(b""));
    script.push(10, internal);
    send_n(&mut breaker, 20).await;
    // 10 of 20 is 50%, which does not exceed 50%.
    assert_eq!(breaker.state(), BreakerState::Closed);

    script.push(1, internal);
    assert_eq!(send_n(&mut breaker, 1).await, [Code::Internal]);
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(script.calls(), 21);
}

#[tokio::test(start_paused = true)]
async fn does_not_open_on_a_rate_with_too_few_calls() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    script.push(19, internal);
    send_n(&mut breaker, 19).await;
    // A 100% failure rate, but over 19 calls of the 20 required.
    assert_eq!(breaker.state(), BreakerState::Closed);

    script.push(1, internal);
    send_n(&mut breaker, 1).await;
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_connect_failures() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    // Any answer from the endpoint ends a streak: a success, a failure that was processed, or a
    // status that is not counted at all.
    script.push(4, connect_failure);
    script.push(1, || Step::Ok(b""));
    script.push(4, connect_failure);
    script.push(1, internal);
    script.push(4, connect_failure);
    script.push(1, || Step::Fail(Status::not_found("unknown method Greeter.nope")));
    script.push(4, connect_failure);
    send_n(&mut breaker, 19).await;
    assert_eq!(breaker.state(), BreakerState::Closed);

    script.push(1, connect_failure);
    assert_eq!(send_n(&mut breaker, 1).await, [Code::Unavailable]);
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(script.calls(), 20);
}

#[tokio::test(start_paused = true)]
async fn consecutive_connect_failures_can_be_turned_off() {
    let (mut breaker, script) = breaker(BreakerConfig::default().consecutive_failures(0));
    script.push(19, connect_failure);
    send_n(&mut breaker, 19).await;
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_fails_fast_without_calling_the_endpoint() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    trip(&mut breaker, &script).await;
    let calls = script.calls();

    let status = send(&mut breaker).await.expect_err("the breaker is open");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.is_unprocessed());
    assert_eq!(status.message(), "circuit breaker open for 10.0.0.7:7070; retrying after 1s");

    advance(ms(400)).await;
    let status = send(&mut breaker).await.expect_err("the breaker is still open");
    assert_eq!(status.message(), "circuit breaker open for 10.0.0.7:7070; retrying after 600ms");
    assert_eq!(script.calls(), calls);
}

#[tokio::test(start_paused = true)]
async fn the_refusal_omits_the_name_when_there_is_none() {
    let (endpoint, script) = breaker(BreakerConfig::default());
    let mut breaker = CircuitBreaker::new(endpoint.into_inner(), BreakerConfig::default());
    assert_eq!(breaker.name(), None);
    trip(&mut breaker, &script).await;
    let status = send(&mut breaker).await.expect_err("the breaker is open");
    assert_eq!(status.message(), "circuit breaker open; retrying after 1s");
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_turns_half_open_after_the_cooldown() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    trip(&mut breaker, &script).await;
    advance(ms(999)).await;
    assert_eq!(breaker.state(), BreakerState::Open);
    advance(ms(1)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);

    let calls = script.calls();
    assert!(send(&mut breaker).await.is_ok());
    assert_eq!(script.calls(), calls + 1, "the probe reached the endpoint");
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_half_open_breaker_closes_after_enough_successes_with_a_fresh_window() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    trip(&mut breaker, &script).await;
    advance(ms(1000)).await;

    for _ in 0..2 {
        assert!(send(&mut breaker).await.is_ok());
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
    }
    assert!(send(&mut breaker).await.is_ok());
    assert_eq!(breaker.state(), BreakerState::Closed);

    // The 20 failures that opened it are gone: 19 new ones are too few to open it again.
    script.push(19, internal);
    send_n(&mut breaker, 19).await;
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_with_a_doubled_cooldown() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    trip(&mut breaker, &script).await;
    advance(ms(1000)).await;

    script.push(1, || Step::Fail(Status::deadline_exceeded("deadline of 1s exceeded")));
    assert_eq!(send_n(&mut breaker, 1).await, [Code::DeadlineExceeded]);
    assert_eq!(breaker.state(), BreakerState::Open);
    let status = send(&mut breaker).await.expect_err("the breaker is open again");
    assert_eq!(status.message(), "circuit breaker open for 10.0.0.7:7070; retrying after 2s");

    advance(ms(1000)).await;
    assert_eq!(breaker.state(), BreakerState::Open, "the old cool-down is not enough");
    advance(ms(1000)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn the_cooldown_doubles_up_to_the_maximum_and_resets_on_closing() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    trip(&mut breaker, &script).await;
    advance(ms(1000)).await;

    for cooldown in [2_000, 4_000, 8_000, 16_000, 30_000, 30_000] {
        script.push(1, connect_failure);
        send_n(&mut breaker, 1).await;
        advance(ms(cooldown - 1)).await;
        assert_eq!(breaker.state(), BreakerState::Open, "open before {cooldown}ms");
        advance(ms(1)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen, "half-open after {cooldown}ms");
    }

    send_n(&mut breaker, 3).await;
    assert_eq!(breaker.state(), BreakerState::Closed);
    trip(&mut breaker, &script).await;
    advance(ms(1000)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen, "back to the first cool-down");
}

#[tokio::test(start_paused = true)]
async fn a_configured_maximum_caps_the_cooldown() {
    let config = BreakerConfig::default().cooldown(ms(100)).max_cooldown(ms(250));
    let (mut breaker, script) = breaker(config);
    trip(&mut breaker, &script).await;
    advance(ms(100)).await;

    for cooldown in [200, 250, 250] {
        script.push(1, internal);
        send_n(&mut breaker, 1).await;
        advance(ms(cooldown - 1)).await;
        assert_eq!(breaker.state(), BreakerState::Open);
        advance(ms(1)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
    }
}

#[tokio::test(start_paused = true)]
async fn application_errors_count_as_successes() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    // Methods returning `Result<T, E>` carry their `Err` in an `Ok` response.
    script.push(100, || Step::Ok(b"Err(OutOfStock)"));
    script.push(100, internal);
    send_n(&mut breaker, 200).await;
    // 100 failures of 200 calls: 50%, not above it.
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(script.calls(), 200);
}

#[tokio::test(start_paused = true)]
async fn callers_mistakes_count_for_nothing() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    script.push(19, internal);
    script.push(25, || Step::Fail(Status::not_found("unknown method Greeter.nope")));
    script.push(25, || Step::Fail(Status::invalid_argument("undecodable arguments")));
    script.push(25, || Step::Fail(Status::permission_denied("not allowed")));
    script.push(25, || Step::Fail(Status::resource_exhausted("rate limited")));
    let codes = send_n(&mut breaker, 119).await;
    assert_eq!(codes.iter().filter(|&&c| c == Code::NotFound).count(), 25);
    // Not failures: 19 failures are still too few to open.
    assert_eq!(breaker.state(), BreakerState::Closed);

    // Not successes either: the 20th failure finds a 100% failure rate.
    script.push(1, internal);
    send_n(&mut breaker, 1).await;
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn old_outcomes_leave_the_rolling_window() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    script.push(19, internal);
    send_n(&mut breaker, 19).await;
    advance(Duration::from_secs(11)).await;

    // The 19 failures from 11 s ago are out of the 10 s window.
    script.push(19, internal);
    send_n(&mut breaker, 19).await;
    assert_eq!(breaker.state(), BreakerState::Closed);

    // The window rolls rather than clears: these 19, 9.5 s old, still count.
    advance(ms(9_500)).await;
    script.push(1, internal);
    send_n(&mut breaker, 1).await;
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_one_probe_through_and_refuses_the_rest() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    trip(&mut breaker, &script).await;
    advance(ms(1000)).await;
    let calls = script.calls();

    script.push(1, || Step::Hang);
    let probe = start(&mut breaker).await;
    assert_eq!(script.calls(), calls + 1);
    let status = send(&mut breaker).await.expect_err("the probe slot is taken");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.is_unprocessed());
    assert_eq!(status.message(), "circuit breaker half-open for 10.0.0.7:7070; waiting for its probe");
    assert_eq!(script.calls(), calls + 1, "the refused call did not reach the endpoint");
    drop(probe);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_gives_its_slot_back() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    trip(&mut breaker, &script).await;
    advance(ms(1000)).await;

    script.push(1, || Step::Hang);
    let probe = start(&mut breaker).await;
    assert!(!breaker.is_available(), "no probe slot is free");
    drop(probe);
    assert!(breaker.is_available());
    assert_eq!(breaker.state(), BreakerState::HalfOpen, "a cancelled probe counts for nothing");

    let calls = script.calls();
    assert!(send(&mut breaker).await.is_ok());
    assert_eq!(script.calls(), calls + 1);
}

#[tokio::test(start_paused = true)]
async fn several_probes_run_at_once_when_configured() {
    let (mut breaker, script) = breaker(BreakerConfig::default().probes(2).successes_to_close(2));
    trip(&mut breaker, &script).await;
    advance(ms(1000)).await;

    script.push(2, || Step::Slow(ms(10)));
    let first = start(&mut breaker).await;
    let second = start(&mut breaker).await;
    let status = send(&mut breaker).await.expect_err("both probe slots are taken");
    assert_eq!(status.message(), "circuit breaker half-open for 10.0.0.7:7070; waiting for 2 probes");

    assert!(first.await.is_ok());
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert!(second.await.is_ok());
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_uncounted_probe_answer_frees_the_slot_and_decides_nothing() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    trip(&mut breaker, &script).await;
    advance(ms(1000)).await;

    script.push(1, || Step::Fail(Status::not_found("unknown method Greeter.nope")));
    assert_eq!(send_n(&mut breaker, 1).await, [Code::NotFound]);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert!(breaker.is_available());
    send_n(&mut breaker, 3).await;
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_outcome_from_before_the_breaker_opened_is_ignored() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    script.push(1, || Step::Slow(ms(1500)));
    let late = start(&mut breaker).await;
    trip(&mut breaker, &script).await;
    advance(ms(1000)).await;

    // The breaker is half-open when the slow call, admitted while closed, succeeds: it is no probe.
    assert!(late.await.is_ok());
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    send_n(&mut breaker, 2).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen, "two probe successes of the three needed");
    send_n(&mut breaker, 1).await;
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_from_an_earlier_half_open_spell_is_ignored() {
    let (mut breaker, script) = breaker(BreakerConfig::default().probes(2).successes_to_close(1));
    trip(&mut breaker, &script).await;
    advance(ms(1000)).await;

    let (release, gate) = tokio::sync::oneshot::channel();
    script.push_one(Step::Gate(gate));
    let stale = start(&mut breaker).await;
    script.push(1, internal);
    send_n(&mut breaker, 1).await;
    assert_eq!(breaker.state(), BreakerState::Open, "the second probe failed");

    advance(ms(2000)).await;
    script.push(1, || Step::Hang);
    let current = start(&mut breaker).await;
    let _ = release.send(());
    assert!(stale.await.is_ok());
    // One success would close the breaker, but that probe belonged to the previous spell.
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    drop(current);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_closed_call_counts_for_nothing() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    script.push(19, internal);
    send_n(&mut breaker, 19).await;
    script.push(1, || Step::Hang);
    drop(start(&mut breaker).await);
    assert_eq!(breaker.state(), BreakerState::Closed);
    script.push(1, internal);
    send_n(&mut breaker, 1).await;
    assert_eq!(breaker.state(), BreakerState::Open, "20 failures of 20 counted calls");
}

#[tokio::test(start_paused = true)]
async fn availability_follows_the_state_and_the_endpoint() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    assert!(breaker.is_available());
    script.set_up(false);
    assert!(!breaker.is_available(), "a closed breaker in front of an endpoint that is down");
    script.set_up(true);

    trip(&mut breaker, &script).await;
    assert!(!breaker.is_available(), "open");
    advance(ms(1000)).await;
    assert!(breaker.is_available(), "past the cool-down, the next call is a probe");
    script.set_up(false);
    assert!(!breaker.is_available(), "half-open, but the endpoint is down");
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_state() {
    let (mut breaker, script) = breaker(BreakerConfig::default());
    let mut other = breaker.clone();
    trip(&mut breaker, &script).await;
    assert_eq!(other.state(), BreakerState::Open);
    let calls = script.calls();
    assert!(send(&mut other).await.is_err());
    assert_eq!(script.calls(), calls);
}

#[test]
fn outcomes_are_classified_as_documented() {
    let ok = Ok(Response::new(Bytes::new()));
    assert_eq!(Outcome::of(&ok), Outcome::Success);
    let cases = [
        (Status::unavailable("connection refused").mark_unprocessed(), Outcome::ConnectFailure),
        (Status::unavailable("connection lost"), Outcome::Failure),
        (Status::internal("panicked"), Outcome::Failure),
        (Status::deadline_exceeded("late"), Outcome::Failure),
        (Status::internal("refused").mark_unprocessed(), Outcome::Failure),
        (Status::not_found("no such method"), Outcome::Ignored),
        (Status::invalid_argument("bad"), Outcome::Ignored),
        (Status::cancelled("cancelled"), Outcome::Ignored),
        (Status::unauthenticated("who"), Outcome::Ignored),
    ];
    for (status, outcome) in cases {
        assert_eq!(Outcome::of(&Err(status.clone())), outcome, "{status:?}");
    }
}

#[test]
fn config_setters_clamp_instead_of_failing() {
    let config = BreakerConfig::default()
        .buckets(0)
        .window(Duration::ZERO)
        .failure_rate(f64::NAN)
        .min_calls(0)
        .probes(0)
        .successes_to_close(0)
        .cooldown(ms(500))
        .max_cooldown(ms(100));
    assert_eq!(config.buckets, 1);
    assert_eq!(config.window, ms(1));
    assert_eq!(config.failure_rate, 1.0);
    assert_eq!((config.min_calls, config.probes, config.successes_to_close), (1, 1, 1));
    assert_eq!(config.max_cooldown, ms(500));
    assert_eq!(BreakerConfig::default().failure_rate(1.7).failure_rate, 1.0);
}
