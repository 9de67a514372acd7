//! Criterion bench of the opening handshake: `parse_request` followed by
//! `accept` on a typical browser upgrade request (about 500 bytes of
//! headers), the work the server does once per new connection.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use wavecast_core::handshake::{accept, parse_request, HandshakeConfig};

/// What Chrome sends to `wss://example.com/connect?token=...`, plus the
/// header a reverse proxy adds.
const BROWSER_REQUEST: &[u8] = b"GET /connect?token=abc123 HTTP/1.1\r\n\
Host: example.com\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: wavecast.msgpack, wavecast.json\r\n\
X-Forwarded-For: 203.0.113.7\r\n\
\r\n";

fn bench_handshake(c: &mut Criterion) {
    let config = HandshakeConfig {
        allowed_origins: Some(vec!["https://example.com".to_owned()]),
        ..HandshakeConfig::default()
    };
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Bytes(BROWSER_REQUEST.len() as u64));
    group.bench_function("parse_request+accept/browser", |b| {
        b.iter(|| {
            let head = parse_request(black_box(BROWSER_REQUEST), config.max_head_size)
                .expect("the bench request parses")
                .expect("the bench request is complete");
            accept(&head, &config).expect("the bench request is accepted")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_handshake);
criterion_main!(benches);
