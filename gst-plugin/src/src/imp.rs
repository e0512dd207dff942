//! The source's implementation.
//!
//! `create` waits for the next ring event in steps of at most [`POLL`], so a
//! state change to READY or NULL (`unlock`) is honoured within that time
//! whatever the producer does. A ring format that differs from the current
//! caps (first attach, or a producer that restarted with another format)
//! becomes the new caps through `negotiate` before the next buffer is
//! allocated. Frames are copied once into a buffer from the negotiated pool
//! and validated after the copy: a frame the producer overwrote while it was
//! copied is dropped (counted as torn) and the next buffer is marked DISCONT,
//! as is the first buffer after lost frames or a producer restart.
//!
//! Frames go out in order while the source keeps within half the ring of
//! the producer; further behind (past the backlog it attached to), it jumps
//! to the newest frame, since the next ones in order are those the producer
//! overwrites next. The `stats` property and the latency query read a copy
//! of the streaming thread's state (`Seen`), never the state itself, which
//! `create` holds through its whole wait on the ring.
//!
//! Timestamps: the frame's capture time (`CLOCK_REALTIME`) is mapped to the
//! pipeline clock through the offset between the two measured when the frame
//! is handed out, then made running time; PTS never goes backwards. With
//! `do-timestamp=true` buffers are left unstamped and GStreamer stamps them
//! with their arrival time instead.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer::subclass::prelude::*;
use gstreamer_base as gst_base;
use gstreamer_base::prelude::*;
use gstreamer_base::subclass::base_src::CreateSuccess;
use gstreamer_base::subclass::prelude::*;
use gstreamer_video as gst_video;
use shm_proto::{Event, Follower, Lapped, OpenError, Reader, ReaderOptions, Start, StreamName, VideoFormat};

use super::StartAt;
use crate::caps;

static CAT: LazyLock<gst::DebugCategory> =
    LazyLock::new(|| gst::DebugCategory::new("shmcastsrc", gst::DebugColorFlags::empty(), Some("shmcast ring source")));

/// Longest wait inside `create` before it looks at the flushing flag again.
const POLL: Duration = Duration::from_millis(50);
/// Buffers the pool keeps ready.
const MIN_BUFFERS: u32 = 2;

#[derive(Clone, Debug)]
struct Settings {
    stream: Option<String>,
    start: StartAt,
    attach_timeout: u32,
    is_live: bool,
    latest: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { stream: None, start: StartAt::Next, attach_timeout: 0, is_live: true, latest: false }
    }
}

#[derive(Default)]
struct Counters {
    pushed: u64,
    attaches: u64,
    detaches: u64,
    renegotiations: u64,
}

struct State {
    follower: Follower,
    started: Instant,
    format: Option<VideoFormat>,
    info: Option<gst_video::VideoInfo>,
    /// The ring's packed layout is GStreamer's: one copy, no restriding.
    packed: bool,
    discont: bool,
    /// The ring's head when the source attached: the frames before it
    /// (`start=oldest`, or a restarted producer's backlog) are delivered in
    /// order; the half-ring catch-up applies from there on.
    backlog_end: u64,
    last_pts: Option<gst::ClockTime>,
    first_capture: Option<u64>,
}

/// A copy of what `stats` and the latency query need from [`State`].
#[derive(Clone, Copy, Default)]
struct Seen {
    reader: shm_proto::ReaderStats,
    format: Option<VideoFormat>,
}

