//! TLS under the zrpc protocol (feature `tls`): rustls, with the ring provider.
//!
//! TLS wraps the byte stream and the protocol runs unchanged inside it (`docs/PROTOCOL.md` §2):
//!
//! 1. A server given [`ServerTls`] ([`ServerBuilder::tls`](crate::ServerBuilder::tls)) speaks only
//!    TLS on its address. Each accepted connection first completes a TLS handshake, in the
//!    connection's own task so that a slow client holds up nobody else, within the server's
//!    heartbeat timeout, as the zrpc handshake after it. A client that fails it (plain zrpc, a
//!    certificate the server refuses, silence) is closed and logged at debug level.
//! 2. A channel given [`ClientTls`] ([`ChannelBuilder::tls`](crate::ChannelBuilder::tls), or
//!    every endpoint of a [`Client`](crate::Client) through
//!    [`ClientBuilder::channel`](crate::ClientBuilder::channel)) opens every connection with a
//!    handshake, within its connect timeout. It verifies the server's certificate against the
//!    roots it was given and against the host of the endpoint's address (a DNS name or an IP
//!    address), or the name set with [`ClientTls::server_name`]. A failed handshake is a failed
//!    connection attempt: `Unavailable`, the call never sent, the reason in the message.
//!
//! [`ServerTls::from_pem`] and [`ClientTls::from_roots_pem`] cover the usual case, a server
//! certificate issued by a private CA. For client certificates (mutual TLS), ALPN, other roots or
//! protocol versions, build a [`rustls`] configuration and pass it to `from_config`; the
//! [`rustls`] re-exported here is the version zrpc uses.
//!
//! # Examples
//!
//! ```no_run
//! use zrpc_transport::tls::{ClientTls, ServerTls};
//! use zrpc_transport::{Channel, Server};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = ServerTls::from_pem(&std::fs::read("server.pem")?, &std::fs::read("server.key")?)?;
//! let server = Server::builder().tls(tls).bind("tcp://0.0.0.0:7000").await?;
//! tokio::spawn(server.serve());
//!
//! let ca = ClientTls::from_roots_pem(&std::fs::read("ca.pem")?)?;
//! let channel = Channel::builder("tcp://greeter.internal:7000".parse()?).tls(ca).connect().await?;
//! # let _ = channel;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::sync::Arc;

pub use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::address::Address;
use crate::stream::Stream;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The PEM text holds no item of the kind needed, or one that does not parse.
    #[error("invalid PEM: {what}")]
    Pem {
        /// What was looked for, and what went wrong.
        what: String,
    },
    /// rustls refused the certificates or the key.
    #[error("rustls refused the configuration")]
    Rustls(#[from] rustls::Error),
    /// Not a DNS name or an IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
}

/// The TLS side of a server: its certificate chain and key; see the [module docs](self).
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
}

