//! `GET /metrics`: Prometheus text exposition of the server's figures.
//!
//! Gauges are collected when scraped: each shard reports its counts over its
//! inbox (no shared counters on the data path), the backbone its channels,
//! the connection limits their held slots, and /proc the process's
//! resident memory.

use std::fmt::Write as _;

use crate::mailbox::{ask_shards, Control, ShardInfo};
use crate::shared::Shared;
use crate::sys::proc::resident_bytes;

/// The metrics page.
pub async fn render(shared: &Shared) -> String {
    let infos: Vec<ShardInfo> = ask_shards(&shared.shards, Control::Info).await;
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    let connections: usize = infos.iter().map(|i| i.connections).sum();
    gauge(
        "wavecast_connections",
        "WebSocket connections held.",
        connections as f64,
    );
    gauge(
        "wavecast_max_connections",
        "Configured connection limit.",
        shared.config.max_connections as f64,
    );
    gauge(
        "wavecast_connection_slots",
        "Slots of max_connections reserved (WebSocket connections, handshakes included).",
        shared.connections.held() as f64,
    );
    gauge(
        "wavecast_http_connections",
        "Plain HTTP connections held (this scrape's own included).",
        shared.http_connections.held() as f64,
    );
    gauge(
        "wavecast_max_http_connections",
        "Configured HTTP connection limit.",
        shared.config.max_http_connections as f64,
    );
    let (proxies, max_proxies) = shared.outbound.proxies_in_flight();
    gauge(
        "wavecast_proxy_requests_in_flight",
        "Backend proxy requests in flight, server-wide.",
        proxies as f64,
    );
    gauge(
        "wavecast_proxy_max_in_flight",
        "Configured bound of proxy requests in flight (proxy_max_in_flight).",
        max_proxies as f64,
    );
    gauge(
        "wavecast_local_channels",
        "Channels with local subscribers, summed over shards.",
        infos.iter().map(|i| i.channels).sum::<usize>() as f64,
    );
    gauge(
        "wavecast_queued_bytes",
        "Bytes waiting in outbound queues.",
        infos.iter().map(|i| i.queued_bytes).sum::<usize>() as f64,
    );
    gauge(
        "wavecast_heartbeat_interval_seconds",
        "Configured heartbeat interval.",
        shared.config.heartbeat_interval.as_secs_f64(),
    );
    gauge(
        "wavecast_workers",
        "Shards (worker threads).",
        infos.len() as f64,
    );
    if let Some(rss) = resident_bytes() {
        gauge(
            "wavecast_resident_memory_bytes",
            "Resident memory of the process.",
            rss as f64,
        );
        if connections > 0 {
            gauge(
                "wavecast_resident_memory_per_connection_bytes",
                "Resident memory divided by connections (includes the process's fixed cost).",
                rss as f64 / connections as f64,
            );
        }
    }
    gauge(
        "wavecast_uptime_seconds",
        "Seconds since start.",
        shared.clock.elapsed().as_secs_f64(),
    );
    out
}
