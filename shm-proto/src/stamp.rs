//! The frame stamp: a machine-readable pattern of black and white blocks that
//! carries a frame id and a time, drawn into frames by the test pattern and
//! decoded downstream — also after H.264 and RTSP — to measure latency and loss.
//!
//! Layout: 72 bits (32-bit frame id, 32-bit time in µs modulo 2^32, CRC-8) in
//! two rows of 36 square blocks, starting one block from the top-left corner.
//! The block side is a multiple of 8 pixels (of 4 in small frames) so blocks
//! align with codec macroblocks and survive compression. A bit is white (235)
//! for 1, black (16) for 0.
//!
//! [`draw`] and [`decode`] work on a whole raw frame of any [`PixelFormat`]:
//! blocks are gray, so they are written to the Y samples of YUV formats and to
//! all three channels of packed RGB ([`VideoFormat::luma`], [`GrayMap`]), and
//! read back from the Y samples or the G channel. [`decode_luma`] reads a bare
//! 8-bit luma plane, such as a decoder's output.
//!
//! [`PixelFormat`]: crate::PixelFormat
#![forbid(unsafe_code)]

use crate::format::{GrayMap, VideoFormat};

/// Bits in a stamp.
pub const BITS: usize = 72;
/// Blocks per row.
pub const PER_ROW: u32 = 36;
/// Luma of a 1 bit.
pub const WHITE: u8 = 235;
/// Luma of a 0 bit.
pub const BLACK: u8 = 16;

/// What a stamp carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Frame id (low 32 bits).
    pub frame_id: u32,
    /// Time in µs since the Unix epoch, modulo 2^32 (wraps every ~71 minutes).
    pub time_us: u32,
}

impl Stamp {
    /// A stamp for a frame id and a `CLOCK_REALTIME` time in ns.
    pub fn new(frame_id: u64, time_ns: u64) -> Stamp {
        Stamp { frame_id: frame_id as u32, time_us: (time_ns / 1000) as u32 }
    }

    /// The 72 bits, most significant first: id, time, CRC-8 of both.
    pub fn bits(&self) -> [bool; BITS] {
        let mut bytes = [0u8; 9];
        bytes[..4].copy_from_slice(&self.frame_id.to_be_bytes());
        bytes[4..8].copy_from_slice(&self.time_us.to_be_bytes());
        bytes[8] = crc8(&bytes[..8]);
        let mut out = [false; BITS];
        for (i, b) in out.iter_mut().enumerate() {
            *b = bytes[i / 8] & (0x80 >> (i % 8)) != 0;
        }
        out
    }

    fn from_bits(bits: &[bool; BITS]) -> Option<Stamp> {
        let mut bytes = [0u8; 9];
        for (i, &b) in bits.iter().enumerate() {
            if b {
                bytes[i / 8] |= 0x80 >> (i % 8);
            }
        }
        if crc8(&bytes[..8]) != bytes[8] {
            return None;
        }
        Some(Stamp {
            frame_id: u32::from_be_bytes(bytes[..4].try_into().ok()?),
            time_us: u32::from_be_bytes(bytes[4..8].try_into().ok()?),
        })
    }

    /// µs from the stamp's time to `now_ns` (`CLOCK_REALTIME`), modulo 2^32:
    /// correct for latencies under ~35 minutes either way.
    pub fn age_us(&self, now_ns: u64) -> i64 {
        i64::from(((now_ns / 1000) as u32).wrapping_sub(self.time_us) as i32)
    }
}

fn crc8(data: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &b in data {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 { (crc << 1) ^ 0x07 } else { crc << 1 };
        }
    }
    crc
}

/// Where the stamp's blocks are in a frame of a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StampLayout {
    /// Side of a block in pixels.
    pub block: u32,
    /// Left edge of the first block.
    pub x0: u32,
    /// Top edge of the first row.
    pub y0: u32,
}

