//! Durable calls end to end over real sockets: an outbox's destination under a generated
//! client, a server with an inbox, its handlers with their message ids; a receiver that is
//! down, restarted or replaced, a sender restarted; redeliveries and gaps on the wire.
//!
//! Nothing sleeps: tests wait for handler reports and for [`Destination::delivered`].

mod support;

use bytes::Bytes;
use support::raw::{RawPeer, postcard, request, request_bytes};
use support::{Serving, within};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::ServiceExt;
use zrpc_core::durable::{Durable, MessageId, OutboxId};
use zrpc_core::{Code, Context, Request};
use zrpc_transport::durable::{Destination, Inbox, InboxConfig, Outbox, OutboxConfig};
use zrpc_transport::frame::{self, DurableFields, ResponseFrame, flags};
use zrpc_transport::{Address, Channel, Server};

/// A receiver's service: each handled message is reported with its id.
#[zrpc_macros::service(crate = "zrpc_core")]
pub trait Ledger {
    /// Records entry `n`.
    #[zrpc(oneway)]
    async fn record(&self, ctx: &Context, n: u64);
    /// A two-way method, which no outbox takes.
    async fn total(&self) -> u64;
}

#[derive(Clone)]
struct Books {
    handled: mpsc::UnboundedSender<(Option<MessageId>, u64, String)>,
}

impl Ledger for Books {
    async fn record(&self, ctx: &Context, n: u64) {
        let _ = self.handled.send((ctx.durable_id().cloned(), n, ctx.caller().to_owned()));
    }

    async fn total(&self) -> u64 {
        0
    }
}

type Handled = mpsc::UnboundedReceiver<(Option<MessageId>, u64, String)>;

/// A server named `name` at `address`, with an inbox in `dir` when given.
async fn receiver(name: &str, address: &Address, inbox: Option<Inbox>) -> (Serving, Handled, Address) {
    let (handled, reports) = mpsc::unbounded_channel();
    let mut builder = Server::builder().name(name);
    if let Some(inbox) = inbox {
        builder = builder.inbox(inbox);
    }
    let server = builder.add_service(LedgerServer::new(Books { handled })).bind(address).await.expect("bind");
    let bound = server.local_addr().clone();
    (Serving::spawn(server), reports, bound)
}

fn unix_address(dir: &tempfile::TempDir) -> Address {
    format!("unix://{}", dir.path().join("ledger.sock").display()).parse().expect("address")
}

async fn outbox_in(dir: &std::path::Path) -> Outbox {
    Outbox::open(dir.join("outbox"), OutboxConfig::new("shop-1")).await.expect("outbox opens")
}

async fn inbox_in(dir: &std::path::Path) -> Inbox {
    Inbox::open(dir.join("inbox"), InboxConfig::default()).await.expect("inbox opens")
}

fn ledger_through(outbox: &Outbox, address: &Address) -> (LedgerClient<Destination>, Destination) {
    let channel = Channel::builder(address.clone()).name("shop-1").connect_lazy();
    let destination = outbox.destination("ledger", channel);
    (LedgerClient::new(destination.clone()), destination)
}

/// The next `count` reports, as (sequence, n), checking each id's sender and outbox.
async fn next_handled(reports: &mut Handled, count: usize, outbox: OutboxId) -> Vec<(u64, u64)> {
    let mut seen = Vec::with_capacity(count);
    for _ in 0..count {
        let (id, n, caller) = within("a message handled", reports.recv()).await.expect("receiver running");
        let id = id.expect("a durable handler has its message id");
        assert_eq!((id.sender(), id.outbox(), caller.as_str()), ("shop-1", outbox, "shop-1"));
        seen.push((id.sequence(), n));
    }
    seen
}

/// Waits for messages `range`, each handled at its own sequence with its own number (as
/// `record(n)` logged in order from a new outbox sends them).
async fn handled_in_order(reports: &mut Handled, outbox: OutboxId, range: std::ops::RangeInclusive<u64>) {
    let count = usize::try_from(range.end() - range.start() + 1).expect("a count");
    let seen = next_handled(reports, count, outbox).await;
    assert_eq!(seen, range.map(|n| (n, n)).collect::<Vec<_>>());
}

