//! Smoke test of `wavecast bench`, the load tool: it runs briefly against a
//! real `wavecast serve` and its JSON report must be complete and show that
//! wavecast lost, duplicated and reordered nothing. No timing assertions:
//! latencies and rates are only checked to be present and consistent.
//!
//! Needs the binary: `cargo build -p wavecast && cargo test -p
//! wavecast-tests --test bench_smoke`.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use wavecast_tests::{binary_path, Server};

/// Every field of a report (`wavecast_bench::report::Report`).
const REPORT_FIELDS: [&str; 32] = [
    "scenario",
    "target",
    "url",
    "subscribers",
    "connected",
    "failed_connections",
    "first_error",
    "workers",
    "handshakes_per_sec",
    "connect_seconds",
    "server_rss_before",
    "server_rss_after",
    "server_bytes_per_connection",
    "publications",
    "payload_bytes",
    "publish_rate",
    "publish_via",
    "latency_delivery_ns",
    "latency_last_ns",
    "deliveries",
    "expected_deliveries",
    "deliveries_per_sec",
    "duration_s",
    "lost",
    "duplicated",
    "out_of_order",
    "unexpected",
    "compression",
    "compressed_connections",
    "json_data",
    "received_bytes_per_delivery",
    "server_cpu_us_per_delivery",
];

fn json_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "wavecast-bench-smoke-{}-{name}.json",
        std::process::id()
    ))
}

/// Runs `wavecast bench ARGS...` and returns its output (the binary is
/// the one the server tests use).
fn bench(args: &[&str]) -> Output {
    Command::new(binary_path())
        .arg("bench")
        .args(args)
        .env_remove("WAVECAST_BENCH_API_KEY")
        .output()
        .expect("cannot run wavecast bench")
}

fn read_report(path: &PathBuf, out: &Output) -> Value {
    assert!(
        out.status.success(),
        "wavecast bench failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(path).expect("bench wrote no JSON report");
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).expect("the JSON report does not parse")
}

fn u(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not an unsigned integer in {report}"))
}

fn assert_complete_fanout(report: &Value, subscribers: u64, publications: u64) {
    for field in REPORT_FIELDS {
        assert!(
            report.get(field).is_some(),
            "report lacks {field}: {report}"
        );
    }
    for field in ["latency_delivery_ns", "latency_last_ns"] {
        let p = &report[field];
        for q in ["p50", "p90", "p99", "max", "count"] {
            assert!(p[q].is_u64(), "{field}.{q} missing: {report}");
        }
        // Percentiles are ordered by definition.
        assert!(
            u(p, "p50") <= u(p, "p90") && u(p, "p90") <= u(p, "p99") && u(p, "p99") <= u(p, "max")
        );
    }
    assert_eq!(report["scenario"], "fanout");
    assert_eq!(report["target"], "wavecast");
    assert_eq!(u(report, "subscribers"), subscribers);
    assert_eq!(u(report, "connected"), subscribers, "{report}");
    assert_eq!(u(report, "failed_connections"), 0);
    assert_eq!(u(report, "publications"), publications);
    // The delivery contract: every subscriber got every publication, once,
    // in order.
    assert_eq!(u(report, "expected_deliveries"), subscribers * publications);
    assert_eq!(
        u(report, "deliveries"),
        subscribers * publications,
        "{report}"
    );
    for field in ["lost", "duplicated", "out_of_order", "unexpected"] {
        assert_eq!(u(report, field), 0, "{field}: {report}");
    }
    // One latency per delivery, one time-to-last per publication.
    assert_eq!(
        u(&report["latency_delivery_ns"], "count"),
        subscribers * publications
    );
    assert_eq!(u(&report["latency_last_ns"], "count"), publications);
    assert!(report["deliveries_per_sec"]
        .as_f64()
        .is_some_and(|x| x > 0.0));
    assert!(report["handshakes_per_sec"]
        .as_f64()
        .is_some_and(|x| x > 0.0));
}

#[test]
fn fanout_over_websocket_loses_nothing_and_reports_every_figure() {
    let server = Server::start(&["--api-key", "k", "--client-publish-rate", "0"]);
    let path = json_path("fanout-ws");
    let out = bench(&[
        "fanout",
        "--url",
        &server.url("/ws"),
        "--subscribers",
        "50",
        "--publications",
        "100",
        "--rate",
        "2000",
        "--json",
        path.to_str().unwrap(),
    ]);
    let report = read_report(&path, &out);
    assert_complete_fanout(&report, 50, 100);
    assert_eq!(report["publish_via"], "ws");
    assert_eq!(report["publish_rate"].as_f64(), Some(2000.0));
    // The human table went to stdout.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("to last subscriber"), "{stdout}");
}

