//! [`handshake`]: a peer's arbitrary first bytes, preface and HELLO, into a new [`Mux`], checked
//! against `docs/PROTOCOL.md` §3 (preface) and §5 (HELLO, its FLOW extension included).

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::{Report, assert_goaway_explains, decode_output};
use crate::frame::{self, Decoder, FlowLimits, Frame, FrameError, MAGIC, PREFACE_LEN, VERSION};
use crate::mux::{Event, Mux, MuxConfig, ProtocolError, Role};

/// Runs a new mux over the bytes a peer sends first and checks invariants 1, 2, 3, 5, 6 and 7
/// of the [module docs](super), up to the end of the handshake.
///
/// The first byte sets up the run: bit 0 the mux's role (connector, acceptor), bit 1 its own
/// `max_frame` (1024 or the 16 MiB default), which the peer's HELLO must fit. The rest is what
/// the peer sends from the start of the connection. [`frame::decode_preface`] is checked on the
/// same bytes. The mux keeps what the HELLO announced (name, limit, codecs, token, FLOW),
/// reports nothing but `Ready`, hands over no request, and queues nothing but its HELLO (and,
/// after an error, a GOAWAY saying why). Fed a byte at a time it is stopped where the handshake
/// ends, which must be where the HELLO ends; fed those bytes at once it must end the same way.
///
/// # Panics
/// When an invariant breaks.
pub fn handshake(input: &[u8]) -> Report {
    let Some((&control, stream)) = input.split_first() else { return Report::default() };
    let role = if control & 1 == 0 { Role::Connector } else { Role::Acceptor };
    let max_frame = if control & 2 == 0 { frame::MIN_MAX_FRAME } else { frame::DEFAULT_MAX_FRAME };

    let mut src = BytesMut::from(stream);
    let preface = frame::decode_preface(&mut src);
    assert_eq!(preface, expected_preface(stream), "decode_preface disagrees with PROTOCOL.md §3");
    let used = if preface == Ok(true) { PREFACE_LEN } else { 0 };
    assert_eq!(&src[..], &stream[used..], "decode_preface consumed the wrong bytes");

    let expected = expected(stream, max_frame);
    // Fed a byte at a time, the mux is stopped where the handshake ends (it would read on past
    // the HELLO: that is the `mux` target's business); fed those same bytes at once, it must end
    // the same way.
    let trickled = greet(role, max_frame, stream, 1);
    let end = trickled.fed;
    let whole = greet(role, max_frame, &stream[..end], end);
    assert_eq!(
        (&whole.greeting, &whole.out),
        (&trickled.greeting, &trickled.out),
        "the handshake depends on how the input was split"
    );
    let Greet { greeting, left, .. } = whole;
    match (&greeting, &expected) {
        (Greeting::Failed(_), _) => assert_eq!(greeting, expected.0, "the handshake failed differently"),
        _ => {
            let left = [&left[..], &stream[end..]].concat();
            assert_eq!((&greeting, &left[..]), (&expected.0, &expected.1[..]), "the handshake went wrong");
        }
    }
    let count = usize::from(matches!(greeting, Greeting::Ready { .. }));
    Report { count, error: if let Greeting::Failed(e) = greeting { Some(e) } else { None } }
}

/// How a handshake ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Greeting {
    /// The peer's preface and HELLO have not all arrived.
    Waiting,
    /// The HELLO arrived; what the mux kept of it.
    Ready {
        name: String,
        max_frame: u32,
        codecs: Vec<u8>,
        token: Bytes,
        flow: Option<FlowLimits>,
    },
    Failed(ProtocolError),
}

/// The preface check of PROTOCOL.md §3: each byte fails as soon as it differs.
fn expected_preface(stream: &[u8]) -> Result<bool, FrameError> {
    if stream.iter().zip(&MAGIC).any(|(got, want)| got != want) {
        let tls = matches!(stream, [0x15 | 0x16, ..]);
        return Err(if tls { FrameError::TlsInsteadOfPreface } else { FrameError::BadPreface });
    }
    match stream.get(MAGIC.len()) {
        Some(&version) if version != VERSION => Err(FrameError::UnsupportedVersion(version)),
        _ => Ok(stream.len() >= PREFACE_LEN),
    }
}

