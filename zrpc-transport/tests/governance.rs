//! The governance layers assembled by `Client`, against real servers on loopback: fail modes,
//! retry classification and budget, balancing, endpoints that are down, circuit breaking,
//! discovery changes, and a chaos run in which a server dies mid-load.
//!
//! Nothing sleeps to synchronise: tests wait on what servers report (calls counted, handlers
//! started and dropped, connections open through a proxy), every such wait bounded by a
//! liveness timeout. Where a handler takes time (`Mode::Slow`, a hedge's delay), that is the
//! workload under test, and no assertion depends on how long anything took.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use support::cluster::{Mode, NodeClient, Proxy, Recorder, RunningNode, call_missing, refused_address};
use support::{Seen, within};
use tower::retry::budget::TpsBudget;
use zrpc_core::balance::{P2c, RoundRobin};
use zrpc_core::breaker::{BreakerConfig, BreakerState};
use zrpc_core::discover::{Change, Instance, Static};
use zrpc_core::{Code, FailMode, Status};
use zrpc_transport::{Address, Backoff, ChannelState, Client, ClientBuilder};

/// A client over `addresses` that never waits between retries (the backoff is not under test
/// here), named so servers can tell who calls.
fn client_over(addresses: &[&Address]) -> ClientBuilder {
    let instances: Vec<Instance> = addresses.iter().map(|&a| a.into()).collect();
    Client::builder().name("governance").discover(Static::new(instances)).retry_backoff(Duration::ZERO, Duration::ZERO)
}

/// Builds a client and waits until each endpoint's first connection attempt has its answer, so
/// that which endpoint a call goes to does not depend on how fast the probes run (a client
/// draws an endpoint not yet connected only when none is).
trait Settled {
    async fn settled(self) -> Client;
}

impl Settled for ClientBuilder {
    async fn settled(self) -> Client {
        let client = self.build();
        within("every endpoint probed", client.probed()).await;
        client
    }
}

/// A backoff between connection attempts longer than any test: an endpoint that refused once
/// stays down for the rest of the test.
fn stay_down() -> Backoff {
    Backoff::new(Duration::from_secs(600), Duration::from_secs(600))
}

fn calls(servers: &[&RunningNode]) -> Vec<usize> {
    servers.iter().map(|s| s.calls()).collect()
}

// ---------------------------------------------------------------------------------------------
// Fail modes

/// Six calls through `node`, which balances round robin over `failing` and `healthy` so that
/// first attempts alternate. Checks what each call cost the servers: an answer, one call on
/// `healthy` and none on `failing`; a failure, `attempts` calls on `failing` and none on
/// `healthy`. Returns the failures: every other call.
async fn alternate_first_attempts(
    node: &NodeClient<Client>,
    failing: &RunningNode,
    healthy: &RunningNode,
    attempts: usize,
) -> Vec<Status> {
    let mut failures = Vec::new();
    for i in 0..6 {
        let before = calls(&[failing, healthy]);
        let result = within("a call", node.work(format!("call {i}"))).await;
        let after = calls(&[failing, healthy]);
        match result {
            Ok(name) => {
                assert_eq!(name, "healthy");
                assert_eq!(after, [before[0], before[1] + 1], "one attempt, on the healthy server");
            }
            Err(status) => {
                assert_eq!(after, [before[0] + attempts, before[1]], "{attempts} attempts, on the failing server");
                failures.push(status);
            }
        }
    }
    assert_eq!(failures.len(), 3, "round robin alternates first attempts");
    failures
}

#[tokio::test]
async fn failfast_makes_one_attempt() {
    let failing = RunningNode::start("failing", Mode::Fail(Code::Unavailable)).await;
    let healthy = RunningNode::start("healthy", Mode::Answer).await;
    let client = client_over(&[&failing.address, &healthy.address]).balance(RoundRobin::new()).settled().await;
    let node = NodeClient::new(client);

    // Retryable failures of an idempotent call, and still not retried.
    for status in alternate_first_attempts(&node, &failing, &healthy, 1).await {
        assert_eq!(status.code(), Code::Unavailable, "{status}");
    }
}

