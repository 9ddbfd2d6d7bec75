//! The other end of a connection, to call: a [`Peer`].
//!
//! Every zrpc connection carries calls both ways: the side that connected may serve too, and
//! the side that accepted may call it back on the same connection. A handler finds the end that
//! called it in its context, [`Context::peer`](crate::Context::peer), and calls it like any
//! endpoint, through a generated client:
//!
//! ```text
//! async fn subscribe(&self, ctx: &Context, topic: String) -> Result<(), Status> {
//!     ListenerClient::new(ctx.peer()).notify(format!("subscribed to {topic}")).await
//! }
//! ```
//!
//! or, without a generated client, as a plain service:
//!
//! ```
//! use tower::ServiceExt;
//! use zrpc_core::{Context, Request, Response, Status};
//!
//! async fn call_back(ctx: &Context, payload: bytes::Bytes) -> Result<Response, Status> {
//!     ctx.peer().oneshot(Request::new("Listener.notify", payload)).await
//! }
//! ```
//!
//! A `Peer` is cheap to clone (one reference count), a `tower::Service<Request>`, and usable from
//! any task for as long as the connection lives. It does not keep the connection open: the
//! connection lives as long as its owner (a server until the peer leaves or the server stops; a
//! channel while its clones live), and calls through a peer whose connection has closed fail at
//! once with `Unavailable`, marked unprocessed.
//!
//! A transport provides the connection side by implementing [`Link`]; users never need to.
//!
//! A call's future is type-erased, since the link is: [`PeerCall::new`] boxes any future. A
//! transport may instead box its own [`LinkCall`] ([`PeerCall::linked`]), whose box goes back
//! to it when the call's [`PeerCall`] is dropped, so that it can keep it for a later call.
//! zrpc's connections do (a few hundred per thread at most), so a call back allocates nothing
//! of its own beyond what a call forward does.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use tower::Service;

use crate::request::{Request, Response};
use crate::status::Status;

/// What a transport provides for a [`Peer`]: a way to send calls over one connection.
pub trait Link: fmt::Debug + Send + Sync + 'static {
    /// Sends `request` to the peer; the future ends with its answer, its deadline, or the
    /// connection's end. Dropping the future cancels the call.
    fn call(&self, request: Request) -> PeerCall;

    /// The peer's announced name, once the connection's handshake is done.
    fn name(&self) -> Option<&str>;

    /// Whether new calls can go over the connection now: it is open and neither end is
    /// shutting it down.
    fn is_connected(&self) -> bool;
}

/// The other end of a connection, to call; see the [module docs](self).
#[derive(Clone)]
pub struct Peer {
    link: Arc<dyn Link>,
}

impl Peer {
    /// A peer reached through `link`.
    pub fn new(link: impl Link) -> Peer {
        Peer { link: Arc::new(link) }
    }

    /// A peer for a context that did not come over a connection: every call fails with
    /// `Unavailable`, unprocessed.
    pub fn detached() -> Peer {
        Peer::new(Detached)
    }

    /// The peer's announced name (`""` until the handshake is done, or when detached).
    pub fn name(&self) -> &str {
        self.link.name().unwrap_or("")
    }

    /// Whether new calls can go to the peer now.
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// Sends `request` to the peer; [`Service::call`] without the `&mut`.
    pub fn send(&self, request: Request) -> PeerCall {
        self.link.call(request)
    }

    /// Whether `self` and `other` reach the same connection.
    pub fn same_connection(&self, other: &Peer) -> bool {
        Arc::ptr_eq(&self.link, &other.link)
    }
}

impl Service<Request> for Peer {
    type Response = Response;
    type Error = Status;
    type Future = PeerCall;

    /// Always ready: calls queue in the connection, which applies flow control per call.
    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.send(request)
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Peer").field(&self.link).finish()
    }
}

/// A call in flight over a [`Link`], as the transport boxes it for a [`PeerCall`].
pub trait LinkCall: Future<Output = Result<Response, Status>> + Send + Unpin + 'static {
    /// Takes back the call's box when its [`PeerCall`] is dropped, whether the call ended or
    /// not. The default drops it, which cancels a call still in flight as dropping any call's
    /// future does; a transport may instead drop what the box holds, with the same effect, and
    /// keep the box for a later call.
    fn recycle(self: Box<Self>) {}
}

