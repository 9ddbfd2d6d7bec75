//! `docs/PROTOCOL.md` §9 (payloads) against a real server over TCP.
//!
//! The worked examples are read from the document itself, so that it cannot drift from what
//! zrpc sends: each table row's request payload goes to a server as it is written there, and the
//! answer must be the row's response payload, byte for byte; zrpc's own caller must encode the
//! row's arguments to the same request bytes. The other tests send the argument forms §9 says a
//! receiver accepts or refuses.
//!
//! Rows of codecs this build lacks are read but not sent: `cargo test --workspace` checks
//! postcard and JSON, `.ci/run`'s `--all-features` run MessagePack and raw too.

use bytes::Bytes;
use serde::Serialize;
use tower::ServiceExt;
use zrpc::{Blob, Channel, Code, CodecId, Request, Server, Status};

#[path = "support/greeter.rs"]
mod greeter;
mod support;

use greeter::{
    GreeterAddArgs, GreeterHelloArgs, GreeterLookupArgs, GreeterPingArgs, GreeterReverseArgs, GreeterServer, Hello,
    MathError,
};

const PROTOCOL_MD: &str = include_str!("../docs/PROTOCOL.md");

/// One row of a worked-example table, as written.
#[derive(Debug)]
struct Row {
    codec: CodecId,
    call: String,
    answer: String,
    request: Vec<u8>,
    response: Vec<u8>,
}

/// A call the tables may show: its `call` and `answer` cells, the method, and its arguments and
/// answer encoded by zrpc in a given codec.
struct Example {
    call: &'static str,
    answer: &'static str,
    method: &'static str,
    args: fn(CodecId) -> Bytes,
    result: fn(CodecId) -> Bytes,
}

fn encoded<T: Serialize>(codec: CodecId, value: &T) -> Bytes {
    codec.encode_to_bytes(value).unwrap_or_else(|e| panic!("{codec} encodes the example: {e}"))
}

fn examples() -> Vec<Example> {
    vec![
        Example {
            call: "`ping()`",
            answer: "`()`",
            method: "Greeter.ping",
            args: |c| encoded(c, &GreeterPingArgs {}),
            result: |c| encoded(c, &()),
        },
        Example {
            call: "`hello(\"zrpc\")`",
            answer: "`\"hello, zrpc\"`",
            method: "Greeter.hello",
            args: |c| encoded(c, &GreeterHelloArgs { name: "zrpc".into() }),
            result: |c| encoded(c, &"hello, zrpc"),
        },
        Example {
            call: "`add(40, 2)`",
            answer: "`Ok(42)`",
            method: "Greeter.add",
            args: |c| encoded(c, &GreeterAddArgs { a: 40, b: 2 }),
            result: |c| encoded(c, &Ok::<i64, MathError>(42)),
        },
        Example {
            call: "`add(9223372036854775807, 1)`",
            answer: "`Err(Overflow)`",
            method: "Greeter.add",
            args: |c| encoded(c, &GreeterAddArgs { a: i64::MAX, b: 1 }),
            result: |c| encoded(c, &Err::<i64, MathError>(MathError::Overflow)),
        },
        Example {
            call: "`lookup(18446744073709551615)`",
            answer: "`Some(\"max\")`",
            method: "Greeter.lookup",
            args: |c| encoded(c, &GreeterLookupArgs { key: u64::MAX }),
            result: |c| encoded(c, &Some("max")),
        },
        Example {
            call: "`lookup(7)`",
            answer: "`None`",
            method: "Greeter.lookup",
            args: |c| encoded(c, &GreeterLookupArgs { key: 7 }),
            result: |c| encoded(c, &None::<String>),
        },
        Example {
            call: "`reverse([1, 2, 3])`",
            answer: "`[3, 2, 1]`",
            method: "Greeter.reverse",
            args: |c| encoded(c, &GreeterReverseArgs { data: Blob::from_static(&[1, 2, 3]) }),
            result: |c| encoded(c, &Blob::from_static(&[3, 2, 1])),
        },
    ]
}

