//! Cutting clips from the segments, and the worker that cuts one for each
//! event with pre- and post-roll.
//!
//! A clip is a stream copy: the compressed samples are read from the segment
//! files (`qtdemux`, no decoding) and muxed again with new timestamps (capture
//! time minus the clip's first capture time). It starts at the keyframe at or
//! before `from` (every segment starts with one, so this always exists within
//! the recording) and ends with the first frame at or after `to`: the clip
//! covers the asked range, widened by at most one keyframe interval at the
//! start. A clip that would span a change of size or codec (a producer
//! restart with another format) stops at the change.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tracing::{info, warn};

use crate::catalog::{Catalog, Clip, EventRow, FrameRow};
use crate::config::Config;
use crate::events::EventIn;
use crate::recorder::Metrics;
use crate::segment::NullOnDrop;
use crate::time;

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
    /// File size.
    pub bytes: u64,
    /// Segments read.
    pub segments: usize,
}

fn nearest(frames: &[FrameRow], pts: u64) -> Option<&FrameRow> {
    let i = frames.partition_point(|f| f.pts_ns < pts);
    let a = i.checked_sub(1).and_then(|j| frames.get(j));
    let b = frames.get(i);
    match (a, b) {
        (Some(a), Some(b)) => Some(if pts - a.pts_ns <= b.pts_ns - pts { a } else { b }),
        (x, y) => x.or(y),
    }
}

