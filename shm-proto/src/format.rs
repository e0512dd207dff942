//! Video formats: pixel formats as V4L2 fourccs, plane geometry and frame sizes.
//!
//! Invariant: a [`VideoFormat`] built by [`VideoFormat::new`] or decoded by
//! [`crate::header`] has planes that lie inside `frame_size`, and `frame_size`
//! fits in a slot.
#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use crate::error::FormatError;

/// Largest width or height accepted (16K), so sizes never overflow.
pub const MAX_DIMENSION: u32 = 16384;
/// Largest payload of one frame (1 GiB).
pub const MAX_FRAME_SIZE: u64 = 1 << 30;
/// Maximum number of planes of any supported format.
pub const MAX_PLANES: usize = 3;

/// Builds a V4L2 fourcc code from its four characters.
pub const fn fourcc(code: &[u8; 4]) -> u32 {
    (code[0] as u32) | (code[1] as u32) << 8 | (code[2] as u32) << 16 | (code[3] as u32) << 24
}

/// A pixel format. Each is identified in the segment by its V4L2 fourcc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Packed R, G, B, 8 bits each (`RGB3`).
    Rgb24,
    /// Packed B, G, R, 8 bits each (`BGR3`).
    Bgr24,
    /// 8-bit luma only (`GREY`).
    Gray8,
    /// Packed 4:2:2 Y0 U Y1 V (`YUYV`).
    Yuyv,
    /// 4:2:0, Y plane then interleaved UV plane (`NV12`).
    Nv12,
    /// 4:2:0, Y, U and V planes (`YU12`).
    I420,
    /// Motion JPEG: variable-size compressed frames (`MJPG`).
    Mjpeg,
}

impl PixelFormat {
    /// Every supported format, in a stable order.
    pub const ALL: [PixelFormat; 7] = [
        PixelFormat::Rgb24,
        PixelFormat::Bgr24,
        PixelFormat::Gray8,
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::I420,
        PixelFormat::Mjpeg,
    ];

    /// The raw (uncompressed) formats.
    pub const RAW: [PixelFormat; 6] = [
        PixelFormat::Rgb24,
        PixelFormat::Bgr24,
        PixelFormat::Gray8,
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::I420,
    ];

    /// The V4L2 fourcc of this format.
    pub const fn fourcc(self) -> u32 {
        match self {
            PixelFormat::Rgb24 => fourcc(b"RGB3"),
            PixelFormat::Bgr24 => fourcc(b"BGR3"),
            PixelFormat::Gray8 => fourcc(b"GREY"),
            PixelFormat::Yuyv => fourcc(b"YUYV"),
            PixelFormat::Nv12 => fourcc(b"NV12"),
            PixelFormat::I420 => fourcc(b"YU12"),
            PixelFormat::Mjpeg => fourcc(b"MJPG"),
        }
    }

    /// The format with this fourcc, if supported.
    pub fn from_fourcc(code: u32) -> Option<PixelFormat> {
        PixelFormat::ALL.into_iter().find(|f| f.fourcc() == code)
    }

    /// The command-line name (`rgb24`, `nv12`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            PixelFormat::Rgb24 => "rgb24",
            PixelFormat::Bgr24 => "bgr24",
            PixelFormat::Gray8 => "gray8",
            PixelFormat::Yuyv => "yuyv",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::I420 => "i420",
            PixelFormat::Mjpeg => "mjpeg",
        }
    }

    /// The GStreamer raw video format name (`RGB`, `NV12`, ...), `None` for MJPEG.
    pub const fn gst_name(self) -> Option<&'static str> {
        match self {
            PixelFormat::Rgb24 => Some("RGB"),
            PixelFormat::Bgr24 => Some("BGR"),
            PixelFormat::Gray8 => Some("GRAY8"),
            PixelFormat::Yuyv => Some("YUY2"),
            PixelFormat::Nv12 => Some("NV12"),
            PixelFormat::I420 => Some("I420"),
            PixelFormat::Mjpeg => None,
        }
    }

    /// True for compressed formats whose frames vary in size.
    pub const fn is_compressed(self) -> bool {
        matches!(self, PixelFormat::Mjpeg)
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PixelFormat {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        PixelFormat::ALL
            .into_iter()
            .find(|f| f.name() == lower)
            .ok_or_else(|| FormatError::UnknownFormat(s.to_string()))
    }
}

