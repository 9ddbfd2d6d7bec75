//! The scenarios by name: which hostile client each runs, and for how long.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use super::hostile::{self, Attack};
use super::server;
use super::stop::Stop;
use crate::BoxError;

/// One way of attacking the server; see the [scenario list](super#scenarios).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One connection floods echo requests and never reads.
    NeverRead,
    /// The same on 4 connections at once.
    NeverReadX4,
    /// The flood, reading at 1 MiB/s.
    SlowReader,
    /// A batch of echo requests, then a PING every 5 s, never reading.
    KeepaliveNeverRead,
    /// 200 connections × 5,000 pipelined calls to `sleep(100)`, reading the answers.
    PipelineFlood,
    /// 15 MiB unknown frames, each followed by a `hold` call with a 1-byte metadata value.
    PinnedBuffers,
    /// `hold` calls with 65,535 metadata entries each.
    MetadataBomb,
    /// 10 million PINGs, never reading the PONGs.
    PingFlood,
    /// The handshake, then silence.
    SilentPeer,
    /// 4,096 connections that send most of a HELLO as long as one may be, and never finish it.
    HalfHellos,
    /// 32 connections that each make one 8 MiB echo call, then only keep the connection alive.
    LargeAnswers,
    /// 4,096 connections that complete the handshake and say nothing more, against a server
    /// open to 1,024.
    ConnectionFlood,
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub const ALL: [Scenario; 12] = [
        Scenario::NeverRead,
        Scenario::NeverReadX4,
        Scenario::SlowReader,
        Scenario::KeepaliveNeverRead,
        Scenario::PipelineFlood,
        Scenario::PinnedBuffers,
        Scenario::MetadataBomb,
        Scenario::PingFlood,
        Scenario::SilentPeer,
        Scenario::HalfHellos,
        Scenario::LargeAnswers,
        Scenario::ConnectionFlood,
    ];

    /// The name on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::NeverRead => "never-read",
            Scenario::NeverReadX4 => "never-read-x4",
            Scenario::SlowReader => "slow-reader",
            Scenario::KeepaliveNeverRead => "keepalive-never-read",
            Scenario::PipelineFlood => "pipeline-flood",
            Scenario::PinnedBuffers => "pinned-buffers",
            Scenario::MetadataBomb => "metadata-bomb",
            Scenario::PingFlood => "ping-flood",
            Scenario::SilentPeer => "silent-peer",
            Scenario::HalfHellos => "half-hellos",
            Scenario::LargeAnswers => "large-answers",
            Scenario::ConnectionFlood => "connection-flood",
        }
    }

    /// The server child it runs against: default settings ([`server::NAME`]), but for
    /// `connection-flood`, whose server bounds its connections low enough for one client to
    /// reach the bound ([`server::LIMITED`]).
    pub fn server(self) -> &'static str {
        match self {
            Scenario::ConnectionFlood => server::LIMITED,
            _ => server::NAME,
        }
    }

    /// Whether the scenario is about the server's heartbeat (PING after 10 s of silence, dead
    /// 20 s later; buffers given back at most once an interval), and so runs for the long
    /// duration, past those 30 s.
    pub fn watches_heartbeat(self) -> bool {
        matches!(self, Scenario::KeepaliveNeverRead | Scenario::SilentPeer | Scenario::LargeAnswers)
    }

    /// How long it runs: `long` for the heartbeat scenarios, `short` for the others.
    pub fn duration(self, short: Duration, long: Duration) -> Duration {
        if self.watches_heartbeat() { long } else { short }
    }

    /// Runs the hostile client against `addr` until `stop`, and returns its connections still
    /// open.
    ///
    /// # Errors
    /// If the client's frames cannot be encoded.
    pub async fn attack(self, addr: SocketAddr, stop: Stop) -> Result<Attack, BoxError> {
        match self {
            Scenario::NeverRead => hostile::flood_echo(addr, stop, 1, None).await,
            Scenario::NeverReadX4 => hostile::flood_echo(addr, stop, 4, None).await,
            Scenario::SlowReader => hostile::flood_echo(addr, stop, 1, Some(hostile::SLOW_READ_RATE)).await,
            Scenario::KeepaliveNeverRead => hostile::keepalive_never_read(addr, stop).await,
            Scenario::PipelineFlood => hostile::pipeline_flood(addr, stop).await,
            Scenario::PinnedBuffers => hostile::pinned_buffers(addr, stop).await,
            Scenario::MetadataBomb => hostile::metadata_bomb(addr, stop).await,
            Scenario::PingFlood => Ok(hostile::ping_flood(addr, stop).await),
            Scenario::SilentPeer => Ok(hostile::silent_peer(addr, stop).await),
            Scenario::HalfHellos => Ok(hostile::half_hellos(addr, stop).await),
            Scenario::LargeAnswers => hostile::large_answers(addr, stop).await,
            Scenario::ConnectionFlood => Ok(hostile::connection_flood(addr, stop).await),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A scenario name that is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScenario(String);

impl fmt::Display for UnknownScenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        write!(f, "unknown scenario {:?}; known: {}", self.0, known.join(", "))
    }
}

impl std::error::Error for UnknownScenario {}

impl FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(s: &str) -> Result<Scenario, UnknownScenario> {
        Scenario::ALL.into_iter().find(|scenario| scenario.name() == s).ok_or_else(|| UnknownScenario(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_unknown_ones_list_the_known() {
        for scenario in Scenario::ALL {
            assert_eq!(scenario.name().parse::<Scenario>(), Ok(scenario));
        }
        let unknown = "never-reads".parse::<Scenario>().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(unknown.starts_with("unknown scenario \"never-reads\"; known: never-read, never-read-x4"), "{unknown}");
    }

    #[test]
    fn only_the_heartbeat_scenarios_take_the_long_duration() {
        let (short, long) = (Duration::from_secs(10), Duration::from_secs(45));
        let long_ones: Vec<&str> =
            Scenario::ALL.into_iter().filter(|s| s.duration(short, long) == long).map(Scenario::name).collect();
        assert_eq!(long_ones, ["keepalive-never-read", "silent-peer", "large-answers"]);
    }

    #[test]
    fn only_the_connection_flood_runs_against_the_limited_server() {
        let limited: Vec<&str> =
            Scenario::ALL.into_iter().filter(|s| s.server() == server::LIMITED).map(Scenario::name).collect();
        assert_eq!(limited, ["connection-flood"]);
        assert!(Scenario::ALL.into_iter().all(|s| [server::NAME, server::LIMITED].contains(&s.server())));
    }
}
