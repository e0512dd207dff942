//! Cutting clips from the segments, and the worker that cuts one for each
//! event with pre- and post-roll.
//!
//! A clip is frame-exact and covers its interval: it starts with the last
//! catalogued frame captured at or before `from` (the picture on screen at
//! that instant) and ends with the first one captured at or after `to`.
//! Frames from a keyframe on are stream-copied (the compressed samples of
//! the segment files, muxed again, no decoding); the frames before the first
//! keyframe of the range (the head, less than one keyframe interval) are
//! decoded from the keyframe before them and re-encoded with the recorder's
//! own encoder settings, which give the same parameter sets (SPS/PPS) as the
//! segments, so head and copy are one H.264 stream in one track. The tail
//! needs no re-encoding: the segments have no B-frames, so frames from a
//! keyframe up to any frame decode without the frames after them. When the
//! re-encoded head's parameter sets differ from the segment's (a recording
//! made with other settings), or two segments of the range differ, the
//! whole clip is re-encoded instead. MJPEG clips are all copy. A clip that
//! would span a change of size or codec (a producer restart with another
//! format) stops at the change.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gstreamer as gst;
use tracing::{info, warn};

use crate::catalog::{Catalog, Clip, EventRow, FrameRow, Segment};
use crate::config::Config;
use crate::encoder::Encoding;
use crate::events::EventIn;
use crate::media::{self, ClipMux, PTS_TOLERANCE_NS, Reencoder, SegmentReader};
use crate::recorder::Metrics;
use crate::time;

/// How a clip was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Every frame stream-copied (the range starts on a keyframe, or MJPEG).
    Copy,
    /// The head before the first keyframe re-encoded, the rest copied.
    Edges,
    /// Every frame re-encoded (the parameter sets could not be matched).
    Reencode,
}

impl Method {
    /// The name stored in the catalog.
    pub const fn name(self) -> &'static str {
        match self {
            Method::Copy => "copy",
            Method::Edges => "copy+head",
            Method::Reencode => "reencode",
        }
    }
}

/// What a cut produced.
#[derive(Clone, Debug)]
pub struct CutInfo {
    /// Capture time of the first frame.
    pub first_ns: u64,
    /// Capture time of the last frame.
    pub last_ns: u64,
    /// First frame id.
    pub first_frame: Option<u64>,
    /// Last frame id.
    pub last_frame: Option<u64>,
    /// Frames written.
    pub frames: u64,
    /// Frames re-encoded.
    pub reencoded: u64,
    /// File size.
    pub bytes: u64,
    /// Segments read.
    pub segments: usize,
    /// How it was made.
    pub method: Method,
}

/// The frames of one segment in the clip: `frames[a..=b]`.
struct Part {
    seg: Segment,
    frames: Vec<FrameRow>,
    a: usize,
    b: usize,
}

/// Frames of one clip part whose parameter sets differ from the clip's so far.
#[derive(Debug)]
struct Mismatch;

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the H.264 parameter sets differ between parts of the clip")
    }
}

impl std::error::Error for Mismatch {}

fn plan(cat: &Catalog, from: u64, to: u64) -> anyhow::Result<Vec<Part>> {
    let segs = cat.segments_overlapping(from, to)?;
    let Some(first) = segs.first() else {
        bail!("nothing recorded between {} and {}", time::rfc3339(from), time::rfc3339(to));
    };
    let (codec, width, height) = (first.codec.clone(), first.width, first.height);
    let mut parts = Vec::new();
    for s in segs {
        if s.codec != codec || s.width != width || s.height != height {
            if !parts.is_empty() {
                warn!(segment = %s.path, "format changes here; the clip stops before it");
                break;
            }
            continue;
        }
        let frames = cat.frames(s.id)?;
        let Some(a) = frames.iter().position(|f| f.capture_ns >= from) else { continue };
        let Some(b) = frames.iter().rposition(|f| f.capture_ns <= to) else { continue };
        if b < a {
            continue;
        }
        let p = cat.abs(&s.path);
        if !p.is_file() {
            bail!("segment {} is catalogued but its file is missing", p.display());
        }
        parts.push(Part { seg: s, frames, a, b });
    }
    if parts.is_empty() {
        bail!("no frames between {} and {}", time::rfc3339(from), time::rfc3339(to));
    }
    Ok(parts)
}