#[tokio::test]
async fn failover_reaches_the_one_live_endpoint_of_four() {
    // Three servers that fail every call (connected, so probes cannot rule them out), no
    // breaker and no retry budget to take them out of the draw: calls fail over among them.
    let failing = [
        RunningNode::start("failing-1", Mode::Fail(Code::Unavailable)).await,
        RunningNode::start("failing-2", Mode::Fail(Code::Unavailable)).await,
        RunningNode::start("failing-3", Mode::Fail(Code::Unavailable)).await,
    ];
    let live = RunningNode::start("live", Mode::Answer).await;
    let recorder = Recorder::new();
    let picks = recorder.log();
    let client = client_over(&[&failing[0].address, &failing[1].address, &failing[2].address, &live.address])
        .balance(recorder)
        .fail_mode(FailMode::Failover { retries: 3 })
        .no_breaker()
        .no_retry_budget()
        .settled()
        .await;
    let node = NodeClient::new(client);

    for i in 0..50 {
        let answer = within("a call", node.work(format!("call {i}"))).await;
        assert_eq!(answer.as_deref(), Ok("live"), "call {i}");
    }
    assert_eq!(live.calls(), 50);

    let picks = picks.lock().expect("not poisoned").clone();
    let dead: Vec<String> = failing.iter().map(|node| node.address.to_string()).collect();
    for pick in &picks {
        assert!(
            !pick.exclude.contains(&pick.address),
            "{} was tried twice in one call while an untried endpoint remained: {pick:?}",
            pick.address
        );
    }
    let first_attempts_on_dead = picks.iter().filter(|p| p.exclude.is_empty() && dead.contains(&p.address)).count();
    assert!(first_attempts_on_dead >= 1, "first attempts landed on failing endpoints too: {picks:?}");
    assert!(picks.iter().any(|p| p.exclude.len() >= 2), "some calls failed over more than once: {picks:?}");
}

#[tokio::test]
async fn failtry_keeps_every_attempt_on_the_first_endpoint() {
    let failing = RunningNode::start("failing", Mode::Fail(Code::Unavailable)).await;
    let healthy = RunningNode::start("healthy", Mode::Answer).await;
    // No breaker: it would (rightly) open on the failing endpoint and steer attempts away.
    let client = client_over(&[&failing.address, &healthy.address])
        .balance(RoundRobin::new())
        .fail_mode(FailMode::Failtry { retries: 2 })
        .no_breaker()
        .settled()
        .await;
    let node = NodeClient::new(client);

    for status in alternate_first_attempts(&node, &failing, &healthy, 3).await {
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        assert!(status.message().contains("3 attempts"), "{status}");
    }
}

#[tokio::test]
async fn failbackup_wins_with_the_backup_and_cancels_the_slow_attempt_on_the_wire() {
    let mut slow = RunningNode::start("slow", Mode::Answer).await;
    let fast = RunningNode::start("fast", Mode::Answer).await;
    let client = client_over(&[&slow.address, &fast.address])
        .balance(Recorder::preferring(&slow.address))
        .fail_mode(FailMode::Failbackup { delay: Duration::from_millis(50) })
        .settled()
        .await;
    let node = NodeClient::new(client);
    // Connected before it turns slow, so that each first attempt is on the wire at once.
    assert_eq!(within("a warm-up call", node.work("warm-up".into())).await.as_deref(), Ok("slow"));
    slow.set_mode(Mode::Hold);

    for i in 0..3 {
        let tag = format!("hedged {i}");
        let answer = within("a hedged call", node.work(tag.clone())).await;
        assert_eq!(answer.as_deref(), Ok("fast"));
        assert_eq!(slow.events.next().await, Seen::Started(tag.clone()), "the first attempt went to the slow server");
        assert_eq!(slow.events.next().await, Seen::Dropped(tag), "and its handler was cancelled");
    }
    assert_eq!(calls(&[&slow, &fast]), [4, 3]);
}

