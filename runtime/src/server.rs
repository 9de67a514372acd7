//! Binding, worker threads, signals and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::backbone::{Backbone, ShardInbox};
use crate::backlog::Backlog;
use crate::config::Config;
use crate::inbox::Inbox;
use crate::limit::ConnectionLimit;
use crate::shard;

/// State shared by every shard (read-mostly; the counters are atomics).
#[derive(Debug)]
pub struct Shared {
    /// The resolved configuration.
    pub config: Config,
    /// The instant that core timestamps count from.
    pub origin: Instant,
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
    /// A short id of this process, unique in practice: client ids start
    /// with it, so they are never reused across restarts or servers, and
    /// in a cluster the API knows from a client id which server holds it.
    pub instance: String,
}

/// Largest instance id [`instance_of`] accepts (ours have 6 characters).
const MAX_INSTANCE_LEN: usize = 16;

/// True if `s` looks like an instance id (lowercase hex digits, as
/// [`run`] makes them). The Redis backbone names a server's control topic
/// after it, so it must never hold anything else.
pub(crate) fn is_instance(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_INSTANCE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The instance id a client id starts with (client ids are
/// `INSTANCE-SHARD-N`), or `None` if `client` is not one of ours.
pub(crate) fn instance_of(client: &str) -> Option<&str> {
    let (instance, rest) = client.split_once('-')?;
    (is_instance(instance) && !rest.is_empty()).then_some(instance)
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
}

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
    /// A runtime or thread could not be created.
    #[error("cannot start worker: {0}")]
    Worker(std::io::Error),
    /// The Redis backbone could not start (invalid URL).
    #[error(transparent)]
    Redis(#[from] crate::redis_backbone::RedisStartError),
}

/// How long shutdown waits for connections to finish their close handshake.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Runs the server until SIGINT or SIGTERM; returns once every shard has
/// closed its connections.
pub fn run(config: Config) -> Result<(), ServerError> {
    let first = bind(config.listen)?;
    let addr = first.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let mut listeners = vec![first];
    for _ in 1..config.workers {
        listeners.push(bind(addr)?);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let origin = Instant::now();
    let seed = process_seed();
    let inboxes: Vec<ShardInbox> = (0..listeners.len())
        .map(|_| Arc::new(Inbox::new()))
        .collect();
    let instance = format!("{:06x}", seed & 0xff_ffff);
    let backlog = Arc::new(Backlog::new(config.backbone_queue));
    let backbone = match &config.redis {
        Some(url) => Backbone::start_redis(
            crate::redis_backbone::RedisOptions {
                url: url.clone(),
                presence_ttl: config.redis_presence_ttl,
                instance: instance.clone(),
            },
            inboxes.clone(),
            backlog,
        )?,
        None => {
            let budget = wavecast_core::hub::HistoryBudget {
                max_channels: config.max_history_channels,
                max_bytes: config.max_history_bytes,
            };
            Backbone::start_memory(origin, seed, budget, inboxes.clone(), backlog)
                .map_err(ServerError::Worker)?
        }
    };
    let max_connections = config.max_connections;
    let max_http_connections = config.max_http_connections;
    let shared = Arc::new(Shared {
        config,
        origin,
        connections: ConnectionLimit::new(max_connections),
        http_connections: ConnectionLimit::new(max_http_connections),
        shutdown: stop_rx,
        backbone,
        shards: inboxes.clone(),
        instance,
    });
    let mut threads = Vec::new();
    for (i, (listener, inbox)) in listeners.into_iter().zip(inboxes.clone()).enumerate() {
        let shared = shared.clone();
        let t = std::thread::Builder::new()
            .name(format!("wavecast-shard-{i}"))
            .spawn(move || shard::run(i, listener, inbox, shared))
            .map_err(ServerError::Worker)?;
        threads.push(t);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Worker)?;
    // Handlers first, then the "listening" line: a signal sent as soon as
    // the line is read must already mean "shut down gracefully".
    let (mut term, mut int) = rt
        .block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })
        .map_err(ServerError::Worker)?;
    // Tests and scripts read this line to learn the port when given port 0.
    println!("wavecast listening on {addr}");
    tracing::info!(%addr, workers = threads.len(), "listening");
    rt.block_on(async {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    });
    let _ = stop_tx.send(true);
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            tracing::warn!(error = %e, "shard ended with an error");
        }
    }
    // The closed connections' presence removals (and leaves) reach the
    // backbone before the process exits; with Redis they would otherwise
    // only expire with the presence lease.
    let backbone = shared.backbone.clone();
    if rt
        .block_on(async { tokio::time::timeout(SHUTDOWN_GRACE, backbone.flush()).await })
        .map_or(true, |r| r.is_err())
    {
        tracing::warn!("the backbone did not confirm the last commands before exit");
    }
    tracing::info!("stopped");
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

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_name_their_instance() {
        assert_eq!(instance_of("0a1b2c-1-17"), Some("0a1b2c"));
        for garbled in [
            "",
            "-",
            "0a1b2c",
            "0a1b2c-",
            "no-such-client",
            "-1-2",
            "A1B2C3-0-1",
        ] {
            assert_eq!(instance_of(garbled), None, "{garbled:?}");
        }
        assert!(!is_instance("0123456789abcdef0"), "too long");
        assert!(!is_instance("ab:cd"));
    }
}
