//! What a node counts for the operator (`Node::counters`,
//! `Node::take_fanouts`): each counter moves by exactly what happened, and
//! the counts are not part of the node's state (equality ignores them).

mod common;

use common::harness::{at, Harness};
use serde_json::json;
use wavecast_core::backbone::BackboneEvent;
use wavecast_core::connection::ConnectionConfig;
use wavecast_core::frame::OpCode;
use wavecast_core::metrics::{
    command_label, result_label, CommandKind, COMMAND_LABELS, MAX_FANOUTS, RESULTS,
};
use wavecast_core::node::{Endpoint, Node, NodeConfig};
use wavecast_core::protocol::{close, Encoding, Payload, Publication};
use wavecast_core::standalone::Standalone;
use wavecast_core::Timestamp;

fn harness(config: NodeConfig) -> Harness {
    Harness::new(Standalone::new(config, 3))
}

/// The count of replies to `command` (a label) with result `label`.
fn replies(node: &Node, command: &str, label: &str) -> u64 {
    let c = node.counters();
    let k = (0..COMMAND_LABELS)
        .find(|&i| command_label(i) == command)
        .expect("a command label");
    (0..RESULTS)
        .find(|&i| result_label(i) == label)
        .map_or(0, |i| c.replies[k][i])
}

fn commands(node: &Node, kind: CommandKind) -> u64 {
    node.counters().commands[kind as usize]
}

#[test]
fn commands_replies_publications_and_deliveries_are_counted() {
    let mut h = harness(NodeConfig::default());
    let now = at(1);
    let a = h.open(now);
    let b = h.open(now);
    let c = h.open(now);
    assert_eq!(h.core.node.counters().accepted, [3, 0, 0]);
    for id in [a, b] {
        let r = h.ask(now, id, json!({"id": 1, "subscribe": {"channel": "news"}}));
        assert!(r.get("error").is_none(), "{r}");
    }
    // Not subscribed: error 106.
    assert_eq!(
        h.error_code(now, c, json!({"id": 2, "unsubscribe": {"channel": "news"}})),
        106
    );
    let r = h.ask(
        now,
        c,
        json!({"id": 3, "publish": {"channel": "news", "data": {"x": 1}}}),
    );
    assert!(r.get("error").is_none(), "{r}");
    let node = &h.core.node;
    assert_eq!(commands(node, CommandKind::Subscribe), 2);
    assert_eq!(commands(node, CommandKind::Unsubscribe), 1);
    assert_eq!(commands(node, CommandKind::Publish), 1);
    assert_eq!(commands(node, CommandKind::History), 0);
    assert_eq!(replies(node, "subscribe", "0"), 2);
    assert_eq!(replies(node, "publish", "0"), 1);
    assert_eq!(replies(node, "unsubscribe", "106"), 1);
    assert_eq!(replies(node, "unsubscribe", "0"), 0);
    assert_eq!(node.counters().publications, 1);
    assert_eq!(node.counters().deliveries, 2);
    // The publication was delivered at `now` to 2 subscribers: one entry.
    let fanouts: Vec<_> = h.core.node.take_fanouts().collect();
    assert_eq!(fanouts.len(), 1, "{fanouts:?}");
    assert_eq!(
        (
            fanouts[0].arrival,
            fanouts[0].bucket,
            fanouts[0].publications
        ),
        (now, 0, 1)
    );
    assert!(!h.core.node.has_fanouts(), "taken");
}

#[test]
fn bytes_read_and_written_are_what_the_driver_reported() {
    let now = Timestamp::ZERO;
    let mut node = Node::new(NodeConfig::default());
    let id = node.handle_connect(now, Endpoint::PubSub(Encoding::Json), b"");
    let frame = common::masked(
        true,
        OpCode::Text,
        br#"{"id":1,"subscribe":{"channel":"a"}}"#,
        [1, 2, 3, 4],
    );
    node.handle_read(now, id, &frame);
    node.handle_read(now, id, &frame[..0]);
    assert_eq!(node.counters().bytes_read, frame.len() as u64);
    node.handle_written(now, id, 0);
    node.handle_written(now, id, 0);
    assert_eq!(node.counters().bytes_written, 0);
}

#[test]
fn recoveries_count_by_outcome() {
    let mut h = harness(NodeConfig::default());
    let now = at(1);
    let p = h.open(now);
    let s = h.open(now);
    let r = h.ask(now, s, json!({"id": 1, "subscribe": {"channel": "news"}}));
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_owned();
    h.ask(
        now,
        p,
        json!({"id": 1, "publish": {"channel": "news", "data": 1}}),
    );
    h.ask(now, s, json!({"id": 2, "unsubscribe": {"channel": "news"}}));
    // Recovered: from offset 0 of the channel's epoch.
    let r = h.ask(
        now,
        s,
        json!({"id": 3, "subscribe": {"channel": "news", "recover": {"epoch": epoch, "offset": 0}}}),
    );
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    h.ask(now, s, json!({"id": 4, "unsubscribe": {"channel": "news"}}));
    // Not recovered: another epoch.
    let r = h.ask(
        now,
        s,
        json!({"id": 5, "subscribe": {"channel": "news", "recover": {"epoch": "other", "offset": 0}}}),
    );
    assert_eq!(r["subscribe"]["recovered"], false, "{r}");
    let c = h.core.node.counters();
    assert_eq!((c.recovered, c.not_recovered), (1, 1));
}

