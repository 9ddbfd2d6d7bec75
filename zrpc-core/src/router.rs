//! Routing requests to services by name: one server, many services.
//!
//! A [`Router`] holds services that know their name ([`NamedService`], implemented by every
//! generated `XServer`) and sends each request to the one named in `"Service.method"`. An unknown
//! service is answered with [`Code::NotFound`](crate::Code::NotFound) naming it and listing what
//! the server does have: a zrpc server refuses explicitly, it never drops a call silently.
//!
//! Like `tower::steer::Steer`, the router is ready only when all its services are; the generated
//! servers are always ready, so in practice this costs one check per service and call.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use tower::Service;

use crate::request::{Request, Response};
use crate::status::Status;

/// A service that knows its wire name and its methods'.
pub trait NamedService {
    /// The service's wire name: the `Service` in `"Service.method"`.
    const NAME: &'static str;
    /// The full wire names (`"Service.method"`) of every method the service answers.
    const METHODS: &'static [&'static str];
}

/// The future every routed service returns: the generated servers' own, passed through as it
/// is (a `BoxCloneSyncService` would box it a second time).
type RouteFuture = BoxFuture<'static, Result<Response, Status>>;

/// A named service with its type erased.
trait Route: Send + Sync {
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>>;
    fn call(&mut self, req: Request) -> RouteFuture;
    fn clone_route(&self) -> Box<dyn Route>;
}

impl<S> Route for S
where
    S: Service<Request, Response = Response, Error = Status, Future = RouteFuture> + Clone + Send + Sync + 'static,
{
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        Service::poll_ready(self, cx)
    }

    fn call(&mut self, req: Request) -> RouteFuture {
        Service::call(self, req)
    }

    fn clone_route(&self) -> Box<dyn Route> {
        Box::new(self.clone())
    }
}

struct BoxService(Box<dyn Route>);

impl Clone for BoxService {
    fn clone(&self) -> BoxService {
        BoxService(self.0.clone_route())
    }
}

/// Routes requests to services by the service part of the method name.
#[derive(Clone, Default)]
pub struct Router {
    services: Vec<BoxService>,
    names: Arc<Names>,
}

#[derive(Clone, Default)]
struct Names {
    /// Service name → index into `services`.
    services: HashMap<&'static str, usize>,
    /// Every known full method name, to reuse the static string instead of allocating one per
    /// request read from a connection.
    methods: HashMap<&'static str, ()>,
}

impl Router {
    /// A router with no services; every call is answered `NotFound`.
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds a service. A second service with the same name replaces the first.
    ///
    /// The service's future must be a `BoxFuture`, as the generated servers' are: the router
    /// hands it on without boxing it again.
    pub fn add_service<S>(mut self, service: S) -> Router
    where
        S: Service<Request, Response = Response, Error = Status, Future = RouteFuture>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
    {
        let names = Arc::make_mut(&mut self.names);
        let boxed = BoxService(Box::new(service));
        match names.services.get(S::NAME) {
            Some(&index) => self.services[index] = boxed,
            None => {
                names.services.insert(S::NAME, self.services.len());
                self.services.push(boxed);
            }
        }
        names.methods.extend(S::METHODS.iter().map(|m| (*m, ())));
        self
    }

    /// The names of the services this router serves, sorted.
    pub fn service_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.names.services.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// The static copy of a known method name, so that a transport need not allocate one.
    pub fn intern(&self, method: &str) -> Option<&'static str> {
        self.names.methods.get_key_value(method).map(|(k, _)| *k)
    }
}

impl Service<Request> for Router {
    type Response = Response;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Response, Status>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        for service in &mut self.services {
            if service.0.poll_ready(cx)?.is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match self.names.services.get(req.method().service()) {
            Some(&index) => self.services[index].0.call(req),
            None => {
                let names = self.service_names();
                let has = if names.is_empty() {
                    "this end serves no services".to_owned()
                } else {
                    format!("this end has: {}", names.join(", "))
                };
                let status = Status::not_found(format!(
                    "unknown service {:?} (calling {}); {has}",
                    req.method().service(),
                    req.method()
                ));
                Box::pin(futures::future::ready(Err(status)))
            }
        }
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router").field("services", &self.service_names()).finish()
    }
}
