//! Snapshot PNGs: the full-resolution luma of an event's peak frame as an
//! 8-bit grayscale PNG (the stream's width × height), with two boxes drawn as
//! 2-px rectangles just outside them (so the object itself is not covered):
//! the object on that frame (`peak_bbox`) and the whole track (`bbox`). White
//! on a dark scene, black on a bright one. A rectangle that would leave the
//! frame is pulled in to its edge, so a track over the whole frame still shows.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::Context as _;

use super::PeakImage;

/// Thickness of the drawn box, in pixels.
pub const BOX_WIDTH: usize = 2;

/// The level a box is drawn in for `img`: white unless the pixels under the
/// rectangle around `bbox` are bright on average, then black.
pub fn box_level(img: &PeakImage, bbox: [u32; 4]) -> u8 {
    let (mut sum, mut n) = (0u64, 0u64);
    for_each_box_pixel(img.width, img.height, bbox, |i| {
        sum += u64::from(img.luma[i]);
        n += 1;
    });
    if n > 0 && sum / n >= 128 { 0 } else { 255 }
}

/// Draws the box `bbox` (`[x, y, w, h]` full-resolution pixels) into `img`
/// at `level`: a [`BOX_WIDTH`]-px rectangle surrounding it, kept inside the frame.
pub fn draw_box(img: &mut PeakImage, bbox: [u32; 4], level: u8) {
    let luma = &mut img.luma;
    for_each_box_pixel(img.width, img.height, bbox, |i| luma[i] = level);
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

/// Writes `img` with the boxes `peak_bbox` (the object) and `bbox` (the
/// track) drawn into it as a grayscale PNG at `path`.
pub fn write_png(path: &Path, img: &mut PeakImage, peak_bbox: [u32; 4], bbox: [u32; 4]) -> anyhow::Result<()> {
    let level = box_level(img, peak_bbox);
    draw_box(img, peak_bbox, level);
    if bbox != peak_bbox {
        draw_box(img, bbox, level);
    }
    let file = File::create(path).with_context(|| format!("cannot create snapshot {}", path.display()))?;
    let mut enc = png::Encoder::new(BufWriter::new(file), img.width as u32, img.height as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    // NB: written in the frame loop; fast compression keeps a 1080p frame
    // to a few ms (see docs/detect.md).
    enc.set_compression(png::Compression::Fast);
    let mut writer = enc.write_header().with_context(|| format!("cannot write snapshot {}", path.display()))?;
    writer.write_image_data(&img.luma).with_context(|| format!("cannot write snapshot {}", path.display()))?;
    writer.finish().with_context(|| format!("cannot write snapshot {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_surrounds_the_object_and_is_clipped() {
        let mut img = PeakImage { width: 40, height: 30, frame: Some(1), luma: vec![10; 40 * 30] };
        let level = box_level(&img, [10, 8, 6, 4]);
        draw_box(&mut img, [10, 8, 6, 4], level);
        let at = |x: usize, y: usize| img.luma[y * 40 + x];
        // Two pixels wide on every side, outside the box.
        for x in 8..18 {
            for y in [6, 7, 12, 13] {
                assert_eq!(at(x, y), 255, "{x},{y}");
            }
        }
        for y in 6..14 {
            for x in [8, 9, 16, 17] {
                assert_eq!(at(x, y), 255, "{x},{y}");
            }
        }
        // The inside and the outside are untouched.
        assert_eq!(at(10, 8), 10);
        assert_eq!(at(15, 11), 10);
        assert_eq!(at(7, 7), 10);
        assert_eq!(at(18, 10), 10);
        assert_eq!(img.luma.iter().filter(|&&v| v == 255).count(), 10 * 8 - 6 * 4);
        // The whole frame: drawn along its edges; black on a bright scene.
        let mut img = PeakImage { width: 40, height: 30, frame: Some(1), luma: vec![200; 40 * 30] };
        let level = box_level(&img, [0, 0, 40, 30]);
        assert_eq!(level, 0);
        draw_box(&mut img, [0, 0, 40, 30], level);
        assert_eq!(img.luma.iter().filter(|&&v| v == 0).count(), 40 * 30 - 36 * 26);
        assert_eq!(img.luma[2 * 40 + 2], 200);
        // Past the corner: pulled in, no panic.
        draw_box(&mut img, [38, 28, 20, 20], level);
        draw_box(&mut img, [45, 35, 2, 2], level);
    }
}
