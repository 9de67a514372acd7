//! Multi-server integration tests: several real `wavecast` processes that
//! share one real `redis-server` (the Redis backbone, `--redis URL`).
//!
//! Every test starts its own redis-server and servers on free ports and
//! stops them by the PIDs it started (never a fixed port, never a shared
//! Redis). What they check is the delivery contract across servers
//! (docs/PROTOCOL.md): one order per channel for every subscriber on every
//! server, no duplicates, and no silent gap across a Redis restart or a
//! server crash; that a crashed server's clients leave presence; and that
//! the API's `disconnect` and `channels` reach every server of the cluster.
//!
//! Needs `redis-server` on the PATH (scripts/test installs it) and the
//! binary: `cargo build -p wavecast && cargo test -p wavecast-tests --test
//! cluster`.
//!
//! Long because every test shares one harness (Redis, several servers,
//! nginx in front, started and stopped by PID) that lives here, beside the
//! tests that use it; each test stands alone.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wavecast_tests::nginx::Nginx;
use wavecast_tests::pubsub::*;

// ---------------------------------------------------------------------------
// redis-server

/// A `redis-server` process on 127.0.0.1 and a free port, without
/// persistence (a restart loses everything, as a crash of a cache would).
/// Dropping it kills the process by the PID it was started with.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Keep data across restarts (append-only file, fsync on every write).
    persist: bool,
}

/// A port that was free a moment ago (bound to port 0, then released).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// Starts redis-server on a free port.
    fn start() -> RedisServer {
        let mut r = RedisServer::unstarted();
        r.launch();
        r
    }

    /// Picks a free port for a redis-server that [`RedisServer::launch`]
    /// starts later.
    fn unstarted() -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "wavecast-cluster-redis-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("create redis dir");
        RedisServer {
            child: None,
            port: free_port(),
            dir,
            persist: false,
        }
    }

    /// Starts the process on `self.port` and waits until it answers PING.
    fn launch(&mut self) {
        assert!(self.child.is_none(), "redis-server is running already");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", if self.persist { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (scripts/test does)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on port {} within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// How many connections subscribe to the pub/sub `topic`
    /// (`PUBSUB NUMSUB`, through redis-cli).
    fn numsub(&self, topic: &str) -> u64 {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "PUBSUB", "NUMSUB", topic])
            .output()
            .expect("run redis-cli");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected PUBSUB NUMSUB answer {text:?}"))
    }

    /// SIGKILLs the process (by its PID) and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// Error code of docs/PROTOCOL.md: the backbone is unavailable, retry.
const E_NOT_AVAILABLE: u64 = 108;

/// Lease of presence entries for the test servers: short, so a crashed
/// server's clients leave within the test's bounds.
const PRESENCE_TTL: &str = "3s";

/// A wavecast server with the test namespaces (wavecast_tests::pubsub::CONFIG) on
/// the given Redis, with two shards so that delivery crosses shards too.
fn cluster_server(redis: &RedisServer) -> TestServer {
    cluster_server_with_ttl(redis, PRESENCE_TTL)
}

/// [`cluster_server`] with another presence lease.
fn cluster_server_with_ttl(redis: &RedisServer, presence_ttl: &str) -> TestServer {
    let url = redis.url();
    TestServer::start(&[
        "--redis",
        &url,
        "--redis-presence-ttl",
        presence_ttl,
        "--workers",
        "2",
    ])
}

/// Waits until `/readyz` answers 200 (the server's Redis link is up).
async fn wait_ready(server: &TestServer) {
    wait_readyz(server.addr(), 200, "the server reports ready").await;
}

