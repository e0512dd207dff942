//! Snapshot PNGs: the downscaled luma of an event's peak frame (the model
//! grid, one pixel per cell), upscaled ×2 when small, as RGB with the track's
//! box drawn in red and its points in yellow.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::Context as _;

use super::GridImage;
use super::event::EventRecord;

/// Writes `ev`'s snapshot (its kept image) to `path`.
pub fn write_png(path: &Path, img: &GridImage, ev: &EventRecord) -> anyhow::Result<()> {
    // Small grids are hard to look at: double them.
    let up = if img.width < 480 { 2 } else { 1 };
    let (w, h) = (img.width * up, img.height * up);
    let mut rgb = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let v = img.luma[(y / up) * img.width + x / up];
            rgb[(y * w + x) * 3..][..3].fill(v);
        }
    }
    // Full-resolution pixels to image pixels.
    let scale = up as f32 / img.bin as f32;
    let to = |v: u32, max: usize| ((v as f32 * scale) as usize).min(max - 1);
    let [bx, by, bw, bh] = ev.bbox;
    let (x0, y0) = (to(bx.saturating_sub(img.bin as u32), w), to(by.saturating_sub(img.bin as u32), h));
    let (x1, y1) = (to(bx + bw + img.bin as u32, w), to(by + bh + img.bin as u32, h));
    let mut put = |x: usize, y: usize, c: [u8; 3]| rgb[(y * w + x) * 3..][..3].copy_from_slice(&c);
    for x in x0..=x1 {
        put(x, y0, [255, 0, 0]);
        put(x, y1, [255, 0, 0]);
    }
    for y in y0..=y1 {
        put(x0, y, [255, 0, 0]);
        put(x1, y, [255, 0, 0]);
    }
    for p in &ev.points {
        if p.x >= 0.0 && p.y >= 0.0 {
            put(to(p.x as u32, w), to(p.y as u32, h), [255, 255, 0]);
        }
    }
    let file = File::create(path).with_context(|| format!("cannot create snapshot {}", path.display()))?;
    let mut enc = png::Encoder::new(BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().with_context(|| format!("cannot write snapshot {}", path.display()))?;
    writer.write_image_data(&rgb).with_context(|| format!("cannot write snapshot {}", path.display()))?;
    writer.finish().with_context(|| format!("cannot write snapshot {}", path.display()))?;
    Ok(())
}
