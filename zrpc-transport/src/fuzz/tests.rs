//! The fuzz entry points on known conversations, then on seeded random mutations of them: the
//! checks run in every `cargo test`, and the inputs must reach deep enough to be worth it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use zrpc_core::{Code, Request, Response};

use super::mux_local::Step;
use super::*;
use crate::frame::{FlowLimits, FrameError, GoAway, Hello};

fn request(buf: &mut BytesMut, id: u64, payload: &[u8]) {
    let request = Request::new("S.m", Bytes::copy_from_slice(payload));
    frame::encode_request(buf, id, &request, frame::DEFAULT_MAX_FRAME).expect("encodes");
}

fn response(buf: &mut BytesMut, id: u64) {
    frame::encode_response(buf, id, &Ok(Response::new(Bytes::new())), frame::DEFAULT_MAX_FRAME).expect("encodes");
}

/// What a connector's peer (an acceptor: even ids) might say after its HELLO.
fn conversation() -> Vec<u8> {
    let mut buf = BytesMut::new();
    request(&mut buf, 2, b"echo me");
    request(&mut buf, 4, &[7; 600]);
    request(&mut buf, 6, b"left in progress");
    frame::encode_cancel(&mut buf, 6);
    frame::encode_ping(&mut buf, 9);
    response(&mut buf, 1);
    response(&mut buf, 5);
    frame::encode_goaway(&mut buf, &GoAway { last_id: 3, code: 14, message: "bye".into() });
    response(&mut buf, 3);
    buf.to_vec()
}

fn mux_input(control: u8, seed: u8, peer: &[u8]) -> Vec<u8> {
    [&[control, seed][..], peer].concat()
}

#[test]
fn a_conversation_reaches_every_event() {
    // Read in rounds of 32 bytes, with the driver acting between them: Ready; the end of our
    // oneway call 5 once written; requests 2, 4, 6 handed over; cancel 6; response 1; GOAWAY;
    // response 3. (The peer's answer to 5 is ignored: a oneway call gets none.)
    assert_eq!(mux(&mux_input(0, 16, &conversation())), Report { count: 9, error: None });
    // Read at once, 6 is cancelled before it was handed over: dropped quietly, no event.
    for seed in 0..8 {
        let report = mux(&mux_input(0, seed, &conversation()));
        assert_eq!(report, Report { count: 7, error: None }, "seed {seed}");
    }
    // With a 1024-byte peer limit, the 1200-byte echo is replaced by an error: still 7 events.
    assert_eq!(mux(&mux_input(2, 0, &conversation())), Report { count: 7, error: None });
    // A peer that predates FLOW: the same, without CREDIT.
    assert_eq!(mux(&mux_input(8, 0, &conversation())), Report { count: 7, error: None });
    // Our GOAWAY right after Ready: requests that came with the HELLO are handed over...
    assert_eq!(mux(&mux_input(4, 0, &conversation())), Report { count: 7, error: None });
    // ...those that came after it are refused, so the cancel finds nothing: Ready, the end of
    // 5, response 1, GOAWAY, response 3.
    assert_eq!(mux(&mux_input(4, 40, &conversation())), Report { count: 5, error: None });
}

#[test]
fn violations_end_the_run_with_their_error() {
    let mut wrong_parity = BytesMut::new();
    request(&mut wrong_parity, 3, b"");
    let report = mux(&mux_input(0, 1, &wrong_parity));
    assert_eq!(report.count, 2, "only Ready, and our oneway call's end once written");
    assert!(matches!(report.error, Some(ProtocolError::Violation(ref m)) if m.contains("parity")), "{report:?}");

    let mut never_sent = BytesMut::new();
    response(&mut never_sent, 7);
    let report = mux(&mux_input(0, 1, &never_sent));
    assert!(matches!(report.error, Some(ProtocolError::Violation(ref m)) if m.contains("never opened")));

    // The acceptor opens even ids, so the same odd id is fine the other way round.
    let mut twice = BytesMut::new();
    request(&mut twice, 3, b"");
    request(&mut twice, 3, b"");
    let report = mux(&mux_input(1, 1, &twice));
    assert!(matches!(report.error, Some(ProtocolError::Violation(ref m)) if m.contains("in progress")));

    let oversized = [&[0, 0, 4, 1][..], &[0; 1025]].concat();
    let report = mux(&mux_input(0, 1, &oversized));
    assert_eq!(report.error, Some(ProtocolError::Frame(FrameError::FrameTooLarge { len: 1025, max: 1024 })));
}

fn hello_bytes(max_frame: u32, flow: Option<FlowLimits>) -> Vec<u8> {
    let hello = Hello {
        name: "peer".into(),
        max_frame,
        codecs: vec![0, 1],
        compressions: vec![],
        token: Bytes::from_static(b"token"),
        flow,
        inbox: false,
        inbox_batches: false,
    };
    let mut buf = BytesMut::new();
    frame::encode_preface(&mut buf);
    frame::encode_hello(&mut buf, &hello).expect("encodes");
    buf.to_vec()
}

#[test]
fn handshakes_end_as_the_protocol_says() {
    let hello = hello_bytes(4096, Some(FlowLimits { max_requests: 9, request_bytes: 0 }));
    for control in 0..4 {
        assert_eq!(handshake(&[&[control][..], &hello].concat()), Report { count: 1, error: None });
        let cut = &hello[..hello.len() - 1];
        assert_eq!(handshake(&[&[control][..], cut].concat()), Report { count: 0, error: None });
    }
    let http = handshake(b"\x00GET / HTTP/1.1\r\n");
    assert_eq!(http.error, Some(ProtocolError::Frame(FrameError::BadPreface)));
    // A TLS record's first byte names TLS in the error, however the bytes arrive: the fuzzer
    // found a first version that looked at two bytes, and so depended on the reads.
    let tls = handshake(&[10, 0x16, 0x03]);
    assert_eq!(tls.error, Some(ProtocolError::Frame(FrameError::TlsInsteadOfPreface)));
    let version = handshake(b"\x01ZRPC\x02");
    assert_eq!(version.error, Some(ProtocolError::Frame(FrameError::UnsupportedVersion(2))));
    let mut ping_first = BytesMut::from(&b"\x00"[..]);
    frame::encode_preface(&mut ping_first);
    frame::encode_ping(&mut ping_first, 1);
    let report = handshake(&ping_first);
    assert_eq!(report.error, Some(ProtocolError::Violation("the first frame must be HELLO".into())));
}

