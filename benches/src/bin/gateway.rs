//! The HTTP/JSON gateway's cost: the same echo call made directly over zrpc and through the
//! gateway, for the README's Gateway numbers (issue 14's targets: at most 2× a direct call's
//! latency at 1 caller, at least 50k requests/s at 100 callers).
//!
//! `serve` runs the rpcx benchmark echo server and a gateway in front of it in one process and
//! prints both addresses, and a third: the HTTP floor, hyper's HTTP/1.1 as the gateway serves it
//! (same builder, `TCP_NODELAY`) answering each POST with its own body and no zrpc call, which
//! is what HTTP and `wrk` cost on their own; `body` prints the JSON body of an echo call, for `wrk`'s Lua script;
//! `direct` loads the server with typed zrpc calls (postcard, one connection, as a user's
//! generated client makes them) and prints throughput and latency percentiles in `wrk`'s units;
//! `direct --dynamic` makes the gateway's own calls (by name in JSON through a `DynamicClient`
//! over a `Client`) without HTTP, to tell what HTTP costs from what JSON and the `Client` cost.
//! The gateway side is measured with `wrk`, from outside:
//!
//! ```text
//! cargo build --release -p zrpc-benches --features gateway --bin gateway
//! target/release/gateway serve            # prints: zrpc tcp://127.0.0.1:A  http 127.0.0.1:B
//! target/release/gateway body > /tmp/echo.json
//! target/release/gateway direct tcp://127.0.0.1:A --callers 1 --seconds 10
//! wrk -t1 -c1 -d10s --latency -s benches/gateway.lua http://127.0.0.1:B/Bench/echo
//! wrk -t2 -c100 -d10s --latency -s benches/gateway.lua http://127.0.0.1:C/floor
//! ```
//!
//! `benches/gateway.lua` posts `/tmp/echo.json` (or `$BODY`). `serve` runs until its standard
//! input closes. `benches/gateway.sh` runs all of it, every path in turn, for a number of rounds.

use std::time::Duration;

use zrpc::dynamic::{DynamicClient, JsonAnswer, Target};
use zrpc::gateway::Gateway;
use zrpc::{Channel, Client, Context, Server};
use zrpc_benches::BoxError;
use zrpc_benches::framework::Caller;
use zrpc_benches::load::{Plan, run};

// The same echo service, message and implementation as `compare`'s zrpc row.
use zrpc_benches::framework::zrpc::owned::{BenchClient, BenchServer, Echo, Message};

/// A direct caller: the generated client over one shared channel.
struct Direct {
    client: BenchClient<Channel>,
    message: Message,
}

/// A caller by name in JSON, as the gateway calls: [`DynamicClient`] over a [`Client`] of the
/// same target, without HTTP.
struct Dynamic {
    client: DynamicClient<Client>,
    body: bytes::Bytes,
}

impl Caller for Dynamic {
    async fn call(&mut self) -> Result<(), BoxError> {
        match self.client.call("Bench.echo", self.body.clone(), Context::new()).await? {
            JsonAnswer::Ok(json) if json.len() + 6 == self.body.len() => Ok(()),
            other => Err(format!("not the echo: {other:?}").into()),
        }
    }
}

impl Caller for Direct {
    async fn call(&mut self) -> Result<(), BoxError> {
        let echoed = self.client.echo(self.message.clone()).await?;
        if echoed != self.message {
            return Err("the echo differs from the message".into());
        }
        Ok(())
    }
}

const USAGE: &str =
    "usage: gateway serve | gateway body | gateway direct ZRPC_ADDRESS [--callers N] [--seconds S] [--dynamic]";

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.first().map(String::as_str) {
        Some("serve") => runtime.block_on(serve()),
        Some("body") => {
            println!("{}", serde_json::json!({ "m": Message::filled() }));
            Ok(())
        }
        Some("direct") => {
            let address = args.get(1).ok_or(USAGE)?.clone();
            let option = |name: &str, default: u64| -> Result<u64, BoxError> {
                match args.iter().position(|a| a == name) {
                    Some(at) => Ok(args.get(at + 1).ok_or(USAGE)?.parse()?),
                    None => Ok(default),
                }
            };
            let (callers, seconds) = (option("--callers", 1)?, option("--seconds", 10)?);
            let dynamic = args.iter().any(|a| a == "--dynamic");
            runtime.block_on(direct(address, usize::try_from(callers)?, seconds, dynamic))
        }
        _ => Err(USAGE.into()),
    }
}

async fn serve() -> Result<(), BoxError> {
    let server = Server::builder().name("bench").add_service(BenchServer::new(Echo)).bind("tcp://127.0.0.1:0").await?;
    let zrpc_address = server.local_addr().to_string();
    tokio::spawn(server.serve());
    let client = Target::parse(&zrpc_address)?.client(Client::builder().name("gateway")).await?;
    let gateway = Gateway::builder(client).bind("tcp://127.0.0.1:0").await?;
    let floor = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("zrpc {zrpc_address}  http {}  floor {}", gateway.local_addr(), floor.local_addr()?);
    tokio::spawn(http_floor(floor));
    // Until standard input closes: the script that started this process ends it so.
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed.send(());
    });
    gateway
        .serve_with_shutdown(async {
            let _ = stdin_closed.await;
        })
        .await?;
    Ok(())
}

async fn direct(address: String, count: usize, seconds: u64, dynamic: bool) -> Result<(), BoxError> {
    let plan = Plan { warmup: Duration::from_secs(2), duration: Duration::from_secs(seconds) };
    let (what, measured) = if dynamic {
        let client = Target::parse(&address)?.client(Client::builder().name("dynamic")).await?;
        let client = DynamicClient::new(client);
        let body = bytes::Bytes::from(serde_json::json!({ "m": Message::filled() }).to_string());
        let callers = (0..count).map(|_| Dynamic { client: client.clone(), body: body.clone() }).collect();
        ("DynamicClient (JSON, over a Client)", run::<Dynamic, ()>(callers, plan, async || ()).await?)
    } else {
        let channel = Channel::builder(address.parse::<zrpc::Address>()?).name("direct").connect().await?;
        let client = BenchClient::new(channel);
        let callers = (0..count).map(|_| Direct { client: client.clone(), message: Message::filled() }).collect();
        ("direct zrpc (postcard, over a Channel)", run::<Direct, ()>(callers, plan, async || ()).await?)
    };
    let us = |q: f64| measured.latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{what}, {count} callers: {:.0} calls/s, latency mean {:.1}us p50 {:.1}us p90 {:.1}us p99 {:.1}us, errors {}",
        measured.throughput(),
        measured.latency.mean() / 1000.0,
        us(0.5),
        us(0.9),
        us(0.99),
        measured.errors,
    );
    if let Some(error) = measured.first_error {
        println!("first error: {error}");
    }
    Ok(())
}

/// The HTTP floor: every POST answered with its own body, over the gateway's kind of connection.
async fn http_floor(listener: tokio::net::TcpListener) {
    use http_body_util::{BodyExt, Full};
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let _ = tcp.set_nodelay(true);
        let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
            let body = request.into_body().collect().await?.to_bytes();
            let mut response = hyper::Response::new(Full::new(body));
            response.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
            Ok::<_, hyper::Error>(response)
        });
        let connection =
            hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
        tokio::spawn(connection);
    }
}
