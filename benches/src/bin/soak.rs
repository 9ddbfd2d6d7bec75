//! Hostile and slow clients against a zrpc server; see `zrpc_benches::soak`, or run with
//! `--help`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = zrpc_benches::soak::main(&args) {
        eprintln!("soak: {e}");
        std::process::exit(1);
    }
}