/// The handshake PROTOCOL.md describes, and the bytes left after it: the preface, then a HELLO
/// as the first frame of a known kind, within this side's limit and [`frame::MAX_HELLO`].
fn expected(stream: &[u8], max_frame: u32) -> (Greeting, Bytes) {
    match expected_preface(stream) {
        Err(e) => return (Greeting::Failed(e.into()), Bytes::new()),
        Ok(false) => return (Greeting::Waiting, Bytes::copy_from_slice(stream)),
        Ok(true) => {}
    }
    let mut rest = BytesMut::from(&stream[PREFACE_LEN..]);
    let greeting = match Decoder::new(max_frame.min(frame::MAX_HELLO)).decode(&mut rest) {
        Err(e) => Greeting::Failed(e.into()),
        Ok(None) => Greeting::Waiting,
        Ok(Some(Frame::Hello(hello))) => Greeting::Ready {
            name: hello.name,
            max_frame: hello.max_frame,
            codecs: hello.codecs,
            token: hello.token,
            flow: hello.flow,
        },
        Ok(Some(_)) => Greeting::Failed(ProtocolError::Violation("the first frame must be HELLO".into())),
    };
    (greeting, rest.freeze())
}

/// How [`greet`] went.
struct Greet {
    greeting: Greeting,
    /// The bytes fed and left unread.
    left: Bytes,
    /// What the mux queued.
    out: Bytes,
    /// How many bytes of the stream were fed.
    fed: usize,
}

/// Feeds `stream` to a new mux `chunk` bytes at a time until it is ready or fails.
fn greet(role: Role, max_frame: u32, stream: &[u8], chunk: usize) -> Greet {
    let now = Instant::now();
    let config = MuxConfig { name: "fuzz".into(), max_frame, ..MuxConfig::default() };
    let mut mux: Mux<()> = Mux::new(role, config, now);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut greeting = Greeting::Waiting;
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        let result = mux.recv(&mut buf, now);
        assert!(stream[..fed].ends_with(&buf), "the mux consumed bytes from somewhere other than the front");
        if let Err(e) = result {
            let left = buf.clone();
            assert!(matches!(mux.recv(&mut buf, now), Ok(())) && buf == left, "a failed mux reads on");
            assert!(mux.poll_event().is_none(), "a failed handshake reported an event");
            greeting = Greeting::Failed(e);
            break;
        }
        match mux.poll_event() {
            None => assert!(!mux.is_ready() && mux.peer().is_none(), "ready without saying so"),
            Some(Event::Ready) => {
                assert!(mux.is_ready());
                let Some(peer) = mux.peer() else { panic!("ready without a peer") };
                greeting = Greeting::Ready {
                    name: peer.name.to_string(),
                    max_frame: peer.max_frame,
                    codecs: peer.codecs.clone(),
                    token: peer.token.clone(),
                    flow: peer.flow,
                };
                break;
            }
            Some(event) => panic!("{event:?} before the handshake finished"),
        }
    }
    // A handshake reports nothing but Ready, and the peer's requests wait for it.
    if let Some(event) = mux.poll_event() {
        panic!("{event:?} with the handshake");
    }
    assert!(!mux.has_request(), "a request handed over with the handshake");
    let out = mux.take_output().freeze();
    // Before the peer's HELLO only the smallest limit is known to be safe.
    let frames = decode_output(&out, frame::MIN_MAX_FRAME);
    assert!(matches!(frames.first(), Some(Frame::Hello(_))), "the first frame queued is not our HELLO");
    match &greeting {
        Greeting::Failed(e) => {
            assert_goaway_explains(&frames, e);
            assert!(matches!(frames.last(), Some(Frame::GoAway(g)) if g.last_id == 0), "no request was seen yet");
        }
        _ => assert_eq!(frames.len(), 1, "the mux queued more than its HELLO: {frames:?}"),
    }
    Greet { greeting, left: buf.freeze(), out, fed }
}
