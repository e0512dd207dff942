//! Frames to JPEG: every raw format of the ring converted row by row (with
//! an optional nearest-neighbour downscale) straight into the encoder's
//! YCbCr input, so no full-size intermediate image is made; MJPEG frames
//! pass through unchanged.
//!
//! Colour: the YUV formats (yuyv, nv12, i420) are video range BT.601 (luma
//! 16–235, chroma 16–240, as GStreamer and V4L2 produce them) and are
//! expanded to the full range JFIF uses; gray8 is full range (as GStreamer's
//! GRAY8); rgb24/bgr24 go through the JFIF RGB→YCbCr matrix.
#![forbid(unsafe_code)]

use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType, SamplingFactor, rgb_to_ycbcr};
use shm_proto::{PixelFormat, VideoFormat};

/// Why a frame could not be made a JPEG.
#[derive(Debug, thiserror::Error)]
pub enum JpegError {
    /// The payload is shorter than the format's planes need (a hostile or
    /// broken producer).
    #[error("frame payload too short: {have} bytes, format needs {need}")]
    Short {
        /// Bytes needed.
        need: u64,
        /// Bytes there.
        have: usize,
    },
    /// An MJPEG frame that does not start with a JPEG SOI marker.
    #[error("mjpeg frame is not a JPEG (no SOI marker)")]
    NotJpeg,
    /// The encoder failed.
    #[error("JPEG encoder: {0}")]
    Encode(String),
}

/// The output size for a requested width: the frame's own size when
/// `width` is `None` or not smaller; else `width` (even, ≥ 16) and the
/// height that keeps the aspect ratio (even, ≥ 2).
pub fn output_size(format: &VideoFormat, width: Option<u32>) -> (u32, u32) {
    let (w, h) = (format.width, format.height);
    match width {
        Some(want) if want < w => {
            let ow = (want.max(16) & !1).min(w);
            let oh = ((u64::from(h) * u64::from(ow) / u64::from(w)) as u32 & !1).max(2);
            (ow, oh)
        }
        _ => (w, h),
    }
}

/// Encodes one frame (`data`, in `format`) as a JPEG at most `width` wide,
/// at `quality` (1..=100). MJPEG frames are returned as they are.
pub fn encode(data: &[u8], format: &VideoFormat, width: Option<u32>, quality: u8) -> Result<Vec<u8>, JpegError> {
    if format.pixel == PixelFormat::Mjpeg {
        if data.len() < 4 || data[0] != 0xFF || data[1] != 0xD8 {
            return Err(JpegError::NotJpeg);
        }
        return Ok(data.to_vec());
    }
    for p in format.planes() {
        let need = p.offset + p.span();
        if need > data.len() as u64 {
            return Err(JpegError::Short { need, have: data.len() });
        }
    }
    let (ow, oh) = output_size(format, width);
    let xs: Vec<u32> = (0..ow).map(|x| (u64::from(x) * u64::from(format.width) / u64::from(ow)) as u32).collect();
    let img = Image { data, format: *format, ow, oh, xs, luts: Luts::new() };
    let mut out = Vec::with_capacity((ow * oh / 4) as usize);
    let mut enc = Encoder::new(&mut out, quality.clamp(1, 100));
    enc.set_sampling_factor(SamplingFactor::F_2_2);
    enc.encode_image(img).map_err(|e| JpegError::Encode(e.to_string()))?;
    Ok(out)
}

/// Video range → full range lookup tables.
struct Luts {
    y: [u8; 256],
    c: [u8; 256],
}

impl Luts {
    fn new() -> Luts {
        let mut y = [0u8; 256];
        let mut c = [0u8; 256];
        for i in 0..256 {
            let v = i as f32;
            y[i] = ((v - 16.0) * 255.0 / 219.0).round().clamp(0.0, 255.0) as u8;
            c[i] = ((v - 128.0) * 255.0 / 224.0 + 128.0).round().clamp(0.0, 255.0) as u8;
        }
        Luts { y, c }
    }
}

/// A frame seen through the encoder's row interface.
struct Image<'a> {
    data: &'a [u8],
    format: VideoFormat,
    ow: u32,
    oh: u32,
    /// Source column of each output column.
    xs: Vec<u32>,
    luts: Luts,
}

impl Image<'_> {
    fn row(&self, plane: usize, row: u32) -> &[u8] {
        let p = self.format.planes[plane];
        let start = (p.offset + u64::from(p.stride) * u64::from(row)) as usize;
        // Bounds checked in `encode`: every plane's span lies in `data`.
        &self.data[start..start + p.row_bytes as usize]
    }
}

