//! The bound on the path from the shards to the sequencer.
//!
//! Every command a shard's node sends to the backbone (subscribe, publish,
//! history, presence, ...) is counted here when sent and uncounted when the
//! backbone thread takes it off its channel. While more than `max` wait,
//! the sequencer is behind: the shards stop reading their client sockets
//! (their kernel buffers fill and the clients' writes block, so the clients
//! are slowed through TCP), and resume once the count is back within `max`.
//! Writing to clients never waits for it: deliveries already sequenced keep
//! going out.
//!
//! The sequencer in turn stops taking commands while a shard has more than
//! [`Backlog::max`] events waiting in its inbox (the backbone checks), so
//! the whole loop, client to sequencer to shard, is bounded at each step.
//!
//! A shard may overshoot `max` by what one batch of reads produces (each
//! connection is also held to `max_requests_in_flight`), never more.

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Commands waiting for the backbone, across every shard of the server.
#[derive(Debug)]
pub struct Backlog {
    waiting: AtomicUsize,
    max: usize,
    room: Notify,
}

impl Backlog {
    /// A bound of `max` waiting commands (at least 1).
    pub fn new(max: usize) -> Self {
        Backlog {
            waiting: AtomicUsize::new(0),
            max: max.max(1),
            room: Notify::new(),
        }
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Commands sent and not yet taken by the backbone.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A shard sent one command.
    #[inline]
    pub fn sent(&self) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
    }

    /// The backbone took `n` commands off its channel; wakes the shards
    /// that wait for room if that made some.
    #[inline]
    pub fn taken(&self, n: usize) {
        let before = self.waiting.fetch_sub(n, Ordering::AcqRel);
        if before > self.max && before - n <= self.max {
            self.room.notify_waiters();
        }
    }

    /// True while more than `max` commands wait: shards stop reading.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > self.max
    }

    /// Waits until the backlog is within its bound.
    pub async fn wait_for_room(&self) {
        loop {
            // Registered before looking, so a `taken` between the look and
            // the wait still wakes us.
            let mut notified = pin!(self.room.notified());
            notified.as_mut().enable();
            if !self.is_full() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_past_the_bound_and_waiters_woken_when_room_is_made() {
        let backlog = std::sync::Arc::new(Backlog::new(2));
        for _ in 0..3 {
            backlog.sent();
        }
        assert!(backlog.is_full());
        let waiter = {
            let b = backlog.clone();
            tokio::spawn(async move { b.wait_for_room().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        backlog.taken(1);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(backlog.waiting(), 2);
        assert!(!backlog.is_full());
    }
}
