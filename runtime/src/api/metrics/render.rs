//! A [`MetricsSnapshot`] as Prometheus text (format 0.0.4) or OpenMetrics
//! text, encoded by the `prometheus-client` crate: each scrape builds a
//! registry holding one collector over the snapshot, so the numbers are
//! ours (summed over shards, no atomics on the data path) and the format
//! (names, `_total`, `_bucket`/`_sum`/`_count`, escaping, `# EOF`) the
//! library's.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use wavecast_core::metrics::{
    command_label, result_label, CommandKind, Histogram, COMMAND_LABELS, ENDPOINT_LABELS,
    SUBSCRIBER_BUCKET_LABELS,
};

use super::MetricsSnapshot;

/// The `Content-Type` of [`Format::Prometheus`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `Content-Type` of [`Format::OpenMetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which text format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (what a plain `GET` gets).
    Prometheus,
    /// OpenMetrics 1.0 text (asked for with `Accept:
    /// application/openmetrics-text`, as Prometheus itself does).
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The snapshot as text in `format`.
pub fn render_snapshot(snapshot: &MetricsSnapshot, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(snapshot.clone())));
    let mut out = String::new();
    let encoded = match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    // Writing to a String cannot fail, and every series below is valid.
    debug_assert!(encoded.is_ok(), "metrics encoding failed");
    out
}

/// The collector of one scrape.
#[derive(Debug)]
struct Snapshot(MetricsSnapshot);

type Result = std::result::Result<(), std::fmt::Error>;

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// A counter; `name` without `_total` (the encoder adds it).
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// A counter with one label, a series per `(label value, count)`.
fn counters(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    series: impl IntoIterator<Item = (String, u64)>,
) -> Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, v) in series {
        let labels = [(label, value.as_str())];
        m.encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
    }
    Ok(())
}

