//! The gateway's web console in a real headless browser (features `gateway` and `schema`):
//! Debian's `chromium`, driven over WebDriver by `chromedriver` with a few HTTP calls. The test
//! loads the console from a gateway in front of a real server, picks methods, fills their forms
//! (fields from a JSON Schema, and the JSON textarea of a method without one), calls, and checks
//! the DOM: the answer of a call that succeeds, the status of one that fails, the live instances.
//!
//! Without `chromium` and `chromedriver` the test says it skipped, except under `CI=true`, where
//! it fails: `.ci/run` installs both. With `ZRPC_CONSOLE_SCREENSHOT=<path>` it also saves a
//! screenshot of the console there (`docs/console.png` was taken so).
//!
//! Cleanup is in `Drop` guards, so a failing assertion (a panic) cleans up as a pass does: the
//! WebDriver session is deleted, then chromedriver's whole process group, chromium included, is
//! killed. `a_panicking_test_leaves_no_chromium_behind` panics with a browser open and checks
//! that no process of the group outlives it.

#[path = "../zrpc-transport/tests/support/http.rs"]
mod http;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zrpc::dynamic::Target;
use zrpc::gateway::Gateway;
use zrpc::{Client, Server, Status};

/// A line of stock.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Item {
    /// What it is.
    pub name: String,
    /// How many there are.
    pub count: u32,
}

/// Why a change was refused.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub enum StockError {
    /// Nothing to add.
    Empty,
}

/// Stock, described with schemas.
#[zrpc::service(schema)]
pub trait Inventory {
    /// Adds `item`; answers how many there are now.
    async fn add(&self, item: Item) -> Result<u32, StockError>;
    /// Removes an item by name.
    async fn remove(&self, name: String) -> Result<u32, Status>;
}

struct Stock;

impl Inventory for Stock {
    async fn add(&self, item: Item) -> Result<u32, StockError> {
        if item.count == 0 { Err(StockError::Empty) } else { Ok(item.count) }
    }

    async fn remove(&self, name: String) -> Result<u32, Status> {
        Err(Status::not_found(format!("no item {name:?} in stock")))
    }
}

/// The WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `chromedriver`, in a process group of its own with the browsers it starts; the whole group
/// is killed when dropped, so a panicking test leaves no chromium behind.
///
/// Killing chromedriver alone would orphan its chromium, which is its child: the group takes
/// them all, whatever state the session was left in. Chromium's crash reporters
/// (`chrome_crashpad_handler`) put themselves in groups of their own; they exit when the browser
/// they watch does.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    /// The process group: chromedriver's pid, as it leads it.
    fn group(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // `kill -KILL -- -PGID` signals every process of the group (std has no killpg, and the
        // workspace forbids the `unsafe` a libc call would take).
        let group = format!("-{}", self.group());
        let killed = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        if !killed.is_ok_and(|status| status.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The processes of group `group` still alive (zombies, dead and waiting to be reaped, are not),
/// from `/proc`: their pids and names.
fn live_in_group(group: u32) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut live = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses, so split
        // after its last `)`.
        let Some((head, rest)) = stat.rsplit_once(") ") else { continue };
        let name = head.split_once(" (").map_or("", |(_, comm)| comm).to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|pgrp| pgrp.parse::<u32>().ok()) == Some(group) && fields.first() != Some(&"Z") {
            live.push((pid, name));
        }
    }
    live
}

/// Whether chromium and chromedriver are installed. When they are not, says why, and fails the
/// test under `CI=true`.
fn browser_found() -> bool {
    let missing: Vec<&str> = ["chromium", "chromedriver"]
        .into_iter()
        .filter(|tool| Command::new(tool).arg("--version").output().map_or(true, |out| !out.status.success()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{} not found", missing.join(" and "));
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}; CI=true, so this test must run");
    eprintln!("skipped: {why}; install the Debian packages chromium and chromium-driver to run the console test");
    false
}

/// Starts chromedriver on a free port and waits until it says it is listening.
fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let stdout = child.stdout.take().expect("chromedriver's stdout");
    let mut driver = Driver { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("chromedriver's output");
        if line.contains("started successfully") {
            return driver;
        }
    }
    let status = driver.child.wait();
    panic!("chromedriver exited before listening: {status:?}");
}

