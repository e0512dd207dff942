//! The ring feeder: one thread per media, from `media-configure` until the
//! media is unprepared.
//!
//! Invariants (each one a lesson from the appsrc leak notes):
//! - It pushes only while the appsrc is PLAYING; before that it keeps its
//!   follower current and discards frames.
//! - Every frame costs one copy, from the slot into a buffer of a bounded pool,
//!   and is dropped (counted as an overrun) if the slot was overwritten during
//!   the copy. An exhausted pool drops the frame instead of allocating.
//! - It owns the only references it takes (the appsrc, its pool, the last
//!   frame) and drops them all when the media goes away, so nothing is held
//!   between clients. The follower (the ring mapping) lives and dies with it.
//! - PTS are the frames' capture times mapped into the pipeline's running time
//!   through one offset kept for the feeder's life, so they stay continuous
//!   across producer restarts; they never go backwards.
//! - While the producer is gone, the last frame (one buffer, shared memory,
//!   new timestamps) is repeated at the stream's rate, so clients stay
//!   connected and decoding; a media started without a producer sends black.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server::RTSPStream;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_video as gst_video;
use shm_proto::{Attached, Event, Follower, Frame, PixelFormat, Reader, ReaderOptions, VideoFormat};
use shmcast_common::ReaderMetrics;
use shmcast_common::metrics::{self, Counter, FloatGauge, Histogram, IntGauge};
use tracing::{debug, info, warn};

use crate::pipeline;

/// Buffers in a feeder's pool: appsrc's queue (2) + converter/encoder in
/// flight (2) + the kept last frame (1) + the one being filled (1).
const POOL_MAX: u32 = 6;
/// A media whose appsrc stays in NULL this long is gone even if we missed its
/// `unprepared` signal.
const NULL_GIVE_UP: Duration = Duration::from_secs(5);
/// A capture time further than this from "now" is not trusted: re-anchor.
const MAX_SKEW_NS: i128 = 1_000_000_000;
/// An active feeder with no client transport for this long goes idle.
const IDLE_AFTER: Duration = Duration::from_secs(1);
/// How often an idle feeder looks for a stop or a client it was not told of.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Longest wait for a frame while active, so that a PLAY is acted on within it.
const PLAY_POLL: Duration = Duration::from_millis(5);
/// How often an active feeder asks whether its media still has clients.
const VIEWERS_RECHECK: Duration = Duration::from_millis(100);

/// The bridge's own metrics (each feeder's reader has its [`ReaderMetrics`]).
pub struct Metrics {
    /// Connected RTSP clients.
    pub clients: IntGauge,
    /// Frames out of the encoder (or JPEG frames passed through).
    pub encoded: Counter,
    /// Encoded frames per second over the last second.
    pub encoded_fps: FloatGauge,
    /// Frames read while a client was playing that never reached the encoder.
    pub dropped: Counter,
    /// A client's PLAY → the next keyframe out of the encoder.
    pub play_to_keyframe: Histogram,
    /// The reader families, for the stats line (totals of every feeder).
    pub reader: ReaderMetrics,
}

impl Metrics {
    /// Registers the metrics in the process-wide registry.
    pub fn register() -> Metrics {
        let r = metrics::global();
        Metrics {
            clients: r.gauge("shmcast_rtsp_clients", "Connected RTSP clients"),
            encoded: r.counter("shmcast_encoded_frames_total", "Frames out of the encoder (or JPEG payloader)"),
            encoded_fps: r.gauge_f64("shmcast_encoded_fps", "Encoded frames per second"),
            dropped: r.counter(
                "shmcast_dropped_frames_total",
                "Frames read while playing that did not reach the encoder (pool exhausted, leaky queue)",
            ),
            play_to_keyframe: r.histogram(
                "shmcast_rtsp_play_to_keyframe_seconds",
                "A client's PLAY (response sent) to the next keyframe out of the encoder",
                &[0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5],
            ),
            reader: ReaderMetrics::new(),
        }
    }
}

