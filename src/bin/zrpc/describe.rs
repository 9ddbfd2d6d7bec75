//! `zrpc describe ADDR Service[.method]`: what a service's methods take and answer.
//!
//! For people: each method as a signature (argument names and types as the Rust trait writes
//! them), then its doc comment, what `zrpc call` prints when it succeeds (`result`: the `T` of
//! a `Result<T, E>`), how it fails (`errors`), and its flags. With `--json`, the descriptor
//! itself as `zrpc.Reflection.describe` answers it in JSON (PROTOCOL.md §18), JSON Schemas
//! included, for tools.

use std::fmt::Write as _;

use zrpc::dynamic::Target;
use zrpc::reflection::{ErrorKind, MethodDescriptor, ServiceDescriptor};

use crate::Failure;
use crate::options::{self, CallOptions};

/// Describe a service, or one method: arguments, result, errors, flags and docs.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the server is (see zrpc --help).
    #[arg(value_name = "ADDR", value_parser = options::target)]
    target: Target,

    /// A service's wire name (`Greeter`, `pkg.Greeter`) or one method (`Greeter.hello`).
    #[arg(value_name = "SERVICE[.METHOD]")]
    name: String,

    /// Print the descriptor as the server sent it, in JSON, JSON Schemas included.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    options: CallOptions,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let client = options::connect(&args.target, 1).await?;
    let service = client.describe(&args.name, args.options.context()).await?;
    if args.json {
        // A descriptor always serializes: its schemas were parsed as JSON when it was read.
        let json = serde_json::to_string_pretty(&service)
            .map_err(|error| Failure::Failed(format!("cannot print the descriptor as JSON: {error}")))?;
        println!("{json}");
    } else {
        print!("{}", render(&service));
    }
    Ok(())
}

/// `service` for people.
fn render(service: &ServiceDescriptor) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "service {}", service.name);
    for line in service.docs.lines() {
        let _ = writeln!(out, "  {line}");
    }
    for method in &service.methods {
        out.push('\n');
        render_method(&mut out, &service.name, method);
    }
    out
}

fn render_method(out: &mut String, service: &str, method: &MethodDescriptor) {
    let args: Vec<String> = method.args.iter().map(|arg| format!("{}: {}", arg.name, arg.ty.rust)).collect();
    let _ = write!(out, "{service}.{}({})", method.name, args.join(", "));
    if method.result.rust != "()" {
        let _ = write!(out, " -> {}", method.result.rust);
    }
    out.push('\n');
    for line in method.docs.lines() {
        let _ = writeln!(out, "  {line}");
    }
    // What an OK answer holds, which is what `zrpc call` prints.
    let result = match (method.errors, &method.ok) {
        (ErrorKind::None, _) | (_, None) => &method.result.rust,
        (_, Some(ok)) => &ok.rust,
    };
    let _ = writeln!(out, "  result: {result}");
    let error = method.error.as_ref().map_or("?", |error| error.rust.as_str());
    let errors = match method.errors {
        ErrorKind::Application => format!("application error {error} (zrpc call prints it, exit status 3)"),
        ErrorKind::Status => "a status (zrpc call prints it on stderr, exit status 1)".to_owned(),
        _ => "none".to_owned(),
    };
    let _ = writeln!(out, "  errors: {errors}");
    let flags = crate::list::flags(method);
    if !flags.is_empty() {
        let _ = writeln!(out, "  flags: {flags}");
    }
    if method.rust_name != method.name {
        let _ = writeln!(out, "  rust name: {}", method.rust_name);
    }
}
