//! Calling by name: any method of any server, arguments and results as JSON text, for tools
//! that have no generated client (a gateway, a CLI, a console, a script's test).
//!
//! [`DynamicClient`] sits over any `tower::Service<Request>`, a [`Channel`](crate::Channel) or a
//! [`Client`], and calls `"Service.method"` with the JSON it is given, in the JSON codec
//! (docs/PROTOCOL.md §9): the server decodes and validates the arguments, so a mistake in them
//! is the server's `InvalidArgument`, worded by the server, and the arguments are never parsed
//! twice. What JSON alone cannot tell, the client learns from the server's reflection
//! (`zrpc.Reflection`, PROTOCOL.md §18) and caches:
//!
//! 1. whether the method is **oneway** (sent without waiting: [`JsonAnswer::Sent`]);
//! 2. whether it is **idempotent**, so that a `Client`'s retries may resend it;
//! 3. whether it fails with **application errors**: its OK answer is then `{"Ok":v}` or
//!    `{"Err":e}`, split here into [`JsonAnswer::Ok`] and [`JsonAnswer::Err`] without
//!    re-encoding (slices of the received frame, the value checked to be one JSON value).
//!
//! The catalogue is read with `list` in JSON (readable across zrpc versions) on the first call,
//! and read again when a method is missing from it, at most once a second
//! ([`DynamicClient::reread_after`]), so a caller asking for methods that do not exist cannot
//! turn every call into two. [`DynamicClient::call_with_metadata`] answers the response
//! metadata too (a gateway turns it into headers); [`DynamicClient::call`] drops it, which costs
//! nothing, as it is a slice of the received frame. A server without reflection
//! (`.reflection(false)`), or one that refuses it, is called plainly: two-way, not idempotent,
//! its answer passed through as [`JsonAnswer::Ok`].
//!
//! [`Target`] parses what such a tool is pointed at (addresses, `dns://`, `etcd://`) into a
//! [`Client`], and [`parse_duration`] reads timeouts as people type them.
//!
//! ```
//! use bytes::Bytes;
//! use zrpc_core::Context;
//! use zrpc_transport::dynamic::{DynamicClient, JsonAnswer};
//! use zrpc_transport::{Channel, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder().bind("tcp://127.0.0.1:0").await?;
//! let channel = Channel::builder(server.local_addr().clone()).connect_lazy();
//! tokio::spawn(server.serve());
//!
//! let client = DynamicClient::new(channel);
//! let answer = client.call("zrpc.Reflection.describe", Bytes::from(r#"{"name":"zrpc.Reflection.list"}"#), Context::new()).await?;
//! let JsonAnswer::Ok(json) = answer else { panic!("describe answers") };
//! assert!(json.starts_with(br#"{"name":"zrpc.Reflection""#));
//! # Ok(())
//! # }
//! ```

mod duration;
mod target;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use zrpc_core::descriptor::{ErrorKind, ServiceDescriptor};
use zrpc_core::{Code, CodecId, Context, Metadata, Request, Response, Status};

pub use duration::{DurationError, parse_duration};
pub use target::{Target, TargetError};

#[cfg(doc)]
use crate::Client;

/// The soonest the catalogue is read again after a call named a method it lacked, unless told
/// otherwise ([`DynamicClient::reread_after`]).
const REREAD_AFTER: Duration = Duration::from_secs(1);

/// Calls any method by its wire name with JSON arguments; see the [module docs](self). Cheap to
/// clone: clones share the catalogue.
pub struct DynamicClient<S> {
    inner: S,
    catalogue: Arc<Catalogue>,
    reread_after: Duration,
}

/// What a call answered, as JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonAnswer {
    /// The method's result; for a method with application errors, the `T` of its `Ok(T)`.
    Ok(Bytes),
    /// An application error: the `E` of a `Result<T, E>` method's `Err(E)` (PROTOCOL.md §9).
    Err(Bytes),
    /// A oneway method's request was sent; no answer will come.
    Sent,
}

/// How to call a method, from reflection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flags {
    oneway: bool,
    idempotent: bool,
    application_errors: bool,
}

