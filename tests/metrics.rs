//! `GET /metrics`: the server's figures, encoded by prometheus-client, in
//! the Prometheus text format (or OpenMetrics when asked), checked by a
//! strict line parser; each counter moves by exactly what the test did,
//! and the fan-out histogram counts each publication in its subscriber
//! bucket.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use wavecast_tests::pubsub::*;
use wavecast_tests::{http_exchange, RawClient, Request, Server};

/// One scrape, parsed: every series (`name{label="v",...}`, labels as
/// the server wrote them) with its value, and each family's type.
#[derive(Debug, Default)]
struct Scrape {
    series: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
    text: String,
}

impl Scrape {
    /// Parses a Prometheus text exposition strictly: every line is a
    /// `# HELP`, a `# TYPE` (before its samples, once per family), or a
    /// sample of a declared family with well-formed labels and a number;
    /// histograms have cumulative buckets ending in `+Inf` = `_count`.
    fn parse(text: &str, openmetrics: bool) -> Scrape {
        let mut s = Scrape {
            text: text.to_owned(),
            ..Scrape::default()
        };
        let mut lines: Vec<&str> = text.lines().collect();
        if openmetrics {
            assert_eq!(lines.pop(), Some("# EOF"), "OpenMetrics ends with # EOF");
        }
        let mut helped = std::collections::BTreeSet::new();
        for line in lines {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(helped.insert(name.to_owned()), "HELP twice: {line}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind),
                    "type: {line}"
                );
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                let old = s.types.insert(name.to_owned(), kind.to_owned());
                assert!(old.is_none(), "TYPE twice: {line}");
                continue;
            }
            if openmetrics && line.starts_with("# UNIT ") {
                continue;
            }
            assert!(!line.starts_with('#'), "unknown comment line: {line}");
            let (key, value) = line.rsplit_once(' ').expect("sample: series value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value: {line}")),
            };
            let name = key.split('{').next().unwrap();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "name: {line}"
            );
            if let Some(labels) = key.strip_prefix(name) {
                if !labels.is_empty() {
                    let inner = labels
                        .strip_prefix('{')
                        .and_then(|l| l.strip_suffix('}'))
                        .unwrap_or_else(|| panic!("labels: {line}"));
                    for pair in inner.split(',') {
                        let (k, v) = pair.split_once('=').expect("label k=v");
                        assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                        assert!(v.len() >= 2 && v.starts_with('"') && v.ends_with('"'));
                    }
                }
            }
            assert!(
                family_of(&s.types, name, openmetrics).is_some(),
                "sample of no declared family: {line}"
            );
            let old = s.series.insert(key.to_owned(), value);
            assert!(old.is_none(), "series twice: {line}");
        }
        s.check_histograms();
        s
    }

    /// Every histogram's buckets are cumulative and end at `_count`.
    fn check_histograms(&self) {
        for (name, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            let series: Vec<(String, BTreeMap<String, String>, f64)> = self
                .series
                .iter()
                .map(|(k, v)| {
                    let (n, l) = split_key(k);
                    (n, l, *v)
                })
                .collect();
            let counts: Vec<_> = series
                .iter()
                .filter(|(n, ..)| *n == format!("{name}_count"))
                .collect();
            assert!(!counts.is_empty(), "{name} has no _count");
            for (_, labels, count) in counts {
                let mut buckets: Vec<(f64, f64)> = series
                    .iter()
                    .filter(|(n, ..)| *n == format!("{name}_bucket"))
                    .filter_map(|(_, l, v)| {
                        let mut l = l.clone();
                        let le = l.remove("le")?;
                        (l == *labels).then_some(())?;
                        let le = if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().ok()?
                        };
                        Some((le, *v))
                    })
                    .collect();
                buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
                assert_eq!(buckets.len(), 17, "{name}{labels:?}: {buckets:?}");
                assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative");
                assert_eq!(buckets.last(), Some(&(f64::INFINITY, *count)));
            }
        }
    }

    /// A series' value; panics (with the page) if it is missing.
    fn get(&self, key: &str) -> f64 {
        *self
            .series
            .get(key)
            .unwrap_or_else(|| panic!("no series {key} in:\n{}", self.text))
    }

    /// A series' value, 0 if absent (a labelled series appears once it
    /// has a value).
    fn or_zero(&self, key: &str) -> f64 {
        self.series.get(key).copied().unwrap_or(0.0)
    }
}

/// A series key's name and labels.
fn split_key(key: &str) -> (String, BTreeMap<String, String>) {
    let (name, rest) = key.split_once('{').unwrap_or((key, ""));
    let labels = rest
        .trim_end_matches('}')
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').expect("label k=v");
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect();
    (name.to_owned(), labels)
}

