//! The test service, written as users write theirs: the [`Test`] trait, whose macro generates
//! `TestClient` and `TestServer`, implemented by [`TestService`].
//!
//! `Test` has methods that echo, report the caller, wait until released or cancelled, panic and
//! log one way; each handler reports what happened to it through [`Probe`] so tests can wait on
//! events instead of sleeping.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod cluster;
pub mod etcd;
pub mod etcd_server;
pub mod raw;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use zrpc_core::{Context, Request, Response, Status};
use zrpc_transport::{Server, ServerHandle};

/// How long any wait in these tests may take before the test fails instead of hanging. A bound
/// for liveness, far above any real wait; no test relies on its length.
pub const LIVENESS: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test with `what` if it has not finished within [`LIVENESS`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(LIVENESS, future).await {
        Ok(output) => output,
        Err(_) => panic!("not done within {LIVENESS:?}: {what}"),
    }
}

/// Makes `call` until it fails, yielding between attempts, and returns its error: for a call
/// that is refused once a GOAWAY, a few frames away, has arrived. Fails the test if 10,000
/// attempts all succeed.
pub async fn first_refusal<T, F, Fut>(what: &str, mut call: F) -> zrpc_core::Status
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, zrpc_core::Status>>,
{
    for _ in 0..10_000 {
        if let Err(status) = call().await {
            return status;
        }
        tokio::task::yield_now().await;
    }
    panic!("never refused: {what}");
}

/// A layer that answers every call as this one: `outer` turns an error `e` into `DataLoss`
/// "the outer layer saw: e", and `inner` refuses everything with `PermissionDenied` "the inner
/// layer refuses". Stacked outer then inner, a call fails with "the outer layer saw: the inner
/// layer refuses" exactly when the first layer added is the outermost.
pub type ResultLayer = tower::util::MapResultLayer<fn(Result<Response, Status>) -> Result<Response, Status>>;

/// The outer of the two [`ResultLayer`]s.
pub fn outer_layer() -> ResultLayer {
    tower::util::MapResultLayer::new(|result: Result<Response, Status>| {
        result.map_err(|status| Status::data_loss(format!("the outer layer saw: {}", status.message())))
    })
}

/// The inner of the two [`ResultLayer`]s.
pub fn inner_layer() -> ResultLayer {
    tower::util::MapResultLayer::new(|_: Result<Response, Status>| {
        Err::<Response, _>(Status::permission_denied("the inner layer refuses"))
    })
}

/// Checks that a call through [`outer_layer`] over [`inner_layer`] met them in that order.
pub fn assert_layered_in_order(status: &Status) {
    assert_eq!(status.code(), zrpc_core::Code::DataLoss, "{status}");
    assert_eq!(status.message(), "the outer layer saw: the inner layer refuses");
}

/// A bound server serving in a task of its own until the test stops it through its
/// [`ServerHandle`].
#[derive(Debug)]
pub struct Serving {
    handle: ServerHandle,
    task: JoinHandle<io::Result<()>>,
}

impl Serving {
    /// Serves `server` until [`shutdown`](Serving::shutdown) or [`abort`](Serving::abort).
    pub fn spawn<S>(server: Server<S>) -> Serving
    where
        S: tower::Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
        S::Future: Send + Unpin + 'static,
    {
        let handle = server.handle();
        Serving { handle, task: tokio::spawn(server.serve()) }
    }

    /// The server's handle.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// Tells the server to shut down gracefully, without waiting for it to finish.
    pub fn begin_shutdown(&self) {
        self.handle.shutdown();
    }

    /// Graceful shutdown: GOAWAY, drain up to the server's drain timeout, close. Returns what
    /// serving returned.
    pub async fn shutdown(self) -> io::Result<()> {
        self.handle.shutdown();
        within("the server shuts down", self.task).await.expect("serve did not panic")
    }

    /// Kills the server at once: its listener and every connection are dropped mid-call, and it
    /// does not deregister.
    pub async fn abort(self) {
        self.handle.abort();
        within("the aborted server stops", self.task).await.expect("serve did not panic").expect("serve succeeded");
    }
}

