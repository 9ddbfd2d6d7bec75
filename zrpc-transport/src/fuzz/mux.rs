//! [`mux`]: a peer's arbitrary frames into a [`Mux`] that has done its handshake, checked against
//! a model of what the mux should report.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use zrpc_core::{Code, Request, Response, Status};

use super::{PEER_NAME, Report, Setup, assert_goaway_explains, decode_output, peer_handshake};
use crate::frame::{self, Frame};
use crate::mux::{Event, Mux, MuxConfig, ProtocolError};

/// Runs a mux over `input` and checks invariants 1, 2, 3, 5, 6 and 7 of the
/// [module docs](super).
///
/// The first byte sets up the run: bit 0 the mux's role (connector, acceptor), bit 1 the peer's
/// `max_frame` (1024 or the 16 MiB default), bit 2 whether the mux sends a graceful GOAWAY as
/// soon as the handshake is done. The second byte seeds the sizes of the reads for the second
/// pass (the first reads everything at once). The rest is what the peer sends after its preface
/// and a valid HELLO, which the run supplies.
///
/// The mux has three calls of its own out (ids 1, 3, 5 or 2, 4, 6; the last one oneway) so that
/// responses can match, answers the peer's calls as they come with their payload twice (ids
/// divisible by 3 are left in progress, for a CANCEL to find), and accepts 1024-byte frames, so
/// that the limits are in reach both ways.
///
/// # Panics
/// When an invariant breaks.
pub fn mux(input: &[u8]) -> Report {
    let (setup, seed, peer_bytes) = match input {
        [control, seed, rest @ ..] => (Setup::new(*control), *seed, rest),
        _ => return Report::default(),
    };
    let mut stream = peer_handshake(setup.peer_max_frame);
    stream.extend_from_slice(peer_bytes);

    let whole = Run::new(setup).feed(&stream, std::iter::once(stream.len()));
    let mut rng = fastrand::Rng::with_seed(u64::from(seed));
    let largest = rng.usize(1..=64);
    let pieces = Run::new(setup).feed(&stream, std::iter::repeat_with(|| rng.usize(1..=largest)));
    assert_eq!(whole, pieces, "the run depends on how the input was split into reads of at most {largest} bytes");
    Report { count: whole.transcript.len(), error: whole.error }
}

/// What a run produced; two runs over the same bytes must produce the same.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    transcript: Vec<String>,
    out: Bytes,
    error: Option<ProtocolError>,
}

/// One mux and the model it is checked against.
struct Run {
    setup: Setup,
    mux: Mux<u64>,
    now: Instant,
    next_id: u64,
    ready: bool,
    went_away: bool,
    /// Calls this side made that await an answer.
    pending: BTreeSet<u64>,
    /// The peer's calls in progress here.
    inbound: BTreeSet<u64>,
    /// Every id the peer's requests were reported with.
    reported: BTreeSet<u64>,
    /// The events, as `Debug` text.
    transcript: Vec<String>,
    error: Option<ProtocolError>,
}

impl Run {
    fn new(setup: Setup) -> Run {
        let now = Instant::now();
        let config = MuxConfig { name: "fuzz".into(), max_frame: frame::MIN_MAX_FRAME, ..MuxConfig::default() };
        let mut run = Run {
            setup,
            mux: Mux::new(setup.role, config, now),
            now,
            next_id: setup.role.first_id(),
            ready: false,
            went_away: false,
            pending: BTreeSet::new(),
            inbound: BTreeSet::new(),
            reported: BTreeSet::new(),
            transcript: Vec::new(),
            error: None,
        };
        // Sent before the peer's HELLO, which a side may do (PROTOCOL.md §2).
        run.call(false);
        run.call(false);
        run.call(true);
        run
    }

    /// Sends a call of our own, which must succeed unless a GOAWAY went either way.
    fn call(&mut self, oneway: bool) {
        let id = self.next_id;
        self.next_id += 2;
        let request = Request::new("Fuzz.call", Bytes::new()).with_oneway(oneway);
        match self.mux.send_request(id, &request, id) {
            Ok(None) if !oneway => {
                self.pending.insert(id);
            }
            Ok(Some(token)) if oneway => assert_eq!(token, id),
            Err((status, token)) if self.mux.is_draining() => {
                assert_eq!((status.code(), status.is_unprocessed(), token), (Code::Unavailable, true, id));
            }
            other => panic!("sending call {id} (oneway: {oneway}) returned {other:?}"),
        }
    }

    /// Feeds `stream` in reads of the given sizes until it runs out or the mux fails.
    fn feed(mut self, stream: &[u8], sizes: impl Iterator<Item = usize>) -> Outcome {
        let mut buf = BytesMut::new();
        let mut fed = 0;
        for size in sizes {
            if fed == stream.len() || self.error.is_some() {
                break;
            }
            let end = (fed + size.max(1)).min(stream.len());
            buf.extend_from_slice(&stream[fed..end]);
            fed = end;
            self.recv_all(&mut buf, &stream[..fed]);
        }
        self.finish()
    }

