//! A hand-written test service, so the transport is tested without the macro crate.
//!
//! `Test` has methods that echo, report the caller, wait until released or cancelled, panic and
//! log one way; each handler reports what happened to it through [`Probe`] so tests can wait on
//! events instead of sleeping.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod cluster;
pub mod etcd;
pub mod raw;

use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc};
use zrpc_core::__private::{self as private, MethodInfo};
use zrpc_core::{CodecId, Context, NamedService, Request, Response, Status};

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
    /// The next thing a handler reports. Fails the test instead of hanging when nothing comes:
    /// the bound is for liveness, far above any real wait, and no test relies on its length.
    pub async fn next(&mut self) -> Seen {
        let next = tokio::time::timeout(std::time::Duration::from_secs(60), self.rx.recv());
        next.await.expect("a handler reported within 60 s").expect("the service is alive")
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

impl NamedService for TestService {
    const NAME: &'static str = "Test";
    const METHODS: &'static [&'static str] =
        &["Test.echo", "Test.caller", "Test.wait", "Test.panic", "Test.log", "Test.sized"];
}

impl tower::Service<Request> for TestService {
    type Response = Response;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Response, Status>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let probe = self.probe.clone();
        match req.method().name() {
            "echo" => private::serve(req, |_, text: String| async move { text }),
            "sized" => private::serve(req, |_, len: usize| async move { vec![7u8; len] }),
            "caller" => {
                let callers = self.callers.clone();
                private::serve(req, move |ctx: Context, (): ()| async move {
                    let caller = ctx.caller().to_owned();
                    callers.lock().expect("not poisoned").push(caller.clone());
                    caller
                })
            }
            "wait" => private::serve(req, move |_, tag: String| async move {
                let mut reporter = DropReporter { tag: tag.clone(), events: probe.events.clone(), finished: false };
                let released = probe.release.notified();
                let _ = probe.events.send(Seen::Started(tag.clone()));
                released.await;
                reporter.finished = true;
                tag
            }),
            "panic" => private::serve(req, |_, (): ()| async move {
                if true {
                    panic!("the handler panicked on purpose");
                }
            }),
            "log" => private::serve(req, move |_, line: String| async move {
                let _ = probe.events.send(Seen::Logged(line));
            }),
            _ => private::unknown_method::<Self>(&req),
        }
    }
}

pub static ECHO: MethodInfo = MethodInfo { name: "Test.echo", idempotent: true, oneway: false };
pub static SIZED: MethodInfo = MethodInfo { name: "Test.sized", idempotent: true, oneway: false };
pub static CALLER: MethodInfo = MethodInfo { name: "Test.caller", idempotent: true, oneway: false };
pub static WAIT: MethodInfo = MethodInfo { name: "Test.wait", idempotent: false, oneway: false };
pub static PANIC: MethodInfo = MethodInfo { name: "Test.panic", idempotent: false, oneway: false };
pub static LOG: MethodInfo = MethodInfo { name: "Test.log", idempotent: false, oneway: true };
pub static MISSING: MethodInfo = MethodInfo { name: "Test.missing", idempotent: false, oneway: false };
pub static OTHER_SERVICE: MethodInfo = MethodInfo { name: "Nope.echo", idempotent: false, oneway: false };

/// A typed client over any channel-like service, as generated code would be.
#[derive(Clone, Debug)]
pub struct TestClient<S> {
    pub inner: S,
    pub ctx: Context,
}

impl<S> TestClient<S>
where
    S: tower::Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
    S::Future: Send,
{
    pub fn new(inner: S) -> TestClient<S> {
        TestClient { inner, ctx: Context::new() }
    }

    pub fn with_context(&self, ctx: Context) -> TestClient<S> {
        TestClient { inner: self.inner.clone(), ctx }
    }

    pub async fn echo(&self, text: &str) -> Result<String, Status> {
        private::call(&self.inner, &self.ctx, CodecId::Postcard, &ECHO, text.to_owned()).await
    }

    pub async fn sized(&self, len: usize) -> Result<Vec<u8>, Status> {
        private::call(&self.inner, &self.ctx, CodecId::Postcard, &SIZED, len).await
    }

    pub async fn caller(&self) -> Result<String, Status> {
        private::call(&self.inner, &self.ctx, CodecId::Postcard, &CALLER, ()).await
    }

    pub fn wait(&self, tag: &str) -> impl std::future::Future<Output = Result<String, Status>> + Send + 'static {
        private::call(&self.inner, &self.ctx, CodecId::Postcard, &WAIT, tag.to_owned())
    }

    pub async fn panic(&self) -> Result<(), Status> {
        private::call(&self.inner, &self.ctx, CodecId::Postcard, &PANIC, ()).await
    }

    pub async fn log(&self, line: &str) -> Result<(), Status> {
        private::call_oneway(&self.inner, &self.ctx, CodecId::Postcard, &LOG, line.to_owned()).await
    }

    pub async fn raw(&self, method: &'static MethodInfo) -> Result<(), Status> {
        private::call(&self.inner, &self.ctx, CodecId::Postcard, method, ()).await
    }
}
