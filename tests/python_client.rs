//! A client in another language: `tests/python/zrpc_client.py`, standard-library Python written
//! from `docs/PROTOCOL.md` alone, calls a real server over TCP in JSON and checks the answers.
//!
//! It needs `python3` on `PATH`. Without it the test says it skipped, except under `CI=true`,
//! where it fails: `.ci/run` installs python3.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tower::util::MapRequestLayer;
use zrpc::{Request, Server};

#[path = "support/greeter.rs"]
mod greeter;
mod support;

use greeter::{GreeterServer, Hello};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/zrpc_client.py");

/// Whether `python3` runs. When it does not, says why, and fails the test under `CI=true`.
fn python3_found() -> bool {
    match Command::new("python3").arg("--version").output() {
        Ok(output) if output.status.success() => true,
        found => {
            let why = match found {
                Ok(output) => format!("`python3 --version` failed: {}", String::from_utf8_lossy(&output.stderr)),
                Err(e) => format!("python3 could not be run: {e}"),
            };
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}; CI=true, so this test must run");
            eprintln!("skipped: {why}; install python3 to run the Python client against a zrpc server");
            false
        }
    }
}

#[tokio::test]
async fn a_python_client_written_from_protocol_md_calls_a_server_in_json() {
    if !python3_found() {
        return;
    }
    // Counts every request the server receives, to check they came from the script.
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    let server = Server::builder()
        .name("python-interop")
        .layer(MapRequestLayer::new(move |request: Request| {
            counted.fetch_add(1, Ordering::SeqCst);
            request
        }))
        .add_service(GreeterServer::new(Hello));
    let (channel, _stop) = support::serve_on_loopback(server).await;
    let address = channel.address().to_string();

    let output = tokio::task::spawn_blocking(move || Command::new("python3").arg(CLIENT).arg(address).output())
        .await
        .expect("the blocking task runs")
        .expect("python3 starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = format!("--- stdout ---\n{stdout}--- stderr ---\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{CLIENT} exited with {}\n{report}", output.status);

    // The last line: `all N checks passed, M requests sent`.
    let last = stdout.lines().last().unwrap_or_default();
    let sent = last
        .strip_prefix("all ")
        .and_then(|rest| rest.split_once(" checks passed, "))
        .and_then(|(checks, rest)| Some((checks.parse::<usize>().ok()?, rest.strip_suffix(" requests sent")?)))
        .and_then(|(checks, sent)| Some((checks, sent.parse::<usize>().ok()?)));
    let Some((checks, sent)) = sent else { panic!("no summary line at the end\n{report}") };
    assert_eq!(checks, stdout.lines().filter(|line| line.starts_with("ok ")).count(), "{report}");
    assert!(checks >= 15, "only {checks} checks ran\n{report}");
    assert_eq!(requests.load(Ordering::SeqCst), sent, "requests this server received\n{report}");
}
