//! Micro-benchmarks of the per-call work that does not touch a socket: frame encode/decode,
//! header parsing, the codec round trip, and mux dispatch (a call through two connection state
//! machines, no I/O).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tokio::time::Instant;
use zrpc::transport::frame::{self, Decoder};
use zrpc::transport::mux::{Event, Mux, MuxConfig, Role};
use zrpc::{CodecId, Request, Response};
use zrpc_benches::BenchmarkMessage;

fn payload() -> Bytes {
    let mut buf = BytesMut::new();
    CodecId::Postcard.encode(&BenchmarkMessage::<String>::filled(), &mut buf).expect("encodes");
    buf.freeze()
}

fn frames(c: &mut Criterion) {
    let request = Request::new("Bench.echo", payload());
    let response: Result<Response, zrpc::Status> = Ok(Response::new(payload()));
    let mut out = BytesMut::with_capacity(64 * 1024);

    c.bench_function("frame/encode_request", |b| {
        b.iter(|| {
            out.clear();
            frame::encode_request(&mut out, 1, black_box(&request), frame::DEFAULT_MAX_FRAME).expect("encodes")
        })
    });
    c.bench_function("frame/encode_response", |b| {
        b.iter(|| {
            out.clear();
            frame::encode_response(&mut out, 1, black_box(&response), frame::DEFAULT_MAX_FRAME).expect("encodes")
        })
    });

    let mut encoded_response = BytesMut::new();
    frame::encode_response(&mut encoded_response, 1, &response, frame::DEFAULT_MAX_FRAME).expect("encodes");
    let mut decoder = Decoder::new(frame::DEFAULT_MAX_FRAME);
    c.bench_function("frame/decode_response", |b| {
        b.iter_batched_ref(
            || encoded_response.clone(),
            |src| decoder.decode(black_box(src)).expect("decodes"),
            BatchSize::SmallInput,
        )
    });

    let mut encoded = BytesMut::new();
    frame::encode_request(&mut encoded, 1, &request, frame::DEFAULT_MAX_FRAME).expect("encodes");
    let mut decoder = Decoder::new(frame::DEFAULT_MAX_FRAME);
    c.bench_function("frame/decode_request", |b| {
        b.iter_batched_ref(
            || encoded.clone(),
            |src| decoder.decode(black_box(src)).expect("decodes"),
            BatchSize::SmallInput,
        )
    });
}

/// Header parsing: frames that are (almost) all header, and a buffer holding less than a header.
/// The decoder has no header-only entry point, so these go through `Decoder::decode`. (Decode
/// benches copy their input outside the timed part: `BytesMut::clone` allocates.)
fn headers(c: &mut Criterion) {
    let mut decoder = Decoder::new(frame::DEFAULT_MAX_FRAME);
    let mut ping = BytesMut::new();
    frame::encode_ping(&mut ping, 42);
    c.bench_function("header/decode_ping", |b| {
        b.iter_batched_ref(
            || ping.clone(),
            |src| decoder.decode(black_box(src)).expect("decodes"),
            BatchSize::SmallInput,
        )
    });
    let mut cancel = BytesMut::new();
    frame::encode_cancel(&mut cancel, 7);
    c.bench_function("header/decode_cancel", |b| {
        b.iter_batched_ref(
            || cancel.clone(),
            |src| decoder.decode(black_box(src)).expect("decodes"),
            BatchSize::SmallInput,
        )
    });
    let partial = BytesMut::from(&ping[..frame::HEADER_LEN - 1]);
    c.bench_function("header/partial_header", |b| {
        b.iter_batched_ref(
            || partial.clone(),
            |src| decoder.decode(black_box(src)).expect("decodes"),
            BatchSize::SmallInput,
        )
    });
}

/// Mux dispatch: one call through a client and a server mux, bytes handed across by hand.
fn mux(c: &mut Criterion) {
    let now = Instant::now();
    let mut client: Mux<u64> = Mux::new(Role::Connector, MuxConfig::default(), now);
    let mut server: Mux<u64> = Mux::new(Role::Acceptor, MuxConfig::default(), now);
    // The handshake: prefaces and HELLOs both ways.
    let mut wire = client.take_output();
    server.recv(&mut wire, now).expect("handshake");
    let mut wire = server.take_output();
    client.recv(&mut wire, now).expect("handshake");
    assert!(matches!(client.poll_event(), Some(Event::Ready)) && matches!(server.poll_event(), Some(Event::Ready)));
    assert!(client.is_ready() && server.is_ready(), "the muxes finished their handshake");

    let request = Request::new("Bench.echo", payload());
    let response: Result<Response, zrpc::Status> = Ok(Response::new(payload()));
    let mut id = Role::Connector.first_id();
    c.bench_function("mux/call_round_trip", |b| {
        b.iter(|| {
            id += 2;
            // The mux takes the request by value: the clone is a few reference counts.
            assert!(client.send_request(id, black_box(request.clone()), id).is_ok());
            let mut wire = client.take_output();
            server.recv(&mut wire, now).expect("a request arrives");
            let Some((call, _)) = server.next_request() else { panic!("a request is handed over") };
            server.finish(call.id, black_box(&response));
            let mut wire = server.take_output();
            client.recv(&mut wire, now).expect("a response arrives");
            let Some(Event::Response { token, .. }) = client.poll_event() else { panic!("a response arrives") };
            token
        })
    });
}

