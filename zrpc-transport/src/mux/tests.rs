//! Two muxes wired back to back: every rule of the module docs, with no sockets and no clock.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;
use zrpc_core::{Code, Context, Request, Response, Status};

use super::*;
use crate::frame::{FlowLimits, Hello};

struct Pair {
    client: Mux<&'static str>,
    server: Mux<&'static str>,
    /// Bytes in flight towards each side, as a socket would hold them.
    to_client: BytesMut,
    to_server: BytesMut,
    now: Instant,
}

fn config(name: &str) -> MuxConfig {
    MuxConfig {
        name: name.into(),
        heartbeat_interval: Duration::from_secs(10),
        heartbeat_timeout: Duration::from_secs(5),
        ..MuxConfig::default()
    }
}

impl Pair {
    fn new() -> Pair {
        pair_with_server(|_| {})
    }

    /// Moves the client's output to the server and returns what the server reported.
    fn server_events(&mut self) -> Vec<Event<&'static str>> {
        self.to_server.extend_from_slice(&self.client.take_output());
        self.server.recv(&mut self.to_server, self.now).expect("valid input");
        events(&mut self.server)
    }

    /// Moves the client's output to the server and returns the requests it hands over, after
    /// checking that it reported nothing else.
    fn server_requests(&mut self) -> Vec<RequestFrame> {
        let events = self.server_events();
        assert!(events.is_empty(), "unexpected events: {events:?}");
        requests(&mut self.server)
    }

    /// Lets the client's heartbeat interval pass: it pings, and the server reads the PING (its
    /// PONG waits in its output).
    fn ping_after_the_interval(&mut self) {
        self.now += Duration::from_secs(10);
        self.client.on_timeout(self.now).expect("pings");
        self.server_events();
    }

    fn client_events(&mut self) -> Vec<Event<&'static str>> {
        self.to_client.extend_from_slice(&self.server.take_output());
        self.client.recv(&mut self.to_client, self.now).expect("valid input");
        events(&mut self.client)
    }
}

