//! `GET /metrics`: the server's figures for a dashboard, as data
//! ([`MetricsSnapshot`], which a status page can read or serialise) and
//! rendered by the `prometheus-client` crate ([`render`]).
//!
//! Nothing is counted through a shared counter or lock on the data path:
//! each shard's node counts in plain integers on its own thread
//! ([`wavecast_core::metrics::Counters`]), the shard beside it counts its
//! refused handshakes and its fan-out latency ([`ShardMetrics`]), and a
//! scrape asks every shard for a copy over its inbox and sums them here.
//! What is counted off the data path (the HTTP API's publications, the
//! backbone's link) uses atomics; the gauges are read when scraped (the
//! connection limits' held slots, /proc's resident memory).

mod render;

use std::collections::BTreeMap;

use wavecast_core::metrics::{Counters, Histogram, SUBSCRIBER_BUCKETS};

use crate::mailbox::{ask_shards, Control, ShardInfo, ShardMetrics};
use crate::shared::Shared;
use crate::sys::proc::resident_bytes;

pub use render::{render_snapshot, Format, CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE};

/// Every figure of this server at one moment: the gauges as read then,
/// and the counts since start summed over its shards. What `/metrics`
/// renders; a status page can take the same (it is `Serialize`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MetricsSnapshot {
    /// WebSocket connections and SSE streams held.
    pub connections: usize,
    /// `max_connections`.
    pub max_connections: usize,
    /// Slots of `max_connections` reserved (handshakes included).
    pub connection_slots: usize,
    /// Plain HTTP connections held.
    pub http_connections: usize,
    /// `max_http_connections`.
    pub max_http_connections: usize,
    /// Backend proxy requests in flight, server-wide.
    pub proxy_requests_in_flight: usize,
    /// `proxy_max_in_flight`.
    pub proxy_max_in_flight: usize,
    /// Channels with local subscribers, summed over shards.
    pub local_channels: usize,
    /// Bytes waiting in outbound queues.
    pub queued_bytes: usize,
    /// `heartbeat_interval`, in seconds.
    pub heartbeat_interval_seconds: f64,
    /// `heartbeat_timeout`, in seconds.
    pub heartbeat_timeout_seconds: f64,
    /// Shards that answered.
    pub workers: usize,
    /// Resident memory of the process (`None` where /proc cannot say).
    pub resident_memory_bytes: Option<u64>,
    /// Resident memory divided by connections (`None` without connections
    /// or without the resident figure); includes the process's fixed cost.
    pub memory_per_connection_bytes: Option<f64>,
    /// Seconds since start.
    pub uptime_seconds: f64,
    /// What the shards' nodes counted, summed.
    pub counters: Counters,
    /// Handshakes refused by HTTP status: the shards' (WebSocket upgrades,
    /// SSE requests refused before the node) and the nodes' (SSE streams
    /// refused by the node) together.
    pub handshakes_refused: BTreeMap<u16, u64>,
    /// TLS handshakes by outcome (`ok`, `failed`, `timeout`, `refused`),
    /// summed over shards.
    pub tls_handshakes: BTreeMap<&'static str, u64>,
    /// Fan-out latency by subscriber-count bucket
    /// ([`wavecast_core::metrics::SUBSCRIBER_BUCKET_LABELS`]), summed over
    /// shards.
    pub fanout_latency: [Histogram; SUBSCRIBER_BUCKETS],
    /// Publications of the HTTP API given an offset.
    pub api_publications: u64,
    /// API publish latency: the request (checked) to the offset assigned.
    pub api_publish_latency: Histogram,
    /// The backbone link's errors (failed connects, lost links; Redis).
    pub backbone_link_errors: u64,
    /// Links to Redis established again after one was up.
    pub backbone_reconnects: u64,
}

impl MetricsSnapshot {
    /// Sums shard answers into a snapshot (the gauges that are not the
    /// shards' are left at their defaults).
    pub fn from_shards(infos: &[ShardInfo]) -> MetricsSnapshot {
        let mut s = MetricsSnapshot {
            workers: infos.len(),
            ..MetricsSnapshot::default()
        };
        let mut shard = ShardMetrics::default();
        for info in infos {
            s.connections += info.connections;
            s.local_channels += info.channels;
            s.queued_bytes += info.queued_bytes;
            s.counters.merge(&info.counters);
            for (status, n) in &info.metrics.refused {
                *shard.refused.entry(*status).or_default() += n;
            }
            for (outcome, n) in &info.metrics.tls_handshakes {
                *shard.tls_handshakes.entry(outcome).or_default() += n;
            }
            for (sum, h) in shard.fanout.iter_mut().zip(info.metrics.fanout.iter()) {
                sum.merge(h);
            }
        }
        s.handshakes_refused = shard.refused;
        s.tls_handshakes = shard.tls_handshakes;
        for (status, n) in &s.counters.refused {
            *s.handshakes_refused.entry(*status).or_default() += n;
        }
        s.fanout_latency = shard.fanout;
        s
    }
}

