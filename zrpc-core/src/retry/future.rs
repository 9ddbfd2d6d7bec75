//! The future returned by [`Retry`](super::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;

use crate::request::Response;
use crate::status::Status;

pin_project_lite::pin_project! {
    /// The response of a [`Retry`](super::Retry)-wrapped service: the first success among the
    /// attempts, or the last error.
    ///
    /// A call that can make only one attempt (`Failfast`, or no retries) is the inner service's
    /// own future. One that may retry is boxed: its attempts, sleeps and hedges form an `async`
    /// state machine whose type cannot be named, and one allocation per call is small next to
    /// a network round trip.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops every attempt in flight, which cancels them on the wire.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProjection]
    enum Kind<F> {
        Once { #[pin] attempt: F },
        Retrying { call: BoxFuture<'static, Result<Response, Status>> },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn once(attempt: F) -> ResponseFuture<F> {
        ResponseFuture { kind: Kind::Once { attempt } }
    }

    pub(super) fn retrying(call: impl Future<Output = Result<Response, Status>> + Send + 'static) -> ResponseFuture<F> {
        ResponseFuture { kind: Kind::Retrying { call: Box::pin(call) } }
    }
}

impl<F: Future<Output = Result<Response, Status>>> Future for ResponseFuture<F> {
    type Output = Result<Response, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProjection::Once { attempt } => attempt.poll(cx),
            KindProjection::Retrying { call } => call.as_mut().poll(cx),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
