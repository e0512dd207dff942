//! One segment file: its GStreamer pipeline, what is known of each frame that
//! reaches the file, closing it, and reading a segment file back (recovery
//! after a crash).
//!
//! Raw streams: `appsrc ! videoconvert ! <h264 enc> ! h264parse ! mp4mux
//! fragment-duration=1000 ! filesink`; MJPEG: `appsrc ! identity ! qtmux
//! fragment-duration=1000 ! filesink` (the JPEG frames as they came; MP4 has
//! no JPEG sample entry, QuickTime has). Fragmented: the header is written
//! first and a self-contained fragment every second, so a file cut short by
//! SIGKILL or a power loss is readable up to its last complete fragment.
//!
//! Each segment has its own pipeline and encoder, so a segment starts with a
//! keyframe, a new segment (rotation, producer restart, format change) is a
//! new pipeline and the frame→segment mapping is exact: the recorder decides
//! it. Timestamps in the file are capture times minus the segment's first
//! capture time, kept strictly increasing.
//!
//! The catalog learns a frame from a pad probe after the encoder (the
//! keyframe flag is known there); frames dropped before it (a full queue) are
//! never catalogued.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use shm_proto::{PixelFormat, VideoFormat};
use shmcast_common::metrics::Counter;

use crate::catalog::FrameRow;
use crate::encoder::{self, Encoder};

/// Fragment length written by the muxer (ms).
pub const FRAGMENT_MS: u32 = 1000;
/// Frames remembered between the push and the probe (more than any queue).
const PENDING_MAX: usize = 4096;
/// How long a closing segment may take to finish.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A frame that reached the muxer, for the catalog.
#[derive(Clone, Copy, Debug)]
pub struct Written {
    /// Catalog id of the segment.
    pub segment: i64,
    /// The frame.
    pub frame: FrameRow,
}

/// How a segment is encoded.
#[derive(Clone, Copy, Debug)]
pub struct EncodeSettings {
    /// H.264 encoder.
    pub encoder: Encoder,
    /// Keyframe interval.
    pub gop: Duration,
    /// kbit/s.
    pub bitrate: u32,
    /// appsrc queue (frames).
    pub queue: u32,
}

/// Codec name stored in the catalog for a format.
pub fn codec(format: &VideoFormat) -> &'static str {
    if format.pixel == PixelFormat::Mjpeg { "jpeg" } else { "h264" }
}

/// File extension for a format.
pub fn extension(format: &VideoFormat) -> &'static str {
    if format.pixel == PixelFormat::Mjpeg { "mov" } else { "mp4" }
}

fn launch(format: &VideoFormat, s: &EncodeSettings, path: &Path) -> anyhow::Result<String> {
    let loc = path.to_str().context("segment path is not UTF-8")?.replace('"', "");
    let src = format!(
        "appsrc name=src is-live=false format=time do-timestamp=false block=false max-buffers={} max-bytes=0 \
         max-time=0 leaky-type=downstream",
        s.queue
    );
    let sink = format!("filesink location=\"{loc}\" buffer-mode=unbuffered sync=false async=false");
    if format.pixel == PixelFormat::Mjpeg {
        // The video pad by name: `identity` accepts anything, so automatic
        // linking could pick the muxer's audio pad.
        return Ok(format!(
            "{src} ! identity name=parse ! mux.video_0 qtmux name=mux fragment-duration={FRAGMENT_MS} ! {sink}"
        ));
    }
    let (num, den) = encoder::rate(format);
    let fps = f64::from(num) / f64::from(den.max(1));
    let gop = encoder::gop_frames(s.gop, fps);
    Ok(format!(
        "{src} ! videoconvert ! video/x-raw,format={} ! {} ! h264parse name=parse ! \
         mp4mux fragment-duration={FRAGMENT_MS} ! {sink}",
        s.encoder.input_format(format.pixel),
        encoder::launch(s.encoder, gop, s.bitrate)
    ))
}

/// The recorder's counters a segment adds to.
#[derive(Clone)]
pub struct Counters {
    /// Frames written but not catalogued (the catalog's channel was full).
    pub unlisted: Counter,
    /// Frames dropped by the full appsrc queue.
    pub dropped: Counter,
}

