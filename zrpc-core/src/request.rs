//! The request and response envelopes every middleware sees.
//!
//! The generated client encodes typed arguments to bytes *before* the tower stack and decodes
//! the result after it, so a middleware handles a cheap-to-clone, codec-free [`Request`]:
//! retries and hedges resend the very same bytes.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::CodecId;
use crate::context::Context;
use crate::metadata::Metadata;

/// A method's wire name, `"Service.method"`: a `&'static str` from generated code, or a shared
/// string built from a frame when the server does not know the name.
#[derive(Clone)]
pub struct Method(MethodRepr);

#[derive(Clone)]
enum MethodRepr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Method {
    /// The full wire name.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            MethodRepr::Static(s) => s,
            MethodRepr::Shared(s) => s,
        }
    }

    /// The part before the last `.`: the service name (empty when there is no `.`).
    pub fn service(&self) -> &str {
        self.as_str().rsplit_once('.').map_or("", |(service, _)| service)
    }

    /// The name, when it is a `&'static str`: one the process defines (a generated client's, a
    /// method a server serves), never one a peer made up. Observability labels only those.
    pub fn as_static(&self) -> Option<&'static str> {
        match &self.0 {
            MethodRepr::Static(s) => Some(s),
            MethodRepr::Shared(_) => None,
        }
    }

    /// The part after the last `.`: the method's own name.
    pub fn name(&self) -> &str {
        let full = self.as_str();
        full.rsplit_once('.').map_or(full, |(_, name)| name)
    }
}

impl From<&'static str> for Method {
    fn from(name: &'static str) -> Method {
        Method(MethodRepr::Static(name))
    }
}

impl From<Arc<str>> for Method {
    fn from(name: Arc<str>) -> Method {
        Method(MethodRepr::Shared(name))
    }
}

impl From<String> for Method {
    fn from(name: String) -> Method {
        Method(MethodRepr::Shared(name.into()))
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Method) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Method {}

impl PartialEq<str> for Method {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call on its way to a server: which method, its context, the encoded arguments and how
/// they were encoded.
#[derive(Clone, Debug)]
pub struct Request {
    method: Method,
    ctx: Context,
    payload: Bytes,
    codec: CodecId,
    oneway: bool,
    idempotent: bool,
}

// The builders are `#[inline]`: a `Request` is a few hundred bytes, and out of line every step
// of a builder chain copies all of it (a measurable share of a call's time in the profile).
impl Request {
    /// A request for `method` carrying `payload` encoded with the default codec.
    #[inline]
    pub fn new(method: impl Into<Method>, payload: Bytes) -> Request {
        Request {
            method: method.into(),
            ctx: Context::default(),
            payload,
            codec: CodecId::default(),
            oneway: false,
            idempotent: false,
        }
    }

    /// A request for `method` in context `ctx`: [`Request::new`] and then
    /// [`with_ctx`](Request::with_ctx), without a default context made and dropped in between
    /// (both sides of every call build their request this way).
    #[inline]
    pub fn from_parts(method: impl Into<Method>, ctx: Context, payload: Bytes) -> Request {
        Request { method: method.into(), ctx, payload, codec: CodecId::default(), oneway: false, idempotent: false }
    }

    /// The method's wire name.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The call's context.
    pub fn ctx(&self) -> &Context {
        &self.ctx
    }

    /// The call's context, to change it.
    pub fn ctx_mut(&mut self) -> &mut Context {
        &mut self.ctx
    }

    /// Replaces the context.
    #[inline]
    pub fn with_ctx(mut self, ctx: Context) -> Request {
        self.ctx = ctx;
        self
    }

    /// The encoded arguments.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Replaces the payload, keeping everything else.
    #[inline]
    pub fn with_payload(mut self, payload: Bytes) -> Request {
        self.payload = payload;
        self
    }

    /// The payload, to replace in place.
    pub fn payload_mut(&mut self) -> &mut Bytes {
        &mut self.payload
    }

    /// How the payload is encoded; the server answers with the same codec.
    pub fn codec(&self) -> CodecId {
        self.codec
    }

    /// Sets the codec the payload was encoded with.
    #[inline]
    pub fn with_codec(mut self, codec: CodecId) -> Request {
        self.codec = codec;
        self
    }

    /// Whether the caller expects no response (`#[zrpc(oneway)]`).
    pub fn is_oneway(&self) -> bool {
        self.oneway
    }

    /// Marks the call as oneway.
    #[inline]
    pub fn with_oneway(mut self, oneway: bool) -> Request {
        self.oneway = oneway;
        self
    }

    /// Whether the method may safely run twice (`#[zrpc(idempotent)]`), which lets retries
    /// resend it after a response was lost.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// Marks the call as idempotent.
    #[inline]
    pub fn with_idempotent(mut self, idempotent: bool) -> Request {
        self.idempotent = idempotent;
        self
    }

    /// Splits the request into its context and the rest, e.g. to hand the context to a handler.
    #[inline]
    pub fn into_parts(self) -> (Context, Bytes) {
        (self.ctx, self.payload)
    }
}

/// A successful answer: response metadata and the encoded result.
///
/// The result may itself be an application error (`Result<T, E>` methods): the framework does
/// not look inside the payload.
#[derive(Clone, Debug, Default)]
pub struct Response {
    metadata: Metadata,
    payload: Bytes,
}

impl Response {
    /// A response carrying `payload`.
    pub fn new(payload: Bytes) -> Response {
        Response { metadata: Metadata::default(), payload }
    }

    /// The encoded result.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Takes the encoded result out.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// The encoded result, to replace in place.
    pub fn payload_mut(&mut self) -> &mut Bytes {
        &mut self.payload
    }

    /// Response metadata set by the server.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Response metadata, to add entries.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_splits_service_and_name_at_the_last_dot() {
        let m = Method::from("pkg.Greeter.hello");
        assert_eq!((m.service(), m.name()), ("pkg.Greeter", "hello"));
        let bare = Method::from(String::from("hello"));
        assert_eq!((bare.service(), bare.name()), ("", "hello"));
        assert_eq!(m, Method::from(Arc::<str>::from("pkg.Greeter.hello")));
    }

    #[test]
    fn from_parts_is_new_with_the_context() {
        let ctx = Context::new().with_metadata("tenant", "blue");
        let built = Request::from_parts("S.m", ctx.clone(), Bytes::from_static(b"args"));
        let chained = Request::new("S.m", Bytes::from_static(b"args")).with_ctx(ctx);
        assert_eq!(format!("{built:?}"), format!("{chained:?}"));
        assert_eq!(built.ctx().metadata().get("tenant"), Some(&b"blue"[..]));
        let (ctx, payload) = built.into_parts();
        assert_eq!((ctx.metadata().len(), &payload[..]), (1, &b"args"[..]));
    }
}
