//! Authentication: a server that checks each client's token when it connects and each call
//! before it runs, over every transport (TLS included). Real servers and channels; nothing
//! sleeps.

mod support;

use std::time::Duration;

use support::Serving;
use support::transport::Kind;
use zrpc_core::{Code, Context, Identity, Request, Status};
use zrpc_transport::auth::{Authenticator, Credentials, Tokens};
use zrpc_transport::{Backoff, Channel, ChannelBuilder, Server};

/// What the tests' server answers: who it thinks the caller is.
#[zrpc_macros::service(crate = "zrpc_core")]
pub trait Vault {
    /// The caller's identity, as the server's authenticator established it.
    async fn whoami(&self, ctx: &Context) -> Option<String>;
    /// Something only some identities may read.
    async fn secret(&self) -> String;
}

#[derive(Clone, Debug)]
struct Safe;

impl Vault for Safe {
    async fn whoami(&self, ctx: &Context) -> Option<String> {
        ctx.identity().map(|identity| identity.name().to_owned())
    }

    async fn secret(&self) -> String {
        "42".to_owned()
    }
}

/// Tokens, and `Vault.secret` for alice only.
#[derive(Debug)]
struct AliceOnly(Tokens);

impl Authenticator for AliceOnly {
    fn authenticate(&self, credentials: &Credentials) -> Result<Identity, Status> {
        self.0.authenticate(credentials)
    }

    fn authorize(&self, identity: &Identity, request: &Request) -> Result<(), Status> {
        if request.method().as_str() == "Vault.secret" && identity.name() != "alice" {
            return Err(Status::permission_denied(format!("{identity} may not read the secret")));
        }
        Ok(())
    }
}

async fn vault(kind: Kind, dir: &tempfile::TempDir) -> (Serving, zrpc_transport::Address) {
    let tokens = Tokens::new().token("alice's token", "alice").token("bob's token", "bob");
    let server = kind
        .server(Server::builder().name("vault"))
        .authenticate(AliceOnly(tokens))
        .add_service(VaultServer::new(Safe))
        .bind(kind.address(dir))
        .await
        .expect("bind");
    let address = server.local_addr().clone();
    (Serving::spawn(server), address)
}

fn channel(kind: Kind, address: &zrpc_transport::Address) -> ChannelBuilder {
    // A long backoff: a refused channel must not come back during the test.
    kind.channel(Channel::builder(address.clone()))
        .backoff(Backoff::new(Duration::from_secs(60), Duration::from_secs(60)))
}

async fn a_client_with_a_good_token_is_known_by_its_identity(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (serving, address) = vault(kind, &dir).await;
    let alice = channel(kind, &address).name("claims-to-be-bob").token("alice's token").connect().await.expect("up");
    let client = VaultClient::new(alice);
    assert_eq!(client.whoami().await, Ok(Some("alice".to_owned())), "the identity, not the claimed name");
    assert_eq!(client.secret().await, Ok("42".to_owned()));
    drop(client);
    serving.shutdown().await.expect("serve succeeded");
}

async fn a_client_without_a_token_or_with_a_wrong_one_is_refused(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (serving, address) = vault(kind, &dir).await;
    for (token, reason) in [("", "a token is required"), ("guessed", "the token was not accepted")] {
        // The refusal may come right behind the server's HELLO, or after a first call: either
        // way that call fails with it.
        let client = VaultClient::new(channel(kind, &address).token(token).connect_lazy());
        let status = client.whoami().await.expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{status}");
        assert!(status.message().contains(reason), "says why: {status}");
        assert!(status.is_unprocessed(), "nothing ran: {status:?}");
        // The server closed the connection: later calls fail at once, with the same reason,
        // until the channel's backoff lets it try again.
        let later = client.whoami().await.expect_err("still refused");
        assert_eq!(later.code(), Code::Unauthenticated, "{later}");
        assert!(later.message().contains(reason), "{later}");
    }
    serving.shutdown().await.expect("serve succeeded");
}

async fn a_call_the_authenticator_forbids_is_refused_and_the_connection_stays(kind: Kind) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (serving, address) = vault(kind, &dir).await;
    let bob = VaultClient::new(channel(kind, &address).token("bob's token").connect().await.expect("up"));
    let status = bob.secret().await.expect_err("not for bob");
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
    assert_eq!(status.message(), "bob may not read the secret");
    assert!(status.is_unprocessed());
    assert_eq!(bob.whoami().await, Ok(Some("bob".to_owned())), "bob's other calls still run");
    drop(bob);
    serving.shutdown().await.expect("serve succeeded");
}

