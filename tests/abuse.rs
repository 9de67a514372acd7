//! Abuse from one or a few clients, against the real binary over real
//! sockets: a ping flood that never reads, a ping flood that reads (and is
//! closed 4504 by the ping allowance), and a publish flood from several
//! connections with a fast and a slow subscriber. Each checks that the
//! server's memory stays bounded (`/api/info` and the process's RSS) or
//! that the flooder is cut, and that a subscriber of another channel keeps
//! receiving meanwhile.
//!
//! Waits are liveness bounds of seconds; nothing asserts on timing.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wavecast_core::frame::OpCode;
use wavecast_tests::pubsub::*;
use wavecast_tests::{RawClient, Recv, Request};

async fn info(server: &TestServer) -> Value {
    server.api_ok("/api/info", &json!({})).await
}

/// Publishes to `other` through the API every 100 ms until `stop`, and
/// checks that `sub` receives each one, in order, within a liveness bound.
/// Returns how many went through.
async fn other_channel_keeps_flowing(
    server: &TestServer,
    sub: &mut Client,
    stop: &AtomicBool,
) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let offset = server.api_publish("other", &json!({"n": n})).await;
        let (got, data) = tokio::time::timeout(Duration::from_secs(5), sub.next_pub("other"))
            .await
            .unwrap_or_else(|_| panic!("publication {n} on another channel stalled"));
        assert_eq!((got, data), (offset, json!({"n": n})));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_never_reads_stays_bounded_and_is_cut() {
    let server = TestServer::start(&["--heartbeat-interval", "1s", "--heartbeat-timeout", "1s"]);
    let mut other = server.client(Enc::Json).await;
    other.subscribe("other").await;
    let rss_before = server.server.resident_bytes();

    let stop = Arc::new(AtomicBool::new(false));
    let addr = server.addr();
    let flooder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = RawClient::connect(addr, "/ws");
            let ping = c.masked_frame(true, OpCode::Ping, &[7; 125]);
            let burst: Vec<u8> = ping.repeat(100);
            let deadline = Instant::now() + Duration::from_secs(40);
            let mut sent = 0u64;
            // Never reads. Writes until the server cuts it (or the bound).
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                if c.send_raw(&burst).is_err() {
                    break;
                }
                sent += 100;
            }
            sent
        })
    };

    // While it floods: its queue never holds more than a pong or two, and
    // another channel keeps flowing.
    let watch = async {
        let mut max_queued = 0u64;
        // Longer than the flooder's own 40 s: the two deadlines raced, and
        // on a loaded machine the watcher gave up first. (The ping
        // allowance cuts it long before: 4504 some 5 s into the flood, then
        // the close timeout, since it never answers; the flood that reads
        // below checks the close itself.)
        let deadline = tokio::time::Instant::now() + Duration::from_secs(50);
        // The flooder's thread may not have connected yet: "gone" only
        // counts once it was there.
        while info(&server).await["connections"] != 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the flooder never connected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        loop {
            let i = info(&server).await;
            max_queued = max_queued.max(i["queued_bytes"].as_u64().unwrap());
            assert!(
                max_queued < 64 * 1024,
                "queued bytes grew to {max_queued} under a ping flood"
            );
            if i["connections"] == 1 {
                break; // the flooder is gone
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the flooder was never cut: {i}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop.store(true, Ordering::Relaxed);
        max_queued
    };
    let (_, delivered) = tokio::join!(
        watch,
        other_channel_keeps_flowing(&server, &mut other, &stop)
    );
    let sent = flooder.join().unwrap();
    assert!(sent > 1000, "the flooder sent only {sent} pings");
    assert!(delivered > 0);
    let growth = server.server.resident_bytes().saturating_sub(rss_before);
    assert!(growth < 32 << 20, "RSS grew by {growth} bytes");
    // And the server still serves.
    assert_eq!(info(&server).await["connections"], 1);
}

/// With the server's default ping allowance (10 a second, bursts of 20): a
/// client that pings as fast as it can, and reads, gets pongs at about the
/// allowance, then the close 4504 "too many requests" some 5 s into the
/// flood; a subscriber on the same server receives publications throughout,
/// and the close is counted as a ping flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_gets_pongs_at_the_allowance_then_4504() {
    let server = TestServer::start(&[]);
    let mut other = server.client(Enc::Json).await;
    other.subscribe("other").await;
    let stop = Arc::new(AtomicBool::new(false));
    let addr = server.addr();
    let flooder = std::thread::spawn(move || {
        let mut c = RawClient::connect(addr, "/ws");
        let ping = c.masked_frame(true, OpCode::Ping, b"flood");
        let burst: Vec<u8> = ping.repeat(10);
        let started = Instant::now();
        let (mut sent, mut pongs) = (0u64, 0u64);
        // Liveness bound: the close is due about 5 s in.
        while started.elapsed() < Duration::from_secs(30) {
            if c.send_raw(&burst).is_ok() {
                sent += 10;
            }
            // Whatever came meanwhile (a millisecond's wait: thousands of
            // pings a second, without spinning a core of the shared
            // machine on writes alone).
            loop {
                match c.recv(Duration::from_millis(1)) {
                    Recv::Frame(f) if f.opcode == OpCode::Pong => pongs += 1,
                    Recv::Frame(f) if f.opcode == OpCode::Close => {
                        let code = wavecast_tests::close_code(&f.payload);
                        let reason = String::from_utf8_lossy(&f.payload[2..]).into_owned();
                        let _ = c.send_close(4504, b"");
                        return (code, reason, sent, pongs, started.elapsed());
                    }
                    // The server's own heartbeat.
                    Recv::Frame(f) if f.opcode == OpCode::Ping => {}
                    Recv::Frame(f) => panic!("unexpected {:?} frame", f.opcode),
                    Recv::TimedOut => break,
                    other => panic!("the flooder's connection ended without a close: {other:?}"),
                }
            }
        }
        panic!("a ping flood of {sent} pings was never closed ({pongs} pongs)");
    });
    let watch = async {
        while !flooder.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::Relaxed);
    };
    let (_, delivered) = tokio::join!(
        watch,
        other_channel_keeps_flowing(&server, &mut other, &stop)
    );
    let (code, reason, sent, pongs, elapsed) = flooder.join().unwrap();
    assert_eq!(
        (code, reason.as_str()),
        (Some(4504), "too many requests"),
        "after {sent} pings and {pongs} pongs"
    );
    assert!(sent > 1000, "the flooder sent only {sent} pings");
    // The burst and the rate over the time it lasted, not one per ping.
    let allowance = 20 + 10 * elapsed.as_secs() + 10;
    assert!(
        (1..=allowance).contains(&pongs),
        "{pongs} pongs for {sent} pings in {elapsed:?}"
    );
    assert!(delivered > 0);
    // Counted apart from the command floods that share its code, once the
    // connection has ended (the flooder's close reply, read by now or soon).
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let text = http(addr, &Request::get(addr, "/metrics").to_bytes())
            .await
            .text();
        if text
            .lines()
            .any(|l| l == "wavecast_ping_flood_closes_total 1")
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A publish command frame for `channel` with 8 KB of data.
fn publish_frame(c: &mut RawClient, id: u64, channel: &str) -> Vec<u8> {
    let cmd = json!({"id": id, "publish": {"channel": channel, "data": {"i": id, "pad": "x".repeat(8000)}}});
    c.masked_frame(true, OpCode::Text, cmd.to_string().as_bytes())
}

