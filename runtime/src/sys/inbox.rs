//! A shard's inbox: many senders (the backbone thread, HTTP handlers on
//! other shards), one receiver (the shard), delivered in batches.
//!
//! A sender appends under a short lock and wakes the receiver only when the
//! inbox was empty; the receiver takes the whole batch at once by swapping
//! vectors, so a burst of publications costs one wake-up and one lock per
//! batch on the shard's side. Closing (the shard stopping) refuses later
//! sends and lets the receiver drain what was sent before. Loom-checked in
//! `runtime/tests/loom.rs`: no message is lost, none is delivered twice,
//! each sender's messages stay in order, and no wake-up is missed.

use std::future::poll_fn;
use std::task::{Context, Poll};

use super::sync::{register, AtomicWaker, Mutex};

/// A multi-producer, single-consumer queue with batch draining.
#[derive(Debug)]
pub struct Inbox<T> {
    state: Mutex<State<T>>,
    waker: AtomicWaker,
}

#[derive(Debug)]
struct State<T> {
    items: Vec<T>,
    closed: bool,
}

/// The inbox is closed; the item comes back.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed<T>(pub T);

impl<T> Default for Inbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Inbox<T> {
    /// An empty, open inbox.
    pub fn new() -> Self {
        Inbox {
            state: Mutex::new(State {
                items: Vec::new(),
                closed: false,
            }),
            waker: AtomicWaker::new(),
        }
    }

    /// Appends `item`, waking the receiver if it may be waiting.
    pub fn send(&self, item: T) -> Result<(), Closed<T>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed {
            return Err(Closed(item));
        }
        let was_empty = state.items.is_empty();
        state.items.push(item);
        drop(state);
        // A non-empty inbox already has a wake-up on its way (or the
        // receiver has yet to look): one per batch is enough.
        if was_empty {
            self.waker.wake();
        }
        Ok(())
    }

    /// Items waiting (the sequencer holds back while a shard has too many).
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .items
            .len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses further sends and wakes the receiver.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.waker.wake();
    }

    /// Takes every waiting item without waiting (e.g. to drop what a
    /// stopped receiver will never read, so senders waiting on replies
    /// inside them learn it).
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()).items)
    }

    /// Moves every waiting item into `out` (which should be empty). Ready
    /// with `true` when it moved something, `false` once the inbox is
    /// closed and empty.
    pub fn poll_drain(&self, cx: &mut Context<'_>, out: &mut Vec<T>) -> Poll<bool> {
        // Register before looking, so a send after the look wakes us.
        register(&self.waker, cx.waker());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.items.is_empty() {
            std::mem::swap(&mut state.items, out);
            return Poll::Ready(true);
        }
        if state.closed {
            return Poll::Ready(false);
        }
        Poll::Pending
    }

    /// Waits for items and moves them into `out`; `false` once closed and
    /// empty.
    pub async fn drain(&self, out: &mut Vec<T>) -> bool {
        poll_fn(|cx| self.poll_drain(cx, out)).await
    }
}
