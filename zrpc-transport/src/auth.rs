//! Authenticating a server's clients: who may connect, and what each may call.
//!
//! A server built with [`ServerBuilder::authenticate`](crate::ServerBuilder::authenticate)
//! checks each connection once, when the client's HELLO arrives, and each call before its
//! handler runs:
//!
//! 1. [`Authenticator::authenticate`] sees the client's [`Credentials`] (the token it sent in
//!    its HELLO, [`ChannelBuilder::token`](crate::ChannelBuilder::token); its TLS client
//!    certificate, with mutual TLS; its announced name; its address) and answers with the [`Identity`] it accepts, or a status. A refused connection
//!    gets a GOAWAY with code `Unauthenticated` and the status's message, none of its calls run
//!    (those it sent before the verdict are answered `Unauthenticated`, unprocessed), and it is
//!    closed. On the client, calls fail with `Unauthenticated` and that message, are never
//!    retried, and the channel waits its backoff before it connects again.
//! 2. [`Authenticator::authorize`] sees the identity and each request (method, metadata) before
//!    its handler runs; a refusal answers the call with its status (say `PermissionDenied`,
//!    unprocessed) and the connection stays.
//! 3. Handlers read the accepted identity from their context:
//!    [`Context::identity`](zrpc_core::Context::identity).
//!
//! [`Tokens`] is an authenticator for the common case, a fixed set of bearer tokens, each
//! naming an identity. Both methods are plain functions, as tonic's interceptors are: an
//! authenticator that needs I/O (a database of tokens) keeps what it needs in memory and
//! refreshes it in the background.
//!
//! Tokens travel in the clear unless the connection is TLS ([`crate::tls`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use zrpc_core::{Identity, Request, Status};

/// What a client presents when it connects; see [`Authenticator::authenticate`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Credentials {
    /// The name the client announced in its HELLO (a claim, not a proof).
    pub name: Arc<str>,
    /// The token it sent in its HELLO; empty when it sent none.
    pub token: Bytes,
    /// Its address, as the listener saw it.
    pub remote: String,
    /// Its TLS client certificate (the leaf, DER-encoded), when the server's TLS configuration
    /// asks for one (mutual TLS; see [`ServerTls::from_config`](crate::tls::ServerTls)): rustls
    /// has verified it against the configured roots before the authenticator sees it, which maps
    /// it to an identity (say, by its subject, with an X.509 parser of your choice).
    pub client_certificate: Option<Bytes>,
}

impl Credentials {
    /// What is known of a connection before its HELLO: its address and certificate.
    pub(crate) fn of_connection(remote: String, client_certificate: Option<Bytes>) -> Credentials {
        Credentials { name: Arc::from(""), token: Bytes::new(), remote, client_certificate }
    }
}

/// Decides who may connect to a server, and what each may call; see the [module docs](self).
pub trait Authenticator: Send + Sync + 'static {
    /// The identity of a client presenting `credentials`, or why it may not connect (usually
    /// `Unauthenticated`; the message reaches the client).
    ///
    /// # Errors
    /// The status the connection is refused with.
    fn authenticate(&self, credentials: &Credentials) -> Result<Identity, Status>;

    /// Whether `identity` may make `request`; every call is allowed unless overridden.
    ///
    /// # Errors
    /// The status the call is answered with instead of running (usually `PermissionDenied`).
    fn authorize(&self, identity: &Identity, request: &Request) -> Result<(), Status> {
        let _ = (identity, request);
        Ok(())
    }
}

/// An [`Authenticator`] that accepts a fixed set of bearer tokens, each for a named identity,
/// and refuses every other token (or none) with `Unauthenticated`.
#[derive(Clone, Default)]
pub struct Tokens {
    tokens: HashMap<Bytes, Identity>,
}

impl Tokens {
    /// No token accepted yet.
    pub fn new() -> Tokens {
        Tokens::default()
    }

    /// Accepts `token`, for the identity named `identity`.
    pub fn token(mut self, token: impl Into<Bytes>, identity: impl Into<Arc<str>>) -> Tokens {
        self.tokens.insert(token.into(), Identity::new(identity));
        self
    }
}

impl Authenticator for Tokens {
    fn authenticate(&self, credentials: &Credentials) -> Result<Identity, Status> {
        if credentials.token.is_empty() {
            return Err(Status::unauthenticated("a token is required and none was sent"));
        }
        self.tokens
            .get(&credentials.token)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("the token was not accepted"))
    }
}

impl fmt::Debug for Tokens {
    /// The identities, never the tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.tokens.values().map(Identity::name).collect();
        names.sort_unstable();
        f.debug_struct("Tokens").field("identities", &names).finish()
    }
}

/// A server's authenticator, shared by its connections.
#[derive(Clone)]
pub(crate) struct SharedAuthenticator(Arc<dyn Authenticator>);

impl SharedAuthenticator {
    pub(crate) fn new(authenticator: impl Authenticator) -> SharedAuthenticator {
        SharedAuthenticator(Arc::new(authenticator))
    }
}

impl std::ops::Deref for SharedAuthenticator {
    type Target = dyn Authenticator;

    fn deref(&self) -> &(dyn Authenticator + 'static) {
        &*self.0
    }
}

impl fmt::Debug for SharedAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authenticator")
    }
}
