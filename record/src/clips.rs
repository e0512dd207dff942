//! Cutting clips from the segments, and the worker that cuts one for each
//! event with pre- and post-roll.
//!
//! A clip is a stream copy: ffmpeg's concat demuxer reads the segment files
//! (in/out points from the catalog) and muxes the compressed frames again,
//! no decoding. It starts at the keyframe at or before `from` (every segment
//! starts with one, so this always exists within the recording) and ends
//! with the first frame at or after `to`: the clip covers the asked range,
//! widened by at most one keyframe interval at the start. A clip that would span a change of size or codec (a producer
//! restart with another format) stops at the change.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use std::process::Command;

use anyhow::{Context, bail};
use tracing::{info, warn};

use crate::catalog::{Catalog, Clip, EventRow};
use crate::config::Config;
use crate::events::EventIn;
use crate::recorder::Metrics;
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

/// Cuts `[from, to]` (capture times, Unix ns) into `out` with ffmpeg's
/// concat demuxer and stream copy (`inpoint`/`outpoint` per segment).
pub fn cut(cat: &Catalog, from: u64, to: u64, out: &Path) -> anyhow::Result<CutInfo> {
    if to < from {
        bail!("the clip ends before it starts");
    }
    let segs = cat.segments_overlapping(from, to)?;
    let Some(first) = segs.first() else {
        bail!("nothing recorded between {} and {}", time::rfc3339(from), time::rfc3339(to));
    };
    let (codec, width, height) = (first.codec.clone(), first.width, first.height);
    let mut list = String::from("ffconcat version 1.0\n");
    let mut info =
        CutInfo { first_ns: 0, last_ns: 0, first_frame: None, last_frame: None, frames: 0, bytes: 0, segments: 0 };
    let n = segs.len();
    for (i, s) in segs.iter().enumerate() {
        if s.codec != codec || s.width != width || s.height != height {
            warn!(segment = %s.path, "format changes here; the clip stops before it");
            break;
        }
        let frames = cat.frames(s.id)?;
        if frames.is_empty() {
            continue;
        }
        // Start: the last keyframe at or before `from` (else the segment's first frame, a keyframe).
        let a =
            if info.frames == 0 { frames.iter().rposition(|f| f.key && f.capture_ns <= from).unwrap_or(0) } else { 0 };
        // End: the first frame at or after `to` (else the segment's last).
        let b = frames.iter().position(|f| f.capture_ns >= to).unwrap_or(frames.len() - 1);
        if b < a {
            continue;
        }
        let path = cat.abs(&s.path);
        let p = path.to_str().context("segment path is not UTF-8")?;
        if p.contains(['\'', '\n', '\r']) {
            bail!("segment path {p:?} cannot be listed for ffmpeg");
        }
        list.push_str(&format!("file '{p}'\n"));
        if a > 0 {
            // Just after the keyframe: stream copy starts at it.
            list.push_str(&format!("inpoint {:.6}\n", (frames[a].pts_ns + 1_000_000) as f64 / 1e9));
        }
        let last_segment = b < frames.len() - 1 || i + 1 == n;
        if b < frames.len() - 1 {
            list.push_str(&format!("outpoint {:.6}\n", (frames[b].pts_ns + 1_000_000) as f64 / 1e9));
        }
        if info.frames == 0 {
            info.first_ns = frames[a].capture_ns;
            info.first_frame = Some(frames[a].frame_id);
        }
        info.frames += (b - a + 1) as u64;
        info.last_ns = frames[b].capture_ns;
        info.last_frame = Some(frames[b].frame_id);
        info.segments += 1;
        if last_segment && b < frames.len() - 1 {
            break;
        }
    }
    if info.frames == 0 {
        bail!("no frames between {} and {}", time::rfc3339(from), time::rfc3339(to));
    }
    let list_path = out.with_extension("ffconcat");
    std::fs::write(&list_path, &list).with_context(|| format!("cannot write {}", list_path.display()))?;
    let res = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i"])
        .arg(&list_path)
        .args(["-map", "0:v", "-c", "copy"])
        .arg(out)
        .output();
    let _ = std::fs::remove_file(&list_path);
    let res = res.context("cannot run ffmpeg (install the ffmpeg package)")?;
    if !res.status.success() {
        let _ = std::fs::remove_file(out);
        let err = String::from_utf8_lossy(&res.stderr);
        bail!("ffmpeg could not cut {}: {}", out.display(), err.lines().last().unwrap_or("no message"));
    }
    info.bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(info)
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
