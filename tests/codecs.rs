//! Every codec over a real TCP connection: the server answers in the codec each request used,
//! MessagePack arguments are a map keyed by argument name on the wire, raw payloads are the
//! bytes, and a request in a codec the server was built without is `Unimplemented` for that
//! call only.
//!
//! Features are unified in one test binary, so a server "without msgpack" is this binary built
//! without it: the last test runs under `cargo test -p zrpc --test codecs` (default features)
//! and the codec tests under `--all-features`, as `.ci/run` runs both.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use zrpc::{Blob, Channel, Code, CodecId, Request, Server};

mod support;

/// Why a lookup failed.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum Missing {
    /// No value under the key.
    NoSuchKey,
}

/// A store of bytes with a little arithmetic on the side.
#[zrpc::service]
pub trait Store {
    /// `a + b`, or `None` on overflow: two arguments, an enum result.
    async fn add(&self, a: i64, b: i64) -> Option<i64>;
    /// The bytes reversed: one byte-string argument and result, as the raw codec carries.
    async fn reverse(&self, data: Blob) -> Blob;
    /// The bytes in upper case: a plain `Vec<u8>` both ways.
    async fn upper(&self, data: Vec<u8>) -> Vec<u8>;
    /// No arguments, bytes back.
    async fn snapshot(&self) -> Blob;
    /// Bytes in, a `Result` out: not for the raw codec.
    async fn fetch(&self, key: Blob) -> Result<Blob, Missing>;
}

struct Memory;

impl Store for Memory {
    async fn add(&self, a: i64, b: i64) -> Option<i64> {
        a.checked_add(b)
    }

    async fn reverse(&self, data: Blob) -> Blob {
        data.iter().rev().copied().collect::<Vec<u8>>().into()
    }

    async fn upper(&self, data: Vec<u8>) -> Vec<u8> {
        data.to_ascii_uppercase()
    }

    async fn snapshot(&self) -> Blob {
        Blob::from_static(b"\x00snapshot\xff")
    }

    async fn fetch(&self, key: Blob) -> Result<Blob, Missing> {
        if &*key == b"k" { Ok(Blob::from_static(b"v")) } else { Err(Missing::NoSuchKey) }
    }
}

async fn serve() -> (Channel, tokio::sync::oneshot::Sender<()>) {
    support::serve_on_loopback(Server::builder().name("codecs-1").add_service(StoreServer::new(Memory))).await
}

/// Sends `payload` as it is, in `codec`, and returns the answer's payload as it came.
async fn send(
    channel: &Channel,
    method: &'static str,
    codec: CodecId,
    payload: &'static [u8],
) -> Result<Bytes, zrpc::Status> {
    let request = Request::new(method, Bytes::from_static(payload)).with_codec(codec);
    Ok(channel.clone().oneshot(request).await?.payload().clone())
}

#[tokio::test]
async fn every_enabled_codec_calls_on_one_connection_at_once() {
    let (channel, _stop) = serve().await;
    let calls = CodecId::enabled().map(|codec| {
        let store = StoreClient::new(channel.clone()).with_codec(codec);
        async move {
            let bytes = Blob::from_static(b"\x00\x01bytes\xff");
            assert_eq!(&*store.reverse(bytes).await.expect("reverse"), b"\xffsetyb\x01\x00", "{codec}");
            assert_eq!(store.upper(b"mixed Case".to_vec()).await.expect("upper"), b"MIXED CASE", "{codec}");
            assert_eq!(&*store.snapshot().await.expect("snapshot"), b"\x00snapshot\xff", "{codec}");
            if codec != CodecId::Raw {
                assert_eq!(store.add(40, 2).await.expect("add"), Some(42), "{codec}");
                assert_eq!(store.add(i64::MAX, 1).await.expect("add"), None, "{codec}");
                assert_eq!(store.fetch(Blob::from_static(b"k")).await.expect("fetch"), Ok(Blob::from_static(b"v")));
                assert_eq!(store.fetch(Blob::new()).await.expect("fetch"), Err(Missing::NoSuchKey), "{codec}");
            }
            codec
        }
    });
    let done = futures::future::join_all(calls).await;
    assert_eq!(done, CodecId::enabled().collect::<Vec<_>>());
}