/// Valid input with up to three bytes changed, and one time in three the end cut off.
fn mutated(rng: &mut fastrand::Rng, valid: &[u8]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for _ in 0..rng.usize(0..4) {
        let i = rng.usize(..bytes.len());
        bytes[i] = rng.u8(..);
    }
    if rng.usize(..3) == 0 {
        bytes.truncate(rng.usize(..=bytes.len()));
    }
    bytes
}

#[test]
fn mutated_conversations_keep_the_invariants() {
    let mut rng = fastrand::Rng::with_seed(0x5a52_5043);
    let conversation = conversation();
    let (mut events, mut errors) = (0, 0);
    for round in 0..500 {
        let input = mux_input(rng.u8(..), rng.u8(..), &mutated(&mut rng, &conversation));
        let report = mux(&input);
        events += report.count;
        errors += usize::from(report.error.is_some());
        assert!(report.count >= 1, "round {round}: the peer's HELLO always arrives");
    }
    assert!(events > 1000 && (150..400).contains(&errors), "{events} events, {errors} errors");
}

#[test]
fn mutated_handshakes_keep_the_invariants() {
    let mut rng = fastrand::Rng::with_seed(0x4845_4c4f);
    let (mut ready, mut errors, mut waiting) = (0, 0, 0);
    for _ in 0..2000 {
        let flow = rng.bool().then(|| FlowLimits { max_requests: rng.u32(1..9), request_bytes: rng.u32(..) });
        let valid = [&[rng.u8(..)][..], &hello_bytes(rng.u32(1024..=65536), flow)].concat();
        let report = handshake(&mutated(&mut rng, &valid));
        match report {
            Report { error: Some(_), .. } => errors += 1,
            Report { count: 1, .. } => ready += 1,
            _ => waiting += 1,
        }
    }
    assert!(ready > 200 && errors > 200 && waiting > 200, "{ready} ready, {errors} errors, {waiting} waiting");
}

#[test]
fn empty_and_tiny_inputs_are_no_runs() {
    assert_eq!(frames(b"", 1024), Report::default());
    assert_eq!(mux(b"\x00"), Report::default());
    assert_eq!(handshake(b""), Report::default());
    assert_eq!(mux_local(b"\x00"), Report::default());
    // No steps: the peer never speaks, so the mux never becomes ready.
    assert_eq!(mux_local(b"\x00\x00"), Report { count: 0, error: None });
    // A bare header byte is a run over nothing: the mux becomes ready, and its oneway call ends
    // once written.
    assert_eq!(mux(b"\x00\x00"), Report { count: 2, error: None });
}

