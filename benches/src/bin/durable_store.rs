//! Storage engines measured as the log of a durable outbox; see `zrpc_benches::durable_store`,
//! or run with `--help`. Needs the feature `durable-engines`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = zrpc_benches::durable_store::main(&args) {
        eprintln!("durable_store: {e}");
        std::process::exit(1);
    }
}
