//! A server-wide budget of handlers running at once, shared fairly by its connections.
//!
//! Each connection already bounds its own peer (flow control, `docs/PROTOCOL.md` §15); the
//! budget bounds the sum, so that many connections together cannot run a server out of memory,
//! and shares it so that none of them can take it all:
//!
//! 1. A handler that finishes when first polled, inside the connection's turn, takes nothing: it
//!    never outlives the turn, so it is never held back by the budget either. A server whose
//!    handlers answer at once is not slowed by others that wait.
//! 2. One that has to wait takes one unit until it ends, if the budget is open: units left, and
//!    no connection queued for one. Otherwise its connection keeps it, polled once and not
//!    again, queues for a unit, first in first out, and starts nothing more until it is
//!    granted one.
//! 3. A connection queues for one unit at a time, so the queue serves connections in turn: one
//!    that has a thousand requests waiting gets a unit no more often than one that has a single
//!    request. Nobody is refused; a connection that waits stops reading once its peer reaches
//!    its limits, and TCP holds the peer back.
//! 4. Ending a handler returns its unit, to the first queued connection if there is one.
//!
//! So at most the budget's units of handlers run, plus one kept per waiting connection. The
//! check and the take in (2) are not one atomic step, so connections starting handlers at the
//! same instant on different threads may overshoot the limit by one each: by at most the number
//! of the runtime's worker threads. That keeps the common path — a handler that answers at once
//! — free of any write to memory shared between connections.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Handlers that may run at once in one server, unless configured otherwise.
pub(crate) const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 100_000;

/// A shared budget of running handlers; cheap to clone.
#[derive(Clone)]
pub(crate) struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    used: AtomicUsize,
    /// Set while `queue` is not empty, so that the common path need not lock it.
    queued: AtomicBool,
    queue: Mutex<VecDeque<Arc<Slot>>>,
}