/// A rectangle of pixels, `x, y, w, h`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width in pixels.
    pub w: u32,
    /// Height in pixels.
    pub h: u32,
}

impl Rect {
    /// A rectangle.
    pub const fn new(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect { x, y, w, h }
    }

    /// True when it covers no pixel.
    pub const fn is_empty(&self) -> bool {
        self.w == 0 || self.h == 0
    }

    /// The part of this rectangle inside a `width` x `height` frame (empty if none).
    ///
    /// ```
    /// use shm_proto::format::Rect;
    /// assert_eq!(Rect::new(10, 10, 100, 100).clip(50, 40), Rect::new(10, 10, 40, 30));
    /// assert!(Rect::new(60, 0, 5, 5).clip(50, 40).is_empty());
    /// ```
    pub fn clip(&self, width: u32, height: u32) -> Rect {
        let x0 = self.x.min(width);
        let y0 = self.y.min(height);
        let x1 = self.x.saturating_add(self.w).min(width);
        let y1 = self.y.saturating_add(self.h).min(height);
        Rect { x: x0, y: y0, w: x1 - x0, h: y1 - y0 }
    }

    /// Whether pixel `(x, y)` lies inside.
    pub fn contains(&self, x: u32, y: u32) -> bool {
        x >= self.x && y >= self.y && x - self.x < self.w && y - self.y < self.h
    }
}

impl fmt::Display for Rect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{},{}", self.x, self.y, self.w, self.h)
    }
}

/// One plane of a frame: where it starts in the payload and its row pitch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plane {
    /// Byte offset of the plane from the start of the frame payload.
    pub offset: u64,
    /// Bytes per row (≥ the bytes of pixel data in a row).
    pub stride: u32,
    /// Bytes of pixel data per row.
    pub row_bytes: u32,
    /// Number of rows.
    pub rows: u32,
}

impl Plane {
    /// Bytes the plane spans: `stride * (rows - 1) + row_bytes`.
    pub fn span(&self) -> u64 {
        if self.rows == 0 { 0 } else { u64::from(self.stride) * u64::from(self.rows - 1) + u64::from(self.row_bytes) }
    }
}

/// The geometry of the frames in a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoFormat {
    /// Width in pixels, 1..=[`MAX_DIMENSION`].
    pub width: u32,
    /// Height in pixels, 1..=[`MAX_DIMENSION`].
    pub height: u32,
    /// The pixel format.
    pub pixel: PixelFormat,
    /// Frame rate numerator (0 with `fps_den` 1 means "as fast as possible / unknown").
    pub fps_num: u32,
    /// Frame rate denominator, ≥ 1.
    pub fps_den: u32,
    /// Number of valid entries in `planes` (0 for compressed formats).
    pub n_planes: u32,
    /// Plane geometry; entries past `n_planes` are zero.
    pub planes: [Plane; MAX_PLANES],
    /// Largest payload of one frame: the exact raw frame size, or the maximum
    /// compressed frame size.
    pub frame_size: u64,
}

