//! The state every shard shares: the configuration, the clock, the
//! connection limits, the backbone handle, every shard's inbox and the
//! outbound side (proxy calls and their bound, the key-set fetcher). It is
//! read-mostly (the counters are atomics; the per-address counts are a
//! map under a lock taken only when a handshake reserves a slot and when a
//! connection gives it back), built once by the server, and is all the
//! HTTP API needs to answer.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use wavecast_core::metrics::Histogram;

use crate::backbone::Backbone;
use crate::clock::Clock;
use crate::config::Config;
use crate::logging::closes::CloseTally;
use crate::mailbox::ShardInbox;
use crate::outbound::Outbound;
use crate::sys::limit::ConnectionLimit;
use crate::sys::per_ip::PerIpLimit;

/// State shared by every shard (read-mostly; the counters are atomics).
#[derive(Debug)]
pub struct Shared {
    /// The running configuration (replaced whole by a reload).
    pub config: LiveConfig,
    /// The clock core timestamps are read from.
    pub clock: Clock,
    /// WebSocket connections currently held, across shards.
    pub connections: ConnectionLimit,
    /// WebSocket connections currently held per client address, across
    /// shards (`max_connections_per_ip`; off at 0).
    pub connections_per_ip: PerIpLimit,
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
    /// Backend proxy calls and the token key set ([`crate::outbound`]).
    pub outbound: Outbound,
    /// What the HTTP API counts (`/metrics`).
    pub api_metrics: ApiMetrics,
    /// Each shard's count of slow-consumer and heartbeat closes, by shard
    /// index, summed up in the log every `log_summary_interval`.
    pub closes: Arc<[CloseTally]>,
    /// Failed logins to the status page by client address.
    pub status_throttle: crate::status::auth::Throttle,
}

/// What the HTTP API counts: off the fan-out path (an API publication
/// crosses to the backbone anyway), so an atomic and a short lock are fine
/// here.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    /// Publications the API got an offset for (`publish`, and each
    /// channel of `broadcast`).
    pub publications: AtomicU64,
    /// Time from an API publish request (its body read and checked) to
    /// the backbone's offset, per channel.
    pub publish_latency: Mutex<Histogram>,
}

impl ApiMetrics {
    /// Counts a publication that took `elapsed` to get its offset.
    pub fn published(&self, elapsed: Duration) {
        self.publications.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        // A poisoned lock only means a panic elsewhere mid-observe: the
        // histogram is still a histogram.
        let mut h = self
            .publish_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        h.observe(micros);
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> (u64, Histogram) {
        let h = self
            .publish_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        (self.publications.load(Ordering::Relaxed), h.clone())
    }
}

impl Shared {
    /// Reserves a WebSocket connection slot for a client at `peer`: one of
    /// `max_connections_per_ip` for its address, then one of
    /// `max_connections`. Takes nothing when it fails.
    pub fn try_reserve_connection(&self, peer: IpAddr) -> Result<(), ConnectionRefused> {
        // The address first: one address retrying past its own limit then
        // never holds, even for a moment, a slot another client could get.
        if !self.connections_per_ip.try_acquire(peer) {
            return Err(ConnectionRefused::PerIp);
        }
        if !self.connections.try_acquire() {
            self.connections_per_ip.release(peer);
            return Err(ConnectionRefused::Server);
        }
        Ok(())
    }

    /// Gives back a slot reserved with `try_reserve_connection(peer)`.
    pub fn release_connection(&self, peer: IpAddr) {
        self.connections.release();
        self.connections_per_ip.release(peer);
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

/// The running configuration: read by the HTTP side and the handshakes
/// (never on a connection's data path), replaced whole by a reload, so a
/// reader sees either the old configuration or the new one.
#[derive(Debug)]
pub struct LiveConfig(RwLock<Arc<Config>>);

impl LiveConfig {
    /// Starts with `config`.
    pub fn new(config: Config) -> Self {
        LiveConfig(RwLock::new(Arc::new(config)))
    }

    /// The configuration in force now.
    pub fn get(&self) -> Arc<Config> {
        // A panic while holding the lock cannot leave a half-written
        // `Arc`: the value is still whole.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `config` in force.
    pub fn set(&self, config: Arc<Config>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = config;
    }
}

/// Why no WebSocket connection slot was reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefused {
    /// The server holds `max_connections`.
    Server,
    /// The client's address holds `max_connections_per_ip`.
    PerIp,
}