fn script(control: u8, seed: u8, steps: &[Step<'_>]) -> Vec<u8> {
    let mut input = vec![control, seed];
    for step in steps {
        step.encode(&mut input);
    }
    input
}

#[test]
fn local_calls_cancels_and_answers_follow_the_model() {
    use Step::*;
    // A connector: its calls are 1, 3 (oneway), 5, made before the peer's HELLO, then 7 of 1250
    // bytes; the peer's are 2 and 4 (oneway).
    let steps = [
        Call { size: 1, oneway: false },
        Call { size: 1, oneway: true },
        Call { size: 1, oneway: false },
        PeerRequest { pick: 1, size: 1, oneway: false, crowded: false },
        PeerRequest { pick: 1, size: 1, oneway: true, crowded: false },
        Next,
        Next,
        Next,
        PeerResponse { pick: 0, error: false },
        Cancel { pick: 2 },
        // The answers to the cancelled call and to the oneway one are ignored.
        PeerResponse { pick: 2, error: true },
        PeerResponse { pick: 1, error: false },
        // 2 is answered, once: the second answer finds it done. Oneway 4 gets no answer, and
        // its credit goes back.
        Finish { pick: 0, size: 1, error: false },
        Finish { pick: 0, size: 1, error: true },
        Finish { pick: 1, size: 1, error: false },
        PeerCancel { pick: 0 },
        // Written: the oneway call 3 ends.
        Write { units: 255 },
        Call { size: 250, oneway: false },
        Drain,
    ];
    // Ready; requests 2 and 4 handed over; the response to 1; the end of 3.
    for seed in 0..8 {
        assert_eq!(mux_local(&script(0, seed, &steps)), Report { count: 5, error: None }, "seed {seed}");
    }
    // Within the peer's 16 MiB, call 7 goes out and is still pending when drained.
    assert_eq!(mux_local(&script(2, 0, &steps)), Report { count: 5, error: None });
    // The acceptor's ids are the other way round: the same picks find the same calls.
    assert_eq!(mux_local(&script(1, 0, &steps)), Report { count: 5, error: None });
    // A peer that predates FLOW gets no CREDIT, and takes all the calls at once.
    assert_eq!(mux_local(&script(8, 0, &steps)), Report { count: 5, error: None });
}

#[test]
fn goaway_either_way_refuses_new_calls_and_drain_marks_the_unprocessed() {
    use Step::*;
    let steps = [
        PeerRequest { pick: 1, size: 1, oneway: false, crowded: false },
        Call { size: 1, oneway: false },
        Call { size: 1, oneway: false },
        GoAway,
        // Refused unprocessed (the two-way one answered, the oneway one not), never handed over.
        PeerRequest { pick: 1, size: 1, oneway: false, crowded: false },
        PeerRequest { pick: 1, size: 1, oneway: true, crowded: false },
        Next,
        Next,
        Call { size: 1, oneway: false },
        GoAway,
        Finish { pick: 0, size: 1, error: false },
        // The peer's GOAWAY says it saw call 1: only call 3 is unprocessed.
        PeerGoAway { pick: 0, code: Code::Unavailable },
        Drain,
        PeerResponse { pick: 0, error: false },
    ];
    // Ready, request 2 handed over, GOAWAY.
    assert_eq!(mux_local(&script(0, 3, &steps)), Report { count: 3, error: None });
}

#[test]
fn a_refusing_goaway_fails_the_waiting_calls_and_every_later_one_with_its_code() {
    use Step::*;
    for code in [Code::ResourceExhausted, Code::Unauthenticated, Code::PermissionDenied] {
        let steps = [
            // The peer takes 3 requests in progress: the fourth waits.
            Call { size: 1, oneway: false },
            Call { size: 1, oneway: false },
            Call { size: 1, oneway: false },
            Call { size: 1, oneway: false },
            // The model predicts the waiting call and the next fail with `code`, unprocessed,
            // and a later GOAWAY saying `Unavailable` changes nothing.
            PeerGoAway { pick: 0, code },
            Call { size: 1, oneway: true },
            PeerGoAway { pick: 0, code: Code::Unavailable },
            Call { size: 1, oneway: false },
        ];
        // Ready, the waiting call's answer (the refusal), the GOAWAY.
        assert_eq!(mux_local(&script(0, 0, &steps)), Report { count: 3, error: None }, "{code:?}");
    }
    // A refusal's code on a GOAWAY after the first is a shutdown's: the calls fail
    // `Unavailable`.
    let steps = [
        PeerGoAway { pick: 0, code: Code::Unavailable },
        PeerGoAway { pick: 0, code: Code::ResourceExhausted },
        Call { size: 1, oneway: false },
    ];
    assert_eq!(mux_local(&script(0, 0, &steps)), Report { count: 2, error: None });
}

#[test]
fn the_heartbeat_pings_a_quiet_peer_and_declares_a_silent_one_dead() {
    use Step::*;
    let quiet = [PeerPing { nonce: 9, pong: false }, Wait { millis: 9_999 }, Wait { millis: 1 }];
    let answered = [&quiet[..], &[PeerPing { nonce: 1, pong: true }, Wait { millis: 10_000 }]].concat();
    assert_eq!(mux_local(&script(0, 0, &answered)), Report { count: 1, error: None });
    let silent = [&quiet[..], &[Wait { millis: 19_999 }, Wait { millis: 1 }]].concat();
    let dead = Some(ProtocolError::HeartbeatTimeout(Duration::from_secs(20)));
    assert_eq!(mux_local(&script(1, 0, &silent)), Report { count: 1, error: dead });
    // A frame of any kind is a sign of life, even a PONG nobody asked for.
    let busy = [&quiet[..], &[Wait { millis: 19_999 }, PeerPing { nonce: 3, pong: true }, Wait { millis: 1 }]].concat();
    assert_eq!(mux_local(&script(1, 0, &busy)), Report { count: 1, error: None });
    // Even one of a kind the decoder skips (found by the fuzzer when the mux began to count
    // those: the model had not). Kind 0x7f, no flags, id 0, no body.
    let unknown = [0, 0, 0, 10, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let skipped = [&quiet[..], &[Wait { millis: 19_999 }, Bytes(&unknown), Wait { millis: 1 }]].concat();
    assert_eq!(mux_local(&script(1, 0, &skipped)), Report { count: 1, error: None });
}

#[test]
fn the_handshake_must_arrive_within_the_heartbeat_timeout() {
    use Step::*;
    let late = [Call { size: 1, oneway: false }, Wait { millis: 19_999 }, Wait { millis: 1 }];
    let error = Some(ProtocolError::HandshakeTimeout(Duration::from_secs(20)));
    assert_eq!(mux_local(&script(0, 0, &late)), Report { count: 0, error });
    let in_time = [Wait { millis: 19_999 }, PeerPing { nonce: 1, pong: false }, Wait { millis: 19_999 }];
    assert_eq!(mux_local(&script(0, 0, &in_time)), Report { count: 1, error: None });
}

#[test]
fn calls_wait_for_the_peer_s_flow_limits_and_go_in_order() {
    use Step::*;
    let steps = [
        PeerPing { nonce: 1, pong: true },
        // The peer takes 3 requests: two go, with a oneway one; 7 and 9 wait.
        Call { size: 1, oneway: false },
        Call { size: 1, oneway: false },
        Call { size: 1, oneway: true },
        Call { size: 1, oneway: false },
        Call { size: 1, oneway: false },
        // An answer lets 7 go; a CREDIT for the oneway call lets 9 go.
        PeerResponse { pick: 0, error: false },
        Write { units: 255 },
        PeerCredit { pick: 1, bogus: false },
        // Two of 200 × 5 bytes: over the peer's 2 KiB together, so the second waits, and a
        // third behind it, however small.
        PeerResponse { pick: 1, error: false },
        PeerResponse { pick: 3, error: false },
        PeerResponse { pick: 4, error: false },
        Call { size: 200, oneway: false },
        Call { size: 200, oneway: false },
        Call { size: 1, oneway: false },
        Write { units: 255 },
        PeerResponse { pick: 5, error: false },
        Drain,
    ];
    // Ready; responses to 1, the end of oneway 5, responses to 3, 7, 9, 11.
    assert_eq!(mux_local(&script(2, 0, &steps)), Report { count: 7, error: None });
    // A bogus CREDIT, one more than the oneway calls in progress, is a violation.
    let bogus = [&steps[..7], &[PeerCredit { pick: 1, bogus: true }]].concat();
    let report = mux_local(&script(2, 0, &bogus));
    assert!(matches!(report.error, Some(ProtocolError::Violation(ref m)) if m.contains("CREDIT")), "{report:?}");
}

#[test]
fn a_peer_over_the_limits_is_not_read_and_its_silence_not_held_against_it() {
    use Step::*;
    let request = PeerRequest { pick: 1, size: 1, oneway: false, crowded: false };
    let steps = [
        // Five requests from a peer that ignores our limit of 3: the fourth takes it over and
        // the fifth is not read.
        request,
        request,
        request,
        request,
        request,
        Next,
        Next,
        Next,
        Next,
        // A minute of silence while we do not read: no PING, no verdict.
        Wait { millis: 30_000 },
        Wait { millis: 30_000 },
        Finish { pick: 0, size: 1, error: false },
        // Back within the limits, the fifth is read; the clock started over.
        Next,
        Wait { millis: 9_999 },
    ];
    // Ready, requests handed over: 2, 4, 6, then 8.
    assert_eq!(mux_local(&script(0, 0, &steps)), Report { count: 5, error: None });
}

#[test]
fn the_output_bound_holds_back_new_work_refusals_pongs_and_credit() {
    use Step::*;
    let steps = [
        PeerRequest { pick: 1, size: 1, oneway: false, crowded: false },
        PeerRequest { pick: 1, size: 1, oneway: false, crowded: false },
        PeerRequest { pick: 1, size: 1, oneway: true, crowded: false },
        Next,
        Next,
        // Two answers of 1000 bytes and more: the output is over its 2048 bytes.
        Finish { pick: 0, size: 200, error: false },
        Finish { pick: 1, size: 200, error: false },
        Finish { pick: 2, size: 200, error: false },
        // Nothing starts, nothing is refused, three PINGs get one PONG later, and no CREDIT
        // goes for the oneway call 6 the peer cancels before it was handed over.
        Next,
        PeerRequest { pick: 1, size: 1, oneway: false, crowded: true },
        PeerRequest { pick: 1, size: 1, oneway: false, crowded: false },
        PeerPing { nonce: 1, pong: false },
        PeerPing { nonce: 2, pong: false },
        PeerPing { nonce: 3, pong: false },
        PeerCancel { pick: 2 },
        Call { size: 1, oneway: false },
        // The driver writes: room again, for all of them.
        Write { units: 100 },
        Write { units: 255 },
        Next,
    ];
    // Ready, 2 and 4 handed over, then 10; the refusal of 8 is output, not an event.
    assert_eq!(mux_local(&script(2, 0, &steps)), Report { count: 4, error: None });
}

#[test]
fn a_peer_that_reads_none_of_our_output_is_given_up() {
    use Step::*;
    let steps = [
        PeerPing { nonce: 1, pong: true },
        Call { size: 1, oneway: false },
        WriteBlocked,
        PeerPing { nonce: 2, pong: false },
        Wait { millis: 10_000 },
        PeerPing { nonce: 3, pong: false },
        Wait { millis: 19_999 },
        Wait { millis: 1 },
    ];
    let report = mux_local(&script(0, 0, &steps));
    assert_eq!(report, Report { count: 1, error: Some(ProtocolError::NotReading(Duration::from_secs(30))) });
    // Writing a byte starts the clock over.
    let writes = [&steps[..7], &[Write { units: 1 }, Wait { millis: 1 }]].concat();
    assert_eq!(mux_local(&script(0, 0, &writes)), Report { count: 1, error: None });
}

/// A step of any kind, calls, hand-overs and waits the likeliest, sizes mostly small; raw bytes
/// (likely a frame cut short) are taken from `raw`.
fn random_step<'a>(rng: &mut fastrand::Rng, raw: &'a [u8]) -> Step<'a> {
    let size = if rng.usize(..4) == 0 { rng.u8(..) } else { rng.u8(..8) };
    let pick = rng.u8(..8);
    match rng.u8(..24) {
        0 if rng.bool() => {
            let start = rng.usize(..raw.len());
            Step::Bytes(&raw[start..raw.len().min(start + rng.usize(..40))])
        }
        1 | 2 => Step::PeerRequest { pick, size, oneway: rng.bool(), crowded: rng.usize(..8) == 0 },
        3 => Step::PeerResponse { pick, error: rng.bool() },
        4 => Step::PeerCancel { pick },
        0 | 5 => Step::PeerPing { nonce: rng.u8(..), pong: rng.bool() },
        6 => {
            let refusals = [Code::ResourceExhausted, Code::Unauthenticated, Code::PermissionDenied];
            let code = if rng.bool() { Code::Unavailable } else { refusals[rng.usize(..refusals.len())] };
            Step::PeerGoAway { pick, code }
        }
        7 => Step::PeerCredit { pick, bogus: rng.usize(..4) == 0 },
        8..=10 => Step::Call { size, oneway: rng.bool() },
        11 => Step::Cancel { pick },
        12 | 13 => Step::Next,
        14 | 15 => Step::Finish { pick, size, error: rng.bool() },
        16 => Step::GoAway,
        17 => Step::Drain,
        18 | 19 => Step::Write { units: if rng.bool() { u8::MAX } else { rng.u8(..) } },
        20 => Step::WriteBlocked,
        _ => Step::Wait { millis: rng.u16(..25_000) },
    }
}

