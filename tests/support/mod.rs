//! What several of the facade's tests share.

use zrpc::{Channel, Request, Response, Router, ServerBuilder, Status};

/// Binds `server`, layers and all, on a loopback port and serves it until the returned sender
/// is used or dropped; the channel, named `tester`, connects to it on its first call.
pub(crate) async fn serve_on_loopback<L>(server: ServerBuilder<L>) -> (Channel, tokio::sync::oneshot::Sender<()>)
where
    L: tower::Layer<Router>,
    L::Service: tower::Service<Request, Response = Response, Error = Status> + Clone + Send + 'static,
    <L::Service as tower::Service<Request>>::Future: Send + Unpin + 'static,
{
    let server = server.bind("tcp://127.0.0.1:0").await.expect("bind");
    let channel = Channel::builder(server.local_addr().clone()).name("tester").connect_lazy();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));
    (channel, stop)
}
