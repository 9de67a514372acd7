//! The server-wide memory budget of history (`--max-history-bytes`,
//! `--max-history-channels`), against the real binary: one publisher
//! flooding fresh channels with large messages must not pin memory beyond
//! the budget once it is gone (issue 9, finding 5), recent history stays
//! readable, evicted history is reported as such (never as complete), and
//! other channels' subscribers are served throughout.
//!
//! Waits are liveness bounds, never timing measurements.
//!
//! Needs the binary: `cargo build -p wavecast && cargo test -p
//! wavecast-tests --test history_budget`.

use serde_json::{json, Value};
use wavecast_tests::pubsub::*;

const MAX_BYTES: u64 = 2 * 1024 * 1024;
const MAX_CHANNELS: u64 = 100;
const FLOOD: usize = 1200;
const SIZE: usize = 60_000;

/// A JSON string of about `SIZE` bytes, different for each `i`.
fn big(i: usize) -> Value {
    json!(format!("{i:0>width$}", width = SIZE - 2))
}

fn epoch(v: &Value) -> String {
    v["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no epoch in {v}"))
        .to_owned()
}

#[tokio::test]
async fn a_flood_of_large_publications_to_fresh_channels_stays_within_the_history_budget() {
    let ts = TestServer::start(&[
        "--max-history-bytes",
        &MAX_BYTES.to_string(),
        "--max-history-channels",
        &MAX_CHANNELS.to_string(),
    ]);
    let info = ts.api_ok("/api/info", &json!({})).await;
    assert_eq!(info["max_history_bytes"], MAX_BYTES, "{info}");
    assert_eq!(info["max_history_channels"], MAX_CHANNELS, "{info}");
    assert_eq!(info["history_bytes"], 0, "{info}");

    // A subscriber of another channel, served during the flood.
    let mut watcher = ts.client(Enc::Json).await;
    watcher.subscribe("watched").await;
    // A channel a client saw the start of, to recover from after the flood.
    let mut early = Vec::new();
    for n in 1..=5 {
        let r = ts
            .api_ok("/api/publish", &json!({"channel": "early", "data": n}))
            .await;
        early.push(r);
    }
    let early_seen = json!({"epoch": epoch(&early[0]), "offset": 1});

    let rss_before = ts.server.resident_bytes();
    let mut positions = Vec::new();
    let mut watched = 0u64;
    for i in 0..FLOOD {
        let r = ts
            .api_ok(
                "/api/publish",
                &json!({"channel": format!("flood{i}"), "data": big(i)}),
            )
            .await;
        positions.push(r);
        if i % 100 == 0 {
            watched += 1;
            ts.api_publish("watched", &json!({"n": watched})).await;
            assert_eq!(
                watcher.next_pub("watched").await,
                (watched, json!({"n": watched})),
                "the subscriber keeps receiving during the flood"
            );
        }
        if i % 200 == 0 {
            let info = ts.api_ok("/api/info", &json!({})).await;
            assert!(
                info["history_bytes"].as_u64().unwrap() <= MAX_BYTES,
                "{info}"
            );
            assert!(
                info["history_channels"].as_u64().unwrap() <= MAX_CHANNELS,
                "{info}"
            );
        }
    }

    // Within the budget, and full rather than empty.
    let info = ts.api_ok("/api/info", &json!({})).await;
    let bytes = info["history_bytes"].as_u64().expect("history_bytes");
    let channels = info["history_channels"].as_u64().expect("history_channels");
    assert!(bytes <= MAX_BYTES, "{info}");
    assert!(bytes > MAX_BYTES / 2, "the budget is used: {info}");
    assert!(channels <= MAX_CHANNELS, "{info}");
    // Nothing else holds the evicted channels.
    let listed = ts.api_ok("/api/info", &json!({})).await["channels"]
        .as_u64()
        .expect("channels");
    assert!(listed <= MAX_CHANNELS + 1, "{info}");
    // What the flood would have pinned without a budget: ~69 MiB.
    let grown = ts.server.resident_bytes().saturating_sub(rss_before);
    assert!(
        grown < 40 * 1024 * 1024,
        "resident memory grew by {grown} bytes over a {MAX_BYTES}-byte history budget"
    );

    // The newest channel's history is still there, exactly.
    let last = &positions[FLOOD - 1];
    let r = ts
        .api_ok(
            "/api/history",
            &json!({"channel": format!("flood{}", FLOOD - 1),
                    "since": {"epoch": epoch(last), "offset": 0}}),
        )
        .await;
    assert_eq!(r["complete"], true, "nothing of it was evicted");
    assert_eq!(r["publications"][0]["data"], big(FLOOD - 1));

    // The first one was evicted: its epoch is gone and the read says so.
    let first = &positions[0];
    let r = ts
        .api_ok(
            "/api/history",
            &json!({"channel": "flood0", "since": {"epoch": epoch(first), "offset": 0}}),
        )
        .await;
    assert_eq!(r["complete"], false, "{r}");
    assert_ne!(epoch(&r), epoch(first), "{r}");
    assert_eq!(r["publications"], json!([]), "{r}");

    // A client that saw "early" up to offset 1 recovers: it is told it
    // cannot, rather than being given a partial history as complete.
    let mut late = ts.client(Enc::Json).await;
    let reply = late
        .ok(
            "subscribe",
            json!({"channel": "early", "recover": early_seen}),
        )
        .await;
    assert_eq!(reply["recovered"], false, "{reply}");
    let r = ts
        .api_ok(
            "/api/history",
            &json!({"channel": "early", "since": early_seen}),
        )
        .await;
    assert_eq!(r["complete"], false, "{r}");

    // The watcher's channel still works after the flood.
    watched += 1;
    ts.api_publish("watched", &json!({"n": watched})).await;
    assert_eq!(
        watcher.next_pub("watched").await,
        (watched, json!({"n": watched}))
    );
}
