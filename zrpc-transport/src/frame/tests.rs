//! Framing tests: round trips of every kind, partial/exact/several/oversized input, every
//! truncation of a valid body, and a deterministic fuzz loop.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use zrpc_core::{Code, CodecId, Context, Metadata, Request, Response, Status, TraceContext};

use super::*;

const MAX: u32 = DEFAULT_MAX_FRAME;

/// A raw frame with a correct `length` around `body`, whatever the body says inside.
fn raw(kind: u8, flags: u8, id: u64, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32(u32::try_from(10 + body.len()).expect("test bodies are small"));
    buf.put_u8(kind);
    buf.put_u8(flags);
    buf.put_u64(id);
    buf.put_slice(body);
    buf
}

fn decode_one(bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
    let mut src = BytesMut::from(bytes);
    let frame = Decoder::default().decode(&mut src);
    if let Ok(Some(_)) = frame {
        assert!(src.is_empty(), "a whole frame consumes exactly its bytes");
    }
    frame
}

fn full_request_frame() -> RequestFrame {
    RequestFrame {
        id: 7,
        flags: flags::ONEWAY | flags::IDEMPOTENT | flags::TRACE,
        codec: CodecId::Json.as_u8(),
        timeout: Some(Duration::from_millis(1500)),
        method: Bytes::from_static("Grüße.hello".as_bytes()),
        trace: Some(TraceContext { trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, span_id: 0xf067, flags: 1 }),
        durable: None,
        metadata: [
            ("tenant", Bytes::from_static(b"acme")),
            ("empty", Bytes::new()),
            ("tenant", Bytes::from_static(b"x")),
        ]
        .into_iter()
        .collect(),
        payload: Bytes::from_static(b"\x01\x02\x03payload"),
    }
}

fn hello() -> Hello {
    Hello {
        name: "greeter-2".into(),
        max_frame: 64 * 1024,
        codecs: vec![0, 1],
        compressions: vec![],
        token: Bytes::from_static(b"secret"),
        flow: Some(FlowLimits { max_requests: 1000, request_bytes: 1 << 20 }),
        inbox: false,
        inbox_batches: false,
    }
}

fn encoded(frame: &RequestFrame) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_request_frame(&mut buf, frame, MAX).expect("encodes");
    buf
}

// ---- round trips ----

#[test]
fn a_whole_frame_decodes_in_place_and_any_other_length_is_refused() {
    let frame = full_request_frame();
    let whole = encoded(&frame).freeze();
    let Ok(Some(Frame::Request(decoded))) = Decoder::default().decode_whole(&whole) else {
        panic!("a whole frame decodes")
    };
    assert_eq!(decoded, frame);
    let start = whole.len() - decoded.payload.len();
    assert_eq!(decoded.payload.as_ptr(), whole[start..].as_ptr(), "the payload is not copied");
    for cut in 0..whole.len() {
        assert!(Decoder::default().decode_whole(&whole.slice(..cut)).is_err(), "cut at {cut}");
    }
    let mut longer = whole.to_vec();
    longer.push(0);
    assert!(Decoder::default().decode_whole(&Bytes::from(longer)).is_err(), "a byte after the frame");
    assert!(matches!(Decoder::new(16).decode_whole(&whole), Err(FrameError::FrameTooLarge { .. })));
}

