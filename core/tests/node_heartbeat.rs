//! The node's own heartbeats (docs/PROTOCOL.md "Application-level
//! pings", "Server-Sent Events"): a `ping` push every heartbeat interval
//! to the connections that asked for it in `connect`, and to no other;
//! the SSE comment line to every open stream; one node timer for all of
//! them, and one shared buffer per kind (pointer identity of the queued
//! bytes).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use wavecast_core::connection::ConnectionConfig;
use wavecast_core::frame::OpCode;
use wavecast_core::node::{ConnId, Endpoint, NodeConfig};
use wavecast_core::protocol::{
    decode_server_message, encode_request, ping_frame, Command, Encoding, Push, Request,
    ServerMessage,
};
use wavecast_core::sse::SseRequest;
use wavecast_core::standalone::Standalone;

use common::harness::{at, Harness};

const INTERVAL: u64 = 10;

fn node() -> Harness {
    Harness::new(Standalone::new(
        NodeConfig {
            connection: ConnectionConfig {
                heartbeat_interval: Duration::from_secs(INTERVAL),
                // The test clients never answer WebSocket pings.
                heartbeat_timeout: Duration::from_secs(24 * 3600),
                ..ConnectionConfig::default()
            },
            ..NodeConfig::default()
        },
        7,
    ))
}

fn is_ping(m: &serde_json::Value) -> bool {
    *m == json!({"push": {"ping": {}}})
}

/// The pings a connection was sent since the last look.
fn pings(h: &mut Harness, id: ConnId) -> usize {
    h.seen(id).messages.iter().filter(|m| is_ping(m)).count()
}

/// The queued frames of `id` that are the ping frame of `enc`, by address.
fn ping_ptrs(h: &mut Harness, id: ConnId, enc: Encoding) -> Vec<usize> {
    let ping = ping_frame(enc);
    h.core
        .node
        .queue(id)
        .unwrap()
        .iter()
        .filter(|f| **f == ping)
        .map(|f| f.as_ptr() as usize)
        .collect()
}