/// A WebDriver session of one headless chromium, ended (`DELETE /session/{id}`: chromedriver
/// closes the browser) when dropped, on a panic as after a passing test.
struct Session {
    driver: SocketAddr,
    id: String,
}

impl Drop for Session {
    /// A blocking request, as `drop` cannot await; best effort, since [`Driver`]'s drop kills
    /// whatever is left anyway.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let liveness = Some(Duration::from_secs(30));
        let Ok(mut stream) = std::net::TcpStream::connect(self.driver) else { return };
        let _ = stream.set_read_timeout(liveness);
        let _ = stream.set_write_timeout(liveness);
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.id, self.driver
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            // Until the answer is whole, not until the connection closes: chromedriver keeps it
            // open despite `Connection: close`, and reading to the end waited out the timeout.
            let (mut answer, mut buf) = (Vec::new(), [0u8; 4096]);
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                answer.extend_from_slice(&buf[..n]);
                if http::complete(&answer) {
                    break;
                }
            }
        }
    }
}

impl Session {
    async fn start(driver: SocketAddr) -> Session {
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,660"],
            },
        }}});
        let answer = webdriver(driver, "POST", "/session", Some(capabilities)).await;
        let id = answer["sessionId"].as_str().expect("a session id").to_owned();
        let session = Session { driver, id };
        // Finding an element waits up to this long for it to appear: the browser polls the DOM,
        // the test does not sleep. A liveness bound, not a timing the test relies on.
        session.post("/timeouts", json!({ "implicit": 30_000 })).await;
        session
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        webdriver(self.driver, "POST", &format!("/session/{}{path}", self.id), Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        webdriver(self.driver, "GET", &format!("/session/{}{path}", self.id), None).await
    }

    /// The first element matching `css`, waiting for it to appear.
    async fn find(&self, css: &str) -> String {
        let found = self.post("/element", json!({ "using": "css selector", "value": css })).await;
        found[ELEMENT].as_str().map(str::to_owned).unwrap_or_else(|| panic!("no element {css}: {found}"))
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.post(&format!("/element/{element}/click"), json!({})).await;
    }

    async fn fill(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.post(&format!("/element/{element}/clear"), json!({})).await;
        self.post(&format!("/element/{element}/value"), json!({ "text": text })).await;
    }

    async fn text(&self, css: &str) -> String {
        self.read(css, "text").await
    }

    async fn attribute(&self, css: &str, name: &str) -> String {
        self.read(css, &format!("attribute/{name}")).await
    }

    /// `what` of the first element matching `css` (`text`, `attribute/NAME`). The console
    /// redraws parts of the page (the instances every few seconds): an element redrawn between
    /// finding and reading it is stale, and is found again.
    async fn read(&self, css: &str, what: &str) -> String {
        for _ in 0..100 {
            let element = self.find(css).await;
            let path = format!("/session/{}/element/{element}/{what}", self.id);
            let (status, json) = webdriver_answer(self.driver, "GET", &path, None).await;
            if status == 404 && json["value"]["error"] == "stale element reference" {
                continue;
            }
            assert_eq!(status, 200, "WebDriver GET {path}: {json}");
            return json["value"].as_str().unwrap_or_default().to_owned();
        }
        panic!("{css} went stale 100 times over between finding and reading it");
    }

    /// Submits the form and waits for call number `n` to end: its outcome's state and text, and
    /// the answer's text.
    async fn call(&self, n: u32) -> (String, String, String) {
        self.click("#call").await;
        let done = format!(r#"#outcome[data-call="{n}"]:not([data-state="pending"])"#);
        (self.attribute(&done, "data-state").await, self.text(&done).await, self.text("#answer").await)
    }
}

/// One WebDriver command; its `value`, failing the test on a WebDriver error.
async fn webdriver(driver: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, json) = webdriver_answer(driver, method, path, body).await;
    assert_eq!(status, 200, "WebDriver {method} {path}: {json}");
    json["value"].clone()
}

