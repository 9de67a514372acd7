//! wavecast: the tokio server around the `wavecast-core` state machine.
//!
//! How the parts fit:
//! - [`config`] resolves defaults, the TOML file, `WAVECAST_*` variables
//!   and flags into one [`config::Config`].
//! - [`server`] binds the port and starts one worker thread per shard, each
//!   with its own listener on the same port (`SO_REUSEPORT`, so the kernel
//!   spreads accepts), then waits for SIGINT/SIGTERM and shuts down.
//! - [`shard`] is one worker: a single-threaded tokio runtime that owns a
//!   core `Node` and the sockets of its connections. It reads each socket
//!   into one scratch buffer per shard (an idle connection holds no read
//!   buffer), feeds the node, and writes what the node queued with
//!   vectored writes. Nothing on this path takes a lock.
//! - [`backbone`] connects shards to the sequencer: core's in-memory hub
//!   on its own thread (single server), or [`redis_backbone`], the Redis
//!   driver on its own thread (many servers). [`backlog`] bounds that
//!   path: past `backbone_queue` waiting commands the shards stop reading
//!   their clients until the sequencer catches up.
//! - [`api`] is the HTTP API (publish, broadcast, presence, history,
//!   channels, disconnect, info) behind an API key.
//! - [`http`] answers every request that is not a WebSocket upgrade on the
//!   same port (health, readiness), with hyper.
//! - [`io`] holds the small I/O adapters the others share.
//! - [`bench`] is `wavecast bench`, the load tool (a client of this server
//!   and of the peers it is compared with).

pub mod api;
pub mod backbone;
pub mod backlog;
pub mod bench;
pub mod config;
pub mod http;
pub mod inbox;
pub mod io;
pub mod limit;
pub mod metrics;
pub mod poller;
pub mod redis_backbone;
pub mod server;
pub mod shard;
mod sync;
