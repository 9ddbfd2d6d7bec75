//! The `zrpc` command (feature `cli`), run as a process against a real server on loopback: what
//! `list`, `describe`, `call` and `bench` print and how they exit, usage mistakes, `gateway`
//! answering HTTP, and (with the feature `etcd`) `watch` against a real etcd.
//!
//! Every expected line here is what a user sees; the exit statuses are the documented ones
//! (0 done, 1 a status, 2 usage, 3 an application error).

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use zrpc::{Context, Server};

/// How long any wait in these tests may take before the test fails instead of hanging. A bound
/// for liveness, far above any real wait; no test relies on its length.
const LIVENESS: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test with `what` if it has not finished within [`LIVENESS`].
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(LIVENESS, future).await {
        Ok(output) => output,
        Err(_) => panic!("not done within {LIVENESS:?}: {what}"),
    }
}

/// A child process, killed if the test ends before it does.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines a child writes to `stream`, as they come.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::UnboundedReceiver<String> {
    use std::io::BufRead as _;
    let (sender, lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    lines
}

/// Sends SIGINT (Ctrl-C) to `child` and returns its exit code.
async fn interrupt(child: Killed) -> Option<i32> {
    let interrupted = Command::new("kill").args(["-INT", &child.0.id().to_string()]).status().expect("kill runs");
    assert!(interrupted.success());
    let status = within(
        "zrpc exits",
        tokio::task::spawn_blocking(move || {
            let mut child = child;
            child.0.wait()
        }),
    )
    .await
    .expect("not cancelled")
    .expect("waited");
    status.code()
}

#[path = "../zrpc-transport/tests/support/http.rs"]
mod http;

#[cfg(feature = "etcd")]
#[path = "../zrpc-transport/tests/support/etcd_server.rs"]
#[allow(dead_code, unreachable_pub)]
mod etcd_server;

/// Says no.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum MathError {
    /// The sum does not fit.
    Overflow,
}

/// Arithmetic and errands, for the command's tests.
#[zrpc::service]
pub trait Calc {
    /// Adds two numbers.
    ///
    /// Overflow is an application error.
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// The value of metadata `key` the call carried, if any.
    #[zrpc(idempotent)]
    async fn header(&self, ctx: &Context, key: String) -> Option<String>;
    /// Waits for a release that never comes.
    async fn wait(&self);
    /// Counts calls.
    #[zrpc(idempotent)]
    async fn count(&self) -> u64;
    /// Writes a line somewhere.
    #[zrpc(oneway)]
    async fn log(&self, line: String);
}

/// What the handlers saw, for the tests to assert on.
#[derive(Debug, Default)]
struct Seen {
    /// The values of metadata `tenant` calls carried, in order.
    tenants: Mutex<Vec<Option<String>>>,
    /// Calls to `count`.
    counted: AtomicU64,
    /// What `log` was given.
    logged: Mutex<Option<mpsc::UnboundedSender<String>>>,
    /// Never notified: `wait` waits on it.
    never: Notify,
}

#[derive(Debug, Clone)]
struct Calculator(Arc<Seen>);

impl Calc for Calculator {
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_add(b).ok_or(MathError::Overflow)
    }

    async fn header(&self, ctx: &Context, key: String) -> Option<String> {
        let value = ctx.metadata().get(&key).map(|value| String::from_utf8_lossy(value).into_owned());
        if key == "tenant" {
            self.0.tenants.lock().expect("not poisoned").push(value.clone());
        }
        value
    }

    async fn wait(&self) {
        self.0.never.notified().await;
    }

    async fn count(&self) -> u64 {
        self.0.counted.fetch_add(1, Ordering::SeqCst) + 1
    }

    async fn log(&self, line: String) {
        if let Some(logged) = self.0.logged.lock().expect("not poisoned").as_ref() {
            let _ = logged.send(line);
        }
    }
}

/// A server with `Calc` on a loopback port, serving until the test ends.
struct Running {
    address: String,
    seen: Arc<Seen>,
}

async fn serve() -> Running {
    let seen = Arc::new(Seen::default());
    let server = Server::builder()
        .name("calc-1")
        .add_service(CalcServer::new(Calculator(seen.clone())))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind");
    let address = server.local_addr().to_string();
    tokio::spawn(server.serve());
    Running { address, seen }
}

