//! Mask images (`--mask-file`): the format meteor-camera users already draw.
//! A grayscale or colour PNG, or a PGM (binary P5 or plain P2); **dark pixels
//! (below half of full scale) are masked**, light pixels are analysed. An
//! image of a different size than the stream is scaled to it (nearest pixel).
//!
//! Every byte of the file is untrusted: sizes are checked against
//! [`MAX_PIXELS`] before anything is allocated, and parsing never panics.
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::Path;

use anyhow::{Context as _, bail, ensure};

/// Largest mask accepted: 8K × 8K pixels.
pub const MAX_PIXELS: u64 = 8192 * 8192;

/// A mask: `width × height` flags, `true` = masked (not analysed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major, `true` where masked.
    pub masked: Vec<bool>,
}

impl MaskImage {
    /// Reads a PNG or PGM file (recognised by its first bytes, not its name).
    pub fn load(path: &Path) -> anyhow::Result<MaskImage> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_PIXELS * 2 + (1 << 20)).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read mask file {}", path.display()))?;
        MaskImage::parse(&bytes).with_context(|| format!("mask file {}", path.display()))
    }

    /// Parses PNG or PGM bytes.
    pub fn parse(bytes: &[u8]) -> anyhow::Result<MaskImage> {
        if bytes.starts_with(b"\x89PNG") {
            parse_png(bytes)
        } else if bytes.starts_with(b"P5") || bytes.starts_with(b"P2") {
            parse_pgm(bytes)
        } else {
            bail!("not a PNG or PGM (P5/P2) image")
        }
    }

    /// Whether pixel `(x, y)` of a `width × height` frame is masked (the
    /// mask scaled to the frame, nearest pixel).
    pub fn masked_at(&self, x: u32, y: u32, width: u32, height: u32) -> bool {
        if self.width == 0 || self.height == 0 || width == 0 || height == 0 {
            return false;
        }
        let mx = (u64::from(x) * u64::from(self.width) / u64::from(width)).min(u64::from(self.width) - 1);
        let my = (u64::from(y) * u64::from(self.height) / u64::from(height)).min(u64::from(self.height) - 1);
        self.masked[(my * u64::from(self.width) + mx) as usize]
    }

    /// Fraction of masked pixels.
    pub fn masked_fraction(&self) -> f64 {
        self.masked.iter().filter(|&&m| m).count() as f64 / self.masked.len().max(1) as f64
    }
}

fn check_size(w: u64, h: u64) -> anyhow::Result<()> {
    ensure!(w > 0 && h > 0, "empty image ({w}x{h})");
    ensure!(w * h <= MAX_PIXELS, "image {w}x{h} is larger than the {MAX_PIXELS}-pixel limit");
    Ok(())
}

fn parse_png(bytes: &[u8]) -> anyhow::Result<MaskImage> {
    let mut dec = png::Decoder::new(bytes);
    // Palette and low bit depths become 8-bit gray/RGB; 16-bit stays 16-bit.
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().context("not a valid PNG")?;
    let (w, h) = {
        let info = reader.info();
        (info.width, info.height)
    };
    check_size(w.into(), h.into())?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).context("not a valid PNG")?;
    let (color, depth) = reader.output_color_type();
    let bytes_per_sample = if depth == png::BitDepth::Sixteen { 2 } else { 1 };
    let samples = color.samples();
    let line = frame.line_size;
    let mut masked = Vec::with_capacity((w * h) as usize);
    for y in 0..h as usize {
        let row = &buf[y * line..(y + 1) * line];
        for x in 0..w as usize {
            let px = &row[x * samples * bytes_per_sample..(x + 1) * samples * bytes_per_sample];
            // The most significant byte of each sample is enough for "dark".
            let s = |i: usize| f32::from(px[i * bytes_per_sample]);
            let (level, alpha) = match color {
                png::ColorType::Grayscale => (s(0), 255.0),
                png::ColorType::GrayscaleAlpha => (s(0), s(1)),
                png::ColorType::Rgb => (0.299 * s(0) + 0.587 * s(1) + 0.114 * s(2), 255.0),
                png::ColorType::Rgba => (0.299 * s(0) + 0.587 * s(1) + 0.114 * s(2), s(3)),
                png::ColorType::Indexed => bail!("indexed PNG was not expanded"),
            };
            // Fully transparent pixels count as "not painted": analysed.
            masked.push(alpha >= 128.0 && level < 128.0);
        }
    }
    Ok(MaskImage { width: w, height: h, masked })
}

/// Netpbm header tokens: whitespace separated, `#` comments to end of line.
struct Tokens<'a> {
    b: &'a [u8],
    i: usize,
}

impl Tokens<'_> {
    fn next_number(&mut self) -> anyhow::Result<u64> {
        loop {
            match self.b.get(self.i) {
                Some(b'#') => {
                    while self.b.get(self.i).is_some_and(|&c| c != b'\n' && c != b'\r') {
                        self.i += 1;
                    }
                }
                Some(c) if c.is_ascii_whitespace() => self.i += 1,
                Some(_) => break,
                None => bail!("truncated PGM header"),
            }
        }
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
            ensure!(self.i - start <= 10, "number too long in PGM header");
        }
        ensure!(self.i > start, "expected a number in the PGM header at byte {start}");
        Ok(std::str::from_utf8(&self.b[start..self.i])?.parse()?)
    }
}

