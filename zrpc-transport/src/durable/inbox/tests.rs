//! The inbox's local half over real files in temp dirs: outcomes, order, handled marks and
//! reopen, a crash inside a handler, group commit, power loss, the limits, retention and
//! compaction.
//!
//! No test waits on time: concurrency is made deterministic by holding the writer
//! (`Control::Hold`) while commands queue, retention runs on a clock the test moves, and every
//! count asserted comes from the log's counters or the files on disk.

use std::fs;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::future::join_all;
use tokio::sync::oneshot;

use super::journal::Command;
use super::state::State;
use super::*;
use crate::durable::log::runs::LAST_SEQUENCE;
use crate::durable::log::writer::Control;

const SEGMENT: u64 = 4096;
const SHOP: OutboxId = OutboxId::from_u64(0x5409);
const MAIL: OutboxId = OutboxId::from_u64(0x3a11);

fn config() -> InboxConfig {
    InboxConfig::default().segment_bytes(SEGMENT)
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temp dir")
}

async fn open(dir: &Path, config: InboxConfig) -> Inbox {
    Inbox::open(dir, config).await.expect("the inbox opens")
}

fn msg(n: u64) -> Bytes {
    Bytes::from(format!("message {n:04}"))
}

async fn record(inbox: &Inbox, outbox: OutboxId, n: u64) -> Outcome {
    inbox.record("shop-1", outbox, n, 0, msg(n)).await.expect("record")
}

async fn record_all(inbox: &Inbox, outbox: OutboxId, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        assert_eq!(record(inbox, outbox, n).await, Outcome::Recorded { recorded: n });
    }
}

/// What a take gives: (outbox, sequence, message).
async fn take(inbox: &Inbox, max: usize) -> Vec<(OutboxId, u64, Bytes)> {
    let taken = inbox.take(max).await.expect("take");
    taken.iter().map(|d| (d.id.outbox(), d.id.sequence(), d.message.clone())).collect()
}

/// Takes and handles every message the inbox gives, one stream's message at a time, and
/// returns them in the order handled.
async fn handle_all(inbox: &Inbox) -> Vec<(OutboxId, u64)> {
    let mut handled = Vec::new();
    loop {
        let taken = inbox.take(usize::MAX).await.expect("take");
        if taken.is_empty() {
            return handled;
        }
        for delivery in taken.iter() {
            assert_eq!(delivery.message, msg(delivery.id.sequence()));
            inbox.handled(&delivery.id).await.expect("handled");
            handled.push((delivery.id.outbox(), delivery.id.sequence()));
        }
    }
}

fn id(outbox: OutboxId, n: u64) -> MessageId {
    MessageId::new("shop-1", outbox, n)
}

fn watermarks(streams: &[StreamInfo]) -> Vec<(OutboxId, u64, u64)> {
    streams.iter().map(|s| (s.outbox, s.recorded, s.handled)).collect()
}

fn segment_count(dir: &Path) -> usize {
    fs::read_dir(dir)
        .expect("list the dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log")))
        .count()
}

fn segment_bytes(dir: &Path) -> u64 {
    let files = fs::read_dir(dir).expect("list the dir").map(|e| e.expect("a dir entry").path());
    files.filter(|p| p.extension().is_some_and(|x| x == "log")).map(|p| fs::metadata(p).map_or(0, |m| m.len())).sum()
}

fn counter(inbox: &Inbox, pick: impl Fn(&Counters) -> &AtomicU64) -> u64 {
    Counters::get(pick(inbox.counters()))
}

/// Ends a batch: the writer reads its clock at a batch's first command and does its upkeep
/// (rolling, forgetting, compaction) after answering the batch, so the next command the test
/// sends comes after that upkeep.
async fn settle(inbox: &Inbox) {
    inbox.streams().await.expect("streams");
}

async fn hold(inbox: &Inbox) -> oneshot::Sender<()> {
    let (release, until) = oneshot::channel();
    inbox.inner.writer.send(Command::Control(Control::Hold(until))).await;
    release
}

/// Stops the inbox as a `kill -9` would; returns once its log is closed.
async fn crash(inbox: Inbox) {
    let (closed, done) = oneshot::channel();
    inbox.inner.writer.send(Command::Control(Control::Crash(closed))).await;
    done.await.expect("the log closes");
}

type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, DurableError>> + Send + 'a>>;

/// Starts a record and polls it once, so that its command is queued.
async fn queued(inbox: &Inbox, outbox: OutboxId, n: u64) -> Pending<'_, Outcome> {
    let mut record: Pending<'_, Outcome> = Box::pin(inbox.record("shop-1", outbox, n, 0, msg(n)));
    assert!(futures::poll!(record.as_mut()).is_pending(), "a record completed while the writer was held");
    record
}

#[tokio::test]
async fn a_stream_records_its_next_sequence_and_answers_duplicates_and_gaps() {
    let dir = temp();
    let inbox = open(dir.path(), config()).await;
    assert_eq!(record(&inbox, SHOP, 2).await, Outcome::Gap { recorded: 0 }, "a new stream starts at 1");
    assert_eq!(record(&inbox, SHOP, 1).await, Outcome::Recorded { recorded: 1 });
    assert_eq!(record(&inbox, SHOP, 2).await, Outcome::Recorded { recorded: 2 });
    assert_eq!(record(&inbox, SHOP, 1).await, Outcome::Duplicate { recorded: 2 });
    assert_eq!(record(&inbox, SHOP, 2).await, Outcome::Duplicate { recorded: 2 });
    assert_eq!(record(&inbox, SHOP, 4).await, Outcome::Gap { recorded: 2 });
    assert_eq!(record(&inbox, MAIL, 1).await, Outcome::Recorded { recorded: 1 }, "another outbox, another stream");
    let other = inbox.record("shop-2", SHOP, 1, 0, msg(1)).await.expect("record");
    assert_eq!(other, Outcome::Recorded { recorded: 1 }, "another sender, another stream");

    // The duplicate was not recorded again: two messages of SHOP wait, once each.
    let streams = inbox.streams().await.expect("streams");
    let shop = streams.iter().find(|s| s.sender == "shop-1" && s.outbox == SHOP).expect("the stream");
    assert_eq!((shop.recorded, shop.handled), (2, 0));
    assert_eq!(shop.bytes, 2 * State::record_size("shop-1", &msg(1)));
    assert_eq!(
        handle_all(&inbox).await.iter().filter(|(o, _)| *o == SHOP).count(),
        3,
        "1 and 2 of shop-1, 1 of shop-2"
    );
}

