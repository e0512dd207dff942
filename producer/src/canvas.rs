//! Drawing gray ("luma") pixels directly into a slot of any raw format.
//!
//! Every dynamic element of the test pattern is gray: R=G=B in packed RGB,
//! the Y sample only in YUV formats (chroma is left as the background put it).
//! A consumer that reads luma therefore sees the same values in every format,
//! and the stamp decodes from the G channel of RGB with step 3.
#![forbid(unsafe_code)]

use shm_proto::format::GrayMap;

/// A frame being drawn: the slot bytes plus where its gray pixels are
/// ([`shm_proto::format::LumaLayout::gray`]). All drawing clips to the frame,
/// so callers need not.
pub struct Canvas<'a> {
    buf: &'a mut [u8],
    map: GrayMap,
    w: u32,
    h: u32,
    noise: &'a [i8],
    noise_off: usize,
}

impl<'a> Canvas<'a> {
    /// A canvas on `buf` (a whole raw frame). `noise` (may be empty) is added
    /// to pixels drawn with [`Canvas::put_noisy`], read at `noise_off` onwards.
    pub fn new(buf: &'a mut [u8], map: GrayMap, w: u32, h: u32, noise: &'a [i8], noise_off: usize) -> Canvas<'a> {
        Canvas { buf, map, w, h, noise, noise_off }
    }

    /// Width and height.
    pub fn size(&self) -> (u32, u32) {
        (self.w, self.h)
    }

    #[inline]
    fn index(&self, x: u32, y: u32) -> Option<usize> {
        (x < self.w && y < self.h).then(|| self.map.offset + y as usize * self.map.stride + x as usize * self.map.step)
    }

    /// Sets pixel (x, y) to gray `v`.
    #[inline]
    pub fn put(&mut self, x: u32, y: u32, v: u8) {
        if let Some(i) = self.index(x, y)
            && let Some(px) = self.buf.get_mut(i..i + self.map.width)
        {
            px.fill(v);
        }
    }

    /// Sets pixel (x, y) to gray `v` plus this frame's noise at that pixel.
    #[inline]
    pub fn put_noisy(&mut self, x: u32, y: u32, v: u8) {
        let v = if self.noise.is_empty() {
            v
        } else {
            // A pseudo-random but fixed-per-frame position in the noise table:
            // cheap, and different for neighbouring pixels.
            let k = (self.noise_off + y as usize * 7919 + x as usize * 31) % self.noise.len();
            (i16::from(v) + i16::from(self.noise[k])).clamp(0, 255) as u8
        };
        self.put(x, y, v);
    }

    /// Brightens pixel (x, y) to at least gray `v` (channel-wise maximum).
    #[inline]
    pub fn put_max(&mut self, x: u32, y: u32, v: u8) {
        if let Some(i) = self.index(x, y)
            && let Some(px) = self.buf.get_mut(i..i + self.map.width)
        {
            for b in px {
                *b = (*b).max(v);
            }
        }
    }

    /// Fills the rectangle (clipped) with gray `v`.
    pub fn fill_rect(&mut self, x: u32, y: u32, w: u32, h: u32, v: u8) {
        let x1 = x.saturating_add(w).min(self.w);
        let y1 = y.saturating_add(h).min(self.h);
        if x >= x1 || y >= y1 {
            return;
        }
        for row in y..y1 {
            let row_start = self.map.offset + row as usize * self.map.stride;
            let start = row_start + x as usize * self.map.step;
            let end = row_start + (x1 - 1) as usize * self.map.step + self.map.width;
            let Some(bytes) = self.buf.get_mut(start..end) else { return };
            if self.map.step == self.map.width {
                bytes.fill(v);
            } else {
                for b in bytes.iter_mut().step_by(self.map.step) {
                    *b = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_proto::{PixelFormat, VideoFormat};

    #[test]
    fn gray_pixels_in_every_raw_format() {
        for pixel in PixelFormat::RAW {
            let fmt = VideoFormat::new(16, 8, pixel, 30, 1).unwrap();
            let map = fmt.luma().unwrap().gray();
            let mut buf = vec![0u8; fmt.frame_size as usize];
            let mut c = Canvas::new(&mut buf, map, 16, 8, &[], 0);
            c.fill_rect(2, 1, 3, 2, 200);
            c.put(15, 7, 9);
            c.put(16, 7, 9); // clipped
            c.put_max(2, 1, 100);
            let luma = |x: usize, y: usize| buf[map.index(x as u32, y as u32)];
            assert_eq!(luma(2, 1), 200, "{pixel}");
            assert_eq!(luma(4, 2), 200, "{pixel}");
            assert_eq!(luma(5, 2), 0, "{pixel}");
            assert_eq!(luma(15, 7), 9, "{pixel}");
            if map.width == 3 {
                assert_eq!(&buf[48 + 2 * 3..][..3], &[200, 200, 200][..]);
            }
        }
    }
}