/// The status `/readyz` answers now.
async fn readyz(addr: SocketAddr) -> u16 {
    http(
        addr,
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .status
}

/// Waits until `/readyz` answers `status` (503 while Redis is down).
async fn wait_readyz(addr: SocketAddr, status: u16, what: &str) {
    eventually(T, what, || async move {
        (readyz(addr).await == status).then_some(())
    })
    .await;
}

/// Publishes through the API, retrying while the backbone is unavailable
/// (503). Returns the (epoch, offset) of the acknowledged publication.
async fn api_publish_retry(addr: SocketAddr, channel: &str, data: &Value) -> (String, u64) {
    let body = json!({"channel": channel, "data": data}).to_string();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let r = api(addr, Some(KEY), "/api/publish", body.as_bytes()).await;
        if r.status == 200 {
            let v = r.json();
            let epoch = v["epoch"].as_str().expect("epoch").to_owned();
            let offset = v["offset"].as_u64().expect("offset");
            return (epoch, offset);
        }
        assert_eq!(r.status, 503, "publish failed otherwise: {}", r.text());
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backbone stayed unavailable for {T:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collects `n` publications of `channel` (asserting nothing else
/// arrives but join/leave pushes, which are skipped): their offsets and
/// data, in arrival order.
async fn collect(client: &mut Client, channel: &str, n: usize) -> Vec<(u64, Value)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let p = client.next_push().await;
        assert_eq!(
            p["channel"].as_str(),
            Some(channel),
            "push of another channel: {p}"
        );
        if p.get("join").is_some() || p.get("leave").is_some() {
            continue;
        }
        let publication = &p["pub"];
        let offset = publication["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("expected a publication push, got {p}"));
        got.push((offset, publication["data"].clone()));
    }
    got
}

// ---------------------------------------------------------------------------
// Tests

/// Subscribers on three servers see the publications of clients on two
/// servers (publishing at the same time) and of the HTTP API on a third in
/// one order: offsets 1..=N without gap or duplicate, and the same data at
/// each offset everywhere; each publisher's own publications keep their
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_on_every_server_see_one_order() {
    let redis = RedisServer::start();
    let servers: Vec<TestServer> = (0..3).map(|_| cluster_server(&redis)).collect();
    for s in &servers {
        wait_ready(s).await;
    }
    let ch = "cluster-order";
    let mut subs = Vec::new();
    let mut epochs = BTreeSet::new();
    for s in &servers {
        for enc in [Enc::Json, Enc::MsgPack] {
            let mut c = s.client(enc).await;
            let r = c.subscribe(ch).await;
            assert_eq!(r["offset"], 0, "a new channel starts at 0: {r}");
            epochs.insert(r["epoch"].as_str().expect("epoch").to_owned());
            subs.push(c);
        }
    }
    assert_eq!(epochs.len(), 1, "every server agrees on the epoch");

    const PER: u64 = 20;
    let mut pub_a = servers[0].client(Enc::Json).await;
    let mut pub_c = servers[2].client(Enc::MsgPack).await;
    let api_addr = servers[1].addr();
    let (offs_a, offs_c, offs_api) = tokio::join!(
        async {
            let mut offs = Vec::new();
            for i in 0..PER {
                offs.push(pub_a.publish(ch, &json!({"from": "a", "i": i})).await);
            }
            offs
        },
        async {
            let mut offs = Vec::new();
            for i in 0..PER {
                offs.push(pub_c.publish(ch, &json!({"from": "c", "i": i})).await);
            }
            offs
        },
        async {
            let mut offs = Vec::new();
            for i in 0..PER {
                let (_, off) =
                    api_publish_retry(api_addr, ch, &json!({"from": "api", "i": i})).await;
                offs.push(off);
            }
            offs
        },
    );
    let n = usize::try_from(3 * PER).expect("small");
    let mut all: BTreeSet<u64> = BTreeSet::new();
    for offs in [&offs_a, &offs_c, &offs_api] {
        assert!(
            offs.windows(2).all(|w| w[0] < w[1]),
            "one publisher's offsets grow: {offs:?}"
        );
        all.extend(offs.iter().copied());
    }
    assert_eq!(
        all,
        (1..=3 * PER).collect(),
        "every publication got its own offset"
    );

    let mut reference: Option<Vec<(u64, Value)>> = None;
    for (k, c) in subs.iter_mut().enumerate() {
        let got = collect(c, ch, n).await;
        let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (1..=3 * PER).collect::<Vec<_>>(),
            "subscriber {k}: offsets in order, no gap, no duplicate"
        );
        // The data at each offset is what its publisher sent there.
        for (o, d) in &got {
            let from = d["from"].as_str().expect("from");
            let i = usize::try_from(d["i"].as_u64().expect("i")).expect("small");
            let acked = match from {
                "a" => offs_a[i],
                "c" => offs_c[i],
                _ => offs_api[i],
            };
            assert_eq!(
                *o, acked,
                "subscriber {k}: {d} arrived at the offset its publisher was told"
            );
        }
        match &reference {
            None => reference = Some(got),
            Some(r) => assert_eq!(&got, r, "subscriber {k} saw another order"),
        }
    }
    // Nothing more: no duplicate arrives late.
    let last = pub_a.publish(ch, &json!("end")).await;
    for c in &mut subs {
        assert_eq!(
            c.next_pub(ch).await,
            (last, json!("end")),
            "the next publication follows directly"
        );
    }
}

/// What one subscriber saw across a Redis restart.
#[derive(Debug, Default)]
struct Log {
    /// (epoch, offset) -> data, as received (live or recovered).
    got: BTreeMap<(String, u64), Value>,
    /// Gap signals received (unsubscribe pushes with code 2500).
    told: usize,
    /// The position the subscription (re)started from in the last epoch.
    start: (String, u64),
}

/// Reads a subscriber until the publication with data `{"final": true}`,
/// checking offset order within each epoch; on an `unsubscribe` push with
/// code 2500 it resubscribes with recover from its last position (retrying
/// while the backbone is unavailable).
async fn follow(mut c: Client, ch: &str, first: Value) -> Log {
    let mut log = Log::default();
    let mut pos = (
        first["epoch"].as_str().expect("epoch").to_owned(),
        first["offset"].as_u64().expect("offset"),
    );
    log.start = pos.clone();
    loop {
        let p = c.next_push().await;
        assert_eq!(
            p["channel"].as_str(),
            Some(ch),
            "push of another channel: {p}"
        );
        if let Some(publication) = p.get("pub") {
            let offset = publication["offset"].as_u64().expect("offset");
            assert_eq!(
                offset,
                pos.1 + 1,
                "live publications come in offset order without gap or duplicate (at {pos:?}): {p}"
            );
            pos.1 = offset;
            let data = publication["data"].clone();
            let fin = data.get("final").is_some();
            log.got.insert(pos.clone(), data);
            if fin {
                return log;
            }
        } else if let Some(u) = p.get("unsubscribe") {
            assert_eq!(u["code"], 2500, "only a gap may end the subscription: {p}");
            log.told += 1;
            let deadline = tokio::time::Instant::now() + T;
            let r = loop {
                let r = c
                    .command(
                        "subscribe",
                        json!({"channel": ch, "recover": {"epoch": pos.0, "offset": pos.1}}),
                    )
                    .await;
                if r.get("subscribe").is_some() {
                    break r["subscribe"].clone();
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot resubscribe: {r}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let epoch = r["epoch"].as_str().expect("epoch").to_owned();
            if r["recovered"] == true {
                assert_eq!(epoch, pos.0, "a recovery continues the same epoch: {r}");
                for publication in r["publications"].as_array().expect("publications") {
                    let offset = publication["offset"].as_u64().expect("offset");
                    assert_eq!(
                        offset,
                        pos.1 + 1,
                        "recovered publications are exactly the missing ones: {r}"
                    );
                    pos.1 = offset;
                    log.got.insert(pos.clone(), publication["data"].clone());
                }
                assert_eq!(
                    r["offset"].as_u64(),
                    Some(pos.1),
                    "recovered up to the top: {r}"
                );
            } else {
                assert_eq!(r["recovered"], false, "{r}");
                assert!(
                    r["publications"].as_array().is_none_or(Vec::is_empty),
                    "nothing is recovered when recovery fails: {r}"
                );
                pos = (epoch, r["offset"].as_u64().expect("offset"));
                log.start = pos.clone();
            }
        } else {
            panic!("unexpected push: {p}");
        }
    }
}

/// Redis is killed and restarted (on the same port, without persistence)
/// while publications flow. Every subscriber either receives everything or
/// is told of the gap (2500), resubscribes with recover and then has
/// exactly what history could give; after the restart everything
/// acknowledged reaches everyone, in order. Without persistence the
/// restart loses the streams, so every subscriber must be told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_stream() {
    restart_scenario(false).await;
}

/// The same with a Redis that keeps its data (append-only file): the epoch
/// survives, so the servers fill whatever pub/sub lost from the streams
/// after their reset and every subscriber receives everything, untold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_redis_restart_loses_nothing() {
    restart_scenario(true).await;
}

async fn restart_scenario(persist: bool) {
    let mut redis = RedisServer::unstarted();
    redis.persist = persist;
    redis.launch();
    let a = cluster_server(&redis);
    let b = cluster_server(&redis);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let ch = "cluster-restart";
    let mut followers = Vec::new();
    for s in [&a, &b, &a, &b] {
        let mut c = s.client(Enc::Json).await;
        let first = c.subscribe(ch).await;
        followers.push(tokio::spawn(async move { follow(c, ch, first).await }));
    }
    // A publisher keeps publishing through the API, alternating servers,
    // while redis goes away and comes back; each attempt has its own data,
    // so a publication whose acknowledgement was lost is recognised.
    let published = Arc::new(AtomicU64::new(0));
    let (pa, pb) = (a.addr(), b.addr());
    let counter = published.clone();
    let publisher = tokio::spawn(async move {
        let mut acked: BTreeMap<(String, u64), Value> = BTreeMap::new();
        let mut unacked: Vec<Value> = Vec::new();
        let mut failures = 0usize;
        for i in 0..=60u64 {
            let addr = if i % 2 == 0 { pa } else { pb };
            let deadline = tokio::time::Instant::now() + T;
            for attempt in 0u64.. {
                let data = if i == 60 {
                    json!({"final": true, "try": attempt})
                } else {
                    json!({"i": i, "try": attempt})
                };
                let body = json!({"channel": ch, "data": data}).to_string();
                let r = api(addr, Some(KEY), "/api/publish", body.as_bytes()).await;
                if r.status == 200 {
                    let v = r.json();
                    let pos = (
                        v["epoch"].as_str().expect("epoch").to_owned(),
                        v["offset"].as_u64().expect("offset"),
                    );
                    acked.insert(pos, data);
                    counter.fetch_add(1, AtomicOrdering::Relaxed);
                    break;
                }
                assert_eq!(r.status, 503, "publish failed otherwise: {}", r.text());
                failures += 1;
                unacked.push(data);
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the backbone stayed unavailable for {T:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        (acked, unacked, failures)
    });
    eventually(T, "20 publications before the restart", || {
        let n = published.load(AtomicOrdering::Relaxed);
        async move { (n >= 20).then_some(()) }
    })
    .await;
    redis.kill();
    // The servers notice and report not ready.
    for s in [&a, &b] {
        let addr = s.addr();
        wait_readyz(addr, 503, "not ready while redis is down").await;
    }
    redis.launch();
    let (acked, unacked, failures) = publisher.await.expect("publisher failed");
    assert!(failures > 0, "publishing failed while redis was down");
    let first_epoch = acked.keys().next().expect("published").0.clone();
    let last = acked
        .iter()
        .find(|(_, d)| d.get("final").is_some())
        .map(|(p, _)| p.clone())
        .expect("the final publication");

    let mut told = 0;
    for f in followers {
        let log = tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("a subscriber did not get the final publication")
            .expect("subscriber task failed");
        told += log.told;
        // Everything received is what was acknowledged at that position,
        // or an attempt whose acknowledgement was lost with redis.
        for (pos, d) in &log.got {
            match acked.get(pos) {
                Some(a) => assert_eq!(
                    a, d,
                    "received {d} at {pos:?}, not what was published there"
                ),
                None => assert!(
                    unacked.contains(d),
                    "received {d} at {pos:?}, never published"
                ),
            }
        }
        // Everything acknowledged in the final epoch after the subscriber's
        // (re)start point was received.
        let (epoch, start) = &log.start;
        assert_eq!(epoch, &last.0, "the subscriber follows the final epoch");
        for (pos, d) in acked.range((epoch.clone(), start + 1)..=(epoch.clone(), u64::MAX)) {
            assert_eq!(log.got.get(pos), Some(d), "missed {pos:?} silently");
        }
        if persist {
            // The epoch survived: everything, in one epoch, without a gap
            // signal (follow() checked the offsets were consecutive).
            assert_eq!(first_epoch, last.0, "a persistent redis keeps the epoch");
            assert_eq!(log.told, 0, "nothing was lost, nothing to tell: {log:?}");
            for (pos, d) in &acked {
                assert_eq!(log.got.get(pos), Some(d), "missed {pos:?}");
            }
        } else {
            // A restart without persistence loses the stream and its epoch:
            // every subscriber was told, and resubscribed into the new
            // epoch.
            assert_ne!(first_epoch, last.0, "a restarted redis starts a new epoch");
            assert!(log.told > 0, "an epoch change without a signal: {log:?}");
        }
    }
    // /metrics saw it: each server lost its link and got it back, every
    // gap signal a subscriber received was counted, and each one's
    // resubscribe with recover too.
    let (mut gaps, mut recoveries) = (0.0, 0.0);
    for s in [&a, &b] {
        let m = http(
            s.addr(),
            &wavecast_tests::Request::get(s.addr(), "/metrics").to_bytes(),
        )
        .await
        .text();
        assert!(
            metric(&m, "wavecast_backbone_link_errors_total") >= 1.0,
            "{m}"
        );
        assert!(
            metric(&m, "wavecast_backbone_reconnects_total") >= 1.0,
            "{m}"
        );
        gaps += metric(&m, "wavecast_gaps_total");
        recoveries += metric(&m, r#"wavecast_recoveries_total{outcome="recovered"}"#)
            + metric(&m, r#"wavecast_recoveries_total{outcome="not_recovered"}"#);
    }
    assert_eq!(gaps, told as f64, "gap signals counted");
    assert_eq!(recoveries, told as f64, "one recover per gap signal");
}

/// Redis on snapshots only (`appendonly no`) is killed after publications
/// that came after its last snapshot (`SAVE`) and comes back from that
/// snapshot, at an older offset. A subscriber that missed those
/// publications and recovers from before them must be answered
/// `recovered: false` with a new epoch (never `recovered: true` without
/// them), and the next publications must not reuse the lost offsets under
/// the old epoch (a client that saw them would take the new ones for
/// duplicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_from_an_older_snapshot_starts_a_new_epoch() {
    let mut redis = RedisServer::start();
    let a = cluster_server(&redis);
    wait_ready(&a).await;
    let ch = "cluster-snapshot";
    let mut c = a.client(Enc::Json).await;
    c.subscribe(ch).await;
    let mut before = Vec::new();
    for i in 0..5 {
        before.push(api_publish_retry(a.addr(), ch, &json!({"before": i})).await);
    }
    assert_eq!(collect(&mut c, ch, 5).await.len(), 5);
    let (epoch, seen) = before.last().cloned().expect("published");
    assert_eq!(seen, 5);
    // The snapshot, then publications it does not have: the client is
    // gone and misses them.
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "SAVE"])
        .output()
        .expect("run redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    drop(c);
    for i in 0..5 {
        let (e, offset) = api_publish_retry(a.addr(), ch, &json!({"after": i})).await;
        assert_eq!((e.as_str(), offset), (epoch.as_str(), 6 + i));
    }
    // SIGKILL (no final save), and back on the same directory: the
    // snapshot, at offset 5.
    redis.kill();
    wait_readyz(a.addr(), 503, "not ready while redis is down").await;
    redis.launch();
    wait_ready(&a).await;
    let mut c = a.client(Enc::Json).await;
    let r = loop {
        let r = c
            .command(
                "subscribe",
                json!({"channel": ch, "recover": {"epoch": epoch, "offset": seen}}),
            )
            .await;
        if r.get("subscribe").is_some() {
            break r["subscribe"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        r["recovered"], false,
        "the publications after the snapshot are lost: {r}"
    );
    assert_eq!(r["publications"], json!([]), "{r}");
    let new_epoch = r["epoch"].as_str().expect("epoch").to_owned();
    assert_ne!(
        new_epoch, epoch,
        "a rewound stream continues in a new epoch: {r}"
    );
    // New publications: in the new epoch, never offsets 6..10 of the old.
    let (e, _) = api_publish_retry(a.addr(), ch, &json!({"new": 0})).await;
    assert_eq!(e, new_epoch, "published under the epoch the recover gave");
    let p = c.next_push().await;
    assert_eq!(p["pub"]["data"], json!({"new": 0}), "{p}");
}

/// The value of a series in a Prometheus text page (`name` or
/// `name{labels}` as written), 0 if absent.
fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits (bounded) until `server`'s presence of `channel` lists `n` clients:
/// presence is shared across servers through Redis, written just after the
/// subscribe reply, so it is eventually (within milliseconds) consistent.
async fn presence_of_size(server: &TestServer, channel: &str, n: usize) -> Vec<String> {
    eventually(
        Duration::from_secs(10),
        &format!("presence of {channel} lists {n} clients"),
        || async move {
            let p = server.api_presence(channel).await;
            (p.len() == n).then_some(p)
        },
    )
    .await
}

/// A server is SIGKILLed: its client reconnects to another server and
/// recovers exactly what it missed, and it leaves presence within the
/// lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_clients_recover_elsewhere_and_leave_presence() {
    let redis = RedisServer::start();
    let mut a = cluster_server(&redis);
    let b = cluster_server(&redis);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let ch = "chat:cluster-kill";

    let mut y = b.client(Enc::Json).await;
    y.subscribe(ch).await;
    // A server writes presence to Redis right after its subscribe reply,
    // so another server's read may briefly trail it.
    let only_y = presence_of_size(&b, ch, 1).await;
    let mut x = a.client(Enc::MsgPack).await;
    let sub = x.subscribe(ch).await;
    let epoch = sub["epoch"].as_str().expect("epoch").to_owned();
    let both = presence_of_size(&b, ch, 2).await;
    let x_id: String = both
        .iter()
        .find(|c| !only_y.contains(c))
        .expect("x")
        .clone();

    for i in 1..=10u64 {
        assert_eq!(b.api_publish(ch, &json!({"i": i})).await, i);
    }
    // y's push stream also carries x's join.
    let got = collect(&mut x, ch, 10).await;
    assert_eq!(
        got.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );

    a.server.signal(libc::SIGKILL);
    assert!(a.server.wait_exit(T).is_some(), "SIGKILL ends the server");
    drop(x);
    for i in 11..=15u64 {
        assert_eq!(b.api_publish(ch, &json!({"i": i})).await, i);
    }
    // x comes back on b and recovers from its last position.
    let mut x2 = b.client(Enc::MsgPack).await;
    let r = x2
        .ok(
            "subscribe",
            json!({"channel": ch, "recover": {"epoch": epoch, "offset": 10}}),
        )
        .await;
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(r["epoch"].as_str(), Some(epoch.as_str()), "{r}");
    let recovered: Vec<(u64, Value)> = r["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| (p["offset"].as_u64().expect("offset"), p["data"].clone()))
        .collect();
    let want: Vec<(u64, Value)> = (11..=15).map(|i| (i, json!({"i": i}))).collect();
    assert_eq!(recovered, want, "exactly the missed publications");
    let off = b.api_publish(ch, &json!({"i": 16})).await;
    assert_eq!(
        collect(&mut x2, ch, 1).await,
        vec![(off, json!({"i": 16}))],
        "live again after recovery"
    );

    // The dead server's client leaves presence within the lease (3 s; the
    // bound is generous for a loaded machine).
    let b_ref = &b;
    let x_gone = x_id.clone();
    let now = eventually(
        Duration::from_secs(30),
        "the killed server's client leaves presence",
        || {
            let x_gone = x_gone.clone();
            async move {
                let p = b_ref.api_presence(ch).await;
                (!p.contains(&x_gone)).then_some(p)
            }
        },
    )
    .await;
    assert_eq!(now.len(), 2, "y and the reconnected x remain: {now:?}");
    assert!(only_y.iter().all(|c| now.contains(c)), "{now:?}");
    // y was told of the leave (join/leave on in `chat`).
    let deadline = Instant::now() + T;
    loop {
        assert!(
            Instant::now() < deadline,
            "no leave push for the killed server's client"
        );
        let p = y.next_push().await;
        if p["leave"]["client"].as_str() == Some(x_id.as_str()) {
            break;
        }
    }
}

/// The answers of a fixed series of history reads (HTTP API, on `reader`)
/// after five publications (on `writer`) to a channel that keeps three,
/// with the channel's epoch replaced by "E" so that two backbones can be
/// compared.
async fn history_answers(writer: &TestServer, reader: &TestServer) -> Vec<Value> {
    let ch = "tiny:history";
    for i in 1..=5u64 {
        assert_eq!(writer.api_publish(ch, &json!({"i": i})).await, i);
    }
    let epoch = reader
        .api_ok("/api/history", &json!({"channel": ch, "limit": 0}))
        .await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    let at = |offset: u64| json!({"epoch": epoch, "offset": offset});
    let queries = [
        json!({"channel": ch}),
        json!({"channel": ch, "limit": 0}),
        json!({"channel": ch, "since": at(2)}),
        json!({"channel": ch, "since": at(1)}),
        json!({"channel": ch, "since": at(0)}),
        json!({"channel": ch, "since": at(4), "limit": 1}),
        json!({"channel": ch, "since": at(2), "limit": 2}),
        json!({"channel": ch, "since": at(5)}),
        json!({"channel": ch, "since": at(6)}),
        json!({"channel": ch, "since": {"epoch": "another", "offset": 2}}),
        json!({"channel": "tiny:unknown"}),
        json!({"channel": "tiny:unknown", "since": {"epoch": "", "offset": 0}}),
        json!({"channel": "tiny:unknown", "since": {"epoch": "x", "offset": 1}}),
        // Newest first (index 13 on).
        json!({"channel": ch, "reverse": true}),
        json!({"channel": ch, "limit": 2, "reverse": true}),
        json!({"channel": ch, "since": at(3), "reverse": true}),
        json!({"channel": ch, "since": at(1), "limit": 1, "reverse": true}),
        json!({"channel": ch, "limit": 0, "reverse": true}),
    ];
    let mut out = Vec::new();
    for q in queries {
        let mut r = reader.api_ok("/api/history", &q).await;
        if r["epoch"] == epoch.as_str() {
            r["epoch"] = json!("E");
        }
        out.push(json!({"query": q.to_string().replace(&epoch, "E"), "answer": r}));
    }
    out
}

/// History read from the Redis streams answers exactly as the in-memory
/// hub does (positions, trimming by size, `complete`, limits, newest first
/// with `reverse`, unknown channels), read on another server than the one
/// published on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_history_answers_like_the_in_memory_hub() {
    let redis = RedisServer::start();
    let a = cluster_server(&redis);
    let b = cluster_server(&redis);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let single = TestServer::start(&[]);
    let from_redis = history_answers(&a, &b).await;
    let from_memory = history_answers(&single, &single).await;
    // A few answers spelled out, so that the comparison is not between two
    // equally wrong ones.
    let pubs = |r: &Value| -> Vec<u64> {
        r["answer"]["publications"]
            .as_array()
            .expect("publications")
            .iter()
            .map(|p| p["offset"].as_u64().expect("offset"))
            .collect()
    };
    assert_eq!(pubs(&from_redis[0]), [3, 4, 5], "{}", from_redis[0]);
    assert_eq!(
        from_redis[0]["answer"]["complete"], false,
        "1 and 2 are trimmed"
    );
    assert_eq!(pubs(&from_redis[2]), [3, 4, 5]);
    assert_eq!(
        from_redis[2]["answer"]["complete"], true,
        "{}",
        from_redis[2]
    );
    assert_eq!(from_redis[3]["answer"]["complete"], false, "2 is gone");
    assert_eq!(pubs(&from_redis[5]), [5]);
    assert_eq!(from_redis[10]["answer"]["epoch"], "", "unknown channel");
    assert_eq!(pubs(&from_redis[13]), [5, 4, 3], "{}", from_redis[13]);
    assert_eq!(pubs(&from_redis[14]), [5, 4]);
    assert_eq!(pubs(&from_redis[15]), [5, 4]);
    assert_eq!(from_redis[15]["answer"]["complete"], true);
    assert_eq!(pubs(&from_redis[16]), [5]);
    for (r, m) in from_redis.iter().zip(&from_memory) {
        assert_eq!(r, m, "redis and the in-memory hub differ");
    }
    assert_eq!(from_redis.len(), from_memory.len());
}

/// The WebSocket connections a server holds (`/api/info`).
async fn connections(server: &TestServer) -> u64 {
    server.api_ok("/api/info", &json!({})).await["connections"]
        .as_u64()
        .expect("connections")
}

/// Three servers behind nginx (deploy/nginx.conf): clients connected
/// through it land on different servers and all see one order; when one
/// server is killed, exactly its clients lose their connection, reconnect
/// through nginx to the others and recover exactly what they missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_clients_spread_and_recover() {
    let redis = RedisServer::start();
    let mut servers: Vec<TestServer> = (0..3).map(|_| cluster_server(&redis)).collect();
    for s in &servers {
        wait_ready(s).await;
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(TestServer::addr).collect();
    let nginx = Nginx::start(&addrs);
    let front = nginx.addr();
    let ch = "cluster-nginx";

    let mut clients = Vec::new();
    let mut epoch = String::new();
    for _ in 0..6 {
        let mut c = Client::connect(front, Enc::Json).await;
        let r = c.subscribe(ch).await;
        epoch = r["epoch"].as_str().expect("epoch").to_owned();
        clients.push(c);
    }
    let mut per_server = Vec::new();
    for s in &servers {
        per_server.push(connections(s).await);
    }
    assert_eq!(per_server.iter().sum::<u64>(), 6, "{per_server:?}");
    assert!(
        per_server.iter().filter(|&&n| n > 0).count() >= 2,
        "nginx spreads clients over the servers: {per_server:?}"
    );

    // Publications through nginx's HTTP side reach everyone in order.
    let publish = |i: u64| async move {
        let (e, off) = api_publish_retry(front, ch, &json!({"i": i})).await;
        assert_eq!(off, i, "offsets follow the publications");
        e
    };
    for i in 1..=10 {
        assert_eq!(publish(i).await, epoch);
    }
    for c in &mut clients {
        let got = collect(c, ch, 10).await;
        let want: Vec<(u64, Value)> = (1..=10).map(|i| (i, json!({"i": i}))).collect();
        assert_eq!(got, want);
    }

    // Kill the server with the most clients.
    let (victim, &lost) = per_server
        .iter()
        .enumerate()
        .max_by_key(|(_, n)| **n)
        .expect("three servers");
    servers[victim].server.signal(libc::SIGKILL);
    assert!(servers[victim].server.wait_exit(T).is_some());
    for i in 11..=15 {
        publish(i).await;
    }
    // The clients of the killed server see their connection end; the
    // others get 11..=15 live.
    let mut ended = 0;
    for c in clients {
        let task = tokio::spawn(async move {
            let mut c = c;
            collect(&mut c, ch, 5).await
        });
        match task.await {
            Ok(got) => {
                let want: Vec<(u64, Value)> = (11..=15).map(|i| (i, json!({"i": i}))).collect();
                assert_eq!(got, want, "a client of a live server gets everything");
            }
            Err(e) => {
                assert!(e.is_panic(), "{e}");
                ended += 1;
                // Reconnect through nginx and recover from offset 10.
                let mut c = Client::connect(front, Enc::Json).await;
                let r = c
                    .ok(
                        "subscribe",
                        json!({"channel": ch, "recover": {"epoch": epoch, "offset": 10}}),
                    )
                    .await;
                assert_eq!(r["recovered"], true, "{r}");
                let recovered: Vec<u64> = r["publications"]
                    .as_array()
                    .expect("publications")
                    .iter()
                    .map(|p| p["offset"].as_u64().expect("offset"))
                    .collect();
                assert_eq!(
                    recovered,
                    [11, 12, 13, 14, 15],
                    "exactly the missed ones: {r}"
                );
            }
        }
    }
    assert_eq!(
        ended, lost,
        "exactly the killed server's clients lost their connection"
    );
}

/// A server whose Redis is not there yet starts anyway, reports not ready
/// and answers "unavailable", then connects (with backoff) once Redis is
/// up and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_starts_before_redis_and_connects_when_it_comes() {
    let mut redis = RedisServer::unstarted();
    let a = cluster_server(&redis);
    assert_eq!(readyz(a.addr()).await, 503, "not ready without redis");
    let mut c = a.client(Enc::Json).await;
    assert_eq!(
        c.err("publish", json!({"channel": "early", "data": 1}))
            .await,
        E_NOT_AVAILABLE,
        "publishing without a backbone is refused as unavailable"
    );
    redis.launch();
    wait_ready(&a).await;
    let r = c.subscribe("early").await;
    assert_eq!(r["offset"], 0, "{r}");
    let off = a.api_publish("early", &json!(1)).await;
    assert_eq!(collect(&mut c, "early", 1).await, vec![(off, json!(1))]);
}

/// Each server holds one Redis subscription per channel that has local
/// subscribers (never one per client, whatever its shards), and drops it
/// with the last local subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_subscription_per_server_and_channel() {
    let redis = RedisServer::start();
    let a = cluster_server(&redis);
    let b = cluster_server(&redis);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let ch = "cluster-subs";
    let topic = format!("wc:{{{ch}}}:pub");
    assert_eq!(redis.numsub(&topic), 0);
    let mut on_a = Vec::new();
    for _ in 0..4 {
        let mut c = a.client(Enc::Json).await;
        c.subscribe(ch).await;
        on_a.push(c);
    }
    assert_eq!(
        redis.numsub(&topic),
        1,
        "one subscription for four clients of a"
    );
    let mut on_b = b.client(Enc::Json).await;
    on_b.subscribe(ch).await;
    assert_eq!(redis.numsub(&topic), 2, "one per server");
    // Unsubscribing all but one client of a keeps a's subscription.
    for c in on_a.iter_mut().skip(1) {
        c.ok("unsubscribe", json!({"channel": ch})).await;
    }
    let off = b.api_publish(ch, &json!("still")).await;
    assert_eq!(
        collect(&mut on_a[0], ch, 1).await,
        vec![(off, json!("still"))]
    );
    assert_eq!(redis.numsub(&topic), 2);
    // The last one leaves (by closing): a's subscription goes, b's stays.
    on_a.remove(0).close().await;
    eventually(
        T,
        "a drops its subscription with its last subscriber",
        || async { (redis.numsub(&topic) == 1).then_some(()) },
    )
    .await;
    on_b.ok("unsubscribe", json!({"channel": ch})).await;
    eventually(T, "no subscription remains", || async {
        (redis.numsub(&topic) == 0).then_some(())
    })
    .await;
}

/// Publish-to-delivery times of `n` publications, one at a time: a client
/// on `publisher` publishes, a client on `subscriber` receives; sorted.
async fn delivery_times(
    publisher: SocketAddr,
    subscriber: SocketAddr,
    ch: &str,
    n: u64,
) -> Vec<Duration> {
    let mut s = Client::connect(subscriber, Enc::Json).await;
    s.subscribe(ch).await;
    let mut p = Client::connect(publisher, Enc::Json).await;
    let mut times = Vec::new();
    for i in 0..n {
        let id = 1000 + i;
        let sent = Instant::now();
        p.send(&json!({"id": id, "publish": {"channel": ch, "data": i}}))
            .await;
        let (_, data) = s.next_pub(ch).await;
        times.push(sent.elapsed());
        assert_eq!(data, json!(i), "publications arrive in order");
        let r = p.reply_to(id).await;
        assert!(r.get("publish").is_some(), "{r}");
    }
    times.sort();
    times
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len().saturating_sub(1)) * p / 100)
        .copied()
        .unwrap_or_default()
}

/// Not a test but a measurement (run it with `--ignored --nocapture`,
/// best in release: `cargo build --release -p wavecast && cargo test
/// --release -p wavecast-tests --test cluster -- --ignored --nocapture`):
/// the latency a publication's path through Redis adds, from a client on
/// one server to a subscriber on another, over the same path on one server
/// with the in-memory backbone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; prints figures"]
async fn measure_cross_server_latency() {
    const N: u64 = 2000;
    let redis = RedisServer::start();
    let a = cluster_server(&redis);
    let b = cluster_server(&redis);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let single = TestServer::start(&["--workers", "2"]);
    let cases = [
        ("one server, in memory", single.addr(), single.addr()),
        ("one server, through redis", a.addr(), a.addr()),
        ("server A -> redis -> server B", a.addr(), b.addr()),
    ];
    for (k, (name, from, to)) in cases.into_iter().enumerate() {
        // Warm up, then measure.
        delivery_times(from, to, &format!("warm-{k}"), 200).await;
        let t = delivery_times(from, to, &format!("lat-{k}"), N).await;
        println!(
            "{name:32} p50 {:>8.1?}  p99 {:>8.1?}  (n = {N})",
            percentile(&t, 50),
            percentile(&t, 99)
        );
    }
}

/// Namespaces for the expiry test: history kept for two seconds.
const SHORT_TTL_CONFIG: &str = r#"
[channels]
history_size = 10
history_ttl = "2s"
"#;

/// `POST path` on `addr` with the test key; the JSON answer of a 200.
async fn api_json(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let r = api(addr, Some(KEY), path, body.to_string().as_bytes()).await;
    assert_eq!(
        r.status,
        200,
        "POST {path} {body}: {} {}",
        r.status,
        r.text()
    );
    r.json()
}

/// History expiry as seen through the API of `addr`: an idle channel
/// without subscribers goes away with its history (its next publication
/// starts a new epoch), while a subscribed one keeps its epoch and offsets
/// and only loses the expired publications. Returns the answers with
/// epochs replaced by their order of appearance.
async fn expiry_answers(addr: SocketAddr) -> Vec<Value> {
    let mut out = Vec::new();
    let mut epochs: Vec<String> = Vec::new();
    let mut record = |mut v: Value, epochs: &mut Vec<String>| {
        if let Some(e) = v["epoch"].as_str().map(str::to_owned) {
            if !e.is_empty() {
                let n = epochs.iter().position(|x| *x == e).unwrap_or_else(|| {
                    epochs.push(e.clone());
                    epochs.len() - 1
                });
                v["epoch"] = json!(format!("epoch-{n}"));
            }
        }
        out.push(v);
    };
    let publish = |ch: &'static str, i: u64| async move {
        api_json(addr, "/api/publish", &json!({"channel": ch, "data": i})).await
    };
    let history = |ch: &'static str, since: Value| async move {
        api_json(
            addr,
            "/api/history",
            &json!({"channel": ch, "since": since}),
        )
        .await
    };
    // Idle channel.
    let mut e = String::new();
    for i in 1..=3 {
        let v = publish("idle", i).await;
        e = v["epoch"].as_str().expect("epoch").to_owned();
        record(v, &mut epochs);
    }
    record(
        history("idle", json!({"epoch": e, "offset": 0})).await,
        &mut epochs,
    );
    // Subscribed channel.
    let mut sub = Client::connect(addr, Enc::Json).await;
    sub.subscribe("kept").await;
    let mut k = String::new();
    for i in 1..=3 {
        let v = publish("kept", i).await;
        k = v["epoch"].as_str().expect("epoch").to_owned();
        record(v, &mut epochs);
    }
    tokio::time::sleep(Duration::from_millis(2600)).await;
    record(
        history("idle", json!({"epoch": e, "offset": 0})).await,
        &mut epochs,
    );
    record(
        history("kept", json!({"epoch": k, "offset": 0})).await,
        &mut epochs,
    );
    record(
        history("kept", json!({"epoch": k, "offset": 3})).await,
        &mut epochs,
    );
    record(publish("idle", 4).await, &mut epochs);
    record(publish("kept", 4).await, &mut epochs);
    assert_eq!(
        collect(&mut sub, "kept", 4).await.last().map(|p| p.0),
        Some(4)
    );
    out
}