/// The lines of `## 9. Payloads`'s `### Worked examples`.
fn worked_examples_section() -> &'static str {
    let start = PROTOCOL_MD.find("\n## 9. Payloads\n").expect("PROTOCOL.md has a section `## 9. Payloads`");
    let section = &PROTOCOL_MD[start + 1..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let examples = section.find("\n### Worked examples\n").expect("§9 has a subsection `### Worked examples`");
    let examples = &section[examples + 1..];
    // The first line is the subsection's own heading: look for the next one after it.
    let end = examples[1..].find("\n### ").map_or(examples.len(), |i| i + 1);
    &examples[..end]
}

/// A payload cell: `empty`, or the bytes in backticks, hex pairs (JSON: the text itself).
fn payload(codec: CodecId, cell: &str) -> Vec<u8> {
    if cell == "empty" {
        return Vec::new();
    }
    let inner = cell
        .strip_prefix('`')
        .and_then(|c| c.strip_suffix('`'))
        .unwrap_or_else(|| panic!("a payload cell is `empty` or in backticks, not {cell:?}"));
    if codec == CodecId::Json {
        return inner.as_bytes().to_vec();
    }
    inner
        .split_whitespace()
        .map(|pair| {
            assert_eq!(pair.len(), 2, "{codec} bytes are hex pairs: {pair:?} in {cell:?}");
            u8::from_str_radix(pair, 16).unwrap_or_else(|e| panic!("{pair:?} in {cell:?}: {e}"))
        })
        .collect()
}

/// Every row of every table, each table headed `#### name (codec N)`.
fn rows() -> Vec<Row> {
    let mut codec = None;
    let mut rows = Vec::new();
    for line in worked_examples_section().lines() {
        if let Some(heading) = line.strip_prefix("#### ") {
            let id = heading
                .split_once("(codec ")
                .and_then(|(_, rest)| rest.strip_suffix(')'))
                .and_then(|id| id.parse::<u8>().ok())
                .unwrap_or_else(|| panic!("a table's heading ends with `(codec N)`: {heading:?}"));
            codec = Some(CodecId::from_u8(id).unwrap_or_else(|| panic!("no codec {id}")));
        } else if line.starts_with("| `") {
            let codec = codec.unwrap_or_else(|| panic!("a row before any `####` heading: {line}"));
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            let [call, answer, request, response] = cells[..] else {
                panic!("a row has four cells (call, answer, request, response): {line}");
            };
            rows.push(Row {
                codec,
                call: call.to_owned(),
                answer: answer.to_owned(),
                request: payload(codec, request),
                response: payload(codec, response),
            });
        }
    }
    rows
}

/// Bytes as the tables write them: JSON as its text, the others as hex pairs.
fn written(codec: CodecId, bytes: &[u8]) -> String {
    match codec {
        CodecId::Json => String::from_utf8_lossy(bytes).into_owned(),
        _ => bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "),
    }
}

async fn serve() -> (Channel, tokio::sync::oneshot::Sender<()>) {
    support::serve_on_loopback(Server::builder().name("payloads-1").add_service(GreeterServer::new(Hello))).await
}

/// Sends `payload` as it is, in `codec`, and returns the answer's payload as it came.
async fn send(channel: &Channel, method: &'static str, codec: CodecId, payload: &[u8]) -> Result<Bytes, Status> {
    let request = Request::new(method, Bytes::copy_from_slice(payload)).with_codec(codec);
    Ok(channel.clone().oneshot(request).await?.payload().clone())
}

