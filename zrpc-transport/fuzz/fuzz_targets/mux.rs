//! A peer's frames after a valid handshake into a mux of either role, read whole and in pieces;
//! the checks are `zrpc_transport::fuzz::mux`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zrpc_transport::fuzz::mux(data);
});