impl ServerTls {
    /// A server presenting the certificate chain in `cert_chain` (PEM, leaf first) with the
    /// private key in `key` (PEM: PKCS #8, PKCS #1 or SEC1), asking clients for no certificate.
    ///
    /// # Errors
    /// [`TlsError::Pem`] when either holds no usable item, [`TlsError::Rustls`] when the key
    /// does not suit the certificate or rustls supports neither.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<ServerTls, TlsError> {
        let chain = certificates(cert_chain)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| pem_error("a private key", &e))?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(ServerTls::from_config(Arc::new(config)))
    }

    /// A server with a rustls configuration of its own: client certificates, ALPN, versions.
    pub fn from_config(config: Arc<ServerConfig>) -> ServerTls {
        ServerTls { acceptor: TlsAcceptor::from(config) }
    }

    /// Completes the server side of the handshake on `stream`; with it, the client's leaf
    /// certificate (DER) when it presented one (mutual TLS), which rustls has verified against
    /// the configuration's client verifier.
    pub(crate) async fn accept(&self, stream: Stream) -> io::Result<(Stream, Option<bytes::Bytes>)> {
        let tls = self.acceptor.accept(stream).await?;
        let certificate = tls.get_ref().1.peer_certificates().and_then(<[_]>::first);
        let certificate = certificate.map(|der| bytes::Bytes::copy_from_slice(der.as_ref()));
        Ok((Stream::Other(Box::new(tls)), certificate))
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// The TLS side of a client: whom it trusts; see the [module docs](self).
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    /// The name to verify instead of the address's host.
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// A client that trusts servers whose certificate was issued by one of the CA certificates
    /// in `roots` (PEM), and presents no certificate of its own.
    ///
    /// # Errors
    /// [`TlsError::Pem`] when `roots` holds no certificate, [`TlsError::Rustls`] when rustls
    /// cannot use one as a root.
    pub fn from_roots_pem(roots: &[u8]) -> Result<ClientTls, TlsError> {
        let mut store = RootCertStore::empty();
        for root in certificates(roots)? {
            store.add(root)?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(ClientTls::from_config(Arc::new(config)))
    }

    /// A client with a rustls configuration of its own: client certificates, other roots.
    pub fn from_config(config: Arc<ClientConfig>) -> ClientTls {
        ClientTls { connector: TlsConnector::from(config), server_name: None }
    }

    /// Verifies servers' certificates for `name` (a DNS name or an IP address) instead of the
    /// host in each endpoint's address: for endpoints addressed by IP whose certificates name
    /// the service, and for Unix-socket and in-memory endpoints, which have no host.
    ///
    /// # Errors
    /// [`TlsError::ServerName`] when `name` is neither.
    pub fn server_name(mut self, name: &str) -> Result<ClientTls, TlsError> {
        let name = ServerName::try_from(name).map_err(|_| TlsError::ServerName(name.to_owned()))?;
        self.server_name = Some(name.to_owned());
        Ok(self)
    }

    /// Completes the client side of the handshake on `stream`, opened to `address`.
    pub(crate) async fn connect(&self, address: &Address, stream: Stream) -> io::Result<Stream> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => host_name(address)?,
        };
        let tls = self.connector.connect(name, stream).await?;
        Ok(Stream::Other(Box::new(tls)))
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

/// The name a server at `address` must prove: the host of a TCP address.
fn host_name(address: &Address) -> io::Result<ServerName<'static>> {
    let host = match address {
        Address::Tcp(hostport) => {
            hostport.rsplit_once(':').map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
        }
        _ => None,
    };
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{address} names no host to verify its certificate for; set ClientTls::server_name"),
        )
    };
    let host = host.ok_or_else(invalid)?;
    ServerName::try_from(host).map(|name| name.to_owned()).map_err(|_| invalid())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("certificates", &e))?;
    if certificates.is_empty() {
        return Err(TlsError::Pem { what: "no certificate found".to_owned() });
    }
    Ok(certificates)
}

fn pem_error(what: &str, error: &rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem { what: format!("reading {what}: {error}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_a_tcp_address_is_the_name_to_verify() {
        let name = |address: &str| host_name(&address.parse().expect("valid")).map(|n| n.to_str().into_owned());
        assert_eq!(name("tcp://localhost:7000").expect("a DNS name"), "localhost");
        assert_eq!(name("127.0.0.1:7000").expect("an IPv4 address"), "127.0.0.1");
        assert_eq!(name("tcp://[::1]:7000").expect("an IPv6 address"), "::1");
        let err = name("mem://service").expect_err("no host");
        assert!(err.to_string().contains("set ClientTls::server_name"), "{err}");
    }

    #[test]
    fn pem_without_certificates_or_keys_is_refused_with_a_reason() {
        let err = ClientTls::from_roots_pem(b"not pem at all").expect_err("no roots");
        assert_eq!(err.to_string(), "invalid PEM: no certificate found");
        let err = ServerTls::from_pem(b"", b"").expect_err("nothing");
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
        assert!(matches!(
            ClientTls::from_config(client_config()).server_name("not a name!"),
            Err(TlsError::ServerName(_))
        ));
    }

    fn client_config() -> Arc<ClientConfig> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(config)
    }
}
