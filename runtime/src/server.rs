//! Binding, starting and stopping the server.
//!
//! [`bind`] opens the port once per shard with `SO_REUSEPORT` (the kernel
//! spreads accepts); [`run`] takes those listeners and a shutdown future,
//! starts the sequencer and one thread per shard, prints `wavecast
//! listening on ADDR` (stdout) and logs the startup lines
//! ([`crate::logging::startup`]), logs the close summary every interval
//! ([`crate::logging::closes`]), and once the future completes tells the
//! shards to close their connections, waits for them, and logs the
//! shutdown's progress. The signal handlers are the
//! binary's (`main.rs`), so a test can run a server in-process and stop it
//! with any future.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, watch};

use crate::backbone::redis::{RedisOptions, RedisStartError};
use crate::backbone::Backbone;
use crate::clock::Clock;
use crate::config::Config;
use crate::instance;
use crate::logging::closes::{self, CloseSummary};
use crate::logging::startup::log_startup;
use crate::mailbox::ShardInbox;
use crate::outbound::Outbound;
use crate::reload::ReloadAsk;
use crate::shard;
use crate::shared::{LiveConfig, Shared};
use crate::sys::inbox::Inbox;
use crate::sys::limit::ConnectionLimit;
use crate::sys::per_ip::PerIpLimit;

pub use crate::shard::SHUTDOWN_GRACE;

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound (in use, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Another process already listens on the address. With
    /// `SO_REUSEPORT` (which the shards of one process use to share the
    /// port) the kernel would let a second server bind it too and split new
    /// clients between two servers that know nothing of each other; so the
    /// port is tried without it first.
    #[error("cannot listen on {addr}: another process is already listening on it (stop it, or choose another --listen address)")]
    InUse {
        /// The address.
        addr: SocketAddr,
    },
    /// A runtime or thread could not be created.
    #[error("cannot start worker: {0}")]
    Worker(std::io::Error),
    /// The Redis backbone could not start (invalid URL).
    #[error(transparent)]
    Redis(#[from] RedisStartError),
}

/// Binds `addr` `workers` times (at least once), all on the same port
/// (the first one's, when `addr` asks for port 0): one listener per shard.
pub fn bind(addr: SocketAddr, workers: usize) -> Result<Vec<TcpListener>, ServerError> {
    if addr.port() != 0 {
        probe(addr)?;
    }
    let first = bind_one(addr)?;
    let bound = first
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(bind_one(bound)?);
    }
    Ok(listeners)
}

