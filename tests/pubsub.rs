//! Integration tests of channels over real sockets: fan-out in one order to
//! JSON and MessagePack subscribers, publications from clients and from the
//! HTTP API, recovery, presence, join/leave, unsubscribe, error replies,
//! malformed commands, slow consumers, shutdown and heartbeats.
//!
//! Every test starts its own `wavecast` process (port 0), so they run in
//! parallel. Waits are liveness bounds, never timing measurements.
//!
//! Needs the binary: `cargo build -p wavecast && cargo test -p
//! wavecast-tests --test pubsub`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use wavecast_core::frame::OpCode;
use wavecast_tests::pubsub::*;
use wavecast_tests::{close_code, RawClient, Recv, Request, Server};

/// The data of publication number `i` of a test: nested, with escapes and
/// non-ASCII text, so that "intact" means something in both encodings.
fn data(i: u64, from: &str) -> Value {
    json!({
        "i": i,
        "from": from,
        "text": format!("message {i}: \"quoted\" \\ é ✓"),
        "list": [i, -1, true, null, {"deep": [i]}],
    })
}

/// Reads the next data message of a raw JSON client as JSON (pings are
/// skipped, unanswered).
fn raw_json(c: &mut RawClient) -> Value {
    let f = c.expect_frame(T);
    assert_eq!(f.opcode, OpCode::Text, "expected a text frame, got {f:?}");
    serde_json::from_slice(&f.payload).expect("server sent bad JSON")
}

/// A raw client on `/ws` subscribed to `channel` (JSON).
fn raw_subscriber(server: &Server, channel: &str) -> RawClient {
    let mut c = RawClient::connect(server.addr(), "/ws");
    let cmd = json!({"id": 1, "subscribe": {"channel": channel}}).to_string();
    c.send_frame(true, OpCode::Text, cmd.as_bytes())
        .expect("send subscribe");
    let reply = raw_json(&mut c);
    assert_eq!(reply["id"], 1, "subscribe reply: {reply}");
    assert!(reply["subscribe"].is_object(), "subscribe failed: {reply}");
    c
}

/// Sends `payload` in a frame of type `opcode` on a raw `/ws` connection
/// (JSON, or MessagePack if `msgpack`) and returns the close code.
fn raw_close_code(server: &Server, msgpack: bool, opcode: OpCode, payload: &[u8]) -> Option<u16> {
    let mut req = Request::upgrade(server.addr(), "/ws");
    if msgpack {
        req = req.set("Sec-WebSocket-Protocol", "wavecast.msgpack");
    }
    let mut c = RawClient::handshake(server.addr(), &req).expect("handshake");
    c.send_frame(true, opcode, payload).expect("send");
    let code = c.expect_close(T);
    // Answer the close (RFC 6455 5.5.1), so the server ends the TCP
    // connection at once instead of after its close timeout.
    let _ = c.send_close(code.unwrap_or(1000), b"");
    c.expect_tcp_close(T);
    code
}

