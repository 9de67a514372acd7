//! Fan-out shares one encoded frame: a publication to many local
//! subscribers is encoded once per encoding, and every subscriber's queue
//! holds a reference to the same bytes (checked by pointer identity).

mod common;

use wavecast_core::backbone::BackboneEvent;
use wavecast_core::frame::OpCode;
use wavecast_core::hub::Hub;
use wavecast_core::node::{ConnId, Endpoint, Node, NodeConfig};
use wavecast_core::protocol::{Encoding, Payload, Publication};
use wavecast_core::standalone::Standalone;
use wavecast_core::Timestamp;

fn subscribe_frame(id: u64, channel: &str) -> Vec<u8> {
    let json = format!(r#"{{"id":{id},"subscribe":{{"channel":"{channel}"}}}}"#);
    common::masked(true, OpCode::Text, json.as_bytes(), [9, 8, 7, 6]).to_vec()
}

/// A node with `n` subscribers of `news` (JSON) and `m` (MessagePack), all
/// replies drained, and the hub that sequences for it.
fn subscribed_node(n: usize, m: usize) -> (Node, Hub, Vec<ConnId>) {
    let now = Timestamp::ZERO;
    let mut core = Standalone::new(NodeConfig::default(), 7);
    let mut ids = Vec::new();
    for i in 0..n + m {
        let enc = if i < n {
            Encoding::Json
        } else {
            Encoding::MsgPack
        };
        let sub = if enc == Encoding::Json {
            subscribe_frame(1, "news")
        } else {
            let req = wavecast_core::protocol::Request {
                id: 1,
                command: wavecast_core::protocol::Command::Subscribe {
                    channel: "news".into(),
                    recover: None,
                    token: None,
                },
            };
            let payload = wavecast_core::protocol::encode_request(Encoding::MsgPack, &req);
            common::masked(true, OpCode::Binary, &payload, [1, 2, 3, 4]).to_vec()
        };
        ids.push(core.node.handle_connect(now, Endpoint::PubSub(enc), &sub));
    }
    core.pump(now);
    let Standalone { mut node, hub } = core;
    for &id in &ids {
        common::take_queued(node.queue(id).unwrap());
    }
    assert_eq!(node.subscribers("news"), n + m);
    (node, hub, ids)
}

#[test]
fn ten_thousand_subscribers_share_one_frame_per_encoding() {
    let (mut node, hub, ids) = subscribed_node(9_000, 1_000);
    let epoch = hub.channels()[0].epoch.clone();
    node.handle_backbone(
        Timestamp::ZERO,
        BackboneEvent::Publication {
            channel: "news".into(),
            epoch,
            publication: Publication {
                offset: 1,
                data: Payload::from_json(br#"{"price": 101.5}"#).unwrap(),
                info: None,
            },
        },
    );
    let mut json_ptrs = std::collections::BTreeSet::new();
    let mut msgpack_ptrs = std::collections::BTreeSet::new();
    for (i, &id) in ids.iter().enumerate() {
        let q = node.queue(id).unwrap();
        assert_eq!(q.frames(), 1, "subscriber {i} has one frame queued");
        let f = q.iter().next().unwrap();
        if i < 9_000 {
            json_ptrs.insert(f.as_ptr() as usize);
        } else {
            msgpack_ptrs.insert(f.as_ptr() as usize);
        }
    }
    assert_eq!(json_ptrs.len(), 1, "JSON subscribers share one frame");
    assert_eq!(
        msgpack_ptrs.len(),
        1,
        "MessagePack subscribers share one frame"
    );
    assert_ne!(json_ptrs, msgpack_ptrs);
}
