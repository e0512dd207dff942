//! `gst:'<pipeline>'`: any GStreamer pipeline, converted and scaled to the
//! requested format and size, delivered into an `appsink`, and copied once
//! into a ring slot per sample (honouring GStreamer's plane strides).
//!
//! Timestamps: the capture time of a sample is its buffer PTS converted to
//! running time, plus the pipeline base time, giving the pipeline clock's time
//! of capture; it is mapped to `CLOCK_REALTIME` through the offset between the
//! pipeline clock and the real-time clock measured when the sample arrives.
//! If any part is missing (no PTS, no clock), or the result lies in the future
//! (`--fps 0` runs unsynchronised, ahead of the clock), the arrival time is used.
#![forbid(unsafe_code)]

use std::sync::atomic::AtomicBool;

use anyhow::{Context, anyhow, bail};
use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::VideoFrameExt;
use shm_proto::{FLAG_DISCONT, FrameMeta, VideoFormat};

use crate::config::SourceConfig;
use crate::output::{Output, check_name_free};

/// Name of our appsink in the pipeline.
const SINK: &str = "shmcast_sink";

/// The full pipeline description: the user's part plus conversion to the
/// requested caps and our appsink.
pub fn describe(c: &SourceConfig, pipeline: &str) -> String {
    let (w, h) = (c.width, c.height);
    let rate = match c.fps {
        Some(n) if n > 0 => format!(" ! videorate ! video/x-raw,framerate={n}/1"),
        _ => String::new(),
    };
    let tail = match c.pixel.gst_name() {
        Some(f) => format!("video/x-raw,format={f},width={w},height={h}"),
        None => format!("video/x-raw,width={w},height={h} ! jpegenc ! image/jpeg,width={w},height={h}"),
    };
    // sync=false for --fps 0: deliver as fast as the pipeline produces.
    let sync = !matches!(c.fps, Some(0));
    format!(
        "{}{rate} ! videoconvert ! videoscale ! {tail} ! appsink name={SINK} sync={sync} max-buffers=4 drop=false enable-last-sample=false",
        pipeline.trim()
    )
}

/// Sets the pipeline to Null however we leave.
struct NullOnDrop(gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// The first error (or EOS) waiting on the bus, as a one-line message.
fn bus_error(bus: &gst::Bus) -> Option<String> {
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Warning]) {
        match msg.view() {
            gst::MessageView::Error(e) => {
                let src = msg.src().map(|s| s.name().to_string()).unwrap_or_else(|| "pipeline".into());
                if let Some(d) = e.debug() {
                    tracing::debug!(debug = %d, "gstreamer error details");
                }
                return Some(format!("{src}: {}", e.error().to_string().replace('\n', " ")));
            }
            gst::MessageView::Warning(w) => {
                tracing::warn!(warning = %w.error(), "gstreamer warning");
            }
            _ => {}
        }
    }
    None
}

/// Runs the gst source until EOS (unless looping), `--frames`, or `stop`.
pub fn run(c: &SourceConfig, pipeline: &str, looping: bool, stop: &AtomicBool) -> anyhow::Result<()> {
    gst::init().context("cannot initialise GStreamer")?;
    check_name_free(&c.name, &c.create)?;
    let desc = describe(c, pipeline);
    let element = gst::parse::launch(&desc).map_err(|e| anyhow!("cannot parse pipeline {pipeline:?}: {e}"))?;
    tracing::info!(pipeline = %desc, "starting GStreamer pipeline");
    let pipeline = element
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("pipeline {pipeline:?} did not parse into a pipeline"))?;
    let pipeline = NullOnDrop(pipeline);
    let p = &pipeline.0;
    let sink = p
        .by_name(SINK)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| anyhow!("internal: appsink missing from the pipeline"))?;
    let bus = p.bus().context("pipeline has no bus")?;
    if p.set_state(gst::State::Playing).is_err() {
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(2), &[gst::MessageType::Error])
            .and_then(|m| match m.view() {
                gst::MessageView::Error(e) => Some(format!(
                    "{}: {}",
                    m.src().map(|s| s.name().to_string()).unwrap_or_default(),
                    e.error().to_string().replace('\n', " ")
                )),
                _ => None,
            })
            .unwrap_or_else(|| "state change to PLAYING failed".into());
        bail!("pipeline failed to start: {msg}");
    }

    let mut out: Option<Output> = None;
    let mut info: Option<gst_video::VideoInfo> = None;
    let mut frame_id = 0u64;
    let mut discont = false;
    let (mut restarts, mut frames_at_restart) = (0u32, 0u64);
    let timeout = gst::ClockTime::from_mseconds(100);
    loop {
        if shmcast_common::should_stop(stop) || c.frames.is_some_and(|n| frame_id >= n) {
            break;
        }
        if let Some(msg) = bus_error(&bus) {
            bail!("pipeline error: {msg}");
        }
        let Some(sample) = sink.try_pull_sample(timeout) else {
            if sink.is_eos() {
                if let Some(msg) = bus_error(&bus) {
                    bail!("pipeline error: {msg}");
                }
                if !looping {
                    tracing::info!(frames = frame_id, "end of stream");
                    break;
                }
                // A seek does not rewind every source (videotestsrc's
                // num-buffers, live sources): when one brought no frame, restart
                // the whole pipeline; when that brings none either, give up.
                let fresh = frame_id > frames_at_restart;
                restarts = if fresh { 0 } else { restarts + 1 };
                if restarts > 1 {
                    bail!("the pipeline ended again right after a restart without producing a frame");
                }
                restart(p, restarts == 0)?;
                frames_at_restart = frame_id;
                discont = true;
            }
            continue;
        };
        let arrival = shm_proto::os::realtime_ns();
        let caps = sample.caps().context("sample without caps")?;
        if out.is_none() {
            let (fmt, vinfo) = negotiated(c, caps)?;
            tracing::info!(caps = %caps, "negotiated");
            out = Some(Output::create(&c.name, fmt, &c.create)?);
            info = vinfo;
        }
        let Some(o) = out.as_mut() else { continue };
        let Some(buffer) = sample.buffer() else { continue };
        let capture = capture_ns(p, &sample, buffer, arrival);
        let mut flags = if discont || buffer.flags().contains(gst::BufferFlags::DISCONT) { FLAG_DISCONT } else { 0 };
        discont = false;
        let format = *o.writer.format();
        match &info {
            Some(vinfo) => {
                let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, vinfo)
                    .map_err(|e| anyhow!("cannot map a video buffer: {e}"))?;
                o.publish(|slot| {
                    for (i, plane) in format.planes().iter().enumerate() {
                        let (Ok(src), Some(&stride)) = (frame.plane_data(i as u32), frame.plane_stride().get(i)) else {
                            continue;
                        };
                        copy_plane(slot, plane, src, stride.max(0) as usize);
                    }
                    let mut m = FrameMeta::new(frame_id, capture, format.frame_size);
                    m.flags |= flags;
                    m
                });
            }
            None => {
                let map = buffer.map_readable().map_err(|e| anyhow!("cannot map a buffer: {e}"))?;
                if map.len() as u64 > format.frame_size {
                    o.stats.dropped();
                    tracing::warn!(
                        bytes = map.len(),
                        max = format.frame_size,
                        "JPEG frame larger than a slot; dropped"
                    );
                    continue;
                }
                if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                    flags |= shm_proto::FLAG_KEYFRAME;
                }
                o.publish(|slot| {
                    slot[..map.len()].copy_from_slice(&map);
                    let mut m = FrameMeta::new(frame_id, capture, map.len() as u64);
                    m.flags |= flags;
                    m
                });
            }
        }
        frame_id += 1;
    }
    let frames = out.as_ref().map_or(0, |o| o.stats.frames());
    tracing::info!(frames, "stopping");
    Ok(())
}