/// A segment being written.
pub struct SegmentWriter {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    /// Catalog id.
    pub id: i64,
    /// Absolute path.
    pub path: PathBuf,
    /// Capture time of the first frame.
    pub start_ns: u64,
    /// When it was opened.
    pub opened: Instant,
    /// Frames pushed.
    pub pushed: u64,
    /// Frames the full appsrc queue dropped (already counted as dropped).
    pub leaked: u64,
    dropped: Counter,
    queue: u64,
    last_pts: Option<u64>,
    period_ns: u64,
    pending: Arc<Mutex<VecDeque<(u64, u64, u64)>>>,
}

/// Why a running segment failed.
#[derive(Debug)]
pub struct Failure {
    /// The disk (or quota) is full.
    pub no_space: bool,
    /// The error text.
    pub message: String,
}

impl SegmentWriter {
    /// Builds and starts the pipeline writing `path`; every frame that
    /// reaches the muxer goes to `written` (without blocking: when the
    /// channel is full it is counted in `counters.unlisted`).
    pub fn start(
        id: i64,
        path: PathBuf,
        format: &VideoFormat,
        settings: &EncodeSettings,
        start_ns: u64,
        written: SyncSender<Written>,
        counters: Counters,
    ) -> anyhow::Result<SegmentWriter> {
        let Counters { unlisted, dropped } = counters;
        let desc = launch(format, settings, &path)?;
        let pipeline = gst::parse::launch(&desc)
            .with_context(|| format!("cannot build the segment pipeline `{desc}`"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow::anyhow!("segment pipeline is not a pipeline"))?;
        let appsrc = pipeline
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .context("segment pipeline has no appsrc")?;
        let caps = encoder::source_caps(format).with_context(|| format!("cannot record format {format}"))?;
        appsrc.set_caps(Some(&caps));
        let pending: Arc<Mutex<VecDeque<(u64, u64, u64)>>> = Arc::new(Mutex::new(VecDeque::new()));
        let parse = pipeline.by_name("parse").context("segment pipeline has no parser")?;
        let pad = parse.static_pad("src").context("parser has no src pad")?;
        let p = Arc::clone(&pending);
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(buf) = info.buffer()
                && let Some(pts) = running_time(pad, buf)
            {
                let key = !buf.flags().contains(gst::BufferFlags::DELTA_UNIT);
                let found = {
                    let mut q = p.lock().unwrap_or_else(|e| e.into_inner());
                    // Entries older than this buffer were dropped on the way.
                    while q.front().is_some_and(|e| e.0 < pts) {
                        q.pop_front();
                    }
                    match q.front() {
                        Some(&(p0, id, cap)) if p0 == pts => {
                            q.pop_front();
                            Some((id, cap))
                        }
                        _ => None,
                    }
                };
                if let Some((frame_id, capture_ns)) = found {
                    let w = Written { segment: id, frame: FrameRow { frame_id, capture_ns, pts_ns: pts, key } };
                    if written.try_send(w).is_err() {
                        unlisted.inc();
                    }
                }
            }
            gst::PadProbeReturn::Ok
        });
        pipeline.set_state(gst::State::Playing).with_context(|| {
            let _ = pipeline.set_state(gst::State::Null);
            format!("cannot start writing {}", path.display())
        })?;
        let (num, den) = encoder::rate(format);
        let period_ns = (1e9 * f64::from(den) / f64::from(num.max(1))) as u64;
        Ok(SegmentWriter {
            pipeline,
            appsrc,
            id,
            path,
            start_ns,
            opened: Instant::now(),
            pushed: 0,
            leaked: 0,
            dropped,
            queue: u64::from(settings.queue),
            last_pts: None,
            period_ns,
            pending,
        })
    }

    /// Pushes one frame (never blocks: the appsrc drops its oldest buffer
    /// when full). The timestamp is its capture time in the segment, kept
    /// strictly increasing. `buf` must be writable (the only reference);
    /// returns another reference to it, for reuse once the pipeline lets go.
    pub fn push(&mut self, mut buf: gst::Buffer, frame_id: u64, capture_ns: u64) -> gst::Buffer {
        let mut pts = capture_ns.saturating_sub(self.start_ns);
        if let Some(last) = self.last_pts
            && pts <= last
        {
            pts = last + 1_000_000;
        }
        self.last_pts = Some(pts);
        if let Some(b) = buf.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_dts(gst::ClockTime::from_nseconds(pts));
            b.set_duration(gst::ClockTime::from_nseconds(self.period_ns));
        }
        {
            let mut q = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= PENDING_MAX {
                q.pop_front();
            }
            q.push_back((pts, frame_id, capture_ns));
        }
        let keep = buf.clone();
        // A full queue (the encoder or the disk stalled) drops its oldest
        // frame to take this one: counted now, not when the segment closes.
        let full = self.appsrc.current_level_buffers() >= self.queue;
        if self.appsrc.push_buffer(buf).is_ok() {
            self.pushed += 1;
            if full {
                self.leaked += 1;
                // Relaxed: statistics.
                self.dropped.inc();
            }
        }
        keep
    }

    /// An error the pipeline reported, if any.
    pub fn failure(&self) -> Option<Failure> {
        let bus = self.pipeline.bus()?;
        let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
        let gst::MessageView::Error(e) = msg.view() else { return None };
        let err = e.error();
        let no_space =
            err.matches(gst::ResourceError::NoSpaceLeft) || format!("{err} {:?}", e.debug()).contains("No space left");
        Some(Failure { no_space, message: format!("{err}") })
    }

    /// Ends the segment: EOS, waits (bounded) for the muxer to finish, stops
    /// the pipeline. Returns the file size.
    pub fn finish(self) -> u64 {
        let _ = self.appsrc.end_of_stream();
        if let Some(bus) = self.pipeline.bus() {
            let _ = bus.timed_pop_filtered(
                gst::ClockTime::from_nseconds(CLOSE_TIMEOUT.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        sync_file(&self.path);
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Stops at once (after a failure): no EOS, the file keeps its complete fragments.
    pub fn abort(self) -> u64 {
        let _ = self.pipeline.set_state(gst::State::Null);
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Current file size.
    pub fn bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

/// A buffer's timestamp as running time: the encoder shifts its output
/// timestamps (and its segment) by a constant, the running time is what was pushed.
fn running_time(pad: &gst::Pad, buf: &gst::BufferRef) -> Option<u64> {
    let pts = buf.pts()?;
    let ev = pad.sticky_event::<gst::event::Segment>(0)?;
    let seg = ev.segment().downcast_ref::<gst::ClockTime>()?;
    seg.to_running_time(pts).map(gst::ClockTime::nseconds)
}

/// Flushes a file's data to disk (best effort).
pub fn sync_file(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = rustix::fs::fdatasync(&f);
    }
}

/// One sample of a segment file: its timestamp and whether it is a keyframe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Timestamp (ns from the file's start).
    pub pts_ns: u64,
    /// Keyframe.
    pub key: bool,
}

/// Reads every sample header of a segment file (no decoding), up to its last
/// complete fragment. A file that cannot be read at all is an error.
pub fn scan(path: &Path) -> anyhow::Result<Vec<Sample>> {
    let loc = path.to_str().context("path is not UTF-8")?.replace('"', "");
    let desc = format!("filesrc location=\"{loc}\" ! qtdemux ! appsink name=sink sync=false");
    let pipeline =
        gst::parse::launch(&desc)?.downcast::<gst::Pipeline>().map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let sink = pipeline.by_name("sink").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).context("no appsink")?;
    let guard = NullOnDrop(pipeline.clone());
    pipeline.set_state(gst::State::Playing).with_context(|| format!("cannot read {}", path.display()))?;
    let bus = pipeline.bus().context("no bus")?;
    let mut out = Vec::new();
    // Bounded: a day of 240 fps.
    while out.len() < 24 * 3600 * 240 {
        match sink.try_pull_sample(gst::ClockTime::from_seconds(2)) {
            Some(s) => {
                if let Some(b) = s.buffer()
                    && let Some(p) = b.pts()
                {
                    out.push(Sample { pts_ns: p.nseconds(), key: !b.flags().contains(gst::BufferFlags::DELTA_UNIT) });
                }
            }
            None => break,
        }
    }
    if out.is_empty()
        && let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error])
        && let gst::MessageView::Error(e) = msg.view()
    {
        drop(guard);
        bail!("cannot read {}: {}", path.display(), e.error());
    }
    drop(guard);
    Ok(out)
}

/// Sets a pipeline to NULL when dropped.
pub struct NullOnDrop(pub gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}
