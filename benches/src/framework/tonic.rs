//! tonic 0.14: gRPC over HTTP/2 with prost, unary echo (feature `tonic`; needs `protoc`).
//!
//! The message is rpcx's protobuf `BenchmarkMessage` (`proto/benchmark.proto`) carrying the values
//! of [`BenchmarkMessage::filled`](crate::BenchmarkMessage::filled). Settings are tonic's defaults, which already leave
//! concurrency unlimited (no `max_concurrent_streams`, no per-connection concurrency limit, a
//! channel buffer of 1024 requests) and set `TCP_NODELAY` on the client; the server's listener
//! is bound here (port 0), so `TCP_NODELAY` is set on it explicitly, as tonic's own `serve` does.
//! With N connections the callers use N [`Channel`]s (each one HTTP/2 connection), round-robin.

use std::net::SocketAddr;

use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use super::{Caller, Framework, Name, Serving, check_echo};
use crate::BoxError;

/// The code generated from `proto/benchmark.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("zrpc.bench");
}

use pb::BenchmarkMessage;
use pb::bench_client::BenchClient;
use pb::bench_server::{Bench, BenchServer};

impl From<&crate::BenchmarkMessage> for BenchmarkMessage {
    fn from(m: &crate::BenchmarkMessage) -> BenchmarkMessage {
        BenchmarkMessage {
            field1: m.field1.clone(),
            field9: m.field9.clone(),
            field18: m.field18.clone(),
            field80: m.field80,
            field81: m.field81,
            field2: m.field2,
            field3: m.field3,
            field280: m.field280,
            field6: m.field6,
            field22: m.field22,
            field4: m.field4.clone(),
            field5: m.field5.clone(),
            field59: m.field59,
            field7: m.field7.clone(),
            field16: m.field16,
            field130: m.field130,
            field12: m.field12,
            field17: m.field17,
            field13: m.field13,
            field14: m.field14,
            field104: m.field104,
            field100: m.field100,
            field101: m.field101,
            field102: m.field102.clone(),
            field103: m.field103.clone(),
            field29: m.field29,
            field30: m.field30,
            field60: m.field60,
            field271: m.field271,
            field272: m.field272,
            field150: m.field150,
            field23: m.field23,
            field24: m.field24,
            field25: m.field25,
            field78: m.field78,
            field67: m.field67,
            field68: m.field68,
            field128: m.field128,
            field129: m.field129.clone(),
            field131: m.field131,
        }
    }
}

/// The echo implementation.
#[derive(Debug, Clone, Copy)]
pub struct Echo;

#[tonic::async_trait]
impl Bench for Echo {
    async fn echo(&self, request: Request<BenchmarkMessage>) -> Result<Response<BenchmarkMessage>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

/// tonic, default settings.
#[derive(Debug, Clone, Copy)]
pub struct Tonic;

impl Framework for Tonic {
    const NAME: Name = Name::Tonic;
    type Caller = TonicCaller;

    async fn serve() -> Result<Serving, BoxError> {
        let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?.with_nodelay(Some(true));
        let addr = incoming.local_addr()?;
        let router = Server::builder().add_service(BenchServer::new(Echo));
        Ok(Serving { addr, run: Box::pin(async move { Ok(router.serve_with_incoming(incoming).await?) }) })
    }

    async fn callers(addr: SocketAddr, conns: usize, callers: usize) -> Result<Vec<TonicCaller>, BoxError> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
        let mut channels = Vec::with_capacity(conns);
        for _ in 0..conns {
            channels.push(endpoint.connect().await?);
        }
        let message = BenchmarkMessage::from(&crate::BenchmarkMessage::filled());
        let mut probe = BenchClient::new(channels[0].clone());
        check_echo(Name::Tonic, &message, &probe.echo(message.clone()).await?.into_inner())?;
        Ok((0..callers)
            .map(|i| TonicCaller {
                client: BenchClient::new(channels[i % conns].clone()),
                message: Some(message.clone()),
            })
            .collect())
    }
}

/// A tonic caller: a generated client over one of the channels.
#[derive(Debug)]
pub struct TonicCaller {
    client: BenchClient<Channel>,
    /// `None` while a call is in flight, and after one failed (the next call starts afresh).
    message: Option<BenchmarkMessage>,
}

impl Caller for TonicCaller {
    async fn call(&mut self) -> Result<(), BoxError> {
        let message = self.message.take().unwrap_or_else(|| BenchmarkMessage::from(&crate::BenchmarkMessage::filled()));
        self.message = Some(self.client.echo(message).await?.into_inner());
        Ok(())
    }
}
