//! [`Destination`]: the service a generated client calls through to log its oneway calls in an
//! outbox.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use tower::Service;
use zrpc_core::{Request, Response, Status};

use super::{Outbox, Progress, check_name};
use crate::durable::{DurableError, wire};

/// A durable destination: a `tower::Service` that logs each call in its [`Outbox`] for one
/// named receiver, and answers once the message has reached the outbox's durability level.
/// Made by [`Outbox::destination`], which also starts the delivery. Cheap to clone.
///
/// - Only oneway calls (`#[zrpc(oneway)]` methods) go through: the call is answered long before
///   any response could exist. A two-way call fails at once with
///   [`DurableError::NotOneway`] (`InvalidArgument`, unprocessed).
/// - The call's deadline bounds the wait for the log only (`DeadlineExceeded`); the message
///   may still be logged and delivered, as a plain call dropped after sending may still run.
///   Delivery attempts have deadlines of their own.
/// - The metadata and trace go with the message to its handler; the deadline does not.
/// - A full outbox refuses the call with [`DurableError::Full`] (`ResourceExhausted`,
///   unprocessed): nothing is dropped to make room.
#[derive(Clone)]
pub struct Destination {
    outbox: Outbox,
    name: Arc<str>,
    progress: Arc<Progress>,
}

impl Destination {
    pub(super) fn new(outbox: Outbox, name: Arc<str>, progress: Arc<Progress>) -> Destination {
        Destination { outbox, name, progress }
    }

    /// Waits until every message logged for this destination before the call has been
    /// acknowledged by the receiver (and that is written to the log): for a program that must
    /// not exit before its messages are delivered, and for tests. With no receiver it waits
    /// as long as the delivery retries, that is without end: bound it with a timeout.
    ///
    /// # Errors
    /// [`DurableError::InvalidName`] for a destination that could not start;
    /// [`Closed`](DurableError::Closed) if the outbox is closed.
    pub async fn delivered(&self) -> Result<(), DurableError> {
        check_name(&self.name)?;
        let pending = self.outbox.pending().await?;
        let Some(last) = pending.iter().find(|p| *p.destination == *self.name).map(|p| p.next_sequence - 1) else {
            return Ok(());
        };
        let mut acknowledged = self.progress.acknowledged.subscribe();
        let _ = acknowledged.wait_for(|acknowledged| *acknowledged >= last).await;
        Ok(())
    }

    /// The receiver's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The outbox the calls are logged in.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Destination").field("name", &self.name).field("outbox", &self.outbox).finish()
    }
}

impl Service<Request> for Destination {
    type Response = Response;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Status>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let (outbox, name, progress) = (self.outbox.clone(), self.name.clone(), self.progress.clone());
        Box::pin(async move {
            if !request.is_oneway() {
                return Err(DurableError::NotOneway { method: request.method().to_string() }.into());
            }
            let deadline = request.ctx().deadline();
            let method = request.method().clone();
            let message = wire::stored_request(request)?;
            let append = outbox.append_to(name.clone(), message);
            let appended = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, append).await.map_err(|_| {
                    Status::deadline_exceeded(format!(
                        "durable message to {method} for {name} not logged before the call's deadline"
                    ))
                })?,
                None => append.await,
            };
            appended?;
            progress.wake.notify_one();
            Ok(Response::new(Bytes::new()))
        })
    }
}
