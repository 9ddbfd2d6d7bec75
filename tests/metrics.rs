//! The Prometheus example, scraped over HTTP: zrpc's counters, histograms and gauges reach the
//! `metrics` recorder, and move with the calls.

#[path = "../examples/metrics.rs"]
#[allow(dead_code, unreachable_pub, reason = "the example's main is not this test's")]
mod example;

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// The value of the sample of `metric` whose labels include every one of `labels`
/// (`key="value"`), summed over the samples that match (several connections, several codes).
fn sample(scraped: &str, metric: &str, labels: &[&str]) -> f64 {
    scraped
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, rest) = series.split_once('{').unwrap_or((series, ""));
            (name == metric && labels.iter().all(|label| rest.contains(label))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_endpoint_shows_calls_errors_latency_and_connections_and_they_move() {
    let handle = example::install().expect("the only recorder of this test binary");
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind");
    let port = listener.local_addr().expect("bound").port();
    tokio::spawn(example::serve_metrics(listener, handle));

    // The client is held while scraping: its connection closes when it drops.
    let (first, _client) = example::make_traffic(20).await.expect("traffic");
    let first = first.to_string();
    let scraped = example::scrape(port).await.expect("scraped");
    let server = |code: &str| ["service=\"Checkout\"", "method=\"total\"", code].map(str::to_owned);
    let ok = sample(&scraped, "zrpc_server_calls_total", &server("code=\"Ok\"").each_ref().map(String::as_str));
    let refused =
        sample(&scraped, "zrpc_server_calls_total", &server("code=\"InvalidArgument\"").each_ref().map(String::as_str));
    assert_eq!((ok, refused), (18.0, 2.0), "one call in ten had an empty cart:\n{scraped}");
    let endpoint = format!("endpoint=\"{first}\"");
    let client_calls = sample(&scraped, "zrpc_client_calls_total", &["method=\"total\"", &endpoint]);
    assert_eq!(client_calls, 20.0, "the client counts its calls per endpoint:\n{scraped}");
    let latencies = sample(&scraped, "zrpc_server_call_duration_seconds_count", &["method=\"total\""]);
    assert_eq!(latencies, 20.0, "a latency per call:\n{scraped}");
    assert_eq!(sample(&scraped, "zrpc_server_calls_in_flight", &["method=\"total\""]), 0.0, "none left running");
    assert!(sample(&scraped, "zrpc_connections_opened_total", &["side=\"server\""]) >= 1.0, "{scraped}");
    assert!(sample(&scraped, "zrpc_connections", &["side=\"client\""]) >= 1.0, "the channel is open:\n{scraped}");

    // More calls, to a second server: the counters move, the new endpoint gets its own series.
    let (second, _second_client) = example::make_traffic(10).await.expect("traffic");
    let second = second.to_string();
    let scraped = example::scrape(port).await.expect("scraped");
    let ok = sample(&scraped, "zrpc_server_calls_total", &server("code=\"Ok\"").each_ref().map(String::as_str));
    assert_eq!(ok, 27.0, "18 + 9:\n{scraped}");
    let endpoint = format!("endpoint=\"{second}\"");
    assert_eq!(sample(&scraped, "zrpc_client_calls_total", &["method=\"total\"", &endpoint]), 10.0, "{scraped}");

    // A server that holds one connection in its handshake: the second silent one closes the first.
    let (handle, _silent) = two_connections(zrpc::Server::builder().max_handshakes(1)).await;
    let evicted = handle.wait_for_connections(|_| handle.handshakes_evicted() == 1);
    tokio::time::timeout(std::time::Duration::from_secs(60), evicted).await.expect("the second makes room");
    let scraped = example::scrape(port).await.expect("scraped");
    assert_eq!(sample(&scraped, "zrpc_server_handshakes_evicted_total", &[]), 1.0, "{scraped}");

    // A server with one place: the second connection is refused.
    let (handle, _open) = two_connections(zrpc::Server::builder().max_connections(1)).await;
    let refused = handle.wait_for_connections(|_| handle.connections_refused() == 1);
    tokio::time::timeout(std::time::Duration::from_secs(60), refused).await.expect("the second is refused");
    let scraped = example::scrape(port).await.expect("scraped");
    assert_eq!(sample(&scraped, "zrpc_server_connections_refused_total", &[]), 1.0, "{scraped}");
}

/// A server built by `builder`, serving on a port of its own, and two TCP connections to it
/// that say nothing.
async fn two_connections(builder: zrpc::ServerBuilder) -> (zrpc::ServerHandle, [tokio::net::TcpStream; 2]) {
    let server = builder.bind("tcp://127.0.0.1:0").await.expect("bind");
    let (address, handle) = (server.local_addr().to_string(), server.handle());
    tokio::spawn(server.serve());
    let address = address.trim_start_matches("tcp://");
    let connect = || async { tokio::net::TcpStream::connect(address).await.expect("connects") };
    (handle, [connect().await, connect().await])
}
