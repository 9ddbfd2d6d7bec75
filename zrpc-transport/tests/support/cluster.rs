//! Several named servers for the governance tests, a picker that records what it was asked, and
//! a TCP proxy that counts connections.
//!
//! Every server runs a [`Node`] service whose one real method, `work`, answers with the server's
//! name, waits until cancelled, or takes a while, as its [`Mode`] says; in front of it, the
//! server counts every request it receives, known method or not, and can fail them all with a
//! chosen code. Waiting handlers report `Started` and `Dropped` through the usual
//! [`Probe`](super::Probe), so tests observe a cancellation on the wire without sleeping.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt;
use tower::util::MapFutureLayer;
use zrpc_core::balance::{Candidates, EndpointView, Pick, PickContext, RoundRobin};
use zrpc_core::{Code, Request, Response, Status};
use zrpc_transport::{Address, Server};

use super::{DropReporter, Events, Probe, Seen, Serving, within};

/// What a node does with a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answer with the server's name at once.
    Answer,
    /// Fail every call with this code, before the service sees it.
    Fail(Code),
    /// Report `Started(tag)` and wait until cancelled (reporting `Dropped(tag)`).
    Hold,
    /// Report `Started(tag)`, wait until the test releases it (`events.release()`), answer.
    Gate,
    /// Answer after this long: simulated work on the server.
    Slow(Duration),
}

/// The service every test server runs, wire name `Node`.
#[zrpc_macros::service(crate = "zrpc_core")]
pub trait Node {
    /// The name of the server that did it.
    #[zrpc(idempotent)]
    async fn work(&self, tag: String) -> String;
    /// The same, not idempotent.
    async fn work_once(&self, tag: String) -> String;
    /// Always an application error.
    #[zrpc(idempotent)]
    async fn app_error(&self) -> Result<String, String>;
}

/// Calls `Node.missing`, an idempotent method no server has.
pub async fn call_missing<S>(service: &S) -> Result<Response, Status>
where
    S: tower::Service<Request, Response = Response, Error = Status> + Clone,
{
    service.clone().oneshot(Request::new("Node.missing", Bytes::new()).with_idempotent(true)).await
}

/// A node's handlers.
struct Worker {
    name: Arc<str>,
    mode: Arc<Mutex<Mode>>,
    probe: Probe,
}

impl Worker {
    /// `work` and `work_once` in the current mode.
    async fn answer(&self, tag: String) -> String {
        let mode = *self.mode.lock().expect("not poisoned");
        // Reported on the handler's first poll, which the connection makes as it dispatches the
        // request: a handler cancelled soon after still reports both events.
        let waits = matches!(mode, Mode::Hold | Mode::Gate);
        let mut reporter = DropReporter { tag: tag.clone(), events: self.probe.events.clone(), finished: !waits };
        if waits {
            let _ = self.probe.events.send(Seen::Started(tag));
        }
        match mode {
            Mode::Hold => std::future::pending::<()>().await,
            Mode::Gate => self.probe.release.notified().await,
            Mode::Slow(delay) => tokio::time::sleep(delay).await,
            Mode::Answer | Mode::Fail(_) => {}
        }
        reporter.finished = true;
        self.name.to_string()
    }
}

impl Node for Worker {
    async fn work(&self, tag: String) -> String {
        self.answer(tag).await
    }

    async fn work_once(&self, tag: String) -> String {
        self.answer(tag).await
    }

    async fn app_error(&self) -> Result<String, String> {
        Err(format!("{} refuses politely", self.name))
    }
}

/// What a server's service returns for a call.
type Answer = BoxFuture<'static, Result<Response, Status>>;

/// Counts every request and, in [`Mode::Fail`], fails it in place of the service's answer (not
/// yet started, so no handler runs): a handler answers, it cannot fail the call.
fn count_or_fail(
    name: Arc<str>,
    calls: Arc<AtomicUsize>,
    mode: Arc<Mutex<Mode>>,
) -> MapFutureLayer<impl Fn(Answer) -> Answer + Clone> {
    MapFutureLayer::new(move |answer: Answer| -> Answer {
        calls.fetch_add(1, Ordering::SeqCst);
        match *mode.lock().expect("not poisoned") {
            Mode::Fail(code) => {
                Box::pin(std::future::ready(Err(Status::new(code, format!("{name} fails on purpose")))))
            }
            _ => answer,
        }
    })
}

