//! Reading segment files back and writing clips: the compressed samples of a
//! segment (no decoding), its decoded frames from the keyframe at or before a
//! position (a key-unit seek, so a frame deep in a long segment costs at most
//! one keyframe interval of decoding), re-encoding frames with the
//! recorder's own encoder settings, and muxing a finished clip.
//!
//! Frames are matched to the catalog by timestamp: the file stores the
//! catalog's `pts_ns` rounded to its timescale (a third of a millisecond at
//! 30 fps), consecutive frames are at least a millisecond apart, so the
//! catalog frame nearest a sample's timestamp is that sample.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::catalog::FrameRow;
use crate::encoder::Encoder;
use crate::segment::NullOnDrop;

/// Largest difference between a catalogued `pts_ns` and the timestamp read
/// back from the file for the same frame.
pub const PTS_TOLERANCE_NS: u64 = 1_000_000;
/// How long any one sample may take to come out of a pipeline.
const PULL_TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(10);

/// The catalog index of the frame whose `pts_ns` is nearest `pts`, if it is
/// within [`PTS_TOLERANCE_NS`]. `frames` is sorted by `pts_ns`.
pub fn nearest(frames: &[FrameRow], pts: u64) -> Option<usize> {
    let i = frames.partition_point(|f| f.pts_ns < pts);
    let best = [i.checked_sub(1), (i < frames.len()).then_some(i)]
        .into_iter()
        .flatten()
        .min_by_key(|&j| frames[j].pts_ns.abs_diff(pts))?;
    (frames[best].pts_ns.abs_diff(pts) <= PTS_TOLERANCE_NS).then_some(best)
}

/// The position to seek to for the keyframe `frames[k]`: just after its
/// catalogued timestamp (half a millisecond, or half-way to the next frame
/// if that is nearer), so that the file's rounding of the timestamp cannot
/// make a snap-before seek land on the keyframe before it. The decoder
/// clips the keyframe's timestamp to this position (it starts before the
/// seek segment), which is still nearest to the keyframe's own.
fn key_position(frames: &[FrameRow], k: usize) -> u64 {
    let step = match frames.get(k + 1) {
        Some(n) => (n.pts_ns - frames[k].pts_ns) / 2,
        None => PTS_TOLERANCE_NS,
    };
    frames[k].pts_ns + step.min(PTS_TOLERANCE_NS / 2)
}

/// The index of the keyframe at or before `i` (0 when none is catalogued:
/// every segment file starts with a keyframe).
pub fn key_before(frames: &[FrameRow], i: usize) -> usize {
    frames[..=i.min(frames.len().saturating_sub(1))].iter().rposition(|f| f.key).unwrap_or(0)
}

fn path_arg(path: &Path) -> anyhow::Result<String> {
    Ok(path.to_str().context("segment path is not UTF-8")?.replace('"', ""))
}

/// A segment file read in order, from its start or from a keyframe: either
/// its compressed samples or its decoded frames.
pub struct SegmentReader {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    _guard: NullOnDrop,
    path: PathBuf,
}

