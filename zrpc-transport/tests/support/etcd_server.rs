//! A real etcd of a test's own: [`EtcdServer`] runs `etcd` from PATH on free loopback ports with
//! a temp data dir, and kills it when dropped; it can be killed and started again on the same
//! ports and data. Without `etcd` on PATH, [`EtcdServer::start`] returns `None` (the test skips,
//! saying so) unless `CI` is `true`, where a missing etcd fails the test.
//!
//! Shared by zrpc-transport's etcd suite and the facade's `zrpc` command suite (`tests/cli.rs`
//! includes this file by `#[path]`): it needs only `super::within`, `tempfile`, and
//! `zrpc_transport` with its `etcd` feature.

#![cfg(feature = "etcd")]

use std::collections::BTreeSet;
use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use zrpc_transport::etcd::etcd_client;

use super::within;

/// A running etcd of the test's own.
#[derive(Debug)]
pub struct EtcdServer {
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// How many times it was started, to name log files.
    starts: usize,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers; `None` (after printing why) when etcd is not
    /// installed and this is not CI.
    pub async fn start(test: &str) -> Option<EtcdServer> {
        if !installed() {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("`etcd` is not on PATH; CI must install it (Debian package etcd-server)");
            }
            eprintln!("skipping {test}: `etcd` is not on PATH (install the Debian package etcd-server to run it)");
            return None;
        }
        let mut etcd = EtcdServer {
            client_port: free_port(),
            peer_port: free_port(),
            dir: tempfile::tempdir().expect("a temp dir"),
            child: None,
            starts: 0,
        };
        etcd.start_again().await;
        Some(etcd)
    }

    /// Where clients connect: `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A new etcd client.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.url()], None).await.expect("an etcd client")
    }

    /// Kills etcd at once (SIGKILL), as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd (again) on the same ports and data dir, and waits until it answers.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        self.starts += 1;
        let log_path = self.log_path();
        let log = File::create(&log_path).expect("an etcd log file");
        let client_url = self.url();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "default"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
        let url = self.url();
        let ready = async {
            loop {
                if let Some(child) = self.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "etcd exited with {status}; its log:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                if answers(&url).await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        within("etcd answers", ready).await;
    }

    /// Wipes the data dir; only while etcd is stopped.
    pub fn wipe(&mut self) {
        assert!(self.child.is_none(), "etcd is running");
        std::fs::remove_dir_all(self.dir.path().join("data")).expect("the data dir is removed");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("etcd-{}.log", self.starts))
    }

    /// The keys under `prefix` now.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut client = self.client().await;
        let options = etcd_client::GetOptions::new().with_prefix().with_keys_only();
        let response = within("etcd reads", client.get(prefix, Some(options))).await.expect("etcd reads");
        response.kvs().iter().map(|kv| key_of(kv.key())).collect()
    }

    /// Waits until the keys under `prefix` are exactly `expected` (in any order): reads them
    /// once, then follows etcd's watch from the revision after that read, applying each put and
    /// delete, so the wait ends on the event that completes the set, not on a poll.
    pub async fn wait_keys(&self, prefix: &str, expected: &[String]) {
        let expected: BTreeSet<String> = expected.iter().cloned().collect();
        let wait = async {
            let mut client = self.client().await;
            let options = etcd_client::GetOptions::new().with_prefix().with_keys_only();
            let listed = client.get(prefix, Some(options)).await.expect("etcd reads");
            let mut keys: BTreeSet<String> = listed.kvs().iter().map(|kv| key_of(kv.key())).collect();
            if keys == expected {
                return;
            }
            let revision = listed.header().expect("a read's header").revision();
            // From the revision after the read: no event between the two is missed.
            let options = etcd_client::WatchOptions::new().with_prefix().with_start_revision(revision + 1);
            let mut events = client.watch(prefix, Some(options)).await.expect("etcd watches");
            while let Some(response) = events.message().await.expect("the watch goes on") {
                assert!(!response.canceled(), "etcd cancelled the watch: {}", response.cancel_reason());
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    match event.event_type() {
                        etcd_client::EventType::Put => keys.insert(key_of(kv.key())),
                        etcd_client::EventType::Delete => keys.remove(&key_of(kv.key())),
                    };
                }
                if keys == expected {
                    return;
                }
            }
            panic!("etcd ended the watch with the keys under {prefix} at {keys:?}");
        };
        within(&format!("the keys under {prefix} are {expected:?}"), wait).await;
    }
}

/// A key as the tests name it.
fn key_of(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn installed() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A loopback port free now. Another process could take it before etcd binds it; on a test
/// machine that is rare, and etcd then fails to start, loudly.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    listener.local_addr().expect("local address").port()
}

/// Whether etcd at `url` answers a read.
async fn answers(url: &str) -> bool {
    let attempt = async {
        let mut client = etcd_client::Client::connect([url], None).await.ok()?;
        client.get("/", None).await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), attempt).await, Ok(Some(_)))
}