#[test]
fn every_kind_round_trips() {
    let response = ResponseFrame {
        flags: 0,
        id: 7,
        code: 0,
        message: Bytes::new(),
        metadata: [("k", "v")].into_iter().collect(),
        payload: Bytes::from_static(b"result"),
    };
    let error = ResponseFrame {
        flags: 0,
        id: 9,
        code: Code::NotFound.as_u8(),
        message: Bytes::from_static(b"unknown method Greeter.nope"),
        metadata: Metadata::new(),
        payload: Bytes::from_static(b"details"),
    };
    let goaway = GoAway { last_id: 41, code: Code::Unavailable.as_u8(), message: "server is shutting down".into() };
    let frames = [
        Frame::Hello(hello()),
        Frame::Hello(Hello { name: String::new(), max_frame: MIN_MAX_FRAME, ..hello() }),
        Frame::Request(full_request_frame()),
        Frame::Request(RequestFrame {
            flags: 0,
            timeout: None,
            trace: None,
            durable: None,
            metadata: Metadata::new(),
            payload: Bytes::new(),
            ..full_request_frame()
        }),
        Frame::Response(response),
        Frame::Response(error),
        Frame::Cancel { id: u64::MAX },
        Frame::Ping { nonce: 0xdead_beef },
        Frame::Pong { nonce: 0xdead_beef },
        Frame::GoAway(goaway),
        Frame::Credit { requests: 3, bytes: 4096 },
    ];
    for frame in frames {
        let mut buf = BytesMut::from(&b"xy"[..]);
        let size = match &frame {
            Frame::Hello(h) => encode_hello(&mut buf, h).expect("encodes"),
            Frame::Request(r) => encode_request_frame(&mut buf, r, MAX).expect("encodes"),
            Frame::Response(r) => encode_response_frame(&mut buf, r, MAX).expect("encodes"),
            Frame::Cancel { id } => {
                encode_cancel(&mut buf, *id);
                HEADER_LEN
            }
            Frame::Ping { nonce } => {
                encode_ping(&mut buf, *nonce);
                HEADER_LEN
            }
            Frame::Pong { nonce } => {
                encode_pong(&mut buf, *nonce);
                HEADER_LEN
            }
            Frame::GoAway(g) => {
                encode_goaway(&mut buf, g);
                HEADER_LEN + 3 + g.message.len()
            }
            Frame::Credit { requests, bytes } => {
                encode_credit(&mut buf, *requests, *bytes);
                HEADER_LEN + 8
            }
        };
        assert_eq!(buf.len(), 2 + size, "{frame:?}: returned size is the appended size");
        let mut src = buf.split_off(2);
        assert_eq!(Decoder::default().decode(&mut src), Ok(Some(frame.clone())));
        assert!(src.is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn encode_request_takes_everything_from_the_request_and_its_context() {
    let trace = TraceContext { trace_id: 1, span_id: 2, flags: 1 };
    let ctx = Context::new().with_timeout(Duration::from_millis(250)).with_metadata("tenant", "acme").with_trace(trace);
    let req = Request::new("Greeter.hello", Bytes::from_static(b"args"))
        .with_ctx(ctx)
        .with_codec(CodecId::Json)
        .with_oneway(true)
        .with_idempotent(true);
    let mut buf = BytesMut::new();
    encode_request(&mut buf, 3, &req, MAX).expect("encodes");
    let Some(Frame::Request(frame)) = Decoder::default().decode(&mut buf).expect("decodes") else {
        panic!("expected a request");
    };
    assert_eq!(frame.id, 3);
    assert_eq!(frame.flags, flags::ONEWAY | flags::IDEMPOTENT | flags::TRACE);
    assert!(frame.is_oneway() && frame.is_idempotent());
    assert_eq!(frame.codec, CodecId::Json.as_u8());
    assert_eq!(frame.timeout, Some(Duration::from_millis(250)));
    assert_eq!(frame.method_str(), "Greeter.hello");
    assert_eq!(frame.trace, Some(trace));
    assert_eq!(frame.metadata.get("tenant"), Some(&b"acme"[..]));
    assert_eq!(&frame.payload[..], b"args");

    let plain = Request::new("Greeter.hello", Bytes::new());
    encode_request(&mut buf, 5, &plain, MAX).expect("encodes");
    let Some(Frame::Request(frame)) = Decoder::default().decode(&mut buf).expect("decodes") else {
        panic!("expected a request");
    };
    assert_eq!((frame.flags, frame.codec, frame.timeout, frame.trace), (0, 0, None, None));
    assert!(!frame.is_oneway() && !frame.is_idempotent());
}

#[tokio::test(start_paused = true)]
async fn a_passed_deadline_is_sent_as_one_microsecond() {
    let ctx = Context::new().with_deadline(tokio::time::Instant::now());
    tokio::time::advance(Duration::from_secs(1)).await;
    let req = Request::new("S.m", Bytes::new()).with_ctx(ctx);
    let mut buf = BytesMut::new();
    encode_request(&mut buf, 1, &req, MAX).expect("encodes");
    // codec byte, then timeout_us at body offset 1.
    assert_eq!(buf.get(HEADER_LEN + 1..HEADER_LEN + 9), Some(&1u64.to_be_bytes()[..]));
    let Some(Frame::Request(frame)) = Decoder::default().decode(&mut buf).expect("decodes") else {
        panic!("expected a request");
    };
    assert_eq!(frame.timeout, Some(Duration::from_micros(1)));
}

#[test]
fn response_results_round_trip() {
    let mut ok = Response::new(Bytes::from_static(b"result"));
    ok.metadata_mut().insert("k", "v");
    let err = Status::not_found("unknown method Greeter.nope").with_details(Bytes::from_static(b"d"));
    let mut buf = BytesMut::new();
    for (id, result) in [(1, Ok(ok)), (3, Err(err.clone()))] {
        encode_response(&mut buf, id, &result, MAX).expect("encodes");
        let Some(Frame::Response(frame)) = Decoder::default().decode(&mut buf).expect("decodes") else {
            panic!("expected a response");
        };
        assert_eq!(frame.id, id);
        match (frame.into_result(), result) {
            (Ok(got), Ok(want)) => {
                assert_eq!((got.payload(), got.metadata()), (want.payload(), want.metadata()));
            }
            (Err(got), Err(want)) => assert_eq!(got, want),
            (got, want) => panic!("{got:?} != {want:?}"),
        }
    }
}

#[test]
fn error_status_with_code_ok_is_sent_as_unknown_and_unknown_codes_read_as_unknown() {
    let mut buf = BytesMut::new();
    encode_response(&mut buf, 1, &Err(Status::new(Code::Ok, "odd")), MAX).expect("encodes");
    assert_eq!(buf.get(HEADER_LEN), Some(&Code::Unknown.as_u8()));
    let body = [200, 0, 2, b'h', b'i', 0, 0];
    let Ok(Some(Frame::Response(frame))) = decode_one(&raw(kind::RESPONSE, 0, 1, &body)) else {
        panic!("expected a response");
    };
    let status = frame.into_result().expect_err("code 200 is an error");
    assert_eq!((status.code(), status.message()), (Code::Unknown, "hi"));
}

#[test]
fn long_messages_are_truncated_at_a_char_boundary() {
    let message = format!("{}é", "a".repeat(65534));
    let mut buf = BytesMut::new();
    encode_goaway(&mut buf, &GoAway { last_id: 0, code: 0, message: message.clone() });
    let Some(Frame::GoAway(goaway)) = Decoder::default().decode(&mut buf).expect("decodes") else {
        panic!("expected a goaway");
    };
    assert_eq!(goaway.message.len(), 65534);
    encode_response(&mut buf, 1, &Err(Status::internal(message)), MAX).expect("encodes");
    let Some(Frame::Response(frame)) = Decoder::default().decode(&mut buf).expect("decodes") else {
        panic!("expected a response");
    };
    assert_eq!(frame.message.len(), 65534);
}

// ---- partial, exact, several, oversized ----

#[test]
fn a_frame_delivered_byte_by_byte_decodes_only_when_complete() {
    let bytes = encoded(&full_request_frame());
    let mut decoder = Decoder::default();
    let mut src = BytesMut::new();
    for (i, byte) in bytes.iter().enumerate() {
        src.put_u8(*byte);
        let got = decoder.decode(&mut src).expect("a valid prefix is no error");
        if i + 1 < bytes.len() {
            assert_eq!(got, None, "decoded after {} of {} bytes", i + 1, bytes.len());
            assert_eq!(src.len(), i + 1, "nothing is consumed while incomplete");
        } else {
            assert_eq!(got, Some(Frame::Request(full_request_frame())));
        }
    }
    assert!(src.is_empty());
}

#[test]
fn several_frames_in_one_buffer_decode_in_order() {
    let mut src = BytesMut::new();
    encode_ping(&mut src, 1);
    src.extend_from_slice(&encoded(&full_request_frame()));
    encode_cancel(&mut src, 7);
    encode_pong(&mut src, 1);
    let half_ping = {
        let mut b = BytesMut::new();
        encode_ping(&mut b, 2);
        b.split_to(5)
    };
    src.extend_from_slice(&half_ping);
    let mut decoder = Decoder::default();
    let mut got = Vec::new();
    while let Some(frame) = decoder.decode(&mut src).expect("valid frames") {
        got.push(frame);
    }
    assert_eq!(
        got,
        [
            Frame::Ping { nonce: 1 },
            Frame::Request(full_request_frame()),
            Frame::Cancel { id: 7 },
            Frame::Pong { nonce: 1 },
        ]
    );
    assert_eq!(&src[..], &half_ping[..], "the partial frame stays buffered");
}

#[test]
fn an_incomplete_frame_reserves_room_for_the_rest() {
    let bytes = encoded(&RequestFrame { payload: Bytes::from(vec![7; 5000]), ..full_request_frame() });
    let mut src = BytesMut::from(&bytes[..10]);
    assert_eq!(Decoder::default().decode(&mut src), Ok(None));
    assert!(src.capacity() >= bytes.len(), "capacity {} < {}", src.capacity(), bytes.len());
}

#[test]
fn a_claimed_large_frame_reserves_only_a_bounded_step_ahead() {
    // A peer sends the length of a 16 MiB frame and nothing more.
    let mut src = BytesMut::from(&(DEFAULT_MAX_FRAME - 4).to_be_bytes()[..]);
    assert_eq!(Decoder::default().decode(&mut src), Ok(None));
    assert!(src.capacity() <= 2 * RESERVE_AHEAD, "reserved {} bytes for 4 received", src.capacity());
    assert!(src.capacity() >= RESERVE_AHEAD);
}

#[test]
fn a_large_frame_is_assembled_in_a_buffer_no_larger_than_itself() {
    // Sizes just over a power of two, where doubling overshoots most, and one in between.
    for body in [(1 << 17) + 1, 3 << 20, (8 << 20) + 100] {
        let frame = raw(0x7f, 0, 1, &vec![9; body]);
        let total = frame.len();
        let mut decoder = Decoder::default();
        let mut src = BytesMut::with_capacity(8 * 1024);
        let (mut arrived, mut peak, mut grown) = (0, 0, 0);
        // A reader that fills the room it is given, as far as the frame's end, as the
        // connection's does (`Decoder::large_frame_rest`).
        loop {
            if let Some(rest) = decoder.large_frame_rest(&src) {
                let end = src.len() + rest;
                grow_within(&mut src, rest.min(64 * 1024), end);
            }
            if src.capacity() == src.len() {
                src.reserve(8 * 1024);
            }
            let before = src.capacity();
            let take = (src.capacity() - src.len()).min(total - arrived);
            src.extend_from_slice(&frame[arrived..arrived + take]);
            arrived += take;
            // A frame of an unknown kind: skipped, so that decoding ends with `None` either way.
            assert_eq!(decoder.decode(&mut src), Ok(None));
            grown += usize::from(src.capacity() > before);
            peak = peak.max(src.capacity());
            if arrived == total {
                break;
            }
        }
        assert!(src.is_empty(), "the frame was consumed whole");
        assert!(peak <= total, "a frame of {total} bytes took a buffer of {peak}");
        // Grown by doubling: the copies while it grew add up to about the frame.
        assert!(grown <= 12, "{grown} growths for {total} bytes");
    }
}

#[test]
fn a_small_frame_never_shares_the_memory_of_a_large_one_before_it() {
    // A 1 MiB frame of a kind receivers skip, then a small request, read together: the request
    // must not be a slice of the buffer that held the large frame, or a handler keeping its
    // metadata would keep the whole megabyte alive.
    let mut src = raw(0x7f, 0, 1, &vec![0; 1 << 20]);
    let small = RequestFrame { payload: Bytes::from_static(b"tiny"), ..full_request_frame() };
    src.extend_from_slice(&encoded(&small));
    let whole = src.as_ptr_range();
    let Ok(Some(Frame::Request(decoded))) = Decoder::default().decode(&mut src) else { panic!("the small request") };
    assert_eq!(decoded.payload, small.payload);
    assert!(!whole.contains(&decoded.payload.as_ptr()), "the small frame is a slice of the large frame's buffer");

    // Small frames after small frames stay zero-copy slices of the read buffer.
    let mut src = BytesMut::new();
    src.extend_from_slice(&encoded(&small));
    src.extend_from_slice(&encoded(&small));
    let whole = src.as_ptr_range();
    for _ in 0..2 {
        let Ok(Some(Frame::Request(decoded))) = Decoder::default().decode(&mut src) else { panic!("a request") };
        assert!(whole.contains(&decoded.payload.as_ptr()), "a small frame was copied");
    }
}

#[test]
fn an_oversized_length_is_refused_before_allocating() {
    for (decoder, len) in [(Decoder::default(), u32::MAX), (Decoder::new(1024), 1025)] {
        let mut src = BytesMut::with_capacity(64);
        src.put_u32(len);
        src.put_slice(b"\x02\x00");
        let capacity = src.capacity();
        assert_eq!(
            decoder.clone().decode(&mut src),
            Err(FrameError::FrameTooLarge { len: u64::from(len), max: decoder.max_frame() })
        );
        assert_eq!(src.capacity(), capacity, "nothing was reserved for the claimed length");
        assert_eq!(src.len(), 6);
    }
    // Exactly the limit is fine.
    let mut src = raw(kind::PING, 0, 1, &[0; 1014]);
    assert_eq!(Decoder::new(1024).decode(&mut src), Ok(Some(Frame::Ping { nonce: 1 })));
    // Unknown kinds are checked too.
    let mut src = raw(0x7f, 0, 1, &[0; 1015]);
    assert_eq!(Decoder::new(1024).decode(&mut src), Err(FrameError::FrameTooLarge { len: 1025, max: 1024 }));
}

#[test]
fn a_length_below_the_header_is_too_short_as_soon_as_it_arrives() {
    for len in 0..10u32 {
        let mut src = BytesMut::new();
        src.put_u32(len);
        src.put_slice(&[kind::PING; 9][..len as usize]);
        assert_eq!(Decoder::default().decode(&mut src), Err(FrameError::TooShort { len }), "length {len}");
        // The 4 length bytes alone decide it: nothing after them is waited for.
        let mut alone = BytesMut::from(&len.to_be_bytes()[..]);
        assert_eq!(Decoder::default().decode(&mut alone), Err(FrameError::TooShort { len }), "length {len} alone");
    }
    let mut src = BytesMut::from(&[0, 0, 0][..]);
    assert_eq!(Decoder::default().decode(&mut src), Ok(None), "three bytes are not a length yet");
}

// ---- bodies that lie ----

/// Cuts a valid frame's body at every point, with a correct outer length.
fn truncations(bytes: &[u8]) -> impl Iterator<Item = (usize, Result<Option<Frame>, FrameError>)> + '_ {
    let kind = bytes[4];
    let flags = bytes[5];
    let body = &bytes[HEADER_LEN..];
    (0..body.len()).map(move |cut| (cut, decode_one(&raw(kind, flags, 1, &body[..cut]))))
}

#[test]
fn every_truncation_of_a_request_body_before_the_payload_is_malformed() {
    assert_truncations_before_the_payload_are_malformed(&full_request_frame());
    assert_truncations_before_the_payload_are_malformed(&durable_request_frame());
}

fn assert_truncations_before_the_payload_are_malformed(frame: &RequestFrame) {
    let bytes = encoded(frame);
    let payload_start = bytes.len() - HEADER_LEN - frame.payload.len();
    let mut malformed = 0;
    for (cut, got) in truncations(&bytes) {
        if cut < payload_start {
            assert!(matches!(got, Err(FrameError::Malformed { kind: "request", .. })), "cut {cut}: {got:?}");
            malformed += 1;
        } else {
            let Ok(Some(Frame::Request(req))) = got else { panic!("cut {cut}: {got:?}") };
            assert_eq!(&req.payload[..], &frame.payload[..cut - payload_start], "cut {cut}");
        }
    }
    assert_eq!(malformed, payload_start);
}

#[test]
fn every_truncation_of_other_bodies_is_malformed() {
    let mut hello_bytes = BytesMut::new();
    encode_hello(&mut hello_bytes, &hello()).expect("encodes");
    let mut goaway_bytes = BytesMut::new();
    encode_goaway(&mut goaway_bytes, &GoAway { last_id: 1, code: 14, message: "bye".into() });
    let response = ResponseFrame {
        flags: 0,
        id: 1,
        code: 5,
        message: Bytes::from_static(b"msg"),
        metadata: [("k", "v")].into_iter().collect(),
        payload: Bytes::new(),
    };
    let mut response_bytes = BytesMut::new();
    encode_response_frame(&mut response_bytes, &response, MAX).expect("encodes");
    // A HELLO cut right before its extensions is a HELLO without them: valid, without FLOW.
    let extensions = hello_bytes.len() - HEADER_LEN - 11;
    let without = Ok(Some(Frame::Hello(Hello { flow: None, ..hello() })));
    for (bytes, kind) in [(hello_bytes, "hello"), (goaway_bytes, "goaway"), (response_bytes, "response")] {
        for (cut, got) in truncations(&bytes) {
            if kind == "hello" && cut == extensions {
                assert_eq!(got, without, "hello cut before its extensions");
                continue;
            }
            assert!(
                matches!(got, Err(FrameError::Malformed { kind: k, .. }) if k == kind),
                "{kind} cut at {cut}: {got:?}"
            );
        }
    }
}

#[test]
fn inner_lengths_past_the_body_are_malformed() {
    // codec, timeout, method_len 200 but 3 method bytes.
    let mut body = vec![0];
    body.extend_from_slice(&0u64.to_be_bytes());
    body.extend_from_slice(&[200, b'S', b'.', b'm']);
    assert_eq!(
        decode_one(&raw(kind::REQUEST, 0, 1, &body)),
        Err(FrameError::Malformed { kind: "request", reason: "body ends inside the method" })
    );
    // A metadata value claiming 4 GiB.
    let mut body = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 3, b'S', b'.', b'm', 0, 1, 1, b'k'];
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    body.extend_from_slice(b"v");
    assert_eq!(
        decode_one(&raw(kind::REQUEST, 0, 1, &body)),
        Err(FrameError::Malformed { kind: "request", reason: "metadata value runs past the body" })
    );
    // 65535 metadata entries in a 4-byte block.
    let body = [0, 0, 0, 0xff, 0xff, 0, 0];
    assert_eq!(
        decode_one(&raw(kind::RESPONSE, 0, 1, &body)),
        Err(FrameError::Malformed { kind: "response", reason: "metadata count exceeds what the body can hold" })
    );
}

#[test]
fn a_method_must_be_non_empty_utf8() {
    let request_body = |method: &[u8]| {
        let mut body = vec![0];
        body.extend_from_slice(&0u64.to_be_bytes());
        body.push(u8::try_from(method.len()).expect("short"));
        body.extend_from_slice(method);
        body.extend_from_slice(&[0, 0]);
        raw(kind::REQUEST, 0, 1, &body)
    };
    assert_eq!(
        decode_one(&request_body(b"S.\xff\xfe")),
        Err(FrameError::Malformed { kind: "request", reason: "method is not utf-8" })
    );
    assert_eq!(decode_one(&request_body(b"")), Err(FrameError::Malformed { kind: "request", reason: "empty method" }));
    let Ok(Some(Frame::Request(frame))) = decode_one(&request_body(b"S.m")) else { panic!("a valid request") };
    assert_eq!(frame.method_str(), "S.m");
}

#[test]
fn other_utf8_fields_are_checked() {
    let cases: [(u8, &[u8], &str, &str); 3] = [
        (kind::RESPONSE, &[3, 0, 1, 0xff, 0, 0], "response", "message is not utf-8"),
        (kind::GOAWAY, &[3, 0, 1, 0xc3], "goaway", "message is not utf-8"),
        (kind::HELLO, &[1, 0xff, 0, 0, 4, 0, 0, 0, 0, 0], "hello", "name is not utf-8"),
    ];
    for (kind, body, name, reason) in cases {
        assert_eq!(decode_one(&raw(kind, 0, 0, body)), Err(FrameError::Malformed { kind: name, reason }));
    }
    let key = [0, 0, 0, 0, 1, 1, 0xff, 0, 0, 0, 0];
    assert_eq!(
        decode_one(&raw(kind::RESPONSE, 0, 1, &key)),
        Err(FrameError::Malformed { kind: "response", reason: "metadata key is not utf-8" })
    );
}

#[test]
fn hello_max_frame_below_the_minimum_is_refused_both_ways() {
    let small = Hello { max_frame: MIN_MAX_FRAME - 1, ..hello() };
    let mut buf = BytesMut::new();
    assert!(matches!(encode_hello(&mut buf, &small), Err(FrameError::Malformed { kind: "hello", .. })));
    assert!(buf.is_empty());
    let body = [0, 0, 0, 3, 0xff, 0, 0, 0, 0];
    assert_eq!(
        decode_one(&raw(kind::HELLO, 0, 0, &body)),
        Err(FrameError::Malformed { kind: "hello", reason: "max_frame is below the minimum of 1024" })
    );
}

#[test]
fn trailing_bytes_of_fixed_bodies_are_ignored() {
    let mut hello_bytes = BytesMut::new();
    encode_hello(&mut hello_bytes, &hello()).expect("encodes");
    // A HELLO's extensions: unknown tags are skipped, a repeated tag counts once, and bytes of
    // a known value beyond those defined are ignored.
    let body = &hello_bytes[HEADER_LEN..];
    let (before_flow, flow) = body.split_at(body.len() - 11);
    let longer_flow = [&[1, 0, 10][..], &flow[3..], &[0xee, 0xee]].concat();
    let other_flow = [1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 1];
    let extended = [before_flow, &[0x7e, 0, 3, 1, 2, 3], &longer_flow, &other_flow].concat();
    assert_eq!(decode_one(&raw(kind::HELLO, 0, 0, &extended)), Ok(Some(Frame::Hello(hello()))));
    let running_past = [body, &[0x7e, 0, 9, 1]].concat();
    assert_eq!(
        decode_one(&raw(kind::HELLO, 0, 0, &running_past)),
        Err(FrameError::Malformed { kind: "hello", reason: "an extension runs past the body" })
    );
    let no_requests = [before_flow, &[1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]].concat();
    assert_eq!(
        decode_one(&raw(kind::HELLO, 0, 0, &no_requests)),
        Err(FrameError::Malformed { kind: "hello", reason: "flow limits allow no request" })
    );
    assert_eq!(decode_one(&raw(kind::CANCEL, 0, 9, b"ext")), Ok(Some(Frame::Cancel { id: 9 })));
    let goaway = decode_one(&raw(kind::GOAWAY, 0, 4, &[0, 0, 2, b'o', b'k', 9, 9]));
    assert_eq!(goaway, Ok(Some(Frame::GoAway(GoAway { last_id: 4, code: 0, message: "ok".into() }))));
    let credit = decode_one(&raw(kind::CREDIT, 0, 2, &[0, 0, 0, 0, 0, 0, 1, 0, 7]));
    assert_eq!(credit, Ok(Some(Frame::Credit { requests: 2, bytes: 256 })));
}

// ---- kinds and flags ----

#[test]
fn unknown_kinds_are_skipped() {
    let mut src = raw(0x7f, 0xff, 3, b"from the future");
    src.extend_from_slice(&raw(0x00, 0, 3, b""));
    encode_ping(&mut src, 5);
    assert_eq!(Decoder::default().decode(&mut src), Ok(Some(Frame::Ping { nonce: 5 })));
    assert!(src.is_empty());
    let mut src = raw(0x09, 0, 3, b"alone");
    assert_eq!(Decoder::default().decode(&mut src), Ok(None));
    assert!(src.is_empty(), "the skipped frame was consumed");
}

/// The body (after the 14-byte header) of `full_request_frame` with `payload`; it has a trace,
/// so it is read with `TRACE` set.
fn request_body_with(payload: &[u8]) -> Vec<u8> {
    let frame = RequestFrame { flags: 0, payload: Bytes::copy_from_slice(payload), ..full_request_frame() };
    encoded(&frame)[HEADER_LEN..].to_vec()
}

#[test]
fn unknown_flag_bits_are_ignored() {
    // Bits 4 (a RESPONSE's UNPROCESSED) and 7 mean nothing on a REQUEST; bit 5 is DURABLE,
    // bit 6 BATCH.
    let bytes = encoded(&full_request_frame());
    let with_unknown = raw(kind::REQUEST, bytes[5] | 0x90, 1, &bytes[HEADER_LEN..]);
    let Ok(Some(Frame::Request(req))) = decode_one(&with_unknown) else { panic!("unknown bits are ignored") };
    assert_eq!(req.flags, full_request_frame().flags | 0x90);
    assert_eq!(req.payload, full_request_frame().payload);
    assert!(decode_one(&raw(kind::RESPONSE, 0xfd, 1, &[0, 0, 0, 0, 0])).is_ok_and(|f| f.is_some()));
}

#[test]
fn a_compressed_payload_header_is_read_without_decompressing() {
    // Exact: the 5-byte header and nothing after it; then a header and compressed bytes.
    let header = CompressedHeader { compression: 1, len: 0x0102_0304 };
    assert_eq!(header.to_bytes(), [1, 1, 2, 3, 4], "id, then the length big-endian");
    for rest in [&b""[..], b"\x28\xb5\x2f\xfd compressed"] {
        let payload = [&header.to_bytes()[..], rest].concat();
        let frame = RequestFrame {
            flags: flags::COMPRESSED | flags::TRACE,
            payload: Bytes::from(payload.clone()),
            ..full_request_frame()
        };
        let bytes = encoded(&frame);
        assert_eq!(bytes[5] & flags::COMPRESSED, flags::COMPRESSED, "the flag goes on the wire");
        let Ok(Some(Frame::Request(decoded))) = decode_one(&bytes) else { panic!("decodes") };
        assert_eq!(decoded, frame, "the payload stays as it came, header included");
        assert_eq!(decoded.compressed_header(), Some(header));
        assert_eq!(CompressedHeader::split(&decoded.payload), Some((header, rest)));

        let response = ResponseFrame {
            id: 3,
            flags: flags::COMPRESSED,
            code: 0,
            message: Bytes::new(),
            metadata: Metadata::new(),
            payload: Bytes::from(payload),
        };
        let mut buf = BytesMut::new();
        encode_response_frame(&mut buf, &response, MAX).expect("encodes");
        let Ok(Some(Frame::Response(decoded))) = decode_one(&buf) else { panic!("decodes") };
        assert_eq!(decoded.compressed_header(), Some(header));
        assert_eq!(decoded, response);
    }
    // Without the flag the same bytes are a plain payload.
    let plain = RequestFrame { payload: Bytes::from_static(&[1, 0, 0, 0, 9]), ..full_request_frame() };
    assert_eq!(plain.compressed_header(), None);
}

#[test]
fn a_compressed_payload_shorter_than_its_header_is_malformed() {
    // Partial: 0 to 4 bytes of the header; the frame is malformed, both ways, for both kinds.
    let header = CompressedHeader { compression: 1, len: 1024 }.to_bytes();
    for cut in 0..COMPRESSED_HEADER_LEN {
        let body = request_body_with(&header[..cut]);
        let bits = flags::COMPRESSED | flags::TRACE | flags::ONEWAY | flags::IDEMPOTENT;
        let malformed =
            |kind| FrameError::Malformed { kind, reason: "a compressed payload is shorter than its 5-byte header" };
        assert_eq!(decode_one(&raw(kind::REQUEST, bits, 1, &body)), Err(malformed("request")), "{cut} bytes");
        let response_body = [&[0, 0, 0, 0, 0][..], &header[..cut]].concat();
        assert_eq!(
            decode_one(&raw(kind::RESPONSE, flags::COMPRESSED, 1, &response_body)),
            Err(malformed("response")),
            "{cut} bytes"
        );

        let frame = RequestFrame {
            flags: flags::COMPRESSED,
            payload: Bytes::copy_from_slice(&header[..cut]),
            ..full_request_frame()
        };
        let mut dst = BytesMut::from(&b"kept"[..]);
        assert_eq!(encode_request_frame(&mut dst, &frame, MAX), Err(malformed("request")));
        let request = Request::new("Greeter.hello", Bytes::copy_from_slice(&header[..cut]));
        assert_eq!(
            encode_compressed_request_at(&mut dst, 1, &request, MAX, tokio::time::Instant::now()),
            Err(malformed("request"))
        );
        let result = Ok(Response::new(Bytes::copy_from_slice(&header[..cut])));
        assert_eq!(encode_compressed_response(&mut dst, 1, &result, MAX), Err(malformed("response")));
        assert_eq!(&dst[..], b"kept", "dst unchanged");
    }
}

#[test]
fn an_oversized_declared_length_is_still_a_well_formed_frame() {
    // Oversized: a 4 GiB length declared by a few bytes is the receiver's to refuse for that
    // call, before decompressing (crate::compression); the frame itself is fine, so the
    // connection is not failed for it.
    let header = CompressedHeader { compression: 1, len: u32::MAX };
    let payload = [&header.to_bytes()[..], &[0x28, 0xb5, 0x2f, 0xfd]].concat();
    let request = Request::new("Greeter.hello", Bytes::from(payload));
    let mut buf = BytesMut::new();
    let size = encode_compressed_request_at(&mut buf, 1, &request, 1024, tokio::time::Instant::now())
        .expect("fits the frame limit");
    assert_eq!(size, buf.len());
    let Ok(Some(Frame::Request(frame))) = decode_one(&buf) else { panic!("decodes") };
    assert_eq!(frame.compressed_header(), Some(header));
    assert!(frame.flags & flags::COMPRESSED != 0);

    let result = Err(Status::data_loss("details").with_details(request.payload().clone()));
    let mut buf = BytesMut::new();
    encode_compressed_response(&mut buf, 9, &result, 1024).expect("fits");
    let Ok(Some(Frame::Response(frame))) = decode_one(&buf) else { panic!("decodes") };
    assert_eq!((frame.code, frame.compressed_header()), (Code::DataLoss.as_u8(), Some(header)));
}

#[test]
fn zero_trace_ids_are_ignored() {
    let frame =
        RequestFrame { trace: Some(TraceContext { trace_id: 0, span_id: 3, flags: 1 }), ..full_request_frame() };
    let Ok(Some(Frame::Request(req))) = decode_one(&encoded(&frame)) else { panic!("a valid request") };
    assert_eq!((req.trace, req.flags & flags::TRACE), (None, flags::TRACE));
}

// ---- encode-side limits ----

#[test]
fn encode_errors_leave_dst_unchanged() {
    let mut dst = BytesMut::from(&b"earlier frames"[..]);
    let big = Request::new("S.m", Bytes::from(vec![0; 2000]));
    let err = encode_request(&mut dst, 1, &big, 1024).expect_err("too large");
    // 10 header + 1 codec + 8 timeout + 1 + 3 method + 2 metadata + 2000 payload.
    assert_eq!(err, FrameError::FrameTooLarge { len: 2025, max: 1024 });
    assert_eq!(err.to_string(), "frame of 2025 bytes exceeds the limit of 1024");

    let long_method = Request::new(String::from("S.").repeat(128), Bytes::new());
    let long_key = Request::new("S.m", Bytes::new()).with_ctx(Context::new().with_metadata("k".repeat(256), "v"));
    let empty_method = Request::new("", Bytes::new());
    let cases = [
        (long_method, FrameError::FieldTooLong { field: "method", len: 256, max: 255 }),
        (long_key, FrameError::FieldTooLong { field: "metadata key", len: 256, max: 255 }),
        (empty_method, FrameError::Malformed { kind: "request", reason: "empty method" }),
    ];
    for (req, want) in cases {
        assert_eq!(encode_request(&mut dst, 1, &req, MAX), Err(want));
    }
    let big = Ok(Response::new(Bytes::from(vec![0; 2000])));
    assert_eq!(encode_response(&mut dst, 1, &big, 1024), Err(FrameError::FrameTooLarge { len: 2015, max: 1024 }));
    let many: Metadata = (0..=u16::MAX as usize).map(|_| ("k", Bytes::new())).collect();
    let mut with_many = Response::new(Bytes::new());
    *with_many.metadata_mut() = many;
    assert_eq!(
        encode_response(&mut dst, 1, &Ok(with_many), MAX),
        Err(FrameError::FieldTooLong { field: "metadata count", len: 65536, max: 65535 })
    );
    let long_name = Hello { name: "n".repeat(256), ..hello() };
    assert_eq!(encode_hello(&mut dst, &long_name), Err(FrameError::FieldTooLong { field: "name", len: 256, max: 255 }));
    assert_eq!(&dst[..], b"earlier frames");
}

#[test]
fn a_frame_of_exactly_the_peer_limit_is_sent() {
    // 10 + 1 + 8 + 1 + 3 + 2 = 25 bytes of length before the payload.
    let req = Request::new("S.m", Bytes::from(vec![0; 1024 - 25]));
    let mut dst = BytesMut::new();
    assert_eq!(encode_request(&mut dst, 1, &req, 1024), Ok(4 + 1024));
    assert_eq!(Decoder::new(1024).decode(&mut dst).map(|f| f.is_some()), Ok(true));
}

// ---- the worked example in docs/PROTOCOL.md ----

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

#[tokio::test(start_paused = true)]
async fn the_worked_example_in_protocol_md_is_what_we_send() {
    let ctx = Context::new().with_timeout(Duration::from_millis(250)).with_metadata("tenant", "acme");
    let req = Request::new("Greeter.hello", Bytes::from_static(b"\x04zrpc")).with_ctx(ctx);
    let mut dst = BytesMut::new();
    encode_request(&mut dst, 1, &req, MAX).expect("encodes");
    assert_eq!(
        hex(&dst),
        "00 00 00 37 02 00 00 00 00 00 00 00 00 01 \
         00 00 00 00 00 00 03 d0 90 0d 47 72 65 65 74 65 72 2e 68 65 6c 6c 6f \
         00 01 06 74 65 6e 61 6e 74 00 00 00 04 61 63 6d 65 \
         04 7a 72 70 63"
    );
    dst.clear();
    encode_response(&mut dst, 1, &Ok(Response::new(Bytes::from_static(b"\x0bhello, zrpc"))), MAX).expect("encodes");
    assert_eq!(
        hex(&dst),
        "00 00 00 1b 03 00 00 00 00 00 00 00 00 01 \
         00 00 00 00 00 \
         0b 68 65 6c 6c 6f 2c 20 7a 72 70 63"
    );
    dst.clear();
    encode_response(&mut dst, 3, &Err(Status::not_found("no method Greeter.bye")), MAX).expect("encodes");
    assert_eq!(
        hex(&dst),
        "00 00 00 24 03 00 00 00 00 00 00 00 00 03 \
         05 00 15 6e 6f 20 6d 65 74 68 6f 64 20 47 72 65 65 74 65 72 2e 62 79 65 00 00"
    );
}

// ---- fuzz ----

#[test]
fn random_and_mutated_input_never_panics_and_only_consumes_from_the_front() {
    let mut rng = fastrand::Rng::with_seed(0x5a52_5043);
    let mut valid = encoded(&full_request_frame());
    encode_hello(&mut valid, &hello()).expect("encodes");
    encode_goaway(&mut valid, &GoAway { last_id: 1, code: 14, message: "bye".into() });
    encode_response(&mut valid, 1, &Err(Status::internal("boom")), MAX).expect("encodes");
    let (mut frames, mut errors, mut incomplete) = (0, 0, 0);
    for round in 0..4000 {
        let input: Vec<u8> = if round % 2 == 0 {
            let len = rng.usize(0..64);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            // Plausible lengths and kinds, so that bodies get parsed, not just refused.
            if let Some(head) = bytes.get_mut(..5) {
                head.copy_from_slice(&[0, 0, 0, rng.u8(10..70), rng.u8(0..9)]);
            }
            bytes
        } else {
            let mut bytes = valid.to_vec();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..bytes.len());
                bytes[i] = rng.u8(..);
            }
            bytes.truncate(rng.usize(..=bytes.len()));
            bytes
        };
        // The fuzz target's checks: consumption from the front only, whole or a byte at a time,
        // and a round trip of every frame.
        let report = crate::fuzz::frames(&input, 1024);
        frames += report.count;
        match report.error {
            Some(_) => errors += 1,
            None => incomplete += 1,
        }
    }
    assert!(
        frames > 1000 && errors > 1000 && incomplete > 500,
        "{frames} frames, {errors} errors, {incomplete} incomplete"
    );
}

