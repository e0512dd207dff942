//! Between ring formats and GStreamer caps: the pad templates (every ring
//! format), the caps a segment header describes, and the ring format a
//! negotiated caps describes.
#![forbid(unsafe_code)]

use gstreamer as gst;
use gstreamer_video as gst_video;
use shm_proto::format::MAX_DIMENSION;
use shm_proto::{PixelFormat, VideoFormat};

/// The GStreamer video format of a raw ring format.
pub fn gst_format(pixel: PixelFormat) -> Option<gst_video::VideoFormat> {
    Some(match pixel {
        PixelFormat::Rgb24 => gst_video::VideoFormat::Rgb,
        PixelFormat::Bgr24 => gst_video::VideoFormat::Bgr,
        PixelFormat::Gray8 => gst_video::VideoFormat::Gray8,
        PixelFormat::Yuyv => gst_video::VideoFormat::Yuy2,
        PixelFormat::Nv12 => gst_video::VideoFormat::Nv12,
        PixelFormat::I420 => gst_video::VideoFormat::I420,
        PixelFormat::Mjpeg => return None,
    })
}

/// The ring format of a GStreamer video format, if the ring carries it.
pub fn pixel_format(f: gst_video::VideoFormat) -> Option<PixelFormat> {
    PixelFormat::RAW.into_iter().find(|p| gst_format(*p) == Some(f))
}

/// Caps for every format a ring can carry: raw RGB, BGR, GRAY8, YUY2, NV12,
/// I420 and `image/jpeg`, 1..=16384 pixels each way.
pub fn template_caps() -> gst::Caps {
    let max = MAX_DIMENSION as i32;
    let raw = gst_video::VideoCapsBuilder::new()
        .format_list(PixelFormat::RAW.into_iter().filter_map(gst_format))
        .width_range(1..=max)
        .height_range(1..=max)
        .framerate_range(gst::Fraction::new(0, 1)..=gst::Fraction::new(i32::MAX, 1))
        .build();
    let jpeg = gst::Caps::builder("image/jpeg")
        .field("width", gst::IntRange::new(1, max))
        .field("height", gst::IntRange::new(1, max))
        .field("framerate", gst::FractionRange::new(gst::Fraction::new(0, 1), gst::Fraction::new(i32::MAX, 1)))
        .build();
    let mut caps = raw;
    caps.merge(jpeg);
    caps
}

/// The fixed caps of frames in a ring of `format`, and for raw formats the
/// video info describing GStreamer's default layout of such a frame.
pub fn caps_of(format: &VideoFormat) -> (gst::Caps, Option<gst_video::VideoInfo>) {
    let rate =
        gst::Fraction::new(format.fps_num.min(i32::MAX as u32) as i32, format.fps_den.min(i32::MAX as u32) as i32);
    match gst_format(format.pixel) {
        Some(f) => {
            let info = gst_video::VideoInfo::builder(f, format.width, format.height)
                .fps(rate)
                .par(gst::Fraction::new(1, 1))
                .interlace_mode(gst_video::VideoInterlaceMode::Progressive)
                .build()
                .expect("a validated ring format is a valid video info");
            (info.to_caps().expect("video info converts to caps"), Some(info))
        }
        None => {
            let caps = gst::Caps::builder("image/jpeg")
                .field("width", format.width as i32)
                .field("height", format.height as i32)
                .field("framerate", rate)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build();
            (caps, None)
        }
    }
}

/// The ring format for negotiated caps, and the video info of raw caps.
pub fn format_of(caps: &gst::CapsRef) -> Result<(VideoFormat, Option<gst_video::VideoInfo>), String> {
    let s = caps.structure(0).ok_or("empty caps")?;
    let rate = s.get::<gst::Fraction>("framerate").ok();
    let (num, den) = match rate {
        Some(r) if r.numer() > 0 && r.denom() > 0 => (r.numer() as u32, r.denom() as u32),
        _ => (0, 1),
    };
    if s.name() == "image/jpeg" {
        let w = s.get::<i32>("width").map_err(|_| "image/jpeg caps without a width")?;
        let h = s.get::<i32>("height").map_err(|_| "image/jpeg caps without a height")?;
        let f = VideoFormat::new(w.max(0) as u32, h.max(0) as u32, PixelFormat::Mjpeg, num, den)
            .map_err(|e| e.to_string())?;
        return Ok((f, None));
    }
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| format!("cannot read caps {caps}: {e}"))?;
    let pixel = pixel_format(info.format())
        .ok_or_else(|| format!("format {} cannot be carried by a ring", info.format().to_str()))?;
    if info.interlace_mode() != gst_video::VideoInterlaceMode::Progressive {
        return Err("interlaced video cannot be carried by a ring (add deinterlace)".into());
    }
    let f = VideoFormat::new(info.width(), info.height(), pixel, num, den).map_err(|e| e.to_string())?;
    Ok((f, Some(info)))
}

/// Whether GStreamer's default layout of `info` is the ring's packed layout,
/// so a frame moves with one copy of the whole payload.
pub fn same_layout(format: &VideoFormat, info: &gst_video::VideoInfo) -> bool {
    let planes = format.planes();
    planes.len() == info.n_planes() as usize
        && planes
            .iter()
            .enumerate()
            .all(|(i, p)| info.offset()[i] as u64 == p.offset && info.stride()[i] as i64 == i64::from(p.stride))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ring_format_round_trips_through_caps() {
        gst::init().unwrap();
        for pixel in PixelFormat::ALL {
            let f = VideoFormat::new(640, 480, pixel, 30, 1).unwrap();
            let (caps, _) = caps_of(&f);
            assert!(caps.is_fixed(), "{caps}");
            assert!(caps.can_intersect(&template_caps()), "{caps}");
            let (back, _) = format_of(&caps).unwrap();
            assert_eq!((back.width, back.height, back.pixel, back.fps_num), (640, 480, pixel, 30));
        }
    }

    #[test]
    fn packed_layout_matches_gstreamer_when_rows_are_4_byte_aligned() {
        gst::init().unwrap();
        for pixel in PixelFormat::RAW {
            let f = VideoFormat::new(1920, 1080, pixel, 30, 1).unwrap();
            let (_, info) = caps_of(&f);
            assert!(same_layout(&f, &info.unwrap()), "{pixel}");
        }
        // 642-pixel RGB rows are 1926 bytes; GStreamer pads them to 1928.
        let f = VideoFormat::new(642, 480, PixelFormat::Rgb24, 30, 1).unwrap();
        assert!(!same_layout(&f, &caps_of(&f).1.unwrap()));
    }

    #[test]
    fn unsupported_caps_are_refused_with_a_reason() {
        gst::init().unwrap();
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "RGBA")
            .field("width", 64)
            .field("height", 64)
            .field("framerate", gst::Fraction::new(30, 1))
            .build();
        assert!(format_of(&caps).unwrap_err().contains("RGBA"));
    }
}
