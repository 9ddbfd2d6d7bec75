//! zrpc with zstd compression on both sides, for every message: what compression costs.
//!
//! The same `Bench` service and message as the `zrpc` row. The benchmark's message (about 581
//! bytes) is under the default threshold of 1 KiB, below which nothing is compressed, so both
//! the server and the channels compress from 0 bytes: every request and every answer is
//! compressed and decompressed (the message shrinks, so none goes plain).

use std::net::SocketAddr;

use zrpc::{Channel, Compression, Server};

use crate::BoxError;
use crate::framework::zrpc::owned::{BenchClient, BenchServer, Echo, Message, ZrpcCaller};
use crate::framework::{Framework, Name, Serving, check_echo};

/// zrpc, default settings but for zstd on every message.
#[derive(Debug, Clone, Copy)]
pub struct ZrpcZstd;

impl Framework for ZrpcZstd {
    const NAME: Name = Name::ZrpcZstd;
    type Caller = ZrpcCaller;

    async fn serve() -> Result<Serving, BoxError> {
        let server = Server::builder().compression(Compression::Zstd).compression_threshold(0);
        crate::framework::zrpc::serve(server.add_service(BenchServer::new(Echo))).await
    }

    async fn callers(addr: SocketAddr, conns: usize, callers: usize) -> Result<Vec<ZrpcCaller>, BoxError> {
        let mut channels = Vec::with_capacity(conns);
        for _ in 0..conns {
            let channel = Channel::builder(addr.into()).compression(Compression::Zstd).compression_threshold(0);
            channels.push(channel.connect().await?);
        }
        let message = Message::filled();
        let probe = BenchClient::new(channels[0].clone());
        check_echo(Name::ZrpcZstd, &message, &probe.echo(message.clone()).await?)?;
        // The turn that sent the probe published its stats before the answer could come (the
        // one that received the answer may not have yet).
        let compressed = channels[0].stats().map_or(0, |stats| stats.compressed_frames_sent);
        if compressed == 0 {
            return Err("zrpc-zstd: the probe was not sent compressed".into());
        }
        Ok((0..callers)
            .map(|i| ZrpcCaller::new(BenchClient::new(channels[i % conns].clone()), message.clone()))
            .collect())
    }
}
