//! Server-Sent Events streams in the node (docs/PROTOCOL.md "Server-Sent
//! Events"): the answer (refusals before the stream, the head and the
//! `open` event once every channel is subscribed), `pub` events whose
//! shared part is one buffer for every stream and whose ids hold each
//! stream's positions, resuming from a position (exactly the missed
//! publications, or a `gap`), a gap the node cannot fill mid-stream
//! (subscribed again with recover), tokens and their expiry, the
//! slow-consumer budget, and the `close` event.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use wavecast_core::auth::{AuthConfig, TokenConfig, Verifier};
use wavecast_core::backbone::{
    BackboneCommand, BackboneError, BackboneEvent, BackboneReply, NodeId,
};
use wavecast_core::connection::ConnectionConfig;
use wavecast_core::namespace::{NamespaceOptions, Namespaces, Permission};
use wavecast_core::node::{ConnId, NodeConfig};
use wavecast_core::protocol::StreamPosition;
use wavecast_core::sse::SseRequest;
use wavecast_core::standalone::Standalone;
use wavecast_core::Timestamp;

use common::harness::{at, Harness};
use common::pos;

const RETRY: Duration = Duration::from_millis(1500);

/// One event of a stream, as a browser reads it.
#[derive(Debug, Clone, PartialEq)]
struct Ev {
    id: Option<String>,
    event: String,
    data: Value,
}

fn config() -> NodeConfig {
    let mut namespaces = Namespaces::default();
    namespaces.named.insert(
        "short".into(),
        NamespaceOptions {
            history_size: 2,
            ..NamespaceOptions::default()
        },
    );
    namespaces.named.insert(
        "closed".into(),
        NamespaceOptions {
            allow_subscribe: Permission::None,
            ..NamespaceOptions::default()
        },
    );
    NodeConfig {
        namespaces,
        connection: ConnectionConfig {
            heartbeat_interval: Duration::from_secs(3600),
            max_queued_bytes: 64 * 1024,
            ..ConnectionConfig::default()
        },
        max_subscriptions: 4,
        ..NodeConfig::default()
    }
}

fn harness() -> Harness {
    Harness::new(Standalone::new(config(), 7))
}

fn request(channels: &[&str], positions: Vec<Option<StreamPosition>>) -> SseRequest {
    let positions = if positions.is_empty() {
        vec![None; channels.len()]
    } else {
        positions
    };
    SseRequest {
        channels: channels.iter().map(|c| c.to_string()).collect(),
        positions,
        token: None,
        origin: None,
    }
}

fn open(h: &mut Harness, now: Timestamp, request: SseRequest) -> ConnId {
    let id = h.core.node.handle_sse(now, request, RETRY);
    h.core.pump(now);
    id
}

/// What a stream was sent since the last look, as text, written as the
/// driver writes it (so a stream that ended is released).
fn text(h: &mut Harness, id: ConnId) -> String {
    while h.core.node.poll_transmit().is_some() {}
    let mut out = Vec::new();
    while let Some(q) = h.core.node.queue(id) {
        if q.is_empty() {
            break;
        }
        let before = out.len();
        for s in q.slices() {
            out.extend_from_slice(s);
        }
        let n = out.len() - before;
        h.core.node.handle_written(Timestamp::ZERO, id, n);
    }
    String::from_utf8(out).unwrap()
}

/// The events in a stream's text (after the response head, if any);
/// comments are events named `:`.
fn parse(text: &str) -> Vec<Ev> {
    let body = match text.find("\r\n\r\n") {
        Some(i) if text.starts_with("HTTP/1.1 ") => &text[i + 4..],
        _ => text,
    };
    let mut out = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.is_empty()) {
        if block == ":" {
            out.push(Ev {
                id: None,
                event: ":".into(),
                data: Value::Null,
            });
            continue;
        }
        if block.lines().all(|l| l.starts_with("retry: ")) {
            // Sets the reconnection delay; not an event.
            assert!(block[7..].parse::<u64>().is_ok(), "{block:?}");
            continue;
        }
        let mut ev = Ev {
            id: None,
            event: String::new(),
            data: Value::Null,
        };
        for line in block.lines() {
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "id" => ev.id = Some(value.to_owned()),
                "event" => ev.event = value.to_owned(),
                "data" => ev.data = serde_json::from_str(value).expect("one line of JSON"),
                "retry" => assert!(value.parse::<u64>().is_ok()),
                other => panic!("unexpected field {other:?} in {block:?}"),
            }
        }
        out.push(ev);
    }
    out
}

