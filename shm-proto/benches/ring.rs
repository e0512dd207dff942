//! Criterion benches of the ring's hot paths on a real segment, in one process:
//! publish (begin + fill + commit + wake), `try_next` + validate, and header
//! validation, and the validated copy-out of a 1080p RGB frame against a plain
//! memcpy of the same size. Cross-process figures come from `shmcast-bench`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shm_proto::header::{self, Identity};
use shm_proto::layout::{Geometry, MAGIC, PAGE};
use shm_proto::{CreateOptions, FrameMeta, PixelFormat, Reader, ReaderOptions, VideoFormat, Writer};

fn ring(c: &mut Criterion) {
    let name = format!("crit-{}", std::process::id());
    let format = VideoFormat::new(256, 256, PixelFormat::Gray8, 0, 1).unwrap();
    let mut w = Writer::create(&name, format, &CreateOptions { slots: 8, ..Default::default() }).unwrap();
    let mut r = Reader::open(&name, &ReaderOptions::default()).unwrap();
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Bytes(format.frame_size));
    g.bench_function("publish_64KiB", |b| {
        b.iter(|| {
            w.publish(|buf| {
                buf.fill(7);
                FrameMeta::new(0, 0, buf.len() as u64)
            })
        })
    });
    g.bench_function("publish_and_read_64KiB", |b| {
        b.iter(|| {
            w.publish(|buf| {
                buf.fill(7);
                FrameMeta::new(0, 0, buf.len() as u64)
            });
            let f = r.latest().expect("a frame");
            black_box(f.read(|d| d.iter().map(|&x| u64::from(x)).sum::<u64>()))
        })
    });
    g.finish();

    let f = VideoFormat::new(1920, 1080, PixelFormat::Nv12, 30, 1).unwrap();
    let geo = Geometry::compute(8, f.frame_size, PAGE).unwrap();
    let mut h = header::encode(&geo, &f, &Identity { pid: 1, epoch: 2, start_unix_ns: 3 }, false, None);
    h.magic = MAGIC;
    let bytes = h.to_bytes();
    c.bench_function("header_decode", |b| b.iter(|| header::decode_bytes(black_box(&bytes), geo.total_size)));
}

/// `Frame::copy_to` (volatile loads, then the seqlock check) against
/// `copy_from_slice` of the same 1080p RGB frame, both from memory that is
/// in cache after the first pass, into the same destination.
fn copy_out(c: &mut Criterion) {
    let name = format!("crit-copy-{}", std::process::id());
    let format = VideoFormat::new(1920, 1080, PixelFormat::Rgb24, 0, 1).unwrap();
    let mut w = Writer::create(&name, format, &CreateOptions { slots: 2, ..Default::default() }).unwrap();
    let mut r = Reader::open(&name, &ReaderOptions::default()).unwrap();
    w.publish(|buf| {
        buf.fill(3);
        FrameMeta::new(0, 0, buf.len() as u64)
    });
    let f = r.try_next().expect("a frame");
    let src = vec![3u8; format.frame_size as usize];
    let mut dst = vec![0u8; format.frame_size as usize];
    let mut g = c.benchmark_group("copy_1080p_rgb");
    g.throughput(Throughput::Bytes(format.frame_size));
    g.bench_function("frame_copy_to", |b| b.iter(|| f.copy_to(black_box(&mut dst)).unwrap()));
    g.bench_function("memcpy", |b| b.iter(|| black_box(&mut dst).copy_from_slice(black_box(&src))));
    g.finish();
}

criterion_group!(benches, ring, copy_out);
criterion_main!(benches);
