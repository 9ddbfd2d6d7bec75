//! Any tower layer on a server: futures that are not `Unpin` (an `async` block inside
//! `AndThen`), several layers in order, and the calls they see. Real server and channel over TCP.

mod support;

use support::{Serving, TestClient, TestServer, TestService};
use zrpc_core::{Code, Request, Response, Router, Status};
use zrpc_transport::{Channel, Server, ServerBuilder};

/// `builder`, serving the tests' `Test` service on TCP, and a client of it.
async fn serve<L>(builder: ServerBuilder<L>) -> (Serving, TestClient<Channel>)
where
    L: tower::Layer<Router>,
    L::Service: tower::Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
    <L::Service as tower::Service<Request>>::Future: Send + Unpin + 'static,
{
    let (probe, _events) = support::probe();
    let server =
        builder.add_service(TestServer::new(TestService::new(probe))).bind("tcp://127.0.0.1:0").await.expect("bind");
    let channel = Channel::builder(server.local_addr().clone()).connect_lazy();
    (Serving::spawn(server), TestClient::new(channel))
}

#[tokio::test]
async fn a_layer_whose_futures_are_not_unpin_serves() {
    // `AndThen` with an `async` block: its future holds the block, which is not `Unpin`. The
    // block also waits once, so that the handler takes a task of its own.
    let and_then = tower::util::AndThenLayer::new(|response: Response| async move {
        tokio::task::yield_now().await;
        Ok::<_, Status>(response)
    });
    let (serving, client) = serve(Server::builder().name("layered").layer(and_then)).await;
    assert_eq!(client.echo("through the layer".into()).await, Ok("through the layer".to_owned()));
    let status = client.panic().await.expect_err("a panic");
    assert_eq!(status.code(), Code::Internal, "a panic under a layer is still Internal: {status}");
    drop(client);
    serving.shutdown().await.expect("serve succeeded");
}

#[tokio::test]
async fn a_servers_layers_apply_first_added_outermost() {
    let (serving, client) = serve(Server::builder().layer(support::outer_layer()).layer(support::inner_layer())).await;
    let status = client.echo("x".into()).await.expect_err("refused by the layers");
    support::assert_layered_in_order(&status);
    drop(client);
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
