//! The results: one [`Row`] per framework and point, printed as a table with ratios, or as CSV.

use std::fmt::Write as _;

use crate::framework::{Decoding, Name};
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

/// One row per framework and point from several rounds of the same rows: each figure is the
/// median of that figure over the rounds (figures taken one by one, so a row's p99 need not
/// come from the same round as its throughput), except the server's peak RSS, the highest,
/// and failed calls, summed. Rows keep the order of the first round.
pub fn median_rows(rounds: &[Vec<Row>]) -> Vec<Row> {
    let Some(first) = rounds.first() else { return Vec::new() };
    first
        .iter()
        .map(|row| {
            let same: Vec<&Row> = rounds
                .iter()
                .filter_map(|round| round.iter().find(|r| r.framework == row.framework && r.point == row.point))
                .collect();
            let median = |figure: fn(&Row) -> f64| median(same.iter().map(|r| figure(r)).collect());
            Row {
                rps: median(|r| r.rps),
                mean_us: median(|r| r.mean_us),
                p50_us: median(|r| r.p50_us),
                p99_us: median(|r| r.p99_us),
                p999_us: median(|r| r.p999_us),
                client_allocs: median(|r| r.client_allocs),
                server_allocs: median(|r| r.server_allocs),
                cpu_us: same.iter().all(|r| r.cpu_us.is_some()).then(|| median(|r| r.cpu_us.unwrap_or_default())),
                server_rss_kib: same.iter().filter_map(|r| r.server_rss_kib).max(),
                errors: same.iter().map(|r| r.errors).sum(),
                ..row.clone()
            }
        })
        .collect()
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
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

/// What decoding the message once allocates: a framework pays it on both sides whatever it
/// does, so the `own/c` column is what is left, the framework's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageAllocs {
    /// Into owned strings and vectors.
    pub owned: u64,
    /// With `zrpc::Text` strings sharing the frame.
    pub shared: u64,
}

impl MessageAllocs {
    /// What `framework` pays per call to decode the message on both sides.
    pub fn per_call(self, framework: Name) -> f64 {
        let once = match framework.decoding() {
            Decoding::Owned => self.owned,
            Decoding::Shared => self.shared,
            Decoding::Nothing => 0,
        };
        2.0 * once as f64
    }
}