impl SegmentReader {
    /// Opens `path` and prerolls it. `decode`: decoded raw frames; else the
    /// compressed samples as stored.
    pub fn open(path: &Path, decode: bool) -> anyhow::Result<SegmentReader> {
        let loc = path_arg(path)?;
        let desc = if decode {
            format!("filesrc location=\"{loc}\" ! decodebin ! appsink name=sink sync=false caps=video/x-raw")
        } else {
            format!("filesrc location=\"{loc}\" ! qtdemux ! appsink name=sink sync=false")
        };
        let pipeline =
            gst::parse::launch(&desc)?.downcast::<gst::Pipeline>().map_err(|_| anyhow::anyhow!("not a pipeline"))?;
        let guard = NullOnDrop(pipeline.clone());
        let sink =
            pipeline.by_name("sink").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).context("no appsink")?;
        // Bounded: the reader pulls one sample at a time.
        sink.set_max_buffers(4);
        pipeline.set_state(gst::State::Paused).with_context(|| format!("cannot read {}", path.display()))?;
        let (res, _, _) = pipeline.state(PULL_TIMEOUT);
        if res.is_err() {
            let why = pipeline
                .bus()
                .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]))
                .and_then(|m| match m.view() {
                    gst::MessageView::Error(e) => Some(e.error().to_string()),
                    _ => None,
                })
                .unwrap_or_else(|| "it does not preroll".into());
            bail!("cannot read {}: {why}", path.display());
        }
        Ok(SegmentReader { pipeline, sink, _guard: guard, path: path.to_path_buf() })
    }

    /// The first error the pipeline posted, if any.
    pub fn error(&self) -> Option<String> {
        let msg = self.pipeline.bus()?.pop_filtered(&[gst::MessageType::Error])?;
        match msg.view() {
            gst::MessageView::Error(e) => Some(format!("{} ({:?})", e.error(), e.debug())),
            _ => None,
        }
    }

    /// The caps of what comes out (known after the preroll).
    pub fn caps(&self) -> Option<gst::Caps> {
        self.sink.static_pad("sink")?.current_caps()
    }

    /// Seeks to the keyframe `frames[k]` (a flushing key-unit seek that
    /// snaps to the keyframe at or before the position); reading starts
    /// there. `k == 0` reads from the start of the file, no seek.
    pub fn seek_key(&self, frames: &[FrameRow], k: usize) -> anyhow::Result<()> {
        if k > 0 {
            let pos = gst::ClockTime::from_nseconds(key_position(frames, k));
            self.pipeline
                .seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT | gst::SeekFlags::SNAP_BEFORE, pos)
                .with_context(|| format!("cannot seek in {}", self.path.display()))?;
            let _ = self.pipeline.state(PULL_TIMEOUT);
        }
        Ok(())
    }

    /// Starts delivering (after an optional seek).
    pub fn play(&self) -> anyhow::Result<()> {
        self.pipeline.set_state(gst::State::Playing).with_context(|| format!("cannot read {}", self.path.display()))?;
        Ok(())
    }

    /// The next sample with its timestamp; `None` at the end of the file (or
    /// when nothing comes within the pull timeout).
    pub fn next(&self) -> Option<(u64, gst::Sample)> {
        // Bounded: samples without a timestamp are skipped, at most a few.
        for _ in 0..16 {
            let s = self.sink.try_pull_sample(PULL_TIMEOUT)?;
            if let Some(p) = s.buffer().and_then(|b| b.pts()) {
                return Some((p.nseconds(), s));
            }
        }
        None
    }

    /// Opens `path` reading from the keyframe at or before `frames[i]`, and
    /// returns the reader with the first sample it gave. The seek must land
    /// on that keyframe: qtdemux can start a fragmented file at the sample
    /// after the position instead; then the file is read once more from its
    /// start, without seeking.
    pub fn open_at(
        path: &Path,
        decode: bool,
        frames: &[FrameRow],
        i: usize,
    ) -> anyhow::Result<(SegmentReader, (u64, gst::Sample))> {
        let target = frames.get(i).context("frame index out of range")?.pts_ns;
        let mut k = key_before(frames, i);
        // Bounded: a missed seek, then one more read of a file that gave nothing.
        let mut empty = 0;
        loop {
            let r = SegmentReader::open(path, decode)?;
            r.seek_key(frames, k)?;
            r.play()?;
            let Some((pts, s)) = r.next() else {
                let why = r.error().unwrap_or_else(|| "no error reported".into());
                empty += 1;
                if empty < 2 {
                    tracing::debug!(path = %path.display(), "no frame read ({why}); once more from the start");
                    k = 0;
                    continue;
                }
                bail!("{} gave no frame: {why}", path.display())
            };
            let on_key = nearest(frames, pts) == Some(k)
                && s.buffer().is_some_and(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT));
            if k == 0 || on_key {
                return Ok((r, (pts, s)));
            }
            tracing::debug!(
                path = %path.display(), landed_ns = pts, key_ns = frames[k].pts_ns, target_ns = target,
                "the seek missed the keyframe; reading from the start"
            );
            k = 0;
        }
    }

    /// The decoded (or compressed) sample of `frames[i]`, matched by
    /// timestamp, read from the keyframe at or before it.
    pub fn frame_at(path: &Path, decode: bool, frames: &[FrameRow], i: usize) -> anyhow::Result<gst::Sample> {
        let target = frames.get(i).context("frame index out of range")?.pts_ns;
        let (r, first) = SegmentReader::open_at(path, decode, frames, i)?;
        let mut next = Some(first);
        // Bounded: at most the frames from the first keyframe to the target,
        // and some the catalog does not list.
        for _ in 0..i + 64 {
            let Some((pts, s)) = next.take().or_else(|| r.next()) else { break };
            if pts > target + PTS_TOLERANCE_NS {
                break;
            }
            if nearest(frames, pts) == Some(i) {
                return Ok(s);
            }
        }
        bail!("frame {} not decodable from {}", frames[i].frame_id, path.display())
    }
}