/// A channel named `shop-1` to `address` that compresses everything it sends with zstd.
#[cfg(feature = "zstd")]
fn zstd_channel(address: Address) -> Channel {
    Channel::builder(address)
        .name("shop-1")
        .compression(zrpc_core::Compression::Zstd)
        .compression_threshold(0)
        .connect_lazy()
}

#[tokio::test]
async fn messages_are_handled_once_in_order_with_their_ids_and_then_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (serving, mut reports, address) =
        receiver("ledger", &"tcp://127.0.0.1:0".parse().expect("address"), Some(inbox_in(dir.path()).await)).await;
    let outbox = outbox_in(dir.path()).await;
    let (ledger, destination) = ledger_through(&outbox, &address);

    for n in 1..=500 {
        ledger.record(n * 10).await.expect("logged");
    }
    let seen = next_handled(&mut reports, 500, outbox.id()).await;
    let expected: Vec<(u64, u64)> = (1..=500).map(|n| (n, n * 10)).collect();
    assert_eq!(seen, expected);

    within("every message acknowledged", destination.delivered()).await.expect("delivered");
    assert_eq!(outbox.pending().await.expect("pending"), vec![]);
    // With nothing pending, the outbox still says where a restarted program resumes.
    assert_eq!(outbox.next_sequence("ledger").await.expect("next"), 501);
    assert_eq!(outbox.next_sequence("never-used").await.expect("next"), 1);
    serving.shutdown().await.expect("served");
    assert!(reports.recv().await.is_none(), "no message was handled twice");
}

#[tokio::test]
async fn messages_wait_for_a_receiver_that_is_down_and_survive_restarts_of_both_ends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let address = unix_address(&dir);

    // Nobody listens yet: the calls are logged and wait.
    let outbox = outbox_in(dir.path()).await;
    let (ledger, _) = ledger_through(&outbox, &address);
    for n in 1..=100 {
        ledger.record(n).await.expect("logged while the receiver is down");
    }
    // The sender stops before anything was delivered, and starts again.
    outbox.close().await.expect("closed");
    let outbox = outbox_in(dir.path()).await;
    let pending = outbox.pending().await.expect("pending");
    assert_eq!((pending.len(), pending[0].first_unacknowledged, pending[0].next_sequence), (1, 1, 101));
    let (ledger, destination) = ledger_through(&outbox, &address);

    // The receiver comes up: the 100 messages arrive, in order.
    let inbox = inbox_in(dir.path()).await;
    let (serving, mut reports, _) = receiver("ledger", &address, Some(inbox.clone())).await;
    handled_in_order(&mut reports, outbox.id(), 1..=100).await;
    within("the first hundred acknowledged", destination.delivered()).await.expect("delivered");

    // The receiver goes away and comes back with its inbox reopened: the next messages
    // continue the stream, and none of the first hundred runs again.
    serving.shutdown().await.expect("served");
    inbox.close().await.expect("inbox closed");
    for n in 101..=200 {
        ledger.record(n).await.expect("logged while the receiver is down");
    }
    let (serving, mut reports, _) = receiver("ledger", &address, Some(inbox_in(dir.path()).await)).await;
    handled_in_order(&mut reports, outbox.id(), 101..=200).await;
    within("all acknowledged", destination.delivered()).await.expect("delivered");
    serving.shutdown().await.expect("served");
    assert!(reports.recv().await.is_none(), "no message was handled twice");
}

