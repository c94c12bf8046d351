//! Codec throughput: header decoding, masking next to a plain memcpy, and whole-connection
//! receives of masked frames.
//!
//! Run with `cargo bench -p zcasgi-core --bench codec`; the figures and the exact command of the
//! last recorded run are in `docs/benchmarks/codec.md`. Benchmarks print figures; they never
//! assert on time.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use zcasgi_core::frame::{
    apply_mask, apply_mask_bytes, copy_unmasked, decode_header, FrameHeader, HeaderBytes, OpCode,
};
use zcasgi_core::protocol::{Connection, ProtocolConfig};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const SIZES: [(usize, &str); 3] = [(64, "64B"), (4 << 10, "4KiB"), (1 << 20, "1MiB")];

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// A masked client frame carrying `body`.
fn masked_frame(opcode: OpCode, mut body: Vec<u8>) -> Vec<u8> {
    let len = body.len() as u64;
    let header = FrameHeader { fin: true, rsv: 0, opcode, mask: Some(KEY), payload_len: len };
    let mut wire = HeaderBytes::new(&header).as_slice().to_vec();
    apply_mask_bytes(&mut body, KEY, 0);
    wire.extend_from_slice(&body);
    wire
}

fn decode_headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_header");
    group.throughput(Throughput::Elements(1));
    for (name, len) in [("7-bit", 100usize), ("16-bit", 4 << 10), ("64-bit", 1 << 20)] {
        let wire = masked_frame(OpCode::Binary, payload(len));
        group.bench_function(name, |b| b.iter(|| decode_header(black_box(&wire[..]))));
    }
    group.finish();
}

fn masking(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for (size, label) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let src = payload(size);
        let mut buf = src.clone();
        let mut dst = vec![0u8; size];
        group.bench_function(BenchmarkId::new("memcpy", label), |b| {
            b.iter(|| dst.copy_from_slice(black_box(&src)));
        });
        group.bench_function(BenchmarkId::new("copy_unmasked", label), |b| {
            b.iter(|| copy_unmasked(&mut dst, black_box(&src), KEY, 0));
        });
        group.bench_function(BenchmarkId::new("apply_mask", label), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), KEY, 0));
        });
        // The same slice one byte in: the word loop starts unaligned.
        group.bench_function(BenchmarkId::new("apply_mask_unaligned", label), |b| {
            b.iter(|| apply_mask(black_box(&mut buf[1..]), KEY, 1));
        });
        group.bench_function(BenchmarkId::new("apply_mask_bytes", label), |b| {
            b.iter(|| apply_mask_bytes(black_box(&mut buf), KEY, 0));
        });
    }
    group.finish();
}

fn receive(c: &mut Criterion) {
    let config = ProtocolConfig { ping_interval: None, ..ProtocolConfig::default() };
    let mut group = c.benchmark_group("receive");
    for (size, label) in [(4usize << 10, "4KiB"), (64 << 10, "64KiB")] {
        group.throughput(Throughput::Bytes(size as u64));
        let wire = masked_frame(OpCode::Binary, payload(size));
        // One frame per read: header decode, limit checks, in-place unmask, split off as Bytes.
        // The read buffer's fill (the kernel's copy) is set-up, not measured.
        group.bench_function(BenchmarkId::new("binary", label), |b| {
            b.iter_batched(
                || (Connection::new(config.clone()), BytesMut::from(&wire[..])),
                |(mut conn, mut input)| {
                    conn.receive_data(&mut input).expect("valid frame");
                    let event = conn.next_event();
                    (conn, event)
                },
                BatchSize::SmallInput,
            );
        });
        // Text: the same plus incremental UTF-8 validation (ASCII payload).
        let text = masked_frame(OpCode::Text, (0..size).map(|i| b'a' + (i % 26) as u8).collect());
        group.bench_function(BenchmarkId::new("text", label), |b| {
            b.iter_batched(
                || (Connection::new(config.clone()), BytesMut::from(&text[..])),
                |(mut conn, mut input)| {
                    conn.receive_data(&mut input).expect("valid frame");
                    let event = conn.next_event();
                    (conn, event)
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = decode_headers, masking, receive
}
criterion_main!(benches);