    fn recv_all(&mut self, buf: &mut BytesMut, fed: &[u8]) {
        loop {
            let result = self.mux.recv(buf, self.now);
            assert!(fed.ends_with(buf), "the mux consumed bytes from somewhere other than the front");
            match result {
                Ok(Some(event)) => self.on_event(event),
                Ok(None) => return,
                Err(e) => {
                    let (left, queued) = (buf.clone(), self.mux.out().len());
                    assert!(matches!(self.mux.recv(buf, self.now), Ok(None)), "a failed mux reads on");
                    assert_eq!((&buf[..], self.mux.out().len()), (&left[..], queued), "a failed mux reads on");
                    self.error = Some(e);
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, event: Event<u64>) {
        self.transcript.push(format!("{event:?}"));
        if !self.ready {
            assert!(matches!(event, Event::Ready), "{event:?} before Ready");
        }
        match event {
            Event::Ready => {
                assert!(!self.ready, "Ready twice");
                self.ready = true;
                assert!(self.mux.is_ready());
                let peer = self.mux.peer().map(|p| (&*p.name, p.max_frame));
                assert_eq!(peer, Some((PEER_NAME, self.setup.peer_max_frame)));
                if self.setup.go_away {
                    self.mux.go_away(Code::Unavailable, "fuzz: going away");
                    self.went_away = true;
                }
            }
            Event::Request(request) => {
                let id = request.id;
                assert!(id != 0 && !self.setup.role.opens(id), "request {id} has this side's parity");
                assert!(!self.went_away, "request {id} was reported after our GOAWAY");
                assert!(self.inbound.insert(id), "request {id} was reported while already in progress");
                self.reported.insert(id);
                if request.is_oneway() {
                    self.mux.finish_oneway(id);
                    self.inbound.remove(&id);
                } else if id % 3 != 0 {
                    // The payload twice, so that a request within our limit can make a response
                    // over the peer's, which the mux must replace with an error.
                    let twice = Bytes::from([&request.payload[..], &request.payload[..]].concat());
                    let result = if id % 3 == 1 {
                        let mut response = Response::new(twice);
                        *response.metadata_mut() = request.metadata.clone();
                        Ok(response)
                    } else {
                        Err(Status::internal(request.method_str().to_owned()).with_details(twice))
                    };
                    self.mux.respond(id, &result);
                    self.inbound.remove(&id);
                }
            }
            Event::Response { token, .. } => {
                assert!(self.pending.remove(&token), "a response for call {token}, which is not pending");
            }
            Event::Cancel { id } => assert!(self.inbound.remove(&id), "a cancel for {id}, which is not in progress"),
            Event::GoAway(_) => {
                assert!(self.mux.is_draining());
                // New calls now fail at once, unprocessed.
                self.call(false);
            }
        }
        assert_eq!((self.mux.pending_len(), self.mux.inbound_len()), (self.pending.len(), self.inbound.len()));
    }

    fn finish(mut self) -> Outcome {
        assert!(self.ready, "the peer's HELLO arrived whole, yet the mux never became ready");
        let out = self.mux.out().split().freeze();
        let frames = decode_output(&out, self.setup.peer_max_frame);
        assert!(matches!(frames.first(), Some(Frame::Hello(_))), "the first frame queued is not our HELLO");
        let mut goaways = frames.iter().filter_map(|f| if let Frame::GoAway(g) = f { Some(g) } else { None });
        if self.setup.go_away {
            let graceful = goaways.next().map(|g| (g.code, g.last_id));
            assert_eq!(graceful, Some((Code::Unavailable.as_u8(), 0)), "our GOAWAY went out right after Ready");
        }
        match &self.error {
            Some(error) => {
                assert_goaway_explains(&frames, error);
                let last_id = goaways.next().map(|g| g.last_id);
                let highest = self.reported.last().copied().unwrap_or(0);
                // After our own GOAWAY, refused requests raise the last id without being reported.
                assert!(
                    last_id.is_some_and(|id| id == highest || (self.went_away && id > highest)),
                    "the GOAWAY's last id {last_id:?} is not the highest request id the peer opened, {highest}"
                );
            }
            None => assert_eq!(goaways.next(), None, "a GOAWAY although nothing went wrong"),
        }
        for frame in &frames {
            if let Frame::Response(response) = frame {
                let id = response.id;
                let refused = self.went_away && response.code == Code::Unavailable.as_u8();
                assert!(self.reported.contains(&id) || refused, "a response for {id}, which the peer never asked");
            }
        }
        Outcome { transcript: self.transcript, out, error: self.error }
    }
}
