//! The smallest zrpc program: a trait is the service, a server and a client talk over TCP on
//! loopback, in one process.
//!
//! It shows the whole path of a call: `#[zrpc::service]` on a trait, an implementation written
//! with plain `async fn`, a server with a name, a client that announces its own name (which the
//! handler sees as `ctx.caller()`), and a graceful shutdown at the end.
//!
//! Run it with `cargo run --example hello`.

use zrpc::{Channel, Context, Server};

/// Greets people.
#[zrpc::service]
pub trait Greeter {
    /// Greets a caller by name.
    async fn hello(&self, ctx: &Context, name: String) -> String;
}

struct Hello;

impl Greeter for Hello {
    async fn hello(&self, ctx: &Context, name: String) -> String {
        format!("hello {name}, from {}", ctx.caller())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server =
        Server::builder().name("greeter-1").add_service(GreeterServer::new(Hello)).bind("tcp://127.0.0.1:0").await?;
    let address = server.local_addr().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));
    println!("greeter-1 listening on {address}");

    let channel = Channel::builder(address).name("hello-example").connect().await?;
    let greeter = GreeterClient::new(channel);
    for name in ["world", "zrpc"] {
        let reply = greeter.hello(name.to_owned()).await?;
        println!("{reply}");
    }

    let _ = stop.send(());
    serving.await??;
    println!("server shut down");
    Ok(())
}
