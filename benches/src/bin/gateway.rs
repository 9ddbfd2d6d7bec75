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
//!
//! `slowloris` is the gateway's hostile client: it opens `--conns` connections (256 connecting
//! at a time, so that the listen backlog does not overflow), each sends `--head-bytes` of a
//! request head that never ends and then only reads, for
//! `--seconds`; it prints how many the gateway closed and when, and with `--pid` the serving
//! process's memory (`VmRSS` before and at the end, `VmHWM`). Meanwhile a well-behaved client
//! makes an echo call on a fresh connection every 20 ms (`Connection: close`, 5 s to answer) and
//! it prints how many were answered, how fast, and how the others failed: what the attack costs
//! everyone else. `serve --max-connections N` sets
//! the gateway's bound (a large one stands for no bound, as before 2026-12-01):
//!
//! ```text
//! target/release/gateway serve --max-connections 1000000 &  # prints the addresses
//! target/release/gateway slowloris 127.0.0.1:B --conns 8192 --head-bytes 61440 --seconds 10 --pid PID
//! ```
//!
//! `benches/gateway-slowloris.sh` runs both, and samples the listener's accept queue meanwhile.

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

const USAGE: &str = "usage: gateway serve [--max-connections N] | gateway body | gateway direct ZRPC_ADDRESS \
                     [--callers N] [--seconds S] [--dynamic] | gateway slowloris HTTP_ADDRESS [--conns N] \
                     [--head-bytes B] [--seconds S] [--pid PID]";

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let option = |name: &str, default: u64| -> Result<u64, BoxError> {
        match args.iter().position(|a| a == name) {
            Some(at) => Ok(args.get(at + 1).ok_or(USAGE)?.parse()?),
            None => Ok(default),
        }
    };
    match args.first().map(String::as_str) {
        Some("serve") => {
            let max_connections = option("--max-connections", zrpc::gateway::DEFAULT_MAX_CONNECTIONS as u64)?;
            runtime.block_on(serve(usize::try_from(max_connections)?))
        }
        Some("body") => {
            println!("{}", serde_json::json!({ "m": Message::filled() }));
            Ok(())
        }
        Some("slowloris") => {
            let address: std::net::SocketAddr = args.get(1).ok_or(USAGE)?.parse()?;
            let slowloris = Slowloris {
                conns: usize::try_from(option("--conns", 8192)?)?,
                head_bytes: usize::try_from(option("--head-bytes", 60 << 10)?)?,
                duration: Duration::from_secs(option("--seconds", 10)?),
                pid: args.iter().any(|a| a == "--pid").then(|| option("--pid", 0)).transpose()?,
            };
            runtime.block_on(slowloris.run(address))
        }
        Some("direct") => {
            let address = args.get(1).ok_or(USAGE)?.clone();
            let (callers, seconds) = (option("--callers", 1)?, option("--seconds", 10)?);
            let dynamic = args.iter().any(|a| a == "--dynamic");
            runtime.block_on(direct(address, usize::try_from(callers)?, seconds, dynamic))
        }
        _ => Err(USAGE.into()),
    }
}

async fn serve(max_connections: usize) -> Result<(), BoxError> {
    let server = Server::builder().name("bench").add_service(BenchServer::new(Echo)).bind("tcp://127.0.0.1:0").await?;
    let zrpc_address = server.local_addr().to_string();
    tokio::spawn(server.serve());
    let client = Target::parse(&zrpc_address)?.client(Client::builder().name("gateway")).await?;
    let gateway = Gateway::builder(client).max_connections(max_connections).bind("tcp://127.0.0.1:0").await?;
    let handle = gateway.handle();
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
    eprintln!("gateway: {:?}", handle.stats());
    Ok(())
}

/// How a connection of `gateway slowloris` ended.
enum Ended {
    /// Closed by the gateway, this long after the attack began.
    Closed(Duration),
    /// Still open at the attack's end.
    Open(tokio::net::TcpStream),
    /// Failed to connect or write, or reset.
    Reset(std::io::Error),
}

/// The hostile HTTP client of `gateway slowloris`; see the module docs.
struct Slowloris {
    conns: usize,
    head_bytes: usize,
    duration: Duration,
    /// The serving process, whose memory is read from `/proc`.
    pid: Option<u64>,
}