/// History expiry and channel lifetime through Redis match the in-memory
/// hub's (with the two-second history of SHORT_TTL_CONFIG).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_expiry_matches_the_in_memory_hub() {
    let config = TempFile::new("toml", SHORT_TTL_CONFIG);
    let path = config.path();
    let redis = RedisServer::start();
    let url = redis.url();
    let clustered =
        wavecast_tests::Server::start(&["--api-key", KEY, "--config", &path, "--redis", &url]);
    let single = wavecast_tests::Server::start(&["--api-key", KEY, "--config", &path]);
    let addr = clustered.addr();
    wait_readyz(addr, 200, "the clustered server is ready").await;
    let (from_redis, from_memory) = tokio::join!(
        expiry_answers(clustered.addr()),
        expiry_answers(single.addr())
    );
    // Spelled out: the idle channel came back in a new epoch at offset 1;
    // the subscribed one kept its epoch and went on at 4, with its expired
    // publications gone from history.
    let r = &from_redis;
    assert_eq!(
        r[3]["publications"].as_array().map(Vec::len),
        Some(3),
        "{}",
        r[3]
    );
    assert_eq!(r[7]["epoch"], "", "the idle channel is gone: {}", r[7]);
    assert_eq!(r[10]["offset"], 1, "{}", r[10]);
    assert_ne!(r[10]["epoch"], r[0]["epoch"], "a new epoch");
    assert_eq!(
        r[8]["epoch"], r[4]["epoch"],
        "the subscribed channel keeps its epoch"
    );
    assert_eq!(r[8]["publications"], json!([]), "expired: {}", r[8]);
    assert_eq!(r[8]["complete"], false, "{}", r[8]);
    assert_eq!(r[9]["complete"], true, "nothing missed after 3: {}", r[9]);
    assert_eq!(r[11]["offset"], 4, "{}", r[11]);
    assert_eq!(
        from_redis, from_memory,
        "redis and the in-memory hub differ"
    );
}

