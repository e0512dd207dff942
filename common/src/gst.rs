//! GStreamer buffer → ring slot (feature `gst`): the one implementation of
//! the copy `shmcastsink` and the producer's `gst:` source make of each
//! buffer, and of the capture time and flags stored with it.
//!
//! A raw buffer is copied plane by plane from GStreamer's strides into the
//! ring's packed layout (one `memcpy` per plane when the strides agree, as
//! they do for every format whose rows are 4-byte aligned); an `image/jpeg`
//! buffer is copied as is, and is too large when it exceeds the slot.
#![forbid(unsafe_code)]

use std::sync::LazyLock;

use gstreamer as gst;
use gstreamer::prelude::ClockExt;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::VideoFrameExt;
use shm_proto::{FLAG_DISCONT, FLAG_KEYFRAME, FrameMeta, PixelFormat, Plane, VideoFormat};

/// A buffer mapped for reading, ready to be copied into a slot.
#[allow(clippy::large_enum_variant)] // one per buffer, on the stack, never stored
pub enum Payload<'a> {
    /// A raw video frame with GStreamer's plane offsets and strides.
    Video(gst_video::VideoFrameRef<&'a gst::BufferRef>),
    /// Compressed bytes (`image/jpeg`): a variable-size frame.
    Bytes(gst::BufferMap<'a, gst::buffer::Readable>),
}

/// Why a buffer cannot be copied into a slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The buffer could not be mapped (for video: as a frame of the caps).
    #[error("cannot map a {0} buffer")]
    Map(&'static str),
    /// A compressed frame larger than a slot.
    #[error("frame of {len} bytes is larger than a slot ({max} bytes)")]
    TooLarge {
        /// The frame's size.
        len: u64,
        /// The slot's size.
        max: u64,
    },
}

impl<'a> Payload<'a> {
    /// Maps `buffer`: as a video frame described by `info` (raw caps), or as
    /// bytes (`None`: compressed caps). Checks that compressed bytes fit a
    /// slot of `format`, so that a buffer that does not is refused before a
    /// slot is taken.
    ///
    /// # Errors
    /// [`PayloadError`]: the buffer cannot be mapped, or is too large.
    pub fn map(
        buffer: &'a gst::BufferRef,
        info: Option<&gst_video::VideoInfo>,
        format: &VideoFormat,
    ) -> Result<Payload<'a>, PayloadError> {
        match info {
            Some(info) => gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info)
                .map(Payload::Video)
                .map_err(|_| PayloadError::Map("video")),
            None => {
                let map = buffer.map_readable().map_err(|_| PayloadError::Map("compressed"))?;
                if map.len() as u64 > format.frame_size {
                    return Err(PayloadError::TooLarge { len: map.len() as u64, max: format.frame_size });
                }
                Ok(Payload::Bytes(map))
            }
        }
    }

    /// Copies the payload into `slot` (a slot of `format`) and returns the
    /// frame's length: the format's frame size for raw video, the byte count
    /// for compressed frames.
    pub fn copy_into(&self, slot: &mut [u8], format: &VideoFormat) -> u64 {
        match self {
            Payload::Video(frame) => {
                for (i, plane) in format.planes().iter().enumerate() {
                    let (Ok(src), Some(&stride)) = (frame.plane_data(i as u32), frame.plane_stride().get(i)) else {
                        continue;
                    };
                    copy_plane(slot, plane, src, stride.max(0) as usize);
                }
                format.frame_size
            }
            Payload::Bytes(map) => {
                let n = map.len().min(slot.len());
                slot[..n].copy_from_slice(&map[..n]);
                n as u64
            }
        }
    }

    /// The frame's metadata: `id`, `capture_ns`, the length [`Payload::copy_into`]
    /// returned, and the flags of `buffer` (see [`flags`]).
    pub fn meta(&self, buffer: &gst::BufferRef, id: u64, capture_ns: u64, len: u64, discont: bool) -> FrameMeta {
        let mut m = FrameMeta::new(id, capture_ns, len);
        m.flags = flags(buffer, discont, matches!(self, Payload::Bytes(_)));
        m
    }
}

