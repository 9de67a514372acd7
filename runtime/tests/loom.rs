//! loom: every interleaving of the runtime's cross-thread connection limit.
//! Run with
//! `RUSTFLAGS="--cfg wavecast_loom" cargo test -p wavecast --test loom --release`
//! (scripts/test does, in its own target directory).
#![cfg(wavecast_loom)]

use loom::sync::Arc;
use loom::thread;
use wavecast::limit::ConnectionLimit;

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
