//! The connection driver over a simulated stream whose reads and writes the input splits and
//! stalls, on a clock the input moves; the checks are `zrpc_transport::fuzz::conn`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zrpc_transport::fuzz::conn(data);
});
