//! How shards reach the sequencer: the [`Backbone`] handle every shard and
//! the HTTP API hold, and the one message type ([`ToHub`]) both sequencers
//! take.
//!
//! - [`memory`]: a lone server's sequencer, core's in-memory `Hub` on its
//!   own thread (`wavecast-backbone`). A publication crosses to each shard
//!   once, and each shard encodes it once per encoding for all its sockets.
//! - [`redis`]: a cluster's sequencer, a driver thread (`wavecast-redis`)
//!   that turns the same messages into Redis scripts and pub/sub and
//!   answers with the same events. In a cluster it also carries the API's
//!   requests to other servers ([`Backbone::disconnect_remote`],
//!   [`Backbone::cluster_channels`]), which each server answers through its
//!   shards ([`crate::mailbox`]).
//!
//! Shards send their nodes' commands over an unbounded channel counted by
//! the [`Backlog`]; events come back through each shard's inbox (`NodeId` =
//! shard index). The HTTP API uses the same channel with a reply slot.

pub mod memory;
pub mod redis;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use wavecast_core::backbone::{BackboneCommand, HistoryPage, HistoryPolicy, NodeId};
use wavecast_core::hub::{ChannelStats, HistoryBudget};
use wavecast_core::protocol::{ClientInfo, Payload, StreamPosition};

use crate::clock::Clock;
use crate::mailbox::ShardInbox;
use crate::sys::backlog::{self, Backlog};
use memory::HistoryFigures;

/// What the backbone thread (in-memory hub or Redis driver) is asked.
pub(crate) enum ToHub {
    /// A node's command.
    Command(NodeId, BackboneCommand),
    /// An HTTP API publish; the reply slot is dropped if it fails.
    Publish {
        channel: String,
        data: Payload,
        /// The sender, for a client's call (`None` for the API).
        info: Option<Box<ClientInfo>>,
        history: HistoryPolicy,
        reply: oneshot::Sender<StreamPosition>,
    },
    /// An HTTP API history read.
    History {
        channel: String,
        since: Option<StreamPosition>,
        limit: Option<usize>,
        reverse: bool,
        reply: oneshot::Sender<HistoryPage>,
    },
    /// An HTTP API presence read.
    Presence {
        channel: String,
        reply: oneshot::Sender<Vec<ClientInfo>>,
    },
    /// The channels the backbone knows (HTTP API).
    Channels(oneshot::Sender<Vec<ChannelStats>>),
    /// Answer once everything sent before has reached the backbone (at
    /// shutdown, so that the leaves of closed connections are not lost).
    Flush(oneshot::Sender<()>),
    /// Disconnect a client held by another server of the cluster (HTTP
    /// API); the reply says whether that server found it.
    RemoteDisconnect {
        instance: String,
        client: String,
        reconnect: bool,
        reply: oneshot::Sender<Result<bool, ControlError>>,
    },
    /// Every server's channels with their subscriber counts (HTTP API).
    ClusterChannels(oneshot::Sender<ClusterChannels>),
    /// Every server's status-page summary (`/status/data`).
    ClusterStatus(oneshot::Sender<ClusterStatus>),
}

/// The backbone is gone (the server is stopping).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("backbone unavailable")]
pub struct Unavailable;

/// A request to another server of the cluster failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// The backbone (the link to Redis) is unavailable.
    #[error("backbone unavailable")]
    Unavailable,
    /// The server that holds the client received the request but did not
    /// answer in time: it may be overloaded or stopping. Whether the client
    /// was disconnected is unknown.
    #[error("server {instance} did not answer within {waited:?}")]
    NoReply {
        /// The instance id of the silent server.
        instance: String,
        /// How long its answer was waited for.
        waited: Duration,
    },
}

impl From<Unavailable> for ControlError {
    fn from(_: Unavailable) -> Self {
        ControlError::Unavailable
    }
}

/// The channels of a cluster, as the servers that answered in time count
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterChannels {
    /// Channel name to its live subscribers, summed over the servers that
    /// answered (channels without subscribers are left out).
    pub counts: BTreeMap<String, usize>,
    /// How many servers received the question.
    pub asked: usize,
    /// How many of them answered in time; fewer than `asked` when a server
    /// died or stalled during the request, and then its channels are
    /// missing from `counts`.
    pub answered: usize,
}