/// Everything `mux` has to report.
fn events(mux: &mut Mux<&'static str>) -> Vec<Event<&'static str>> {
    std::iter::from_fn(|| mux.poll_event()).collect()
}

/// Every request `mux` hands over now.
fn requests(mux: &mut Mux<&'static str>) -> Vec<RequestFrame> {
    std::iter::from_fn(|| mux.next_request().map(|(request, _)| request)).collect()
}

fn ids(requests: &[RequestFrame]) -> Vec<u64> {
    requests.iter().map(|r| r.id).collect()
}

fn request(method: &'static str, payload: &'static [u8]) -> Request {
    Request::new(method, Bytes::from_static(payload))
}

fn ok(payload: &'static [u8]) -> Result<Response, Status> {
    Ok(Response::new(Bytes::from_static(payload)))
}

#[test]
fn handshake_exchanges_names_and_limits() {
    let pair = Pair::new();
    assert_eq!(pair.client.peer().map(|p| &*p.name), Some("server-1"));
    assert_eq!(pair.server.peer().map(|p| &*p.name), Some("client-1"));
    assert_eq!(pair.server.peer().map(|p| p.max_frame), Some(frame::DEFAULT_MAX_FRAME));
    assert!(pair.client.is_ready() && pair.server.is_ready());
}

#[test]
fn many_calls_in_flight_answered_out_of_order() {
    let mut pair = Pair::new();
    for (id, token) in [(1, "a"), (3, "b"), (5, "c")] {
        assert!(matches!(pair.client.send_request(id, request("S.m", b"x"), token), Ok(())));
    }
    assert_eq!(ids(&pair.server_requests()), [1, 3, 5]);
    assert_eq!(pair.server.inbound_len(), 3);

    pair.server.finish(5, &ok(b"five"));
    pair.server.finish(1, &Err(Status::not_found("no such thing")));
    pair.server.finish(3, &ok(b"three"));
    let answers: Vec<_> = pair
        .client_events()
        .into_iter()
        .map(|e| match e {
            Event::Response { token, result, .. } => (token, result.map(|r| r.into_payload()).map_err(|s| s.code())),
            other => panic!("expected a response, got {other:?}"),
        })
        .collect();
    assert_eq!(
        answers,
        [("c", Ok(Bytes::from_static(b"five"))), ("a", Err(Code::NotFound)), ("b", Ok(Bytes::from_static(b"three")))]
    );
    assert_eq!(pair.client.pending_len(), 0);
    assert_eq!(pair.server.inbound_len(), 0);
}

#[test]
fn once_everything_is_written_the_output_starts_again_at_the_front_of_its_buffer() {
    let mut pair = Pair::new();
    for id in [1, 3, 5] {
        pair.client.send_request(id, request("S.m", &[7; 200]), "t").expect("sent");
    }
    let room = pair.client.out.capacity();
    let queued = pair.client.transmit().len();
    pair.client.written(queued - 1);
    // A byte left: the written prefix stays where it is until the rest is out.
    assert_eq!(pair.client.out.capacity(), room - (queued - 1));
    pair.client.written(1);
    assert!(pair.client.out.is_empty());
    assert!(
        pair.client.out.capacity() >= room,
        "the written bytes' room is taken back: {} bytes free, {room} before writing",
        pair.client.out.capacity()
    );
}

#[test]
fn a_trim_window_ends_once_a_heartbeat_interval_however_often_the_timer_fires() {
    let patient = |c: &mut MuxConfig| c.heartbeat_timeout = Duration::from_secs(3600);
    let mut pair = pair_with(patient, patient);
    let start = pair.now;
    // The timer fires for other reasons (a call's deadline) within the interval: no window ends.
    for seconds in [1, 5, 9] {
        pair.client.on_timeout(start + Duration::from_secs(seconds)).expect("alive");
        assert!(!pair.client.trim_window_ended(), "{seconds} s in");
    }
    // At the interval, one ends, told once.
    pair.client.on_timeout(start + Duration::from_secs(10)).expect("alive");
    assert!(pair.client.trim_window_ended());
    assert!(!pair.client.trim_window_ended(), "told once");
    pair.client.on_timeout(start + Duration::from_secs(15)).expect("alive");
    assert!(!pair.client.trim_window_ended(), "half an interval after");
    pair.client.on_timeout(start + Duration::from_secs(20)).expect("alive");
    assert!(pair.client.trim_window_ended(), "the next interval");
}

#[test]
fn with_no_heartbeat_a_trim_window_still_ends_and_the_timer_is_asked_for_it() {
    let off = |c: &mut MuxConfig| {
        c.heartbeat_interval = Duration::ZERO;
        c.heartbeat_timeout = Duration::ZERO;
    };
    // With a heartbeat (10 s here), its ticks end the windows: no timer is asked for them.
    assert_eq!(Pair::new().client.trim_timeout(true), None);
    let mut pair = pair_with(off, off);
    let start = pair.now;
    let year = start + Duration::from_secs(365 * 24 * 3600);
    // Nothing grown: no reason to wake, and the mux asks for no timer at all.
    assert_eq!(pair.client.trim_timeout(false), None);
    assert!(pair.client.next_timeout() > year);
    // The driver holds a grown buffer: the window's end, 10 s on, is asked for...
    let due = pair.client.trim_timeout(true).expect("a trim due");
    assert_eq!(due, start + Duration::from_secs(10));
    // ...and ends there, with no heartbeat.
    pair.client.on_timeout(due - Duration::from_secs(1)).expect("alive");
    assert!(!pair.client.trim_window_ended());
    pair.client.on_timeout(due).expect("alive");
    assert!(pair.client.trim_window_ended());
    assert_eq!(pair.client.trim_timeout(true), Some(due + Duration::from_secs(10)), "the next window");
}

#[test]
fn with_no_heartbeat_a_bursts_output_buffer_is_given_back_at_the_windows_end() {
    static LARGE: [u8; 96 * 1024] = [7; 96 * 1024];
    let off = |c: &mut MuxConfig| c.heartbeat_interval = Duration::ZERO;
    let mut pair = pair_with(off, off);
    pair.client.send_request(1, request("S.m", &LARGE), "t").expect("sent");
    let queued = pair.client.transmit().len();
    pair.client.written(queued);
    assert!(pair.client.out.capacity() > LARGE.len());
    // The grown buffer alone asks for the timer (a heartbeat's would be never). The window
    // the burst was in keeps it (it was the size of that window's traffic); the next, quiet,
    // gives it back.
    let due = pair.client.trim_timeout(false).expect("the output buffer asks for a trim");
    assert!(due < pair.client.next_timeout());
    pair.client.on_timeout(due).expect("alive");
    assert_eq!(pair.client.stats().buffers_trimmed, 0, "the burst's own window");
    let due = pair.client.trim_timeout(false).expect("still grown: the next window is asked for");
    pair.client.on_timeout(due).expect("alive");
    assert_eq!(pair.client.stats().buffers_trimmed, 1);
    assert!(pair.client.out.capacity() <= 1024, "{}", pair.client.out.capacity());
    assert_eq!(pair.client.trim_timeout(false), None, "nothing left to give back");
}

#[test]
fn a_bursts_output_buffer_is_given_back_and_a_busy_ones_kept() {
    static LARGE: [u8; 96 * 1024] = [7; 96 * 1024];
    let patient = |c: &mut MuxConfig| c.heartbeat_timeout = Duration::from_secs(3600);
    let mut pair = pair_with(patient, patient);
    let mut id = 1;
    // `calls` calls of 96 KiB queued and written, then a heartbeat interval later the timer
    // fires (and queues a PING, written too): the output buffer's capacity then.
    let mut interval = |pair: &mut Pair, calls: usize| {
        for _ in 0..calls {
            pair.client.send_request(id, request("S.m", &LARGE), "t").expect("sent");
            id += 2;
        }
        let queued = pair.client.transmit().len();
        pair.client.written(queued);
        pair.now += Duration::from_secs(10);
        pair.client.on_timeout(pair.now).expect("alive");
        let ping = pair.client.transmit().len();
        pair.client.written(ping);
        pair.client.out.capacity()
    };
    // Busy: the buffer is about the size of each interval's traffic, and is kept.
    let busy = interval(&mut pair, 3);
    assert!(busy >= 3 * LARGE.len(), "{busy}");
    for _ in 0..3 {
        assert_eq!(interval(&mut pair, 3), busy, "a busy connection's buffer is kept");
    }
    assert_eq!(pair.client.stats().buffers_trimmed, 0);
    // Quiet: given back at the first tick, a PING's worth left.
    let quiet = interval(&mut pair, 0);
    assert!(quiet <= 1024, "{quiet}");
    assert_eq!(pair.client.stats().buffers_trimmed, 1);
    assert_eq!(pair.client.stats().output_buffer, quiet);
}

#[test]
fn request_fields_survive_the_trip() {
    let mut pair = Pair::new();
    let ctx = Context::new().with_timeout(Duration::from_millis(250)).with_metadata("k", "v");
    let req = request("Greeter.hello", b"args").with_ctx(ctx).with_idempotent(true);
    pair.client.send_request(7, req, "t").expect("sent");
    let requests = pair.server_requests();
    let [frame] = requests.as_slice() else { panic!("{requests:?}") };
    assert_eq!(frame.method_str(), "Greeter.hello");
    assert_eq!(&frame.payload[..], b"args");
    assert!(frame.is_idempotent() && !frame.is_oneway());
    assert_eq!(frame.metadata.get("k"), Some(&b"v"[..]));
    let timeout = frame.timeout.expect("a deadline travels");
    assert!(timeout <= Duration::from_millis(250) && timeout > Duration::ZERO, "{timeout:?}");
}

#[test]
fn cancel_reaches_the_server_and_the_late_answer_is_dropped() {
    let mut pair = Pair::new();
    pair.client.send_request(1, request("S.slow", b""), "slow").expect("sent");
    assert_eq!(ids(&pair.server_requests()), [1]);

    assert_eq!(pair.client.cancel(1), Some("slow"));
    assert_eq!(pair.client.cancel(1), None, "a second cancel sends nothing");
    let events = pair.server_events();
    assert!(matches!(events.as_slice(), [Event::Cancel { id: 1, .. }]), "{events:?}");

    // The handler finished anyway; its answer is not sent.
    pair.server.finish(1, &ok(b"late"));
    assert!(pair.server.take_output().is_empty());
}

#[test]
fn an_answer_crossing_a_cancel_is_ignored() {
    let mut pair = Pair::new();
    pair.client.send_request(1, request("S.m", b""), "t").expect("sent");
    pair.server_requests();
    pair.server.finish(1, &ok(b"crossed"));
    pair.client.cancel(1);
    assert!(pair.client_events().is_empty());
}

#[test]
fn a_oneway_call_ends_once_written_and_is_never_answered() {
    let mut pair = Pair::new();
    pair.client.send_request(1, request("S.log", b"line").with_oneway(true), "log").expect("queued");
    assert!(events(&mut pair.client).is_empty(), "not written yet");
    let requests = pair.server_requests();
    let [frame] = requests.as_slice() else { panic!("{requests:?}") };
    assert!(frame.is_oneway());
    let events = events(&mut pair.client);
    assert!(matches!(events.as_slice(), [Event::Response { token: "log", result: Ok(_), .. }]), "{events:?}");
    assert_eq!(pair.client.pending_len(), 0);

    pair.server.finish(1, &ok(b"not for a oneway call"));
    assert_eq!(pair.server.inbound_len(), 0);
    let frames = decode(pair.server.take_output());
    assert!(matches!(frames.as_slice(), [Frame::Credit { requests: 1, .. }]), "only credit goes back: {frames:?}");
}

/// Decodes whole frames queued by a mux, after its preface if it is there.
fn decode(mut out: BytesMut) -> Vec<Frame> {
    if out.starts_with(&frame::MAGIC) {
        frame::decode_preface(&mut out).expect("our own preface");
    }
    let mut decoder = frame::Decoder::new(frame::DEFAULT_MAX_FRAME);
    let frames = std::iter::from_fn(|| decoder.decode(&mut out).expect("valid frames")).collect();
    assert!(out.is_empty(), "whole frames");
    frames
}

fn violation_of(mux: &mut Mux<&'static str>, bytes: &[u8], now: Instant) -> ProtocolError {
    let mut buf = BytesMut::from(bytes);
    match mux.recv(&mut buf, now) {
        Ok(()) => panic!("accepted {bytes:?}"),
        Err(e) => e,
    }
}

fn frame_bytes(encode: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(&mut buf);
    buf.to_vec()
}

fn assert_goaway_queued(mux: &mut Mux<&'static str>) {
    let mut out = mux.take_output();
    if out.starts_with(&frame::MAGIC) {
        frame::decode_preface(&mut out).expect("our own preface");
    }
    let mut decoder = frame::Decoder::new(frame::DEFAULT_MAX_FRAME);
    let mut saw_goaway = false;
    while let Ok(Some(frame)) = decoder.decode(&mut out) {
        saw_goaway |= matches!(frame, Frame::GoAway(GoAway { code: 3, .. }));
    }
    assert!(saw_goaway, "a GOAWAY with InvalidArgument explains the close");
}

#[test]
fn a_request_with_the_wrong_parity_closes_the_connection() {
    let mut pair = Pair::new();
    // The server opens even ids; an odd id coming from the server is the client's own parity.
    let bytes = frame_bytes(|b| {
        frame::encode_request(b, 3, &request("S.m", b""), frame::DEFAULT_MAX_FRAME).expect("encodes");
    });
    let now = pair.now;
    let err = violation_of(&mut pair.client, &bytes, now);
    assert!(err.to_string().contains("parity"), "{err}");
    assert_goaway_queued(&mut pair.client);
}

#[test]
fn a_duplicate_request_id_closes_the_connection() {
    let mut pair = Pair::new();
    pair.client.send_request(1, request("S.m", b""), "t").expect("sent");
    pair.server_requests();
    let bytes = frame_bytes(|b| {
        frame::encode_request(b, 1, &request("S.m", b""), frame::DEFAULT_MAX_FRAME).expect("encodes");
    });
    let now = pair.now;
    let err = violation_of(&mut pair.server, &bytes, now);
    assert!(err.to_string().contains("already in progress"), "{err}");
}

#[test]
fn a_response_for_an_id_never_opened_closes_the_connection() {
    let mut pair = Pair::new();
    pair.client.send_request(1, request("S.m", b""), "t").expect("sent");
    pair.client.take_output();
    let bytes = frame_bytes(|b| {
        frame::encode_response(b, 9, &ok(b""), frame::DEFAULT_MAX_FRAME).expect("encodes");
    });
    let now = pair.now;
    let err = violation_of(&mut pair.client, &bytes, now);
    assert!(err.to_string().contains("never opened"), "{err}");
}

#[test]
fn the_first_frame_must_be_hello() {
    let now = Instant::now();
    let mut server: Mux<&'static str> = Mux::new(Role::Acceptor, config("s"), now);
    let bytes = frame_bytes(|b| {
        frame::encode_preface(b);
        frame::encode_ping(b, 1);
    });
    let err = violation_of(&mut server, &bytes, now);
    assert!(err.to_string().contains("first frame must be HELLO"), "{err}");
    assert_goaway_queued(&mut server);

    // Once broken, the mux reads nothing more and says goodbye only once.
    let mut more = BytesMut::from(&bytes[frame::PREFACE_LEN..]);
    assert!(matches!(server.recv(&mut more, now), Ok(())));
    assert_eq!(more.len(), bytes.len() - frame::PREFACE_LEN, "nothing read");
    assert!(server.take_output().is_empty());
}

#[test]
fn an_http_request_is_refused_at_the_preface() {
    let now = Instant::now();
    let mut server: Mux<&'static str> = Mux::new(Role::Acceptor, config("s"), now);
    let err = violation_of(&mut server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", now);
    assert_eq!(err, ProtocolError::Frame(FrameError::BadPreface));
}

#[test]
fn the_first_frame_is_held_to_the_hello_bound_and_later_ones_to_max_frame() {
    let now = Instant::now();
    let header = |len: u32, kind: u8| {
        let mut bytes = BytesMut::new();
        bytes.put_u32(len);
        bytes.put_u8(kind);
        bytes.put_u8(0);
        bytes.put_u64(0);
        bytes
    };
    // Refused from its header: the 128 KiB that would follow are never waited for.
    let mut server: Mux<&'static str> = Mux::new(Role::Acceptor, config("s"), now);
    let mut first = frame_bytes(frame::encode_preface);
    first.extend_from_slice(&header(frame::MAX_HELLO + 1, frame::kind::HELLO));
    let err = violation_of(&mut server, &first, now);
    assert_eq!(err, ProtocolError::Frame(FrameError::FrameTooLarge { len: 131_073, max: frame::MAX_HELLO }));
    // A side whose own limit is lower keeps it.
    let mut small: Mux<&'static str> = Mux::new(Role::Acceptor, MuxConfig { max_frame: 2048, ..config("s") }, now);
    let mut first = frame_bytes(frame::encode_preface);
    first.extend_from_slice(&header(2049, frame::kind::HELLO));
    let err = violation_of(&mut small, &first, now);
    assert_eq!(err, ProtocolError::Frame(FrameError::FrameTooLarge { len: 2049, max: 2048 }));
    // After the HELLO, a frame of the peer's up to max_frame: a request of 1 MiB is handed over.
    let mut pair = Pair::new();
    let payload: &'static [u8] = Box::leak(vec![7; 1 << 20].into_boxed_slice());
    assert!(matches!(pair.client.send_request(1, request("S.m", payload), "big"), Ok(())));
    let requests = pair.server_requests();
    assert_eq!(requests.iter().map(|r| r.payload.len()).collect::<Vec<_>>(), [1 << 20]);
}

#[test]
fn idle_connections_are_pinged_and_silent_peers_declared_dead() {
    let mut pair = Pair::new();
    let start = pair.now;
    assert_eq!(pair.client.next_timeout(), start + Duration::from_secs(10));

    // Quiet for the interval: a PING goes out, the server answers, the client is content.
    pair.now = start + Duration::from_secs(10);
    pair.client.on_timeout(pair.now).expect("alive");
    assert!(pair.server_events().is_empty(), "PING is handled inside the mux");
    assert!(pair.client_events().is_empty(), "PONG is handled inside the mux");
    assert_eq!(pair.client.next_timeout(), pair.now + Duration::from_secs(10));

    // Quiet again, and this time the server says nothing.
    pair.now += Duration::from_secs(10);
    pair.client.on_timeout(pair.now).expect("pings");
    assert_eq!(pair.client.next_timeout(), pair.now + Duration::from_secs(5));
    pair.client.on_timeout(pair.now + Duration::from_secs(4)).expect("still within the limit");
    let err = pair.client.on_timeout(pair.now + Duration::from_secs(5)).expect_err("dead");
    assert_eq!(err, ProtocolError::HeartbeatTimeout(Duration::from_secs(5)));
}

#[test]
fn a_heartbeat_too_long_for_the_clock_means_never() {
    // `Duration::MAX` for "no heartbeat": `Instant + Duration::MAX` panics, and it was the
    // connection's task that added them.
    a_heartbeat_of_means_never(Duration::MAX);
}

#[test]
fn a_heartbeat_of_zero_means_never() {
    // As a zero timeout means none for POSIX sockets and Go's servers; it pinged on every quiet
    // instant and failed the handshake at once.
    a_heartbeat_of_means_never(Duration::ZERO);
}

/// Both ends with `time` as heartbeat interval and timeout: a decade passes with no PING and
/// no peer given up, a blocked writer is not given up on either, and calls go through.
fn a_heartbeat_of_means_never(time: Duration) {
    let never = |c: &mut MuxConfig| {
        c.heartbeat_interval = time;
        c.heartbeat_timeout = time;
    };
    let mut pair = pair_with(never, never);
    let a_decade = Duration::from_secs(10 * 365 * 24 * 3600);
    for mux in [&mut pair.client, &mut pair.server] {
        assert!(mux.next_timeout() > pair.now + a_decade);
        mux.on_timeout(pair.now + a_decade).expect("alive: no PING is due in a decade");
    }
    // A peer that stops reading is never given up on either, and a call still goes through.
    pair.client.write_blocked(pair.now);
    assert!(pair.client.next_timeout() > pair.now + a_decade);
    assert!(matches!(pair.client.send_request(1, request("S.m", b"x"), "a"), Ok(())));
    assert_eq!(ids(&pair.server_requests()), [1]);
    assert!(pair.client.take_output().is_empty(), "no PING was queued");
}

/// A frame of kind 0x7f, which this version skips, carrying `body`.
fn unknown_frame(body: &[u8]) -> BytesMut {
    let mut frame = BytesMut::new();
    frame.put_u32(u32::try_from(10 + body.len()).expect("test bodies are small"));
    frame.put_u8(0x7f);
    frame.put_u8(0);
    frame.put_u64(0);
    frame.put_slice(body);
    frame
}

#[test]
fn a_frame_of_an_unknown_kind_is_a_sign_of_life() {
    let mut pair = Pair::new();
    pair.ping_after_the_interval();
    pair.server.take_output();

    // Instead of the PONG, a frame of a kind from some later version: skipped, but the peer is
    // alive, so the ping is settled and the clock starts over.
    pair.now += Duration::from_secs(4);
    pair.to_client.extend_from_slice(&unknown_frame(b"future"));
    assert!(pair.client_events().is_empty(), "nothing to report");
    assert!(pair.to_client.is_empty(), "the frame was consumed");
    pair.client.on_timeout(pair.now + Duration::from_secs(1)).expect("alive: heard from 1 s ago");
    assert_eq!(pair.client.next_timeout(), pair.now + Duration::from_secs(10));
}

#[test]
fn a_frame_of_an_unknown_kind_does_not_extend_the_handshake() {
    let start = Instant::now();
    let mut client: Mux<&'static str> = Mux::new(Role::Connector, config("client-1"), start);
    let mut bytes = BytesMut::new();
    frame::encode_preface(&mut bytes);
    bytes.extend_from_slice(&unknown_frame(b""));
    client.recv(&mut bytes, start + Duration::from_secs(4)).expect("valid");
    assert!(events(&mut client).is_empty());
    let err = client.on_timeout(start + Duration::from_secs(5)).expect_err("the HELLO never came");
    assert_eq!(err, ProtocolError::HandshakeTimeout(Duration::from_secs(5)));
}

#[test]
fn a_peer_declared_dead_is_not_read_any_more() {
    // Found by the `mux_local` fuzz target: a frame arriving after `on_timeout` had failed was
    // still read, so a connection reported dead could go on reporting events, even Ready.
    let mut pair = Pair::new();
    pair.ping_after_the_interval();
    pair.now += Duration::from_secs(5);
    let err = pair.client.on_timeout(pair.now).expect_err("dead");
    assert_eq!(err, ProtocolError::HeartbeatTimeout(Duration::from_secs(5)));

    // The PONG comes too late: it is left unread.
    pair.to_client.extend_from_slice(&pair.server.take_output());
    let late = pair.to_client.clone();
    assert!(matches!(pair.client.recv(&mut pair.to_client, pair.now), Ok(())));
    assert_eq!(pair.to_client, late);

    // The same when the handshake never completed: a late HELLO does not make the mux ready.
    let now = Instant::now();
    let mut client: Mux<&'static str> = Mux::new(Role::Connector, config("c"), now);
    let mut server: Mux<&'static str> = Mux::new(Role::Acceptor, config("s"), now);
    client.on_timeout(now + Duration::from_secs(5)).expect_err("gave up");
    let mut hello = server.take_output();
    assert!(matches!(client.recv(&mut hello, now + Duration::from_secs(5)), Ok(())));
    assert!(events(&mut client).is_empty());
    assert!(!client.is_ready());
}

#[test]
fn a_peer_that_never_says_hello_fails_the_handshake() {
    let now = Instant::now();
    let mut client: Mux<&'static str> = Mux::new(Role::Connector, config("c"), now);
    assert_eq!(client.next_timeout(), now + Duration::from_secs(5));
    client.on_timeout(now + Duration::from_secs(1)).expect("not yet");
    let err = client.on_timeout(now + Duration::from_secs(5)).expect_err("gave up");
    assert_eq!(err, ProtocolError::HandshakeTimeout(Duration::from_secs(5)));
}

#[test]
fn goaway_stops_new_calls_but_lets_pending_ones_finish() {
    let mut pair = Pair::new();
    pair.client.send_request(1, request("S.m", b""), "in-flight").expect("sent");
    pair.server_requests();
    pair.server.go_away(Code::Unavailable, "shutting down");
    let events = pair.client_events();
    let [Event::GoAway(goaway)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(goaway.last_id, 1);
    assert!(pair.client.is_draining() && !pair.client.is_drained());

    let (status, token) = pair.client.send_request(3, request("S.m", b""), "new").expect_err("refused");
    assert_eq!((status.code(), token), (Code::Unavailable, "new"));
    assert!(status.is_unprocessed(), "never sent, so safe to send elsewhere");

    pair.server.finish(1, &ok(b"done"));
    let events = pair.client_events();
    assert!(matches!(events.as_slice(), [Event::Response { token: "in-flight", result: Ok(_), .. }]), "{events:?}");
    assert!(pair.client.is_drained() && pair.server.is_drained());
}

#[test]
fn a_request_crossing_goaway_is_refused_unprocessed() {
    let mut pair = Pair::new();
    pair.server.go_away(Code::Unavailable, "shutting down");
    // The client sent before it read the GOAWAY.
    pair.client.send_request(1, request("S.m", b""), "crossed").expect("sent");
    assert!(pair.server_requests().is_empty(), "the server does not process it");
    let events = pair.client_events();
    let answer = events.iter().find_map(|e| match e {
        Event::Response { token, result: Err(status), .. } => Some((*token, status.code(), status.is_unprocessed())),
        _ => None,
    });
    assert_eq!(answer, Some(("crossed", Code::Unavailable, true)), "the refusal says it was not processed");
}

#[test]
fn oversized_frames_are_never_sent() {
    let now = Instant::now();
    let small = MuxConfig { max_frame: frame::MIN_MAX_FRAME, ..config("small") };
    let mut pair = Pair {
        client: Mux::new(Role::Connector, small.clone(), now),
        server: Mux::new(Role::Acceptor, small, now),
        to_client: BytesMut::new(),
        to_server: BytesMut::new(),
        now,
    };
    pair.server_events();
    pair.client_events();

    static BIG: [u8; 4096] = [7; 4096];
    let before = pair.client.queued_output();
    let (status, _) = pair.client.send_request(1, request("S.m", &BIG), "t").expect_err("too big");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.is_unprocessed(), "never sent, so another endpoint may take it: {status:?}");
    assert_eq!(pair.client.queued_output(), before, "nothing was queued");

    pair.client.send_request(3, request("S.m", b""), "t").expect("small request");
    pair.server_requests();
    pair.server.finish(3, &ok(&BIG));
    let events = pair.client_events();
    let [Event::Response { result: Err(status), .. }] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[test]
fn only_refusals_carry_the_unprocessed_mark_across_the_wire() {
    let mut pair = Pair::new();
    for id in [1, 3] {
        pair.client.send_request(id, request("S.m", b""), "t").expect("sent");
    }
    pair.server_requests();
    pair.server.finish(1, &Err(Status::resource_exhausted("rate limited").mark_unprocessed()));
    pair.server.finish(3, &Err(Status::internal("handler failed")));
    let marks: Vec<_> = pair
        .client_events()
        .into_iter()
        .map(|e| match e {
            Event::Response { result: Err(status), .. } => (status.code(), status.is_unprocessed()),
            other => panic!("expected an error response, got {other:?}"),
        })
        .collect();
    assert_eq!(marks, [(Code::ResourceExhausted, true), (Code::Internal, false)]);
}

// ---- flow control (docs/PROTOCOL.md §15) ----

/// A pair whose server announces `configure`d limits.
fn pair_with_server(configure: impl FnOnce(&mut MuxConfig)) -> Pair {
    pair_with(|_| {}, configure)
}

/// A pair whose client and server are `configure`d, after the handshake.
fn pair_with(client: impl FnOnce(&mut MuxConfig), server: impl FnOnce(&mut MuxConfig)) -> Pair {
    let now = Instant::now();
    let (mut client_config, mut server_config) = (config("client-1"), config("server-1"));
    client(&mut client_config);
    server(&mut server_config);
    let mut pair = Pair {
        client: Mux::new(Role::Connector, client_config, now),
        server: Mux::new(Role::Acceptor, server_config, now),
        to_client: BytesMut::new(),
        to_server: BytesMut::new(),
        now,
    };
    assert!(matches!(pair.server_events().as_slice(), [Event::Ready]));
    assert!(matches!(pair.client_events().as_slice(), [Event::Ready]));
    pair
}

#[test]
fn the_hello_announces_flow_limits_and_each_side_learns_the_other_s() {
    let pair = pair_with_server(|c| {
        c.max_requests = 7;
        c.max_request_bytes = 5000;
    });
    let flow = pair.client.peer().and_then(|p| p.flow);
    assert_eq!(flow, Some(FlowLimits { max_requests: 7, request_bytes: 5000 }));
    let flow = pair.server.peer().and_then(|p| p.flow);
    assert_eq!(flow, Some(FlowLimits { max_requests: DEFAULT_MAX_REQUESTS, request_bytes: DEFAULT_MAX_REQUEST_BYTES }));
}

#[test]
fn calls_beyond_the_peer_s_request_limit_wait_in_order_until_answers_free_room() {
    let mut pair = pair_with_server(|c| c.max_requests = 2);
    for (id, token) in [(1, "a"), (3, "b"), (5, "c"), (7, "d")] {
        pair.client.send_request(id, request("S.m", b""), token).expect("accepted");
    }
    assert_eq!(pair.client.stats().calls_waiting, 2);
    assert_eq!(ids(&pair.server_requests()), [1, 3], "only as many as the server takes");

    pair.server.finish(3, &ok(b"b"));
    let events = pair.client_events();
    assert!(matches!(events.as_slice(), [Event::Response { token: "b", .. }]), "{events:?}");
    assert_eq!(ids(&pair.server_requests()), [5], "the oldest waiting call goes next");

    // Cancelling a sent call frees its room at once; cancelling a waiting one sends nothing.
    assert_eq!(pair.client.cancel(1), Some("a"));
    assert_eq!(pair.server_events().len(), 1, "the server hears of the cancel");
    assert_eq!(ids(&requests(&mut pair.server)), [7]);
    assert_eq!(pair.client.stats().calls_waiting, 0);
    assert_eq!(pair.server.stats().peak_requests_in_progress, 2);
}

#[test]
fn a_waiting_call_can_be_cancelled_before_it_is_sent() {
    let mut pair = pair_with_server(|c| c.max_requests = 1);
    pair.client.send_request(1, request("S.m", b""), "sent").expect("accepted");
    pair.client.send_request(3, request("S.m", b""), "waits").expect("accepted");
    assert_eq!(pair.client.cancel(3), Some("waits"));
    assert_eq!(ids(&pair.server_requests()), [1]);
    pair.server.finish(1, &ok(b""));
    pair.client_events();
    assert!(pair.client.take_output().is_empty(), "the cancelled call never leaves");
}

#[test]
fn calls_beyond_the_peer_s_byte_limit_wait_but_one_alone_may_be_larger() {
    let mut pair = pair_with_server(|c| c.max_request_bytes = 1000);
    static BIG: [u8; 3000] = [1; 3000];
    pair.client.send_request(1, request("S.m", &BIG), "big").expect("accepted");
    pair.client.send_request(3, request("S.m", b"small"), "small").expect("accepted");
    assert_eq!(ids(&pair.server_requests()), [1], "the large call went alone; the next waits for it");
    pair.server.finish(1, &ok(b""));
    pair.client_events();
    assert_eq!(ids(&pair.server_requests()), [3]);
}

#[test]
fn oneway_calls_return_their_room_with_credit() {
    let mut pair = pair_with_server(|c| c.max_requests = 1);
    for id in [1, 3] {
        pair.client.send_request(id, request("S.log", b"line").with_oneway(true), "log").expect("accepted");
    }
    assert_eq!(ids(&pair.server_requests()), [1]);
    pair.server.finish(1, &ok(b""));
    pair.client_events();
    assert_eq!(ids(&pair.server_requests()), [3], "the CREDIT let the second go");
}

#[test]
fn a_credit_for_more_than_is_in_progress_closes_the_connection() {
    let mut pair = Pair::new();
    pair.client.send_request(1, request("S.log", b"").with_oneway(true), "log").expect("accepted");
    pair.client.take_output();
    let bytes = frame_bytes(|b| frame::encode_credit(b, 2, 0));
    let now = pair.now;
    let err = violation_of(&mut pair.client, &bytes, now);
    assert!(err.to_string().contains("CREDIT for 2 oneway requests"), "{err}");
}

/// The preface and a HELLO without FLOW, as a peer that predates flow control sends them.
fn legacy_hello() -> BytesMut {
    frame_bytes(|b| {
        frame::encode_preface(b);
        let hello = Hello {
            name: "legacy".into(),
            max_frame: frame::DEFAULT_MAX_FRAME,
            codecs: vec![0],
            compressions: Vec::new(),
            token: Bytes::new(),
            flow: None,
            inbox: false,
            inbox_batches: false,
        };
        frame::encode_hello(b, &hello).expect("encodes");
    })
    .as_slice()
    .into()
}

fn request_frame(id: u64, oneway: bool) -> Vec<u8> {
    frame_bytes(|b| {
        frame::encode_request(b, id, &request("S.m", b"").with_oneway(oneway), frame::DEFAULT_MAX_FRAME)
            .expect("encodes");
    })
}

#[test]
fn a_peer_over_the_limits_is_read_no_further_until_it_is_back_within_them() {
    let now = Instant::now();
    let mut server: Mux<&'static str> =
        Mux::new(Role::Acceptor, MuxConfig { max_requests: 2, ..config("server-1") }, now);
    // A peer that never heard of the limits pipelines four calls.
    let mut input = legacy_hello();
    for id in [1, 3, 5, 7] {
        input.extend_from_slice(&request_frame(id, false));
    }
    server.recv(&mut input, now).expect("valid");
    assert!(!server.wants_read(), "three in progress: over the limit of two");
    assert_eq!(input.len(), request_frame(7, false).len(), "the fourth is left unread");
    assert!(server.stats().reading_paused);
    assert_eq!(ids(&requests(&mut server)), [1, 3], "two are handled; the third waits");

    server.finish(1, &ok(b""));
    assert!(server.wants_read(), "back within the limit");
    server.recv(&mut input, now).expect("valid");
    assert!(input.is_empty());
    assert_eq!(ids(&requests(&mut server)), [5]);
    assert_eq!(server.stats().requests_in_progress, 3);
    assert!(!server.wants_read());
    // No credit goes to a peer that does not follow flow control.
    server.finish(3, &ok(b""));
    let mut out = server.take_output();
    frame::decode_preface(&mut out).expect("our preface");
    let frames = decode(out);
    assert!(frames.iter().all(|f| !matches!(f, Frame::Credit { .. })), "{frames:?}");
}

#[test]
fn while_the_peer_is_not_read_its_silence_is_not_held_against_it() {
    let start = Instant::now();
    let mut server: Mux<&'static str> =
        Mux::new(Role::Acceptor, MuxConfig { max_requests: 1, ..config("server-1") }, start);
    let mut input = legacy_hello();
    for id in [1, 3] {
        input.extend_from_slice(&request_frame(id, false));
    }
    server.recv(&mut input, start).expect("valid");
    assert!(!server.wants_read());
    server.take_output();
    // A minute passes with the handler busy: no PING, no verdict.
    for secs in [10, 30, 60] {
        server.on_timeout(start + Duration::from_secs(secs)).expect("not the peer's fault");
    }
    assert!(decode(server.take_output()).is_empty(), "no PING while not reading");
    // Reading again, the clock starts over.
    let resumed = start + Duration::from_secs(61);
    let handed = requests(&mut server);
    server.finish(handed[0].id, &ok(b""));
    server.recv(&mut input, resumed).expect("valid");
    assert!(server.next_timeout() >= resumed + Duration::from_secs(10), "{:?}", server.next_timeout() - start);
}

#[test]
fn after_a_protocol_error_the_goaway_saying_why_is_the_last_frame() {
    // A server over its output bound, going away: a call running, two refused ones waiting for
    // room in the output.
    let mut pair = pair_with_server(|c| c.max_queued_output = 2048);
    static ANSWER: [u8; 3000] = [9; 3000];
    for id in [1, 3] {
        pair.client.send_request(id, request("S.m", b""), "t").expect("accepted");
    }
    assert_eq!(ids(&pair.server_requests()), [1, 3]);
    pair.server.finish(3, &ok(&ANSWER));
    pair.server.go_away(Code::Unavailable, "bye");
    for id in [5, 7] {
        pair.client.send_request(id, request("S.m", b""), "t").expect("accepted");
    }
    assert!(pair.server_events().is_empty(), "refused, and waiting for room to say so");
    // Then bytes that break the protocol.
    pair.to_server.extend_from_slice(&[0; 10]);
    let now = pair.now;
    let error = pair.server.recv(&mut pair.to_server, now).expect_err("a frame shorter than its header");
    // The running call ends, and the output is written: neither its answer nor the refusals
    // follow the GOAWAY (until 2026-12-02 the refusals did, once writing made room).
    assert_eq!(pair.server.finish(1, &ok(b"late")), None);
    let mut frames = decode(pair.server.take_output());
    frames.extend(decode(pair.server.take_output()));
    let Some(Frame::GoAway(last)) = frames.last() else { panic!("the last frame is not a GOAWAY: {frames:?}") };
    assert_eq!((last.code, last.message.as_str()), (Code::InvalidArgument.as_u8(), &*error.to_string()));
    let answered: Vec<u64> =
        frames.iter().filter_map(|f| if let Frame::Response(r) = f { Some(r.id) } else { None }).collect();
    assert_eq!(answered, [3], "{frames:?}");

    // The same on the calling side: a call given up after its connection failed sends no CANCEL.
    let mut pair = Pair::new();
    pair.client.send_request(1, request("S.m", b""), "t").expect("accepted");
    pair.server_requests();
    pair.to_client.extend_from_slice(&[0; 10]);
    let now = pair.now;
    pair.client.recv(&mut pair.to_client, now).expect_err("a frame shorter than its header");
    assert_eq!(pair.client.cancel(1), Some("t"), "the call ends");
    let frames = decode(pair.client.take_output());
    assert!(matches!(frames.last(), Some(Frame::GoAway(g)) if g.code == Code::InvalidArgument.as_u8()), "{frames:?}");
}

#[test]
fn requests_wait_while_the_output_is_over_its_bound_and_pongs_are_folded() {
    let mut pair = pair_with_server(|c| c.max_queued_output = 2048);
    static ANSWER: [u8; 3000] = [9; 3000];
    for id in [1, 3] {
        pair.client.send_request(id, request("S.m", b""), "t").expect("accepted");
    }
    assert!(pair.server_events().is_empty());
    assert_eq!(pair.server.next_request().map(|(r, _)| r.id), Some(1));
    pair.server.finish(1, &ok(&ANSWER));
    assert!(!pair.server.has_request(), "over the bound: the second waits while the first's answer fills the output");
    assert!(pair.server.wants_read(), "but reading goes on");

    // Three PINGs while the output is full: one PONG, for the last, once there is room.
    let pings = frame_bytes(|b| (1..=3).for_each(|nonce| frame::encode_ping(b, nonce)));
    pair.to_server.extend_from_slice(&pings);
    let now = pair.now;
    pair.server.recv(&mut pair.to_server, now).expect("valid");
    let full = decode(pair.server.take_output());
    assert!(full.iter().all(|f| !matches!(f, Frame::Pong { .. })), "no PONG while the output is full: {full:?}");
    // Written: now there is room.
    let frames = decode(pair.server.take_output());
    let pongs: Vec<_> =
        frames.iter().filter_map(|f| if let Frame::Pong { nonce } = f { Some(*nonce) } else { None }).collect();
    assert_eq!(pongs, [3], "{frames:?}");
    assert_eq!(ids(&requests(&mut pair.server)), [3], "with the output written, the next call starts");
}

#[test]
fn a_peer_that_reads_none_of_our_output_is_given_up() {
    let mut pair = Pair::new();
    let start = pair.now;
    pair.client.send_request(1, request("S.m", b"x"), "t").expect("accepted");
    pair.client.write_blocked(start);
    // Frames keep arriving from the peer (its PINGs), but it takes none of ours.
    for secs in [5, 10] {
        pair.to_client.extend_from_slice(&frame_bytes(|b| frame::encode_ping(b, secs)));
        pair.client.recv(&mut pair.to_client, start + Duration::from_secs(secs)).expect("valid");
        pair.client.on_timeout(start + Duration::from_secs(secs)).expect("not yet");
    }
    assert_eq!(pair.client.next_timeout(), start + Duration::from_secs(15));
    let err = pair.client.on_timeout(start + Duration::from_secs(15)).expect_err("not reading");
    assert_eq!(err, ProtocolError::NotReading(Duration::from_secs(15)));

    // Writing anything at all starts the clock over.
    let mut pair = Pair::new();
    pair.client.send_request(1, request("S.m", b"x"), "t").expect("accepted");
    pair.client.write_blocked(start);
    pair.client.written(1);
    pair.client.on_timeout(start + Duration::from_secs(15)).expect("it read a byte");
}

#[test]
fn a_request_with_too_many_metadata_entries_is_refused_and_the_connection_stays() {
    let mut pair = pair_with_server(|c| c.max_metadata_entries = 2);
    let mut ctx = Context::new();
    for i in 0..3 {
        ctx.metadata_mut().append(format!("k{i}"), "v");
    }
    pair.client.send_request(1, request("S.m", b"").with_ctx(ctx), "crowded").expect("accepted");
    pair.client.send_request(3, request("S.m", b""), "plain").expect("accepted");
    assert_eq!(ids(&pair.server_requests()), [3], "the crowded one is never handed over");
    let events = pair.client_events();
    let [Event::Response { token: "crowded", result: Err(status), .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.is_unprocessed());
    assert!(status.message().contains("3 metadata entries"), "{status}");
}

#[test]
fn a_cancelled_request_that_was_still_waiting_is_dropped_quietly() {
    let mut pair = pair_with_server(|c| c.max_queued_output = 1);
    pair.client.send_request(1, request("S.m", b""), "t").expect("accepted");
    pair.server_events();
    // The server's output holds a byte... its HELLO was taken; queue a PING's PONG to fill it.
    pair.to_server.extend_from_slice(&frame_bytes(|b| frame::encode_ping(b, 1)));
    let now = pair.now;
    pair.server.recv(&mut pair.to_server, now).expect("valid");
    assert!(!pair.server.has_request());
    assert_eq!(pair.server.stats().requests_waiting, 1);
    pair.client.cancel(1);
    assert!(pair.server_events().is_empty(), "no handler to stop");
    assert_eq!(pair.server.stats().requests_in_progress, 0);
    assert!(requests(&mut pair.server).is_empty());
}

#[test]
fn credit_waits_while_the_output_is_over_its_bound_and_goes_as_one() {
    // Found by the `mux_local` fuzz target: each write queued a CREDIT whatever the output
    // held, so a peer that reads nothing, sending oneway requests and cancelling them, grew our
    // output by a CREDIT a turn, past the bound the docs promise (one CREDIT).
    let mut pair = pair_with_server(|c| c.max_queued_output = 2048);
    static ANSWER: [u8; 3000] = [9; 3000];
    pair.client.send_request(1, request("S.m", b""), "big").expect("accepted");
    for id in [3, 5] {
        pair.client.send_request(id, request("S.log", b"").with_oneway(true), "log").expect("accepted");
    }
    assert_eq!(ids(&pair.server_requests()), [1, 3, 5]);
    pair.server.finish(1, &ok(&ANSWER));
    pair.server.finish(3, &ok(b""));
    assert!(decode(BytesMut::from(pair.server.transmit())).iter().all(|f| !matches!(f, Frame::Credit { .. })));
    pair.server.finish(5, &ok(b""));
    let queued = pair.server.transmit().len();
    assert!(queued > 3000, "no CREDIT while over the bound");
    pair.server.written(queued);
    let frames = decode(BytesMut::from(pair.server.transmit()));
    assert!(matches!(frames.as_slice(), [Frame::Credit { requests: 2, .. }]), "one CREDIT for both: {frames:?}");
}

#[test]
fn a_connection_that_failed_owes_nothing_after_its_goaway() {
    // Found by the `mux_local` fuzz target: credit owed when the peer broke the protocol went
    // out after the GOAWAY that was to be the connection's last frame.
    let mut pair = Pair::new();
    pair.client.send_request(1, request("S.log", b"").with_oneway(true), "log").expect("accepted");
    assert_eq!(ids(&pair.server_requests()), [1]);
    pair.server.finish(1, &ok(b""));
    let bytes =
        frame_bytes(|b| frame::encode_response(b, 2, &ok(b""), frame::DEFAULT_MAX_FRAME).map(drop).expect("encodes"));
    let now = pair.now;
    violation_of(&mut pair.server, &bytes, now);
    let frames = decode(pair.server.take_output());
    assert!(matches!(frames.as_slice(), [Frame::GoAway(_)]), "the GOAWAY alone: {frames:?}");
}

#[test]
fn calls_fail_at_their_deadline_cancelled_on_the_wire_or_never_sent() {
    let mut pair = pair_with_server(|c| c.max_requests = 1);
    let start = pair.now;
    let soon = Context::new().with_deadline(start + Duration::from_secs(3));
    let later = Context::new().with_deadline(start + Duration::from_secs(7));
    pair.client.send_request(1, request("S.sent", b"").with_ctx(soon), "sent").expect("accepted");
    pair.client.send_request(3, request("S.waits", b"").with_ctx(later), "waits").expect("accepted");
    assert_eq!(ids(&pair.server_requests()), [1], "the second waits for room");
    assert_eq!(pair.client.next_timeout(), start + Duration::from_secs(3), "the earliest deadline");

    pair.client.on_timeout(start + Duration::from_secs(3)).expect("alive");
    let seen = events(&mut pair.client);
    let [Event::Response { token: "sent", result: Err(status), .. }] = seen.as_slice() else { panic!("{seen:?}") };
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(status.message(), "deadline of 3000ms exceeded calling S.sent on server-1");
    assert!(!status.is_unprocessed(), "it was sent: it may have run");
    // Its CANCEL made room: the waiting call goes, and its own deadline is next.
    assert_eq!(pair.server_events().len(), 1, "the server hears the CANCEL");
    assert_eq!(ids(&requests(&mut pair.server)), [3]);
    assert_eq!(pair.client.next_timeout(), start + Duration::from_secs(7));

    // A call that never left fails at its deadline too, marked unprocessed.
    pair.client
        .send_request(
            5,
            request("S.never", b"").with_ctx(Context::new().with_deadline(start + Duration::from_secs(5))),
            "never",
        )
        .expect("accepted");
    pair.client.on_timeout(start + Duration::from_secs(5)).expect("alive");
    let seen = events(&mut pair.client);
    let [Event::Response { token: "never", result: Err(status), .. }] = seen.as_slice() else { panic!("{seen:?}") };
    assert!(status.is_unprocessed() && status.code() == Code::DeadlineExceeded, "{status:?}");
    assert!(pair.client.take_output().is_empty(), "nothing sent for it");
}

#[test]
fn a_call_whose_deadline_passed_before_it_could_go_is_not_sent() {
    let mut pair = pair_with_server(|c| c.max_requests = 1);
    let start = pair.now;
    // Late when it reaches the mux: refused at once, its token handed back, nothing written.
    let late = Context::new().with_deadline(start + Duration::from_secs(1));
    let after = start + Duration::from_secs(2);
    let next_timeout = pair.client.next_timeout();
    let (status, token) =
        pair.client.send_request_at(1, request("S.late", b"").with_ctx(late), "late", after).expect_err("too late");
    assert_eq!(token, "late");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(status.is_unprocessed(), "never sent: {status:?}");
    assert_eq!(status.message(), "the deadline had passed before S.late reached the connection to server-1");
    assert!(pair.client.take_output().is_empty(), "nothing sent for it");
    assert_eq!(pair.client.next_timeout(), next_timeout, "no deadline kept for it");

    // One that waits for room and whose deadline passes before the timer comes to fail it is
    // not sent when room comes. Its deadline is `start`: ten seconds ahead of the clock it is
    // queued at, and already past by the real clock, which the mux reads when room comes.
    let queued_at = start.checked_sub(Duration::from_secs(10)).expect("a clock ten seconds back");
    pair.client.send_request_at(3, request("S.first", b""), "first", queued_at).expect("sent");
    let waits = Context::new().with_deadline(start);
    pair.client.send_request_at(5, request("S.waits", b"").with_ctx(waits), "waits", queued_at).expect("queued");
    assert_eq!(ids(&pair.server_requests()), [3], "the second waits for room");
    pair.server.finish(3, &ok(b""));
    let seen = pair.client_events();
    // The answer's room is given to the waiting call before the answer is reported.
    let [
        Event::Response { token: "waits", result: Err(status), .. },
        Event::Response { token: "first", result: Ok(_), .. },
    ] = seen.as_slice()
    else {
        panic!("{seen:?}")
    };
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(status.is_unprocessed(), "never sent: {status:?}");
    assert_eq!(status.message(), "deadline of 10.0s exceeded calling S.waits on server-1");
    assert!(pair.server_requests().is_empty(), "the server never hears of it");
    assert_eq!(pair.client.stats().calls_waiting, 0);
}

#[test]
fn durations_read_as_people_write_them() {
    let cases = [
        (Duration::from_micros(250), "250µs"),
        (Duration::from_micros(99_987), "100ms"),
        (Duration::from_millis(1500), "1500ms"),
        (Duration::from_secs(12), "12.0s"),
    ];
    for (duration, text) in cases {
        assert_eq!(Rounded(duration).to_string(), text);
    }
}

// ---- calls the other way: the accepting side calls the connecting side ----

/// A pair whose client announces `configure`d limits.
fn pair_with_client(configure: impl FnOnce(&mut MuxConfig)) -> Pair {
    pair_with(configure, |_| {})
}

#[test]
fn calls_cross_in_both_directions_on_one_connection() {
    let mut pair = Pair::new();
    pair.client.send_request(1, request("Up.m", b"c1"), "client's first").expect("sent");
    pair.server.send_request(2, request("Down.m", b"s2"), "server's first").expect("sent");
    pair.client.send_request(3, request("Up.m", b"c3"), "client's second").expect("sent");
    pair.server.send_request(4, request("Down.m", b"s4").with_oneway(true), "server's oneway").expect("queued");

    // Each side hands over the other's requests, and only those.
    assert!(pair.client_events().is_empty());
    let written = events(&mut pair.server);
    assert!(
        matches!(written.as_slice(), [Event::Response { token: "server's oneway", result: Ok(_), .. }]),
        "a oneway call ends once written: {written:?}"
    );
    let to_client = requests(&mut pair.client);
    assert_eq!(ids(&to_client), [2, 4]);
    assert!(to_client[1].is_oneway());
    assert_eq!(ids(&pair.server_requests()), [1, 3]);
    assert_eq!((pair.client.pending_len(), pair.client.inbound_len()), (2, 2));
    assert_eq!((pair.server.pending_len(), pair.server.inbound_len()), (1, 2));

    // Answers go back to the right callers, whichever direction.
    pair.client.finish(2, &ok(b"to the server"));
    pair.client.finish(4, &ok(b"oneway: not sent"));
    pair.server.finish(3, &ok(b"to the client"));
    let events = pair.server_events();
    let [Event::Response { token: "server's first", result: Ok(answer), .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(answer.payload(), &b"to the server"[..]);
    let events = pair.client_events();
    assert!(
        matches!(events.as_slice(), [Event::Response { token: "client's second", result: Ok(_), .. }]),
        "{events:?}"
    );
    assert_eq!((pair.server.pending_len(), pair.client.inbound_len()), (0, 0));
    assert_eq!(pair.client.pending_len(), 1, "the client's first call is still being handled");
}

#[test]
fn the_connecting_side_s_limits_hold_back_the_accepting_side_s_calls() {
    let mut pair = pair_with_client(|c| c.max_requests = 1);
    pair.server.send_request(2, request("Down.m", b""), "first").expect("sent");
    pair.server.send_request(4, request("Down.m", b""), "second").expect("queued");
    assert_eq!(pair.server.stats().calls_waiting, 1, "the client allows one at a time");
    pair.client_events();
    assert_eq!(ids(&requests(&mut pair.client)), [2]);
    pair.client.finish(2, &ok(b""));
    pair.server_events();
    assert_eq!(pair.server.stats().calls_waiting, 0, "its answer lets the second go");
    pair.client_events();
    assert_eq!(ids(&requests(&mut pair.client)), [4]);
}

#[test]
fn the_accepting_side_s_calls_have_deadlines_and_cancels_too() {
    let mut pair = Pair::new();
    let ctx = Context::new().with_deadline(pair.now + Duration::from_secs(1));
    pair.server.send_request_at(2, request("Down.slow", b"").with_ctx(ctx), "slow", pair.now).expect("sent");
    pair.client_events();
    assert_eq!(ids(&requests(&mut pair.client)), [2]);
    pair.now += Duration::from_secs(1);
    let now = pair.now;
    pair.server.on_timeout(now).expect("the deadline is no violation");
    let events = events(&mut pair.server);
    let [Event::Response { token: "slow", result: Err(status), .. }] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(!status.is_unprocessed(), "it was sent");
    let events = pair.client_events();
    assert!(
        matches!(events.as_slice(), [Event::Cancel { id: 2, .. }]),
        "the client's handler is cancelled: {events:?}"
    );
}

#[test]
fn a_goaway_from_the_connecting_side_stops_the_accepting_side_s_new_calls() {
    let mut pair = Pair::new();
    pair.server.send_request(2, request("Down.m", b""), "in flight").expect("sent");
    pair.client_events();
    requests(&mut pair.client);
    pair.client.go_away(Code::Unavailable, "the client closed its channel");
    let events = pair.server_events();
    assert!(matches!(events.as_slice(), [Event::GoAway(_)]), "{events:?}");
    let (status, token) = pair.server.send_request(4, request("Down.m", b""), "too late").expect_err("refused");
    assert_eq!((status.code(), status.is_unprocessed(), token), (Code::Unavailable, true, "too late"));
    // The call in flight still completes.
    pair.client.finish(2, &ok(b"done"));
    let events = pair.server_events();
    assert!(matches!(events.as_slice(), [Event::Response { token: "in flight", result: Ok(_), .. }]), "{events:?}");
    assert!(pair.server.is_drained() && pair.client.is_drained());
}

/// A compressed payload declaring `declared` bytes; the mux never decompresses it.
fn compressed_payload(declared: u32) -> Bytes {
    let header = frame::CompressedHeader { compression: zrpc_core::Compression::Zstd.id(), len: declared };
    Bytes::from([&header.to_bytes()[..], b"compressed bytes"].concat())
}

#[test]
fn a_compressed_request_counts_as_its_wire_size_plus_its_declared_length_on_both_sides() {
    // The server takes 64 KiB of requests in progress; each request declares 40 KiB: one fits,
    // two do not, though on the wire they are a few dozen bytes each.
    let mut pair = pair_with_server(|c| c.max_request_bytes = 64 * 1024);
    let call = || Request::new("S.m", compressed_payload(40 * 1024));
    let now = pair.now;
    assert!(pair.client.send_compressed_request_at(1, call(), "first", now).is_ok());
    assert!(pair.client.send_compressed_request_at(3, call(), "second", now).is_ok());
    assert_eq!(pair.client.stats().calls_waiting, 1, "the second waits for room");
    assert_eq!(pair.client.stats().compressed_frames_sent, 1);

    let handed = pair.server_requests();
    assert_eq!(ids(&handed), [1]);
    assert_eq!(handed[0].flags & frame::flags::COMPRESSED, frame::flags::COMPRESSED);
    assert_eq!(handed[0].payload, compressed_payload(40 * 1024), "handed over as it came");
    let wire = pair.server.decoder.last_len();
    let stats = pair.server.stats();
    assert_eq!(stats.request_bytes_in_progress, wire + 40 * 1024, "{stats:?}");
    assert_eq!(stats.compressed_frames_received, 1);

    pair.server.finish(1, &ok(b"done"));
    assert!(matches!(pair.client_events().as_slice(), [Event::Response { token: "first", compressed: false, .. }]));
    assert_eq!(ids(&pair.server_requests()), [3], "the first's room went to the second");
}

#[test]
fn a_compressed_request_declaring_more_than_the_peer_takes_is_refused_unsent() {
    let mut pair = Pair::new();
    let now = pair.now;
    let call = Request::new("S.m", compressed_payload(frame::DEFAULT_MAX_FRAME + 1));
    let Err((status, "big")) = pair.client.send_compressed_request_at(1, call, "big", now) else { panic!("refused") };
    assert_eq!((status.code(), status.is_unprocessed()), (Code::ResourceExhausted, true), "{status}");
    assert_eq!(pair.client.stats().compressed_frames_sent, 0);
    assert!(pair.server_requests().is_empty(), "nothing was sent");
}

#[test]
fn a_compressed_answer_is_reported_as_it_came_and_counted() {
    let mut pair = Pair::new();
    assert!(pair.client.send_request(1, request("S.m", b"x"), "call").is_ok());
    assert_eq!(ids(&pair.server_requests()), [1]);
    pair.server.finish_compressed(1, &Ok(Response::new(compressed_payload(4096))));
    let saved = pair.server.stats().compression_bytes_saved;
    assert_eq!(saved, 4096 - compressed_payload(4096).len() as u64);
    let events = pair.client_events();
    let [Event::Response { token: "call", result: Ok(response), compressed: true }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(response.payload(), &compressed_payload(4096), "the caller decompresses, not the mux");
    assert_eq!(pair.client.stats().compressed_frames_received, 1);
}
