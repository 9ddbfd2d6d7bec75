//! Compares zrpc with tarpc, tonic and raw TCP floors; see `zrpc_benches::compare`, or run with
//! `--help`.

use zrpc_benches::alloc::CountingAlloc;

// Counts allocations in the client (this process) and in the servers (children running this same
// binary).
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::COUNT;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = zrpc_benches::compare::main(&args) {
        eprintln!("compare: {e}");
        std::process::exit(1);
    }
}