fn subscribe(c: &mut RawClient, channel: &str) {
    let cmd = json!({"id": 1, "subscribe": {"channel": channel}});
    c.send_frame(true, OpCode::Text, cmd.to_string().as_bytes())
        .unwrap();
    match c.recv(Duration::from_secs(5)) {
        Recv::Frame(f) => {
            let v: Value = serde_json::from_slice(&f.payload).unwrap();
            assert!(v["subscribe"].is_object(), "subscribe answered {v}");
        }
        other => panic!("no subscribe reply: {other:?}"),
    }
}

/// The offset of a push of a publication on `channel`, if it is one. Only
/// the head of the push is looked at (`{"push":{"channel":C,"pub":{"offset":
/// N,...`), so that the reader stays fast whatever the data.
fn pub_offset(payload: &[u8], channel: &str) -> Option<u64> {
    let head = format!(r#"{{"push":{{"channel":"{channel}","pub":{{"offset":"#);
    let rest = payload.strip_prefix(head.as_bytes())?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_flood_is_slowed_not_buffered_and_a_fast_reader_keeps_up() {
    // The flooders here test the bounds behind the rate limits (the
    // backlog, the sequencer, the queues), so the limits are off.
    let server = TestServer::start(&["--client-command-rate", "0", "--client-publish-rate", "0"]);
    let addr = server.addr();
    let mut other = server.client(Enc::Json).await;
    other.subscribe("other").await;
    let rss_before = server.server.resident_bytes();
    let stop = Arc::new(AtomicBool::new(false));

    // A subscriber of the flooded channel that reads as fast as it can: it
    // must get every publication, in order, and never be cut as slow.
    let mut fast = RawClient::connect(addr, "/ws");
    subscribe(&mut fast, "flood");
    let fast = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut last = 0u64;
            loop {
                match fast.recv(Duration::from_millis(500)) {
                    Recv::Frame(f) if f.opcode == OpCode::Text => {
                        if let Some(offset) = pub_offset(&f.payload, "flood") {
                            assert_eq!(offset, last + 1, "the fast reader missed or reordered");
                            last = offset;
                        }
                    }
                    Recv::Frame(f) if f.opcode == OpCode::Close => {
                        panic!(
                            "the fast reader was closed: {:?}",
                            wavecast_tests::close_code(&f.payload)
                        )
                    }
                    Recv::Frame(_) => {}
                    Recv::TimedOut if stop.load(Ordering::Relaxed) => return last,
                    Recv::TimedOut => {}
                    other => panic!("the fast reader's connection failed: {other:?}"),
                }
            }
        })
    };
    // A subscriber that never reads: it is the one cut as slow.
    let mut slow = RawClient::connect(addr, "/ws");
    subscribe(&mut slow, "flood");

    // Four flooders, each writing publishes as fast as the server takes
    // them, with a reader that throws the replies away.
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = RawClient::connect(addr, "/ws");
                let mut reader = c.stream().try_clone().unwrap();
                let drain = std::thread::spawn(move || {
                    let mut buf = vec![0; 64 * 1024];
                    while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
                });
                // One burst, written again and again: the flooder costs the
                // test nothing but the writes.
                let burst: Vec<u8> = (1..=50)
                    .flat_map(|id| publish_frame(&mut c, id, "flood"))
                    .collect();
                let mut id = 0u64;
                let deadline = Instant::now() + Duration::from_secs(8);
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    if c.send_raw(&burst).is_err() {
                        break;
                    }
                    id += 50;
                }
                let _ = c.stream().shutdown(std::net::Shutdown::Both);
                let _ = drain.join();
                id
            })
        })
        .collect();

    let watch = async {
        let mut max_rss = 0u64;
        let mut max_backlog = 0u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        while tokio::time::Instant::now() < deadline {
            let i = info(&server).await;
            max_backlog = max_backlog.max(i["backbone_queue"].as_u64().unwrap());
            max_rss = max_rss.max(server.server.resident_bytes());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop.store(true, Ordering::Relaxed);
        (max_rss, max_backlog)
    };
    let ((max_rss, max_backlog), delivered) = tokio::join!(
        watch,
        other_channel_keeps_flowing(&server, &mut other, &stop)
    );
    let published: u64 = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    let got = fast.join().unwrap();
    assert!(delivered > 0);
    assert!(published > 1000, "the flooders sent only {published}");
    assert!(got > 0, "the fast reader got nothing");
    // The default backlog bound (8192) plus what one batch of reads of
    // each shard can add beyond it.
    assert!(
        max_backlog < 8192 + 2 * 256 * 32,
        "backlog reached {max_backlog}"
    );
    let growth = max_rss.saturating_sub(rss_before);
    assert!(
        growth < 128 << 20,
        "RSS grew by {growth} bytes under the flood"
    );
    drop(slow);
}

