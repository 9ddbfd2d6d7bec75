//! The durable log's recovery: an outbox's or an inbox's log written through its API and then
//! damaged (an inbox's handled marks' sidecar too), or segments of records zrpc did not write,
//! opened again; the checks are `zrpc_transport::fuzz::durable`. Run with
//! `-malloc_limit_mb=64`: an allocation from a count or a length in a record (or from a
//! sidecar's length) is a failure too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zrpc_transport::fuzz::durable(data);
});
