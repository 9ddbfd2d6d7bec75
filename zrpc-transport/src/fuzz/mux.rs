//! [`mux`]: a peer's arbitrary frames into a [`Mux`] that has done its handshake, checked against
//! a model of what the mux should report and hand over.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use zrpc_core::{Code, Request, Response, Status};

use super::{PEER_NAME, Report, Setup, assert_goaway_explains, decode_output, small_config};
use crate::frame::{Frame, RequestFrame, flags};
use crate::mux::{Event, Mux, ProtocolError};

/// Runs a mux over `input` and checks invariants 1, 2, 3, 5, 6 and 7 of the
/// [module docs](super).
///
/// The first byte sets up the run (`Setup`): bit 0 the mux's role (connector, acceptor), bit 1
/// the peer's `max_frame` (1024 or the 16 MiB default), bit 2 whether the mux sends a graceful
/// GOAWAY as soon as the handshake is done, bit 3 whether the peer's HELLO lacks FLOW. The
/// second byte cuts the peer's bytes into rounds (of `2 × byte` bytes; all in one below 16) and
/// seeds the sizes of the reads within a round for the second pass (the first reads each round
/// whole). The rest is what the peer sends after its preface and a valid HELLO, which the run
/// supplies.
///
/// After each round the run acts as a driver would: it hands over every request the mux lets
/// start and answers it at once (ids divisible by 3 are left in progress, for a CANCEL to find,
/// and the oldest of them is answered when the peer is over the limits, as a slow handler
/// eventually would be), ends oneway ones, and writes all the output. Both passes act at the
/// same points, so they must produce the same events, hand-overs, output and error. Before
/// the peer's HELLO the mux has made three calls of its own (ids 1, 3, 5 or 2, 4, 6; the last
/// one oneway), which wait for it and then go out, so that responses can match. The mux has the
/// small limits of `small_config`, so that the peer can reach them both ways.
///
/// # Panics
/// When an invariant breaks.
pub fn mux(input: &[u8]) -> Report {
    let (setup, seed, peer_bytes) = match input {
        [control, seed, rest @ ..] => (Setup::new(*control), *seed, rest),
        _ => return Report::default(),
    };
    let mut stream = setup.peer_handshake();
    stream.extend_from_slice(peer_bytes);
    let round = if seed < 16 { stream.len().max(1) } else { usize::from(seed) * 2 };

    let whole = Run::new(setup).feed(&stream, round, None);
    let mut rng = fastrand::Rng::with_seed(u64::from(seed));
    let largest = rng.usize(1..=64);
    let pieces = Run::new(setup).feed(&stream, round, Some((rng, largest)));
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
    /// The peer's requests that were waiting when we went away: they arrived before our
    /// GOAWAY, so they may still be handed over; none after them.
    before_goaway: usize,
    /// Calls this side made that have not ended: sent, waiting, or (oneway) not yet written.
    pending: BTreeSet<u64>,
    /// The peer's calls handed over and not ended.
    started: BTreeSet<u64>,
    /// Those left in progress, for a CANCEL to find.
    left: BTreeSet<u64>,
    /// Every id the peer's requests were handed over with.
    handed: BTreeSet<u64>,
    /// Everything written, the preface and HELLO first.
    out: BytesMut,
    /// The events and hand-overs, as `Debug` text.
    transcript: Vec<String>,
    error: Option<ProtocolError>,
}

impl Run {
    fn new(setup: Setup) -> Run {
        let now = Instant::now();
        let mut run = Run {
            setup,
            mux: Mux::new(setup.role, small_config(), now),
            now,
            next_id: setup.role.first_id(),
            ready: false,
            went_away: false,
            before_goaway: 0,
            pending: BTreeSet::new(),
            started: BTreeSet::new(),
            left: BTreeSet::new(),
            handed: BTreeSet::new(),
            out: BytesMut::new(),
            transcript: Vec::new(),
            error: None,
        };
        // Made before the peer's HELLO, which a side may do (PROTOCOL.md §2): they wait for it.
        run.call(false);
        run.call(false);
        run.call(true);
        assert_eq!(run.mux.stats().calls_waiting, 3, "calls made before the peer's HELLO wait for it");
        run
    }