/// State shared by the server callbacks and the feeders.
pub struct Shared {
    /// Stream name.
    pub name: String,
    /// Format of the first producer seen: fixes the stream's caps.
    pub first: OnceLock<VideoFormat>,
    /// Metrics.
    pub metrics: Metrics,
    /// Set on SIGINT/SIGTERM.
    pub shutdown: AtomicBool,
    /// The medias' payloaders, for force-key-unit on PLAY (weak: the medias
    /// own them).
    pub pay: Mutex<Vec<gst::glib::WeakRef<gst::Element>>>,
    /// Every media (weak: gst-rtsp-server owns them).
    pub medias: Mutex<Vec<gst::glib::WeakRef<gstreamer_rtsp_server::RTSPMedia>>>,
    /// Moves on every client PLAY: wakes idle feeders, makes active ones
    /// send their last frame again at once.
    pub play: PlaySignal,
    /// When the latest PLAY not yet answered by a keyframe came (ns since
    /// `epoch`, 0: none), for `play_to_keyframe`.
    pub play_at: AtomicU64,
    /// Origin of `play_at`.
    pub epoch: Instant,
    /// Feeder threads (joined at shutdown, pruned as they end).
    pub feeders: Mutex<Vec<JoinHandle<()>>>,
    /// The media pipelines (weak), set to NULL at shutdown if still alive.
    pub pipelines: Mutex<Vec<gst::glib::WeakRef<gst::Element>>>,
}

impl Shared {
    /// New shared state for stream `name`.
    pub fn new(name: &str) -> Shared {
        Shared {
            name: name.to_string(),
            first: OnceLock::new(),
            metrics: Metrics::register(),
            shutdown: AtomicBool::new(false),
            pay: Mutex::new(Vec::new()),
            medias: Mutex::new(Vec::new()),
            play: PlaySignal::default(),
            play_at: AtomicU64::new(0),
            epoch: Instant::now(),
            feeders: Mutex::new(Vec::new()),
            pipelines: Mutex::new(Vec::new()),
        }
    }
}

/// A counter of client PLAYs that feeders can wait on.
#[derive(Default)]
pub struct PlaySignal {
    count: Mutex<u64>,
    moved: Condvar,
}

impl PlaySignal {
    /// A client started playing.
    pub fn notify(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.moved.notify_all();
    }

    /// The number of PLAYs so far.
    pub fn current(&self) -> u64 {
        *self.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the count differs from `seen` or `timeout` passes; returns `seen`
    /// (the caller compares again with [`PlaySignal::current`]).
    pub fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let guard = self.count.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.moved.wait_timeout_while(guard, timeout, |c| *c == seen);
        seen
    }
}

/// What a feeder knows of its media.
pub struct MediaLink {
    /// The media's (only) stream, to count its client transports.
    pub stream: Option<RTSPStream>,
    /// Set once the media is prepared; until then it needs frames to preroll.
    pub prepared: Arc<AtomicBool>,
}

/// Starts a feeder for a new media's `appsrc`. `stop` is set when the media
/// is unprepared; `out` counts buffers leaving the appsrc (for leak counting).
pub fn spawn(
    shared: Arc<Shared>,
    appsrc: gst_app::AppSrc,
    stop: Arc<AtomicBool>,
    out: Arc<AtomicU64>,
    link: MediaLink,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("rtsp-feeder".into()).spawn(move || {
        let Some(first) = shared.first.get().copied() else { return };
        let mut f = Feeder::new(shared, appsrc, stop, out, link, first);
        f.run();
    })
}

/// Same geometry and pixel layout (the rate is the stream's, kept from the first producer).
fn same_layout(a: &VideoFormat, b: &VideoFormat) -> bool {
    a.width == b.width && a.height == b.height && a.pixel == b.pixel && a.planes == b.planes
}

