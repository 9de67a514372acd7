//! What a shard is sent and what it answers: backbone events, the HTTP
//! API's questions, and the answers to what its node asked outside (proxy
//! calls, the token key set) arrive in one inbox per shard ([`ShardInbox`]); the
//! helpers here ask every shard of this server at once and gather the
//! answers. Both the API and the Redis backbone (answering another server)
//! ask through them.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::oneshot;
use wavecast_core::backbone::BackboneEvent;
use wavecast_core::metrics::{Counters, Histogram, SUBSCRIBER_BUCKETS};
use wavecast_core::protocol::close;
use wavecast_core::proxy::{AskId, ProxyAnswer};

use crate::config::Config;
use crate::sys::inbox::Inbox;

/// A message for a shard: an event from the backbone, a request of the
/// HTTP API, or an answer to its node's `Ask` (`crate::outbound`).
#[derive(Debug)]
pub enum ShardMsg {
    /// An event for the shard's node.
    Backbone(BackboneEvent),
    /// A question or order from the HTTP API.
    Control(Control),
    /// A backend's answer to the node's `Ask::Proxy` `ask`.
    Proxy {
        /// The ask it answers.
        ask: AskId,
        /// The answer (every failure is `Unavailable`).
        answer: ProxyAnswer,
    },
    /// The token key set: `Some`, a freshly fetched JWKS document for the
    /// node to install (sent to every shard; it also answers an
    /// `Ask::Keys`); `None`, the answer to an `Ask::Keys` that brought no
    /// new set (rate-limited, failed, unchanged).
    Keys(Option<Arc<str>>),
    /// A reload: the configuration now in force, whose node settings
    /// (namespaces, token rules, limits) and request rules (allowed
    /// origins, SSE) the shard applies to what comes next.
    Reconfigure(Arc<Config>),
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
    /// What the status page shows of the shard (its last closes, its
    /// connections with the most queued bytes).
    Status(oneshot::Sender<crate::status::data::ShardStatus>),
    /// This whole server's status-page summary, as JSON (asked of one
    /// shard when another server of the cluster wants it: any shard can
    /// build it, asking every shard, itself included, from a task of its
    /// own).
    ServerStatus(oneshot::Sender<serde_json::Value>),
}

impl Control {
    /// The close code of an API disconnect: 4004 lets the client reconnect,
    /// 4501 tells it not to. One place, so that a disconnect asked on
    /// another server closes with the same code as a local one.
    pub fn disconnect_code(reconnect: bool) -> u16 {
        if reconnect {
            close::DISCONNECTED.0
        } else {
            close::FORCE_DISCONNECT.0
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
    /// What its node counted since it started.
    pub counters: Counters,
    /// What the shard itself counted (handshakes refused, fan-out
    /// latency).
    pub metrics: ShardMetrics,
}

/// What a shard counts beside its node, on its own thread (no atomics, no
/// lock): summed over shards when `/metrics` is scraped.
#[derive(Debug, Clone, Default)]
pub struct ShardMetrics {
    /// Handshakes (WebSocket upgrades and SSE requests) refused before a
    /// connection was made, by HTTP status.
    pub refused: BTreeMap<u16, u64>,
    /// TLS handshakes by outcome: `ok`, `failed` (not TLS, no common
    /// version or suite, the client gave up), `timeout`
    /// (`tls_handshake_timeout`), `refused` (at `tls_max_handshakes`).
    pub tls_handshakes: BTreeMap<&'static str, u64>,
    /// Fan-out latency by subscriber-count bucket
    /// ([`wavecast_core::metrics::SUBSCRIBER_BUCKET_LABELS`]): from a
    /// publication's arrival at the shard to the end of the write pass
    /// that handed its frames to the kernel.
    pub fanout: [Histogram; SUBSCRIBER_BUCKETS],
}
