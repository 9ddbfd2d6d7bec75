//! Three named nodes that call each other both ways, the way the Go framework zrpc descends
//! from works: every endpoint is a peer with a name, serves the functions it registered on
//! every connection, and calls any connected peer by name, whichever side dialed.
//!
//! alice listens; bob listens and dials alice; carol dials both. Each greets the other two by
//! name, asks one to call it back on the same connection, and calls a function only carol
//! registered: carol answers it, the others refuse it with `NotFound`.
//!
//! Run it with `cargo run --example peers`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use zrpc::{Code, Context, Node};

/// What every node serves.
#[zrpc::service]
pub trait Greeter {
    /// Answers a greeting, naming who sent it.
    async fn hello(&self, ctx: &Context, greeting: String) -> String;
    /// Greets the caller back, on the connection the call came over, and answers what it said.
    async fn call_me_back(&self, ctx: &Context) -> String;
}

/// What only carol serves.
#[zrpc::service]
pub trait Counter {
    /// The next number.
    async fn next(&self) -> u64;
}

struct Greets {
    me: &'static str,
}

impl Greeter for Greets {
    async fn hello(&self, ctx: &Context, greeting: String) -> String {
        format!("{} heard {greeting:?} from {}", self.me, ctx.caller())
    }

    async fn call_me_back(&self, ctx: &Context) -> String {
        // The caller is a peer too: call it through the connection its call came over.
        let caller = GreeterClient::new(ctx.peer()).with_context(ctx.child());
        match caller.hello(format!("{} calling back", self.me)).await {
            Ok(answer) => answer,
            Err(status) => format!("could not call back: {status}"),
        }
    }
}

#[derive(Default)]
struct Counts(AtomicU64);

impl Counter for Arc<Counts> {
    async fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let alice = Node::builder("alice")
        .add_service(GreeterServer::new(Greets { me: "alice" }))
        .listen("tcp://127.0.0.1:0")
        .start()
        .await?;
    let alice_at = alice.local_addr().expect("alice listens").clone();
    let bob = Node::builder("bob")
        .add_service(GreeterServer::new(Greets { me: "bob" }))
        .listen("tcp://127.0.0.1:0")
        .connect(alice_at.clone())
        .start()
        .await?;
    let bob_at = bob.local_addr().expect("bob listens").clone();
    let carol = Node::builder("carol")
        .add_service(GreeterServer::new(Greets { me: "carol" }))
        .add_service(CounterServer::new(Arc::new(Counts::default())))
        .connect(alice_at)
        .connect(bob_at)
        .start()
        .await?;

    let nodes = [&alice, &bob, &carol];
    // Dialing goes on in the background: wait until everybody sees everybody.
    for node in nodes {
        for other in nodes.iter().filter(|other| other.name() != node.name()) {
            node.peers().wait_for(other.name()).await;
        }
        println!("{} is connected to {:?}", node.name(), node.peers().names());
    }

    // Everybody greets everybody by name, over whichever connection joins them, either way.
    for node in nodes {
        for other in nodes.iter().filter(|other| other.name() != node.name()) {
            let greeter = GreeterClient::new(node.peer(other.name()));
            let answer = greeter.hello(format!("hi from {}", node.name())).await?;
            println!("{} -> {}: {answer}", node.name(), other.name());
        }
    }

    // Calls back, three deep in all: alice calls bob, whose handler calls alice back on the
    // same connection, whose handler answers it.
    let answer = GreeterClient::new(alice.peer("bob")).call_me_back().await?;
    println!("alice -> bob -> alice: {answer}");
    assert_eq!(answer, "alice heard \"bob calling back\" from bob");

    // A function only carol registered: carol answers, bob refuses it with NotFound.
    let from_carol = CounterClient::new(alice.peer("carol")).next().await?;
    println!("alice -> carol: Counter.next = {from_carol}");
    let refused = CounterClient::new(alice.peer("bob")).next().await.expect_err("bob has no Counter");
    assert_eq!(refused.code(), Code::NotFound);
    println!("alice -> bob: Counter.next refused: {refused}");

    // A peer that is not connected: Unavailable, never sent.
    let nobody = GreeterClient::new(alice.peer("dave")).hello("anyone?".into()).await.expect_err("no dave");
    assert_eq!(nobody.code(), Code::Unavailable);
    println!("alice -> dave: {nobody}");

    carol.shutdown().await;
    bob.shutdown().await;
    alice.shutdown().await;
    Ok(())
}
