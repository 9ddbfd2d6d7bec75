//! Appends through a real [`Outbox`] at both durability levels: messages per second and, per
//! append, the median and p99 latency.
//!
//! `cargo bench -p zrpc-transport --features durable --bench outbox [-- SECS]`
//!
//! Rows: 1 appender (each append waits for the previous: one batch per append) and 100
//! concurrent appenders (their appends share batches: one write, and at the power level one
//! `fdatasync`, per batch), 300-byte messages over 8 destinations, for SECS seconds (default 3)
//! each. A task discards what was appended as it goes (what acknowledgements will do), so the log
//! stays bounded and compaction runs as it would. The outbox is in a temp dir under the system's
//! temp dir (set `TMPDIR` to measure another disk).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use zrpc_transport::durable::{Durability, Outbox, OutboxConfig};

const DESTINATIONS: [&str; 8] = ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7"];

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let secs = std::env::args().skip(1).find(|a| !a.starts_with('-')).map_or(Ok(3.0), |s| s.parse::<f64>())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!("| level | appenders | msg/s | p50 | p99 |");
    println!("|---|---:|---:|---:|---:|");
    for durability in [Durability::Process, Durability::Power] {
        for appenders in [1, 100] {
            runtime.block_on(row(durability, appenders, Duration::from_secs_f64(secs)))?;
        }
    }
    Ok(())
}

async fn row(durability: Durability, appenders: usize, secs: Duration) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let outbox =
        Outbox::open(dir.path(), OutboxConfig::new("bench").durability(durability).max_bytes(u64::MAX)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let discarder = {
        let (outbox, stop) = (outbox.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for d in DESTINATIONS {
                    outbox.discard(d).await?;
                }
                tokio::task::yield_now().await;
            }
            Ok::<_, zrpc_transport::durable::DurableError>(())
        })
    };
    let message = Bytes::from(vec![7u8; 300]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let (outbox, stop, message) = (outbox.clone(), stop.clone(), message.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut n = a;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                outbox.append(DESTINATIONS[n % DESTINATIONS.len()], message.clone()).await?;
                latencies.push(t.elapsed());
                n += 1;
            }
            Ok::<_, zrpc_transport::durable::DurableError>(latencies)
        }));
    }
    tokio::time::sleep(secs).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    discarder.await??;
    outbox.close().await?;
    latencies.sort_unstable();
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "| {durability:?} | {appenders} | {rate:.0} | {:?} | {:?} |",
        at(0.50).copied().unwrap_or_default(),
        at(0.99).copied().unwrap_or_default(),
    );
    Ok(())
}