#[test]
fn random_and_mutated_scripts_keep_the_invariants() {
    let mut rng = fastrand::Rng::with_seed(0x4c4f_4341);
    let raw = conversation();
    let (mut events, mut clean, mut dead, mut violations, mut malformed) = (0, 0, 0, 0, 0);
    for _ in 0..1000 {
        let steps: Vec<_> = (0..rng.usize(1..40)).map(|_| random_step(&mut rng, &raw)).collect();
        let valid = script(rng.u8(..), rng.u8(..), &steps);
        let input = if rng.usize(..4) == 0 { mutated(&mut rng, &valid) } else { valid };
        let report = mux_local(&input);
        events += report.count;
        match report.error {
            None => clean += 1,
            Some(
                ProtocolError::HeartbeatTimeout(_) | ProtocolError::HandshakeTimeout(_) | ProtocolError::NotReading(_),
            ) => dead += 1,
            Some(ProtocolError::Violation(_)) => violations += 1,
            Some(ProtocolError::Frame(_)) => malformed += 1,
        }
    }
    let counts = (events, clean, dead, violations, malformed);
    // Each way a run can end, often enough ((1383, 279, 130, 397, 194) when written).
    assert!(events > 1200 && clean > 150 && dead > 100 && violations > 150 && malformed > 100, "{counts:?}");
}

#[test]
fn a_peer_that_refuses_us_with_its_goaway_has_our_calls_refused_with_its_code() {
    // Found by the `mux` fuzz target: a GOAWAY with code `Unauthenticated` is the peer
    // refusing this side (PROTOCOL.md §5), and the calls made after it are refused with that
    // code, not `Unavailable`, as the model had it.
    let input = [
        0x2f, 0x54, 0x00, 0x00, 0x00, 0x0d, 0x07, 0x00, 0x00, 0x2f, 0x14, 0x00, 0x00, 0x00, 0x0d, 0x03, 0x10, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ];
    let report = mux(&input);
    assert!(report.count > 0, "{report:?}");
}