#[tokio::test]
async fn a_stream_hands_out_one_message_at_a_time_in_order_and_streams_are_independent() {
    let dir = temp();
    let inbox = open(dir.path(), config()).await;
    record_all(&inbox, SHOP, 1..=3).await;
    record_all(&inbox, MAIL, 1..=2).await;

    let first = take(&inbox, 10).await;
    assert_eq!(first, [(SHOP, 1, msg(1)), (MAIL, 1, msg(1))], "the first of each stream");
    assert!(take(&inbox, 10).await.is_empty(), "nothing more while both handlers run");

    assert_eq!(inbox.handled(&id(MAIL, 1)).await.ok(), Some(1));
    assert_eq!(take(&inbox, 10).await, [(MAIL, 2, msg(2))], "MAIL goes on while SHOP's handler runs");
    assert_eq!(inbox.handled(&id(SHOP, 1)).await.ok(), Some(1));
    assert_eq!(take(&inbox, 10).await, [(SHOP, 2, msg(2))]);
    assert_eq!(inbox.handled(&id(SHOP, 2)).await.ok(), Some(1));
    assert_eq!(inbox.handled(&id(SHOP, 2)).await.ok(), Some(0), "a mark again releases nothing");
    assert_eq!(take(&inbox, 1).await, [(SHOP, 3, msg(3))]);

    record_all(&inbox, SHOP, 4..=4).await;
    assert!(take(&inbox, 10).await.is_empty(), "a new message waits for its stream's running handler");
    // The permit earlier batches left (nobody was waiting) is taken first.
    let _ = futures::poll!(Box::pin(inbox.ready().notified()));
    let woken = inbox.ready().notified();
    tokio::pin!(woken);
    assert!(futures::poll!(woken.as_mut()).is_pending(), "nothing is ready");
    inbox.handled(&id(SHOP, 3)).await.expect("handled");
    inbox.handled(&id(MAIL, 2)).await.expect("handled");
    settle(&inbox).await;
    assert!(futures::poll!(woken.as_mut()).is_ready(), "the dispatcher is woken when SHOP 4 is ready");
    assert_eq!(take(&inbox, 10).await, [(SHOP, 4, msg(4))]);
}

#[tokio::test]
async fn handled_marks_survive_a_reopen_and_exactly_the_unhandled_messages_come_back() {
    let dir = temp();
    let inbox = open(dir.path(), config()).await;
    record_all(&inbox, SHOP, 1..=5).await;
    for n in 1..=3 {
        assert_eq!(take(&inbox, 1).await, [(SHOP, n, msg(n))]);
        inbox.handled(&id(SHOP, n)).await.expect("handled");
    }
    record_all(&inbox, MAIL, 1..=2).await;
    inbox.close().await.expect("close");

    let inbox = open(dir.path(), config()).await;
    let mut streams = watermarks(&inbox.streams().await.expect("streams"));
    streams.sort();
    assert_eq!(streams, [(MAIL, 2, 0), (SHOP, 5, 3)]);
    assert_eq!(record(&inbox, SHOP, 5).await, Outcome::Duplicate { recorded: 5 }, "deduplication survives");
    assert_eq!(record(&inbox, SHOP, 6).await, Outcome::Recorded { recorded: 6 });
    let handled = handle_all(&inbox).await;
    let shop: Vec<u64> = handled.iter().filter(|(o, _)| *o == SHOP).map(|&(_, n)| n).collect();
    let mail: Vec<u64> = handled.iter().filter(|(o, _)| *o == MAIL).map(|&(_, n)| n).collect();
    assert_eq!((shop, mail), (vec![4, 5, 6], vec![1, 2]), "each unhandled message once, in order");
}

#[tokio::test]
async fn a_crash_while_a_handler_runs_gives_back_exactly_that_message() {
    let dir = temp();
    let inbox = open(dir.path(), config()).await;
    record_all(&inbox, SHOP, 1..=3).await;
    record_all(&inbox, MAIL, 1..=1).await;
    let running = inbox.take(10).await.expect("take");
    assert_eq!(running.len(), 2);
    inbox.handled(&id(MAIL, 1)).await.expect("MAIL's handler returned");
    // SHOP 1's handler is running: the process dies.
    crash(inbox).await;

    let inbox = open(dir.path(), config()).await;
    let again = inbox.take(10).await.expect("take");
    assert_eq!(again.len(), 1, "only the message whose handler was running: {again:?}");
    assert_eq!(again[0].id, running.iter().find(|d| d.id.outbox() == SHOP).expect("SHOP 1").id, "same id");
    assert_eq!(again[0].message, msg(1));
    inbox.handled(&again[0].id).await.expect("handled");
    assert_eq!(handle_all(&inbox).await, [(SHOP, 2), (SHOP, 3)]);
}

