//! The test-pattern renderer: writes one frame of the scene straight into a
//! ring slot.
//!
//! Each frame is written once: a single pass copies the prepared background
//! into the slot (adding noise on the way when `--noise` is set), then the
//! stamp, the sweeping bar and the current event are drawn on top. Nothing is
//! allocated per frame.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use shm_proto::format::GrayMap;
use shm_proto::stamp::{Stamp, StampLayout};
use shm_proto::{CreateOptions, FrameMeta, Rect, VideoFormat};

use crate::canvas::Canvas;
use crate::config::SourceConfig;
use crate::events::{Schedule, Truth};
use crate::output::{Output, Pacer, TruthFile};
use crate::rng::Rng;
use crate::scene::{self, BAR_LUMA};

/// Random row offsets range over this many pixels of the noise table.
const NOISE_SPAN: usize = 1 << 16;

/// Test-pattern settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Seed of everything random.
    pub seed: u64,
    /// Noise standard deviation in gray levels (0: none).
    pub noise: f64,
    /// Events per 1000 frames (0: none).
    pub events: f64,
    /// Stream rate used for motion durations, pacing of the bar and warm-up
    /// (the real `--fps`, or 30 when running as fast as possible).
    pub fps: f64,
}

/// A prepared test pattern for one format.
pub struct TestSrc {
    width: u32,
    height: u32,
    map: GrayMap,
    band_h: u32,
    stamp: Option<StampLayout>,
    block: u32,
    fps: f64,
    /// The background frame in the target format.
    bg: Vec<u8>,
    /// Gaussian gray noise, one value per pixel (empty: no noise).
    gauss: Vec<i8>,
    /// `gauss` expanded to the byte layout of plane 0 (R=G=B for RGB, Y only
    /// for YUYV), so a row is noised by one vectorisable add.
    noise_bytes: Vec<i8>,
    /// Bytes per pixel in `noise_bytes`.
    unit: usize,
    noise_rng: Rng,
    events: Option<Schedule>,
}

impl TestSrc {
    /// Prepares the background, noise table and event schedule.
    pub fn new(fmt: &VideoFormat, s: &Settings) -> anyhow::Result<(TestSrc, Option<f64>)> {
        let map = fmt
            .luma()
            .map(|l| l.gray())
            .with_context(|| format!("testsrc draws raw formats only; {} needs a v4l2: or gst: source", fmt.pixel))?;
        let (w, h) = (fmt.width, fmt.height);
        let band_h = scene::status_band(w, h).3;
        let rgb = scene::background_rgb(w, h, s.seed);
        let bg = scene::convert(&rgb, fmt).context("testsrc cannot convert its background")?;
        drop(rgb);
        let unit = map.step;
        let (gauss, noise_bytes) = if s.noise > 0.0 {
            let mut r = Rng::new(s.seed, 2);
            let n = NOISE_SPAN + w as usize;
            let gauss: Vec<i8> = (0..n).map(|_| (r.gaussian() * s.noise).round().clamp(-127.0, 127.0) as i8).collect();
            let mut bytes = vec![0i8; n * unit];
            for (i, g) in gauss.iter().enumerate() {
                // YUYV: noise on Y (even bytes) only; RGB: the same value on R, G, B.
                let k = if map.width == 3 { 3 } else { 1 };
                bytes[i * unit..i * unit + k].fill(*g);
            }
            (gauss, bytes)
        } else {
            (Vec::new(), Vec::new())
        };
        let mut capped = None;
        let events = if s.events > 0.0 {
            if !Schedule::fits(w, h, band_h) {
                bail!("frame {w}x{h} is too small for --events (needs room below the {band_h}-row status band)");
            }
            let (sched, c) = Schedule::new(s.seed, w, h, band_h, s.events, s.fps);
            capped = c;
            Some(sched)
        } else {
            None
        };
        let src = TestSrc {
            width: w,
            height: h,
            map,
            band_h,
            stamp: StampLayout::for_frame(w, h),
            block: scene::band_block(w, h),
            fps: s.fps.max(1.0),
            bg,
            gauss,
            noise_bytes,
            unit,
            noise_rng: Rng::new(s.seed, 4),
            events,
        };
        Ok((src, capped))
    }

