//! `zrpc call ADDR Service.method [JSON]`: one call, its answer printed as JSON.
//!
//! The arguments are an object keyed by argument name (`{"a":40,"b":2}`) or an array in order
//! (`[40,2]`), as PROTOCOL.md §9 lays them out; none (or `{}`) for a method without arguments.
//! `@-` reads them from standard input and `@path` from a file (no JSON text starts with `@`, so
//! the three cannot be confused): a large or generated argument need not pass through the shell.
//!
//! What it prints, on stdout:
//! - the result, indented (`--compact`: as the server wrote it, one line), exit status 0. For a
//!   method returning `Result<T, E>`, the `T` alone;
//! - an application error (the `E`), the same way, exit status 3;
//! - nothing for a oneway method, which answers nothing (a note on stderr says it was sent).
//!
//! A status (unknown method, arguments the method cannot take, deadline...) is one line on
//! stderr, exit status 1.

use zrpc::dynamic::JsonAnswer;

use crate::options::{self, CallOptions, MethodCall};
use crate::{Failure, pretty};

/// Call a method with JSON arguments and print its answer.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    call: MethodCall,

    /// Print the answer on one line, as the server sent it.
    #[arg(long)]
    compact: bool,

    #[command(flatten)]
    options: CallOptions,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let payload = options::arguments(args.call.args.as_deref())?;
    let client = options::connect(&args.call.target, 1).await?;
    let answer = client.call(&args.call.method, payload, args.options.context()).await?;
    let print = |json: &[u8]| {
        let text = String::from_utf8_lossy(json);
        if args.compact { println!("{text}") } else { println!("{}", pretty::indent(&text)) }
    };
    match answer {
        JsonAnswer::Ok(json) => print(&json),
        JsonAnswer::Err(json) => {
            print(&json);
            return Err(Failure::Application(None));
        }
        JsonAnswer::Sent => eprintln!("zrpc: sent; {} is oneway, no answer comes", args.call.method),
        // A kind of answer newer than this command.
        _ => return Err(Failure::Usage("the server's answer is of a kind this zrpc does not know".to_owned())),
    }
    Ok(())
}