fn events(h: &mut Harness, id: ConnId) -> Vec<Ev> {
    parse(&text(h, id))
}

/// Publishes `n` publications on `channel` through a WebSocket client.
fn publish(h: &mut Harness, now: Timestamp, channel: &str, from: u64, n: u64) {
    let c = h.open(now);
    for i in from..from + n {
        let r = h.ask(
            now,
            c,
            json!({"id": i, "publish": {"channel": channel, "data": {"n": i}}}),
        );
        assert_eq!(r["publish"]["offset"], i, "{r}");
    }
    h.core.node.handle_eof(now, c);
    h.core.pump(now);
}

fn epoch(h: &Harness, channel: &str) -> String {
    h.core
        .hub
        .channels()
        .into_iter()
        .find(|c| c.name == channel)
        .map(|c| c.epoch)
        .expect("channel known to the hub")
}

fn pubs(events: &[Ev]) -> Vec<(String, u64)> {
    events
        .iter()
        .filter(|e| e.event == "pub")
        .map(|e| {
            (
                e.data["channel"].as_str().unwrap().to_owned(),
                e.data["offset"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_stream_opens_with_its_positions_and_every_stream_shares_one_pub_event() {
    let mut h = harness();
    publish(&mut h, at(0), "news", 1, 2);
    let e_news = epoch(&h, "news");
    let mut streams = Vec::new();
    for _ in 0..10 {
        streams.push(open(&mut h, at(1), request(&["news", "room"], vec![])));
    }
    let e_room = epoch(&h, "room");
    let head = text(&mut h, streams[0]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    for header in [
        "Content-Type: text/event-stream\r\n",
        "Cache-Control: no-cache\r\n",
        "X-Accel-Buffering: no\r\n",
    ] {
        assert!(head.contains(header), "{head}");
    }
    assert!(head.contains("\nretry: 1500\n"), "{head}");
    let opened = parse(&head);
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0].event, "open");
    assert_eq!(
        opened[0].id.as_deref(),
        Some(&*format!("{e_news}.2,{e_room}.0"))
    );
    assert_eq!(
        opened[0].data["channels"],
        json!({"news": {"epoch": e_news, "offset": 2}, "room": {"epoch": e_room, "offset": 0}})
    );
    assert_eq!(opened[0].data["user"], "");
    assert_eq!(opened[0].data["expires"], false);
    assert!(opened[0].data["client"].is_string());
    for &s in &streams[1..] {
        assert_eq!(events(&mut h, s).len(), 1);
    }
    // A WebSocket subscriber of the same channel, beside them.
    let ws = h.open(at(1));
    h.ask(
        at(1),
        ws,
        json!({"id": 1, "subscribe": {"channel": "news"}}),
    );

    publish(&mut h, at(2), "news", 3, 1);
    let mut shared = BTreeSet::new();
    for &s in &streams {
        let q = h.core.node.queue(s).unwrap();
        let frames: Vec<_> = q.iter().cloned().collect();
        assert_eq!(frames.len(), 2, "an id line and the event");
        assert_eq!(
            &frames[0][..],
            format!("id: {e_news}.3,{e_room}.0\n").as_bytes()
        );
        shared.insert(frames[1].as_ptr() as usize);
    }
    assert_eq!(shared.len(), 1, "one event buffer for every stream");
    for &s in &streams {
        let evs = events(&mut h, s);
        assert_eq!(evs.len(), 1);
        // Its sender, a WebSocket client, is named.
        let info = &evs[0].data["info"];
        assert!(info["client"].is_string(), "{:?}", evs[0]);
        assert_eq!(
            evs[0].data,
            json!({"channel": "news", "offset": 3, "data": {"n": 3}, "info": info})
        );
    }
    let seen = h.seen(ws);
    assert_eq!(
        seen.messages[0]["push"]["pub"]["offset"], 3,
        "the WebSocket too"
    );
    publish(&mut h, at(3), "room", 1, 1);
    let evs = events(&mut h, streams[3]);
    assert_eq!(
        evs[0].id.as_deref(),
        Some(&*format!("{e_news}.3,{e_room}.1"))
    );
    assert_eq!(pubs(&evs), [("room".into(), 1)]);
    // A stream is a subscriber like any other.
    assert_eq!(h.core.node.subscribers("news"), 11);
}

#[test]
fn a_stream_resumes_each_channel_exactly_from_its_position() {
    let mut h = harness();
    publish(&mut h, at(0), "news", 1, 5);
    let e = epoch(&h, "news");
    let s = open(
        &mut h,
        at(1),
        request(&["room", "news"], vec![None, Some(pos(&e, 2))]),
    );
    let e_room = epoch(&h, "room");
    let evs = events(&mut h, s);
    assert_eq!(evs[0].event, "open");
    assert_eq!(
        evs[0].id.as_deref(),
        Some(&*format!("{e_room}.0,{e}.2")),
        "open carries the position resumed from"
    );
    assert_eq!(
        evs[0].data["channels"]["news"],
        json!({"epoch": e, "offset": 2, "recovered": true})
    );
    assert_eq!(
        pubs(&evs),
        [("news".into(), 3), ("news".into(), 4), ("news".into(), 5)]
    );
    let ids: Vec<_> = evs[1..].iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(
        ids,
        [3, 4, 5].map(|n| format!("{e_room}.0,{e}.{n}")),
        "each event moves its channel's position"
    );
    publish(&mut h, at(2), "news", 6, 1);
    let evs = events(&mut h, s);
    assert_eq!(pubs(&evs), [("news".into(), 6)]);
    // Resuming from the last id gives nothing twice.
    let last = parse_id_of(&evs[0]);
    let again = open(&mut h, at(3), request(&["room", "news"], last));
    let evs = events(&mut h, again);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].data["channels"]["news"]["recovered"], true);
}

fn parse_id_of(ev: &Ev) -> Vec<Option<StreamPosition>> {
    let id = ev.id.as_deref().unwrap();
    wavecast_core::protocol::sse::parse_id(id, id.split(',').count()).unwrap()
}

#[test]
fn a_position_that_cannot_be_recovered_gets_a_gap_event() {
    let mut h = harness();
    publish(&mut h, at(0), "short:x", 1, 5);
    publish(&mut h, at(0), "news", 1, 3);
    let (ex, en) = (epoch(&h, "short:x"), epoch(&h, "news"));
    let s = open(
        &mut h,
        at(1),
        request(
            &["short:x", "news", "other"],
            vec![Some(pos(&ex, 1)), Some(pos("gone", 7)), Some(pos(&en, 9))],
        ),
    );
    let evs = events(&mut h, s);
    assert_eq!(evs[0].event, "open");
    assert_eq!(
        evs[0].id.as_deref(),
        Some(&*format!("{ex}.1,gone.7,{en}.9")),
        "not yet the new positions"
    );
    let gaps: Vec<_> = evs.iter().filter(|e| e.event == "gap").collect();
    assert_eq!(gaps.len(), 3, "{evs:?}");
    let other = epoch(&h, "other");
    assert_eq!(
        gaps[0].data,
        json!({"channel": "short:x", "epoch": ex, "offset": 5, "reason": "history expired"})
    );
    assert_eq!(
        gaps[0].id.as_deref(),
        Some(&*format!("{ex}.5,gone.7,{en}.9"))
    );
    assert_eq!(
        gaps[1].data,
        json!({"channel": "news", "epoch": en, "offset": 3, "reason": "epoch changed"})
    );
    assert_eq!(
        gaps[2].data,
        json!({"channel": "other", "epoch": other, "offset": 0, "reason": "epoch changed"})
    );
    assert_eq!(
        gaps[2].id.as_deref(),
        Some(&*format!("{ex}.5,{en}.3,{other}.0"))
    );
    assert!(pubs(&evs).is_empty());
    // A position past the end, in the right epoch.
    let s = open(&mut h, at(2), request(&["news"], vec![Some(pos(&en, 9))]));
    let evs = events(&mut h, s);
    assert_eq!(evs[1].data["reason"], "unknown position");
    publish(&mut h, at(3), "news", 4, 1);
    assert_eq!(pubs(&events(&mut h, s)), [("news".into(), 4)], "then live");
}

/// Moves commands to the hub and events back, but answers the history
/// asks `fail` picks with "unavailable" instead.
fn pump_failing(h: &mut Harness, now: Timestamp, fail: impl Fn(&BackboneCommand) -> bool) {
    loop {
        let mut moved = false;
        while let Some(cmd) = h.core.node.poll_backbone() {
            moved = true;
            if let (true, BackboneCommand::History { request, .. }) = (fail(&cmd), &cmd) {
                let reply = BackboneReply::History(Err(BackboneError::Unavailable));
                h.core.node.handle_backbone(
                    now,
                    BackboneEvent::Reply {
                        request: *request,
                        reply,
                    },
                );
                continue;
            }
            h.core.hub.handle_command(now, NodeId(0), cmd);
        }
        while let Some((_, ev)) = h.core.hub.poll_event() {
            h.core.node.handle_backbone(now, ev);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// Publishes on the hub as another node would, and loses what the hub
/// sends this node meanwhile (a broken backbone link).
fn publish_unseen(h: &mut Harness, now: Timestamp, channel: &str, n: u64) {
    let options = NamespaceOptions::default();
    for i in 0..n {
        h.core.hub.handle_command(
            now,
            NodeId(1),
            BackboneCommand::Publish {
                request: wavecast_core::backbone::RequestId(1_000_000 + i),
                channel: channel.into(),
                data: wavecast_core::protocol::Payload::from_json(b"\"lost\"").unwrap(),
                info: None,
                history: if channel.starts_with("short:") {
                    NamespaceOptions {
                        history_size: 2,
                        ..options
                    }
                    .history()
                } else {
                    options.history()
                },
            },
        );
    }
    while h.core.hub.poll_event().is_some() {}
}

#[test]
fn a_gap_the_node_cannot_fill_is_resumed_by_subscribing_again_with_recover() {
    let mut h = harness();
    publish(&mut h, at(0), "news", 1, 2);
    let e = epoch(&h, "news");
    let s = open(&mut h, at(1), request(&["news"], vec![]));
    events(&mut h, s);
    // The link drops; 3 and 4 go by unseen; the link is back, and the
    // node's own fill fails: the stream subscribes again with recover
    // and gets exactly 3 and 4, then the live ones.
    publish_unseen(&mut h, at(2), "news", 2);
    h.core.node.handle_backbone(at(3), BackboneEvent::Reset);
    let fills = std::cell::Cell::new(0);
    pump_failing(&mut h, at(3), |cmd| {
        let fill = matches!(
            cmd,
            BackboneCommand::History {
                since: Some(_),
                limit: None,
                ..
            }
        ) && fills.get() == 0;
        if fill {
            fills.set(1);
        }
        fill
    });
    let evs = events(&mut h, s);
    assert!(evs.iter().all(|e| e.event == "pub"), "{evs:?}");
    assert_eq!(pubs(&evs), [("news".into(), 3), ("news".into(), 4)]);
    assert_eq!(evs[1].id.as_deref(), Some(&*format!("{e}.4")));
    publish(&mut h, at(4), "news", 5, 1);
    assert_eq!(pubs(&events(&mut h, s)), [("news".into(), 5)]);
    assert_eq!(h.core.node.subscribers("news"), 1);
}

#[test]
fn a_gap_history_cannot_fill_mid_stream_is_a_gap_event_and_the_stream_goes_on() {
    let mut h = harness();
    publish(&mut h, at(0), "short:x", 1, 1);
    let e = epoch(&h, "short:x");
    let s = open(&mut h, at(1), request(&["short:x", "news"], vec![]));
    let en = epoch(&h, "news");
    events(&mut h, s);
    publish_unseen(&mut h, at(2), "short:x", 4);
    h.core.node.handle_backbone(at(3), BackboneEvent::Reset);
    h.core.pump(at(3));
    let evs = events(&mut h, s);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(
        evs[0].data,
        json!({"channel": "short:x", "epoch": e, "offset": 5, "reason": "history expired"})
    );
    assert_eq!(evs[0].id.as_deref(), Some(&*format!("{e}.5,{en}.0")));
    publish(&mut h, at(4), "short:x", 6, 1);
    assert_eq!(pubs(&events(&mut h, s)), [("short:x".into(), 6)]);
}

#[test]
fn the_backbone_unavailable_at_open_ends_the_stream_with_a_close_event() {
    let mut h = harness();
    let s = h
        .core
        .node
        .handle_sse(at(0), request(&["a", "b"], vec![]), RETRY);
    let first = std::cell::Cell::new(true);
    pump_failing(&mut h, at(0), |cmd| {
        matches!(cmd, BackboneCommand::History { .. }) && first.replace(false)
    });
    let text = text(&mut h, s);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let evs = parse(&text);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].event, "close");
    assert_eq!(evs[0].data["code"], 1013);
    assert!(
        text.contains("retry: 1500\n"),
        "the browser comes back by itself"
    );
    assert!(!h.core.node.ids().any(|i| i == s), "the stream ended");
    assert_eq!(
        h.core.node.subscribers("a") + h.core.node.subscribers("b"),
        0
    );
}

#[test]
fn refusals_come_before_the_stream_with_a_status_and_the_channel() {
    let mut h = harness();
    let cases = [
        (vec!["ok", "closed:x"], 403, 104, Some("closed:x")),
        (vec!["nope:x"], 404, 103, Some("nope:x")),
        (vec!["a", "b", "c", "d", "e"], 400, 107, None),
        (vec![], 400, 101, None),
    ];
    for (channels, status, code, channel) in cases {
        let s = open(&mut h, at(0), request(&channels, vec![]));
        let text = text(&mut h, s);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["error"]["code"], code, "{text}");
        assert_eq!(body["error"]["channel"].as_str(), channel, "{text}");
        assert!(!h.core.node.ids().any(|i| i == s), "nothing stays behind");
    }
    assert_eq!(h.core.node.subscribers("ok"), 0);
    assert_eq!(h.core.node.channels().count(), 0);
}

const SECRET: &[u8] = b"node sse test secret, 32 bytes!!";
const ORIGIN: u64 = 1_800_000_000;

fn token(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap()
}

fn secured() -> Harness {
    let verifier = Verifier::new(TokenConfig {
        hmac_secret: Some(SECRET.to_vec()),
        leeway: Duration::ZERO,
        max_size: 8192,
        ..TokenConfig::default()
    })
    .unwrap();
    let mut namespaces = Namespaces {
        default: NamespaceOptions::secured(),
        named: Default::default(),
    };
    namespaces.named.insert(
        "team".into(),
        NamespaceOptions {
            user_limited: true,
            ..NamespaceOptions::secured()
        },
    );
    Harness::new(Standalone::new(
        NodeConfig {
            namespaces,
            auth: AuthConfig {
                verifier: Some(verifier),
                allow_anonymous: false,
                connect_timeout: Duration::from_secs(10),
                refresh_grace: Duration::from_secs(30),
                unix_origin_micros: ORIGIN * 1_000_000,
            },
            connection: ConnectionConfig {
                heartbeat_interval: Duration::from_secs(24 * 3600),
                ..ConnectionConfig::default()
            },
            ..NodeConfig::default()
        },
        7,
    ))
}

fn with_token(channels: &[&str], token: Option<String>) -> SseRequest {
    SseRequest {
        token,
        ..request(channels, vec![])
    }
}

#[test]
fn a_stream_authenticates_like_a_connect_and_ends_when_its_token_does() {
    let mut h = secured();
    let cases = [
        (None, 401, 112),
        (Some("not a jwt".to_owned()), 401, 112),
        (
            Some(token(json!({"sub": "42", "exp": ORIGIN - 1}))),
            401,
            111,
        ),
    ];
    for (t, status, code) in cases {
        let s = open(&mut h, at(0), with_token(&["news"], t));
        let text = text(&mut h, s);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        assert!(text.contains(&format!("\"code\":{code}")), "{text}");
    }
    // A user-limited channel of other users.
    let t = token(json!({"sub": "42", "exp": ORIGIN + 600}));
    let s = open(
        &mut h,
        at(0),
        with_token(&["news", "team:room#7"], Some(t.clone())),
    );
    let text = text(&mut h, s);
    assert!(text.starts_with("HTTP/1.1 403 "), "{text}");
    assert!(text.contains("\"channel\":\"team:room#7\""), "{text}");

    let s = open(
        &mut h,
        at(0),
        with_token(&["news", "team:room#42"], Some(t)),
    );
    let evs = events(&mut h, s);
    assert_eq!(evs[0].data["user"], "42");
    assert_eq!(evs[0].data["expires"], true);
    assert_eq!(evs[0].data["ttl"], 600);
    // It shows in presence as its user.
    let presence = h.core.node.subscribers("team:room#42");
    assert_eq!(presence, 1);
    h.tick(at(600 + 29));
    assert!(events(&mut h, s).is_empty());
    h.tick(at(600 + 30));
    let evs = events(&mut h, s);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].event, "close");
    assert_eq!(
        evs[0].data,
        json!({"code": 4005, "reason": "token expired"})
    );
    assert!(!h.core.node.ids().any(|i| i == s));
    assert_eq!(h.core.node.subscribers("news"), 0);
}

