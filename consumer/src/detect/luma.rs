//! Reading luma in place and binning it into the model grid.
//!
//! The frame is read exactly once per processed frame, here, row by row: every
//! `bin` rows are summed byte-wise into a `u16` row accumulator (a straight
//! widening add the compiler vectorizes), then each run of `bin` pixels of the
//! accumulator becomes one cell: the mean luma of a `bin`×`bin` block, as
//! `f32` in 0..=255. For RGB/BGR the luma weights are applied in that second
//! step, which works because a weighted sum commutes with binning. Nothing of
//! the frame is copied: the grid is `bin²` times smaller than the frame.
#![forbid(unsafe_code)]

use shm_proto::format::{LumaLayout, VideoFormat};

/// BT.601 luma weights (what V4L2 and most cameras mean by Y for SD/HD RGB).
const WR: f32 = 0.299;
const WG: f32 = 0.587;
const WB: f32 = 0.114;

/// Largest bin factor: keeps `bin × 255` inside the `u16` accumulator with margin.
pub const MAX_BIN: u32 = 16;

/// Bins luma of one format into a `gw × gh` grid of cell means.
#[derive(Debug)]
pub struct Binner {
    offset: usize,
    stride: usize,
    bin: usize,
    gw: usize,
    gh: usize,
    /// Bytes read per row: `gw × bin × bytes-per-pixel`.
    row_bytes: usize,
    /// `bin × bytes-per-pixel` weights, pre-scaled by `1 / bin²`.
    weights: Vec<f32>,
    acc: Vec<u16>,
    /// Bytes a frame must have for this layout.
    needed: usize,
}

impl Binner {
    /// A binner for `format` with factor `bin` (1..=[`MAX_BIN`]); `None` for
    /// compressed formats or a frame smaller than one cell.
    pub fn new(format: &VideoFormat, bin: u32) -> Option<Binner> {
        let bin = bin.clamp(1, MAX_BIN) as usize;
        let (w, h) = (format.width as usize, format.height as usize);
        let (gw, gh) = (w / bin, h / bin);
        if gw == 0 || gh == 0 {
            return None;
        }
        let scale = 1.0 / (bin * bin) as f32;
        let (offset, stride, pattern): (u64, u32, Vec<f32>) = match format.luma()? {
            LumaLayout::Plane { offset, stride, step: 1 } => (offset, stride, vec![1.0]),
            LumaLayout::Plane { offset, stride, step } => {
                let mut p = vec![0.0; step as usize];
                p[0] = 1.0;
                (offset, stride, p)
            }
            LumaLayout::Rgb { offset, stride, bgr: false } => (offset, stride, vec![WR, WG, WB]),
            LumaLayout::Rgb { offset, stride, bgr: true } => (offset, stride, vec![WB, WG, WR]),
        };
        let bpp = pattern.len();
        let weights: Vec<f32> = (0..bin).flat_map(|_| pattern.iter().map(|p| p * scale)).collect();
        let row_bytes = gw * bin * bpp;
        let needed = offset as usize + (gh * bin - 1) * stride as usize + row_bytes;
        Some(Binner {
            offset: offset as usize,
            stride: stride as usize,
            bin,
            gw,
            gh,
            row_bytes,
            weights,
            acc: vec![0; row_bytes],
            needed,
        })
    }

    /// Grid width in cells.
    pub fn gw(&self) -> usize {
        self.gw
    }
    /// Grid height in cells.
    pub fn gh(&self) -> usize {
        self.gh
    }
    /// The bin factor.
    pub fn bin(&self) -> usize {
        self.bin
    }
    /// Bytes of private memory this binner holds.
    pub fn memory_bytes(&self) -> usize {
        self.acc.len() * 2 + self.weights.len() * 4
    }

