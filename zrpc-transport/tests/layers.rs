//! Any tower layer on a server: futures that are not `Unpin` (an `async` block inside
//! `AndThen`), several layers in order, and the calls they see. Real server and channel over TCP.

mod support;

use support::{Serving, TestClient, TestServer, TestService};
use zrpc_core::{Code, Response, Status};
use zrpc_transport::{Channel, Server};

#[tokio::test]
async fn a_layer_whose_futures_are_not_unpin_serves() {
    let (probe, _events) = support::probe();
    // `AndThen` with an `async` block: its future holds the block, which is not `Unpin`. The
    // block also waits once, so that the handler takes a task of its own.
    let and_then = tower::util::AndThenLayer::new(|response: Response| async move {
        tokio::task::yield_now().await;
        Ok::<_, Status>(response)
    });
    let server = Server::builder()
        .name("layered")
        .layer(and_then)
        .add_service(TestServer::new(TestService::new(probe)))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind");
    let channel = Channel::builder(server.local_addr().clone()).connect_lazy();
    let serving = Serving::spawn(server);
    let client = TestClient::new(channel);
    assert_eq!(client.echo("through the layer".into()).await, Ok("through the layer".to_owned()));
    let status = client.panic().await.expect_err("a panic");
    assert_eq!(status.code(), Code::Internal, "a panic under a layer is still Internal: {status}");
    drop(client);
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn a_servers_layers_apply_first_added_outermost() {
    let (probe, _events) = support::probe();
    let outer = tower::util::MapResultLayer::new(|result: Result<Response, Status>| {
        result.map_err(|status| Status::data_loss(format!("the outer layer saw: {}", status.message())))
    });
    let inner = tower::util::MapResultLayer::new(|_: Result<Response, Status>| {
        Err::<Response, _>(Status::permission_denied("the inner layer refuses"))
    });
    let server = Server::builder()
        .layer(outer)
        .layer(inner)
        .add_service(TestServer::new(TestService::new(probe)))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind");
    let channel = Channel::builder(server.local_addr().clone()).connect_lazy();
    let serving = Serving::spawn(server);
    let status = TestClient::new(channel).echo("x".into()).await.expect_err("refused by the layers");
    assert_eq!(status.code(), Code::DataLoss, "{status}");
    assert_eq!(status.message(), "the outer layer saw: the inner layer refuses");
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn a_channel_connects_to_a_socket_address_as_to_a_string() {
    let (probe, _events) = support::probe();
    let server = Server::builder()
        .add_service(TestServer::new(TestService::new(probe)))
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind");
    let socket = server.local_addr().socket_addr().expect("a TCP address");
    let serving = Serving::spawn(server);
    let client = TestClient::new(Channel::connect(socket).await.expect("connects"));
    assert_eq!(client.echo("by socket address".into()).await, Ok("by socket address".to_owned()));
    drop(client);
    serving.shutdown().await.expect("serve succeeded");
}