#[tokio::test]
async fn the_worked_examples_in_protocol_md_are_what_a_server_answers() {
    let rows = rows();
    let examples = examples();
    // Every table shows every call that codec can carry: raw only `ping` and `reverse`.
    for codec in CodecId::ALL {
        let calls: Vec<&str> = rows.iter().filter(|row| row.codec == codec).map(|row| row.call.as_str()).collect();
        let expected: Vec<&str> = examples
            .iter()
            .map(|e| e.call)
            .filter(|call| codec != CodecId::Raw || ["`ping()`", "`reverse([1, 2, 3])`"].contains(call))
            .collect();
        assert_eq!(calls, expected, "the {codec} table of PROTOCOL.md §9's worked examples");
    }

    let (channel, _stop) = serve().await;
    let mut checked = 0_usize;
    for row in rows.iter().filter(|row| row.codec.is_enabled()) {
        let example = examples.iter().find(|e| e.call == row.call).expect("a known call");
        let what = format!("{} {} in PROTOCOL.md §9", row.codec, row.call);
        assert_eq!(row.answer, example.answer, "{what}: the answer");
        let written = |bytes: &[u8]| written(row.codec, bytes);
        assert_eq!(written(&(example.args)(row.codec)), written(&row.request), "{what}: zrpc encodes the arguments so");
        assert_eq!(written(&(example.result)(row.codec)), written(&row.response), "{what}: the answer {}", row.answer);
        let answer = send(&channel, example.method, row.codec, &row.request).await;
        let answer = answer.unwrap_or_else(|status| panic!("{what}: the server refused the request: {status}"));
        assert_eq!(written(&answer), written(&row.response), "{what}: the server's answer");
        checked += 1;
    }
    let enabled: usize = CodecId::enabled().map(|codec| if codec == CodecId::Raw { 2 } else { examples.len() }).sum();
    assert_eq!(checked, enabled, "rows checked against the server");
}

/// Sends a JSON payload; `Ok` with the answer as text, or the refusal's code.
async fn json(channel: &Channel, method: &'static str, payload: &str) -> Result<String, Code> {
    match send(channel, method, CodecId::Json, payload.as_bytes()).await {
        Ok(answer) => Ok(String::from_utf8(answer.to_vec()).expect("a JSON answer is UTF-8")),
        Err(status) => {
            assert!(status.message().contains(&format!("could not decode the arguments of {method}")), "{status}");
            Err(status.code())
        }
    }
}

