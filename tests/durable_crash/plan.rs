//! The run's size and its kills: read from the environment, drawn from a seeded RNG.

use std::time::Duration;

/// Messages to send (default [`MESSAGES`]).
pub(crate) const MESSAGES_ENV: &str = "ZRPC_CRASH_MESSAGES";
/// Kills to make (default [`KILLS`]).
pub(crate) const KILLS_ENV: &str = "ZRPC_CRASH_KILLS";
/// `process` (default) or `power`: the durability of both ends.
pub(crate) const LEVEL_ENV: &str = "ZRPC_CRASH_LEVEL";
/// Replays the run drawn from this seed (printed by every run).
pub(crate) const SEED_ENV: &str = "ZRPC_CRASH_SEED";
/// The overall deadline in seconds (default [`DEADLINE`]).
pub(crate) const DEADLINE_ENV: &str = "ZRPC_CRASH_DEADLINE_SECS";

/// CI's size: a few seconds on a 2-core machine.
pub(crate) const MESSAGES: u64 = 2_000;
/// CI's number of kills.
pub(crate) const KILLS: usize = 10;
/// Far past what CI's size takes (seconds): only a hang reaches it, and then the test fails
/// with the journals instead of stalling CI.
pub(crate) const DEADLINE: Duration = Duration::from_secs(300);

/// The durability level of both ends, as the environment names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Process,
    Power,
}

impl Level {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Level::Process => "process",
            Level::Power => "power",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Level, String> {
        match text {
            "process" => Ok(Level::Process),
            "power" => Ok(Level::Power),
            other => Err(format!("{LEVEL_ENV}={other:?}: expected process or power")),
        }
    }
}

/// Which processes a kill ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Victim {
    Sender,
    Receiver,
    Both,
}

impl Victim {
    pub(crate) fn sender(self) -> bool {
        matches!(self, Victim::Sender | Victim::Both)
    }

    pub(crate) fn receiver(self) -> bool {
        matches!(self, Victim::Receiver | Victim::Both)
    }
}

/// How long a kill waits, in lines of progress (`logged`, `start`, `end`, from either process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// This many lines: a kill soon after the last restart, during recovery.
    Lines(u64),
    /// This many thousandths of a fair share of the lines still to come (what the run has left
    /// divided by the kills left), so that the kills spread over the run whatever its size.
    Share(u64),
}

impl Wait {
    /// The lines to wait for, when `left` lines of the run are still to come and `kills` kills
    /// are left (this one included). At least 1.
    pub(crate) fn lines(self, left: u64, kills: usize) -> u64 {
        match self {
            Wait::Lines(lines) => lines.max(1),
            Wait::Share(thousandths) => (left / kills.max(1) as u64 * thousandths / 1000).max(1),
        }
    }
}

/// One kill: after its wait, SIGKILL `victim`, then start it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kill {
    pub(crate) wait: Wait,
    pub(crate) victim: Victim,
}

/// Everything a run is made of.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) seed: u64,
    pub(crate) messages: u64,
    pub(crate) level: Level,
    pub(crate) deadline: Duration,
    pub(crate) kills: Vec<Kill>,
}

impl Plan {
    /// The plan the environment asks for; a fresh seed unless [`SEED_ENV`] gives one.
    pub(crate) fn from_env() -> Result<Plan, String> {
        let number = |name: &str, default: u64| -> Result<u64, String> {
            match std::env::var(name) {
                Ok(text) => text.parse().map_err(|e| format!("{name}={text:?}: {e}")),
                Err(_) => Ok(default),
            }
        };
        let seed = number(SEED_ENV, fastrand::u64(..))?;
        let messages = number(MESSAGES_ENV, MESSAGES)?.max(1);
        let kills = usize::try_from(number(KILLS_ENV, KILLS as u64)?).map_err(|e| format!("{KILLS_ENV}: {e}"))?;
        let level = Level::parse(&std::env::var(LEVEL_ENV).unwrap_or_else(|_| "process".into()))?;
        let deadline = Duration::from_secs(number(DEADLINE_ENV, DEADLINE.as_secs())?);
        Ok(Plan::draw(seed, messages, kills, level, deadline))
    }

    /// The kills of a run, from its seed alone (the same seed, the same plan; the same run only
    /// as far as the OS schedules the processes alike).
    ///
    /// One kill in four waits 1 to 5 lines, so that kills also land during recovery (a process
    /// killed again right after it restarted); the others wait up to a fair share of what is
    /// left of the run ([`Wait::Share`]), half of it on average. Restarts take lines too (the
    /// process that was not killed goes on), which is why the share is measured at each kill
    /// rather than drawn in lines up front.
    pub(crate) fn draw(seed: u64, messages: u64, kills: usize, level: Level, deadline: Duration) -> Plan {
        let mut rng = fastrand::Rng::with_seed(seed);
        let kills = (0..kills)
            .map(|_| {
                let wait = if rng.u8(..4) == 0 { Wait::Lines(rng.u64(1..=5)) } else { Wait::Share(rng.u64(1..=1000)) };
                let victim = match rng.u8(..3) {
                    0 => Victim::Sender,
                    1 => Victim::Receiver,
                    _ => Victim::Both,
                };
                Kill { wait, victim }
            })
            .collect();
        Plan { seed, messages, level, deadline, kills }
    }

    /// How to replay this run.
    pub(crate) fn replay(&self) -> String {
        format!(
            "{SEED_ENV}={} {MESSAGES_ENV}={} {KILLS_ENV}={} {LEVEL_ENV}={}",
            self.seed,
            self.messages,
            self.kills.len(),
            self.level.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_kills() {
        let a = Plan::draw(7, 2_000, 10, Level::Process, DEADLINE);
        let b = Plan::draw(7, 2_000, 10, Level::Process, DEADLINE);
        let c = Plan::draw(8, 2_000, 10, Level::Process, DEADLINE);
        assert_eq!(a.kills, b.kills);
        assert_ne!(a.kills, c.kills);
        assert_eq!(a.kills.len(), 10);
        for kill in &a.kills {
            let lines = kill.wait.lines(6_000, 10);
            assert!((1..=600).contains(&lines), "{kill:?}: {lines}");
        }
    }

    #[test]
    fn a_share_is_of_the_lines_left_per_kill_left() {
        assert_eq!(Wait::Share(500).lines(6_000, 10), 300);
        assert_eq!(Wait::Share(1000).lines(6_000, 1), 6_000);
        assert_eq!(Wait::Share(1).lines(10, 10), 1, "never 0");
        assert_eq!(Wait::Lines(3).lines(0, 0), 3);
    }

    #[test]
    fn every_victim_is_drawn_over_many_kills() {
        let plan = Plan::draw(1, 1_000_000, 1_000, Level::Power, DEADLINE);
        for victim in [Victim::Sender, Victim::Receiver, Victim::Both] {
            assert!(plan.kills.iter().any(|kill| kill.victim == victim), "{victim:?}");
        }
        assert!(plan.kills.iter().any(|kill| matches!(kill.wait, Wait::Lines(1..=5))), "kills during recovery");
        assert!(plan.kills.iter().any(|kill| matches!(kill.wait, Wait::Share(_))), "kills spread over the run");
        assert!(plan.replay().contains("ZRPC_CRASH_LEVEL=power"));
    }
}
