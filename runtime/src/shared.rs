//! The state every shard shares: the configuration, the clock, the
//! connection limits, the backbone handle and every shard's inbox. It is
//! read-mostly (the counters are atomics), built once by the server, and
//! is all the HTTP API needs to answer.

use tokio::sync::watch;

use crate::backbone::Backbone;
use crate::clock::Clock;
use crate::config::Config;
use crate::mailbox::ShardInbox;
use crate::sys::limit::ConnectionLimit;

/// State shared by every shard (read-mostly; the counters are atomics).
#[derive(Debug)]
pub struct Shared {
    /// The resolved configuration.
    pub config: Config,
    /// The clock core timestamps are read from.
    pub clock: Clock,
    /// WebSocket connections currently held, across shards.
    pub connections: ConnectionLimit,
    /// Plain HTTP connections currently held, across shards
    /// (`max_http_connections`); one that upgrades moves to `connections`.
    pub http_connections: ConnectionLimit,
    /// Flips to true when shutdown starts.
    pub shutdown: watch::Receiver<bool>,
    /// The sequencer.
    pub backbone: Backbone,
    /// Each shard's inbox, by shard index (= its node id).
    pub shards: Vec<ShardInbox>,
    /// This process's instance id ([`crate::instance`]): client ids start
    /// with it.
    pub instance: String,
}

impl Shared {
    /// Reserves a connection slot; false when at `max_connections`.
    pub fn try_reserve_connection(&self) -> bool {
        self.connections.try_acquire()
    }

    /// Gives a reserved connection slot back.
    pub fn release_connection(&self) {
        self.connections.release();
    }

    /// Reserves a plain HTTP connection slot; false when at
    /// `max_http_connections`.
    pub fn try_reserve_http(&self) -> bool {
        self.http_connections.try_acquire()
    }

    /// Gives a reserved HTTP connection slot back.
    pub fn release_http(&self) {
        self.http_connections.release();
    }

    /// True once shutdown has started.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}
