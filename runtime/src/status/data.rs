//! What `/status/data` answers: this server's summary, built from the
//! metrics snapshot ([`crate::api::metrics::snapshot`]) and what the
//! shards keep for the page (their last closed connections, their
//! connections with the most bytes queued), plus the channels with the
//! most subscribers.
//!
//! Rates are not computed here: the page divides the difference of two
//! successive answers' counters by the difference of their `time_ms`, so
//! the server keeps no history per viewer and two viewers never disturb
//! each other's rates.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use wavecast_core::metrics::SUBSCRIBER_BUCKET_LABELS;

use crate::api::metrics::{snapshot, MetricsSnapshot};
use crate::mailbox::{ask_shards, local_channels, Control};
use crate::shared::Shared;

/// Closed connections each shard remembers; the page shows the newest
/// this many of all shards together.
pub const RECENT_CLOSES: usize = 1000;
/// Connections with the most queued bytes listed per server.
pub const TOP_QUEUED: usize = 10;
/// Channels with the most subscribers listed per server.
pub const TOP_CHANNELS: usize = 20;

/// One closed connection, as the page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Closed {
    /// When it closed, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Its client id.
    pub client: String,
    /// The user it had connected as (`None`: anonymous).
    pub user: Option<Box<str>>,
    /// `ws`, `sse` or `echo`.
    pub endpoint: &'static str,
    /// The close code.
    pub code: u16,
    /// The code's meaning.
    pub reason: &'static str,
    /// Who or what ended it.
    pub cause: &'static str,
    /// How long it was open, in milliseconds (10 ms resolution).
    pub duration_ms: u64,
}

/// A shard's last closed connections, oldest first, at most
/// [`RECENT_CLOSES`] (the oldest is dropped for a new one).
#[derive(Debug, Default)]
pub struct RecentCloses(VecDeque<Closed>);

impl RecentCloses {
    /// Remembers one close.
    pub fn push(&mut self, closed: Closed) {
        if self.0.len() == RECENT_CLOSES {
            self.0.pop_front();
        }
        self.0.push_back(closed);
    }

    /// A copy, newest first.
    pub fn newest_first(&self) -> Vec<Closed> {
        self.0.iter().rev().cloned().collect()
    }
}

/// What a shard answers for the page.
#[derive(Debug, Default)]
pub struct ShardStatus {
    /// Its last closed connections, newest first.
    pub closed: Vec<Closed>,
    /// Its connections with the most queued bytes: client id and bytes,
    /// most first, at most [`TOP_QUEUED`].
    pub queued: Vec<(String, usize)>,
}

/// The milliseconds since the Unix epoch now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Fan-out latency of one subscriber-count bucket.
#[derive(Debug, Serialize)]
struct Fanout {
    subscribers: &'static str,
    count: u64,
    p50_seconds: Option<f64>,
    p99_seconds: Option<f64>,
}

/// This server's summary: what `/status/data` lists under `servers`.
#[derive(Debug, Serialize)]
pub struct ServerStatus {
    instance: String,
    version: &'static str,
    time_ms: u64,
    backbone: Backbone,
    fanout: Vec<Fanout>,
    queued_top: Vec<Named>,
    channels_count: usize,
    channels_top: Vec<Named>,
    closed: Vec<Closed>,
    /// Every figure of `/metrics`, as data (the four figures, counters).
    metrics: MetricsSnapshot,
}

#[derive(Debug, Serialize)]
struct Backbone {
    kind: &'static str,
    ready: bool,
    link_errors: u64,
    reconnects: u64,
    /// The median round trip of this server's requests to the backbone
    /// (`wavecast_backbone_round_trip_seconds`, the upper bound of its
    /// bucket); `None` (a dash on the page) before any request.
    round_trip_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Named {
    name: String,
    value: usize,
}

/// Builds this server's summary.
pub async fn server_status(shared: &Shared) -> ServerStatus {
    let metrics = snapshot(shared).await;
    let shards = ask_shards(&shared.shards, Control::Status).await;
    let mut closed: Vec<Closed> = Vec::new();
    let mut queued: Vec<(String, usize)> = Vec::new();
    for s in shards {
        closed.extend(s.closed);
        queued.extend(s.queued);
    }
    closed.sort_by_key(|c| std::cmp::Reverse(c.at_ms));
    closed.truncate(RECENT_CLOSES);
    queued.sort_by_key(|q| std::cmp::Reverse(q.1));
    queued.truncate(TOP_QUEUED);
    let channels = local_channels(&shared.shards).await;
    let channels_count = channels.len();
    let mut top: Vec<(String, usize)> = channels.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(TOP_CHANNELS);
    let fanout = metrics
        .fanout_latency
        .iter()
        .zip(SUBSCRIBER_BUCKET_LABELS)
        .map(|(h, subscribers)| Fanout {
            subscribers,
            count: h.count(),
            p50_seconds: h.quantile(0.5),
            p99_seconds: h.quantile(0.99),
        })
        .collect();
    ServerStatus {
        instance: shared.instance.clone(),
        version: env!("CARGO_PKG_VERSION"),
        time_ms: unix_ms(),
        backbone: Backbone {
            kind: if shared.backbone.is_cluster() {
                "redis"
            } else {
                "memory"
            },
            ready: shared.backbone.is_ready(),
            link_errors: metrics.backbone_link_errors,
            reconnects: metrics.backbone_reconnects,
            round_trip_seconds: metrics.counters.backbone_round_trip.quantile(0.5),
        },
        fanout,
        queued_top: named(queued),
        channels_count,
        channels_top: named(top),
        closed,
        metrics,
    }
}

fn named(list: Vec<(String, usize)>) -> Vec<Named> {
    list.into_iter()
        .map(|(name, value)| Named { name, value })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(n: u64) -> Closed {
        Closed {
            at_ms: n,
            client: format!("c{n}"),
            user: None,
            endpoint: "ws",
            code: 1000,
            reason: "",
            cause: "client",
            duration_ms: 0,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let mut ring = RecentCloses::default();
        for n in 0..(RECENT_CLOSES as u64 + 5) {
            ring.push(closed(n));
        }
        let list = ring.newest_first();
        assert_eq!(list.len(), RECENT_CLOSES);
        assert_eq!(list[0].at_ms, RECENT_CLOSES as u64 + 4);
        assert_eq!(list[RECENT_CLOSES - 1].at_ms, 5);
    }
}
