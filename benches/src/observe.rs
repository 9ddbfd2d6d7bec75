//! `compare --observe`: what it costs to record zrpc's calls, with a `metrics` recorder
//! (Prometheus) and a `tracing` subscriber installed in both processes.
//!
//! Built with the feature `observe`, zrpc's metrics are compiled in; without `--observe`
//! nothing is installed, which is the "compiled in, not recording" case. With
//! `--observe metrics,spans` the parent installs them before the run, and each server child
//! installs the same when it starts ([`CHILD_ENV`] tells it which).

use std::sync::OnceLock;

use crate::BoxError;

/// The environment variable a server child reads: what to install, as `--observe` gave it.
pub const CHILD_ENV: &str = "ZRPC_BENCH_OBSERVE";

/// What this process installed, to hand the same to its children.
static INSTALLED: OnceLock<String> = OnceLock::new();

/// Installs what `list` names (`metrics`, `spans`, comma-separated), once per process.
///
/// # Errors
/// For an unknown name, or when the build lacks the feature `observe`.
pub fn install(list: &str) -> Result<(), BoxError> {
    for what in list.split(',').filter(|w| !w.is_empty()) {
        match what {
            "metrics" => install_metrics()?,
            "spans" => install_spans()?,
            other => return Err(format!("--observe takes metrics and spans, not {other:?}").into()),
        }
    }
    let _ = INSTALLED.set(list.to_owned());
    Ok(())
}

/// What the children should install: what this process did.
pub fn for_children() -> Option<&'static str> {
    INSTALLED.get().map(String::as_str)
}

#[cfg(feature = "observe")]
fn install_metrics() -> Result<(), BoxError> {
    metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    Ok(())
}

#[cfg(feature = "observe")]
fn install_spans() -> Result<(), BoxError> {
    // A registry records every span (it is what any layer reads from); no output.
    tracing::subscriber::set_global_default(tracing_subscriber::registry())?;
    Ok(())
}

#[cfg(not(feature = "observe"))]
fn install_metrics() -> Result<(), BoxError> {
    Err("--observe needs the feature `observe` (cargo run -p zrpc-benches --features observe ...)".into())
}

#[cfg(not(feature = "observe"))]
fn install_spans() -> Result<(), BoxError> {
    install_metrics()
}