#[tokio::test]
async fn a_crash_inside_a_run_gives_back_the_running_message_and_those_after_it_only() {
    let dir = temp();
    let inbox = open(dir.path(), config()).await;
    record_all(&inbox, SHOP, 1..=5).await;
    record_all(&inbox, MAIL, 1..=2).await;
    let run = inbox.take_runs(10, 10).await.expect("take");
    let taken: Vec<(OutboxId, u64)> = run.iter().map(|d| (d.id.outbox(), d.id.sequence())).collect();
    assert_eq!(taken, [(SHOP, 1), (SHOP, 2), (SHOP, 3), (SHOP, 4), (SHOP, 5), (MAIL, 1), (MAIL, 2)]);
    assert!(inbox.take_runs(10, 10).await.expect("take").is_empty(), "both streams have a run going");
    // SHOP's handlers 1 to 3 returned and were marked in the sidecar only; 4 is running.
    // MAIL's run is done and written to the log.
    for n in 1..=3 {
        inbox.mark(&id(SHOP, n)).await.expect("marked");
    }
    inbox.mark(&id(MAIL, 2)).await.expect("marked");
    inbox.handled(&id(MAIL, 2)).await.expect("MAIL's run handled");
    crash(inbox).await;

    let inbox = open(dir.path(), config()).await;
    let streams = inbox.streams().await.expect("streams");
    let handled = |outbox| streams.iter().find(|s| s.outbox == outbox).map(|s| (s.handled, s.recorded));
    assert_eq!((handled(SHOP), handled(MAIL)), (Some((3, 5)), Some((2, 2))), "the sidecar's marks were applied");
    let again = inbox.take_runs(10, 10).await.expect("take");
    let again: Vec<(OutboxId, u64)> = again.iter().map(|d| (d.id.outbox(), d.id.sequence())).collect();
    assert_eq!(again, [(SHOP, 4), (SHOP, 5)], "only the running message and those after it");
    // The sidecar was emptied once its marks were in the log: a second crash and reopen
    // finds the same state from the log alone.
    crash(inbox).await;
    let inbox = open(dir.path(), config()).await;
    assert_eq!(handle_all(&inbox).await, [(SHOP, 4), (SHOP, 5)]);
}

#[tokio::test]
async fn records_of_many_streams_at_the_power_level_share_one_write_and_one_sync() {
    let dir = temp();
    let inbox = open(dir.path(), config().durability(Durability::Power).segment_bytes(1 << 20)).await;
    let (syncs, writes) = (counter(&inbox, |c| &c.syncs), counter(&inbox, |c| &c.writes));

    let release = hold(&inbox).await;
    let mut records = Vec::new();
    for stream in 0..8 {
        for n in 1..=8 {
            records.push(queued(&inbox, OutboxId::from_u64(stream), n).await);
        }
    }
    let _ = release.send(());
    for (i, outcome) in join_all(records).await.into_iter().enumerate() {
        assert_eq!(outcome.ok(), Some(Outcome::Recorded { recorded: i as u64 % 8 + 1 }));
    }
    assert_eq!(counter(&inbox, |c| &c.syncs) - syncs, 1, "64 records over 8 streams, one sync");
    assert_eq!(counter(&inbox, |c| &c.writes) - writes, 1, "and one write");
    assert_eq!(inbox.streams().await.expect("streams").len(), 8);
}

#[tokio::test]
async fn a_power_loss_keeps_every_acknowledged_record_and_mark_and_loses_only_the_unsynced() {
    let power = || config().durability(Durability::Power);
    let dir = temp();
    let inbox = open(dir.path(), power()).await;
    record_all(&inbox, SHOP, 1..=4).await;
    assert_eq!(take(&inbox, 1).await[0].1, 1);
    inbox.handled(&id(SHOP, 1)).await.expect("handled: synced");
    assert_eq!(take(&inbox, 1).await[0].1, 2, "its handler is running");

    // Two records and a mark in one batch; the mark inside a run reads the log, which writes
    // the batch so far without its sync: then the power goes.
    let release = hold(&inbox).await;
    let records = vec![queued(&inbox, SHOP, 5).await, queued(&inbox, SHOP, 6).await];
    let second = id(SHOP, 2);
    let mut mark = Box::pin(inbox.handled(&second));
    assert!(futures::poll!(mark.as_mut()).is_pending());
    let (closed, lost) = oneshot::channel();
    inbox.inner.writer.send(Command::Control(Control::LosePower(closed))).await;
    let _ = release.send(());
    for record in join_all(records).await {
        assert!(matches!(record, Err(DurableError::Io { .. })), "an unsynced record was acknowledged: {record:?}");
    }
    assert!(mark.await.is_err());
    lost.await.expect("the log closes");

    let inbox = open(dir.path(), power()).await;
    assert_eq!(watermarks(&inbox.streams().await.expect("streams")), [(SHOP, 4, 1)], "every synced record, no other");
    assert_eq!(record(&inbox, SHOP, 5).await, Outcome::Recorded { recorded: 5 }, "the sender sends 5 again");
    assert_eq!(handle_all(&inbox).await, [(SHOP, 2), (SHOP, 3), (SHOP, 4), (SHOP, 5)], "2 runs again");
}

#[tokio::test]
async fn a_full_inbox_refuses_new_messages_answers_old_ones_and_frees_room_as_they_are_handled() {
    let dir = temp();
    let size = State::record_size("shop-1", &msg(1));
    let inbox = open(dir.path(), config().max_bytes(3 * size)).await;
    record_all(&inbox, SHOP, 1..=3).await;
    match inbox.record("shop-1", SHOP, 4, 0, msg(4)).await {
        Err(DurableError::Full { used, limit, .. }) => assert_eq!((used, limit), (3 * size, 3 * size)),
        other => panic!("a record past the limit gave {other:?}"),
    }
    assert!(matches!(inbox.record("shop-1", MAIL, 1, 0, msg(1)).await, Err(DurableError::Full { .. })));
    assert_eq!(record(&inbox, SHOP, 3).await, Outcome::Duplicate { recorded: 3 }, "a full inbox still answers");
    assert_eq!(record(&inbox, SHOP, 9).await, Outcome::Gap { recorded: 3 });

    let taken = inbox.take(1).await.expect("take");
    inbox.handled(&taken[0].id).await.expect("handled");
    assert_eq!(record(&inbox, SHOP, 4).await, Outcome::Recorded { recorded: 4 });
    assert!(matches!(inbox.record("shop-1", SHOP, 5, 0, msg(5)).await, Err(DurableError::Full { .. })));
    inbox.close().await.expect("close");
    let inbox = open(dir.path(), config().max_bytes(3 * size)).await;
    assert!(
        matches!(inbox.record("shop-1", SHOP, 5, 0, msg(5)).await, Err(DurableError::Full { .. })),
        "the count survives"
    );
}

