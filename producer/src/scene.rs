//! The static parts of the test pattern: the status band (the only place where
//! anything but injected events moves), the night-sky background, and the
//! conversion of that background into each raw pixel format.
//!
//! Invariant: [`status_band`] contains the stamp and the sweeping bar; the
//! background outside it never changes during a run.
#![forbid(unsafe_code)]

use shm_proto::stamp::StampLayout;
use shm_proto::{PixelFormat, VideoFormat};

use crate::rng::Rng;

/// Gray level of the status band background.
pub const BAND_LUMA: u8 = 64;
/// Gray level of the sweeping bar.
pub const BAR_LUMA: u8 = 200;

/// Block side used for the band: the stamp's block, or 4 when the frame is too
/// small for a stamp.
pub fn band_block(width: u32, height: u32) -> u32 {
    StampLayout::for_frame(width, height).map_or(4, |l| l.block)
}

/// The status band `(x, y, w, h)`: `(0, 0, W, band_h)` with `band_h = 4·block`
/// (stamp at `y0 = block`, two block rows, one block of margin below for the
/// sweeping bar), clamped to the frame; `min(H, 16)` when no stamp fits.
///
/// Consumers that evaluate detection mask this rectangle.
pub fn status_band(width: u32, height: u32) -> (u32, u32, u32, u32) {
    let band_h = match StampLayout::for_frame(width, height) {
        Some(l) => (4 * l.block).min(height),
        None => height.min(16),
    };
    (0, 0, width, band_h)
}

/// Full-range BT.601 luma of an RGB triple.
pub fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// The background as RGB triples, row-major, deterministic from `seed`.
pub fn background_rgb(width: u32, height: u32, seed: u64) -> Vec<[u8; 3]> {
    let (w, h) = (width as usize, height as usize);
    let band_h = status_band(width, height).3 as usize;
    let mut rng = Rng::new(seed, 1);
    // Soft texture: a separable sum of low-frequency sinusoids, ±4 levels,
    // computed per column and per row so set-up stays fast at 4K.
    let mut wave = |n: usize| -> Vec<f32> {
        let (f1, f2) = (rng.range_f64(1.0, 3.0), rng.range_f64(3.0, 7.0));
        let (p1, p2) = (rng.range_f64(0.0, 6.3), rng.range_f64(0.0, 6.3));
        (0..n)
            .map(|i| {
                let t = i as f64 / n.max(1) as f64 * std::f64::consts::TAU;
                ((f1 * t + p1).sin() * 0.7 + (f2 * t + p2).sin() * 0.3) as f32
            })
            .collect()
    };
    let (cx, cy, cx2, cy2) = (wave(w), wave(h), wave(w), wave(h));
    let sky_rows = h.saturating_sub(band_h).max(1) as f32;
    let (top, bottom) = ([10.0f32, 14.0, 30.0], [38.0f32, 44.0, 70.0]);
    let mut out = vec![[BAND_LUMA; 3]; w * h];
    for y in band_h..h {
        let t = (y - band_h) as f32 / sky_rows;
        let base: [f32; 3] = std::array::from_fn(|c| top[c] + (bottom[c] - top[c]) * t);
        let row = &mut out[y * w..(y + 1) * w];
        for (x, px) in row.iter_mut().enumerate() {
            let tex = 3.0 * cx[x] * cy[y] + 1.5 * (cx2[x] + cy2[y]);
            *px = std::array::from_fn(|c| to_u8(base[c] + tex));
        }
    }
    // Fixed stars: mostly dim, a few bright ones with a halo.
    let sky = (h - band_h.min(h)) * w;
    let stars = sky / 3000;
    for _ in 0..stars {
        if h <= band_h + 2 || w < 3 {
            break;
        }
        let x = rng.range_u64(1, w as u64 - 2) as usize;
        let y = rng.range_u64(band_h as u64 + 1, h as u64 - 2) as usize;
        let v = 60.0 + 195.0 * rng.f64().powi(3) as f32;
        let mut bump = |x: usize, y: usize, v: f32| {
            let px = &mut out[y * w + x];
            for c in px.iter_mut() {
                *c = (*c).max(to_u8(v));
            }
        };
        bump(x, y, v);
        if v > 150.0 {
            for (dx, dy) in [(0isize, 1isize), (0, -1), (1, 0), (-1, 0)] {
                bump((x as isize + dx) as usize, (y as isize + dy) as usize, v * 0.45);
            }
        }
    }
    out
}

