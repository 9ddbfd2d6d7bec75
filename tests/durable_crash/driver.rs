//! The driver: starts the sender and the receiver as child processes of this test binary,
//! follows their progress line by line, SIGKILLs and restarts them as the plan says, waits for
//! every message to be handled and hands the journals to the checker.
//!
//! Children talk to the driver in lines on their stdout (read by one thread per child into one
//! channel, so that the driver can wait on all of them with one deadline); their stderr goes to
//! a file per role in the run's directory, printed when the run fails. A child exits when its
//! stdin closes, so no child outlives the driver however the driver ends; [`Child`]ren still
//! alive are killed and reaped when dropped.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Instant;

use crate::check::{self, Journal};
use crate::plan::{LEVEL_ENV, MESSAGES_ENV, Plan};
use crate::roles::{DIR_ENV, ROLE_ENV, Role};

/// The journal the receiver writes, in the run's directory.
pub(crate) const JOURNAL: &str = "journal";
/// What the sender printed, as the driver read it (`<pid> <line>`).
const SENDER_JOURNAL: &str = "sender.journal";

/// What a run did, for the test to report.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) kills: usize,
    /// Kills made after every message had been handled (before the fence).
    pub(crate) at_rest: usize,
    pub(crate) receivers_killed: usize,
    pub(crate) senders_killed: usize,
    pub(crate) summary: check::Summary,
}

/// A line from a child, or the end of its stdout.
#[derive(Debug)]
enum Said {
    Line(Role, u32, String),
    Closed(Role, u32),
}

/// A running child; SIGKILLed and reaped when dropped.
#[derive(Debug)]
struct Child {
    child: std::process::Child,
    /// Dropped to ask the child to exit.
    stdin: Option<ChildStdin>,
    pid: u32,
}

impl Child {
    fn kill(mut self) -> u32 {
        // `Child::kill` is SIGKILL on Unix.
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.pid
    }

    /// Writes a line to its stdin.
    fn say(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("telling {}: {e}", self.pid))
    }

    /// Closes its stdin and waits for it to exit.
    fn finish(mut self) -> Result<(), String> {
        self.stdin.take();
        let status = self.child.wait().map_err(|e| format!("waiting for {}: {e}", self.pid))?;
        if status.success() { Ok(()) } else { Err(format!("process {} exited with {status}", self.pid)) }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The run's processes and what they said so far.
struct Driver<'a> {
    plan: &'a Plan,
    dir: PathBuf,
    address: String,
    said: Receiver<Said>,
    tell: Sender<Said>,
    started: Instant,
    sender: Option<Child>,
    receiver: Option<Child>,
    sender_journal: File,
    /// Lines of progress (`logged`, `start`, `end`) from any process.
    progress: u64,
    /// Every `n` the sender printed as logged.
    logged: BTreeSet<u64>,
    /// Every `n` in `1..=messages + 1` with an `end`.
    ended: BTreeSet<u64>,
    /// Receiver processes killed.
    killed_receivers: HashSet<u32>,
    senders_killed: usize,
    /// The last `ready` / `listening` line of the current sender / receiver.
    sender_ready: Option<u32>,
    receiver_ready: Option<u32>,
    /// Processes whose stdout ended.
    closed: HashSet<u32>,
}