// --- Durable requests (PROTOCOL.md §19) ---

/// A durable request: its identity after the trace, before the metadata.
fn durable_request_frame() -> RequestFrame {
    RequestFrame {
        flags: flags::IDEMPOTENT | flags::TRACE | flags::DURABLE,
        durable: Some(Box::new(DurableFields {
            outbox: 0x3f2a_9c0d_11e4_b7a5,
            sequence: 42,
            acknowledged: 40,
            sender: Bytes::from_static("shop-1".as_bytes()),
            count: 1,
        })),
        ..full_request_frame()
    }
}

/// Where a durable request's outbox starts in `frame`'s encoding: header, codec, timeout,
/// method length, method, trace.
fn durable_offset(frame: &RequestFrame) -> usize {
    HEADER_LEN + 1 + 8 + 1 + frame.method.len() + 16 + 8 + 1
}

#[test]
fn a_durable_request_round_trips_with_its_identity_after_the_trace() {
    let frame = durable_request_frame();
    let bytes = encoded(&frame);
    let at = durable_offset(&frame);
    let mut identity = Vec::new();
    identity.extend_from_slice(&0x3f2a_9c0d_11e4_b7a5_u64.to_be_bytes());
    identity.extend_from_slice(&42u64.to_be_bytes());
    identity.extend_from_slice(&40u64.to_be_bytes());
    identity.push(6);
    identity.extend_from_slice(b"shop-1");
    assert_eq!(&bytes[at..at + identity.len()], &identity[..]);
    assert_eq!(decode_one(&bytes), Ok(Some(Frame::Request(frame.clone()))));
    let Ok(Some(Frame::Request(decoded))) = decode_one(&bytes) else { panic!("a request") };
    assert_eq!(decoded.durable.as_deref().map(DurableFields::sender_str), Some("shop-1"));

    // The flag follows the fields, whatever the frame's flags byte said.
    let unflagged = RequestFrame { flags: flags::IDEMPOTENT | flags::TRACE, ..frame.clone() };
    assert_eq!(encoded(&unflagged), bytes);
    let stray = RequestFrame { durable: None, ..frame };
    let Ok(Some(Frame::Request(plain))) = decode_one(&encoded(&stray)) else { panic!("a request") };
    assert_eq!((plain.flags & flags::DURABLE, plain.durable), (0, None));
}

