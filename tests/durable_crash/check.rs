//! The checker: reads the receiver's journal and the sender's `logged` lines and says whether the
//! run kept the exact guarantee. Pure (text in, verdict out), so that it is tested on synthetic
//! journals below: a checker that cannot fail would make the crash test worthless.
//!
//! A journal line is `start <id> <n> <pid> .` or `end <id> <n> <pid> .`, `<id>` being the
//! message's [`MessageId`](zrpc::durable::MessageId) as it displays, `sender/outbox/sequence`.
//! The final `.` says the line is whole: a line cut inside its pid would otherwise still parse,
//! as a line of another process (a 1,000,000-message run met one cut at a page boundary,
//! `… 273625 24` for pid 24680, and failed a correct inbox).
//! The file is shared by every receiver process in file order (`O_APPEND`).
//!
//! The rules ([`check`]), each a [`Violation`] when broken:
//!
//! 1. **Nothing lost:** every `n` the sender printed as logged has an `end` (in some process),
//!    and so does every `n` of `1..=total`.
//! 2. **Order:** per stream (`sender/outbox`), the first `start` of each sequence comes in
//!    sequence order, from 1, without a gap.
//! 3. **Once, except inside a killed handler:** an id with several `start`s is allowed only
//!    where each earlier one was the last `start` of its stream in a receiver process that was
//!    killed; and a process never starts an id twice.
//! 4. **Same id, same message:** the harness sends `n` at sequence `n` (see the main module),
//!    so every line's `n` equals its sequence; a rerun therefore carries the same `n`.
//! 5. **Handlers finish:** every `end` follows a `start` of its id in its process, once; a
//!    process that was not killed leaves no `start` without its `end`.
//!
//! A kill can cut a journal `write` short (Linux checks for a fatal signal between the pages
//! of a write), so the receiver starts every process with a newline if the file does not end
//! in one, and a line that does not parse is taken as such a torn line, at most one per killed
//! receiver process; more than that fails the check.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

/// What a journal line says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A handler began.
    Start,
    /// A handler is about to return.
    End,
}

/// One parsed journal line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Line {
    /// Its position in the file, from 1 (for messages).
    pub(crate) number: usize,
    pub(crate) event: Event,
    /// `sender/outbox`: the id without its sequence.
    pub(crate) stream: String,
    pub(crate) sequence: u64,
    /// The payload the handler was given.
    pub(crate) n: u64,
    /// The receiver process that wrote it.
    pub(crate) pid: u32,
}

impl Line {
    /// Parses `start <id> <n> <pid> .` or `end <id> <n> <pid> .`.
    fn parse(number: usize, text: &str) -> Option<Line> {
        let mut words = text.split(' ');
        let event = match words.next()? {
            "start" => Event::Start,
            "end" => Event::End,
            _ => return None,
        };
        let (stream, sequence) = words.next()?.rsplit_once('/')?;
        let n = words.next()?.parse().ok()?;
        let pid = words.next()?.parse().ok()?;
        if words.next() != Some(".") || words.next().is_some() || stream.is_empty() {
            return None;
        }
        Some(Line { number, event, stream: stream.to_owned(), sequence: sequence.parse().ok()?, n, pid })
    }

    fn id(&self) -> (&str, u64) {
        (&self.stream, self.sequence)
    }
}

/// A receiver journal, parsed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Journal {
    pub(crate) lines: Vec<Line>,
    /// Lines that did not parse (numbers and text): writes cut short by a kill.
    pub(crate) torn: Vec<(usize, String)>,
}

impl Journal {
    /// Parses a whole journal file.
    pub(crate) fn parse(text: &str) -> Journal {
        let mut journal = Journal::default();
        for (index, raw) in text.lines().enumerate() {
            if raw.is_empty() {
                continue;
            }
            match Line::parse(index + 1, raw) {
                Some(line) => journal.lines.push(line),
                None => journal.torn.push((index + 1, raw.to_owned())),
            }
        }
        journal
    }
}

/// What the run gives the checker besides the journal.
#[derive(Clone, Debug, Default)]
pub(crate) struct Run {
    /// Every `n` the sender printed as logged (its call had returned).
    pub(crate) logged: BTreeSet<u64>,
    /// The messages the sender was to send: `1..=total` must all end.
    pub(crate) total: u64,
    /// The receiver processes the driver SIGKILLed.
    pub(crate) killed: HashSet<u32>,
}

