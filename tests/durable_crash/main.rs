//! The crash test of durable calls (issue 13, item 5): a sender and a receiver in separate
//! processes, SIGKILLed at random points, restarted, run to completion, and the receiver's
//! journal checked for the exact guarantee (`zrpc_transport::durable`, "The exact guarantee").
//!
//! This test binary plays three parts: the driver (the test below), and, started again by the
//! driver with `ZRPC_CRASH_ROLE` set, the sender and the receiver (`roles.rs`).
//!
//! 1. **Receiver** (`roles.rs`): a server named `receiver` with an inbox, on a Unix socket in the
//!    run's temp dir (the same path for every receiver process, so the sender's lazy channel
//!    finds a restarted receiver where the last one was). Its oneway handler `Counter.add(n)`
//!    appends `start <id> <n> <pid>` and then `end <id> <n> <pid>` to the journal, each line
//!    one `write` to an `O_APPEND` file.
//! 2. **Sender** (`roles.rs`): an outbox in the temp dir and `CounterClient` over its
//!    destination `receiver`; calls `add(n)` for each `n` up to the total and prints `logged n`
//!    after each call returned. Message `n` is the outbox's `n`th message to the receiver, at
//!    sequence `n`; a restarted sender resumes at the outbox's next sequence (see `roles::sender`
//!    for why this, and not the last `n` it printed, and how it finds it when the outbox holds
//!    nothing).
//! 3. **Driver** (`driver.rs`, `plan.rs`): a seeded RNG (seed printed; `ZRPC_CRASH_SEED`
//!    replays the plan, if not the OS's scheduling) draws each kill as a number of progress
//!    lines to wait for (`logged`, `start`, `end`, from either child: progress, never a sleep;
//!    1 to 5 lines, or a share of what is left of the run) and a victim: the sender, the
//!    receiver or both, SIGKILLed and restarted (the receiver first). Kills that the run left
//!    no lines for are made back to back once every message is handled, so a run always makes
//!    all of its kills. After the kills it has the sender
//!    send one more message, the fence, and waits until every message and the fence have an
//!    `end` (handled in order, the fence ends after any rerun the last kill left), within an
//!    overall deadline (`ZRPC_CRASH_DEADLINE_SECS`,
//!    default 300 s) past which the test fails with the journals printed.
//! 4. **Checks** (`check.rs`, itself tested on synthetic journals): nothing lost, order per
//!    stream, a second `start` only of the handler a killed receiver was running (and with the
//!    same id and message), handlers that finish.
//!
//! Size: `ZRPC_CRASH_MESSAGES` (default 2,000) and `ZRPC_CRASH_KILLS` (default 10), at
//! `ZRPC_CRASH_LEVEL=process` (default) or `power`. At `power` both ends sync; SIGKILL cannot
//! make a power loss, so that level is checked against process kills only here (the log's
//! power-loss hook is exercised by the unit tests of `zrpc-transport`).

mod check;
mod driver;
mod plan;
mod roles;

/// The name of the test that is the driver, and the children's entry point.
const TEST: &str = "durable_calls_survive_sigkill_of_either_end_and_run_once";

#[test]
fn durable_calls_survive_sigkill_of_either_end_and_run_once() {
    if let Ok(role) = std::env::var(roles::ROLE_ENV) {
        roles::run(&role);
    }
    let plan = plan::Plan::from_env().unwrap_or_else(|e| panic!("{e}"));
    println!(
        "durable crash test: {} messages, {} kills, {} level; replay with {}",
        plan.messages,
        plan.kills.len(),
        plan.level.name(),
        plan.replay()
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    match driver::run(&plan, dir.path()) {
        Ok(outcome) => {
            println!(
                "seed {}: {} kills made ({} of the sender, {} of the receiver; {} after every message was \
                 handled), {} messages handled, {} handlers run again after a kill inside them, {} receiver \
                 processes",
                plan.seed,
                outcome.kills,
                outcome.senders_killed,
                outcome.receivers_killed,
                outcome.at_rest,
                outcome.summary.handled,
                outcome.summary.reruns,
                outcome.summary.processes
            );
            // The messages and the fence.
            assert_eq!(outcome.summary.handled as u64, plan.messages + 1);
        }
        Err(failure) => {
            let kept = dir.keep();
            panic!("seed {}: {failure}\n(kept {})", plan.seed, kept.display());
        }
    }
}
