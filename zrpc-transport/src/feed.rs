//! A discovery source fed by a background task: what the DNS and etcd sources share.
//!
//! The source's constructor fetches the first set itself, then hands it to [`Feed::start`]
//! with the task that follows changes. The first set is queued before the feed is returned, so
//! the feed's first poll yields all of it at once, as the balancer expects. Dropping the feed
//! aborts the task.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use zrpc_core::Status;
use zrpc_core::discover::Change;

/// The receiving end: a `Stream` of changes.
#[derive(Debug)]
pub(crate) struct Feed {
    changes: mpsc::UnboundedReceiver<Result<Change, Status>>,
    task: AbortHandle,
}

/// The task's end: where it reports changes and errors.
#[derive(Debug)]
pub(crate) struct Sink(mpsc::UnboundedSender<Result<Change, Status>>);

impl Sink {
    pub(crate) fn change(&self, change: Change) {
        // Only fails when the feed was dropped, which also aborts the task.
        let _ = self.0.send(Ok(change));
    }

    /// Reports a failure the task is recovering from; the consumer logs it.
    pub(crate) fn error(&self, status: Status) {
        let _ = self.0.send(Err(status));
    }
}

impl Feed {
    /// A feed whose first poll yields `initial`, then what `follow` reports.
    pub(crate) fn start<F>(initial: Vec<Change>, follow: impl FnOnce(Sink) -> F) -> Feed
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, changes) = mpsc::unbounded_channel();
        let sink = Sink(tx);
        for change in initial {
            sink.change(change);
        }
        let task = tokio::spawn(follow(sink)).abort_handle();
        Feed { changes, task }
    }
}

impl Stream for Feed {
    type Item = Result<Change, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Ends only if the task died (a bug); the balancer then keeps the endpoints it has.
        self.changes.poll_recv(cx)
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}