impl StampLayout {
    /// The layout for a `width` × `height` frame; `None` when the frame is too
    /// small to hold a readable stamp (narrower than 152 or lower than 12 pixels).
    pub fn for_frame(width: u32, height: u32) -> Option<StampLayout> {
        let raw = width / (PER_ROW + 2);
        let block = if raw >= 16 { raw / 8 * 8 } else { raw / 4 * 4 };
        if block < 4 || height < block * 3 {
            return None;
        }
        Some(StampLayout { block, x0: block, y0: block })
    }

    /// The rectangle `(x, y, w, h)` of bit `i`'s block.
    pub fn block_rect(&self, i: usize) -> (u32, u32, u32, u32) {
        let (row, col) = (i as u32 / PER_ROW, i as u32 % PER_ROW);
        (self.x0 + col * self.block, self.y0 + row * self.block, self.block, self.block)
    }

    /// The rectangle covering the whole stamp.
    pub fn area(&self) -> (u32, u32, u32, u32) {
        (self.x0, self.y0, PER_ROW * self.block, 2 * self.block)
    }

    /// Calls `f(x, y, w, h, luma)` for every block of `stamp`.
    pub fn for_each_block(&self, stamp: &Stamp, mut f: impl FnMut(u32, u32, u32, u32, u8)) {
        for (i, bit) in stamp.bits().iter().enumerate() {
            let (x, y, w, h) = self.block_rect(i);
            f(x, y, w, h, if *bit { WHITE } else { BLACK });
        }
    }

    /// Draws `stamp` into an 8-bit luma plane (`step` bytes between pixels:
    /// 1 for planar formats, 2 for YUYV). Blocks are clipped to `plane`.
    pub fn draw_luma(&self, stamp: &Stamp, plane: &mut [u8], stride: usize, step: usize) {
        self.draw_gray(stamp, plane, &GrayMap { offset: 0, stride, step, width: 1 });
    }

    /// Draws `stamp` as gray blocks through `map`. Blocks are clipped to `buf`.
    pub fn draw_gray(&self, stamp: &Stamp, buf: &mut [u8], map: &GrayMap) {
        self.for_each_block(stamp, |x, y, w, h, v| {
            for row in y..y + h {
                let start = map.offset + row as usize * map.stride + x as usize * map.step;
                for px in 0..w as usize {
                    let at = start + px * map.step;
                    if let Some(b) = buf.get_mut(at..at + map.width) {
                        b.fill(v);
                    }
                }
            }
        });
    }

    /// Decodes a stamp from a luma source `luma(x, y)`: each block's central
    /// half is averaged and compared against the midpoint. `None` if the CRC
    /// does not match (no stamp, or a damaged one).
    pub fn decode(&self, luma: impl Fn(u32, u32) -> u8) -> Option<Stamp> {
        let mut bits = [false; BITS];
        let q = (self.block / 4).max(1);
        for (i, bit) in bits.iter_mut().enumerate() {
            let (x, y, w, h) = self.block_rect(i);
            let (mut sum, mut n) = (0u32, 0u32);
            for yy in (y + q)..(y + h - q) {
                for xx in (x + q)..(x + w - q) {
                    sum += u32::from(luma(xx, yy));
                    n += 1;
                }
            }
            *bit = sum > n * u32::from(WHITE / 2 + BLACK / 2);
        }
        Stamp::from_bits(&bits)
    }
}

/// Decodes a stamp from an 8-bit luma plane of a `width` × `height` frame
/// (`step` bytes between pixels). `None` when the frame is too small for a
/// stamp, `plane` is too short for it, or its CRC does not match.
pub fn decode_luma(plane: &[u8], stride: usize, step: usize, width: u32, height: u32) -> Option<Stamp> {
    decode_gray(plane, &GrayMap { offset: 0, stride, step, width: 1 }, width, height)
}

/// Decodes a stamp read through `map` from a `width` × `height` frame; `None`
/// as for [`decode_luma`].
pub fn decode_gray(buf: &[u8], map: &GrayMap, width: u32, height: u32) -> Option<Stamp> {
    let layout = StampLayout::for_frame(width, height)?;
    let (x, y, w, h) = layout.area();
    if buf.len() <= map.index(x + w - 1, y + h - 1) {
        return None;
    }
    layout.decode(|x, y| buf[map.index(x, y)])
}

