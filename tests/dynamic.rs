//! `zrpc::dynamic`: calling methods by name with JSON over TCP, as a gateway or the CLI does,
//! against a real server: results and application errors split apart, the flags learnt from
//! reflection on the requests that go out, oneway calls delivered, and servers without
//! reflection called plainly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tower::util::BoxCloneService;
use zrpc::dynamic::{DynamicClient, JsonAnswer, Target};
use zrpc::{Client, Code, Context, Request, Server, Status};

mod support;

/// Why a sum could not be made.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum MathError {
    /// `a + b` does not fit in an `i64`.
    Overflow {
        /// The first operand.
        a: i64,
        /// The second.
        b: i64,
    },
}

/// Arithmetic with every kind of failure and flag.
#[zrpc::service]
pub trait Calc {
    /// An application error travels inside an OK answer.
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Safe to run twice.
    #[zrpc(idempotent)]
    async fn square(&self, x: i64) -> i64;
    /// Fails with a status.
    async fn root(&self, x: f64) -> Result<f64, Status>;
    /// Sent and forgotten.
    #[zrpc(oneway)]
    async fn note(&self, text: String);
}

struct Calculator {
    notes: mpsc::UnboundedSender<String>,
}

impl Calc for Calculator {
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_add(b).ok_or(MathError::Overflow { a, b })
    }

    async fn square(&self, x: i64) -> i64 {
        x * x
    }

    async fn root(&self, x: f64) -> Result<f64, Status> {
        if x < 0.0 { Err(Status::out_of_range(format!("no real root of {x}"))) } else { Ok(x.sqrt()) }
    }

    async fn note(&self, text: String) {
        let _ = self.notes.send(text);
    }
}

/// What each request that left the client looked like: method, oneway, idempotent.
type Sent = Arc<Mutex<Vec<(String, bool, bool)>>>;

/// A channel whose requests are recorded.
type Recorded = BoxCloneService<Request, zrpc::Response, Status>;

/// A dynamic client over a channel to a Calc server (reflection on or off) that records every
/// request it sends, and the server's notes.
async fn calc(
    reflection: bool,
    reread_after: Duration,
) -> (
    impl Fn() -> Vec<(String, bool, bool)>,
    DynamicClient<Recorded>,
    mpsc::UnboundedReceiver<String>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (notes, noted) = mpsc::unbounded_channel();
    let server = Server::builder().reflection(reflection).add_service(CalcServer::new(Calculator { notes }));
    let (channel, stop) = support::serve_on_loopback(server).await;
    let sent: Sent = Arc::default();
    let record = sent.clone();
    let recording = tower::ServiceBuilder::new()
        .map_request(move |request: Request| {
            let entry = (request.method().to_string(), request.is_oneway(), request.is_idempotent());
            record.lock().expect("not poisoned").push(entry);
            request
        })
        .service(channel);
    let seen = move || sent.lock().expect("not poisoned").clone();
    let client = DynamicClient::new(BoxCloneService::new(recording)).reread_after(reread_after);
    (seen, client, noted, stop)
}

/// Longer than any test: what is sent must not depend on how fast a test runs.
const NEVER: Duration = Duration::from_secs(3600);