#[tokio::test]
async fn failbackup_fails_only_when_both_attempts_fail() {
    let first = RunningNode::start("first", Mode::Fail(Code::Unavailable)).await;
    let second = RunningNode::start("second", Mode::Answer).await;
    let client = client_over(&[&first.address, &second.address])
        .balance(Recorder::preferring(&first.address))
        .fail_mode(FailMode::Failbackup { delay: Duration::from_secs(30) })
        .no_breaker()
        .settled()
        .await;
    let node = NodeClient::new(client);

    // The first attempt fails at once: the backup goes out without waiting for the delay.
    let answer = within("a call whose first attempt fails", node.work("one fails".into())).await;
    assert_eq!(answer.as_deref(), Ok("second"));
    assert_eq!(calls(&[&first, &second]), [1, 1]);

    second.set_mode(Mode::Fail(Code::Unavailable));
    let status =
        within("a call whose attempts both fail", node.work("both fail".into())).await.expect_err("both failed");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert_eq!(calls(&[&first, &second]), [2, 2], "one attempt each, no more");
}

// ---------------------------------------------------------------------------------------------
// Which failures are retried

#[tokio::test]
async fn application_errors_and_not_found_are_returned_after_one_attempt() {
    let a = RunningNode::start("a", Mode::Answer).await;
    let b = RunningNode::start("b", Mode::Answer).await;
    let client =
        client_over(&[&a.address, &b.address]).balance(RoundRobin::new()).fail_mode(FailMode::Failover { retries: 3 });
    let node = NodeClient::new(client.settled().await);

    let answer = within("an application error", node.app_error()).await.expect("an Ok response");
    assert!(answer.expect_err("the application's own error").ends_with("refuses politely"));
    assert_eq!(a.calls() + b.calls(), 1, "an application error is an answer, not a failure");

    let status = within("an unknown method", call_missing(node.inner())).await.expect_err("no such method");
    assert_eq!(status.code(), Code::NotFound, "{status}");
    assert_eq!(a.calls() + b.calls(), 2, "NotFound is not retried");
}

/// A call is in flight on `doomed` when its server shuts down with a short drain: the
/// connection is lost after the request was sent. Returns the call's result and how many calls
/// the other server received.
async fn lose_the_connection_mid_call(idempotent: bool) -> (Result<String, Status>, usize) {
    let address = "tcp://127.0.0.1:0".parse().expect("valid");
    let mut doomed = RunningNode::start_at("doomed", &address, Mode::Hold, Duration::from_millis(1)).await;
    let other = RunningNode::start("other", Mode::Answer).await;
    let client = client_over(&[&doomed.address, &other.address])
        .balance(Recorder::preferring(&doomed.address))
        .fail_mode(FailMode::Failover { retries: 2 })
        .settled()
        .await;
    let node = NodeClient::new(client);

    let call = if idempotent {
        tokio::spawn(node.work("in flight".into()))
    } else {
        tokio::spawn(node.work_once("in flight".into()))
    };
    assert_eq!(doomed.events.next().await, Seen::Started("in flight".into()), "the request reached the server");
    doomed.shutdown().await;
    let result = within("the call ends", call).await.expect("the call's task");
    (result, other.calls())
}

#[tokio::test]
async fn a_connection_lost_after_sending_is_retried_only_for_idempotent_methods() {
    let (result, other) = lose_the_connection_mid_call(false).await;
    let status = result.expect_err("a non-idempotent call may have run: not retried");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(!status.is_unprocessed(), "{status}");
    assert_eq!(other, 0, "nothing was resent");

    let (result, other) = lose_the_connection_mid_call(true).await;
    assert_eq!(result.as_deref(), Ok("other"), "an idempotent call is resent elsewhere");
    assert_eq!(other, 1);
}