impl VideoFormat {
    /// A raw format with tightly packed rows, or MJPEG with a default maximum
    /// payload (the size of the frame as 4:2:2, which bounds any sane JPEG of it).
    ///
    /// ```
    /// use shm_proto::format::{PixelFormat, VideoFormat};
    /// let f = VideoFormat::new(1280, 720, PixelFormat::Nv12, 30, 1).unwrap();
    /// assert_eq!(f.frame_size, 1280 * 720 * 3 / 2);
    /// assert_eq!(f.planes[1].offset, 1280 * 720);
    /// ```
    ///
    /// # Errors
    /// [`FormatError::BadSize`] for a width or height of 0 or above 16384,
    /// [`FormatError::BadRate`] for `fps_den == 0`, [`FormatError::OddSize`]
    /// for an odd width of a subsampled format (or odd height of 4:2:0).
    pub fn new(
        width: u32,
        height: u32,
        pixel: PixelFormat,
        fps_num: u32,
        fps_den: u32,
    ) -> Result<VideoFormat, FormatError> {
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(FormatError::BadSize { width, height });
        }
        if fps_den == 0 {
            return Err(FormatError::BadRate { num: fps_num, den: fps_den });
        }
        let subsampled = matches!(pixel, PixelFormat::Yuyv | PixelFormat::Nv12 | PixelFormat::I420);
        if subsampled && !width.is_multiple_of(2) {
            return Err(FormatError::OddSize { width, height, pixel });
        }
        if matches!(pixel, PixelFormat::Nv12 | PixelFormat::I420) && !height.is_multiple_of(2) {
            return Err(FormatError::OddSize { width, height, pixel });
        }
        let (w, h) = (width, height);
        let plane = |offset: u64, row_bytes: u32, rows: u32| Plane { offset, stride: row_bytes, row_bytes, rows };
        let mut planes = [Plane::default(); MAX_PLANES];
        let n_planes;
        let frame_size;
        match pixel {
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => {
                planes[0] = plane(0, w * 3, h);
                n_planes = 1;
                frame_size = u64::from(w) * 3 * u64::from(h);
            }
            PixelFormat::Gray8 => {
                planes[0] = plane(0, w, h);
                n_planes = 1;
                frame_size = u64::from(w) * u64::from(h);
            }
            PixelFormat::Yuyv => {
                planes[0] = plane(0, w * 2, h);
                n_planes = 1;
                frame_size = u64::from(w) * 2 * u64::from(h);
            }
            PixelFormat::Nv12 => {
                let y = u64::from(w) * u64::from(h);
                planes[0] = plane(0, w, h);
                planes[1] = plane(y, w, h / 2);
                n_planes = 2;
                frame_size = y + y / 2;
            }
            PixelFormat::I420 => {
                let y = u64::from(w) * u64::from(h);
                let c = u64::from(w / 2) * u64::from(h / 2);
                planes[0] = plane(0, w, h);
                planes[1] = plane(y, w / 2, h / 2);
                planes[2] = plane(y + c, w / 2, h / 2);
                n_planes = 3;
                frame_size = y + 2 * c;
            }
            PixelFormat::Mjpeg => {
                n_planes = 0;
                frame_size = u64::from(w) * 2 * u64::from(h) + 4096;
            }
        }
        Ok(VideoFormat { width, height, pixel, fps_num, fps_den, n_planes, planes, frame_size })
    }

    /// Sets the maximum payload of a compressed format.
    ///
    /// # Errors
    /// [`FormatError::NotCompressed`] for a raw format (its frame size is
    /// fixed), [`FormatError::BadPayload`] for 0 or more than the largest frame.
    pub fn with_max_payload(mut self, bytes: u64) -> Result<VideoFormat, FormatError> {
        if !self.pixel.is_compressed() {
            return Err(FormatError::NotCompressed(self.pixel));
        }
        if bytes == 0 || bytes > MAX_FRAME_SIZE {
            return Err(FormatError::BadPayload(bytes));
        }
        self.frame_size = bytes;
        Ok(self)
    }

    /// Frames per second as a float (0.0 when unknown).
    pub fn fps(&self) -> f64 {
        if self.fps_den == 0 { 0.0 } else { f64::from(self.fps_num) / f64::from(self.fps_den) }
    }

    /// The valid planes.
    pub fn planes(&self) -> &[Plane] {
        &self.planes[..self.n_planes as usize]
    }

    /// Where the luma of a pixel lives: `(plane 0 offset, row stride, step between
    /// pixels, offset of luma within a pixel)`. For RGB/BGR ([`LumaLayout::Rgb`]) weigh
    /// the three channels instead. `None` for compressed formats.
    pub fn luma(&self) -> Option<LumaLayout> {
        let p = self.planes[0];
        match self.pixel {
            PixelFormat::Gray8 | PixelFormat::Nv12 | PixelFormat::I420 => {
                Some(LumaLayout::Plane { offset: p.offset, stride: p.stride, step: 1 })
            }
            PixelFormat::Yuyv => Some(LumaLayout::Plane { offset: p.offset, stride: p.stride, step: 2 }),
            PixelFormat::Rgb24 => Some(LumaLayout::Rgb { offset: p.offset, stride: p.stride, bgr: false }),
            PixelFormat::Bgr24 => Some(LumaLayout::Rgb { offset: p.offset, stride: p.stride, bgr: true }),
            PixelFormat::Mjpeg => None,
        }
    }
}

impl fmt::Display for VideoFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{} {}", self.width, self.height, self.pixel)?;
        if self.fps_num != 0 {
            write!(f, " @ {:.3} fps", self.fps())?;
        }
        Ok(())
    }
}

