//! Snapshot PNGs of an event's peak frame at full resolution, in colour when
//! the stream is colour (RGB from nv12/i420/yuyv with full-range BT.601, as
//! the project's YUV formats use; rgb24/bgr24 as they are) and 8-bit gray for
//! gray8. Two boxes are drawn as 2-px rectangles just outside them (so the
//! object itself is not covered): the object on that frame (`peak_bbox`) and
//! the whole track (`bbox`). In colour the object's box is green and the
//! track's magenta; in gray both are white on a dark scene, black on a bright
//! one. A rectangle that would leave the frame is pulled in to its edge.
//!
//! PNGs are written by the event emitter thread (`sink`), never on the
//! frame thread: the detector hands over the raw peak frame it copied, and
//! the emitter converts, draws and encodes it, then emits the event.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use shm_proto::PixelFormat;

use super::PeakImage;

/// Thickness of the drawn box, in pixels.
pub const BOX_WIDTH: usize = 2;

/// A decoded snapshot: `channels` (1 = gray, 3 = RGB) bytes per pixel, row-major.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// `width × height × channels` bytes.
    pub pixels: Vec<u8>,
}

/// Full-range BT.601 YUV → RGB for one pixel.
fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let (y, u, v) = (f32::from(y), f32::from(u) - 128.0, f32::from(v) - 128.0);
    let c = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    [c(y + 1.402 * v), c(y - 0.344_136 * u - 0.714_136 * v), c(y + 1.772 * u)]
}

/// Converts the raw frame held by `img` into gray (gray8) or RGB pixels.
/// A payload too short for its format gives a black image of the right size.
pub fn render(img: &PeakImage) -> Rendered {
    let (w, h) = (img.width, img.height);
    let f = &img.format;
    let gray = f.pixel == PixelFormat::Gray8;
    let channels = if gray { 1 } else { 3 };
    let mut px = vec![0u8; w * h * channels];
    let planes = f.planes();
    let d = &img.data;
    let at = |plane: usize, off: usize| -> u8 {
        planes.get(plane).and_then(|p| d.get(p.offset as usize + off)).copied().unwrap_or(0)
    };
    for y in 0..h {
        for x in 0..w {
            let o = (y * w + x) * channels;
            let s0 = planes[0].stride as usize;
            match f.pixel {
                PixelFormat::Gray8 => px[o] = at(0, y * s0 + x),
                PixelFormat::Rgb24 | PixelFormat::Bgr24 => {
                    let (a, b, c) = (at(0, y * s0 + 3 * x), at(0, y * s0 + 3 * x + 1), at(0, y * s0 + 3 * x + 2));
                    let rgb = if f.pixel == PixelFormat::Rgb24 { [a, b, c] } else { [c, b, a] };
                    px[o..o + 3].copy_from_slice(&rgb);
                }
                PixelFormat::Nv12 => {
                    let s1 = planes.get(1).map_or(0, |p| p.stride as usize);
                    let uv = (y / 2) * s1 + (x / 2) * 2;
                    px[o..o + 3].copy_from_slice(&yuv_to_rgb(at(0, y * s0 + x), at(1, uv), at(1, uv + 1)));
                }
                PixelFormat::I420 => {
                    let s1 = planes.get(1).map_or(0, |p| p.stride as usize);
                    let s2 = planes.get(2).map_or(0, |p| p.stride as usize);
                    let (u, v) = (at(1, (y / 2) * s1 + x / 2), at(2, (y / 2) * s2 + x / 2));
                    px[o..o + 3].copy_from_slice(&yuv_to_rgb(at(0, y * s0 + x), u, v));
                }
                PixelFormat::Yuyv => {
                    let base = y * s0 + (x / 2) * 4;
                    let yy = at(0, y * s0 + 2 * x);
                    px[o..o + 3].copy_from_slice(&yuv_to_rgb(yy, at(0, base + 1), at(0, base + 3)));
                }
                PixelFormat::Mjpeg => {}
            }
        }
    }
    Rendered { width: w, height: h, channels, pixels: px }
}

/// The gray level a box is drawn in: white unless the pixels under the
/// rectangle around `bbox` are bright on average, then black.
pub fn box_level(img: &Rendered, bbox: [u32; 4]) -> u8 {
    let (mut sum, mut n) = (0u64, 0u64);
    for_each_box_pixel(img.width, img.height, bbox, |i| {
        let p = &img.pixels[i * img.channels..(i + 1) * img.channels];
        sum += p.iter().map(|&v| u64::from(v)).sum::<u64>() / img.channels as u64;
        n += 1;
    });
    if n > 0 && sum / n >= 128 { 0 } else { 255 }
}

/// Draws the box `bbox` (`[x, y, w, h]` full-resolution pixels) into `img`
/// in `color` (gray images take its first component): a [`BOX_WIDTH`]-px
/// rectangle surrounding it, kept inside the frame.
pub fn draw_box(img: &mut Rendered, bbox: [u32; 4], color: [u8; 3]) {
    let ch = img.channels;
    let px = &mut img.pixels;
    for_each_box_pixel(img.width, img.height, bbox, |i| px[i * ch..(i + 1) * ch].copy_from_slice(&color[..ch]));
}

/// Indices of the pixels of the rectangle drawn around `bbox`.
fn for_each_box_pixel(w: usize, h: usize, bbox: [u32; 4], mut f: impl FnMut(usize)) {
    if w == 0 || h == 0 {
        return;
    }
    let [bx, by, bw, bh] = bbox.map(|v| v as i64);
    let t = BOX_WIDTH as i64;
    // Outer edge of the rectangle, inclusive; the box itself stays visible.
    // Pulled in to the frame's edge where it would leave it.
    let (x0, y0) = ((bx - t).clamp(0, w as i64 - 1), (by - t).clamp(0, h as i64 - 1));
    let (x1, y1) = ((bx + bw + t - 1).clamp(x0, w as i64 - 1), (by + bh + t - 1).clamp(y0, h as i64 - 1));
    for y in y0..=y1 {
        let edge_row = y < y0 + t || y > y1 - t;
        for x in x0..=x1 {
            if edge_row || x < x0 + t || x > x1 - t {
                f(y as usize * w + x as usize);
            }
        }
    }
}

