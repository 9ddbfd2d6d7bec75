//! A peer's first bytes, preface and HELLO, into a new mux of either role; the checks are
//! `zrpc_transport::fuzz::handshake`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zrpc_transport::fuzz::handshake(data);
});
