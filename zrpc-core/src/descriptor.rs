//! What a service is, described as data: its wire name, its methods, their flags, arguments and
//! types, and, for services marked `#[zrpc::service(schema)]`, a JSON Schema of each type.
//!
//! `#[zrpc::service]` generates [`NamedService::descriptor`](crate::NamedService::descriptor)
//! for every service, a [`Router`](crate::Router) reports the descriptors of the services it holds
//! ([`Router::descriptors`](crate::Router::descriptors)), and the built-in reflection service
//! (`zrpc.Reflection`, in `zrpc-transport`) answers them to any caller: a CLI, a gateway, a web
//! console. The same types are what that service sends, so they are plain serde values; their
//! JSON shape is documented in `docs/PROTOCOL.md` §18.
//!
//! What is described is what the macro sees: types as written in the trait (`rust`), the path
//! Rust gives them ([`std::any::type_name`], `path`), and a schema only where one was asked for.
//! Serde attributes on a user's types show in their schema (schemars reads them), not in the
//! names.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One service: its wire name and its methods, in declaration order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServiceDescriptor {
    /// The wire name, the `Service` in `"Service.method"`.
    pub name: String,
    /// The trait's name in Rust.
    pub rust_name: String,
    /// The trait's doc comment, without the `///`; empty when it has none.
    pub docs: String,
    /// The methods, in the order the trait declares them.
    pub methods: Vec<MethodDescriptor>,
}

impl ServiceDescriptor {
    /// A service with no docs and no methods yet.
    pub fn new(name: impl Into<String>, rust_name: impl Into<String>) -> ServiceDescriptor {
        ServiceDescriptor { name: name.into(), rust_name: rust_name.into(), docs: String::new(), methods: Vec::new() }
    }

    /// What is known of a service that only has names ([`NamedService`](crate::NamedService)
    /// implemented by hand): its methods' wire names, their types unknown (`"?"`).
    pub fn from_names(name: &str, methods: &[&str]) -> ServiceDescriptor {
        let mut service = ServiceDescriptor::new(name, "");
        service.methods = methods
            .iter()
            .map(|full| {
                let method = full.rsplit_once('.').map_or(*full, |(_, method)| method);
                MethodDescriptor::new(method, "", TypeDescriptor::unknown())
            })
            .collect();
        service
    }

    /// With `docs` as the service's doc comment.
    #[must_use]
    pub fn with_docs(mut self, docs: impl Into<String>) -> ServiceDescriptor {
        self.docs = docs.into();
        self
    }

    /// The method whose wire name is `name`.
    pub fn method(&self, name: &str) -> Option<&MethodDescriptor> {
        self.methods.iter().find(|method| method.name == name)
    }
}

/// One method of a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MethodDescriptor {
    /// The wire name, the `method` in `"Service.method"`.
    pub name: String,
    /// The method's name in Rust, which `#[zrpc(name = "...")]` may have made differ.
    pub rust_name: String,
    /// The method's doc comment, without the `///`; empty when it has none.
    pub docs: String,
    /// `#[zrpc(idempotent)]`: the method may run twice, so a retry may resend it.
    pub idempotent: bool,
    /// `#[zrpc(oneway)]`: no response is sent.
    pub oneway: bool,
    /// The arguments that travel (not the context), in declaration order: a call's payload is
    /// one object (struct) with these fields.
    pub args: Vec<ArgDescriptor>,
    /// What an OK response's payload holds: the declared return type, or the `T` of a
    /// `Result<T, Status>`; `()` for a method that returns nothing.
    pub result: TypeDescriptor,
    /// How the method fails, besides the framework's own errors.
    pub errors: ErrorKind,
    /// For a return type `Result<T, E>`: `T`.
    pub ok: Option<TypeDescriptor>,
    /// For a return type `Result<T, E>`: `E` (`Status` when [`errors`](Self::errors) is
    /// [`ErrorKind::Status`]).
    pub error: Option<TypeDescriptor>,
}

impl MethodDescriptor {
    /// A method with no arguments, answering `result`, which cannot fail but by the framework.
    pub fn new(name: impl Into<String>, rust_name: impl Into<String>, result: TypeDescriptor) -> MethodDescriptor {
        MethodDescriptor {
            name: name.into(),
            rust_name: rust_name.into(),
            docs: String::new(),
            idempotent: false,
            oneway: false,
            args: Vec::new(),
            result,
            errors: ErrorKind::None,
            ok: None,
            error: None,
        }
    }

    /// With `docs` as the method's doc comment.
    #[must_use]
    pub fn with_docs(mut self, docs: impl Into<String>) -> MethodDescriptor {
        self.docs = docs.into();
        self
    }

    /// With the `idempotent` and `oneway` flags.
    #[must_use]
    pub fn with_flags(mut self, idempotent: bool, oneway: bool) -> MethodDescriptor {
        self.idempotent = idempotent;
        self.oneway = oneway;
        self
    }

    /// With one more argument, after those already given.
    #[must_use]
    pub fn with_arg(mut self, name: impl Into<String>, ty: TypeDescriptor) -> MethodDescriptor {
        self.args.push(ArgDescriptor { name: name.into(), ty });
        self
    }

    /// Returning `Result<ok, error>`, whose errors are of `kind`.
    #[must_use]
    pub fn with_errors(mut self, kind: ErrorKind, ok: TypeDescriptor, error: TypeDescriptor) -> MethodDescriptor {
        self.errors = kind;
        self.ok = Some(ok);
        self.error = Some(error);
        self
    }

