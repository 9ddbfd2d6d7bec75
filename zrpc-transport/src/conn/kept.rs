//! A thread's lists of things kept for reuse, so that a call does not allocate them afresh: the
//! answer slots of [`reply`](super::reply) and the `Peer` call boxes of
//! [`calling`](super::calling). Each list is a thread-local `Vec` with a bound of its own,
//! documented and tested where the list is.

use std::cell::RefCell;
use std::thread::LocalKey;

/// One of the things this thread kept in `list` for reuse, if it has one.
pub(super) fn take<T: 'static>(list: &'static LocalKey<RefCell<Vec<T>>>) -> Option<T> {
    list.try_with(|kept| kept.borrow_mut().pop()).ok().flatten()
}

/// Keeps `item` in this thread's `list` for reuse while it holds fewer than `most`; else (or
/// while the thread's locals are being destroyed) drops it.
pub(super) fn keep<T: 'static>(list: &'static LocalKey<RefCell<Vec<T>>>, item: T, most: usize) {
    let _ = list.try_with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() < most {
            kept.push(item);
        }
    });
}