#[tokio::test]
async fn a_server_of_another_name_or_without_an_inbox_is_never_given_the_messages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let address = unix_address(&dir);
    let outbox = outbox_in(dir.path()).await;
    let (ledger, destination) = ledger_through(&outbox, &address);
    ledger.record(1).await.expect("logged");

    // A durable request, as the delivery task sends it, to each wrong receiver: refused by
    // the sending side itself, unprocessed, so the message stays for its receiver.
    let durable_call = || {
        let mut request = Request::new("Ledger.record", postcard(&1u64));
        let id = MessageId::new("shop-1", outbox.id(), 1);
        request.ctx_mut().set_durable(Some(Durable::new(id, 0, "ledger")));
        request
    };
    let other_dir = tempfile::tempdir().expect("temp dir");
    let (impostor, mut impostor_reports, _) =
        receiver("ledger-2", &address, Some(inbox_in(other_dir.path()).await)).await;
    let channel = Channel::builder(address.clone()).connect().await.expect("connects");
    let refused = channel.clone().oneshot(durable_call()).await.expect_err("another name");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    assert!(refused.is_unprocessed() && refused.message().contains("it is for ledger"), "{refused}");
    impostor.shutdown().await.expect("served");

    let (plain, mut plain_reports, _) = receiver("ledger", &address, None).await;
    let channel = Channel::builder(address.clone()).connect().await.expect("connects");
    let refused = channel.clone().oneshot(durable_call()).await.expect_err("no inbox");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    assert!(refused.is_unprocessed() && refused.message().contains("announced no INBOX"), "{refused}");
    plain.shutdown().await.expect("served");
    assert!(impostor_reports.recv().await.is_none() && plain_reports.recv().await.is_none());
    let pending = outbox.pending().await.expect("pending");
    assert_eq!((pending[0].first_unacknowledged, pending[0].next_sequence), (1, 2), "still waiting");

    // The right receiver gets it.
    let (serving, mut reports, _) = receiver("ledger", &address, Some(inbox_in(dir.path()).await)).await;
    assert_eq!(next_handled(&mut reports, 1, outbox.id()).await, vec![(1, 1)]);
    within("acknowledged", destination.delivered()).await.expect("delivered");
    serving.shutdown().await.expect("served");
}

#[tokio::test]
async fn a_two_way_call_through_an_outbox_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outbox = outbox_in(dir.path()).await;
    let (ledger, _) = ledger_through(&outbox, &unix_address(&dir));
    let refused = ledger.total().await.expect_err("not oneway");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    assert!(refused.is_unprocessed() && refused.message().contains("not oneway"), "{refused}");
    assert_eq!(outbox.pending().await.expect("pending"), vec![]);
}

/// A durable request frame for message `sequence` of the raw sender's stream.
fn durable_frame(id: u64, sequence: u64, acknowledged: u64, n: u64) -> zrpc_transport::frame::RequestFrame {
    let mut frame = request(id, "Ledger.record", postcard(&n));
    frame.flags |= flags::DURABLE;
    frame.durable = Some(Box::new(DurableFields {
        outbox: 7,
        sequence,
        acknowledged,
        sender: Bytes::from_static(b"raw-sender"),
        count: 1,
    }));
    frame
}

/// A receiver named `ledger` with an inbox in `dir`, and a raw peer named `raw-sender`
/// connected to it; with the receiver's HELLO.
async fn raw_sender_to_a_receiver(dir: &std::path::Path) -> (Serving, Handled, RawPeer, zrpc_transport::frame::Hello) {
    let (serving, reports, address) =
        receiver("ledger", &"tcp://127.0.0.1:0".parse().expect("address"), Some(inbox_in(dir).await)).await;
    let mut peer = RawPeer::connect(address.to_string().trim_start_matches("tcp://")).await;
    let hello = peer.handshake("raw-sender").await;
    (serving, reports, peer, hello)
}

/// The raw sender's connection stats at the receiver, once it has no request in progress.
async fn raw_senders_stats_once_idle(serving: &Serving) -> zrpc_transport::ConnectionStats {
    let idle = |c: &[zrpc_transport::ConnectionInfo]| {
        c.iter().any(|c| c.name.as_deref() == Some("raw-sender") && c.stats.requests_in_progress == 0)
    };
    within("the connection's stats", serving.handle().wait_for_connections(idle)).await;
    let connections = serving.handle().connections();
    connections.iter().find(|c| c.name.as_deref() == Some("raw-sender")).expect("connected").stats
}

/// The `recorded` an acknowledgement (or a gap's details) carries.
fn recorded_of(payload: &Bytes) -> u64 {
    u64::from_be_bytes(payload[..].try_into().expect("8 bytes"))
}

