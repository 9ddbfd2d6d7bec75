//! Arbitrary bytes through the frame decoder, limited to 1024-byte frames (the smallest limit a
//! peer may announce, so that it is in reach); the checks are `zrpc_transport::fuzz::frames`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zrpc_transport::frame::MIN_MAX_FRAME;

fuzz_target!(|data: &[u8]| {
    zrpc_transport::fuzz::frames(data, MIN_MAX_FRAME);
});
