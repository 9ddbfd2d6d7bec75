//! The results: one markdown table row per scenario, then notes on what did not fit in a cell.
//!
//! Memory is in MiB (1 MiB = 1024 KiB, as `/proc` counts); latencies in µs below a millisecond,
//! in ms above.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::hostile::Attack;
use super::raw::{Seen, Sent};
use super::scenario::Scenario;
use super::well_behaved::Calls;

/// The table's header and separator lines.
pub const HEADER: &str = "\
| scenario | ran | hostile client sent | it read | server's end of it | RSS start | RSS peak | growth | RSS end | calls | failed | p50 | p99 |
|---|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|";

/// What one scenario measured.
#[derive(Debug)]
pub struct Row {
    /// Which scenario.
    pub scenario: Scenario,
    /// How long it ran.
    pub ran: Duration,
    /// Why it ended before its duration, if it did.
    pub cut: Option<Cut>,
    /// The server's memory.
    pub rss: Rss,
    /// What the hostile client did and saw.
    pub hostile: Hostile,
    /// What the well-behaved client saw, or why it saw nothing.
    pub calls: Result<Calls, String>,
    /// How the server child ended, if it did before it was killed.
    pub server_exit: Option<String>,
}

/// Why a scenario ended before its duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The server's `VmRSS` passed the cap.
    RssCap {
        /// The cap, MiB.
        cap_mib: u64,
    },
    /// The server child's memory could no longer be read: it exited, or was killed.
    ServerGone,
}

/// The server child's memory, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    /// `VmRSS` before the hostile client started, KiB.
    pub start_kib: u64,
    /// `VmHWM` when the scenario ended, KiB: the scenario's peak, the child being fresh.
    pub peak_kib: Option<u64>,
    /// `VmRSS` when the scenario ended, hostile connections still open, KiB.
    pub end_kib: Option<u64>,
}

/// What the hostile client did and saw, over all its connections.
#[derive(Debug, Clone, Default)]
pub struct Hostile {
    /// What its connections sent, together.
    pub sent: Sent,
    /// What each connection saw.
    pub seen: Vec<Seen>,
    /// Connections that could not be opened, or a client that failed as a whole.
    pub failed: Vec<String>,
}

impl From<Attack> for Hostile {
    fn from(attack: Attack) -> Hostile {
        Hostile {
            sent: attack.conns.iter().fold(Sent::default(), |sum, conn| sum + conn.sent),
            seen: attack.conns.into_iter().map(|conn| conn.seen).collect(),
            failed: attack.failed,
        }
    }
}

/// The row of `row`, a line of the table.
pub fn line(row: &Row) -> String {
    let Rss { start_kib, peak_kib, end_kib } = row.rss;
    let mib = |kib: Option<u64>| kib.map_or("?".into(), |kib| format!("{:.1}", kib as f64 / 1024.0));
    let ran = match row.cut {
        None => format!("{:.1} s", row.ran.as_secs_f64()),
        Some(Cut::RssCap { .. }) => format!("{:.1} s, cut: RSS cap", row.ran.as_secs_f64()),
        Some(Cut::ServerGone) => format!("{:.1} s, cut: server gone", row.ran.as_secs_f64()),
    };
    let (calls, failed, p50, p99) = match &row.calls {
        Ok(calls) => (
            count(calls.ok),
            failures(calls),
            latency(calls.latency.value_at_quantile(0.5)),
            latency(calls.latency.value_at_quantile(0.99)),
        ),
        Err(_) => ("?".into(), "see notes".into(), "?".into(), "?".into()),
    };
    let cells = [
        row.scenario.name().to_owned(),
        ran,
        sent(&row.hostile),
        read(&row.hostile),
        ends(&row.hostile.seen),
        mib(Some(start_kib)),
        mib(peak_kib),
        mib(peak_kib.map(|peak| peak.saturating_sub(start_kib))),
        mib(end_kib),
        calls,
        failed,
        p50,
        p99,
    ];
    let cells: Vec<String> = cells.iter().map(|cell| cell.replace('|', "\\|").replace('\n', " ")).collect();
    format!("| {} |", cells.join(" | "))
}

/// A line for a scenario that could not be measured at all.
pub fn failed_line(scenario: Scenario) -> String {
    format!("| {} | not measured (see notes) |{}", scenario.name(), " |".repeat(11))
}