impl ImageBuffer for Image<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        if self.format.pixel == PixelFormat::Gray8 { JpegColorType::Luma } else { JpegColorType::Ycbcr }
    }

    fn width(&self) -> u16 {
        self.ow as u16
    }

    fn height(&self) -> u16 {
        self.oh as u16
    }

    fn fill_buffers(&self, oy: u16, buffers: &mut [Vec<u8>; 4]) {
        let sy = (u64::from(oy) * u64::from(self.format.height) / u64::from(self.oh)) as u32;
        let (ly, lc) = (&self.luts.y, &self.luts.c);
        let [b0, b1, b2, _] = buffers;
        match self.format.pixel {
            PixelFormat::Gray8 => {
                let r = self.row(0, sy);
                b0.extend(self.xs.iter().map(|&x| r[x as usize]));
            }
            PixelFormat::Yuyv => {
                let r = self.row(0, sy);
                for &x in &self.xs {
                    let x = x as usize;
                    let pair = (x & !1) * 2;
                    b0.push(ly[r[x * 2] as usize]);
                    b1.push(lc[r[pair + 1] as usize]);
                    b2.push(lc[r[pair + 3] as usize]);
                }
            }
            PixelFormat::Nv12 => {
                let (r, uv) = (self.row(0, sy), self.row(1, sy / 2));
                for &x in &self.xs {
                    let x = x as usize;
                    b0.push(ly[r[x] as usize]);
                    b1.push(lc[uv[x & !1] as usize]);
                    b2.push(lc[uv[(x & !1) + 1] as usize]);
                }
            }
            PixelFormat::I420 => {
                let (r, u, v) = (self.row(0, sy), self.row(1, sy / 2), self.row(2, sy / 2));
                for &x in &self.xs {
                    let x = x as usize;
                    b0.push(ly[r[x] as usize]);
                    b1.push(lc[u[x / 2] as usize]);
                    b2.push(lc[v[x / 2] as usize]);
                }
            }
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => {
                let r = self.row(0, sy);
                let bgr = self.format.pixel == PixelFormat::Bgr24;
                for &x in &self.xs {
                    let p = &r[x as usize * 3..x as usize * 3 + 3];
                    let (y, cb, cr) = if bgr { rgb_to_ycbcr(p[2], p[1], p[0]) } else { rgb_to_ycbcr(p[0], p[1], p[2]) };
                    b0.push(y);
                    b1.push(cb);
                    b2.push(cr);
                }
            }
            // Handled before an `Image` is made.
            PixelFormat::Mjpeg => {}
        }
    }
}

/// Encodes an 8-bit gray image (a detector snapshot) at most `width` wide.
pub fn encode_gray(pixels: &[u8], w: u32, h: u32, width: Option<u32>, quality: u8) -> Result<Vec<u8>, JpegError> {
    let format = VideoFormat::new(w, h, PixelFormat::Gray8, 0, 1).map_err(|e| JpegError::Encode(e.to_string()))?;
    encode(pixels, &format, width, quality)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of `pixel` whose left half is dark red-ish and right half light.
    fn frame(pixel: PixelFormat, w: u32, h: u32) -> (VideoFormat, Vec<u8>) {
        let f = VideoFormat::new(w, h, pixel, 30, 1).unwrap();
        let mut data = vec![128u8; f.frame_size as usize];
        let p0 = f.planes[0];
        for y in 0..h {
            for x in 0..w {
                let luma = if x < w / 2 { 40 } else { 200 };
                let row = (p0.offset + u64::from(p0.stride) * u64::from(y)) as usize;
                match pixel {
                    PixelFormat::Gray8 | PixelFormat::Nv12 | PixelFormat::I420 => data[row + x as usize] = luma,
                    PixelFormat::Yuyv => data[row + x as usize * 2] = luma,
                    PixelFormat::Rgb24 | PixelFormat::Bgr24 => {
                        data[row + x as usize * 3..row + x as usize * 3 + 3].fill(luma);
                    }
                    PixelFormat::Mjpeg => unreachable!(),
                }
            }
        }
        (f, data)
    }

    #[test]
    fn every_raw_format_encodes_with_its_size_and_brightness() {
        for pixel in PixelFormat::RAW {
            let (f, data) = frame(pixel, 64, 32);
            let jpg = encode(&data, &f, None, 90).unwrap();
            assert_eq!(&jpg[..2], &[0xFF, 0xD8], "{pixel}");
            let half = encode(&data, &f, Some(32), 90).unwrap();
            assert!(half.len() < jpg.len(), "{pixel}: {} vs {}", half.len(), jpg.len());
        }
    }

    #[test]
    fn short_payload_and_bad_mjpeg_are_errors() {
        let (f, data) = frame(PixelFormat::Nv12, 64, 32);
        assert!(matches!(encode(&data[..100], &f, None, 80), Err(JpegError::Short { .. })));
        let m = VideoFormat::new(64, 32, PixelFormat::Mjpeg, 30, 1).unwrap();
        assert!(matches!(encode(b"nope", &m, None, 80), Err(JpegError::NotJpeg)));
        assert_eq!(encode(&[0xFF, 0xD8, 0xFF, 0xD9], &m, None, 80).unwrap(), vec![0xFF, 0xD8, 0xFF, 0xD9]);
    }

    #[test]
    fn output_size_keeps_aspect_and_never_grows() {
        let f = VideoFormat::new(1920, 1080, PixelFormat::Nv12, 30, 1).unwrap();
        assert_eq!(output_size(&f, None), (1920, 1080));
        assert_eq!(output_size(&f, Some(4000)), (1920, 1080));
        assert_eq!(output_size(&f, Some(640)), (640, 360));
        assert_eq!(output_size(&f, Some(1)), (16, 8));
    }
}