#[test]
fn a_durable_request_is_never_oneway_and_starts_at_sequence_one() {
    let frame = durable_request_frame();
    let at = durable_offset(&frame);

    let mut oneway = encoded(&frame);
    oneway[5] |= flags::ONEWAY;
    let never_oneway = FrameError::Malformed { kind: "request", reason: "a durable request is never oneway" };
    assert_eq!(decode_one(&oneway), Err(never_oneway.clone()));
    let mut zero = encoded(&frame);
    zero[at + 8..at + 16].copy_from_slice(&0u64.to_be_bytes());
    let from_one = FrameError::Malformed { kind: "request", reason: "a durable sequence starts at 1" };
    assert_eq!(decode_one(&zero), Err(from_one.clone()));
    let mut ahead = encoded(&frame);
    ahead[at + 16..at + 24].copy_from_slice(&42u64.to_be_bytes());
    let below =
        FrameError::Malformed { kind: "request", reason: "a durable message's acknowledged sequence is below its own" };
    assert_eq!(decode_one(&ahead), Err(below.clone()));
    let mut not_utf8 = encoded(&frame);
    not_utf8[at + 25] = 0xff;
    assert_eq!(
        decode_one(&not_utf8),
        Err(FrameError::Malformed { kind: "request", reason: "durable sender is not utf-8" })
    );

    // The encoder refuses the same, and leaves what it was given unchanged.
    let mut dst = BytesMut::from(&b"earlier frames"[..]);
    let with = |durable: DurableFields, extra: u8| RequestFrame {
        flags: frame.flags | extra,
        durable: Some(Box::new(durable)),
        ..frame.clone()
    };
    let fields = *frame.durable.clone().expect("durable");
    let cases = [
        (with(fields.clone(), flags::ONEWAY), never_oneway),
        (with(DurableFields { sequence: 0, acknowledged: 0, ..fields.clone() }, 0), from_one),
        (with(DurableFields { acknowledged: 42, ..fields.clone() }, 0), below),
        (
            with(DurableFields { sender: Bytes::from(vec![b's'; 256]), ..fields }, 0),
            FrameError::FieldTooLong { field: "durable sender", len: 256, max: 255 },
        ),
    ];
    for (bad, want) in cases {
        assert_eq!(encode_request_frame(&mut dst, &bad, MAX), Err(want));
    }
    assert_eq!(&dst[..], b"earlier frames");
}