over_every_transport!(
    a_client_with_a_good_token_is_known_by_its_identity,
    a_client_without_a_token_or_with_a_wrong_one_is_refused,
    a_call_the_authenticator_forbids_is_refused_and_the_connection_stays,
);

#[tokio::test]
async fn a_server_without_an_authenticator_gives_no_identity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        Server::builder().add_service(VaultServer::new(Safe)).bind(Kind::Tcp.address(&dir)).await.expect("bind");
    let address = server.local_addr().clone();
    let serving = Serving::spawn(server);
    let client = VaultClient::new(Channel::builder(address).token("ignored").connect().await.expect("up"));
    assert_eq!(client.whoami().await, Ok(None));
    drop(client);
    serving.shutdown().await.expect("serve succeeded");
}

#[test]
fn tokens_never_show_in_debug_output() {
    let tokens = Tokens::new().token("hunter2", "alice");
    let shown = format!("{tokens:?}");
    assert!(shown.contains("alice") && !shown.contains("hunter2"), "{shown}");
}

#[tokio::test]
async fn a_governed_client_does_not_retry_a_refusal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (serving, address) = vault(Kind::Tcp, &dir).await;
    let client = zrpc_transport::Client::builder()
        .discover(zrpc_core::discover::Static::new([zrpc_core::discover::Instance::new(address.to_string())]))
        .fail_mode(zrpc_core::FailMode::Failover { retries: 3 })
        .channel(|c| c.token("guessed").backoff(Backoff::new(Duration::from_secs(60), Duration::from_secs(60))))
        .build();
    let status = VaultClient::new(client).whoami().await.expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    assert!(status.message().contains("the token was not accepted"), "{status}");
    serving.shutdown().await.expect("serve succeeded");
}

/// Knows one client certificate, as `alice-service`.
#[cfg(feature = "tls")]
#[derive(Debug)]
struct KnownCertificates;

#[cfg(feature = "tls")]
impl Authenticator for KnownCertificates {
    fn authenticate(&self, credentials: &Credentials) -> Result<Identity, Status> {
        match &credentials.client_certificate {
            Some(der) if der[..] == support::tls::client_certificate_der()[..] => Ok(Identity::new("alice-service")),
            Some(_) => Err(Status::unauthenticated("an unknown certificate")),
            None => Err(Status::unauthenticated("a client certificate is required")),
        }
    }
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn with_mutual_tls_the_authenticator_sees_the_client_certificate() {
    let server = Server::builder()
        .tls(support::tls::server_requiring_client_certificates())
        .authenticate(KnownCertificates)
        .add_service(VaultServer::new(Safe))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind");
    let address = server.local_addr().clone();
    let serving = Serving::spawn(server);
    let channel = Channel::builder(address.clone()).tls(support::tls::client_with_certificate()).connect().await;
    let client = VaultClient::new(channel.expect("the handshake succeeds with a certificate"));
    assert_eq!(client.whoami().await, Ok(Some("alice-service".to_owned())));
    // Without a certificate, rustls refuses the handshake before zrpc sees the connection.
    let status = Channel::builder(address).tls(support::tls::client()).connect().await.expect_err("no certificate");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    drop(client);
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn an_authenticated_client_is_listed_under_its_identity_not_its_claim() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = Tokens::new().token("alice's token", "alice");
    let server = Server::builder()
        .authenticate(tokens)
        .add_service(VaultServer::new(Safe))
        .bind(Kind::Tcp.address(&dir))
        .await
        .expect("bind");
    let (address, peers) = (server.local_addr().clone(), server.peers());
    let serving = Serving::spawn(server);
    let channel = Channel::builder(address).name("claims-to-be-bob").token("alice's token").connect().await;
    let client = VaultClient::new(channel.expect("up"));
    assert_eq!(client.whoami().await, Ok(Some("alice".to_owned())));
    support::within("alice is listed", peers.wait_for("alice")).await;
    assert_eq!(peers.names(), [std::sync::Arc::from("alice")], "not under the name it claimed");
    let answers = peers.broadcast(|peer| async move { peer.is_connected() }).await;
    assert_eq!(answers, [(std::sync::Arc::from("alice"), true)], "a broadcast names it the same way");
    drop(client);
    serving.shutdown().await.expect("serve succeeded");
}
