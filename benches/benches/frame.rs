//! Micro-benchmarks of the per-call work that does not touch a socket.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use zrpc::transport::frame::{self, Decoder};
use zrpc::{CodecId, Request, Response};
use zrpc_benches::BenchmarkMessage;

fn payload() -> Bytes {
    let mut buf = BytesMut::new();
    CodecId::Postcard.encode(&BenchmarkMessage::filled(), &mut buf).expect("encodes");
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

    let mut encoded = BytesMut::new();
    frame::encode_request(&mut encoded, 1, &request, frame::DEFAULT_MAX_FRAME).expect("encodes");
    let mut decoder = Decoder::new(frame::DEFAULT_MAX_FRAME);
    c.bench_function("frame/decode_request", |b| {
        b.iter(|| {
            let mut src = encoded.clone();
            decoder.decode(black_box(&mut src)).expect("decodes")
        })
    });
}

fn codec(c: &mut Criterion) {
    let message = BenchmarkMessage::filled();
    let bytes = payload();
    c.bench_function("codec/postcard_encode", |b| {
        b.iter(|| {
            let mut buf = BytesMut::new();
            CodecId::Postcard.encode(black_box(&message), &mut buf).expect("encodes");
            buf
        })
    });
    c.bench_function("codec/postcard_decode", |b| {
        b.iter(|| CodecId::Postcard.decode::<BenchmarkMessage>(black_box(&bytes)).expect("decodes"))
    });
}

criterion_group!(benches, frames, codec);
criterion_main!(benches);
