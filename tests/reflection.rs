//! The built-in reflection service, `zrpc.Reflection`, over TCP on loopback: what `list` and
//! `describe` answer about a server's services, in postcard and in JSON, what they refuse, and
//! that a server or node told `.reflection(false)` does not serve it.
//!
//! JSON Schemas need the `schema` feature: `tests/reflection_schema.rs`.

use bytes::Bytes;
use tower::ServiceExt;
use zrpc::reflection::{ErrorKind, MethodDescriptor, ReflectionClient, ServiceDescriptor, TypeDescriptor};
use zrpc::{Channel, Code, CodecId, Context, NamedService, Node, Request, Server, Status};

#[path = "support/greeter.rs"]
mod greeter;
mod support;

use greeter::{GreeterServer, Hello};

/// A key-value store: a dotted wire name, docs, flags, a renamed method, both kinds of error.
#[zrpc::service(name = "kv.Store")]
pub trait Store {
    /// Reads `key`.
    ///
    /// `None` when it is not there.
    #[zrpc(idempotent)]
    async fn get(&self, ctx: &Context, key: String) -> Option<Vec<u8>>;
    /// Writes `value` under `key`, unless the store is full.
    async fn put(&self, key: String, value: Vec<u8>) -> Result<u64, Status>;
    /// Forgets everything.
    #[zrpc(oneway, name = "clear")]
    async fn clear_all(&self);
    /// Moves a value, or says why not.
    async fn rename(&self, from: String, to: String) -> Result<(), String>;
}

struct Memory;

impl Store for Memory {
    async fn get(&self, _ctx: &Context, _key: String) -> Option<Vec<u8>> {
        None
    }

    async fn put(&self, _key: String, _value: Vec<u8>) -> Result<u64, Status> {
        Err(Status::resource_exhausted("full"))
    }

    async fn clear_all(&self) {}

    async fn rename(&self, _from: String, _to: String) -> Result<(), String> {
        Err("no such key".to_owned())
    }
}

/// A server with the two services, and a channel to it.
async fn serve_both() -> (Channel, tokio::sync::oneshot::Sender<()>) {
    support::serve_on_loopback(
        Server::builder().add_service(GreeterServer::new(Hello)).add_service(StoreServer::new(Memory)),
    )
    .await
}

fn method<'a>(service: &'a ServiceDescriptor, name: &str) -> &'a MethodDescriptor {
    service.method(name).unwrap_or_else(|| panic!("{} has a method {name}: {service:#?}", service.name))
}

fn written(ty: &TypeDescriptor) -> &str {
    &ty.rust
}

#[tokio::test]
async fn list_names_every_service_sorted_with_its_methods() {
    let (channel, _stop) = serve_both().await;
    let services = ReflectionClient::new(channel).list().await.expect("list answers");
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Greeter", "kv.Store", "zrpc.Reflection"]);

    let greeter = &services[0];
    let methods: Vec<&str> = greeter.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(methods, ["ping", "hello", "add", "lookup", "reverse"], "declaration order");
    assert_eq!(greeter.docs, "The worked examples' service.");
    let add = method(greeter, "add");
    let args: Vec<(&str, &str)> = add.args.iter().map(|a| (a.name.as_str(), written(&a.ty))).collect();
    assert_eq!(args, [("a", "i64"), ("b", "i64")]);
    assert_eq!(written(&add.result), "Result<i64, MathError>");
    assert_eq!(add.errors, ErrorKind::Application);
    assert_eq!(add.ok.as_ref().map(written), Some("i64"));
    assert_eq!(add.error.as_ref().map(written), Some("MathError"));
    assert!(add.error.as_ref().is_some_and(|e| e.path.ends_with("greeter::MathError")), "{add:#?}");
    assert!(add.args.iter().all(|a| a.ty.schema.is_none()), "no schema without `schema`");
    let ping = method(greeter, "ping");
    assert_eq!((ping.args.len(), written(&ping.result), ping.errors), (0, "()", ErrorKind::None));

    let reflection = &services[2];
    assert_eq!(reflection.rust_name, "Reflection");
    let describe = method(reflection, "describe");
    assert_eq!(describe.args[0].name, "name");
    assert!(describe.idempotent);
    assert_eq!(describe.errors, ErrorKind::Status);
}

