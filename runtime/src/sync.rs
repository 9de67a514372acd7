//! The runtime's cross-thread primitives, through one shim: std's atomics
//! normally, loom's when built with `--cfg wavecast_loom` so that
//! `runtime/tests/loom.rs` can explore every interleaving of them. (A cfg
//! of our own rather than `loom`: tokio reads `cfg(loom)` too, and must stay
//! std here.)

#[cfg(wavecast_loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(wavecast_loom))]
pub(crate) use std::sync::atomic::{AtomicUsize, Ordering};