// ---------------------------------------------------------------------------
// Fan-out and order
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_publication_once_in_order() {
    const PER_ENCODING: usize = 50;
    const N: u64 = 200;
    let ts = TestServer::start(&["--workers", "2"]);
    let channel = "fan";

    let mut subscribers = Vec::new();
    let mut position = None;
    for i in 0..2 * PER_ENCODING {
        let enc = if i % 2 == 0 { Enc::Json } else { Enc::MsgPack };
        let mut c = ts.client(enc).await;
        let r = c.subscribe(channel).await;
        let pos = (r["epoch"].clone(), r["offset"].as_u64());
        // Nothing is published yet: every subscriber starts at the same
        // position of the same epoch.
        assert_eq!(
            position.get_or_insert(pos.clone()),
            &pos,
            "subscribe reply {r}"
        );
        subscribers.push((enc, c));
    }
    let (epoch, start) = position.expect("subscribers");
    let start = start.expect("a subscribe offset");

    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|(enc, mut c)| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..N {
                    got.push(c.next_pub(channel).await);
                }
                (enc, got, c)
            })
        })
        .collect();

    // Alternate a WebSocket client and the HTTP API as publishers; each
    // publication waits for its offset, so the offsets must increase.
    let mut publisher = ts.client(Enc::Json).await;
    let mut api = ApiConn::open(ts.addr()).await;
    let mut published = BTreeMap::new();
    let mut last = start;
    for i in 0..N {
        let (offset, d) = if i % 2 == 0 {
            let d = data(i, "ws");
            (publisher.publish(channel, &d).await, d)
        } else {
            let d = data(i, "api");
            let r = api
                .post_ok("/api/publish", &json!({"channel": channel, "data": d}))
                .await;
            assert_eq!(r["epoch"], epoch, "the epoch does not change: {r}");
            (r["offset"].as_u64().expect("offset"), d)
        };
        assert!(
            offset > last,
            "publish offsets must increase: {offset} after {last}"
        );
        last = offset;
        published.insert(offset, d);
    }
    let expected: Vec<(u64, Value)> = published.into_iter().collect();
    let offsets: Vec<u64> = expected.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        offsets,
        (start + 1..=start + N).collect::<Vec<_>>(),
        "offsets are consecutive after the subscribe position"
    );

    let mut done = Vec::new();
    for r in readers {
        let (enc, got, c) = r.await.expect("reader task");
        assert_eq!(got, expected, "a {enc:?} subscriber's publications");
        done.push((enc, c));
    }
    // Nothing more was queued for anyone (no duplicate after the last):
    // the next push everywhere is a marker published now.
    let marker = ts.api_publish(channel, &json!("marker")).await;
    assert_eq!(marker, start + N + 1);
    for (enc, mut c) in done {
        assert_eq!(
            c.next_pub(channel).await,
            (marker, json!("marker")),
            "a {enc:?} subscriber's push after the last publication"
        );
        c.close().await;
    }
}

#[tokio::test]
async fn subscribe_reply_has_position_and_pushes_start_after_it() {
    let ts = TestServer::start(&[]);
    for i in 1..=3 {
        assert_eq!(ts.api_publish("pos", &data(i, "api")).await, i);
    }
    let mut a = ts.client(Enc::Json).await;
    let r = a.subscribe("pos").await;
    assert_eq!(r["offset"], 3, "offset is the channel's top: {r}");
    assert!(
        r["epoch"].as_str().is_some_and(|e| !e.is_empty()),
        "epoch: {r}"
    );
    assert!(r.get("recovered").is_none(), "no recover asked: {r}");
    let mut b = ts.client(Enc::MsgPack).await;
    let rb = b.subscribe("pos").await;
    assert_eq!(rb["epoch"], r["epoch"], "same channel, same epoch");
    assert_eq!(rb["offset"], 3);

    let offset = ts.api_publish("pos", &data(4, "api")).await;
    assert_eq!(offset, 4);
    assert_eq!(a.next_pub("pos").await, (4, data(4, "api")));
    assert_eq!(b.next_pub("pos").await, (4, data(4, "api")));
}