/// Cuts `[from, to]` (capture times, Unix ns) into `out`.
pub fn cut(cat: &Catalog, from: u64, to: u64, out: &Path) -> anyhow::Result<CutInfo> {
    if to < from {
        bail!("the clip ends before it starts");
    }
    gst::init()?;
    let segs = cat.segments_overlapping(from, to)?;
    let Some(first) = segs.first() else {
        bail!("nothing recorded between {} and {}", time::rfc3339(from), time::rfc3339(to));
    };
    let (codec, width, height) = (first.codec.clone(), first.width, first.height);
    let loc = out.to_str().context("output path is not UTF-8")?.replace('"', "");
    let mux = if codec == "jpeg" { "qtmux" } else { "mp4mux" };
    let desc = format!(
        "appsrc name=src format=time is-live=false block=true max-buffers=64 max-bytes=0 max-time=0 ! {mux} ! \
         filesink location=\"{loc}\" sync=false"
    );
    let pipeline =
        gst::parse::launch(&desc)?.downcast::<gst::Pipeline>().map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let guard = NullOnDrop(pipeline.clone());
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .context("no appsrc")?;
    pipeline.set_state(gst::State::Playing).context("cannot start the clip writer")?;
    let bus = pipeline.bus().context("no bus")?;
    let mut info = CutInfo {
        first_ns: 0,
        last_ns: 0,
        first_frame: None,
        last_frame: None,
        frames: 0,
        bytes: 0,
        segments: 0,
    };
    let mut t0: Option<u64> = None;
    let mut last_out: Option<u64> = None;
    let mut caps_set: Option<gst::Caps> = None;
    let mut done = false;
    for s in &segs {
        if done {
            break;
        }
        if s.codec != codec || s.width != width || s.height != height {
            warn!(segment = %s.path, "format changes here; the clip stops before it");
            break;
        }
        let frames = cat.frames(s.id)?;
        if frames.is_empty() {
            continue;
        }
        // Start: the last keyframe at or before `from` (else the segment's first frame).
        let start_pts = if t0.is_none() {
            frames.iter().filter(|f| f.key && f.capture_ns <= from).map(|f| f.pts_ns).next_back().unwrap_or(0)
        } else {
            0
        };
        // End: the first frame at or after `to` (else the segment's last).
        let end_pts =
            frames.iter().find(|f| f.capture_ns >= to).map(|f| f.pts_ns).unwrap_or(u64::MAX);
        let path = cat.abs(&s.path);
        let ploc = path.to_str().context("segment path is not UTF-8")?.replace('"', "");
        let input = gst::parse::launch(&format!(
            "filesrc location=\"{ploc}\" ! qtdemux ! appsink name=sink sync=false max-buffers=64"
        ))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
        let in_guard = NullOnDrop(input.clone());
        let sink = input
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .context("no appsink")?;
        if input.set_state(gst::State::Playing).is_err() {
            warn!(segment = %s.path, "cannot read segment; skipped");
            continue;
        }
        info.segments += 1;
        let mut started = t0.is_some();
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(5)) {
            let Some(buf) = sample.buffer() else { continue };
            let Some(pts) = buf.pts().map(gst::ClockTime::nseconds) else { continue };
            if pts + 500_000 < start_pts {
                continue;
            }
            let key = !buf.flags().contains(gst::BufferFlags::DELTA_UNIT);
            if !started {
                if !key {
                    continue;
                }
                started = true;
            }
            if let Some(c) = sample.caps() {
                match &caps_set {
                    None => {
                        src.set_caps(Some(&c.to_owned()));
                        caps_set = Some(c.to_owned());
                    }
                    Some(prev) if prev.as_ref() != c && key => {
                        // A new encoder's parameter sets: a new sample description.
                        src.set_caps(Some(&c.to_owned()));
                        caps_set = Some(c.to_owned());
                    }
                    Some(_) => {}
                }
            }
            let capture = nearest(&frames, pts).map_or(s.start_ns + pts, |f| f.capture_ns);
            let row = nearest(&frames, pts).copied();
            let base = *t0.get_or_insert(capture);
            let mut out_pts = capture.saturating_sub(base);
            if let Some(l) = last_out
                && out_pts <= l
            {
                out_pts = l + 1_000_000;
            }
            last_out = Some(out_pts);
            let mut b = buf.copy();
            {
                let bm = b.make_mut();
                bm.set_pts(gst::ClockTime::from_nseconds(out_pts));
                bm.set_dts(gst::ClockTime::from_nseconds(out_pts));
            }
            if src.push_buffer(b).is_err() {
                bail!("the clip writer stopped: {}", pipeline_error(&bus).unwrap_or_default());
            }
            if info.frames == 0 {
                info.first_ns = capture;
                info.first_frame = row.map(|r| r.frame_id);
            }
            info.frames += 1;
            info.last_ns = capture;
            info.last_frame = row.map(|r| r.frame_id);
            if pts + 500_000 >= end_pts {
                done = true;
                break;
            }
        }
        drop(in_guard);
    }
    let _ = src.end_of_stream();
    let msg = bus.timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Eos, gst::MessageType::Error]);
    if let Some(m) = msg
        && let gst::MessageView::Error(e) = m.view()
    {
        bail!("cannot write {}: {}", out.display(), e.error());
    }
    drop(guard);
    if info.frames == 0 {
        let _ = std::fs::remove_file(out);
        bail!("no frames between {} and {}", time::rfc3339(from), time::rfc3339(to));
    }
    info.bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(info)
}

fn pipeline_error(bus: &gst::Bus) -> Option<String> {
    let m = bus.pop_filtered(&[gst::MessageType::Error])?;
    match m.view() {
        gst::MessageView::Error(e) => Some(e.error().to_string()),
        _ => None,
    }
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
                    m.events_dropped.fetch_add(1, Ordering::Relaxed);
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
            let open = cat
                .segments_overlapping(p.from, p.to)
                .map(|s| s.iter().any(|s| s.state == "open"))
                .unwrap_or(false);
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
                method: "copy".into(),
            };
            if let Err(err) = cat.insert_clip(&clip) {
                warn!("clips: cannot catalogue {rel}: {err:#}");
                let _ = std::fs::remove_file(&out);
                return;
            }
            // Relaxed: statistics.
            m.clips.fetch_add(1, Ordering::Relaxed);
            info!(
                clip = %rel, kind = %e.kind, frames = c.frames, first_frame = ?c.first_frame, last_frame = ?c.last_frame,
                ms = started.elapsed().as_millis() as u64, "event clip cut"
            );
        }
        Err(err) => warn!(kind = %e.kind, "clips: no clip for the event at {}: {err:#}", time::rfc3339(e.start_ns)),
    }
}