/// The answer to a call through a [`Peer`]: the future [`Link::call`] returns.
///
/// # Cancel safety
/// Dropping it before it completes cancels the call: the peer is told, and its handler's
/// future is dropped.
///
/// # Panics
/// When polled again after it completed, as futures may.
#[must_use = "a call is cancelled when its future is dropped"]
pub struct PeerCall {
    state: CallState,
}

enum CallState {
    /// Sent; the transport's future waits for the answer, and takes its box back.
    Linked(Box<dyn LinkCall>),
    /// Sent; any future waits for the answer ([`PeerCall::new`]).
    Boxed(Pin<Box<dyn Future<Output = Result<Response, Status>> + Send>>),
    /// Ended before it was sent (the link was closed), or taken.
    Ended(Option<Result<Response, Status>>),
}

impl PeerCall {
    /// A call that `call` carries on, any future: it is boxed, and the box freed with it. For a
    /// transport's own future that keeps its box for the next call, see [`PeerCall::linked`].
    pub fn new(call: impl Future<Output = Result<Response, Status>> + Send + 'static) -> PeerCall {
        PeerCall { state: CallState::Boxed(Box::pin(call)) }
    }

    /// A call that `call` carries on, boxed by the transport, which takes the box back through
    /// [`LinkCall::recycle`] once the `PeerCall` is dropped.
    pub fn linked(call: Box<dyn LinkCall>) -> PeerCall {
        PeerCall { state: CallState::Linked(call) }
    }

    /// A call that ended before it was sent, with `result`: no box.
    pub fn ended(result: Result<Response, Status>) -> PeerCall {
        PeerCall { state: CallState::Ended(Some(result)) }
    }
}

impl Future for PeerCall {
    type Output = Result<Response, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            CallState::Linked(call) => Pin::new(&mut **call).poll(cx),
            CallState::Boxed(call) => call.as_mut().poll(cx),
            CallState::Ended(result) => {
                Poll::Ready(result.take().expect("a PeerCall is not polled after it completed"))
            }
        }
    }
}

impl Drop for PeerCall {
    fn drop(&mut self) {
        if let CallState::Linked(call) = std::mem::replace(&mut self.state, CallState::Ended(None)) {
            call.recycle();
        }
    }
}

impl fmt::Debug for PeerCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            CallState::Linked(_) | CallState::Boxed(_) => "in flight",
            CallState::Ended(Some(_)) => "ended",
            CallState::Ended(None) => "taken",
        };
        f.debug_tuple("PeerCall").field(&state).finish()
    }
}

/// The link of a peer that is not there.
#[derive(Debug)]
struct Detached;

impl Link for Detached {
    fn call(&self, request: Request) -> PeerCall {
        let status = Status::unavailable(format!(
            "{} cannot be sent: the call this context belongs to did not come over a connection, so there is no \
             peer to call back",
            request.method()
        ));
        PeerCall::ended(Err(status.mark_unprocessed()))
    }

    fn name(&self) -> Option<&str> {
        None
    }

    fn is_connected(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::Code;

    /// A transport's link that answers every call with its payload, from a plain future.
    #[derive(Debug)]
    struct Echo;

    impl Link for Echo {
        fn call(&self, request: Request) -> PeerCall {
            PeerCall::new(async move { Ok(Response::new(request.payload().clone())) })
        }

        fn name(&self) -> Option<&str> {
            Some("echo")
        }

        fn is_connected(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn a_link_may_answer_with_any_future() {
        let peer = Peer::new(Echo);
        let payload = bytes::Bytes::from_static(b"ping");
        let response = peer.clone().oneshot(Request::new("Echo.echo", payload.clone())).await.expect("answered");
        assert_eq!(response.payload(), &payload);
        assert_eq!(format!("{:?}", peer.send(Request::new("Echo.echo", payload))), r#"PeerCall("in flight")"#);
    }

    #[tokio::test]
    async fn a_detached_peer_refuses_calls_as_unprocessed() {
        let peer = Peer::detached();
        assert!(!peer.is_connected());
        assert_eq!(peer.name(), "");
        let status = peer.oneshot(Request::new("Notify.ping", bytes::Bytes::new())).await.expect_err("refused");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.is_unprocessed());
        assert!(status.message().contains("Notify.ping"), "{status}");
    }
}