/// Converts an RGB image into a raw frame of `fmt` (full-range BT.601 for YUV).
/// `None` for compressed formats.
pub fn convert(rgb: &[[u8; 3]], fmt: &VideoFormat) -> Option<Vec<u8>> {
    let (w, h) = (fmt.width as usize, fmt.height as usize);
    let mut out = vec![0u8; fmt.frame_size as usize];
    let yuv = |p: [u8; 3]| {
        let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
        (
            luma(r, g, b),
            128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b,
            128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b,
        )
    };
    let planes = fmt.planes();
    match fmt.pixel {
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => {
            let bgr = fmt.pixel == PixelFormat::Bgr24;
            let stride = planes[0].stride as usize;
            for y in 0..h {
                for x in 0..w {
                    let p = rgb[y * w + x];
                    let o = y * stride + x * 3;
                    out[o..o + 3].copy_from_slice(&if bgr { [p[2], p[1], p[0]] } else { p });
                }
            }
        }
        PixelFormat::Gray8 => {
            let stride = planes[0].stride as usize;
            for y in 0..h {
                for x in 0..w {
                    out[y * stride + x] = to_u8(yuv(rgb[y * w + x]).0);
                }
            }
        }
        PixelFormat::Yuyv => {
            let stride = planes[0].stride as usize;
            for y in 0..h {
                for x in (0..w).step_by(2) {
                    let (y0, u0, v0) = yuv(rgb[y * w + x]);
                    let (y1, u1, v1) = yuv(rgb[y * w + x + 1]);
                    let o = y * stride + x * 2;
                    out[o..o + 4].copy_from_slice(&[
                        to_u8(y0),
                        to_u8((u0 + u1) / 2.0),
                        to_u8(y1),
                        to_u8((v0 + v1) / 2.0),
                    ]);
                }
            }
        }
        PixelFormat::Nv12 | PixelFormat::I420 => {
            let ys = planes[0].stride as usize;
            for y in 0..h {
                for x in 0..w {
                    out[y * ys + x] = to_u8(yuv(rgb[y * w + x]).0);
                }
            }
            for cy in 0..h / 2 {
                for cx in 0..w / 2 {
                    let (mut u, mut v) = (0.0, 0.0);
                    for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        let (_, pu, pv) = yuv(rgb[(2 * cy + dy) * w + 2 * cx + dx]);
                        u += pu / 4.0;
                        v += pv / 4.0;
                    }
                    if fmt.pixel == PixelFormat::Nv12 {
                        let o = planes[1].offset as usize + cy * planes[1].stride as usize + cx * 2;
                        out[o] = to_u8(u);
                        out[o + 1] = to_u8(v);
                    } else {
                        out[planes[1].offset as usize + cy * planes[1].stride as usize + cx] = to_u8(u);
                        out[planes[2].offset as usize + cy * planes[2].stride as usize + cx] = to_u8(v);
                    }
                }
            }
        }
        PixelFormat::Mjpeg => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_rectangles() {
        assert_eq!(status_band(640, 480), (0, 0, 640, 64));
        assert_eq!(status_band(1280, 720), (0, 0, 1280, 128));
        assert_eq!(status_band(1920, 1080), (0, 0, 1920, 192));
        assert_eq!(status_band(3840, 2160), (0, 0, 3840, 384));
        assert_eq!(status_band(100, 100), (0, 0, 100, 16));
    }

    #[test]
    fn background_is_deterministic_dark_and_flat_in_the_band() {
        let a = background_rgb(320, 240, 5);
        assert_eq!(a, background_rgb(320, 240, 5));
        assert_ne!(a, background_rgb(320, 240, 6));
        let band_h = status_band(320, 240).3 as usize;
        assert!(a[..320 * band_h].iter().all(|p| *p == [BAND_LUMA; 3]));
        let dark = a[320 * band_h..].iter().filter(|p| luma(p[0].into(), p[1].into(), p[2].into()) < 60.0).count();
        assert!(dark > a.len() * 3 / 4);
    }
}
