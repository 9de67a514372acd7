//! Fan-out with and without permessage-deflate, for instruction counts
//! and bytes on the wire: a node with SUBSCRIBERS JSON subscribers of one
//! channel (all of them negotiated compression when COMPRESSION is 1),
//! then N publications of a JSON document of about SIZE bytes, each
//! delivered to all and the queues drained, compressing at LEVEL (an
//! optional fifth argument; the default level otherwise). Prints the bytes
//! queued per delivery. Instructions per delivery = ((count with N) - (count with 0))
//! / N / SUBSCRIBERS, counted with valgrind's callgrind (docs/BENCHMARKS.md,
//! "permessage-deflate").
//!
//! ```sh
//! cargo build --release -p wavecast-core --example deflate_count
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!   target/release/examples/deflate_count 10000 4096 1 0
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!   target/release/examples/deflate_count 10000 4096 1 20
//! ```

use bytes::BytesMut;
use wavecast_core::backbone::BackboneEvent;
use wavecast_core::deflate::CompressionConfig;
use wavecast_core::frame::{self, OpCode};
use wavecast_core::node::{Endpoint, NodeConfig};
use wavecast_core::protocol::{Encoding, Payload, Publication};
use wavecast_core::standalone::Standalone;
use wavecast_core::Timestamp;

/// A JSON document of about `n` bytes, like a feed's (quotes with
/// repeated keys, varying numbers): what compresses about as real
/// publications do.
fn document(n: usize, seq: u64) -> Vec<u8> {
    let mut s = String::from("{\"quotes\":[");
    let mut i = 0u64;
    while s.len() + 80 < n {
        let px = (seq * 7919 + i * 104_729) % 100_000;
        s.push_str(&format!(
            "{{\"symbol\":\"SYM{:03}\",\"bid\":{}.{:02},\"ask\":{}.{:02},\"ts\":{}}},",
            i % 500,
            px / 100,
            px % 100,
            px / 100 + 1,
            (px * 3) % 100,
            1_764_000_000_000 + seq * 1000 + i
        ));
        i += 1;
    }
    s.pop();
    s.push_str("]}");
    s.into_bytes()
}

/// Most publications one run makes (and the documents it prepares).
const MAX_PUBLICATIONS: u64 = 20;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (subscribers, size, compression, publications, level) = match args[..] {
        [s, n, c, p] => (s, n, c, p, None),
        [s, n, c, p, l] => (s, n, c, p, u32::try_from(l).ok()),
        _ => {
            eprintln!(
                "usage: deflate_count SUBSCRIBERS SIZE COMPRESSION(0|1) PUBLICATIONS [LEVEL]"
            );
            std::process::exit(2);
        }
    };
    let now = Timestamp::ZERO;
    let compression_config = CompressionConfig {
        level: level.unwrap_or(wavecast_core::deflate::DEFAULT_LEVEL),
        ..CompressionConfig::default()
    };
    let config = NodeConfig {
        compression: (compression == 1).then_some(compression_config),
        ..NodeConfig::default()
    };
    let mut core = Standalone::new(config, 1);
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
            core.node.handle_connect_with(
                now,
                Endpoint::PubSub(Encoding::Json),
                &sub,
                compression == 1,
            )
        })
        .collect();
    core.pump(now);
    let Standalone { mut node, hub } = core;
    for &id in &ids {
        if let Some(q) = node.queue(id) {
            let n = q.len();
            q.advance(n);
        }
    }
    while node.poll_transmit().is_some() {}
    let epoch = hub.channels()[0].epoch.clone();
    // The documents are made whatever N is (at most 20 are published), so
    // that making them is not counted as the publications' cost.
    let docs: Vec<Payload> = (1..=MAX_PUBLICATIONS)
        .map(|seq| Payload::from_json(&document(size as usize, seq)).expect("valid JSON"))
        .collect();
    let mut bytes = 0u64;
    let mut deliveries = 0u64;
    for (offset, data) in (1..=publications.min(MAX_PUBLICATIONS)).zip(docs) {
        node.handle_backbone(
            now,
            BackboneEvent::Publication {
                channel: "news".into(),
                epoch: epoch.clone(),
                publication: Publication {
                    offset,
                    data,
                    info: None,
                },
            },
        );
        while let Some(id) = node.poll_transmit() {
            if let Some(q) = node.queue(id) {
                let n = q.len();
                bytes += n as u64;
                deliveries += 1;
                q.advance(n);
            }
        }
    }
    if let Some(per) = bytes.checked_div(deliveries) {
        println!(
            "subscribers {subscribers} size {size} compression {compression}: {per} bytes per delivery"
        );
    }
}