/// How to find luma in a raw frame ([`VideoFormat::luma`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LumaLayout {
    /// Luma bytes at `offset + y * stride + x * step`.
    Plane {
        /// Offset of the first luma byte.
        offset: u64,
        /// Bytes per row.
        stride: u32,
        /// Bytes between horizontally adjacent luma samples (1 or 2).
        step: u32,
    },
    /// Packed 24-bit RGB (or BGR when `bgr`): luma is a weighted sum.
    Rgb {
        /// Offset of the first pixel.
        offset: u64,
        /// Bytes per row.
        stride: u32,
        /// Channel order is B, G, R.
        bgr: bool,
    },
}

/// Where the gray pixels of a raw frame are, for drawing and reading gray
/// (R = G = B in packed RGB, Y in YUV formats): pixel `(x, y)` covers `width`
/// bytes from `offset + y * stride + x * step`. One byte of it (the Y sample,
/// or G of RGB) reads its gray level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrayMap {
    /// Offset of pixel (0, 0).
    pub offset: usize,
    /// Bytes per row.
    pub stride: usize,
    /// Bytes between horizontally adjacent pixels.
    pub step: usize,
    /// Bytes one gray pixel writes: 3 for RGB/BGR (all channels), else 1.
    pub width: usize,
}

impl GrayMap {
    /// Offset of the byte that reads pixel `(x, y)`'s gray level.
    #[inline]
    pub fn index(&self, x: u32, y: u32) -> usize {
        // RGB: the G channel (the middle byte of R=G=B).
        self.offset + y as usize * self.stride + x as usize * self.step + self.width / 2
    }
}

impl LumaLayout {
    /// The gray map of this layout.
    pub fn gray(&self) -> GrayMap {
        match *self {
            LumaLayout::Plane { offset, stride, step } => {
                GrayMap { offset: offset as usize, stride: stride as usize, step: step as usize, width: 1 }
            }
            LumaLayout::Rgb { offset, stride, .. } => {
                GrayMap { offset: offset as usize, stride: stride as usize, step: 3, width: 3 }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_maps_of_every_raw_format() {
        for pixel in PixelFormat::RAW {
            let f = VideoFormat::new(8, 4, pixel, 30, 1).unwrap();
            let g = f.luma().unwrap().gray();
            assert_eq!(g.offset, 0, "{pixel}");
            assert_eq!(g.stride as u32, f.planes()[0].stride, "{pixel}");
            let (step, width, g_at) = match pixel {
                PixelFormat::Rgb24 | PixelFormat::Bgr24 => (3, 3, 1),
                PixelFormat::Yuyv => (2, 1, 0),
                _ => (1, 1, 0),
            };
            assert_eq!((g.step, g.width, g.index(0, 0)), (step, width, g_at), "{pixel}");
            assert_eq!(g.index(2, 1), g.stride + 2 * step + g_at, "{pixel}");
        }
        assert!(VideoFormat::new(8, 4, PixelFormat::Mjpeg, 30, 1).unwrap().luma().is_none());
    }

    #[test]
    fn sizes_of_every_raw_format() {
        let cases = [
            (PixelFormat::Rgb24, 1920 * 1080 * 3),
            (PixelFormat::Bgr24, 1920 * 1080 * 3),
            (PixelFormat::Gray8, 1920 * 1080),
            (PixelFormat::Yuyv, 1920 * 1080 * 2),
            (PixelFormat::Nv12, 1920 * 1080 * 3 / 2),
            (PixelFormat::I420, 1920 * 1080 * 3 / 2),
        ];
        for (pixel, size) in cases {
            let f = VideoFormat::new(1920, 1080, pixel, 30, 1).unwrap();
            assert_eq!(f.frame_size, size, "{pixel}");
            for p in f.planes() {
                assert!(p.offset + p.span() <= f.frame_size, "{pixel}");
            }
        }
    }

    #[test]
    fn fourcc_round_trip_and_names() {
        for f in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
            assert_eq!(f.name().parse::<PixelFormat>().unwrap(), f);
        }
        assert!("rgb48".parse::<PixelFormat>().is_err());
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(VideoFormat::new(0, 10, PixelFormat::Gray8, 30, 1).is_err());
        assert!(VideoFormat::new(100_000, 10, PixelFormat::Gray8, 30, 1).is_err());
        assert!(VideoFormat::new(641, 480, PixelFormat::Nv12, 30, 1).is_err());
        assert!(VideoFormat::new(640, 481, PixelFormat::I420, 30, 1).is_err());
        assert!(VideoFormat::new(640, 480, PixelFormat::Gray8, 30, 0).is_err());
    }
}
