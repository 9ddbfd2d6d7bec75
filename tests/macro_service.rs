//! `#[zrpc::service]` expansions making real in-process calls: client → server → implementation.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use zrpc::{Code, CodecId, Context, NamedService, Request, Status};

/// An application error, which travels typed inside the method's own result.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum MathError {
    /// The sum does not fit.
    Overflow,
}

/// A greeter, documented.
#[zrpc::service]
pub trait Greeter {
    /// Greets a caller by name.
    async fn hello(&self, ctx: &Context, name: String) -> String;
    /// Adds, or says why not.
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Looks a key up.
    #[zrpc(idempotent)]
    async fn lookup(&self, key: u64) -> Option<String>;
    /// Records a line; nothing comes back.
    #[zrpc(oneway)]
    async fn log(&self, line: String);
    /// Answers on the wire as `ping2`.
    #[zrpc(name = "ping2")]
    async fn ping(&self);
    /// Reads the metadata entry `key` of the call.
    async fn header(&self, ctx: &zrpc::Context, key: String) -> Option<Vec<u8>>;
    /// Never compiled: `cfg(any())` is false.
    #[cfg(any())]
    async fn gone(&self, x: NotEvenAType) -> AlsoMissing;
    /// Panics.
    async fn explode(&self, why: String) -> u8;
    /// Several arguments of several types.
    async fn describe(&self, id: u32, tags: Vec<String>, score: f64, flag: bool) -> String;
}

#[derive(Default)]
struct Hello {
    lines: Mutex<Vec<String>>,
    pings: AtomicU32,
}

impl Greeter for Hello {
    async fn hello(&self, ctx: &Context, name: String) -> String {
        format!("hello {name}, from {:?}", ctx.caller())
    }

    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_add(b).ok_or(MathError::Overflow)
    }

    async fn lookup(&self, key: u64) -> Option<String> {
        (key == 7).then(|| "seven".to_owned())
    }

    async fn log(&self, line: String) {
        self.lines.lock().expect("not poisoned").push(line);
    }

    async fn ping(&self) {
        self.pings.fetch_add(1, Ordering::SeqCst);
    }

    async fn header(&self, ctx: &zrpc::Context, key: String) -> Option<Vec<u8>> {
        ctx.metadata().get(&key).map(|v| v.to_vec())
    }

    async fn explode(&self, why: String) -> u8 {
        panic!("{why}")
    }

    async fn describe(&self, id: u32, tags: Vec<String>, score: f64, flag: bool) -> String {
        format!("{id}:{}:{score}:{flag}", tags.join("+"))
    }
}

fn client() -> GreeterClient<GreeterServer<Hello>> {
    GreeterClient::new(GreeterServer::new(Hello::default()))
}

/// Sends a hand-built request straight to a server.
async fn raw(server: GreeterServer<Hello>, method: &'static str, payload: &'static [u8]) -> Result<Bytes, Status> {
    let response = server.oneshot(Request::new(method, Bytes::from_static(payload))).await?;
    Ok(response.into_payload())
}