/// Runs `plan` in `dir`: the kills, then to completion, then the check.
pub(crate) fn run(plan: &Plan, dir: &Path) -> Result<Outcome, String> {
    let (tell, said) = mpsc::channel();
    let sender_journal = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(SENDER_JOURNAL))
        .map_err(|e| format!("creating the sender's journal: {e}"))?;
    let mut driver = Driver {
        plan,
        dir: dir.to_owned(),
        address: format!("unix://{}", dir.join("receiver.sock").display()),
        said,
        tell,
        started: Instant::now(),
        sender: None,
        receiver: None,
        sender_journal,
        progress: 0,
        logged: BTreeSet::new(),
        ended: BTreeSet::new(),
        killed_receivers: HashSet::new(),
        senders_killed: 0,
        sender_ready: None,
        receiver_ready: None,
        closed: HashSet::new(),
    };
    driver.start(Role::Receiver)?;
    driver.start(Role::Sender)?;

    // A run makes about three lines per message (`logged`, `start`, `end`).
    let lines = 3 * (plan.messages + 1);
    let mut at_rest = 0;
    for (index, kill) in plan.kills.iter().enumerate() {
        let wait = kill.wait.lines(lines.saturating_sub(driver.progress), plan.kills.len() - index);
        let target = driver.progress + wait;
        driver.wait_until(|d| d.progress >= target || d.handled_all())?;
        // Kills the run had no lines left for are made at once, one after the other: of
        // processes at rest, or still recovering from the kill before.
        if driver.handled_all() {
            at_rest += 1;
        }
        // Both at once: the receiver dies while the sender is still delivering, and the other
        // way round, before either restarts.
        if kill.victim.sender()
            && let Some(sender) = driver.sender.take()
        {
            sender.kill();
            driver.senders_killed += 1;
        }
        if kill.victim.receiver()
            && let Some(receiver) = driver.receiver.take()
        {
            driver.killed_receivers.insert(receiver.kill());
        }
        // The receiver first: a sender whose outbox is empty asks it where to resume.
        if kill.victim.receiver() {
            driver.start(Role::Receiver)?;
        }
        if kill.victim.sender() {
            driver.start(Role::Sender)?;
        }
    }
    // The fence: one more message, sent after the last kill. It is handled only after every
    // message before it, reruns included (a killed receiver may have been inside the handler
    // of the last message, and its rerun may still be to come when every message has an `end`),
    // so once it has ended no handler is left to run and the children can be stopped.
    driver.sender.as_mut().ok_or("no sender")?.say("fence")?;
    driver.wait_until(Driver::complete)?;
    let mut last = Vec::new();
    for child in [driver.sender.take(), driver.receiver.take()].into_iter().flatten() {
        last.push(child.pid);
        child.finish()?;
    }
    // Every line they printed (the last `logged` ones) is read before the check.
    driver.wait_until(|d| last.iter().all(|pid| d.closed.contains(pid)))?;

    let journal = Journal::parse(&driver.read(JOURNAL));
    let checked = check::check(
        &journal,
        &check::Run {
            logged: driver.logged.clone(),
            total: plan.messages + 1,
            killed: driver.killed_receivers.clone(),
        },
    );
    match checked {
        Ok(summary) => Ok(Outcome {
            kills: plan.kills.len(),
            at_rest,
            receivers_killed: driver.killed_receivers.len(),
            senders_killed: driver.senders_killed,
            summary,
        }),
        Err(violations) => {
            let list: Vec<String> = violations.iter().take(50).map(ToString::to_string).collect();
            Err(driver.failure(&format!("{} violations:\n  {}", violations.len(), list.join("\n  "))))
        }
    }
}