#[derive(Default)]
pub struct ShmcastSrc {
    settings: Mutex<Settings>,
    /// The streaming thread's state: held by `create` through its whole
    /// wait on the ring, so other threads (properties, queries) never take
    /// it while streaming — they would starve behind the streaming thread's
    /// unlock-and-relock — and read `seen` instead.
    state: Mutex<Option<State>>,
    /// Caps of the attached ring, what `negotiate` sets.
    caps: Mutex<Option<gst::Caps>>,
    counters: Mutex<Counters>,
    /// What other threads may know of `state`, updated after each poll.
    seen: Mutex<Seen>,
    flushing: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Copies a packed frame out of the ring: with streaming stores for a frame
/// too large for the cache (two thirds of the memory traffic of a plain
/// copy, see [`shm_proto::stream_copy`]), plainly otherwise, where it stays
/// in the cache for the next element.
fn copy_frame(dst: &mut [u8], src: &[u8]) {
    if src.len() >= shm_proto::STREAMING_MIN { shm_proto::copy_streaming(dst, src) } else { dst.copy_from_slice(src) }
}

/// Copies a packed ring frame into GStreamer's layout of the same format.
/// Row by row with a plain copy: the rows GStreamer pads start off any
/// alignment, so streaming stores would share cache lines with the plain
/// stores of each row's ends (measured slower: 0.61–0.70 ms against 0.47 ms
/// per 1922x1080 RGB frame, in one process).
fn restride(format: &VideoFormat, info: &gst_video::VideoInfo, src: &[u8], dst: &mut [u8]) {
    for (i, p) in format.planes().iter().enumerate() {
        let (doff, dstride) = (info.offset()[i], info.stride()[i].max(0) as usize);
        for y in 0..p.rows as usize {
            let s = p.offset as usize + y * p.stride as usize;
            let d = doff + y * dstride;
            let row = p.row_bytes as usize;
            if let (Some(from), Some(to)) = (src.get(s..s + row), dst.get_mut(d..d + row)) {
                to.copy_from_slice(from);
            }
        }
    }
}

/// What one poll of the ring asks `create` to do next.
enum Step {
    Again,
    Renegotiate(gst::Caps),
    Push(gst::Buffer),
}

#[glib::object_subclass]
impl ObjectSubclass for ShmcastSrc {
    const NAME: &'static str = "GstShmcastSrc";
    type Type = super::ShmcastSrc;
    type ParentType = gst_base::PushSrc;
}

impl ObjectImpl for ShmcastSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("stream")
                    .nick("Stream")
                    .blurb("Ring name to read: the segment shmcast.<stream> ([A-Za-z0-9_.-]{1,64}; required)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("start", StartAt::Next)
                    .nick("Start")
                    .blurb("Where to start reading the first producer (after a restart: its oldest frame)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("attach-timeout")
                    .nick("Attach timeout")
                    .blurb("Seconds to wait for the producer to appear before failing (0: wait forever)")
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("is-live")
                    .nick("Is live")
                    .blurb("Act as a live source (false: push frames as they come, timestamps from the first frame)")
                    .default_value(true)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("latest")
                    .nick("Latest frame")
                    .blurb(
                        "Push the newest frame each time, skipping (and counting as lost) older ones the \
                         pipeline had no time for: the lowest latency when downstream is slower than the \
                         producer (false: every frame in order while the pipeline keeps within half \
                         the ring of the producer; further behind, it jumps to the newest)",
                    )
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "frames (pushed), lost (overwritten before they were read, or skipped), torn (overwritten while \
                         copied; dropped), attaches, detaches, renegotiations",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        match pspec.name() {
            "stream" => s.stream = value.get().expect("type checked upstream"),
            "start" => s.start = value.get().expect("type checked upstream"),
            "attach-timeout" => s.attach_timeout = value.get().expect("type checked upstream"),
            "latest" => s.latest = value.get().expect("type checked upstream"),
            "is-live" => {
                s.is_live = value.get().expect("type checked upstream");
                let live = s.is_live;
                drop(s);
                self.obj().set_live(live);
            }
            other => unreachable!("no property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "stream" => lock(&self.settings).stream.to_value(),
            "start" => lock(&self.settings).start.to_value(),
            "attach-timeout" => lock(&self.settings).attach_timeout.to_value(),
            "is-live" => lock(&self.settings).is_live.to_value(),
            "latest" => lock(&self.settings).latest.to_value(),
            "stats" => self.stats().to_value(),
            other => unreachable!("no property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_live(true);
        obj.set_format(gst::Format::Time);
    }
}

impl GstObjectImpl for ShmcastSrc {}

impl ElementImpl for ShmcastSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "shmcast ring source",
                "Source/Video",
                "Reads a shmcast shared-memory ring: caps from the segment header, frames copied once and \
                 validated, waits for the producer and follows its restarts and format changes",
                "shmcast",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, &caps::template_caps())
                    .expect("valid pad template"),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl ShmcastSrc {
    fn stats(&self) -> gst::Structure {
        let reader = lock(&self.seen).reader;
        let c = lock(&self.counters);
        gst::Structure::builder("shmcastsrc-stats")
            .field("frames", c.pushed)
            .field("lost", reader.lost)
            .field("torn", reader.overruns)
            .field("attaches", c.attaches)
            .field("detaches", c.detaches)
            .field("renegotiations", c.renegotiations)
            .build()
    }

    /// The running time of a frame captured at `capture_ns` (`CLOCK_REALTIME`).
    fn pts_of(&self, st: &mut State, capture_ns: u64, live: bool) -> Option<gst::ClockTime> {
        let obj = self.obj();
        let pts = if live {
            let clock = obj.clock()?;
            let base = obj.base_time()?;
            let now_clock = clock.time();
            let age = shm_proto::os::realtime_ns().saturating_sub(capture_ns);
            now_clock.nseconds().saturating_sub(age).saturating_sub(base.nseconds())
        } else {
            let first = *st.first_capture.get_or_insert(capture_ns);
            capture_ns.saturating_sub(first)
        };
        let mut pts = gst::ClockTime::from_nseconds(pts);
        if let Some(last) = st.last_pts
            && pts <= last
        {
            pts = last + gst::ClockTime::from_nseconds(1);
        }
        st.last_pts = Some(pts);
        Some(pts)
    }

    /// Touches every page of the pool's ready buffers once, so that the
    /// first frames are not copied into memory the kernel has yet to fault
    /// in (a 1080p RGB buffer is 1,519 pages).
    fn prefault(&self) {
        let Some(pool) = self.obj().buffer_pool() else { return };
        let buffers: Vec<gst::Buffer> = (0..MIN_BUFFERS).filter_map(|_| pool.acquire_buffer(None).ok()).collect();
        for mut buffer in buffers {
            if let Some(b) = buffer.get_mut()
                && let Ok(mut map) = b.map_writable()
            {
                for i in (0..map.len()).step_by(4096) {
                    map[i] = 0;
                }
            }
        }
    }

    /// One poll of the ring, then what it changed made visible to other threads.
    fn step(&self) -> Result<Step, gst::FlowError> {
        let settings = lock(&self.settings).clone();
        let mut guard = lock(&self.state);
        let Some(st) = guard.as_mut() else { return Err(gst::FlowError::Flushing) };
        let step = self.poll(&settings, st);
        *lock(&self.seen) = Seen { reader: st.follower.stats(), format: st.format };
        step
    }

    fn poll(&self, settings: &Settings, st: &mut State) -> Result<Step, gst::FlowError> {
        // In order while the pipeline keeps within half the ring of the
        // producer; further behind, the next frames in order are the ones
        // the producer overwrites next: copying them mostly ends torn
        // (a wasted copy) and only adds latency, so jump to the newest.
        let behind = st
            .follower
            .reader()
            .is_some_and(|r| r.cursor() >= st.backlog_end && r.head().saturating_sub(r.cursor()) > r.slots() / 2);
        let polled = if settings.latest || behind { st.follower.poll_latest(POLL) } else { st.follower.poll(POLL) };
        let ev = match polled {
            Ok(ev) => ev,
            Err(e) => {
                gst::element_imp_error!(self, gst::ResourceError::OpenRead, ("{}", e));
                return Err(gst::FlowError::Error);
            }
        };
        match ev {
            Event::Idle => {
                let waited = st.started.elapsed();
                if st.format.is_none()
                    && settings.attach_timeout > 0
                    && waited >= Duration::from_secs(u64::from(settings.attach_timeout))
                {
                    let name = st.follower.name().to_string();
                    let why = match Reader::open(&name, &ReaderOptions::default()) {
                        Err(e) => e.to_string(),
                        Ok(r) => format!("cannot attach to stream {name}: its producer is {}", r.status().0),
                    };
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::NotFound,
                        ("{} (waited {} s, attach-timeout)", why, settings.attach_timeout)
                    );
                    return Err(gst::FlowError::Error);
                }
                Ok(Step::Again)
            }
            Event::Detached(status) => {
                gst::warning!(
                    CAT,
                    imp = self,
                    "producer of {} is {status}; waiting for it to come back",
                    st.follower.name()
                );
                st.discont = true;
                lock(&self.counters).detaches += 1;
                Ok(Step::Again)
            }
            Event::Attached(a) => {
                st.backlog_end = st.follower.reader().map_or(0, Reader::head);
                gst::info!(
                    CAT,
                    imp = self,
                    "attached to {} (pid {}, epoch {:#x}): {}, {} slots",
                    st.follower.name(),
                    a.pid,
                    a.epoch,
                    a.format,
                    a.slots
                );
                lock(&self.counters).attaches += 1;
                st.discont = true;
                let changed = st.format != Some(a.format);
                let (new_caps, info) = caps::caps_of(&a.format);
                st.packed = info.as_ref().is_none_or(|i| caps::same_layout(&a.format, i));
                st.format = Some(a.format);
                st.info = info;
                Ok(if changed { Step::Renegotiate(new_caps) } else { Step::Again })
            }
            Event::Frame(frame) => {
                let format = st.format.expect("frames come after an attach");
                let pool = self.obj().buffer_pool().ok_or_else(|| {
                    gst::element_imp_error!(self, gst::CoreError::Negotiation, ("no buffer pool after negotiation"));
                    gst::FlowError::NotNegotiated
                })?;
                let mut buffer = pool.acquire_buffer(None)?;
                let meta = *frame.meta();
                let lost = frame.lost_before();
                let bm = buffer.get_mut().expect("a freshly acquired buffer is writable");
                // The one copy out of the ring, validated: `Err` means the
                // producer overwrote the slot during the copy (counted as torn).
                let copied = {
                    let mut map = bm.map_writable().map_err(|_| gst::FlowError::Error)?;
                    if frame.len() > map.len() {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Format,
                            ("frame of {} bytes does not fit a {}-byte buffer", frame.len(), map.len())
                        );
                        return Err(gst::FlowError::Error);
                    }
                    // In place, validated after the copy (`read` returns
                    // `None` if the slot was overwritten meanwhile): a plain
                    // memcpy, or a restride for rows GStreamer pads.
                    let len = frame.len();
                    let out = &mut *map;
                    match (&st.info, st.packed) {
                        (Some(info), false) => frame.read(|bytes| {
                            restride(&format, info, bytes, out);
                            info.size()
                        }),
                        _ => frame.read(|bytes| {
                            copy_frame(&mut out[..len], bytes);
                            len
                        }),
                    }
                };
                let Some(len) = copied else {
                    gst::debug!(CAT, imp = self, "frame {} was overwritten while copied; dropped", meta.frame_id);
                    st.discont = true;
                    return Ok(Step::Again);
                };
                if format.pixel.is_compressed() {
                    bm.set_size(len);
                    if meta.flags & shm_proto::FLAG_KEYFRAME == 0 {
                        bm.set_flags(gst::BufferFlags::DELTA_UNIT);
                    }
                }
                if st.discont || lost > 0 || meta.flags & shm_proto::FLAG_DISCONT != 0 {
                    bm.set_flags(gst::BufferFlags::DISCONT);
                    st.discont = false;
                }
                bm.set_offset(meta.frame_id);
                if !self.obj().does_timestamp() {
                    bm.set_pts(self.pts_of(st, meta.capture_ns, settings.is_live));
                }
                if format.fps_num > 0 {
                    bm.set_duration(
                        gst::ClockTime::SECOND.mul_div_floor(u64::from(format.fps_den), u64::from(format.fps_num)),
                    );
                }
                Ok(Step::Push(buffer))
            }
        }
    }
}

impl BaseSrcImpl for ShmcastSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let name = settings.stream.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                ("no stream name: set the stream property (e.g. shmcastsrc stream=cam0)")
            ));
        }
        StreamName::new(&name).map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ("{}", e)))?;
        let start = match settings.start {
            StartAt::Next => Start::Next,
            StartAt::Oldest => Start::Oldest,
        };
        // A lapped source lands on the newest frame: under overload it keeps
        // delivering intact (if fewer) frames.
        let follower =
            Follower::new(&name, ReaderOptions { start, lapped: Lapped::Newest, ..ReaderOptions::default() })
                .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ("{}", e)))?;
        // A segment that exists but can never be read is an error now, not a
        // silent wait.
        match Reader::open(&name, &ReaderOptions::default()) {
            Ok(_) => {}
            Err(e) if e.is_transient() => {
                gst::info!(CAT, imp = self, "waiting for a producer of {name}");
            }
            Err(e @ (OpenError::Invalid { .. } | OpenError::PermissionDenied { .. } | OpenError::Io { .. })) => {
                return Err(gst::error_msg!(gst::ResourceError::OpenRead, ("{}", e)));
            }
            Err(e) => return Err(gst::error_msg!(gst::ResourceError::OpenRead, ("{}", e))),
        }
        *lock(&self.caps) = None;
        *lock(&self.counters) = Counters::default();
        *lock(&self.seen) = Seen::default();
        *lock(&self.state) = Some(State {
            follower,
            started: Instant::now(),
            format: None,
            info: None,
            packed: true,
            discont: true,
            backlog_end: 0,
            last_pts: None,
            first_capture: None,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        if let Some(st) = lock(&self.state).take() {
            *lock(&self.seen) = Seen { reader: st.follower.stats(), format: None };
        }
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn caps(&self, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
        let caps = lock(&self.caps).clone().unwrap_or_else(caps::template_caps);
        Some(match filter {
            Some(f) => f.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
            None => caps,
        })
    }

    fn negotiate(&self) -> Result<(), gst::LoggableError> {
        // Before the producer is known there is nothing to negotiate: it
        // happens in `create` once the segment header tells the format.
        let Some(caps) = lock(&self.caps).clone() else { return Ok(()) };
        self.obj().set_caps(&caps).map_err(|_| gst::loggable_error!(CAT, "downstream refused {caps}"))
    }

    fn decide_allocation(&self, query: &mut gst::query::Allocation) -> Result<(), gst::LoggableError> {
        let (caps, _) = query.get_owned();
        let Some(caps) = caps else { return self.parent_decide_allocation(query) };
        let (format, info) = caps::format_of(&caps).map_err(|e| gst::loggable_error!(CAT, "{e}"))?;
        let size = info.as_ref().map_or(0, |i| i.size() as u64).max(format.frame_size);
        let size =
            u32::try_from(size).map_err(|_| gst::loggable_error!(CAT, "frames of {size} bytes are too large"))?;
        // Our own pool, sized for one ring frame: buffers are recycled, so
        // steady state allocates nothing.
        let pool: gst::BufferPool =
            if info.is_some() { gst_video::VideoBufferPool::new().upcast() } else { gst::BufferPool::new() };
        while query.allocation_pools().next().is_some() {
            query.remove_nth_allocation_pool(0);
        }
        query.add_allocation_pool(Some(&pool), size, MIN_BUFFERS, 0);
        self.parent_decide_allocation(query)
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let live = lock(&self.settings).is_live;
            let Some(format) = lock(&self.seen).format else {
                return BaseSrcImplExt::parent_query(self, query);
            };
            // A frame is handed out when it is complete: up to one frame
            // period after its capture time.
            let min = if format.fps_num > 0 {
                gst::ClockTime::SECOND.mul_div_floor(u64::from(format.fps_den), u64::from(format.fps_num))
            } else {
                Some(gst::ClockTime::ZERO)
            };
            q.set(live, min.unwrap_or(gst::ClockTime::ZERO), gst::ClockTime::NONE);
            return true;
        }
        BaseSrcImplExt::parent_query(self, query)
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        // Relaxed: a standalone flag `create` polls at least every POLL; no data is published through it.
        self.flushing.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        // Relaxed: see `unlock`.
        self.flushing.store(false, Ordering::Relaxed);
        Ok(())
    }
}