    /// Renders frame `id` captured at `capture_ns` into `buf` (a whole slot of
    /// the prepared format). Returns the truth of an event whose last frame
    /// this was.
    pub fn render(&mut self, buf: &mut [u8], id: u64, capture_ns: u64) -> Option<Truth> {
        let buf = &mut buf[..self.bg.len()];
        let band_bytes = self.band_h as usize * self.map.stride;
        if self.noise_bytes.is_empty() {
            buf.copy_from_slice(&self.bg);
        } else {
            // The band stays clean so the stamp always decodes; the sky rows get
            // the table at a random pixel offset per row and frame.
            buf[..band_bytes].copy_from_slice(&self.bg[..band_bytes]);
            let row_bytes = self.width as usize * self.map.step;
            for y in self.band_h as usize..self.height as usize {
                let start = y * self.map.stride;
                let off = (self.noise_rng.next_u64() as usize % NOISE_SPAN) * self.unit;
                add_noise(
                    &mut buf[start..start + row_bytes],
                    &self.bg[start..start + row_bytes],
                    &self.noise_bytes[off..off + row_bytes],
                );
            }
            // Chroma planes (and any row padding) are copied untouched.
            let luma_end = self.height as usize * self.map.stride;
            buf[luma_end..].copy_from_slice(&self.bg[luma_end..]);
        }
        // Bounded so `Canvas::put_noisy` can add pixel offsets without overflow.
        let noise_off = (self.noise_rng.next_u64() >> 32) as usize;
        if let Some(layout) = &self.stamp {
            layout.draw_gray(&Stamp::new(id, capture_ns), buf, &self.map);
        }
        let mut c = Canvas::new(buf, self.map, self.width, self.height, &self.gauss, noise_off);
        // The sweeping bar: one sweep of the width in about two seconds.
        let b = self.block;
        let bar_y = self.band_h.saturating_sub(3 * b / 4);
        let clear_of_stamp = self.stamp.is_none_or(|l| bar_y >= l.y0 + 2 * l.block);
        if self.width > b && clear_of_stamp {
            let travel = u64::from(self.width - b);
            let x = (id as f64 * f64::from(self.width) / (2.0 * self.fps)) as u64 % travel;
            c.fill_rect(x as u32, bar_y, b, (b / 2).max(1), BAR_LUMA);
        }
        let ev = self.events.as_mut()?.at(id)?;
        ev.draw(&mut c, id, capture_ns);
        if id == ev.end() { ev.truth() } else { None }
    }

    /// Truth of an event cut short (drawn, but not to its last frame).
    pub fn unfinished(&self) -> Option<Truth> {
        self.events.as_ref()?.unfinished()
    }

    /// The status band rectangle.
    pub fn band(&self) -> (u32, u32, u32, u32) {
        (0, 0, self.width, self.band_h)
    }
}

/// Runs the test pattern until `--frames` or `stop`, writing the ground truth
/// of its events to `truth`.
pub fn run(c: &SourceConfig, settings: &Settings, truth: Option<&Path>, stop: &AtomicBool) -> anyhow::Result<()> {
    let fps = c.fps.unwrap_or(30);
    let format = VideoFormat::new(c.width, c.height, c.pixel, fps, 1)?;
    // The stream first: a name in use or a full /dev/shm fails before the
    // (at large sizes, slow) background preparation.
    // The status band changes every frame by design: record it in the header
    // as the producer's overlay, so pixel-analysing consumers ignore it.
    let (bx, by, bw, bh) = scene::status_band(format.width, format.height);
    let create = CreateOptions { overlay: Some(Rect::new(bx, by, bw, bh)), ..c.create.clone() };
    let mut out = Output::create(&c.name, format, &create)?;
    let (mut src, capped) = TestSrc::new(&format, settings)?;
    if let Some(rate) = capped {
        tracing::warn!(
            requested = settings.events,
            delivered = format_args!("{rate:.1}"),
            "--events asks for more events than fit without overlap; delivering about this many per 1000 frames"
        );
    }
    debug_assert_eq!(src.band(), (bx, by, bw, bh));
    tracing::info!(x = bx, y = by, w = bw, h = bh, "status band (recorded as the stream's overlay region)");
    let mut truth = match truth {
        Some(p) => Some(TruthFile::create(p)?),
        None => None,
    };
    let mut pacer = Pacer::new(fps);
    let size = format.frame_size;
    let mut id = 0u64;
    while c.frames.is_none_or(|n| id < n) {
        if !pacer.wait(stop) {
            break;
        }
        let capture = shm_proto::os::realtime_ns();
        let mut ended = None;
        out.publish(|slot| {
            ended = src.render(slot, id, capture);
            FrameMeta::new(id, capture, size)
        });
        if let (Some(t), Some(f)) = (ended, truth.as_mut()) {
            f.write(&t)?;
        }
        id += 1;
    }
    if let (Some(t), Some(f)) = (src.unfinished(), truth.as_mut()) {
        f.write(&t).context("at exit")?;
    }
    tracing::info!(frames = out.stats.frames(), "stopping");
    Ok(())
}