/// A broken rule, with what shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Violation {
    /// A message that was logged (or is in `1..=total`) never ended.
    Lost { n: u64, printed: bool },
    /// A stream's first starts skipped or went back.
    Order { line: usize, stream: String, expected: u64, got: u64 },
    /// An id started again although its earlier start was not a killed process's last.
    Twice { line: usize, id: String, earlier: usize, why: &'static str },
    /// A line's payload is not its sequence.
    Payload { line: usize, id: String, n: u64 },
    /// An `end` without a `start` of its id in its process, or a second one.
    Unmatched { line: usize, id: String },
    /// A handler of a process that was not killed never ended.
    Unfinished { line: usize, id: String },
    /// More torn lines than killed receiver processes.
    Torn { lines: Vec<usize>, killed: usize },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost { n, printed: true } => write!(f, "lost: message {n} was logged but never ended"),
            Violation::Lost { n, printed: false } => write!(f, "lost: message {n} never ended"),
            Violation::Order { line, stream, expected, got } => {
                write!(f, "order: line {line} starts {stream}/{got} first, before {stream}/{expected}")
            }
            Violation::Twice { line, id, earlier, why } => {
                write!(f, "twice: line {line} starts {id} again after line {earlier}, which {why}")
            }
            Violation::Payload { line, id, n } => write!(f, "payload: line {line} gives {id} the message {n}"),
            Violation::Unmatched { line, id } => {
                write!(f, "unmatched: line {line} ends {id}, not started once in its process")
            }
            Violation::Unfinished { line, id } => {
                write!(f, "unfinished: line {line} starts {id} in a process that was not killed, never ended")
            }
            Violation::Torn { lines, killed } => {
                write!(f, "torn: lines {lines:?} do not parse, more than the {killed} killed receivers explain")
            }
        }
    }
}

/// What a run that passed did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Distinct ids that ended.
    pub(crate) handled: usize,
    /// Handlers run again after a kill inside them (starts beyond each id's first).
    pub(crate) reruns: usize,
    /// Receiver processes that wrote lines.
    pub(crate) processes: usize,
}

/// Applies the rules of the module docs. Every violation is listed, in journal order per rule.
pub(crate) fn check(journal: &Journal, run: &Run) -> Result<Summary, Vec<Violation>> {
    let mut violations = Vec::new();
    let lines = &journal.lines;

    // Rule 4: n is the sequence.
    for line in lines {
        if line.n != line.sequence {
            violations.push(Violation::Payload { line: line.number, id: id_text(line), n: line.n });
        }
    }

    // The last start of each (process, stream): the only start a kill may leave unfinished.
    let mut last_start: HashMap<(u32, &str), usize> = HashMap::new();
    for (index, line) in lines.iter().enumerate() {
        if line.event == Event::Start {
            last_start.insert((line.pid, &line.stream), index);
        }
    }

    // Rules 2 and 3: per stream, first starts in order; later starts only after a killed one.
    let mut next: HashMap<&str, u64> = HashMap::new();
    let mut starts: HashMap<(&str, u64), Vec<usize>> = HashMap::new();
    for (index, line) in lines.iter().enumerate().filter(|(_, line)| line.event == Event::Start) {
        let earlier = starts.entry(line.id()).or_default();
        if let Some(&previous) = earlier.last() {
            let before = &lines[previous];
            let why = if before.pid == line.pid {
                Some("was in the same process")
            } else if !run.killed.contains(&before.pid) {
                Some("was in a process that was not killed")
            } else if last_start.get(&(before.pid, before.stream.as_str())) != Some(&previous) {
                Some("was not its killed process's last start of the stream")
            } else if before.n != line.n {
                Some("carried another message")
            } else {
                None
            };
            if let Some(why) = why {
                violations.push(Violation::Twice { line: line.number, id: id_text(line), earlier: before.number, why });
            }
        } else {
            let expected = next.entry(&line.stream).or_insert(1);
            if line.sequence != *expected {
                violations.push(Violation::Order {
                    line: line.number,
                    stream: line.stream.clone(),
                    expected: *expected,
                    got: line.sequence,
                });
            }
            *expected = line.sequence + 1;
        }
        earlier.push(index);
    }

    // Rule 5: ends match starts; a process not killed finishes what it starts.
    let mut open: HashMap<(u32, &str, u64), usize> = HashMap::new();
    let mut ended = BTreeSet::new();
    let mut handled = HashSet::new();
    for line in lines {
        let key = (line.pid, line.stream.as_str(), line.sequence);
        match line.event {
            Event::Start => {
                open.insert(key, line.number);
            }
            Event::End => {
                if open.remove(&key).is_none() {
                    violations.push(Violation::Unmatched { line: line.number, id: id_text(line) });
                }
                ended.insert(line.n);
                handled.insert(line.id());
            }
        }
    }
    let mut unfinished: Vec<_> = open.iter().filter(|((pid, ..), _)| !run.killed.contains(pid)).collect();
    unfinished.sort_by_key(|(_, number)| **number);
    for ((_, stream, sequence), number) in unfinished {
        violations.push(Violation::Unfinished { line: *number, id: format!("{stream}/{sequence}") });
    }

    // Rule 1: nothing lost.
    let expected: BTreeSet<u64> = (1..=run.total).chain(run.logged.iter().copied()).collect();
    for n in expected {
        if !ended.contains(&n) {
            violations.push(Violation::Lost { n, printed: run.logged.contains(&n) });
        }
    }

    // Torn lines: at most one per killed receiver.
    if journal.torn.len() > run.killed.len() {
        violations.push(Violation::Torn {
            lines: journal.torn.iter().map(|(number, _)| *number).collect(),
            killed: run.killed.len(),
        });
    }

    if !violations.is_empty() {
        return Err(violations);
    }
    let processes = lines.iter().map(|line| line.pid).collect::<HashSet<_>>().len();
    let reruns = starts.values().map(|starts| starts.len() - 1).sum();
    Ok(Summary { handled: handled.len(), reruns, processes })
}

