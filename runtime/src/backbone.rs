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
//! consumes the same messages and answers with the same events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::inbox::Inbox;
use wavecast_core::backbone::{Command, Event, HistoryPage, HistoryPolicy, NodeId};
use wavecast_core::hub::{ChannelStats, Hub};
use wavecast_core::protocol::{ClientInfo, Payload, StreamPosition};
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
}

/// The backbone is gone (the server is stopping).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("backbone unavailable")]
pub struct Unavailable;

/// A handle to the backbone, cheap to clone.
#[derive(Debug, Clone)]
pub struct Backbone {
    tx: mpsc::UnboundedSender<ToHub>,
    /// True while the backbone can serve (always, in memory; while the link
    /// is up, with Redis): `/readyz` reports it.
    ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for ToHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ToHub")
    }
}

impl Backbone {
    /// Starts the in-memory backbone on its own thread. Events for node `i`
    /// go to `shards[i]`. The thread ends when every handle is dropped.
    pub fn start_memory(
        origin: Instant,
        seed: u64,
        shards: Vec<ShardInbox>,
    ) -> std::io::Result<Backbone> {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("wavecast-backbone".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("backbone runtime");
                rt.block_on(run_hub(origin, Hub::new(seed), rx, Arc::new(shards)));
            })?;
        Ok(Backbone {
            tx,
            ready: Arc::new(AtomicBool::new(true)),
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
    ) -> Result<Backbone, crate::redis_backbone::RedisStartError> {
        let ready = Arc::new(AtomicBool::new(false));
        let tx = crate::redis_backbone::spawn(options, shards, ready.clone())?;
        Ok(Backbone { tx, ready })
    }

    /// True while the backbone can serve requests (the link to Redis is
    /// up); `/readyz` answers 503 otherwise.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Sends a node's command.
    pub fn command(&self, node: NodeId, cmd: Command) {
        let _ = self.tx.send(ToHub::Command(node, cmd));
    }

    /// Publishes (HTTP API).
    pub async fn publish(
        &self,
        channel: String,
        data: Payload,
        history: HistoryPolicy,
    ) -> Result<StreamPosition, Unavailable> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(ToHub::Publish {
                channel,
                data,
                history,
                reply,
            })
            .map_err(|_| Unavailable)?;
        rx.await.map_err(|_| Unavailable)
    }

    /// Reads history (HTTP API).
    pub async fn history(
        &self,
        channel: String,
        since: Option<StreamPosition>,
        limit: Option<usize>,
    ) -> Result<HistoryPage, Unavailable> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(ToHub::History {
                channel,
                since,
                limit,
                reply,
            })
            .map_err(|_| Unavailable)?;
        rx.await.map_err(|_| Unavailable)
    }

    /// Presence (HTTP API).
    pub async fn presence(&self, channel: String) -> Result<Vec<ClientInfo>, Unavailable> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(ToHub::Presence { channel, reply })
            .map_err(|_| Unavailable)?;
        rx.await.map_err(|_| Unavailable)
    }

    /// Waits until every command sent before has reached the backbone
    /// (with Redis: has been executed by Redis). The server calls it at
    /// shutdown, after its connections are closed.
    pub async fn flush(&self) -> Result<(), Unavailable> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(ToHub::Flush(reply)).map_err(|_| Unavailable)?;
        rx.await.map_err(|_| Unavailable)
    }

    /// What the hub knows of every channel (HTTP API).
    pub async fn channels(&self) -> Result<Vec<ChannelStats>, Unavailable> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(ToHub::Channels(reply))
            .map_err(|_| Unavailable)?;
        rx.await.map_err(|_| Unavailable)
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
) {
    loop {
        let deadline = hub
            .poll_timeout()
            .map(|t| origin + Duration::from_micros(t.as_micros()));
        let msg = match deadline {
            Some(at) => tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(at.into()) => {
                    hub.handle_timeout(now(origin));
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(msg) = msg else { break };
        let t = now(origin);
        handle(&mut hub, t, msg);
        // Take whatever else is waiting before delivering: one batch of
        // events per wake-up.
        while let Ok(msg) = rx.try_recv() {
            handle(&mut hub, t, msg);
        }
        while let Some((node, event)) = hub.poll_event() {
            if let Some(shard) = shards.get(node.0 as usize) {
                let _ = shard.send(ShardMsg::Backbone(event));
            }
        }
    }
}

fn handle(hub: &mut Hub, now: Timestamp, msg: ToHub) {
    match msg {
        ToHub::Command(node, cmd) => hub.handle_command(now, node, cmd),
        ToHub::Publish {
            channel,
            data,
            history,
            reply,
        } => {
            let _ = reply.send(hub.publish(now, &channel, data, history));
        }
        ToHub::History {
            channel,
            since,
            limit,
            reply,
        } => {
            let _ = reply.send(hub.history(now, &channel, since.as_ref(), limit));
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
    }
}
