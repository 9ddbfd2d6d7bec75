//! Handlers declared `-> Result<T, Status>` over a real connection: the status reaches the
//! caller whole (code, message, details, unprocessed mark), application errors keep their typed
//! path beside it, and the retry layer and the breaker treat it as any other status.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zrpc::balance::RoundRobin;
use zrpc::breaker::BreakerConfig;
use zrpc::discover::{Instance, Static};
use zrpc::{Address, Channel, Client, Code, Context, FailMode, Server, Status};

/// Why a withdrawal was refused: an application error, part of the method's own result.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum Refusal {
    /// Not enough money.
    Insufficient {
        /// What the account holds.
        balance: u64,
    },
}

/// A bank whose handlers fail calls with framework statuses.
#[zrpc::service]
pub trait Bank {
    /// The balance of `account`; `NotFound` with the account in the details when there is none.
    async fn balance(&self, account: u64) -> Result<u64, Status>;
    /// Withdraws from account 7: `PermissionDenied` without a `user` metadata entry, a typed
    /// refusal when the balance is short.
    async fn withdraw(&self, ctx: &Context, amount: u64) -> Result<Result<u64, Refusal>, Status>;
    /// Fails with the status this server was started with, or answers its name.
    async fn work(&self) -> Result<String, Status>;
}

struct Branch {
    name: &'static str,
    /// What `work` fails with; `None` answers.
    fail: Option<Status>,
    calls: AtomicU32,
}

impl Branch {
    fn new(name: &'static str, fail: Option<Status>) -> Arc<Branch> {
        Arc::new(Branch { name, fail, calls: AtomicU32::new(0) })
    }
}

impl Bank for Arc<Branch> {
    async fn balance(&self, account: u64) -> Result<u64, Status> {
        match account {
            7 => Ok(100),
            _ => Err(Status::not_found(format!("no account {account}"))
                .with_details(Bytes::copy_from_slice(&account.to_be_bytes()))),
        }
    }

    async fn withdraw(&self, ctx: &Context, amount: u64) -> Result<Result<u64, Refusal>, Status> {
        if ctx.metadata().get("user").is_none() {
            return Err(Status::permission_denied("withdrawals need a user"));
        }
        Ok(100u64.checked_sub(amount).ok_or(Refusal::Insufficient { balance: 100 }))
    }

    async fn work(&self) -> Result<String, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.fail {
            Some(status) => Err(status.clone()),
            None => Ok(self.name.to_owned()),
        }
    }
}

/// Serves `branch` on a fresh loopback port; the server stops when the test's runtime does.
async fn serve(branch: &Arc<Branch>) -> Address {
    let server = Server::builder()
        .name(branch.name)
        .add_service(BankServer::new(Arc::clone(branch)))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind");
    let address = server.local_addr().clone();
    tokio::spawn(server.serve());
    address
}

async fn bank() -> BankClient<Channel> {
    let address = serve(&Branch::new("bank-1", None)).await;
    BankClient::new(Channel::builder(address).name("teller").connect_lazy())
}

#[tokio::test]
async fn a_handlers_status_reaches_the_caller_with_its_code_message_and_details() {
    let bank = bank().await;
    assert_eq!(bank.balance(7).await, Ok(100));
    let status = bank.balance(9).await.expect_err("no account 9");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no account 9");
    assert_eq!(status.details().as_ref(), 9u64.to_be_bytes());
    assert!(!status.is_unprocessed(), "the handler ran");
}

#[tokio::test]
async fn application_errors_keep_their_typed_path_beside_statuses() {
    let bank = bank().await;
    let status = bank.withdraw(10).await.expect_err("no user");
    assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "withdrawals need a user"));

    let signed_in = bank.with_context(Context::new().with_metadata("user", "ana"));
    assert_eq!(signed_in.withdraw(30).await, Ok(Ok(70)));
    assert_eq!(signed_in.withdraw(300).await, Ok(Err(Refusal::Insufficient { balance: 100 })));
}

/// Builds the client and waits until each endpoint's first connection attempt has its answer:
/// round robin's turns must not depend on how fast the probes run.
async fn probed(builder: zrpc::ClientBuilder) -> Client {
    let client = builder.build();
    client.probed().await;
    client
}

fn client_over(addresses: &[&Address]) -> zrpc::ClientBuilder {
    let instances: Vec<Instance> = addresses.iter().map(|a| Instance::new(a.to_string())).collect();
    Client::builder().name("teller").discover(Static::new(instances)).balance(RoundRobin::new())
}

#[tokio::test]
async fn a_handlers_unprocessed_unavailable_is_retried_elsewhere_and_a_processed_one_is_not() {
    let shedding = Branch::new("shedding", Some(Status::unavailable("shedding load").mark_unprocessed()));
    let failing = Branch::new("failing", Some(Status::unavailable("lost the disk mid-write")));
    let healthy = Branch::new("healthy", None);
    let (shedding_at, failing_at, healthy_at) = (serve(&shedding).await, serve(&failing).await, serve(&healthy).await);

    let client = client_over(&[&shedding_at, &healthy_at]).fail_mode(FailMode::Failover { retries: 1 }).no_breaker();
    let bank = BankClient::new(probed(client).await);
    for i in 0..4 {
        assert_eq!(bank.work().await.as_deref(), Ok("healthy"), "call {i}: the shed attempt went elsewhere");
    }
    assert_eq!(healthy.calls.load(Ordering::SeqCst), 4);
    // Round robin alternates between the two and each retry takes a turn: every first attempt
    // went to the shedding endpoint, every retry to the healthy one.
    assert_eq!(shedding.calls.load(Ordering::SeqCst), 4, "each call was shed once, then retried");

    // `work` is not idempotent: a status saying the handler may have run is not retried.
    let client = client_over(&[&failing_at, &healthy_at]).fail_mode(FailMode::Failover { retries: 1 }).no_breaker();
    let bank = BankClient::new(probed(client).await);
    let outcomes: Vec<_> =
        [bank.work().await, bank.work().await].into_iter().map(|r| r.map_err(|s| s.code())).collect();
    assert!(outcomes.contains(&Err(Code::Unavailable)), "{outcomes:?}");
    assert!(outcomes.contains(&Ok("healthy".to_owned())), "{outcomes:?}");
    assert_eq!(failing.calls.load(Ordering::SeqCst), 1, "tried once, never resent");
}

#[tokio::test]
async fn a_handlers_internal_statuses_open_the_breaker() {
    let broken = Branch::new("broken", Some(Status::internal("invariant broken")));
    let healthy = Branch::new("healthy", None);
    let (broken_at, healthy_at) = (serve(&broken).await, serve(&healthy).await);
    let breaker = BreakerConfig::default().min_calls(3).cooldown(Duration::from_secs(600));
    let bank = BankClient::new(probed(client_over(&[&broken_at, &healthy_at]).breaker(breaker)).await);

    let mut failures = 0;
    for _ in 0..20 {
        if failures == 3 {
            break;
        }
        failures += usize::from(bank.work().await.is_err());
    }
    assert_eq!((failures, broken.calls.load(Ordering::SeqCst)), (3, 3));
    for i in 0..10 {
        assert_eq!(bank.work().await.as_deref(), Ok("healthy"), "call {i}");
    }
    assert_eq!(broken.calls.load(Ordering::SeqCst), 3, "the open breaker keeps calls away");
}