/// Every server's status-page summary, as the servers that answered in
/// time sent it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterStatus {
    /// Each answering server's summary (`crate::status::data`'s
    /// `ServerStatus` as JSON), in the order they arrived.
    pub servers: Vec<serde_json::Value>,
    /// How many servers received the question.
    pub asked: usize,
    /// How many of them answered in time.
    pub answered: usize,
}

/// A handle to the backbone, cheap to clone.
#[derive(Debug, Clone)]
pub struct Backbone {
    /// Bounded by its backlog (`backbone_queue`).
    tx: backlog::Sender<ToHub>,
    /// True while the backbone can serve (always, in memory; while the link
    /// is up, with Redis): `/readyz` reports it.
    ready: Arc<AtomicBool>,
    /// True with Redis: other servers may hold clients and channels.
    cluster: bool,
    /// The in-memory hub's history figures (`None` with Redis, whose
    /// streams hold the history).
    history: Option<Arc<HistoryFigures>>,
    /// The link's errors and reconnects (always 0 in memory).
    link: Arc<LinkStats>,
}

/// What the backbone's link to Redis counts (`/metrics`); the in-memory
/// backbone has no link, and its counts stay 0.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Failed attempts to connect, and links lost.
    pub errors: AtomicU64,
    /// Links established again after one was up.
    pub reconnects: AtomicU64,
}

/// What the in-memory hub's history costs, against its budget
/// (`/api/info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryUsage {
    /// Bytes of history kept (payloads plus a fixed overhead each).
    pub bytes: usize,
    /// Channels holding history.
    pub channels: usize,
    /// The budget.
    pub budget: HistoryBudget,
}

impl std::fmt::Debug for ToHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ToHub")
    }
}

impl Backbone {
    /// Starts the in-memory backbone on its own thread, its history held
    /// to `budget`. Events for node `i` go to `shards[i]`. The thread ends
    /// when every handle is dropped.
    pub fn start_memory(
        clock: Clock,
        seed: u64,
        budget: HistoryBudget,
        shards: Vec<ShardInbox>,
        max_backlog: usize,
    ) -> std::io::Result<Backbone> {
        let (tx, rx) = backlog::channel(max_backlog);
        let figures = memory::spawn(clock, seed, budget, shards, rx)?;
        Ok(Backbone {
            tx,
            ready: Arc::new(AtomicBool::new(true)),
            cluster: false,
            history: Some(figures),
            link: Arc::default(),
        })
    }

    /// Starts the Redis backbone on its own thread: events for node `i` go
    /// to `shards[i]`. It connects in the background (and reconnects
    /// whenever the link is lost); until it is connected, requests fail with
    /// "unavailable" and [`Backbone::is_ready`] is false. Fails only on an
    /// invalid URL or if the thread cannot start.
    pub fn start_redis(
        options: self::redis::RedisOptions,
        shards: Vec<ShardInbox>,
        max_backlog: usize,
    ) -> Result<Backbone, self::redis::RedisStartError> {
        let ready = Arc::new(AtomicBool::new(false));
        let (tx, rx) = backlog::channel(max_backlog);
        let link = Arc::new(LinkStats::default());
        self::redis::spawn(options, shards, ready.clone(), link.clone(), rx)?;
        Ok(Backbone {
            tx,
            ready,
            cluster: true,
            history: None,
            link,
        })
    }

    /// True if this server is part of a cluster (Redis backbone): the API
    /// then asks the other servers too for disconnects and channels.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The link's errors and reconnects so far: `(errors, reconnects)`.
    pub fn link_stats(&self) -> (u64, u64) {
        (
            self.link.errors.load(Ordering::Relaxed),
            self.link.reconnects.load(Ordering::Relaxed),
        )
    }

