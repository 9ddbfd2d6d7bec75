use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use super::*;
use crate::backoff::Backoff;
use crate::balance::{Candidates, EndpointView, PickContext};
use crate::context::{Context, Hints};
use crate::timeout::TimeoutLayer;

// ---------------------------------------------------------------------------------------------
// A mock cluster: a balancer over scripted endpoints, honouring hints like the real ones.
// ---------------------------------------------------------------------------------------------

/// How one endpoint answers each call it receives.
#[derive(Clone, Debug)]
struct Script {
    /// `None`: never answers.
    after: Option<Duration>,
    result: Result<(), Status>,
}

fn ok() -> Script {
    Script { after: Some(Duration::ZERO), result: Ok(()) }
}

fn slow(after: Duration) -> Script {
    Script { after: Some(after), result: Ok(()) }
}

fn fail(status: Status) -> Script {
    Script { after: Some(Duration::ZERO), result: Err(status) }
}

fn fail_after(after: Duration, status: Status) -> Script {
    Script { after: Some(after), result: Err(status) }
}

fn hang() -> Script {
    Script { after: None, result: Ok(()) }
}

fn refused(address: &str) -> Status {
    Status::unavailable(format!("connection to {address} refused")).mark_unprocessed()
}

#[derive(Debug, Default)]
struct Log {
    /// Endpoint of every attempt, in order.
    hits: Vec<Arc<str>>,
    /// The hints every attempt arrived with.
    hints: Vec<Hints>,
    /// Endpoints whose attempt was dropped before it answered.
    cancelled: Vec<Arc<str>>,
    /// When each attempt arrived, from the test's start.
    times: Vec<Instant>,
}

#[derive(Clone, Debug)]
struct Cluster {
    endpoints: Arc<Vec<(Arc<str>, Script)>>,
    log: Arc<Mutex<Log>>,
}

impl Cluster {
    fn new(endpoints: Vec<(&str, Script)>) -> Cluster {
        let endpoints = endpoints.into_iter().map(|(a, s)| (Arc::<str>::from(a), s)).collect();
        Cluster { endpoints: Arc::new(endpoints), log: Arc::default() }
    }

    /// The cluster as the service below the retry layer: picks like a balancer — the pinned
    /// endpoint, else the first eligible one not excluded, else the first — notes the pick in the
    /// request's record, and answers as the endpoint's script says.
    fn service(&self) -> impl Service<Request, Response = Response, Error = Status, Future: Send> + Clone + use<> {
        let cluster = self.clone();
        tower::service_fn(move |req: Request| {
            let cluster = cluster.clone();
            async move { cluster.handle(req).await }
        })
    }

    async fn handle(self, req: Request) -> Result<Response, Status> {
        let index = {
            let views: Vec<_> = self.endpoints.iter().map(|(a, _)| EndpointView::new(a)).collect();
            let ctx = PickContext::for_request(&req);
            let candidates = Candidates::new(&views, &ctx).map_err(Status::mark_unprocessed)?;
            candidates.pinned().unwrap_or(candidates.first())
        };
        let (address, script) = self.endpoints.get(index).cloned().ok_or_else(|| Status::internal("bad pick"))?;
        if let Some(record) = req.ctx().pick_record() {
            record.set(address.clone());
        }
        self.with_log(|log| {
            log.hits.push(address.clone());
            log.hints.push(req.ctx().hints().clone());
            log.times.push(Instant::now());
        });
        let mut guard = CancelGuard { cluster: &self, address: &address, armed: true };
        match script.after {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
        guard.armed = false;
        script.result.map(|()| Response::new(Bytes::copy_from_slice(address.as_bytes())))
    }

    fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> T {
        let mut log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut log)
    }

    fn hits(&self) -> Vec<String> {
        self.with_log(|log| log.hits.iter().map(|a| a.to_string()).collect())
    }

    fn cancelled(&self) -> Vec<String> {
        self.with_log(|log| log.cancelled.iter().map(|a| a.to_string()).collect())
    }

    fn hints(&self) -> Vec<Hints> {
        self.with_log(|log| log.hints.clone())
    }