#[tokio::test]
async fn one_argument_and_the_context() {
    let reply = client().hello("world".to_owned()).await.expect("call succeeds");
    assert_eq!(reply, r#"hello world, from """#);
}

#[tokio::test]
async fn application_errors_reach_the_client_typed() {
    let greeter = client();
    assert_eq!(greeter.add(1, 2).await.expect("call succeeds"), Ok(3));
    assert_eq!(greeter.add(i64::MAX, 1).await.expect("call succeeds"), Err(MathError::Overflow));
}

#[tokio::test]
async fn optional_results_and_idempotent_methods() {
    let greeter = client();
    assert_eq!(greeter.lookup(7).await.expect("call succeeds").as_deref(), Some("seven"));
    assert_eq!(greeter.lookup(8).await.expect("call succeeds"), None);
}

#[tokio::test]
async fn several_arguments_keep_their_order() {
    let tags = vec!["a".to_owned(), "b".to_owned()];
    let reply = client().describe(42, tags, 1.5, true).await.expect("call succeeds");
    assert_eq!(reply, "42:a+b:1.5:true");
}

/// Arguments named as the locals of the generated server's code.
#[zrpc::service]
pub trait Shadow {
    /// Its arguments, in order, and the caller's name.
    async fn names(&self, ctx: &Context, inner: String, served: u32, payload: u8, req: bool, arg0: i32) -> String;
}

struct Shadowed;

impl Shadow for Shadowed {
    async fn names(&self, ctx: &Context, inner: String, served: u32, payload: u8, req: bool, arg0: i32) -> String {
        format!("{inner}:{served}:{payload}:{req}:{arg0}:{:?}", ctx.caller())
    }
}

#[tokio::test]
async fn arguments_named_as_the_expansions_locals_reach_the_handler_in_order() {
    let client = ShadowClient::new(ShadowServer::new(Shadowed));
    let reply = client.names("in".to_owned(), 2, 3, true, -4).await.expect("call succeeds");
    assert_eq!(reply, r#"in:2:3:true:-4:"""#);
}

#[tokio::test]
async fn metadata_set_with_with_context_reaches_the_handler() {
    let greeter = client();
    let ctx = Context::new().with_metadata("user", "ana");
    let reply = greeter.with_context(ctx).header("user".to_owned()).await.expect("call succeeds");
    assert_eq!(reply.as_deref(), Some(&b"ana"[..]));
    // The original client keeps its own, empty, context.
    assert_eq!(greeter.header("user".to_owned()).await.expect("call succeeds"), None);
}

#[tokio::test]
async fn oneway_and_unit_methods_run_the_handler() {
    let implementation = std::sync::Arc::new(Hello::default());
    let greeter = GreeterClient::new(GreeterServer::from_arc(implementation.clone()));
    let () = greeter.log("first".to_owned()).await.expect("call succeeds");
    let () = greeter.ping().await.expect("call succeeds");
    let () = greeter.ping().await.expect("call succeeds");
    assert_eq!(*implementation.lines.lock().expect("not poisoned"), ["first"]);
    assert_eq!(implementation.pings.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_renamed_method_answers_to_its_wire_name_only() {
    let server = GreeterServer::new(Hello::default());
    // `ping` has no arguments: its arguments struct is empty, zero bytes in postcard.
    let payload = raw(server.clone(), "Greeter.ping2", b"").await.expect("the wire name is served");
    assert!(payload.is_empty(), "`()` encodes to nothing in postcard, got {payload:?}");
    let status = raw(server, "Greeter.ping", b"").await.expect_err("the Rust name is not a wire name");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn the_server_lists_its_wire_names() {
    type Server = GreeterServer<Hello>;
    assert_eq!(Server::NAME, "Greeter");
    assert_eq!(
        Server::METHODS,
        [
            "Greeter.hello",
            "Greeter.add",
            "Greeter.lookup",
            "Greeter.log",
            "Greeter.ping2",
            "Greeter.header",
            "Greeter.explode",
            "Greeter.describe"
        ]
    );
}

#[tokio::test]
async fn unknown_methods_and_services_are_not_found_by_name() {
    let server = GreeterServer::new(Hello::default());
    let status = raw(server.clone(), "Greeter.frobnicate", b"").await.expect_err("no such method");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("frobnicate"), "message names the method: {}", status.message());
    let status = raw(server, "Other.hello", b"").await.expect_err("no such service");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("Other.hello"), "message names the method: {}", status.message());
}

#[tokio::test]
async fn undecodable_arguments_are_invalid_argument() {
    let server = GreeterServer::new(Hello::default());
    // A postcard string whose length prefix (100) runs past the end of the payload.
    let status = raw(server, "Greeter.hello", &[100, b'x']).await.expect_err("cannot decode");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("Greeter.hello"), "{}", status.message());
}

#[tokio::test]
async fn a_panicking_handler_is_internal_and_the_server_lives_on() {
    let greeter = client();
    let status = greeter.explode("kaboom".to_owned()).await.expect_err("the handler panics");
    assert_eq!(status.code(), Code::Internal);
    assert!(status.message().contains("kaboom"), "{}", status.message());
    assert_eq!(greeter.add(2, 2).await.expect("still serving"), Ok(4));
}

#[tokio::test]
async fn the_client_exposes_its_inner_service() {
    let greeter = client().with_codec(CodecId::Postcard);
    let server: &GreeterServer<Hello> = greeter.inner();
    let direct = GreeterClient::new(server.clone());
    assert_eq!(direct.add(20, 22).await.expect("call succeeds"), Ok(42));
    let _server: GreeterServer<Hello> = greeter.into_inner();
}

#[tokio::test]
async fn call_futures_outlive_the_client() {
    let greeter = client();
    let call = greeter.add(40, 2);
    drop(greeter);
    let sum = tokio::spawn(call).await.expect("the task completes").expect("call succeeds");
    assert_eq!(sum, Ok(42));
}

#[test]
fn args_structs_are_named_after_service_and_method() {
    let args = GreeterDescribeArgs { id: 1, tags: vec![], score: 0.0, flag: false };
    assert_eq!(args.id, 1);
    let _empty = GreeterPingArgs {};
    let _hello = GreeterHelloArgs { name: String::new() };
    // Debug by name only, so that argument types need not be Debug.
    assert_eq!(format!("{args:?}"), "GreeterDescribeArgs { .. }");
}

#[cfg(feature = "json")]
#[tokio::test]
async fn json_round_trip_with_arguments_named_as_in_the_trait() {
    let greeter = client().with_codec(CodecId::Json);
    assert_eq!(greeter.add(i64::MAX, 1).await.expect("call succeeds"), Err(MathError::Overflow));
    assert_eq!(greeter.hello("json".to_owned()).await.expect("call succeeds"), r#"hello json, from """#);

    let request = Request::new("Greeter.add", Bytes::from_static(br#"{"b":2,"a":40}"#)).with_codec(CodecId::Json);
    let response = GreeterServer::new(Hello::default()).oneshot(request).await.expect("call succeeds");
    assert_eq!(response.payload().as_ref(), br#"{"Ok":42}"#);
}

mod renamed {
    //! `crate = "..."` for users who renamed the dependency, and `name = "..."` for the service.

    extern crate zrpc as renamed_zrpc;

    use bytes::Bytes;
    use tower::ServiceExt;

    /// A counter behind a package-qualified wire name.
    #[renamed_zrpc::service(crate = "renamed_zrpc", name = "pkg.v1.Counter")]
    pub trait Counter {
        /// Doubles `n`.
        async fn double(&self, n: u32) -> u32;
    }

    struct Twice;

    impl Counter for Twice {
        async fn double(&self, n: u32) -> u32 {
            n * 2
        }
    }

    #[tokio::test]
    async fn renamed_crate_and_service() {
        let client = CounterClient::new(CounterServer::new(Twice));
        assert_eq!(client.double(21).await.expect("call succeeds"), 42);
        let request = renamed_zrpc::Request::new("pkg.v1.Counter.double", Bytes::from_static(&[5]));
        let response = CounterServer::new(Twice).oneshot(request).await.expect("the wire name is served");
        assert_eq!(response.payload().as_ref(), [10]);
        let request = renamed_zrpc::Request::new("Counter.double", Bytes::from_static(&[5]));
        let status = CounterServer::new(Twice).oneshot(request).await.expect_err("the trait name is not served");
        assert_eq!(status.code(), renamed_zrpc::Code::NotFound);
    }
}

#[test]
fn a_router_interns_the_names_it_serves_from_strings_and_from_bytes() {
    let router = zrpc::Router::new().add_service(GreeterServer::new(Hello::default()));
    let known = router.intern_bytes(b"Greeter.hello").expect("a served method");
    assert_eq!(known, "Greeter.hello");
    assert_eq!(router.intern("Greeter.hello"), Some(known));
    assert_eq!(router.intern_bytes(b"Greeter.ping2"), Some("Greeter.ping2"), "the wire name");
    assert_eq!(router.intern_bytes(b"Greeter.ping"), None, "not the Rust name");
    assert_eq!(router.intern_bytes(b"Greeter.nope"), None);
    assert_eq!(router.intern_bytes(b"Greeter.hello\xff"), None, "bytes that are not UTF-8");
}
