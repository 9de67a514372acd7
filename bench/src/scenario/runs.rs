//! One run of a scenario: `connect` (open idle subscribed connections and
//! measure) and `fanout` (subscribers, one publisher, deliveries), each
//! filling a [`Report`].

use std::time::Duration;

use super::group::{collect, open_group};
use super::procfs::{read_cpu_ns_sum, settled_rss, SETTLE};
use super::resolve::resolve;
use crate::client::{publish, PublishConfig, PUBLISHER_USER};
use crate::report::Report;
use crate::stats::{
    now_ns, percentiles_of_sparse, percentiles_of_values, ConnectResult, GroupResult,
};
use crate::{BenchError, LoadArgs, PublishVia, Target, TargetArgs};

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Fills the connection part of a report.
fn connect_figures(report: &mut Report, connect: &ConnectResult, rss: (Option<u64>, Option<u64>)) {
    report.connected = connect.connected;
    report.failed_connections = connect.failed;
    report.refused_connections = connect.refused;
    report.compressed_connections = connect.compressed;
    let took = connect.finished_ns.saturating_sub(connect.started_ns);
    report.connect_seconds = seconds(took);
    report.handshakes_per_sec = if took > 0 {
        connect.connected as f64 / seconds(took)
    } else {
        0.0
    };
    report.server_rss_before = rss.0;
    report.server_rss_after = rss.1;
    report.server_bytes_per_connection = match rss {
        (Some(b), Some(a)) if connect.connected > 0 => {
            Some((a as f64 - b as f64) / connect.connected as f64)
        }
        _ => None,
    };
}

/// `connect`: open idle subscribed connections, measure, close.
pub(super) async fn run_connect(t: &TargetArgs, connections: usize) -> Result<Report, BenchError> {
    let r = resolve(t, connections)?;
    let before = settled_rss(&t.server_pid).await;
    let load = LoadArgs {
        publications: 0,
        publish_rate: 0.0,
        max: false,
        window: 1,
        payload: 0,
        json_data: false,
        publish_via: PublishVia::Ws,
        api_key: None,
        drain_timeout: 0.0,
    };
    let (group, connect, first_error) = open_group(&r, connections, &load, 0).await?;
    let after = settled_rss(&t.server_pid).await;
    let mut report = Report {
        scenario: "connect".into(),
        target: t.target.name().into(),
        url: t.url.join(","),
        subscribers: connections as u64,
        workers: r.workers as u64,
        first_error,
        authenticated: r.signer.is_some(),
        ..Report::default()
    };
    connect_figures(&mut report, &connect, (before, after));
    collect(group, connect.connected, now_ns(), Duration::ZERO).await?;
    Ok(report)
}