    fn times(&self) -> Vec<Instant> {
        self.with_log(|log| log.times.clone())
    }
}

/// Notes in the log that an endpoint's attempt was dropped before it answered.
struct CancelGuard<'a> {
    cluster: &'a Cluster,
    address: &'a Arc<str>,
    armed: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.cluster.with_log(|log| log.cancelled.push(self.address.clone()));
        }
    }
}

fn request() -> Request {
    Request::new("Greeter.hello", Bytes::from_static(b"hi"))
}

fn idempotent() -> Request {
    request().with_idempotent(true)
}

fn payload(result: &Result<Response, Status>) -> Option<&[u8]> {
    result.as_ref().ok().map(|r| &r.payload()[..])
}

/// A layer for `mode` with no backoff: tests of the mode's routing need not wait.
fn layer(mode: FailMode) -> RetryLayer {
    RetryLayer::new(mode).initial_backoff(Duration::ZERO)
}

// ---------------------------------------------------------------------------------------------
// Failfast
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn failfast_makes_one_attempt() {
    let cluster = Cluster::new(vec![("a", fail(refused("a"))), ("b", ok())]);
    let result = layer(FailMode::Failfast).layer(cluster.service()).oneshot(idempotent()).await;
    assert_eq!(result.err(), Some(refused("a")));
    assert_eq!(cluster.hits(), ["a"]);
    assert_eq!(FailMode::default(), FailMode::Failfast);
}

// ---------------------------------------------------------------------------------------------
// Failover
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn failover_reaches_the_one_healthy_endpoint_of_four_without_repeating() {
    let cluster = Cluster::new(vec![
        ("a", fail(refused("a"))),
        ("b", fail(refused("b"))),
        ("c", fail(refused("c"))),
        ("d", ok()),
    ]);
    let svc = layer(FailMode::Failover { retries: 3 }).layer(cluster.service());
    // Not idempotent: unprocessed failures are retried anyway.
    let result = svc.oneshot(request()).await;
    assert_eq!(payload(&result), Some(&b"d"[..]));
    assert_eq!(cluster.hits(), ["a", "b", "c", "d"]);
    let excluded: Vec<Vec<String>> =
        cluster.hints().iter().map(|h| h.exclude.iter().map(|a| a.to_string()).collect()).collect();
    assert_eq!(excluded, [vec![], vec!["a"], vec!["a", "b"], vec!["a", "b", "c"]]);
}

#[tokio::test(start_paused = true)]
async fn failover_revisits_only_when_every_endpoint_was_tried_and_stops_after_retries() {
    let cluster = Cluster::new(vec![("a", fail(refused("a"))), ("b", fail(refused("b")))]);
    let svc = layer(FailMode::Failover { retries: 3 }).layer(cluster.service());
    let err = svc.oneshot(request()).await.err();
    // Two fresh endpoints, then the balancer falls back to tried ones.
    assert_eq!(cluster.hits(), ["a", "b", "a", "a"]);
    assert_eq!(err.as_ref().map(Status::message), Some("connection to a refused; 4 attempts"));
    assert_eq!(err.as_ref().map(Status::code), Some(Code::Unavailable));
    assert_eq!(err.as_ref().map(Status::is_unprocessed), Some(true), "the unprocessed mark is kept");
}

#[tokio::test(start_paused = true)]
async fn failover_keeps_the_callers_own_hints() {
    let cluster = Cluster::new(vec![("a", ok()), ("b", fail(refused("b"))), ("c", ok())]);
    let svc = layer(FailMode::Failover { retries: 2 }).layer(cluster.service());
    let mut req = request();
    req.ctx_mut().hints_mut().exclude.push("a".into());
    req.ctx_mut().hints_mut().hash_key = Some(7);
    let result = svc.oneshot(req).await;
    assert_eq!(payload(&result), Some(&b"c"[..]));
    assert_eq!(cluster.hits(), ["b", "c"]);
    let last = cluster.hints().pop().unwrap_or_default();
    assert_eq!(last.exclude, [Arc::<str>::from("a"), "b".into()]);
    assert_eq!(last.hash_key, Some(7));
}

