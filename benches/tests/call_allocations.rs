//! What a call over a real connection allocates of its own, counted by the benchmark's counting
//! allocator: client and server in one process, on one current-thread runtime, over loopback
//! TCP. The arguments and the result are integers, so nothing is counted for the message.
//!
//! One allocation a call is zrpc's: the handler's boxed future on the server (the price of
//! dispatching by name to any method). The answer's slot on the client is reused from call to
//! call (`zrpc_transport::conn::reply`), and buffers are shared by many calls, so they count
//! only a fraction. A call back, from the server to a client that serves, costs the same: the
//! box a `Peer`'s call future needs is reused too. Each test counts its own thread's
//! allocations, so that no other test's land in its count.

use zrpc::{Channel, Server};
use zrpc_benches::alloc::{CountingAlloc, thread_allocations};

/// This thread's allocations so far: the runtime is current-thread, so every task of the test
/// runs here, and the test harness's own allocations on its thread are not counted.
fn allocated() -> u64 {
    thread_allocations().expect("the test's thread owns a shard")
}

#[global_allocator]
static COUNTING: CountingAlloc = CountingAlloc::COUNT;

/// Integer arithmetic: nothing to allocate in the arguments or the result.
#[zrpc::service]
pub trait Sum {
    /// `a + b`.
    async fn add(&self, a: u64, b: u64) -> u64;
}

#[derive(Clone)]
struct Adder;

impl Sum for Adder {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

/// Allocations per call of `add` on this thread, after as many calls to warm up: the
/// connection's buffers, the free slots and boxes, the method's interned name.
async fn allocations_per_call<F, A>(add: F) -> f64
where
    F: Fn(u64, u64) -> A,
    A: Future<Output = Result<u64, zrpc::Status>>,
{
    const CALLS: u64 = 5_000;
    for n in 0..CALLS {
        assert_eq!(add(n, 1).await.expect("warm-up call"), n + 1);
    }
    let before = allocated();
    for n in 0..CALLS {
        assert_eq!(add(n, 2).await.expect("call"), n + 2);
    }
    (allocated() - before) as f64 / CALLS as f64
}

#[tokio::test(flavor = "current_thread")]
async fn a_call_allocates_once_of_its_own() {
    let server = Server::builder().add_service(SumServer::new(Adder)).bind("tcp://127.0.0.1:0").await.expect("binds");
    let address = server.local_addr().clone();
    tokio::spawn(server.serve());
    let client = SumClient::new(Channel::builder(address).connect().await.expect("connects"));
    let per_call = allocations_per_call(|a, b| client.add(a, b)).await;
    // 1 for the handler's future, and amortised buffers; 2 and more with a oneshot per call.
    assert!((1.0..1.1).contains(&per_call), "{per_call} allocations per call");
}

#[tokio::test(flavor = "current_thread")]
async fn a_call_back_allocates_once_of_its_own() {
    let server = Server::builder().bind("tcp://127.0.0.1:0").await.expect("binds");
    let address = server.local_addr().clone();
    let peers = server.handle().peers();
    tokio::spawn(server.serve());
    // The client serves `Sum` on the connection it opens; the server calls it back through
    // that connection's peer.
    let _channel =
        Channel::builder(address).name("summer").serve(SumServer::new(Adder)).connect().await.expect("connects");
    let client = SumClient::new(peers.wait_for("summer").await);
    let per_call = allocations_per_call(|a, b| client.add(a, b)).await;
    // 1 for the handler's future on the client, and amortised buffers; 2 and more with a box
    // per call.
    assert!((1.0..1.1).contains(&per_call), "{per_call} allocations per call");
}