struct Feeder {
    shared: Arc<Shared>,
    appsrc: gst_app::AppSrc,
    stop: Arc<AtomicBool>,
    out: Arc<AtomicU64>,
    link: MediaLink,
    /// Whether the media had a client transport when last asked.
    viewers: bool,
    viewers_checked: Instant,
    /// The producer epoch last announced (re-attaching to the same producer after idling is not news).
    announced_epoch: Option<u64>,
    first: VideoFormat,
    rate: (i32, i32),
    period: Duration,
    /// Layout of what is being pushed now.
    format: VideoFormat,
    /// GStreamer's layout of the same (raw formats).
    info: Option<gst_video::VideoInfo>,
    pool: Option<gst::BufferPool>,
    /// Frames of the current producer cannot be used (raw ↔ MJPEG change).
    incompatible: bool,
    last: Option<gst::Buffer>,
    last_pts: Option<u64>,
    /// realtime_ns − running time, fixed at the first frame.
    anchor: Option<i128>,
    last_push: Instant,
    flushing_since: Option<Instant>,
    pushed: u64,
    leak_reported: u64,
    leak_checked: Instant,
    /// This feeder's reader, added to the process-wide reader metrics.
    reader_metrics: ReaderMetrics,
}

impl Feeder {
    fn new(
        shared: Arc<Shared>,
        appsrc: gst_app::AppSrc,
        stop: Arc<AtomicBool>,
        out: Arc<AtomicU64>,
        link: MediaLink,
        first: VideoFormat,
    ) -> Feeder {
        let rate = pipeline::rate(&first);
        let period = Duration::from_secs_f64(f64::from(rate.1) / f64::from(rate.0).max(1.0));
        let mut f = Feeder {
            shared,
            appsrc,
            stop,
            out,
            link,
            viewers: true,
            viewers_checked: Instant::now(),
            announced_epoch: None,
            first,
            rate,
            period,
            format: first,
            info: None,
            pool: None,
            incompatible: false,
            last: None,
            last_pts: None,
            anchor: None,
            last_push: Instant::now(),
            flushing_since: None,
            pushed: 0,
            leak_reported: 0,
            leak_checked: Instant::now(),
            reader_metrics: ReaderMetrics::new(),
        };
        f.set_format(first);
        f
    }

    fn should_stop(&self) -> bool {
        // Relaxed: standalone flags, polled.
        self.stop.load(Ordering::Relaxed) || self.shared.shutdown.load(Ordering::Relaxed)
    }