/// The ring flags of `buffer`: [`FLAG_DISCONT`] for a DISCONT buffer (or
/// when the caller knows of a discontinuity, `discont`), [`FLAG_KEYFRAME`]
/// for a compressed buffer that is not a delta unit.
pub fn flags(buffer: &gst::BufferRef, discont: bool, compressed: bool) -> u32 {
    let mut f = 0;
    if discont || buffer.flags().contains(gst::BufferFlags::DISCONT) {
        f |= FLAG_DISCONT;
    }
    if compressed && !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
        f |= FLAG_KEYFRAME;
    }
    f
}

/// Copies one plane from GStreamer's layout (`src_stride`) into the slot's
/// packed layout; rows that do not fit either side are left out.
pub fn copy_plane(slot: &mut [u8], plane: &Plane, src: &[u8], src_stride: usize) {
    let (dst_stride, row, rows) = (plane.stride as usize, plane.row_bytes as usize, plane.rows as usize);
    let Some(dst) = slot.get_mut(plane.offset as usize..) else { return };
    let span = plane.span() as usize;
    if src_stride == dst_stride && src.len() >= span && dst.len() >= span {
        dst[..span].copy_from_slice(&src[..span]);
        return;
    }
    for y in 0..rows {
        let (s, d) = (y * src_stride, y * dst_stride);
        let (Some(from), Some(to)) = (src.get(s..s + row), dst.get_mut(d..d + row)) else { break };
        to.copy_from_slice(from);
    }
}

/// The pipeline's view of time when a buffer is handled, for [`capture_ns`].
pub struct PipelineTime<'a> {
    /// The segment the buffer's PTS belongs to.
    pub segment: Option<&'a gst::Segment>,
    /// The pipeline's base time.
    pub base_time: Option<gst::ClockTime>,
    /// The pipeline clock.
    pub clock: Option<gst::Clock>,
}

/// The capture time of `buffer` as `CLOCK_REALTIME` ns, in order of
/// preference: a `timestamp/x-unix` reference timestamp on the buffer; its
/// PTS as pipeline clock time (running time + base time) mapped to
/// `CLOCK_REALTIME` through the offset between the two clocks now; `arrival`
/// (the `CLOCK_REALTIME` time the buffer arrived) when any part is missing or
/// the PTS lies in the future (an unsynchronised pipeline runs ahead of the
/// clock).
pub fn capture_ns(buffer: &gst::BufferRef, time: &PipelineTime<'_>, arrival: u64) -> u64 {
    static UNIX: LazyLock<gst::Caps> = LazyLock::new(|| gst::Caps::new_empty_simple("timestamp/x-unix"));
    if let Some(meta) = buffer.iter_meta::<gst::ReferenceTimestampMeta>().find(|m| m.reference() == UNIX.as_ref()) {
        return meta.timestamp().nseconds();
    }
    let computed = (|| {
        let pts = buffer.pts()?;
        let running = time.segment?.downcast_ref::<gst::ClockTime>()?.to_running_time(pts)?;
        let at = time.base_time? + running;
        let now = time.clock.as_ref()?.time();
        let behind = now.nseconds().checked_sub(at.nseconds())?;
        arrival.checked_sub(behind)
    })();
    computed.unwrap_or(arrival)
}