#[tokio::test]
async fn a_message_of_a_new_stream_past_max_streams_is_refused() {
    let dir = temp();
    let inbox = open(dir.path(), config().max_streams(2)).await;
    record_all(&inbox, SHOP, 1..=1).await;
    record_all(&inbox, MAIL, 1..=1).await;
    match inbox.record("shop-1", OutboxId::from_u64(3), 1, 0, msg(1)).await {
        Err(DurableError::TooManyStreams { limit, .. }) => assert_eq!(limit, 2),
        other => panic!("a third stream gave {other:?}"),
    }
    assert_eq!(record(&inbox, SHOP, 2).await, Outcome::Recorded { recorded: 2 }, "known streams go on");
}

#[tokio::test]
async fn a_stream_idle_past_its_retention_with_nothing_unhandled_is_forgotten() {
    let day = 24 * 3600;
    let now = std::sync::Arc::new(AtomicU64::new(1_000_000));
    let clock = now.clone();
    let config = move || {
        let clock = clock.clone();
        config()
            .max_streams(2)
            .stream_retention(Duration::from_secs(30 * day))
            .clock(move || clock.load(Ordering::Relaxed))
    };
    let dir = temp();
    let inbox = open(dir.path(), config()).await;
    record_all(&inbox, SHOP, 1..=2).await;
    record_all(&inbox, MAIL, 1..=1).await;
    let taken = inbox.take(10).await.expect("take");
    for delivery in taken.iter().filter(|d| d.id.outbox() == SHOP) {
        inbox.handled(&delivery.id).await.expect("handled");
    }
    assert_eq!(take(&inbox, 10).await, [(SHOP, 2, msg(2))]);
    inbox.handled(&id(SHOP, 2)).await.expect("handled");

    now.fetch_add(29 * day, Ordering::Relaxed);
    settle(&inbox).await;
    assert_eq!(inbox.streams().await.expect("streams").len(), 2, "not yet");
    now.fetch_add(2 * day, Ordering::Relaxed);
    settle(&inbox).await;
    assert_eq!(
        watermarks(&inbox.streams().await.expect("streams")),
        [(MAIL, 1, 0)],
        "SHOP is forgotten; MAIL's handler is running, so it is kept"
    );
    assert_eq!(record(&inbox, SHOP, 3).await, Outcome::Gap { recorded: 0 }, "a forgotten stream is unknown");
    inbox
        .record("shop-1", OutboxId::from_u64(3), 1, 0, msg(1))
        .await
        .expect("the forgotten stream's slot is free for another");
    inbox.close().await.expect("close");

    let inbox = open(dir.path(), config()).await;
    let mut streams = watermarks(&inbox.streams().await.expect("streams"));
    streams.sort();
    assert_eq!(streams, [(OutboxId::from_u64(3), 1, 0), (MAIL, 1, 0)], "and stays forgotten after a reopen");
}

#[tokio::test]
async fn compaction_deletes_handled_segments_and_rewrites_those_a_slow_stream_holds() {
    let dir = temp();
    let inbox = open(dir.path(), config()).await;
    let mut slow = 0;
    for n in 1..=1200 {
        record_all(&inbox, SHOP, n..=n).await;
        if n % 40 == 0 {
            slow += 1;
            record_all(&inbox, MAIL, slow..=slow).await;
        }
    }
    let before = segment_count(dir.path());
    assert!(before >= 10, "{before} segments");
    // Every SHOP message handled; MAIL's wait (its handler is slow).
    loop {
        let taken = inbox.take(10).await.expect("take");
        let shop: Vec<_> = taken.iter().filter(|d| d.id.outbox() == SHOP).collect();
        let Some(last) = shop.last() else { break };
        inbox.handled(&last.id).await.expect("handled");
    }
    settle(&inbox).await;
    let after = segment_count(dir.path());
    let bytes = segment_bytes(dir.path());
    assert!(counter(&inbox, |c| &c.deleted) >= (before - 3) as u64, "{before} segments, deleted too few");
    assert!(counter(&inbox, |c| &c.rewritten) >= 1, "the segments MAIL held were rewritten");
    assert!(bytes <= 3 * SEGMENT, "{after} segments, {bytes} bytes left for {slow} small unhandled messages");
    inbox.close().await.expect("close");

    let inbox = open(dir.path(), config()).await;
    let streams = watermarks(&inbox.streams().await.expect("streams"));
    assert_eq!(streams, [(MAIL, slow, 0), (SHOP, 1200, 1200)]);
    let handled = handle_all(&inbox).await;
    assert_eq!(handled, (1..=slow).map(|n| (MAIL, n)).collect::<Vec<_>>(), "the copies are what a reopen finds");
}

#[tokio::test]
async fn an_inbox_does_not_open_an_outbox_and_checks_names_and_sizes() {
    let dir = temp();
    let outbox =
        crate::durable::Outbox::open(dir.path(), crate::durable::OutboxConfig::new("shop-1")).await.expect("an outbox");
    outbox.close().await.expect("close");
    assert!(matches!(Inbox::open(dir.path(), config()).await, Err(DurableError::Corrupt { .. })));

    let dir = temp();
    let inbox = open(dir.path(), config()).await;
    assert!(matches!(inbox.record("", SHOP, 1, 0, msg(1)).await, Err(DurableError::InvalidName { len: 0, .. })));
    let huge = Bytes::from(vec![0; MAX_MESSAGE + 1]);
    assert!(matches!(inbox.record("shop-1", SHOP, 1, 0, huge).await, Err(DurableError::TooLarge { .. })));
    assert!(matches!(Inbox::open(dir.path(), config()).await, Err(DurableError::Locked { .. })));
    assert!(inbox.streams().await.expect("streams").is_empty());
}

