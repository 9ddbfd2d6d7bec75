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

/// One kill: after `after` more lines of progress (`logged`, `start`, `end`, from either
/// process), SIGKILL `victim`, then start it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kill {
    pub(crate) after: u64,
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

    /// The kills of a run, from its seed alone (the same seed, the same plan).
    ///
    /// A run makes about `3 * messages` lines (a `logged`, a `start` and an `end` per message),
    /// so waits are drawn from `1..=1.5 * messages / kills`: on average the kills are over by
    /// the middle of the run, which leaves room for the recoveries to make progress of their own.
    /// One kill in four waits only 1 to 5 lines, so that kills also land during recovery (a
    /// process killed again right after it restarted).
    pub(crate) fn draw(seed: u64, messages: u64, kills: usize, level: Level, deadline: Duration) -> Plan {
        let mut rng = fastrand::Rng::with_seed(seed);
        let spread = (messages * 3 / 2 / kills.max(1) as u64).max(1);
        let kills = (0..kills)
            .map(|_| {
                let after = if rng.u8(..4) == 0 { rng.u64(1..=5) } else { rng.u64(1..=spread) };
                let victim = match rng.u8(..3) {
                    0 => Victim::Sender,
                    1 => Victim::Receiver,
                    _ => Victim::Both,
                };
                Kill { after, victim }
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
        assert!(a.kills.iter().all(|kill| (1..=300).contains(&kill.after)), "{:?}", a.kills);
    }

    #[test]
    fn every_victim_is_drawn_over_many_kills() {
        let plan = Plan::draw(1, 1_000_000, 1_000, Level::Power, DEADLINE);
        for victim in [Victim::Sender, Victim::Receiver, Victim::Both] {
            assert!(plan.kills.iter().any(|kill| kill.victim == victim), "{victim:?}");
        }
        assert!(plan.kills.iter().any(|kill| kill.after <= 5), "kills during recovery");
        assert!(plan.replay().contains("ZRPC_CRASH_LEVEL=power"));
    }
}
