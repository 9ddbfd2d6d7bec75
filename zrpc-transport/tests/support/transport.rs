//! The transports the end-to-end suites run over: TCP, Unix sockets, in-memory pipes, and with
//! the `tls` feature TLS over TCP, with [`over_every_transport!`](crate::over_every_transport)
//! to run a suite's tests over each.

use zrpc_transport::{Address, ChannelBuilder, ServerBuilder};

/// A transport.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Tcp,
    Unix,
    Memory,
    #[cfg(feature = "tls")]
    Tls,
}

impl Kind {
    /// An address to bind a server of this kind on, its socket (if any) in `dir`.
    pub fn address(self, dir: &tempfile::TempDir) -> Address {
        match self {
            Kind::Tcp => "tcp://127.0.0.1:0".parse(),
            Kind::Unix => format!("unix://{}", dir.path().join("zrpc.sock").display()).parse(),
            Kind::Memory => "mem://".parse(),
            #[cfg(feature = "tls")]
            Kind::Tls => "tcp://127.0.0.1:0".parse(),
        }
        .expect("valid address")
    }

    /// `builder`, speaking this kind (TLS with the tests' certificate).
    pub fn server(self, builder: ServerBuilder) -> ServerBuilder {
        match self {
            #[cfg(feature = "tls")]
            Kind::Tls => builder.tls(super::tls::server()),
            _ => builder,
        }
    }

    /// `builder`, speaking this kind (TLS trusting the tests' CA).
    pub fn channel(self, builder: ChannelBuilder) -> ChannelBuilder {
        match self {
            #[cfg(feature = "tls")]
            Kind::Tls => builder.tls(super::tls::client()),
            _ => builder,
        }
    }
}

/// Runs each `async fn name(kind: Kind)` of the calling suite as a test over every transport,
/// in modules `tcp`, `unix`, `memory` and (feature `tls`) `tls`.
#[macro_export]
macro_rules! over_every_transport {
    ($($test:ident),* $(,)?) => {
        mod tcp {
            $(#[tokio::test] async fn $test() { super::$test($crate::support::transport::Kind::Tcp).await })*
        }
        mod unix {
            $(#[tokio::test] async fn $test() { super::$test($crate::support::transport::Kind::Unix).await })*
        }
        mod memory {
            $(#[tokio::test] async fn $test() { super::$test($crate::support::transport::Kind::Memory).await })*
        }
        #[cfg(feature = "tls")]
        mod tls {
            $(#[tokio::test] async fn $test() { super::$test($crate::support::transport::Kind::Tls).await })*
        }
    };
}