fn id_text(line: &Line) -> String {
    format!("{}/{}", line.stream, line.sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "sender/00000000000000ab";

    /// A journal from `(event, sequence, pid)` triples, `n` being the sequence.
    fn journal(lines: &[(&str, u64, u32)]) -> String {
        lines.iter().map(|(event, sequence, pid)| format!("{event} {S}/{sequence} {sequence} {pid} .\n")).collect()
    }

    fn run(total: u64, killed: &[u32]) -> Run {
        Run { logged: (1..=total).collect(), total, killed: killed.iter().copied().collect() }
    }

    fn violations(text: &str, run: &Run) -> Vec<Violation> {
        match check(&Journal::parse(text), run) {
            Ok(summary) => panic!("the check passed: {summary:?}"),
            Err(violations) => violations,
        }
    }

    #[test]
    fn a_clean_run_passes_and_is_counted() {
        let text = journal(&[("start", 1, 10), ("end", 1, 10), ("start", 2, 10), ("end", 2, 10)]);
        let summary = check(&Journal::parse(&text), &run(2, &[])).expect("passes");
        assert_eq!(summary, Summary { handled: 2, reruns: 0, processes: 1 });
    }

    #[test]
    fn a_rerun_of_the_handler_a_kill_interrupted_passes() {
        // Process 10 killed inside 2's handler (before its end, or after it but before the
        // inbox's mark): 11 runs 2 again with the same id and message.
        for first in [
            &[("start", 1, 10), ("end", 1, 10), ("start", 2, 10)][..],
            &[("start", 1, 10), ("end", 1, 10), ("start", 2, 10), ("end", 2, 10)][..],
        ] {
            let mut lines = first.to_vec();
            lines.extend([("start", 2, 11), ("end", 2, 11), ("start", 3, 11), ("end", 3, 11)]);
            let summary = check(&Journal::parse(&journal(&lines)), &run(3, &[10])).expect("passes");
            assert_eq!(summary, Summary { handled: 3, reruns: 1, processes: 2 });
        }
    }

    #[test]
    fn a_lost_message_fails() {
        let text = journal(&[("start", 1, 10), ("end", 1, 10), ("start", 2, 10), ("end", 2, 10)]);
        let mut logged = run(3, &[]);
        logged.total = 2;
        assert_eq!(violations(&text, &logged), [Violation::Lost { n: 3, printed: true }]);
        // Not printed (killed before the print) but within the total: still lost.
        assert_eq!(
            violations(&text, &Run { logged: BTreeSet::new(), ..run(3, &[]) }),
            [Violation::Lost { n: 3, printed: false }]
        );
    }

    #[test]
    fn a_start_without_its_end_is_lost_unless_rerun() {
        let text = journal(&[("start", 1, 10), ("end", 1, 10), ("start", 2, 10)]);
        let found = violations(&text, &run(2, &[10]));
        assert_eq!(found, [Violation::Lost { n: 2, printed: true }]);
    }

    #[test]
    fn a_reorder_fails() {
        let text = journal(&[("start", 2, 10), ("end", 2, 10), ("start", 1, 10), ("end", 1, 10)]);
        let found = violations(&text, &run(2, &[]));
        assert_eq!(
            found,
            [
                Violation::Order { line: 1, stream: S.into(), expected: 1, got: 2 },
                Violation::Order { line: 3, stream: S.into(), expected: 3, got: 1 },
            ]
        );
    }

    #[test]
    fn a_gap_fails_even_if_filled_later() {
        let text = journal(&[
            ("start", 1, 10),
            ("end", 1, 10),
            ("start", 3, 10),
            ("end", 3, 10),
            ("start", 2, 10),
            ("end", 2, 10),
        ]);
        let found = violations(&text, &run(3, &[]));
        assert!(matches!(found[0], Violation::Order { line: 3, expected: 2, got: 3, .. }), "{found:?}");
    }

    #[test]
    fn a_duplicate_after_a_process_that_was_not_killed_fails() {
        let text = journal(&[("start", 1, 10), ("end", 1, 10), ("start", 1, 11), ("end", 1, 11)]);
        let found = violations(&text, &run(1, &[]));
        assert_eq!(
            found,
            [Violation::Twice {
                line: 3,
                id: format!("{S}/1"),
                earlier: 1,
                why: "was in a process that was not killed"
            }]
        );
    }

    #[test]
    fn a_duplicate_of_a_handler_that_was_not_the_last_one_running_fails() {
        // 10 was killed, but while running 2: 1 had returned and its mark could be written.
        let text = journal(&[
            ("start", 1, 10),
            ("end", 1, 10),
            ("start", 2, 10),
            ("start", 1, 11),
            ("end", 1, 11),
            ("start", 2, 11),
            ("end", 2, 11),
        ]);
        let found = violations(&text, &run(2, &[10]));
        assert_eq!(
            found,
            [Violation::Twice {
                line: 4,
                id: format!("{S}/1"),
                earlier: 1,
                why: "was not its killed process's last start of the stream"
            }]
        );
    }

    #[test]
    fn a_duplicate_in_one_process_fails() {
        let text = journal(&[("start", 1, 10), ("end", 1, 10), ("start", 1, 10), ("end", 1, 10)]);
        let found = violations(&text, &run(1, &[10]));
        assert_eq!(
            found[0],
            Violation::Twice { line: 3, id: format!("{S}/1"), earlier: 1, why: "was in the same process" }
        );
    }

    #[test]
    fn a_rerun_with_another_message_fails() {
        let text = format!("start {S}/1 1 10 .\nstart {S}/1 7 11 .\nend {S}/1 7 11 .\n");
        let found = violations(&text, &Run { logged: BTreeSet::new(), total: 0, killed: [10].into() });
        assert!(found.contains(&Violation::Payload { line: 2, id: format!("{S}/1"), n: 7 }), "{found:?}");
        assert!(
            found.iter().any(|v| matches!(v, Violation::Twice { why: "carried another message", .. })),
            "{found:?}"
        );
    }

    #[test]
    fn a_message_sent_twice_under_two_sequences_fails() {
        // What a sender that resumed at the wrong n would produce: n = 2 at sequence 3.
        let text = format!(
            "start {S}/1 1 10 .\nend {S}/1 1 10 .\nstart {S}/2 2 10 .\nend {S}/2 2 10 .\nstart {S}/3 2 10 .\nend {S}/3 2 10 .\n"
        );
        let found = violations(&text, &run(2, &[]));
        assert_eq!(
            found,
            [
                Violation::Payload { line: 5, id: format!("{S}/3"), n: 2 },
                Violation::Payload { line: 6, id: format!("{S}/3"), n: 2 },
            ]
        );
    }

    #[test]
    fn ends_must_match_starts_and_unkilled_processes_must_finish() {
        let text = journal(&[("end", 1, 10), ("start", 2, 10)]);
        let found = violations(&text, &Run { logged: BTreeSet::new(), total: 1, killed: HashSet::new() });
        assert_eq!(
            found,
            [
                Violation::Order { line: 2, stream: S.into(), expected: 1, got: 2 },
                Violation::Unmatched { line: 1, id: format!("{S}/1") },
                Violation::Unfinished { line: 2, id: format!("{S}/2") },
            ]
        );
    }

    #[test]
    fn torn_lines_are_allowed_one_per_killed_receiver() {
        let text =
            format!("start {S}/1 1 10 .\nend {S}/1 1 10 .\nstart {S}/2 2\nstart {S}/2 2 11 .\nend {S}/2 2 11 .\n");
        let summary = check(&Journal::parse(&text), &run(2, &[10])).expect("one torn line, one killed receiver");
        assert_eq!(summary.handled, 2);
        let found = violations(&text, &run(2, &[]));
        assert_eq!(found, [Violation::Torn { lines: vec![3], killed: 0 }]);
    }

    #[test]
    fn lines_parse_exactly() {
        let line = Line::parse(1, "start a/b/0000000000000001/12 12 99 .").expect("parses");
        assert_eq!((line.stream.as_str(), line.sequence, line.n, line.pid), ("a/b/0000000000000001", 12, 12, 99));
        let bad = [
            "",
            "start",
            "start x 1 2 .",
            "begin s/1 1 2 .",
            "start s/1 1 2 3 .",
            "start s/1 1 2 . .",
            "end s/x 1 2 .",
            "end /1 1 2 .",
            // Cut inside its pid (24680), or just before the mark: torn, not pid 24's.
            "start s/1 1 24",
            "start s/1 1 24680",
            "start s/1 1 24680 ",
        ];
        for bad in bad {
            assert_eq!(Line::parse(1, bad), None, "{bad:?}");
        }
    }
}
