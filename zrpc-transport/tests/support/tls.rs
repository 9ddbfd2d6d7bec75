//! Certificates for TLS tests, made fresh for each test process: a CA, and a server certificate
//! it issued for `localhost` and `127.0.0.1`.

use std::sync::LazyLock;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use zrpc_transport::tls::{ClientTls, ServerTls};

/// PEM texts: the CA's certificate, the server's certificate and the server's private key.
pub struct Pems {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
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
    Pems { ca: ca.pem(), server_cert: server.pem(), server_key: server_key.serialize_pem() }
}

/// A server presenting the certificate [`PEMS`] issued.
pub fn server() -> ServerTls {
    ServerTls::from_pem(PEMS.server_cert.as_bytes(), PEMS.server_key.as_bytes()).expect("valid PEM")
}

/// A client trusting [`PEMS`]'s CA.
pub fn client() -> ClientTls {
    ClientTls::from_roots_pem(PEMS.ca.as_bytes()).expect("valid PEM")
}
