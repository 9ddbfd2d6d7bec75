//! What the governance layers allocate per call, counted by the benchmark's counting allocator.
//!
//! The layers sit on every call a `Client` makes, so the common case should cost no heap
//! allocation: a `Failfast` call through the retry layer and a balancer that has its endpoints.
//! Retrying fail modes box their state machine and keep a pick record, and no more. The
//! endpoints are in-process services, so only the layers' own allocations are counted; one
//! test function, so that no other test's allocations land in the count.

use std::future::{Ready, ready};
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use tower::{Layer, Service, ServiceExt};
use zrpc::balance::{
    Available, Balance, ConsistentHash, LeastActive, P2c, Pick, Random, RoundRobin, WeightedRoundRobin,
};
use zrpc::discover::{Filter, Instance, Static};
use zrpc::retry::RetryLayer;
use zrpc::{FailMode, Request, Response, Status};
use zrpc_benches::alloc::{CountingAlloc, thread_allocations};

/// This thread's allocations so far: the runtime is current-thread, so every task of the test
/// runs here, and the test harness's own allocations on its thread are not counted.
fn allocated() -> u64 {
    thread_allocations().expect("the test's thread owns a shard")
}

#[global_allocator]
static COUNTING: CountingAlloc = CountingAlloc::COUNT;

/// An endpoint that answers at once, allocating nothing.
#[derive(Clone, Debug)]
struct AtOnce;

impl Available for AtOnce {
    fn is_available(&self) -> bool {
        true
    }
}

impl Service<Request> for AtOnce {
    type Response = Response;
    type Error = Status;
    type Future = Ready<Result<Response, Status>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request) -> Self::Future {
        ready(Ok(Response::default()))
    }
}

/// Allocations per call through `mode`'s retry layer over a balancer of `endpoints` endpoints.
async fn allocations_per_call(mode: FailMode, picker: impl Pick, endpoints: usize) -> f64 {
    const CALLS: u32 = 1000;
    let endpoints: Vec<String> = (1..=endpoints).map(|i| format!("tcp://10.0.0.{i}:1")).collect();
    let balance = Balance::new(Static::new(endpoints), |_: &Instance| AtOnce, picker, Filter::default());
    let service = RetryLayer::new(mode).layer(balance);
    let call = || service.clone().oneshot(Request::new("Bench.echo", Bytes::new()));
    // The first call starts discovery and waits for the endpoints; the rest find them in.
    for _ in 0..CALLS {
        call().await.expect("warm-up call");
    }
    let before = allocated();
    for _ in 0..CALLS {
        call().await.expect("call");
    }
    (allocated() - before) as f64 / f64::from(CALLS)
}

// The clock is paused: a balancer rebuilds its set of ready endpoints every `READY_REFRESH`,
// which allocates once per 100 ms, not per call; on a slow machine 1,000 calls take longer.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_common_call_allocates_nothing_and_retrying_modes_two() {
    let failfast = allocations_per_call(FailMode::Failfast, P2c::default(), 3).await;
    assert_eq!(failfast, 0.0, "Failfast over P2c: {failfast} allocations per call");
    let round_robin = allocations_per_call(FailMode::Failfast, RoundRobin::default(), 3).await;
    assert_eq!(round_robin, 0.0, "Failfast over RoundRobin: {round_robin} allocations per call");
    // The boxed state machine of the attempts, and the record of where the first one went.
    let failover = allocations_per_call(FailMode::Failover { retries: 2 }, P2c::default(), 3).await;
    assert_eq!(failover, 2.0, "Failover over P2c: {failover} allocations per call");
    // Pickers that see many endpoints at once (LeastActive draws 16; WeightedRoundRobin is
    // handed every ready one) keep their views on the stack too.
    let pickers: [(&str, Box<dyn Pick>); 4] = [
        ("LeastActive", Box::new(LeastActive::default())),
        ("WeightedRoundRobin", Box::new(WeightedRoundRobin::default())),
        ("Random", Box::new(Random::default())),
        ("ConsistentHash", Box::new(ConsistentHash::default())),
    ];
    for (name, picker) in pickers {
        let failfast = allocations_per_call(FailMode::Failfast, picker, 16).await;
        assert_eq!(failfast, 0.0, "Failfast over {name}, 16 endpoints: {failfast} allocations per call");
    }
}