/// A connection's place in the queue.
#[derive(Default)]
pub(crate) struct Slot {
    granted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Budget {
    /// A budget of `limit` units (at least 1).
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            inner: Arc::new(Inner {
                limit: limit.max(1),
                used: AtomicUsize::new(0),
                queued: AtomicBool::new(false),
                queue: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// Units in use.
    pub(crate) fn in_use(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Whether a handler that has to wait may take a unit without queueing (rule 2).
    pub(crate) fn is_open(&self) -> bool {
        !self.inner.queued.load(Ordering::SeqCst) && self.inner.used.load(Ordering::SeqCst) < self.inner.limit
    }

    /// Takes a unit for a handler that has to wait, after [`is_open`](Budget::is_open) said yes
    /// (rule 2).
    pub(crate) fn take(&self) {
        self.inner.used.fetch_add(1, Ordering::SeqCst);
    }

    /// Returns `n` units, granting them to queued connections first (rule 4).
    pub(crate) fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.inner.used.fetch_sub(n, Ordering::SeqCst);
        if self.inner.queued.load(Ordering::SeqCst) {
            self.grant(self.inner.lock());
        }
    }

    /// Waits in the queue for a unit; `Ready` once one is held for the caller, who then owns it
    /// (and returns it with [`release`](Budget::release) when done). `slot` keeps the caller's
    /// place between polls; dropping it with [`leave`](Budget::leave) gives the place up.
    pub(crate) fn poll_acquire(&self, slot: &mut Option<Arc<Slot>>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(queued) = slot {
            if queued.granted.load(Ordering::SeqCst) {
                *slot = None;
                return Poll::Ready(());
            }
            *queued.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            // Granted between the check and storing the waker: its wake may have been missed.
            if queued.granted.load(Ordering::SeqCst) {
                *slot = None;
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
        let queued = Arc::new(Slot::default());
        *queued.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        let mut queue = self.inner.lock();
        queue.push_back(queued.clone());
        self.inner.queued.store(true, Ordering::SeqCst);
        // A release that ran before `queued` was set saw no queue: grant what it left.
        self.grant(queue);
        if queued.granted.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        *slot = Some(queued);
        Poll::Pending
    }

    /// Gives up a place in the queue, returning the unit if it was granted meanwhile.
    pub(crate) fn leave(&self, slot: &mut Option<Arc<Slot>>) {
        let Some(queued) = slot.take() else { return };
        let mut queue = self.inner.lock();
        queue.retain(|other| !Arc::ptr_eq(other, &queued));
        self.inner.queued.store(!queue.is_empty(), Ordering::SeqCst);
        drop(queue);
        if queued.granted.load(Ordering::SeqCst) {
            self.release(1);
        }
    }

    /// Hands free units to queued connections, in order.
    fn grant(&self, mut queue: MutexGuard<'_, VecDeque<Arc<Slot>>>) {
        while !queue.is_empty() {
            let used = self.inner.used.load(Ordering::SeqCst);
            if used >= self.inner.limit {
                break;
            }
            if self.inner.used.compare_exchange(used, used + 1, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                continue;
            }
            if let Some(next) = queue.pop_front() {
                next.granted.store(true, Ordering::SeqCst);
                if let Some(waker) = next.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    waker.wake();
                }
            }
        }
        self.inner.queued.store(!queue.is_empty(), Ordering::SeqCst);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Slot>>> {
        // The queue holds no invariant a panicking holder could break half-way.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget").field("limit", &self.inner.limit).field("in_use", &self.in_use()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn connections_that_wait_are_served_in_turn() {
        let budget = Budget::new(2);
        assert!(budget.is_open());
        budget.take();
        budget.take();
        assert!(!budget.is_open(), "all units in use");

        let (woken_a, waker_a) = waker();
        let (_, waker_b) = waker();
        let (mut a, mut b) = (None, None);
        assert!(budget.poll_acquire(&mut a, &mut Context::from_waker(&waker_a)).is_pending());
        assert!(budget.poll_acquire(&mut b, &mut Context::from_waker(&waker_b)).is_pending());

        budget.release(1);
        assert_eq!(woken_a.0.load(Ordering::SeqCst), 1, "the first in the queue is woken");
        assert!(budget.poll_acquire(&mut a, &mut Context::from_waker(&waker_a)).is_ready());
        assert!(budget.poll_acquire(&mut b, &mut Context::from_waker(&waker_b)).is_pending());
        assert!(!budget.is_open(), "a newcomer queues behind the one still waiting");
        assert_eq!(budget.in_use(), 2);

        budget.release(1);
        assert!(budget.poll_acquire(&mut b, &mut Context::from_waker(&waker_b)).is_ready());
        assert!(!budget.is_open());
        budget.release(2);
        assert!(budget.is_open());
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn leaving_the_queue_returns_a_unit_granted_meanwhile() {
        let budget = Budget::new(1);
        budget.take();
        let (_, waker) = waker();
        let mut slot = None;
        assert!(budget.poll_acquire(&mut slot, &mut Context::from_waker(&waker)).is_pending());
        budget.release(1);
        assert_eq!(budget.in_use(), 1, "granted to the queued connection");
        budget.leave(&mut slot);
        assert_eq!(budget.in_use(), 0, "which gave it back when it left");
        assert!(budget.is_open());

        budget.take();
        let mut slot = None;
        assert!(budget.poll_acquire(&mut slot, &mut Context::from_waker(&waker)).is_pending());
        budget.leave(&mut slot);
        assert!(!budget.inner.queued.load(Ordering::SeqCst), "an empty queue is not marked as queued");
        budget.release(1);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_free_unit_is_granted_at_once() {
        let budget = Budget::new(1);
        let (_, waker) = waker();
        let mut slot = None;
        assert!(budget.poll_acquire(&mut slot, &mut Context::from_waker(&waker)).is_ready());
        assert_eq!(budget.in_use(), 1);
        assert!(slot.is_none());
    }
}