/// A server that shuts down gracefully (SIGTERM) takes its clients out of
/// presence and announces their leave before it exits, at once, not after
/// the presence lease (a minute here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_removes_presence_at_once() {
    let redis = RedisServer::start();
    let mut a = cluster_server_with_ttl(&redis, "60s");
    let b = cluster_server_with_ttl(&redis, "60s");
    wait_ready(&a).await;
    wait_ready(&b).await;
    let ch = "chat:cluster-shutdown";
    let mut y = b.client(Enc::Json).await;
    y.subscribe(ch).await;
    let mut x = a.client(Enc::Json).await;
    x.subscribe(ch).await;
    let both = presence_of_size(&b, ch, 2).await;
    a.server.wait_catches_signal(libc::SIGTERM, T);
    a.server.signal(libc::SIGTERM);
    assert_eq!(x.close_code().await, Some(CLOSE_SHUTDOWN));
    let status = a.server.wait_exit(T).expect("the server exits");
    assert!(status.success(), "{status:?}");
    let left = b.api_presence(ch).await;
    assert_eq!(
        left.len(),
        1,
        "the stopped server's client left presence: {left:?}"
    );
    let x_id = both.iter().find(|c| !left.contains(c)).expect("x's id");
    loop {
        let p = y.next_push().await;
        if p["leave"]["client"].as_str() == Some(x_id.as_str()) {
            break;
        }
    }
}

