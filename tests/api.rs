//! Integration tests of the HTTP API (`POST /api/...` with `Authorization:
//! apikey KEY`) and the health endpoints, over real sockets against the
//! `wavecast` binary, with WebSocket subscribers checking that what the API
//! says happened did happen.
//!
//! Every test starts its own server (port 0), so they run in parallel.
//! Waits are liveness bounds, never timing measurements.
//!
//! Needs the binary: `cargo build -p wavecast && cargo test -p
//! wavecast-tests --test api`.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use wavecast_tests::pubsub::*;
use wavecast_tests::Server;

/// Every API method.
const PATHS: [&str; 7] = [
    "/api/publish",
    "/api/broadcast",
    "/api/presence",
    "/api/history",
    "/api/channels",
    "/api/disconnect",
    "/api/info",
];

/// A body with every field any of [`PATHS`] needs (each method ignores the
/// others), so a refusal can only be about the key or the method.
fn any_body() -> Vec<u8> {
    json!({"channel": "a", "channels": ["a"], "data": 1, "client": "x"})
        .to_string()
        .into_bytes()
}

// ---------------------------------------------------------------------------
// Authorization and methods
// ---------------------------------------------------------------------------

#[tokio::test]
async fn without_a_configured_key_every_api_path_is_403() {
    let server = Server::start(&[]);
    let mut paths: Vec<&str> = PATHS.to_vec();
    paths.push("/api/nonexistent");
    for path in paths {
        for key in [None, Some(KEY), Some("")] {
            let r = api(server.addr(), key, path, &any_body()).await;
            assert_eq!(r.status, 403, "POST {path} with key {key:?}: {}", r.text());
            r.error_code();
        }
        let r = http(server.addr(), &request_bytes("GET", path, Some(KEY), b"")).await;
        assert_eq!(r.status, 403, "GET {path}: {}", r.text());
    }
    // Health is not part of the API: it answers without a key.
    let r = http(server.addr(), &request_bytes("GET", "/healthz", None, b"")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn wrong_or_missing_key_is_401_and_get_is_405() {
    let ts = TestServer::start(&[]);
    for path in PATHS {
        for key in [None, Some("wrong"), Some(""), Some(&KEY[..KEY.len() - 1])] {
            let r = api(ts.addr(), key, path, &any_body()).await;
            assert_eq!(r.status, 401, "POST {path} with key {key:?}: {}", r.text());
            r.error_code();
        }
        // A key in another scheme is not the API key.
        let mut req = request_bytes("POST", path, None, &any_body());
        let at = req.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 2;
        let header = format!("Authorization: Bearer {KEY}\r\n");
        req.splice(at..at, header.bytes());
        let r = http(ts.addr(), &req).await;
        assert_eq!(r.status, 401, "Bearer scheme on {path}: {}", r.text());

        let r = http(ts.addr(), &request_bytes("GET", path, Some(KEY), b"")).await;
        assert_eq!(r.status, 405, "GET {path}: {}", r.text());
        r.error_code();
    }
    // None of the refused publishes happened.
    let h = ts.api_ok("/api/history", &json!({"channel": "a"})).await;
    assert_eq!(h["offset"], 0, "refused requests published nothing: {h}");
}

// ---------------------------------------------------------------------------
// Publish and broadcast
// ---------------------------------------------------------------------------

#[tokio::test]
async fn publish_returns_the_position_and_subscribers_get_the_data() {
    let ts = TestServer::start(&[]);
    let mut json_sub = ts.client(Enc::Json).await;
    let epoch = json_sub.subscribe("news").await["epoch"].clone();
    let mut mp_sub = ts.client(Enc::MsgPack).await;
    mp_sub.subscribe("news").await;

    let values = [
        json!({"text": "hello ✓", "n": [1, 2, {"x": null}]}),
        json!("just a string"),
        json!(12345),
        json!(null),
        json!([]),
    ];
    for (i, d) in values.iter().enumerate() {
        let r = ts
            .api_ok("/api/publish", &json!({"channel": "news", "data": d}))
            .await;
        assert_eq!(r["epoch"], epoch, "{r}");
        let offset = r["offset"].as_u64().expect("offset");
        assert_eq!(offset, i as u64 + 1, "{r}");
        assert_eq!(json_sub.next_pub("news").await, (offset, d.clone()));
        assert_eq!(mp_sub.next_pub("news").await, (offset, d.clone()));
    }

    // Clients may not publish in ro; the API may.
    let mut ro = ts.client(Enc::Json).await;
    ro.subscribe("ro:feed").await;
    let offset = ts.api_publish("ro:feed", &json!("from the backend")).await;
    assert_eq!(
        ro.next_pub("ro:feed").await,
        (offset, json!("from the backend"))
    );
}

#[tokio::test]
async fn broadcast_publishes_to_every_channel_or_to_none() {
    let ts = TestServer::start(&[]);
    let channels = ["b1", "b2", "chat:b3"];
    let mut subs = Vec::new();
    for (i, ch) in channels.iter().enumerate() {
        let enc = if i % 2 == 0 { Enc::Json } else { Enc::MsgPack };
        let mut c = ts.client(enc).await;
        c.subscribe(ch).await;
        subs.push(c);
    }
    // The chat subscriber first sees its own join.
    let own = subs[2].next_push().await;
    assert!(own["join"].is_object(), "{own}");
    // b2 already has history: offsets differ per channel.
    ts.api_publish("b2", &json!("earlier")).await;
    assert_eq!(subs[1].next_pub("b2").await.0, 1);

    let d = json!({"to": "all", "k": [1, 2, 3]});
    let r = ts
        .api_ok("/api/broadcast", &json!({"channels": channels, "data": d}))
        .await;
    let results = r["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {r}"));
    assert_eq!(results.len(), 3, "{r}");
    for ((ch, sub), res) in channels.iter().zip(&mut subs).zip(results) {
        assert_eq!(res["channel"], *ch, "{r}");
        assert!(res["epoch"].is_string(), "{r}");
        let offset = res["offset"].as_u64().expect("offset");
        assert_eq!(offset, if *ch == "b2" { 2 } else { 1 }, "{r}");
        assert_eq!(sub.next_pub(ch).await, (offset, d.clone()), "{ch}");
    }

    // One bad channel: refused, and published nowhere.
    for bad in ["has space", "nope:x", ""] {
        let body = json!({"channels": ["b1", bad, "b2"], "data": "never"});
        let r = api(
            ts.addr(),
            Some(KEY),
            "/api/broadcast",
            body.to_string().as_bytes(),
        )
        .await;
        assert!(
            (400..500).contains(&r.status),
            "broadcast with channel {bad:?}: {} {}",
            r.status,
            r.text()
        );
        r.error_code();
    }
    for body in [
        json!({"channels": [], "data": 1}),
        json!({"channels": "b1", "data": 1}),
        json!({"channels": ["b1"]}),
    ] {
        let r = api(
            ts.addr(),
            Some(KEY),
            "/api/broadcast",
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(r.status, 400, "broadcast {body}: {}", r.text());
    }
    // The next publication each subscriber sees is this one, right after
    // the broadcast: the refused broadcasts left no trace.
    for (ch, sub) in channels.iter().zip(&mut subs) {
        let offset = ts.api_publish(ch, &json!("marker")).await;
        assert_eq!(
            sub.next_pub(ch).await,
            (offset, json!("marker")),
            "{ch}: nothing between the broadcast and the marker"
        );
        assert_eq!(offset, if *ch == "b2" { 3 } else { 2 }, "{ch}");
    }
}

// ---------------------------------------------------------------------------
// Bad requests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn bad_bodies_get_4xx_with_a_message() {
    let ts = TestServer::start(&[]);
    let post = |path: &'static str, body: Vec<u8>| {
        let addr = ts.addr();
        async move { api(addr, Some(KEY), path, &body).await }
    };

    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let cases: Vec<(&str, &'static str, Vec<u8>, u16)> = vec![
        (
            "not JSON",
            "/api/publish",
            b"channel=a&data=1".to_vec(),
            400,
        ),
        (
            "truncated JSON",
            "/api/publish",
            br#"{"channel":"a","#.to_vec(),
            400,
        ),
        (
            "data not JSON",
            "/api/publish",
            br#"{"channel":"a","data":undefined}"#.to_vec(),
            400,
        ),
        (
            "data with a number out of range",
            "/api/publish",
            br#"{"channel":"a","data":1e400}"#.to_vec(),
            400,
        ),
        (
            "data nested too deep",
            "/api/publish",
            format!(r#"{{"channel":"a","data":{deep}}}"#).into_bytes(),
            400,
        ),
        (
            "missing data",
            "/api/publish",
            br#"{"channel":"a"}"#.to_vec(),
            400,
        ),
        (
            "missing channel",
            "/api/publish",
            br#"{"data":1}"#.to_vec(),
            400,
        ),
        (
            "channel not a string",
            "/api/publish",
            br#"{"channel":5,"data":1}"#.to_vec(),
            400,
        ),
        ("empty body", "/api/publish", Vec::new(), 400),
        (
            "bad channel",
            "/api/publish",
            br#"{"channel":"a b","data":1}"#.to_vec(),
            400,
        ),
        (
            "unknown namespace",
            "/api/publish",
            br#"{"channel":"nope:a","data":1}"#.to_vec(),
            404,
        ),
        (
            "presence, unknown namespace",
            "/api/presence",
            br#"{"channel":"nope:a"}"#.to_vec(),
            404,
        ),
        (
            "history, unknown namespace",
            "/api/history",
            br#"{"channel":"nope:a"}"#.to_vec(),
            404,
        ),
        (
            "presence, missing channel",
            "/api/presence",
            b"{}".to_vec(),
            400,
        ),
        (
            "history, bad since",
            "/api/history",
            br#"{"channel":"a","since":5}"#.to_vec(),
            400,
        ),
        (
            "disconnect, missing client",
            "/api/disconnect",
            b"{}".to_vec(),
            400,
        ),
        ("unknown method", "/api/frobnicate", b"{}".to_vec(), 404),
    ];
    for (what, path, body, status) in cases {
        let r = post(path, body).await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        r.error_code();
    }
    // None of them published anything.
    let h = ts.api_ok("/api/history", &json!({"channel": "a"})).await;
    assert_eq!(h["offset"], 0, "{h}");
}

#[tokio::test]
async fn a_body_over_1_mib_is_413() {
    let ts = TestServer::start(&[]);
    const MIB: usize = 1024 * 1024;
    // Exactly one byte over: a JSON body whose string fills the rest.
    let frame = r#"{"channel":"big","data":""}"#;
    let fill = MIB + 1 - frame.len();
    let body = format!(r#"{{"channel":"big","data":"{}"}}"#, "x".repeat(fill));
    assert_eq!(body.len(), MIB + 1);
    let r = api(ts.addr(), Some(KEY), "/api/publish", body.as_bytes()).await;
    assert_eq!(r.status, 413, "{}", r.text());
    r.error_code();

    // A body just under the limit is fine (the publication itself may be
    // refused by other limits, but not with 413).
    let fill = MIB - frame.len();
    let body = format!(r#"{{"channel":"big","data":"{}"}}"#, "x".repeat(fill));
    assert_eq!(body.len(), MIB);
    let r = api(ts.addr(), Some(KEY), "/api/publish", body.as_bytes()).await;
    assert_ne!(
        r.status,
        413,
        "exactly 1 MiB is within the limit: {}",
        r.text()
    );
    let h = ts
        .api_ok("/api/history", &json!({"channel": "big", "limit": 0}))
        .await;
    let expected_top = if r.status == 200 { 1 } else { 0 };
    assert_eq!(
        h["offset"], expected_top,
        "only the accepted one counts: {h}"
    );
}

// ---------------------------------------------------------------------------
// Presence, history, channels, info
// ---------------------------------------------------------------------------

#[tokio::test]
async fn presence_lists_the_subscribed_clients() {
    let ts = TestServer::start(&["--workers", "2"]);
    assert!(
        ts.api_presence("p").await.is_empty(),
        "nobody in a channel nobody used"
    );
    let mut clients = Vec::new();
    let mut ids = BTreeSet::new();
    for i in 0..4 {
        let enc = if i % 2 == 0 { Enc::Json } else { Enc::MsgPack };
        let mut c = ts.client(enc).await;
        c.subscribe("p").await;
        let via_api: BTreeSet<String> = ts.api_presence("p").await.into_iter().collect();
        let new: Vec<&String> = via_api.difference(&ids).collect();
        assert_eq!(new.len(), 1, "one new client per subscriber: {via_api:?}");
        assert!(ids.is_subset(&via_api), "{via_api:?}");
        ids = via_api;
        clients.push(c);
    }
    // The protocol's presence command gives the same answer.
    let via_ws: BTreeSet<String> = clients[0].presence("p").await.into_iter().collect();
    assert_eq!(via_ws, ids);

    // Presence off in the namespace: 409 with code 108.
    let mut q = ts.client(Enc::Json).await;
    q.subscribe("quiet:p").await;
    let r = api(
        ts.addr(),
        Some(KEY),
        "/api/presence",
        br#"{"channel":"quiet:p"}"#,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.error_code(), E_NOT_AVAILABLE);
}

#[tokio::test]
async fn history_with_since_and_limit() {
    let ts = TestServer::start(&[]);
    let ch = "h";
    let empty = ts.api_ok("/api/history", &json!({"channel": ch})).await;
    assert_eq!(empty["offset"], 0, "{empty}");
    assert_eq!(empty["publications"], json!([]), "{empty}");

    for i in 1..=10u64 {
        assert_eq!(ts.api_publish(ch, &json!({"n": i})).await, i);
    }
    let offsets = |r: &Value| -> Vec<u64> {
        r["publications"]
            .as_array()
            .unwrap_or_else(|| panic!("no publications: {r}"))
            .iter()
            .map(|p| {
                let o = p["offset"].as_u64().expect("offset");
                assert_eq!(p["data"], json!({"n": o}), "data of {o}");
                o
            })
            .collect()
    };

    let all = ts.api_ok("/api/history", &json!({"channel": ch})).await;
    assert_eq!(offsets(&all), (1..=10).collect::<Vec<_>>(), "{all}");
    assert_eq!(all["offset"], 10);
    let epoch = all["epoch"].as_str().expect("epoch").to_owned();

    let since = |offset: u64| json!({"epoch": epoch, "offset": offset});
    let r = ts
        .api_ok("/api/history", &json!({"channel": ch, "since": since(4)}))
        .await;
    assert_eq!(offsets(&r), (5..=10).collect::<Vec<_>>(), "{r}");
    assert_eq!(r["complete"], true, "{r}");

    let r = ts
        .api_ok(
            "/api/history",
            &json!({"channel": ch, "since": since(4), "limit": 3}),
        )
        .await;
    assert_eq!(
        offsets(&r),
        vec![5, 6, 7],
        "oldest first, at most limit: {r}"
    );
    assert_eq!(r["complete"], false, "the limit cut it short: {r}");
    assert_eq!(r["offset"], 10, "{r}");

    let r = ts
        .api_ok("/api/history", &json!({"channel": ch, "since": since(10)}))
        .await;
    assert_eq!(offsets(&r), Vec::<u64>::new(), "nothing after the top: {r}");
    assert_eq!(r["complete"], true, "{r}");

    let r = ts
        .api_ok("/api/history", &json!({"channel": ch, "limit": 0}))
        .await;
    assert_eq!(offsets(&r), Vec::<u64>::new(), "{r}");
    assert_eq!(r["offset"], 10, "limit 0 still gives the position: {r}");

    let r = ts
        .api_ok(
            "/api/history",
            &json!({"channel": ch, "since": {"epoch": "other", "offset": 4}}),
        )
        .await;
    assert_eq!(r["complete"], false, "another epoch cannot continue: {r}");

    // Namespace tiny keeps only the last 3.
    for i in 1..=5u64 {
        ts.api_publish("tiny:h", &json!({"n": i})).await;
    }
    let r = ts
        .api_ok("/api/history", &json!({"channel": "tiny:h"}))
        .await;
    assert_eq!(offsets(&r), vec![3, 4, 5], "{r}");
    assert_eq!(r["complete"], false, "1 and 2 are gone: {r}");
}

#[tokio::test]
async fn channels_counts_subscribers_across_workers() {
    let ts = TestServer::start(&["--workers", "2"]);
    let empty = ts.api_ok("/api/channels", &json!({})).await;
    assert_eq!(empty["channels"], json!({}), "{empty}");

    // Enough connections that both workers almost surely hold some
    // (the kernel spreads them over the two listening sockets).
    let mut clients = Vec::new();
    for i in 0..10 {
        let enc = if i % 2 == 0 { Enc::Json } else { Enc::MsgPack };
        let mut c = ts.client(enc).await;
        c.subscribe("c1").await;
        if i < 4 {
            c.subscribe("c2").await;
        }
        clients.push(c);
    }
    let r = ts.api_ok("/api/channels", &json!({})).await;
    assert_eq!(
        r["channels"],
        json!({"c1": {"subscribers": 10}, "c2": {"subscribers": 4}}),
        "{r}"
    );

    // Unsubscribing and disconnecting are counted too.
    clients[0].ok("unsubscribe", json!({"channel": "c2"})).await;
    let gone = clients.pop().expect("a client");
    gone.close().await;
    eventually(T, "channels counts 9 and 3", || {
        let ts = &ts;
        async move {
            let r = ts.api_ok("/api/channels", &json!({})).await;
            (r["channels"] == json!({"c1": {"subscribers": 9}, "c2": {"subscribers": 3}}))
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn info_counts_connections() {
    let ts = TestServer::start(&["--workers", "2"]);
    let r = ts.api_ok("/api/info", &json!({})).await;
    assert_eq!(
        r["connections"], 0,
        "HTTP requests are not connections: {r}"
    );
    assert_eq!(r["workers"], 2, "{r}");
    assert!(r["memory"].is_object(), "{r}");

    let mut clients = Vec::new();
    for i in 0..5 {
        let enc = if i % 2 == 0 { Enc::Json } else { Enc::MsgPack };
        let mut c = ts.client(enc).await;
        c.subscribe("i").await;
        clients.push(c);
    }
    let r = ts.api_ok("/api/info", &json!({})).await;
    assert_eq!(r["connections"], 5, "{r}");
    assert_eq!(r["channels"], 1, "{r}");

    for c in clients.drain(..2) {
        c.close().await;
    }
    eventually(T, "info counts 3 connections", || {
        let ts = &ts;
        async move {
            let r = ts.api_ok("/api/info", &json!({})).await;
            (r["connections"] == 3).then_some(())
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Disconnect
// ---------------------------------------------------------------------------

#[tokio::test]
async fn disconnect_closes_the_client_with_4004_or_4501() {
    let ts = TestServer::start(&["--workers", "2"]);
    for (reconnect, code) in [
        (None, CLOSE_DISCONNECTED),
        (Some(true), CLOSE_DISCONNECTED),
        (Some(false), CLOSE_FORCE_DISCONNECT),
    ] {
        let ch = "d";
        let mut victim = ts.client(Enc::MsgPack).await;
        victim.subscribe(ch).await;
        let mut other = ts.client(Enc::Json).await;
        let before: BTreeSet<String> = ts.api_presence(ch).await.into_iter().collect();
        other.subscribe(ch).await;
        let after: BTreeSet<String> = ts.api_presence(ch).await.into_iter().collect();
        // `before` holds the victim alone (earlier rounds' clients are gone).
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(after.len(), 2, "{after:?}");
        let id = before.into_iter().next().expect("victim id");

        let mut body = json!({"client": id});
        if let Some(r) = reconnect {
            body["reconnect"] = json!(r);
        }
        let r = ts.api_ok("/api/disconnect", &body).await;
        assert_eq!(r, json!({"disconnected": id}), "documented answer");
        assert_eq!(
            victim.close_code().await,
            Some(code),
            "disconnect with reconnect {reconnect:?}"
        );
        // Only the victim: the other client still gets publications.
        let offset = ts.api_publish(ch, &json!("still here")).await;
        assert_eq!(other.next_pub(ch).await, (offset, json!("still here")));
        // Gone from presence; disconnecting it again finds nobody.
        eventually(T, "the disconnected client leaves presence", || {
            let ts = &ts;
            let id = id.clone();
            async move {
                let now = ts.api_presence(ch).await;
                (!now.contains(&id)).then_some(())
            }
        })
        .await;
        let r = api(
            ts.addr(),
            Some(KEY),
            "/api/disconnect",
            json!({"client": id}).to_string().as_bytes(),
        )
        .await;
        assert_eq!(r.status, 404, "{}", r.text());
        other.close().await;
        eventually(T, "channel d is empty", || {
            let ts = &ts;
            async move { ts.api_presence(ch).await.is_empty().then_some(()) }
        })
        .await;
    }
    let r = api(
        ts.addr(),
        Some(KEY),
        "/api/disconnect",
        br#"{"client":"no-such-client"}"#,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    r.error_code();
}

// ---------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------

#[tokio::test]
async fn health_readiness_and_unknown_paths() {
    let ts = TestServer::start(&[]);
    for (path, status) in [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/nope", 404),
        ("/", 404),
    ] {
        let r = http(ts.addr(), &request_bytes("GET", path, None, b"")).await;
        assert_eq!(r.status, status, "GET {path}: {}", r.text());
    }
    // Health needs no key even though the API has one.
    let r = http(
        ts.addr(),
        &request_bytes("GET", "/healthz", Some("wrong"), b""),
    )
    .await;
    assert_eq!(r.status, 200);
}

/// History answers each publication's data byte for byte as it was
/// published (key order, number spelling), like WebSocket pushes do.
#[tokio::test]
async fn history_returns_the_data_verbatim() {
    let ts = TestServer::start(&[]);
    let data = r#"{"z":1,"a":[1.50,2e3],"m":{"y":null,"b":"x"}}"#;
    let body = format!(r#"{{"channel":"verbatim","data":{data}}}"#);
    let r = api(ts.addr(), Some(KEY), "/api/publish", body.as_bytes()).await;
    assert_eq!(r.status, 200, "publish: {}", r.text());
    let r = api(
        ts.addr(),
        Some(KEY),
        "/api/history",
        br#"{"channel":"verbatim"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "history: {}", r.text());
    let text = r.text();
    assert!(
        text.contains(&format!(r#"{{"offset":1,"data":{data}}}"#)),
        "data spliced verbatim: {text}"
    );
    let h = r.json();
    assert_eq!(h["publications"][0]["data"]["a"][0], json!(1.5));
}