#[test]
fn a_durable_request_to_a_side_without_an_inbox_is_refused_not_handed_over() {
    // Found by the `mux` fuzz target: the model counted only `Unavailable` and
    // `ResourceExhausted` as refusals, not the `Unimplemented` a side that announced no INBOX
    // answers a durable request with, unprocessed, without handing it over.
    let input = [
        0x20, 0x00, 0x00, 0x00, 0x00, 0x3a, 0x02, 0x7a, 0x29, 0x34, 0x01, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x24,
        0x24, 0x24, 0x24, 0x24, 0x24, 0x00, 0x8c, 0x02, 0x7a, 0x29, 0x34, 0xff, 0x1f, 0x00, 0x00, 0x00, 0x1b, 0x03,
        0x1f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
        0x24, 0x24, 0x24, 0x24, 0x24, 0x23, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0xb6, 0xb2, 0x00, 0x00, 0xb9, 0x2f,
    ];
    let report = mux(&input);
    assert!(report.count > 0, "{report:?}");
}

// ---- the connection driver ----

/// A `conn` script: the setup byte, then steps as (opcode, arguments).
fn conn_script(control: u8, steps: &[&[u8]]) -> Vec<u8> {
    [&[control][..], &steps.concat()].concat()
}

#[test]
fn the_connection_driver_answers_and_ends_cleanly() {
    let steps: &[&[u8]] = &[
        &[0, 10],      // echo 50 bytes
        &[0x80, 1],    // oneway echo
        &[1, 5, 0],    // sleep 50 ms
        &[3, 7],       // PING 7
        &[11, 2],      // a local call of 10 bytes
        &[8, 255],     // the peer reads everything
        &[10, 0, 100], // 100 ms pass
        &[6, 0],       // the peer answers the local call
        &[10, 0, 100],
        &[14], // the peer closes
    ];
    for control in 0..16 {
        let report = conn(&conn_script(control, steps));
        // The HELLO, two answers, a PONG, the local call (and CREDIT to a FLOW peer), and the
        // local caller's answer; without the peer's HELLO, the connection closes on its
        // handshake timeout and the local call never leaves.
        let least = if control & 8 == 0 { 6 } else { 2 };
        assert!(report.count >= least, "setup {control}: {report:?}");
    }
}

#[test]
fn a_stalled_peer_meets_the_bounds_of_the_output_and_of_its_requests() {
    // Twenty echoes of 1000 bytes, sleeps, pings and local calls while the socket takes no
    // more than its first 4 KiB: answers pile up to the output bound, then requests wait, then
    // reading stops; the peer drains in bits, pings, and the clock runs past the heartbeat.
    let mut steps: Vec<Vec<u8>> = vec![vec![7, 3], vec![9, 10]];
    for i in 0..20u8 {
        steps.push(vec![0, 190]);
        steps.push(vec![if i % 3 == 0 { 0x81 } else { 1 }, i, i % 4]);
        steps.push(vec![3, i]);
        if i % 5 == 0 {
            steps.push(vec![11, 100]);
            steps.push(vec![0x8b, 1]);
        }
    }
    steps.extend([
        vec![10, 0x4e, 0x20],
        vec![8, 80],
        vec![4, 1],
        vec![10, 0x27, 0x10],
        vec![8, 255],
        vec![6, 0],
        vec![14],
    ]);
    let steps: Vec<&[u8]> = steps.iter().map(Vec::as_slice).collect();
    for control in [0, 1, 2, 4, 5] {
        let (report, reached) = super::conn::run(&conn_script(control, &steps));
        assert!(report.count > 20, "setup {control}: {report:?}");
        let budget = control & 4 != 0;
        assert_eq!((reached.paused, reached.output, reached.budget), (true, true, budget), "setup {control}");
    }
}

#[test]
fn a_peer_that_lies_about_its_credit_only_voids_its_own_limits() {
    // Found by the `conn` fuzz target: a FLOW peer that has read none of the connection's
    // oneway calls returns CREDIT for one, which the connection cannot tell from the truth
    // while the call is still on the wire; its next call, no longer held back, took the peer
    // over its 2 KiB. The run must go on and end cleanly, the peer's limits unchecked.
    let input =
        [0x06, 0xa9, 0x2c, 0x8b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xd3, 0x24, 0x94, 0xe7, 0x8b, 0xb7, 0x6f];
    let report = conn(&input);
    assert!(report.count >= 2 && report.error.is_none(), "{report:?}");
}

#[test]
fn random_conn_scripts_keep_the_bounds() {
    let mut rng = fastrand::Rng::with_seed(0x434f_4e4e);
    let (mut frames, mut paused, mut output, mut budget) = (0, 0, 0, 0);
    for _ in 0..300 {
        let mut input = vec![rng.u8(..) & 0x07];
        for _ in 0..rng.usize(1..40) {
            // Mostly the peer's calls, reads and local calls; rarely an end.
            let opcode = match rng.u8(..100) {
                0..=29 => 0,
                30..=39 => 1,
                40..=42 => 15,
                43..=47 => 2,
                48..=55 => 3,
                56..=58 => 4,
                59..=68 => 8,
                69..=74 => 11,
                75..=79 => 6,
                80..=84 => 7,
                85..=89 => 9,
                90..=95 => 10,
                96 => 5,
                97 => 12,
                98 => 13,
                _ => 14,
            };
            let flag = if rng.usize(..4) == 0 { 0x80 } else { 0 };
            match opcode {
                5 => {
                    let raw = &conversation()[rng.usize(..40)..];
                    let n = rng.usize(..raw.len().min(40));
                    input.extend([5, n as u8]);
                    input.extend_from_slice(&raw[..n]);
                }
                10 => input.extend([10, rng.u8(..0x60), rng.u8(..)]),
                12..=15 => input.push(opcode | flag),
                // Echoes of up to 950 bytes, within the connection's 1024-byte frames.
                0 => input.extend([opcode | flag, rng.u8(..190)]),
                // The sleep's milliseconds (× 10) and deadline (× 100 ms).
                1 => input.extend([opcode | flag, rng.u8(..50), rng.u8(..8)]),
                _ => {
                    let arg = if rng.usize(..8) == 0 { rng.u8(..) } else { rng.u8(..100) };
                    input.extend([opcode | flag, arg]);
                }
            }
        }
        let (report, reached) = super::conn::run(&input);
        frames += report.count;
        paused += usize::from(reached.paused);
        output += usize::from(reached.output);
        budget += usize::from(reached.budget);
    }
    let counts = (frames, paused, output, budget);
    // (2574, 44, 22, 52) when written.
    assert!(frames > 2000 && paused > 20 && output > 10 && budget > 25, "{counts:?}");
}

