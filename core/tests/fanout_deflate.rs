//! Fan-out with permessage-deflate: a publication at or over the threshold
//! is compressed once per encoding into one frame with RSV1 set, shared by
//! every subscriber that negotiated compression (pointer identity), beside
//! the one plain frame shared by the others; under the threshold everyone
//! gets the plain frame.

mod common;

use bytes::BytesMut;
use wavecast_core::backbone::BackboneEvent;
use wavecast_core::deflate::{Codec, CompressionConfig};
use wavecast_core::frame::{FrameDecoder, OpCode};
use wavecast_core::hub::Hub;
use wavecast_core::node::{ConnId, Endpoint, Node, NodeConfig};
use wavecast_core::protocol::{Encoding, Payload, Publication};
use wavecast_core::standalone::Standalone;
use wavecast_core::Timestamp;

/// `plain` subscribers without compression, then `deflate` with it.
fn subscribed_node(plain: usize, deflate: usize) -> (Node, Hub, Vec<ConnId>) {
    let now = Timestamp::ZERO;
    let config = NodeConfig {
        compression: Some(CompressionConfig::default()),
        ..NodeConfig::default()
    };
    let mut core = Standalone::new(config, 7);
    let sub = common::masked(
        true,
        OpCode::Text,
        br#"{"id":1,"subscribe":{"channel":"news"}}"#,
        [9, 8, 7, 6],
    );
    let ids: Vec<ConnId> = (0..plain + deflate)
        .map(|i| {
            core.node
                .handle_connect_with(now, Endpoint::PubSub(Encoding::Json), &sub, i >= plain)
        })
        .collect();
    core.pump(now);
    let Standalone { mut node, hub } = core;
    for &id in &ids {
        common::take_queued(node.queue(id).unwrap());
    }
    assert_eq!(node.subscribers("news"), plain + deflate);
    (node, hub, ids)
}

fn publish(node: &mut Node, hub: &Hub, offset: u64, json: &str) {
    let epoch = hub.channels()[0].epoch.clone();
    node.handle_backbone(
        Timestamp::ZERO,
        BackboneEvent::Publication {
            channel: "news".into(),
            epoch,
            publication: Publication {
                offset,
                data: Payload::from_json(json.as_bytes()).unwrap(),
                info: None,
            },
        },
    );
}

/// A JSON document of about `n` bytes, compressible like real data.
fn doc(n: usize) -> String {
    let mut s = String::from("[");
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!(
            r#"{{"id":{i},"symbol":"ACME","price":{}.25}},"#,
            100 + i % 7
        ));
        i += 1;
    }
    s.pop();
    s.push(']');
    s
}

#[test]
fn compressed_subscribers_share_one_rsv1_frame_beside_the_plain_one() {
    let (mut node, hub, ids) = subscribed_node(3_000, 7_000);
    publish(&mut node, &hub, 1, &doc(4096));
    let mut plain = std::collections::BTreeSet::new();
    let mut deflated = std::collections::BTreeSet::new();
    let mut frames = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let q = node.queue(id).unwrap();
        assert_eq!(q.frames(), 1, "subscriber {i}");
        let f = q.iter().next().unwrap().clone();
        let set = if i < 3_000 { &mut plain } else { &mut deflated };
        if set.insert(f.as_ptr() as usize) {
            frames.push(f);
        }
    }
    assert_eq!(plain.len(), 1, "plain subscribers share one frame");
    assert_eq!(deflated.len(), 1, "compressing subscribers share one frame");
    assert_ne!(plain, deflated);
    let (p, z) = (&frames[0], &frames[1]);
    assert_eq!(p[0], 0x81, "plain: FIN, text, no RSV1");
    assert_eq!(z[0], 0xC1, "compressed: FIN, RSV1, text");
    assert!(z.len() * 3 < p.len(), "{} vs {}", z.len(), p.len());
    // The compressed frame inflates to the plain frame's payload.
    let mut dec = FrameDecoder::client(1 << 20).with_rsv1();
    let pf = dec.decode(&mut BytesMut::from(&p[..])).unwrap().unwrap();
    let zf = dec.decode(&mut BytesMut::from(&z[..])).unwrap().unwrap();
    assert!(zf.rsv1 && !pf.rsv1);
    let inflated = Codec::new(1).inflate(&zf.payload, 1 << 20).unwrap();
    assert_eq!(inflated, pf.payload);
}