/// One WebDriver command; its HTTP status and JSON answer.
async fn webdriver_answer(driver: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let answer = tokio::time::timeout(
        Duration::from_secs(120),
        http::request(driver, method, path, &[("Content-Type", "application/json")], body.as_bytes()),
    )
    .await
    .unwrap_or_else(|_| panic!("WebDriver did not answer {method} {path}"));
    (answer.status, answer.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_lists_methods_builds_forms_calls_and_shows_answers_and_statuses() {
    if !browser_found() {
        return;
    }
    let server = Server::builder()
        .name("stock")
        .add_service(InventoryServer::new(Stock))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind the server");
    let address = server.local_addr().to_string();
    tokio::spawn(server.serve());
    let target = Target::parse(&address).expect("a target");
    let client = target.client(Client::builder().name("console")).await.expect("a client");
    let gateway = Gateway::builder(client).bind("tcp://127.0.0.1:0").await.expect("bind the gateway");
    let url = format!("http://{}/", gateway.local_addr());
    tokio::spawn(gateway.serve());

    let driver = tokio::task::spawn_blocking(start_driver).await.expect("chromedriver started");
    let session = Session::start(driver.addr).await;
    session.post("/url", json!({ "url": url })).await;

    // A method without a schema (the reflection service's own): one JSON textarea per argument.
    session.click(r#"button[data-method="zrpc.Reflection.describe"]"#).await;
    session.fill("textarea#arg-name", r#""Inventory""#).await;
    let (state, _, answer) = session.call(1).await;
    assert_eq!(state, "ok", "{answer}");
    let described: Value = serde_json::from_str(&answer).expect("the answer is the descriptor's JSON");
    assert_eq!(described["methods"][0]["name"], "add", "{answer}");

    // A failing call shows its status.
    session.click(r#"button[data-method="Inventory.remove"]"#).await;
    session.fill("input#arg-name", "bolts").await;
    let (state, outcome, _) = session.call(2).await;
    assert_eq!(state, "error", "{outcome}");
    assert!(outcome.starts_with("404 NotFound (code 5)"), "{outcome}");
    assert!(
        outcome.contains(r#"no item \"bolts\" in stock"#) || outcome.contains(r#"no item "bolts" in stock"#),
        "{outcome}"
    );

    // A form built from the argument's schema: one field per property of `Item`.
    session.click(r#"button[data-method="Inventory.add"]"#).await;
    session.fill("#arg-item-name", "bolts").await;
    session.fill("#arg-item-count", "12").await;
    let (state, outcome, answer) = session.call(3).await;
    assert_eq!((state.as_str(), answer.as_str()), ("ok", "12"), "{outcome}");

    // The live instances: the one server, connected.
    let row = session.text(&format!(r#"#instances tr[data-address="{address}"][data-state~="ready"]"#)).await;
    assert!(row.contains(&address) && row.contains("ready"), "{row}");

    let shot = session.get("/screenshot").await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().expect("a base64 screenshot"))
        .expect("a base64 screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is a PNG");
    if let Ok(path) = std::env::var("ZRPC_CONSOLE_SCREENSHOT") {
        std::fs::write(&path, &png).expect("write the screenshot");
    }
    // The session and chromedriver end as they are dropped, here or on a failed assertion.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_leaves_no_chromium_behind() {
    if !browser_found() {
        return;
    }
    let (started, group) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let driver = tokio::task::spawn_blocking(start_driver).await.expect("chromedriver started");
        let _session = Session::start(driver.addr).await;
        let _ = started.send((driver.group(), live_in_group(driver.group())));
        panic!("an assertion failed while the browser was open");
    });
    let outcome = test.await;
    assert!(outcome.as_ref().is_err_and(tokio::task::JoinError::is_panic), "the test panicked: {outcome:?}");
    let (group, while_open) = group.await.expect("the browser was started before the panic");
    // chromedriver and at least one browser process shared the group: killing it reaches them.
    assert!(while_open.iter().any(|(_, name)| name.starts_with("chrom") && name != "chromedriver"), "{while_open:?}");
    // The guards have run: every process of the group was sent SIGKILL. Dying is not instant, so
    // wait for it, with a bound only for liveness.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut left = live_in_group(group);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
        left = live_in_group(group);
    }
    assert!(left.is_empty(), "processes of chromedriver's group outlived the test: {left:?}");
}