#[tokio::test]
async fn json_arguments_are_one_object_or_array_never_a_bare_value() {
    let (channel, _stop) = serve().await;
    let refused = Err(Code::InvalidArgument);
    // No arguments: an empty object or array; not null, not nothing.
    assert_eq!(json(&channel, "Greeter.ping", "{}").await, Ok("null".to_owned()));
    assert_eq!(json(&channel, "Greeter.ping", " [ ] ").await, Ok("null".to_owned()));
    assert_eq!(json(&channel, "Greeter.ping", "null").await, refused);
    assert_eq!(json(&channel, "Greeter.ping", "").await, refused);
    // One argument: still a struct of one field.
    assert_eq!(json(&channel, "Greeter.hello", r#"["zrpc"]"#).await, Ok(r#""hello, zrpc""#.to_owned()));
    assert_eq!(json(&channel, "Greeter.hello", r#"{"name":"zrpc","extra":[1]}"#).await, Ok(r#""hello, zrpc""#.into()));
    assert_eq!(json(&channel, "Greeter.hello", r#""zrpc""#).await, refused);
    assert_eq!(json(&channel, "Greeter.hello", r#"{"name":"a","name":"b"}"#).await, refused);
    // Several: keys in any order or the values in order; all of them, of the declared types.
    assert_eq!(json(&channel, "Greeter.add", r#"{"b":2,"a":40}"#).await, Ok(r#"{"Ok":42}"#.to_owned()));
    assert_eq!(json(&channel, "Greeter.add", "[40,2]").await, Ok(r#"{"Ok":42}"#.to_owned()));
    assert_eq!(json(&channel, "Greeter.add", "[40,2,0]").await, refused);
    assert_eq!(json(&channel, "Greeter.add", r#"{"a":40}"#).await, refused);
    assert_eq!(json(&channel, "Greeter.add", r#"{"a":40.0,"b":2}"#).await, refused);
    assert_eq!(json(&channel, "Greeter.add", r#"{"a":"40","b":2}"#).await, refused);
    assert_eq!(json(&channel, "Greeter.add", "[40,2] x").await, refused);
    // Integers beyond 2^53 are exact both ways; beyond the type's range they are refused.
    assert_eq!(json(&channel, "Greeter.lookup", r#"{"key":18446744073709551615}"#).await, Ok(r#""max""#.into()));
    assert_eq!(json(&channel, "Greeter.lookup", r#"{"key":18446744073709551614}"#).await, Ok("null".into()));
    assert_eq!(json(&channel, "Greeter.lookup", r#"{"key":18446744073709551616}"#).await, refused);
    assert_eq!(json(&channel, "Greeter.lookup", r#"{"key":-1}"#).await, refused);
    // Bytes: an array of numbers; a `Blob` also takes a string's UTF-8 bytes.
    assert_eq!(json(&channel, "Greeter.reverse", r#"{"data":[1,2,256]}"#).await, refused);
    assert_eq!(json(&channel, "Greeter.reverse", r#"{"data":"ab"}"#).await, Ok("[98,97]".to_owned()));
}

#[cfg(feature = "msgpack")]
#[tokio::test]
async fn msgpack_arguments_are_one_map_or_array_never_a_bare_value() {
    let (channel, _stop) = serve().await;
    let send = |method, payload: &'static [u8]| send(&channel, method, CodecId::MsgPack, payload);
    assert_eq!(send("Greeter.ping", b"\x90").await.expect("an empty array").as_ref(), b"\xc0");
    assert_eq!(send("Greeter.hello", b"\x91\xa4zrpc").await.expect("an array of one").as_ref(), b"\xabhello, zrpc");
    for (method, payload) in [
        ("Greeter.ping", &b"\xc0"[..]),
        ("Greeter.ping", b""),
        ("Greeter.hello", b"\xa4zrpc"),
        ("Greeter.ping", b"\x80\xc0"),
    ] {
        let status = send(method, payload).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{method} {payload:x?}: {status}");
    }
    // Any int format whose value fits: 7 as a uint 16 is the key 7.
    assert_eq!(send("Greeter.lookup", b"\x81\xa3key\xcd\x00\x07").await.expect("a uint 16").as_ref(), b"\xc0");
}

#[tokio::test]
async fn postcard_refuses_bytes_after_the_arguments() {
    let (channel, _stop) = serve().await;
    let status = send(&channel, "Greeter.ping", CodecId::Postcard, &[0]).await.expect_err("one byte too many");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.message().contains("1 trailing bytes"), "{status}");
}

/// A tree as deep as its payload says: the kind of type whose decoding a peer could otherwise
/// drive past the end of the stack (docs/PROTOCOL.md §9, "Nesting").
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Tree(Vec<Tree>);

#[zrpc::service]
trait Trees {
    /// How many trees deep `tree` goes.
    async fn depth(&self, tree: Tree) -> u32;
}

struct Depth;

impl Trees for Depth {
    async fn depth(&self, tree: Tree) -> u32 {
        let (mut depth, mut level) = (0, tree.0);
        while let Some(inner) = level.pop() {
            (depth, level) = (depth + 1, inner.0);
        }
        depth
    }
}

#[tokio::test]
async fn arguments_nested_a_million_deep_are_refused_and_the_server_serves_on() {
    let server = Server::builder().name("payloads-2").add_service(TreesServer::new(Depth));
    let (channel, _stop) = support::serve_on_loopback(server).await;
    let trees = TreesClient::new(channel.clone());
    let deep = |n| (0..n).fold(Tree(vec![]), |tree, _| Tree(vec![tree]));
    assert_eq!(trees.depth(deep(40)).await.expect("40 deep"), 40);
    // A megabyte of nesting: without a limit, its decoding recursed a million times on the
    // server's thread, which overflowed and took the process down, every connection with it.
    const DEEP: usize = 1_000_000;
    let mut refused = 0;
    for codec in CodecId::enabled() {
        // The arguments struct, then the nested trees: in JSON and MessagePack as an array of
        // its one field.
        let payload = match codec {
            CodecId::Postcard => [vec![1; DEEP], vec![0]].concat(),
            CodecId::Json => [vec![b'['; DEEP + 1], vec![b']'; DEEP + 1]].concat(),
            CodecId::MsgPack => [vec![0x91; DEEP + 1], vec![0x90]].concat(),
            _ => continue,
        };
        let status = send(&channel, "Trees.depth", codec, &payload).await.expect_err("too deep");
        assert_eq!(status.code(), Code::InvalidArgument, "{codec}: {status}");
        refused += 1;
    }
    assert_eq!(refused, CodecId::enabled().filter(|codec| *codec != CodecId::Raw).count());
    assert_eq!(trees.depth(deep(3)).await.expect("the same connection serves on"), 3);
}
