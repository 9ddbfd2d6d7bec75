//! At most N calls at once: refuse the rest, or let them wait up to their deadline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::future::{BoxFuture, Either, Ready};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service, ServiceExt};

use crate::{Request, Response, Status};

/// Limits the calls in progress through [`ConcurrencyLimit`]s that share one count.
#[derive(Clone)]
pub struct ConcurrencyLimitLayer {
    permits: Arc<Semaphore>,
    max: usize,
    wait: bool,
}

impl ConcurrencyLimitLayer {
    /// At most `max` calls at once; more are refused with `ResourceExhausted`, unprocessed.
    pub fn new(max: usize) -> ConcurrencyLimitLayer {
        ConcurrencyLimitLayer { permits: Arc::new(Semaphore::new(max)), max, wait: false }
    }

    /// At most `max` calls at once; more wait for a slot, up to their deadline, and then fail
    /// with `DeadlineExceeded`, unprocessed. For capping what a client has in flight.
    pub fn waiting(max: usize) -> ConcurrencyLimitLayer {
        ConcurrencyLimitLayer { wait: true, ..ConcurrencyLimitLayer::new(max) }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit { inner, permits: self.permits.clone(), max: self.max, wait: self.wait }
    }
}

impl fmt::Debug for ConcurrencyLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer").field("max", &self.max).field("wait", &self.wait).finish()
    }
}

/// A service with at most `max` calls in progress; see [`ConcurrencyLimitLayer`].
///
/// Clones share the count. A slot is held until the response future completes or is dropped.
#[derive(Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
    max: usize,
    wait: bool,
}

impl<S> ConcurrencyLimit<S> {
    /// The number of free slots now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

pin_project_lite::pin_project! {
    /// The future of a call that got a slot: the inner call, holding the slot until it ends.
    /// `Unpin` when the inner call is, as a server's services must be.
    pub struct Permitted<F> {
        #[pin]
        inner: F,
        _permit: OwnedSemaphorePermit,
    }
}

impl<F: Future> Future for Permitted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

impl<F> fmt::Debug for Permitted<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permitted").finish_non_exhaustive()
    }
}

/// What [`ConcurrencyLimit`] returns: the call holding its slot, a refusal, or (waiting mode)
/// the wait for a slot followed by the call.
pub type ResponseFuture<F> =
    Either<Either<Permitted<F>, Ready<Result<Response, Status>>>, BoxFuture<'static, Result<Response, Status>>>;

impl<S> Service<Request> for ConcurrencyLimit<S>
where
    S: Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Status;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Either::Left(Either::Left(Permitted { inner: self.inner.call(req), _permit: permit })),
            Err(_) if !self.wait => {
                let status = Status::resource_exhausted(format!(
                    "{} refused: {} calls already in progress, the limit",
                    req.method(),
                    self.max
                ));
                Either::Left(Either::Right(futures::future::ready(Err(status.mark_unprocessed()))))
            }
            Err(_) => {
                // The service made ready by `poll_ready` is used by this call only after the
                // wait; take it and leave a fresh clone for the next caller.
                let fresh = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, fresh);
                let permits = self.permits.clone();
                let max = self.max;
                Either::Right(Box::pin(async move {
                    let deadline = req.ctx().deadline();
                    let acquire = permits.acquire_owned();
                    let permit = match deadline {
                        Some(deadline) => tokio::time::timeout_at(deadline, acquire).await.ok(),
                        None => Some(acquire.await),
                    };
                    let Some(Ok(_permit)) = permit else {
                        let message = format!("{} waited for one of {max} call slots until its deadline", req.method());
                        return Err(Status::deadline_exceeded(message).mark_unprocessed());
                    };
                    inner.oneshot(req).await
                }))
            }
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for ConcurrencyLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .field("max", &self.max)
            .field("available", &self.permits.available_permits())
            .field("wait", &self.wait)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::sync::Semaphore;
    use tower::ServiceExt;

    use super::*;
    use crate::{Code, Context};

    /// A service whose calls wait until the gate lets them through.
    fn gated()
    -> (impl Service<Request, Response = Response, Error = Status, Future: Unpin + Send> + Clone + Send, Arc<Semaphore>)
    {
        let gate = Arc::new(Semaphore::new(0));
        let open = gate.clone();
        let service = tower::service_fn(move |_: Request| {
            let gate = open.clone();
            Box::pin(async move {
                let _pass = gate.acquire().await.map_err(|_| Status::internal("gate closed"))?;
                Ok::<_, Status>(Response::default())
            }) as BoxFuture<'static, Result<Response, Status>>
        });
        (service, gate)
    }

    fn request() -> Request {
        Request::new("Svc.m", Bytes::new())
    }

    #[tokio::test]
    async fn refuses_past_the_limit_as_unprocessed_and_frees_slots() {
        let (service, gate) = gated();
        let limited = ConcurrencyLimitLayer::new(2).layer(service);
        let first = tokio::spawn(limited.clone().oneshot(request()));
        let second = tokio::spawn(limited.clone().oneshot(request()));
        while limited.available() != 0 {
            tokio::task::yield_now().await;
        }
        let refused = limited.clone().oneshot(request()).await.expect_err("over the limit");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(refused.is_unprocessed());
        assert!(refused.message().contains("2 calls"), "{refused}");

        gate.add_permits(2);
        first.await.expect("task").expect("answered");
        second.await.expect("task").expect("answered");
        assert_eq!(limited.available(), 2, "finished calls give their slots back");
    }

    #[tokio::test]
    async fn a_dropped_call_gives_its_slot_back() {
        let (service, _gate) = gated();
        let limited = ConcurrencyLimitLayer::new(1).layer(service);
        let held = tokio::spawn(limited.clone().oneshot(request()));
        while limited.available() != 0 {
            tokio::task::yield_now().await;
        }
        held.abort();
        let _ = held.await;
        assert_eq!(limited.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_waiting_limit_waits_for_a_slot_or_the_deadline() {
        let (service, gate) = gated();
        let limited = ConcurrencyLimitLayer::waiting(1).layer(service);
        let first = tokio::spawn(limited.clone().oneshot(request()));
        while limited.available() != 0 {
            tokio::task::yield_now().await;
        }
        // With a deadline: it gives up when the deadline passes, unprocessed.
        let hurried = request().with_ctx(Context::new().with_timeout(Duration::from_millis(50)));
        let status = limited.clone().oneshot(hurried).await.expect_err("no slot in time");
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(status.is_unprocessed());

        // Without one: it gets the slot once the first call ends.
        let patient = tokio::spawn(limited.clone().oneshot(request()));
        tokio::task::yield_now().await;
        assert!(!patient.is_finished());
        gate.add_permits(2);
        first.await.expect("task").expect("answered");
        patient.await.expect("task").expect("answered after waiting");
    }
}
