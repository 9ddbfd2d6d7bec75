//! A client over a cluster of three servers, which keeps working when one of them dies.
//!
//! It starts three servers on loopback, builds a `zrpc::Client` over them with `Failover` and
//! the default `P2c` balancer, and makes calls in a loop. A third of the way through it kills
//! one server outright (its task is aborted: the listener and every connection vanish, as in a
//! crash). Calls that were headed there fail over to the other two, so every call still
//! succeeds; the summary shows how many calls each server answered. The two survivors then shut
//! down gracefully.
//!
//! Run it with `cargo run --example cluster`. It exits 0 when every call succeeded.
//!
//! Discovery is static by default: the client is given the three addresses. With an etcd at
//! hand, `cargo run --example cluster --features etcd -- --etcd http://127.0.0.1:2379` makes it
//! real: each server registers itself in etcd under a prefix of this run
//! (`/zrpc-examples/cluster-<pid>/<address>`, with a 5 s lease), and the client discovers them
//! by watching that prefix. After the calls, the client is shown dropping the killed server
//! once its lease expires, and the survivors deregister as they shut down.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::oneshot;
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
    let etcd: Option<String> = match args.as_slice() {
        [] => None,
        [flag, url] if flag == "--etcd" => Some(url.clone()),
        _ => {
            eprintln!("usage: cluster [--etcd URL]");
            std::process::exit(2);
        }
    };
    #[cfg(not(feature = "etcd"))]
    if etcd.is_some() {
        eprintln!("built without etcd support: run `cargo run --example cluster --features etcd -- --etcd URL`");
        std::process::exit(2);
    }
    #[cfg(feature = "etcd")]
    let prefix = format!("/zrpc-examples/cluster-{}", std::process::id());

    // Three servers, each in its own task so that one can be killed. With etcd, each is
    // registered by the time `bind` returns.
    let mut addresses: Vec<Address> = Vec::new();
    let mut servers = Vec::new();
    for i in 1..=3 {
        let name = format!("node-{i}");
        let builder = Server::builder().name(&name).add_service(NodeServer::new(Named(name)));
        #[cfg(feature = "etcd")]
        let builder = match &etcd {
            Some(url) => {
                let registry = zrpc::etcd::EtcdRegistry::connect([url], &prefix).await?;
                builder.register(registry.ttl(Duration::from_secs(5)))
            }
            None => builder,
        };
        let server = builder.bind("tcp://127.0.0.1:0").await?;
        addresses.push(server.local_addr().clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve_with_shutdown(async move {
            let _ = stopped.await;
        }));
        servers.push((stop, task));
    }
    println!("servers: {}", addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));

    let builder = Client::builder()
        .name("cluster-example")
        .balance(zrpc::balance::P2c::default())
        .fail_mode(FailMode::Failover { retries: 2 })
        .timeout(Duration::from_secs(5));
    let builder = match &etcd {
        #[cfg(feature = "etcd")]
        Some(url) => {
            println!("discovering them in etcd at {url} under {prefix}/");
            builder.discover(zrpc::etcd::Etcd::watch([url], &prefix).await?)
        }
        _ => builder.discover(Static::new(addresses)),
    };
    let client = builder.build();
    let node = NodeClient::new(client.clone());

    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for i in 0..CALLS {
        if i == CALLS / 3 {
            servers[2].1.abort();
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

    if etcd.is_some() {
        // node-3 never deregistered: etcd deletes its key when its lease runs out.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while client.endpoints().len() > 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("endpoints after node-3's lease expired: {}", client.endpoints().join(", "));
    }
    for (stop, task) in servers.into_iter().take(2) {
        let _ = stop.send(());
        task.await??;
    }
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