#[tokio::test]
async fn the_retry_budget_stops_retries_when_every_server_fails() {
    let a = RunningNode::start("a", Mode::Fail(Code::Unavailable)).await;
    let b = RunningNode::start("b", Mode::Fail(Code::Unavailable)).await;
    // No reserve, one retry per ten calls; deposits last a minute, far longer than the test.
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(60), 0, 0.1));
    let client = client_over(&[&a.address, &b.address])
        .fail_mode(FailMode::Failover { retries: 3 })
        .retry_budget(budget)
        .no_breaker()
        .settled()
        .await;
    let node = NodeClient::new(client);

    const CALLS: usize = 100;
    let mut exhausted = 0;
    for i in 0..CALLS {
        let status = within("a call", node.work(format!("call {i}"))).await.expect_err("every server fails");
        assert_eq!(status.code(), Code::Unavailable);
        exhausted += usize::from(status.message().contains("retry budget exhausted"));
    }
    let attempts = a.calls() + b.calls();
    // Without a budget: 4 attempts a call, 400. With it: the calls plus one retry per ten.
    assert!(attempts > CALLS, "the budget allowed some retries: {attempts}");
    assert!(attempts <= CALLS + CALLS / 10, "attempts stayed within the budget: {attempts}");
    assert!(exhausted >= CALLS / 2, "most calls say the budget stopped them: {exhausted}");
}

// ---------------------------------------------------------------------------------------------
// Balancing and endpoints that are down

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p2c_sends_clearly_less_to_a_slow_endpoint() {
    let slow = RunningNode::start("slow", Mode::Slow(Duration::from_millis(20))).await;
    let fast = [RunningNode::start("fast-1", Mode::Answer).await, RunningNode::start("fast-2", Mode::Answer).await];
    let client =
        client_over(&[&slow.address, &fast[0].address, &fast[1].address]).balance(P2c::default()).settled().await;
    let node = NodeClient::new(client);

    const TASKS: usize = 10;
    const PER_TASK: usize = 30;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let node = node.clone();
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    node.work(format!("{t}/{i}")).await.expect("answered");
                }
            })
        })
        .collect();
    within("300 calls", futures::future::try_join_all(tasks)).await.expect("no task panicked");

    let total = slow.calls() + fast[0].calls() + fast[1].calls();
    assert_eq!(total, TASKS * PER_TASK);
    assert!(slow.calls() * 5 < total, "the slow endpoint got {} of {total} calls, not under 20%", slow.calls());
}

#[tokio::test]
async fn an_endpoint_that_refuses_connections_is_not_picked_while_down() {
    let dead = refused_address();
    let alive = RunningNode::start("alive", Mode::Answer).await;
    let client = client_over(&[&dead, &alive.address])
        .balance(RoundRobin::new())
        .channel(|channel| channel.backoff(stay_down()));
    let client = client.settled().await;
    // Its probe found it down: no call has to.
    let down = client.endpoint_status().into_iter().find(|e| *e.address == *dead.to_string()).expect("listed");
    assert!(matches!(down.connections[..], [ChannelState::Failed { .. }]), "{down:?}");
    assert!(!down.available);
    let node = NodeClient::new(client);
    // Failfast, round robin over both: every call reaches the live one.
    for i in 0..50 {
        assert_eq!(within("a call", node.work(format!("call {i}"))).await.as_deref(), Ok("alive"), "call {i}");
    }
}

