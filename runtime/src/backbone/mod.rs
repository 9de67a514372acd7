//! The runtime side of the backbone: how shards reach the sequencer.
//!
//! In single-server mode the sequencer is core's in-memory [`Hub`], owned by
//! one thread (`wavecast-backbone`). Shards send it their nodes' commands
//! over an unbounded channel; it sends each shard the events addressed to
//! its node (`NodeId` = shard index). A publication therefore crosses to
//! each shard once, and each shard encodes it once per encoding for all its
//! sockets. The HTTP API uses the same channel with a reply slot.
//!
//! Across servers the sequencer is Redis: [`Backbone::start_redis`] starts
//! a driver thread (`wavecast-redis`, see [`crate::redis_backbone`]) that
//! consumes the same messages and answers with the same events. In a
//! cluster the backbone also carries the API's requests to other servers
//! ([`Backbone::disconnect_remote`], [`Backbone::cluster_channels`]): the
//! driver sends them over Redis pub/sub, and each server answers them
//! through its shards with [`ask_shards`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::backlog::Backlog;
use crate::inbox::Inbox;
use wavecast_core::backbone::{Command, Event, HistoryPage, HistoryPolicy, NodeId};
use wavecast_core::hub::{ChannelStats, HistoryBudget, Hub};
use wavecast_core::protocol::{close, ClientInfo, Payload, StreamPosition};
use wavecast_core::Timestamp;

/// A message for a shard: an event from the backbone or a request of the
/// HTTP API.
#[derive(Debug)]
pub enum ShardMsg {
    /// An event for the shard's node.
    Backbone(Event),
    /// A question or order from the HTTP API.
    Control(Control),
}

/// A shard's inbox, shared by everyone who sends to it.
pub type ShardInbox = Arc<Inbox<ShardMsg>>;

/// What the HTTP API asks a shard.
#[derive(Debug)]
pub enum Control {
    /// Local channels and their live subscriber counts.
    Channels(oneshot::Sender<Vec<(String, usize)>>),
    /// Close the connection with this client id, if it is here.
    Disconnect {
        /// The client id.
        client: String,
        /// Close code to use.
        code: u16,
        /// True if found.
        reply: oneshot::Sender<bool>,
    },
    /// Counts for `/api/info` and `/metrics`.
    Info(oneshot::Sender<ShardInfo>),
}

impl Control {
    /// The close code of an API disconnect: 4004 lets the client reconnect,
    /// 4501 tells it not to. One place, so that a disconnect asked on
    /// another server closes with the same code as a local one.
    pub fn disconnect_code(reconnect: bool) -> u16 {
        if reconnect {
            close::DISCONNECTED
        } else {
            close::FORCE_DISCONNECT
        }
    }
}

/// Asks every shard in `shards` the same question and collects the answers
/// of those that give one (a stopping shard drops the question).
pub(crate) async fn ask_shards<T>(
    shards: &[ShardInbox],
    make: impl Fn(oneshot::Sender<T>) -> Control,
) -> Vec<T> {
    let mut waits = Vec::new();
    for inbox in shards {
        let (tx, rx) = oneshot::channel();
        if inbox.send(ShardMsg::Control(make(tx))).is_ok() {
            waits.push(rx);
        }
    }
    let mut out = Vec::new();
    for rx in waits {
        if let Ok(v) = rx.await {
            out.push(v);
        }
    }
    out
}

/// This server's channels with live subscribers, counts summed over its
/// shards (the API's `channels`, and this server's answer to a cluster's).
pub(crate) async fn local_channels(shards: &[ShardInbox]) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for list in ask_shards(shards, Control::Channels).await {
        for (c, n) in list.into_iter().filter(|(_, n)| *n > 0) {
            *counts.entry(c).or_default() += n;
        }
    }
    counts
}

/// Closes `client` with `code` if one of this server's shards holds it;
/// true if one did (the API's `disconnect`, locally or for a cluster).
pub(crate) async fn disconnect_local(shards: &[ShardInbox], client: &str, code: u16) -> bool {
    ask_shards(shards, |reply| Control::Disconnect {
        client: client.to_owned(),
        code,
        reply,
    })
    .await
    .into_iter()
    .any(|found| found)
}

/// One shard's counts.
#[derive(Debug, Clone, Default)]
pub struct ShardInfo {
    /// WebSocket connections.
    pub connections: usize,
    /// Channels with local subscribers.
    pub channels: usize,
    /// Bytes waiting in outbound queues.
    pub queued_bytes: usize,
}