#[test]
fn gaps_closes_and_slow_consumers_are_counted() {
    let config = NodeConfig {
        connection: ConnectionConfig {
            max_queued_bytes: 64,
            ..ConnectionConfig::default()
        },
        ..NodeConfig::default()
    };
    let mut h = harness(config);
    let now = at(1);
    let ids: Vec<_> = (0..3).map(|_| h.open(now)).collect();
    let mut epoch = String::new();
    for &id in &ids {
        let r = h.ask(now, id, json!({"id": 1, "subscribe": {"channel": "news"}}));
        epoch = r["subscribe"]["epoch"].as_str().unwrap().to_owned();
    }
    // A publication of another epoch: a gap history cannot fill, told to
    // all three subscribers with 2500.
    h.core.node.handle_backbone(
        now,
        BackboneEvent::Publication {
            channel: "news".into(),
            epoch: format!("{epoch}-not"),
            publication: Publication {
                offset: 1,
                data: Payload::from_json(b"1").unwrap(),
                info: None,
            },
        },
    );
    assert_eq!(h.core.node.counters().gaps, 3);
    for &id in &ids {
        let seen = h.seen(id);
        assert!(
            seen.messages
                .iter()
                .any(|m| m["push"]["unsubscribe"]["code"] == 2500),
            "{:?}",
            seen.messages
        );
    }
    // The peer closes one with 1000 (a masked close frame with code 1000).
    let close_frame = common::masked(true, OpCode::Close, &1000u16.to_be_bytes(), [1, 1, 1, 1]);
    h.core.node.handle_read(now, ids[0], &close_frame);
    // A second one is a slow consumer: its transport refuses bytes and
    // its queue goes over 64 bytes.
    h.ask(
        now,
        ids[1],
        json!({"id": 2, "subscribe": {"channel": "big"}}),
    );
    for rid in [3, 4] {
        h.send(
            now,
            ids[2],
            json!({"id": rid, "publish": {"channel": "big", "data": "x".repeat(50)}}),
        );
        // The first publication is queued, and the kernel refuses it.
        h.core.node.handle_write_blocked(ids[1]);
    }
    // Counted when the connection ends (its close frame gone, the peer
    // gone).
    while h.core.node.poll_transmit().is_some() {}
    h.core.node.handle_eof(now, ids[1]);
    assert!(!h.is_open(ids[1]));
    let c = h.core.node.counters();
    assert_eq!(c.slow_consumer_closes, 1);
    assert_eq!(c.closed.get(&close::SLOW_CONSUMER.0), Some(&1), "{c:?}");
    // The peer's close completes once the node's close frame is written.
    while h.core.node.poll_transmit().is_some() {}
    h.core.node.handle_eof(now, ids[0]);
    let c = h.core.node.counters();
    assert_eq!(c.closed.get(&1000), Some(&1), "{c:?}");
    assert_eq!(c.closed.values().sum::<u64>(), 2);
}

#[test]
fn backbone_round_trip_is_the_time_from_request_to_reply() {
    let mut core = Standalone::new(NodeConfig::default(), 3);
    let t0 = at(1);
    let id = core
        .node
        .handle_connect(t0, Endpoint::PubSub(Encoding::Json), b"");
    let frame = common::masked(
        true,
        OpCode::Text,
        br#"{"id":1,"subscribe":{"channel":"a"}}"#,
        [1, 2, 3, 4],
    );
    core.node.handle_read(t0, id, &frame);
    // The hub answers 7 ms later.
    core.pump(t0 + std::time::Duration::from_millis(7));
    let h = &core.node.counters().backbone_round_trip;
    assert_eq!(h.count(), 1);
    assert!(
        (h.sum_seconds() - 0.007).abs() < 1e-9,
        "{}",
        h.sum_seconds()
    );
    assert_eq!(core.node.counters().backbone_errors, 0);
}

