//! Fan-out for instruction counts: a node with 10,000 JSON subscribers of
//! one channel, then N publications each delivered to all of them and the
//! queues drained, as the criterion bench `fanout` does, but as a plain
//! program so that valgrind's callgrind can count it. Instructions per
//! publication = (count with N) - (count with 0), divided by N: stable on
//! this noisy machine where timings are not (docs/BENCHMARKS.md).
//!
//! After each publication's queues are drained it does what the runtime's
//! shard does after its write pass: takes the node's fan-out entries and
//! observes them into a fan-out histogram per subscriber bucket, so the
//! count includes what the metrics cost on the fan-out path.
//!
//! ```sh
//! cargo build --release -p wavecast-core --example fanout_count
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/fanout_count 0
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/fanout_count 20
//! ```

use bytes::BytesMut;
use wavecast_core::backbone::BackboneEvent;
use wavecast_core::frame::{self, OpCode};
use wavecast_core::metrics::{Histogram, SUBSCRIBER_BUCKETS};
use wavecast_core::node::{Endpoint, NodeConfig};
use wavecast_core::protocol::{Encoding, Payload, Publication};
use wavecast_core::standalone::Standalone;
use wavecast_core::Timestamp;

const SUBSCRIBERS: usize = 10_000;

fn main() {
    let publications: u64 = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("usage: fanout_count PUBLICATIONS");
            std::process::exit(2);
        }
    };
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
    let ids: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| {
            core.node
                .handle_connect(now, Endpoint::PubSub(Encoding::Json), &sub)
        })
        .collect();
    core.pump(now);
    let Standalone { mut node, hub } = core;
    // The subscribe replies, written.
    for &id in &ids {
        if let Some(q) = node.queue(id) {
            let n = q.len();
            q.advance(n);
        }
    }
    while node.poll_transmit().is_some() {}
    let epoch = hub.channels()[0].epoch.clone();
    let data =
        Payload::from_json(br#"{"symbol":"ACME","price":101.25,"seq":1}"#).expect("valid JSON");
    let mut fanout: [Histogram; SUBSCRIBER_BUCKETS] = Default::default();
    for offset in 1..=publications {
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
            if let Some(q) = node.queue(id) {
                let n = q.len();
                q.advance(n);
            }
        }
        // The write pass is done: observe (the runtime reads its clock
        // here; the example's time stands still).
        if node.has_fanouts() {
            for f in node.take_fanouts() {
                let micros = now.saturating_since(f.arrival).as_micros() as u64;
                fanout[usize::from(f.bucket)].observe_n(micros, u64::from(f.publications));
            }
        }
    }
    assert_eq!(node.subscribers("news"), SUBSCRIBERS);
    let observed: u64 = fanout.iter().map(Histogram::count).sum();
    assert_eq!(observed, publications);
    assert_eq!(
        node.counters().deliveries,
        publications * SUBSCRIBERS as u64
    );
}
