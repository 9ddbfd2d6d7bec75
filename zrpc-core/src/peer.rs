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

use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use tower::Service;

use crate::request::{Request, Response};
use crate::status::Status;

/// What a transport provides for a [`Peer`]: a way to send calls over one connection.
pub trait Link: fmt::Debug + Send + Sync + 'static {
    /// Sends `request` to the peer; the future ends with its answer, its deadline, or the
    /// connection's end. Dropping the future cancels the call.
    fn call(&self, request: Request) -> BoxFuture<'static, Result<Response, Status>>;

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
    pub fn send(&self, request: Request) -> BoxFuture<'static, Result<Response, Status>> {
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
    type Future = BoxFuture<'static, Result<Response, Status>>;

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

/// The link of a peer that is not there.
#[derive(Debug)]
struct Detached;

impl Link for Detached {
    fn call(&self, request: Request) -> BoxFuture<'static, Result<Response, Status>> {
        let status = Status::unavailable(format!(
            "{} cannot be sent: the call this context belongs to did not come over a connection, so there is no \
             peer to call back",
            request.method()
        ));
        Box::pin(std::future::ready(Err(status.mark_unprocessed())))
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