#[tokio::test]
async fn a_forgotten_stream_resumes_after_what_its_sender_was_told_was_recorded() {
    let day = 24 * 3600;
    let now = std::sync::Arc::new(AtomicU64::new(1_000_000));
    let clock = now.clone();
    let config = move || {
        let clock = clock.clone();
        config().stream_retention(Duration::from_secs(day)).clock(move || clock.load(Ordering::Relaxed))
    };
    let dir = temp();
    let inbox = open(dir.path(), config()).await;
    record_all(&inbox, SHOP, 1..=3).await;
    assert_eq!(handle_all(&inbox).await, [(SHOP, 1), (SHOP, 2), (SHOP, 3)]);
    now.fetch_add(2 * day, Ordering::Relaxed);
    settle(&inbox).await;
    assert!(inbox.streams().await.expect("streams").is_empty(), "forgotten after its retention");

    // The sender deleted 1 to 3 when they were acknowledged; its next is 4.
    let next = |acknowledged| inbox.record("shop-1", SHOP, 4, acknowledged, msg(4));
    assert_eq!(next(0).await.expect("record"), Outcome::Gap { recorded: 0 }, "without the sender's word: a gap");
    assert_eq!(next(3).await.expect("record"), Outcome::Recorded { recorded: 4 }, "resumed after 3");
    assert_eq!(record(&inbox, SHOP, 4).await, Outcome::Duplicate { recorded: 4 });
    assert_eq!(take(&inbox, 10).await, [(SHOP, 4, msg(4))]);
    // A stream that knows less than the sender claims, but still has a message to handle,
    // cannot skip it: the gap stands.
    record_all(&inbox, MAIL, 1..=1).await;
    let skipping = inbox.record("shop-1", MAIL, 9, 8, msg(9)).await.expect("record");
    assert_eq!(skipping, Outcome::Gap { recorded: 1 });
    // Killed, not closed: the reopen replays the resumption's record, not a checkpoint after it.
    crash(inbox).await;

    // The resumption is on disk: a reopen gives back 4 (its handler never returned) and goes on.
    let inbox = open(dir.path(), config()).await;
    let mut streams = watermarks(&inbox.streams().await.expect("streams"));
    streams.sort();
    assert_eq!(streams, [(MAIL, 1, 0), (SHOP, 4, 3)]);
    assert_eq!(inbox.record("shop-1", SHOP, 5, 4, msg(5)).await.expect("record"), Outcome::Recorded { recorded: 5 });
    let mut taken = take(&inbox, 10).await;
    taken.sort();
    assert_eq!(taken, [(MAIL, 1, msg(1)), (SHOP, 4, msg(4))]);
}

#[tokio::test]
async fn a_stream_resumed_after_its_marks_in_the_same_segment_replays() {
    let dir = temp();
    let inbox = open(dir.path(), config()).await;
    record_all(&inbox, SHOP, 1..=3).await;
    assert_eq!(handle_all(&inbox).await, [(SHOP, 1), (SHOP, 2), (SHOP, 3)]);
    // The sender was told 5 (a state this inbox lost): with nothing left, it resumes after 5.
    assert_eq!(inbox.record("shop-1", SHOP, 6, 5, msg(6)).await.expect("record"), Outcome::Recorded { recorded: 6 });
    crash(inbox).await;

    // The replay meets 1..3, their marks (applied last), the resumption and 6, in one segment.
    let inbox = open(dir.path(), config()).await;
    assert_eq!(watermarks(&inbox.streams().await.expect("streams")), [(SHOP, 6, 5)]);
    assert_eq!(take(&inbox, 10).await, [(SHOP, 6, msg(6))]);
}

#[tokio::test]
async fn a_full_writer_queue_refuses_a_record_at_once_as_busy_and_loses_nothing() {
    use crate::durable::log::writer::QUEUE;
    let dir = temp();
    let inbox = open(dir.path(), config().segment_bytes(1 << 30)).await;
    let release = hold(&inbox).await;
    // The writer is held: records queue up to the queue's bound (less one if the writer has
    // not taken the hold from the queue yet), and none waits for room.
    let mut queued = Vec::new();
    let refused = loop {
        let n = queued.len() as u64 + 1;
        match inbox.submit_record("shop-1".into(), SHOP, n, 0, msg(n)) {
            Ok(answer) => queued.push(answer),
            Err(e) => break e,
        }
        assert!(queued.len() <= QUEUE, "more commands queued than the bound");
    };
    assert!(matches!(refused, DurableError::Busy { .. }), "{refused:?}");
    assert!(queued.len() >= QUEUE - 1, "refused with room left: {} queued", queued.len());
    let _ = release.send(());
    let outcomes = join_all(queued).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        assert!(matches!(outcome, Ok(Outcome::Recorded { recorded }) if *recorded == i as u64 + 1), "{i}: {outcome:?}");
    }
    let next = outcomes.len() as u64 + 1;
    assert_eq!(record(&inbox, SHOP, next).await, Outcome::Recorded { recorded: next }, "taken once there is room");
}

/// Records `messages` messages of one stream, runs the dispatcher until a handler that counts
/// has seen them all, stops it, and returns the sidecar's syncs and the stream's watermarks.
async fn dispatch(config: InboxConfig, messages: u64) -> (u64, Vec<(OutboxId, u64, u64)>) {
    let dir = temp();
    let inbox = open(dir.path(), config).await;
    let stored =
        crate::durable::stored_request(zrpc_core::Request::new("Ledger.record", Bytes::new())).expect("stored");
    let records = (1..=messages).map(|n| inbox.record("shop-1", SHOP, n, 0, stored.clone()));
    for outcome in join_all(records).await {
        assert!(matches!(outcome, Ok(Outcome::Recorded { .. })), "{outcome:?}");
    }
    let (handled, all_handled) = (Arc::new(AtomicU64::new(0)), Arc::new(tokio::sync::Notify::new()));
    let (count, notify) = (handled.clone(), all_handled.clone());
    let service = tower::service_fn(move |_request: zrpc_core::Request| {
        if count.fetch_add(1, Ordering::Relaxed) + 1 == messages {
            notify.notify_one();
        }
        std::future::ready(Ok::<_, zrpc_core::Status>(zrpc_core::Response::default()))
    });
    let dispatching = Dispatching::spawn_with(inbox.clone(), service, zrpc_core::Router::new(), "ledger");
    all_handled.notified().await;
    // Stopping waits for the run to end: its last mark synced and written to the log.
    dispatching.stop().await;
    assert_eq!(handled.load(Ordering::Relaxed), messages, "each handler ran once");
    (inbox.marks().syncs(), watermarks(&inbox.streams().await.expect("streams")))
}