    fn run(&mut self) {
        debug!("feeder starts");
        let mut follower: Option<Follower> = None;
        let mut seen = self.shared.play.current();
        let mut null_since: Option<Instant> = None;
        let mut unwatched_since: Option<Instant> = None;
        let mut open_error_logged = false;
        while !self.should_stop() {
            let state = self.appsrc.current_state();
            let playing = state == gst::State::Playing;
            if state == gst::State::Null {
                if null_since.get_or_insert_with(Instant::now).elapsed() > NULL_GIVE_UP {
                    break;
                }
            } else {
                null_since = None;
            }
            if self.flushing_since.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
                // The media is shutting down (end on Flushing).
                break;
            }
            let play = self.shared.play.current();
            let played = play != seen;
            seen = play;
            let watched = self.watched(played);
            let Some(f) = follower.as_mut() else {
                if watched && playing {
                    follower = self.wake_up(&mut open_error_logged);
                    if follower.is_none() {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                } else {
                    // Idle: nothing mapped, pushed or kept; a PLAY wakes us at once.
                    seen = self.shared.play.wait(seen, IDLE_POLL);
                }
                continue;
            };
            if watched {
                unwatched_since = None;
            } else if unwatched_since.get_or_insert_with(Instant::now).elapsed() >= IDLE_AFTER {
                self.account(f);
                follower = None;
                unwatched_since = None;
                self.go_idle();
                continue;
            }
            if played && playing {
                // A client joined: the encoder was asked for a keyframe; give it
                // the last frame now rather than at the next capture.
                self.repeat();
            }
            let timeout = if playing && !self.live(f) {
                self.period.saturating_sub(self.last_push.elapsed()).max(Duration::from_millis(1))
            } else if playing {
                self.period * 2
            } else {
                Duration::from_millis(20)
            };
            // Short enough to act on a PLAY within a few ms.
            match f.poll(timeout.min(PLAY_POLL)) {
                Ok(Event::Frame(fr)) => self.on_frame(fr, playing),
                Ok(Event::Attached(a)) => self.on_attach(&a),
                Ok(Event::Detached(status)) => {
                    warn!(stream = %self.shared.name, ?status, "producer gone; repeating the last frame until it is back");
                }
                Ok(Event::Idle) => {}
                Err(e) => {
                    if !open_error_logged {
                        warn!(stream = %self.shared.name, "cannot open stream: {e}; retrying");
                        open_error_logged = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            let f = follower.as_ref().expect("active");
            self.account(f);
            if playing && !self.live(f) && self.last_push.elapsed() >= self.period {
                self.repeat();
            }
        }
        if let Some(f) = &follower {
            self.account(f);
        }
        self.check_leaks(true);
        if let Some(pool) = self.pool.take() {
            let _ = pool.set_active(false);
        }
        debug!(pushed = self.pushed, "feeder ends");
    }

    /// Whether someone may be watching: the media is still being prepared
    /// (it needs a frame to preroll) or its stream has a client transport.
    /// Asks gst-rtsp-server at most every [`VIEWERS_RECHECK`], or at once
    /// after a PLAY.
    fn watched(&mut self, force: bool) -> bool {
        // Relaxed: a standalone flag set by the media's `prepared` signal.
        if !self.link.prepared.load(Ordering::Relaxed) {
            return true;
        }
        let Some(stream) = &self.link.stream else { return true };
        if force || self.viewers_checked.elapsed() >= VIEWERS_RECHECK {
            self.viewers_checked = Instant::now();
            self.viewers = !stream.transport_filter(None).is_empty();
        }
        self.viewers
    }

    /// Leaves the idle state: maps the ring and pushes its newest frame at
    /// once (the encoder was asked for a keyframe on PLAY), so the first
    /// client does not wait for the next capture.
    fn wake_up(&mut self, error_logged: &mut bool) -> Option<Follower> {
        let follower = match Follower::new(&self.shared.name, ReaderOptions::default()) {
            Ok(f) => f,
            Err(e) => {
                if !*error_logged {
                    warn!(stream = %self.shared.name, "cannot open stream: {e}; retrying");
                    *error_logged = true;
                }
                return None;
            }
        };
        if let Some(pool) = &self.pool
            && pool.set_active(true).is_err()
        {
            warn!("cannot activate the buffer pool");
        }
        debug!("a client plays: feeder active");
        if let Ok(mut r) = Reader::open(&self.shared.name, &ReaderOptions::default())
            && r.status().0.is_alive()
            && same_layout(r.format(), &self.format)
            && !self.incompatible
            && let Some(f) = r.latest()
        {
            self.on_frame(f, true);
        }
        Some(follower)
    }

    /// Nobody watches: unmap the ring (the follower is dropped by the
    /// caller), free the pool's buffers, keep nothing.
    fn go_idle(&mut self) {
        self.last = None;
        if let Some(pool) = &self.pool {
            let _ = pool.set_active(false);
        }
        debug!("no client: feeder idle, ring unmapped");
    }

    /// Whether fresh frames are coming that we can use.
    fn live(&self, follower: &Follower) -> bool {
        follower.is_attached() && !self.incompatible
    }

    fn on_attach(&mut self, a: &Attached) {
        if self.announced_epoch.replace(a.epoch) == Some(a.epoch) {
            debug!(stream = %self.shared.name, pid = a.pid, "ring mapped again");
        } else {
            info!(
                stream = %self.shared.name, pid = a.pid, epoch = format_args!("{:016x}", a.epoch),
                format = %a.format, attach = a.attach_count, "producer attached"
            );
        }
        let compatible = a.format.pixel.is_compressed() == self.first.pixel.is_compressed();
        if !compatible {
            warn!(
                stream = %self.shared.name, first = %self.first, now = %a.format,
                "producer switched between raw and MJPEG; cannot convert, repeating the last frame"
            );
            self.incompatible = true;
            return;
        }
        self.incompatible = false;
        if !same_layout(&a.format, &self.format) {
            if !same_layout(&a.format, &self.first) {
                info!(
                    stream = %self.shared.name, first = %self.first, now = %a.format,
                    "producer format differs from the stream's; converting to the original size and format"
                );
            }
            self.set_format(a.format);
        }
    }

    /// Switches what is pushed to `format`: new caps, a new pool. The old
    /// pool's buffers still in the pipeline are freed as they come back.
    fn set_format(&mut self, format: VideoFormat) {
        let Some(caps) = pipeline::source_caps(&format, self.rate) else { return };
        let (info, size) = if format.pixel == PixelFormat::Mjpeg {
            (None, format.frame_size)
        } else {
            match gst_video::VideoInfo::from_caps(&caps) {
                Ok(i) => {
                    let s = i.size() as u64;
                    (Some(i), s)
                }
                Err(e) => {
                    warn!("cannot use format {format}: {e}");
                    self.incompatible = true;
                    return;
                }
            }
        };
        if let Some(old) = self.pool.take() {
            let _ = old.set_active(false);
        }
        let pool = gst::BufferPool::new();
        let mut config = pool.config();
        config.set_params(Some(&caps), size.min(u64::from(u32::MAX)) as u32, 2, POOL_MAX);
        if pool.set_config(config).is_err() || pool.set_active(true).is_err() {
            warn!("cannot set up a buffer pool for {format}");
            self.incompatible = true;
            return;
        }
        self.appsrc.set_caps(Some(&caps));
        self.pool = Some(pool);
        self.info = info;
        self.format = format;
        // The kept frame has the old layout: never repeat it under new caps.
        self.last = None;
    }

    fn acquire(&self) -> Option<gst::Buffer> {
        let params = gst::BufferPoolAcquireParams::with_flags(gst::BufferPoolAcquireFlags::DONTWAIT);
        self.pool.as_ref()?.acquire_buffer(Some(&params)).ok()
    }

    fn on_frame(&mut self, f: Frame<'_>, playing: bool) {
        let m = &self.shared.metrics;
        let meta = *f.meta();
        self.reader_metrics.observe_wake(meta.publish_ns);
        if !playing || self.incompatible {
            return;
        }
        let Some(mut buf) = self.acquire() else {
            m.dropped.inc();
            return;
        };
        let copied = {
            let Some(b) = buf.get_mut() else { return };
            // Validated after the copy: a slot overwritten meanwhile may have
            // torn it. The reader counts the overrun; the buffer goes back to the pool.
            f.read(|data| match &self.info {
                Some(info) => copy_planes(data, &self.format, info, b),
                None => copy_jpeg(data, b),
            })
        };
        if copied != Some(true) {
            return;
        }
        let pts = self.pts(Some(meta.capture_ns));
        self.push(buf, pts, true);
    }

    /// Repeats the last frame (or black) with a new timestamp.
    fn repeat(&mut self) {
        let buf = match &self.last {
            Some(last) => last.copy(),
            None => match self.black() {
                Some(b) => b,
                None => {
                    self.last_push = Instant::now();
                    return;
                }
            },
        };
        let pts = self.pts(None);
        self.push(buf, pts, false);
    }

    /// A black frame of the current raw format (MJPEG: none).
    fn black(&mut self) -> Option<gst::Buffer> {
        let info = self.info.as_ref()?;
        let mut buf = self.acquire()?;
        {
            let b = buf.get_mut()?;
            let mut map = b.map_writable().ok()?;
            let data = map.as_mut_slice();
            match self.format.pixel {
                PixelFormat::Rgb24 | PixelFormat::Bgr24 => data.fill(0),
                PixelFormat::Gray8 => data.fill(16),
                PixelFormat::Yuyv => data.chunks_exact_mut(2).for_each(|p| p.copy_from_slice(&[16, 128])),
                PixelFormat::Nv12 | PixelFormat::I420 => {
                    data.fill(128);
                    let (off, len) = (info.offset()[0], info.stride()[0] as usize * info.height() as usize);
                    if let Some(y) = data.get_mut(off..off + len) {
                        y.fill(16);
                    }
                }
                PixelFormat::Mjpeg => return None,
            }
        }
        Some(buf)
    }

    fn running_time(&self) -> Option<u64> {
        let clock = self.appsrc.clock()?;
        let base = self.appsrc.base_time()?;
        clock.time().checked_sub(base).map(gst::ClockTime::nseconds)
    }

    /// The PTS for a frame captured at `capture_ns` (realtime), or for a
    /// repeat (`None`): continuous, never going backwards.
    fn pts(&mut self, capture_ns: Option<u64>) -> u64 {
        let floor = self.last_pts.map_or(0, |p| p + 1_000_000);
        let Some(run) = self.running_time() else {
            let p = self.last_pts.map_or(0, |p| p + self.period.as_nanos() as u64);
            self.last_pts = Some(p);
            return p;
        };
        let run_i = i128::from(run);
        let cand = match capture_ns.filter(|&c| c != 0) {
            Some(c) => {
                let real = i128::from(shm_proto::os::realtime_ns());
                let anchor = *self.anchor.get_or_insert(real - run_i);
                let mut p = i128::from(c) - anchor;
                if (p - run_i).abs() > MAX_SKEW_NS {
                    // The clocks moved (NTP step) or the source's capture
                    // times are not CLOCK_REALTIME: map afresh.
                    let a = real - run_i;
                    self.anchor = Some(a);
                    p = i128::from(c) - a;
                    if (p - run_i).abs() > MAX_SKEW_NS {
                        p = run_i;
                    }
                }
                p
            }
            None => run_i,
        };
        let p = (cand.max(0) as u64).max(floor);
        self.last_pts = Some(p);
        p
    }

    fn push(&mut self, mut buf: gst::Buffer, pts: u64, keep: bool) {
        if let Some(b) = buf.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_duration(gst::ClockTime::from_nseconds(self.period.as_nanos() as u64));
        }
        if keep {
            self.last = Some(buf.clone());
        }
        self.last_push = Instant::now();
        match self.appsrc.push_buffer(buf) {
            Ok(_) => {
                self.pushed += 1;
                self.flushing_since = None;
            }
            Err(gst::FlowError::Flushing) => {
                self.flushing_since.get_or_insert_with(Instant::now);
            }
            Err(e) => debug!("push: {e:?}"),
        }
        self.check_leaks(false);
    }

    /// Counts buffers the leaky queue dropped: pushed − left the appsrc − queued.
    fn check_leaks(&mut self, force: bool) {
        if !force && self.leak_checked.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.leak_checked = Instant::now();
        // Relaxed: a statistic from a pad probe.
        let out = self.out.load(Ordering::Relaxed);
        let level = if force { 0 } else { self.appsrc.current_level_buffers() };
        let leaked = self.pushed.saturating_sub(out).saturating_sub(level);
        if leaked > self.leak_reported {
            self.shared.metrics.dropped.inc_by(leaked - self.leak_reported);
            self.leak_reported = leaked;
        }
    }

    fn account(&mut self, follower: &Follower) {
        self.reader_metrics.record(follower);
    }
}

/// Copies the planes of a raw frame from the ring's tight layout into
/// GStreamer's (rows may be padded there). False if a plane does not fit.
fn copy_planes(src: &[u8], format: &VideoFormat, info: &gst_video::VideoInfo, b: &mut gst::BufferRef) -> bool {
    let Ok(mut map) = b.map_writable() else { return false };
    let dst = map.as_mut_slice();
    for (i, p) in format.planes().iter().enumerate() {
        let (Some(&doff), Some(&dstride)) = (info.offset().get(i), info.stride().get(i)) else { return false };
        let (soff, sstride, row, rows) = (p.offset as usize, p.stride as usize, p.row_bytes as usize, p.rows as usize);
        let dstride = dstride as usize;
        if row > dstride {
            return false;
        }
        if sstride == dstride {
            let n = p.span() as usize;
            let (Some(s), Some(d)) = (src.get(soff..soff + n), dst.get_mut(doff..doff + n)) else { return false };
            d.copy_from_slice(s);
        } else {
            for r in 0..rows {
                let (so, d0) = (soff + r * sstride, doff + r * dstride);
                let (Some(s), Some(d)) = (src.get(so..so + row), dst.get_mut(d0..d0 + row)) else { return false };
                d.copy_from_slice(s);
            }
        }
    }
    true
}

/// Copies a JPEG frame and trims the buffer to its length.
fn copy_jpeg(src: &[u8], b: &mut gst::BufferRef) -> bool {
    if src.is_empty() || src.len() > b.size() {
        return false;
    }
    {
        let Ok(mut map) = b.map_writable() else { return false };
        map.as_mut_slice()[..src.len()].copy_from_slice(src);
    }
    b.set_size(src.len());
    true
}