    /// Makes a call of our own, which must be taken unless a GOAWAY went either way.
    fn call(&mut self, oneway: bool) {
        let id = self.next_id;
        self.next_id += 2;
        let request = Request::new("Fuzz.call", Bytes::new()).with_oneway(oneway);
        match self.mux.send_request(id, request, id) {
            Ok(()) => {
                assert!(!self.mux.is_draining(), "call {id} was taken after a GOAWAY");
                self.pending.insert(id);
            }
            Err((status, token)) if self.mux.is_draining() => {
                // A peer whose GOAWAY says `Unauthenticated` refused this side: calls say so.
                let code = self.mux.refused_by_peer().map_or(Code::Unavailable, Status::code);
                assert_eq!((status.code(), status.is_unprocessed(), token), (code, true, id));
            }
            Err(other) => panic!("sending call {id} (oneway: {oneway}) returned {other:?}"),
        }
    }

    /// Feeds `stream` in rounds of `round` bytes, each read at once or, with `pieces`, in reads
    /// of random sizes, until it runs out or the mux fails; the driver acts after each round.
    fn feed(mut self, stream: &[u8], round: usize, mut pieces: Option<(fastrand::Rng, usize)>) -> Outcome {
        let mut buf = BytesMut::new();
        let mut fed = 0;
        while fed < stream.len() && self.error.is_none() {
            let end = (fed + round).min(stream.len());
            while fed < end && self.error.is_none() {
                let size = pieces.as_mut().map_or(end - fed, |(rng, largest)| rng.usize(1..=*largest));
                let to = (fed + size).min(end);
                buf.extend_from_slice(&stream[fed..to]);
                fed = to;
                self.recv(&mut buf, &stream[..fed]);
            }
            self.settle(&mut buf, &stream[..fed]);
        }
        self.finish()
    }

    fn recv(&mut self, buf: &mut BytesMut, fed: &[u8]) {
        let result = self.mux.recv(buf, self.now);
        assert!(fed.ends_with(buf), "the mux consumed bytes from somewhere other than the front");
        if let Err(e) = result {
            let (left, queued) = (buf.clone(), self.mux.queued_output());
            assert!(matches!(self.mux.recv(buf, self.now), Ok(())), "a failed mux reads on");
            assert_eq!((&buf[..], self.mux.queued_output()), (&left[..], queued), "a failed mux reads on");
            assert!(!self.mux.wants_read(), "a failed mux wants to read");
            self.error = Some(e);
        }
    }

    /// What a driver does between reads: act on everything, and read again what the mux left
    /// while the peer was over its limits once it is back within them.
    fn settle(&mut self, buf: &mut BytesMut, fed: &[u8]) {
        loop {
            self.act();
            if self.error.is_some() {
                return;
            }
            if !self.mux.wants_read() {
                // The peer is over the limits with our handlers busy: the oldest finishes.
                let Some(id) = self.left.pop_first() else { return };
                self.answer(id);
                continue;
            }
            let before = buf.len();
            if before == 0 {
                return;
            }
            self.recv(buf, fed);
            if buf.len() == before {
                // A partial frame waits for more.
                return self.act();
            }
        }
    }

    /// Takes every event, hands over every request the mux lets start, and writes the output,
    /// until none of them does anything.
    fn act(&mut self) {
        loop {
            let mut progress = false;
            while let Some(event) = self.mux.poll_event() {
                progress = true;
                self.on_event(event);
            }
            // A driver whose connection failed starts nothing more.
            while self.error.is_none()
                && let Some((request, _)) = self.mux.next_request()
            {
                progress = true;
                self.on_request(request);
            }
            let written = self.mux.take_output();
            if !written.is_empty() {
                progress = true;
                self.out.extend_from_slice(&written);
            }
            if !progress {
                // Everything written: no oneway call is left half sent.
                return self.check();
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
                assert!(self.mux.is_ready() || self.error.is_some());
                let peer = self.mux.peer().map(|p| (&*p.name, p.max_frame, p.flow));
                assert_eq!(peer, Some((PEER_NAME, self.setup.peer_max_frame, self.setup.peer_flow)));
                if self.setup.go_away && self.error.is_none() {
                    self.mux.go_away(Code::Unavailable, "fuzz: going away");
                    self.went_away = true;
                    self.before_goaway = self.mux.stats().requests_waiting;
                }
            }
            Event::Response { token, .. } => {
                assert!(self.pending.remove(&token), "a response for call {token}, which is not pending");
            }
            Event::Cancel { id, .. } => {
                assert!(self.started.remove(&id), "a cancel for {id}, which is not handed over and in progress");
                self.left.remove(&id);
            }
            Event::GoAway(_) => {
                assert!(self.mux.is_draining());
                // New calls now fail at once, unprocessed.
                self.call(false);
            }
        }
    }

