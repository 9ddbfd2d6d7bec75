//! Where a call's answer is left for its caller: a oneshot channel whose allocation is reused.
//!
//! Every call needs a place where the connection's task leaves the answer and the caller's
//! future finds it. tokio's oneshot allocates one per call, which was half of zrpc's own
//! allocations per call (valgrind's DHAT on `callpath`: 1.0 of 2.08). A slot here is an `Arc`
//! that goes back to a free list of the caller's thread when the caller's end is dropped and
//! the connection's end is already gone: the caller then holds the only reference, which
//! `Arc::get_mut` proves without `unsafe`. Otherwise (the caller gave up first, or the thread's
//! list is full) it is freed as any `Arc` is.
//!
//! Bounds: each thread keeps at most [`FREE_PER_THREAD`] free slots, of 128 bytes each on
//! x86-64 with the `Arc`'s counts (32 KiB a thread). A slot holds one [`Answer`] at most, for
//! the moment between the connection's task leaving it and the caller taking it.
//!
//! The sender drops its reference before it wakes the caller, so a caller woken by its answer
//! finds itself the only owner. A caller polled in between (woken by something else) takes the
//! answer all the same; its slot is then simply not reused.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use super::calling::Answer;
use super::kept;

/// The most free slots a thread keeps for its next calls.
pub(crate) const FREE_PER_THREAD: usize = 256;

thread_local! {
    static FREE: RefCell<Vec<Arc<Slot>>> = const { RefCell::new(Vec::new()) };
}

#[derive(Debug, Default)]
struct Slot {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    answer: Option<Answer>,
    /// The caller's task, to wake when the answer comes or the sender goes.
    waker: Option<Waker>,
    /// The sender was dropped without sending: no answer will come.
    abandoned: bool,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A new channel, on a slot this thread freed if it has one.
pub(crate) fn channel() -> (Sender, Receiver) {
    let slot = kept::take(&FREE).unwrap_or_default();
    (Sender { slot: Some(slot.clone()) }, Receiver { slot: Some(slot) })
}

/// The connection task's end: sends the answer once, or, dropped, tells the caller none will
/// come.
#[derive(Debug)]
pub(crate) struct Sender {
    /// `None` once sent.
    slot: Option<Arc<Slot>>,
}

impl Sender {
    /// Leaves `answer` for the caller and wakes it; gives the answer back if the caller is gone.
    pub(crate) fn send(mut self, answer: Answer) -> Result<(), Answer> {
        let Some(slot) = self.slot.take() else {
            return Err(answer);
        };
        if Arc::strong_count(&slot) == 1 {
            return Err(answer);
        }
        let waker = {
            let mut state = slot.lock();
            state.answer = Some(answer);
            state.waker.take()
        };
        // Before the wake: the woken caller is then the slot's only owner, and reuses it.
        drop(slot);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the caller has given up on the answer (dropped its end).
    pub(crate) fn is_closed(&self) -> bool {
        self.slot.as_ref().is_none_or(|slot| Arc::strong_count(slot) == 1)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let waker = {
            let mut state = slot.lock();
            state.abandoned = true;
            state.waker.take()
        };
        drop(slot);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The sender was dropped without an answer: the connection is gone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Abandoned;

/// The caller's end: a future of the answer.
#[derive(Debug)]
pub(crate) struct Receiver {
    /// `None` only while being dropped.
    slot: Option<Arc<Slot>>,
}

impl Future for Receiver {
    type Output = Result<Answer, Abandoned>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(slot) = &self.slot else {
            return Poll::Ready(Err(Abandoned));
        };
        let mut state = slot.lock();
        if let Some(answer) = state.answer.take() {
            return Poll::Ready(Ok(answer));
        }
        if state.abandoned {
            return Poll::Ready(Err(Abandoned));
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let Some(mut slot) = self.slot.take() else {
            return;
        };
        // The only owner: the sender is gone, nothing else can touch the slot again.
        let Some(state) = Arc::get_mut(&mut slot) else {
            return;
        };
        *state.state.get_mut().unwrap_or_else(PoisonError::into_inner) = State::default();
        kept::keep(&FREE, slot, FREE_PER_THREAD);
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;
    use zrpc_core::{Response, Status};

    fn answer(n: u8) -> Answer {
        Answer::from(Ok(Response::new(bytes::Bytes::from(vec![n]))))
    }

    fn payload(answer: Answer) -> Vec<u8> {
        answer.result.expect("an Ok answer").payload().to_vec()
    }

    fn poll(receiver: &mut Receiver) -> Poll<Result<Answer, Abandoned>> {
        Pin::new(receiver).poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn the_answer_reaches_the_caller_and_the_slot_is_reused() {
        let (sender, mut receiver) = channel();
        assert!(poll(&mut receiver).is_pending());
        let used = Arc::as_ptr(receiver.slot.as_ref().expect("a slot"));
        sender.send(answer(7)).expect("the caller is there");
        let Poll::Ready(Ok(got)) = poll(&mut receiver) else { panic!("no answer") };
        assert_eq!(payload(got), [7]);
        drop(receiver);
        let (sender, mut receiver) = channel();
        assert_eq!(Arc::as_ptr(receiver.slot.as_ref().expect("a slot")), used, "the freed slot is taken again");
        // Reused, it starts empty: no answer, no stale waker, not abandoned.
        assert!(poll(&mut receiver).is_pending());
        sender.send(answer(8)).expect("the caller is there");
        let Poll::Ready(Ok(got)) = poll(&mut receiver) else { panic!("no answer") };
        assert_eq!(payload(got), [8]);
    }

    #[test]
    fn a_sender_dropped_unsent_ends_the_wait() {
        let (sender, mut receiver) = channel();
        assert!(poll(&mut receiver).is_pending());
        drop(sender);
        assert!(matches!(poll(&mut receiver), Poll::Ready(Err(Abandoned))));
    }

    #[test]
    fn a_caller_that_gave_up_is_seen_and_its_slot_is_not_reused() {
        FREE.with(|free| free.borrow_mut().clear());
        let (sender, receiver) = channel();
        assert!(!sender.is_closed());
        drop(receiver);
        assert!(sender.is_closed());
        // The sender still holds the slot: the caller's end could not free it for reuse.
        assert_eq!(FREE.with(|free| free.borrow().len()), 0);
        let back = sender.send(answer(1)).expect_err("nobody to answer");
        assert_eq!(payload(back), [1]);
        assert_eq!(FREE.with(|free| free.borrow().len()), 0);
    }

    #[test]
    fn a_thread_keeps_a_bounded_number_of_free_slots() {
        let pairs: Vec<_> = (0..FREE_PER_THREAD + 10).map(|_| channel()).collect();
        for (sender, receiver) in pairs {
            drop(sender);
            drop(receiver);
        }
        assert_eq!(FREE.with(|free| free.borrow().len()), FREE_PER_THREAD);
    }

    #[test]
    fn a_status_answer_is_carried_too() {
        let (sender, mut receiver) = channel();
        sender.send(Answer::from(Err(Status::unavailable("gone")))).expect("the caller is there");
        let Poll::Ready(Ok(got)) = poll(&mut receiver) else { panic!("no answer") };
        assert_eq!(got.result.expect_err("a status").message(), "gone");
    }
}