/// Back to the start after EOS: a flushing seek (when `try_seek`), or else
/// a full restart of the pipeline.
fn restart(p: &gst::Pipeline, try_seek: bool) -> anyhow::Result<()> {
    if try_seek && p.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT, gst::ClockTime::ZERO).is_ok() {
        tracing::info!("end of stream; looping (seek to start)");
        return Ok(());
    }
    tracing::info!("end of stream; looping (restarting the pipeline)");
    p.set_state(gst::State::Null).context("cannot stop the pipeline to loop")?;
    p.set_state(gst::State::Playing).map_err(|_| anyhow!("cannot restart the pipeline to loop"))?;
    Ok(())
}

/// The ring format for the negotiated caps, and the video info for raw caps.
fn negotiated(c: &SourceConfig, caps: &gst::CapsRef) -> anyhow::Result<(VideoFormat, Option<gst_video::VideoInfo>)> {
    let s = caps.structure(0).context("empty caps")?;
    let rate = s.get::<gst::Fraction>("framerate").ok();
    let (num, den) = match (c.fps, rate) {
        (Some(n), _) if n > 0 => (n, 1),
        (_, Some(f)) if f.numer() > 0 && f.denom() > 0 => (f.numer() as u32, f.denom() as u32),
        _ => (0, 1),
    };
    let fmt = VideoFormat::new(c.width, c.height, c.pixel, num, den)?;
    if c.pixel.is_compressed() {
        return Ok((fmt, None));
    }
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| anyhow!("cannot read caps {caps}: {e}"))?;
    if info.width() != c.width || info.height() != c.height {
        bail!("pipeline delivered {}x{}, expected {}x{}", info.width(), info.height(), c.width, c.height);
    }
    Ok((fmt, Some(info)))
}

/// Copies one plane from GStreamer's layout (`src_stride`) into the slot's.
fn copy_plane(slot: &mut [u8], plane: &shm_proto::Plane, src: &[u8], src_stride: usize) {
    let (dst_stride, row, rows) = (plane.stride as usize, plane.row_bytes as usize, plane.rows as usize);
    let dst = &mut slot[plane.offset as usize..];
    let span = plane.span() as usize;
    if src_stride == dst_stride && src.len() >= span {
        dst[..span].copy_from_slice(&src[..span]);
        return;
    }
    for y in 0..rows {
        let (s, d) = (y * src_stride, y * dst_stride);
        let Some(from) = src.get(s..s + row) else { break };
        dst[d..d + row].copy_from_slice(from);
    }
}

fn capture_ns(p: &gst::Pipeline, sample: &gst::Sample, buffer: &gst::BufferRef, arrival: u64) -> u64 {
    let computed = (|| {
        let pts = buffer.pts()?;
        let seg = sample.segment()?.downcast_ref::<gst::format::Time>()?;
        let running = seg.to_running_time(pts)?;
        let base = p.base_time()?;
        let clock = p.clock()?;
        let now = clock.time();
        let at = base + running;
        let behind = now.nseconds().checked_sub(at.nseconds())?;
        arrival.checked_sub(behind)
    })();
    computed.unwrap_or(arrival)
}