impl Slowloris {
    async fn run(self, address: std::net::SocketAddr) -> Result<(), BoxError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let memory = |pid: Option<u64>| {
            let pid = pid.and_then(|pid| u32::try_from(pid).ok())?;
            Some((zrpc_benches::proc::rss_kib(pid)? / 1024, zrpc_benches::proc::peak_rss_kib(pid)? / 1024))
        };
        let before = memory(self.pid);
        let mut head = format!("POST /Bench/echo HTTP/1.1\r\nHost: {address}\r\nzrpc-meta-pad: ").into_bytes();
        head.resize(self.head_bytes.max(head.len()), b'x');
        let head = bytes::Bytes::from(head);
        let started = tokio::time::Instant::now();
        let end = started + self.duration;
        // A few hundred connecting at once: more would overflow the listen backlog, and the
        // kernel, not the gateway, would reset them.
        let connecting = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..self.conns {
            let (head, connecting) = (head.clone(), connecting.clone());
            tasks.spawn(async move {
                let permit = connecting.acquire_owned().await;
                let mut tcp = tokio::net::TcpStream::connect(address).await?;
                tcp.write_all(&head).await?;
                drop(permit);
                // Until the gateway closes it (what it answers, if anything, is drained), or the end.
                let mut sink = [0u8; 1024];
                loop {
                    match tokio::time::timeout_at(end, tcp.read(&mut sink)).await {
                        Err(_) => return Ok::<_, std::io::Error>(Ended::Open(tcp)),
                        Ok(Ok(0)) => return Ok(Ended::Closed(started.elapsed())),
                        Ok(Err(e)) => return Ok(Ended::Reset(e)),
                        Ok(Ok(_)) => {}
                    }
                }
            });
        }
        let probe = tokio::spawn(probe(address, end));
        let (mut closed, mut open, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(Ended::Closed(after))) => closed.push(after),
                Ok(Ok(Ended::Open(tcp))) => open.push(tcp),
                Ok(Ok(Ended::Reset(e)) | Err(e)) => failed.push(e.to_string()),
                Err(e) => failed.push(e.to_string()),
            }
        }
        // Read with every connection still open: what they make the server hold.
        let after = memory(self.pid);
        closed.sort_unstable();
        let at = |q: f64| closed.get(((closed.len() as f64 - 1.0) * q) as usize).map(Duration::as_secs_f64);
        println!(
            "slowloris: {} connections, {} bytes of head each, {:?}: {} closed by the gateway (after {:.2?} s min, \
             {:.2?} median, {:.2?} max), {} open at the end, {} failed or reset{}",
            self.conns,
            self.head_bytes,
            self.duration,
            closed.len(),
            at(0.0),
            at(0.5),
            at(1.0),
            open.len(),
            failed.len(),
            failed.first().map(|e| format!(" (first: {e})")).unwrap_or_default(),
        );
        if let (Some((start_mib, _)), Some((end_mib, peak_mib))) = (before, after) {
            println!("serving process: VmRSS {start_mib} MiB before, {end_mib} MiB at the end, VmHWM {peak_mib} MiB");
        }
        println!("{}", probe.await?);
        Ok(())
    }
}

/// What the well-behaved client of `gateway slowloris` saw.
#[derive(Default)]
struct Probed {
    /// How long each answered call took, connecting included.
    answered: Vec<Duration>,
    /// Why each other call failed.
    failed: Vec<String>,
}

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut answered = self.answered.clone();
        answered.sort_unstable();
        let ms = |q: f64| {
            answered.get(((answered.len() as f64 - 1.0) * q) as usize).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
        };
        write!(
            f,
            "well-behaved client, a fresh connection every 20 ms: {} answered (p50 {:.2} ms, p99 {:.2} ms, max {:.2} \
             ms), {} failed{}",
            answered.len(),
            ms(0.5),
            ms(0.99),
            ms(1.0),
            self.failed.len(),
            self.failed.first().map(|e| format!(" (first: {e})")).unwrap_or_default(),
        )
    }
}

/// Makes an echo call on a fresh connection every 20 ms until `end`, each given 5 s.
async fn probe(address: std::net::SocketAddr, end: tokio::time::Instant) -> Probed {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = serde_json::json!({ "m": Message::filled() }).to_string();
    let request = format!(
        "POST /Bench/echo HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let call = async || -> Result<(), String> {
        let mut tcp = tokio::net::TcpStream::connect(address).await.map_err(|e| format!("connect: {e}"))?;
        tcp.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.map_err(|e| format!("read: {e}"))?;
        match answer.starts_with(b"HTTP/1.1 200") {
            true => Ok(()),
            false if answer.is_empty() => Err("closed without an answer".to_owned()),
            false => Err(String::from_utf8_lossy(&answer[..answer.len().min(40)]).into_owned()),
        }
    };
    let mut probed = Probed::default();
    let mut every = tokio::time::interval(Duration::from_millis(20));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while tokio::time::Instant::now() < end {
        every.tick().await;
        let began = tokio::time::Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), call()).await {
            Ok(Ok(())) => probed.answered.push(began.elapsed()),
            Ok(Err(e)) => probed.failed.push(e),
            Err(_) => probed.failed.push("no answer in 5 s".to_owned()),
        }
    }
    probed
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
