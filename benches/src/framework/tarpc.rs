//! tarpc 0.38: `#[tarpc::service]`, bincode over TCP (`tarpc::serde_transport::tcp` with
//! `tokio_serde::formats::Bincode`), each request spawned on the server as tarpc's docs show.
//!
//! Every limit that would cap 1000 concurrent calls is raised: the client's
//! `max_in_flight_requests` and `pending_request_buffer`, and the server's
//! `pending_response_buffer`. The server applies no `max_channels_per_key` and no
//! `max_concurrent_requests_per_channel` (both are opt-in limiters; without them nothing caps
//! requests). `TCP_NODELAY` is set on both ends, as zrpc and the raw floors do: tarpc's TCP
//! helpers leave Nagle's algorithm on.

use std::net::SocketAddr;

use futures::StreamExt;
use futures::future;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context, serde_transport, server};

use super::{Caller, Framework, Name, Serving, check_echo};
use crate::{BenchmarkMessage, BoxError};

/// Requests in flight and queued, per connection, on either side: far above 1000 callers.
const LIMIT: usize = 1 << 16;

/// The echo service.
#[tarpc::service]
pub trait Bench {
    /// Returns the message it was given.
    async fn echo(m: BenchmarkMessage) -> BenchmarkMessage;
}

/// The echo implementation.
#[derive(Debug, Clone, Copy)]
pub struct Echo;

impl Bench for Echo {
    async fn echo(self, _: context::Context, m: BenchmarkMessage) -> BenchmarkMessage {
        m
    }
}

/// tarpc, limits raised.
#[derive(Debug, Clone, Copy)]
pub struct Tarpc;

impl Framework for Tarpc {
    const NAME: Name = Name::Tarpc;
    type Caller = TarpcCaller;

    async fn serve() -> Result<Serving, BoxError> {
        let incoming = serde_transport::tcp::listen("127.0.0.1:0", Bincode::default).await?;
        let addr = incoming.local_addr();
        let run = incoming.filter_map(|transport| future::ready(transport.ok())).for_each(|transport| {
            // Best effort: a socket that refuses NODELAY still serves.
            let _ = transport.get_ref().set_nodelay(true);
            let config = server::Config { pending_response_buffer: LIMIT };
            let channel = BaseChannel::new(config, transport);
            tokio::spawn(channel.execute(Echo.serve()).for_each(|response| async move {
                tokio::spawn(response);
            }));
            future::ready(())
        });
        Ok(Serving {
            addr,
            run: Box::pin(async move {
                run.await;
                Ok(())
            }),
        })
    }

    async fn callers(addr: SocketAddr, conns: usize, callers: usize) -> Result<Vec<TarpcCaller>, BoxError> {
        let mut clients = Vec::with_capacity(conns);
        for _ in 0..conns {
            let transport = serde_transport::tcp::connect(addr, Bincode::default).await?;
            transport.get_ref().set_nodelay(true)?;
            let mut config = client::Config::default();
            config.max_in_flight_requests = LIMIT;
            config.pending_request_buffer = LIMIT;
            clients.push(BenchClient::new(config, transport).spawn());
        }
        let message = BenchmarkMessage::filled();
        check_echo(Name::Tarpc, &message, &clients[0].echo(context::current(), message.clone()).await?)?;
        Ok((0..callers)
            .map(|i| TarpcCaller { client: clients[i % conns].clone(), message: Some(message.clone()) })
            .collect())
    }
}

/// A tarpc caller: a generated client over one of the connections.
#[derive(Debug)]
pub struct TarpcCaller {
    client: BenchClient,
    /// `None` while a call is in flight, and after one failed (the next call starts afresh).
    message: Option<BenchmarkMessage>,
}

impl Caller for TarpcCaller {
    async fn call(&mut self) -> Result<(), BoxError> {
        let message = self.message.take().unwrap_or_else(BenchmarkMessage::filled);
        self.message = Some(self.client.echo(context::current(), message).await?);
        Ok(())
    }
}
