//! The operating-system layer: what the runtime needs of the kernel and of
//! threads, with nothing of wavecast's own above it.
//!
//! - [`poller`]: a shard's epoll set behind a safe interface.
//! - [`inbox`]: a shard's multi-producer queue, drained a batch at a time.
//! - [`limit`]: the connection limit shared by every shard.
//! - [`per_ip`]: the per-address connection limit shared by every shard.
//! - [`backlog`]: the bound on commands waiting for the sequencer.
//! - [`proc`]: readings of `/proc` (resident memory).
//! - `sync`: std's atomics, mutex and waker, or loom's under
//!   `--cfg wavecast_loom` (`runtime/tests/loom.rs`).

pub mod backlog;
pub mod inbox;
pub mod limit;
pub mod per_ip;
pub mod poller;
pub mod proc;
mod sync;