/// `fanout`: N subscribers, one publisher, everything measured.
pub(super) async fn run_fanout(
    t: &TargetArgs,
    subscribers: usize,
    load: &LoadArgs,
) -> Result<Report, BenchError> {
    let r = resolve(t, subscribers)?;
    if load.publish_via == PublishVia::Api {
        if t.target != Target::Wavecast {
            return Err(BenchError::Usage(
                "--publish-via api is for --target wavecast".into(),
            ));
        }
        if load.api_key.is_none() {
            return Err(BenchError::Usage(
                "--publish-via api needs --api-key".into(),
            ));
        }
    }
    if load.publications == 0 {
        return Err(BenchError::Usage(
            "--publications must be at least 1".into(),
        ));
    }
    let before = settled_rss(&t.server_pid).await;
    let (group, connect, first_error) =
        open_group(&r, subscribers, load, load.publications).await?;
    let after = if t.server_pid.is_empty() {
        // Settle anyway: some servers register a connection just after
        // the handshake.
        tokio::time::sleep(SETTLE).await;
        None
    } else {
        settled_rss(&t.server_pid).await
    };
    let mut report = Report {
        scenario: "fanout".into(),
        target: t.target.name().into(),
        url: t.url.join(","),
        subscribers: subscribers as u64,
        workers: r.workers as u64,
        first_error,
        authenticated: r.signer.is_some(),
        publications: load.publications,
        payload_bytes: load.payload as u64,
        publish_rate: (!load.max).then_some(load.publish_rate),
        publish_via: match load.publish_via {
            PublishVia::Ws => "ws".into(),
            PublishVia::Api => "api".into(),
        },
        compression: t.pacing.compression,
        json_data: load.json_data,
        ..Report::default()
    };
    connect_figures(&mut report, &connect, (before, after));
    if connect.connected == 0 {
        return Err(BenchError::Server(format!(
            "no subscriber connected: {}",
            report.first_error.as_deref().unwrap_or("no error recorded")
        )));
    }
    // One publisher, on the first server: in a cluster the others get its
    // publications through the backbone, which is what the run measures.
    let cfg = PublishConfig {
        target: t.target,
        url: r.urls.first().clone(),
        via: load.publish_via,
        api_key: load.api_key.clone(),
        publications: load.publications,
        rate: (!load.max).then_some(load.publish_rate),
        window: load.window,
        payload: load.payload,
        json_data: load.json_data,
        credentials: match &r.signer {
            Some(signer) => Some(signer.credentials(PUBLISHER_USER.into())?),
            None => None,
        },
    };
    let cpu_before = read_cpu_ns_sum(&t.server_pid);
    let published = publish(&cfg).await?;
    let result = collect(
        group,
        connect.connected,
        published.last_ns,
        Duration::from_secs_f64(load.drain_timeout.max(0.0)),
    )
    .await?;
    let cpu_after = read_cpu_ns_sum(&t.server_pid);
    drop(published.connection);
    fill_deliveries(&mut report, &result, connect.connected, published.first_ns);
    if result.deliveries > 0 {
        report.received_bytes_per_delivery =
            Some(result.bytes_received as f64 / result.deliveries as f64);
        report.server_cpu_us_per_delivery = match (cpu_before, cpu_after) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / 1e3 / result.deliveries as f64),
            _ => None,
        };
    }
    Ok(report)
}

/// Fills the delivery part of a report from the merged deliveries.
fn fill_deliveries(report: &mut Report, result: &GroupResult, connected: u64, first_ns: u64) {
    report.latency_delivery_ns = percentiles_of_sparse(&result.histogram);
    let mut last: Vec<u64> = result
        .counts
        .iter()
        .zip(&result.max_latency_ns)
        .filter(|(c, _)| **c > 0)
        .map(|(_, l)| *l)
        .collect();
    report.latency_last_ns = percentiles_of_values(&mut last);
    report.deliveries = result.deliveries;
    report.expected_deliveries = connected.saturating_mul(result.counts.len() as u64);
    report.lost = result
        .counts
        .iter()
        .map(|&c| connected.saturating_sub(u64::from(c)))
        .sum();
    report.duplicated = result
        .counts
        .iter()
        .map(|&c| u64::from(c).saturating_sub(connected))
        .sum();
    report.out_of_order = result.out_of_order;
    report.unexpected = result.unexpected;
    let took = result.last_delivery_ns.saturating_sub(first_ns);
    report.duration_s = seconds(took);
    report.deliveries_per_sec = if took > 0 {
        result.deliveries as f64 / seconds(took)
    } else {
        0.0
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_counted_against_every_connected_subscriber() {
        let result = GroupResult {
            counts: vec![3, 2, 4],
            max_latency_ns: vec![5, 6, 7],
            deliveries: 9,
            out_of_order: 1,
            last_delivery_ns: 2_000_000_000,
            ..GroupResult::default()
        };
        let mut r = Report::default();
        fill_deliveries(&mut r, &result, 3, 1_000_000_000);
        assert_eq!(r.expected_deliveries, 9);
        assert_eq!(r.lost, 1);
        assert_eq!(r.duplicated, 1);
        assert_eq!(r.out_of_order, 1);
        assert_eq!(r.latency_last_ns.max, 7);
        assert!((r.deliveries_per_sec - 9.0).abs() < 1e-9);
        assert_eq!(r.delivery_faults(), 3);
    }
}