#[test]
fn under_the_threshold_everyone_gets_the_plain_frame() {
    let (mut node, hub, ids) = subscribed_node(10, 10);
    publish(&mut node, &hub, 1, r#"{"price": 101.5}"#);
    let ptrs: std::collections::BTreeSet<usize> = ids
        .iter()
        .map(|&id| {
            let f = node.queue(id).unwrap().iter().next().unwrap().clone();
            assert_eq!(f[0], 0x81, "no RSV1 under the threshold");
            f.as_ptr() as usize
        })
        .collect();
    assert_eq!(ptrs.len(), 1);
}

#[test]
fn without_compression_configured_nobody_gets_a_compressed_frame() {
    let now = Timestamp::ZERO;
    let mut core = Standalone::new(NodeConfig::default(), 7);
    let sub = common::masked(
        true,
        OpCode::Text,
        br#"{"id":1,"subscribe":{"channel":"news"}}"#,
        [9, 8, 7, 6],
    );
    let id = core
        .node
        .handle_connect_with(now, Endpoint::PubSub(Encoding::Json), &sub, true);
    core.pump(now);
    let Standalone { mut node, hub } = core;
    common::take_queued(node.queue(id).unwrap());
    publish(&mut node, &hub, 1, &doc(4096));
    let f = node.queue(id).unwrap().iter().next().unwrap().clone();
    assert_eq!(f[0], 0x81);
}

/// `compression` is live on reload: a node started without it compresses
/// for the connections that negotiated it once reconfigured with it, and
/// stops again when it is taken away.
#[test]
fn compression_is_live_on_reconfigure() {
    let now = Timestamp::ZERO;
    let mut core = Standalone::new(NodeConfig::default(), 7);
    let sub = common::masked(
        true,
        OpCode::Text,
        br#"{"id":1,"subscribe":{"channel":"news"}}"#,
        [9, 8, 7, 6],
    );
    let id = core
        .node
        .handle_connect_with(now, Endpoint::PubSub(Encoding::Json), &sub, true);
    core.pump(now);
    let Standalone { mut node, hub } = core;
    common::take_queued(node.queue(id).unwrap());
    let with = NodeConfig {
        compression: Some(CompressionConfig {
            level: 9,
            threshold: 100,
        }),
        ..NodeConfig::default()
    };
    node.reconfigure(now, with);
    publish(&mut node, &hub, 1, &doc(4096));
    let f = common::take_queued(node.queue(id).unwrap());
    assert_eq!(f[0], 0xC1, "compressed once configured");
    node.reconfigure(now, NodeConfig::default());
    publish(&mut node, &hub, 2, &doc(4096));
    let f = common::take_queued(node.queue(id).unwrap());
    assert_eq!(f[0], 0x81, "plain once compression is off");
}

/// A namespace with `compression = false` is never compressed, even for
/// subscribers that negotiated it.
#[test]
fn a_namespace_can_turn_compression_off() {
    let now = Timestamp::ZERO;
    let mut namespaces = wavecast_core::namespace::Namespaces::default();
    namespaces.named.insert(
        "raw".into(),
        wavecast_core::namespace::NamespaceOptions {
            compression: false,
            ..Default::default()
        },
    );
    let config = NodeConfig {
        compression: Some(CompressionConfig::default()),
        namespaces,
        ..NodeConfig::default()
    };
    let mut core = Standalone::new(config, 7);
    let sub = common::masked(
        true,
        OpCode::Text,
        br#"{"id":1,"subscribe":{"channel":"raw:feed"}}"#,
        [9, 8, 7, 6],
    );
    let id = core
        .node
        .handle_connect_with(now, Endpoint::PubSub(Encoding::Json), &sub, true);
    core.pump(now);
    let Standalone { mut node, hub } = core;
    common::take_queued(node.queue(id).unwrap());
    let epoch = hub.channels()[0].epoch.clone();
    node.handle_backbone(
        now,
        BackboneEvent::Publication {
            channel: "raw:feed".into(),
            epoch,
            publication: Publication {
                offset: 1,
                data: Payload::from_json(doc(4096).as_bytes()).unwrap(),
                info: None,
            },
        },
    );
    let f = common::take_queued(node.queue(id).unwrap());
    assert_eq!(f[0], 0x81, "plain in a namespace without compression");
}
