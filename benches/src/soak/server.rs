//! The server under attack: a `#[zrpc::service]` with the three methods the clients call, bound
//! with default settings in a child process of its own (`soak serve soak`, see
//! [`proc`](crate::proc)), or, for `connection-flood`, with [`FLOOD_MAX_CONNECTIONS`]
//! (`soak serve soak-limited`).
//!
//! The hostile clients write raw frames, so they name the methods by their wire names,
//! `"Service.method"` ([`ECHO`], [`SLEEP`], [`HOLD`]), and encode each method's one argument
//! with postcard as the generated client would; the tests check both against the generated
//! code.

use std::time::Duration;

use zrpc::{Blob, Context, Server};

use crate::BoxError;
use crate::framework::Serving;

/// What the `serve` child mode is told to run: the server with default settings.
pub const NAME: &str = "soak";
/// The same server, open to at most [`FLOOD_MAX_CONNECTIONS`] connections.
pub const LIMITED: &str = "soak-limited";
/// The connection bound of [`LIMITED`]'s server. The default (65,536,
/// `zrpc::DEFAULT_MAX_CONNECTIONS`) is past the 20,000 file descriptors a process gets on the
/// project's machines and past the ports one loopback address can connect from, so a flood
/// that reaches it cannot be run from one client; this one can, four times over.
pub const FLOOD_MAX_CONNECTIONS: usize = 1_024;

/// The wire name of [`Soak::echo`].
pub const ECHO: &str = "Soak.echo";
/// The wire name of [`Soak::sleep`].
pub const SLEEP: &str = "Soak.sleep";
/// The wire name of [`Soak::hold`].
pub const HOLD: &str = "Soak.hold";

/// The service the soak clients call.
#[zrpc::service]
pub trait Soak {
    /// Returns the bytes it was given: what the flooding clients send, and the well-behaved
    /// client's call.
    async fn echo(&self, bytes: Blob) -> Blob;

    /// Sleeps `ms` milliseconds, then answers: a call that costs the server a slot and no work.
    async fn sleep(&self, ms: u64);

    /// Sleeps `ms` milliseconds holding `ctx`, then answers how many metadata entries it held.
    ///
    /// The request's metadata values are zero-copy slices of the frame they arrived in, so for
    /// as long as this call runs they keep that frame's buffer (whatever else it holds) alive.
    async fn hold(&self, ctx: &Context, ms: u64) -> u64;
}

/// The implementation: no state.
#[derive(Debug, Clone, Copy)]
pub struct Target;

impl Soak for Target {
    async fn echo(&self, bytes: Blob) -> Blob {
        bytes
    }

    async fn sleep(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn hold(&self, ctx: &Context, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ctx.metadata().len() as u64
    }
}

/// Binds the server, default settings, on `127.0.0.1:0`.
///
/// # Errors
/// If it cannot bind.
pub async fn serve() -> Result<Serving, BoxError> {
    crate::framework::zrpc::serve(Server::builder().add_service(SoakServer::new(Target))).await
}

/// Binds the server with [`FLOOD_MAX_CONNECTIONS`] and otherwise default settings, on
/// `127.0.0.1:0`.
///
/// # Errors
/// If it cannot bind.
pub async fn serve_limited() -> Result<Serving, BoxError> {
    let builder = Server::builder().max_connections(FLOOD_MAX_CONNECTIONS);
    crate::framework::zrpc::serve(builder.add_service(SoakServer::new(Target))).await
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tower::{Service, ServiceExt};
    use zrpc::{CodecId, Request};

    use super::*;
    use crate::soak::frames::postcard;

    /// Calls `method` in process the way a raw client does: its wire name and a hand-encoded
    /// payload.
    async fn call_raw(method: &'static str, payload: Bytes) -> Result<Bytes, zrpc::Status> {
        let mut server = SoakServer::new(Target);
        let response = server.ready().await?.call(Request::new(method, payload)).await?;
        Ok(response.payload().clone())
    }

    #[tokio::test(start_paused = true)]
    async fn the_raw_clients_names_and_payloads_reach_each_method() -> Result<(), BoxError> {
        let echoed = call_raw(ECHO, postcard(&Blob::from(vec![7u8; 3]))?).await?;
        assert_eq!(CodecId::Postcard.decode::<Vec<u8>>(&echoed)?, vec![7, 7, 7]);

        let slept = call_raw(SLEEP, postcard(&100u64)?).await?;
        CodecId::Postcard.decode::<()>(&slept)?;

        let held = call_raw(HOLD, postcard(&5u64)?).await?;
        assert_eq!(CodecId::Postcard.decode::<u64>(&held)?, 0, "no metadata was sent in process");
        Ok(())
    }
}