#[tokio::test]
async fn the_breaker_opens_and_its_endpoint_is_skipped() {
    let failing = RunningNode::start("failing", Mode::Fail(Code::Unavailable)).await;
    let healthy = RunningNode::start("healthy", Mode::Answer).await;
    let breaker = BreakerConfig::default().min_calls(3).cooldown(Duration::from_secs(600));
    let client = client_over(&[&failing.address, &healthy.address]).balance(RoundRobin::new()).breaker(breaker);
    let node = NodeClient::new(client.settled().await);

    // Failfast: every third failure of the failing endpoint is seen by the caller.
    let mut failures = 0;
    for i in 0..20 {
        if failures == 3 {
            break;
        }
        failures += usize::from(within("a call", node.work(format!("warm-up {i}"))).await.is_err());
    }
    assert_eq!(failures, 3);
    assert_eq!(failing.calls(), 3);
    for i in 0..30 {
        assert_eq!(within("a call", node.work(format!("call {i}"))).await.as_deref(), Ok("healthy"), "call {i}");
    }
    assert_eq!(failing.calls(), 3, "the open breaker kept calls away");
}

#[tokio::test]
async fn endpoints_that_leave_discovery_get_no_calls_and_their_connection_closes() {
    let leaving = RunningNode::start("leaving", Mode::Answer).await;
    let staying = RunningNode::start("staying", Mode::Answer).await;
    let mut proxy = Proxy::start(&leaving.address).await;
    let (changes, source) = mpsc::unbounded::<Result<Change, Status>>();
    for address in [&proxy.address, &staying.address] {
        let instance = Instance::from(address);
        changes.unbounded_send(Ok(Change::Insert(instance.address.clone(), instance))).expect("open");
    }
    let client = Client::builder().name("governance").discover(source).balance(RoundRobin::new()).settled().await;
    let node = NodeClient::new(client.clone());

    for i in 0..4 {
        within("a call", node.work(format!("before {i}"))).await.expect("answered");
    }
    assert_eq!(calls(&[&leaving, &staying]), [2, 2]);
    assert_eq!(proxy.open(), 1, "one connection to the leaving endpoint");

    changes.unbounded_send(Ok(Change::Remove(proxy.address.to_string().into()))).expect("open");
    within("the removal is applied", async {
        while client.endpoints().len() != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(client.endpoints(), [Arc::<str>::from(staying.address.to_string())]);
    proxy.wait_open(0).await;

    for i in 0..6 {
        assert_eq!(within("a call", node.work(format!("after {i}"))).await.as_deref(), Ok("staying"));
    }
    assert_eq!(calls(&[&leaving, &staying]), [2, 8]);
}

// ---------------------------------------------------------------------------------------------
// Broadcast and fork

#[tokio::test]
async fn broadcast_reaches_every_endpoint_once_and_reports_each() {
    let servers = [
        RunningNode::start("one", Mode::Answer).await,
        RunningNode::start("two", Mode::Answer).await,
        RunningNode::start("three", Mode::Fail(Code::Internal)).await,
    ];
    let node =
        NodeClient::new(client_over(&[&servers[0].address, &servers[1].address, &servers[2].address]).settled().await);

    // The first broadcast also starts discovery; the second finds the set known.
    for round in 1..=2 {
        let answers = within("a broadcast", node.broadcast().work("all".into())).await;
        let mut seen: Vec<(String, Result<String, Code>)> =
            answers.into_iter().map(|(address, answer)| (address.to_string(), answer.map_err(|s| s.code()))).collect();
        seen.sort();
        let mut expected: Vec<(String, Result<String, Code>)> = vec![
            (servers[0].address.to_string(), Ok("one".into())),
            (servers[1].address.to_string(), Ok("two".into())),
            (servers[2].address.to_string(), Err(Code::Internal)),
        ];
        expected.sort();
        assert_eq!(seen, expected, "round {round}");
        assert_eq!(calls(&[&servers[0], &servers[1], &servers[2]]), [round, round, round]);
    }
}

#[tokio::test]
async fn fork_returns_the_first_success_and_cancels_the_rest() {
    let mut holding = RunningNode::start("holding", Mode::Hold).await;
    let mut gated = RunningNode::start("gated", Mode::Gate).await;
    let node = NodeClient::new(client_over(&[&holding.address, &gated.address]).settled().await);

    let fork = tokio::spawn(node.fork(2).work("forked".into()));
    // Both calls are running on their servers before either can answer.
    assert_eq!(holding.events.next().await, Seen::Started("forked".into()));
    assert_eq!(gated.events.next().await, Seen::Started("forked".into()));
    gated.events.release();
    let (address, answer) = within("a fork", fork).await.expect("the fork's task").expect("one succeeded");
    assert_eq!((&*address, answer.as_str()), (gated.address.to_string().as_str(), "gated"));
    assert_eq!(holding.events.next().await, Seen::Dropped("forked".into()), "the loser was cancelled on the wire");

    holding.set_mode(Mode::Fail(Code::Unavailable));
    gated.set_mode(Mode::Fail(Code::Internal));
    let status = within("a fork that fails", node.fork(0).work("doomed".into())).await.expect_err("both failed");
    assert!(status.message().contains("2 endpoints tried"), "{status}");
    assert_eq!(calls(&[&holding, &gated]), [2, 2], "one call each per fork");
}

// ---------------------------------------------------------------------------------------------
// End to end

/// Issue 3's chaos test: three servers, concurrent idempotent calls with failover and p2c, one
/// server aborted mid-load (its connections die abruptly): no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_a_server_aborted_mid_load_loses_no_call() {
    let servers = [
        RunningNode::start("s1", Mode::Answer).await,
        RunningNode::start("s2", Mode::Answer).await,
        RunningNode::start("s3", Mode::Answer).await,
    ];
    let node = NodeClient::new(recovering_client(&servers).settled().await);
    let [s1, s2, victim] = servers;

    const TASKS: usize = 8;
    const PER_TASK: usize = 200;
    let (done_tx, mut done) = tokio::sync::watch::channel(0usize);
    let done_tx = Arc::new(done_tx);
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (node, done_tx) = (node.clone(), done_tx.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in 0..PER_TASK {
                    if let Err(status) = node.work(format!("{t}/{i}")).await {
                        failures.push(status);
                    }
                    done_tx.send_modify(|n| *n += 1);
                }
                failures
            })
        })
        .collect();

    // Mid-load: once a quarter of the calls are done, and the victim has had its share.
    within("a quarter of the calls", done.wait_for(|n| *n >= TASKS * PER_TASK / 4)).await.expect("tasks alive");
    assert!(victim.calls() > 0, "the victim took part before it died");
    victim.abort().await;

    let failures: Vec<Status> = within("every call", futures::future::try_join_all(tasks))
        .await
        .expect("no task panicked")
        .into_iter()
        .flatten()
        .collect();
    assert!(failures.is_empty(), "{} calls failed, first: {:?}", failures.len(), failures.first());
    assert_eq!(*done.borrow(), TASKS * PER_TASK);
    assert!(s1.calls() > 0 && s2.calls() > 0);
}

