//! Who a peer is, once a server's authenticator has said so: an [`Identity`].
//!
//! A server built with an authenticator (`zrpc_transport::auth`) checks every connection's
//! credentials when it opens (the HELLO token, the TLS client certificate) and hands the
//! identity it accepted to the handler of every call on it, as
//! [`Context::identity`](crate::Context::identity). Unlike the caller's name
//! ([`Context::caller`](crate::Context::caller)), which is the peer's own claim, an identity is
//! what the server established.

use std::fmt;
use std::sync::Arc;

/// Who a connection's peer is, as the server's authenticator established it. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    name: Arc<str>,
}

impl Identity {
    /// An identity named `name` (a user, a service account, a certificate's subject...).
    pub fn new(name: impl Into<Arc<str>>) -> Identity {
        Identity { name: name.into() }
    }

    /// The name the authenticator gave.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Identity").field(&self.name).finish()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}
