//! A peer's compressed payloads into `decompress` under a limit, and arbitrary bytes round
//! tripped through every algorithm; the checks are `zrpc_transport::fuzz::compressed`. Run with
//! `-malloc_limit_mb=64`: an allocation past the limit is a failure too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zrpc_transport::fuzz::compressed(data);
});