#[tokio::test]
async fn json_data_reaches_json_subscribers_byte_for_byte() {
    // PROTOCOL.md, publish: "JSON data is delivered to JSON subscribers
    // byte for byte as it was sent" (spacing, key order, escapes and number
    // spelling included), from a client and from the API alike.
    let ts = TestServer::start(&[]);
    let data = r#"{"b": 1,  "a":[1.50, "\u00e9", 1e2, {}]}"#;
    let mut sub = wavecast_tests::ws_connect(&ts.server.url("/ws")).await;
    let mut publisher = ts.client(Enc::Json).await;
    let subscribe = json!({"id": 1, "subscribe": {"channel": "raw"}}).to_string();
    futures_util::SinkExt::send(&mut sub, Message::text(subscribe))
        .await
        .expect("send subscribe");
    let reply = wavecast_tests::next_message(&mut sub, T).await;
    assert!(
        matches!(&reply, Some(Message::Text(t)) if t.as_str().contains("\"subscribe\"")),
        "{reply:?}"
    );

    // From a client: the command is written by hand to keep `data` as is.
    let cmd = format!(r#"{{"id":1,"publish":{{"channel":"raw","data":{data}}}}}"#);
    publisher.send_message(Message::text(cmd)).await;
    let r = publisher.reply_to(1).await;
    assert_eq!(r["publish"]["offset"], 1, "{r}");
    // From the API.
    let body = format!(r#"{{"channel":"raw","data":{data}}}"#);
    let r = api(ts.addr(), Some(KEY), "/api/publish", body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());

    for offset in [1, 2] {
        let push = wavecast_tests::next_message(&mut sub, T).await;
        let Some(Message::Text(text)) = push else {
            panic!("expected a text push, got {push:?}");
        };
        let v: Value = serde_json::from_str(text.as_str()).expect("push is JSON");
        assert_eq!(v["push"]["pub"]["offset"], offset, "{text}");
        assert!(
            text.as_str().contains(&format!(r#""data":{data}"#)),
            "data must arrive as sent: {data} in {text}"
        );
    }
}

// ---------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------

#[tokio::test]
async fn reconnect_with_recover_gets_exactly_what_was_missed() {
    let ts = TestServer::start(&[]);
    let ch = "rec";
    let mut c = ts.client(Enc::Json).await;
    let r = c.subscribe(ch).await;
    let epoch = r["epoch"].as_str().expect("epoch").to_owned();
    assert_eq!(r["offset"], 0, "a new channel: {r}");
    for i in 1..=5 {
        assert_eq!(ts.api_publish(ch, &data(i, "api")).await, i);
        assert_eq!(c.next_pub(ch).await, (i, data(i, "api")));
    }
    c.close().await;
    for i in 6..=10 {
        assert_eq!(ts.api_publish(ch, &data(i, "api")).await, i);
    }

    // Back in the other encoding: recovery does not depend on it.
    let mut c = ts.client(Enc::MsgPack).await;
    let r = c
        .ok(
            "subscribe",
            json!({"channel": ch, "recover": {"epoch": epoch, "offset": 5}}),
        )
        .await;
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(r["epoch"], epoch.as_str(), "{r}");
    assert_eq!(r["offset"], 10, "{r}");
    let recovered: Vec<(u64, Value)> = r["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("no publications in {r}"))
        .iter()
        .map(|p| (p["offset"].as_u64().expect("offset"), p["data"].clone()))
        .collect();
    let want: Vec<(u64, Value)> = (6..=10).map(|i| (i, data(i, "api"))).collect();
    assert_eq!(recovered, want, "exactly the missed publications");

    // Live from 11: the next push is 11, not a duplicate of 6..10.
    assert_eq!(ts.api_publish(ch, &data(11, "api")).await, 11);
    assert_eq!(c.next_pub(ch).await, (11, data(11, "api")));
    assert_eq!(ts.api_publish(ch, &data(12, "api")).await, 12);
    assert_eq!(c.next_pub(ch).await, (12, data(12, "api")));
}

#[tokio::test]
async fn recovery_past_history_or_from_another_epoch_says_not_recovered() {
    let ts = TestServer::start(&[]);

    // Namespace tiny keeps 3 publications; 10 are missed.
    let ch = "tiny:r";
    let mut c = ts.client(Enc::Json).await;
    let epoch = c.subscribe(ch).await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    assert_eq!(ts.api_publish(ch, &data(1, "api")).await, 1);
    assert_eq!(c.next_pub(ch).await.0, 1);
    c.close().await;
    for i in 2..=11 {
        ts.api_publish(ch, &data(i, "api")).await;
    }
    let mut c = ts.client(Enc::Json).await;
    let r = c
        .ok(
            "subscribe",
            json!({"channel": ch, "recover": {"epoch": epoch, "offset": 1}}),
        )
        .await;
    assert_eq!(r["recovered"], false, "history moved past offset 1: {r}");
    assert_eq!(
        r["publications"].as_array().map(Vec::len),
        Some(0),
        "nothing is recovered when recovery fails: {r}"
    );
    assert_eq!(r["offset"], 11, "{r}");
    // Subscribed all the same: live pushes follow.
    assert_eq!(ts.api_publish(ch, &data(12, "api")).await, 12);
    assert_eq!(c.next_pub(ch).await, (12, data(12, "api")));

    // An epoch that is not the channel's.
    let ch = "rec-epoch";
    for i in 1..=2 {
        ts.api_publish(ch, &data(i, "api")).await;
    }
    let mut c = ts.client(Enc::MsgPack).await;
    let r = c
        .ok(
            "subscribe",
            json!({"channel": ch, "recover": {"epoch": "no-such-epoch", "offset": 1}}),
        )
        .await;
    assert_eq!(r["recovered"], false, "wrong epoch: {r}");
    assert_eq!(r["publications"].as_array().map(Vec::len), Some(0), "{r}");
    assert_ne!(r["epoch"], "no-such-epoch");
}

// ---------------------------------------------------------------------------
// Presence and join/leave
// ---------------------------------------------------------------------------

#[tokio::test]
async fn presence_lists_subscribers_and_forgets_disconnected_ones() {
    let ts = TestServer::start(&[]);
    let ch = "room";
    let mut a = ts.client(Enc::Json).await;
    a.subscribe(ch).await;
    let only_a = a.presence(ch).await;
    assert_eq!(only_a.len(), 1, "presence of one subscriber: {only_a:?}");
    let a_id = only_a[0].clone();

    let mut b = ts.client(Enc::MsgPack).await;
    b.subscribe(ch).await;
    let both = a.presence(ch).await;
    assert_eq!(both.len(), 2, "two subscribers: {both:?}");
    assert!(both.contains(&a_id), "{both:?}");
    assert_eq!(b.presence(ch).await, both, "same answer in MessagePack");

    b.close().await;
    eventually(T, "presence forgets the closed client", || {
        let ts = &ts;
        async move {
            let now = ts.api_presence(ch).await;
            (now.len() == 1).then_some(now)
        }
    })
    .await;
    assert_eq!(a.presence(ch).await, vec![a_id]);
}

#[tokio::test]
async fn join_and_leave_pushes_where_the_namespace_enables_them() {
    let ts = TestServer::start(&[]);
    let ch = "chat:r";
    let mut a = ts.client(Enc::Json).await;
    a.subscribe(ch).await;
    // A subscriber sees its own join first: that tells it its client id.
    let own = a.next_push().await;
    assert_eq!(own["channel"], ch, "{own}");
    let a_id = own["join"]["client"]
        .as_str()
        .unwrap_or_else(|| panic!("expected a join push, got {own}"))
        .to_owned();
    assert_eq!(a.presence(ch).await, vec![a_id.clone()]);

    let mut b = ts.client(Enc::MsgPack).await;
    b.subscribe(ch).await;
    let b_own = b.next_push().await;
    let b_id = b_own["join"]["client"]
        .as_str()
        .unwrap_or_else(|| panic!("expected a join push, got {b_own}"))
        .to_owned();
    assert_ne!(a_id, b_id, "client ids are unique");

    let join = a.next_push().await;
    assert_eq!(
        join,
        json!({"channel": ch, "join": {"client": b_id, "user": b_own["join"]["user"]}})
    );

    b.ok("unsubscribe", json!({"channel": ch})).await;
    let leave = a.next_push().await;
    assert_eq!(leave["channel"], ch, "{leave}");
    assert_eq!(leave["leave"]["client"], b_id.as_str(), "{leave}");

    b.subscribe(ch).await;
    let join = a.next_push().await;
    assert_eq!(join["join"]["client"], b_id.as_str(), "{join}");
    b.close().await;
    let leave = a.next_push().await;
    assert_eq!(
        leave["leave"]["client"],
        b_id.as_str(),
        "leave on disconnect: {leave}"
    );

    // The default namespace has join/leave off: someone coming and going
    // leaves no trace before the next publication.
    a.subscribe("plain").await;
    let mut c = ts.client(Enc::Json).await;
    c.subscribe("plain").await;
    c.ok("unsubscribe", json!({"channel": "plain"})).await;
    c.subscribe("plain").await;
    c.close().await;
    let offset = ts.api_publish("plain", &data(1, "api")).await;
    assert_eq!(a.next_pub("plain").await, (offset, data(1, "api")));
}

// ---------------------------------------------------------------------------
// Unsubscribe and error replies
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unsubscribe_stops_pushes_and_twice_is_an_error() {
    let ts = TestServer::start(&[]);
    let mut a = ts.client(Enc::Json).await;
    a.subscribe("u1").await;
    a.subscribe("u2").await;
    assert_eq!(ts.api_publish("u1", &data(1, "api")).await, 1);
    assert_eq!(a.next_pub("u1").await.0, 1);

    let r = a.ok("unsubscribe", json!({"channel": "u1"})).await;
    assert_eq!(r, json!({}), "unsubscribe reply body");
    ts.api_publish("u1", &data(2, "api")).await;
    ts.api_publish("u1", &data(3, "api")).await;
    // The next push is u2's: nothing of u1 arrived in between.
    let offset = ts.api_publish("u2", &data(1, "api")).await;
    assert_eq!(a.next_pub("u2").await, (offset, data(1, "api")));

    assert_eq!(
        a.err("unsubscribe", json!({"channel": "u1"})).await,
        E_NOT_SUBSCRIBED
    );
    assert_eq!(
        a.err("unsubscribe", json!({"channel": "never"})).await,
        E_NOT_SUBSCRIBED
    );
    // Subscribing again works, from the current position.
    let r = a.subscribe("u1").await;
    assert_eq!(r["offset"], 3, "{r}");
}

#[tokio::test]
async fn commands_that_fail_get_documented_error_codes() {
    let ts = TestServer::start(&[]);
    for enc in [Enc::Json, Enc::MsgPack] {
        let mut c = ts.client(enc).await;
        // Clients may not publish in ro; the API may.
        assert_eq!(
            c.err("publish", json!({"channel": "ro:x", "data": 1}))
                .await,
            E_PERMISSION_DENIED,
            "{enc:?}"
        );
        c.subscribe("ro:x").await;
        let offset = ts.api_publish("ro:x", &json!(1)).await;
        assert_eq!(c.next_pub("ro:x").await, (offset, json!(1)));

        for cmd in ["subscribe", "publish", "presence", "history"] {
            let body = json!({"channel": "nope:x", "data": 1});
            assert_eq!(
                c.err(cmd, body).await,
                E_UNKNOWN_NAMESPACE,
                "{cmd} in an unknown namespace ({enc:?})"
            );
        }
        for bad in [
            "",
            "has space",
            ":x",
            "chat:",
            "tab\there",
            &"x".repeat(256),
        ] {
            assert_eq!(
                c.err("subscribe", json!({"channel": bad})).await,
                E_BAD_CHANNEL,
                "channel {bad:?} ({enc:?})"
            );
        }
        assert_eq!(
            c.err("presence", json!({"channel": "quiet:x"})).await,
            E_NOT_AVAILABLE,
            "presence is off in quiet ({enc:?})"
        );
        c.subscribe("dup").await;
        assert_eq!(
            c.err("subscribe", json!({"channel": "dup"})).await,
            E_ALREADY_SUBSCRIBED,
            "{enc:?}"
        );
        assert_eq!(
            c.err("subscribe", json!({"nochannel": "dup"})).await,
            E_BAD_REQUEST,
            "{enc:?}"
        );
        // Still usable after all those errors.
        let offset = c.publish("dup", &json!({"ok": enc == Enc::Json})).await;
        assert_eq!(
            c.next_pub("dup").await,
            (offset, json!({"ok": enc == Enc::Json}))
        );
    }
}

// ---------------------------------------------------------------------------
// Malformed commands
// ---------------------------------------------------------------------------

#[test]
fn untrustworthy_frames_close_with_4500() {
    let server = Server::start(&[]);
    let cases: [(&str, bool, OpCode, Vec<u8>); 7] = [
        ("not JSON", false, OpCode::Text, b"hello".to_vec()),
        (
            "JSON without id",
            false,
            OpCode::Text,
            br#"{"subscribe":{"channel":"a"}}"#.to_vec(),
        ),
        (
            "id 0",
            false,
            OpCode::Text,
            br#"{"id":0,"subscribe":{"channel":"a"}}"#.to_vec(),
        ),
        (
            "not an object",
            false,
            OpCode::Text,
            br#"[1,{"subscribe":{"channel":"a"}}]"#.to_vec(),
        ),
        (
            "truncated JSON",
            false,
            OpCode::Text,
            br#"{"id":1,"#.to_vec(),
        ),
        (
            "not MessagePack",
            true,
            OpCode::Binary,
            vec![0xc1, 0x00, 0xff],
        ),
        (
            "MessagePack without id",
            true,
            OpCode::Binary,
            rmp_serde::to_vec(&json!({"subscribe": {"channel": "a"}})).expect("encode"),
        ),
    ];
    for (what, msgpack, opcode, payload) in cases {
        assert_eq!(
            raw_close_code(&server, msgpack, opcode, &payload),
            Some(CLOSE_BAD_COMMAND),
            "{what}"
        );
    }
}

#[test]
fn a_frame_of_the_other_encodings_type_closes_with_4500() {
    // PROTOCOL v1 / core `close::BAD_COMMAND`: JSON travels in text frames,
    // MessagePack in binary frames, and a message of the other type is a
    // bad command (close 4500) even if its bytes would decode.
    let server = Server::start(&[]);
    let cmd = json!({"id": 1, "subscribe": {"channel": "a"}});
    assert_eq!(
        raw_close_code(&server, false, OpCode::Binary, cmd.to_string().as_bytes()),
        Some(CLOSE_BAD_COMMAND),
        "a binary frame on a JSON connection"
    );
    assert_eq!(
        raw_close_code(&server, true, OpCode::Text, cmd.to_string().as_bytes()),
        Some(CLOSE_BAD_COMMAND),
        "a text frame on a MessagePack connection"
    );
}

#[tokio::test]
async fn unknown_command_gets_an_error_reply_and_the_connection_stays() {
    let ts = TestServer::start(&[]);
    for enc in [Enc::Json, Enc::MsgPack] {
        let mut c = ts.client(enc).await;
        assert_eq!(
            c.err("frobnicate", json!({"channel": "a"})).await,
            E_UNKNOWN_COMMAND,
            "{enc:?}"
        );
        // Two commands in one message: a bad request, answered.
        c.send(&json!({"id": 99, "subscribe": {"channel": "a"}, "presence": {"channel": "a"}}))
            .await;
        let r = c.reply_to(99).await;
        assert_eq!(r["error"]["code"], E_BAD_REQUEST, "{r}");
        // Still usable.
        c.subscribe("a").await;
        let offset = ts.api_publish("a", &json!("after")).await;
        assert_eq!(c.next_pub("a").await, (offset, json!("after")));
    }
}

// ---------------------------------------------------------------------------
// Slow consumers
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_and_the_others_get_everything() {
    // 2,560 publications of 8 KiB: 20 MiB, far over what the kernel buffers
    // of one connection and a 64 KiB queue budget can hold.
    const N: u64 = 2560;
    // Heartbeats are pushed out of the way: the normal client below is not
    // read (so tokio-tungstenite answers no ping) while the slow one is
    // examined.
    let ts = TestServer::start(&[
        "--max-queued-bytes",
        "65536",
        "--workers",
        "2",
        "--heartbeat-interval",
        "1h",
    ]);
    let ch = "slow";
    let pad = "x".repeat(8 * 1024);

    let mut normal = ts.client(Enc::Json).await;
    let start = normal.subscribe(ch).await["offset"]
        .as_u64()
        .expect("offset");

    let addr = ts.addr();
    let slow = tokio::task::spawn_blocking(move || raw_subscriber_at(addr, ch))
        .await
        .expect("slow client task");

    // The normal subscriber reports how far it has read, and the publisher
    // stays at most WINDOW publications ahead of it. Without that, a test
    // reader starved of CPU on a busy machine would fall 64 KiB behind and
    // be cut as well, rightly: this test is about a client that reads, not
    // about how fast the test process reads.
    const WINDOW: u64 = 4;
    let (progress, mut read_up_to) = tokio::sync::watch::channel(start);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..N {
            let p = normal.next_pub(ch).await;
            let _ = progress.send(p.0);
            got.push(p);
        }
        (got, normal)
    });

    let mut api = ApiConn::open(ts.addr()).await;
    let mut expected = Vec::new();
    for i in 0..N {
        // The `Ref` that `wait_for` returns holds the watch's lock: it must
        // be dropped at once (here, at the end of the statement), or the
        // reader's `send` blocks its worker thread.
        let caught_up = matches!(
            tokio::time::timeout(T, read_up_to.wait_for(|&o| o + WINDOW >= start + i)).await,
            Ok(Ok(_))
        );
        if !caught_up {
            // The reader failed or stalled: its result says why.
            break;
        }
        let d = json!({"i": i, "pad": pad});
        let r = api
            .post_ok("/api/publish", &json!({"channel": ch, "data": d}))
            .await;
        expected.push((r["offset"].as_u64().expect("offset"), d));
    }
    let (got, normal) = reader.await.expect("reader task");
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "the normal subscriber must get every publication in order"
    );
    assert_eq!(
        expected.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        (start + 1..=start + N).collect::<Vec<_>>()
    );

    // The slow client's subscription is released: one subscriber is left.
    eventually(
        Duration::from_secs(60),
        "the slow consumer's subscription is released",
        || {
            let ts = &ts;
            async move {
                let r = ts.api_ok("/api/channels", &json!({})).await;
                (r["channels"][ch]["subscribers"] == 1).then_some(())
            }
        },
    )
    .await;

    // Now read what the slow client was sent: publications in order from
    // the start, then the slow-consumer close (or the end of the stream,
    // if the close frame could not be written before the server gave up).
    let mut slow = slow;
    let received = tokio::task::spawn_blocking(move || {
        let mut next = start + 1;
        loop {
            match slow.recv(T) {
                Recv::Frame(f) if f.opcode == OpCode::Ping => {}
                Recv::Frame(f) if f.opcode == OpCode::Text => {
                    let v: Value = serde_json::from_slice(&f.payload).expect("JSON push");
                    assert_eq!(v["push"]["pub"]["offset"], next, "in order, no gaps");
                    assert_eq!(v["push"]["pub"]["data"]["i"], next - start - 1);
                    next += 1;
                }
                Recv::Frame(f) if f.opcode == OpCode::Close => {
                    assert_eq!(close_code(&f.payload), Some(CLOSE_SLOW), "close code");
                    break;
                }
                Recv::Eof | Recv::Io(std::io::ErrorKind::ConnectionReset) => break,
                other => panic!("slow client: unexpected {other:?}"),
            }
        }
        next - start - 1
    })
    .await
    .expect("slow reader task");
    assert!(
        received < N,
        "the slow client was cut, so it cannot have received all {N} (got {received})"
    );

    // The server is fine: the normal subscriber still gets publications.
    let mut normal = normal;
    let offset = ts.api_publish(ch, &json!("after")).await;
    assert_eq!(normal.next_pub(ch).await, (offset, json!("after")));
}

/// A raw subscriber that will stop reading. Its receive buffer is left at
/// the kernel's default: it only grows while the application reads, so
/// with no reads the kernel holds a bounded amount (the server's send
/// buffer, at most a few MiB, plus this one), far below what the test
/// publishes. (A tiny `SO_RCVBUF` works too, but makes reading the backlog
/// at the end take minutes.)
fn raw_subscriber_at(addr: std::net::SocketAddr, channel: &str) -> RawClient {
    let mut c = RawClient::connect(addr, "/ws");
    let cmd = json!({"id": 1, "subscribe": {"channel": channel}}).to_string();
    c.send_frame(true, OpCode::Text, cmd.as_bytes())
        .expect("send subscribe");
    let reply = raw_json(&mut c);
    assert!(reply["subscribe"].is_object(), "subscribe failed: {reply}");
    c
}

// ---------------------------------------------------------------------------
// Shutdown and heartbeats
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sigterm_closes_pubsub_connections_with_4000() {
    let mut ts = TestServer::start(&[]);
    let mut a = ts.client(Enc::Json).await;
    a.subscribe("s").await;
    let mut b = ts.client(Enc::MsgPack).await;
    b.subscribe("s").await;
    ts.server.signal(libc::SIGTERM);
    let (ca, cb) = tokio::join!(a.close_code(), b.close_code());
    assert_eq!(ca, Some(CLOSE_SHUTDOWN), "JSON client");
    assert_eq!(cb, Some(CLOSE_SHUTDOWN), "MessagePack client");
    // Blocking is fine here: the clients are done.
    let status = ts.server.wait_exit(T);
    assert!(
        status.is_some_and(|s| s.success()),
        "the server exits cleanly after SIGTERM: {status:?}"
    );
}

#[test]
fn silent_pubsub_client_is_closed_by_heartbeat() {
    let server = Server::start(&[
        "--heartbeat-interval",
        "200ms",
        "--heartbeat-timeout",
        "200ms",
    ]);
    let mut c = raw_subscriber(&server, "hb");
    let deadline = std::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match c.recv(left) {
            // Never answered: that is the point.
            Recv::Frame(f) if f.opcode == OpCode::Ping => {}
            Recv::Frame(f) if f.opcode == OpCode::Close => {
                assert_eq!(close_code(&f.payload), Some(CLOSE_HEARTBEAT));
                break;
            }
            Recv::Eof | Recv::Io(std::io::ErrorKind::ConnectionReset) => break,
            other => panic!("expected pings then a heartbeat close, got {other:?}"),
        }
    }
}