    /// True while the backbone can serve requests (the link to Redis is
    /// up); `/readyz` answers 503 otherwise.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Sends a node's command. It counts against the backlog until the
    /// backbone takes it: while [`Backbone::backlog`] is full, shards stop
    /// reading their sockets. The command comes back (`Err`) when the
    /// channel is at its hard bound: the shard keeps it in its node and
    /// sends it again once the backlog has room. (At shutdown, when the
    /// backbone is gone and nothing waits for it, it is dropped.)
    // The error is the command itself, handed back by value as it came
    // (a presence command holds a whole `ClientInfo`); boxing it would
    // cost every command an allocation for the rare refusal.
    #[allow(clippy::result_large_err)]
    pub fn command(&self, node: NodeId, cmd: BackboneCommand) -> Result<(), BackboneCommand> {
        match self.tx.send_now(ToHub::Command(node, cmd)) {
            Ok(()) => Ok(()),
            Err(_) if self.tx.is_closed() => Ok(()),
            Err(ToHub::Command(_, cmd)) => Err(cmd),
            Err(_) => Ok(()),
        }
    }

    /// Messages sent to the backbone that it has not taken yet.
    pub fn backlog(&self) -> &Backlog {
        self.tx.backlog()
    }

    /// Sends the driver a request, once the backlog has room, and waits for
    /// its answer; the driver gone (shutting down) is "unavailable".
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> ToHub,
    ) -> Result<T, Unavailable> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| Unavailable)?;
        rx.await.map_err(|_| Unavailable)
    }

    /// Publishes (the HTTP API, `info: None`, or a client's call over
    /// HTTP, which names its sender).
    pub async fn publish(
        &self,
        channel: String,
        data: Payload,
        info: Option<Box<ClientInfo>>,
        history: HistoryPolicy,
    ) -> Result<StreamPosition, Unavailable> {
        self.ask(|reply| ToHub::Publish {
            channel,
            data,
            info,
            history,
            reply,
        })
        .await
    }

    /// Reads history (HTTP API).
    pub async fn history(
        &self,
        channel: String,
        since: Option<StreamPosition>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<HistoryPage, Unavailable> {
        self.ask(|reply| ToHub::History {
            channel,
            since,
            limit,
            reverse,
            reply,
        })
        .await
    }

    /// Presence (HTTP API).
    pub async fn presence(&self, channel: String) -> Result<Vec<ClientInfo>, Unavailable> {
        self.ask(|reply| ToHub::Presence { channel, reply }).await
    }

    /// Waits until every command sent before has reached the backbone
    /// (with Redis: has been executed by Redis). The server calls it at
    /// shutdown, after its connections are closed.
    pub async fn flush(&self) -> Result<(), Unavailable> {
        self.ask(ToHub::Flush).await
    }

    /// Asks the server `instance` of the cluster to disconnect `client`
    /// (HTTP API); true if it found the client. `Ok(false)` also when no
    /// server with that instance id is running. Without a cluster there is
    /// no other server: always `Ok(false)`.
    pub async fn disconnect_remote(
        &self,
        instance: String,
        client: String,
        reconnect: bool,
    ) -> Result<bool, ControlError> {
        self.ask(|reply| ToHub::RemoteDisconnect {
            instance,
            client,
            reconnect,
            reply,
        })
        .await
        .map_err(|_| ControlError::Unavailable)?
    }

    /// Every server's channels with live subscribers, this one's included,
    /// summed per channel (HTTP API, cluster only). Waits a bounded time
    /// for the servers' answers, then answers with those that arrived.
    pub async fn cluster_channels(&self) -> Result<ClusterChannels, Unavailable> {
        self.ask(ToHub::ClusterChannels).await
    }

    /// Every server's status-page summary, this one's included (cluster
    /// only); waits a bounded time, then answers with those that arrived.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, Unavailable> {
        self.ask(ToHub::ClusterStatus).await
    }

    /// What the hub knows of every channel (HTTP API).
    pub async fn channels(&self) -> Result<Vec<ChannelStats>, Unavailable> {
        self.ask(ToHub::Channels).await
    }

    /// The in-memory hub's history figures as of its latest message
    /// (`/api/info`); `None` with Redis, where history lives in Redis.
    pub fn history_usage(&self) -> Option<HistoryUsage> {
        self.history.as_ref().map(|f| HistoryUsage {
            bytes: f.bytes.load(Ordering::Relaxed),
            channels: f.channels.load(Ordering::Relaxed),
            budget: f.budget,
        })
    }
}