#[test]
fn inbox_is_announced_by_an_extension_whose_value_bit_0_announces_batches() {
    let mut without = BytesMut::new();
    encode_hello(&mut without, &hello()).expect("encodes");
    assert_eq!(decode_one(&without), Ok(Some(Frame::Hello(hello()))));
    let inbox = |batches| Hello { inbox: true, inbox_batches: batches, ..hello() };
    for batches in [false, true] {
        let mut with_inbox = BytesMut::new();
        encode_hello(&mut with_inbox, &inbox(batches)).expect("encodes");
        // Tag 0x02, length 1, the value byte, after the FLOW extension.
        assert_eq!(&with_inbox[without.len()..], &[0x02, 0, 1, u8::from(batches)]);
        assert_eq!(decode_one(&with_inbox), Ok(Some(Frame::Hello(inbox(batches)))));
    }

    // A version before batches sent it empty: an inbox, no batches. A later version's further
    // bits and bytes are skipped, and bit 0 stands.
    let body = &without[HEADER_LEN..];
    let with_value = |value: &[u8]| {
        let mut body = body.to_vec();
        body.push(0x02);
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(value);
        decode_one(&raw(kind::HELLO, 0, 0, &body))
    };
    assert_eq!(with_value(&[]), Ok(Some(Frame::Hello(inbox(false)))));
    assert_eq!(with_value(&[0xfe, 9, 9]), Ok(Some(Frame::Hello(inbox(false)))));
    assert_eq!(with_value(&[0xff, 9, 9]), Ok(Some(Frame::Hello(inbox(true)))));
}