/// Runs the server on `listeners` (one shard each; see [`bind`]) until
/// `shutdown` completes, then closes every connection (up to
/// [`SHUTDOWN_GRACE`]) and returns. `config.listen` and `config.workers`
/// are not read: the listeners say both.
///
/// Prints `wavecast listening on ADDR` once the shards run; tests and
/// scripts read it to learn the port. Whatever `shutdown` waits on (signal
/// handlers) must already be installed by then.
///
/// Each [`ReloadAsk`] that arrives on `reloads` meanwhile is applied
/// ([`crate::reload::apply`]) and answered.
pub async fn run(
    config: Config,
    listeners: Vec<TcpListener>,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<ReloadAsk>,
) -> Result<(), ServerError> {
    let addr = match listeners.first() {
        Some(l) => l.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?,
        None => {
            return Err(ServerError::Worker(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no listener to serve",
            )))
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let clock = Clock::start();
    let seed = process_seed();
    let inboxes: Vec<ShardInbox> = (0..listeners.len())
        .map(|_| Arc::new(Inbox::new()))
        .collect();
    let instance = instance::from_seed(seed);
    let backbone = match &config.redis {
        Some(url) => Backbone::start_redis(
            RedisOptions {
                url: url.clone(),
                presence_ttl: config.redis_presence_ttl,
                instance: instance.clone(),
            },
            inboxes.clone(),
            config.backbone_queue,
        )?,
        None => {
            let budget = wavecast_core::hub::HistoryBudget {
                max_channels: config.max_history_channels,
                max_bytes: config.max_history_bytes,
            };
            Backbone::start_memory(clock, seed, budget, inboxes.clone(), config.backbone_queue)
                .map_err(ServerError::Worker)?
        }
    };
    let max_connections = config.max_connections;
    let max_connections_per_ip = config.max_connections_per_ip;
    let max_http_connections = config.max_http_connections;
    // Outbound requests run on this runtime (see `crate::outbound`).
    let outbound = Outbound::new(&config, inboxes.len(), tokio::runtime::Handle::current());
    outbound.start_jwks(&config, &inboxes, stop_rx.clone());
    let close_tallies = closes::tallies(inboxes.len());
    let summary_interval = config.log_summary_interval;
    let shared = Arc::new(Shared {
        config: LiveConfig::new(config),
        clock,
        connections: ConnectionLimit::new(max_connections),
        connections_per_ip: PerIpLimit::new(max_connections_per_ip),
        http_connections: ConnectionLimit::new(max_http_connections),
        shutdown: stop_rx,
        backbone,
        shards: inboxes.clone(),
        instance,
        outbound,
        api_metrics: Default::default(),
        closes: close_tallies.clone(),
        status_throttle: Default::default(),
    });
    let mut threads = Vec::new();
    for (i, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
        let shared = shared.clone();
        let t = std::thread::Builder::new()
            .name(format!("wavecast-shard-{i}"))
            .spawn(move || shard::run(i, listener, inbox, shared))
            .map_err(ServerError::Worker)?;
        threads.push(t);
    }
    println!("wavecast listening on {addr}");
    log_startup(&shared.config.get(), addr, threads.len());
    let mut summary = CloseSummary::new(close_tallies, summary_interval);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = summary.tick() => summary.report(),
            Some(ask) = reloads.recv() => {
                let _ = ask.reply.send(crate::reload::apply(&shared, &ask.args));
            }
        }
    }
    tracing::info!(
        connections = shared.connections.held(),
        grace_ms = SHUTDOWN_GRACE.as_millis() as u64,
        "shutting down: {} connections closing (4000), up to {}",
        shared.connections.held(),
        humantime::format_duration(SHUTDOWN_GRACE)
    );
    let _ = stop_tx.send(true);
    let joined = tokio::task::spawn_blocking(move || {
        for t in threads {
            if let Ok(Err(e)) = t.join() {
                tracing::warn!(error = %e, "shard ended with an error");
            }
        }
    })
    .await;
    if joined.is_err() {
        tracing::warn!("a shard thread panicked");
    }
    summary.report();
    // Connections a shard still held at the grace deadline were dropped
    // without their close handshake (their slots are never given back).
    let left = shared.connections.held();
    if left > 0 {
        tracing::warn!(
            connections = left,
            "shutting down: {left} connections did not finish their close in time and were dropped"
        );
    } else {
        tracing::info!("shutting down: every connection closed");
    }
    // The closed connections' presence removals (and leaves) reach the
    // backbone before the process exits; with Redis they would otherwise
    // only expire with the presence lease.
    let flushed = tokio::time::timeout(SHUTDOWN_GRACE, shared.backbone.flush()).await;
    if flushed.map_or(true, |r| r.is_err()) {
        tracing::warn!("the backbone did not confirm the last commands before exit");
    }
    tracing::info!("shut down");
    Ok(())
}

/// A seed that differs between processes and starts: epochs of the
/// in-memory backbone and client ids derive from it.
fn process_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

/// Binds `addr` once without `SO_REUSEPORT` and lets it go: that fails if
/// any socket listens there (a second server with `SO_REUSEPORT` would
/// otherwise share the port). `SO_REUSEADDR` keeps the connections of a
/// previous run in TIME_WAIT from counting. Between this and the shards'
/// binds another process could still take the port; that window is the
/// few microseconds between two system calls.
fn probe(addr: SocketAddr) -> Result<(), ServerError> {
    let err = |source| ServerError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    match socket.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(ServerError::InUse { addr }),
        Err(e) => Err(err(e)),
    }
}

fn bind_one(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let err = |source| ServerError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_reuse_port(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(4096).map_err(err)?;
    Ok(socket.into())
}
