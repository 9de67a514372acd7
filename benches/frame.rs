//! Frame codec throughput: decode (header parse + unmask + split) by payload
//! size, encode by payload size, and raw `apply_mask` throughput.
//!
//! Run: `cargo bench --bench frame`. Throughput is reported in payload bytes,
//! so criterion prints MiB/s or GiB/s directly.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wavecast_core::frame::{apply_mask, encode_frame, encode_masked, FrameDecoder, OpCode};

/// Payload sizes: tiny, largest control frame, typical, large, 16-bit limit area.
const SIZES: [(usize, &str); 5] = [
    (16, "16B"),
    (125, "125B"),
    (1024, "1KiB"),
    (16 * 1024, "16KiB"),
    (64 * 1024, "64KiB"),
];

/// Each iteration works on about this many payload bytes, so small frames are
/// measured over many frames and per-iteration overhead stays negligible.
const BATCH_BYTES: usize = 256 * 1024;

fn frames_per_batch(size: usize) -> usize {
    (BATCH_BYTES / size).max(1)
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame/decode");
    for (size, name) in SIZES {
        let n = frames_per_batch(size);
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut stream = BytesMut::new();
        for _ in 0..n {
            encode_masked(
                true,
                OpCode::Binary,
                &payload,
                [0xA1, 0xB2, 0xC3, 0xD4],
                &mut stream,
            );
        }
        group.throughput(Throughput::Bytes((size * n) as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                // Decoding consumes and unmasks the buffer in place, so each
                // iteration gets a fresh copy (not timed).
                || stream.clone(),
                |mut buf| {
                    let mut dec = FrameDecoder::new(1 << 20);
                    let mut count = 0usize;
                    while let Ok(Some(frame)) = dec.decode(&mut buf) {
                        count += frame.payload.len();
                        black_box(&frame);
                    }
                    assert_eq!(count, size * n);
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame/encode");
    for (size, name) in SIZES {
        let n = frames_per_batch(size);
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut out = BytesMut::with_capacity((size + 10) * n);
        group.throughput(Throughput::Bytes((size * n) as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..n {
                    encode_frame(true, OpCode::Binary, black_box(&payload), &mut out);
                }
                black_box(&out);
            });
        });
    }
    group.finish();
}

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame/apply_mask");
    for (size, name) in [(64 * 1024, "64KiB"), (1024 * 1024, "1MiB")] {
        let mut data: Vec<u8> = (0..size).map(|i| i as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| {
            b.iter(|| apply_mask(black_box(&mut data), black_box([0x11, 0x22, 0x33, 0x44])));
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode, mask);
criterion_main!(benches);