#[derive(Debug, Default)]
struct Catalogue {
    /// Read on every call, written when the catalogue is read: a read lock, so that callers on
    /// other threads do not queue behind each other.
    state: RwLock<Known>,
    /// Held while the catalogue is read, so that concurrent misses read it once.
    reading: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Known {
    /// Keyed by the full wire name, kept as an `Arc<str>` that requests share: a known method
    /// is called without allocating its name.
    methods: HashMap<Arc<str>, Flags>,
    /// When the catalogue was last read (or found unreadable); `None` before the first time.
    read_at: Option<Instant>,
}

impl<S> DynamicClient<S>
where
    S: Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
    S::Future: Send,
{
    /// Calls through `inner`.
    pub fn new(inner: S) -> DynamicClient<S> {
        DynamicClient { inner, catalogue: Arc::default(), reread_after: REREAD_AFTER }
    }

    /// Reads the catalogue again, when a call names a method missing from it, only once
    /// `interval` has passed since the last read (default 1 s). Longer spares a server that
    /// is asked for methods it lacks; shorter finds methods a server gained sooner.
    #[must_use]
    pub fn reread_after(mut self, interval: Duration) -> DynamicClient<S> {
        self.reread_after = interval;
        self
    }

    /// The service calls go through.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Every service the server serves, with its methods (`zrpc.Reflection.list`, in JSON).
    ///
    /// # Errors
    /// The call's status: `NotFound` when the server serves no reflection.
    pub async fn list(&self, ctx: Context) -> Result<Vec<ServiceDescriptor>, Status> {
        let services: Vec<ServiceDescriptor> =
            self.reflect("zrpc.Reflection.list", Bytes::from_static(b"{}"), ctx).await?;
        self.learn(&services);
        Ok(services)
    }

    /// One service (`"Greeter"`) or one method (`"Greeter.add"`: its service with that method
    /// alone), from `zrpc.Reflection.describe` in JSON.
    ///
    /// # Errors
    /// The call's status: `NotFound` naming what there is when there is no such service or
    /// method, or when the server serves no reflection.
    pub async fn describe(&self, name: &str, ctx: Context) -> Result<ServiceDescriptor, Status> {
        let args = serde_json::to_vec(&serde_json::json!({ "name": name }))
            .map_err(|e| Status::internal(format!("encoding describe's argument: {e}")))?;
        let service: ServiceDescriptor = self.reflect("zrpc.Reflection.describe", args.into(), ctx).await?;
        self.learn(std::slice::from_ref(&service));
        Ok(service)
    }

    /// Calls `method` (`"Service.method"`) with `args`, the JSON text of its arguments (an object
    /// keyed by argument name, or an array in order; empty bytes mean none, sent as `{}`).
    ///
    /// # Errors
    /// The call's status, as a generated client would get it; `DataLoss` when a method with
    /// application errors answers something other than `{"Ok":…}` or `{"Err":…}`.
    pub async fn call(&self, method: &str, args: Bytes, ctx: Context) -> Result<JsonAnswer, Status> {
        // Dropping the metadata costs nothing: as it arrived it is a slice of the response frame.
        self.call_with_metadata(method, args, ctx).await.map(|(answer, _)| answer)
    }

    /// [`call`](Self::call), keeping the response metadata the server set beside the answer
    /// (empty for [`JsonAnswer::Sent`]: a oneway call has no response). It is the frame's
    /// metadata block as it arrived, read in place ([`Metadata`]), so keeping it copies nothing.
    ///
    /// # Errors
    /// Those of [`call`](Self::call).
    pub async fn call_with_metadata(
        &self,
        method: &str,
        args: Bytes,
        ctx: Context,
    ) -> Result<(JsonAnswer, Metadata), Status> {
        let (name, flags) = self.flags(method, &ctx).await;
        let args = if args.is_empty() { Bytes::from_static(b"{}") } else { args };
        let request = Request::new(name, args)
            .with_codec(CodecId::Json)
            .with_ctx(ctx)
            .with_oneway(flags.oneway)
            .with_idempotent(flags.idempotent);
        let mut response = self.inner.clone().oneshot(request).await?;
        let metadata = std::mem::take(response.metadata_mut());
        let payload = response.into_payload();
        let answer = if flags.oneway {
            JsonAnswer::Sent
        } else if flags.application_errors {
            split_result(method, payload)?
        } else {
            JsonAnswer::Ok(payload)
        };
        Ok((answer, metadata))
    }

    /// Calls a reflection method in JSON and decodes its answer.
    async fn reflect<T: serde::de::DeserializeOwned>(
        &self,
        method: &'static str,
        args: Bytes,
        ctx: Context,
    ) -> Result<T, Status> {
        let request = Request::from_parts(method, ctx, args).with_codec(CodecId::Json).with_idempotent(true);
        let payload = self.inner.clone().oneshot(request).await?.into_payload();
        serde_json::from_slice(&payload).map_err(|e| Status::data_loss(format!("decoding the answer of {method}: {e}")))
    }

    /// The name to send and the flags of `method`, reading the catalogue when it is missing and
    /// the last read is old enough; plain flags when the server does not say.
    async fn flags(&self, method: &str, ctx: &Context) -> (Arc<str>, Flags) {
        let stale = |known: &Known| known.read_at.is_none_or(|at| at.elapsed() >= self.reread_after);
        if let Some(known) = self.known(method) {
            return known;
        }
        let _reading = self.catalogue.reading.lock().await;
        {
            let known = self.catalogue.state.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((name, flags)) = known.methods.get_key_value(method) {
                return (name.clone(), *flags);
            }
            if !stale(&known) {
                return (method.into(), Flags::default());
            }
        }
        // The caller's context (deadline, metadata such as credentials) bounds the read too.
        let mut reflect_ctx = ctx.clone();
        // The read is a call of its own: it must not fill the caller's attempt record.
        reflect_ctx.set_pick_record(None);
        match self.list(reflect_ctx).await {
            Ok(_) => {}
            Err(status) => tracing::debug!(%status, code = ?status.code(), "no reflection; calling methods plainly"),
        }
        let mut known = self.catalogue.state.write().unwrap_or_else(PoisonError::into_inner);
        known.read_at = Some(Instant::now());
        match known.methods.get_key_value(method) {
            Some((name, flags)) => (name.clone(), *flags),
            None => (method.into(), Flags::default()),
        }
    }

    fn known(&self, method: &str) -> Option<(Arc<str>, Flags)> {
        let known = self.catalogue.state.read().unwrap_or_else(PoisonError::into_inner);
        known.methods.get_key_value(method).map(|(name, flags)| (name.clone(), *flags))
    }

    /// Records the flags of every method in `services`.
    fn learn(&self, services: &[ServiceDescriptor]) {
        let mut known = self.catalogue.state.write().unwrap_or_else(PoisonError::into_inner);
        for service in services {
            for method in &service.methods {
                let flags = Flags {
                    oneway: method.oneway,
                    idempotent: method.idempotent,
                    application_errors: method.errors == ErrorKind::Application,
                };
                known.methods.insert(format!("{}.{}", service.name, method.name).into(), flags);
            }
        }
    }
}

/// `{"Ok":v}` or `{"Err":e}`, as slices of `payload`: the object's one key, then its value,
/// which must be exactly one JSON value (so a second key is refused with it).
fn split_result(method: &str, payload: Bytes) -> Result<JsonAnswer, Status> {
    let refused = |why: &str| {
        Status::new(Code::DataLoss, format!("{method} answered neither {{\"Ok\":…}} nor {{\"Err\":…}}: {why}"))
    };
    let text = payload.trim_ascii();
    let inner = text
        .strip_prefix(b"{")
        .and_then(|rest| rest.strip_suffix(b"}"))
        .ok_or_else(|| refused("not an object"))?
        .trim_ascii_start();
    let (ok, rest) = if let Some(rest) = inner.strip_prefix(br#""Ok""#) {
        (true, rest)
    } else if let Some(rest) = inner.strip_prefix(br#""Err""#) {
        (false, rest)
    } else {
        return Err(refused("its key is not \"Ok\" or \"Err\""));
    };
    let value = rest.trim_ascii_start().strip_prefix(b":").ok_or_else(|| refused("no ':' after the key"))?.trim_ascii();
    serde_json::from_slice::<serde::de::IgnoredAny>(value).map_err(|e| refused(&e.to_string()))?;
    let value = payload.slice_ref(value);
    Ok(if ok { JsonAnswer::Ok(value) } else { JsonAnswer::Err(value) })
}

impl<S: Clone> Clone for DynamicClient<S> {
    fn clone(&self) -> DynamicClient<S> {
        DynamicClient { inner: self.inner.clone(), catalogue: self.catalogue.clone(), reread_after: self.reread_after }
    }
}

impl<S> fmt::Debug for DynamicClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = self.catalogue.state.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("DynamicClient").field("methods_known", &known.methods.len()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_split_into_slices_of_the_frame() {
        let payload = Bytes::from_static(br#"{"Ok":{"a":[1,2]}}"#);
        assert_eq!(split_result("S.m", payload.clone()), Ok(JsonAnswer::Ok(Bytes::from_static(br#"{"a":[1,2]}"#))));
        let error = Bytes::from_static(br#"{"Err":"Overflow"}"#);
        assert_eq!(split_result("S.m", error), Ok(JsonAnswer::Err(Bytes::from_static(br#""Overflow""#))));
        let spaced = Bytes::from_static(b" { \"Err\" : null } ");
        assert_eq!(split_result("S.m", spaced), Ok(JsonAnswer::Err(Bytes::from_static(b"null"))));
    }

    #[test]
    fn anything_else_is_data_loss() {
        for payload in [
            &b"42"[..],
            br#"{"Maybe":1}"#,
            br#"{"Ok":1,"Err":2}"#,
            b"{",
            b"",
            br#"{"Ok"}"#,
            br#"{"Ok":}"#,
            br#"["Ok",1]"#,
        ] {
            let status = split_result("S.m", Bytes::copy_from_slice(payload)).expect_err("refused");
            assert_eq!(status.code(), Code::DataLoss, "{payload:?}");
            assert!(status.message().contains("S.m answered neither"), "{}", status.message());
        }
    }
}
