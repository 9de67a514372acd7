//! `GET /status` and `GET /status/data`: off by default, behind HTTP
//! Basic credentials (the API key, or `--status-password`), failed logins
//! throttled per client address; the data names every figure the page
//! shows, and they move under load (connections, publications, closes
//! with their code and user in the last-closed list).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wavecast_tests::pubsub::*;
use wavecast_tests::{binary_path, parse_response_bytes, refuses_to_start};

const SECRET: &str = "status-test-secret-0123456789abcdef";

fn basic(password: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("ops:{password}"));
    format!("Basic {b}")
}

/// `GET path` from the source address `from` (any 127.x address is
/// loopback on Linux), with `authorization` if given.
async fn get_from(
    addr: SocketAddr,
    from: [u8; 4],
    path: &str,
    authorization: Option<&str>,
) -> HttpReply {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback source address");
    let mut stream = socket.connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(a) = authorization {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    parse_response_bytes(&buf)
}

async fn get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> HttpReply {
    get_from(addr, [127, 0, 0, 1], path, authorization).await
}

async fn data(addr: SocketAddr, password: &str) -> Value {
    let r = get(addr, "/status/data", Some(&basic(password))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["servers"].as_array().map(Vec::len), Some(1), "{v}");
    v["servers"][0].clone()
}

#[tokio::test]
async fn the_page_is_off_by_default() {
    let s = TestServer::start(&[]);
    for path in ["/status", "/status/data"] {
        let r = get(s.addr(), path, Some(&basic(KEY))).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
}

#[test]
fn turning_it_on_without_a_credential_is_refused_at_startup() {
    refuses_to_start(
        &["--listen", "127.0.0.1:0", "--status"],
        &["status", "status_password", "api_key"],
    );
}

#[tokio::test]
async fn it_takes_the_api_key_or_the_password_and_nothing_else() {
    let s = TestServer::start(&["--status"]);
    // The startup lines say it is on, and with which credential.
    eventually(Duration::from_secs(10), "the startup line", || async {
        s.server
            .stderr()
            .contains("status page: on (/status, HTTP Basic with the API key as password)")
            .then_some(())
    })
    .await;
    let r = get(s.addr(), "/status", None).await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|h| h.starts_with("Basic ")),
        "a browser must be asked for credentials"
    );
    assert_eq!(
        get(s.addr(), "/status", Some(&basic("wrong"))).await.status,
        401
    );
    // The API's own scheme is not a login to the page.
    let apikey = format!("apikey {KEY}");
    assert_eq!(get(s.addr(), "/status", Some(&apikey)).await.status, 401);
    let r = get(s.addr(), "/status", Some(&basic(KEY))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r
        .header("content-security-policy")
        .is_some_and(|c| c.contains("default-src 'none'")));
    let page = r.text();
    assert!(page.contains("/status/data") && page.contains("<svg"));
    assert!(
        !page.contains("src=\"http"),
        "the page loads nothing from elsewhere"
    );
    // Read-only.
    let post = http(
        s.addr(),
        format!(
            "POST /status/data HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            basic(KEY)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(post.status, 405);

    let s = TestServer::start(&["--status", "--status-password", "hunter2-but-longer"]);
    assert_eq!(
        get(s.addr(), "/status/data", Some(&basic("hunter2-but-longer")))
            .await
            .status,
        200
    );
    // With a password of its own, the API key is not the page's.
    assert_eq!(
        get(s.addr(), "/status/data", Some(&basic(KEY)))
            .await
            .status,
        401
    );
    // A password alone (no API key) is enough to start.
    let alone = wavecast_tests::Server::start(&["--status", "--status-password", "pw-only"]);
    assert_eq!(
        get(alone.addr(), "/status", Some(&basic("pw-only")))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address() {
    let s = TestServer::start(&["--status"]);
    let from = [127, 0, 0, 7];
    // No credentials at all (a browser's first request) is not a guess.
    for _ in 0..8 {
        let r = get_from(s.addr(), from, "/status", None).await;
        assert_eq!(r.status, 401);
    }
    for n in 0..5 {
        let r = get_from(s.addr(), from, "/status", Some(&basic("guess"))).await;
        assert_eq!(r.status, 401, "attempt {n}");
    }
    let r = get_from(s.addr(), from, "/status", Some(&basic("guess"))).await;
    assert_eq!(r.status, 429);
    let wait: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    // The right password waits too: guessing does not go on.
    let r = get_from(s.addr(), from, "/status", Some(&basic(KEY))).await;
    assert_eq!(r.status, 429);
    // Another address is not held up.
    let r = get_from(s.addr(), [127, 0, 0, 8], "/status", Some(&basic(KEY))).await;
    assert_eq!(r.status, 200);
}

fn mint(user: &str) -> String {
    let out = Command::new(binary_path())
        .args([
            "token",
            "--user",
            user,
            "--ttl",
            "1h",
            "--token-hmac-secret",
            SECRET,
        ])
        .output()
        .expect("run wavecast token");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn the_figures_are_all_there_and_move_under_load() {
    let s = TestServer::start(&["--status", "--token-hmac-secret", SECRET]);
    let before = data(s.addr(), KEY).await;
    let m = &before["metrics"];
    for key in [
        "connections",
        "max_connections",
        "memory_per_connection_bytes",
        "resident_memory_bytes",
        "heartbeat_interval_seconds",
        "heartbeat_timeout_seconds",
        "queued_bytes",
        "uptime_seconds",
        "api_publications",
    ] {
        assert!(m.get(key).is_some(), "no metrics.{key} in {m}");
    }
    for key in [
        "publications",
        "deliveries",
        "closed",
        "slow_consumer_closes",
    ] {
        assert!(m["counters"].get(key).is_some(), "no counters.{key}");
    }
    assert_eq!(m["heartbeat_interval_seconds"], 25.0);
    let fanout = before["fanout"].as_array().expect("fanout");
    let labels: Vec<&str> = fanout
        .iter()
        .map(|b| b["subscribers"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["1-10", "10-100", "100-1k", "1k-10k", "10k-100k", "100k+"]
    );
    for key in [
        "instance",
        "version",
        "time_ms",
        "channels_count",
        "channels_top",
        "queued_top",
        "closed",
    ] {
        assert!(before.get(key).is_some(), "no {key}");
    }
    assert_eq!(before["backbone"]["kind"], "memory");
    assert_eq!(before["backbone"]["ready"], true);
    assert!(before["backbone"].get("round_trip_seconds").is_some());
    assert_eq!(before["version"], env!("CARGO_PKG_VERSION"));

    // Load: four users, three on one channel, API publications.
    let user = |name: &'static str| {
        let addr = s.addr();
        async move {
            let mut c = Client::connect(addr, Enc::Json).await;
            c.ok("connect", json!({"token": mint(name)})).await;
            c
        }
    };
    let mut subs = Vec::new();
    for name in ["bob", "carol"] {
        let mut c = user(name).await;
        c.subscribe("news").await;
        subs.push(c);
    }
    let mut alice = user("alice").await;
    alice.subscribe("news").await;
    let mut lone = user("dave").await;
    lone.subscribe("quiet").await;
    for n in 0..5 {
        s.api_publish("news", &json!({"n": n})).await;
    }
    for c in subs.iter_mut().chain([&mut alice]) {
        for _ in 0..5 {
            c.next_pub("news").await;
        }
    }
    let during = data(s.addr(), KEY).await;
    let m = &during["metrics"];
    assert_eq!(m["connections"], 4);
    assert!(m["memory_per_connection_bytes"].as_f64().unwrap() > 0.0);
    assert_eq!(m["api_publications"], 5);
    assert_eq!(m["counters"]["deliveries"], 15);
    assert!(
        during["fanout"][0]["count"].as_u64().unwrap() >= 5,
        "{}",
        during["fanout"]
    );
    assert!(during["fanout"][0]["p99_seconds"].as_f64().is_some());
    // The subscribes went to the backbone and back: a round trip is shown.
    let rt = during["backbone"]["round_trip_seconds"].as_f64();
    assert!(rt.is_some_and(|r| r > 0.0), "{}", during["backbone"]);
    assert_eq!(during["channels_count"], 2);
    assert_eq!(
        during["channels_top"][0],
        json!({"name": "news", "value": 3})
    );
    assert_eq!(
        during["channels_top"][1],
        json!({"name": "quiet", "value": 1})
    );
    assert!(during["time_ms"].as_u64() > before["time_ms"].as_u64());

    // Closes: alice's by the client, carol's dropped without a
    // close frame (1006).
    alice.close().await;
    drop(subs.pop().unwrap());
    let closed = eventually(Duration::from_secs(10), "two closes listed", || async {
        let d = data(s.addr(), KEY).await;
        let list = d["closed"].as_array().unwrap().clone();
        (list.len() >= 2).then_some((d, list))
    })
    .await;
    let (after, list) = closed;
    let by_alice = list
        .iter()
        .find(|c| c["user"] == "alice")
        .unwrap_or_else(|| panic!("alice's close not listed: {list:?}"));
    // The test client closes without a code: 1005 ("no status").
    assert_eq!(by_alice["code"], 1005);
    assert_eq!(by_alice["endpoint"], "ws");
    assert!(by_alice["client"].is_string() && by_alice["cause"].is_string());
    assert!(by_alice["duration_ms"].is_u64() && by_alice["at_ms"].is_u64());
    let by_carol = list
        .iter()
        .find(|c| c["user"] == "carol")
        .unwrap_or_else(|| panic!("carol's close not listed: {list:?}"));
    assert_eq!(by_carol["code"], 1006);
    assert_eq!(after["metrics"]["counters"]["closed"]["1005"], 1);
    assert_eq!(after["metrics"]["counters"]["closed"]["1006"], 1);
    assert_eq!(after["metrics"]["connections"], 2);
}

/// `/status/data` of the servers of a cluster, asked of `addr`.
async fn cluster_data(addr: SocketAddr) -> Value {
    let r = get(addr, "/status/data", Some(&basic(KEY))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[tokio::test]
async fn in_a_cluster_every_server_is_shown_and_a_silent_one_is_counted_missing() {
    let redis = wavecast_tests::redis::Redis::start();
    let url = redis.url();
    let a = TestServer::start(&["--status", "--redis", &url]);
    let b = TestServer::start(&["--status", "--redis", &url]);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(a.client(Enc::Json).await);
    }
    held.push(b.client(Enc::Json).await);
    let d = eventually(Duration::from_secs(10), "both servers listed", || async {
        let d = cluster_data(a.addr()).await;
        (d["servers"].as_array().map(Vec::len) == Some(2)).then_some(d)
    })
    .await;
    assert_eq!(
        (d["asked"].as_u64(), d["missing"].as_u64()),
        (Some(2), Some(0))
    );
    let mut connections: Vec<(String, u64)> = d["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["backbone"]["kind"], "redis");
            (
                s["instance"].as_str().unwrap().to_owned(),
                s["metrics"]["connections"].as_u64().unwrap(),
            )
        })
        .collect();
    connections.sort_by_key(|(_, n)| *n);
    assert_ne!(
        connections[0].0, connections[1].0,
        "two servers, two instances"
    );
    assert_eq!((connections[0].1, connections[1].1), (1, 2));

    // A server that stops answering (SIGSTOP) is counted as missing once
    // the control bound has passed; the page still answers.
    b.server.signal(libc::SIGSTOP);
    let d = cluster_data(a.addr()).await;
    b.server.signal(libc::SIGCONT);
    assert_eq!(d["servers"].as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(
        (d["asked"].as_u64(), d["missing"].as_u64()),
        (Some(2), Some(1))
    );
    drop(held);
}