#[tokio::test]
async fn a_redelivery_is_acknowledged_without_running_again_and_a_gap_is_refused_with_recorded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (serving, mut reports, mut peer, hello) = raw_sender_to_a_receiver(dir.path()).await;
    assert!(hello.inbox, "a server with an inbox announces INBOX");

    peer.send_request(&durable_frame(1, 1, 0, 100)).await;
    let first = peer.next_response().await;
    assert_eq!((first.id, first.code, recorded_of(&first.payload)), (1, 0, 1));
    // The acknowledgement was lost: the sender sends message 1 again.
    peer.send_request(&durable_frame(3, 1, 0, 100)).await;
    let again = peer.next_response().await;
    assert_eq!((again.id, again.code, recorded_of(&again.payload)), (3, 0, 1));
    // Message 3 before message 2: a gap, refused unprocessed with what is recorded.
    peer.send_request(&durable_frame(5, 3, 1, 300)).await;
    let gap = peer.next_response().await;
    assert_eq!((gap.id, gap.code, recorded_of(&gap.payload)), (5, Code::Unavailable.as_u8(), 1));
    assert_ne!(gap.flags & flags::UNPROCESSED, 0);
    // An unknown method is refused before it is recorded.
    let mut unknown = durable_frame(7, 2, 1, 200);
    unknown.method = Bytes::from_static(b"Ledger.nope");
    peer.send_request(&unknown).await;
    let refused = peer.next_response().await;
    assert_eq!((refused.id, refused.code), (7, Code::NotFound.as_u8()));
    peer.send_request(&durable_frame(9, 2, 1, 200)).await;
    assert_eq!(recorded_of(&peer.next_response().await.payload), 2);

    let (first, second) = (within("handled", reports.recv()).await, within("handled", reports.recv()).await);
    let ids = [first, second].map(|report| {
        let (id, n, _) = report.expect("running");
        (id.expect("durable").sequence(), n)
    });
    assert_eq!(ids, [(1, 100), (2, 200)]);
    drop(peer);
    serving.shutdown().await.expect("served");
    assert!(reports.recv().await.is_none(), "the redelivered message did not run again");
}

/// A batch of the raw sender's messages `first..first + ns.len()` (PROTOCOL.md §19): their
/// stored frames, back to back, under one durable request.
fn batch_frame(id: u64, first: u64, acknowledged: u64, ns: &[u64]) -> zrpc_transport::frame::RequestFrame {
    let payload: Vec<u8> = ns.iter().flat_map(|n| request_bytes(&request(1, "Ledger.record", postcard(n)))).collect();
    let mut frame = durable_frame(id, first, acknowledged, 0);
    frame.payload = Bytes::from(payload);
    frame.flags |= flags::BATCH;
    frame.durable.as_mut().expect("durable").count = ns.len() as u32;
    frame
}

#[tokio::test]
async fn a_batch_is_recorded_whole_acknowledged_once_and_refused_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (serving, mut reports, mut peer, hello) = raw_sender_to_a_receiver(dir.path()).await;
    assert!(hello.inbox && hello.inbox_batches, "a server with an inbox takes batches: {hello:?}");

    let mut ask = async |frame: zrpc_transport::frame::RequestFrame| {
        peer.send_request(&frame).await;
        let answer = peer.next_response().await;
        assert_eq!(answer.id, frame.id);
        answer
    };
    let first = ask(batch_frame(1, 1, 0, &[100, 200, 300])).await;
    assert_eq!((first.code, recorded_of(&first.payload)), (0, 3), "one acknowledgement for the three");
    // Sent again (its acknowledgement lost), and overlapping what is recorded: nothing runs twice.
    let again = ask(batch_frame(3, 1, 0, &[100, 200, 300])).await;
    assert_eq!((again.code, recorded_of(&again.payload)), (0, 3));
    let overlapping = ask(batch_frame(5, 3, 2, &[300, 400])).await;
    assert_eq!((overlapping.code, recorded_of(&overlapping.payload)), (0, 4));
    // A gap before the batch: refused with what is recorded.
    let gap = ask(batch_frame(7, 6, 4, &[600, 700])).await;
    assert_eq!((gap.code, recorded_of(&gap.payload)), (Code::Unavailable.as_u8(), 4));
    assert_ne!(gap.flags & flags::UNPROCESSED, 0);
    // One unknown method, or a payload that is not the batch's stored requests, refuses the
    // whole batch before any of it is recorded.
    let mut unknown = batch_frame(9, 5, 4, &[500, 600, 700]);
    let mut stored: Vec<u8> = request_bytes(&request(1, "Ledger.record", postcard(&500u64))).to_vec();
    stored.extend_from_slice(&request_bytes(&request(1, "Ledger.nope", postcard(&600u64))));
    stored.extend_from_slice(&request_bytes(&request(1, "Ledger.record", postcard(&700u64))));
    unknown.payload = Bytes::from(stored);
    let refused = ask(unknown).await;
    assert_eq!((refused.code, refused.flags & flags::UNPROCESSED), (Code::NotFound.as_u8(), flags::UNPROCESSED));
    let mut trailing = batch_frame(11, 5, 4, &[500, 600]);
    trailing.payload = Bytes::from([&trailing.payload[..], &[0]].concat());
    let invalid = ask(trailing).await;
    assert_eq!((invalid.code, invalid.flags & flags::UNPROCESSED), (Code::InvalidArgument.as_u8(), flags::UNPROCESSED));
    let mut fewer = batch_frame(13, 5, 4, &[500, 600]);
    fewer.durable.as_mut().expect("durable").count = 3;
    assert_eq!(ask(fewer).await.code, Code::InvalidArgument.as_u8());
    let last = ask(batch_frame(15, 5, 4, &[500, 600])).await;
    assert_eq!((last.code, recorded_of(&last.payload)), (0, 6));

    let mut handled = Vec::new();
    for _ in 0..6 {
        let (id, n, _) = within("handled", reports.recv()).await.expect("running");
        handled.push((id.expect("durable").sequence(), n));
    }
    assert_eq!(handled, [(1, 100), (2, 200), (3, 300), (4, 400), (5, 500), (6, 600)]);
    drop(peer);
    serving.shutdown().await.expect("served");
    assert!(reports.recv().await.is_none(), "no message ran twice");
}