/// What handlers report.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    Started(String),
    Dropped(String),
    Logged(String),
}

#[derive(Clone, Debug)]
pub struct Probe {
    events: mpsc::UnboundedSender<Seen>,
    release: Arc<Notify>,
}

/// The test's end of a [`Probe`].
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<Seen>,
    release: Arc<Notify>,
}

impl Events {
    /// The next thing a handler reports; fails the test instead of hanging when nothing comes.
    pub async fn next(&mut self) -> Seen {
        within("a handler's report", self.rx.recv()).await.expect("the service is alive")
    }

    /// Lets every `wait` handler waiting now (and the next one to come) return.
    pub fn release(&self) {
        self.release.notify_waiters();
        self.release.notify_one();
    }
}

pub fn probe() -> (Probe, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    (Probe { events: tx, release: release.clone() }, Events { rx, release })
}

/// Reports `Dropped` when a handler's future is dropped before it finished.
struct DropReporter {
    tag: String,
    events: mpsc::UnboundedSender<Seen>,
    finished: bool,
}

impl Drop for DropReporter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.events.send(Seen::Dropped(std::mem::take(&mut self.tag)));
        }
    }
}

/// The service the transport's tests run, wire name `Test`.
#[zrpc_macros::service(crate = "zrpc_core")]
pub trait Test {
    /// Answers with `text`.
    #[zrpc(idempotent)]
    async fn echo(&self, text: String) -> String;
    /// The caller's name, which it also records in [`TestService::callers`].
    #[zrpc(idempotent)]
    async fn caller(&self, ctx: &Context) -> String;
    /// Reports `Started(tag)` and waits until released (answering `tag`) or dropped (reporting
    /// `Dropped(tag)`).
    async fn wait(&self, tag: String) -> String;
    /// Panics.
    async fn panic(&self);
    /// Reports `Logged(line)`; nothing comes back.
    #[zrpc(oneway)]
    async fn log(&self, line: String);
    /// `len` bytes: a response of a chosen size.
    #[zrpc(idempotent)]
    async fn sized(&self, len: usize) -> Vec<u8>;
    /// The time the handler has left, as the server sees the call's deadline.
    #[zrpc(idempotent)]
    async fn remaining(&self, ctx: &Context) -> Option<Duration>;
    /// The value of the call's metadata entry `key`, if it has one.
    #[zrpc(idempotent)]
    async fn metadata(&self, ctx: &Context, key: String) -> Option<Vec<u8>>;
}

/// The [`Test`] every test server runs, served by [`TestServer`].
#[derive(Clone, Debug)]
pub struct TestService {
    probe: Probe,
    /// Connections are not visible to handlers; callers' names are collected here instead.
    pub callers: Arc<Mutex<Vec<String>>>,
}

impl TestService {
    pub fn new(probe: Probe) -> TestService {
        TestService { probe, callers: Arc::default() }
    }
}

impl Test for TestService {
    async fn echo(&self, text: String) -> String {
        text
    }

    async fn caller(&self, ctx: &Context) -> String {
        let caller = ctx.caller().to_owned();
        self.callers.lock().expect("not poisoned").push(caller.clone());
        caller
    }

    async fn wait(&self, tag: String) -> String {
        let mut reporter = DropReporter { tag: tag.clone(), events: self.probe.events.clone(), finished: false };
        let released = self.probe.release.notified();
        let _ = self.probe.events.send(Seen::Started(tag.clone()));
        released.await;
        reporter.finished = true;
        tag
    }

    async fn panic(&self) {
        panic!("the handler panicked on purpose");
    }

    async fn log(&self, line: String) {
        let _ = self.probe.events.send(Seen::Logged(line));
    }

    async fn sized(&self, len: usize) -> Vec<u8> {
        vec![7; len]
    }

    async fn remaining(&self, ctx: &Context) -> Option<Duration> {
        ctx.remaining()
    }

    async fn metadata(&self, ctx: &Context, key: String) -> Option<Vec<u8>> {
        ctx.metadata().get(&key).map(<[u8]>::to_vec)
    }
}