fn histogram(e: &mut DescriptorEncoder, name: &str, help: &str, h: &Histogram) -> Result {
    e.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(h.sum_seconds(), h.count(), &h.buckets(), None)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result {
        let s = &self.0;
        let c = &s.counters;
        let e = &mut e;
        // Gauges.
        gauge(
            e,
            "wavecast_connections",
            "WebSocket connections and SSE streams held.",
            s.connections as f64,
        )?;
        gauge(
            e,
            "wavecast_max_connections",
            "Configured connection limit (max_connections).",
            s.max_connections as f64,
        )?;
        gauge(
            e,
            "wavecast_connection_slots",
            "Slots of max_connections reserved (WebSocket connections, handshakes included).",
            s.connection_slots as f64,
        )?;
        gauge(
            e,
            "wavecast_http_connections",
            "Plain HTTP connections held (this scrape's own included).",
            s.http_connections as f64,
        )?;
        gauge(
            e,
            "wavecast_max_http_connections",
            "Configured HTTP connection limit.",
            s.max_http_connections as f64,
        )?;
        gauge(
            e,
            "wavecast_proxy_requests_in_flight",
            "Backend proxy requests in flight, server-wide.",
            s.proxy_requests_in_flight as f64,
        )?;
        gauge(
            e,
            "wavecast_proxy_max_in_flight",
            "Configured bound of proxy requests in flight (proxy_max_in_flight).",
            s.proxy_max_in_flight as f64,
        )?;
        gauge(
            e,
            "wavecast_local_channels",
            "Channels with local subscribers, summed over shards.",
            s.local_channels as f64,
        )?;
        gauge(
            e,
            "wavecast_queued_bytes",
            "Bytes waiting in outbound queues.",
            s.queued_bytes as f64,
        )?;
        gauge(
            e,
            "wavecast_heartbeat_interval_seconds",
            "Configured heartbeat interval.",
            s.heartbeat_interval_seconds,
        )?;
        gauge(
            e,
            "wavecast_heartbeat_timeout_seconds",
            "Configured heartbeat timeout (a silent connection is closed after interval + timeout).",
            s.heartbeat_timeout_seconds,
        )?;
        gauge(
            e,
            "wavecast_workers",
            "Shards (worker threads).",
            s.workers as f64,
        )?;
        if let Some(rss) = s.resident_memory_bytes {
            gauge(
                e,
                "wavecast_resident_memory_bytes",
                "Resident memory of the process.",
                rss as f64,
            )?;
        }
        if let Some(per) = s.memory_per_connection_bytes {
            gauge(
                e,
                "wavecast_resident_memory_per_connection_bytes",
                "Resident memory divided by connections (includes the process's fixed cost).",
                per,
            )?;
        }
        gauge(
            e,
            "wavecast_uptime_seconds",
            "Seconds since start.",
            s.uptime_seconds,
        )?;
        // Counters.
        counters(
            e,
            "wavecast_connections_accepted",
            "Connections taken by the shards' nodes, by endpoint (ws, sse, echo).",
            "endpoint",
            ENDPOINT_LABELS
                .iter()
                .zip(c.accepted)
                .map(|(l, n)| (l.to_string(), n)),
        )?;
        counters(
            e,
            "wavecast_handshakes_refused",
            "WebSocket upgrades and SSE requests refused, by HTTP status.",
            "status",
            s.handshakes_refused
                .iter()
                .map(|(status, n)| (status.to_string(), *n)),
        )?;
        counters(
            e,
            "wavecast_tls_handshakes",
            "TLS handshakes by outcome (ok, failed, timeout, refused at tls_max_handshakes).",
            "outcome",
            s.tls_handshakes
                .iter()
                .map(|(outcome, n)| (outcome.to_string(), *n)),
        )?;
        counters(
            e,
            "wavecast_connections_closed",
            "Connections ended, by close code (1006: none exchanged; other: past 64 distinct codes).",
            "code",
            c.closed.iter().map(|(code, n)| {
                let label = if *code == 0 {
                    "other".to_owned()
                } else {
                    code.to_string()
                };
                (label, *n)
            }),
        )?;
        counter(
            e,
            "wavecast_slow_consumer_closes",
            "Connections closed because they did not take their bytes (queue over budget, or nothing taken for heartbeat interval + timeout).",
            c.slow_consumer_closes,
        )?;
        counter(
            e,
            "wavecast_ping_flood_closes",
            "Connections closed because they kept sending WebSocket pings over client_ping_rate (4504 on /ws, 1008 on /echo).",
            c.ping_flood_closes,
        )?;
        counters(
            e,
            "wavecast_commands",
            "Client commands decoded, by command.",
            "command",
            CommandKind::ALL
                .iter()
                .zip(c.commands)
                .map(|(k, n)| (k.name().to_owned(), n)),
        )?;
        let mut results = e.encode_descriptor(
            "wavecast_command_results",
            "Replies to client commands, by command (unknown: a message that was not one) and result (0: success; an error code; app: an application's code). Success is always listed, an error once it happened.",
            None,
            MetricType::Counter,
        )?;
        for (i, row) in c.replies.iter().enumerate() {
            for (j, &n) in row.iter().enumerate() {
                let unknown_ok = i == COMMAND_LABELS - 1 && n == 0;
                if (j != 0 && n == 0) || unknown_ok {
                    continue;
                }
                let result = result_label(j);
                let labels = [("command", command_label(i)), ("result", result.as_str())];
                results
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        counters(
            e,
            "wavecast_publications",
            "Publications given an offset, by source (api: HTTP API; client: a client's publish).",
            "source",
            [
                ("api".to_owned(), s.api_publications),
                ("client".to_owned(), c.publications),
            ],
        )?;
        counter(
            e,
            "wavecast_deliveries",
            "Publications queued to a local subscriber (one per subscriber and publication).",
            c.deliveries,
        )?;
        counter(
            e,
            "wavecast_bytes_read",
            "Bytes read from WebSocket connections and SSE streams.",
            c.bytes_read,
        )?;
        counter(
            e,
            "wavecast_bytes_written",
            "Bytes written to WebSocket connections and SSE streams.",
            c.bytes_written,
        )?;
        counters(
            e,
            "wavecast_recoveries",
            "Subscribes with recover, by outcome (recovered: every missed publication sent; not_recovered: a gap).",
            "outcome",
            [
                ("recovered".to_owned(), c.recovered),
                ("not_recovered".to_owned(), c.not_recovered),
            ],
        )?;
        counter(
            e,
            "wavecast_gaps",
            "Unsubscribe pushes with code 2500 (a gap the server could not fill; the client resubscribes with recover).",
            c.gaps,
        )?;
        counter(
            e,
            "wavecast_backbone_request_errors",
            "Requests to the backbone that failed (an error answer, or cut off by a lost link).",
            c.backbone_errors,
        )?;
        counter(
            e,
            "wavecast_backbone_link_errors",
            "Failed connection attempts to Redis and links lost (0 without Redis).",
            s.backbone_link_errors,
        )?;
        counter(
            e,
            "wavecast_backbone_reconnects",
            "Links to Redis established again after one was up.",
            s.backbone_reconnects,
        )?;
        // Histograms.
        let mut fanout = e.encode_descriptor(
            "wavecast_fanout_latency_seconds",
            "From a publication's arrival at a shard to the end of the write pass that handed its frame to the kernel for the shard's last subscriber, by the channel's subscribers on that shard.",
            None,
            MetricType::Histogram,
        )?;
        for (label, h) in SUBSCRIBER_BUCKET_LABELS.iter().zip(s.fanout_latency.iter()) {
            let labels = [("subscribers", *label)];
            fanout
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(h.sum_seconds(), h.count(), &h.buckets(), None)?;
        }
        histogram(
            e,
            "wavecast_api_publish_latency_seconds",
            "From an HTTP API publish request (checked) to the offset assigned by the backbone, per channel.",
            &s.api_publish_latency,
        )?;
        histogram(
            e,
            "wavecast_backbone_round_trip_seconds",
            "From a shard's request to the backbone to its reply, as the shard saw it (queueing both ways included).",
            &c.backbone_round_trip,
        )?;
        Ok(())
    }
}
