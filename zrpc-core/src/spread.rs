//! Calls that go to several endpoints at once: broadcast (every endpoint, every answer) and fork
//! (several endpoints, the first success), as rpcx's `Broadcast` and `Fork` fail modes.
//!
//! [`Spread`] is what can send one request to many: a balanced `zrpc::Client` spreads over the
//! endpoints discovery gives it, a `zrpc::Peers` directory over the peers connected to a server
//! or a node (rpcx's push to every client). A generated client over either has typed views:
//!
//! ```text
//! let greeter = GreeterClient::new(client);
//! // Every endpoint, each with its own answer:
//! for (endpoint, answer) in greeter.broadcast().hello("all".into()).await {
//!     println!("{endpoint}: {answer:?}"); // answer: Result<String, Status>
//! }
//! // Two endpoints at once, the first success wins and the other call is cancelled:
//! let (endpoint, reply) = greeter.fork(2).hello("fast".into()).await?;
//! ```
//!
//! Spread calls bypass retries and balancing: the endpoints are the set, not a pick from it.
//! Each endpoint's call is an ordinary call otherwise (its deadline, its breaker, its
//! connection's flow control).

use std::future::Future;
use std::sync::Arc;

use crate::request::{Request, Response};
use crate::status::Status;

/// Each endpoint's name (an address, a peer's name) with what its call returned, in the order
/// the spreader lists its endpoints.
pub type Answers<T> = Vec<(Arc<str>, Result<T, Status>)>;

/// Something that sends one request to several endpoints at once; see the [module docs](self).
pub trait Spread {
    /// Sends `request` to every endpoint at once and returns each endpoint's result. With no
    /// endpoint at all, one `Unavailable` (unprocessed) under an empty name.
    fn broadcast(&self, request: Request) -> impl Future<Output = Answers<Response>> + Send + 'static;

    /// Sends `request` to `n` endpoints at once (all of them when `n` is 0 or more than there
    /// are) and returns the first success with the name of the endpoint that gave it; the other
    /// calls are cancelled.
    ///
    /// # Errors
    /// When every call fails: the last error; `Unavailable` (unprocessed) with no endpoint.
    fn fork(
        &self,
        request: Request,
        n: usize,
    ) -> impl Future<Output = Result<(Arc<str>, Response), Status>> + Send + 'static;
}

/// The first success among `calls`, each named by its endpoint, for implementations of
/// [`Spread::fork`]; the calls still running are dropped (cancelled) when one succeeds.
///
/// # Errors
/// When every call fails: the last error, with the number of endpoints tried appended to its
/// message when there were several (its code, details and unprocessed mark kept); `Unavailable`,
/// unprocessed, naming `method`, when `calls` is empty.
pub async fn first_success<F>(method: &str, calls: Vec<(Arc<str>, F)>) -> Result<(Arc<str>, Response), Status>
where
    F: Future<Output = Result<Response, Status>> + Send + 'static,
{
    let tried = calls.len();
    if tried == 0 {
        return Err(Status::unavailable(format!("{method} not sent: there are no endpoints")).mark_unprocessed());
    }
    let calls: Vec<_> = calls
        .into_iter()
        .map(|(endpoint, call)| Box::pin(async move { call.await.map(|response| (endpoint, response)) }))
        .collect();
    futures::future::select_ok(calls).await.map(|(won, _rest)| won).map_err(|last| {
        if tried == 1 {
            return last;
        }
        let message = format!("{}; {tried} endpoints tried", last.message());
        let status = Status::new(last.code(), message).with_details(last.details().clone());
        if last.is_unprocessed() { status.mark_unprocessed() } else { status }
    })
}
