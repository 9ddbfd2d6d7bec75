//! A client over a cluster of three servers, which keeps working when one of them dies.
//!
//! It starts three servers on loopback, builds a `zrpc::Client` over them with static discovery,
//! `Failover` and the default `P2c` balancer, and makes calls in a loop. A third of the way
//! through it kills one server outright (its task is aborted: the listener and every connection
//! vanish, as in a crash). Calls that were headed there fail over to the other two, so every
//! call still succeeds; the summary shows how many calls each server answered.
//!
//! Run it with `cargo run --example cluster`. It exits 0 when every call succeeded.
//!
//! `--etcd URL` will discover the servers through etcd once that discovery source exists; for
//! now the flag is recognised and the example says so and exits with status 2.

use std::collections::BTreeMap;
use std::time::Duration;

use zrpc::discover::Static;
use zrpc::{Address, Client, FailMode, Server};

/// Says which server answered.
#[zrpc::service]
pub trait Node {
    /// The name of the server that handled the call. Idempotent: safe to resend when a server
    /// dies after receiving it.
    #[zrpc(idempotent)]
    async fn whoami(&self) -> String;
}

struct Named(String);

impl Node for Named {
    async fn whoami(&self) -> String {
        self.0.clone()
    }
}

const CALLS: usize = 300;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {}
        [flag, url] if flag == "--etcd" => {
            eprintln!("etcd discovery ({url}) is not available yet; run without --etcd for static discovery");
            std::process::exit(2);
        }
        _ => {
            eprintln!("usage: cluster [--etcd URL]");
            std::process::exit(2);
        }
    }

    // Three servers, each in its own task so that one can be killed.
    let mut addresses: Vec<Address> = Vec::new();
    let mut tasks = Vec::new();
    for i in 1..=3 {
        let name = format!("node-{i}");
        let server =
            Server::builder().name(&name).add_service(NodeServer::new(Named(name))).bind("tcp://127.0.0.1:0").await?;
        addresses.push(server.local_addr().clone());
        tasks.push(tokio::spawn(server.serve()));
    }
    println!("servers: {}", addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));

    let client = Client::builder()
        .name("cluster-example")
        .discover(Static::new(addresses))
        .balance(zrpc::balance::P2c::default())
        .fail_mode(FailMode::Failover { retries: 2 })
        .timeout(Duration::from_secs(5))
        .build();
    let node = NodeClient::new(client);

    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for i in 0..CALLS {
        if i == CALLS / 3 {
            tasks[2].abort();
            println!("after {i} calls: killed node-3");
        }
        match node.whoami().await {
            Ok(name) => *answered.entry(name).or_default() += 1,
            Err(status) => {
                eprintln!("call {i} failed: {status}");
                failed += 1;
            }
        }
    }

    println!("calls: {} ok, {failed} failed", CALLS - failed);
    for (name, calls) in &answered {
        println!("  {name}: {calls}");
    }
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