/// `wavecast bench` against a cluster: with two servers in `--url`, the
/// subscribers are spread over both (each server holds its half while the
/// run goes on), and every subscriber, on either server, gets every
/// publication once and in order through Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_spreads_subscribers_over_the_servers_of_a_cluster() {
    const SUBS: u64 = 40;
    const PUBS: u64 = 20;
    let redis = RedisServer::start();
    let a = cluster_server(&redis);
    let b = cluster_server(&redis);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let json = std::env::temp_dir().join(format!(
        "wavecast-cluster-bench-{}.json",
        std::process::id()
    ));
    let urls = format!("ws://{}/ws,ws://{}/ws", a.server.addr(), b.server.addr());
    let pids = format!("{},{}", a.server.pid(), b.server.pid());
    let mut run = Command::new(wavecast_tests::binary_path())
        .args(["bench", "fanout", "--url", &urls, "--server-pid", &pids])
        .args(["--subscribers", &SUBS.to_string()])
        .args(["--publications", &PUBS.to_string(), "--rate", "5"])
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run wavecast bench");
    // Half the subscribers on each server (the publisher is on the first).
    eventually(
        T,
        "each server holds its half of the subscribers",
        || async {
            let (na, nb) = (connections(&a).await, connections(&b).await);
            (na == SUBS / 2 + 1 && nb == SUBS / 2).then_some(())
        },
    )
    .await;
    let status = tokio::task::spawn_blocking(move || {
        let mut stderr = String::new();
        if let Some(mut e) = run.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        (run.wait().expect("wait for bench"), stderr)
    })
    .await
    .expect("join");
    assert!(status.0.success(), "bench failed: {}", status.1);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("json");
    let _ = std::fs::remove_file(&json);
    assert_eq!(report["url"], json!(urls));
    assert_eq!(report["connected"], json!(SUBS));
    assert_eq!(report["deliveries"], json!(SUBS * PUBS));
    for fault in ["lost", "duplicated", "out_of_order", "unexpected"] {
        assert_eq!(report[fault], json!(0), "{fault}");
    }
    assert!(
        report["server_rss_after"].as_u64() > Some(0),
        "memory summed over both servers: {report}"
    );
}

