//! The HTTP/JSON gateway (feature `gateway`): a real zrpc server behind a real gateway, called
//! by a minimal HTTP/1.1 client over a socket. Every status mapping the module docs claim,
//! application errors, oneway calls, the deadline and metadata headers, the bounds, discovery
//! through static targets, response metadata as headers, and the gateway mounted in a user's
//! own axum app. Nothing sleeps: a call that must time out waits on a handler that never
//! answers.

#[path = "support/http.rs"]
mod http;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use zrpc_core::{Code, Context, Status};
use zrpc_transport::dynamic::Target;
use zrpc_transport::gateway::{Gateway, GatewayBuilder, GatewayHandle};
use zrpc_transport::{Client, Server};

/// A liveness bound for waits; no test depends on its length.
const LIVENESS: Duration = Duration::from_secs(60);

/// Why a division failed: the application error of [`Shop::divide`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum MathError {
    /// The divisor was zero.
    DivideByZero,
}

/// What the gateway's tests call.
#[zrpc_macros::service(crate = "zrpc_core")]
pub trait Shop {
    /// Fails with the status of `code` and `message`.
    async fn fail(&self, code: u8, message: String) -> Result<(), Status>;
    /// `a / b`, or an application error.
    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Records `note`; no answer.
    #[zrpc(oneway)]
    async fn notify(&self, note: String);
    /// The metadata value the handler saw under `key`.
    async fn meta(&self, ctx: &Context, key: String) -> Option<String>;
    /// How many milliseconds the call had left when the handler ran.
    async fn remaining(&self, ctx: &Context) -> Option<u64>;
    /// Never answers: only its deadline ends it.
    async fn hang(&self);
    /// The name of the server that answered.
    async fn whoami(&self) -> String;
    /// A string of `len` bytes.
    async fn blob(&self, len: u32) -> String;
    /// Answers once the test adds a permit to [`HELD`].
    async fn held(&self);
}

/// What [`Shop::held`] waits for; only one test calls it.
static HELD: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

#[derive(Clone)]
struct Shopkeeper {
    name: &'static str,
    notes: mpsc::UnboundedSender<String>,
}

impl Shop for Shopkeeper {
    async fn fail(&self, code: u8, message: String) -> Result<(), Status> {
        Err(Status::new(Code::from_u8(code), message))
    }

    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_div(b).ok_or(MathError::DivideByZero)
    }

    async fn notify(&self, note: String) {
        let _ = self.notes.send(note);
    }

    async fn meta(&self, ctx: &Context, key: String) -> Option<String> {
        ctx.metadata().get(&key).map(|value| String::from_utf8_lossy(value).into_owned())
    }

    async fn remaining(&self, ctx: &Context) -> Option<u64> {
        ctx.remaining().map(|left| u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
    }

    async fn hang(&self) {
        std::future::pending::<()>().await;
    }

    async fn whoami(&self) -> String {
        self.name.to_owned()
    }

    async fn blob(&self, len: u32) -> String {
        "b".repeat(len as usize)
    }

    async fn held(&self) {
        HELD.acquire().await.expect("never closed").forget();
    }
}

/// A zrpc server running `Shopkeeper` named `name`; its address and the notes it receives.
async fn shop(name: &'static str) -> (String, mpsc::UnboundedReceiver<String>) {
    let (notes, received) = mpsc::unbounded_channel();
    let server = Server::builder()
        .name(name)
        .add_service(ShopServer::new(Shopkeeper { name, notes }))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind the zrpc server");
    let address = server.local_addr().to_string();
    tokio::spawn(server.serve());
    (address, received)
}

/// A client of `target`, as a gateway's user builds it.
async fn client(target: &str) -> Client {
    let target = Target::parse(target).expect("a valid target");
    target.client(Client::builder().name("gateway")).await.expect("a client of the target")
}

/// A gateway serving in front of `client`, configured by `configure`; its address.
async fn gateway_with(client: Client, configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder) -> SocketAddr {
    watched_gateway(client, configure).await.0
}