#[tokio::test]
async fn at_the_power_level_each_handled_mark_is_synced_before_the_streams_next_handler_by_default() {
    let power = config().durability(Durability::Power).segment_bytes(1 << 20);
    assert_eq!(dispatch(power, 8).await, (8, vec![(SHOP, 8, 8)]), "one sync per handler");
}

#[tokio::test]
async fn unsynced_marks_let_a_streams_handled_marks_share_syncs() {
    let power = || config().durability(Durability::Power).segment_bytes(1 << 20);
    // Handlers 1 to 3 run with their marks unsynced; the 4th mark makes one too many, and its
    // sync covers marks 1 to 4; 5 to 7 wait on marks already synced; the run's last syncs the rest.
    assert_eq!(dispatch(power().unsynced_marks(3), 8).await, (2, vec![(SHOP, 8, 8)]));
    // A whole run, one sync at its end.
    assert_eq!(dispatch(power().unsynced_marks(usize::MAX), 256).await, (1, vec![(SHOP, 256, 256)]));
    // The process level writes marks and never syncs them.
    assert_eq!(dispatch(config().unsynced_marks(3), 8).await, (0, vec![(SHOP, 8, 8)]));
}

#[tokio::test]
async fn a_handler_past_the_timeout_is_dropped_its_message_counts_as_handled_and_the_stream_goes_on() {
    let dir = temp();
    let timeout = std::time::Duration::from_millis(50);
    let inbox = open(dir.path(), config().handler_timeout(Some(timeout))).await;
    for (n, method) in [(1, "Ledger.hang"), (2, "Ledger.record")] {
        let stored = crate::durable::stored_request(zrpc_core::Request::new(method, Bytes::new())).expect("stored");
        assert_eq!(inbox.record("shop-1", SHOP, n, 0, stored).await.ok(), Some(Outcome::Recorded { recorded: n }));
    }
    let (ran, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let service = tower::service_fn(move |request: zrpc_core::Request| {
        let _ = ran.send((request.method().as_str().to_owned(), request.ctx().deadline()));
        let hangs = request.method().as_str() == "Ledger.hang";
        async move {
            if hangs {
                std::future::pending::<()>().await;
            }
            Ok::<_, zrpc_core::Status>(zrpc_core::Response::default())
        }
    });
    let started = tokio::time::Instant::now();
    let dispatching = Dispatching::spawn_with(inbox.clone(), service, zrpc_core::Router::new(), "ledger");
    // Only the handler's timeout ends the first handler; the guard makes a regression fail
    // rather than hang.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let report = tokio::time::timeout(std::time::Duration::from_secs(60), reports.recv()).await;
        seen.push(report.expect("the stream went on past the hung handler").expect("the service is alive"));
    }
    let (methods, deadlines): (Vec<String>, Vec<_>) = seen.into_iter().unzip();
    assert_eq!(methods, ["Ledger.hang", "Ledger.record"]);
    assert!(deadlines.iter().all(|d| d.is_some_and(|d| d >= started + timeout)), "handlers see their deadline");
    dispatching.stop().await;
    assert_eq!(watermarks(&inbox.streams().await.expect("streams")), [(SHOP, 2, 2)], "both count as handled");
}

/// A service that counts its clones and whose `call` panics for `Ledger.panic`, leaving the
/// instance it panicked in broken: a later call on that instance fails.
#[derive(Debug)]
struct Counted {
    clones: Arc<AtomicU64>,
    handled: tokio::sync::mpsc::UnboundedSender<Result<String, String>>,
    broken: bool,
}

impl Clone for Counted {
    fn clone(&self) -> Counted {
        self.clones.fetch_add(1, Ordering::Relaxed);
        Counted { clones: self.clones.clone(), handled: self.handled.clone(), broken: self.broken }
    }
}

impl tower::Service<zrpc_core::Request> for Counted {
    type Response = zrpc_core::Response;
    type Error = zrpc_core::Status;
    type Future = std::future::Ready<Result<zrpc_core::Response, zrpc_core::Status>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), zrpc_core::Status>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: zrpc_core::Request) -> Self::Future {
        let method = request.method().as_str().to_owned();
        if self.broken {
            let _ = self.handled.send(Err(method));
            return std::future::ready(Err(zrpc_core::Status::internal("a broken instance")));
        }
        if method == "Ledger.panic" {
            self.broken = true;
            panic!("the handler of Ledger.panic panics");
        }
        let _ = self.handled.send(Ok(method));
        std::future::ready(Ok(zrpc_core::Response::default()))
    }
}

#[tokio::test]
async fn a_run_uses_one_clone_of_the_service_and_a_fresh_one_after_a_panic() {
    let dir = temp();
    let inbox = open(dir.path(), config()).await;
    let methods = ["Ledger.record", "Ledger.record", "Ledger.panic", "Ledger.record", "Ledger.record"];
    for (n, method) in (1..).zip(methods) {
        let stored = crate::durable::stored_request(zrpc_core::Request::new(method, Bytes::new())).expect("stored");
        assert_eq!(inbox.record("shop-1", SHOP, n, 0, stored).await.ok(), Some(Outcome::Recorded { recorded: n }));
    }
    let (handled, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let clones = Arc::new(AtomicU64::new(0));
    let service = Counted { clones: clones.clone(), handled, broken: false };
    let dispatching = Dispatching::spawn_with(inbox.clone(), service, zrpc_core::Router::new(), "ledger");
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(reports.recv().await.expect("a handler's report"));
    }
    dispatching.stop().await;
    let ok = |method: &str| Ok(method.to_owned());
    // The calls after the panic ran on a fresh instance, not on the broken one.
    assert_eq!(seen, [ok("Ledger.record"), ok("Ledger.record"), ok("Ledger.record"), ok("Ledger.record")]);
    assert_eq!(watermarks(&inbox.streams().await.expect("streams")), [(SHOP, 5, 5)], "all five handled");
    // The dispatcher's clone per run, the run's own, and one after the panic: not one a message.
    let clones = clones.load(Ordering::Relaxed);
    assert_eq!(clones, 3, "clones of the service for five messages in one run");
}