/// The notes on `row` that did not fit in its cells; empty when there are none.
pub fn notes(row: &Row) -> Vec<String> {
    let name = row.scenario.name();
    let mut notes = Vec::new();
    match row.cut {
        Some(Cut::RssCap { cap_mib }) => notes.push(format!(
            "{name}: stopped after {:.1} s, when the server's RSS passed the {cap_mib} MiB cap",
            row.ran.as_secs_f64()
        )),
        Some(Cut::ServerGone) => {
            notes.push(format!("{name}: stopped after {:.1} s: the server child was gone", row.ran.as_secs_f64()));
        }
        None => {}
    }
    if let Some(exit) = &row.server_exit {
        notes.push(format!("{name}: the server child died during the scenario: {exit}"));
    }
    if let Err(e) = &row.calls {
        notes.push(format!("{name}: {e}"));
    }
    let mut failed: BTreeMap<&str, usize> = BTreeMap::new();
    for failure in &row.hostile.failed {
        *failed.entry(failure).or_default() += 1;
    }
    for (failure, n) in failed {
        notes.push(format!("{name}: {} hostile connection(s) failed: {failure}", n));
    }
    notes
}

/// `frames, MiB` sent, and over how many connections when more than one.
fn sent(hostile: &Hostile) -> String {
    let Sent { bytes, frames } = hostile.sent;
    let mut out = format!("{} frames, {}", count(frames), size(bytes));
    if hostile.seen.len() > 1 {
        let _ = write!(out, " on {} conns", hostile.seen.len());
    }
    if !hostile.failed.is_empty() {
        let _ = write!(out, " ({} failed, see notes)", hostile.failed.len());
    }
    out
}

/// What the hostile client read: bytes, and the answers among them.
fn read(hostile: &Hostile) -> String {
    let bytes: u64 = hostile.seen.iter().map(|seen| seen.read).sum();
    if bytes == 0 {
        return "—".into();
    }
    let answered: u64 = hostile.seen.iter().map(|seen| seen.answered).sum();
    let mut refused: BTreeMap<zrpc::Code, u64> = BTreeMap::new();
    for (code, n) in hostile.seen.iter().flat_map(|seen| &seen.refused) {
        *refused.entry(*code).or_default() += n;
    }
    let mut out = size(bytes);
    let pings: u64 = hostile.seen.iter().map(|seen| seen.pings).sum();
    if let Some(first) = hostile.seen.iter().filter_map(|seen| seen.first_ping).min() {
        let _ = write!(out, ", {} PING, the first after {:.1} s", count(pings), first.as_secs_f64());
    }
    if answered > 0 || !refused.is_empty() {
        let total: u64 = refused.values().sum();
        let _ = write!(out, ": {} answered, {} refused", count(answered), count(total));
        if !refused.is_empty() {
            let codes: Vec<String> = refused.iter().map(|(code, n)| format!("{code:?} {}", count(*n))).collect();
            let _ = write!(out, " ({})", codes.join(", "));
        }
    }
    out
}

/// How the server treated the hostile connections: one entry per distinct outcome, with its
/// count when there are several connections, and when it happened.
fn ends(seen: &[Seen]) -> String {
    let mut outcomes: BTreeMap<String, Vec<Option<Duration>>> = BTreeMap::new();
    for seen in seen {
        outcomes.entry(outcome(seen)).or_default().push(seen.end.as_ref().and_then(|end| end.after));
    }
    let several = seen.len() > 1;
    let described: Vec<String> = outcomes
        .into_iter()
        .map(|(outcome, times)| {
            let count = if several { format!("{}× ", times.len()) } else { String::new() };
            format!("{count}{outcome}{}", when(&times))
        })
        .collect();
    if described.is_empty() { "—".into() } else { described.join("; ") }
}

/// One connection's outcome, without its time.
fn outcome(seen: &Seen) -> String {
    let goaway = seen.goaway.as_ref().map(|(code, message)| format!("GOAWAY {code:?} \"{message}\""));
    let end = seen
        .end
        .as_ref()
        .map(|end| if end.how == "EOF" { "closed".to_owned() } else { format!("closed ({})", end.how) });
    match (goaway, end) {
        (None, None) => "open".into(),
        (Some(goaway), None) => format!("{goaway}, still open"),
        (None, Some(end)) => end,
        (Some(goaway), Some(end)) => format!("{goaway}, {end}"),
    }
}

