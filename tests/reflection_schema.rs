//! JSON Schemas in reflection (feature `schema`): a server with a service marked
//! `#[zrpc::service(schema)]` beside one that is not, over TCP on loopback. The schemas are
//! schemars' for each type, and travel as JSON objects in JSON and as text in postcard.

use bytes::Bytes;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower::ServiceExt;
use zrpc::reflection::{ErrorKind, ReflectionClient, TypeDescriptor};
use zrpc::{CodecId, Request, Server};

#[path = "support/greeter.rs"]
mod greeter;
mod support;

use greeter::{GreeterServer, Hello};

/// A line of stock.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Item {
    /// What it is.
    pub name: String,
    /// How many there are.
    pub count: u32,
    /// Where it is, when known.
    pub shelf: Option<String>,
}

/// Why a change was refused.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub enum StockError {
    /// Not enough left.
    Short {
        /// How many there are.
        left: u32,
    },
    /// No such item.
    Unknown,
}

/// Stock, described with schemas.
#[zrpc::service(schema)]
pub trait Inventory {
    /// Adds `item`; answers the new count.
    async fn add(&self, item: Item, note: Option<String>) -> Result<u32, StockError>;
    /// Finds an item by name.
    #[zrpc(idempotent)]
    async fn find(&self, name: String) -> Option<Item>;
    /// Refuses with a status when asked to.
    async fn check(&self, strict: bool) -> Result<bool, zrpc::Status>;
}

struct Stock;

impl Inventory for Stock {
    async fn add(&self, item: Item, _note: Option<String>) -> Result<u32, StockError> {
        Ok(item.count)
    }

    async fn find(&self, _name: String) -> Option<Item> {
        None
    }

    async fn check(&self, strict: bool) -> Result<bool, zrpc::Status> {
        Ok(strict)
    }
}

fn schema(ty: &TypeDescriptor) -> Value {
    let schema = ty.schema.as_ref().unwrap_or_else(|| panic!("{} has a schema", ty.rust));
    schema.to_value().expect("a schema is JSON")
}

#[tokio::test]
async fn a_schema_service_describes_its_types_with_json_schemas() {
    let server = Server::builder().add_service(InventoryServer::new(Stock)).add_service(GreeterServer::new(Hello));
    let (channel, _stop) = support::serve_on_loopback(server).await;
    let reflection = ReflectionClient::new(channel);

    let inventory = reflection.describe("Inventory".into()).await.expect("describe answers");
    let add = inventory.method("add").expect("add");
    let item = schema(&add.args[0].ty);
    assert_eq!(item["type"], "object");
    assert_eq!(item["title"], "Item");
    assert_eq!(item["description"], "A line of stock.");
    assert_eq!(item["properties"]["count"]["type"], "integer");
    assert_eq!(item["properties"]["count"]["format"], "uint32");
    assert_eq!(item["properties"]["name"]["type"], "string");
    assert_eq!(item["properties"]["name"]["description"], "What it is.");
    let required: Vec<&str> = item["required"].as_array().expect("required").iter().filter_map(Value::as_str).collect();
    assert_eq!(required, ["name", "count"], "an Option field may be left out");
    assert_eq!(schema(&add.args[1].ty)["type"], serde_json::json!(["string", "null"]));

    assert_eq!(add.errors, ErrorKind::Application);
    let error = schema(add.error.as_ref().expect("an error type"));
    assert_eq!(error["title"], "StockError");
    assert_eq!(error["oneOf"].as_array().map(Vec::len), Some(2));
    assert_eq!(schema(add.ok.as_ref().expect("an ok type"))["format"], "uint32");
    let result = schema(&add.result);
    assert!(result["oneOf"].to_string().contains("\"Ok\""), "Result<T, E> is an enum: {result}");

    let check = inventory.method("check").expect("check");
    assert_eq!(schema(&check.result)["type"], "boolean", "the T of Result<T, Status>");
    assert!(check.error.as_ref().is_some_and(|status| status.schema.is_none()), "a Status has no schema");

    // The service beside it did not ask for schemas.
    let greeter = reflection.describe("Greeter".into()).await.expect("describe answers");
    assert!(greeter.methods.iter().all(|m| m.result.schema.is_none() && m.args.iter().all(|a| a.ty.schema.is_none())));
}

#[tokio::test]
async fn in_json_a_schema_is_an_object_in_the_descriptor() {
    let server = Server::builder().add_service(InventoryServer::new(Stock));
    let (channel, _stop) = support::serve_on_loopback(server).await;

    let request = Request::new("zrpc.Reflection.describe", Bytes::from_static(br#"{"name":"Inventory.find"}"#))
        .with_codec(CodecId::Json);
    let response = channel.clone().oneshot(request).await.expect("describe answers");
    let value: Value = serde_json::from_slice(response.payload()).expect("the answer is JSON");
    let find = &value["methods"][0];
    assert_eq!(find["idempotent"], true);
    let arg = &find["args"][0]["type"]["schema"];
    assert_eq!(arg["type"], "string", "an object, not a string holding one: {arg}");
    assert_eq!(find["result"]["schema"]["$defs"]["Item"]["properties"]["count"]["type"], "integer");

    // postcard carries the same schema as text.
    let postcard = ReflectionClient::new(channel).describe("Inventory.find".into()).await.expect("describe answers");
    let result = postcard.methods[0].result.schema.as_ref().expect("a schema").to_value().expect("JSON");
    assert_eq!(result, find["result"]["schema"]);
}