// ---------------------------------------------------------------------------
// Cluster-wide API: disconnect and channels over Redis control topics

/// A server's instance id (`/api/info`): its clients' ids start with it.
async fn instance_of(server: &TestServer) -> String {
    server.api_ok("/api/info", &json!({})).await["instance"]
        .as_str()
        .expect("instance")
        .to_owned()
}

/// The control topic a server with this instance id listens on.
fn control_topic(instance: &str) -> String {
    format!("wc:ctl:{instance}")
}

/// The topic every server listens on for cluster-wide requests.
const CONTROL_ALL: &str = "wc:ctl";

/// The id of the one client in `channel`'s presence (read on `server`),
/// which must start with `instance`.
async fn only_client(server: &TestServer, channel: &str, instance: &str) -> String {
    let ids = presence_of_size(server, channel, 1).await;
    let id = ids.into_iter().next().expect("one client");
    assert!(
        id.starts_with(&format!("{instance}-")),
        "client id {id} does not start with its server's instance {instance}"
    );
    id
}

/// `POST /api/disconnect` of `client`: status and body.
async fn api_disconnect(server: &TestServer, client: &str, reconnect: bool) -> HttpReply {
    let body = json!({"client": client, "reconnect": reconnect}).to_string();
    api(server.addr(), Some(KEY), "/api/disconnect", body.as_bytes()).await
}

/// A `redis-cli SUBSCRIBE` process that listens on control topics and
/// never answers, as a server that has stalled would. Killed by its PID on
/// drop.
struct SilentSubscriber(Child);

impl SilentSubscriber {
    fn start(redis: &RedisServer, topics: &[&str]) -> SilentSubscriber {
        let child = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "SUBSCRIBE"])
            .args(topics)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-cli");
        SilentSubscriber(child)
    }
}

impl Drop for SilentSubscriber {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl RedisServer {
    /// Runs `redis-cli` with `args`; returns its output, trimmed.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// A client connected to server b is disconnected through server a's API,
/// with the close code the request asks for; only that client goes, and a
/// second disconnect of it finds nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_disconnect_reaches_a_client_on_another_server() {
    let redis = RedisServer::start();
    let a = cluster_server(&redis);
    let b = cluster_server(&redis);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let b_instance = instance_of(&b).await;
    assert_ne!(instance_of(&a).await, b_instance);
    for (reconnect, code) in [(true, CLOSE_DISCONNECTED), (false, CLOSE_FORCE_DISCONNECT)] {
        let ch = format!("remote-disconnect-{reconnect}");
        let mut victim = b.client(Enc::Json).await;
        victim.subscribe(&ch).await;
        let victim_id = only_client(&a, &ch, &b_instance).await;
        let mut bystander = b.client(Enc::MsgPack).await;
        bystander.subscribe(&ch).await;
        presence_of_size(&a, &ch, 2).await;

        let r = api_disconnect(&a, &victim_id, reconnect).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"disconnected": victim_id}));
        assert_eq!(
            victim.close_code().await,
            Some(code),
            "reconnect: {reconnect}"
        );
        // Only the victim: the other client of b still gets publications.
        let offset = a.api_publish(&ch, &json!("still here")).await;
        assert_eq!(bystander.next_pub(&ch).await, (offset, json!("still here")));
        presence_of_size(&a, &ch, 1).await;
        let r = api_disconnect(&a, &victim_id, reconnect).await;
        assert_eq!(r.status, 404, "{}", r.text());
        bystander.close().await;
    }
}

/// A client id of an instance that no running server has is "not found",
/// the same answer as an unknown client of the asked server and as a
/// client id that is not one at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_disconnect_of_a_gone_instance_is_not_found() {
    let redis = RedisServer::start();
    let a = cluster_server(&redis);
    let b = cluster_server(&redis);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let a_instance = instance_of(&a).await;
    let b_instance = instance_of(&b).await;
    let ch = "gone-instance";
    let mut on_b = b.client(Enc::Json).await;
    on_b.subscribe(ch).await;
    let b_client = only_client(&a, ch, &b_instance).await;
    // b goes away (killed): its control topic has no listener any more.
    drop(on_b);
    drop(b);
    let b_topic = control_topic(&b_instance);
    eventually(T, "the killed server's control topic is gone", || async {
        (redis.numsub(&b_topic) == 0).then_some(())
    })
    .await;

    let unknown_local = api_disconnect(&a, &format!("{a_instance}-0-999999"), true).await;
    assert_eq!(unknown_local.status, 404, "{}", unknown_local.text());
    let code = unknown_local.error_code();
    // An instance id that no server ever had (it differs from a's).
    let never = if a_instance == "abcdef" {
        "fedcba"
    } else {
        "abcdef"
    };
    for id in [
        b_client.clone(),
        format!("{never}-0-1"),
        "no-such-client".to_owned(),
        String::new(),
        "-".to_owned(),
        format!("{b_instance}-"),
    ] {
        let r = api_disconnect(&a, &id, false).await;
        assert_eq!(r.status, 404, "{id:?}: {}", r.text());
        assert_eq!(r.error_code(), code, "{id:?}");
    }
}

/// `/api/channels` on either server lists the channels whose subscribers
/// are on a, on b, or on both, with the counts summed over the servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_channels_sums_subscribers_over_the_cluster() {
    let redis = RedisServer::start();
    let a = cluster_server(&redis);
    let b = cluster_server(&redis);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let mut clients = Vec::new();
    for (server, ch) in [
        (&a, "only-a"),
        (&a, "only-a"),
        (&b, "only-b"),
        (&a, "both"),
        (&b, "both"),
        (&b, "both"),
    ] {
        let mut c = server.client(Enc::Json).await;
        c.subscribe(ch).await;
        clients.push(c);
    }
    let expected = json!({"channels": {
        "only-a": {"subscribers": 2},
        "only-b": {"subscribers": 1},
        "both": {"subscribers": 3},
    }});
    for s in [&a, &b] {
        assert_eq!(s.api_ok("/api/channels", &json!({})).await, expected);
    }
    // The only subscriber of only-b leaves: the channel leaves the list.
    clients.remove(2).close().await;
    eventually(T, "only-b leaves a's channel list", || async {
        let v = a.api_ok("/api/channels", &json!({})).await;
        (v["channels"].get("only-b").is_none()).then_some(v)
    })
    .await;
    assert_eq!(
        a.api_ok("/api/channels", &json!({})).await,
        json!({"channels": {
            "only-a": {"subscribers": 2},
            "both": {"subscribers": 3},
        }})
    );
}

