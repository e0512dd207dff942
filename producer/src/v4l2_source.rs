//! `v4l2:/dev/videoN`: V4L2 capture with mmap streaming.
//!
//! Negotiates the requested size, pixel format and rate; when the device
//! cannot deliver them, fails listing what it offers. Frames carry the
//! driver's capture timestamp (CLOCK_MONOTONIC for nearly every driver),
//! mapped to CLOCK_REALTIME; MJPEG frames are carried with their real length.
#![forbid(unsafe_code)]

use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use shm_proto::{FLAG_KEYFRAME, FrameMeta, PixelFormat, VideoFormat};
use v4l::buffer::{Flags, Type};
use v4l::capability::Flags as CapFlags;
use v4l::format::FourCC;
use v4l::framesize::FrameSizeEnum;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, Fraction};

use crate::config::SourceConfig;
use crate::output::{Output, check_name_free};

/// Buffers queued in the driver.
const BUFFERS: u32 = 4;

fn fourcc(p: PixelFormat) -> FourCC {
    FourCC::new(&p.fourcc().to_le_bytes())
}

/// Opens and checks the device: exists, is a V4L2 capture device with streaming.
pub fn open(path: &Path) -> anyhow::Result<Device> {
    let shown = path.display();
    let dev = match Device::with_path(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!("no such device {shown} (is the camera plugged in?)"),
        Err(e) if e.raw_os_error() == Some(16) => bail!("device {shown} is busy (used by another program)"),
        Err(e) => bail!("cannot open device {shown}: {e}"),
    };
    let caps = match dev.query_caps() {
        Ok(c) => c,
        Err(e) if e.raw_os_error() == Some(25) || e.raw_os_error() == Some(22) => {
            bail!("{shown} is not a V4L2 device")
        }
        Err(e) => bail!("cannot query device {shown}: {e}"),
    };
    if !caps.capabilities.contains(CapFlags::VIDEO_CAPTURE) {
        bail!("{shown} ({}) is not a single-planar video capture device", caps.card);
    }
    if !caps.capabilities.contains(CapFlags::STREAMING) {
        bail!("{shown} ({}) does not support streaming I/O", caps.card);
    }
    Ok(dev)
}

