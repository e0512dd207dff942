//! `gst:'<pipeline>'`: any GStreamer pipeline, converted and scaled to the
//! requested format and size, delivered into an `appsink`, and copied once
//! into a ring slot per sample (honouring GStreamer's plane strides) by
//! [`shmcast_common::gst`], the code `shmcastsink` uses too.
//!
//! Timestamps: a `timestamp/x-unix` reference timestamp on the buffer if
//! there is one; otherwise the buffer PTS converted to running time, plus the
//! pipeline base time, giving the pipeline clock's time of capture, mapped to
//! `CLOCK_REALTIME` through the offset between the pipeline clock and the
//! real-time clock measured when the sample arrives. If any part is missing
//! (no PTS, no clock), or the result lies in the future (`--fps 0` runs
//! unsynchronised, ahead of the clock), the arrival time is used.
#![forbid(unsafe_code)]

use std::sync::atomic::AtomicBool;

use anyhow::{Context, anyhow, bail};
use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use shm_proto::{CreateOptions, PixelFormat, VideoFormat};
use shmcast_common::gst as slot;

use crate::output::{Output, check_name_free};

/// Name of our appsink in the pipeline.
const SINK: &str = "shmcast_sink";

/// What the gst source needs.
pub struct GstConfig<'a> {
    /// Stream name.
    pub name: &'a str,
    /// The user's pipeline description.
    pub pipeline: &'a str,
    /// Requested size.
    pub width: u32,
    /// Requested size.
    pub height: u32,
    /// Requested pixel format.
    pub pixel: PixelFormat,
    /// `None`: the source's own rate; `Some(0)`: as fast as possible; `Some(n)`: n fps (videorate).
    pub fps: Option<u32>,
    /// Stop after this many frames.
    pub frames: Option<u64>,
    /// Restart at end of stream.
    pub looping: bool,
    /// Ring options.
    pub create: &'a CreateOptions,
}

/// The full pipeline description: the user's part plus conversion to the
/// requested caps and our appsink.
pub fn describe(c: &GstConfig<'_>) -> String {
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
        c.pipeline.trim()
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
pub fn run(c: &GstConfig<'_>, stop: &AtomicBool) -> anyhow::Result<()> {
    gst::init().context("cannot initialise GStreamer")?;
    check_name_free(c.name, c.create)?;
    let desc = describe(c);
    let element = gst::parse::launch(&desc).map_err(|e| anyhow!("cannot parse pipeline {:?}: {e}", c.pipeline))?;
    tracing::info!(pipeline = %desc, "starting GStreamer pipeline");
    let pipeline = element
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("pipeline {:?} did not parse into a pipeline", c.pipeline))?;
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
                if !c.looping {
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
            out = Some(Output::create(c.name, fmt, c.create)?);
            info = vinfo;
        }
        let Some(o) = out.as_mut() else { continue };
        let Some(buffer) = sample.buffer() else { continue };
        let time = slot::PipelineTime { segment: sample.segment(), base_time: p.base_time(), clock: p.clock() };
        let capture = slot::capture_ns(buffer, &time, arrival);
        let format = *o.writer.format();
        let payload = match slot::Payload::map(buffer, info.as_ref(), &format) {
            Ok(payload) => payload,
            Err(e @ slot::PayloadError::TooLarge { .. }) => {
                o.stats.dropped();
                tracing::warn!("JPEG {e}; dropped");
                continue;
            }
            Err(e) => bail!("{e}"),
        };
        let id = frame_id;
        o.publish(|slot| {
            let len = payload.copy_into(slot, &format);
            payload.meta(buffer, id, capture, len, discont)
        });
        discont = false;
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
fn negotiated(c: &GstConfig<'_>, caps: &gst::CapsRef) -> anyhow::Result<(VideoFormat, Option<gst_video::VideoInfo>)> {
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
