//! `zrpc gateway ADDR [--listen HOST:PORT]`: the HTTP/JSON gateway and its web console in front
//! of any target, until Ctrl-C, as `grpcui` serves a UI for a gRPC server.
//!
//! It is [`zrpc::gateway`] over a client of ADDR (any target: addresses, `dns://`, `etcd://`),
//! so everything that module documents holds: `POST /{service}/{method}` with a JSON body,
//! statuses as HTTP codes, `zrpc-timeout` and `zrpc-meta-*` headers, `/-/instances`,
//! `/-/health`, and the console at `/` (`--no-console` leaves it out).
//!
//! Decisions:
//! - **Loopback by default** (`127.0.0.1:8080`): the console calls any method of the target
//!   from a browser, which is for the person at this machine unless `--listen` says otherwise.
//! - The address it listens on is the first line on stdout (`http://127.0.0.1:8080/`), so a
//!   script that asked for port 0 learns the real one; notes go to stderr.
//! - Ctrl-C stops accepting, lets the requests in progress finish, and exits 0.

use std::time::Duration;

use zrpc::Client;
use zrpc::dynamic::Target;
use zrpc::gateway::Gateway;

use crate::Failure;
use crate::options::{self, CALLER};

/// Serve the HTTP/JSON gateway and the web console in front of ADDR, until Ctrl-C.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the servers are: host:port, a comma list, dns://, or etcd://host:port/prefix.
    #[arg(value_name = "ADDR", value_parser = options::target)]
    target: Target,

    /// The HTTP address to listen on (port 0 picks a free one).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    listen: String,

    /// The deadline of calls whose request sets no `zrpc-timeout` header, e.g. 2s.
    #[arg(long, value_name = "DURATION", value_parser = options::duration, default_value = "10s")]
    timeout: Duration,

    /// Serve the HTTP/JSON API only, without the web console at /.
    #[arg(long)]
    no_console: bool,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let client = args.target.client(Client::builder().name(CALLER)).await?;
    let gateway = Gateway::builder(client)
        .default_timeout(args.timeout)
        .console(!args.no_console)
        .bind(args.listen.as_str())
        .await
        .map_err(|error| Failure::Usage(format!("cannot listen on {}: {error}", args.listen)))?;
    println!("http://{}/", gateway.local_addr());
    eprintln!("zrpc: serving {} over HTTP (Ctrl-C to stop)", args.target);
    // Caught from here on: the signal is registered before serving starts.
    let ctrl_c = tokio::signal::ctrl_c();
    gateway
        .serve_with_shutdown(async move {
            let _ = ctrl_c.await;
        })
        .await
        .map_err(|error| Failure::Failed(format!("the gateway stopped: {error}")))
}
