//! `zrpc list ADDR`: every service a server serves and its methods, with their flags.
//!
//! One service a line, then its methods indented, each by its full wire name (what `zrpc call`
//! takes, ready to copy) and its flags (`idempotent`, `oneway`). From `zrpc.Reflection.list`.

use std::fmt::Write as _;

use zrpc::dynamic::Target;
use zrpc::reflection::{MethodDescriptor, ServiceDescriptor};

use crate::Failure;
use crate::options::{self, CallOptions};

/// List the services and methods a server serves (from its reflection service).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the server is (see zrpc --help).
    #[arg(value_name = "ADDR", value_parser = options::target)]
    target: Target,

    #[command(flatten)]
    options: CallOptions,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let client = options::connect(&args.target, 1).await?;
    let services = client.list(args.options.context()).await?;
    print!("{}", render(&services));
    Ok(())
}

/// The listing of `services`.
pub(crate) fn render(services: &[ServiceDescriptor]) -> String {
    let width = services
        .iter()
        .flat_map(|service| service.methods.iter().map(move |method| service.name.len() + 1 + method.name.len()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for service in services {
        let _ = writeln!(out, "{}", service.name);
        for method in &service.methods {
            let name = format!("{}.{}", service.name, method.name);
            let flags = flags(method);
            if flags.is_empty() {
                let _ = writeln!(out, "  {name}");
            } else {
                let _ = writeln!(out, "  {name:width$}  {flags}");
            }
        }
    }
    out
}

/// A method's flags, as words: `idempotent, oneway`, or nothing.
pub(crate) fn flags(method: &MethodDescriptor) -> String {
    let mut words = Vec::new();
    if method.idempotent {
        words.push("idempotent");
    }
    if method.oneway {
        words.push("oneway");
    }
    words.join(", ")
}