/// "YUYV 640x480 1280x720; MJPG 1920x1080": what the device offers.
fn offers(dev: &Device) -> String {
    let Ok(formats) = dev.enum_formats() else { return "(the device does not list its formats)".into() };
    let mut parts = Vec::new();
    for f in formats {
        let sizes = dev
            .enum_framesizes(f.fourcc)
            .map(|v| {
                v.into_iter()
                    .map(|s| match s.size {
                        FrameSizeEnum::Discrete(d) => format!("{}x{}", d.width, d.height),
                        FrameSizeEnum::Stepwise(s) => {
                            format!("{}x{}..{}x{}", s.min_width, s.min_height, s.max_width, s.max_height)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let known = PixelFormat::from_fourcc(u32::from_le_bytes(f.fourcc.repr)).map_or("", |p| p.name());
        parts.push(format!("{} {sizes}{}", f.fourcc, if known.is_empty() { " (unsupported)" } else { "" }));
    }
    parts.join("; ")
}

/// Runs V4L2 capture until `--frames` or `stop`.
pub fn run(c: &SourceConfig, device: &Path, stop: &AtomicBool) -> anyhow::Result<()> {
    let shown = device.display();
    let dev = open(device)?;
    check_name_free(&c.name, &c.create)?;
    let mut fmt = dev.format().with_context(|| format!("cannot read the format of {shown}"))?;
    fmt.width = c.width;
    fmt.height = c.height;
    fmt.fourcc = fourcc(c.pixel);
    let got = match dev.set_format(&fmt) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(16) => bail!("device {shown} is busy (used by another program)"),
        Err(e) => bail!("cannot set format on {shown}: {e}; the device offers: {}", offers(&dev)),
    };
    if got.width != c.width || got.height != c.height || got.fourcc != fmt.fourcc {
        bail!(
            "{shown} cannot deliver {}x{} {}: it chose {}x{} {}; the device offers: {}",
            c.width,
            c.height,
            c.pixel,
            got.width,
            got.height,
            got.fourcc,
            offers(&dev)
        );
    }
    let interval = match c.fps {
        Some(n) if n > 0 => {
            let p = dev
                .set_params(&v4l::video::capture::Parameters::with_fps(n))
                .with_context(|| format!("cannot set {n} fps on {shown}"))?;
            let i = p.interval;
            if i.numerator == 0 || (i.denominator as f64 / i.numerator as f64 - f64::from(n)).abs() > 0.5 {
                tracing::warn!(requested = n, got = %i, "the device runs at another frame rate");
            }
            i
        }
        _ => dev.params().map(|p| p.interval).unwrap_or(Fraction::new(0, 1)),
    };
    // The header wants frames per second: the inverse of the frame interval.
    let (num, den) = if interval.numerator > 0 { (interval.denominator, interval.numerator) } else { (0, 1) };
    let format = VideoFormat::new(c.width, c.height, c.pixel, num, den)?;
    let bytesperline = got.stride as usize;

    let mut stream = v4l::io::mmap::Stream::with_buffers(&dev, Type::VideoCapture, BUFFERS).map_err(|e| {
        if e.raw_os_error() == Some(16) {
            anyhow!("device {shown} is busy (used by another program)")
        } else {
            anyhow!("cannot start streaming from {shown}: {e}")
        }
    })?;
    stream.set_timeout(Duration::from_millis(200));
    let mut out = Output::create(&c.name, format, &c.create)?;
    tracing::info!(device = %shown, format = %format, bytesperline, "capturing");
    let mut frame_id = 0u64;
    loop {
        if shmcast_common::should_stop(stop) || c.frames.is_some_and(|n| frame_id >= n) {
            break;
        }
        let (data, meta) = match stream.next() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(anyhow!("capture from {shown} failed: {e}")),
        };
        let arrival = shm_proto::os::realtime_ns();
        let used = (meta.bytesused as usize).min(data.len());
        let capture = driver_time(meta.flags, Duration::from(meta.timestamp), arrival);
        if c.pixel.is_compressed() {
            if used as u64 > format.frame_size {
                out.stats.dropped();
                continue;
            }
            out.publish(|slot| {
                slot[..used].copy_from_slice(&data[..used]);
                let mut m = FrameMeta::new(frame_id, capture, used as u64);
                m.flags = FLAG_KEYFRAME;
                m
            });
        } else {
            out.publish(|slot| {
                copy_raw(slot, &format, &data[..used], bytesperline);
                FrameMeta::new(frame_id, capture, format.frame_size)
            });
        }
        frame_id += 1;
    }
    tracing::info!(frames = out.stats.frames(), "stopping");
    Ok(())
}

/// Copies a single-planar V4L2 buffer (planes back to back, luma rows
/// `bytesperline` apart, chroma rows scaled like the format's) into the slot.
fn copy_raw(slot: &mut [u8], format: &VideoFormat, data: &[u8], bytesperline: usize) {
    let tight = format.planes()[0].stride as usize;
    if bytesperline == tight || bytesperline == 0 {
        let n = data.len().min(slot.len());
        slot[..n].copy_from_slice(&data[..n]);
        return;
    }
    let mut src_off = 0usize;
    for p in format.planes() {
        // Chroma strides scale with the luma stride exactly as the tight ones do.
        let src_stride = bytesperline * p.stride as usize / tight;
        for y in 0..p.rows as usize {
            let s = src_off + y * src_stride;
            let d = p.offset as usize + y * p.stride as usize;
            let Some(from) = data.get(s..s + p.row_bytes as usize) else { return };
            slot[d..d + p.row_bytes as usize].copy_from_slice(from);
        }
        src_off += src_stride * p.rows as usize;
    }
}

/// The driver's timestamp as CLOCK_REALTIME ns, or the arrival time.
fn driver_time(flags: Flags, ts: Duration, arrival: u64) -> u64 {
    let ts = u64::try_from(ts.as_nanos()).unwrap_or(0);
    let monotonic = (u32::from(flags) & u32::from(Flags::TIMESTAMP_MASK)) == u32::from(Flags::TIMESTAMP_MONOTONIC);
    if ts == 0 || !monotonic {
        return arrival;
    }
    let now_mono = shm_proto::os::monotonic_ns();
    let behind = now_mono.saturating_sub(ts);
    arrival.saturating_sub(behind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A V4L2 single-planar buffer with padded rows (as drivers deliver them)
    /// lands tightly packed in the slot, plane by plane.
    #[test]
    fn copies_padded_rows_of_every_raw_format() {
        for pixel in PixelFormat::RAW {
            let fmt = VideoFormat::new(6, 4, pixel, 30, 1).unwrap();
            let tight = fmt.planes()[0].stride as usize;
            let bpl = tight + 8;
            let mut data = Vec::new();
            for (i, p) in fmt.planes().iter().enumerate() {
                let src_stride = bpl * p.stride as usize / tight;
                for y in 0..p.rows as usize {
                    let mut row = vec![0xEEu8; src_stride];
                    for (x, b) in row[..p.row_bytes as usize].iter_mut().enumerate() {
                        *b = (i * 64 + y * 8 + x) as u8;
                    }
                    data.extend_from_slice(&row);
                }
            }
            let mut slot = vec![0u8; fmt.frame_size as usize];
            copy_raw(&mut slot, &fmt, &data, bpl);
            for (i, p) in fmt.planes().iter().enumerate() {
                for y in 0..p.rows as usize {
                    for x in 0..p.row_bytes as usize {
                        let got = slot[p.offset as usize + y * p.stride as usize + x];
                        assert_eq!(got, (i * 64 + y * 8 + x) as u8, "{pixel} plane {i} ({x},{y})");
                    }
                }
            }
        }
    }

    #[test]
    fn driver_timestamps_map_to_realtime() {
        let arrival = shm_proto::os::realtime_ns();
        let mono = Duration::from_nanos(shm_proto::os::monotonic_ns() - 5_000_000);
        let t = driver_time(Flags::TIMESTAMP_MONOTONIC, mono, arrival);
        let behind = arrival - t;
        assert!((4_000_000..1_000_000_000).contains(&behind), "{behind}");
        assert_eq!(driver_time(Flags::TIMESTAMP_COPY, mono, arrival), arrival);
        assert_eq!(driver_time(Flags::TIMESTAMP_MONOTONIC, Duration::ZERO, arrival), arrival);
    }
}
