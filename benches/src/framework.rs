//! What a framework under test provides: an echo server and callers.
//!
//! Each framework is a unit struct implementing [`Framework`]: [`Framework::serve`] binds an echo
//! server on `127.0.0.1:0` (it runs in the child process), [`Framework::callers`] connects to it
//! with a given number of connections and returns one [`Caller`] per simulated user (in the parent
//! process). Every caller echoes [`BenchmarkMessage::filled`](crate::BenchmarkMessage::filled) —
//! or, for `raw-mux` and `raw-pingpong`, the same number of bytes as its postcard encoding,
//! which they never decode — and keeps the reply as its next request, so that no framework pays
//! for building a fresh message per call.
//!
//! [`Name`] lists the frameworks this build knows (`tonic` only with the `tonic` feature).

pub mod raw_mux;
pub mod raw_pingpong;
pub mod tarpc;
#[cfg(feature = "tonic")]
pub mod tonic;
pub mod zrpc;
pub mod zrpc_reverse;
pub mod zrpc_zstd;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;

use futures::future::BoxFuture;

use crate::BoxError;

/// An echo server and its clients, as one framework provides them.
pub trait Framework {
    /// The name in the output.
    const NAME: Name;
    /// One simulated user.
    type Caller: Caller;

    /// Binds an echo server on `127.0.0.1:0`; the returned [`Serving`] says where, and serves.
    fn serve() -> impl Future<Output = Result<Serving, BoxError>> + Send;

    /// Opens `conns` connections to `addr` and returns `callers` callers spread over them
    /// round-robin (a framework whose callers cannot share a connection ignores `conns`), after
    /// checking with one call that the server echoes the message intact.
    fn callers(
        addr: SocketAddr,
        conns: usize,
        callers: usize,
    ) -> impl Future<Output = Result<Vec<Self::Caller>, BoxError>> + Send;
}

/// A bound server: its address, and the future that serves until the process ends.
pub struct Serving {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// Serves connections; never completes unless the listener fails.
    pub run: BoxFuture<'static, Result<(), BoxError>>,
}

impl fmt::Debug for Serving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serving").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// Code generic over the framework, run for the one a [`Name`] chooses ([`Name::visit`]).
pub trait Visit {
    /// What the code returns.
    type Output;

    /// Runs the code for framework `F`.
    fn visit<F: Framework>(self) -> Self::Output;
}

/// One simulated user: makes one call at a time.
pub trait Caller: Send + 'static {
    /// Sends the message, waits for the echo, and keeps it as the next message.
    fn call(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// A framework this build can measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Name {
    /// zrpc, postcard, default settings.
    Zrpc,
    /// zrpc with the message's strings as `zrpc::Text` (decoded without copying).
    ZrpcText,
    /// zrpc with the roles turned: the accepting side calls the connecting side.
    ZrpcReverse,
    /// zrpc with zstd on every message, both ways.
    ZrpcZstd,
    /// tarpc, bincode over TCP, limits raised.
    Tarpc,
    /// tonic (gRPC over HTTP/2, protobuf); only with the `tonic` feature.
    Tonic,
    /// The hand-written multiplexed floor.
    RawMux,
    /// The same floor encoding and decoding the message with zrpc's postcard codec.
    RawMuxPostcard,
    /// The hand-written one-connection-per-caller ping-pong floor.
    RawPingpong,
}

impl Name {
    /// Every framework, in output order; `tonic` only when compiled in.
    pub fn all() -> Vec<Name> {
        let mut all = vec![Name::Zrpc, Name::ZrpcText, Name::ZrpcReverse, Name::ZrpcZstd, Name::Tarpc];
        if cfg!(feature = "tonic") {
            all.push(Name::Tonic);
        }
        all.extend([Name::RawMux, Name::RawMuxPostcard, Name::RawPingpong]);
        all
    }