/// The chaos test's client: failover and p2c, quick to reconnect and to probe a tripped breaker.
fn recovering_client(servers: &[RunningNode]) -> ClientBuilder {
    let addresses: Vec<&Address> = servers.iter().map(|s| &s.address).collect();
    client_over(&addresses)
        .balance(P2c::default())
        .fail_mode(FailMode::Failover { retries: 2 })
        .channel(|channel| channel.backoff(Backoff::new(Duration::from_millis(10), Duration::from_millis(100))))
        .breaker(BreakerConfig::default().cooldown(Duration::from_millis(50)).max_cooldown(Duration::from_millis(200)))
}

/// The second half of issue 3's chaos test: a server that was aborted and restarts on the same
/// address receives calls again.
///
/// The victim is made slow before it dies (20 ms per call against 0.2 ms for the others), so
/// P2c learns to avoid it; after it returns, only the decay of its latency average and the reset
/// on reconnecting bring it back into rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_aborted_server_restarted_on_its_address_receives_calls_again() {
    let servers = [
        RunningNode::start("s1", Mode::Answer).await,
        RunningNode::start("s2", Mode::Answer).await,
        RunningNode::start("s3", Mode::Slow(Duration::from_millis(20))).await,
    ];
    let node = NodeClient::new(recovering_client(&servers).settled().await);
    let [_s1, _s2, victim] = servers;
    within("the victim answers a call", async {
        let mut i = 0u64;
        while victim.calls() == 0 {
            node.work(format!("before {i}")).await.expect("answered");
            i += 1;
        }
    })
    .await;
    let address = victim.abort().await;

    let revived = RunningNode::start_at("s3-again", &address, Mode::Answer, Duration::from_secs(30)).await;
    within("the revived server receives calls", async {
        let mut i = 0u64;
        while revived.calls() == 0 {
            node.work(format!("after {i}")).await.expect("no call fails");
            i += 1;
        }
    })
    .await;
}

