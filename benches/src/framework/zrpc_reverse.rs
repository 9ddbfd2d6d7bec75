//! zrpc with the roles turned: the process that accepted the connection makes the calls, and the
//! one that opened it answers them (a server calling its clients back, `ctx.peer()` or its
//! directory of peers, the way rpcx pushes to clients).
//!
//! The child process (the benchmark's "server") serves `DialBack`; the parent binds a zrpc
//! server of its own and asks the child, over a separate control connection, to open N
//! connections to it, each serving the echo service (the same `Bench` service and message as
//! the `zrpc` row). The parent's callers then call through the [`Peer`]s its directory lists,
//! round-robin: same message, same codec, same settings, calls flowing from the accepting side.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use zrpc::{Channel, Peer, Server};

use crate::BoxError;
use crate::framework::zrpc::owned::{BenchClient, BenchServer, Echo, Message, ZrpcCaller};
use crate::framework::{Framework, Name, Serving, check_echo};

/// The child's control service.
#[zrpc::service]
pub trait DialBack {
    /// Opens `conns` connections to `address`, each serving the echo service, and keeps them.
    async fn dial(&self, address: String, conns: u32) -> Result<(), String>;
}

/// Keeps the channels it opened for the life of the process.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    channels: Arc<Mutex<Vec<Channel>>>,
}

impl DialBack for Dialer {
    async fn dial(&self, address: String, conns: u32) -> Result<(), String> {
        let address: zrpc::Address = address.parse().map_err(|e| format!("{e}"))?;
        for _ in 0..conns {
            let channel = Channel::builder(address.clone())
                .name("bench-echo")
                .serve(BenchServer::new(Echo))
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            self.channels.lock().unwrap_or_else(|p| p.into_inner()).push(channel);
        }
        Ok(())
    }
}

/// zrpc, default settings, calls from the accepting side.
#[derive(Debug, Clone, Copy)]
pub struct ZrpcReverse;

impl Framework for ZrpcReverse {
    const NAME: Name = Name::ZrpcReverse;
    type Caller = ZrpcCaller<Peer>;

    async fn serve() -> Result<Serving, BoxError> {
        crate::framework::zrpc::serve(Server::builder().add_service(DialBackServer::new(Dialer::default()))).await
    }

    async fn callers(addr: SocketAddr, conns: usize, callers: usize) -> Result<Vec<ZrpcCaller<Peer>>, BoxError> {
        let server = Server::builder().name("bench-caller").bind("tcp://127.0.0.1:0").await?;
        let peers = server.peers();
        let local = server.local_addr().to_string();
        tokio::spawn(server.serve());
        let mut watch = peers.watch();
        let control = DialBackClient::new(Channel::connect(addr).await?);
        control.dial(local, u32::try_from(conns)?).await??;
        while peers.len() < conns {
            watch.next().await.ok_or("the directory closed")?;
        }
        let peers: Vec<Peer> = peers.all();
        let message = Message::filled();
        let probe = BenchClient::new(peers[0].clone());
        check_echo(Name::ZrpcReverse, &message, &probe.echo(message.clone()).await?)?;
        Ok((0..callers).map(|i| ZrpcCaller::new(BenchClient::new(peers[i % conns].clone()), message.clone())).collect())
    }
}
