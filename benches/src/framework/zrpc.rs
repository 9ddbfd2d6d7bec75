//! zrpc as a user gets it: `#[zrpc::service]`, postcard, default server and channel settings.
//!
//! Two flavours that differ only in the message's string fields: [`Zrpc`] with `String`s, as a
//! user writes them by default, and [`ZrpcText`] with [`zrpc::Text`]s, which the generated code
//! decodes as slices of the received frame instead of copies when they are ASCII.
//!
//! With N connections the callers use N [`Channel`](zrpc::Channel)s (each one connection),
//! round-robin. The callers use the codec [`set_codec`] chose (`compare --codec`), postcard by
//! default; the server answers in it.

use std::sync::atomic::{AtomicU8, Ordering};

use zrpc::{Address, CodecId, ServerBuilder};

use crate::BoxError;
use crate::framework::Serving;

/// The codec of the callers, as its wire id.
static CODEC: AtomicU8 = AtomicU8::new(CodecId::Postcard as u8);

/// Makes the callers built from now on call in `codec`.
pub fn set_codec(codec: CodecId) {
    CODEC.store(codec.as_u8(), Ordering::Relaxed);
}

/// The codec the callers use.
pub(crate) fn codec() -> CodecId {
    CodecId::from_u8(CODEC.load(Ordering::Relaxed)).unwrap_or_default()
}

/// Binds `server`, built with default settings, on `127.0.0.1:0` and returns it as [`Serving`].
///
/// # Errors
/// If it cannot bind, or binds something other than TCP.
pub(crate) async fn serve(server: ServerBuilder) -> Result<Serving, BoxError> {
    let server = server.bind("tcp://127.0.0.1:0").await?;
    let addr = match server.local_addr() {
        Address::Tcp(addr) => addr.parse()?,
        other => return Err(format!("zrpc bound a non-TCP address: {other}").into()),
    };
    Ok(Serving { addr, run: Box::pin(async move { Ok(server.serve().await?) }) })
}

/// The echo service, server and callers of one flavour, in a module of their own (each has a
/// `Bench` service of its own).
macro_rules! flavour {
    ($(#[$doc:meta])* mod $module:ident { $framework:ident, $name:expr, strings: $string:ty }) => {
        $(#[$doc])*
        pub mod $module {
            use std::net::SocketAddr;

            use zrpc::{Channel, Server};

            use crate::framework::{Caller, Framework, Name, Serving, check_echo};
            use crate::{BenchmarkMessage, BoxError};

            /// The message of this flavour.
            pub type Message = BenchmarkMessage<$string>;

            /// The echo service.
            #[zrpc::service]
            pub trait Bench {
                /// Returns the message it was given.
                async fn echo(&self, m: Message) -> Message;
            }

            /// The echo implementation.
            #[derive(Debug, Clone, Copy)]
            pub struct Echo;

            impl Bench for Echo {
                async fn echo(&self, m: Message) -> Message {
                    m
                }
            }

            /// zrpc, default settings.
            #[derive(Debug, Clone, Copy)]
            pub struct $framework;

            impl Framework for $framework {
                const NAME: Name = $name;
                type Caller = ZrpcCaller;

                async fn serve() -> Result<Serving, BoxError> {
                    crate::framework::zrpc::serve(Server::builder().add_service(BenchServer::new(Echo))).await
                }

                async fn callers(addr: SocketAddr, conns: usize, callers: usize) -> Result<Vec<ZrpcCaller>, BoxError> {
                    let mut channels = Vec::with_capacity(conns);
                    for _ in 0..conns {
                        channels.push(Channel::connect(addr).await?);
                    }
                    let message = Message::filled();
                    let codec = crate::framework::zrpc::codec();
                    let probe = BenchClient::new(channels[0].clone()).with_codec(codec);
                    check_echo($name, &message, &probe.echo(message.clone()).await?)?;
                    Ok((0..callers)
                        .map(|i| ZrpcCaller::new(BenchClient::new(channels[i % conns].clone()).with_codec(codec), message.clone()))
                        .collect())
                }
            }

            /// A zrpc caller: a typed client over one of the channels, or over any service
            /// that carries zrpc calls (a server's `Peer`, a `Client`).
            #[derive(Debug)]
            pub struct ZrpcCaller<S = Channel> {
                client: BenchClient<S>,
                /// `None` while a call is in flight, and after one failed (the next call starts
                /// afresh).
                message: Option<Message>,
            }

            impl<S> ZrpcCaller<S> {
                /// A caller through `client`, starting with `message`.
                pub(crate) fn new(client: BenchClient<S>, message: Message) -> ZrpcCaller<S> {
                    ZrpcCaller { client, message: Some(message) }
                }
            }

            impl<S> Caller for ZrpcCaller<S>
            where
                S: tower::Service<zrpc::Request, Response = zrpc::Response, Error = zrpc::Status>
                    + Clone
                    + Send
                    + Sync
                    + 'static,
                S::Future: Send,
            {
                async fn call(&mut self) -> Result<(), BoxError> {
                    let message = self.message.take().unwrap_or_else(Message::filled);
                    self.message = Some(self.client.echo(message).await?);
                    Ok(())
                }
            }
        }

        pub use $module::$framework;
    };
}

flavour! {
    /// The message's strings are `String`s: what a user writes by default.
    mod owned { Zrpc, Name::Zrpc, strings: String }
}

flavour! {
    /// The message's strings are [`zrpc::Text`]s: its ASCII ones decoded as slices of the frame.
    mod shared { ZrpcText, Name::ZrpcText, strings: zrpc::Text }
}
