//! The server child process: started from this same binary, asked for its counters, killed.
//!
//! The protocol between parent and child is lines of text:
//!
//! 1. The parent runs `current_exe() serve <server>` with piped stdin and stdout (`<server>` is a
//!    framework's name for `compare`, `soak` for the `soak` tool).
//! 2. The child binds its server on `127.0.0.1:0` and prints `LISTENING <ip:port>`; a child
//!    serving several servers (`compare --scale`) prints all their addresses on that line,
//!    separated by spaces.
//! 3. For each `STATS` line on its stdin, the child prints `ALLOCS <n>`: its allocation count so
//!    far ([`alloc::allocations`](crate::alloc::allocations)).
//! 4. When its stdin closes — the parent ended, however it ended, even killed — the child exits.
//!
//! [`ServerProcess`] kills and reaps the child when dropped, so every exit path of the parent that
//! unwinds ends its children too, and (4) covers those that do not. The parent waits at most
//! [`ANSWER_TIMEOUT`] for each line, so a child that hangs fails the run instead of stalling it;
//! [`serve_child`] is the child's side.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use crate::BoxError;
use crate::framework::{Name, Serving};

/// The hidden subcommand that runs a server child.
pub const SERVE: &str = "serve";

/// The longest the parent waits for a line from the child: `LISTENING` after a cold start, or
/// the answer to `STATS` from a loaded server.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server child; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    stdin: ChildStdin,
    /// The child's stdout, line by line, from a thread that reads it: a channel can be waited on
    /// with a timeout, a pipe cannot.
    stdout: Receiver<std::io::Result<String>>,
    /// Where the child listens: one address, or one per server it runs.
    addrs: Vec<SocketAddr>,
}

impl ServerProcess {
    /// Starts `current_exe() serve <framework>` and waits for it to listen; with `workers`, its
    /// runtime has that many worker threads instead of tokio's default.
    ///
    /// # Errors
    /// If the child cannot be started, or exits or says something else before `LISTENING`.
    pub fn spawn(framework: Name, workers: Option<usize>) -> Result<ServerProcess, BoxError> {
        ServerProcess::start(framework.as_str(), workers)
    }

    /// Starts `current_exe() serve <server>` and waits for it to listen; `server` names what the
    /// child serves, as the program's own `serve` mode understands it.
    ///
    /// # Errors
    /// If the child cannot be started, or exits, hangs or says something else before
    /// `LISTENING`.
    pub fn spawn_serving(server: &str) -> Result<ServerProcess, BoxError> {
        ServerProcess::start(server, None)
    }