#[tokio::test]
async fn describe_answers_flags_names_docs_and_types_of_one_service() {
    let (channel, _stop) = serve_both().await;
    let store = ReflectionClient::new(channel).describe("kv.Store".into()).await.expect("describe answers");
    assert_eq!((store.name.as_str(), store.rust_name.as_str()), ("kv.Store", "Store"));
    assert_eq!(
        store.docs,
        "A key-value store: a dotted wire name, docs, flags, a renamed method, both kinds of error."
    );

    let get = method(&store, "get");
    assert_eq!((get.idempotent, get.oneway), (true, false));
    assert_eq!(get.docs, "Reads `key`.\n\n`None` when it is not there.");
    let args: Vec<(&str, &str)> = get.args.iter().map(|a| (a.name.as_str(), written(&a.ty))).collect();
    assert_eq!(args, [("key", "String")], "the context is not an argument");
    assert_eq!(get.args[0].ty.path, "alloc::string::String");
    assert_eq!((written(&get.result), get.errors, get.ok.is_none()), ("Option<Vec<u8>>", ErrorKind::None, true));

    let put = method(&store, "put");
    assert_eq!(put.errors, ErrorKind::Status);
    assert_eq!(written(&put.result), "u64", "an OK answer carries the T of Result<T, Status>");
    assert_eq!(put.error.as_ref().map(written), Some("Status"));
    assert_eq!(put.args.iter().map(|a| written(&a.ty)).collect::<Vec<_>>(), ["String", "Vec<u8>"]);

    let clear = method(&store, "clear");
    assert_eq!((clear.rust_name.as_str(), clear.oneway, clear.idempotent), ("clear_all", true, false));

    let rename = method(&store, "rename");
    assert_eq!(rename.errors, ErrorKind::Application);
    assert_eq!((rename.ok.as_ref().map(written), rename.error.as_ref().map(written)), (Some("()"), Some("String")));
}

#[tokio::test]
async fn describe_of_one_method_answers_its_service_with_that_method_alone() {
    let (channel, _stop) = serve_both().await;
    let reflection = ReflectionClient::new(channel);
    let clear = reflection.describe("kv.Store.clear".into()).await.expect("describe answers");
    assert_eq!(clear.name, "kv.Store");
    assert_eq!(clear.methods.iter().map(|m| m.rust_name.as_str()).collect::<Vec<_>>(), ["clear_all"]);
    // The generated descriptor is what the server answers.
    let whole = reflection.describe("kv.Store".into()).await.expect("describe answers");
    assert_eq!(whole, StoreServer::<Memory>::descriptor());
}

#[tokio::test]
async fn describe_of_what_is_not_there_is_not_found_naming_what_is() {
    let (channel, _stop) = serve_both().await;
    let reflection = ReflectionClient::new(channel);

    let service = reflection.describe("Nobody".into()).await.expect_err("no such service");
    assert_eq!(service.code(), Code::NotFound);
    assert_eq!(
        service.message(),
        "no service \"Nobody\" to describe; this end serves: Greeter, kv.Store, zrpc.Reflection"
    );

    let method = reflection.describe("kv.Store.delete".into()).await.expect_err("no such method");
    assert_eq!(method.code(), Code::NotFound);
    assert_eq!(
        method.message(),
        "service kv.Store has no method \"delete\" to describe; it has: get, put, clear, rename"
    );
}

#[tokio::test]
async fn reflection_answers_in_json_what_it_answers_in_postcard() {
    let (channel, _stop) = serve_both().await;
    let reflection = ReflectionClient::new(channel.clone());
    let postcard = reflection.list().await.expect("list answers in postcard");
    let json = reflection.with_codec(CodecId::Json).list().await.expect("list answers in JSON");
    assert_eq!(json, postcard);

    // The JSON itself, as a caller in another language reads it (PROTOCOL.md §18).
    let request = Request::new("zrpc.Reflection.describe", Bytes::from_static(br#"{"name":"Greeter.add"}"#))
        .with_codec(CodecId::Json);
    let response = channel.oneshot(request).await.expect("describe answers");
    let value: serde_json::Value = serde_json::from_slice(response.payload()).expect("the answer is JSON");
    let add = &value["methods"][0];
    assert_eq!(value["name"], "Greeter");
    assert_eq!(add["name"], "add");
    assert_eq!(add["args"][1]["name"], "b");
    assert_eq!(add["args"][1]["type"]["rust"], "i64");
    assert_eq!(add["errors"], "application");
    assert_eq!(add["error"]["rust"], "MathError");
    assert_eq!(add["idempotent"], false);
    assert!(add["args"][0]["type"]["schema"].is_null());
}

#[tokio::test]
async fn a_server_without_reflection_answers_not_found() {
    let server = Server::builder().reflection(false).add_service(GreeterServer::new(Hello));
    let (channel, _stop) = support::serve_on_loopback(server).await;
    let refused = ReflectionClient::new(channel).list().await.expect_err("no reflection");
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(
        refused.message(),
        "unknown service \"zrpc.Reflection\" (calling zrpc.Reflection.list); this end has: Greeter"
    );
}

#[tokio::test]
async fn a_node_serves_reflection_unless_told_not_to() {
    let node = Node::builder("with").add_service(GreeterServer::new(Hello)).listen("tcp://127.0.0.1:0").start().await;
    let node = node.expect("the node starts");
    let address = node.local_addr().expect("it listens").clone();
    let services = ReflectionClient::new(Channel::builder(address).connect_lazy()).list().await.expect("list answers");
    assert_eq!(services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["Greeter", "zrpc.Reflection"]);

    let node = Node::builder("without").reflection(false).listen("tcp://127.0.0.1:0").start().await;
    let node = node.expect("the node starts");
    let address = node.local_addr().expect("it listens").clone();
    let refused = ReflectionClient::new(Channel::builder(address).connect_lazy()).list().await.expect_err("none");
    assert_eq!(refused.code(), Code::NotFound);
}
