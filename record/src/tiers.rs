//! Any frame by id or capture time, through the tiers: the live ring first
//! (the exact raw frame, if the producer has not overwritten it yet), then
//! the segments on disk (decoded). The answer names its tier.
#![forbid(unsafe_code)]

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use shm_proto::{PixelFormat, Reader, ReaderOptions, Start, VideoFormat};

use crate::catalog::{Catalog, Located};
use crate::encoder;
use crate::media::SegmentReader;
use crate::segment::NullOnDrop;
use crate::{ring, time};

/// What is asked for.
#[derive(Clone, Copy, Debug)]
pub enum Query {
    /// A producer frame id.
    Id(u64),
    /// The frame captured nearest to a time (Unix ns).
    Time(u64),
}

/// Which tier answered.
#[derive(Clone, Debug)]
pub enum Tier {
    /// The live ring.
    Ring,
    /// A segment on disk, at a timestamp in it.
    Disk {
        /// Segment path (relative to the directory).
        segment: String,
        /// Timestamp in the segment.
        pts_ns: u64,
    },
}

/// A frame found.
#[derive(Clone, Debug)]
pub struct Found {
    /// Tier.
    pub tier: Tier,
    /// Frame id.
    pub frame_id: u64,
    /// Capture time.
    pub capture_ns: u64,
}

/// Image format from the output file name.
fn image_encoder(out: &Path) -> anyhow::Result<&'static str> {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    Ok(match ext.as_str() {
        "png" => "pngenc compression-level=1",
        "jpg" | "jpeg" => "jpegenc quality=95",
        _ => bail!("--out {}: use a .png or .jpg file name", out.display()),
    })
}

/// Encodes one buffer of `caps` into an image file.
fn write_image(buf: gst::Buffer, caps: &gst::Caps, out: &Path) -> anyhow::Result<()> {
    let enc = image_encoder(out)?;
    let jpeg_in = caps.structure(0).is_some_and(|s| s.name() == "image/jpeg");
    let dec = if jpeg_in { "jpegdec ! " } else { "" };
    let p =
        gst::parse::launch(&format!("appsrc name=src format=time ! {dec}videoconvert ! {enc} ! appsink name=sink"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let _g = NullOnDrop(p.clone());
    let src = p.by_name("src").and_then(|e| e.downcast::<gst_app::AppSrc>().ok()).context("no appsrc")?;
    let sink = p.by_name("sink").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).context("no appsink")?;
    src.set_caps(Some(caps));
    p.set_state(gst::State::Playing).context("cannot start the image encoder")?;
    let mut buf = buf;
    buf.make_mut().set_pts(gst::ClockTime::ZERO);
    src.push_buffer(buf).map_err(|e| anyhow::anyhow!("image encoder: {e:?}"))?;
    let _ = src.end_of_stream();
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(10)).context("the image encoder gave nothing")?;
    let data = sample.buffer().context("empty image")?.map_readable()?;
    std::fs::write(out, data.as_slice()).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// Looks in the live ring of `name`; `Ok(None)` when the ring is not there
/// or no longer holds the frame.
fn from_ring(name: &str, q: Query, out: &Path) -> anyhow::Result<Option<Found>> {
    let opts = ReaderOptions { start: Start::Oldest, ..ReaderOptions::default() };
    let Ok(mut r) = Reader::open(name, &opts) else { return Ok(None) };
    let format: VideoFormat = *r.format();
    let (num, den) = encoder::rate(&format);
    let half_period = (5e8 * f64::from(den) / f64::from(num.max(1))) as u64;
    let bound = r.slots() * 2 + 16;
    let mut best: Option<(u64, u64, u64, Vec<u8>)> = None; // (distance, id, capture, bytes)
    let mut oldest: Option<u64> = None;
    let mut seen = 0u64;
    while seen < bound {
        let Some(f) = r.try_next() else { break };
        seen += 1;
        let meta = *f.meta();
        oldest.get_or_insert(meta.capture_ns);
        let dist = match q {
            Query::Id(id) if meta.frame_id == id => 0,
            Query::Id(_) => continue,
            Query::Time(t) => meta.capture_ns.abs_diff(t),
        };
        if best.as_ref().is_some_and(|b| b.0 <= dist) {
            continue;
        }
        if let Some(bytes) = ring::frame_to_vec(&f) {
            best = Some((dist, meta.frame_id, meta.capture_ns, bytes));
        }
        if dist == 0 {
            break;
        }
    }
    let Some((dist, frame_id, capture_ns, bytes)) = best else { return Ok(None) };
    if let Query::Time(t) = q
        && (t + half_period < oldest.unwrap_or(0) || dist > 1_000_000_000)
    {
        // Older than the ring (the disk may hold a nearer frame), or no frame within 1 s.
        return Ok(None);
    }
    let is_jpeg_out = image_encoder(out)?.starts_with("jpegenc");
    if format.pixel == PixelFormat::Mjpeg && is_jpeg_out {
        // The producer's own JPEG, byte for byte.
        std::fs::write(out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
    } else {
        let caps = encoder::source_caps(&format).context("unsupported ring format")?;
        let mut buf = gst::Buffer::from_mut_slice(bytes);
        if let Some(b) = buf.get_mut() {
            encoder::add_layout_meta(b, &format)?;
        }
        write_image(buf, &caps, out)?;
    }
    Ok(Some(Found { tier: Tier::Ring, frame_id, capture_ns }))
}

/// Decodes the frame of a segment file and writes it: a key-unit seek to
/// the keyframe at or before it (by the catalog's timestamps), then decoding
/// forward to the frame, matched by its catalogued timestamp.
fn from_disk(cat: &Catalog, loc: &Located, out: &Path) -> anyhow::Result<Found> {
    let path = cat.abs(&loc.segment.path);
    let frames = cat.frames(loc.segment.id)?;
    let target =
        frames.iter().position(|f| f.frame_id == loc.frame.frame_id).context("frame not in its segment's list")?;
    let s = SegmentReader::frame_at(&path, true, &frames, target)?;
    let caps = s.caps().context("decoded frame without caps")?.to_owned();
    let buf = s.buffer_owned().context("decoded frame without data")?;
    drop(s);
    write_image(buf, &caps, out)?;
    Ok(Found {
        tier: Tier::Disk { segment: loc.segment.path.clone(), pts_ns: loc.frame.pts_ns },
        frame_id: loc.frame.frame_id,
        capture_ns: loc.frame.capture_ns,
    })
}

/// The `frame` subcommand.
pub fn frame(dir: &Path, q: Query, out: &Path, name: Option<&str>, disk_only: bool) -> anyhow::Result<Found> {
    gst::init()?;
    image_encoder(out)?;
    let cat = Catalog::open(dir, false)?;
    let stream = match name {
        Some(n) => Some(n.to_string()),
        None => cat.meta("stream")?,
    };
    if !disk_only
        && let Some(s) = &stream
        && let Some(found) = from_ring(s, q, out)?
    {
        return Ok(found);
    }
    let loc = match q {
        Query::Id(id) => cat.find_id(id)?.with_context(|| format!("frame {id} is neither in the ring nor recorded"))?,
        Query::Time(t) => cat
            .find_time(t, Duration::from_secs(1))?
            .with_context(|| format!("no frame within 1 s of {} in the ring or the recording", time::rfc3339(t)))?,
    };
    from_disk(&cat, &loc, out)
}
