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

use gstreamer as gst;
use shm_proto::{PixelFormat, VideoFormat};

use crate::config::Config;

/// The H.264 encoder choice, shared with every binary that encodes.
pub use shmcast_common::h264::Encoder;

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
    shmcast_common::gst::ring_caps(format, rate)
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
