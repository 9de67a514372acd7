//! The connection limit shared by every shard: `--max-connections`.
//!
//! Shards reserve a slot before answering a handshake with 101 and give it
//! back when the connection's transport is dropped. The count is one atomic
//! updated with compare-and-swap, so concurrent handshakes on several shards
//! never take more than `max` slots between them (loom-checked in
//! `runtime/tests/loom.rs`).

use super::sync::{AtomicUsize, Ordering};

/// Slots for at most `max` connections across threads.
#[derive(Debug)]
pub struct ConnectionLimit {
    held: AtomicUsize,
    /// Changed by a reload: lowering it closes nothing, it only refuses
    /// new slots until enough are given back.
    max: AtomicUsize,
}

impl ConnectionLimit {
    /// A limit of `max` connections, none held.
    pub fn new(max: usize) -> Self {
        ConnectionLimit {
            held: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        }
    }

    /// Takes a slot; false when all `max` are held.
    pub fn try_acquire(&self) -> bool {
        // Read once: a reload changing it meanwhile only decides whether
        // this one handshake is judged by the old limit or the new one.
        let max = self.max();
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a slot back. Must follow a successful `try_acquire`.
    pub fn release(&self) {
        let before = self.held.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "released a slot that was not held");
    }

    /// Slots held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    /// Changes the limit (a reload); slots held beyond it stay held.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Release);
    }
}