impl PushSrcImpl for ShmcastSrc {
    fn create(&self, _buffer: Option<&mut gst::BufferRef>) -> Result<CreateSuccess, gst::FlowError> {
        loop {
            // Relaxed: see `unlock`.
            if self.flushing.load(Ordering::Relaxed) {
                return Err(gst::FlowError::Flushing);
            }
            match self.step()? {
                Step::Again => {}
                Step::Push(buffer) => {
                    lock(&self.counters).pushed += 1;
                    return Ok(CreateSuccess::NewBuffer(buffer));
                }
                Step::Renegotiate(new_caps) => {
                    let first = lock(&self.caps).replace(new_caps.clone()).is_none();
                    if !first {
                        lock(&self.counters).renegotiations += 1;
                    }
                    gst::info!(CAT, imp = self, "negotiating {new_caps}");
                    if !self.obj().negotiate() {
                        if self.flushing.load(Ordering::Relaxed) {
                            // Relaxed: see `unlock`.
                            return Err(gst::FlowError::Flushing);
                        }
                        gst::element_imp_error!(
                            self,
                            gst::CoreError::Negotiation,
                            ("downstream does not accept the ring's format {}", new_caps)
                        );
                        return Err(gst::FlowError::NotNegotiated);
                    }
                    self.prefault();
                }
            }
        }
    }
}