#[tokio::test]
async fn a_client_lists_its_endpoints_once_discovered_before_any_call() {
    let client =
        Client::builder().discover(Static::new(["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"].map(Instance::new))).build();
    assert!(client.endpoints().is_empty(), "nothing discovered before discovery starts");
    within("the first set", client.discovered()).await;
    let mut endpoints = client.endpoints();
    endpoints.sort();
    assert_eq!(endpoints, [Arc::from("tcp://127.0.0.1:1"), Arc::from("tcp://127.0.0.1:2")]);
}

#[tokio::test]
async fn a_client_shows_each_endpoints_connections_breaker_calls_in_flight_and_latency() {
    let mut gated = RunningNode::start("gated", Mode::Gate).await;
    let failing = RunningNode::start("failing", Mode::Fail(Code::Unavailable)).await;
    let breaker = BreakerConfig::default().min_calls(2).cooldown(Duration::from_secs(600));
    let client = client_over(&[&gated.address, &failing.address]).balance(RoundRobin::new()).breaker(breaker).build();
    assert!(client.endpoint_status().is_empty(), "nothing before discovery starts");
    within("every endpoint probed", client.probed()).await;
    let status = |address: &Address| {
        client.endpoint_status().into_iter().find(|e| *e.address == *address.to_string()).expect("listed")
    };
    let before = status(&gated.address);
    assert_eq!(before.connections, [ChannelState::Ready], "connected by its probe, before any call");
    assert_eq!(
        (before.breaker, before.in_flight, before.latency, before.available),
        (Some(BreakerState::Closed), 0, None, true)
    );

    // A call held on the gated endpoint is in flight there, over a ready connection.
    let node = NodeClient::new(client.clone());
    let held = tokio::spawn(node.work("held".into()));
    assert_eq!(gated.events.next().await, Seen::Started("held".into()));
    let during = status(&gated.address);
    assert_eq!((during.connections.as_slice(), during.in_flight), ([ChannelState::Ready].as_slice(), 1));
    gated.events.release();
    assert_eq!(within("the held call", held).await.expect("its task").as_deref(), Ok("gated"));
    let after = status(&gated.address);
    assert_eq!(after.in_flight, 0);
    assert!(after.latency.is_some_and(|latency| latency > Duration::ZERO), "{after:?}");

    // Two failures open the failing endpoint's breaker; the snapshot says so. Round robin
    // alternates: failing, gated, failing, gated.
    gated.set_mode(Mode::Answer);
    let mut failures = 0;
    for i in 0..4 {
        failures += usize::from(within("a call", node.work(format!("call {i}"))).await.is_err());
    }
    let failed = status(&failing.address);
    assert_eq!((failures, failing.calls()), (2, 2));
    assert_eq!((failed.breaker, failed.available), (Some(BreakerState::Open), false), "{failed:?}");
}