#[test]
fn a_stream_that_does_not_read_is_cut_off_and_the_others_keep_receiving() {
    let mut h = harness();
    let slow = open(&mut h, at(0), request(&["news"], vec![]));
    let fast = open(&mut h, at(0), request(&["news"], vec![]));
    events(&mut h, slow);
    events(&mut h, fast);
    let c = h.open(at(0));
    let big = "x".repeat(8 * 1024);
    let mut cut_at = None;
    for i in 1..=20u64 {
        // The kernel refuses the slow one's bytes: its budget applies.
        h.core.node.handle_write_blocked(slow);
        let r = h.ask(
            at(1),
            c,
            json!({"id": i, "publish": {"channel": "news", "data": big}}),
        );
        assert_eq!(r["publish"]["offset"], i);
        let evs = events(&mut h, fast);
        assert_eq!(pubs(&evs), [("news".into(), i)]);
        if cut_at.is_none() && !h.core.node.ids().any(|id| id == slow) {
            cut_at = Some(i);
        }
    }
    let cut_at = cut_at.expect("the slow stream was cut off");
    assert!(cut_at <= 9, "over 64 KiB queued: cut at {cut_at}");
    assert_eq!(h.core.node.subscribers("news"), 1, "the fast stream only");
}

#[test]
fn shutdown_says_so_and_what_a_client_sends_is_ignored() {
    let mut h = harness();
    let s = open(&mut h, at(0), request(&["news"], vec![]));
    events(&mut h, s);
    h.core
        .node
        .handle_read(at(1), s, b"GET /other HTTP/1.1\r\n\r\n\x00\xff garbage");
    h.core.pump(at(1));
    assert!(h.core.node.ids().any(|i| i == s), "still open");
    publish(&mut h, at(2), "news", 1, 1);
    assert_eq!(pubs(&events(&mut h, s)), [("news".into(), 1)]);
    h.core.node.shutdown(at(3));
    let evs = events(&mut h, s);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].event, "close");
    assert_eq!(evs[0].data["code"], 4000);
    assert!(!h.core.node.ids().any(|i| i == s));
}