/// The nominal frame rate of a catalogued ring format (`... @ 29.970 fps`)
/// as a fraction: whole rates, NTSC rates (×1000/1001), else thousandths.
pub fn nominal_rate(format: &str) -> Option<gst::Fraction> {
    let fps: f64 = format.split(" @ ").nth(1)?.strip_suffix(" fps")?.trim().parse().ok()?;
    if !(fps.is_finite() && fps > 0.0 && fps < 100_000.0) {
        return None;
    }
    let near = |x: f64| (x - x.round()).abs() < 0.002;
    Some(if near(fps) {
        gst::Fraction::new(fps.round() as i32, 1)
    } else if near(fps * 1.001) {
        gst::Fraction::new((fps * 1.001).round() as i32 * 1000, 1001)
    } else {
        gst::Fraction::new((fps * 1000.0).round() as i32, 1000)
    })
}

/// The first error a pipeline posted, as an error.
fn check_error(pipeline: &gst::Pipeline) -> anyhow::Result<()> {
    let Some(msg) = pipeline.bus().and_then(|b| b.pop_filtered(&[gst::MessageType::Error])) else { return Ok(()) };
    match msg.view() {
        gst::MessageView::Error(e) => bail!("{}", e.error()),
        _ => Ok(()),
    }
}

/// Frames queued in an appsrc at most before [`push_bounded`] waits.
const QUEUE_MAX: u64 = 8;
/// How long [`push_bounded`] waits for the queue to drain.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Pushes into a non-blocking appsrc, waiting (bounded) while more than
/// [`QUEUE_MAX`] frames are queued, and failing on the pipeline's first
/// error: a pipeline that stopped never leaves the caller blocked.
fn push_bounded(pipeline: &gst::Pipeline, src: &gst_app::AppSrc, buf: gst::Buffer) -> anyhow::Result<()> {
    let started = Instant::now();
    while src.current_level_buffers() >= QUEUE_MAX {
        check_error(pipeline)?;
        if started.elapsed() > STALL_TIMEOUT {
            bail!("stalled for {} s", STALL_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    src.push_buffer(buf).map_err(|e| anyhow::anyhow!("refused a frame: {e:?}"))?;
    check_error(pipeline)
}

/// An H.264 encoder with the recorder's settings, fed raw frames and giving
/// back encoded ones (stream-format avc, one access unit per buffer) in order.
pub struct Reencoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
    _guard: NullOnDrop,
    /// Timestamps pushed and not yet returned (the encoder may shift its
    /// own; without B-frames output order is input order).
    pending: VecDeque<u64>,
}

impl Reencoder {
    /// An encoder for raw frames of `caps` (as decoded from a segment).
    /// `rate` replaces the caps' frame rate: the recorder gave its encoder
    /// the producer's nominal rate, which the encoder writes into the
    /// parameter sets; a demuxer's estimate from jittered capture times can
    /// differ (30000/1001 for a 30 fps recording).
    pub fn new(
        encoder: Encoder,
        gop_frames: u64,
        kbps: u32,
        caps: &gst::Caps,
        rate: Option<gst::Fraction>,
    ) -> anyhow::Result<Reencoder> {
        let mut caps = caps.clone();
        if let Some(rate) = rate
            && let Some(st) = caps.make_mut().structure_mut(0)
        {
            st.set("framerate", rate);
        }
        // The recorder hands x264 its NV12 or I420 as it is; the parameter
        // sets do not depend on which, both being 4:2:0.
        let desc = format!(
            "appsrc name=src format=time is-live=false ! videoconvert ! \
             video/x-raw,format=I420 ! {} ! h264parse ! video/x-h264,stream-format=avc,alignment=au ! \
             appsink name=sink sync=false",
            crate::encoder::launch(encoder, gop_frames, kbps)
        );
        let pipeline = gst::parse::launch(&desc)
            .with_context(|| format!("cannot build the encoder `{desc}`"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
        let guard = NullOnDrop(pipeline.clone());
        let src = pipeline.by_name("src").and_then(|e| e.downcast::<gst_app::AppSrc>().ok()).context("no appsrc")?;
        let sink =
            pipeline.by_name("sink").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).context("no appsink")?;
        src.set_caps(Some(&caps));
        pipeline.set_state(gst::State::Playing).context("cannot start the encoder")?;
        Ok(Reencoder { pipeline, src, sink, _guard: guard, pending: VecDeque::new() })
    }

    /// Encodes one frame; its encoded form comes back with timestamp `pts`.
    pub fn push(&mut self, buf: gst::Buffer, pts: u64) -> anyhow::Result<()> {
        let mut buf = buf;
        {
            let b = buf.make_mut();
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_dts(gst::ClockTime::NONE);
        }
        self.pending.push_back(pts);
        push_bounded(&self.pipeline, &self.src, buf).context("encoder")?;
        Ok(())
    }

    /// Encoded frames ready now (`wait`: all of them, after the end).
    fn drain(
        &mut self,
        wait: bool,
        out: &mut dyn FnMut(gst::Buffer, &gst::Caps, u64) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let timeout = if wait { PULL_TIMEOUT } else { gst::ClockTime::ZERO };
        while !self.pending.is_empty() {
            let Some(s) = self.sink.try_pull_sample(timeout) else {
                if wait {
                    bail!("the encoder returned {} frames fewer than it was given", self.pending.len());
                }
                return Ok(());
            };
            let caps = s.caps().context("encoded frame without caps")?.to_owned();
            let buf = s.buffer_owned().context("encoded frame without data")?;
            let Some(pts) = self.pending.pop_front() else { break };
            out(buf, &caps, pts)?;
        }
        Ok(())
    }

    /// Hands what is encoded so far to `out`.
    pub fn take(
        &mut self,
        out: &mut dyn FnMut(gst::Buffer, &gst::Caps, u64) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.drain(false, out)
    }

    /// Ends the stream and hands every remaining frame to `out`.
    pub fn finish(
        mut self,
        out: &mut dyn FnMut(gst::Buffer, &gst::Caps, u64) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let _ = self.src.end_of_stream();
        self.drain(true, out)?;
        let _ = self.pipeline.set_state(gst::State::Null);
        Ok(())
    }
}

/// A clip file being written: compressed frames of one set of caps, with
/// their timestamps, into a (non-fragmented) MP4 or QuickTime file written
/// under a temporary name and renamed when complete.
pub struct ClipMux {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    _guard: NullOnDrop,
    caps: gst::Caps,
    tmp: PathBuf,
    out: PathBuf,
    last_pts: Option<u64>,
    period_ns: u64,
    /// Frames written.
    pub frames: u64,
}

/// Whether two caps describe the same coded stream (same type, size and
/// parameter sets): frames of one can follow frames of the other in one
/// track.
pub fn same_stream(a: &gst::Caps, b: &gst::Caps) -> bool {
    let (Some(a), Some(b)) = (a.structure(0), b.structure(0)) else { return false };
    let int = |s: &gst::StructureRef, f: &str| s.get::<i32>(f).ok();
    let text = |s: &gst::StructureRef, f: &str| s.get::<String>(f).ok();
    let data = |s: &gst::StructureRef| {
        s.get::<gst::Buffer>("codec_data").ok().and_then(|b| b.map_readable().ok().map(|m| m.as_slice().to_vec()))
    };
    a.name() == b.name()
        && int(a, "width") == int(b, "width")
        && int(a, "height") == int(b, "height")
        && text(a, "stream-format") == text(b, "stream-format")
        && data(a) == data(b)
}

impl ClipMux {
    /// Starts writing `out` (through `out.partial`) for frames of `caps`.
    pub fn new(out: &Path, caps: &gst::Caps, period_ns: u64) -> anyhow::Result<ClipMux> {
        let jpeg = caps.structure(0).is_some_and(|s| s.name() == "image/jpeg");
        let mut tmp = out.as_os_str().to_owned();
        tmp.push(".partial");
        let tmp = PathBuf::from(tmp);
        let loc = path_arg(&tmp)?;
        // The video pad by name: with the caps set after parsing, automatic
        // linking could pick the muxer's audio pad.
        let mux = if jpeg { "qtmux" } else { "mp4mux" };
        let desc = format!("appsrc name=src format=time ! mux.video_0 {mux} name=mux ! filesink location=\"{loc}\"");
        let pipeline =
            gst::parse::launch(&desc)?.downcast::<gst::Pipeline>().map_err(|_| anyhow::anyhow!("not a pipeline"))?;
        let guard = NullOnDrop(pipeline.clone());
        let src = pipeline.by_name("src").and_then(|e| e.downcast::<gst_app::AppSrc>().ok()).context("no appsrc")?;
        src.set_caps(Some(caps));
        pipeline.set_state(gst::State::Playing).with_context(|| format!("cannot write {}", tmp.display()))?;
        Ok(ClipMux {
            pipeline,
            src,
            _guard: guard,
            caps: caps.clone(),
            tmp,
            out: out.to_path_buf(),
            last_pts: None,
            period_ns: period_ns.max(1),
            frames: 0,
        })
    }

    /// The caps of the clip's frames.
    pub fn caps(&self) -> &gst::Caps {
        &self.caps
    }

    /// Appends a compressed frame at `pts` (ns from the clip's start; kept
    /// strictly increasing).
    pub fn push(&mut self, buf: gst::Buffer, pts: u64) -> anyhow::Result<()> {
        let mut pts = pts;
        if let Some(last) = self.last_pts
            && pts <= last
        {
            pts = last + 1_000_000;
        }
        self.last_pts = Some(pts);
        let mut buf = buf;
        {
            let b = buf.make_mut();
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_dts(gst::ClockTime::from_nseconds(pts));
            b.set_duration(gst::ClockTime::from_nseconds(self.period_ns));
            b.unset_flags(gst::BufferFlags::DISCONT);
        }
        push_bounded(&self.pipeline, &self.src, buf).context("clip muxer")?;
        self.frames += 1;
        Ok(())
    }

    /// Finishes the file (EOS, the muxer writes its index) and renames it
    /// into place; returns its size.
    pub fn finish(self) -> anyhow::Result<u64> {
        let _ = self.src.end_of_stream();
        let bus = self.pipeline.bus().context("no bus")?;
        let msg =
            bus.timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Eos, gst::MessageType::Error]);
        let _ = self.pipeline.set_state(gst::State::Null);
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => {}
            Some(gst::MessageView::Error(e)) => {
                let _ = std::fs::remove_file(&self.tmp);
                bail!("cannot write {}: {}", self.out.display(), e.error());
            }
            _ => {
                let _ = std::fs::remove_file(&self.tmp);
                bail!("cannot write {}: the muxer did not finish", self.out.display());
            }
        }
        crate::segment::sync_file(&self.tmp);
        std::fs::rename(&self.tmp, &self.out)
            .with_context(|| format!("cannot rename {} to {}", self.tmp.display(), self.out.display()))?;
        Ok(std::fs::metadata(&self.out).map(|m| m.len()).unwrap_or(0))
    }

    /// Gives up: removes the partial file.
    pub fn abort(self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let _ = std::fs::remove_file(&self.tmp);
    }
}