#[test]
fn a_backlog_of_slow_oneway_calls_is_worked_off_after_the_peer_closes() {
    // Found by the `conn` fuzz target: a peer that predates FLOW sends 160 oneway sleeps of
    // 2.4 s, far over the connection's limits, and closes. The connection handles them all,
    // three at a time, which takes longer than the two minutes the model gave it.
    let mut steps: Vec<&[u8]> = vec![&[0x81, 241, 241]; 160];
    steps.push(&[14]);
    let report = conn(&conn_script(0x01, &steps));
    assert!(report.count >= 1 && report.error.is_none(), "{report:?}");
}

// ---- compressed payloads ----

#[cfg(feature = "compression")]
#[test]
fn compressed_payloads_keep_to_their_bounds() {
    // Real payloads of every algorithm, with the limit below, at and above their length, then
    // damaged: each decompresses to what it declares, within the limit, or is refused.
    let mut rng = fastrand::Rng::with_seed(0x5a50);
    let data: Vec<u8> = (0..6000u32).flat_map(|i| format!("{} ", i % 97).into_bytes()).take(6000).collect();
    let (mut decompressed, mut damaged_decompressed) = (0, 0);
    for algorithm in crate::compression::available() {
        let payload = crate::compression::compress(algorithm, &data).expect("compresses").to_vec();
        for limit in [20u8, 23, 24, 255] {
            let mut input = vec![limit];
            input.extend_from_slice(&payload);
            decompressed += super::compressed(&input).count;
            for _ in 0..200 {
                let mut damaged = input.clone();
                let at = rng.usize(1..damaged.len());
                damaged[at] = rng.u8(..);
                damaged_decompressed += super::compressed(&damaged).count;
            }
        }
    }
    // 6,000 bytes: over the limits of 5,120 (20) and 5,888 (23), within 6,144 (24) and 65,280.
    assert_eq!(decompressed, 3 * 2, "each payload decompressed at the two limits above its length");
    // Some damage leaves a payload that still decompresses (a changed literal), most does not.
    assert!(damaged_decompressed > 0 && damaged_decompressed < 3 * 4 * 200, "{damaged_decompressed}");
}

// ---- what the fuzzers found ----
//
// `fuzz/regressions/<target>/` holds, for each target, the fewest inputs of the corpus its
// fuzzer grew on this project's machines that keep all of the code it reached (libFuzzer's
// `-set_cover_merge=1`), and the inputs that made it fail, kept by their libFuzzer names
// (`crash-…`) once what they found was fixed. Replaying them here puts the paths the fuzzers
// found deep inside the protocol into every `cargo test`, which runs on stable, where
// libFuzzer does not. docs/PROTOCOL.md §17 says how to refresh them.

/// The inputs of `target`'s regressions, by name.
fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut inputs: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let input = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default(), input)
        })
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 100, "{}: {} inputs, expected the fuzzer's corpus", dir.display(), inputs.len());
    inputs
}

/// Runs `check` on every input of `target`'s regressions; a panic names the input.
fn replay<R>(target: &str, check: impl Fn(&[u8]) -> R) -> Vec<R> {
    regressions(target)
        .into_iter()
        .map(|(name, input)| match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input))) {
            Ok(result) => result,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                panic!("fuzz/regressions/{target}/{name}: {why}")
            }
        })
        .collect()
}

/// Both ends of a protocol target's runs were reached: inputs that ran out and inputs that
/// ended in an error, and work counted.
fn both_ends(target: &str, reports: &[Report]) {
    let errors = reports.iter().filter(|report| report.error.is_some()).count();
    let counted: usize = reports.iter().map(|report| report.count).sum();
    assert!(
        errors > 0 && errors < reports.len() && counted > reports.len(),
        "{target}: {errors} errors of {} runs, {counted} counted",
        reports.len()
    );
}

#[test]
fn the_fuzzers_frames_still_keep_the_invariants() {
    both_ends("frames", &replay("frames", |input| frames(input, frame::MIN_MAX_FRAME)));
}

#[test]
fn the_fuzzers_handshakes_still_keep_the_invariants() {
    let reports = replay("handshake", handshake);
    let done = reports.iter().filter(|report| report.count == 1).count();
    assert!(done > 0 && done < reports.len(), "{done} handshakes done of {}", reports.len());
}

#[test]
fn the_fuzzers_conversations_still_keep_the_invariants() {
    both_ends("mux", &replay("mux", mux));
}

#[test]
fn the_fuzzers_scripts_still_keep_the_invariants() {
    both_ends("mux_local", &replay("mux_local", mux_local));
}

#[test]
fn the_fuzzers_connections_still_keep_the_invariants() {
    // A connection's run ends when its script does, with no error to report; what shows its
    // depth is which bounds it reached.
    let runs = replay("conn", super::conn::run);
    let reached = |bound: fn(&super::conn::Reached) -> bool| runs.iter().filter(|(_, reached)| bound(reached)).count();
    let (paused, output, budget) = (reached(|r| r.paused), reached(|r| r.output), reached(|r| r.budget));
    let counted: usize = runs.iter().map(|(report, _)| report.count).sum();
    assert!(
        paused > 0 && output > 0 && budget > 0 && counted > runs.len(),
        "of {} runs: reading paused in {paused}, the output bound reached in {output}, the budget in {budget}; {counted} counted",
        runs.len()
    );
}

#[test]
fn the_fuzzers_payloads_still_get_the_postcard_crates_verdicts() {
    let verdicts = replay("payload", zrpc_core::fuzz::postcard);
    let everything = verdicts.iter().filter(|verdict| verdict.everything).count();
    let strings = verdicts.iter().filter(|verdict| verdict.strings).count();
    assert!(
        everything > 0 && everything < verdicts.len() && strings > 0,
        "{everything} values, {strings} strings of {} inputs",
        verdicts.len()
    );
}

