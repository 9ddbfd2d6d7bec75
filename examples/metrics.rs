//! Metrics on a Prometheus endpoint: zrpc records its calls through the `metrics` facade, and
//! `metrics-exporter-prometheus` renders them for a scraper at `/metrics`.
//!
//! A server and a client in one process make calls (some fail with a status), and the program
//! serves what was recorded over HTTP until it has been scraped, or for good with `--serve`.
//!
//! Run it with `cargo run --example metrics --features metrics`, then
//! `curl http://127.0.0.1:<port>/metrics` (the port is printed), or with `-- --serve` to keep it
//! up for a Prometheus server. `tests/metrics.rs` runs it and checks the counters move.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use zrpc::{Channel, Server, Status};

/// A checkout that refuses empty carts.
#[zrpc::service]
pub trait Checkout {
    /// The total of `prices`, or `InvalidArgument` for an empty cart.
    async fn total(&self, prices: Vec<u64>) -> Result<u64, Status>;
}

struct Till;

impl Checkout for Till {
    async fn total(&self, prices: Vec<u64>) -> Result<u64, Status> {
        if prices.is_empty() {
            return Err(Status::invalid_argument("the cart is empty"));
        }
        Ok(prices.iter().sum())
    }
}

/// Answers every HTTP request on `listener` with the rendered metrics: the whole of a
/// Prometheus endpoint, as a scraper sees it.
pub async fn serve_metrics(listener: TcpListener, handle: PrometheusHandle) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else { continue };
        let handle = handle.clone();
        tokio::spawn(async move {
            // One request per connection; its head fits in a read for any scraper.
            let mut head = [0u8; 4096];
            if socket.read(&mut head).await.is_err() {
                return;
            }
            let body = handle.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: \
                 close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

/// Serves `Checkout` and makes `calls` calls to it, one in ten with an empty cart: the
/// traffic the metrics describe. Returns the server's address and the client, whose connection
/// stays open (and counted in `zrpc_connections`) while the caller holds it.
pub async fn make_traffic(calls: u64) -> Result<(zrpc::Address, CheckoutClient<Channel>), Box<dyn std::error::Error>> {
    let server =
        Server::builder().name("checkout-1").add_service(CheckoutServer::new(Till)).bind("tcp://127.0.0.1:0").await?;
    let address = server.local_addr().clone();
    tokio::spawn(server.serve());
    let checkout = CheckoutClient::new(Channel::builder(address.clone()).name("shop").connect().await?);
    for i in 0..calls {
        let cart = if i % 10 == 0 { vec![] } else { vec![i, 2 * i] };
        let _ = checkout.total(cart).await;
    }
    Ok((address, checkout))
}

/// Installs the Prometheus recorder; zrpc's metrics go to it from now on.
pub fn install() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    Ok(PrometheusBuilder::new().install_recorder()?)
}

#[allow(dead_code, reason = "tests/metrics.rs includes this file for the functions above")]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve_for_good = std::env::args().any(|arg| arg == "--serve");
    let handle = install()?;
    let (address, _checkout) = make_traffic(100).await?;
    println!("checkout-1 on {address} answered 100 calls (10 refused with InvalidArgument)");

    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    println!("metrics at http://{}/metrics", listener.local_addr()?);
    if serve_for_good {
        serve_metrics(listener, handle).await;
        return Ok(());
    }
    // Without `--serve`: show what a scraper gets, and exit.
    let port = listener.local_addr()?.port();
    tokio::spawn(serve_metrics(listener, handle));
    let scraped = scrape(port).await?;
    for line in scraped.lines().filter(|line| line.starts_with("zrpc_server_calls_total")) {
        println!("{line}");
    }
    Ok(())
}

/// `GET /metrics` on loopback `port`: the body.
pub async fn scrape(port: u16) -> Result<String, Box<dyn std::error::Error>> {
    let mut socket = tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    socket.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n").await?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no end of the response's head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("the endpoint answered {head:?}").into());
    }
    Ok(body.to_owned())
}