/// The caps of ring frames of `format` at frame rate `rate` (numerator,
/// denominator): `video/x-raw` for the raw formats, `image/jpeg` for MJPEG,
/// square pixels; `None` for a format GStreamer has no name for.
pub fn ring_caps(format: &VideoFormat, rate: (i32, i32)) -> Option<gst::Caps> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use shm_proto::PixelFormat;

    fn info(format: &VideoFormat) -> gst_video::VideoInfo {
        let f = match format.pixel {
            PixelFormat::Rgb24 => gst_video::VideoFormat::Rgb,
            PixelFormat::I420 => gst_video::VideoFormat::I420,
            PixelFormat::Nv12 => gst_video::VideoFormat::Nv12,
            other => panic!("no test for {other}"),
        };
        gst_video::VideoInfo::builder(f, format.width, format.height).build().unwrap()
    }

    /// A buffer in GStreamer's layout whose every byte of row `y` of plane
    /// `p` is `p * 64 + y % 64`; the padding is 0xee.
    fn buffer(info: &gst_video::VideoInfo, format: &VideoFormat) -> gst::Buffer {
        let mut buf = gst::Buffer::with_size(info.size()).unwrap();
        {
            let b = buf.get_mut().unwrap();
            let mut map = b.map_writable().unwrap();
            map.fill(0xee);
            for (p, plane) in format.planes().iter().enumerate() {
                for y in 0..plane.rows as usize {
                    let at = info.offset()[p] + y * info.stride()[p] as usize;
                    map[at..at + plane.row_bytes as usize].fill((p * 64 + y % 64) as u8);
                }
            }
        }
        buf
    }

    fn check(format: &VideoFormat, slot: &[u8]) {
        for (p, plane) in format.planes().iter().enumerate() {
            for y in 0..plane.rows as usize {
                let at = plane.offset as usize + y * plane.stride as usize;
                let row = &slot[at..at + plane.row_bytes as usize];
                assert!(row.iter().all(|b| *b == (p * 64 + y % 64) as u8), "{format} plane {p} row {y}");
            }
        }
    }

    #[test]
    fn raw_frames_are_restrided_into_the_packed_layout() {
        gst::init().unwrap();
        // 642-pixel RGB rows are 1926 bytes, padded to 1928 by GStreamer;
        // 322-pixel I420 chroma rows are 161 bytes, padded to 164.
        for (w, h, pixel) in [(642, 10, PixelFormat::Rgb24), (322, 6, PixelFormat::I420), (64, 8, PixelFormat::Nv12)] {
            let format = VideoFormat::new(w, h, pixel, 30, 1).unwrap();
            let info = info(&format);
            let buf = buffer(&info, &format);
            let payload = Payload::map(buf.as_ref(), Some(&info), &format).unwrap();
            let mut slot = vec![0u8; format.frame_size as usize];
            assert_eq!(payload.copy_into(&mut slot, &format), format.frame_size);
            check(&format, &slot);
        }
    }

    #[test]
    fn compressed_frames_are_variable_size_and_refused_when_too_large() {
        gst::init().unwrap();
        let format = VideoFormat::new(64, 64, PixelFormat::Mjpeg, 30, 1).unwrap();
        let mut small = gst::Buffer::from_slice(vec![7u8; 100]);
        small.get_mut().unwrap().set_flags(gst::BufferFlags::DELTA_UNIT);
        let payload = Payload::map(small.as_ref(), None, &format).unwrap();
        let mut slot = vec![0u8; format.frame_size as usize];
        let len = payload.copy_into(&mut slot, &format);
        assert_eq!(len, 100);
        assert!(slot[..100].iter().all(|b| *b == 7));
        assert_eq!(payload.meta(small.as_ref(), 3, 5, len, false).flags, 0);
        let key = gst::Buffer::from_slice(vec![1u8; 10]);
        assert_eq!(flags(key.as_ref(), true, true), FLAG_DISCONT | FLAG_KEYFRAME);
        let big = gst::Buffer::from_slice(vec![0u8; format.frame_size as usize + 1]);
        assert!(matches!(Payload::map(big.as_ref(), None, &format), Err(PayloadError::TooLarge { .. })));
    }

    #[test]
    fn capture_time_prefers_the_unix_reference_timestamp() {
        gst::init().unwrap();
        let mut buf = gst::Buffer::new();
        let unix = gst::Caps::new_empty_simple("timestamp/x-unix");
        gst::ReferenceTimestampMeta::add(
            buf.get_mut().unwrap(),
            &unix,
            gst::ClockTime::from_nseconds(1_700_000_000_000_000_000),
            gst::ClockTime::NONE,
        );
        let none = PipelineTime { segment: None, base_time: None, clock: None };
        assert_eq!(capture_ns(buf.as_ref(), &none, 42), 1_700_000_000_000_000_000);
        assert_eq!(capture_ns(gst::Buffer::new().as_ref(), &none, 42), 42);
    }
}