    /// Bins `frame` (read in place) into `out` (`gw × gh` cell means). Returns
    /// false, leaving `out` untouched, when `frame` is too short for the format.
    pub fn bin_frame(&mut self, frame: &[u8], out: &mut [f32]) -> bool {
        if frame.len() < self.needed || out.len() < self.gw * self.gh {
            return false;
        }
        for (cy, out_row) in out.chunks_exact_mut(self.gw).take(self.gh).enumerate() {
            self.acc.fill(0);
            for k in 0..self.bin {
                let start = self.offset + (cy * self.bin + k) * self.stride;
                add_row(&mut self.acc, &frame[start..start + self.row_bytes]);
            }
            // NB: const-generic cases let the compiler unroll the per-cell sum;
            // the generic fallback is for unusual bin factors.
            match self.weights.len() {
                1 => hsum::<1>(&self.acc, &self.weights, out_row),
                2 => hsum::<2>(&self.acc, &self.weights, out_row),
                3 => hsum::<3>(&self.acc, &self.weights, out_row),
                4 => hsum::<4>(&self.acc, &self.weights, out_row),
                6 => hsum::<6>(&self.acc, &self.weights, out_row),
                8 => hsum::<8>(&self.acc, &self.weights, out_row),
                12 => hsum::<12>(&self.acc, &self.weights, out_row),
                _ => hsum_dyn(&self.acc, &self.weights, out_row),
            }
        }
        true
    }
}

/// `acc[i] += row[i]`: a widening add over contiguous bytes, vectorized.
fn add_row(acc: &mut [u16], row: &[u8]) {
    for (a, &b) in acc.iter_mut().zip(row) {
        *a += u16::from(b);
    }
}

fn hsum<const N: usize>(acc: &[u16], weights: &[f32], out: &mut [f32]) {
    let w: [f32; N] = weights.try_into().expect("weights of length N");
    for (o, chunk) in out.iter_mut().zip(acc.chunks_exact(N)) {
        let mut s = 0.0f32;
        for i in 0..N {
            s += f32::from(chunk[i]) * w[i];
        }
        *o = s;
    }
}

fn hsum_dyn(acc: &[u16], weights: &[f32], out: &mut [f32]) {
    for (o, chunk) in out.iter_mut().zip(acc.chunks_exact(weights.len())) {
        *o = chunk.iter().zip(weights).map(|(&a, &w)| f32::from(a) * w).sum();
    }
}

/// Copies the full-resolution luma of `frame` (read in place) into `out`,
/// `width × height` bytes, row-major without padding: the Y plane row by row
/// for gray8/nv12/i420, every other byte for yuyv, and BT.601 luma in 8.8
/// fixed point for rgb24/bgr24. False (leaving `out` in an unspecified state)
/// when `frame` is too short or `out` has the wrong size, or for a compressed
/// format. Used for snapshots only, on a track's new peak: never per frame.
pub fn copy_luma(format: &VideoFormat, frame: &[u8], out: &mut [u8]) -> bool {
    let (w, h) = (format.width as usize, format.height as usize);
    let Some(layout) = format.luma() else { return false };
    let (offset, stride, bpp) = match layout {
        LumaLayout::Plane { offset, stride, step } => (offset as usize, stride as usize, step as usize),
        LumaLayout::Rgb { offset, stride, .. } => (offset as usize, stride as usize, 3),
    };
    if w == 0 || h == 0 || out.len() != w * h || frame.len() < offset + (h - 1) * stride + w * bpp {
        return false;
    }
    for (y, dst) in out.chunks_exact_mut(w).enumerate() {
        let src = &frame[offset + y * stride..][..w * bpp];
        match layout {
            LumaLayout::Plane { step: 1, .. } => dst.copy_from_slice(src),
            LumaLayout::Plane { .. } => {
                for (d, s) in dst.iter_mut().zip(src.chunks_exact(bpp)) {
                    *d = s[0];
                }
            }
            LumaLayout::Rgb { bgr, .. } => {
                // 77 + 150 + 29 = 256: 0.299, 0.587, 0.114 in 8.8 fixed point.
                let (wr, wb) = if bgr { (29u32, 77u32) } else { (77, 29) };
                for (d, s) in dst.iter_mut().zip(src.chunks_exact(3)) {
                    let v = wr * u32::from(s[0]) + 150 * u32::from(s[1]) + wb * u32::from(s[2]);
                    *d = ((v + 128) >> 8) as u8;
                }
            }
        }
    }
    true
}

