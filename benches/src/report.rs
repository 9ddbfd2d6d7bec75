//! The results: one [`Row`] per framework and point, printed as a table with ratios, or as CSV.

use std::fmt::Write as _;

use crate::framework::Name;
use crate::load::Point;

/// One framework at one point.
#[derive(Debug, Clone)]
pub struct Row {
    /// Which framework.
    pub framework: Name,
    /// The point asked for.
    pub point: Point,
    /// Connections actually used (the callers, for a connection-per-caller framework).
    pub conns: usize,
    /// Completed calls per second.
    pub rps: f64,
    /// Mean latency, µs.
    pub mean_us: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// 99.9th percentile latency, µs.
    pub p999_us: f64,
    /// Allocations per call in the client process.
    pub client_allocs: f64,
    /// Allocations per call in the server process.
    pub server_allocs: f64,
    /// CPU time per call, client and server processes together, µs; `None` where `/proc`
    /// cannot tell.
    pub cpu_us: Option<f64>,
    /// The server's peak resident set so far (`VmHWM`), KiB: a framework's server serves all its
    /// points in turn, so this is the peak over this point and the ones before it.
    pub server_rss_kib: Option<u64>,
    /// Calls that failed in the window.
    pub errors: u64,
}

impl Row {
    /// Client and server allocations per call together.
    pub fn allocs_per_call(&self) -> f64 {
        self.client_allocs + self.server_allocs
    }
}

/// The CSV header.
pub const CSV_HEADER: &str = "framework,conc,conns,rps,mean_us,p50_us,p99_us,p999_us,allocs_per_call,server_rss_kb";

/// The rows as CSV, header first.
pub fn csv(rows: &[Row]) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    for r in rows {
        let rss = r.server_rss_kib.map(|kib| kib.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{:.0},{:.1},{:.1},{:.1},{:.1},{:.2},{}",
            r.framework,
            r.point.callers,
            r.conns,
            r.rps,
            r.mean_us,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.allocs_per_call(),
            rss
        );
    }
    out
}

/// The rows as an aligned table, followed by the ratios the targets are stated in.
///
/// `message_allocs` is what decoding the message once allocates: a serde framework pays it on
/// both sides whatever it does, so the `own/c` column is what is left, the framework's own.
pub fn table(rows: &[Row], message_allocs: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<13} {:>6} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>8} {:>8} {:>8} {:>10}",
        "framework",
        "callers",
        "conns",
        "calls/s",
        "mean µs",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "allocs/c",
        "own/c",
        "client",
        "server",
        "cpu µs/c",
        "srv RSS KiB"
    );
    for r in rows {
        let rss = r.server_rss_kib.map(|kib| kib.to_string()).unwrap_or_else(|| "?".into());
        let cpu = r.cpu_us.map(|us| format!("{us:.2}")).unwrap_or_else(|| "?".into());
        let message = if r.framework.decodes() { 2.0 * message_allocs as f64 } else { 0.0 };
        let own = format!("{:.1}", (r.allocs_per_call() - message).max(0.0));
        let _ = write!(
            out,
            "{:<13} {:>7} {:>5} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8.1} {:>6} {:>8.1} {:>8.1} {:>8} {:>11}",
            r.framework.as_str(),
            r.point.callers,
            r.conns,
            r.rps,
            r.mean_us,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.allocs_per_call(),
            own,
            r.client_allocs,
            r.server_allocs,
            cpu,
            rss
        );
        if r.errors > 0 {
            let _ = write!(out, "  ({} errors)", r.errors);
        }
        out.push('\n');
    }
    out.push_str(&ratios(rows));
    out
}

fn find(rows: &[Row], framework: Name, point: Point) -> Option<&Row> {
    rows.iter().find(|r| r.framework == framework && r.point == point)
}

/// `a / b`, printed, or `-` when either side is missing.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    }
}

fn ratios(rows: &[Row]) -> String {
    let mut points: Vec<Point> = Vec::new();
    for r in rows {
        if !points.contains(&r.point) {
            points.push(r.point);
        }
    }
    let zrpc_rows = rows.iter().any(|r| r.framework == Name::Zrpc);
    if !zrpc_rows {
        return String::new();
    }
    let mut out = String::from("\nratios (zrpc / peer):\n");
    let _ = writeln!(
        out,
        "{:<10} {:>16} {:>18} {:>16} {:>14}",
        "point", "calls/s /tarpc", "calls/s /raw-mux", "calls/s /tonic", "p99 /tarpc"
    );
    for point in points {
        let zrpc = find(rows, Name::Zrpc, point);
        let rps = |name| find(rows, name, point).map(|r| r.rps);
        let p99 = |name| find(rows, name, point).map(|r| r.p99_us);
        let _ = writeln!(
            out,
            "{:<10} {:>16} {:>18} {:>16} {:>14}",
            point.to_string(),
            ratio(zrpc.map(|r| r.rps), rps(Name::Tarpc)),
            ratio(zrpc.map(|r| r.rps), rps(Name::RawMux)),
            ratio(zrpc.map(|r| r.rps), rps(Name::Tonic)),
            ratio(zrpc.map(|r| r.p99_us), p99(Name::Tarpc)),
        );
    }
    let single = Point { callers: 1, conns: 1 };
    let p50 = |name| find(rows, name, single).map(|r| r.p50_us);
    if p50(Name::Zrpc).is_some() {
        let _ = writeln!(
            out,
            "p50 at 1 caller: zrpc / raw-pingpong = {}, zrpc / tarpc = {}",
            ratio(p50(Name::Zrpc), p50(Name::RawPingpong)),
            ratio(p50(Name::Zrpc), p50(Name::Tarpc)),
        );
    }
    out
}
