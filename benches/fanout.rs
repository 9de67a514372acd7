//! Fan-out inside the core: one publication delivered by a node to 10,000
//! local subscribers (JSON), i.e. encoded once and queued 10,000 times.
//! Throughput is in subscribers (frames queued per second). Each iteration
//! also drains the queues, as a driver writing them would.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wavecast_core::backbone::BackboneEvent;
use wavecast_core::frame::{self, OpCode};
use wavecast_core::node::{Endpoint, NodeConfig};
use wavecast_core::protocol::{Encoding, Payload, Publication};
use wavecast_core::standalone::Standalone;
use wavecast_core::Timestamp;

fn bench_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for subscribers in [1_000usize, 10_000] {
        let now = Timestamp::ZERO;
        let mut core = Standalone::new(NodeConfig::default(), 1);
        let mut sub = BytesMut::new();
        frame::encode_masked(
            true,
            OpCode::Text,
            br#"{"id":1,"subscribe":{"channel":"news"}}"#,
            [1, 2, 3, 4],
            &mut sub,
        );
        let ids: Vec<_> = (0..subscribers)
            .map(|_| {
                core.node
                    .handle_connect(now, Endpoint::PubSub(Encoding::Json), &sub)
            })
            .collect();
        core.pump(now);
        let Standalone { mut node, hub } = core;
        let epoch = hub.channels()[0].epoch.clone();
        let data = Payload::from_json(br#"{"symbol":"ACME","price":101.25,"seq":1}"#).unwrap();
        let mut offset = 0u64;
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(format!("publish_to_{subscribers}"), |b| {
            b.iter(|| {
                offset += 1;
                node.handle_backbone(
                    now,
                    BackboneEvent::Publication {
                        channel: "news".into(),
                        epoch: epoch.clone(),
                        publication: Publication {
                            offset,
                            data: data.clone(),
                            info: None,
                        },
                    },
                );
                while let Some(id) = node.poll_transmit() {
                    let q = node.queue(id).unwrap();
                    let n = q.len();
                    q.advance(n);
                }
                for &id in &ids {
                    if let Some(q) = node.queue(id) {
                        let n = q.len();
                        q.advance(n);
                    }
                }
            })
        });
        assert_eq!(node.subscribers("news"), subscribers);
    }
    group.finish();
}

criterion_group!(benches, bench_fanout);
criterion_main!(benches);
