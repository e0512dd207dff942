//! Detector speed and memory. Prints tables; asserts nothing.
//!
//! `cargo bench -p shmcast-consumer --bench detect` runs the full set:
//! per-frame processing time (load + model + components + tracking), p50/p99,
//! for 1080p and 4K in every raw format, from heap frames; then the same
//! detector reading a real shared-memory ring in place, with its private
//! memory (RssAnon) against the segment size. Without `--bench` (as under
//! `cargo test --benches`) it runs a tiny smoke version.
#![forbid(unsafe_code)]

use std::time::Instant;

use shm_proto::{CreateOptions, FrameMeta, PixelFormat, Reader, ReaderOptions, Start, VideoFormat, Writer};
use shmcast_consumer::detect::{Config, Detector, EventRecord};

/// Variants of the scene with fresh noise (a moving blob drawn in each).
const VARIANTS: usize = 4;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A night-sky-like frame: gradient + approximate Gaussian noise (σ≈4, sum of
/// uniforms) + a bright blob at `(bx, by)`; luma only, neutral chroma.
fn frame(format: &VideoFormat, seed: u64, bx: usize, by: usize) -> Vec<u8> {
    let (w, h) = (format.width as usize, format.height as usize);
    let mut buf = vec![128u8; format.frame_size as usize];
    let p = format.planes()[0];
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for y in 0..h {
        let row = p.offset as usize + y * p.stride as usize;
        for x in 0..w {
            let r = rng.next();
            // Four 8-bit uniforms: mean 510, σ ≈ 147.8; scaled to σ ≈ 4.
            let n = ((r & 255) + ((r >> 8) & 255) + ((r >> 16) & 255) + ((r >> 24) & 255)) as f32 - 510.0;
            let mut v = 20.0 + 30.0 * y as f32 / h as f32 + n * (4.0 / 147.8);
            let (dx, dy) = (x as isize - bx as isize, y as isize - by as isize);
            if dx * dx + dy * dy < (w as isize / 40).pow(2) {
                v += 120.0;
            }
            let l = v.clamp(0.0, 255.0) as u8;
            match format.pixel {
                PixelFormat::Rgb24 | PixelFormat::Bgr24 => buf[row + 3 * x..row + 3 * x + 3].fill(l),
                PixelFormat::Yuyv => buf[row + 2 * x] = l,
                _ => buf[row + x] = l,
            }
        }
    }
    buf
}

fn scenes(format: &VideoFormat) -> Vec<Vec<u8>> {
    let (w, h) = (format.width as usize, format.height as usize);
    (0..VARIANTS).map(|i| frame(format, i as u64 + 1, w / 4 + i * w / 50, h / 2 + i * h / 80)).collect()
}

use shmcast_common::bench::percentile;

fn percentiles(v: &mut [f64]) -> (f64, f64) {
    v.sort_unstable_by(f64::total_cmp);
    (percentile(v, 0.5), percentile(v, 0.99))
}

fn rss_anon() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("RssAnon:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn heap(sizes: &[(u32, u32)], timed: usize) {
    println!("\n## per-frame processing time, frames on the heap ({timed} frames after warm-up, one core)\n");
    println!("| size | format | grid | p50 ms | p99 ms | bytes read/frame | GB/s at p50 | detector MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    let cfg = Config::default();
    let mut events: Vec<EventRecord> = Vec::new();
    for &(w, h) in sizes {
        for pixel in PixelFormat::RAW {
            let format = VideoFormat::new(w, h, pixel, 30, 1).unwrap();
            let frames = scenes(&format);
            let mut det = Detector::new(&cfg, &format).unwrap();
            // Warm-up: the model learns, caches and branch predictors settle.
            for i in 0..12 {
                det.load(&frames[i % VARIANTS]);
                det.process(i as u64, 0, &mut events);
            }
            let mut times = Vec::with_capacity(timed);
            for i in 0..timed {
                let t = Instant::now();
                det.load(&frames[i % VARIANTS]);
                det.process(100 + i as u64, 0, &mut events);
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let (p50, p99) = percentiles(&mut times);
            let read = match pixel {
                PixelFormat::Rgb24 | PixelFormat::Bgr24 => w as f64 * h as f64 * 3.0,
                PixelFormat::Yuyv => w as f64 * h as f64 * 2.0,
                _ => w as f64 * h as f64,
            };
            let (gw, gh, bin) = det.grid();
            println!(
                "| {w}x{h} | {pixel} | {gw}x{gh} (bin {bin}) | {p50:.2} | {p99:.2} | {:.1} MB | {:.1} | {:.1} |",
                read / 1e6,
                read / (p50 * 1e-3) / 1e9,
                det.memory_bytes() as f64 / 1048576.0
            );
            events.clear();
        }
    }
}

/// The detector reading a real ring in place; private memory vs the segment.
fn ring(sizes: &[(u32, u32)], pixels: &[PixelFormat], timed: usize) {
    println!("\n## reading a shared-memory ring in place (8 slots; producer in the same process, not timed)\n");
    println!("| size | format | p50 ms | p99 ms | segment MiB | detector model MiB | RssAnon growth MiB | overruns |");
    println!("|---|---|---|---|---|---|---|---|");
    let cfg = Config::default();
    let mut events: Vec<EventRecord> = Vec::new();
    for &(w, h) in sizes {
        for &pixel in pixels {
            let format = VideoFormat::new(w, h, pixel, 30, 1).unwrap();
            let frames = scenes(&format);
            let name = format!("bench-detect-{}", std::process::id());
            let mut writer = Writer::create(&name, format, &CreateOptions { slots: 8, ..CreateOptions::default() })
                .expect("create ring");
            let total = writer.total_size();
            let mut reader = Reader::open(&name, &ReaderOptions { start: Start::Oldest, ..ReaderOptions::default() })
                .expect("open ring");
            let before = rss_anon();
            let mut det = Detector::new(&cfg, &format).unwrap();
            let mut times = Vec::with_capacity(timed);
            for i in 0..12 + timed {
                let src = &frames[i % VARIANTS];
                writer.publish(|buf| {
                    buf.copy_from_slice(src);
                    FrameMeta::new(i as u64, 0, buf.len() as u64)
                });
                let f = reader.try_next().expect("a frame");
                let id = f.meta().frame_id;
                let t = Instant::now();
                if f.read(|data| det.load(data)).is_some() {
                    det.process(id, 0, &mut events);
                }
                if i >= 12 {
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            let grown = rss_anon().saturating_sub(before);
            let (p50, p99) = percentiles(&mut times);
            println!(
                "| {w}x{h} | {pixel} | {p50:.2} | {p99:.2} | {:.1} | {:.1} | {:.1} | {} |",
                total as f64 / 1048576.0,
                det.memory_bytes() as f64 / 1048576.0,
                grown as f64 / 1048576.0,
                reader.stats().overruns
            );
            events.clear();
            drop(reader);
            drop(writer);
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if full {
        heap(&[(1920, 1080), (3840, 2160)], 60);
        ring(&[(1920, 1080), (3840, 2160)], &[PixelFormat::Nv12, PixelFormat::Rgb24], 30);
    } else {
        // Smoke run (cargo test --benches): small and quick.
        heap(&[(640, 360)], 3);
        ring(&[(640, 360)], &[PixelFormat::Gray8], 3);
    }
}
