//! wavecast: the tokio server around the `wavecast-core` state machine.
//!
//! The modules, bottom up; each imports only those listed before it:
//! - [`sys`]: the kernel and threads: the epoll set, a shard's inbox, the
//!   connection limit, the backlog bound, `/proc` readings.
//! - [`config`]: defaults, the TOML file, `WAVECAST_*` variables and flags
//!   resolved into one [`config::Config`].
//! - [`token`]: `wavecast token`, minting a token with the configured
//!   secret.
//! - [`logging`]: the log's setup (format, level changeable while
//!   running, colour), the startup lines and the per-interval summary of
//!   slow-consumer and heartbeat closes.
//! - [`instance`]: this process's instance id, which starts every client id.
//! - [`clock`]: the one clock core timestamps are read from.
//! - [`mailbox`]: what a shard is sent (backbone events, API questions) and
//!   answers, and asking every shard at once.
//! - [`backbone`]: the sequencer behind one handle: core's hub on its own
//!   thread ([`backbone::memory`]) or Redis ([`backbone::redis`]); past
//!   `backbone_queue` waiting commands the shards stop reading clients.
//! - [`outbound`]: requests the server makes: the backend proxies and the
//!   token key set (JWKS URL), over one HTTP client on the server's
//!   runtime; answers go to the asking shard's inbox.
//! - [`shared`]: the state every shard shares.
//! - [`reload`]: applying a reloaded configuration (SIGHUP) to the
//!   running server.
//! - [`api`]: the HTTP API behind an API key, and `/metrics`.
//! - [`shard`]: one worker: a single-threaded tokio runtime owning a core
//!   `Node`, its sockets in one epoll set, the accept and upgrade path and
//!   the HTTP side. Nothing on its data path takes a lock.
//! - [`server`]: bind one listener per shard (`SO_REUSEPORT`), start the
//!   sequencer and the shards, stop on a shutdown future.

pub mod sys;

pub mod config;
pub mod instance;
pub mod logging;
pub mod token;

pub mod clock;
pub mod mailbox;

pub mod backbone;
pub mod outbound;
pub mod shared;

pub mod reload;

pub mod api;
pub mod shard;
pub mod status;

pub mod server;
