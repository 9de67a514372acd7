//! The bound on the path from the shards to the sequencer: the backbone's
//! channel ([`channel`]), whose every message is counted in a [`Backlog`].
//!
//! Every message sent to the backbone (a shard's node command, an API
//! request) is counted when sent and uncounted when the backbone thread
//! takes it off the channel ([`Receiver`] does both). A shard cannot wait
//! (it sends while driving its node): it sends at once
//! ([`Sender::send_now`]) and instead stops reading its clients while the
//! backlog is full. The HTTP API waits for room before it sends
//! ([`Sender::send`]). While more than `max` wait,
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
//! connection is also held to `max_requests_in_flight`). The channel itself
//! holds at most twice `max` ([`channel`]): should the overshoot ever need
//! more, [`Sender::send_now`] refuses and hands the message back, and the
//! shard keeps it in its node (whose own queue is bounded by the
//! per-connection limits) until the backbone has taken some.

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

/// A channel to the backbone bounded by a [`Backlog`] of `max` messages:
/// senders hold back past `max`, and the channel refuses past twice `max`.
pub fn channel<T>(max: usize) -> (Sender<T>, Receiver<T>) {
    with_capacity(max, max.max(1).saturating_mul(2))
}

/// [`channel`] with another hard bound (`capacity`, at least `max`), for
/// tests that queue more than a shard's overshoot up front.
pub fn with_capacity<T>(max: usize, capacity: usize) -> (Sender<T>, Receiver<T>) {
    let backlog = Arc::new(Backlog::new(max));
    let (tx, rx) = mpsc::channel(capacity.max(backlog.max));
    (
        Sender {
            tx,
            backlog: backlog.clone(),
        },
        Receiver { rx, backlog },
    )
}

/// The sending side of [`channel`]; cheap to clone.
#[derive(Debug)]
pub struct Sender<T> {
    tx: mpsc::Sender<T>,
    backlog: Arc<Backlog>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            backlog: self.backlog.clone(),
        }
    }
}

impl<T> Sender<T> {
    /// Sends without waiting, counted against the backlog: for a caller
    /// that cannot wait and holds back its own input while
    /// [`Backlog::is_full`] instead (a shard). The item comes back if the
    /// channel is at twice the bound (send it again once the backlog has
    /// room) or the receiver is gone.
    pub fn send_now(&self, item: T) -> Result<(), T> {
        self.backlog.sent();
        self.tx.try_send(item).map_err(|e| {
            self.backlog.taken(1);
            match e {
                mpsc::error::TrySendError::Full(item) | mpsc::error::TrySendError::Closed(item) => {
                    item
                }
            }
        })
    }

    /// Waits until the backlog is within its bound and the channel has a
    /// place, then sends.
    pub async fn send(&self, item: T) -> Result<(), T> {
        self.backlog.wait_for_room().await;
        match self.tx.reserve().await {
            Ok(permit) => {
                self.backlog.sent();
                permit.send(item);
                Ok(())
            }
            Err(_) => Err(item),
        }
    }

    /// True once the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// The count of messages sent and not yet received.
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }
}

/// The receiving side of [`channel`]: taking a message uncounts it.
#[derive(Debug)]
pub struct Receiver<T> {
    rx: mpsc::Receiver<T>,
    backlog: Arc<Backlog>,
}

impl<T> Receiver<T> {
    /// The next message; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<T> {
        let item = self.rx.recv().await;
        if item.is_some() {
            self.backlog.taken(1);
        }
        item
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        let item = self.rx.try_recv().ok();
        if item.is_some() {
            self.backlog.taken(1);
        }
        item
    }

    /// The bound the senders are held to.
    pub fn max(&self) -> usize {
        self.backlog.max
    }
}

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
    async fn the_channel_counts_what_waits_and_a_waiting_sender_gets_room() {
        let (tx, mut rx) = channel::<u32>(2);
        for i in 0..3 {
            tx.send_now(i).unwrap();
        }
        assert_eq!(tx.backlog().waiting(), 3);
        assert!(tx.backlog().is_full());
        // A sender that waits does not add to a full backlog.
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(3).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(tx.backlog().waiting(), 3);
        assert_eq!(rx.try_recv(), Some(0));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap()
            .unwrap();
        assert_eq!(tx.backlog().waiting(), 3);
        for want in [1, 2, 3] {
            assert_eq!(rx.recv().await, Some(want));
        }
        assert_eq!(tx.backlog().waiting(), 0);
        drop(rx);
        assert_eq!(tx.send_now(9), Err(9), "receiver gone: nothing counted");
        assert_eq!(tx.backlog().waiting(), 0);
    }

    #[test]
    fn the_channel_refuses_past_twice_the_bound_and_hands_the_item_back() {
        let (tx, mut rx) = channel::<u32>(2);
        for i in 0..4 {
            tx.send_now(i).unwrap();
        }
        assert_eq!(tx.send_now(4), Err(4), "at twice the bound");
        assert_eq!(tx.backlog().waiting(), 4, "the refused one is not counted");
        assert_eq!(rx.try_recv(), Some(0));
        tx.send_now(4).unwrap();
        assert_eq!(tx.backlog().waiting(), 4);
        for want in 1..=4 {
            assert_eq!(rx.try_recv(), Some(want));
        }
        assert_eq!(rx.try_recv(), None);
    }

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
