//! Which H.264 encoder, and the caps of ring frames handed to GStreamer.
//!
//! The encoder choice and its error messages are the RTSP bridge's
//! (`rtsp-bridge/src/pipeline.rs`): x264enc if installed, else openh264enc;
//! an explicit choice that is not installed names the element, its package
//! and whether the other one would do.
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::bail;
use gstreamer as gst;
use gstreamer_video as gst_video;
use shm_proto::{PixelFormat, VideoFormat};

/// Which H.264 encoder the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderChoice {
    /// x264enc if installed, else openh264enc.
    Auto,
    /// x264enc (gstreamer1.0-plugins-ugly).
    X264,
    /// openh264enc (gstreamer1.0-plugins-bad).
    OpenH264,
}

impl EncoderChoice {
    /// Parses `--encoder`.
    pub fn parse(s: &str) -> anyhow::Result<EncoderChoice> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => EncoderChoice::Auto,
            "x264" | "x264enc" => EncoderChoice::X264,
            "openh264" | "openh264enc" => EncoderChoice::OpenH264,
            other => bail!("unknown --encoder {other:?}: expected auto, x264 or openh264"),
        })
    }
}

/// An installed H.264 encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoder {
    /// x264enc.
    X264,
    /// openh264enc.
    OpenH264,
}

impl Encoder {
    /// The GStreamer element name.
    pub const fn element(self) -> &'static str {
        match self {
            Encoder::X264 => "x264enc",
            Encoder::OpenH264 => "openh264enc",
        }
    }

    const fn flag(self) -> &'static str {
        match self {
            Encoder::X264 => "x264",
            Encoder::OpenH264 => "openh264",
        }
    }

    const fn package(self) -> &'static str {
        match self {
            Encoder::X264 => "gstreamer1.0-plugins-ugly",
            Encoder::OpenH264 => "gstreamer1.0-plugins-bad",
        }
    }

    /// Resolves the user's choice against what is installed (`gst::init` first).
    pub fn resolve(choice: EncoderChoice) -> anyhow::Result<Encoder> {
        Self::resolve_with(choice, |e| gst::ElementFactory::find(e.element()).is_some())
    }

    fn resolve_with(choice: EncoderChoice, installed: impl Fn(Encoder) -> bool) -> anyhow::Result<Encoder> {
        let (x264, openh264) = (Encoder::X264, Encoder::OpenH264);
        let wanted = match choice {
            EncoderChoice::Auto => {
                if let Some(e) = [x264, openh264].into_iter().find(|&e| installed(e)) {
                    return Ok(e);
                }
                bail!(
                    "no H.264 encoder installed (GStreamer finds neither x264enc nor openh264enc): install \
                     gstreamer1.0-plugins-ugly (x264enc) or gstreamer1.0-plugins-bad (openh264enc)"
                )
            }
            EncoderChoice::X264 => x264,
            EncoderChoice::OpenH264 => openh264,
        };
        if installed(wanted) {
            return Ok(wanted);
        }
        let other = if wanted == x264 { openh264 } else { x264 };
        let alternative = if installed(other) {
            format!("{} is installed: use --encoder {} or --encoder auto", other.element(), other.flag())
        } else {
            format!("no other H.264 encoder is installed either ({} is in {})", other.element(), other.package())
        };
        bail!(
            "--encoder {}: {} is not installed (install {}); {alternative}",
            wanted.flag(),
            wanted.element(),
            wanted.package()
        )
    }

    /// The encoder element description for `gop_frames` and `kbps`.
    pub fn launch(self, gop_frames: u64, kbps: u32) -> String {
        match self {
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

    /// The raw format fed to the encoder: x264 takes NV12 and I420 as they
    /// are; everything else (and anything for openh264) becomes I420.
    pub fn input_format(self, pixel: PixelFormat) -> &'static str {
        match (self, pixel) {
            (Encoder::X264, PixelFormat::Nv12) => "NV12",
            _ => "I420",
        }
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
    let (num, den) = rate(format);
    let fps = gst::Fraction::new(num, den);
    let (w, h) = (format.width as i32, format.height as i32);
    match format.pixel.gst_name() {
        Some(name) => Some(
            gst::Caps::builder("video/x-raw")
                .field("format", name)
                .field("width", w)
                .field("height", h)
                .field("framerate", fps)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        ),
        None if format.pixel == PixelFormat::Mjpeg => Some(
            gst::Caps::builder("image/jpeg")
                .field("width", w)
                .field("height", h)
                .field("framerate", fps)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        ),
        None => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_names_the_missing_encoder_and_its_package() {
        let only = |e: Encoder| move |x: Encoder| x == e;
        assert_eq!(Encoder::resolve_with(EncoderChoice::Auto, |_| true).unwrap(), Encoder::X264);
        assert_eq!(Encoder::resolve_with(EncoderChoice::Auto, only(Encoder::OpenH264)).unwrap(), Encoder::OpenH264);
        let e = Encoder::resolve_with(EncoderChoice::X264, only(Encoder::OpenH264)).unwrap_err().to_string();
        assert!(e.contains("x264enc is not installed (install gstreamer1.0-plugins-ugly)"), "{e}");
        assert!(e.contains("use --encoder openh264"), "{e}");
        assert!(Encoder::resolve_with(EncoderChoice::Auto, |_| false).is_err());
    }
}