/// The default bin factor for a frame width: a model grid about 640–960
/// cells wide, and never single pixels (2×2 cells halve white noise and
/// average away the ringing of compression around stars).
pub fn auto_bin(width: u32) -> u32 {
    width.div_ceil(960).clamp(2, MAX_BIN).min(width.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_proto::PixelFormat;

    /// Writes luma `v(x, y)` into a frame of any raw format (chroma neutral).
    pub fn fill(format: &VideoFormat, buf: &mut [u8], v: impl Fn(usize, usize) -> u8) {
        let (w, h) = (format.width as usize, format.height as usize);
        let p = format.planes()[0];
        for y in 0..h {
            for x in 0..w {
                let l = v(x, y);
                let row = p.offset as usize + y * p.stride as usize;
                match format.pixel {
                    PixelFormat::Rgb24 | PixelFormat::Bgr24 => buf[row + 3 * x..row + 3 * x + 3].fill(l),
                    PixelFormat::Yuyv => {
                        buf[row + 2 * x] = l;
                        buf[row + 2 * x + 1] = 128;
                    }
                    _ => buf[row + x] = l,
                }
            }
        }
    }

    #[test]
    fn every_format_bins_to_the_same_grid() {
        for pixel in PixelFormat::RAW {
            let f = VideoFormat::new(64, 32, pixel, 30, 1).unwrap();
            let mut buf = vec![128u8; f.frame_size as usize];
            fill(&f, &mut buf, |x, y| ((x * 3 + y * 5) % 200) as u8);
            for bin in [1, 2, 3, 4] {
                let mut b = Binner::new(&f, bin).unwrap();
                let mut out = vec![0.0; b.gw() * b.gh()];
                assert!(b.bin_frame(&buf, &mut out));
                for cy in 0..b.gh() {
                    for cx in 0..b.gw() {
                        let bin = bin as usize;
                        let mut s = 0.0;
                        for y in cy * bin..(cy + 1) * bin {
                            for x in cx * bin..(cx + 1) * bin {
                                s += ((x * 3 + y * 5) % 200) as f32;
                            }
                        }
                        let want = s / (bin * bin) as f32;
                        let got = out[cy * b.gw() + cx];
                        assert!((got - want).abs() < 0.01, "{pixel} bin {bin} cell {cx},{cy}: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_format_copies_the_same_luma() {
        for pixel in PixelFormat::RAW {
            let f = VideoFormat::new(64, 32, pixel, 30, 1).unwrap();
            let mut buf = vec![128u8; f.frame_size as usize];
            fill(&f, &mut buf, |x, y| ((x * 3 + y * 5) % 256) as u8);
            let mut out = vec![0u8; 64 * 32];
            assert!(copy_luma(&f, &buf, &mut out), "{pixel}");
            for (i, &v) in out.iter().enumerate() {
                let (x, y) = (i % 64, i / 64);
                assert_eq!(v, ((x * 3 + y * 5) % 256) as u8, "{pixel} at {x},{y}");
            }
            assert!(!copy_luma(&f, &buf[..buf.len() / 4], &mut out), "{pixel}: short frame");
            assert!(!copy_luma(&f, &buf, &mut out[1..]), "{pixel}: wrong output size");
        }
    }

    #[test]
    fn short_frame_is_refused() {
        let f = VideoFormat::new(64, 32, PixelFormat::Gray8, 30, 1).unwrap();
        let mut b = Binner::new(&f, 2).unwrap();
        let mut out = vec![0.0; b.gw() * b.gh()];
        assert!(!b.bin_frame(&[0u8; 100], &mut out));
        assert!(Binner::new(&VideoFormat::new(64, 32, PixelFormat::Mjpeg, 30, 1).unwrap(), 2).is_none());
    }

    #[test]
    fn auto_bin_targets_a_small_grid() {
        assert_eq!(auto_bin(640), 2);
        assert_eq!(auto_bin(1), 1);
        assert_eq!(auto_bin(1280), 2);
        assert_eq!(auto_bin(1920), 2);
        assert_eq!(auto_bin(3840), 4);
    }
}