/// What a run of `zrpc` printed and how it exited.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Fails unless it exited with `code`; shows everything it printed otherwise.
    fn exited(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "exit status; it printed {self:#?}");
        assert!(!self.stderr.contains("panicked"), "it panicked: {}", self.stderr);
        self
    }

    /// Its one line on stderr, which must start with `start`.
    fn one_error_line(&self, start: &str) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {self:#?}");
        assert!(lines[0].starts_with(start), "stderr starts with {start:?}: {self:#?}");
        lines[0]
    }
}

/// Runs `zrpc args...`, with `stdin` as its standard input.
async fn zrpc_with_input(args: &[&str], stdin: &str) -> Run {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let stdin = stdin.to_owned();
    let run = tokio::task::spawn_blocking(move || -> std::io::Result<Output> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zrpc"))
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut input) = child.stdin.take() {
            std::io::Write::write_all(&mut input, stdin.as_bytes())?;
        }
        child.wait_with_output()
    });
    let output = within("zrpc exits", run).await.expect("not cancelled").expect("zrpc runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn zrpc(args: &[&str]) -> Run {
    zrpc_with_input(args, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_names_every_method_with_its_flags() {
    let server = serve().await;
    let run = zrpc(&["list", &server.address]).await;
    run.exited(0);
    let calc: Vec<&str> = run.stdout.lines().take_while(|line| !line.starts_with("zrpc.")).collect();
    assert_eq!(
        calc,
        [
            "Calc",
            "  Calc.add",
            "  Calc.header               idempotent",
            "  Calc.wait",
            "  Calc.count                idempotent",
            "  Calc.log                  oneway",
        ]
    );
    assert!(run.stdout.contains("\nzrpc.Reflection\n  zrpc.Reflection.list      idempotent\n"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_gives_arguments_result_errors_flags_and_docs() {
    let server = serve().await;
    let run = zrpc(&["describe", &server.address, "Calc.add"]).await;
    run.exited(0);
    assert_eq!(
        run.stdout,
        "service Calc\n  Arithmetic and errands, for the command's tests.\n\n\
         Calc.add(a: i64, b: i64) -> Result<i64, MathError>\n  Adds two numbers.\n  \n  \
         Overflow is an application error.\n  result: i64\n  \
         errors: application error MathError (zrpc call prints it, exit status 3)\n"
    );

    let run = zrpc(&["describe", &server.address, "Calc"]).await;
    run.exited(0);
    assert!(run.stdout.contains("\nCalc.header(key: String) -> Option<String>\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "\nCalc.log(line: String)\n  Writes a line somewhere.\n  result: ()\n  errors: none\n  flags: oneway\n"
        ),
        "{}",
        run.stdout
    );

    let run = zrpc(&["describe", &server.address, "Calc.add", "--json"]).await;
    run.exited(0);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("describe --json prints JSON");
    assert_eq!(json["name"], "Calc");
    assert_eq!(json["methods"][0]["args"][1]["name"], "b");
    assert_eq!(json["methods"][0]["errors"], "application");
    assert_eq!(json["methods"][0]["error"]["rust"], "MathError");

    let run = zrpc(&["describe", &server.address, "Nobody"]).await;
    let line = run.exited(1).one_error_line("zrpc: NotFound: ");
    assert_eq!(line, "zrpc: NotFound: no service \"Nobody\" to describe; this end serves: Calc, zrpc.Reflection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_prints_the_result_as_json() {
    let server = serve().await;
    let run = zrpc(&["call", &server.address, "Calc.add", r#"{"a":40,"b":2}"#]).await;
    assert_eq!(run.exited(0).stdout, "42\n");
    // Arguments as an array in order, from standard input.
    let run = zrpc_with_input(&["call", &server.address, "Calc.add", "@-"], "[1, 2]").await;
    assert_eq!(run.exited(0).stdout, "3\n");
    // `null` for `None`; a method without arguments called with none.
    let run = zrpc(&["call", &server.address, "Calc.header", r#"{"key":"absent"}"#]).await;
    assert_eq!(run.exited(0).stdout, "null\n");
    let run = zrpc(&["call", &server.address, "Calc.count"]).await;
    assert_eq!(run.exited(0).stdout, "1\n");
    // A structured result, indented by default and as sent with --compact.
    let run = zrpc(&["call", &server.address, "zrpc.Reflection.describe", r#"{"name":"Calc.count"}"#]).await;
    assert!(
        run.exited(0).stdout.starts_with("{\n  \"name\": \"Calc\",\n  \"rust_name\": \"Calc\",\n"),
        "{}",
        run.stdout
    );
    let run =
        zrpc(&["call", "--compact", &server.address, "zrpc.Reflection.describe", r#"{"name":"Calc.count"}"#]).await;
    assert!(run.exited(0).stdout.starts_with(r#"{"name":"Calc","rust_name":"Calc","docs":"#), "{}", run.stdout);
    assert_eq!(run.stdout.lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_error_prints_its_json_and_exits_3() {
    let server = serve().await;
    let run = zrpc(&["call", &server.address, "Calc.add", r#"{"a":9223372036854775807,"b":1}"#]).await;
    run.exited(3);
    assert_eq!(run.stdout, "\"Overflow\"\n");
    assert_eq!(run.stderr, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_is_one_line_on_stderr_and_exit_status_1() {
    let server = serve().await;
    let run = zrpc(&["call", &server.address, "Nobody.hello", "{}"]).await;
    run.exited(1).one_error_line("zrpc: NotFound: ");
    assert!(run.stderr.contains("Nobody"), "{}", run.stderr);
    assert_eq!(run.stdout, "");

    let run = zrpc(&["call", &server.address, "Calc.add", r#"{"a":"forty"}"#]).await;
    run.exited(1).one_error_line("zrpc: InvalidArgument: ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_reaches_the_handler() {
    let server = serve().await;
    let run =
        zrpc(&["call", &server.address, "Calc.header", r#"{"key":"tenant"}"#, "-H", "tenant: acme", "-H", "x:1"]).await;
    assert_eq!(run.exited(0).stdout, "\"acme\"\n");
    assert_eq!(*server.seen.tenants.lock().expect("not poisoned"), [Some("acme".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_ends_a_call_that_is_never_answered_with_deadline_exceeded() {
    let server = serve().await;
    let run = zrpc(&["call", &server.address, "Calc.wait", "--timeout", "200ms"]).await;
    run.exited(1).one_error_line("zrpc: DeadlineExceeded: ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_oneway_call_prints_nothing_and_reaches_the_handler() {
    let server = serve().await;
    let (logged, mut lines) = mpsc::unbounded_channel();
    *server.seen.logged.lock().expect("not poisoned") = Some(logged);
    let run = zrpc(&["call", &server.address, "Calc.log", r#"["hello"]"#]).await;
    assert_eq!(run.exited(0).stdout, "");
    assert_eq!(within("the line is logged", lines.recv()).await.as_deref(), Some("hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_every_call_the_server_handled() {
    let server = serve().await;
    let run = zrpc(&["bench", &server.address, "Calc.count", "-n", "500", "-c", "8"]).await;
    run.exited(0);
    let handled = server.seen.counted.load(Ordering::SeqCst);
    assert_eq!(handled, 500);
    let count = run.stdout.lines().find_map(|line| line.trim().strip_prefix("Count:")).expect("a Count line");
    assert_eq!(count.trim().parse::<u64>().expect("a number"), handled, "{}", run.stdout);
    let ok = run.stdout.lines().find_map(|line| line.trim().strip_prefix("[OK]")).expect("an [OK] line");
    assert_eq!(ok.trim(), "500 calls");
    for line in ["p50", "p90", "p99", "p99.9", "Calls/s:", "Average:", "Fastest:", "Slowest:", "Latency histogram:"] {
        assert!(run.stdout.contains(line), "{line} in {}", run.stdout);
    }
    // Ten histogram bands whose counts add up to every call.
    let bands: u64 = run
        .stdout
        .lines()
        .skip_while(|line| *line != "Latency histogram:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .map(|line| {
            let count = line.split('[').nth(1).and_then(|rest| rest.split(']').next()).expect("[count]");
            count.trim().parse::<u64>().expect("a count")
        })
        .sum();
    assert_eq!(bands, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_and_call_take_durations_too_long_for_the_clock_as_no_end() {
    // `u64::MAX` seconds: adding it to now panicked, in the run's end and in every call's deadline.
    let server = serve().await;
    let forever = "18446744073709551615s";
    let args = ["bench", &server.address, "Calc.count", "-n", "20", "-c", "2", "-d", forever, "--timeout", forever];
    zrpc(&args).await.exited(0);
    assert_eq!(server.seen.counted.load(Ordering::SeqCst), 20);
    let run = zrpc(&["call", &server.address, "Calc.add", "[2,3]", "--timeout", forever]).await;
    assert_eq!(run.exited(0).stdout.trim(), "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_counts_failures_by_status_and_exits_1() {
    let server = serve().await;
    let run = zrpc(&["bench", &server.address, "Calc.wait", "-n", "4", "-c", "2", "--timeout", "100ms"]).await;
    run.exited(1);
    let failed = run.stdout.lines().find_map(|line| line.trim().strip_prefix("[DeadlineExceeded]")).expect("a line");
    assert!(failed.trim().starts_with("4 calls; first: "), "{}", run.stdout);
    assert_eq!(run.stderr.lines().last(), Some("zrpc: 4 of 4 calls failed with a status"));
    // No call can fail before its deadline: the latencies are the calls' own, in milliseconds.
    let fastest = run.stdout.lines().find_map(|line| line.trim().strip_prefix("Fastest:")).expect("a Fastest line");
    let fastest = fastest.trim();
    let millis = match fastest.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().ok(),
        None => fastest.strip_suffix('s').and_then(|s| s.parse::<f64>().ok()).map(|s| s * 1000.0),
    };
    assert!(millis.is_some_and(|ms| ms >= 100.0), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_mistakes_are_one_line_and_exit_status_2() {
    let server = serve().await;
    let address = server.address.as_str();
    let cases: [(&[&str], &str); 8] = [
        (&["call", address, "Calc.add", "{a:1}"], "zrpc: the arguments are not JSON: "),
        (&["call", address, "Calc"], "zrpc: invalid value 'Calc' for '<SERVICE.METHOD>'"),
        (&["call", "nowhere://x", "Calc.add"], "zrpc: invalid value 'nowhere://x' for '<ADDR>'"),
        (&["call", address, "Calc.wait", "--timeout", "5"], "zrpc: invalid value '5' for '--timeout <DURATION>'"),
        (&["call", address, "Calc.add", "-H", "novalue"], "zrpc: invalid value 'novalue' for '--header <KEY:VALUE>'"),
        (&["bench", address, "Calc.count", "-c", "0"], "zrpc: invalid value '0' for '--concurrency <CALLERS>'"),
        (&["frobnicate"], "zrpc: unrecognized subcommand 'frobnicate'"),
        (&["list"], "zrpc: the following required arguments were not provided: <ADDR> (see zrpc --help)"),
    ];
    for (args, start) in cases {
        let run = zrpc(args).await;
        run.exited(2).one_error_line(start);
        assert_eq!(run.stdout, "", "{args:?}");
    }
    assert_eq!(server.seen.counted.load(Ordering::SeqCst), 0);
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_once_lists_the_instances_registered_in_etcd() {
    use etcd_server::EtcdServer;
    use zrpc::etcd::EtcdRegistry;

    let Some(etcd) = EtcdServer::start("watch_once_lists_the_instances_registered_in_etcd").await else { return };
    let registry = EtcdRegistry::new(etcd.client().await, "/zrpc/calc").version("1.2").metadata("zone", "test");
    let seen = Arc::new(Seen::default());
    let server = Server::builder()
        .name("calc-1")
        .register(registry)
        .add_service(CalcServer::new(Calculator(seen)))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind registers");
    let address = server.local_addr().to_string();
    tokio::spawn(server.serve());

    let target = format!("etcd://{}/zrpc/calc", etcd.url().trim_start_matches("http://"));
    let run = zrpc(&["watch", &target, "--once"]).await;
    run.exited(0);
    let lines: Vec<Vec<&str>> = run.stdout.lines().map(|line| line.split_whitespace().collect()).collect();
    assert_eq!(
        lines,
        [
            vec!["ADDRESS", "NAME", "WEIGHT", "GROUP", "VERSION", "STATE", "METADATA"],
            vec![address.as_str(), "calc-1", "1", "-", "1.2", "up", "zone=test"],
        ]
    );

    // And the same instance answers a call through the same target.
    let run = zrpc(&["call", &target, "Calc.add", "[2,3]"]).await;
    assert_eq!(run.exited(0).stdout, "5\n");
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_instances_as_they_come_and_go_until_ctrl_c() {
    use etcd_server::EtcdServer;
    use zrpc::etcd::EtcdRegistry;

    let Some(etcd) = EtcdServer::start("watch_prints_instances_as_they_come_and_go_until_ctrl_c").await else {
        return;
    };
    let target = format!("etcd://{}/zrpc/calc", etcd.url().trim_start_matches("http://"));
    let mut watch = Killed(
        Command::new(env!("CARGO_BIN_EXE_zrpc"))
            .args(["watch", &target])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("zrpc runs"),
    );
    // Its lines as they come, stdout's and stderr's apart.
    let mut stdout = lines_of(watch.0.stdout.take().expect("piped"));
    let mut stderr = lines_of(watch.0.stderr.take().expect("piped"));
    let next = async |lines: &mut mpsc::UnboundedReceiver<String>| -> Vec<String> {
        let line = within("zrpc watch prints a line", lines.recv()).await.expect("a line before zrpc exits");
        line.split_whitespace().map(str::to_owned).collect()
    };

    // Nobody yet: the header alone, then it watches.
    assert_eq!(next(&mut stdout).await[..2], ["ADDRESS", "NAME"]);
    assert_eq!(next(&mut stderr).await[..2], ["zrpc:", "watching"]);

    let registry = EtcdRegistry::new(etcd.client().await, "/zrpc/calc").group("blue");
    let server = Server::builder()
        .name("calc-2")
        .register(registry)
        .add_service(CalcServer::new(Calculator(Arc::default())))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind registers");
    let address = server.local_addr().to_string();
    let handle = server.handle();
    let serving = tokio::spawn(server.serve());
    assert_eq!(next(&mut stdout).await, ["+", address.as_str(), "calc-2", "1", "blue", "-", "up", "-"]);

    // A graceful shutdown deregisters.
    handle.shutdown();
    let _ = within("the server stops", serving).await;
    assert_eq!(next(&mut stdout).await, ["-", address.as_str(), "calc-2", "1", "blue", "-", "up", "-"]);

    // Ctrl-C ends it, with status 0.
    assert_eq!(interrupt(watch).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_the_target_over_http_and_its_console_until_ctrl_c() {
    let server = serve().await;
    let mut gateway = Killed(
        Command::new(env!("CARGO_BIN_EXE_zrpc"))
            .args(["gateway", &server.address, "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("zrpc runs"),
    );
    let mut stdout = lines_of(gateway.0.stdout.take().expect("piped"));
    let mut stderr = lines_of(gateway.0.stderr.take().expect("piped"));
    // The first line is where it listens; the note on stderr comes once the signal is caught.
    let url = within("zrpc gateway prints its address", stdout.recv()).await.expect("a line");
    let listening: std::net::SocketAddr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .and_then(|hostport| hostport.parse().ok())
        .unwrap_or_else(|| panic!("an http:// address: {url:?}"));
    let note = within("zrpc gateway says it serves", stderr.recv()).await.expect("a line");
    assert!(note.starts_with("zrpc: serving"), "{note}");

    let sum = http::post(listening, "/Calc/add", &[], r#"{"a":40,"b":2}"#).await;
    assert_eq!((sum.status, sum.text()), (200, "42".to_owned()));
    let refused = http::post(listening, "/Calc/add", &[], r#"{"a":9223372036854775807,"b":1}"#).await;
    assert_eq!((refused.status, refused.text()), (422, r#"{"error":"Overflow"}"#.to_owned()));
    let console = http::get(listening, "/").await;
    assert_eq!(console.status, 200);
    assert!(console.text().contains("<html"), "the console's page: {}", console.text());

    assert_eq!(interrupt(gateway).await, Some(0), "Ctrl-C stops it cleanly");
}