/// Draws `stamp` into `frame`, a raw frame of `format` (see the module docs).
/// Returns `false`, drawing nothing, for a compressed format or a frame too
/// small for a stamp ([`StampLayout::for_frame`]).
pub fn draw(frame: &mut [u8], format: &VideoFormat, stamp: &Stamp) -> bool {
    let (Some(layout), Some(luma)) = (StampLayout::for_frame(format.width, format.height), format.luma()) else {
        return false;
    };
    layout.draw_gray(stamp, frame, &luma.gray());
    true
}

/// Decodes the stamp of `frame`, a raw frame of `format`. `None` for a
/// compressed format, a frame too small for a stamp or too short for its
/// format, or a stamp whose CRC does not match.
pub fn decode(frame: &[u8], format: &VideoFormat) -> Option<Stamp> {
    decode_gray(frame, &format.luma()?.gray(), format.width, format.height)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_a_plane() {
        for (w, h) in [(1920u32, 1080u32), (1280, 720), (640, 480), (320, 240), (160, 120)] {
            let layout = StampLayout::for_frame(w, h).unwrap();
            let mut plane = vec![128u8; (w * h) as usize];
            let s = Stamp::new(123_456, 1_700_000_000_123_456_789);
            layout.draw_luma(&s, &mut plane, w as usize, 1);
            assert_eq!(decode_luma(&plane, w as usize, 1, w, h), Some(s), "{w}x{h}");
        }
    }

    #[test]
    fn survives_noise_and_rejects_garbage() {
        let (w, h) = (640u32, 360u32);
        let layout = StampLayout::for_frame(w, h).unwrap();
        let mut plane = vec![0u8; (w * h) as usize];
        let s = Stamp::new(7, 42_000_000);
        layout.draw_luma(&s, &mut plane, w as usize, 1);
        for (i, b) in plane.iter_mut().enumerate() {
            *b = b.saturating_add((i * 7919 % 41) as u8).saturating_sub(20);
        }
        assert_eq!(decode_luma(&plane, w as usize, 1, w, h), Some(s));
        let noise: Vec<u8> = (0..w * h).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
        assert_eq!(decode_luma(&noise, w as usize, 1, w, h), None);
    }

    #[test]
    fn draws_and_decodes_in_every_raw_format() {
        for pixel in crate::PixelFormat::RAW {
            let f = VideoFormat::new(640, 360, pixel, 30, 1).unwrap();
            let mut frame = vec![100u8; f.frame_size as usize];
            let s = Stamp::new(42, 1_700_000_000_000_000_000);
            assert!(draw(&mut frame, &f, &s), "{pixel}");
            assert_eq!(decode(&frame, &f), Some(s), "{pixel}");
            assert_eq!(decode(&frame[..100], &f), None, "{pixel}: short buffer");
            if f.luma().unwrap().gray().width == 3 {
                // Gray: all three channels of a block carry the bit.
                let (x, y, ..) = StampLayout::for_frame(640, 360).unwrap().block_rect(0);
                let i = (y as usize * 640 + x as usize) * 3;
                assert!(frame[i] == frame[i + 1] && frame[i + 1] == frame[i + 2], "{pixel}");
            }
        }
        let mjpeg = VideoFormat::new(640, 360, crate::PixelFormat::Mjpeg, 30, 1).unwrap();
        assert!(!draw(&mut [0u8; 64], &mjpeg, &Stamp::new(1, 1)));
        let tiny = VideoFormat::new(64, 64, crate::PixelFormat::Gray8, 30, 1).unwrap();
        assert!(!draw(&mut [0u8; 4096], &tiny, &Stamp::new(1, 1)));
    }

    #[test]
    fn age_wraps() {
        let s = Stamp::new(0, (u64::from(u32::MAX) - 10) * 1000);
        assert_eq!(s.age_us((u64::from(u32::MAX) + 1 + 20) * 1000), 31);
        assert!(StampLayout::for_frame(64, 64).is_none());
    }
}
