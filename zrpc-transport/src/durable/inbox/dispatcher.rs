//! The inbox's dispatcher: runs the handlers of recorded messages, one at a time per stream,
//! in sequence order, streams concurrently, and marks each handled when its handler returns.
//!
//! A server with an inbox runs one dispatcher beside its connections. Each message goes
//! through the server's service (its layers, then the router) like a call from a connection,
//! with a context that has the sender's name as caller, the stored metadata and trace, no
//! deadline, and [`Context::durable_id`](zrpc_core::Context::durable_id). Whatever the handler
//! does (returns, fails with a `Status`, panics), the message counts as handled: the inbox
//! delivers, it is not a job queue (see the module docs of [`durable`](crate::durable), "Open
//! questions").
//!
//! - **Bound:** at most [`MAX_RUNNING`] handlers run at once; past it, ready streams wait for a
//!   handler to return.
//! - **Stopping:** when the server stops, the dispatcher takes no more messages and waits for
//!   the running handlers (the server bounds the wait with its drain timeout, then aborts them:
//!   an aborted handler runs again at the inbox's next open, as after a crash inside it).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::task::JoinSet;
use tower::{Service, ServiceExt};
use zrpc_core::durable::Durable;
use zrpc_core::{Request, Response, Router, Status};

use super::{Delivery, Inbox};
use crate::durable::{DurableError, wire};

/// Most handlers the dispatcher runs at once, across streams.
pub const MAX_RUNNING: usize = 1024;

/// Runs the handlers of `inbox`'s recorded messages with `service` until `stop` completes and
/// the running handlers have returned. `local` is the server's name (a message's
/// destination); `names` interns method names.
pub(crate) async fn run<S>(inbox: Inbox, service: S, names: Router, local: Arc<str>, stop: impl Future<Output = ()>)
where
    S: Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut running = JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    let mut stopping = false;
    loop {
        while running.try_join_next().is_some() {}
        if !stopping && running.len() < MAX_RUNNING {
            match inbox.take(MAX_RUNNING - running.len()).await {
                Ok(batch) if !batch.is_empty() => {
                    for delivery in batch {
                        let handler = handle(inbox.clone(), service.clone(), names.clone(), local.clone(), delivery);
                        running.spawn(handler);
                    }
                    continue;
                }
                Ok(_) => {}
                Err(DurableError::Closed { .. }) => stopping = true,
                Err(e) => {
                    // The log stopped (a failed write); it takes nothing until reopened.
                    tracing::error!(error = %e, "durable inbox: no more messages are handled");
                    stopping = true;
                }
            }
        }
        if stopping && running.is_empty() {
            return;
        }
        tokio::select! {
            () = inbox.ready().notified(), if !stopping => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            () = &mut stop, if !stopping => stopping = true,
        }
    }
}

/// Runs the handler of one message, then marks it handled.
async fn handle<S>(inbox: Inbox, service: S, names: Router, local: Arc<str>, delivery: Delivery)
where
    S: Service<Request, Response = Response, Error = Status> + Send + 'static,
    S::Future: Send + 'static,
{
    let Delivery { id, message } = delivery;
    match wire::restore_request(&message, |method| names.intern(method)) {
        Ok(mut request) => {
            let ctx = request.ctx_mut();
            ctx.set_caller(Some(id.sender_arc().clone()));
            ctx.set_durable(Some(Durable::new(id.clone(), id.sequence() - 1, local)));
            let method = request.method().clone();
            let call = AssertUnwindSafe(service.oneshot(request)).catch_unwind().await;
            match call {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => tracing::warn!(%id, %method, %status, "durable message handled with an error"),
                Err(_) => tracing::error!(%id, %method, "the handler of a durable message panicked"),
            }
        }
        Err(status) => tracing::error!(%id, %status, "durable message not handled: it cannot be read"),
    }
    if let Err(e) = inbox.handled(&id).await {
        // Closed or failed: the message comes back unhandled at the next open, and runs again.
        tracing::warn!(%id, error = %e, "durable message handled, but not marked so");
    }
}