fn parse_pgm(bytes: &[u8]) -> anyhow::Result<MaskImage> {
    let plain = bytes.starts_with(b"P2");
    let mut t = Tokens { b: bytes, i: 2 };
    let w = t.next_number()?;
    let h = t.next_number()?;
    let maxval = t.next_number()?;
    check_size(w, h)?;
    ensure!((1..=65535).contains(&maxval), "PGM maxval {maxval} out of range 1..=65535");
    let n = (w * h) as usize;
    let mut masked = Vec::with_capacity(n);
    // Dark = below half of full scale.
    let dark = |v: u64| -> anyhow::Result<bool> {
        ensure!(v <= maxval, "PGM sample {v} above maxval {maxval}");
        Ok(2 * v < maxval)
    };
    if plain {
        for _ in 0..n {
            masked.push(dark(t.next_number()?)?);
        }
    } else {
        // Exactly one whitespace byte after maxval, then the raster.
        ensure!(bytes.get(t.i).is_some_and(u8::is_ascii_whitespace), "malformed PGM header");
        let raster = &bytes[t.i + 1..];
        let bps = if maxval < 256 { 1 } else { 2 };
        ensure!(raster.len() >= n * bps, "PGM raster truncated: {} of {} bytes", raster.len(), n * bps);
        for px in raster[..n * bps].chunks_exact(bps) {
            let v = if bps == 1 { u64::from(px[0]) } else { u64::from(px[0]) << 8 | u64::from(px[1]) };
            masked.push(dark(v)?);
        }
    }
    Ok(MaskImage { width: w as u32, height: h as u32, masked })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(w: u32, h: u32, color: png::ColorType, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, w, h);
            enc.set_color(color);
            enc.set_depth(png::BitDepth::Eight);
            let mut wr = enc.write_header().unwrap();
            wr.write_image_data(data).unwrap();
        }
        out
    }

    #[test]
    fn pgm_binary_and_plain_with_comments() {
        let mut p5 = b"P5\n# a comment\n4 2\n# another\n255\n".to_vec();
        p5.extend_from_slice(&[0, 255, 10, 200, 127, 128, 255, 0]);
        let m = MaskImage::parse(&p5).unwrap();
        assert_eq!((m.width, m.height), (4, 2));
        assert_eq!(m.masked, vec![true, false, true, false, true, false, false, true]);
        let p2 = b"P2 4 2 15 0 15 1 14\n 7 8 # c\n 15 0\n";
        assert_eq!(MaskImage::parse(p2).unwrap().masked, m.masked);
        // 16-bit binary.
        let mut p5 = b"P5 2 1 65535\n".to_vec();
        p5.extend_from_slice(&[0x00, 0x10, 0xff, 0x00]);
        assert_eq!(MaskImage::parse(&p5).unwrap().masked, vec![true, false]);
    }

    #[test]
    fn pgm_hostile_inputs_are_errors() {
        for bad in [
            &b"P5 4 2 255\n\x00"[..],           // truncated raster
            b"P5 0 2 255\n",                    // empty
            b"P5 100000 100000 255\n",          // too large
            b"P2 2 1 10 3 11",                  // sample above maxval
            b"P2 2 1 10 3",                     // truncated plain
            b"P5 2 1 70000\n\x00\x00\x00\x00",  // maxval out of range
            b"P5 99999999999999999999 1 255\n", // number too long
            b"P5",                              // no header
            b"GIF89a",                          // not ours
        ] {
            assert!(MaskImage::parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn png_gray_rgb_and_alpha() {
        let g = png_bytes(3, 1, png::ColorType::Grayscale, &[0, 255, 100]);
        assert_eq!(MaskImage::parse(&g).unwrap().masked, vec![true, false, true]);
        let rgb = png_bytes(2, 1, png::ColorType::Rgb, &[0, 0, 0, 255, 255, 255]);
        assert_eq!(MaskImage::parse(&rgb).unwrap().masked, vec![true, false]);
        // Transparent black is "not painted".
        let rgba = png_bytes(2, 1, png::ColorType::Rgba, &[0, 0, 0, 255, 0, 0, 0, 0]);
        assert_eq!(MaskImage::parse(&rgba).unwrap().masked, vec![true, false]);
        assert!(MaskImage::parse(b"\x89PNG\r\n\x1a\nnope").is_err());
    }

    #[test]
    fn scaled_lookup() {
        let m = MaskImage { width: 2, height: 2, masked: vec![true, false, false, false] };
        assert!(m.masked_at(0, 0, 100, 100));
        assert!(m.masked_at(49, 49, 100, 100));
        assert!(!m.masked_at(50, 49, 100, 100));
        assert!(!m.masked_at(99, 99, 100, 100));
        assert!((m.masked_fraction() - 0.25).abs() < 1e-9);
    }
}