impl Driver<'_> {
    /// Every message the sender sends by itself has an `end`. (Checked after every line, so
    /// in constant time: a driver slower than its children reads their lines late, and its
    /// kills land later in the run than drawn.)
    fn handled_all(&self) -> bool {
        let fence = u64::from(self.ended.contains(&(self.plan.messages + 1)));
        self.ended.len() as u64 - fence == self.plan.messages
    }

    /// So has the fence, the message after them.
    fn complete(&self) -> bool {
        self.ended.len() as u64 == self.plan.messages + 1
    }

    /// Starts `role` and waits until it is ready (listening, or resumed).
    fn start(&mut self, role: Role) -> Result<(), String> {
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.stderr", role.name())))
            .map_err(|e| format!("opening {}'s stderr file: {e}", role.name()))?;
        let exe = std::env::current_exe().map_err(|e| format!("this test's executable: {e}"))?;
        let mut child = Command::new(exe)
            .args([crate::TEST, "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env(ROLE_ENV, role.name())
            .env(DIR_ENV, &self.dir)
            .env(MESSAGES_ENV, self.plan.messages.to_string())
            .env(LEVEL_ENV, self.plan.level.name())
            .env(crate::roles::ADDRESS_ENV, &self.address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting the {}: {e}", role.name()))?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let child = Child { child, stdin, pid };
        let stdout = stdout.ok_or("a child without a stdout pipe")?;
        let tell = self.tell.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tell.send(Said::Line(role, pid, line)).is_err() {
                    return;
                }
            }
            let _ = tell.send(Said::Closed(role, pid));
        });
        match role {
            Role::Sender => {
                self.sender = Some(child);
                self.wait_until(|d| d.sender_ready == Some(pid))
            }
            Role::Receiver => {
                self.receiver = Some(child);
                self.wait_until(|d| d.receiver_ready == Some(pid))
            }
        }
    }

    /// Reads what the children say until `done` holds, or fails at the plan's deadline.
    fn wait_until(&mut self, mut done: impl FnMut(&Self) -> bool) -> Result<(), String> {
        while !done(self) {
            let left = self.plan.deadline.saturating_sub(self.started.elapsed());
            match self.said.recv_timeout(left) {
                Ok(said) => self.hear(said)?,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.failure(&format!(
                        "the deadline of {:?} passed: {} of {} messages ended",
                        self.plan.deadline,
                        self.ended.len(),
                        self.plan.messages
                    )));
                }
                // Not while the driver holds `tell`, which it does until it returns.
                Err(RecvTimeoutError::Disconnected) => return Err("the children's channel closed".into()),
            }
        }
        Ok(())
    }

    fn hear(&mut self, said: Said) -> Result<(), String> {
        match said {
            Said::Line(Role::Sender, pid, line) => {
                let _ = writeln!(self.sender_journal, "{pid} {line}");
                if let Some(n) = line.strip_prefix("logged ") {
                    let n = n.parse().map_err(|_| self.failure(&format!("the sender said {line:?}")))?;
                    self.logged.insert(n);
                    self.progress += 1;
                } else if line.starts_with("ready ") {
                    self.sender_ready = Some(pid);
                }
            }
            Said::Line(Role::Receiver, pid, line) => {
                if line.starts_with("listening ") {
                    self.receiver_ready = Some(pid);
                } else if line.starts_with("start ") {
                    self.progress += 1;
                } else if let Some(rest) = line.strip_prefix("end ") {
                    self.progress += 1;
                    // `end <id> <n> <pid> .`
                    if let Some(n) = rest.split(' ').nth(1).and_then(|n| n.parse::<u64>().ok())
                        && (1..=self.plan.messages + 1).contains(&n)
                    {
                        self.ended.insert(n);
                    }
                }
            }
            Said::Closed(role, pid) => {
                self.closed.insert(pid);
                let current = match role {
                    Role::Sender => self.sender.as_ref(),
                    Role::Receiver => self.receiver.as_ref(),
                };
                if current.is_some_and(|child| child.pid == pid) {
                    return Err(self.failure(&format!("the {} (process {pid}) exited by itself", role.name())));
                }
            }
        }
        Ok(())
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_else(|e| format!("({name} unreadable: {e})"))
    }

    /// The failure message: the reason, how to replay, and the journals (their last lines
    /// when long; the run's directory is kept).
    fn failure(&self, reason: &str) -> String {
        const TAIL: usize = 400;
        let mut text = format!(
            "{reason}\nreplay with: {}\nrun directory (kept): {}\nreceivers killed: {:?}\n",
            self.plan.replay(),
            self.dir.display(),
            self.killed_receivers
        );
        for name in [JOURNAL, SENDER_JOURNAL, "receiver.stderr", "sender.stderr"] {
            let content = self.read(name);
            let lines: Vec<&str> = content.lines().collect();
            let skip = lines.len().saturating_sub(TAIL);
            text.push_str(&format!(
                "--- {name}: {} lines{} ---\n",
                lines.len(),
                if skip > 0 { ", the last ones" } else { "" }
            ));
            for line in &lines[skip..] {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}