/// With the default limits (20 publications a second per connection,
/// bursts of 40): a connection that keeps publishing at 50 a second gets
/// error 107 for what is over, and is closed with 4504 about five seconds
/// after its first 107; a calm client on the same server is served
/// throughout.
#[test]
fn a_connection_over_its_publish_rate_gets_107_and_then_4504() {
    // The server's defaults, written out (the test support turns the
    // limits off otherwise).
    let server = TestServer::start(&[
        "--client-command-rate",
        "100",
        "--client-publish-rate",
        "20",
    ]);
    let mut flooder = RawClient::connect(server.addr(), "/ws");
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(9) {
        sent += 1;
        let cmd = json!({"id": sent, "publish": {"channel": "flood", "data": sent}});
        if flooder
            .send_frame(true, OpCode::Text, cmd.to_string().as_bytes())
            .is_err()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut ok, mut limited, mut close) = (0, 0, None);
    loop {
        match flooder.recv(T) {
            Recv::Frame(f) if f.opcode == OpCode::Text => {
                let v: Value = serde_json::from_slice(&f.payload).unwrap();
                match v["error"]["code"].as_u64() {
                    Some(107) => limited += 1,
                    None if v.get("publish").is_some() => ok += 1,
                    other => panic!("unexpected reply {v} ({other:?})"),
                }
            }
            Recv::Frame(f) if f.opcode == OpCode::Close => {
                close = Some(u16::from_be_bytes([f.payload[0], f.payload[1]]));
                break;
            }
            Recv::Frame(_) => {}
            _ => break,
        }
    }
    assert_eq!(
        close,
        Some(4504),
        "after {ok} published and {limited} limited"
    );
    assert!(limited > 0);
    // A burst of 40, then 20 a second for the five-odd seconds it lasted.
    assert!((40..=40 + 20 * 9).contains(&ok), "{ok} published");
}