fn json(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

#[tokio::test]
async fn results_and_application_errors_come_apart() {
    let (_, client, _, _stop) = calc(true, NEVER).await;
    let ok = client.call("Calc.add", json(r#"{"a":40,"b":2}"#), Context::new()).await;
    assert_eq!(ok, Ok(JsonAnswer::Ok(json("42"))));
    let by_position = client.call("Calc.add", json("[1,2]"), Context::new()).await;
    assert_eq!(by_position, Ok(JsonAnswer::Ok(json("3"))));
    let overflow = client.call("Calc.add", json(r#"{"a":9223372036854775807,"b":1}"#), Context::new()).await;
    assert_eq!(overflow, Ok(JsonAnswer::Err(json(r#"{"Overflow":{"a":9223372036854775807,"b":1}}"#))));
    let plain = client.call("Calc.square", json(r#"{"x":-7}"#), Context::new()).await;
    assert_eq!(plain, Ok(JsonAnswer::Ok(json("49"))));
}

#[tokio::test]
async fn statuses_are_the_servers() {
    let (_, client, _, _stop) = calc(true, NEVER).await;
    let out_of_range = client.call("Calc.root", json("[-4.0]"), Context::new()).await.expect_err("a status");
    assert_eq!(out_of_range.code(), Code::OutOfRange);
    assert_eq!(out_of_range.message(), "no real root of -4");
    assert_eq!(client.call("Calc.root", json("[6.25]"), Context::new()).await, Ok(JsonAnswer::Ok(json("2.5"))));

    let bad = client.call("Calc.add", json(r#"{"a":"forty"}"#), Context::new()).await.expect_err("refused");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let missing = client.call("Calc.divide", json("{}"), Context::new()).await.expect_err("refused");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert!(missing.message().contains("divide"), "{}", missing.message());
}

#[tokio::test]
async fn flags_come_from_reflection_which_is_read_once() {
    let (sent, client, mut noted, _stop) = calc(true, NEVER).await;
    assert_eq!(client.call("Calc.square", json("[3]"), Context::new()).await, Ok(JsonAnswer::Ok(json("9"))));
    assert_eq!(client.call("Calc.note", json(r#"{"text":"hi"}"#), Context::new()).await, Ok(JsonAnswer::Sent));
    assert_eq!(noted.recv().await.as_deref(), Some("hi"));
    let clone = client.clone();
    assert_eq!(
        clone.call("Calc.add", Bytes::new(), Context::new()).await.map_err(|s| s.code()),
        Err(Code::InvalidArgument)
    );

    let list = ("zrpc.Reflection.list".to_owned(), false, true);
    let expected = vec![
        list,
        ("Calc.square".to_owned(), false, true),
        ("Calc.note".to_owned(), true, false),
        ("Calc.add".to_owned(), false, false),
    ];
    assert_eq!(sent(), expected, "one read of the catalogue, shared by clones; each request flagged as declared");
}

#[tokio::test]
async fn a_missing_method_reads_the_catalogue_again_once_allowed() {
    for (reread_after, reads) in [(NEVER, 1), (Duration::ZERO, 2)] {
        let (sent, client, _, _stop) = calc(true, reread_after).await;
        for _ in 0..2 {
            let missing = client.call("Calc.divide", json("{}"), Context::new()).await.expect_err("no such method");
            assert_eq!(missing.code(), Code::NotFound);
        }
        assert_eq!(client.call("Calc.square", json("[2]"), Context::new()).await, Ok(JsonAnswer::Ok(json("4"))));
        let listed = sent().iter().filter(|(method, _, _)| method == "zrpc.Reflection.list").count();
        assert_eq!(listed, reads, "reread after {reread_after:?}");
    }
}

#[tokio::test]
async fn without_reflection_calls_are_plain() {
    let (sent, client, mut noted, _stop) = calc(false, NEVER).await;
    let answer = client.call("Calc.add", json("[1,2]"), Context::new()).await;
    assert_eq!(answer, Ok(JsonAnswer::Ok(json(r#"{"Ok":3}"#))), "the whole result, unsplit");
    // A oneway method called two-way still runs; its answer is the unit.
    assert_eq!(
        client.call("Calc.note", json(r#"["two-way"]"#), Context::new()).await,
        Ok(JsonAnswer::Ok(json("null")))
    );
    assert_eq!(noted.recv().await.as_deref(), Some("two-way"));
    let listed = client.list(Context::new()).await.expect_err("no reflection");
    assert_eq!(listed.code(), Code::NotFound);
    let methods: Vec<String> = sent()
        .into_iter()
        .map(|(method, oneway, idempotent)| {
            assert!(!oneway && (!idempotent || method.starts_with("zrpc.")), "{method}: plain unless reflection");
            method
        })
        .collect();
    assert_eq!(methods, ["zrpc.Reflection.list", "Calc.add", "Calc.note", "zrpc.Reflection.list"]);
}

#[tokio::test]
async fn describe_and_list_answer_descriptors() {
    let (_, client, _, _stop) = calc(true, NEVER).await;
    let services = client.list(Context::new()).await.expect("lists");
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Calc", "zrpc.Reflection"]);
    let add = client.describe("Calc.add", Context::new()).await.expect("describes");
    assert_eq!(add.methods.len(), 1);
    assert_eq!(add.methods[0].args.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let nobody = client.describe("Nobody", Context::new()).await.expect_err("no such service");
    assert_eq!(nobody.code(), Code::NotFound);
}

#[tokio::test]
async fn a_target_string_makes_a_client() {
    let (notes, _noted) = mpsc::unbounded_channel();
    let server = Server::builder()
        .add_service(CalcServer::new(Calculator { notes }))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind");
    let address = server.local_addr().to_string();
    tokio::spawn(server.serve());
    // Two addresses, separated by a comma, make a static set (here the same server twice).
    let target: Target = format!("{address},{address}").parse().expect("parses");
    let client: Client = target.client(Client::builder().name("dynamic-test")).await.expect("client");
    let calc = DynamicClient::new(client);
    assert_eq!(calc.call("Calc.square", json("[12]"), Context::new()).await, Ok(JsonAnswer::Ok(json("144"))));
}