    fn on_request(&mut self, request: RequestFrame) {
        let id = request.id;
        self.transcript.push(format!("handed over {id}"));
        assert!(id != 0 && !self.setup.role.opens(id), "request {id} has this side's parity");
        if self.went_away {
            assert!(self.before_goaway > 0, "request {id} arrived after our GOAWAY and was handed over");
            self.before_goaway -= 1;
        }
        assert!(self.started.len() < 3, "request {id} handed over with {} others running", self.started.len());
        assert!(request.metadata.len() <= 2, "request {id} handed over with too many metadata entries");
        assert!(self.started.insert(id), "request {id} was handed over while already in progress");
        self.handed.insert(id);
        if request.is_oneway() {
            self.mux.finish(id, &Ok(Response::default()));
            self.started.remove(&id);
        } else if !id.is_multiple_of(3) {
            // The payload twice, so that a request within our limit can make a response over
            // the peer's, which the mux must replace with an error.
            let twice = Bytes::from([&request.payload[..], &request.payload[..]].concat());
            let result = if id % 3 == 1 {
                let mut response = Response::new(twice);
                *response.metadata_mut() = request.metadata.clone();
                Ok(response)
            } else {
                Err(Status::internal(request.method_str().to_owned()).with_details(twice))
            };
            self.mux.finish(id, &result);
            self.started.remove(&id);
        } else {
            self.left.insert(id);
        }
    }

    fn answer(&mut self, id: u64) {
        self.transcript.push(format!("answered {id} late"));
        self.mux.finish(id, &Ok(Response::default()));
        self.started.remove(&id);
    }

    /// The bookkeeping and the bounds on the peer's requests, after every action.
    fn check(&self) {
        let stats = self.mux.stats();
        assert_eq!(self.mux.pending_len(), self.pending.len(), "this side's calls not ended");
        assert_eq!(stats.requests_in_progress - stats.requests_waiting, self.started.len(), "the peer's calls running");
        if self.error.is_none() {
            let over = stats.requests_in_progress > 3
                || (stats.requests_in_progress > 1 && stats.request_bytes_in_progress > 2000);
            assert_eq!(self.mux.wants_read(), !over, "wants_read with {stats:?}");
        }
        // One frame more than the limits, the one that took the peer over.
        assert!(stats.peak_requests_in_progress <= 4, "{stats:?}");
        assert!(stats.peak_request_bytes_in_progress <= 2000 + 1028, "{stats:?}");
    }

    fn finish(mut self) -> Outcome {
        assert!(self.ready, "the peer's HELLO arrived whole, yet the mux never became ready");
        self.out.extend_from_slice(&self.mux.take_output());
        let out = self.out.split().freeze();
        let frames = decode_output(&out, self.setup.peer_max_frame);
        assert!(matches!(frames.first(), Some(Frame::Hello(_))), "the first frame queued is not our HELLO");
        let mut goaways = frames.iter().filter_map(|f| if let Frame::GoAway(g) = f { Some(g) } else { None });
        if self.went_away {
            let graceful = goaways.next().map(|g| (g.code, g.last_id));
            let last_id = graceful.map_or(0, |(_, id)| id);
            assert_eq!(graceful, Some((Code::Unavailable.as_u8(), last_id)), "our GOAWAY went out after Ready");
            // Those handed over after it had arrived before it.
            assert!(
                self.handed.iter().all(|&id| id <= last_id),
                "handed over {:?} after GOAWAY {last_id}",
                self.handed
            );
        }
        match &self.error {
            Some(error) => {
                assert_goaway_explains(&frames, error);
                let last_id = goaways.next().map(|g| g.last_id);
                let highest = self.handed.last().copied().unwrap_or(0);
                // Refused requests, and those still waiting, raise the last id without being
                // handed over.
                assert!(
                    last_id.is_some_and(|id| id >= highest),
                    "the GOAWAY's last id {last_id:?} is below a request id the peer opened, {highest}"
                );
            }
            None => assert_eq!(goaways.next(), None, "a GOAWAY although nothing went wrong"),
        }
        for frame in &frames {
            match frame {
                Frame::Response(response) => {
                    let id = response.id;
                    // Refused unprocessed: after a GOAWAY, over a limit, or durable to a side
                    // that announced no INBOX (PROTOCOL.md §19).
                    let refused = response.flags & flags::UNPROCESSED != 0
                        && [Code::Unavailable, Code::ResourceExhausted, Code::Unimplemented]
                            .iter()
                            .any(|code| code.as_u8() == response.code);
                    assert!(
                        self.handed.contains(&id) || refused,
                        "a response for {id}, which was never handed over: {response:?}"
                    );
                }
                Frame::Credit { .. } => {
                    assert!(self.setup.peer_flow.is_some(), "CREDIT to a peer that did not announce FLOW");
                }
                _ => {}
            }
        }
        Outcome { transcript: self.transcript, out, error: self.error }
    }
}