#[test]
fn fanout_entries_merge_per_input_and_stay_bounded() {
    let mut h = harness(NodeConfig::default());
    let t = at(1);
    let s = h.open(t);
    let r = h.ask(t, s, json!({"id": 1, "subscribe": {"channel": "news"}}));
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_owned();
    let publish = |node: &mut Node, now: Timestamp, offset: u64| {
        node.handle_backbone(
            now,
            BackboneEvent::Publication {
                channel: "news".into(),
                epoch: epoch.clone(),
                publication: Publication {
                    offset,
                    data: Payload::from_json(b"1").unwrap(),
                    info: None,
                },
            },
        );
    };
    // Three publications of one input (same `now`, same bucket): one entry.
    for offset in 1..=3 {
        publish(&mut h.core.node, t, offset);
    }
    let f: Vec<_> = h.core.node.take_fanouts().collect();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].publications, 3);
    // A driver that never takes them: at most MAX_FANOUTS entries.
    let n = MAX_FANOUTS as u64 + 100;
    for offset in 4..4 + n {
        publish(
            &mut h.core.node,
            t + std::time::Duration::from_micros(offset),
            offset,
        );
    }
    assert_eq!(h.core.node.take_fanouts().count(), MAX_FANOUTS);
    assert_eq!(h.core.node.counters().deliveries, 3 + n);
}

#[test]
fn counts_are_not_part_of_the_node_state() {
    let a = Node::new(NodeConfig::default());
    let mut b = a.clone();
    let id = b.handle_connect(Timestamp::ZERO, Endpoint::PubSub(Encoding::Json), b"");
    let mut c = a.clone();
    let id2 = c.handle_connect(Timestamp::ZERO, Endpoint::PubSub(Encoding::Json), b"");
    assert_eq!(id, id2);
    // Reported writes of nothing change no state, only a count.
    b.handle_written(Timestamp::ZERO, id, 0);
    b.handle_read(Timestamp::ZERO, id, b"");
    assert_eq!(b.counters().accepted[0], 1);
    assert_eq!(b, c, "equality ignores what was counted");
    use std::hash::{DefaultHasher, Hash, Hasher};
    let hash = |n: &Node| {
        let mut h = DefaultHasher::new();
        n.hash(&mut h);
        h.finish()
    };
    let mut d = c.clone();
    d.handle_written(Timestamp::ZERO, id, 0);
    assert_eq!(hash(&c), hash(&d));
}

#[test]
fn sse_streams_are_accepted_and_their_refusals_counted_by_status() {
    let mut node = Node::new(NodeConfig::default());
    let now = Timestamp::ZERO;
    let request = |channel: &str| wavecast_core::sse::SseRequest {
        channels: vec![channel.to_owned()],
        positions: vec![None],
        token: None,
        origin: None,
    };
    // A namespace the node does not know: refused before the stream.
    let id = node.handle_sse(now, request("nowhere:a"), std::time::Duration::ZERO);
    let head = common::take_queued(node.queue(id).unwrap());
    let status: u16 = String::from_utf8_lossy(&head[9..12]).parse().unwrap();
    assert!((400..500).contains(&status), "{status}");
    let c = node.counters();
    assert_eq!(c.accepted, [0, 1, 0]);
    assert_eq!(c.refused.iter().collect::<Vec<_>>(), [(&status, &1)]);
    // One it may open: accepted, not refused.
    node.handle_sse(now, request("news"), std::time::Duration::ZERO);
    let c = node.counters();
    assert_eq!(c.accepted, [0, 2, 0]);
    assert_eq!(c.refused.values().sum::<u64>(), 1);
}

#[test]
fn error_replies_are_counted_for_the_command_they_answer() {
    use wavecast_core::backbone::{BackboneCommand, BackboneError, BackboneReply};
    let now = Timestamp::ZERO;
    let mut node = Node::new(NodeConfig::default());
    let id = node.handle_connect(now, Endpoint::PubSub(Encoding::Json), b"");
    let send = |node: &mut Node, json: &str| {
        let frame = common::masked(true, OpCode::Text, json.as_bytes(), [1, 2, 3, 4]);
        node.handle_read(now, id, &frame);
    };
    // A message that names no command: its error is to no known command.
    send(&mut node, r#"{"id":1,"frobnicate":{}}"#);
    // A publish that the backbone fails: 108, counted as the publish's.
    send(&mut node, r#"{"id":2,"publish":{"channel":"a","data":1}}"#);
    let request = match node.poll_backbone() {
        Some(BackboneCommand::Publish { request, .. }) => request,
        other => panic!("expected a publish, got {other:?}"),
    };
    node.handle_backbone(
        now,
        BackboneEvent::Reply {
            request,
            reply: BackboneReply::Published(Err(BackboneError::Unavailable)),
        },
    );
    let c = node.counters();
    assert_eq!(c.backbone_errors, 1);
    assert_eq!(c.publications, 0);
    let nonzero: Vec<(String, String, u64)> = (0..COMMAND_LABELS)
        .flat_map(|k| (0..RESULTS).map(move |r| (k, r)))
        .filter(|&(k, r)| c.replies[k][r] > 0)
        .map(|(k, r)| {
            (
                command_label(k).to_owned(),
                result_label(r),
                c.replies[k][r],
            )
        })
        .collect();
    assert_eq!(
        nonzero,
        [
            ("publish".to_owned(), "108".to_owned(), 1),
            ("unknown".to_owned(), "102".to_owned(), 1)
        ]
    );
}
