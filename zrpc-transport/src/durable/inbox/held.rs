//! What the dispatcher holds in memory, counted: the bytes of the messages a take or an
//! extension handed out and whose run has not ended.
//!
//! The writer counts a take's or an extension's messages as it answers ([`Held::hand_out`]),
//! so messages waiting in an answer not yet read count too (a stream's task asks for its next
//! run as the current one starts, and reads the answer when that one is done); each run's
//! share is released when the run is dropped. [`Held::peak`] is what the bound in
//! `dispatcher.rs`'s docs is checked against.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Delivery;

/// Bytes of handed-out messages, now and at most since the inbox opened.
#[derive(Debug, Default)]
pub(crate) struct Held {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Held {
    /// Counts `deliveries` until the returned [`Taken`] (or each run split from it) is dropped.
    pub(crate) fn hand_out(self: &Arc<Held>, deliveries: Vec<Delivery>) -> Taken {
        let bytes = deliveries.iter().map(|delivery| delivery.message.len() as u64).sum();
        let now = self.now.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Taken { deliveries, holding: Holding { held: self.clone(), bytes } }
    }

    /// Bytes handed out and not released.
    #[cfg(test)]
    pub(crate) fn now(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }

    /// The most [`now`](Held::now) has been.
    #[cfg(test)]
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// Bytes counted in a [`Held`] until dropped.
#[derive(Debug)]
pub(crate) struct Holding {
    held: Arc<Held>,
    bytes: u64,
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.held.now.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Messages a take or an extension handed out, in order, counted until dropped.
#[derive(Debug)]
pub(crate) struct Taken {
    deliveries: Vec<Delivery>,
    holding: Holding,
}

impl Taken {
    /// Splits the messages into their streams' runs (each stream's are together), each holding
    /// its own bytes.
    ///
    /// Split off the end rather than pushed one by one: the first run keeps the take's vector,
    /// and each other run is one allocation of its size (a take of one stream, the common case,
    /// then allocates nothing; runs of up to 256 messages grown by pushing were several
    /// reallocations each).
    pub(crate) fn into_runs(self) -> Vec<Taken> {
        let Taken { mut deliveries, mut holding } = self;
        let same_stream = |a: &Delivery, b: &Delivery| a.id.outbox() == b.id.outbox() && a.id.sender() == b.id.sender();
        let starts: Vec<usize> =
            (1..deliveries.len()).filter(|&i| !same_stream(&deliveries[i - 1], &deliveries[i])).collect();
        let mut runs = Vec::with_capacity(starts.len() + 1);
        for &start in starts.iter().rev() {
            let run = deliveries.split_off(start);
            let bytes = run.iter().map(|delivery| delivery.message.len() as u64).sum();
            holding.bytes -= bytes;
            runs.push(Taken { deliveries: run, holding: Holding { held: holding.held.clone(), bytes } });
        }
        if !deliveries.is_empty() {
            runs.push(Taken { deliveries, holding });
        }
        runs.reverse();
        runs
    }

    /// The messages' bytes, as counted.
    pub(crate) fn bytes(&self) -> u64 {
        self.holding.bytes
    }

    /// The messages, to be handled one by one, and their count, released when it is dropped
    /// (once the run has ended).
    pub(crate) fn into_parts(self) -> (Vec<Delivery>, Holding) {
        (self.deliveries, self.holding)
    }
}

impl Deref for Taken {
    type Target = [Delivery];

    fn deref(&self) -> &[Delivery] {
        &self.deliveries
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use zrpc_core::durable::{MessageId, OutboxId};

    use super::{Delivery, Held};

    fn delivery(sender: &str, outbox: u64, sequence: u64, bytes: usize) -> Delivery {
        Delivery {
            id: MessageId::new(sender, OutboxId::from_u64(outbox), sequence),
            message: Bytes::from(vec![0; bytes]),
        }
    }

    fn ids(run: &[Delivery]) -> Vec<(String, u64)> {
        run.iter().map(|d| (d.id.sender().to_owned(), d.id.sequence())).collect()
    }

    #[test]
    fn a_take_splits_into_its_streams_runs_in_order_and_the_first_keeps_its_vector() {
        let taken = vec![
            delivery("a", 1, 4, 0),
            delivery("a", 1, 5, 0),
            delivery("b", 1, 1, 0),
            delivery("b", 2, 7, 0),
            delivery("c", 1, 2, 0),
            delivery("c", 1, 3, 0),
        ];
        let first = taken.as_ptr();
        let runs = Arc::new(Held::default()).hand_out(taken).into_runs();
        let runs: Vec<_> = runs.iter().map(|run| (run.as_ptr(), ids(run))).collect();
        assert_eq!(runs[0].0, first, "the first run is the take's own vector");
        let expected: [&[(&str, u64)]; 4] = [&[("a", 4), ("a", 5)], &[("b", 1)], &[("b", 7)], &[("c", 2), ("c", 3)]];
        assert_eq!(runs.len(), expected.len());
        for ((_, got), want) in runs.iter().zip(expected) {
            assert_eq!(got, &want.iter().map(|&(s, n)| (s.to_owned(), n)).collect::<Vec<_>>());
        }
        assert!(Arc::new(Held::default()).hand_out(Vec::new()).into_runs().is_empty());
    }

    #[test]
    fn each_run_holds_its_own_bytes_until_it_is_dropped() {
        let held = Arc::new(Held::default());
        let taken = vec![delivery("a", 1, 1, 100), delivery("a", 1, 2, 20), delivery("b", 1, 1, 3)];
        let mut runs = held.hand_out(taken).into_runs();
        assert_eq!((held.now(), held.peak()), (123, 123));
        let second = runs.pop().expect("b's run");
        drop(runs);
        assert_eq!(held.now(), 3, "a's run released its 120 bytes, b's holds its 3");
        let (deliveries, holding) = second.into_parts();
        drop(deliveries);
        assert_eq!(held.now(), 3, "counted until the run has ended, not until its messages are dropped");
        drop(holding);
        assert_eq!((held.now(), held.peak()), (0, 123));
    }
}