// ---------------------------------------------------------------------------------------------
// Failtry
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn failtry_stays_on_the_first_endpoint_and_the_others_see_nothing() {
    let cluster = Cluster::new(vec![("a", fail(refused("a"))), ("b", ok()), ("c", ok())]);
    let svc = layer(FailMode::Failtry { retries: 2 }).layer(cluster.service());
    let err = svc.oneshot(request()).await.err();
    assert_eq!(cluster.hits(), ["a", "a", "a"]);
    let pins: Vec<Option<String>> = cluster.hints().iter().map(|h| h.pin.as_deref().map(str::to_owned)).collect();
    assert_eq!(pins, [None, Some("a".to_owned()), Some("a".to_owned())]);
    assert_eq!(err.map(|e| e.message().to_owned()), Some("connection to a refused; 3 attempts".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn failtry_succeeds_on_the_same_endpoint() {
    // The endpoint fails twice, then answers.
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = {
        let calls = calls.clone();
        tower::service_fn(move |req: Request| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if let Some(record) = req.ctx().pick_record() {
                    record.set(req.ctx().hints().pin.clone().unwrap_or_else(|| "a".into()));
                }
                if n < 2 { Err(refused("a")) } else { Ok(Response::new(Bytes::from_static(b"a"))) }
            }
        })
    };
    let result = layer(FailMode::Failtry { retries: 5 }).layer(inner).oneshot(request()).await;
    assert_eq!(payload(&result), Some(&b"a"[..]));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------------------------------------
// Failbackup
// ---------------------------------------------------------------------------------------------

const DELAY: Duration = Duration::from_millis(100);

#[tokio::test(start_paused = true)]
async fn failbackup_sends_no_backup_when_the_first_answers_within_the_delay() {
    let cluster = Cluster::new(vec![("a", slow(Duration::from_millis(99))), ("b", ok())]);
    let result = layer(FailMode::Failbackup { delay: DELAY }).layer(cluster.service()).oneshot(request()).await;
    assert_eq!(payload(&result), Some(&b"a"[..]));
    assert_eq!(cluster.hits(), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn failbackup_sends_the_backup_elsewhere_after_the_delay_and_cancels_the_loser() {
    let cluster = Cluster::new(vec![("a", hang()), ("b", slow(Duration::from_millis(30)))]);
    let start = Instant::now();
    let result = layer(FailMode::Failbackup { delay: DELAY }).layer(cluster.service()).oneshot(request()).await;
    assert_eq!(payload(&result), Some(&b"b"[..]));
    assert_eq!(start.elapsed(), DELAY + Duration::from_millis(30));
    assert_eq!(cluster.hits(), ["a", "b"]);
    assert_eq!(cluster.times()[1] - start, DELAY, "the backup goes out exactly at the delay");
    assert_eq!(cluster.hints()[1].exclude, [Arc::<str>::from("a")]);
    assert_eq!(cluster.cancelled(), ["a"], "the slow first attempt is dropped");
}

#[tokio::test(start_paused = true)]
async fn failbackup_first_success_wins_even_when_it_is_the_first_attempt() {
    let cluster = Cluster::new(vec![("a", slow(Duration::from_millis(150))), ("b", slow(Duration::from_millis(500)))]);
    let start = Instant::now();
    let result = layer(FailMode::Failbackup { delay: DELAY }).layer(cluster.service()).oneshot(request()).await;
    assert_eq!(payload(&result), Some(&b"a"[..]));
    assert_eq!(start.elapsed(), Duration::from_millis(150));
    assert_eq!(cluster.cancelled(), ["b"], "the backup is dropped");
}

#[tokio::test(start_paused = true)]
async fn failbackup_waits_for_the_other_attempt_when_one_fails() {
    let cluster = Cluster::new(vec![
        ("a", slow(Duration::from_millis(300))),
        ("b", fail_after(Duration::from_millis(10), Status::unavailable("b is closing"))),
    ]);
    let result = layer(FailMode::Failbackup { delay: DELAY }).layer(cluster.service()).oneshot(request()).await;
    assert_eq!(payload(&result), Some(&b"a"[..]));
    assert!(cluster.cancelled().is_empty());
}

#[tokio::test(start_paused = true)]
async fn failbackup_fails_only_when_both_fail_with_the_later_error() {
    let cluster = Cluster::new(vec![
        ("a", fail_after(Duration::from_millis(300), Status::unavailable("a went away"))),
        ("b", fail_after(Duration::from_millis(10), Status::internal("b crashed"))),
    ]);
    let start = Instant::now();
    let err = layer(FailMode::Failbackup { delay: DELAY }).layer(cluster.service()).oneshot(request()).await.err();
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(err.as_ref().map(Status::code), Some(Code::Unavailable));
    assert_eq!(err.as_ref().map(Status::message), Some("a went away; 2 attempts"));
}

#[tokio::test(start_paused = true)]
async fn failbackup_sends_the_backup_at_once_when_the_first_fails_early() {
    let cluster = Cluster::new(vec![("a", fail_after(Duration::from_millis(20), refused("a"))), ("b", ok())]);
    let start = Instant::now();
    let result = layer(FailMode::Failbackup { delay: DELAY }).layer(cluster.service()).oneshot(request()).await;
    assert_eq!(payload(&result), Some(&b"b"[..]));
    assert_eq!(start.elapsed(), Duration::from_millis(20));
    assert_eq!(cluster.hits(), ["a", "b"]);
    assert_eq!(cluster.hints()[1].exclude, [Arc::<str>::from("a")]);
}

#[tokio::test(start_paused = true)]
async fn failbackup_does_not_resend_an_early_failure_that_is_not_retryable() {
    let cluster = Cluster::new(vec![("a", fail(Status::invalid_argument("bad name"))), ("b", ok())]);
    let err = layer(FailMode::Failbackup { delay: DELAY }).layer(cluster.service()).oneshot(request()).await.err();
    assert_eq!(err, Some(Status::invalid_argument("bad name")));
    assert_eq!(cluster.hits(), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn failbackup_sends_no_backup_once_the_callers_deadline_has_passed() {
    let cluster = Cluster::new(vec![("a", slow(Duration::from_millis(200))), ("b", ok())]);
    let req = request().with_ctx(Context::new().with_timeout(Duration::from_millis(50)));
    let result = layer(FailMode::Failbackup { delay: DELAY }).layer(cluster.service()).oneshot(req).await;
    // No timeout layer here to enforce the deadline: the first attempt's answer comes through.
    assert_eq!(payload(&result), Some(&b"a"[..]));
    assert_eq!(cluster.hits(), ["a"]);
}

// ---------------------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn classification_table() {
    let plain = request();
    let idem = idempotent();
    let cases: [(Status, bool, bool); 20] = [
        // status, retryable if not idempotent, retryable if idempotent
        (Status::invalid_argument("x"), false, false),
        (Status::not_found("x"), false, false),
        (Status::unauthenticated("x"), false, false),
        (Status::permission_denied("x"), false, false),
        (Status::cancelled("x"), false, false),
        // The never-list wins over the unprocessed mark.
        (Status::unauthenticated("x").mark_unprocessed(), false, false),
        (Status::cancelled("x").mark_unprocessed(), false, false),
        // Unprocessed: always, whatever the code.
        (Status::unavailable("x").mark_unprocessed(), true, true),
        (Status::resource_exhausted("x").mark_unprocessed(), true, true),
        (Status::internal("x").mark_unprocessed(), true, true),
        (Status::deadline_exceeded("x").mark_unprocessed(), true, true),
        // Maybe processed: idempotent only.
        (Status::unavailable("x"), false, true),
        (Status::deadline_exceeded("x"), false, true),
        // Everything else: never.
        (Status::internal("x"), false, false),
        (Status::unknown("x"), false, false),
        (Status::data_loss("x"), false, false),
        (Status::unimplemented("x"), false, false),
        (Status::resource_exhausted("x"), false, false),
        (Status::new(Code::Ok, "odd"), false, false),
        (Status::new(Code::Unavailable, ""), false, true),
    ];
    for (status, plain_expected, idem_expected) in cases {
        assert_eq!(is_retryable(&status, &plain), plain_expected, "{status:?}, not idempotent");
        assert_eq!(is_retryable(&status, &idem), idem_expected, "{status:?}, idempotent");
    }

    // Once the caller's deadline has passed: nothing, not even unprocessed failures.
    let with_deadline = idempotent().with_ctx(Context::new().with_timeout(Duration::from_millis(10)));
    let unprocessed = Status::unavailable("x").mark_unprocessed();
    assert!(is_retryable(&unprocessed, &with_deadline));
    tokio::time::advance(Duration::from_millis(10)).await;
    assert!(!is_retryable(&unprocessed, &with_deadline));
    assert!(!is_retryable(&Status::deadline_exceeded("x"), &with_deadline));
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_are_returned_after_one_attempt_unchanged() {
    for status in
        [Status::not_found("no such method"), Status::internal("handler panicked"), Status::unavailable("reset")]
    {
        let cluster = Cluster::new(vec![("a", fail(status.clone())), ("b", ok())]);
        let err = layer(FailMode::Failover { retries: 3 }).layer(cluster.service()).oneshot(request()).await.err();
        assert_eq!(err, Some(status));
        assert_eq!(cluster.hits(), ["a"]);
    }
}

#[tokio::test(start_paused = true)]
async fn lost_after_send_is_retried_for_idempotent_methods_only() {
    let reset = Status::unavailable("connection reset");
    let cluster = Cluster::new(vec![("a", fail(reset.clone())), ("b", ok())]);
    let svc = layer(FailMode::Failover { retries: 1 }).layer(cluster.service());
    assert_eq!(svc.clone().oneshot(request()).await.err(), Some(reset));
    assert_eq!(payload(&svc.oneshot(idempotent()).await), Some(&b"b"[..]));
    assert_eq!(cluster.hits(), ["a", "a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_is_retried_but_the_callers_deadline_is_final() {
    // Whole call 1 s → failover → 200 ms per attempt → a cluster whose first endpoint hangs.
    let stack = |cluster: &Cluster| {
        tower::ServiceBuilder::new()
            .layer(TimeoutLayer::new(Duration::from_secs(1)))
            .layer(layer(FailMode::Failover { retries: 3 }))
            .layer(TimeoutLayer::per_attempt(Duration::from_millis(200)))
            .service(cluster.service())
    };

    let cluster = Cluster::new(vec![("a", hang()), ("b", ok())]);
    let start = Instant::now();
    let result = stack(&cluster).oneshot(idempotent()).await;
    assert_eq!(payload(&result), Some(&b"b"[..]));
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(cluster.cancelled(), ["a"]);

    // Not idempotent: the timed-out attempt may have run, so it is not resent.
    let cluster = Cluster::new(vec![("a", hang()), ("b", ok())]);
    let err = stack(&cluster).oneshot(request()).await.err();
    assert_eq!(err.as_ref().map(Status::message), Some("attempt timeout of 200ms exceeded calling Greeter.hello on a"));
    assert_eq!(cluster.hits(), ["a"]);

    // Every endpoint hangs: the call's deadline ends it. The per-attempt layer carries that
    // deadline too and, polled first, reports it for the attempt in flight.
    let cluster = Cluster::new(vec![("a", hang()), ("b", hang())]);
    let svc = tower::ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .layer(layer(FailMode::Failover { retries: 10 }))
        .layer(TimeoutLayer::per_attempt(Duration::from_millis(300)))
        .service(cluster.service());
    let start = Instant::now();
    let err = svc.oneshot(idempotent()).await.err();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(err.as_ref().map(Status::code), Some(Code::DeadlineExceeded));
    assert_eq!(
        err.as_ref().map(Status::message),
        Some("deadline of 100ms exceeded calling Greeter.hello on a; 4 attempts")
    );
    // Both tried, the balancer falls back to the first.
    assert_eq!(cluster.hits(), ["a", "b", "a", "a"]);
    assert_eq!(cluster.cancelled().len(), 4, "every attempt is cancelled");
}

#[tokio::test(start_paused = true)]
async fn the_whole_call_timeout_names_the_first_attempts_endpoint() {
    let cluster = Cluster::new(vec![("a", hang()), ("b", ok())]);
    let svc = tower::ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .layer(layer(FailMode::Failover { retries: 3 }))
        .service(cluster.service());
    let err = svc.oneshot(idempotent()).await.err();
    assert_eq!(err.as_ref().map(Status::message), Some("deadline of 1000ms exceeded calling Greeter.hello on a"));
    assert_eq!(cluster.cancelled(), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_exceeded_after_the_callers_deadline_is_not_retried() {
    // The server reports the deadline itself, exactly when the caller's deadline passes.
    let cluster = Cluster::new(vec![
        ("a", fail_after(Duration::from_millis(100), Status::deadline_exceeded("deadline passed on the server"))),
        ("b", ok()),
    ]);
    let req = idempotent().with_ctx(Context::new().with_timeout(Duration::from_millis(100)));
    let err = layer(FailMode::Failover { retries: 3 }).layer(cluster.service()).oneshot(req).await.err();
    assert_eq!(err.map(|e| e.message().to_owned()), Some("deadline passed on the server".to_owned()));
    assert_eq!(cluster.hits(), ["a"]);
}

// ---------------------------------------------------------------------------------------------
// Backoff
// ---------------------------------------------------------------------------------------------

const SEED: u64 = 42;

fn backoff_layer(mode: FailMode) -> RetryLayer {
    RetryLayer::new(mode)
        .initial_backoff(Duration::from_millis(100))
        .max_backoff(Duration::from_millis(300))
        .without_budget()
        .with_seed(SEED)
}

/// The backoffs a call seeded with `SEED` draws, in order, and how long each sleep lasts: tokio's
/// timer has a resolution of 1 ms and rounds sleeps up to it.
fn expected_backoffs(retries: u32) -> (Vec<Duration>, Vec<Duration>) {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
    let mut rng = fastrand::Rng::with_seed(SEED);
    let drawn: Vec<Duration> = (0..retries).map(|n| backoff.full_jitter(n, &mut rng)).collect();
    let slept = drawn.iter().map(|d| Duration::from_millis(d.as_nanos().div_ceil(1_000_000) as u64)).collect();
    (drawn, slept)
}

#[tokio::test(start_paused = true)]
async fn backoff_sleeps_between_attempts_and_never_after_the_last() {
    let cluster = Cluster::new(vec![("a", fail(refused("a")))]);
    let start = Instant::now();
    let err = backoff_layer(FailMode::Failtry { retries: 4 }).layer(cluster.service()).oneshot(request()).await.err();
    assert_eq!(err.map(|e| e.message().to_owned()), Some("connection to a refused; 5 attempts".to_owned()));

    let (backoffs, slept) = expected_backoffs(4);
    assert!(backoffs.iter().all(|b| !b.is_zero()));
    // Each attempt starts exactly one backoff after the previous one failed (they fail at once)…
    let gaps: Vec<Duration> = cluster.times().windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, slept);
    // …and the call ends with the last attempt: no sleep after it.
    assert_eq!(start.elapsed(), slept.iter().sum::<Duration>());
    for (n, b) in backoffs.iter().enumerate() {
        assert!(*b <= Duration::from_millis(100 << n).min(Duration::from_millis(300)));
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_never_sleeps_past_the_deadline() {
    let (backoffs, slept) = expected_backoffs(4);
    // A deadline that leaves room for the first backoff but not the first two.
    let first = slept[0];
    let budget = first + backoffs[1] / 2;
    assert!(backoffs[0] > Duration::from_millis(2) && backoffs[1] > Duration::from_millis(4));

    let cluster = Cluster::new(vec![("a", fail(refused("a")))]);
    let req = request().with_ctx(Context::new().with_timeout(budget));
    let start = Instant::now();
    let err = backoff_layer(FailMode::Failover { retries: 4 }).layer(cluster.service()).oneshot(req).await.err();
    // Two attempts, then the second backoff would end after the deadline: return now.
    assert_eq!(cluster.hits().len(), 2);
    assert_eq!(start.elapsed(), first);
    assert_eq!(
        err.map(|e| e.message().to_owned()),
        Some("connection to a refused; 2 attempts; no time left before the deadline to retry".to_owned())
    );

    // A deadline shorter than the first backoff: one attempt and an immediate return.
    let cluster = Cluster::new(vec![("a", fail(refused("a")))]);
    let req = request().with_ctx(Context::new().with_timeout(backoffs[0] / 2));
    let start = Instant::now();
    let err = backoff_layer(FailMode::Failover { retries: 4 }).layer(cluster.service()).oneshot(req).await.err();
    assert_eq!(cluster.hits().len(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(err.map(|e| e.code()), Some(Code::Unavailable));
}

// ---------------------------------------------------------------------------------------------
// Budget
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_attempts_when_everything_fails() {
    const CALLS: usize = 1000;
    const RETRIES: u32 = 5;
    // tower's defaults, spelled out: deposits live 10 s, 10 retries a second, 20% of calls.
    let (ttl_secs, min_per_sec, percent) = (10u64, 10u64, 0.2f64);
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(ttl_secs), min_per_sec as u32, percent as f32));

    let run = |layer: RetryLayer| async move {
        let cluster = Cluster::new(vec![("a", fail(refused("a"))), ("b", fail(refused("b")))]);
        let svc = layer
            .initial_backoff(Duration::from_millis(1))
            .max_backoff(Duration::from_millis(10))
            .layer(cluster.service());
        let start = Instant::now();
        let calls = (0..CALLS).map(|_| svc.clone().oneshot(request()));
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(Result::is_err));
        assert!(start.elapsed() < Duration::from_secs(ttl_secs), "everything within one budget window");
        cluster.hits().len()
    };

    // Without a budget every call makes all its attempts.
    let unbounded = run(RetryLayer::new(FailMode::Failover { retries: RETRIES }).without_budget()).await;
    assert_eq!(unbounded, CALLS * (RETRIES as usize + 1));

    // With one, shared by every clone: retries ≤ calls × percent + min_per_sec × ttl.
    let attempts = run(RetryLayer::new(FailMode::Failover { retries: RETRIES }).budget(budget.clone())).await;
    let bound = CALLS + (CALLS as f64 * percent) as usize + (min_per_sec * ttl_secs) as usize;
    assert!(attempts <= bound, "{attempts} attempts, budget allows {bound}");
    assert!(attempts > CALLS + (min_per_sec * ttl_secs) as usize, "{attempts} attempts: the budget allowed retries");
}

#[tokio::test(start_paused = true)]
async fn a_refused_budget_returns_the_last_error_and_says_why() {
    // No reserve and no share of calls: no retry is ever allowed.
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(1), 0, 0.0));
    let cluster = Cluster::new(vec![("a", fail(refused("a"))), ("b", ok())]);
    let svc = layer(FailMode::Failover { retries: 3 }).budget(budget.clone()).layer(cluster.service());
    let err = svc.oneshot(request()).await.err();
    assert_eq!(err.as_ref().map(Status::message), Some("connection to a refused; retry budget exhausted"));
    assert_eq!(err.as_ref().map(Status::is_unprocessed), Some(true));
    assert_eq!(cluster.hits(), ["a"]);

    // A refused hedge: no backup, the first attempt's answer is the call's.
    let cluster = Cluster::new(vec![("a", slow(Duration::from_millis(300))), ("b", ok())]);
    let svc = RetryLayer::new(FailMode::Failbackup { delay: DELAY }).budget(budget).layer(cluster.service());
    assert_eq!(payload(&svc.oneshot(request()).await), Some(&b"a"[..]));
    assert_eq!(cluster.hits(), ["a"]);
}

#[test]
fn layer_and_service_report_their_mode() {
    let layer = RetryLayer::new(FailMode::Failtry { retries: 2 });
    assert_eq!(layer.mode(), FailMode::Failtry { retries: 2 });
    let svc =
        Retry::new(tower::service_fn(|_req: Request| async { Ok::<_, Status>(Response::default()) }), layer.mode());
    assert_eq!(svc.mode(), FailMode::Failtry { retries: 2 });
    assert!(format!("{layer:?}").contains("Failtry"));
}
