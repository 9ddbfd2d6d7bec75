//! Servers that register in a real etcd for the discovery tests; the etcd itself is
//! `support::etcd_server::EtcdServer`.
//!
//! [`Registered`] is a server running a [`Who`] service (it answers with the server's name),
//! registered in a registry while it serves.

#![cfg(feature = "etcd")]

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use zrpc_core::{Request, Response, Status};
use zrpc_transport::{Address, Registry, Server};

use super::{Serving, within};

/// A service that answers with its server's name.
#[zrpc_macros::service(crate = "zrpc_core")]
pub trait Who {
    /// The server's name.
    #[zrpc(idempotent)]
    async fn name(&self) -> String;
}

/// A [`Who`] that counts the calls it answers.
#[derive(Debug)]
pub struct Named {
    name: String,
    calls: Arc<AtomicUsize>,
}

impl Named {
    pub fn new(name: &str) -> Named {
        Named { name: name.to_owned(), calls: Arc::default() }
    }
}

impl Who for Named {
    async fn name(&self) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.name.clone()
    }
}

/// `Who.name` over any service: the name of the server that answered.
pub async fn who<S>(inner: &S) -> Result<String, Status>
where
    S: tower::Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
    S::Future: Send,
{
    within("a call", WhoClient::new(inner.clone()).name()).await
}

/// A server running [`Who`], registered in a registry while it serves.
#[derive(Debug)]
pub struct Registered {
    pub name: String,
    pub address: Address,
    calls: Arc<AtomicUsize>,
    serving: Serving,
}

impl Registered {
    /// A server named `name` on a free loopback port, registered in `registry` (binding
    /// registers) and serving.
    pub async fn start(name: &str, registry: impl Registry) -> Registered {
        let named = Named::new(name);
        let calls = named.calls.clone();
        let server = Server::builder()
            .name(name)
            .register(registry)
            .add_service(WhoServer::new(named))
            .bind("tcp://127.0.0.1:0")
            .await
            .expect("bind");
        let address = server.local_addr().clone();
        Registered { name: name.to_owned(), address, calls, serving: Serving::spawn(server) }
    }

    /// The key it registers under in `prefix`.
    pub fn key(&self, prefix: &str) -> String {
        format!("{prefix}/{}", self.address)
    }

    /// Calls it answered.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Graceful shutdown: deregisters, then drains; returns what serving returned.
    pub async fn shutdown(self) -> io::Result<()> {
        self.serving.shutdown().await
    }

    /// Kills it at once: no deregistration; its lease is no longer renewed.
    pub async fn abort(self) {
        self.serving.abort().await;
    }
}
