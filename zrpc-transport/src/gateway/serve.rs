//! Serving a [`Gateway`](super::Gateway): TCP connections accepted by hand, HTTP/1.1 spoken on
//! each by hyper, and every call answered without the router.
//!
//! [`axum::serve`] costs a call more than it needs: it detects the protocol of every connection
//! (HTTP/2 is compiled into hyper-util's automatic builder even when unused) through a rewinding
//! reader, and routes each request through axum's router and extractors, which allocate the
//! path's segments. Profiled under `wrk -c100` those were about a tenth of the gateway's own
//! time. Here a connection is hyper's HTTP/1.1 connection alone (keep-alive, writev), and a
//! `POST /{service}/{method}` whose path needs no percent-decoding goes straight to the call;
//! every other request, and calls with `%` in their path, go through the same router that
//! [`into_router`](super::GatewayBuilder::into_router) gives, so both answer alike.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Method, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::stall::{Stall, WriteBounded};
use super::tracker::{Close, Tracker};
use super::{Shared, call};

/// hyper's smallest read buffer, below which its builder panics.
pub(crate) const MIN_HEADER_BYTES: usize = 8192;

/// How each connection is served: what it waits for and what it reads before a request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Connections {
    /// How long a connection waits for a request's head; see `GatewayBuilder::header_timeout`.
    pub(crate) header_timeout: Duration,
    /// The most bytes of a request's head read, at least [`MIN_HEADER_BYTES`] (the builder
    /// sees to it); see `GatewayBuilder::max_header_bytes`. Also
    /// about the most the connection's read buffer holds of a body at once, which hyper
    /// streams.
    pub(crate) max_header_bytes: usize,
    /// How long a connection's client may take none of an answer's bytes; see
    /// `GatewayBuilder::write_timeout`.
    pub(crate) write_timeout: Duration,
}

/// Serves `listener` until `signal` completes, then stops accepting, lets each connection
/// finish the request it is answering, and returns once all have closed. At most `tracker`'s
/// bound of connections are served at once (see [`super::tracker`]); one more may wait,
/// accepted, for room.
pub(crate) async fn serve<F>(
    listener: TcpListener,
    router: Router,
    shared: Arc<Shared>,
    connections: Connections,
    tracker: Arc<Tracker>,
    signal: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut signal = pin!(signal);
    loop {
        let tcp = tokio::select! {
            accepted = async {
                // Room is made once a connection is there to take it: not for one that may
                // never come.
                let accepted = listener.accept().await;
                if accepted.is_ok() {
                    tracker.make_room().await;
                }
                accepted
            } => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    back_off(&e).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        // Answers are small and written whole: Nagle would hold each back for the peer's ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::trace!(error = %e, "could not set TCP_NODELAY");
        }
        let opened = tracker.opened();
        let service = {
            let (router, shared, tracker, id) = (router.clone(), shared.clone(), tracker.clone(), opened.id());
            hyper::service::service_fn(move |request| {
                let answering = tracker.request_started(id);
                let answer = answer(router.clone(), shared.clone(), request);
                async move {
                    let answer = answer.await;
                    drop(answering);
                    answer
                }
            })
        };
        let stall = Arc::new(Stall::default());
        let io = WriteBounded::new(tcp, connections.write_timeout, stall.clone(), tracker.clone());
        // The timer is what makes hyper keep its header timeout (without one it warns and
        // waits for ever), which also closes a connection left idle between requests.
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(connections.header_timeout)
            // The head's bound is exact; the buffer's is hyper's soft one (a read may fill
            // the room an allocation happens to have), so that it stays near the head's.
            .max_header_size(connections.max_header_bytes)
            .max_buf_size(connections.max_header_bytes)
            .serve_connection(TokioIo::new(io), service);
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = opened.told_to_close() => match opened.how_to_close() {
                    Close::Now => return,
                    Close::AfterAnswer => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                    Close::AfterAnswerWhileTaken => {
                        connection.as_mut().graceful_shutdown();
                        tokio::select! {
                            ended = connection.as_mut() => ended,
                            () = stall.stalled() => return,
                        }
                    }
                },
            };
            if let Err(e) = ended {
                tracing::trace!(error = %e, "gateway connection ended with an error");
            }
            drop(opened);
        });
    }
    drop(listener);
    tracker.close_all().await;
    Ok(())
}

/// One request's answer: a plain call path straight to the call, anything else to the router.
async fn answer(router: Router, shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response, Infallible> {
    if request.method() == Method::POST
        && let Some((service, method)) = call::plain_call_path(request.uri().path())
    {
        let name = format!("{service}.{method}");
        let (parts, body) = request.into_parts();
        return Ok(call::call_named(&shared, &name, &parts.headers, body).await);
    }
    router.oneshot(request).await
}

/// After a failed accept: a connection that failed before it was accepted is nothing to wait
/// for; anything else (out of file descriptors) is waited out for a second, as `axum::serve`
/// and hyper's examples do, rather than spinning on an error that persists.
async fn back_off(e: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "gateway could not accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