#[cfg(feature = "zstd")]
#[tokio::test]
async fn batches_compressed_on_the_wire_are_recorded_and_handled_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let address = unix_address(&dir);
    let outbox = outbox_in(dir.path()).await;
    let channel = zstd_channel(address.clone());
    let destination = outbox.destination("ledger", channel.clone());
    let ledger = LedgerClient::new(destination.clone());
    // Logged while nobody listens, so that delivery finds them all at once.
    for n in 1..=300 {
        ledger.record(n).await.expect("logged");
    }
    let (serving, mut reports, _) = receiver("ledger", &address, Some(inbox_in(dir.path()).await)).await;
    handled_in_order(&mut reports, outbox.id(), 1..=300).await;
    within("every message acknowledged", destination.delivered()).await.expect("delivered");
    // The first message alone, then 299 in batches of 64: 6 requests, compressed but perhaps
    // the first (5 seen). A receiver that refused compressed batches would have had hundreds
    // (one message per request after each refusal: 850 seen when tried).
    let stats = channel.stats().expect("connected");
    assert!((2..=10).contains(&stats.compressed_frames_sent), "{stats:?}");
    serving.shutdown().await.expect("served");
}

/// A listener for a raw receiver, and an outbox in `dir` whose destination `ledger` dials it,
/// with messages 1 to `messages` logged.
async fn logged_for_a_raw_receiver(dir: &std::path::Path, messages: u64) -> (TcpListener, Outbox, Destination) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address: Address = format!("tcp://{}", listener.local_addr().expect("an address")).parse().expect("valid");
    let outbox = outbox_in(dir).await;
    let (ledger, destination) = ledger_through(&outbox, &address);
    for n in 1..=messages {
        ledger.record(n).await.expect("logged");
    }
    (listener, outbox, destination)
}

