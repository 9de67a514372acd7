//! A node's bound on each connection's requests in flight: a client that
//! pipelines commands faster than the backbone answers them has the rest of
//! its input held, and the driver is told to stop reading it until replies
//! drain (`Node::poll_reading`); nothing is lost and order is kept.

mod common;

use wavecast_core::backbone::{BackboneCommand, BackboneEvent, BackboneReply};
use wavecast_core::frame::OpCode;
use wavecast_core::node::{ConnId, Endpoint, Node, NodeConfig};
use wavecast_core::protocol::{Encoding, StreamPosition};
use wavecast_core::Timestamp;

fn publish(id: u64) -> Vec<u8> {
    let json = format!(r#"{{"id":{id},"publish":{{"channel":"a","data":{id}}}}}"#);
    common::masked(true, OpCode::Text, json.as_bytes(), [1, 2, 3, 4]).to_vec()
}

fn node(max: usize) -> Node {
    Node::new(NodeConfig {
        max_requests_in_flight: max,
        ..NodeConfig::default()
    })
}

/// The publishes the node sent to the backbone, with their request ids.
fn sent(node: &mut Node) -> Vec<(wavecast_core::backbone::RequestId, String)> {
    std::iter::from_fn(|| node.poll_backbone())
        .map(|c| match c {
            BackboneCommand::Publish { request, data, .. } => (
                request,
                String::from_utf8_lossy(data.as_json()).into_owned(),
            ),
            other => panic!("unexpected command {other:?}"),
        })
        .collect()
}

fn readings(node: &mut Node) -> Vec<(ConnId, bool)> {
    std::iter::from_fn(|| node.poll_reading()).collect()
}

fn published(node: &mut Node, request: wavecast_core::backbone::RequestId, offset: u64) {
    node.handle_backbone(
        Timestamp::ZERO,
        BackboneEvent::Reply {
            request,
            reply: BackboneReply::Published(Ok(StreamPosition {
                epoch: "e".into(),
                offset,
            })),
        },
    );
}

#[test]
fn a_pipelining_client_is_held_at_the_bound_and_resumed_in_order() {
    let now = Timestamp::ZERO;
    let mut node = node(2);
    let id = node.handle_connect(now, Endpoint::PubSub(Encoding::Json), b"");
    let burst: Vec<u8> = (1..=5).flat_map(publish).collect();
    node.handle_read(now, id, &burst);
    let first = sent(&mut node);
    assert_eq!(first.len(), 2, "two in flight at most: {first:?}");
    assert_eq!(readings(&mut node), vec![(id, false)], "stop reading it");
    assert_eq!(node.requests_in_flight(), 2);

    // Each reply lets one more command through, in the order sent.
    let mut order: Vec<String> = first.iter().map(|(_, d)| d.clone()).collect();
    let mut waiting: Vec<_> = first.into_iter().map(|(r, _)| r).collect();
    let mut offset = 0;
    while let Some(request) = waiting.first().copied() {
        waiting.remove(0);
        offset += 1;
        published(&mut node, request, offset);
        for (r, d) in sent(&mut node) {
            waiting.push(r);
            order.push(d);
        }
        assert!(node.requests_in_flight() <= 2);
    }
    assert_eq!(order, ["1", "2", "3", "4", "5"]);
    assert_eq!(readings(&mut node), vec![(id, true)], "read it again");
    assert_eq!(node.requests_in_flight(), 0);
}

#[test]
fn a_client_within_the_bound_is_never_held() {
    let now = Timestamp::ZERO;
    let mut node = node(8);
    let id = node.handle_connect(now, Endpoint::PubSub(Encoding::Json), b"");
    let burst: Vec<u8> = (1..=8).flat_map(publish).collect();
    node.handle_read(now, id, &burst);
    assert_eq!(sent(&mut node).len(), 8);
    assert!(readings(&mut node).is_empty());
}

#[test]
fn a_held_client_that_closes_is_released_with_its_requests() {
    let now = Timestamp::ZERO;
    let mut node = node(1);
    let id = node.handle_connect(now, Endpoint::PubSub(Encoding::Json), b"");
    let burst: Vec<u8> = (1..=4).flat_map(publish).collect();
    node.handle_read(now, id, &burst);
    assert_eq!(sent(&mut node).len(), 1);
    node.handle_eof(now, id);
    // Closed: its held commands are handled (the node does not hold a
    // closing connection), and everything of it goes.
    let _ = sent(&mut node);
    assert_eq!(node.poll_finished(), Some(id));
    assert_eq!(node.connections(), 0);
    assert_eq!(node.requests_in_flight(), 0);
}

/// Rate limits (issue 11): a burst of twice the rate passes, the rest of a
/// flood is answered 107 and sent nowhere, and a connection still over the
/// limit five seconds after its first 107 is closed with 4504; another
/// connection is not touched.
#[test]
fn a_publish_flood_gets_107_then_4504_and_nobody_else_is_touched() {
    use wavecast_core::frame::FrameDecoder;
    let mut node = Node::new(NodeConfig {
        client_command_rate: 100,
        client_publish_rate: 2,
        max_requests_in_flight: 1000,
        ..NodeConfig::default()
    });
    let at = |ms: u64| Timestamp::from_micros(ms * 1000);
    let flooder = node.handle_connect(at(0), Endpoint::PubSub(Encoding::Json), b"");
    let calm = node.handle_connect(at(0), Endpoint::PubSub(Encoding::Json), b"");
    let mut out = Vec::new();
    let decode = |node: &mut Node, id: ConnId| {
        let bytes = node.queue(id).map(common::take_queued).unwrap_or_default();
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        let mut dec = FrameDecoder::client(1 << 20);
        let mut frames = Vec::new();
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        frames
    };
    // Ten publishes at once: a burst of 4 (twice 2/s) goes to the backbone.
    let burst: Vec<u8> = (1..=10).flat_map(publish).collect();
    node.handle_read(at(0), flooder, &burst);
    assert_eq!(sent(&mut node).len(), 4);
    let replies = decode(&mut node, flooder);
    assert_eq!(replies.len(), 6, "one 107 per refused publish");
    for f in &replies {
        let v: serde_json::Value = serde_json::from_slice(&f.payload).unwrap();
        assert_eq!(v["error"]["code"], 107, "{v}");
    }
    // Still flooding: one publish a tenth of a second for five seconds.
    for t in (100..5000).step_by(100) {
        node.handle_read(at(t), flooder, &publish(t));
        out.extend(sent(&mut node));
    }
    assert!(
        node.ids().any(|i| i == flooder),
        "not closed before the grace"
    );
    assert!(out.len() <= 11, "{} publishes passed", out.len());
    // Five seconds after the first 107: one passes (the bucket refilled
    // that much), the next is refused and the connection closed.
    let two: Vec<u8> = [5050, 5051].into_iter().flat_map(publish).collect();
    node.handle_read(at(5050), flooder, &two);
    assert_eq!(sent(&mut node).len(), 1);
    let frames = decode(&mut node, flooder);
    let close = frames.last().expect("a close frame");
    assert_eq!(close.opcode, OpCode::Close);
    assert_eq!(
        u16::from_be_bytes([close.payload[0], close.payload[1]]),
        4504
    );
    // The calm connection publishes as it likes within its own limits.
    node.handle_read(at(5000), calm, &publish(1));
    assert_eq!(sent(&mut node).len(), 1);
}

/// The ping allowance through a node: a flood on `/ws` is closed with
/// wavecast's 4504 "too many requests", one on `/echo` (raw RFC 6455) with
/// 1008; both are counted as ping-flood closes and by their code, and a
/// connection that pings calmly on the same node is answered throughout.
#[test]
fn a_ping_flood_is_closed_4504_on_ws_and_1008_on_echo_and_counted() {
    use wavecast_core::connection::ConnectionConfig;
    use wavecast_core::frame::FrameDecoder;
    use wavecast_core::message::parse_close;
    let mut node = Node::new(NodeConfig {
        connection: ConnectionConfig {
            ping_rate: 10,
            ..ConnectionConfig::default()
        },
        ..NodeConfig::default()
    });
    let at = |ms: u64| Timestamp::from_micros(ms * 1000);
    let ws = node.handle_connect(at(0), Endpoint::PubSub(Encoding::Json), b"");
    let echo = node.handle_connect(at(0), Endpoint::Echo, b"");
    let calm = node.handle_connect(at(0), Endpoint::PubSub(Encoding::Json), b"");
    let ping = common::masked(true, OpCode::Ping, b"p", [9, 9, 9, 9]).to_vec();
    let frames = |node: &mut Node, id: ConnId| {
        let bytes = node.queue(id).map(common::take_queued).unwrap_or_default();
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        let mut dec = FrameDecoder::client(1 << 20);
        std::iter::from_fn(|| dec.decode(&mut buf).unwrap()).collect::<Vec<_>>()
    };
    let mut closes = Vec::new();
    let mut calm_pongs = 0;
    // Ten pings every 100 ms (100 a second) from the two flooders, one a
    // second from the calm one, for 6 s.
    for ms in (0..6_000).step_by(100) {
        for id in [ws, echo] {
            let burst = ping.repeat(10);
            node.handle_read(at(ms), id, &burst);
            for f in frames(&mut node, id) {
                if f.opcode == OpCode::Close {
                    let close = parse_close(&f.payload).unwrap().unwrap();
                    closes.push((id, close.code.0, close.reason));
                }
            }
        }
        if ms % 1000 == 0 {
            node.handle_read(at(ms), calm, &ping);
            let out = frames(&mut node, calm);
            assert_eq!(out.len(), 1, "calm ping at {ms} ms");
            assert_eq!(out[0].opcode, OpCode::Pong);
            calm_pongs += 1;
        }
    }
    assert_eq!(
        closes,
        vec![
            (ws, 4504, "too many requests".to_owned()),
            (echo, 1008, "too many requests".to_owned()),
        ]
    );
    assert_eq!(calm_pongs, 6);
    // Counted when they end (the peers gone without answering).
    node.handle_eof(at(6_000), ws);
    node.handle_eof(at(6_000), echo);
    let c = node.counters();
    assert_eq!(c.ping_flood_closes, 2, "{c:?}");
    assert_eq!(c.closed.get(&4504), Some(&1), "{c:?}");
    assert_eq!(c.closed.get(&1008), Some(&1), "{c:?}");
    let ended: Vec<_> = std::iter::from_fn(|| node.poll_ended()).collect();
    assert!(
        ended
            .iter()
            .all(|(_, e)| e.cause == "client pinged faster than its allowance"),
        "{ended:?}"
    );
    assert_eq!(ended.len(), 2);
    assert!(node.ids().any(|i| i == calm));
}