/// The rows as an aligned table, followed by the ratios the targets are stated in.
pub fn table(rows: &[Row], message_allocs: MessageAllocs) -> String {
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
        let own = format!("{:.1}", (r.allocs_per_call() - message_allocs.per_call(r.framework)).max(0.0));
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

/// A ratio the targets are stated in: one framework's figure over another's, at a point.
struct Column {
    heading: &'static str,
    over: Name,
    under: Name,
    figure: fn(&Row) -> f64,
}

/// The ratio columns, in order.
const COLUMNS: [Column; 6] = [
    Column { heading: "calls/s /tarpc", over: Name::Zrpc, under: Name::Tarpc, figure: |r| r.rps },
    Column { heading: "calls/s /raw-mux", over: Name::Zrpc, under: Name::RawMux, figure: |r| r.rps },
    Column { heading: "calls/s /raw-mux-postcard", over: Name::Zrpc, under: Name::RawMuxPostcard, figure: |r| r.rps },
    Column { heading: "calls/s /tonic", over: Name::Zrpc, under: Name::Tonic, figure: |r| r.rps },
    Column { heading: "p99 /tarpc", over: Name::Zrpc, under: Name::Tarpc, figure: |r| r.p99_us },
    Column { heading: "reverse", over: Name::ZrpcReverse, under: Name::Zrpc, figure: |r| r.rps },
];

/// The single caller's round trip against raw ping-pong's and tarpc's: p50 over p50.
const SINGLE_CALLER: [Column; 2] = [
    Column { heading: "zrpc / raw-pingpong", over: Name::Zrpc, under: Name::RawPingpong, figure: |r| r.p50_us },
    Column { heading: "zrpc / tarpc", over: Name::Zrpc, under: Name::Tarpc, figure: |r| r.p50_us },
];

/// `column` at `point` in each of `rounds`, at least one (a round's ratio from that round's rows
/// alone): the one value, or the lowest and the highest; `-` where a round lacks either
/// framework.
fn cell(rounds: &[&[Row]], column: &Column, point: Point) -> String {
    let mut values = Vec::with_capacity(rounds.len());
    for rows in rounds {
        match ratio_of(rows, point, column.over, column.under, column.figure) {
            Some(ratio) => values.push(ratio),
            None => return "-".to_owned(),
        }
    }
    let low = format!("{:.2}", values.iter().copied().fold(f64::INFINITY, f64::min));
    let high = format!("{:.2}", values.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    if low == high { low } else { format!("{low}–{high}") }
}

/// The ratio table over `rounds`: of the medians (one "round" of median rows), or each round's
/// range.
fn ratio_table(rounds: &[&[Row]], title: &str) -> String {
    let Some(first) = rounds.first() else { return String::new() };
    if !first.iter().any(|r| r.framework == Name::Zrpc) {
        return String::new();
    }
    let mut points: Vec<Point> = Vec::new();
    for r in *first {
        if !points.contains(&r.point) {
            points.push(r.point);
        }
    }
    // Wide enough for a heading, and for a range ("0.84–1.15") under a short one.
    let width = |column: &Column| column.heading.chars().count().max(11) + 2;
    let mut out = format!("\n{title}\n{:<10}", "point");
    for column in &COLUMNS {
        let _ = write!(out, " {:>w$}", column.heading, w = width(column));
    }
    out.push('\n');
    for point in points {
        let _ = write!(out, "{:<10}", point.to_string());
        for column in &COLUMNS {
            let _ = write!(out, " {:>w$}", cell(rounds, column, point), w = width(column));
        }
        out.push('\n');
    }
    let single = Point { callers: 1, conns: 1 };
    if first.iter().any(|r| r.framework == Name::Zrpc && r.point == single) {
        let cells: Vec<String> = SINGLE_CALLER
            .iter()
            .map(|column| format!("{} = {}", column.heading, cell(rounds, column, single)))
            .collect();
        let _ = writeln!(out, "p50 at 1 caller: {}", cells.join(", "));
    }
    out
}

fn ratios(rows: &[Row]) -> String {
    ratio_table(&[rows], "ratios (zrpc / peer; reverse = zrpc-reverse / zrpc):")
}

/// The same ratios computed within each round, as the lowest and highest over the rounds: the
/// range a report quotes, since the medians of two frameworks may come from different rounds.
pub fn round_ratios(rounds: &[Vec<Row>]) -> String {
    let rounds: Vec<&[Row]> = rounds.iter().map(Vec::as_slice).collect();
    ratio_table(&rounds, &format!("ratios per round, lowest–highest of {} (each round's own rows):", rounds.len()))
}

/// One of issue 15's targets for a call (DESIGN.md §7), judged within a round from that round's
/// rows alone.
struct Target {
    point: Point,
    /// What is asked, as printed.
    what: &'static str,
    /// The round's figure; `None` when the round lacks a framework the target compares with.
    figure: fn(&[Row], Point, MessageAllocs) -> Option<f64>,
    /// The figure the target allows.
    limit: f64,
    /// The figure must be at least the limit (a ratio that must be high), not at most.
    at_least: bool,
}

impl Target {
    fn met(&self, figure: f64) -> bool {
        if self.at_least { figure >= self.limit } else { figure <= self.limit }
    }
}

/// `over`'s figure over `under`'s at `point`, in one round's rows.
fn ratio_of(rows: &[Row], point: Point, over: Name, under: Name, figure: fn(&Row) -> f64) -> Option<f64> {
    let (a, b) = (find(rows, over, point).map(figure)?, find(rows, under, point).map(figure)?);
    (b > 0.0).then(|| a / b)
}

const DEPTHS: [Point; 2] = [Point { callers: 100, conns: 1 }, Point { callers: 1000, conns: 1 }];

/// The targets, in the order printed: at 100 and 1,000 callers on one connection, then one
/// caller's round trip.
fn targets() -> Vec<Target> {
    let mut all = Vec::new();
    for point in DEPTHS {
        all.extend([
            Target {
                point,
                what: "calls/s >= 0.8 x raw-mux",
                figure: |rows, point, _| ratio_of(rows, point, Name::Zrpc, Name::RawMux, |r| r.rps),
                limit: 0.8,
                at_least: true,
            },
            Target {
                point,
                what: "calls/s >= 3 x tarpc",
                figure: |rows, point, _| ratio_of(rows, point, Name::Zrpc, Name::Tarpc, |r| r.rps),
                limit: 3.0,
                at_least: true,
            },
            Target {
                point,
                what: "CPU µs a call <= raw-mux's + 1.5 (above raw-mux's)",
                figure: |rows, point, _| {
                    Some(find(rows, Name::Zrpc, point)?.cpu_us? - find(rows, Name::RawMux, point)?.cpu_us?)
                },
                limit: 1.5,
                at_least: false,
            },
            Target {
                point,
                what: "own allocations a call <= 2",
                figure: |rows, point, message| {
                    Some(find(rows, Name::Zrpc, point)?.allocs_per_call() - message.per_call(Name::Zrpc))
                },
                limit: 2.0,
                at_least: false,
            },
        ]);
    }
    all.push(Target {
        point: Point { callers: 1, conns: 1 },
        what: "p50 <= 1.15 x raw-pingpong",
        figure: |rows, point, _| ratio_of(rows, point, Name::Zrpc, Name::RawPingpong, |r| r.p50_us),
        limit: 1.15,
        at_least: false,
    });
    all
}

/// Issue 15's targets for a call, each judged in every round from that round's rows: how many
/// rounds met it and the worst round's figure, so that a run says at once where it stands on
/// the machine it ran on. Targets whose frameworks or points were not measured are left out.
pub fn target_rounds(rounds: &[Vec<Row>], message_allocs: MessageAllocs) -> String {
    let mut out = String::new();
    for target in targets() {
        let figures: Option<Vec<f64>> =
            rounds.iter().map(|rows| (target.figure)(rows, target.point, message_allocs)).collect();
        let Some(figures) = figures.filter(|figures| !figures.is_empty()) else { continue };
        let met = figures.iter().filter(|&&figure| target.met(figure)).count();
        let (worst, which) = if target.at_least {
            (figures.iter().copied().fold(f64::INFINITY, f64::min), "lowest")
        } else {
            (figures.iter().copied().fold(f64::NEG_INFINITY, f64::max), "highest")
        };
        let _ = writeln!(
            out,
            "{:<8} {:<51} {met} of {} rounds ({which} {worst:.2})",
            target.point.to_string(),
            target.what,
            figures.len()
        );
    }
    if out.is_empty() {
        return out;
    }
    format!("\nissue 15's targets for a call, round by round:\n{out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(framework: Name, rps: f64, p99_us: f64, rss: u64) -> Row {
        Row {
            framework,
            point: Point { callers: 100, conns: 1 },
            conns: 1,
            rps,
            mean_us: 1.0,
            p50_us: 1.0,
            p99_us,
            p999_us: 1.0,
            client_allocs: 1.0,
            server_allocs: 1.0,
            cpu_us: Some(rps / 1000.0),
            server_rss_kib: Some(rss),
            errors: 1,
        }
    }

    #[test]
    fn each_figure_is_its_own_median_over_the_rounds() {
        let rounds = vec![
            vec![row(Name::Zrpc, 300.0, 9.0, 10), row(Name::Tarpc, 100.0, 5.0, 20)],
            vec![row(Name::Tarpc, 120.0, 7.0, 21), row(Name::Zrpc, 500.0, 1.0, 11)],
            vec![row(Name::Zrpc, 400.0, 2.0, 12), row(Name::Tarpc, 110.0, 6.0, 19)],
        ];
        let rows = median_rows(&rounds);
        assert_eq!(rows.iter().map(|r| r.framework).collect::<Vec<_>>(), [Name::Zrpc, Name::Tarpc]);
        assert_eq!((rows[0].rps, rows[0].p99_us, rows[0].server_rss_kib), (400.0, 2.0, Some(12)));
        assert_eq!((rows[1].rps, rows[1].p99_us, rows[1].server_rss_kib), (110.0, 6.0, Some(21)));
        assert_eq!(rows[0].cpu_us, Some(0.4));
        assert_eq!(rows[0].errors, 3, "errors add up over the rounds");
    }

    /// Each round's ratio comes from that round's rows: the range, not the ratio of medians.
    #[test]
    fn ratios_per_round_are_the_range_of_each_rounds_own() {
        let single = |framework, rps, p50_us| Row {
            point: Point { callers: 1, conns: 1 },
            p50_us,
            ..row(framework, rps, 1.0, 1)
        };
        let rounds = vec![
            vec![row(Name::Zrpc, 300.0, 9.0, 10), row(Name::Tarpc, 100.0, 5.0, 20), single(Name::Zrpc, 1.0, 60.0)],
            vec![row(Name::Zrpc, 400.0, 1.0, 11), row(Name::Tarpc, 200.0, 7.0, 21), single(Name::Zrpc, 1.0, 66.0)],
        ];
        let rounds: Vec<Vec<Row>> = rounds
            .into_iter()
            .map(|mut round| {
                round.push(single(Name::RawPingpong, 1.0, 50.0));
                round
            })
            .collect();
        let out = round_ratios(&rounds);
        let line = out.lines().find(|l| l.starts_with("100x1")).expect("a line for the point");
        let cells: Vec<&str> = line.split_whitespace().collect();
        // calls/s over tarpc 3.00 and 2.00; raw-mux, raw-mux-postcard and tonic absent; p99 over
        // tarpc 1.80 and 0.14; no zrpc-reverse.
        assert_eq!(cells, ["100x1", "2.00–3.00", "-", "-", "-", "0.14–1.80", "-"]);
        assert!(out.contains("zrpc / raw-pingpong = 1.20–1.32"), "{out}");
        // One round, or equal ratios, print one value.
        assert!(ratios(&rounds[0]).lines().any(|l| l.split_whitespace().nth(1) == Some("3.00")));
    }

    /// Each target is judged within each round; the line counts the rounds that met it and
    /// names the worst.
    #[test]
    fn targets_are_judged_round_by_round() {
        let at = |framework, callers, rps, cpu_us, p50_us| Row {
            point: Point { callers, conns: 1 },
            p50_us,
            cpu_us: Some(cpu_us),
            client_allocs: 5.0,
            server_allocs: 5.5,
            ..row(framework, rps, 1.0, 1)
        };
        let round = |zrpc_rps, zrpc_cpu| {
            vec![
                at(Name::Zrpc, 100, zrpc_rps, zrpc_cpu, 1.0),
                at(Name::RawMux, 100, 100.0, 3.0, 1.0),
                at(Name::Tarpc, 100, 25.0, 9.0, 1.0),
                at(Name::Zrpc, 1, 1.0, 1.0, 110.0),
                at(Name::RawPingpong, 1, 1.0, 1.0, 100.0),
            ]
        };
        // zrpc / raw-mux 0.90 and 0.70; zrpc / tarpc 3.6 and 2.8; CPU 0.5 and 2.0 µs above.
        let rounds = vec![round(90.0, 3.5), round(70.0, 5.0)];
        let message = MessageAllocs { owned: 4, shared: 0 };
        let out = target_rounds(&rounds, message);
        let line = |what: &str| out.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("{what}: {out}"));
        assert!(line("0.8 x raw-mux").ends_with("1 of 2 rounds (lowest 0.70)"), "{out}");
        assert!(line("3 x tarpc").ends_with("1 of 2 rounds (lowest 2.80)"), "{out}");
        assert!(line("+ 1.5").ends_with("1 of 2 rounds (highest 2.00)"), "{out}");
        // 10.5 allocations a call, 8 of them the message's.
        assert!(line("own allocations").ends_with("0 of 2 rounds (highest 2.50)"), "{out}");
        assert!(line("raw-pingpong").ends_with("2 of 2 rounds (highest 1.10)"), "{out}");
        assert!(!out.contains("1000x1"), "a point not measured is left out: {out}");
        assert_eq!(target_rounds(&[vec![at(Name::Tarpc, 100, 1.0, 1.0, 1.0)]], message), "");
    }

    #[test]
    fn an_even_count_takes_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