/// Asks every shard for its counts and reads the rest: the snapshot a
/// scrape renders.
pub async fn snapshot(shared: &Shared) -> MetricsSnapshot {
    let infos: Vec<ShardInfo> = ask_shards(&shared.shards, Control::Info).await;
    let mut s = MetricsSnapshot::from_shards(&infos);
    let config = shared.config.get();
    s.max_connections = config.max_connections;
    s.connection_slots = shared.connections.held();
    s.http_connections = shared.http_connections.held();
    s.max_http_connections = config.max_http_connections;
    (s.proxy_requests_in_flight, s.proxy_max_in_flight) = shared.outbound.proxies_in_flight();
    s.heartbeat_interval_seconds = config.heartbeat_interval.as_secs_f64();
    s.heartbeat_timeout_seconds = config.heartbeat_timeout.as_secs_f64();
    s.resident_memory_bytes = resident_bytes();
    s.memory_per_connection_bytes = match (s.resident_memory_bytes, s.connections) {
        (Some(rss), n) if n > 0 => Some(rss as f64 / n as f64),
        _ => None,
    };
    s.uptime_seconds = shared.clock.elapsed().as_secs_f64();
    (s.api_publications, s.api_publish_latency) = shared.api_metrics.snapshot();
    (s.backbone_link_errors, s.backbone_reconnects) = shared.backbone.link_stats();
    s
}

/// The metrics page in `format`.
pub async fn render(shared: &Shared, format: Format) -> String {
    render_snapshot(&snapshot(shared).await, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(connections: usize, deliveries: u64, refused: u16, fanout_micros: u64) -> ShardInfo {
        let mut info = ShardInfo {
            connections,
            channels: 1,
            queued_bytes: 10,
            ..ShardInfo::default()
        };
        info.counters.deliveries = deliveries;
        info.counters.closed.insert(1000, 1);
        info.counters.refused.insert(401, 1);
        info.metrics.refused.insert(refused, 2);
        info.metrics.fanout[1].observe(fanout_micros);
        info
    }

    #[test]
    fn shard_counts_are_summed() {
        let s = MetricsSnapshot::from_shards(&[shard(2, 5, 404, 100), shard(3, 7, 503, 3_000)]);
        assert_eq!(
            (s.connections, s.local_channels, s.queued_bytes),
            (5, 2, 20)
        );
        assert_eq!(s.workers, 2);
        assert_eq!(s.counters.deliveries, 12);
        assert_eq!(s.counters.closed[&1000], 2);
        // The shards' refusals and the nodes' (401, an SSE stream's)
        // together.
        let refused: Vec<_> = s.handshakes_refused.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(refused, [(401, 2), (404, 2), (503, 2)]);
        assert_eq!(s.fanout_latency[1].count(), 2);
        assert_eq!(s.fanout_latency[0].count(), 0);
    }

    #[test]
    fn the_snapshot_serialises_for_a_status_page() {
        let s = MetricsSnapshot::from_shards(&[shard(2, 5, 404, 100)]);
        let v = serde_json::to_value(&s).expect("serialisable");
        assert_eq!(v["connections"], 2);
        assert_eq!(v["counters"]["deliveries"], 5);
        assert_eq!(v["handshakes_refused"]["404"], 2);
        assert_eq!(v["fanout_latency"].as_array().map(Vec::len), Some(6));
        assert_eq!(v["fanout_latency"][1]["sum_micros"], 100);
        assert_eq!(s.fanout_latency[1].quantile(0.99), Some(0.0001));
    }

    #[test]
    fn the_snapshot_renders_in_both_formats() {
        let mut s = MetricsSnapshot::from_shards(&[shard(2, 5, 404, 100)]);
        s.api_publications = 3;
        s.memory_per_connection_bytes = Some(1024.0);
        let text = render_snapshot(&s, Format::Prometheus);
        for line in [
            "# TYPE wavecast_deliveries_total counter",
            "wavecast_deliveries_total 5",
            "wavecast_connections 2.0",
            r#"wavecast_publications_total{source="api"} 3"#,
            r#"wavecast_handshakes_refused_total{status="404"} 2"#,
            r#"wavecast_connections_closed_total{code="1000"} 1"#,
            "# TYPE wavecast_fanout_latency_seconds histogram",
            r#"wavecast_fanout_latency_seconds_bucket{subscribers="10-100",le="5e-05"} 0"#,
            r#"wavecast_fanout_latency_seconds_bucket{subscribers="10-100",le="0.0001"} 1"#,
            r#"wavecast_fanout_latency_seconds_bucket{subscribers="10-100",le="+Inf"} 1"#,
            r#"wavecast_fanout_latency_seconds_count{subscribers="10-100"} 1"#,
            "wavecast_resident_memory_per_connection_bytes 1024.0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("# EOF"));
        let open = render_snapshot(&s, Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("# TYPE wavecast_deliveries counter\nwavecast_deliveries_total 5\n"));
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::from_accept(None), Format::Prometheus);
    }
}