/// The declared family a sample belongs to.
fn family_of<'a>(
    types: &'a BTreeMap<String, String>,
    name: &str,
    openmetrics: bool,
) -> Option<&'a str> {
    if types.contains_key(name) {
        return types.get_key_value(name).map(|(k, _)| k.as_str());
    }
    for suffix in ["_bucket", "_sum", "_count", "_total", "_created"] {
        if let Some(base) = name.strip_suffix(suffix) {
            match types.get_key_value(base) {
                Some((k, t)) if t == "histogram" && suffix != "_total" => return Some(k),
                Some((k, t)) if t == "counter" && openmetrics && suffix == "_total" => {
                    return Some(k)
                }
                _ => {}
            }
        }
    }
    None
}

async fn scrape(addr: std::net::SocketAddr) -> Scrape {
    let r = http(addr, &Request::get(addr, "/metrics").to_bytes()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Scrape::parse(&r.text(), false)
}

#[test]
fn metrics_count_connections_and_memory() {
    let server = Server::start(&["--max-connections", "77"]);
    let get = |_: ()| {
        let resp = http_exchange(
            server.addr(),
            &Request::get(server.addr(), "/metrics").to_bytes(),
            Duration::from_secs(5),
        )
        .expect("metrics answered");
        assert_eq!(resp.status, 200);
        assert!(resp
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"));
        Scrape::parse(&String::from_utf8(resp.body.clone()).expect("text"), false)
    };
    let m = get(());
    assert_eq!(m.get("wavecast_connections"), 0.0);
    assert_eq!(m.get("wavecast_max_connections"), 77.0);
    assert_eq!(m.types["wavecast_connections"], "gauge");
    let _a = RawClient::connect(server.addr(), "/ws");
    let _b = RawClient::connect(server.addr(), "/ws");
    // The connections are registered by the time the 101 is read, but give
    // the shards a bounded moment anyway.
    let mut seen = None;
    for _ in 0..50 {
        seen = get(()).series.get("wavecast_connections").copied();
        if seen == Some(2.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen, Some(2.0));
    let m = get(());
    assert!(m.get("wavecast_resident_memory_bytes") > 0.0);
    assert!(m.get("wavecast_resident_memory_per_connection_bytes") > 0.0);
}

#[tokio::test]
async fn openmetrics_is_served_when_asked() {
    let ts = TestServer::start(&[]);
    let addr = ts.addr();
    let req = Request::get(addr, "/metrics").set(
        "Accept",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    let r = http(addr, &req.to_bytes()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let m = Scrape::parse(&r.text(), true);
    assert_eq!(m.types["wavecast_deliveries"], "counter");
    assert_eq!(m.get("wavecast_deliveries_total"), 0.0);
}

/// The counter names the issue lists, and the histograms: present on a
/// fresh server (unlabelled ones at 0).
const COUNTERS: [&str; 6] = [
    "wavecast_slow_consumer_closes_total",
    "wavecast_deliveries_total",
    "wavecast_gaps_total",
    "wavecast_backbone_request_errors_total",
    "wavecast_backbone_link_errors_total",
    "wavecast_backbone_reconnects_total",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counter_moves_by_what_happened() {
    let ts = TestServer::start(&[
        "--workers",
        "2",
        "--max-queued-bytes",
        "65536",
        "--heartbeat-interval",
        "1h",
    ]);
    let addr = ts.addr();
    let before = scrape(addr).await;
    for name in COUNTERS {
        assert_eq!(before.types[name], "counter");
        assert_eq!(before.get(name), 0.0, "{name}");
    }
    for (name, labels) in [
        ("wavecast_publications_total", r#"{source="api"}"#),
        ("wavecast_publications_total", r#"{source="client"}"#),
        ("wavecast_recoveries_total", r#"{outcome="recovered"}"#),
        ("wavecast_recoveries_total", r#"{outcome="not_recovered"}"#),
        ("wavecast_commands_total", r#"{command="subscribe"}"#),
        (
            "wavecast_command_results_total",
            r#"{command="subscribe",result="0"}"#,
        ),
        ("wavecast_connections_accepted_total", r#"{endpoint="ws"}"#),
        ("wavecast_connections_accepted_total", r#"{endpoint="sse"}"#),
    ] {
        assert_eq!(before.get(&format!("{name}{labels}")), 0.0);
    }
    assert_eq!(before.get("wavecast_heartbeat_interval_seconds"), 3600.0);
    assert!(before.get("wavecast_heartbeat_timeout_seconds") > 0.0);
    assert_eq!(before.get("wavecast_workers"), 2.0);
    for h in [
        "wavecast_fanout_latency_seconds",
        "wavecast_api_publish_latency_seconds",
        "wavecast_backbone_round_trip_seconds",
    ] {
        assert_eq!(before.types[h], "histogram");
    }
    for bucket in ["1-10", "10-100", "100-1k", "1k-10k", "10k-100k", "100k+"] {
        let key = format!("wavecast_fanout_latency_seconds_count{{subscribers=\"{bucket}\"}}");
        assert_eq!(before.get(&key), 0.0);
    }

    // Two refused handshakes: an upgrade to no endpoint (404), an SSE
    // request without a channel (400).
    let refused = tokio::task::spawn_blocking(move || {
        let a = RawClient::handshake(addr, &Request::upgrade(addr, "/nope")).unwrap_err();
        let b = RawClient::handshake(addr, &Request::get(addr, "/sse")).unwrap_err();
        (a.status, b.status)
    })
    .await
    .unwrap();
    assert_eq!(refused, (404, 400));

    // Three clients; two subscribe to `m`.
    let mut a = ts.client(Enc::Json).await;
    let mut b = ts.client(Enc::Json).await;
    let mut c = ts.client(Enc::MsgPack).await;
    a.subscribe("m").await;
    let start = b.subscribe("m").await;
    let epoch = start["epoch"].as_str().unwrap().to_owned();
    // Two API publications and one client publication, each delivered to
    // both subscribers.
    ts.api_publish("m", &json!(1)).await;
    ts.api_publish("m", &json!(2)).await;
    c.publish("m", &json!(3)).await;
    for s in [&mut a, &mut b] {
        for _ in 0..3 {
            s.next_pub("m").await;
        }
    }
    // An error reply: 106, not subscribed.
    assert_eq!(
        c.err("unsubscribe", json!({"channel": "zzz"})).await,
        E_NOT_SUBSCRIBED
    );
    // Recovery: b resubscribes from its start (recovered), and subscribes
    // to `n` from an epoch that never was (not recovered).
    b.ok("unsubscribe", json!({"channel": "m"})).await;
    let r = b
        .ok(
            "subscribe",
            json!({"channel": "m", "recover": {"epoch": epoch, "offset": start["offset"]}}),
        )
        .await;
    assert_eq!(r["recovered"], true, "{r}");
    let r = b
        .ok(
            "subscribe",
            json!({"channel": "n", "recover": {"epoch": "nope", "offset": 3}}),
        )
        .await;
    assert_eq!(r["recovered"], false, "{r}");
    // a closes normally (1000), and waits for the server's close frame.
    a.send_message(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    })))
    .await;
    assert_eq!(a.close_code().await, Some(1000));

    let after = eventually(
        Duration::from_secs(10),
        "a's close counted",
        || async move {
            let m = scrape(addr).await;
            (m.or_zero(r#"wavecast_connections_closed_total{code="1000"}"#) == 1.0).then_some(m)
        },
    )
    .await;
    let delta = |key: &str| after.or_zero(key) - before.or_zero(key);
    assert_eq!(
        delta(r#"wavecast_handshakes_refused_total{status="404"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"wavecast_handshakes_refused_total{status="400"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"wavecast_connections_accepted_total{endpoint="ws"}"#),
        3.0
    );
    assert_eq!(
        delta(r#"wavecast_commands_total{command="subscribe"}"#),
        4.0
    );
    assert_eq!(
        delta(r#"wavecast_commands_total{command="unsubscribe"}"#),
        2.0
    );
    assert_eq!(delta(r#"wavecast_commands_total{command="publish"}"#), 1.0);
    // Replies by command and result: 4 subscribes, 1 unsubscribe and 1
    // publish succeeded; the other unsubscribe got 106.
    let result = |command: &str, result: &str| {
        delta(&format!(
            "wavecast_command_results_total{{command=\"{command}\",result=\"{result}\"}}"
        ))
    };
    assert_eq!(result("subscribe", "0"), 4.0);
    assert_eq!(result("unsubscribe", "0"), 1.0);
    assert_eq!(result("unsubscribe", "106"), 1.0);
    assert_eq!(result("publish", "0"), 1.0);
    assert_eq!(result("history", "0"), 0.0);
    assert_eq!(delta(r#"wavecast_publications_total{source="api"}"#), 2.0);
    assert_eq!(
        delta(r#"wavecast_publications_total{source="client"}"#),
        1.0
    );
    assert_eq!(delta("wavecast_deliveries_total"), 6.0);
    assert_eq!(
        delta(r#"wavecast_recoveries_total{outcome="recovered"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"wavecast_recoveries_total{outcome="not_recovered"}"#),
        1.0
    );
    assert!(delta("wavecast_bytes_read_total") > 0.0);
    assert!(delta("wavecast_bytes_written_total") > 0.0);
    assert_eq!(delta("wavecast_gaps_total"), 0.0);
    assert_eq!(delta("wavecast_slow_consumer_closes_total"), 0.0);
    // Three publications to a channel with 2 local subscribers (both on
    // one shard or one on each: a bucket of 1-10 either way).
    assert_eq!(
        delta(r#"wavecast_fanout_latency_seconds_count{subscribers="1-10"}"#),
        3.0 * shards_of_m(&after, &before)
    );
    assert_eq!(
        delta(r#"wavecast_fanout_latency_seconds_count{subscribers="10-100"}"#),
        0.0
    );
    assert_eq!(delta("wavecast_api_publish_latency_seconds_count"), 2.0);
    // Backbone requests: 4 subscribes and 1 publish.
    assert_eq!(delta("wavecast_backbone_round_trip_seconds_count"), 5.0);
    assert!(delta("wavecast_backbone_round_trip_seconds_sum") > 0.0);
    assert!(after.get("wavecast_resident_memory_per_connection_bytes") > 0.0);
    assert_eq!(after.get("wavecast_connections"), 2.0);
    drop((b, c));

    // A slow consumer: subscribed, never reading, sent more than the
    // kernel and a 64 KiB queue hold. Bounded: at most 2,000 publications
    // of 60 KiB (120 MB) before the test gives up.
    let slow = tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(addr, "/ws");
        let cmd = json!({"id": 1, "subscribe": {"channel": "slow"}}).to_string();
        c.send_frame(true, wavecast_core::frame::OpCode::Text, cmd.as_bytes())
            .unwrap();
        c
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "slow subscribed", || async move {
        let r = api(addr, Some(KEY), "/api/channels", b"{}").await.json();
        (r["channels"]["slow"]["subscribers"] == 1).then_some(())
    })
    .await;
    let pad = "x".repeat(60 * 1024);
    let mut conn = ApiConn::open(addr).await;
    let mut cut = false;
    for i in 0..2000 {
        conn.post_ok("/api/publish", &json!({"channel": "slow", "data": pad}))
            .await;
        if i % 20 == 19
            && scrape(addr)
                .await
                .get("wavecast_slow_consumer_closes_total")
                == 1.0
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "the slow consumer was not cut");
    let end = scrape(addr).await;
    assert_eq!(end.get("wavecast_slow_consumer_closes_total"), 1.0);
    assert_eq!(
        end.or_zero(r#"wavecast_connections_closed_total{code="4002"}"#),
        1.0,
        "{}",
        end.text
    );
    drop(slow);
}

/// On how many shards `m` had subscribers: each shard observes its own
/// fan-out, so a publication counts once per shard that delivered it.
fn shards_of_m(after: &Scrape, before: &Scrape) -> f64 {
    let d = |k: &str| after.or_zero(k) - before.or_zero(k);
    let all: f64 = ["1-10", "10-100", "100-1k", "1k-10k", "10k-100k", "100k+"]
        .iter()
        .map(|b| {
            d(&format!(
                "wavecast_fanout_latency_seconds_count{{subscribers=\"{b}\"}}"
            ))
        })
        .sum();
    // 3 publications on 1 or 2 shards.
    assert!(all == 3.0 || all == 6.0, "fan-out observations: {all}");
    all / 3.0
}

/// Twelve subscribers of one channel on one shard: each publication is
/// observed once, in the 10-100 bucket, and nowhere else.
#[tokio::test]
async fn fanout_latency_is_bucketed_by_subscribers() {
    let ts = TestServer::start(&["--workers", "1"]);
    let addr = ts.addr();
    let mut subs = Vec::new();
    for _ in 0..12 {
        let mut c = ts.client(Enc::Json).await;
        c.subscribe("wide").await;
        subs.push(c);
    }
    let before = scrape(addr).await;
    for i in 0..2 {
        ts.api_publish("wide", &json!(i)).await;
    }
    for c in &mut subs {
        for _ in 0..2 {
            c.next_pub("wide").await;
        }
    }
    let after = scrape(addr).await;
    let count = |m: &Scrape, b: &str| {
        m.or_zero(&format!(
            "wavecast_fanout_latency_seconds_count{{subscribers=\"{b}\"}}"
        ))
    };
    assert_eq!(count(&after, "10-100") - count(&before, "10-100"), 2.0);
    assert_eq!(count(&after, "1-10") - count(&before, "1-10"), 0.0);
    assert_eq!(
        after.get("wavecast_deliveries_total") - before.get("wavecast_deliveries_total"),
        24.0
    );
    // The observed latencies are real durations: positive, and under the
    // test's own bound.
    let sum = after.get(r#"wavecast_fanout_latency_seconds_sum{subscribers="10-100"}"#)
        - before.get(r#"wavecast_fanout_latency_seconds_sum{subscribers="10-100"}"#);
    assert!(sum > 0.0 && sum < 10.0, "{sum}");
}
