//! Benchmarks for zrpc (see `benches/`).