#[tokio::test]
async fn a_handler_holding_a_stream_extends_its_run_and_the_stream_stays_its_own() {
    let dir = temp();
    let inbox = open(dir.path(), config()).await;
    record_all(&inbox, SHOP, 1..=5).await;
    let sequences = |taken: &[Delivery]| taken.iter().map(|d| d.id.sequence()).collect::<Vec<_>>();
    let first = inbox.take_runs(10, 2).await.expect("take");
    assert_eq!(sequences(&first), [1, 2]);
    let id = |n: u64| MessageId::new("shop-1", SHOP, n);

    // The handler, holding 1..=2, asks for what follows: 3 and 4, which it then holds too.
    let more = inbox.extend(&id(2), 2).expect("queued").await.expect("extend");
    assert_eq!(sequences(&more), [3, 4]);
    assert!(inbox.take(10).await.expect("take").is_empty(), "the stream is still taken");
    // Only from where it holds the stream up to: anything else gets nothing.
    assert!(inbox.extend(&id(2), 2).expect("queued").await.expect("extend").is_empty());
    // The first run's mark releases its messages, not the stream.
    assert_eq!(inbox.handled(&id(2)).await.expect("handled"), 2);
    assert!(inbox.take(10).await.expect("take").is_empty(), "the stream is still taken");

    let last = inbox.extend(&id(4), 10).expect("queued").await.expect("extend");
    assert_eq!(sequences(&last), [5]);
    assert!(inbox.extend(&id(5), 10).expect("queued").await.expect("extend").is_empty(), "nothing after 5");
    assert_eq!(inbox.handled(&id(5)).await.expect("handled"), 3);
    record_all(&inbox, SHOP, 6..=6).await;
    assert_eq!(take(&inbox, 10).await, [(SHOP, 6, msg(6))], "released, the stream is taken again");
}

#[tokio::test]
async fn a_backlogged_stream_goes_from_run_to_run_without_being_taken_again() {
    // Three full runs and a short one, at the process level: the handler asks for the next run
    // as each full one starts, so the stream is taken once and extended three times; the short
    // run is all there is, and its mark releases the stream. Each handler once, in order.
    let messages = 3 * dispatcher::RUN as u64 + 7;
    let dir = temp();
    let inbox = open(dir.path(), config()).await;
    let stored =
        crate::durable::stored_request(zrpc_core::Request::new("Ledger.record", Bytes::new())).expect("stored");
    for n in 1..=messages {
        let recorded = inbox.record("shop-1", SHOP, n, 0, stored.clone()).await.expect("record");
        assert_eq!(recorded, Outcome::Recorded { recorded: n });
    }
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let all_handled = Arc::new(tokio::sync::Notify::new());
    let (log, notify) = (seen.clone(), all_handled.clone());
    let service = tower::service_fn(move |request: zrpc_core::Request| {
        let sequence = request.ctx().durable_id().map_or(0, |id| id.sequence());
        let mut seen = log.lock().expect("not poisoned");
        seen.push(sequence);
        if seen.len() as u64 == messages {
            notify.notify_one();
        }
        std::future::ready(Ok::<_, zrpc_core::Status>(zrpc_core::Response::default()))
    });
    let extended = Counters::get(&inbox.counters().extended);
    let dispatching = Dispatching::spawn_with(inbox.clone(), service, zrpc_core::Router::new(), "ledger");
    all_handled.notified().await;
    dispatching.stop().await;
    assert_eq!(*seen.lock().expect("not poisoned"), (1..=messages).collect::<Vec<_>>(), "each once, in order");
    assert_eq!(Counters::get(&inbox.counters().extended) - extended, 3, "three runs followed without a take");
    assert_eq!(watermarks(&inbox.streams().await.expect("streams")), [(SHOP, messages, messages)]);
}

#[tokio::test]
async fn the_dispatcher_holds_at_most_two_runs_per_stream() {
    // Three streams of 40 messages of 100 KiB: a run is about 1 MiB (`TAKE_BYTES`, ending with
    // the message that passes it), and each stream's task asks for its next run as a full one
    // starts. Counted as the writer hands them out, what the dispatcher holds stays within two
    // runs per stream (the bound in `dispatcher.rs`'s docs), and is all released at the end.
    const STREAMS: u64 = 3;
    const PER_STREAM: u64 = 40;
    let dir = temp();
    let inbox = open(dir.path(), InboxConfig::default()).await;
    let payload = Bytes::from(vec![7; 100 << 10]);
    let stored = crate::durable::stored_request(zrpc_core::Request::new("Ledger.record", payload)).expect("stored");
    let message = stored.len() as u64;
    for outbox in 1..=STREAMS {
        for n in 1..=PER_STREAM {
            let recorded =
                inbox.record("shop-1", OutboxId::from_u64(outbox), n, 0, stored.clone()).await.expect("record");
            assert_eq!(recorded, Outcome::Recorded { recorded: n });
        }
    }
    let handled = Arc::new(AtomicU64::new(0));
    let all_handled = Arc::new(tokio::sync::Notify::new());
    let (count, notify) = (handled.clone(), all_handled.clone());
    // Each handler yields once, so that the writer answers a stream's request for its next run
    // while the stream's current run is still being handled: both are then held.
    let service = tower::service_fn(move |_: zrpc_core::Request| {
        let (count, notify) = (count.clone(), notify.clone());
        async move {
            tokio::task::yield_now().await;
            if count.fetch_add(1, Ordering::Relaxed) + 1 == STREAMS * PER_STREAM {
                notify.notify_one();
            }
            Ok::<_, zrpc_core::Status>(zrpc_core::Response::default())
        }
    });
    let extended = Counters::get(&inbox.counters().extended);
    let dispatching = Dispatching::spawn_with(inbox.clone(), service, zrpc_core::Router::new(), "ledger");
    all_handled.notified().await;
    dispatching.stop().await;

    let run = state::TAKE_BYTES as u64 + message;
    let peak = inbox.held().peak();
    assert!(peak > STREAMS * run, "runs and the next ones asked for were held at once: {peak}");
    assert!(peak <= STREAMS * 2 * run, "{peak} bytes held, over two runs of {run} for each of {STREAMS} streams");
    assert!(Counters::get(&inbox.counters().extended) > extended, "streams went on to runs they had asked for");
    assert_eq!(inbox.held().now(), 0, "every run released");
}