#[cfg(feature = "durable")]
#[test]
fn the_fuzzers_durable_logs_still_open_as_promised() {
    use super::durable::{Sidecar, run};
    // Each input writes and damages a log, or writes one zrpc did not, in a directory of its own.
    let runs = replay("durable", run);
    let reports: Vec<Report> = runs.iter().map(|(report, _)| report.clone()).collect();
    some_but_not_all("messages read back after", &reports);
    // Inputs with the sidecar's section reach both ends: reopens that raised a stream's handled
    // mark from the sidecar, and reopens that kept every stream's where the log had it.
    let reached = |outcome| runs.iter().filter(|(_, sidecar)| *sidecar == outcome).count();
    let (raised, kept) = (reached(Sidecar::Raised), reached(Sidecar::Kept));
    assert!(raised > 0 && kept > 0, "sidecar reopens: {raised} raised a mark, {kept} kept the log's");
}

#[cfg(feature = "compression")]
#[test]
fn the_fuzzers_compressed_payloads_still_keep_to_their_bounds() {
    some_but_not_all("payloads decompressed from", &replay("compressed", super::compressed));
}

/// Some of the runs counted something and some did not: the corpus still reaches both.
#[cfg(any(feature = "durable", feature = "compression"))]
fn some_but_not_all(what: &str, reports: &[Report]) {
    let counted = reports.iter().filter(|report| report.count > 0).count();
    assert!(counted > 0 && counted < reports.len(), "{what} {counted} of {} runs", reports.len());
}

// ---- the durable log's recovery ----

/// A damage-mode input: the owner (0 outbox, 1 inbox), the steps, then the damages.
#[cfg(feature = "durable")]
fn durable_input(owner: u8, steps: &[(u8, u8)], damages: &[&[u8]]) -> Vec<u8> {
    let mut input = vec![owner, steps.len() as u8 - 1];
    input.extend(steps.iter().flat_map(|&(op, a)| [op, a]));
    input.push(damages.len() as u8 - 1);
    input.extend(damages.iter().flat_map(|d| d.iter().copied()));
    input
}

/// Steps that fill two 4 KiB segments and start a third: appends of about 1 KiB to key 0 and
/// key 1 (op 0 and 2), releases of one message of each (op 1 and 3; too few for a compaction,
/// so every record stays), then two small appends, in the third segment.
#[cfg(feature = "durable")]
const DURABLE_STEPS: [(u8, u8); 12] =
    [(0, 63), (2, 63), (0, 63), (1, 1), (2, 63), (0, 63), (0, 63), (2, 63), (3, 1), (0, 63), (0, 5), (2, 9)];

#[cfg(feature = "durable")]
#[test]
fn a_durable_log_cut_at_every_offset_of_its_last_segment_keeps_what_was_written_before() {
    // The last segment's length (a header, a checkpoint and two small messages) for each owner:
    // every offset from 0 to it, the whole segment.
    for (owner, len) in [(0, 536u16), (1, 585)] {
        let mut counts = Vec::new();
        for at in 0..=len {
            let [lo, hi] = at.to_le_bytes();
            counts.push(durable(&durable_input(owner, &DURABLE_STEPS, &[&[0, lo, hi]])).count);
        }
        // Messages come back as the cut moves past their records, and only then.
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "owner {owner}: {counts:?}");
        let distinct: std::collections::BTreeSet<_> = counts.iter().collect();
        assert!(distinct.len() >= 3, "owner {owner}: the cuts reach too few records: {counts:?}");
    }
}

#[cfg(feature = "durable")]
#[test]
fn a_durable_log_with_a_byte_changed_opens_without_its_last_record_or_is_corrupt() {
    // Kind 1: byte `at` of segment `index` (0 the last, 1 the one before...) xored with 0x10.
    let flip = |owner: u8, index: u8, at: u16| {
        let [lo, hi] = at.to_le_bytes();
        durable(&durable_input(owner, &DURABLE_STEPS, &[&[1, index, lo, hi, 0, 0x10]])).count
    };
    // The last segment's length, and its last record's (the 144-byte message of "mail"): 8 +
    // 1 + 1 + 4 + 8 + 144 bytes in the outbox, 8 more (the outbox id) in the inbox.
    for (owner, len, last) in [(0, 536u16, 166), (1, 585, 174)] {
        let counts: Vec<usize> = (0..len).map(|at| flip(owner, 0, at)).collect();
        // Anything before the last record, the header too, has valid records after it:
        // Corrupt. The last record changed is a torn tail: the log opens without it, with 7 of
        // its 8 messages.
        let (corrupt, torn) = counts.split_at(usize::from(len - last));
        assert!(corrupt.iter().all(|&c| c == 0), "owner {owner}: {corrupt:?}");
        assert!(torn.iter().all(|&c| c == 7), "owner {owner}: {torn:?}");
        // The other segments, one byte in 13: the checks inside `durable` only.
        for index in 1..3 {
            for at in (0..4400).step_by(13) {
                flip(owner, index, at);
            }
        }
    }
}

#[cfg(feature = "durable")]
#[test]
fn durable_records_zrpc_did_not_write_open_or_are_corrupt() {
    // Control 2 (outbox) or 3 (inbox), one segment, then records (see `fuzz::durable`). Each of
    // these panicked (the writer's panic seen as `Closed`) or reopened to another state: the
    // checks are in `durable`. None opens to a message that reads back.
    let inputs: &[&[u8]] = &[
        // A checkpoint whose key is at sequence u64::MAX, then that message.
        &[2, 0, 4, 1, 0, 0xf0, 0xf0, 0, 1, 0, 0xf0, 0, 0xff],
        &[3, 0, 4, 1, 0, 0, 0xf0, 0xf0, 0, 1, 0, 0xf0, 0, 0xff],
        // A stream resumed after u64::MAX.
        &[3, 0, 3, 0, 0xf0, 0xff],
        // A checkpoint whose two runs hold u64::MAX bytes each.
        &[2, 0, 4, 1, 0, 1, 3, 2, 1, 0, 1, 1, 0xf0, 1, 0, 2, 2, 0xf0, 0xff],
        &[3, 0, 4, 1, 0, 0, 1, 3, 2, 1, 0, 1, 1, 0xf0, 1, 0, 2, 2, 0xf0, 0xff],
        // An acknowledgement, a handled mark, of messages 1 to 4 never logged: applied to the
        // message the owner then takes, after a reopen.
        &[2, 0, 2, 1, 4, 0xff],
        &[3, 0, 2, 1, 4, 0xff],
    ];
    for input in inputs {
        assert_eq!(durable(input), Report { count: 0, error: None }, "{input:?}");
    }
}