/// A running server with a [`Node`] service.
#[derive(Debug)]
pub struct RunningNode {
    pub name: Arc<str>,
    pub address: Address,
    pub events: Events,
    calls: Arc<AtomicUsize>,
    mode: Arc<Mutex<Mode>>,
    serving: Serving,
}

impl RunningNode {
    /// A server named `name` on a free loopback port.
    pub async fn start(name: &str, mode: Mode) -> RunningNode {
        RunningNode::start_at(name, &"tcp://127.0.0.1:0".parse().expect("valid"), mode, Duration::from_secs(30)).await
    }

    /// A server named `name` at `address`, waiting up to `drain` for calls in flight when shut
    /// down.
    pub async fn start_at(name: &str, address: &Address, mode: Mode, drain: Duration) -> RunningNode {
        let (probe, events) = super::probe();
        let name: Arc<str> = name.into();
        let (calls, mode) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(mode)));
        let worker = Worker { name: name.clone(), mode: mode.clone(), probe };
        let server = Server::builder()
            .name(name.to_string())
            .drain_timeout(drain)
            .layer(count_or_fail(name.clone(), calls.clone(), mode.clone()))
            .add_service(NodeServer::new(worker))
            .bind(address)
            .await
            .expect("bind");
        let address = server.local_addr().clone();
        RunningNode { name, address, events, calls, mode, serving: Serving::spawn(server) }
    }

    /// Requests received so far, any method.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("not poisoned") = mode;
    }

    /// Graceful shutdown: GOAWAY, drain up to the server's drain timeout, close.
    pub async fn shutdown(self) -> Events {
        self.serving.shutdown().await.expect("serve succeeded");
        self.events
    }

    /// Kills the server at once: its listener and every connection are dropped mid-call.
    pub async fn abort(self) -> Address {
        self.serving.abort().await;
        self.address
    }
}

/// An address nothing listens on: connecting to it is refused.
pub fn refused_address() -> Address {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    let address = probe.local_addr().expect("local address");
    drop(probe);
    address.into()
}

/// One pick as a [`Recorder`] saw it: the address chosen and the call's exclusions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PickSeen {
    pub address: String,
    pub exclude: Vec<String>,
}

/// Round-robin, except that it takes a preferred address whenever that is a candidate, and
/// records every pick.
#[derive(Debug, Default)]
pub struct Recorder {
    inner: RoundRobin,
    prefer: Option<String>,
    pub picks: Arc<Mutex<Vec<PickSeen>>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Picks `address` first whenever it is eligible and not excluded.
    pub fn preferring(address: &Address) -> Recorder {
        Recorder { prefer: Some(address.to_string()), ..Recorder::default() }
    }

    pub fn log(&self) -> Arc<Mutex<Vec<PickSeen>>> {
        self.picks.clone()
    }
}

impl Pick for Recorder {
    fn pick(&self, endpoints: &[EndpointView<'_>], ctx: &PickContext<'_>) -> Result<usize, Status> {
        let preferred = self.prefer.as_deref().and_then(|prefer| {
            let candidates = Candidates::new(endpoints, ctx).ok()?;
            candidates.iter().find(|&i| endpoints[i].address == prefer)
        });
        let index = match preferred {
            Some(index) => index,
            None => self.inner.pick(endpoints, ctx)?,
        };
        let seen = PickSeen {
            address: endpoints[index].address.to_owned(),
            exclude: ctx.exclude().iter().map(|a| a.to_string()).collect(),
        };
        self.picks.lock().expect("not poisoned").push(seen);
        Ok(index)
    }
}

/// A TCP proxy in front of one server that counts the connections open through it, so a test
/// can see a client close its connection.
#[derive(Debug)]
pub struct Proxy {
    pub address: Address,
    open: watch::Receiver<usize>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: &Address) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let address: Address = listener.local_addr().expect("local address").into();
        let target = target.socket_addr().expect("a tcp target");
        let (count, open) = watch::channel(0usize);
        let count = Arc::new(count);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let count = count.clone();
                count.send_modify(|n| *n += 1);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    count.send_modify(|n| *n -= 1);
                });
            }
        });
        Proxy { address, open, task }
    }

    /// Connections open through the proxy now.
    pub fn open(&self) -> usize {
        *self.open.borrow()
    }

    /// Waits until exactly `n` connections are open.
    pub async fn wait_open(&mut self, n: usize) {
        let open = &mut self.open;
        within(&format!("{n} connections open through the proxy"), open.wait_for(|open| *open == n))
            .await
            .expect("the proxy is alive");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