/// What a raw receiver named `ledger` at `listener`, announcing INBOX with or without batches,
/// `max_frame` and `compressions`, was sent until it acknowledged `messages`: each request's
/// (first sequence, count).
async fn requests_to_a_raw_receiver(
    listener: TcpListener,
    (batches, max_frame, compressions): (bool, u32, &[u8]),
    messages: u64,
) -> Vec<(u64, u32)> {
    let (stream, _) = within("the outbox connects", listener.accept()).await.expect("accept");
    let mut receiver = RawPeer::new(stream);
    let ours = frame::Hello {
        inbox: true,
        inbox_batches: batches,
        max_frame,
        compressions: compressions.to_vec(),
        ..support::raw::hello("ledger")
    };
    receiver.handshake_with(&ours).await;
    let mut requests = Vec::new();
    let mut recorded = 0;
    while recorded < messages {
        let request = receiver.next_request().await;
        let durable = request.durable.as_deref().expect("a durable request");
        assert_eq!(durable.sequence, recorded + 1, "in order, none lost: {requests:?}");
        if durable.count > 1 && request.flags & flags::COMPRESSED == 0 {
            let stored = support::raw::decode_all(&mut bytes::BytesMut::from(&request.payload[..]));
            assert_eq!(stored.len(), durable.count as usize, "its stored requests");
        }
        requests.push((durable.sequence, durable.count));
        recorded += u64::from(durable.count);
        let ack = ResponseFrame {
            id: request.id,
            flags: 0,
            code: 0,
            message: Bytes::new(),
            metadata: Default::default(),
            payload: Bytes::copy_from_slice(&recorded.to_be_bytes()),
        };
        receiver.send_response(&ack).await;
    }
    requests
}

#[tokio::test]
async fn an_outbox_sends_batches_to_a_receiver_that_takes_them_and_one_at_a_time_to_one_that_does_not() {
    // Taking batches; taking none; taking them but not in frames a batch fits (1 KiB).
    let cases = [(true, frame::DEFAULT_MAX_FRAME), (false, frame::DEFAULT_MAX_FRAME), (true, frame::MIN_MAX_FRAME)];
    for (batches, max_frame) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let (listener, _outbox, destination) = logged_for_a_raw_receiver(dir.path(), 300).await;
        let requests = requests_to_a_raw_receiver(listener, (batches, max_frame, &[]), 300).await;
        within("every message acknowledged", destination.delivered()).await.expect("delivered");
        let largest = requests.iter().map(|(_, count)| *count).max();
        if max_frame == frame::DEFAULT_MAX_FRAME && batches {
            // The first alone (the window opens after an answer), then batches.
            assert!(requests.len() < 20 && largest > Some(1), "{requests:?}");
        } else {
            assert_eq!((requests.len(), largest), (300, Some(1)), "one message per request");
        }
    }
}

/// A raw receiver named `ledger` at `listener` that records like an inbox (in order, gaps
/// refused with `recorded`) and refuses every request holding message `poisoned` `NotFound`;
/// the requests it was sent until it had recorded every message before that one.
async fn requests_until_a_poisoned_message(listener: TcpListener, poisoned: u64) -> Vec<(u64, u32)> {
    let (stream, _) = within("the outbox connects", listener.accept()).await.expect("accept");
    let mut receiver = RawPeer::new(stream);
    let ours = frame::Hello { inbox: true, inbox_batches: true, ..support::raw::hello("ledger") };
    receiver.handshake_with(&ours).await;
    let (mut requests, mut recorded) = (Vec::new(), 0);
    while recorded + 1 < poisoned {
        let request = receiver.next_request().await;
        let durable = request.durable.as_deref().expect("a durable request");
        let (first, last) = (durable.sequence, durable.sequence + u64::from(durable.count) - 1);
        requests.push((first, durable.count));
        let (code, payload) = if (first..=last).contains(&poisoned) {
            (Code::NotFound, Bytes::new())
        } else if first > recorded + 1 {
            (Code::Unavailable, Bytes::copy_from_slice(&recorded.to_be_bytes()))
        } else {
            recorded = recorded.max(last);
            (Code::Ok, Bytes::copy_from_slice(&recorded.to_be_bytes()))
        };
        let flags = if code == Code::Ok { 0 } else { flags::UNPROCESSED };
        let answer = ResponseFrame {
            id: request.id,
            flags,
            code: code.as_u8(),
            message: Bytes::new(),
            metadata: Default::default(),
            payload,
        };
        receiver.send_response(&answer).await;
    }
    requests
}

#[tokio::test]
async fn the_messages_before_one_a_batch_was_refused_for_are_recorded_at_the_next_attempt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (listener, _outbox, _destination) = logged_for_a_raw_receiver(dir.path(), 100).await;
    let requests = requests_until_a_poisoned_message(listener, 10).await;
    // Message 1 alone, 2..65 as a batch refused for 10 (66..100 behind it, a gap); then 2 alone
    // and 3..9 one per request: 11 requests. Trying a batch again after each single took 25.
    assert!(requests.len() <= 12, "{requests:?}");
    assert!(requests.iter().any(|(_, count)| *count > 1), "a batch was tried: {requests:?}");
}