/// Cuts `[from, to]` (capture times, Unix ns) into `out` (MP4; `.mov` for
/// MJPEG), frame-exact: see the module documentation.
pub fn cut(cat: &Catalog, from: u64, to: u64, out: &Path) -> anyhow::Result<CutInfo> {
    gst::init().context("cannot initialise GStreamer")?;
    if to < from {
        bail!("the clip ends before it starts");
    }
    let (from, to) = cat.covering(from, to)?;
    let parts = plan(cat, from, to)?;
    let encoding = cat.meta("encoding")?.as_deref().and_then(Encoding::from_meta).unwrap_or_default();
    if parts[0].seg.codec == "jpeg" {
        return write(cat, &parts, out, Method::Copy, &encoding);
    }
    match write(cat, &parts, out, Method::Edges, &encoding) {
        Err(e) if e.downcast_ref::<Mismatch>().is_some() => {
            info!(clip = %out.display(), "{e}: re-encoding the whole clip");
            write(cat, &parts, out, Method::Reencode, &encoding)
        }
        r => r,
    }
}

/// Where compressed frames go: the clip file, created with the caps of the
/// first frame; frames of other parameter sets are a [`Mismatch`].
struct Sink<'a> {
    out: &'a Path,
    mux: Option<ClipMux>,
    period_ns: u64,
}

impl Sink<'_> {
    fn push(&mut self, buf: gst::Buffer, caps: &gst::Caps, pts: u64) -> anyhow::Result<()> {
        let mux = match &mut self.mux {
            Some(m) => m,
            None => self.mux.insert(ClipMux::new(self.out, caps, self.period_ns)?),
        };
        if !media::same_stream(mux.caps(), caps) {
            return Err(Mismatch.into());
        }
        mux.push(buf, pts)
    }
}

fn write(cat: &Catalog, parts: &[Part], out: &Path, mode: Method, enc: &Encoding) -> anyhow::Result<CutInfo> {
    let (p0, pn) = (&parts[0], &parts[parts.len() - 1]);
    let (first, last) = (p0.frames[p0.a], pn.frames[pn.b]);
    let t0 = first.capture_ns;
    let n: u64 = parts.iter().map(|p| (p.b - p.a + 1) as u64).sum();
    let period_ns = if n > 1 { (last.capture_ns - first.capture_ns) / (n - 1) } else { 33_333_333 };
    let mut sink = Sink { out, mux: None, period_ns: period_ns.max(1_000_000) };
    let mut info = CutInfo {
        first_ns: first.capture_ns,
        last_ns: last.capture_ns,
        first_frame: Some(first.frame_id),
        last_frame: Some(last.frame_id),
        frames: 0,
        reencoded: 0,
        bytes: 0,
        segments: parts.len(),
        method: mode,
    };
    let mut full: Option<Reencoder> = None;
    let res = (|| -> anyhow::Result<()> {
        for p in parts {
            let reencode_to = match mode {
                Method::Copy => p.a,
                Method::Edges => (p.a..=p.b).find(|&i| p.frames[i].key).unwrap_or(p.b + 1),
                Method::Reencode => p.b + 1,
            };
            if reencode_to > p.a {
                let mut head = None;
                let enc_slot = if mode == Method::Reencode { &mut full } else { &mut head };
                info.reencoded += reencode(cat, p, reencode_to, t0, enc, enc_slot, &mut sink)?;
                if let Some(h) = head {
                    h.finish(&mut |b, c, t| sink.push(b, c, t))?;
                }
            }
            if reencode_to <= p.b {
                copy(cat, p, reencode_to, t0, &mut sink)?;
            }
        }
        if let Some(e) = full.take() {
            e.finish(&mut |b, c, t| sink.push(b, c, t))?;
        }
        Ok(())
    })();
    match (res, sink.mux) {
        (Ok(()), Some(m)) => {
            info.frames = m.frames;
            if mode == Method::Edges && info.reencoded == 0 {
                info.method = Method::Copy;
            }
            info.bytes = m.finish()?;
            if info.frames != n {
                warn!(clip = %out.display(), written = info.frames, catalogued = n, "the files held other frames than catalogued");
            }
            Ok(info)
        }
        (Ok(()), None) => bail!("no frame of {} could be read", out.display()),
        (Err(e), m) => {
            if let Some(m) = m {
                m.abort();
            }
            Err(e)
        }
    }
}

