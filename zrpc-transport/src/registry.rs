//! Registration: a server announcing itself in a service registry while it serves.
//!
//! A [`Registry`] is where servers write what discovery later reads (etcd with the `etcd`
//! feature; Consul or ZooKeeper could implement it too). A server given one with
//! [`ServerBuilder::register`](crate::ServerBuilder::register):
//!
//! 1. registers when it is bound, under the address it really listens on (the port it was given
//!    when bound to port 0) and its name; a registry may add or override details (weight,
//!    group, version, an address to advertise instead). If that fails, `bind` fails with the
//!    registry's error, so a server is never silently missing from discovery, and once `bind`
//!    returns clients can find it (connections made before it serves wait in the listen queue);
//! 2. stays registered while it lives: keeping the registration alive is the registry's job
//!    (for etcd, renewing a lease and registering again after losing it);
//! 3. on graceful shutdown, deregisters **before** it starts draining, so that clients drop it
//!    from their endpoints while its calls in progress finish. Deregistering is best effort: a
//!    registry that cannot be reached is logged, not waited for;
//! 4. when it dies without shutting down (its task aborted, the process killed) or is stopped
//!    with [`ServerHandle::abort`](crate::ServerHandle::abort), the registration is dropped and
//!    no longer renewed: the registry forgets it once its lease or session expires.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;

use futures::future::BoxFuture;
use zrpc_core::Status;
use zrpc_core::discover::Instance;

use crate::address::Address;

/// A service registry that servers register in. See the [module docs](self).
pub trait Registry: fmt::Debug + Send + Sync + 'static {
    /// Registers `instance` (the server's address and name; the registry may fill in or
    /// override the rest) until the returned [`Registration`] is deregistered or dropped.
    ///
    /// # Errors
    /// When the registry cannot be reached or refuses the registration.
    fn register(&self, instance: Instance) -> BoxFuture<'static, Result<Registration, Status>>;
}

/// One instance's entry in a [`Registry`], kept alive by the registry until
/// [`deregister`](Registration::deregister)ed.
///
/// Dropping it without deregistering stops keeping it alive, as when a process dies: the
/// registry forgets it when its lease runs out.
#[must_use = "a dropped registration is no longer kept alive"]
pub struct Registration {
    /// What is registered, e.g. the registry key, for logs.
    what: String,
    /// Removes the entry. Not polled until [`Registration::deregister`]; dropping it must stop
    /// whatever keeps the entry alive (implementations capture an abort-on-drop guard).
    deregister: BoxFuture<'static, Result<(), Status>>,
}

impl Registration {
    /// A registration described by `what` (a key, a path) that `deregister` removes. For
    /// implementations of [`Registry`]: dropping `deregister` without running it must stop
    /// keeping the entry alive.
    pub fn new(
        what: impl Into<String>,
        deregister: impl Future<Output = Result<(), Status>> + Send + 'static,
    ) -> Registration {
        Registration { what: what.into(), deregister: Box::pin(deregister) }
    }

    /// What is registered (e.g. the registry key).
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// Stops keeping the entry alive and removes it from the registry.
    ///
    /// # Errors
    /// When the registry could not be reached in time; the entry then disappears when its lease
    /// expires.
    pub async fn deregister(self) -> Result<(), Status> {
        self.deregister.await
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration").field("what", &self.what).finish_non_exhaustive()
    }
}

/// Registers a server bound at `address` as `name`, if it has a registry.
pub(crate) async fn register(
    registry: Option<&Arc<dyn Registry>>,
    address: &Address,
    name: &str,
) -> io::Result<Option<Registration>> {
    let Some(registry) = registry else { return Ok(None) };
    let instance = Instance::new(address.to_string()).with_name(name);
    let registration = registry.register(instance).await.map_err(io::Error::other)?;
    tracing::info!(registration = registration.describe(), "registered");
    Ok(Some(registration))
}

/// Deregisters a server that is shutting down, logging rather than failing.
pub(crate) async fn deregister(registration: Option<Registration>) {
    let Some(registration) = registration else { return };
    let what = registration.what.clone();
    match registration.deregister().await {
        Ok(()) => tracing::info!(registration = what, "deregistered"),
        Err(status) => tracing::warn!(registration = what, %status, "could not deregister; it expires with its lease"),
    }
}