/// A batch that compresses to fit the receiver's `max_frame` but would not fit it once
/// decompressed is not sent as a batch either: the receiver holds it decompressed.
#[cfg(feature = "zstd")]
#[tokio::test]
async fn a_batch_too_large_for_the_receiver_once_decompressed_goes_one_message_at_a_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address: Address = format!("tcp://{}", listener.local_addr().expect("an address")).parse().expect("valid");
    let outbox = outbox_in(dir.path()).await;
    let destination = outbox.destination("ledger", zstd_channel(address));
    let ledger = LedgerClient::new(destination.clone());
    for n in 1..=300 {
        ledger.record(n).await.expect("logged");
    }
    let zstd = [zrpc_core::Compression::Zstd.id()];
    // 64 stored requests of about 40 bytes: 2.5 KiB, compressed to a few hundred bytes.
    let requests = requests_to_a_raw_receiver(listener, (true, 2048, &zstd), 300).await;
    within("every message acknowledged", destination.delivered()).await.expect("delivered");
    assert_eq!(requests.len(), 300, "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_pipelining_durable_messages_past_the_limit_gets_each_acknowledged_within_it() {
    // Three times the connection's 1,000 requests in progress, in one write: the server reads
    // them as earlier ones are recorded, so what waits for its record (a request in progress
    // each) stays within the limit, and every message is acknowledged and handled once. Then
    // the same with batches of 4: a batch is one request in progress however many records it
    // makes.
    const REQUESTS: u64 = 3_000;
    for per in [1, 4] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (serving, mut reports, mut peer, _) = raw_sender_to_a_receiver(dir.path()).await;
        let frames: Vec<u8> = (1..=REQUESTS)
            .flat_map(|r| {
                let first = (r - 1) * per + 1;
                let ns: Vec<u64> = (first..first + per).collect();
                let frame = if per == 1 {
                    durable_frame(2 * r - 1, r, 0, r)
                } else {
                    batch_frame(2 * r - 1, first, first - 1, &ns)
                };
                request_bytes(&frame)
            })
            .collect();
        peer.write(&frames).await;

        let mut acknowledged = std::collections::BTreeSet::new();
        for _ in 0..REQUESTS {
            let ack = peer.next_response().await;
            assert_eq!(ack.code, 0, "{ack:?}");
            // Request r's record answers with the stream recorded up to its last message.
            let request = ack.id.div_ceil(2);
            assert_eq!(recorded_of(&ack.payload), request * per);
            assert!(acknowledged.insert(request), "request {request} acknowledged twice");
        }
        let mut handled = Vec::new();
        for _ in 0..REQUESTS * per {
            handled.push(within("handled", reports.recv()).await.expect("running").1);
        }
        assert_eq!(handled, (1..=REQUESTS * per).collect::<Vec<_>>(), "each once, in order");

        let stats = raw_senders_stats_once_idle(&serving).await;
        assert!(stats.peak_requests_in_progress <= 1001, "{per} per request: {stats:?}");
        drop(peer);
        serving.shutdown().await.expect("served");
    }
}

#[tokio::test]
async fn a_plain_server_refuses_durable_frames_unprocessed_and_says_so_in_its_hello() {
    let (serving, _reports, address) = receiver("ledger", &"tcp://127.0.0.1:0".parse().expect("address"), None).await;
    let mut peer = RawPeer::connect(address.to_string().trim_start_matches("tcp://")).await;
    assert!(!peer.handshake("raw-sender").await.inbox);
    peer.send_request(&durable_frame(1, 1, 0, 100)).await;
    let refused = peer.next_response().await;
    assert_eq!(refused.code, Code::Unimplemented.as_u8());
    assert_ne!(refused.flags & flags::UNPROCESSED, 0);
    drop(peer);
    serving.shutdown().await.expect("served");
}