/// A server that receives control requests but never answers: a
/// disconnect aimed at it fails with 503 once the wait is over, and
/// `/api/channels` answers with the servers that did answer. Malformed
/// control messages and replies to unknown requests are ignored: the
/// server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_servers_and_garbage_on_control_topics() {
    let redis = RedisServer::start();
    let a = cluster_server(&redis);
    wait_ready(&a).await;
    let a_instance = instance_of(&a).await;
    let silent = if a_instance == "abcdef" {
        "fedcba"
    } else {
        "abcdef"
    };
    let silent_topic = control_topic(silent);
    let _stalled = SilentSubscriber::start(&redis, &[&silent_topic, CONTROL_ALL]);
    eventually(T, "the silent subscriber listens", || async {
        (redis.numsub(&silent_topic) == 1 && redis.numsub(CONTROL_ALL) == 2).then_some(())
    })
    .await;

    let r = api_disconnect(&a, &format!("{silent}-0-1"), true).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error_code(), E_NOT_AVAILABLE);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not answer")),
        "{}",
        r.text()
    );

    let ch = "partial";
    let mut c = a.client(Enc::Json).await;
    c.subscribe(ch).await;
    assert_eq!(
        a.api_ok("/api/channels", &json!({})).await,
        json!({"channels": {"partial": {"subscribers": 1}}}),
        "a's own channels, without the silent server's answer"
    );

    // Garbage and stray replies: each reaches a (PUBLISH counts it).
    let a_topic = control_topic(&a_instance);
    for (topic, msg) in [
        (CONTROL_ALL, "not json"),
        (CONTROL_ALL, r#"{"op":"frobnicate"}"#),
        (
            CONTROL_ALL,
            r#"{"op":"channels","req":1,"from":"not:an:instance"}"#,
        ),
        (
            a_topic.as_str(),
            r#"{"op":"disconnect","req":1,"from":"wc:{x}:pub","client":"x","reconnect":true}"#,
        ),
        (
            a_topic.as_str(),
            r#"{"op":"disconnected","req":987654,"found":true}"#,
        ),
        (
            a_topic.as_str(),
            r#"{"op":"channel_counts","req":987654,"channels":{"bogus":7}}"#,
        ),
        (a_topic.as_str(), ""),
    ] {
        assert_ne!(
            redis.cli(&["PUBLISH", topic, msg]),
            "0",
            "{msg:?} reached nobody"
        );
    }
    // Still serving, with the same answers.
    let offset = a.api_publish(ch, &json!("after garbage")).await;
    assert_eq!(c.next_pub(ch).await, (offset, json!("after garbage")));
    assert_eq!(
        a.api_ok("/api/channels", &json!({})).await,
        json!({"channels": {"partial": {"subscribers": 1}}})
    );
}

/// With Redis down, the cluster-wide calls fail with 503 like the other
/// calls that need the backbone; after Redis comes back (empty), the
/// servers listen on their control topics again and the calls work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_topics_come_back_after_a_redis_restart() {
    let mut redis = RedisServer::start();
    let a = cluster_server(&redis);
    let b = cluster_server(&redis);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let b_instance = instance_of(&b).await;
    let ch = "restart-control";
    let mut victim = b.client(Enc::Json).await;
    victim.subscribe(ch).await;
    let victim_id = only_client(&a, ch, &b_instance).await;

    redis.kill();
    let addr = a.addr();
    wait_readyz(addr, 503, "a is not ready while redis is down").await;
    let r = api_disconnect(&a, &victim_id, true).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error_code(), E_NOT_AVAILABLE);
    let r = api(a.addr(), Some(KEY), "/api/channels", b"{}").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error_code(), E_NOT_AVAILABLE);

    redis.launch();
    wait_ready(&a).await;
    wait_ready(&b).await;
    assert_eq!(redis.numsub(&control_topic(&b_instance)), 1);
    assert_eq!(redis.numsub(CONTROL_ALL), 2);
    // A new subscriber on b is counted by a. (Only its channel is
    // checked: whether the victim's subscription outlives an empty Redis
    // is the node's business, not this test's.)
    let late_ch = "restart-control-late";
    let mut late = b.client(Enc::Json).await;
    late.subscribe(late_ch).await;
    eventually(T, "a counts b's new subscriber", || async {
        let v = a.api_ok("/api/channels", &json!({})).await;
        (v["channels"][late_ch] == json!({"subscribers": 1})).then_some(())
    })
    .await;
    let r = api_disconnect(&a, &victim_id, true).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(victim.close_code().await, Some(CLOSE_DISCONNECTED));
}

/// deploy/nginx.conf keeps idle upstream connections (`keepalive`), so
/// nginx sends a WebSocket upgrade on a connection that already carried
/// API calls; the server upgrades it like a fresh one, and the API and
/// pushes keep working through nginx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_upgrades_reuse_keep_alive_upstream_connections() {
    let server = TestServer::start(&[]);
    // One upstream: nginx's idle connection to it is the one it reuses.
    let nginx = Nginx::start(&[server.addr()]);
    let front = nginx.addr();
    let ch = "through-keepalive";
    let publish = |n: u64| {
        let body = json!({"channel": ch, "data": {"n": n}}).to_string();
        async move { api(front, Some(KEY), "/api/publish", body.as_bytes()).await }
    };
    for n in 1..=3 {
        let r = publish(n).await;
        assert_eq!(r.status, 200, "API through nginx: {}", r.text());
    }
    for round in 0..3 {
        let mut c = Client::connect(front, Enc::Json).await;
        let r = c.subscribe(ch).await;
        let offset = r["offset"].as_u64().expect("offset");
        let n = 10 + round;
        let r = publish(n).await;
        assert_eq!(r.status, 200, "API through nginx: {}", r.text());
        assert_eq!(
            collect(&mut c, ch, 1).await,
            vec![(offset + 1, json!({"n": n}))],
            "round {round}"
        );
    }
}

/// Through Redis, a client's publication keeps its sender: a subscriber on
/// another server sees `info` with the publisher's client id in the push
/// (topic message `P`) and in history (stream field `i`); an API
/// publication has none there either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_keeps_its_sender_across_servers() {
    let redis = RedisServer::start();
    let a = cluster_server(&redis);
    let b = cluster_server(&redis);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let ch = "cluster-info";
    let mut reader = b.client(Enc::MsgPack).await;
    reader.subscribe(ch).await;
    let mut writer = a.client(Enc::Json).await;
    let writer_id = writer.ok("connect", json!({})).await["client"].clone();
    writer.publish(ch, &json!({"text": "hi"})).await;
    api_publish_retry(b.addr(), ch, &json!("api")).await;
    let first = reader.next_push().await;
    assert_eq!(first["pub"]["info"]["client"], writer_id, "{first}");
    assert_eq!(first["pub"]["info"]["user"], "", "{first}");
    let second = reader.next_push().await;
    assert!(second["pub"].get("info").is_none(), "{second}");
    let h = reader.ok("history", json!({"channel": ch})).await;
    let pubs = h["publications"].as_array().expect("publications");
    assert_eq!(pubs.len(), 2, "{h}");
    assert_eq!(pubs[0]["info"]["client"], writer_id, "{h}");
    assert!(pubs[1].get("info").is_none(), "{h}");
}

