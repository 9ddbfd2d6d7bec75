use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use super::*;
use crate::context::Context;
use crate::status::Code;

const ENDPOINT: &str = "tcp://127.0.0.1:4000";

fn request() -> Request {
    Request::new("Greeter.hello", Bytes::from_static(b"hi"))
}

/// Sets this flag when dropped: proves a future was cancelled rather than left running.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What the inner service saw and how it answers.
#[derive(Clone, Default)]
struct Probe {
    deadline: Arc<Mutex<Option<Option<Instant>>>>,
    calls: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl Probe {
    /// A service that notes the request's deadline, picks `ENDPOINT` like a balancer would, and
    /// answers after `delay` (never when `None`).
    fn service(
        &self,
        delay: Option<Duration>,
    ) -> impl Service<Request, Response = Response, Error = Status, Future: Send> + Clone + use<> {
        let probe = self.clone();
        tower::service_fn(move |req: Request| {
            let probe = probe.clone();
            async move {
                probe.calls.fetch_add(1, Ordering::SeqCst);
                *probe.deadline.lock().map_err(|_| Status::internal("poisoned"))? = Some(req.ctx().deadline());
                if let Some(record) = req.ctx().pick_record() {
                    record.set(ENDPOINT.into());
                }
                let _flag = DropFlag(probe.dropped.clone());
                match delay {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending().await,
                }
                Ok(Response::new(Bytes::from_static(b"done")))
            }
        })
    }

    fn seen_deadline(&self) -> Option<Instant> {
        self.deadline.lock().ok().and_then(|seen| *seen).flatten()
    }
}

#[tokio::test(start_paused = true)]
async fn the_layer_deadline_wins_when_it_is_tighter() {
    let probe = Probe::default();
    let svc = TimeoutLayer::new(Duration::from_millis(500)).layer(probe.service(Some(Duration::ZERO)));
    let start = Instant::now();
    let req = request().with_ctx(Context::new().with_timeout(Duration::from_secs(10)));
    assert!(svc.oneshot(req).await.is_ok());
    assert_eq!(probe.seen_deadline(), Some(start + Duration::from_millis(500)));
}

#[tokio::test(start_paused = true)]
async fn the_layer_sets_a_deadline_on_a_request_without_one() {
    let probe = Probe::default();
    let svc = TimeoutLayer::new(Duration::from_millis(500)).layer(probe.service(Some(Duration::ZERO)));
    let start = Instant::now();
    assert!(svc.oneshot(request()).await.is_ok());
    assert_eq!(probe.seen_deadline(), Some(start + Duration::from_millis(500)));
}

#[tokio::test(start_paused = true)]
async fn the_callers_deadline_wins_when_it_is_tighter() {
    let probe = Probe::default();
    let svc = TimeoutLayer::new(Duration::from_millis(500)).layer(probe.service(None));
    let start = Instant::now();
    let req = request().with_ctx(Context::new().with_timeout(Duration::from_millis(100)));
    let err = svc.oneshot(req).await.err();
    assert_eq!(probe.seen_deadline(), Some(start + Duration::from_millis(100)));
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let err = err.map(|e| (e.code(), e.message().to_owned()));
    assert_eq!(
        err,
        Some((Code::DeadlineExceeded, format!("deadline of 100ms exceeded calling Greeter.hello on {ENDPOINT}")))
    );
}

#[tokio::test(start_paused = true)]
async fn expiry_names_method_and_endpoint_and_cancels_the_call_below() {
    let probe = Probe::default();
    let svc = TimeoutLayer::new(Duration::from_millis(500)).layer(probe.service(None));
    let start = Instant::now();
    let fut = svc.oneshot(request());
    let err = fut.await.err();
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(err.as_ref().map(Status::code), Some(Code::DeadlineExceeded));
    assert_eq!(
        err.as_ref().map(Status::message),
        Some(format!("deadline of 500ms exceeded calling Greeter.hello on {ENDPOINT}").as_str())
    );
    assert!(probe.dropped.load(Ordering::SeqCst), "the inner future must be dropped at expiry");
}

#[tokio::test(start_paused = true)]
async fn expiry_before_any_pick_names_only_the_method() {
    // An inner service that never picks (say, no endpoint is ready) and never answers.
    let inner = tower::service_fn(|_req: Request| std::future::pending::<Result<Response, Status>>());
    let svc = TimeoutLayer::new(Duration::from_micros(1_499_600)).layer(inner);
    let err = svc.oneshot(request()).await.err();
    // 1499.6 ms rounds to 1500 ms.
    assert_eq!(err.as_ref().map(Status::message), Some("deadline of 1500ms exceeded calling Greeter.hello"));
}

#[tokio::test(start_paused = true)]
async fn an_existing_pick_record_is_kept_and_filled() {
    let probe = Probe::default();
    let svc = TimeoutLayer::new(Duration::from_millis(500)).layer(probe.service(Some(Duration::ZERO)));
    let record = PickRecord::new();
    let mut req = request();
    req.ctx_mut().set_pick_record(Some(record.clone()));
    assert!(svc.oneshot(req).await.is_ok());
    assert_eq!(record.get().map(|a| &**a), Some(ENDPOINT));
}

#[tokio::test(start_paused = true)]
async fn answers_before_the_deadline_pass_through_unchanged() {
    let probe = Probe::default();
    let svc = TimeoutLayer::new(Duration::from_millis(500)).layer(probe.service(Some(Duration::from_millis(499))));
    let response = svc.oneshot(request()).await;
    assert_eq!(response.map(Response::into_payload).ok(), Some(Bytes::from_static(b"done")));

    let failing = tower::service_fn(|_req: Request| async { Err::<Response, _>(Status::not_found("no such method")) });
    let err = TimeoutLayer::new(Duration::from_millis(500)).layer(failing).oneshot(request()).await.err();
    assert_eq!(err, Some(Status::not_found("no such method")));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_passed_fails_without_calling_the_inner_service() {
    let probe = Probe::default();
    let svc = TimeoutLayer::new(Duration::from_millis(500)).layer(probe.service(Some(Duration::ZERO)));
    let req = request().with_ctx(Context::new().with_deadline(Instant::now()));
    tokio::time::advance(Duration::from_millis(5)).await;
    let err = svc.oneshot(req).await.err();
    assert_eq!(err.as_ref().map(Status::code), Some(Code::DeadlineExceeded));
    assert_eq!(err.as_ref().map(Status::message), Some("deadline of 0ms exceeded calling Greeter.hello"));
    assert_eq!(probe.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn per_attempt_sets_the_attempt_deadline_and_says_so_on_expiry() {
    let probe = Probe::default();
    let svc = TimeoutLayer::per_attempt(Duration::from_millis(200)).layer(probe.service(None));
    let start = Instant::now();
    let req = request().with_ctx(Context::new().with_timeout(Duration::from_secs(10)));
    let err = svc.oneshot(req).await.err();
    assert_eq!(probe.seen_deadline(), Some(start + Duration::from_millis(200)));
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(err.as_ref().map(Status::code), Some(Code::DeadlineExceeded));
    assert_eq!(
        err.as_ref().map(Status::message),
        Some(format!("attempt timeout of 200ms exceeded calling Greeter.hello on {ENDPOINT}").as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn per_attempt_never_extends_the_callers_deadline() {
    let probe = Probe::default();
    let svc = Timeout::per_attempt(probe.service(None), Duration::from_millis(200));
    let start = Instant::now();
    let req = request().with_ctx(Context::new().with_timeout(Duration::from_millis(50)));
    let err = svc.oneshot(req).await.err();
    assert_eq!(probe.seen_deadline(), Some(start + Duration::from_millis(50)));
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(
        err.as_ref().map(Status::message),
        Some(format!("deadline of 50ms exceeded calling Greeter.hello on {ENDPOINT}").as_str())
    );
}

#[test]
fn layer_accessors() {
    let layer = TimeoutLayer::per_attempt(Duration::from_millis(200));
    assert!(layer.is_per_attempt());
    assert_eq!(layer.timeout(), Duration::from_millis(200));
    assert!(!TimeoutLayer::new(Duration::from_secs(1)).is_per_attempt());
}

#[tokio::test(start_paused = true)]
async fn expiry_at_a_default_deadline_says_whose_default_it_was() {
    let probe = Probe::default();
    let svc = TimeoutLayer::new(Duration::from_secs(60)).layer(probe.service(None));
    let start = Instant::now();
    let mut req = request();
    req.ctx_mut().apply_default_timeout(Duration::from_secs(10), "the client's default");
    let err = svc.oneshot(req).await.err();
    assert_eq!(probe.seen_deadline(), Some(start + Duration::from_secs(10)));
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(
        err.as_ref().map(Status::message),
        Some(
            format!("deadline of 10000ms (the client's default) exceeded calling Greeter.hello on {ENDPOINT}").as_str()
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_tighter_limit_replaces_a_default_deadline_and_its_name() {
    let probe = Probe::default();
    let svc = TimeoutLayer::new(Duration::from_millis(500)).layer(probe.service(None));
    let mut req = request();
    req.ctx_mut().apply_default_timeout(Duration::from_secs(10), "the client's default");
    let err = svc.oneshot(req).await.err();
    assert_eq!(
        err.as_ref().map(Status::message),
        Some(format!("deadline of 500ms exceeded calling Greeter.hello on {ENDPOINT}").as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_without_a_deadline_by_choice_is_still_capped() {
    let probe = Probe::default();
    let svc = TimeoutLayer::new(Duration::from_millis(500)).layer(probe.service(None));
    let start = Instant::now();
    let req = request().with_ctx(Context::new().without_deadline());
    let err = svc.oneshot(req).await.err();
    assert_eq!(probe.seen_deadline(), Some(start + Duration::from_millis(500)));
    assert_eq!(err.as_ref().map(Status::code), Some(Code::DeadlineExceeded));
}
