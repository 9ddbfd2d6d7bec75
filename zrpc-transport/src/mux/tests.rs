//! Two muxes wired back to back: every rule of the module docs, with no sockets and no clock.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;
use zrpc_core::{Code, Context, Request, Response, Status};

use super::*;

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
        let now = Instant::now();
        let mut pair = Pair {
            client: Mux::new(Role::Connector, config("client-1"), now),
            server: Mux::new(Role::Acceptor, config("server-1"), now),
            to_client: BytesMut::new(),
            to_server: BytesMut::new(),
            now,
        };
        assert!(matches!(pair.server_events().as_slice(), [Event::Ready]));
        assert!(matches!(pair.client_events().as_slice(), [Event::Ready]));
        pair
    }

    /// Moves the client's output to the server and returns what the server saw.
    fn server_events(&mut self) -> Vec<Event<&'static str>> {
        self.to_server.extend_from_slice(&self.client.out().split());
        let mut events = Vec::new();
        while let Some(event) = self.server.recv(&mut self.to_server, self.now).expect("valid input") {
            events.push(event);
        }
        events
    }

    /// Lets the client's heartbeat interval pass: it pings, and the server reads the PING (its
    /// PONG waits in its output).
    fn ping_after_the_interval(&mut self) {
        self.now += Duration::from_secs(10);
        self.client.on_timeout(self.now).expect("pings");
        self.server_events();
    }

    fn client_events(&mut self) -> Vec<Event<&'static str>> {
        self.to_client.extend_from_slice(&self.server.out().split());
        let mut events = Vec::new();
        while let Some(event) = self.client.recv(&mut self.to_client, self.now).expect("valid input") {
            events.push(event);
        }
        events
    }
}

fn request(method: &'static str, payload: &'static [u8]) -> Request {
    Request::new(method, Bytes::from_static(payload))
}

fn ok(payload: &'static [u8]) -> Result<Response, Status> {
    Ok(Response::new(Bytes::from_static(payload)))
}

