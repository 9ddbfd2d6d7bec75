//! The hostile and slow clients, one function per scenario (see the [scenario
//! list](super#scenarios)).
//!
//! Each opens its connections ([`RawConn`]: preface and HELLO, then raw frames), does what its
//! scenario says until the scenario's [`Stop`], and returns its connections still open, so that
//! the server's memory is measured while it still holds them. Volumes are fixed here; the
//! duration and the memory cap are the caller's.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::Instant;
use zrpc::Blob;

use super::frames::{self, Requests, request_id};
use super::raw::RawConn;
use super::server::{ECHO, HOLD, SLEEP};
use super::stop::Stop;
use crate::BoxError;

/// The payload of one echo request in the floods: 64 KiB.
pub const ECHO_BYTES: usize = 64 * 1024;
/// What a flooding connection sends at most: 1 GiB of echo payloads.
pub const FLOOD_BYTES: u64 = 1 << 30;
/// How fast `slow-reader` reads: 1 MiB/s.
pub const SLOW_READ_RATE: u64 = 1 << 20;
/// The echo requests `keepalive-never-read` sends before it only pings: 64 MiB of payloads.
pub const KEEPALIVE_BATCH: u64 = 1024;
/// How often `keepalive-never-read` pings.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(5);
/// `pipeline-flood`'s connections…
pub const PIPELINE_CONNS: usize = 200;
/// …and the calls each pipelines…
pub const PIPELINE_CALLS: u64 = 5_000;
/// …to `sleep` for this many milliseconds.
pub const PIPELINE_SLEEP_MS: u64 = 100;
/// Calls to `hold` in `pinned-buffers` and in `metadata-bomb`.
pub const HOLD_CALLS: u64 = 40;
/// How long each `hold` call holds: far longer than any scenario (the server child is killed at
/// the end of its scenario).
pub const HOLD_MS: u64 = 3_600_000;
/// The body of the unknown frame before each `hold` in `pinned-buffers`: 15 MiB.
pub const UNKNOWN_BYTES: usize = 15 << 20;
/// Metadata entries on each `hold` in `metadata-bomb`: the most a block can carry.
pub const BOMB_ENTRIES: usize = 65_535;
/// Connections `half-hellos` opens: four times a server's default `max_handshakes`.
pub const HALF_HELLO_CONNS: usize = 4_096;
/// What each sends of its first frame, which claims 128 KiB (`frame::MAX_HELLO`): 96 KiB.
pub const HALF_HELLO_BYTES: usize = 96 << 10;
/// Connections `connection-flood` opens: four times its server's `max_connections`.
pub const FLOOD_CONNS: usize = 4 * super::server::FLOOD_MAX_CONNECTIONS;
/// PINGs `ping-flood` sends.
pub const PINGS: u64 = 10_000_000;
/// PINGs per write in `ping-flood`.
const PING_BATCH: u64 = 4_096;

/// What a scenario's hostile clients leave: their connections, still open, and why the ones
/// that are missing could not be opened.
#[derive(Debug, Default)]
pub struct Attack {
    /// The connections, in no particular order.
    pub conns: Vec<RawConn>,
    /// One message per connection that could not be opened (or whose client panicked).
    pub failed: Vec<String>,
}

/// `never-read` (1 connection, `read_rate` `None`), `never-read-x4` (4, `None`) and
/// `slow-reader` (1, [`SLOW_READ_RATE`]): each connection sends 1 GiB of echo requests as fast
/// as the socket takes them, and reads at `read_rate` if given, else never.
///
/// # Errors
/// If the requests cannot be encoded.
pub async fn flood_echo(
    addr: SocketAddr,
    stop: Stop,
    conns: usize,
    read_rate: Option<u64>,
) -> Result<Attack, BoxError> {
    let requests = echo_requests()?;
    Ok(on_connections(addr, stop, conns, move |mut conn, stop| {
        let mut requests = requests.clone();
        async move {
            let reading = read_rate.and_then(|rate| reading(&mut conn, &stop, Some(rate)));
            flood(&mut conn, &stop, &mut requests, FLOOD_BYTES / ECHO_BYTES as u64).await;
            stop.wait().await;
            absorb(&mut conn, reading).await;
            conn
        }
    })
    .await)
}

/// `keepalive-never-read`: a batch of [`KEEPALIVE_BATCH`] echo requests, then one PING every
/// [`KEEPALIVE_EVERY`], never reading: enough traffic that the server's heartbeat never finds
/// the connection idle.
///
/// # Errors
/// If the requests cannot be encoded.
pub async fn keepalive_never_read(addr: SocketAddr, stop: Stop) -> Result<Attack, BoxError> {
    let requests = echo_requests()?;
    Ok(on_connections(addr, stop, 1, move |mut conn, stop| {
        let mut requests = requests.clone();
        async move {
            flood(&mut conn, &stop, &mut requests, KEEPALIVE_BATCH).await;
            keep_alive(&mut conn, &stop).await;
            stop.wait().await;
            conn
        }
    })
    .await)
}

/// Connections `large-answers` opens.
pub const LARGE_ANSWER_CONNS: usize = 32;
/// The size of the echo each of them makes once.
pub const LARGE_ANSWER_BYTES: usize = 8 << 20;

