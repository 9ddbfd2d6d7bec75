//! A real etcd for the discovery tests, and servers that register in it.
//!
//! [`EtcdServer`] runs `etcd` from PATH on free loopback ports with a temp data dir, and kills
//! it when dropped; it can be killed and started again on the same ports and data. Without
//! `etcd` on PATH, [`EtcdServer::start`] returns `None` (the test skips, saying so) unless `CI`
//! is `true`, where a missing etcd fails the test.
//!
//! [`Registered`] is a server running a [`Who`] service (it answers with the server's name),
//! registered in a registry while it serves.

#![cfg(feature = "etcd")]

use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use zrpc_core::{Request, Response, Status};
use zrpc_transport::etcd::etcd_client;
use zrpc_transport::{Address, Registry, Server};

use super::{Serving, within};

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
        response.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect()
    }

    /// Waits until the keys under `prefix` are exactly `expected` (in any order).
    pub async fn wait_keys(&self, prefix: &str, expected: &[String]) {
        let mut expected = expected.to_vec();
        expected.sort();
        let wait = async {
            loop {
                let mut keys = self.keys(prefix).await;
                keys.sort();
                if keys == expected {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        within(&format!("the keys under {prefix} are {expected:?}"), wait).await;
    }
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

/// A service that answers with its server's name.
#[zrpc_macros::service(crate = "zrpc_core")]
pub trait Who {
    /// The server's name.
    #[zrpc(idempotent)]
    async fn name(&self) -> String;
}

/// A [`Who`] that counts the calls it answers.
#[derive(Debug)]
pub struct Named {
    name: String,
    calls: Arc<AtomicUsize>,
}

impl Named {
    pub fn new(name: &str) -> Named {
        Named { name: name.to_owned(), calls: Arc::default() }
    }
}

impl Who for Named {
    async fn name(&self) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.name.clone()
    }
}

/// `Who.name` over any service: the name of the server that answered.
pub async fn who<S>(inner: &S) -> Result<String, Status>
where
    S: tower::Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
    S::Future: Send,
{
    within("a call", WhoClient::new(inner.clone()).name()).await
}

/// A server running [`Who`], registered in a registry while it serves.
#[derive(Debug)]
pub struct Registered {
    pub name: String,
    pub address: Address,
    calls: Arc<AtomicUsize>,
    serving: Serving,
}

impl Registered {
    /// A server named `name` on a free loopback port, registered in `registry` (binding
    /// registers) and serving.
    pub async fn start(name: &str, registry: impl Registry) -> Registered {
        let named = Named::new(name);
        let calls = named.calls.clone();
        let server = Server::builder()
            .name(name)
            .register(registry)
            .add_service(WhoServer::new(named))
            .bind("tcp://127.0.0.1:0")
            .await
            .expect("bind");
        let address = server.local_addr().clone();
        Registered { name: name.to_owned(), address, calls, serving: Serving::spawn(server) }
    }

    /// The key it registers under in `prefix`.
    pub fn key(&self, prefix: &str) -> String {
        format!("{prefix}/{}", self.address)
    }

    /// Calls it answered.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Graceful shutdown: deregisters, then drains; returns what serving returned.
    pub async fn shutdown(self) -> io::Result<()> {
        self.serving.shutdown().await
    }

    /// Kills it at once: no deregistration; its lease is no longer renewed.
    pub async fn abort(self) {
        self.serving.abort().await;
    }
}