/// Renders `img`, draws the boxes `peak_bbox` (the object) and `bbox` (the
/// track) and writes the PNG to `path` (via `path` + `.part`, renamed when
/// complete, so a reader never sees half a file).
pub fn write_png(path: &Path, img: &PeakImage, peak_bbox: [u32; 4], bbox: [u32; 4]) -> anyhow::Result<()> {
    let mut r = render(img);
    let (object, track) = if r.channels == 1 {
        let l = box_level(&r, peak_bbox);
        ([l; 3], [l; 3])
    } else {
        ([0, 255, 0], [255, 0, 255])
    };
    if bbox != peak_bbox {
        draw_box(&mut r, bbox, track);
    }
    draw_box(&mut r, peak_bbox, object);
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let write = || -> anyhow::Result<()> {
        let file = File::create(&part).context("cannot create it")?;
        let mut enc = png::Encoder::new(BufWriter::new(file), r.width as u32, r.height as u32);
        enc.set_color(if r.channels == 1 { png::ColorType::Grayscale } else { png::ColorType::Rgb });
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&r.pixels)?;
        writer.finish()?;
        std::fs::rename(&part, path)?;
        Ok(())
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&part);
        })
        .with_context(|| format!("cannot write snapshot {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_proto::VideoFormat;

    fn gray(w: usize, h: usize, v: u8) -> Rendered {
        Rendered { width: w, height: h, channels: 1, pixels: vec![v; w * h] }
    }

    #[test]
    fn box_surrounds_the_object_and_is_clipped() {
        let mut img = gray(40, 30, 10);
        let level = box_level(&img, [10, 8, 6, 4]);
        draw_box(&mut img, [10, 8, 6, 4], [level; 3]);
        let at = |img: &Rendered, x: usize, y: usize| img.pixels[y * 40 + x];
        // Two pixels wide on every side, outside the box.
        for x in 8..18 {
            for y in [6, 7, 12, 13] {
                assert_eq!(at(&img, x, y), 255, "{x},{y}");
            }
        }
        for y in 6..14 {
            for x in [8, 9, 16, 17] {
                assert_eq!(at(&img, x, y), 255, "{x},{y}");
            }
        }
        // The inside and the outside are untouched.
        assert_eq!(at(&img, 10, 8), 10);
        assert_eq!(at(&img, 15, 11), 10);
        assert_eq!(at(&img, 7, 7), 10);
        assert_eq!(at(&img, 18, 10), 10);
        assert_eq!(img.pixels.iter().filter(|&&v| v == 255).count(), 10 * 8 - 6 * 4);
        // The whole frame: drawn along its edges; black on a bright scene.
        let mut img = gray(40, 30, 200);
        let level = box_level(&img, [0, 0, 40, 30]);
        assert_eq!(level, 0);
        draw_box(&mut img, [0, 0, 40, 30], [level; 3]);
        assert_eq!(img.pixels.iter().filter(|&&v| v == 0).count(), 40 * 30 - 36 * 26);
        assert_eq!(img.pixels[2 * 40 + 2], 200);
        // Past the corner: pulled in, no panic.
        draw_box(&mut img, [38, 28, 20, 20], [level; 3]);
        draw_box(&mut img, [45, 35, 2, 2], [level; 3]);
    }

    #[test]
    fn colour_formats_render_as_rgb() {
        // A saturated red frame in every colour format renders red; gray8 stays gray.
        for pixel in PixelFormat::RAW {
            let f = VideoFormat::new(8, 4, pixel, 30, 1).unwrap();
            let mut data = vec![0u8; f.frame_size as usize];
            // Full-range BT.601 red: Y 76, U 85, V 255.
            let (y, u, v) = (76u8, 85u8, 255u8);
            let p = f.planes();
            match pixel {
                PixelFormat::Gray8 => data.fill(y),
                PixelFormat::Rgb24 => data.chunks_exact_mut(3).for_each(|c| c.copy_from_slice(&[255, 0, 0])),
                PixelFormat::Bgr24 => data.chunks_exact_mut(3).for_each(|c| c.copy_from_slice(&[0, 0, 255])),
                PixelFormat::Nv12 => {
                    data[..p[1].offset as usize].fill(y);
                    data[p[1].offset as usize..].chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&[u, v]));
                }
                PixelFormat::I420 => {
                    data[..p[1].offset as usize].fill(y);
                    data[p[1].offset as usize..p[2].offset as usize].fill(u);
                    data[p[2].offset as usize..].fill(v);
                }
                PixelFormat::Yuyv => data.chunks_exact_mut(4).for_each(|c| c.copy_from_slice(&[y, u, y, v])),
                PixelFormat::Mjpeg => unreachable!(),
            }
            let img = PeakImage { width: 8, height: 4, frame: Some(1), format: f, data };
            let r = render(&img);
            if pixel == PixelFormat::Gray8 {
                assert_eq!((r.channels, r.pixels[5]), (1, 76));
            } else {
                assert_eq!(r.channels, 3, "{pixel}");
                let px = &r.pixels[3 * 9..3 * 10];
                assert!(px[0] >= 250 && px[1] <= 5 && px[2] <= 5, "{pixel}: {px:?}");
            }
        }
    }
}