/// `large-answers`: [`LARGE_ANSWER_CONNS`] connections each make one echo call of
/// [`LARGE_ANSWER_BYTES`], read the answer, and then only keep the connection alive with a PING
/// every [`KEEPALIVE_EVERY`]: how much of each burst the server keeps while they idle.
///
/// # Errors
/// If the request cannot be encoded.
pub async fn large_answers(addr: SocketAddr, stop: Stop) -> Result<Attack, BoxError> {
    let payload = frames::postcard(&Blob::from(vec![0x5a; LARGE_ANSWER_BYTES]))?;
    let mut large = Requests::new(ECHO, payload, zrpc::Metadata::new())?;
    let large = Bytes::copy_from_slice(large.with_id(request_id(0)));
    Ok(on_connections(addr, stop, LARGE_ANSWER_CONNS, move |mut conn, stop| {
        let large = large.clone();
        async move {
            let reading = reading(&mut conn, &stop, None);
            if conn.send(&large, 1, &stop).await {
                keep_alive(&mut conn, &stop).await;
            }
            stop.wait().await;
            absorb(&mut conn, reading).await;
            conn
        }
    })
    .await)
}

/// `pipeline-flood`: [`PIPELINE_CONNS`] connections each write [`PIPELINE_CALLS`] calls to
/// `sleep(100)` at once, then read and tally the answers: load, not a non-reader.
///
/// # Errors
/// If the requests cannot be encoded.
pub async fn pipeline_flood(addr: SocketAddr, stop: Stop) -> Result<Attack, BoxError> {
    let calls = frames::pipeline(SLEEP, frames::postcard(&PIPELINE_SLEEP_MS)?, PIPELINE_CALLS)?;
    Ok(on_connections(addr, stop, PIPELINE_CONNS, move |mut conn, stop| {
        let calls = calls.clone();
        async move {
            let reading = reading(&mut conn, &stop, None);
            conn.send(&calls, PIPELINE_CALLS, &stop).await;
            stop.wait().await;
            absorb(&mut conn, reading).await;
            conn
        }
    })
    .await)
}

/// `pinned-buffers`: [`HOLD_CALLS`] times, a 15 MiB frame of an unknown kind, then a call to
/// `hold` with one metadata entry of a 1-byte value; never reads.
///
/// # Errors
/// If the requests cannot be encoded.
pub async fn pinned_buffers(addr: SocketAddr, stop: Stop) -> Result<Attack, BoxError> {
    let mut metadata = zrpc::Metadata::new();
    metadata.append("k", bytes::Bytes::from_static(b"x"));
    let hold = Requests::new(HOLD, frames::postcard(&HOLD_MS)?, metadata)?;
    let unknown = frames::unknown(UNKNOWN_BYTES);
    Ok(on_connections(addr, stop, 1, move |mut conn, stop| {
        let (mut hold, unknown) = (hold.clone(), unknown.clone());
        async move {
            for n in 0..HOLD_CALLS {
                if !conn.send(&unknown, 1, &stop).await || !conn.send(hold.with_id(request_id(n)), 1, &stop).await {
                    break;
                }
            }
            stop.wait().await;
            conn
        }
    })
    .await)
}

/// `metadata-bomb`: [`HOLD_CALLS`] calls to `hold`, each with [`BOMB_ENTRIES`] metadata entries
/// of an empty key and a 1-byte value (6 bytes an entry on the wire); never reads.
///
/// # Errors
/// If the requests cannot be encoded.
pub async fn metadata_bomb(addr: SocketAddr, stop: Stop) -> Result<Attack, BoxError> {
    let bomb = Requests::new(HOLD, frames::postcard(&HOLD_MS)?, frames::tiny_entries(BOMB_ENTRIES))?;
    Ok(on_connections(addr, stop, 1, move |mut conn, stop| {
        let mut bomb = bomb.clone();
        async move {
            flood(&mut conn, &stop, &mut bomb, HOLD_CALLS).await;
            stop.wait().await;
            conn
        }
    })
    .await)
}

/// `ping-flood`: [`PINGS`] PING frames, never reading the PONGs.
pub async fn ping_flood(addr: SocketAddr, stop: Stop) -> Attack {
    let batch = frames::pings(PING_BATCH);
    let last = frames::pings(PINGS % PING_BATCH);
    on_connections(addr, stop, 1, move |mut conn, stop| {
        let (batch, last) = (batch.clone(), last.clone());
        async move {
            let batches = std::iter::repeat_n((&batch, PING_BATCH), (PINGS / PING_BATCH) as usize);
            for (pings, count) in batches.chain([(&last, PINGS % PING_BATCH)]) {
                if !conn.send(pings, count, &stop).await {
                    break;
                }
            }
            stop.wait().await;
            conn
        }
    })
    .await
}

/// `silent-peer`: the handshake, then nothing. It reads only to notice when the server closes
/// the connection; it answers no PING, so to the server it is silent.
pub async fn silent_peer(addr: SocketAddr, stop: Stop) -> Attack {
    on_connections(addr, stop, 1, idle).await
}

