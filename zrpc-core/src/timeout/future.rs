//! The future returned by [`Timeout`](super::Timeout).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::Expiry;
use crate::request::Response;
use crate::status::Status;

pin_project! {
    /// The response of a [`Timeout`](super::Timeout)-wrapped service: the inner response, or
    /// [`Code::DeadlineExceeded`](crate::Code::DeadlineExceeded) once the deadline passes.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the inner future, which cancels the call below; at expiry the inner
    /// future is dropped at once, before the error is returned.
    pub struct ResponseFuture<F> {
        // `None` when the deadline had passed before the call, or once it has expired.
        #[pin]
        inner: Option<F>,
        // `None` when the call has no deadline at all (a timeout too large for `Instant`).
        #[pin]
        sleep: Option<Sleep>,
        expiry: Expiry,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: Option<F>, sleep: Option<Sleep>, expiry: Expiry) -> ResponseFuture<F> {
        ResponseFuture { inner, sleep, expiry }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, Status>>,
{
    type Output = Result<Response, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The inner future first: an answer that is ready when the timer fires still counts.
        match this.inner.as_mut().as_pin_mut() {
            Some(inner) => {
                if let Poll::Ready(result) = inner.poll(cx) {
                    return Poll::Ready(result);
                }
            }
            None => return Poll::Ready(Err(this.expiry.status())),
        }
        let Some(sleep) = this.sleep.as_pin_mut() else { return Poll::Pending };
        ready!(sleep.poll(cx));
        // Cancel the call below now rather than whenever the caller drops this future.
        this.inner.set(None);
        Poll::Ready(Err(this.expiry.status()))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("in_flight", &self.inner.is_some())
            .field("deadline", &self.sleep.as_ref().map(Sleep::deadline))
            .field("expiry", &self.expiry)
            .finish()
    }
}