    /// The name in the output and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Name::Zrpc => "zrpc",
            Name::ZrpcText => "zrpc-text",
            Name::ZrpcReverse => "zrpc-reverse",
            Name::ZrpcZstd => "zrpc-zstd",
            Name::Tarpc => "tarpc",
            Name::Tonic => "tonic",
            Name::RawMux => "raw-mux",
            Name::RawMuxPostcard => "raw-mux-postcard",
            Name::RawPingpong => "raw-pingpong",
        }
    }

    /// How the framework decodes the message on each side.
    pub fn decoding(self) -> Decoding {
        match self {
            Name::ZrpcText => Decoding::Shared,
            Name::RawMux | Name::RawPingpong => Decoding::Nothing,
            Name::Zrpc | Name::ZrpcReverse | Name::ZrpcZstd | Name::Tarpc | Name::Tonic | Name::RawMuxPostcard => {
                Decoding::Owned
            }
        }
    }

    /// Runs `code` for the framework this names.
    ///
    /// # Errors
    /// For `tonic` when it is not compiled in.
    pub fn visit<V: Visit>(self, code: V) -> Result<V::Output, BoxError> {
        Ok(match self {
            Name::Zrpc => code.visit::<zrpc::Zrpc>(),
            Name::ZrpcText => code.visit::<zrpc::ZrpcText>(),
            Name::ZrpcReverse => code.visit::<zrpc_reverse::ZrpcReverse>(),
            Name::ZrpcZstd => code.visit::<zrpc_zstd::ZrpcZstd>(),
            Name::Tarpc => code.visit::<tarpc::Tarpc>(),
            #[cfg(feature = "tonic")]
            Name::Tonic => code.visit::<tonic::Tonic>(),
            #[cfg(not(feature = "tonic"))]
            Name::Tonic => return Err(UnknownName("tonic".to_owned()).into()),
            Name::RawMux => code.visit::<raw_mux::RawMux>(),
            Name::RawMuxPostcard => code.visit::<raw_mux::RawMuxPostcard>(),
            Name::RawPingpong => code.visit::<raw_pingpong::RawPingpong>(),
        })
    }

    /// Whether every caller has a connection of its own, whatever the point asks for.
    pub fn connection_per_caller(self) -> bool {
        self == Name::RawPingpong
    }
}

/// How a framework decodes the message, which sets the allocations it cannot avoid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    /// Into owned strings and vectors, as every serde framework does by default.
    Owned,
    /// With its strings as slices of the frame (`zrpc-text`).
    Shared,
    /// Not at all: the raw floors move opaque bytes.
    Nothing,
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A framework name that is not known, or not compiled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName(String);

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == "tonic" {
            write!(f, "tonic is not compiled in: build with `--features tonic` (needs protoc)")
        } else {
            let known: Vec<_> = Name::all().iter().map(|n| n.as_str()).collect();
            write!(f, "unknown framework {:?}; known: {}", self.0, known.join(", "))
        }
    }
}

impl std::error::Error for UnknownName {}

impl FromStr for Name {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Name, UnknownName> {
        Name::all().into_iter().find(|name| name.as_str() == s).ok_or_else(|| UnknownName(s.to_owned()))
    }
}

/// The postcard encoding of [`BenchmarkMessage::filled`](crate::BenchmarkMessage::filled): what the
/// raw floors send, so that they move as many bytes per call as zrpc's payload.
///
/// # Errors
/// If postcard cannot encode the message (it can).
pub fn payload() -> Result<bytes::Bytes, BoxError> {
    let mut buf = bytes::BytesMut::new();
    ::zrpc::CodecId::Postcard.encode(&crate::BenchmarkMessage::<String>::filled(), &mut buf)?;
    Ok(buf.freeze())
}

/// Binds `127.0.0.1:0` and hands every connection accepted, with `TCP_NODELAY` set, to
/// `serve`: the accept loop of the hand-written floors.
///
/// # Errors
/// If it cannot bind.
pub(crate) async fn accept_tcp(serve: impl Fn(tokio::net::TcpStream) + Send + 'static) -> Result<Serving, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let run = async move {
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            serve(stream);
        }
    };
    Ok(Serving { addr, run: Box::pin(run) })
}

/// Fails unless `reply` equals `sent`: the check every framework's `callers` makes once.
pub(crate) fn check_echo<T: PartialEq + fmt::Debug>(framework: Name, sent: &T, reply: &T) -> Result<(), BoxError> {
    if sent == reply { Ok(()) } else { Err(format!("{framework}: the echo differs from the message sent").into()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves framework `F` on this runtime and makes a few calls through two callers on one
    /// connection; `callers` itself checks that the server echoes the message intact.
    struct EchoTwice;

    impl Visit for EchoTwice {
        type Output = BoxFuture<'static, Result<usize, BoxError>>;

        fn visit<F: Framework>(self) -> Self::Output {
            Box::pin(async {
                let serving = F::serve().await?;
                let server = tokio::spawn(serving.run);
                let mut callers = F::callers(serving.addr, 1, 2).await?;
                let mut calls = 0;
                for caller in &mut callers {
                    for _ in 0..3 {
                        caller.call().await?;
                        calls += 1;
                    }
                }
                server.abort();
                Ok(calls)
            })
        }
    }

    /// Every framework `compare` can measure answers with the message it was sent: the floors
    /// too, so a floor that skipped its work or mangled the echo fails here, not in a report.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_framework_echoes() {
        for name in Name::all() {
            let calls = name.visit(EchoTwice).expect("compiled in").await;
            assert_eq!(calls.unwrap_or_else(|e| panic!("{name}: {e}")), 6, "{name}");
        }
    }
}
