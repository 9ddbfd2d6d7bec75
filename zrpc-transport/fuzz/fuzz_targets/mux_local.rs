//! A script interleaving a peer's frames with the mux's own calls, cancels, answers, GOAWAY,
//! drains and heartbeat on a clock the input moves; the checks are
//! `zrpc_transport::fuzz::mux_local`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zrpc_transport::fuzz::mux_local(data);
});