    /// The argument named `name`.
    pub fn arg(&self, name: &str) -> Option<&ArgDescriptor> {
        self.args.iter().find(|arg| arg.name == name)
    }
}

/// One argument of a method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ArgDescriptor {
    /// The argument's name, which is its key in a JSON or MessagePack payload.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: TypeDescriptor,
}

/// How a method fails, besides the framework's own errors (deadline, unknown method...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// It does not: the return type is not a `Result`.
    None,
    /// `Result<T, E>` with an application error `E`, which travels inside an OK response
    /// (`{"Ok":…}` or `{"Err":…}` in JSON).
    Application,
    /// `Result<T, Status>`: the handler fails the call with an error response; an OK
    /// response's payload is the `T` alone.
    Status,
}

/// A type: as the trait writes it, the path Rust gives it, and its JSON Schema when the service
/// asked for schemas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TypeDescriptor {
    /// The type as written in the trait: `Vec<String>`, `Result<i64, MathError>`.
    pub rust: String,
    /// The type's full path as [`std::any::type_name`] gives it (`alloc::string::String`); a
    /// description for people, not a stable identifier.
    pub path: String,
    /// The type's JSON Schema, self-contained (`$defs` inside), for services marked
    /// `#[zrpc::service(schema)]`; `None` otherwise.
    pub schema: Option<Schema>,
}

impl TypeDescriptor {
    /// `T`, written `rust` in the trait, without a schema.
    pub fn of<T: ?Sized>(rust: impl Into<String>) -> TypeDescriptor {
        TypeDescriptor { rust: rust.into(), path: std::any::type_name::<T>().to_owned(), schema: None }
    }

    /// A type nothing is known of, written `?`.
    pub fn unknown() -> TypeDescriptor {
        TypeDescriptor { rust: "?".to_owned(), path: "?".to_owned(), schema: None }
    }

    /// With `schema`.
    #[must_use]
    pub fn with_schema(mut self, schema: Schema) -> TypeDescriptor {
        self.schema = Some(schema);
        self
    }
}

/// A JSON Schema document, kept as its JSON text.
///
/// It travels as the schema itself in JSON (an object inside the descriptor, not a string), and
/// as its text in the binary codecs, which cannot carry a JSON value of unknown shape: postcard
/// cannot, and a MessagePack map would lose nothing but gain nothing either.
#[derive(Clone, PartialEq, Eq)]
pub struct Schema(String);

impl Schema {
    /// A schema from its JSON text, which is not checked here: it is checked when the schema is
    /// sent in JSON.
    pub fn from_json(text: impl Into<String>) -> Schema {
        Schema(text.into())
    }

    /// The schema's JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The schema as a JSON value.
    ///
    /// # Errors
    /// When the text is not JSON.
    #[cfg(feature = "json")]
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schema").field(&self.0).finish()
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Schema {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Among zrpc's codecs only JSON is human-readable.
        #[cfg(feature = "json")]
        if serializer.is_human_readable() {
            let value = self.to_value().map_err(|e| serde::ser::Error::custom(format_args!("a schema: {e}")))?;
            return value.serialize(serializer);
        }
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Schema, D::Error> {
        #[cfg(feature = "json")]
        if deserializer.is_human_readable() {
            return serde_json::Value::deserialize(deserializer).map(|value| Schema(value.to_string()));
        }
        String::deserialize(deserializer).map(Schema)
    }
}

/// The JSON Schema of `T`, self-contained, in schemars' default dialect (JSON Schema 2020-12).
#[cfg(feature = "schema")]
pub fn schema_for<T: ?Sized + schemars::JsonSchema>() -> Schema {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
    Schema(schema.as_value().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CodecId;

    fn described() -> ServiceDescriptor {
        let mut service = ServiceDescriptor::new("pkg.Greeter", "Greeter").with_docs("Greets.");
        service.methods.push(
            MethodDescriptor::new("add", "add", TypeDescriptor::of::<Result<i64, String>>("Result<i64, String>"))
                .with_arg("a", TypeDescriptor::of::<i64>("i64").with_schema(Schema::from_json(r#"{"type":"integer"}"#)))
                .with_errors(ErrorKind::Application, TypeDescriptor::of::<i64>("i64"), TypeDescriptor::unknown()),
        );
        service
    }

    #[test]
    fn a_descriptor_survives_every_codec() {
        let service = described();
        for codec in CodecId::enabled().filter(|c| *c != CodecId::Raw) {
            let bytes = codec.encode_to_bytes(&service).expect("encodes");
            let back: ServiceDescriptor = codec.decode_shared(&bytes).expect("decodes");
            assert_eq!(back, service, "{codec}");
        }
    }

    #[cfg(feature = "json")]
    #[test]
    fn in_json_a_schema_is_an_object_and_the_error_kind_a_word() {
        let json = serde_json::to_value(described()).expect("encodes");
        let method = &json["methods"][0];
        assert_eq!(method["args"][0]["type"]["schema"]["type"], "integer");
        assert_eq!(method["errors"], "application");
        assert_eq!(method["result"]["path"], std::any::type_name::<Result<i64, String>>());
        assert!(method["ok"]["schema"].is_null());
    }

    #[test]
    fn a_service_known_by_names_only_lists_its_methods() {
        let service = ServiceDescriptor::from_names("S", &["S.a", "S.b"]);
        let names: Vec<_> = service.methods.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(service.methods[0].result.rust, "?");
    }
}