/// What the backbone thread (in-memory hub or Redis driver) is asked.
pub(crate) enum ToHub {
    /// A node's command.
    Command(NodeId, Command),
    /// An HTTP API publish; the reply slot is dropped if it fails.
    Publish {
        channel: String,
        data: Payload,
        history: HistoryPolicy,
        reply: oneshot::Sender<StreamPosition>,
    },
    /// An HTTP API history read.
    History {
        channel: String,
        since: Option<StreamPosition>,
        limit: Option<usize>,
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

/// A handle to the backbone, cheap to clone.
#[derive(Debug, Clone)]
pub struct Backbone {
    tx: mpsc::UnboundedSender<ToHub>,
    /// True while the backbone can serve (always, in memory; while the link
    /// is up, with Redis): `/readyz` reports it.
    ready: Arc<AtomicBool>,
    /// True with Redis: other servers may hold clients and channels.
    cluster: bool,
    /// Commands sent by the shards and not yet taken by the backbone.
    backlog: Arc<Backlog>,
    /// The in-memory hub's history figures (`None` with Redis, whose
    /// streams hold the history).
    history: Option<Arc<HistoryFigures>>,
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

/// The hub thread's latest history figures, stored after every message it
/// handles, so that reading them never waits for the hub (nor needs a
/// message the Redis driver would have to know).
#[derive(Debug)]
struct HistoryFigures {
    bytes: AtomicUsize,
    channels: AtomicUsize,
    budget: HistoryBudget,
}

impl HistoryFigures {
    fn store(&self, hub: &Hub) {
        self.bytes.store(hub.history_bytes(), Ordering::Relaxed);
        self.channels
            .store(hub.channels_with_history(), Ordering::Relaxed);
    }
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
        origin: Instant,
        seed: u64,
        budget: HistoryBudget,
        shards: Vec<ShardInbox>,
        backlog: Arc<Backlog>,
    ) -> std::io::Result<Backbone> {
        let (tx, rx) = mpsc::unbounded_channel();
        let hub_backlog = backlog.clone();
        let figures = Arc::new(HistoryFigures {
            bytes: AtomicUsize::new(0),
            channels: AtomicUsize::new(0),
            budget,
        });
        let hub_figures = figures.clone();
        std::thread::Builder::new()
            .name("wavecast-backbone".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("backbone runtime");
                let hub = Hub::with_budget(seed, budget);
                rt.block_on(run_hub(
                    origin,
                    hub,
                    rx,
                    Arc::new(shards),
                    hub_figures,
                    hub_backlog,
                ));
            })?;
        Ok(Backbone {
            tx,
            ready: Arc::new(AtomicBool::new(true)),
            cluster: false,
            backlog,
            history: Some(figures),
        })
    }

    /// Starts the Redis backbone on its own thread: events for node `i` go
    /// to `shards[i]`. It connects in the background (and reconnects
    /// whenever the link is lost); until it is connected, requests fail with
    /// "unavailable" and [`Backbone::is_ready`] is false. Fails only on an
    /// invalid URL or if the thread cannot start.
    pub fn start_redis(
        options: crate::redis_backbone::RedisOptions,
        shards: Vec<ShardInbox>,
        backlog: Arc<Backlog>,
    ) -> Result<Backbone, crate::redis_backbone::RedisStartError> {
        let ready = Arc::new(AtomicBool::new(false));
        let tx = crate::redis_backbone::spawn(options, shards, ready.clone(), backlog.clone())?;
        Ok(Backbone {
            tx,
            ready,
            cluster: true,
            backlog,
            history: None,
        })
    }

    /// True if this server is part of a cluster (Redis backbone): the API
    /// then asks the other servers too for disconnects and channels.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// True while the backbone can serve requests (the link to Redis is
    /// up); `/readyz` answers 503 otherwise.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Sends a node's command. It counts against the backlog until the
    /// backbone takes it: while [`Backbone::backlog`] is full, shards stop
    /// reading their sockets.
    pub fn command(&self, node: NodeId, cmd: Command) {
        self.backlog.sent();
        if self.tx.send(ToHub::Command(node, cmd)).is_err() {
            self.backlog.taken(1);
        }
    }

    /// Commands the shards sent that the backbone has not taken yet.
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// Sends the driver a request and waits for its answer; the driver
    /// gone (shutting down) is "unavailable".
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> ToHub,
    ) -> Result<T, Unavailable> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| Unavailable)?;
        rx.await.map_err(|_| Unavailable)
    }

    /// Publishes (HTTP API).
    pub async fn publish(
        &self,
        channel: String,
        data: Payload,
        history: HistoryPolicy,
    ) -> Result<StreamPosition, Unavailable> {
        self.ask(|reply| ToHub::Publish {
            channel,
            data,
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
    ) -> Result<HistoryPage, Unavailable> {
        self.ask(|reply| ToHub::History {
            channel,
            since,
            limit,
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

fn now(origin: Instant) -> Timestamp {
    Timestamp::from_micros(origin.elapsed().as_micros() as u64)
}

async fn run_hub(
    origin: Instant,
    mut hub: Hub,
    mut rx: mpsc::UnboundedReceiver<ToHub>,
    shards: Arc<Vec<ShardInbox>>,
    figures: Arc<HistoryFigures>,
    backlog: Arc<Backlog>,
) {
    loop {
        // A shard that cannot keep up with its inbox holds the sequencer
        // back (and through the backlog, the shards' reading of clients),
        // rather than letting the inbox grow.
        while shards.iter().any(|s| s.len() > backlog.max()) {
            tokio::time::sleep(INBOX_RECHECK).await;
        }
        let deadline = hub
            .poll_timeout()
            .map(|t| origin + Duration::from_micros(t.as_micros()));
        let msg = match deadline {
            Some(at) => tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(at.into()) => {
                    hub.handle_timeout(now(origin));
                    figures.store(&hub);
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(msg) = msg else { break };
        let t = now(origin);
        handle(&mut hub, t, msg, &figures, &backlog);
        // Take more of what is waiting before delivering, so that a burst
        // costs one batch of events per wake-up, but at most `HUB_BATCH`:
        // while input keeps arriving, deliveries still go out.
        for _ in 1..HUB_BATCH {
            let Ok(msg) = rx.try_recv() else { break };
            handle(&mut hub, t, msg, &figures, &backlog);
        }
        while let Some((node, event)) = hub.poll_event() {
            if let Some(shard) = shards.get(node.0 as usize) {
                let _ = shard.send(ShardMsg::Backbone(event));
            }
        }
    }
}

/// Most inputs the in-memory sequencer handles before it delivers what they
/// produced (fairness between publishing and delivering).
const HUB_BATCH: usize = 256;

/// How often the sequencer looks again at a shard inbox that was over the
/// bound.
const INBOX_RECHECK: Duration = Duration::from_millis(1);

fn handle(hub: &mut Hub, now: Timestamp, msg: ToHub, figures: &HistoryFigures, backlog: &Backlog) {
    match msg {
        ToHub::Command(node, cmd) => {
            backlog.taken(1);
            hub.handle_command(now, node, cmd);
            figures.store(hub);
        }
        ToHub::Publish {
            channel,
            data,
            history,
            reply,
        } => {
            let position = hub.publish(now, &channel, data, history);
            // Before the reply: an API client that reads `/api/info` after
            // its publish sees the figures of after it.
            figures.store(hub);
            let _ = reply.send(position);
        }
        ToHub::History {
            channel,
            since,
            limit,
            reply,
        } => {
            let page = hub.history(now, &channel, since.as_ref(), limit);
            figures.store(hub);
            let _ = reply.send(page);
        }
        ToHub::Presence { channel, reply } => {
            let _ = reply.send(hub.presence(&channel));
        }
        ToHub::Channels(reply) => {
            let _ = reply.send(hub.channels());
        }
        // Everything before it has been applied already.
        ToHub::Flush(reply) => {
            let _ = reply.send(());
        }
        // One server and no other: nobody else can hold the client.
        ToHub::RemoteDisconnect { reply, .. } => {
            let _ = reply.send(Ok(false));
        }
        // The API counts a lone server's channels from its shards; this
        // is never asked. Dropping the slot answers "unavailable".
        ToHub::ClusterChannels(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wavecast_core::protocol::Payload;

    /// The in-memory sequencer delivers after at most `HUB_BATCH` inputs,
    /// not once its input runs dry, and takes no more input while a
    /// shard's inbox is over the bound: with ten thousand publishes
    /// waiting and a shard that reads nothing, exactly one batch is taken.
    #[tokio::test]
    async fn the_sequencer_delivers_in_batches_and_waits_for_a_full_inbox() {
        let inbox: ShardInbox = Arc::new(Inbox::new());
        let backlog = Arc::new(Backlog::new(100));
        let (tx, rx) = mpsc::unbounded_channel();
        let node = NodeId(0);
        // A subscriber on node 0, then 10,000 publishes from it.
        backlog.sent();
        let subscribe = Command::Subscribe {
            channel: "a".into(),
        };
        tx.send(ToHub::Command(node, subscribe)).unwrap();
        let total = 10_000;
        for i in 0..total {
            backlog.sent();
            let publish = Command::Publish {
                request: wavecast_core::backbone::RequestId(i),
                channel: "a".into(),
                data: Payload::null(),
                history: HistoryPolicy {
                    size: 10,
                    ttl: Duration::from_secs(60),
                },
            };
            tx.send(ToHub::Command(node, publish)).unwrap();
        }
        let figures = Arc::new(HistoryFigures {
            bytes: AtomicUsize::new(0),
            channels: AtomicUsize::new(0),
            budget: HistoryBudget::default(),
        });
        let hub = tokio::spawn(run_hub(
            Instant::now(),
            Hub::new(1),
            rx,
            Arc::new(vec![inbox.clone()]),
            figures,
            backlog.clone(),
        ));
        // One batch: the subscribe and 255 publishes, each giving the shard
        // a publication and a reply.
        let first = 2 * (HUB_BATCH - 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while inbox.len() < first {
            assert!(tokio::time::Instant::now() < deadline, "nothing delivered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The inbox is over the bound and nobody drains it: the sequencer
        // holds, whatever time it is given.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(inbox.len(), first);
        assert_eq!(backlog.waiting(), total as usize + 1 - HUB_BATCH);
        // Drained, it goes on, and takes everything in the end.
        let mut batch = Vec::new();
        let mut got = 0;
        while got < 2 * total as usize {
            assert!(inbox.drain(&mut batch).await);
            got += batch.len();
            batch.clear();
        }
        assert_eq!(backlog.waiting(), 0);
        drop(tx);
        hub.await.unwrap();
    }
}
