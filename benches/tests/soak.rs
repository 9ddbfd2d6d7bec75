//! The soak tool's raw frames against the real zrpc server: what the hostile clients send must be
//! valid zrpc (or the server would close them for a protocol error, not for what the scenario
//! tests), and what the server says back must be read as PROTOCOL.md says.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use zrpc::{Blob, Code, Metadata};
use zrpc_benches::BoxError;
use zrpc_benches::soak::frames::{self, Requests};
use zrpc_benches::soak::raw::{RawConn, Reader};
use zrpc_benches::soak::server::{self, ECHO, HOLD, SLEEP};
use zrpc_benches::soak::stop::Stop;

/// How long any step may take before the test fails rather than hangs.
const LIVENESS: Duration = Duration::from_secs(10);

/// Serves the soak service in this process; returns its address.
async fn serve() -> Result<SocketAddr, BoxError> {
    let serving = server::serve().await?;
    tokio::spawn(serving.run);
    Ok(serving.addr)
}

/// Reads until `answers` responses came or the server closed the connection, failing after
/// [`LIVENESS`].
async fn read_answers(reader: &mut Reader, answers: u64) -> Result<(), BoxError> {
    let give_up = Instant::now() + LIVENESS;
    while reader.seen().answered + reader.seen().refused_total() < answers && reader.seen().end.is_none() {
        if Instant::now() > give_up {
            return Err(format!("{answers} answers did not come within {LIVENESS:?}: {:?}", reader.seen()).into());
        }
        // Short slices, so that the loop sees the count as soon as it is reached.
        reader.read_until(&Stop::at(Instant::now() + Duration::from_millis(20)), None).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_answers_the_raw_clients_requests() -> Result<(), BoxError> {
    let addr = serve().await?;
    let stop = Stop::at(Instant::now() + LIVENESS);
    let mut conn = RawConn::open(addr).await?;
    let mut echo = Requests::new(ECHO, frames::postcard(&Blob::from(vec![1u8; 64 * 1024]))?, Metadata::new())?;
    let mut sleep = Requests::new(SLEEP, frames::postcard(&1u64)?, Metadata::new())?;
    let mut hold = Requests::new(HOLD, frames::postcard(&1u64)?, frames::tiny_entries(3))?;
    assert!(conn.send(echo.with_id(1), 1, &stop).await);
    assert!(conn.send(sleep.with_id(3), 1, &stop).await);
    assert!(conn.send(hold.with_id(5), 1, &stop).await);
    let mut reader = conn.reader().ok_or("a fresh connection has its read half")?;
    read_answers(&mut reader, 3).await?;
    let seen = reader.seen();
    assert_eq!((seen.answered, seen.refused_total(), &seen.goaway, &seen.end), (3, 0, &None, &None));

    // A pipeline's ids start again at 1: on a connection of its own (PROTOCOL.md §7).
    let mut pipelined = RawConn::open(addr).await?;
    assert!(pipelined.send(&frames::pipeline(SLEEP, frames::postcard(&0u64)?, 5)?, 5, &stop).await);
    let mut reader = pipelined.reader().ok_or("a fresh connection has its read half")?;
    read_answers(&mut reader, 5).await?;
    let seen = reader.seen();
    assert_eq!((seen.answered, seen.refused_total(), &seen.goaway, &seen.end), (5, 0, &None, &None));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_frame_is_skipped_and_a_violation_is_reported_as_the_servers_goaway() -> Result<(), BoxError> {
    let mut conn = RawConn::open(serve().await?).await?;
    let stop = Stop::at(Instant::now() + LIVENESS);
    let mut echo = Requests::new(ECHO, frames::postcard(&Blob::from(vec![2u8; 10]))?, Metadata::new())?;
    assert!(conn.send(&frames::unknown(1 << 20), 1, &stop).await);
    assert!(conn.send(echo.with_id(1), 1, &stop).await);
    let mut reader = conn.reader().ok_or("a fresh connection has its read half")?;
    read_answers(&mut reader, 1).await?;
    assert_eq!(reader.seen().answered, 1, "the unknown frame was skipped");

    // An even id is the acceptor's: from the connector it is a connection error (PROTOCOL.md §11).
    assert!(conn.send(echo.with_id(2), 1, &stop).await);
    reader.read_until(&stop, None).await;
    conn.absorb(reader);
    let (code, message) = conn.seen.goaway.clone().ok_or("the server sent GOAWAY")?;
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(conn.seen.end.as_ref().is_some_and(|end| end.after.is_some()), "{:?}", conn.seen.end);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_well_behaved_client_calls_until_the_end() -> Result<(), BoxError> {
    let caller = zrpc_benches::soak::well_behaved::Caller::connect(serve().await?).await?;
    let stop = Stop::at(Instant::now() + Duration::from_millis(100));
    let calls = caller.call_until(stop).await?;
    assert!(calls.ok >= 1, "{calls:?}");
    assert_eq!(calls.failed_total(), 0, "{:?}", calls.failed);
    assert_eq!(calls.latency.len(), calls.ok);
    Ok(())
}