/// With tokens, a user is the same user on every server: a reader on one
/// server is told that user 42 joined on another, and presence read
/// through either shows both users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_presence_is_seen_on_every_server() {
    const SECRET: &str = "cluster test secret of 32 bytes!";
    let redis = RedisServer::start();
    let url = redis.url();
    let start = || {
        TestServer::start(&[
            "--redis",
            &url,
            "--redis-presence-ttl",
            PRESENCE_TTL,
            "--token-hmac-secret",
            SECRET,
        ])
    };
    let (a, b) = (start(), start());
    wait_ready(&a).await;
    wait_ready(&b).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |user: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": user, "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    // chat has join/leave; with a key, subscribing needs a user.
    let ch = "chat:cluster-users";
    let mut reader = b.client(Enc::MsgPack).await;
    assert_eq!(
        reader.ok("connect", json!({"token": token("17")})).await["user"],
        "17"
    );
    reader.subscribe(ch).await;
    let mut user = a.client(Enc::Json).await;
    assert_eq!(
        user.ok("connect", json!({"token": token("42")})).await["user"],
        "42"
    );
    user.subscribe(ch).await;
    let joined = loop {
        let p = reader.next_push().await;
        if p["join"]["user"] == "42" {
            break p;
        }
    };
    assert!(joined["join"]["client"].is_string(), "{joined}");
    for server in [&a, &b] {
        let users = eventually(T, "both users in presence", || async {
            let r = server
                .api_ok("/api/presence", &json!({"channel": ch}))
                .await;
            let mut users: Vec<String> = r["clients"]
                .as_object()
                .map(|m| {
                    m.values()
                        .filter_map(|c| c["user"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            users.sort();
            (users.len() == 2).then_some(users)
        })
        .await;
        assert_eq!(users, vec!["17", "42"]);
    }
}

// ---------------------------------------------------------------------------
// The Redis backbone itself, below the node: two servers' backbones
// (`wavecast::backbone::Backbone::start_redis`) on one redis-server, each
// with one shard inbox that the test reads.

/// One server's Redis backbone and the events its one shard receives.
struct RedisSide {
    backbone: wavecast::backbone::Backbone,
    inbox: wavecast::mailbox::ShardInbox,
    /// Received and not yet expected.
    seen: std::collections::VecDeque<wavecast_core::backbone::BackboneEvent>,
}

impl RedisSide {
    async fn start(redis: &RedisServer, instance: &str, presence_ttl: Duration) -> RedisSide {
        let inbox: wavecast::mailbox::ShardInbox = Arc::new(wavecast::sys::inbox::Inbox::new());
        let options = wavecast::backbone::redis::RedisOptions {
            url: redis.url(),
            presence_ttl,
            instance: instance.into(),
        };
        let backbone =
            wavecast::backbone::Backbone::start_redis(options, vec![inbox.clone()], 1024)
                .expect("start the redis backbone");
        eventually(T, "the redis backbone is connected", || async {
            backbone.is_ready().then_some(())
        })
        .await;
        RedisSide {
            backbone,
            inbox,
            seen: Default::default(),
        }
    }

    fn command(&self, cmd: wavecast_core::backbone::BackboneCommand) {
        self.backbone
            .command(wavecast_core::backbone::NodeId(0), cmd)
            .expect("backlog has room");
    }

    /// The first event received (now or within `T`) that `pick` takes;
    /// the others stay for later.
    async fn expect<R>(
        &mut self,
        what: &str,
        pick: impl Fn(&wavecast_core::backbone::BackboneEvent) -> Option<R>,
    ) -> R {
        let deadline = Instant::now() + T;
        loop {
            for msg in self.inbox.take() {
                if let wavecast::mailbox::ShardMsg::Backbone(event) = msg {
                    self.seen.push_back(event);
                }
            }
            if let Some(i) = self.seen.iter().position(|e| pick(e).is_some()) {
                let event = self.seen.remove(i).expect("found");
                return pick(&event).expect("picked");
            }
            assert!(Instant::now() < deadline, "not within {T:?}: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn presence(&self, channel: &str) -> Vec<wavecast_core::protocol::ClientInfo> {
        self.backbone
            .presence(channel.into())
            .await
            .expect("presence answered")
    }
}

/// Presence entries, join and leave, and a client's publication (pushed
/// and kept in the stream) carry `conn_info` and `chan_info` through Redis
/// from one server to another; a client without them is stored and
/// announced as before they existed, and an entry an older server wrote
/// still reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backbone_carries_conn_info_and_chan_info() {
    use wavecast_core::backbone::{BackboneCommand, BackboneEvent, BackboneReply, HistoryPolicy};
    use wavecast_core::protocol::{ClientInfo, Payload, Publication};

    let redis = RedisServer::start();
    let lease = Duration::from_millis(900);
    let mut a = RedisSide::start(&redis, "aaaa01", lease).await;
    let mut b = RedisSide::start(&redis, "bbbb02", lease).await;
    let ch = "chat:infos";
    let json = |text: &str| Payload::from_json(text.as_bytes()).expect("valid JSON");
    let client = |id: &str, user: &str, conn: Option<&str>, chan: Option<&str>| ClientInfo {
        client: id.into(),
        user: user.into(),
        conn_info: conn.map(json),
        chan_info: chan.map(json),
    };
    // Redis keeps an info's JSON text as given, except that line breaks
    // become spaces (INFO is one line).
    let ann = client(
        "aaaa01-1.0",
        "42",
        Some("{\"name\": \"Ann\",\n \"langs\": [\"en\", \"fr\"]}"),
        Some(r#"{"role":"mod"}"#),
    );
    let ann_stored = client(
        "aaaa01-1.0",
        "42",
        Some(r#"{"name": "Ann",  "langs": ["en", "fr"]}"#),
        Some(r#"{"role":"mod"}"#),
    );
    let bob = client("aaaa01-2.0", "17", None, None);
    let carol = client("aaaa01-3.0", "", Some("null"), None);

    // B listens to the channel; its presence read (after the subscribe, in
    // order) says the subscription is in place.
    b.command(BackboneCommand::Subscribe { channel: ch.into() });
    assert!(b.presence(ch).await.is_empty());
    for info in [&ann, &bob, &carol] {
        a.command(BackboneCommand::PresenceAdd {
            channel: ch.into(),
            info: info.clone(),
            announce: true,
        });
    }
    for want in [&ann_stored, &bob, &carol] {
        let got = b
            .expect("a join", |e| match e {
                BackboneEvent::Join { channel, info }
                    if channel == ch && info.client == want.client =>
                {
                    Some(info.clone())
                }
                _ => None,
            })
            .await;
        assert_eq!(&got, want);
    }
    // As stored: a client without infos exactly as before they existed.
    let hget = |client: &str| redis.cli(&["HGET", &format!("wc:{{{ch}}}:p"), client]);
    assert_eq!(hget(&bob.client), "117");
    assert_eq!(
        hget(&ann.client),
        r#"3{"client":"aaaa01-1.0","user":"42","conn_info":{"name": "Ann",  "langs": ["en", "fr"]},"chan_info":{"role":"mod"}}"#
    );
    // An entry an older server wrote (its lease far ahead) reads too.
    redis.cli(&["HSET", &format!("wc:{{{ch}}}:p"), "old-1.0", "1old user"]);
    redis.cli(&[
        "ZADD",
        &format!("wc:{{{ch}}}:px"),
        "99999999999999",
        "old-1.0",
    ]);
    let old = client("old-1.0", "old user", None, None);

    // Presence on both servers, after more than a lease: A's refreshes
    // kept its entries, infos included.
    tokio::time::sleep(lease + lease / 2).await;
    let mut want = vec![ann_stored.clone(), bob.clone(), carol.clone(), old.clone()];
    want.sort();
    assert_eq!(b.presence(ch).await, want);
    assert_eq!(a.presence(ch).await, want);

    // A client's publication: pushed to B and kept in the stream, with its
    // sender's infos.
    a.command(BackboneCommand::Publish {
        request: wavecast_core::backbone::RequestId(7),
        channel: ch.into(),
        data: json(r#"{"text":"hi"}"#),
        info: Some(Box::new(ann.clone())),
        history: HistoryPolicy {
            size: 10,
            ttl: Duration::from_secs(60),
        },
    });
    let position = a
        .expect("the publish reply", |e| match e {
            BackboneEvent::Reply {
                reply: BackboneReply::Published(r),
                ..
            } => Some(r.clone()),
            _ => None,
        })
        .await
        .expect("published");
    let pushed = b
        .expect("the publication", |e| match e {
            BackboneEvent::Publication {
                channel,
                publication,
                ..
            } if channel == ch => Some(publication.clone()),
            _ => None,
        })
        .await;
    let kept = Publication {
        offset: position.offset,
        data: json(r#"{"text":"hi"}"#),
        info: Some(Box::new(ann_stored.clone())),
    };
    assert_eq!(pushed, kept);
    let page = b
        .backbone
        .history(ch.into(), None, None, false)
        .await
        .expect("history answered");
    assert_eq!(page.publications, vec![kept]);

    // Ann leaves, named by her client id alone: the leave shows her as she
    // was present.
    a.command(BackboneCommand::PresenceRemove {
        channel: ch.into(),
        info: client(&ann.client, "", None, None),
        announce: true,
    });
    let left = b
        .expect("ann's leave", |e| match e {
            BackboneEvent::Leave { info, .. } if info.client == ann.client => Some(info.clone()),
            _ => None,
        })
        .await;
    assert_eq!(left, ann_stored);

    // Server A goes away without removing its clients: once their lease
    // is over, the next read prunes them and announces their leaves, each
    // in its own form. (B's own present client keeps the channel's
    // presence alive meanwhile, as a live server's would.)
    let dave = client("bbbb02-1.0", "9", Some(r#"{"n":1}"#), None);
    b.command(BackboneCommand::PresenceAdd {
        channel: ch.into(),
        info: dave.clone(),
        announce: false,
    });
    drop(a);
    tokio::time::sleep(lease * 2).await;
    assert_eq!(b.presence(ch).await, vec![dave, old]);
    for want in [&bob, &carol] {
        let got = b
            .expect("a pruned client's leave", |e| match e {
                BackboneEvent::Leave { info, .. } if info.client == want.client => {
                    Some(info.clone())
                }
                _ => None,
            })
            .await;
        assert_eq!(&got, want);
    }
}