#[test]
fn pings_come_every_interval_to_those_that_asked_and_share_one_frame() {
    let mut h = node();
    let asked = h.open(at(0));
    let r = h.ask(at(0), asked, json!({"id": 1, "connect": {"ping": true}}));
    assert_eq!(r["connect"]["ping"], INTERVAL, "{r}");
    // The reply decodes on the client side, with its interval.
    let bytes = serde_json::to_vec(&r).unwrap();
    match decode_server_message(Encoding::Json, &bytes).unwrap() {
        ServerMessage::Reply {
            reply: wavecast_core::protocol::Reply::Connect { ping, .. },
            ..
        } => assert_eq!(ping, Some(INTERVAL)),
        other => panic!("{other:?}"),
    }
    let plain = h.open(at(0));
    let r = h.ask(at(0), plain, json!({"id": 1, "connect": {}}));
    assert!(r["connect"].get("ping").is_none(), "{r}");
    let silent = h.open(at(0));
    let r = h.ask(
        at(0),
        silent,
        json!({"id": 1, "subscribe": {"channel": "a"}}),
    );
    assert!(r["subscribe"]["epoch"].is_string());
    // More that asked, JSON and MessagePack, for the sharing.
    let mut json_pingers = vec![asked];
    for _ in 0..50 {
        let c = h.open(at(0));
        h.ask(at(0), c, json!({"id": 1, "connect": {"ping": true}}));
        json_pingers.push(c);
    }
    let mut msgpack_pingers = Vec::new();
    for _ in 0..3 {
        let connect = encode_request(
            Encoding::MsgPack,
            &Request {
                id: 1,
                command: Command::Connect {
                    token: None,
                    data: None,
                    ping: true,
                },
            },
        );
        let frame = common::masked(true, OpCode::Binary, &connect, [1, 2, 3, 4]);
        let id = h
            .core
            .node
            .handle_connect(at(0), Endpoint::PubSub(Encoding::MsgPack), &frame);
        h.core.pump(at(0));
        let q = h.core.node.queue(id).unwrap();
        common::take_queued(q);
        msgpack_pingers.push(id);
    }
    assert_eq!(h.core.node.heartbeat_connections(), 54);
    assert_eq!(
        h.core.node.poll_timeout(),
        Some(at(INTERVAL)),
        "one node timer"
    );

    h.tick(at(INTERVAL - 1));
    assert_eq!(pings(&mut h, asked), 0, "not before the interval");
    for round in 1..=3 {
        let now = at(round * INTERVAL);
        h.tick(now);
        let mut json_ptrs = BTreeSet::new();
        for &c in &json_pingers {
            json_ptrs.extend(ping_ptrs(&mut h, c, Encoding::Json));
        }
        let mut msgpack_ptrs = BTreeSet::new();
        for &c in &msgpack_pingers {
            let ptrs = ping_ptrs(&mut h, c, Encoding::MsgPack);
            assert_eq!(ptrs.len(), 1, "one ping per interval");
            msgpack_ptrs.extend(ptrs);
            // The MessagePack ping is the same push.
            let q = h.core.node.queue(c).unwrap();
            let frame: Vec<Bytes> = q.iter().cloned().collect();
            let ping = frame.iter().find(|f| **f == ping_frame(Encoding::MsgPack));
            let payload = &ping.unwrap()[2..];
            assert_eq!(
                decode_server_message(Encoding::MsgPack, payload),
                Ok(ServerMessage::Push(Push::Ping))
            );
            common::take_queued(q);
        }
        assert_eq!(json_ptrs.len(), 1, "every JSON pinger holds the same bytes");
        assert_eq!(msgpack_ptrs.len(), 1, "every MessagePack pinger too");
        assert_eq!(pings(&mut h, asked), 1, "round {round}");
        assert_eq!(pings(&mut h, plain), 0, "round {round}: did not ask");
        assert_eq!(pings(&mut h, silent), 0, "round {round}: never connected");
        for &c in &json_pingers[1..] {
            h.seen(c);
        }
    }
    // A connection that ends leaves the set; with the set empty, the timer
    // is not armed again.
    for &c in json_pingers.iter().chain(&msgpack_pingers) {
        h.core.node.handle_eof(at(35), c);
    }
    h.core.pump(at(35));
    assert_eq!(h.core.node.heartbeat_connections(), 0);
    h.tick(at(40));
    // One timer per connection left (its WebSocket pings), none for the
    // node's heartbeats.
    assert_eq!(h.core.node.connections(), 2);
    assert_eq!(h.core.node.timers(), 2);
}

#[test]
fn a_ping_that_is_not_a_boolean_is_a_bad_request() {
    let mut h = node();
    let c = h.open(at(0));
    let code = h.error_code(at(0), c, json!({"id": 1, "connect": {"ping": "yes"}}));
    assert_eq!(code, 101);
    // Still not connected: a proper connect works.
    let r = h.ask(at(0), c, json!({"id": 2, "connect": {"ping": false}}));
    assert!(r["connect"]["client"].is_string(), "{r}");
    assert!(r["connect"].get("ping").is_none(), "{r}");
}

#[test]
fn sse_streams_get_one_shared_comment_line_every_interval() {
    let mut h = node();
    let mut streams = Vec::new();
    for _ in 0..20 {
        let request = SseRequest {
            channels: vec!["news".into()],
            positions: vec![None],
            token: None,
            origin: None,
        };
        let id = h
            .core
            .node
            .handle_sse(at(1), request, Duration::from_millis(1500));
        streams.push(id);
    }
    h.core.pump(at(1));
    for &s in &streams {
        common::take_queued(h.core.node.queue(s).unwrap());
    }
    h.tick(at(1 + INTERVAL - 1));
    for &s in &streams {
        assert!(h.core.node.queue(s).unwrap().is_empty());
    }
    h.tick(at(1 + INTERVAL));
    let mut ptrs = BTreeSet::new();
    for &s in &streams {
        let q = h.core.node.queue(s).unwrap();
        let frames: Vec<&Bytes> = q.iter().collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0][..], b":\n\n");
        ptrs.insert(frames[0].as_ptr() as usize);
        common::take_queued(q);
    }
    assert_eq!(ptrs.len(), 1, "one comment buffer for every stream");
    h.tick(at(1 + 2 * INTERVAL));
    for &s in &streams {
        let text = common::take_queued(h.core.node.queue(s).unwrap());
        assert_eq!(text, b":\n\n");
    }
}