/// When the connections of one outcome ended: `after 30.0 s`, a range, or that it was only
/// seen afterwards; nothing for connections still open.
fn when(times: &[Option<Duration>]) -> String {
    let known: Vec<Duration> = times.iter().flatten().copied().collect();
    match (known.iter().min(), known.iter().max()) {
        (Some(min), Some(max)) if (max.as_secs_f64() - min.as_secs_f64()) < 0.05 => {
            format!(" after {:.1} s", min.as_secs_f64())
        }
        (Some(min), Some(max)) => format!(" after {:.1}–{:.1} s", min.as_secs_f64(), max.as_secs_f64()),
        _ => String::new(),
    }
}

/// Failed calls by kind, e.g. `12 (DeadlineExceeded 10, no answer 2)`.
fn failures(calls: &Calls) -> String {
    let total = calls.failed_total();
    if total == 0 {
        return "0".into();
    }
    let kinds: Vec<String> = calls.failed.iter().map(|(what, n)| format!("{what} {}", count(*n))).collect();
    format!("{} ({})", count(total), kinds.join(", "))
}

/// `n` with its thousands separated: `10,000,000`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `ns` as µs below a millisecond, ms above.
fn latency(ns: u64) -> String {
    if ns < 1_000_000 { format!("{:.0} µs", ns as f64 / 1e3) } else { format!("{:.1} ms", ns as f64 / 1e6) }
}

/// `bytes` in the largest unit that keeps a digit before the point.
fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::raw::End;

    fn seen(goaway: Option<&str>, end: Option<(&str, Option<f64>)>) -> Seen {
        Seen {
            goaway: goaway.map(|message| (zrpc::Code::InvalidArgument, message.to_owned())),
            end: end.map(|(how, after)| End { how: how.into(), after: after.map(Duration::from_secs_f64) }),
            ..Seen::default()
        }
    }

    #[test]
    fn one_connection_says_how_and_when_it_ended() {
        assert_eq!(ends(&[seen(None, None)]), "open");
        assert_eq!(ends(&[seen(None, Some(("EOF", Some(30.04))))]), "closed after 30.0 s");
        assert_eq!(
            ends(&[seen(Some("no pong"), Some(("connection reset on read", None)))]),
            "GOAWAY InvalidArgument \"no pong\", closed (connection reset on read)"
        );
    }

    #[test]
    fn many_connections_are_counted_by_outcome() {
        let seen = [
            seen(None, None),
            seen(None, Some(("EOF", Some(1.0)))),
            seen(None, None),
            seen(None, Some(("EOF", Some(2.0)))),
        ];
        assert_eq!(ends(&seen), "2× closed after 1.0–2.0 s; 2× open");
    }

    #[test]
    fn answers_are_tallied_by_code() {
        let mut refused = seen(None, None);
        refused.read = 3 << 20;
        refused.answered = 7;
        refused.refused.insert(zrpc::Code::ResourceExhausted, 2);
        let hostile = Hostile { seen: vec![refused.clone(), refused], ..Hostile::default() };
        assert_eq!(read(&hostile), "6.0 MiB: 14 answered, 4 refused (ResourceExhausted 4)");
        assert_eq!(read(&Hostile { seen: vec![seen(None, None)], ..Hostile::default() }), "—");
        let mut pinged = seen(None, None);
        (pinged.read, pinged.pings, pinged.first_ping) = (50, 1, Some(Duration::from_secs(20)));
        assert_eq!(read(&Hostile { seen: vec![pinged], ..Hostile::default() }), "50 B, 1 PING, the first after 20.0 s");
    }

    #[test]
    fn sizes_counts_and_latencies_read_naturally() {
        assert_eq!(
            (count(0), count(999), count(1000), count(10_000_000)),
            ("0".into(), "999".into(), "1,000".into(), "10,000,000".into())
        );
        assert_eq!((size(512), size(2048), size(3 << 30)), ("512 B".into(), "2.0 KiB".into(), "3072.0 MiB".into()));
        assert_eq!((latency(85_000), latency(1_260_000)), ("85 µs".into(), "1.3 ms".into()));
    }
}
