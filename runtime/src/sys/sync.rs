//! The runtime's cross-thread primitives, through one shim: std's (and
//! futures' `AtomicWaker`) normally, loom's when built with
//! `--cfg wavecast_loom` so that `runtime/tests/loom.rs` can explore every
//! interleaving of them. (A cfg of our own rather than `loom`: tokio reads
//! `cfg(loom)` too, and must stay std here.)

#[cfg(wavecast_loom)]
pub(crate) use loom::future::AtomicWaker;
#[cfg(wavecast_loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(wavecast_loom)]
pub(crate) use loom::sync::Mutex;

#[cfg(not(wavecast_loom))]
pub(crate) use futures_util::task::AtomicWaker;
#[cfg(not(wavecast_loom))]
pub(crate) use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(wavecast_loom))]
pub(crate) use std::sync::Mutex;

/// Registers `waker` with `slot` (loom's and futures' `AtomicWaker` spell
/// it differently).
#[cfg(wavecast_loom)]
pub(crate) fn register(slot: &AtomicWaker, waker: &std::task::Waker) {
    slot.register_by_ref(waker);
}

/// Registers `waker` with `slot` (loom's and futures' `AtomicWaker` spell
/// it differently).
#[cfg(not(wavecast_loom))]
pub(crate) fn register(slot: &AtomicWaker, waker: &std::task::Waker) {
    slot.register(waker);
}