    fn start(server: &str, workers: Option<usize>) -> Result<ServerProcess, BoxError> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        command.args([SERVE, server]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        if let Some(observe) = crate::observe::for_children() {
            command.env(crate::observe::CHILD_ENV, observe);
        }
        if let Some(workers) = workers {
            // Read by tokio's multi-thread builder when it is given no count of its own.
            command.env("TOKIO_WORKER_THREADS", workers.to_string());
        }
        let mut child = command.spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the server child has no stdin or stdout pipe".into());
        };
        let (lines, stdout_lines) = mpsc::channel();
        // Ends at the child's end of stdout (it exited or was killed), or when this process no
        // longer listens.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        // From here on `Drop` cleans up, whatever fails.
        let mut process = ServerProcess { child, stdin, stdout: stdout_lines, addrs: Vec::new() };
        let line = process.read_line()?;
        let addrs = line.strip_prefix("LISTENING ").ok_or_else(|| format!("the {server} server said {line:?}"))?;
        process.addrs = addrs.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
        if process.addrs.is_empty() {
            return Err(format!("the {server} server listens nowhere: {line:?}").into());
        }
        Ok(process)
    }

    /// Where the child listens (its first server, if it runs several).
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Where each of the child's servers listens.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child's allocation count so far.
    ///
    /// # Errors
    /// If the child is gone or answers something else.
    pub fn allocations(&mut self) -> Result<u64, BoxError> {
        self.stdin.write_all(b"STATS\n")?;
        self.stdin.flush()?;
        let line = self.read_line()?;
        let count = line.strip_prefix("ALLOCS ").ok_or_else(|| format!("the server answered {line:?} to STATS"))?;
        Ok(count.parse()?)
    }

    /// The child's peak resident set so far (`VmHWM`), in KiB; `None` where `/proc` cannot tell.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.child.id())
    }

    /// How the child ended, if it has (it crashed, or the kernel's OOM killer ended it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn read_line(&mut self) -> Result<String, BoxError> {
        match self.stdout.recv_timeout(ANSWER_TIMEOUT) {
            Ok(line) => Ok(line?),
            Err(RecvTimeoutError::Timeout) => {
                Err(format!("the server child said nothing for {ANSWER_TIMEOUT:?}").into())
            }
            Err(RecvTimeoutError::Disconnected) => Err("the server child exited".into()),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmHWM` of process `pid`, in KiB (Linux only).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// `VmRSS` of process `pid`, in KiB (Linux only): what it holds now.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// CPU time a process has used so far, in user space and in the kernel on its behalf.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// In user space: the process's own code and its libraries'.
    pub user: Duration,
    /// In the kernel on its behalf: system calls, waking and being woken, the network stack.
    pub system: Duration,
}

impl CpuTime {
    /// Both together.
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime { user: self.user.saturating_sub(earlier.user), system: self.system.saturating_sub(earlier.system) }
    }
}

/// CPU time process `pid` has used so far (Linux only): `utime` and `stime` of
/// `/proc/PID/stat`, in clock ticks of 10 ms (the kernel's `USER_HZ` is 100 on Linux).
pub fn cpu_time(pid: u32) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, field 2, is in parentheses and may hold spaces: count fields after it.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(CpuTime { user: Duration::from_millis(utime * 10), system: Duration::from_millis(stime * 10) })
}

/// What the kernel's scheduler did to a process's threads so far: summed over the threads alive
/// now, from `/proc/PID/task/*/sched` (Linux only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scheduling {
    /// Moves of a thread from one CPU to another (`se.nr_migrations`).
    pub migrations: u64,
    /// Times a runnable thread was taken off its CPU for another (`nr_involuntary_switches`).
    pub preempted: u64,
}

impl Scheduling {
    /// What happened between `earlier` and `self`, by the same threads (a thread gone since
    /// takes its counts with it, so a difference that would be negative is 0).
    pub fn since(self, earlier: Scheduling) -> Scheduling {
        Scheduling {
            migrations: self.migrations.saturating_sub(earlier.migrations),
            preempted: self.preempted.saturating_sub(earlier.preempted),
        }
    }

    /// Adds the counts of one thread's `sched` file.
    fn add(&mut self, sched: &str) {
        for line in sched.lines() {
            let Some((name, value)) = line.split_once(':') else { continue };
            let Ok(value) = value.trim().parse::<u64>() else { continue };
            match name.trim() {
                "se.nr_migrations" => self.migrations += value,
                "nr_involuntary_switches" => self.preempted += value,
                _ => {}
            }
        }
    }
}

/// The scheduler's counts for process `pid` (see [`Scheduling`]); `None` where `/proc` has no
/// `sched` files (a kernel built without `CONFIG_SCHED_DEBUG`, or not Linux).
pub fn scheduling(pid: u32) -> Option<Scheduling> {
    let mut total = Scheduling::default();
    let mut read = false;
    for thread in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        // A thread that ends between the listing and the read is skipped.
        if let Ok(sched) = std::fs::read_to_string(thread.path().join("sched")) {
            total.add(&sched);
            read = true;
        }
    }
    read.then_some(total)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The child's whole life: binds the server `serve` returns on a multi-threaded runtime (one
/// worker per core, as a user's `#[tokio::main]`), serves it, and answers the parent until its
/// stdin closes; `name` is for the message if serving fails.
///
/// # Errors
/// If the runtime cannot be built, the server cannot bind, or stdout cannot be written.
pub fn serve_child(name: &str, serve: impl Future<Output = Result<Serving, BoxError>>) -> Result<(), BoxError> {
    let runtime = child_runtime()?;
    let serving = runtime.block_on(serve)?;
    serve_and_answer(name, runtime, vec![serving])
}

/// [`serve_child`] for `count` servers in the one child, each made by `serve`; the parent gets
/// all their addresses (see [`ServerProcess::addrs`]).
///
/// # Errors
/// As [`serve_child`].
pub fn serve_children(
    name: &str,
    count: usize,
    mut serve: impl AsyncFnMut() -> Result<Serving, BoxError>,
) -> Result<(), BoxError> {
    let runtime = child_runtime()?;
    let servings = (0..count).map(|_| runtime.block_on(serve())).collect::<Result<_, _>>()?;
    serve_and_answer(name, runtime, servings)
}

/// The child's runtime, with what the parent asked it to observe installed first.
fn child_runtime() -> Result<tokio::runtime::Runtime, BoxError> {
    if let Ok(observe) = std::env::var(crate::observe::CHILD_ENV) {
        crate::observe::install(&observe)?;
    }
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Runs `servings` on `runtime` and answers the parent until its stdin closes.
fn serve_and_answer(name: &str, runtime: tokio::runtime::Runtime, servings: Vec<Serving>) -> Result<(), BoxError> {
    let addrs: Vec<SocketAddr> = servings.iter().map(|serving| serving.addr).collect();
    for serving in servings {
        let name = name.to_owned();
        runtime.spawn(async move {
            if let Err(e) = serving.run.await {
                eprintln!("{name} server failed: {e}");
                std::process::exit(1);
            }
        });
    }
    answer_parent(&addrs)?;
    runtime.shutdown_background();
    Ok(())
}

/// The child's side of steps 2–4: announces `addrs`, then answers `STATS` until stdin closes.
///
/// # Errors
/// If stdout cannot be written.
pub fn answer_parent(addrs: &[SocketAddr]) -> Result<(), BoxError> {
    let mut stdout = std::io::stdout().lock();
    let addrs: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    writeln!(stdout, "LISTENING {}", addrs.join(" "))?;
    stdout.flush()?;
    for line in std::io::stdin().lock().lines() {
        match line?.trim() {
            "STATS" => writeln!(stdout, "ALLOCS {}", crate::alloc::allocations())?,
            other => writeln!(stdout, "ERROR unknown command {other:?}")?,
        }
        stdout.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of a thread's `sched` file that count, among the others, as the kernel writes
    /// them.
    const SCHED: &str = "tokio-rt-worker (4242, #threads: 5)
-------------------------------------------------------------------
se.exec_start                                :      19033254.940123
se.nr_migrations                             :                  518
nr_switches                                  :                41363
nr_voluntary_switches                        :                 8023
nr_involuntary_switches                      :                33340
se.load.weight                               :              1048576
";

    #[test]
    fn scheduling_counts_migrations_and_preemptions_of_every_thread() {
        let mut total = Scheduling::default();
        total.add(SCHED);
        total.add(SCHED);
        assert_eq!(total, Scheduling { migrations: 1036, preempted: 66680 });
        let later = Scheduling { migrations: 1040, preempted: 66000 };
        assert_eq!(later.since(total), Scheduling { migrations: 4, preempted: 0 }, "a thread gone took its counts");
    }

    #[test]
    fn this_process_has_its_counts_where_the_kernel_keeps_them() {
        let kept = std::path::Path::new("/proc/self/sched").exists();
        assert_eq!(scheduling(std::process::id()).is_some(), kept);
    }
}