mod over_a_connection {
    //! A server with this inbox, and a raw sender on a real TCP connection.

    use bytes::BytesMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::frame::{self, DurableFields, Frame, RequestFrame, flags};

    #[zrpc_macros::service(crate = "zrpc_core")]
    trait Ledger {
        #[zrpc(oneway)]
        async fn record(&self, n: u64);
    }

    #[derive(Clone)]
    struct Books;

    impl Ledger for Books {
        async fn record(&self, _n: u64) {}
    }

    /// Message `n` of the raw sender's stream, as a durable request with id `2n - 1`.
    fn durable_request(out: &mut BytesMut, n: u64) {
        let request = RequestFrame {
            id: 2 * n - 1,
            flags: flags::DURABLE,
            codec: zrpc_core::CodecId::Postcard.as_u8(),
            timeout: None,
            method: Bytes::from_static(b"Ledger.record"),
            trace: None,
            durable: Some(Box::new(DurableFields {
                outbox: 7,
                sequence: n,
                acknowledged: 0,
                sender: Bytes::from_static(b"raw-sender"),
                count: 1,
            })),
            metadata: Default::default(),
            payload: {
                let mut payload = BytesMut::new();
                zrpc_core::CodecId::Postcard.encode(&n, &mut payload).expect("encodes");
                payload.freeze()
            },
        };
        frame::encode_request_frame(out, &request, frame::DEFAULT_MAX_FRAME).expect("encodes");
    }

    #[tokio::test]
    async fn the_durable_messages_a_connection_reads_at_once_reach_the_writer_as_one_command() {
        // 500 messages in one write: a connection records what one read brought with one
        // command to the inbox's writer (one answer, one wake-up), not one per message. It
        // took 500 record commands before; now about one per read of the socket.
        const MESSAGES: u64 = 500;
        let dir = temp();
        let inbox = open(dir.path(), config()).await;
        let server = crate::Server::builder()
            .name("ledger")
            .inbox(inbox.clone())
            .add_service(LedgerServer::new(Books))
            .bind("tcp://127.0.0.1:0")
            .await
            .expect("binds");
        let address = server.local_addr().to_string();
        let serving = tokio::spawn(server.serve());
        let mut socket = tokio::net::TcpStream::connect(address.trim_start_matches("tcp://")).await.expect("connects");

        let mut out = BytesMut::new();
        frame::encode_preface(&mut out);
        let hello = frame::Hello {
            name: "raw-sender".into(),
            max_frame: frame::DEFAULT_MAX_FRAME,
            codecs: vec![zrpc_core::CodecId::Postcard.as_u8()],
            compressions: Vec::new(),
            token: Bytes::new(),
            flow: None,
            inbox: false,
            inbox_batches: false,
        };
        frame::encode_hello(&mut out, &hello).expect("encodes");
        for n in 1..=MESSAGES {
            durable_request(&mut out, n);
        }
        let before = Counters::get(&inbox.counters().commands);
        socket.write_all(&out).await.expect("writes");

        let (mut input, mut decoder, mut acknowledged) = (BytesMut::new(), frame::Decoder::default(), Vec::new());
        while !frame::decode_preface(&mut input).expect("a preface") {
            assert_ne!(socket.read_buf(&mut input).await.expect("reads"), 0, "closed before its preface");
        }
        while (acknowledged.len() as u64) < MESSAGES {
            match decoder.decode(&mut input).expect("valid frames") {
                Some(Frame::Response(response)) => {
                    assert_eq!(response.code, 0, "{response:?}");
                    let recorded = u64::from_be_bytes(response.payload[..].try_into().expect("8 bytes"));
                    acknowledged.push((response.id.div_ceil(2), recorded));
                }
                Some(_) => {}
                None => assert_ne!(socket.read_buf(&mut input).await.expect("reads"), 0, "closed"),
            }
        }
        acknowledged.sort_unstable();
        assert_eq!(acknowledged, (1..=MESSAGES).map(|n| (n, n)).collect::<Vec<_>>(), "each recorded, in order");
        let commands = Counters::get(&inbox.counters().commands) - before;
        // The dispatcher's takes and marks are commands too: a handful for 500 messages.
        assert!(commands < MESSAGES / 10, "{commands} commands for {MESSAGES} messages");
        drop(socket);
        serving.abort();
    }
}

#[tokio::test]
async fn a_message_past_the_last_sequence_is_refused_and_its_stream_goes_on() {
    // A peer's message at u64::MAX, resuming after u64::MAX - 1 (a stream this inbox does not
    // know): recorded, its stream's next overflowed, and the writer panicked.
    let dir = temp();
    let inbox = open(dir.path(), config()).await;
    for sequence in [u64::MAX, LAST_SEQUENCE + 1] {
        match inbox.record("shop-1", SHOP, sequence, sequence - 1, msg(1)).await {
            Err(DurableError::InvalidSequence { sequence: said }) => assert_eq!(said, sequence),
            other => panic!("{sequence}: {other:?}"),
        }
    }
    let last = inbox.record("shop-1", SHOP, LAST_SEQUENCE, LAST_SEQUENCE - 1, msg(1)).await;
    assert_eq!(last.ok(), Some(Outcome::Recorded { recorded: LAST_SEQUENCE }));
    inbox.close().await.expect("close");
    let inbox = open(dir.path(), config()).await;
    let streams = inbox.streams().await.expect("streams");
    assert_eq!(
        streams.iter().map(|s| (s.recorded, s.handled)).collect::<Vec<_>>(),
        [(LAST_SEQUENCE, LAST_SEQUENCE - 1)]
    );
}
