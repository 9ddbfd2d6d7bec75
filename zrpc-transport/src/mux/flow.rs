//! Flow-control bookkeeping (`docs/PROTOCOL.md` §15): what this side has in progress at the
//! peer, and what the peer has in progress here.

use crate::frame::FlowLimits;

/// The limits a sender must respect, as the peer's HELLO announced them. (Before it arrives the
/// mux sends nothing.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limits {
    /// The peer announced no FLOW (it predates it): no limits, and no CREDIT will come.
    None,
    /// The peer's FLOW limits.
    Flow(FlowLimits),
}

/// This side's requests in progress at the peer: sent, and not yet answered, cancelled, or
/// (oneway) covered by a CREDIT.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Outstanding {
    pub(super) requests: u64,
    pub(super) bytes: u64,
    /// The oneway part of the above: only a CREDIT returns it.
    pub(super) oneway_requests: u64,
    pub(super) oneway_bytes: u64,
}

impl Outstanding {
    /// Whether one more request of `size` bytes may be sent under `limits`: within both limits,
    /// or alone, whatever its size.
    pub(super) fn admits(&self, limits: Limits, size: usize) -> bool {
        match limits {
            Limits::None => true,
            Limits::Flow(flow) => {
                self.requests == 0
                    || (self.requests < u64::from(flow.max_requests)
                        && self.bytes.saturating_add(size as u64) <= u64::from(flow.request_bytes))
            }
        }
    }

    /// Counts a request just sent. Oneway requests are counted only when a CREDIT will return
    /// them (`counted`).
    pub(super) fn add(&mut self, size: usize, oneway: bool, counted: bool) {
        if oneway && !counted {
            return;
        }
        self.requests += 1;
        self.bytes += size as u64;
        if oneway {
            self.oneway_requests += 1;
            self.oneway_bytes += size as u64;
        }
    }

    /// A two-way request answered or cancelled.
    pub(super) fn release(&mut self, size: usize) {
        self.requests = self.requests.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(size as u64);
    }

    /// A CREDIT for `requests` oneway requests of `bytes` in all; `false` when it returns more
    /// than is in progress (a violation).
    pub(super) fn credit(&mut self, requests: u64, bytes: u64) -> bool {
        if requests > self.oneway_requests || bytes > self.oneway_bytes || (requests == 0 && bytes > 0) {
            return false;
        }
        self.oneway_requests -= requests;
        self.oneway_bytes -= bytes;
        self.requests -= requests;
        self.bytes -= bytes;
        true
    }
}

/// One of the peer's requests in progress here.
#[derive(Debug, Clone, Copy)]
pub(super) struct Inbound<H> {
    pub(super) oneway: bool,
    /// Its size on the wire.
    pub(super) size: usize,
    /// Its place in the order of arrival: it has been handed to the local side (or refused)
    /// once the mux's queue has moved past it (see `Mux::dequeued`).
    pub(super) seq: u64,
    /// What runs it, once the local side said so (`Mux::attach_handler`).
    pub(super) handler: Option<H>,
}

/// Hashes this side's own request ids, which it issues in sequence, so that calls made one after
/// another sit in neighbouring buckets: the table (std's, SwissTable) picks a bucket by the
/// hash's low bits, which are the id's sequence number (`id >> 1`: one parity per side), and
/// tells keys apart within a group by its top seven bits, which are those of a Fibonacci
/// multiply.
///
/// The calls in flight are then a run of adjacent buckets that moves on as calls end, mostly in
/// the order they started: a response finds its call in lines the previous responses just
/// touched. Scattered over the table by the multiply alone, as until 2026-12-02, each insert
/// and remove touched a line of its own: `HashMap::remove` was 3.4% of a client's CPU at 1,000
/// calls in flight in `perf`, 0.8% since, for the same instructions. Only for maps whose keys
/// this side chooses (its calls); the peer's ids go in a map keyed per connection
/// ([`PeerIds`]).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct OwnIds;

impl std::hash::BuildHasher for OwnIds {
    type Hasher = OwnIdHasher;

    fn build_hasher(&self) -> OwnIdHasher {
        OwnIdHasher(0)
    }
}

/// See [`OwnIds`].
#[derive(Clone, Copy, Debug)]
pub(super) struct OwnIdHasher(u64);