#[test]
fn a_durable_batch_carries_its_count_after_the_sender_and_is_bounded() {
    let frame = durable_request_frame();
    let fields = *frame.durable.clone().expect("durable");
    let batch = RequestFrame {
        flags: frame.flags | flags::BATCH,
        durable: Some(Box::new(DurableFields { count: 3, ..fields.clone() })),
        ..frame.clone()
    };
    let bytes = encoded(&batch);
    let at = durable_offset(&batch) + 25 + 6;
    assert_eq!(&bytes[at..at + 4], &3u32.to_be_bytes());
    assert_eq!(bytes[5] & flags::BATCH, flags::BATCH);
    assert_eq!(decode_one(&bytes), Ok(Some(Frame::Request(batch.clone()))));
    // The flag follows the count: a count of 1 is a plain durable request.
    let unflagged = RequestFrame { flags: frame.flags, ..batch.clone() };
    assert_eq!(encoded(&unflagged), bytes);
    assert_eq!(encoded(&RequestFrame { flags: frame.flags | flags::BATCH, ..frame.clone() }), encoded(&frame));

    let bounded =
        FrameError::Malformed { kind: "request", reason: "a durable batch of fewer than 2 messages or more than 1024" };
    for count in [0u32, 1, MAX_DURABLE_BATCH + 1, u32::MAX] {
        let mut wrong = bytes.to_vec();
        wrong[at..at + 4].copy_from_slice(&count.to_be_bytes());
        assert_eq!(decode_one(&wrong), Err(bounded.clone()), "count {count}");
    }
    let mut at_the_end = bytes.to_vec();
    let past = FrameError::Malformed { kind: "request", reason: "a durable batch past the last sequence" };
    at_the_end[durable_offset(&batch) + 8..durable_offset(&batch) + 16].copy_from_slice(&(u64::MAX - 1).to_be_bytes());
    assert_eq!(decode_one(&at_the_end), Err(past));
    let mut not_durable = encoded(&RequestFrame { durable: None, ..frame.clone() });
    not_durable[5] |= flags::BATCH;
    assert_eq!(
        decode_one(&not_durable),
        Err(FrameError::Malformed { kind: "request", reason: "a batch that is not durable" })
    );

    // The encoder refuses a count of 0, over the bound, or past the last sequence.
    let mut dst = BytesMut::new();
    for (count, sequence) in [(0, 42), (MAX_DURABLE_BATCH + 1, 42), (3, u64::MAX - 1)] {
        let bad = RequestFrame {
            durable: Some(Box::new(DurableFields { count, sequence, ..fields.clone() })),
            ..frame.clone()
        };
        assert!(matches!(encode_request_frame(&mut dst, &bad, MAX), Err(FrameError::Malformed { .. })), "{count}");
    }
    assert!(dst.is_empty());
}
