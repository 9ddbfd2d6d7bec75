//! The breaker's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::Shared;
use super::machine::{Outcome, Ticket};
use crate::request::Response;
use crate::status::Status;

pin_project! {
    /// The future of a [`CircuitBreaker`](super::CircuitBreaker) call: the inner service's
    /// future, whose outcome the breaker records when it completes, or the breaker's own
    /// refusal.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes records nothing, and gives back the half-open
    /// probe slot the call held, if any.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Admitted {
            #[pin]
            future: F,
            // `None` once the outcome is recorded.
            permit: Option<Permit>,
        },
        Rejected {
            status: Option<Status>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn admitted(future: F, permit: Permit) -> ResponseFuture<F> {
        ResponseFuture { kind: Kind::Admitted { future, permit: Some(permit) } }
    }

    pub(super) fn rejected(status: Status) -> ResponseFuture<F> {
        ResponseFuture { kind: Kind::Rejected { status: Some(status) } }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, Status>>,
{
    type Output = Result<Response, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { future, permit } => {
                let result = ready!(future.poll(cx));
                if let Some(mut permit) = permit.take() {
                    // Recorded by the permit's drop, right here.
                    permit.outcome = Outcome::of(&result);
                }
                Poll::Ready(result)
            }
            KindProj::Rejected { status } => Poll::Ready(Err(status
                .take()
                .unwrap_or_else(|| Status::internal("circuit breaker response polled after completion")))),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ResponseFuture");
        match &self.kind {
            Kind::Admitted { permit, .. } => s.field("admitted", &permit.as_ref().map(|p| p.ticket)),
            Kind::Rejected { status } => s.field("rejected", status),
        };
        s.finish_non_exhaustive()
    }
}

/// A call's claim on the breaker: recorded when dropped, with the outcome set by then or
/// [`Outcome::Cancelled`], so a dropped future still frees its probe slot.
pub(super) struct Permit {
    shared: Arc<Shared>,
    ticket: Ticket,
    outcome: Outcome,
}

impl Permit {
    pub(super) fn new(shared: Arc<Shared>, ticket: Ticket) -> Permit {
        Permit { shared, ticket, outcome: Outcome::Cancelled }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.finish(self.ticket, self.outcome);
    }
}
