//! Certificates for TLS tests, made fresh for each test process: a CA, and a server certificate
//! it issued for `localhost` and `127.0.0.1`.

use std::sync::LazyLock;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use zrpc_transport::tls::{ClientTls, ServerTls};

/// PEM texts: the CA's certificate, the server's certificate and private key, and a client
/// certificate and key it issued to `alice-service` (for mutual TLS).
pub struct Pems {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

/// A CA and a server certificate it issued, made once per test process.
pub static PEMS: LazyLock<Pems> = LazyLock::new(|| issue("zrpc test CA"));

/// Another CA, with a server certificate of its own: one that [`client`] does not trust.
pub static STRANGER: LazyLock<Pems> = LazyLock::new(|| issue("a CA nobody trusts"));

fn issue(ca_name: &str) -> Pems {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("no names is valid");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("a CA key")).expect("a CA certificate");
    let server_key = KeyPair::generate().expect("a server key");
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("valid names")
        .signed_by(&server_key, &ca)
        .expect("the CA signs");
    let client_key = KeyPair::generate().expect("a client key");
    let mut client = CertificateParams::new(Vec::<String>::new()).expect("no names is valid");
    client.distinguished_name.push(DnType::CommonName, "alice-service");
    let client = client.signed_by(&client_key, &ca).expect("the CA signs");
    Pems {
        ca: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// A server presenting [`PEMS`]'s certificate that requires a client certificate from its CA.
pub fn server_requiring_client_certificates() -> ServerTls {
    use zrpc_transport::tls::rustls::pki_types::pem::PemObject;
    use zrpc_transport::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use zrpc_transport::tls::rustls::server::WebPkiClientVerifier;
    use zrpc_transport::tls::rustls::{RootCertStore, ServerConfig, crypto};

    let provider = std::sync::Arc::new(crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(PEMS.ca.as_bytes()).expect("the CA")).expect("a root");
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone()).build().expect("a verifier");
    let chain = vec![CertificateDer::from_pem_slice(PEMS.server_cert.as_bytes()).expect("the server's")];
    let key = PrivateKeyDer::from_pem_slice(PEMS.server_key.as_bytes()).expect("the server's key");
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports them")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("a valid pair");
    ServerTls::from_config(std::sync::Arc::new(config))
}

/// A client trusting [`PEMS`]'s CA and presenting the client certificate it issued.
pub fn client_with_certificate() -> ClientTls {
    use zrpc_transport::tls::rustls::pki_types::pem::PemObject;
    use zrpc_transport::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use zrpc_transport::tls::rustls::{ClientConfig, RootCertStore, crypto};

    let provider = std::sync::Arc::new(crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(PEMS.ca.as_bytes()).expect("the CA")).expect("a root");
    let chain = vec![CertificateDer::from_pem_slice(PEMS.client_cert.as_bytes()).expect("the client's")];
    let key = PrivateKeyDer::from_pem_slice(PEMS.client_key.as_bytes()).expect("the client's key");
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports them")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("a valid pair");
    ClientTls::from_config(std::sync::Arc::new(config))
}

/// The DER of the client certificate [`PEMS`] issued.
pub fn client_certificate_der() -> Vec<u8> {
    use zrpc_transport::tls::rustls::pki_types::CertificateDer;
    use zrpc_transport::tls::rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(PEMS.client_cert.as_bytes()).expect("the client's").as_ref().to_vec()
}

/// A server presenting the certificate [`PEMS`] issued.
pub fn server() -> ServerTls {
    ServerTls::from_pem(PEMS.server_cert.as_bytes(), PEMS.server_key.as_bytes()).expect("valid PEM")
}

/// A client trusting [`PEMS`]'s CA.
pub fn client() -> ClientTls {
    ClientTls::from_roots_pem(PEMS.ca.as_bytes()).expect("valid PEM")
}