/// A gateway serving in front of `client`, configured by `configure`; its address and handle.
async fn watched_gateway(
    client: Client,
    configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> (SocketAddr, GatewayHandle) {
    let gateway = configure(Gateway::builder(client)).bind("tcp://127.0.0.1:0").await.expect("bind the gateway");
    let (addr, handle) = (gateway.local_addr(), gateway.handle());
    tokio::spawn(gateway.serve());
    (addr, handle)
}

/// A server named "shop" and a gateway in front of it.
async fn shop_and_gateway() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let (address, notes) = shop("shop").await;
    let addr = gateway_with(client(&address).await, |builder| builder.max_body(1024)).await;
    (addr, notes)
}

async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(LIVENESS, future).await {
        Ok(output) => output,
        Err(_) => panic!("not done within {LIVENESS:?}: {what}"),
    }
}

#[tokio::test]
async fn every_status_a_handler_returns_maps_to_its_http_code_with_a_json_body() {
    let (addr, _notes) = shop_and_gateway().await;
    let expected = [
        (Code::Cancelled, 499),
        (Code::Unknown, 500),
        (Code::InvalidArgument, 400),
        (Code::DeadlineExceeded, 504),
        (Code::NotFound, 404),
        (Code::AlreadyExists, 409),
        (Code::PermissionDenied, 403),
        (Code::ResourceExhausted, 429),
        (Code::FailedPrecondition, 400),
        (Code::Aborted, 409),
        (Code::OutOfRange, 400),
        (Code::Unimplemented, 501),
        (Code::Internal, 500),
        (Code::Unavailable, 503),
        (Code::DataLoss, 500),
        (Code::Unauthenticated, 401),
    ];
    for (code, http) in expected {
        let body = format!(r#"{{"code":{},"message":"because {}"}}"#, code.as_u8(), code.name());
        let answer = within("a failing call", http::post(addr, "/Shop/fail", &[], &body)).await;
        assert_eq!(answer.status, http, "{code:?}: {}", answer.text());
        assert_eq!(answer.header("content-type"), Some("application/json"));
        let json = answer.json();
        assert_eq!(json["code"], u64::from(code.as_u8()), "{json}");
        assert_eq!(json["status"], code.name(), "{json}");
        assert_eq!(json["message"], format!("because {}", code.name()), "{json}");
    }
}

#[tokio::test]
async fn results_are_200_and_application_errors_422_with_the_error_value() {
    let (addr, _notes) = shop_and_gateway().await;
    let answer = within("divide", http::post(addr, "/Shop/divide", &[], r#"{"a":84,"b":2}"#)).await;
    assert_eq!((answer.status, answer.text()), (200, "42".to_owned()));
    // The array form of the arguments (PROTOCOL.md §9) passes through as well.
    let answer = within("divide", http::post(addr, "/Shop/divide", &[], "[9,3]")).await;
    assert_eq!((answer.status, answer.text()), (200, "3".to_owned()));

    let answer = within("divide by zero", http::post(addr, "/Shop/divide", &[], r#"{"a":1,"b":0}"#)).await;
    assert_eq!(answer.status, 422, "{}", answer.text());
    assert_eq!(answer.json(), serde_json::json!({ "error": "DivideByZero" }));

    let answer = within("whoami", http::post(addr, "/Shop/whoami", &[], "")).await;
    assert_eq!((answer.status, answer.json()), (200, serde_json::json!("shop")), "an empty body is no arguments");
}

#[tokio::test]
async fn a_oneway_call_is_202_and_reaches_the_handler() {
    let (addr, mut notes) = shop_and_gateway().await;
    let answer = within("notify", http::post(addr, "/Shop/notify", &[], r#"{"note":"restock"}"#)).await;
    assert_eq!(answer.status, 202, "{}", answer.text());
    assert!(answer.body.is_empty());
    assert_eq!(within("the note", notes.recv()).await.as_deref(), Some("restock"));
}

#[tokio::test]
async fn the_timeout_header_sets_the_deadline_and_an_expired_one_is_504() {
    let (addr, _notes) = shop_and_gateway().await;
    let answer = within("hang", http::post(addr, "/Shop/hang", &[("zrpc-timeout", "50ms")], "{}")).await;
    assert_eq!(answer.status, 504, "{}", answer.text());
    assert_eq!(answer.json()["status"], "DeadlineExceeded");

    let answer = within("remaining", http::post(addr, "/Shop/remaining", &[("zrpc-timeout", "1.5s")], "{}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let left = answer.json().as_u64().expect("the handler saw a deadline");
    assert!(left <= 1500, "the handler had {left} ms left of a 1.5 s deadline");

    // Without the header the gateway's default deadline applies (10 s).
    let answer = within("remaining", http::post(addr, "/Shop/remaining", &[], "{}")).await;
    let left = answer.json().as_u64().expect("the handler saw the default deadline");
    assert!(left <= 10_000, "the handler had {left} ms left of the default 10 s");

    let answer = within("a bad header", http::post(addr, "/Shop/remaining", &[("zrpc-timeout", "soon")], "{}")).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.json()["message"].as_str().is_some_and(|m| m.contains("zrpc-timeout")), "{}", answer.text());
}

#[tokio::test]
async fn metadata_headers_and_authorization_reach_the_handler() {
    let (addr, _notes) = shop_and_gateway().await;
    let headers = [("zrpc-meta-Tenant", "blue"), ("Authorization", "Bearer s3cret"), ("X-Other", "dropped")];
    let answer = within("meta", http::post(addr, "/Shop/meta", &headers, r#"{"key":"tenant"}"#)).await;
    assert_eq!((answer.status, answer.json()), (200, serde_json::json!("blue")), "{}", answer.text());
    let answer = within("meta", http::post(addr, "/Shop/meta", &headers, r#"{"key":"authorization"}"#)).await;
    assert_eq!(answer.json(), serde_json::json!("Bearer s3cret"));
    let answer = within("meta", http::post(addr, "/Shop/meta", &headers, r#"{"key":"x-other"}"#)).await;
    assert_eq!(answer.json(), serde_json::Value::Null, "only zrpc-meta-* and Authorization are forwarded");
}

/// A service written by hand, as a handler that sets response metadata is: `Stamp.echo`
/// answers `"stamped"` with metadata of every kind the gateway must carry as headers.
#[derive(Clone)]
struct Stamp;

impl zrpc_core::NamedService for Stamp {
    const NAME: &'static str = "Stamp";
    const METHODS: &'static [&'static str] = &["Stamp.echo"];
}

impl tower::Service<zrpc_core::Request> for Stamp {
    type Response = zrpc_core::Response;
    type Error = Status;
    type Future = futures::future::BoxFuture<'static, Result<zrpc_core::Response, Status>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Status>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: zrpc_core::Request) -> Self::Future {
        let blob = request.ctx().metadata().get_bytes("blob").unwrap_or_default();
        Box::pin(async move {
            let mut response = zrpc_core::Response::new(bytes::Bytes::from_static(br#""stamped""#));
            let metadata = response.metadata_mut();
            metadata.append("served-by", "stamp");
            metadata.append("Raw", &[0u8, 1, 0xff, b'\n'][..]);
            metadata.append("trace-bin", "text");
            metadata.append("padded", " x");
            metadata.append("bad key", "no header can carry it");
            metadata.append("echo", blob);
            Ok(response)
        })
    }
}

#[tokio::test]
async fn response_metadata_comes_back_as_headers_binary_values_in_base64() {
    let server = Server::builder().name("stamp").add_service(Stamp).bind("tcp://127.0.0.1:0").await.expect("bind");
    let address = server.local_addr().to_string();
    tokio::spawn(server.serve());
    let addr = gateway_with(client(&address).await, |builder| builder).await;

    // [0, 1, 0xff] in base64 as request metadata `blob`, echoed back by the handler as `echo`.
    let answer = within("echo", http::post(addr, "/Stamp/echo", &[("zrpc-meta-blob-bin", "AAH/")], "{}")).await;
    assert_eq!((answer.status, answer.text()), (200, r#""stamped""#.to_owned()));
    assert_eq!(answer.header("zrpc-meta-served-by"), Some("stamp"), "printable text passes as it is");
    assert_eq!(answer.header("zrpc-meta-raw-bin"), Some("AAH/Cg=="), "a binary value is base64, the key lowercase");
    assert_eq!(answer.header("zrpc-meta-trace-bin-bin"), Some("dGV4dA=="), "a key ending in -bin is always encoded");
    assert_eq!(answer.header("zrpc-meta-padded-bin"), Some("IHg="), "a leading space would be trimmed: encoded");
    assert_eq!(answer.header("zrpc-meta-echo-bin"), Some("AAH/"), "request -bin headers are decoded");
    let forwarded: Vec<&str> =
        answer.headers.iter().map(|(name, _)| name.as_str()).filter(|name| name.starts_with("zrpc-meta-")).collect();
    assert_eq!(forwarded.len(), 5, "the key with a space is left out: {forwarded:?}");

    let answer =
        within("bad base64", http::post(addr, "/Stamp/echo", &[("zrpc-meta-blob-bin", "not base64!")], "{}")).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("zrpc-meta-blob-bin"), "{}", answer.text());
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_no_call() {
    let (addr, _notes) = shop_and_gateway().await;
    let cases: [(&str, &str, &str, u16, &str); 7] = [
        ("POST", "/Shop/divide", r#"{"a":1,"#, 400, "InvalidArgument"),
        ("POST", "/Shop/divide", r#""bare""#, 400, "InvalidArgument"),
        ("POST", "/Shop/nothing", "{}", 404, "NotFound"),
        ("POST", "/Nobody/divide", "{}", 404, "NotFound"),
        ("GET", "/Shop/divide", "", 405, "Unimplemented"),
        ("GET", "/no/such/path", "", 404, "NotFound"),
        ("POST", "/%FF/x", "{}", 400, "InvalidArgument"),
    ];
    for (method, path, body, http, status) in cases {
        let answer = within(path, http::request(addr, method, path, &[], body.as_bytes())).await;
        assert_eq!(answer.status, http, "{method} {path}: {}", answer.text());
        assert_eq!(answer.json()["status"], status, "{method} {path}");
    }
    let answer = within("GET on a call path", http::get(addr, "/Shop/divide")).await;
    assert_eq!(answer.header("allow"), Some("POST"));

    // Names and metadata keys past the protocol's 255 bytes: refused by the client, answered.
    let long = "s".repeat(300);
    let answer = within("a long name", http::post(addr, &format!("/{long}/x"), &[], "{}")).await;
    assert_eq!((answer.status, &answer.json()["status"]), (400, &serde_json::json!("InvalidArgument")));
    assert!(answer.text().contains("longer than the maximum of 255"), "{}", answer.text());
    let key = format!("zrpc-meta-{long}");
    let answer = within("a long key", http::post(addr, "/Shop/whoami", &[(key.as_str(), "v")], "{}")).await;
    assert_eq!((answer.status, &answer.json()["status"]), (400, &serde_json::json!("InvalidArgument")));
    assert!(answer.text().contains("metadata key of 300 bytes"), "{}", answer.text());

    // Past the body limit (1024 bytes here): 413, and nothing reaches the server.
    let big = format!(r#"{{"note":"{}"}}"#, "x".repeat(2000));
    let answer = within("a large body", http::post(addr, "/Shop/notify", &[], &big)).await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert_eq!(answer.json()["status"], "ResourceExhausted");
}

#[tokio::test]
async fn a_static_target_of_two_servers_is_balanced_and_listed_in_instances() {
    let (one, _notes_one) = shop("one").await;
    let (two, _notes_two) = shop("two").await;
    let addr = gateway_with(client(&format!("{one},{two}")).await, |builder| builder).await;

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let answer = within("whoami", http::post(addr, "/Shop/whoami", &[], "{}")).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        seen.insert(answer.json().as_str().map(str::to_owned).expect("a name"));
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["one", "two"]);

    let answer = within("instances", http::get(addr, "/-/instances")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let json = answer.json();
    let mut addresses: Vec<String> = json["endpoints"]
        .as_array()
        .expect("an array of endpoints")
        .iter()
        .map(|endpoint| endpoint["address"].as_str().expect("an address").to_owned())
        .collect();
    addresses.sort();
    let mut expected = vec![one.clone(), two.clone()];
    expected.sort();
    assert_eq!(addresses, expected);
    assert!(json["endpoints"][0]["connections"][0]["state"] == "ready", "{json}");

    let answer = within("health", http::get(addr, "/-/health")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), serde_json::json!({ "status": "ok", "endpoints": 2, "available": 2 }));
}

#[tokio::test]
async fn the_router_mounts_in_a_users_axum_app_and_shuts_down_gracefully() {
    let (address, _notes) = shop("shop").await;
    let gateway = Gateway::builder(client(&address).await).console(false).into_router();
    let app = axum::Router::new().nest_service("/rpc", gateway);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });

    let answer = within("divide", http::post(addr, "/rpc/Shop/divide", &[], "[10,5]")).await;
    assert_eq!((answer.status, answer.text()), (200, "2".to_owned()));
    let answer = within("the console, off", http::get(addr, "/rpc/")).await;
    assert_eq!(answer.status, 404, "{}", answer.text());

    let _ = stop.send(());
    let served = within("graceful shutdown", serving).await;
    assert!(matches!(served, Ok(Ok(()))), "{served:?}");
}

#[tokio::test]
async fn gateway_serve_with_shutdown_returns_after_the_signal() {
    let (address, _notes) = shop("shop").await;
    let gateway = Gateway::builder(client(&address).await).bind("127.0.0.1:0").await.expect("bind");
    let addr = gateway.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(gateway.serve_with_shutdown(async move {
        let _ = stopped.await;
    }));
    let answer = within("health", http::get(addr, "/-/health")).await;
    assert_eq!(answer.json()["status"], "ok", "{}", answer.text());
    let _ = stop.send(());
    let served = within("graceful shutdown", serving).await;
    assert!(matches!(served, Ok(Ok(()))), "{served:?}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

/// Reads `stream` until the gateway closes it: everything it wrote.
async fn until_closed(what: &str, stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut written = Vec::new();
    within(what, stream.read_to_end(&mut written)).await.expect("the gateway closes the connection cleanly");
    written
}

#[tokio::test]
async fn a_connection_that_stops_sending_its_headers_or_sits_idle_is_closed() {
    use tokio::io::AsyncWriteExt;
    let (address, _notes) = shop("shop").await;
    let addr = gateway_with(client(&address).await, |builder| builder.header_timeout(Duration::from_millis(100))).await;
    // Half a head, then nothing: closed, with hyper's 408 or nothing at all.
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"POST /Shop/whoami HTTP/1.1\r\nHost: gateway\r\n").await.expect("write");
    let written = until_closed("a connection whose head stopped", &mut slow).await;
    assert!(written.is_empty() || written.starts_with(b"HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&written));
    // A whole request is answered, and the connection, kept alive, is closed once idle.
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request =
        b"POST /Shop/whoami HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    idle.write_all(request).await.expect("write");
    let written = until_closed("an idle keep-alive connection", &mut idle).await;
    let answer = http::parse(&written);
    assert_eq!((answer.status, answer.text()), (200, r#""shop""#.to_owned()));
}

#[tokio::test]
async fn a_head_longer_than_max_header_bytes_is_431_and_a_shorter_one_is_served() {
    use tokio::io::AsyncWriteExt;
    let (address, _notes) = shop("shop").await;
    let addr = gateway_with(client(&address).await, |builder| builder).await;
    // Exactly the limit, and no end of head yet: the gateway reads no further and answers.
    let start = "POST /Shop/meta HTTP/1.1\r\nHost: gateway\r\nzrpc-meta-pad: ";
    let mut head = start.as_bytes().to_vec();
    head.resize(zrpc_transport::gateway::DEFAULT_MAX_HEADER_BYTES, b'x');
    let mut long = tokio::net::TcpStream::connect(addr).await.expect("connect");
    long.write_all(&head).await.expect("write");
    let written = until_closed("a connection whose head is too long", &mut long).await;
    assert!(written.starts_with(b"HTTP/1.1 431"), "{:?}", String::from_utf8_lossy(&written));

    // A head of 50 KiB of metadata is within it, and the handler sees the value.
    let pad = "p".repeat(50 << 10);
    let answer =
        within("a long head", http::post(addr, "/Shop/meta", &[("zrpc-meta-pad", &pad)], r#"{"key":"pad"}"#)).await;
    assert_eq!((answer.status, answer.json()), (200, serde_json::Value::String(pad.clone())));

    // Twice that is too long by default, and served by a gateway that allows it.
    let twice = [("zrpc-meta-pad", pad.as_str()), ("zrpc-meta-more", pad.as_str())];
    let answer = within("a head of 100 KiB", http::post(addr, "/Shop/meta", &twice, r#"{"key":"more"}"#)).await;
    assert_eq!(answer.status, 431, "{}", answer.text());
    let roomy = gateway_with(client(&address).await, |builder| builder.max_header_bytes(128 << 10)).await;
    let answer =
        within("a head of 100 KiB, allowed", http::post(roomy, "/Shop/meta", &twice, r#"{"key":"more"}"#)).await;
    assert_eq!((answer.status, answer.json()), (200, serde_json::Value::String(pad)));
}

#[tokio::test]
async fn a_body_that_does_not_arrive_within_the_deadline_is_408_and_calls_nothing() {
    use tokio::io::AsyncWriteExt;
    let (address, mut notes) = shop("shop").await;
    let addr =
        gateway_with(client(&address).await, |builder| builder.default_timeout(Duration::from_millis(100))).await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // Thirty bytes announced, eight sent: the handler would note the call.
    let head =
        "POST /Shop/notify HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n";
    slow.write_all(head.as_bytes()).await.expect("write the head");
    slow.write_all(br#"{"note":"#).await.expect("write part of the body");
    let written = until_closed("a connection whose body stopped", &mut slow).await;
    let answer = http::parse(&written);
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert_eq!(answer.json()["status"], "DeadlineExceeded");
    // The handler never ran: the next note it receives is a later call's.
    let sent = http::post(addr, "/Shop/notify", &[], r#"{"note":"after"}"#).await;
    assert_eq!(sent.status, 202, "{}", sent.text());
    assert_eq!(within("the later note", notes.recv()).await.as_deref(), Some("after"));
}

#[tokio::test]
async fn a_timeout_header_asks_for_at_most_max_timeout_and_one_past_the_clock_is_answered() {
    use tokio::io::AsyncWriteExt;
    let (address, mut notes) = shop("shop").await;
    // The cut is to the longer of the two (a client gets the default by sending no header).
    let limits = |builder: GatewayBuilder| {
        builder.default_timeout(Duration::from_secs(1)).max_timeout(Duration::from_millis(1500))
    };
    let addr = gateway_with(client(&address).await, limits).await;
    // `u64::MAX` seconds, past what any clock can add to now: answered, with the most allowed.
    for asked in ["100000h", "18446744073709551615s"] {
        let answer = within("remaining", http::post(addr, "/Shop/remaining", &[("zrpc-timeout", asked)], "{}")).await;
        assert_eq!(answer.status, 200, "{asked}: {}", answer.text());
        let left = answer.json().as_u64().expect("the handler saw a deadline");
        assert!(left <= 1500, "{asked}: the handler had {left} ms left, past max_timeout");
    }
    // A body that stops, under a deadline of a hundred thousand hours: still 408 once the most
    // allowed has passed, and nothing called.
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = "POST /Shop/notify HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n\
                zrpc-timeout: 100000h\r\nContent-Length: 30\r\n\r\n";
    slow.write_all(head.as_bytes()).await.expect("write the head");
    slow.write_all(br#"{"note":"#).await.expect("write part of the body");
    let answer = http::parse(&until_closed("a connection whose body stopped", &mut slow).await);
    assert_eq!(answer.status, 408, "{}", answer.text());
    let sent = http::post(addr, "/Shop/notify", &[], r#"{"note":"after"}"#).await;
    assert_eq!(sent.status, 202, "{}", sent.text());
    assert_eq!(within("the later note", notes.recv()).await.as_deref(), Some("after"));
}

/// The first line and headers of a request whose head never ends.
const HALF_A_HEAD: &[u8] = b"POST /Shop/whoami HTTP/1.1\r\nHost: gateway\r\n";

/// A whole request for `path` with a JSON body, kept alive unless `close`.
fn whole_request(path: &str, headers: &str, json: &str, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "POST {path} HTTP/1.1\r\nHost: gateway\r\n{connection}{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{json}",
        json.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn past_max_connections_the_one_waiting_longest_is_closed_and_a_request_in_progress_never() {
    use tokio::io::AsyncWriteExt;
    let (address, _notes) = shop("shop").await;
    // No connection is closed by its header timeout within the test's waits.
    let limits = |builder: GatewayBuilder| builder.max_connections(3).header_timeout(LIVENESS * 10);
    let gateway = limits(Gateway::builder(client(&address).await)).bind("127.0.0.1:0").await.expect("bind");
    let (addr, handle) = (gateway.local_addr(), gateway.handle());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(gateway.serve_with_shutdown(async move {
        let _ = stopped.await;
    }));
    let connect = || async { tokio::net::TcpStream::connect(addr).await.expect("connect") };

    // The oldest connection is answering a request, held until the test lets it answer.
    let mut busy = connect().await;
    busy.write_all(&whole_request("/Shop/held", "", "{}", true)).await.expect("write");
    within("the request in progress", handle.wait_for(|stats| stats.requests == 1)).await;
    // The next has had a request answered, and has waited for another since.
    let whoami = whole_request("/Shop/whoami", "", "{}", false);
    let mut idle = connect().await;
    let answer = within("a kept-alive call", http::exchange(&mut idle, &whoami)).await;
    assert_eq!((answer.status, answer.text()), (200, r#""shop""#.to_owned()));
    // The last has sent half a head, as a slowloris client does.
    let mut slow = connect().await;
    slow.write_all(HALF_A_HEAD).await.expect("write");
    within("three open", handle.wait_for(|stats| stats.connections == 3)).await;

    // A fourth connection is served, and kept: the one waiting longest, the idle one, made room.
    let mut fourth = connect().await;
    let answer = within("a call on a fourth connection", http::exchange(&mut fourth, &whoami)).await;
    assert_eq!((answer.status, answer.text()), (200, r#""shop""#.to_owned()));
    eprintln!("after the fourth: {:?}", handle.stats());
    assert!(until_closed("the idle connection", &mut idle).await.is_empty());
    // A fifth: now the slowloris connection waited longest, and is dropped mid-head, unanswered.
    let answer = within("a call on a fifth connection", http::post(addr, "/Shop/whoami", &[], "{}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(until_closed("the slowloris connection", &mut slow).await.is_empty());
    // The request in progress was never cut short.
    HELD.add_permits(1);
    let answer = http::parse(&until_closed("the busy connection", &mut busy).await);
    assert_eq!((answer.status, answer.text()), (200, "null".to_owned()));

    let stats = handle.stats();
    assert_eq!((stats.evicted, stats.peak_connections), (2, 3), "{stats:?}");

    // Neither a slowloris connection nor an idle one holds up the gateway's shutdown for its
    // header timeout.
    let mut slow = connect().await;
    slow.write_all(HALF_A_HEAD).await.expect("write");
    within("the fourth and a slowloris open", handle.wait_for(|stats| stats.connections == 2)).await;
    let _ = stop.send(());
    let served = within("graceful shutdown", serving).await;
    assert!(matches!(served, Ok(Ok(()))), "{served:?}");
    assert!(until_closed("the slowloris connection at shutdown", &mut slow).await.is_empty());
    assert!(until_closed("the fourth connection at shutdown", &mut fourth).await.is_empty());
    assert_eq!(handle.stats().connections, 0);
}

#[tokio::test]
async fn a_client_that_takes_none_of_an_answer_for_the_write_timeout_is_dropped() {
    use tokio::io::AsyncWriteExt;
    let (address, _notes) = shop("shop").await;
    let (addr, handle) =
        watched_gateway(client(&address).await, |builder| builder.write_timeout(Duration::from_millis(200))).await;
    // An answer of 8 MiB, far more than the sockets hold, asked for and never read.
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small receive buffer");
    let mut reader = socket.connect(addr).await.expect("connect");
    let blob = whole_request("/Shop/blob", "", &format!(r#"{{"len":{}}}"#, 8 << 20), true);
    reader.write_all(&blob).await.expect("write");
    let stats =
        within("the write timeout", handle.wait_for(|stats| stats.write_timeouts == 1 && stats.connections == 0)).await;
    assert_eq!((stats.requests, stats.evicted), (0, 0), "{stats:?}");
    // The gateway serves on.
    let answer = within("a later call", http::post(addr, "/Shop/whoami", &[], "{}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn a_connection_closed_to_make_room_is_dropped_once_its_client_stops_taking_the_answer() {
    use tokio::io::AsyncWriteExt;
    let (address, _notes) = shop("shop").await;
    // No write timeout within the test's waits: only the eviction can end the first connection.
    let limits = |builder: GatewayBuilder| builder.max_connections(1).write_timeout(LIVENESS * 10);
    let (addr, handle) = watched_gateway(client(&address).await, limits).await;
    // An answer of 8 MiB, far more than the sockets hold, asked for and never read.
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small receive buffer");
    let mut reader = socket.connect(addr).await.expect("connect");
    let blob = whole_request("/Shop/blob", "", &format!(r#"{{"len":{}}}"#, 8 << 20), false);
    reader.write_all(&blob).await.expect("write");
    within("the blob's request", handle.wait_for(|stats| stats.requests_total == 1)).await;
    // A second connection needs the only place: the first, its answer stalled, is dropped.
    let answer = within("a call on a second connection", http::post(addr, "/Shop/whoami", &[], "{}")).await;
    assert_eq!((answer.status, answer.text()), (200, r#""shop""#.to_owned()));
    let stats = handle.stats();
    assert_eq!(
        (stats.evicted, stats.write_timeouts, stats.peak_connections, stats.requests_total),
        (1, 0, 1, 2),
        "{stats:?}"
    );
    drop(reader);
}

/// As a server's (tests/operations.rs): Linux holds up to `backlog + 1` handshaken connections
/// for a listener that does not accept and drops the SYNs of any more, which then wait in SYN
/// retries, so with tokio's fixed backlog of 128 this burst would not complete. Then a chosen
/// backlog binds and serves.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_bound_gateway_queues_a_burst_beyond_128_before_it_serves() {
    const BURST: usize = 300;
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|s| s.trim().parse().ok());
    if somaxconn.is_none_or(|max: u32| max < 1024) {
        eprintln!("skipped: net.core.somaxconn is {somaxconn:?}, below the default backlog of 1024");
        return;
    }
    let (shop, _notes) = shop("shop-1").await;
    let gateway = Gateway::builder(client(&shop).await).bind("tcp://127.0.0.1:0").await.expect("bind the gateway");
    // Bound, not serving: every connect completes in the kernel's queue.
    let connects = (0..BURST).map(|_| tokio::net::TcpStream::connect(gateway.local_addr()));
    let streams = within("every connect of the burst", futures::future::join_all(connects)).await;
    assert_eq!(streams.iter().filter(|s| s.is_ok()).count(), BURST);
    drop(streams);
    drop(gateway);

    let addr = gateway_with(client(&shop).await, |b| b.backlog(16)).await;
    let answer = within("whoami", http::post(addr, "/Shop/whoami", &[], "{}")).await;
    assert_eq!((answer.status, answer.json()), (200, serde_json::json!("shop-1")));
}