/// The clip timestamp of a file timestamp: the catalogued frame's capture
/// time (or, for a frame the catalog does not list, the file timestamp
/// shifted like its neighbours), from the clip's first frame.
fn clip_pts(p: &Part, pts: u64, t0: u64) -> u64 {
    let capture = match media::nearest(&p.frames, pts) {
        Some(j) => p.frames[j].capture_ns,
        None => (pts + p.frames[0].capture_ns).saturating_sub(p.frames[0].pts_ns),
    };
    capture.saturating_sub(t0)
}

/// Decodes `frames[a..end]` of a part (from the keyframe before `a`) and
/// encodes them into `slot`'s encoder (created on the first frame).
fn reencode(
    cat: &Catalog,
    p: &Part,
    end: usize,
    t0: u64,
    enc: &Encoding,
    slot: &mut Option<Reencoder>,
    sink: &mut Sink<'_>,
) -> anyhow::Result<u64> {
    let path = cat.abs(&p.seg.path);
    let (lo, hi) = (p.frames[p.a].pts_ns.saturating_sub(PTS_TOLERANCE_NS), p.frames[end - 1].pts_ns + PTS_TOLERANCE_NS);
    let (r, first) = SegmentReader::open_at(&path, true, &p.frames, p.a)?;
    let mut next = Some(first);
    let k = media::key_before(&p.frames, p.a);
    let mut n = 0u64;
    // Bounded: frames from the keyframe to the end of the range, and some
    // the catalog does not list.
    for _ in 0..(end - k + 64) {
        let Some((pts, s)) = next.take().or_else(|| r.next()) else { break };
        if pts > hi {
            break;
        }
        if pts < lo {
            continue;
        }
        let buf = s.buffer_owned().context("decoded frame without data")?;
        let e = match slot {
            Some(e) => e,
            None => {
                let caps = s.caps().context("decoded frame without caps")?;
                let fps = caps
                    .structure(0)
                    .and_then(|st| st.get::<gst::Fraction>("framerate").ok())
                    .filter(|f| f.numer() > 0 && f.denom() > 0)
                    .map_or(30.0, |f| f64::from(f.numer()) / f64::from(f.denom()));
                let rate = media::nominal_rate(&p.seg.format);
                let fps = rate.map_or(fps, |r| f64::from(r.numer()) / f64::from(r.denom()));
                slot.insert(Reencoder::new(enc.encoder, enc.gop_frames(fps), enc.bitrate, &caps.to_owned(), rate)?)
            }
        };
        e.push(buf, clip_pts(p, pts, t0))?;
        e.take(&mut |b, c, t| sink.push(b, c, t))?;
        n += 1;
    }
    Ok(n)
}

/// Stream-copies the samples of `frames[start..=b]` of a part (`start` is a
/// keyframe, or any frame of an MJPEG segment).
fn copy(cat: &Catalog, p: &Part, start: usize, t0: u64, sink: &mut Sink<'_>) -> anyhow::Result<()> {
    let path = cat.abs(&p.seg.path);
    let (lo, hi) = (p.frames[start].pts_ns.saturating_sub(PTS_TOLERANCE_NS), p.frames[p.b].pts_ns + PTS_TOLERANCE_NS);
    let (r, first) = SegmentReader::open_at(&path, false, &p.frames, start)?;
    let caps = r.caps().with_context(|| format!("{} has no video track", path.display()))?;
    let mut next = Some(first);
    for _ in 0..(p.b + 64) {
        let Some((pts, s)) = next.take().or_else(|| r.next()) else { break };
        if pts > hi {
            break;
        }
        if pts < lo {
            continue;
        }
        let caps = s.caps().map_or_else(|| caps.clone(), |c| c.to_owned());
        let buf = s.buffer_owned().context("sample without data")?;
        sink.push(buf, &caps, clip_pts(p, pts, t0))?;
    }
    Ok(())
}

struct Pending {
    event: EventIn,
    event_id: Option<i64>,
    from: u64,
    to: u64,
    ready_ns: u64,
    asked_rotation: Option<Instant>,
}

