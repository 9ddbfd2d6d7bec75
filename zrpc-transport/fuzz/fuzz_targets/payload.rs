//! Arbitrary bytes as a payload through zrpc's postcard decoder, against the `postcard`
//! crate's verdicts and values; the checks are `zrpc_core::fuzz::postcard`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zrpc_core::fuzz::postcard(data);
});