fn codec(c: &mut Criterion) {
    let message = BenchmarkMessage::<String>::filled();
    let bytes = payload();
    // What a call pays: encoding into the per-thread scratch buffer.
    c.bench_function("codec/postcard_encode", |b| {
        b.iter(|| CodecId::Postcard.encode_to_bytes(black_box(&message)).expect("encodes"))
    });
    c.bench_function("codec/postcard_decode", |b| {
        b.iter(|| CodecId::Postcard.decode::<BenchmarkMessage>(black_box(&bytes)).expect("decodes"))
    });
    // The same bytes with `zrpc::Text` strings, as the generated code decodes: the ASCII ones
    // slices of the frame, the others copied.
    c.bench_function("codec/postcard_decode_text", |b| {
        b.iter(|| CodecId::Postcard.decode_shared::<BenchmarkMessage<zrpc::Text>>(black_box(&bytes)).expect("decodes"))
    });
    // A 64 KiB byte field: serde reads a `Vec<u8>` a byte at a time; a `Blob` is a slice.
    let big = CodecId::Postcard.encode_to_bytes(&zrpc::Blob::from(vec![7u8; 64 << 10])).expect("encodes");
    c.bench_function("codec/postcard_decode_vec_64k", |b| {
        b.iter(|| CodecId::Postcard.decode_shared::<Vec<u8>>(black_box(&big)).expect("decodes"))
    });
    c.bench_function("codec/postcard_decode_blob_64k", |b| {
        b.iter(|| CodecId::Postcard.decode_shared::<zrpc::Blob>(black_box(&big)).expect("decodes"))
    });
    text_sizes(c);
    #[cfg(feature = "codecs")]
    codecs(c, &message);
}

/// One string field of 1, 16 and 256 KiB, Chinese and ASCII, decoded as a `String` (copied,
/// checked 64 bytes at a time) and as a `zrpc::Text` (ASCII: a slice of the frame, checked by
/// `str::from_utf8`; other text copied as a `String` is): where `Text` pays and where it does
/// not (`zrpc_core::zero_copy`'s docs).
fn text_sizes(c: &mut Criterion) {
    for (script, unit) in [
        ("chinese", "许多往事在眼前一幕一幕，变的那麼模糊"),
        ("ascii", "a]b]c]d]e]f]g]h]i]j]k]l]m]n]o]p]q]r]s]t]u]v]w]x]y]z"),
    ] {
        for (size, len) in [("1k", 1 << 10), ("16k", 16 << 10), ("256k", 256 << 10)] {
            let text: String = unit.chars().cycle().take(len / unit.len() * unit.chars().count()).collect();
            let frame = CodecId::Postcard.encode_to_bytes(&text).expect("encodes");
            c.bench_function(&format!("codec/text/{script}_{size}_string"), |b| {
                b.iter(|| CodecId::Postcard.decode_shared::<String>(black_box(&frame)).expect("decodes"))
            });
            c.bench_function(&format!("codec/text/{script}_{size}_text"), |b| {
                b.iter(|| CodecId::Postcard.decode_shared::<zrpc::Text>(black_box(&frame)).expect("decodes"))
            });
        }
    }
}

/// The README's codec table: the benchmark message in each self-describing codec, as a call
/// encodes and decodes it (`encode_to_bytes`, `decode_shared`), and raw bytes of the same size
/// as the message in protobuf. Each prints its encoded size.
#[cfg(feature = "codecs")]
fn codecs(c: &mut Criterion, message: &BenchmarkMessage) {
    for codec in [CodecId::Postcard, CodecId::Json, CodecId::MsgPack] {
        let encoded = codec.encode_to_bytes(message).expect("encodes");
        eprintln!("codec/{codec}: the benchmark message is {} bytes", encoded.len());
        c.bench_function(&format!("codec/table/{codec}_encode"), |b| {
            b.iter(|| codec.encode_to_bytes(black_box(message)).expect("encodes"))
        });
        c.bench_function(&format!("codec/table/{codec}_decode"), |b| {
            b.iter(|| codec.decode_shared::<BenchmarkMessage>(black_box(&encoded)).expect("decodes"))
        });
    }
    let blob = zrpc::Blob::from(vec![0x5a_u8; 581]);
    let encoded = CodecId::Raw.encode_to_bytes(&blob).expect("encodes");
    eprintln!("codec/raw: a 581-byte Blob is {} bytes", encoded.len());
    c.bench_function("codec/table/raw_encode_581", |b| {
        b.iter(|| CodecId::Raw.encode_to_bytes(black_box(&blob)).expect("encodes"))
    });
    c.bench_function("codec/table/raw_decode_581", |b| {
        b.iter(|| CodecId::Raw.decode_shared::<zrpc::Blob>(black_box(&encoded)).expect("decodes"))
    });
    // The same 581 bytes in postcard, for scale: a length prefix, then the bytes.
    let encoded = CodecId::Postcard.encode_to_bytes(&blob).expect("encodes");
    c.bench_function("codec/table/postcard_encode_blob_581", |b| {
        b.iter(|| CodecId::Postcard.encode_to_bytes(black_box(&blob)).expect("encodes"))
    });
    c.bench_function("codec/table/postcard_decode_blob_581", |b| {
        b.iter(|| CodecId::Postcard.decode_shared::<zrpc::Blob>(black_box(&encoded)).expect("decodes"))
    });
}

criterion_group!(benches, frames, headers, codec, mux);
criterion_main!(benches);
