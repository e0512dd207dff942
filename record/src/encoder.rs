//! The recorder's encoder settings, and the caps of ring frames handed to
//! GStreamer.
//!
//! The encoder choice and its error messages are shared with the RTSP bridge
//! (`shmcast_common::h264`): x264enc if installed, else openh264enc; an
//! explicit choice that is not installed names the element, its package and
//! whether the other one would do.
#![forbid(unsafe_code)]

use std::time::Duration;

use gstreamer as gst;
use gstreamer_video as gst_video;
use shm_proto::VideoFormat;

pub use shmcast_common::h264::{Encoder, EncoderChoice};

/// The encoder element description for `gop_frames` and `kbps` (one thread:
/// a recorder runs beside the producer and its readers).
pub fn launch(encoder: Encoder, gop_frames: u64, kbps: u32) -> String {
    match encoder {
        Encoder::X264 => format!(
            "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop_frames} bitrate={kbps} \
             threads=1 sliced-threads=false"
        ),
        Encoder::OpenH264 => format!(
            "openh264enc complexity=low usage-type=camera rate-control=bitrate gop-size={gop_frames} \
             bitrate={}",
            u64::from(kbps) * 1000
        ),
    }
}

/// The settings a recording is encoded with. The recorder keeps them in the
/// catalog, so that a clip's re-encoded frames get the same parameter sets
/// as the segments they join.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Encoding {
    /// H.264 encoder.
    pub encoder: Encoder,
    /// Keyframe interval.
    pub gop: Duration,
    /// kbit/s.
    pub bitrate: u32,
}

impl Default for Encoding {
    /// The recorder's defaults.
    fn default() -> Encoding {
        Encoding { encoder: Encoder::X264, gop: Duration::from_secs(1), bitrate: 2048 }
    }
}

impl Encoding {
    /// The catalog's form: `<encoder> <gop seconds> <kbit/s>`.
    pub fn to_meta(&self) -> String {
        format!("{} {} {}", self.encoder.flag(), self.gop.as_secs_f64(), self.bitrate)
    }

    /// Reads [`Encoding::to_meta`]; `None` when it does not parse.
    pub fn from_meta(s: &str) -> Option<Encoding> {
        let mut w = s.split_whitespace();
        let encoder = match EncoderChoice::parse(w.next()?).ok()? {
            EncoderChoice::X264 => Encoder::X264,
            EncoderChoice::OpenH264 => Encoder::OpenH264,
            EncoderChoice::Auto => return None,
        };
        let gop = Duration::try_from_secs_f64(w.next()?.parse().ok()?).ok()?;
        let bitrate = w.next()?.parse().ok()?;
        Some(Encoding { encoder, gop, bitrate })
    }

    /// The keyframe interval in frames at `fps`.
    pub fn gop_frames(&self, fps: f64) -> u64 {
        gop_frames(self.gop, fps)
    }
}

/// A keyframe interval in frames at `fps` (at least 1).
pub fn gop_frames(gop: Duration, fps: f64) -> u64 {
    ((gop.as_secs_f64() * fps).round() as u64).max(1)
}

/// The stream's nominal rate as a fraction (30/1 when the producer did not say).
pub fn rate(format: &VideoFormat) -> (i32, i32) {
    if format.fps_num == 0 {
        (30, 1)
    } else {
        (format.fps_num.min(i32::MAX as u32) as i32, format.fps_den.min(i32::MAX as u32) as i32)
    }
}

/// The caps of ring frames of `format`.
pub fn source_caps(format: &VideoFormat) -> Option<gst::Caps> {
    shmcast_common::gst::ring_caps(format, rate(format))
}

/// Describes the ring's own plane layout on a buffer (tight rows, the
/// ring's plane offsets), so a frame copied in one piece with
/// `Frame::copy_to` is read correctly whatever GStreamer's default strides
/// would be.
pub fn add_layout_meta(buf: &mut gst::BufferRef, format: &VideoFormat) -> anyhow::Result<()> {
    let Some(name) = format.pixel.gst_name() else { return Ok(()) };
    let vf = gst_video::VideoFormat::from_string(name);
    let planes = format.planes();
    let offsets: Vec<usize> = planes.iter().map(|p| p.offset as usize).collect();
    let strides: Vec<i32> = planes.iter().map(|p| p.stride as i32).collect();
    gst_video::VideoMeta::add_full(
        buf,
        gst_video::VideoFrameFlags::empty(),
        vf,
        format.width,
        format.height,
        &offsets,
        &strides,
    )
    .map_err(|e| anyhow::anyhow!("cannot describe the layout of {format}: {e}"))?;
    Ok(())
}