/// A receiver that dials its sender: the sender's server calls it back by name through its
/// outbox, over the connection the receiver opened.
#[tokio::test]
async fn a_receiver_that_dials_records_and_handles_through_a_serving_channel_and_a_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outbox = outbox_in(dir.path()).await;
    let shop = Server::builder().name("shop-1").bind("tcp://127.0.0.1:0").await.expect("bind");
    let (shop_address, shop_peers) = (shop.local_addr().clone(), shop.handle().peers());
    let shop = Serving::spawn(shop);
    let destination = outbox.destination("ledger", shop_peers.named("ledger"));
    // The oneway view: a two-way method through the destination would not compile.
    let ledger = LedgerClient::new(destination.clone()).oneway();
    let inbox = inbox_in(&dir.path().join("ledger")).await;

    // A serving channel with an inbox.
    let (handled, mut reports) = mpsc::unbounded_channel();
    let channel = Channel::builder(shop_address.clone())
        .name("ledger")
        .serve(LedgerServer::new(Books { handled }))
        .inbox(inbox.clone())
        .connect()
        .await
        .expect("connects");
    within("the ledger is listed", shop_peers.wait_for("ledger")).await;
    for n in 1..=3 {
        ledger.record(n * 10).await.expect("logged");
    }
    assert_eq!(next_handled(&mut reports, 3, outbox.id()).await, vec![(1, 10), (2, 20), (3, 30)]);
    drop(channel);

    // The same receiver as a node that only dials: it goes on with the stream.
    let (handled, mut reports) = mpsc::unbounded_channel();
    let node = zrpc_transport::Node::builder("ledger")
        .add_service(LedgerServer::new(Books { handled }))
        .inbox(inbox.clone())
        .connect(shop_address)
        .start()
        .await
        .expect("starts");
    for n in 4..=5 {
        ledger.record(n * 10).await.expect("logged");
    }
    assert_eq!(next_handled(&mut reports, 2, outbox.id()).await, vec![(4, 40), (5, 50)]);
    within("acknowledged", destination.delivered()).await.expect("delivered");
    node.shutdown().await;
    let streams = inbox.streams().await.expect("streams");
    assert_eq!(streams.iter().map(|s| (s.recorded, s.handled)).collect::<Vec<_>>(), [(5, 5)]);
    shop.shutdown().await.expect("served");
}

/// A `Client` over discovery that names its instances sends a durable call to the instance of
/// the destination's name, whatever its picker: round-robin over two receivers would send every
/// other call to the wrong one, which the connection refuses.
#[tokio::test]
async fn a_client_sends_durable_calls_to_the_instance_discovery_names_as_the_destination() {
    use zrpc_core::balance::RoundRobin;
    use zrpc_core::discover::{Change, Instance};
    use zrpc_core::retry::FailMode;

    let dir = tempfile::tempdir().expect("temp dir");
    let tcp: Address = "tcp://127.0.0.1:0".parse().expect("address");
    let (a, mut a_reports, a_address) = receiver("ledger-a", &tcp, Some(inbox_in(&dir.path().join("a")).await)).await;
    let (b, mut b_reports, b_address) = receiver("ledger-b", &tcp, Some(inbox_in(&dir.path().join("b")).await)).await;
    let (changes, source) = futures::channel::mpsc::unbounded();
    for (address, name) in [(&a_address, "ledger-a"), (&b_address, "ledger-b")] {
        let instance = Instance::new(address.to_string()).with_name(name);
        changes.unbounded_send(Ok(Change::Insert(address.to_string().into(), instance))).expect("open");
    }
    let client = zrpc_transport::Client::builder()
        .name("shop-1")
        .discover(source)
        .balance(RoundRobin::new())
        .fail_mode(FailMode::Failfast)
        .build();

    let outbox = OutboxId::from_u64(0x5409);
    for n in 1..=6u64 {
        let mut request = Request::new("Ledger.record", postcard(&n));
        request.ctx_mut().set_durable(Some(Durable::new(MessageId::new("shop-1", outbox, n), n - 1, "ledger-b")));
        let answer = within("an acknowledgement", client.clone().oneshot(request)).await;
        assert!(answer.is_ok(), "call {n} went elsewhere: {answer:?}");
    }
    assert_eq!(next_handled(&mut b_reports, 6, outbox).await.len(), 6);
    a.shutdown().await.expect("served");
    b.shutdown().await.expect("served");
    assert!(a_reports.recv().await.is_none(), "ledger-a was given none");
    drop(changes);
}