/// `connection-flood`: [`FLOOD_CONNS`] connections at once, each a whole handshake and then
/// nothing, against a server open to a quarter of them
/// ([`FLOOD_MAX_CONNECTIONS`](super::server::FLOOD_MAX_CONNECTIONS)). Each reads, to see
/// whether the server refuses it (its GOAWAY) or keeps it.
pub async fn connection_flood(addr: SocketAddr, stop: Stop) -> Attack {
    on_connections(addr, stop, FLOOD_CONNS, idle).await
}

/// A connection that says nothing until the scenario ends, reading only to notice what the
/// server says to it (a GOAWAY) and when it closes.
async fn idle(mut conn: RawConn, stop: Stop) -> RawConn {
    let reading = reading(&mut conn, &stop, None);
    stop.wait().await;
    absorb(&mut conn, reading).await;
    conn
}

/// `half-hellos`: [`HALF_HELLO_CONNS`] connections each send the preface and the first
/// [`HALF_HELLO_BYTES`] of a HELLO as long as one may be, then nothing; they read only to
/// notice the close. Before its HELLO a client has shown no name or token, so what these hold
/// is bounded for the whole server (`ServerBuilder::max_handshakes`), not only per connection.
pub async fn half_hellos(addr: SocketAddr, stop: Stop) -> Attack {
    let part = frames::part_of_the_longest_hello(HALF_HELLO_BYTES).freeze();
    on_connections_greeting(addr, stop, HALF_HELLO_CONNS, frames::preface().freeze(), move |mut conn, stop| {
        let part = part.clone();
        async move {
            let reading = reading(&mut conn, &stop, None);
            conn.send(&part, 0, &stop).await;
            stop.wait().await;
            absorb(&mut conn, reading).await;
            conn
        }
    })
    .await
}

/// 64 KiB echo requests.
fn echo_requests() -> Result<Requests, BoxError> {
    let payload = frames::postcard(&Blob::from(vec![0xa5; ECHO_BYTES]))?;
    Requests::new(ECHO, payload, zrpc::Metadata::new())
}

/// Sends a PING every [`KEEPALIVE_EVERY`] until the scenario ends or a write fails, so that the
/// server's heartbeat never finds the connection idle.
async fn keep_alive(conn: &mut RawConn, stop: &Stop) {
    let ping = frames::pings(1);
    let mut ticks = tokio::time::interval_at(Instant::now() + KEEPALIVE_EVERY, KEEPALIVE_EVERY);
    while stop.run(ticks.tick()).await.is_some() && conn.send(&ping, 1, stop).await {}
}

/// Sends `count` of `requests`, ids 1, 3, 5…, one write each, until done, the scenario ends or
/// a write fails.
async fn flood(conn: &mut RawConn, stop: &Stop, requests: &mut Requests, count: u64) {
    for n in 0..count {
        if !conn.send(requests.with_id(request_id(n)), 1, stop).await {
            return;
        }
    }
}

type Reading = Option<tokio::task::JoinHandle<super::raw::Reader>>;

/// Starts reading `conn` until the scenario ends, at most `rate` bytes per second if given.
fn reading(conn: &mut RawConn, stop: &Stop, rate: Option<u64>) -> Reading {
    let mut reader = conn.reader()?;
    let stop = stop.clone();
    Some(tokio::spawn(async move {
        reader.read_until(&stop, rate).await;
        reader
    }))
}

/// Takes in what [`reading`] saw, once the scenario has ended (so the reader has stopped too).
async fn absorb(conn: &mut RawConn, reading: Reading) {
    let Some(handle) = reading else { return };
    if let Ok(reader) = handle.await {
        conn.absorb(reader);
    }
}

/// Opens `conns` connections at once and runs `client` on each, in a task of its own; returns
/// when every client has.
async fn on_connections<C, F>(addr: SocketAddr, stop: Stop, conns: usize, client: C) -> Attack
where
    C: Fn(RawConn, Stop) -> F + Clone + Send + 'static,
    F: Future<Output = RawConn> + Send + 'static,
{
    let handshake = match frames::handshake("soak-hostile") {
        Ok(handshake) => handshake.freeze(),
        Err(e) => return Attack { conns: Vec::new(), failed: vec![e.to_string()] },
    };
    on_connections_greeting(addr, stop, conns, handshake, client).await
}

/// [`on_connections`], each connection opened with `greeting` instead of a handshake.
async fn on_connections_greeting<C, F>(addr: SocketAddr, stop: Stop, conns: usize, greeting: Bytes, client: C) -> Attack
where
    C: Fn(RawConn, Stop) -> F + Clone + Send + 'static,
    F: Future<Output = RawConn> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        let (client, stop, greeting) = (client.clone(), stop.clone(), greeting.clone());
        tasks.spawn(async move {
            let conn = RawConn::open_with(addr, &greeting).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(client(conn, stop).await)
        });
    }
    let mut attack = Attack::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(conn)) => attack.conns.push(conn),
            Ok(Err(e)) => attack.failed.push(e),
            Err(e) => attack.failed.push(format!("a client task failed: {e}")),
        }
    }
    attack
}
