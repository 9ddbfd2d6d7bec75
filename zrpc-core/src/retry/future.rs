//! The future returned by [`Retry`](super::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::request::Response;
use crate::status::Status;

/// The response of a [`Retry`](super::Retry)-wrapped service: the first success among the
/// attempts, or the last error.
///
/// It is boxed: the attempts, sleeps and hedges of one call form an `async` state machine whose
/// type cannot be named, and one allocation per call is small next to a network round trip.
///
/// # Cancel safety
///
/// Dropping it drops every attempt in flight, which cancels them on the wire.
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response, Status>> + Send>>,
}

impl ResponseFuture {
    pub(super) fn new(inner: impl Future<Output = Result<Response, Status>> + Send + 'static) -> ResponseFuture {
        ResponseFuture { inner: Box::pin(inner) }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
