//! loom: every interleaving of the runtime's cross-thread pieces: the
//! connection limit shared by shards, and a shard's inbox (the queue the
//! backbone and other shards send to, its wake-ups, and its closing at
//! shutdown).
//! Run with
//! `RUSTFLAGS="--cfg wavecast_loom" cargo test -p wavecast --test loom --release`
//! (scripts/test does, in its own target directory).
#![cfg(wavecast_loom)]

use loom::sync::Arc;
use loom::thread;
use std::future::poll_fn;
use std::task::Poll;

use wavecast::sys::inbox::{Closed, Inbox};
use wavecast::sys::limit::ConnectionLimit;

#[test]
fn concurrent_handshakes_never_exceed_the_limit() {
    loom::model(|| {
        let limit = Arc::new(ConnectionLimit::new(1));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let limit = limit.clone();
                thread::spawn(move || limit.try_acquire())
            })
            .collect();
        let won = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&w| w)
            .count();
        assert_eq!(
            won, 1,
            "exactly one of two racing handshakes gets the last slot"
        );
        assert_eq!(limit.held(), 1);
    });
}

#[test]
fn release_makes_room_and_counts_stay_exact() {
    loom::model(|| {
        let limit = Arc::new(ConnectionLimit::new(2));
        assert!(limit.try_acquire());
        let a = {
            let limit = limit.clone();
            thread::spawn(move || {
                // A connection ends on one shard...
                limit.release();
            })
        };
        let b = {
            let limit = limit.clone();
            thread::spawn(move || {
                // ...while two handshakes race on another.
                let first = limit.try_acquire();
                let second = limit.try_acquire();
                assert!(limit.held() <= limit.max());
                (first, second)
            })
        };
        a.join().unwrap();
        let (first, second) = b.join().unwrap();
        // One slot was free from the start; the second is free only if the
        // release came first. Never more than the limit.
        assert!(first, "a free slot is always granted");
        // The initial slot was released; what is held is what was granted.
        assert_eq!(limit.held(), usize::from(first) + usize::from(second));
        assert!(limit.held() <= 2);
    });
}

/// Drains `inbox` until `want` items arrived or it closed, parking on the
/// inbox's waker like the shard's task does: a missed wake-up deadlocks,
/// which loom reports.
fn receive(inbox: &Inbox<(u8, u8)>, want: usize) -> (Vec<(u8, u8)>, bool) {
    let mut got = Vec::new();
    let mut open = true;
    loom::future::block_on(poll_fn(|cx| loop {
        if got.len() >= want {
            return Poll::Ready(());
        }
        let mut batch = Vec::new();
        match inbox.poll_drain(cx, &mut batch) {
            Poll::Ready(true) => got.append(&mut batch),
            Poll::Ready(false) => {
                open = false;
                return Poll::Ready(());
            }
            Poll::Pending => return Poll::Pending,
        }
    }));
    (got, open)
}

/// loom's exhaustive search over a mutex, an atomic waker and three
/// threads is large; bounding preemptions (as loom's documentation
/// suggests) keeps it to seconds while still covering every interleaving
/// with up to this many forced switches.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn inbox_delivers_everything_once_with_no_lost_wakeup() {
    model(|| {
        let inbox = Arc::new(Inbox::new());
        let senders: Vec<_> = (0..2u8)
            .map(|s| {
                let inbox = inbox.clone();
                thread::spawn(move || inbox.send((s, 0)).expect("open"))
            })
            .collect();
        let (mut got, open) = receive(&inbox, 2);
        for s in senders {
            s.join().unwrap();
        }
        assert!(open);
        got.sort();
        assert_eq!(got, vec![(0, 0), (1, 0)], "every message, once");
    });
}

#[test]
fn inbox_keeps_a_senders_order_across_batches() {
    model(|| {
        let inbox = Arc::new(Inbox::new());
        let sender = {
            let inbox = inbox.clone();
            thread::spawn(move || {
                for n in 0..3u8 {
                    inbox.send((0, n)).expect("open");
                }
            })
        };
        let (got, _) = receive(&inbox, 3);
        sender.join().unwrap();
        assert_eq!(got, vec![(0, 0), (0, 1), (0, 2)]);
    });
}

#[test]
fn closing_wakes_the_receiver_after_what_was_sent_before() {
    model(|| {
        let inbox = Arc::new(Inbox::new());
        let sender = {
            let inbox = inbox.clone();
            thread::spawn(move || {
                inbox.send((0, 0)).expect("open before close");
                inbox.close();
                // After close, sends are refused and handed back.
                assert_eq!(inbox.send((0, 1)), Err(Closed((0, 1))));
            })
        };
        // Wait for more than will ever come: only the close ends this.
        let (got, open) = receive(&inbox, 2);
        sender.join().unwrap();
        assert!(!open, "the receiver learns of the close");
        assert_eq!(got, vec![(0, 0)], "what was sent before the close arrives");
    });
}
