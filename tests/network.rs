//! The facade over a real connection: generated clients and servers, several services on one
//! port, both codecs on one connection, and a deadline carried through `ctx.child()`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zrpc::{Channel, Code, CodecId, Context, Server, Text};

mod support;

/// Greets people.
#[zrpc::service]
pub trait Greeter {
    /// Greets a caller by name.
    async fn hello(&self, ctx: &Context, name: String) -> String;
    /// The time left on the caller's deadline, in milliseconds, as the handler sees it.
    async fn budget_ms(&self, ctx: &Context) -> Option<u64>;
    /// Takes an argument whose decoding panics on the server for some values.
    async fn touchy(&self, value: Touchy) -> u8;
}

/// A byte that serializes normally but whose `Deserialize` panics on 13: a user's decoding bug.
#[derive(Debug, Serialize)]
pub struct Touchy(pub u8);

impl<'de> Deserialize<'de> for Touchy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Touchy, D::Error> {
        match u8::deserialize(deserializer)? {
            13 => panic!("unlucky 13"),
            n => Ok(Touchy(n)),
        }
    }
}

/// Why a counter refused.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum CounterError {
    /// The step would take the counter past its maximum.
    Overflow {
        /// The counter's value.
        at: u64,
    },
}

/// A shared counter.
#[zrpc::service]
pub trait Counter {
    /// Adds `step` and returns the new value.
    async fn add(&self, step: u64) -> Result<u64, CounterError>;
}

struct Hello;

impl Greeter for Hello {
    async fn hello(&self, ctx: &Context, name: String) -> String {
        format!("hello {name}, from {}", ctx.caller())
    }

    async fn budget_ms(&self, ctx: &Context) -> Option<u64> {
        ctx.child().remaining().map(|left| left.as_millis() as u64)
    }

    async fn touchy(&self, value: Touchy) -> u8 {
        value.0
    }
}

#[derive(Default)]
struct Count(std::sync::atomic::AtomicU64);

impl Counter for Count {
    async fn add(&self, step: u64) -> Result<u64, CounterError> {
        use std::sync::atomic::Ordering;
        let at = self.0.load(Ordering::SeqCst);
        let next = at.checked_add(step).ok_or(CounterError::Overflow { at })?;
        self.0.store(next, Ordering::SeqCst);
        Ok(next)
    }
}

async fn serve_both() -> (Channel, tokio::sync::oneshot::Sender<()>) {
    let server = Server::builder()
        .name("both-1")
        .add_service(GreeterServer::new(Hello))
        .add_service(CounterServer::new(Count::default()));
    support::serve_on_loopback(server).await
}

#[tokio::test]
async fn one_port_serves_several_services_over_one_channel() {
    let (channel, _stop) = serve_both().await;
    let greeter = GreeterClient::new(channel.clone());
    let counter = CounterClient::new(channel);

    assert_eq!(greeter.hello("net".into()).await.expect("call"), "hello net, from tester");
    assert_eq!(counter.add(2).await.expect("call"), Ok(2));
    assert_eq!(counter.add(u64::MAX).await.expect("call"), Err(CounterError::Overflow { at: 2 }));
}

#[tokio::test]
async fn a_method_the_server_lacks_is_not_found_by_name() {
    /// The counter as a newer client knows it.
    #[zrpc::service(name = "Counter")]
    pub trait CounterV2 {
        /// Not on the server.
        async fn reset(&self);
    }

    let (channel, _stop) = serve_both().await;
    let status = CounterV2Client::new(channel).reset().await.expect_err("the server has no reset");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("Counter.reset"), "{status}");
    assert!(status.message().contains("add"), "lists the methods it has: {status}");
}

#[tokio::test]
async fn text_fields_interoperate_with_string_fields() {
    /// The greeter as a client that decodes its strings without copying declares it.
    #[zrpc::service(name = "Greeter")]
    pub trait SharedGreeter {
        /// The server's `hello`, which takes and returns a `String`.
        async fn hello(&self, name: Text) -> Text;
    }

    let (channel, _stop) = serve_both().await;
    let greeter = SharedGreeterClient::new(channel);
    let reply: Text = greeter.hello(Text::from_static("网络")).await.expect("call");
    assert_eq!(reply, "hello 网络, from tester");
}

#[tokio::test]
async fn a_panic_while_decoding_arguments_is_internal_and_the_connection_lives_on() {
    let (channel, _stop) = serve_both().await;
    let greeter = GreeterClient::new(channel);
    let status = greeter.touchy(Touchy(13)).await.expect_err("decoding panics on the server");
    assert_eq!(status.code(), Code::Internal, "{status}");
    assert!(status.message().contains("Greeter.touchy"), "{status}");
    assert_eq!(greeter.touchy(Touchy(7)).await.expect("the same connection still serves"), 7);
}

#[tokio::test]
async fn the_deadline_travels_and_child_contexts_keep_it() {
    let (channel, _stop) = serve_both().await;
    let greeter = GreeterClient::new(channel);
    let defaulted = greeter.budget_ms().await.expect("call").expect("the channel's default deadline arrived");
    assert!(defaulted > 0 && defaulted <= 10_000, "{defaulted} ms left");
    let unbounded = greeter.with_context(Context::new().without_deadline());
    assert_eq!(unbounded.budget_ms().await.expect("call"), None, "no deadline by choice, none on the server");

    let hurried = greeter.with_context(Context::new().with_timeout(Duration::from_secs(30)));
    let left = hurried.budget_ms().await.expect("call").expect("the deadline arrived");
    assert!(left > 0 && left <= 30_000, "{left} ms left");
}

#[cfg(feature = "json")]
#[tokio::test]
async fn postcard_and_json_callers_share_a_connection() {
    let (channel, _stop) = serve_both().await;
    let postcard = GreeterClient::new(channel.clone());
    let json = GreeterClient::new(channel).with_codec(CodecId::Json);
    let (a, b) = tokio::join!(postcard.hello("postcard".into()), json.hello("json".into()));
    assert_eq!(a.expect("postcard call"), "hello postcard, from tester");
    assert_eq!(b.expect("json call"), "hello json, from tester");
}

#[cfg(not(feature = "msgpack"))]
#[tokio::test]
async fn a_codec_missing_from_this_build_is_refused_before_sending() {
    let (channel, _stop) = serve_both().await;
    let msgpack = GreeterClient::new(channel).with_codec(CodecId::MsgPack);
    let status = msgpack.hello("msgpack".into()).await.expect_err("msgpack is not compiled in");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("msgpack"), "{status}");
}