/// Events pending at most (older ones are dropped, counted).
const PENDING_MAX: usize = 1024;
/// The recorder's latency from capture to the catalog, allowed before cutting.
const SETTLE: Duration = Duration::from_millis(1500);
/// How long to wait for the segment holding an event's end to be closed.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// Cuts a clip for each event once its post-roll is recorded.
pub fn event_worker(cfg: Config, rx: Receiver<EventIn>, rotate: Arc<AtomicBool>, stop: Arc<AtomicBool>, m: Metrics) {
    let cat = match Catalog::open(&cfg.dir, true) {
        Ok(c) => c,
        Err(e) => {
            warn!("clips: {e:#}; no event clips");
            return;
        }
    };
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(e) => {
                let row = EventRow {
                    source: e.source.to_string(),
                    kind: e.kind.clone(),
                    start_ns: e.start_ns,
                    end_ns: e.end_ns,
                    start_frame: e.start_frame,
                    end_frame: e.end_frame,
                    received_ns: shm_proto::os::realtime_ns(),
                    json: e.json.clone(),
                };
                let event_id = cat.insert_event(&row).map_err(|err| warn!("clips: cannot record event: {err:#}")).ok();
                let from = e.start_ns.saturating_sub(cfg.pre.as_nanos() as u64);
                let to = e.end_ns.saturating_add(cfg.post.as_nanos() as u64);
                if pending.len() >= PENDING_MAX {
                    pending.pop_front();
                    // Relaxed: statistics.
                    m.events_dropped.inc();
                }
                pending.push_back(Pending {
                    event: e,
                    event_id,
                    from,
                    to,
                    ready_ns: to + SETTLE.as_nanos() as u64,
                    asked_rotation: None,
                });
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if pending.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let now = shm_proto::os::realtime_ns();
        let mut i = 0;
        while i < pending.len() {
            let p = &mut pending[i];
            if now < p.ready_ns {
                i += 1;
                continue;
            }
            // The range must be in closed segments: ask for a rotation once
            // and wait (bounded) for the closing to be catalogued.
            let open =
                cat.segments_overlapping(p.from, p.to).map(|s| s.iter().any(|s| s.state == "open")).unwrap_or(false);
            let waited = p.asked_rotation.is_some_and(|t| t.elapsed() > CLOSE_WAIT);
            if open && !waited {
                if p.asked_rotation.is_none() {
                    rotate.store(true, Ordering::Relaxed);
                    p.asked_rotation = Some(Instant::now());
                }
                i += 1;
                continue;
            }
            let Some(p) = pending.remove(i) else { break };
            n += 1;
            cut_event(&cat, &cfg, &p, n, &m);
        }
    }
}

fn cut_event(cat: &Catalog, cfg: &Config, p: &Pending, n: u64, m: &Metrics) {
    let e = &p.event;
    let frame = e.start_frame.map_or(String::new(), |f| format!("-{f}"));
    let rel = format!("clips/{}-{}-{}{frame}-{n}.mp4", cfg.name, time::file_stamp(e.start_ns), e.kind);
    let rel = match cat.segments_overlapping(p.from, p.to) {
        Ok(s) if s.first().is_some_and(|s| s.codec == "jpeg") => rel.replace(".mp4", ".mov"),
        _ => rel,
    };
    let out: PathBuf = cat.abs(&rel);
    let started = Instant::now();
    match cut(cat, p.from, p.to, &out) {
        Ok(c) => {
            let clip = Clip {
                id: 0,
                path: rel.clone(),
                event_id: p.event_id,
                from_ns: p.from,
                to_ns: p.to,
                first_ns: c.first_ns,
                last_ns: c.last_ns,
                first_frame: c.first_frame,
                last_frame: c.last_frame,
                frames: c.frames,
                bytes: c.bytes,
                created_ns: shm_proto::os::realtime_ns(),
                method: c.method.name().into(),
            };
            if let Err(err) = cat.insert_clip(&clip) {
                warn!("clips: cannot catalogue {rel}: {err:#}");
                let _ = std::fs::remove_file(&out);
                return;
            }
            // Relaxed: statistics.
            m.clips.inc();
            info!(
                clip = %rel, kind = %e.kind, frames = c.frames, reencoded = c.reencoded, method = c.method.name(), first_frame = ?c.first_frame, last_frame = ?c.last_frame,
                ms = started.elapsed().as_millis() as u64, "event clip cut"
            );
        }
        Err(err) => warn!(kind = %e.kind, "clips: no clip for the event at {}: {err:#}", time::rfc3339(e.start_ns)),
    }
}