impl std::hash::Hasher for OwnIdHasher {
    fn finish(&self) -> u64 {
        // Below the top seven bits, the sequence number; those bits, the multiply's.
        const SEQUENCE: u64 = (1 << 57) - 1;
        let mixed = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (self.0 >> 1) & SEQUENCE | mixed & !SEQUENCE
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// Hashes the peer's request ids for the map of its calls in progress here: the id XOR a key
/// drawn per connection, through SplitMix64's finaliser. A few instructions where SipHash took
/// about a hundred per lookup, three lookups a call. The peer chooses these ids, but not the
/// key: without it, it cannot pick ids that fall into one bucket; and the map never holds more
/// than the flow-control limit lets the peer have in progress.
#[derive(Clone, Copy, Debug)]
pub(super) struct PeerIds {
    key: u64,
}

impl PeerIds {
    /// A hasher with a fresh random key.
    pub(super) fn new() -> PeerIds {
        PeerIds { key: fastrand::u64(..) }
    }
}

impl std::hash::BuildHasher for PeerIds {
    type Hasher = PeerIdHasher;

    fn build_hasher(&self) -> PeerIdHasher {
        PeerIdHasher { key: self.key, state: 0 }
    }
}

/// See [`PeerIds`].
#[derive(Clone, Copy, Debug)]
pub(super) struct PeerIdHasher {
    key: u64,
    state: u64,
}

impl std::hash::Hasher for PeerIdHasher {
    fn finish(&self) -> u64 {
        // SplitMix64's output function (Steele, Lea and Flood, 2014): every bit of the input
        // moves every bit of the output.
        let mut z = self.state ^ self.key;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.state = self.state.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.state = id;
    }
}

/// Flow-control credit this side owes the peer for its oneway requests that ended here.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Owed {
    pub(super) requests: u64,
    pub(super) bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: Limits = Limits::Flow(FlowLimits { max_requests: 2, request_bytes: 100 });

    #[test]
    fn requests_fit_within_both_limits_or_alone() {
        let mut out = Outstanding::default();
        assert!(out.admits(FLOW, 1000), "one request alone may be of any size");
        out.add(60, false, true);
        assert!(out.admits(FLOW, 40));
        assert!(!out.admits(FLOW, 41), "over the byte limit");
        out.add(10, false, true);
        assert!(!out.admits(FLOW, 1), "over the request limit");
        out.release(60);
        assert!(out.admits(FLOW, 90));
        assert!(out.admits(Limits::None, usize::MAX));
    }

    #[test]
    fn oneway_requests_come_back_only_with_credit() {
        let mut out = Outstanding::default();
        out.add(30, true, true);
        out.add(20, true, true);
        out.add(50, false, true);
        out.add(99, true, false);
        assert_eq!((out.requests, out.bytes), (3, 100), "a oneway request no CREDIT returns is not counted");
        assert!(!out.credit(3, 50), "more requests than oneway ones in progress");
        assert!(!out.credit(1, 51), "more bytes than oneway ones in progress");
        assert!(!out.credit(0, 1), "bytes without requests");
        assert!(out.credit(2, 50));
        assert_eq!(out, Outstanding { requests: 1, bytes: 50, oneway_requests: 0, oneway_bytes: 0 });
    }

    #[test]
    fn peer_ids_spread_over_the_buckets_whatever_their_pattern() {
        use std::hash::BuildHasher;
        // Ids a peer could choose to collide under a plain multiply: equal low bits.
        let ids = PeerIds::new();
        for stride in [1u64, 2, 1 << 10, 1 << 32] {
            let buckets: std::collections::BTreeSet<u64> =
                (0..1024u64).map(|i| ids.hash_one(i * stride) & 1023).collect();
            assert!(buckets.len() > 600, "stride {stride}: {} of 1024 buckets used", buckets.len());
        }
        assert_ne!(ids.hash_one(7u64), PeerIds::new().hash_one(7u64), "each connection keys its own");
    }

    #[test]
    fn own_ids_in_sequence_fill_neighbouring_buckets_with_varied_tags() {
        use std::hash::BuildHasher;
        // Ids of one parity, in sequence, as a side issues them.
        for first in [1u64, 2] {
            let hashes: Vec<u64> = (0..1024u64).map(|i| OwnIds.hash_one(first + 2 * i)).collect();
            // The bucket: one after another, every bucket of a 1,024-bucket table once.
            for pair in hashes.windows(2) {
                assert_eq!((pair[1] & 1023).wrapping_sub(pair[0] & 1023) & 1023, 1, "{pair:x?}");
            }
            // The tag a group's keys are told apart by (the top seven bits): not all alike.
            let tags: std::collections::BTreeSet<u64> = hashes.iter().map(|h| h >> 57).collect();
            assert!(tags.len() > 100, "{} of 128 tags used", tags.len());
        }
    }
}