#[test]
fn fanout_over_the_http_api_as_fast_as_acknowledged_loses_nothing() {
    let server = Server::start(&["--api-key", "k", "--client-publish-rate", "0"]);
    let path = json_path("fanout-api");
    let out = bench(&[
        "fanout",
        "--url",
        &format!("ws://{}", server.addr()),
        "--subscribers",
        "50",
        "--publications",
        "100",
        "--max",
        "--publish-via",
        "api",
        "--api-key",
        "k",
        "--json",
        path.to_str().unwrap(),
    ]);
    let report = read_report(&path, &out);
    assert_complete_fanout(&report, 50, 100);
    assert_eq!(report["publish_via"], "api");
    assert!(report["publish_rate"].is_null());
}

#[test]
fn fanout_with_worker_processes_and_source_addresses_merges_their_results() {
    let server = Server::start(&["--client-publish-rate", "0"]);
    let path = json_path("fanout-workers");
    let out = bench(&[
        "fanout",
        "--url",
        &server.url("/ws"),
        "--subscribers",
        "30",
        "--publications",
        "20",
        "--max",
        "--workers",
        "2",
        "--source-addrs",
        "2",
        "--json",
        path.to_str().unwrap(),
    ]);
    let report = read_report(&path, &out);
    assert_complete_fanout(&report, 30, 20);
    assert_eq!(u(&report, "workers"), 2);
}

#[test]
fn connect_with_the_server_pid_reports_memory_per_connection() {
    let server = Server::start(&["--client-publish-rate", "0"]);
    let path = json_path("connect");
    let pid = server.pid().to_string();
    let out = bench(&[
        "connect",
        "--url",
        &server.url("/ws"),
        "--connections",
        "100",
        "--server-pid",
        &pid,
        "--json",
        path.to_str().unwrap(),
    ]);
    let report = read_report(&path, &out);
    assert_eq!(report["scenario"], "connect");
    assert_eq!(u(&report, "connected"), 100, "{report}");
    let before = u(&report, "server_rss_before");
    let after = u(&report, "server_rss_after");
    assert!(before > 0 && after > 0, "{report}");
    let per = report["server_bytes_per_connection"]
        .as_f64()
        .expect("no memory per connection");
    let expected = (after as f64 - before as f64) / 100.0;
    assert!((per - expected).abs() < 1e-6, "{report}");
}

/// `--compression --json-data` against a server with `--compression`:
/// every subscriber negotiates permessage-deflate, nothing is lost, and
/// the bytes on the wire per delivery are the compressed frames' (JSON
/// rows deflate to about a third; above the 1 KiB threshold). The same run
/// without `--compression` receives the whole push. Sizes, not timing.
#[test]
fn fanout_with_compression_negotiates_it_and_counts_compressed_bytes() {
    let server = Server::start(&["--compression", "--client-publish-rate", "0"]);
    let pid = server.pid().to_string();
    let url = server.url("/ws");
    let mut per_delivery = Vec::new();
    for compression in [true, false] {
        let path = json_path(&format!("fanout-deflate-{compression}"));
        let mut args = vec![
            "fanout",
            "--url",
            &url,
            "--subscribers",
            "20",
            "--publications",
            "50",
            "--max",
            "--json-data",
            "--payload",
            "4096",
            "--server-pid",
            &pid,
            "--json",
            path.to_str().unwrap(),
        ];
        if compression {
            args.push("--compression");
        }
        let out = bench(&args);
        let report = read_report(&path, &out);
        assert_complete_fanout(&report, 20, 50);
        assert_eq!(report["compression"], compression);
        assert_eq!(report["json_data"], true);
        let negotiated = if compression { 20 } else { 0 };
        assert_eq!(u(&report, "compressed_connections"), negotiated, "{report}");
        let bytes = report["received_bytes_per_delivery"]
            .as_f64()
            .expect("no bytes per delivery");
        assert!(report["server_cpu_us_per_delivery"].is_f64(), "{report}");
        per_delivery.push(bytes);
    }
    let (on, off) = (per_delivery[0], per_delivery[1]);
    // Uncompressed: the 4096 bytes of data and the push around them.
    assert!(off > 4096.0 && off < 4096.0 + 200.0, "off: {off}");
    assert!(on < off / 2.0 && on > off / 6.0, "on: {on}, off: {off}");
}

#[test]
fn a_non_loopback_url_is_refused_before_connecting() {
    for url in ["ws://10.1.2.3:80/ws", "ws://example.com/ws"] {
        let out = bench(&["connect", "--url", url, "--connections", "1"]);
        assert_eq!(out.status.code(), Some(2), "{url}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("127.x.x.x or localhost"));
    }
}