/// `dst = clamp(src + noise)`, written so the compiler vectorises it.
fn add_noise(dst: &mut [u8], src: &[u8], noise: &[i8]) {
    for ((d, &s), &n) in dst.iter_mut().zip(src).zip(noise) {
        *d = (i16::from(s) + i16::from(n)).clamp(0, 255) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_proto::PixelFormat;

    fn settings(events: f64, noise: f64) -> Settings {
        Settings { seed: 9, noise, events, fps: 30.0 }
    }

    #[test]
    fn stamp_decodes_in_every_raw_format_with_noise() {
        for pixel in PixelFormat::RAW {
            let fmt = VideoFormat::new(640, 360, pixel, 30, 1).unwrap();
            let (mut src, _) = TestSrc::new(&fmt, &settings(0.0, 6.0)).unwrap();
            let mut buf = vec![0u8; fmt.frame_size as usize];
            for id in [0u64, 1, 77, 1_000_003] {
                src.render(&mut buf, id, 1_700_000_000_000_000_000 + id);
                let s = shm_proto::stamp::decode(&buf, &fmt).expect("stamp");
                assert_eq!(u64::from(s.frame_id), id, "{pixel}");
            }
        }
    }

    #[test]
    fn events_are_deterministic_disjoint_and_outside_the_band() {
        let fmt = VideoFormat::new(640, 360, PixelFormat::Gray8, 30, 1).unwrap();
        let run = |pixel| {
            let fmt = VideoFormat::new(640, 360, pixel, 30, 1).unwrap();
            let (mut src, capped) = TestSrc::new(&fmt, &settings(10.0, 0.0)).unwrap();
            assert!(capped.is_none());
            let mut buf = vec![0u8; fmt.frame_size as usize];
            let mut out = Vec::new();
            for id in 0..3000 {
                out.extend(src.render(&mut buf, id, id));
            }
            out
        };
        let a = run(PixelFormat::Gray8);
        assert_eq!(a, run(PixelFormat::Gray8));
        let b = run(PixelFormat::Rgb24);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.kind, x.start_frame, x.end_frame, x.bbox), (y.kind, y.start_frame, y.end_frame, y.bbox));
        }
        assert!((18..=45).contains(&a.len()), "{} events in 3000 frames at 10/1000", a.len());
        assert!(a.iter().any(|t| t.kind == "meteor") && a.iter().any(|t| t.kind == "motion"));
        let band_h = scene::status_band(fmt.width, fmt.height).3;
        for w in a.windows(2) {
            assert!(w[1].start_frame > w[0].end_frame);
        }
        for t in &a {
            assert!(!t.truncated && t.frames == t.end_frame - t.start_frame + 1);
            assert!(t.bbox[1] >= band_h + 8, "{t:?}");
            assert!(t.bbox[0] + t.bbox[2] <= 640 - 8 + 1 && t.bbox[1] + t.bbox[3] <= 360 - 8 + 1, "{t:?}");
            if t.kind == "meteor" {
                assert!((3..=15).contains(&t.frames));
            } else {
                assert!((30..=150).contains(&t.frames));
            }
        }
        assert!(a[0].start_frame >= 60);
    }

    #[test]
    fn events_are_visible_in_luma() {
        let fmt = VideoFormat::new(640, 360, PixelFormat::Gray8, 30, 1).unwrap();
        let (mut src, _) = TestSrc::new(&fmt, &settings(20.0, 0.0)).unwrap();
        let (mut clean, _) = TestSrc::new(&fmt, &settings(0.0, 0.0)).unwrap();
        let mut buf = vec![0u8; fmt.frame_size as usize];
        let mut bg = vec![0u8; fmt.frame_size as usize];
        let mut seen = 0;
        for id in 0..1500 {
            let t = src.render(&mut buf, id, 0);
            clean.render(&mut bg, id, 0);
            if let Some(t) = t {
                let [x, y, w, h] = t.bbox;
                let mut max_diff = 0;
                for yy in y..y + h {
                    for xx in x..x + w {
                        let i = (yy * 640 + xx) as usize;
                        max_diff = max_diff.max(i32::from(buf[i]) - i32::from(bg[i]));
                    }
                }
                assert!(max_diff >= 50, "{t:?}: last frame differs by only {max_diff}");
                seen += 1;
            }
        }
        assert!(seen > 5);
    }
}