#[cfg(feature = "durable")]
#[test]
fn durable_records_whose_runs_disagree_with_the_log_reopen_or_are_corrupt() {
    // The fuzzer's finds that were the harness's own mistakes: a checkpoint's run that points
    // at a segment's magic, released whole at the first open and read at the next (a message
    // logged since extends it), which is `Corrupt`; a message logged twice inside a run, whose
    // bytes a walk counts, so that only the sequences reopen the same; and an append refused
    // as `InvalidSequence`.
    let inputs: &[&[u8]] = &[
        &[2, 0, 4, 1, 0, 1, 3, 2, 0, 1, 1, 1, 40, 1, 0, 2, 2, 40, 1, 2, 0, 2, 2, 251, 2, 0, 2, 255],
        &[
            2, 0, 17, 0, 1, 1, 3, 2, 42, 1, 1, 0, 1, 133, 93, 2, 248, 2, 255, 20, 40, 35, 255, 255, 255, 255, 255, 255,
            2, 63, 0, 0, 2, 255,
        ],
        // A later one: a checkpoint that puts a destination's next at 2^63, past the last
        // sequence, where the outbox refuses the harness's append (`InvalidSequence`).
        &[0x16, 0, 4, 1, 0x33, 0xf4, 0xf4, 0],
    ];
    for input in inputs {
        assert_eq!(durable(input), Report { count: 0, error: None }, "{input:?}");
    }
}

#[cfg(feature = "durable")]
#[test]
fn durable_logs_of_random_records_or_random_damage_open_or_are_corrupt() {
    // Records zrpc did not write: mostly messages, marks and checkpoints of small numbers and
    // edge values; and random damage to the real log of `DURABLE_STEPS`.
    let mut rng = fastrand::Rng::with_seed(0xd0_ab1e);
    let mut read = [0; 2];
    for i in 0..600u32 {
        let owner = (i & 1) as u8;
        let input = if i % 3 == 0 {
            let kind = rng.u8(..5);
            let damage: Vec<u8> = (0..8).map(|_| rng.u8(..)).collect();
            durable_input(owner, &DURABLE_STEPS, &[&[kind], &damage])
        } else {
            let mut input = vec![2 | owner, rng.u8(..4)];
            for _ in 0..rng.usize(1..12) {
                input.push([1, 1, 1, 2, 2, 3, 4, 0][rng.usize(..8)]);
                for _ in 0..rng.usize(..14) {
                    let small = rng.u8(..6);
                    input.push(if rng.bool() {
                        small
                    } else {
                        [0xf0, 0xf1, 0xf3, 0xf4, rng.u8(..), 0][rng.usize(..6)]
                    });
                }
            }
            input
        };
        read[usize::from(owner)] += durable(&input).count;
    }
    // Both owners opened logs and read messages back: the inputs reach past the open.
    assert!(read.iter().all(|&n| n > 20), "{read:?}");
}

/// A damaged inbox's input with a sidecar section (byte 0 `0x11`, see `fuzz::durable`): the
/// steps of [`DURABLE_STEPS`] (stream 0 recorded up to 6 and handled up to 1, stream 1 up to
/// 4 and 1), the log left whole (nothing appended to its last segment), then the marks the
/// dispatcher writes (stream, how many) and the sidecar's damages.
#[cfg(feature = "durable")]
fn sidecar_input(marks: &[(u8, u8)], damages: &[&[u8]]) -> Vec<u8> {
    let mut input = durable_input(0x11, &DURABLE_STEPS, &[&[2, 0, 0]]);
    input.push(marks.len() as u8);
    input.extend(marks.iter().map(|&(n, count)| n | (count - 1) << 2));
    input.push(damages.len() as u8);
    input.extend(damages.iter().flat_map(|d| d.iter().copied()));
    input
}

#[cfg(feature = "durable")]
#[test]
fn an_inbox_reopens_with_its_sidecars_marks_whatever_was_done_to_the_file() {
    use super::durable::{Sidecar, run};
    // Each checks inside `run`: the reopen raises each stream's mark to its highest valid slot's
    // within what it recorded, hands out exactly the messages above it, and reopens again.
    let reopens = |marks: &[(u8, u8)], damages: &[&[u8]], reached: Sidecar| {
        assert_eq!(run(&sidecar_input(marks, damages)).1, reached, "marks {marks:?}, damages {damages:?}");
    };
    // Three and two marks past the log's, as a crash inside the runs leaves them.
    reopens(&[(0, 3), (1, 2)], &[], Sidecar::Raised);
    reopens(&[(0, 4)], &[&[4]], Sidecar::Kept);
    // Both of stream 0's slots' handled bytes changed: nothing of it is left.
    reopens(&[(0, 3)], &[&[1, 16, 0, 0, 1], &[1, 48, 0, 0, 1]], Sidecar::Kept);
    // Marks 2 and 3 in stream 0's two slots, the second's torn as a `kill -9` inside the store
    // tears it: the mark before it, 2, is left.
    reopens(&[(0, 2)], &[&[1, 48, 0, 3, 1, 2, 3, 4]], Sidecar::Raised);
    // Cut inside its second slot, zeros to 16 MiB (sparse), garbage appended.
    reopens(&[(0, 3), (1, 3)], &[&[0, 40, 0]], Sidecar::Raised);
    reopens(&[(0, 3), (1, 3)], &[&[3, 16]], Sidecar::Raised);
    reopens(
        &[(0, 1)],
        &[&[2, 40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]],
        Sidecar::Raised,
    );
    // Forged with valid checksums: u64::MAX for stream 0 (clamped to the 6 recorded), and a
    // mark of an outbox and sender no stream has.
    reopens(&[], &[&[5, 7, 0, 0xf0]], Sidecar::Raised);
    reopens(&[], &[&[5, 0, 0x0c, 0xf0, 0xf0, 0xf0]], Sidecar::Kept);
}
