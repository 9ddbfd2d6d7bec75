//! Benchmarks for zrpc.
//!
//! - `cargo run -p zrpc-benches --release --bin compare`: the comparison load generator. It runs
//!   each framework's echo server in a child process of its own and drives it over loopback from
//!   the parent, reporting throughput, latency percentiles, allocations per call and the server's
//!   peak memory; see [`compare`] for what is measured and how, and `--help` for the options.
//! - `cargo run -p zrpc-benches --release --bin soak`: hostile and slow clients against a zrpc
//!   server child, one scenario at a time, reporting the server's memory growth and what a
//!   well-behaved client on its own connection saw meanwhile; see [`soak`].
//! - `cargo run -p zrpc-benches --release --features durable-engines --bin durable_store`: redb,
//!   fjall, SQLite and a minimal segment log measured as the log of a durable outbox (issue 13);
//!   see `durable_store`.
//! - `cargo bench -p zrpc-benches --bench frame`: criterion micro-benchmarks of the hot path
//!   pieces that touch no socket (frame encode/decode, header parsing, codec round trip, mux
//!   dispatch).
//!
//! | module | what it holds |
//! |---|---|
//! | [`framework`] | the [`Framework`](framework::Framework) and [`Caller`](framework::Caller) traits, and one module per framework measured |
//! | [`load`] | the load loop: N callers, a warm-up, a measured window |
//! | [`alloc`] | the counting global allocator |
//! | [`proc`] | the server child process: starting it, asking it for its counters, killing it |
//! | [`report`] | the table, the ratios and the CSV |
//! | [`chart`] | the SVG chart |
//! | [`compare`] | the `compare` program: options, the run, the `serve` child mode |
//! | [`soak`] | the `soak` program: hostile clients, the server they attack, the report |
//! | `durable_store` | the `durable_store` program (feature `durable-engines`): redb, fjall, SQLite and a segment log measured as a durable outbox's log |
//! | [`machine`] | the CPU, cores and date for a report's heading |
//! | [`observe`] | `compare --observe`: a `metrics` recorder and a `tracing` subscriber in both processes |
//! | [`args`] | command-line values both programs parse |
//!
//! The workload message, [`BenchmarkMessage`], lives here so that every framework echoes the same
//! values.

pub mod alloc;
pub mod args;
pub mod chart;
pub mod compare;
#[cfg(feature = "durable-engines")]
pub mod durable_store;
pub mod framework;
pub mod load;
pub mod machine;
pub mod observe;
pub mod proc;
pub mod report;
pub mod scale;
pub mod soak;

/// A boxed error, for the benchmark's plumbing.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

use serde::{Deserialize, Serialize};

/// A message shaped like rpcx's `BenchmarkMessage`: strings, integers and booleans.
///
/// `S` is the type of its string fields: `String` for every framework, and [`zrpc::Text`] for
/// `zrpc-text`, which shows what decoding its ASCII strings as slices of the frame saves. Both
/// encode to the same bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct BenchmarkMessage<S = String> {
    pub field1: S,
    pub field9: S,
    pub field18: S,
    pub field80: bool,
    pub field81: bool,
    pub field2: i32,
    pub field3: i32,
    pub field280: i32,
    pub field6: i32,
    pub field22: i64,
    pub field4: S,
    pub field5: Vec<u64>,
    pub field59: bool,
    pub field7: S,
    pub field16: i32,
    pub field130: i32,
    pub field12: bool,
    pub field17: bool,
    pub field13: bool,
    pub field14: bool,
    pub field104: i32,
    pub field100: i32,
    pub field101: i32,
    pub field102: S,
    pub field103: S,
    pub field29: i32,
    pub field30: bool,
    pub field60: i32,
    pub field271: i32,
    pub field272: i32,
    pub field150: i32,
    pub field23: i32,
    pub field24: bool,
    pub field25: i32,
    pub field78: bool,
    pub field67: i32,
    pub field68: i32,
    pub field128: i32,
    pub field129: S,
    pub field131: i32,
}

impl<S: From<&'static str>> BenchmarkMessage<S> {
    /// The message as the rpcx benchmark fills it.
    pub fn filled() -> BenchmarkMessage<S> {
        BenchmarkMessage {
            field1: "许多往事在眼前一幕一幕，变的那麼模糊".into(),
            field9: "中国".into(),
            field18: "a]b]c]d]e]f]g]h]i]j]k]l]m]n]o]p]q]r]s]t]u]v]w]x]y]z".into(),
            field80: false,
            field81: true,
            field2: 100_000,
            field3: 100_000,
            field280: 100_000,
            field6: 100_000,
            field22: 100_000,
            field4: "在这个世界上，没有什么是永恒的".into(),
            field5: vec![1, 2, 3, 4, 5, 6],
            field59: true,
            field7: "你好，世界".into(),
            field16: 100_000,
            field130: 100_000,
            field12: true,
            field17: true,
            field13: true,
            field14: true,
            field104: 100_000,
            field100: 100_000,
            field101: 100_000,
            field102: "2016-12-29 18:39:00".into(),
            field103: "hello world".into(),
            field29: 100_000,
            field30: true,
            field60: 100_000,
            field271: 100_000,
            field272: 100_000,
            field150: 100_000,
            field23: 100_000,
            field24: true,
            field25: 100_000,
            field78: true,
            field67: 100_000,
            field68: 100_000,
            field128: 100_000,
            field129: "xxxxxxxxxxxxxxxxxxxxx".into(),
            field131: 100_000,
        }
    }
}
