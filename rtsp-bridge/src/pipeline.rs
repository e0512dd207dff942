//! The media pipeline: which encoder, the launch description given to the
//! media factory, and the caps of what the feeder pushes.
//!
//! Raw video: `appsrc ! videoscale ! videoconvert ! capsfilter ! <h264 enc> !
//! rtph264pay name=pay0`. The capsfilter pins the output to the size of the
//! first producer seen (and a format the encoder takes): for a producer of
//! that size and format both converters negotiate passthrough and cost
//! nothing; a restarted producer with another size or pixel format is scaled
//! and converted to the original caps, so connected clients keep decoding.
//!
//! MJPEG: `appsrc ! rtpjpegpay name=pay0`, passed through without re-encoding.
#![forbid(unsafe_code)]

use anyhow::bail;
use gstreamer as gst;
use shm_proto::{PixelFormat, VideoFormat};

use crate::config::{Config, EncoderChoice};

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

    /// The `--encoder` value that asks for it.
    pub const fn flag(self) -> &'static str {
        match self {
            Encoder::X264 => "x264",
            Encoder::OpenH264 => "openh264",
        }
    }

    /// The Debian/Ubuntu package that provides the element.
    pub const fn package(self) -> &'static str {
        match self {
            Encoder::X264 => "gstreamer1.0-plugins-ugly",
            Encoder::OpenH264 => "gstreamer1.0-plugins-bad",
        }
    }

    fn installed(self) -> bool {
        gst::ElementFactory::find(self.element()).is_some()
    }

    /// Resolves the user's choice against what is installed (`gst::init` first).
    pub fn resolve(choice: EncoderChoice) -> anyhow::Result<Encoder> {
        Self::resolve_with(choice, Encoder::installed)
    }

    /// [`Encoder::resolve`] against an `installed` predicate: the errors name
    /// the missing element, the package that provides it and, for an explicit
    /// choice, whether the other encoder would do, so that the one error line
    /// says what to do.
    fn resolve_with(choice: EncoderChoice, installed: impl Fn(Encoder) -> bool) -> anyhow::Result<Encoder> {
        let (x264, openh264) = (Encoder::X264, Encoder::OpenH264);
        let wanted = match choice {
            EncoderChoice::Auto => {
                // x264 first, as documented: it takes NV12 sources without a conversion.
                if let Some(e) = [x264, openh264].into_iter().find(|&e| installed(e)) {
                    return Ok(e);
                }
                bail!(
                    "no H.264 encoder installed (GStreamer finds neither {} nor {}): install {} ({}) or {} ({})",
                    x264.element(),
                    openh264.element(),
                    x264.package(),
                    x264.element(),
                    openh264.package(),
                    openh264.element()
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

    /// The raw format fed to the encoder for a stream whose first producer
    /// sends `pixel`: x264 takes NV12 and I420 as they are; everything else
    /// (and anything for openh264, which takes only I420) becomes I420.
    pub fn input_format(self, pixel: PixelFormat) -> &'static str {
        match (self, pixel) {
            (Encoder::X264, PixelFormat::Nv12) => "NV12",
            _ => "I420",
        }
    }
}

/// The stream's nominal rate as a fraction (30/1 when the producer did not say).
pub fn rate(format: &VideoFormat) -> (i32, i32) {
    if format.fps_num == 0 {
        (30, 1)
    } else {
        (format.fps_num.min(i32::MAX as u32) as i32, format.fps_den.min(i32::MAX as u32) as i32)
    }
}

/// The caps of what the feeder pushes for a producer of `format`, at the
/// stream's nominal `rate` (kept from the first producer so that a restarted
/// producer of the same geometry does not even renegotiate).
pub fn source_caps(format: &VideoFormat, rate: (i32, i32)) -> Option<gst::Caps> {
    let fps = gst::Fraction::new(rate.0, rate.1);
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

/// The media factory's launch description for a stream whose first producer
/// has `format`.
pub fn launch(cfg: &Config, encoder: Encoder, format: &VideoFormat) -> String {
    // Leaky, 2 buffers: a stalled encoder or client never grows memory (the
    // default queue limit is bytes, smaller than one frame).
    let src = "appsrc name=src is-live=true format=time do-timestamp=false block=false \
               max-buffers=2 max-bytes=0 max-time=0 leaky-type=downstream min-latency=0";
    if format.pixel == PixelFormat::Mjpeg {
        return format!("( {src} ! rtpjpegpay name=pay0 pt=26 )");
    }
    let (num, den) = rate(format);
    let fps = f64::from(num) / f64::from(den);
    let gop_frames = ((cfg.gop.as_secs_f64() * fps).round() as u64).max(1);
    let enc = match encoder {
        Encoder::X264 => format!(
            "x264enc name=enc tune=zerolatency speed-preset=ultrafast key-int-max={gop_frames} bitrate={}",
            cfg.bitrate
        ),
        Encoder::OpenH264 => format!(
            "openh264enc name=enc complexity=low usage-type=camera rate-control=bitrate gop-size={gop_frames} \
             bitrate={}",
            u64::from(cfg.bitrate) * 1000
        ),
    };
    format!(
        "( {src} ! videoscale ! videoconvert ! video/x-raw,format={},width={},height={},pixel-aspect-ratio=1/1 \
         ! {enc} ! rtph264pay name=pay0 pt=96 config-interval=1 )",
        encoder.input_format(format.pixel),
        format.width,
        format.height,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn resolve_names_the_missing_encoder_and_its_package() {
        let only = |e: Encoder| move |x: Encoder| x == e;
        assert_eq!(Encoder::resolve_with(EncoderChoice::Auto, |_| true).unwrap(), Encoder::X264);
        assert_eq!(Encoder::resolve_with(EncoderChoice::Auto, only(Encoder::OpenH264)).unwrap(), Encoder::OpenH264);
        let e = Encoder::resolve_with(EncoderChoice::Auto, |_| false).unwrap_err().to_string();
        assert!(e.starts_with("no H.264 encoder installed"), "{e}");
        assert!(e.contains("gstreamer1.0-plugins-ugly (x264enc)"), "{e}");
        assert!(e.contains("gstreamer1.0-plugins-bad (openh264enc)"), "{e}");
        let e = Encoder::resolve_with(EncoderChoice::X264, only(Encoder::OpenH264)).unwrap_err().to_string();
        assert!(e.contains("x264enc is not installed (install gstreamer1.0-plugins-ugly)"), "{e}");
        assert!(e.contains("use --encoder openh264"), "{e}");
        let e = Encoder::resolve_with(EncoderChoice::OpenH264, |_| false).unwrap_err().to_string();
        assert!(e.contains("openh264enc is not installed (install gstreamer1.0-plugins-bad)"), "{e}");
        assert!(e.contains("no other H.264 encoder is installed either"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn launch_lines_parse() {
        gst::init().unwrap();
        let args = crate::config::Args::parse_from(["x", "--name", "t", "--gop", "2"]);
        let cfg = Config::from_args(&args, None).unwrap();
        for pixel in PixelFormat::ALL {
            let f = VideoFormat::new(640, 480, pixel, 25, 1).unwrap();
            for enc in [Encoder::X264, Encoder::OpenH264] {
                if gst::ElementFactory::find(enc.element()).is_none() {
                    continue;
                }
                let l = launch(&cfg, enc, &f);
                if pixel != PixelFormat::Mjpeg {
                    assert!(l.contains("=50"), "{l}");
                }
                let inner = l.trim_start_matches('(').trim_end_matches(')');
                gst::parse::launch(inner).unwrap_or_else(|e| panic!("{l}: {e}"));
                assert!(source_caps(&f, rate(&f)).is_some());
            }
        }
    }
}
