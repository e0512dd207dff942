//! A small stamped test source for the bridge's tests and benchmark, so they
//! do not depend on another crate's binary: gray frames with a moving bar (so
//! the encoder has motion to code) and the frame stamp (`shm_proto::stamp`:
//! frame id + capture time) at the top left, written in place into the ring.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shm_proto::format::LumaLayout;
use shm_proto::stamp::{Stamp, StampLayout};
use shm_proto::{CreateOptions, FrameMeta, PixelFormat, VideoFormat, Writer};

/// Draws one frame of `format` into `buf`: background, bar at `frame_id`, stamp.
pub fn draw(buf: &mut [u8], format: &VideoFormat, frame_id: u64, stamp: &Stamp) {
    let (w, h) = (format.width as usize, format.height as usize);
    let bar_x = (frame_id as usize * 8) % w.max(1);
    let bar_w = (w / 20).max(2);
    match format.pixel {
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => {
            let stride = format.planes[0].stride as usize;
            for y in 0..h {
                let row = &mut buf[y * stride..y * stride + w * 3];
                row.fill(100);
                let end = (bar_x + bar_w).min(w);
                row[bar_x * 3..end * 3].fill(200);
            }
        }
        PixelFormat::Mjpeg => return,
        _ => {
            // Chroma (if any) neutral, luma gray with a bar.
            buf.fill(128);
            let LumaLayout::Plane { offset, stride, step } = format.luma().expect("raw format") else { return };
            let (offset, stride, step) = (offset as usize, stride as usize, step as usize);
            for y in 0..h {
                let row = offset + y * stride;
                for x in 0..w {
                    buf[row + x * step] = if x >= bar_x && x < bar_x + bar_w { 200 } else { 100 };
                }
            }
        }
    }
    let Some(layout) = StampLayout::for_frame(format.width, format.height) else { return };
    match format.luma() {
        Some(LumaLayout::Plane { offset, stride, step }) => {
            layout.draw_luma(stamp, &mut buf[offset as usize..], stride as usize, step as usize);
        }
        Some(LumaLayout::Rgb { offset, stride, .. }) => {
            // White/black in all three channels is white/black luma.
            for c in 0..3 {
                layout.draw_luma(stamp, &mut buf[offset as usize + c..], stride as usize, 3);
            }
        }
        None => {}
    }
}

/// Publishes frames of `format` under `name` at its frame rate until `stop`
/// is set or `frames` frames were written.
pub fn run(name: &str, format: VideoFormat, frames: Option<u64>, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut w = Writer::create(name, format, &CreateOptions::default())
        .map_err(|e| anyhow::anyhow!("cannot create stream {name}: {e}"))?;
    w.set_live();
    let period =
        if format.fps_num == 0 { Duration::from_millis(33) } else { Duration::from_secs_f64(1.0 / format.fps()) };
    let start = Instant::now();
    let mut id = 0u64;
    // Relaxed: a standalone flag.
    while !stop.load(Ordering::Relaxed) && frames.is_none_or(|n| id < n) {
        let due = start + period * id as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let capture = shm_proto::os::realtime_ns();
        let stamp = Stamp::new(id, capture);
        w.publish(|buf| {
            draw(buf, &format, id, &stamp);
            FrameMeta::new(id, capture, format.frame_size)
        });
        id += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_decodes_from_every_raw_format() {
        for pixel in PixelFormat::RAW {
            let f = VideoFormat::new(640, 360, pixel, 30, 1).unwrap();
            let mut buf = vec![0u8; f.frame_size as usize];
            let s = Stamp::new(42, 1_700_000_000_000_000_000);
            draw(&mut buf, &f, 42, &s);
            let got = match f.luma().unwrap() {
                LumaLayout::Plane { offset, stride, step } => shm_proto::stamp::decode_luma(
                    &buf[offset as usize..],
                    stride as usize,
                    step as usize,
                    f.width,
                    f.height,
                ),
                LumaLayout::Rgb { offset, stride, .. } => {
                    shm_proto::stamp::decode_luma(&buf[offset as usize..], stride as usize, 3, f.width, f.height)
                }
            };
            assert_eq!(got, Some(s), "{pixel}");
        }
    }
}