#[cfg(feature = "msgpack")]
#[tokio::test]
async fn msgpack_arguments_are_a_map_keyed_by_argument_name() {
    let (channel, _stop) = serve().await;
    // {"b": 2, "a": 40}: any key order, as a client in another language may write it.
    let answer =
        send(&channel, "Store.add", CodecId::MsgPack, &[0x82, 0xa1, b'b', 2, 0xa1, b'a', 40]).await.expect("call");
    assert_eq!(answer.as_ref(), [42], "Some(42) is the value itself, answered in msgpack");
    // [40, 2]: an array of the arguments in order is accepted too.
    let answer = send(&channel, "Store.add", CodecId::MsgPack, &[0x92, 40, 2]).await.expect("call");
    assert_eq!(answer.as_ref(), [42]);
    // {"key": bin "nope"} → {"Err": "NoSuchKey"}
    let answer = send(&channel, "Store.fetch", CodecId::MsgPack, b"\x81\xa3key\xc4\x04nope").await.expect("call");
    assert_eq!(answer.as_ref(), b"\x81\xa3Err\xa9NoSuchKey");
}

#[cfg(feature = "raw")]
#[tokio::test]
async fn raw_payloads_are_the_bytes_both_ways() {
    let (channel, _stop) = serve().await;
    let answer = send(&channel, "Store.reverse", CodecId::Raw, b"\x01\x02\x03").await.expect("call");
    assert_eq!(answer.as_ref(), b"\x03\x02\x01");
    let answer = send(&channel, "Store.snapshot", CodecId::Raw, b"").await.expect("call");
    assert_eq!(answer.as_ref(), b"\x00snapshot\xff");
    let status = send(&channel, "Store.snapshot", CodecId::Raw, b"x").await.expect_err("no arguments, one byte");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
}

#[cfg(feature = "raw")]
#[tokio::test]
async fn raw_refuses_what_is_not_one_byte_string_naming_it() {
    let (channel, _stop) = serve().await;
    let store = StoreClient::new(channel).with_codec(CodecId::Raw);

    // Two arguments: the client refuses before sending.
    let status = store.add(40, 2).await.expect_err("two arguments");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.message().contains("could not encode the arguments of Store.add"), "{status}");
    assert!(status.message().contains("not a struct of 2 fields (StoreAddArgs)"), "{status}");

    // A `Result` answer: the server can only tell once it has the value, and says so.
    let status = store.fetch(Blob::from_static(b"k")).await.expect_err("a Result answer");
    assert_eq!(status.code(), Code::Internal, "{status}");
    assert!(status.message().contains("could not encode the result of Store.fetch"), "{status}");
    assert!(status.message().contains("it carries a byte string"), "{status}");
    assert!(status.message().contains("not an enum variant (Result::Ok)"), "{status}");

    // The connection serves on.
    assert_eq!(&*store.reverse(Blob::from_static(b"ab")).await.expect("reverse"), b"ba");
}

#[cfg(not(all(feature = "json", feature = "msgpack", feature = "raw")))]
#[tokio::test]
async fn a_codec_the_server_lacks_is_unimplemented_for_that_call_only() {
    let (channel, _stop) = serve().await;
    let mut refused = 0;
    for codec in CodecId::ALL.into_iter().filter(|codec| !codec.is_enabled()) {
        // Built by hand: the generated client refuses a codec it lacks before sending.
        let status = send(&channel, "Store.snapshot", codec, b"").await.expect_err("the server lacks it");
        assert_eq!(status.code(), Code::Unimplemented, "{codec}: {status}");
        assert!(
            status.message().contains(&format!("codec {} is not supported by codecs-1", codec.as_u8())),
            "{status}"
        );
        refused += 1;
    }
    assert!(refused > 0);
    let store = StoreClient::new(channel);
    assert_eq!(&*store.snapshot().await.expect("the connection serves on"), b"\x00snapshot\xff");
}