fn request_ids(events: &[Event<&'static str>]) -> Vec<u64> {
    events
        .iter()
        .map(|e| match e {
            Event::Request(frame) => frame.id,
            other => panic!("expected a request, got {other:?}"),
        })
        .collect()
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
        assert!(matches!(pair.client.send_request(id, &request("S.m", b"x"), token), Ok(None)));
    }
    let events = pair.server_events();
    assert_eq!(request_ids(&events), [1, 3, 5]);
    assert_eq!(pair.server.inbound_len(), 3);

    pair.server.respond(5, &ok(b"five"));
    pair.server.respond(1, &Err(Status::not_found("no such thing")));
    pair.server.respond(3, &ok(b"three"));
    let answers: Vec<_> = pair
        .client_events()
        .into_iter()
        .map(|e| match e {
            Event::Response { token, result } => (token, result.map(|r| r.into_payload()).map_err(|s| s.code())),
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
fn request_fields_survive_the_trip() {
    let mut pair = Pair::new();
    let ctx = Context::new().with_timeout(Duration::from_millis(250)).with_metadata("k", "v");
    let req = request("Greeter.hello", b"args").with_ctx(ctx).with_idempotent(true);
    pair.client.send_request(7, &req, "t").expect("sent");
    let events = pair.server_events();
    let [Event::Request(frame)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(frame.method_str(), "Greeter.hello");
    assert_eq!(&frame.payload[..], b"args");
    assert!(frame.is_idempotent() && !frame.is_oneway());
    assert_eq!(frame.metadata.get("k").map(|v| &v[..]), Some(&b"v"[..]));
    let timeout = frame.timeout.expect("a deadline travels");
    assert!(timeout <= Duration::from_millis(250) && timeout > Duration::ZERO, "{timeout:?}");
}

#[test]
fn cancel_reaches_the_server_and_the_late_answer_is_dropped() {
    let mut pair = Pair::new();
    pair.client.send_request(1, &request("S.slow", b""), "slow").expect("sent");
    assert_eq!(request_ids(&pair.server_events()), [1]);

    assert_eq!(pair.client.cancel(1), Some("slow"));
    assert_eq!(pair.client.cancel(1), None, "a second cancel sends nothing");
    let events = pair.server_events();
    assert!(matches!(events.as_slice(), [Event::Cancel { id: 1 }]), "{events:?}");

    // The handler finished anyway; its answer is not sent.
    pair.server.respond(1, &ok(b"late"));
    assert!(pair.server.out().is_empty());
}

#[test]
fn an_answer_crossing_a_cancel_is_ignored() {
    let mut pair = Pair::new();
    pair.client.send_request(1, &request("S.m", b""), "t").expect("sent");
    pair.server_events();
    pair.server.respond(1, &ok(b"crossed"));
    pair.client.cancel(1);
    assert!(pair.client_events().is_empty());
}

#[test]
fn oneway_requests_are_not_remembered() {
    let mut pair = Pair::new();
    let sent = pair.client.send_request(1, &request("S.log", b"line").with_oneway(true), "t");
    assert!(matches!(sent, Ok(Some("t"))), "the token comes straight back");
    assert_eq!(pair.client.pending_len(), 0);
    let events = pair.server_events();
    let [Event::Request(frame)] = events.as_slice() else { panic!("{events:?}") };
    assert!(frame.is_oneway());
    pair.server.finish_oneway(1);
    assert_eq!(pair.server.inbound_len(), 0);
    assert!(pair.server.out().is_empty());
}

#[test]
fn a_oneway_call_is_never_answered_and_a_two_way_call_always_is() {
    let mut pair = Pair::new();
    pair.client.send_request(1, &request("S.log", b"line").with_oneway(true), "log").expect("sent");
    pair.client.send_request(3, &request("S.get", b"key"), "get").expect("sent");
    assert_eq!(request_ids(&pair.server_events()), [1, 3]);

    // Mixed up by a driver, each is refused: the protocol forbids a RESPONSE to a oneway call,
    // and a two-way caller waits for one.
    pair.server.respond(1, &ok(b"not for a oneway call"));
    pair.server.finish_oneway(3);
    assert!(pair.server.out().is_empty(), "nothing sent");
    assert_eq!(pair.server.inbound_len(), 2, "both still in progress");

    pair.server.finish_oneway(1);
    pair.server.respond(3, &ok(b"value"));
    assert_eq!(pair.server.inbound_len(), 0);
    let events = pair.client_events();
    let [Event::Response { token: "get", result: Ok(response) }] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(response.payload(), &Bytes::from_static(b"value"));
}

fn violation_of(mux: &mut Mux<&'static str>, bytes: &[u8], now: Instant) -> ProtocolError {
    let mut buf = BytesMut::from(bytes);
    loop {
        match mux.recv(&mut buf, now) {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("accepted {bytes:?}"),
            Err(e) => return e,
        }
    }
}

fn frame_bytes(encode: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(&mut buf);
    buf.to_vec()
}

fn assert_goaway_queued(mux: &mut Mux<&'static str>) {
    let mut out = mux.out().split();
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
    pair.client.send_request(1, &request("S.m", b""), "t").expect("sent");
    pair.server_events();
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
    pair.client.send_request(1, &request("S.m", b""), "t").expect("sent");
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
    assert!(matches!(server.recv(&mut more, now), Ok(None)));
    assert!(server.out().is_empty());
}

#[test]
fn an_http_request_is_refused_at_the_preface() {
    let now = Instant::now();
    let mut server: Mux<&'static str> = Mux::new(Role::Acceptor, config("s"), now);
    let err = violation_of(&mut server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", now);
    assert_eq!(err, ProtocolError::Frame(FrameError::BadPreface));
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
    pair.server.out().clear();

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
    assert!(matches!(client.recv(&mut bytes, start + Duration::from_secs(4)), Ok(None)));
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
    pair.to_client.extend_from_slice(&pair.server.out().split());
    let late = pair.to_client.clone();
    assert!(matches!(pair.client.recv(&mut pair.to_client, pair.now), Ok(None)));
    assert_eq!(pair.to_client, late);

    // The same when the handshake never completed: a late HELLO does not make the mux ready.
    let now = Instant::now();
    let mut client: Mux<&'static str> = Mux::new(Role::Connector, config("c"), now);
    let mut server: Mux<&'static str> = Mux::new(Role::Acceptor, config("s"), now);
    client.on_timeout(now + Duration::from_secs(5)).expect_err("gave up");
    let mut hello = server.out().split();
    assert!(matches!(client.recv(&mut hello, now + Duration::from_secs(5)), Ok(None)));
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
    pair.client.send_request(1, &request("S.m", b""), "in-flight").expect("sent");
    pair.server_events();
    pair.server.go_away(Code::Unavailable, "shutting down");
    let events = pair.client_events();
    let [Event::GoAway(goaway)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(goaway.last_id, 1);
    assert!(pair.client.is_draining() && !pair.client.is_drained());

    let (status, token) = pair.client.send_request(3, &request("S.m", b""), "new").expect_err("refused");
    assert_eq!((status.code(), token), (Code::Unavailable, "new"));
    assert!(status.is_unprocessed(), "never sent, so safe to send elsewhere");

    pair.server.respond(1, &ok(b"done"));
    let events = pair.client_events();
    assert!(matches!(events.as_slice(), [Event::Response { token: "in-flight", result: Ok(_) }]), "{events:?}");
    assert!(pair.client.is_drained() && pair.server.is_drained());
}

#[test]
fn a_request_crossing_goaway_is_refused_unprocessed() {
    let mut pair = Pair::new();
    pair.server.go_away(Code::Unavailable, "shutting down");
    // The client sent before it read the GOAWAY.
    pair.client.send_request(1, &request("S.m", b""), "crossed").expect("sent");
    assert!(pair.server_events().is_empty(), "the server does not process it");
    let events = pair.client_events();
    let answer = events.iter().find_map(|e| match e {
        Event::Response { token, result: Err(status) } => Some((*token, status.code(), status.is_unprocessed())),
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
    let before = pair.client.out().len();
    let (status, _) = pair.client.send_request(1, &request("S.m", &BIG), "t").expect_err("too big");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.is_unprocessed(), "never sent, so another endpoint may take it: {status:?}");
    assert_eq!(pair.client.out().len(), before, "nothing was queued");

    pair.client.send_request(3, &request("S.m", b""), "t").expect("small request");
    pair.server_events();
    pair.server.respond(3, &ok(&BIG));
    let events = pair.client_events();
    let [Event::Response { result: Err(status), .. }] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[test]
fn only_refusals_carry_the_unprocessed_mark_across_the_wire() {
    let mut pair = Pair::new();
    for id in [1, 3] {
        pair.client.send_request(id, &request("S.m", b""), "t").expect("sent");
    }
    pair.server_events();
    pair.server.respond(1, &Err(Status::resource_exhausted("rate limited").mark_unprocessed()));
    pair.server.respond(3, &Err(Status::internal("handler failed")));
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
