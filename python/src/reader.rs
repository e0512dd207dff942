//! Readers, frames and `follow()`.
//!
//! A [`Reader`] owns a `shm_proto::Reader` and the one frame it handed out
//! last. Python's [`Frame`] objects are handles: each remembers the reader's
//! *generation* when it was made, and `next()` starts a new generation, so a
//! frame from before it is *released*: its `array`, `planes` and `copy()`
//! raise [`StaleFrame`] and its `valid()` is `False`. Arrays already taken
//! from it keep pointing at the slot (the mapping stays mapped while they
//! exist) but show whatever the producer writes there later.

use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};
use shm_proto::{Availability, Lapped, ProducerStatus, ReaderOptions, Start, VideoFormat};

use crate::view::{self, Keep, View};
use crate::{Closed, FormatError, Overrun, SIGNAL_SLICE, StaleFrame};

/// The frame a reader handed out last.
struct Current {
    /// `None` once a failed validation consumed it.
    frame: Option<shm_proto::Frame<'static>>,
    /// First byte of the payload in the mapping, and its length.
    ptr: *const u8,
    len: usize,
}

/// A reader and the frame it lent out, kept together because a Python object
/// cannot hold a Rust borrow.
struct Core {
    /// Declared before `reader`, and cleared before `reader` is used mutably or
    /// dropped: it borrows from `*reader`.
    current: Option<Current>,
    /// Owned (from `Box::into_raw`); a raw pointer rather than a `Box` so that
    /// moving `Core` never asserts unique access while `current` borrows it.
    reader: NonNull<shm_proto::Reader>,
    /// Bumped by every `next()`: frames of older generations are released.
    generation: u64,
}

// SAFETY: `Core` is only reached through the `Mutex` in `Reader`, so one
// thread at a time uses it. Everything `current` borrows (the reader's format,
// its overrun counter, the mapping) is owned by this same `Core` (or by the
// mapping it keeps), so it moves between threads together with the borrow; the
// `Cell` counters are never touched from two threads at once.
unsafe impl Send for Core {}

impl Core {
    fn new(r: shm_proto::Reader) -> Core {
        Core { current: None, reader: NonNull::from(Box::leak(Box::new(r))), generation: 0 }
    }

    fn reader(&self) -> &shm_proto::Reader {
        // SAFETY: `reader` came from `Box::leak` and is freed only in `drop`;
        // shared access alongside the shared borrows in `current` is fine.
        unsafe { self.reader.as_ref() }
    }

    /// Releases the current frame and returns the reader for mutable use.
    /// The returned borrow is not tied to `self` (so a frame made from it can
    /// be stored in `self.current`); callers keep it inside their `&mut self`.
    fn release<'a>(&mut self) -> &'a mut shm_proto::Reader {
        self.current = None;
        self.generation += 1;
        // SAFETY: 1. the pointer is valid until `drop` (see `reader`), and the
        // caller holds `&mut self`, so the reader outlives the borrow's use;
        // 2. `current` was just cleared, so no other borrow of the reader exists
        // and this is the only one until a frame made from it is stored.
        unsafe { &mut *self.reader.as_ptr() }
    }

    fn set_current(&mut self, f: shm_proto::Frame<'_>) {
        let ptr = f.as_ptr();
        let len = f.len();
        // SAFETY: the frame borrows from `*self.reader` (made by the reference
        // `release` returned) and from the mapping the reader owns. It is
        // stored in `current`, which is cleared before the reader is borrowed
        // mutably again (`release`) and before it is freed (`drop`), so it never
        // outlives what it borrows.
        let f: shm_proto::Frame<'static> = unsafe { std::mem::transmute(f) };
        self.current = Some(Current { frame: Some(f), ptr, len });
    }

    /// The current frame, if `generation` is still the current one.
    fn current(&mut self, generation: u64) -> Option<&mut Current> {
        if generation != self.generation { None } else { self.current.as_mut() }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.current = None;
        // SAFETY: from `Box::leak` in `new`, freed once here; `current`, the
        // only borrow of it, was cleared above.
        drop(unsafe { Box::from_raw(self.reader.as_ptr()) });
    }
}

/// What waiting for a frame found.
pub(crate) enum Polled {
    Frame(Py<Frame>),
    Timeout,
    Gone(ProducerStatus),
}

fn parse_start(start: &str) -> PyResult<Start> {
    match start {
        "next" => Ok(Start::Next),
        "oldest" => Ok(Start::Oldest),
        other => Err(PyValueError::new_err(format!("start must be \"next\" or \"oldest\", got {other:?}"))),
    }
}

fn parse_lapped(lapped: &str) -> PyResult<Lapped> {
    match lapped {
        "newest" => Ok(Lapped::Newest),
        "oldest" => Ok(Lapped::Oldest),
        other => Err(PyValueError::new_err(format!("lapped must be \"newest\" or \"oldest\", got {other:?}"))),
    }
}

fn options(start: &str, lapped: &str, spin: f64) -> PyResult<ReaderOptions> {
    if !(spin.is_finite() && (0.0..=1.0).contains(&spin)) {
        return Err(PyValueError::new_err(format!("spin must be between 0 and 1 second, got {spin}")));
    }
    Ok(ReaderOptions {
        start: parse_start(start)?,
        lapped: parse_lapped(lapped)?,
        spin: Duration::from_secs_f64(spin),
        ..ReaderOptions::default()
    })
}

/// Sleeps up to `d` without the GIL, then looks at Python's signals.
fn nap(py: Python<'_>, d: Duration) -> PyResult<()> {
    py.detach(|| std::thread::sleep(d.min(SIGNAL_SLICE)));
    py.check_signals()
}

/// Opens `name`, waiting up to `timeout` (None: forever) for a live producer.
fn open_waiting(
    py: Python<'_>,
    name: &str,
    opts: &ReaderOptions,
    timeout: Option<Duration>,
) -> PyResult<shm_proto::Reader> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
        match shm_proto::Reader::open(name, opts) {
            Ok(r) if out_of_time || r.status().0.is_alive() => return Ok(r),
            Ok(_) => {}
            Err(e) if e.is_transient() && !out_of_time => {}
            Err(e) => return Err(crate::open_error(e)),
        }
        nap(py, Duration::from_millis(20))?;
    }
}

/// Counters of a reader (or of every reader a ``follow()`` used).
#[pyclass(module = "shmcast", name = "ReaderStats", frozen, get_all, eq)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReaderStats {
    /// Frames handed out.
    frames: u64,
    /// Frames the producer overwrote before this reader got to them.
    lost: u64,
    /// Frames handed out that failed validation (``valid()`` False or ``copy()`` raising Overrun).
    overruns: u64,
}

impl From<shm_proto::ReaderStats> for ReaderStats {
    fn from(s: shm_proto::ReaderStats) -> Self {
        ReaderStats { frames: s.frames, lost: s.lost, overruns: s.overruns }
    }
}

#[pymethods]
impl ReaderStats {
    fn __repr__(&self) -> String {
        format!("ReaderStats(frames={}, lost={}, overruns={})", self.frames, self.lost, self.overruns)
    }
}

/// Reader(name, start="next", attach_timeout=0.0, spin=0.0, lapped="newest")
/// --
///
/// A read-only view of the stream ``name`` (the segment ``/dev/shm/shmcast.<name>``).
///
/// ``start``: ``"next"`` (default) starts at the next frame published,
/// ``"oldest"`` at the oldest frame still in the ring.
/// ``lapped``: where a reader the producer has lapped lands: ``"newest"``
/// (default; a slow reader still gets intact frames) or ``"oldest"`` (loses the
/// fewest frames, but under overload most of them tear). Either way
/// ``Frame.lost`` and ``stats.lost`` count exactly the frames skipped.
/// ``attach_timeout``: seconds to wait for a live producer; ``0`` (default)
/// fails at once with :class:`NotFound`, ``None`` waits for ever (Ctrl-C
/// interrupts). ``spin``: seconds to busy-poll before sleeping (lower latency,
/// costs a core; default 0).
///
/// Frames come from :meth:`next` (or by iterating the reader, which ends when the
/// producer closes the stream). One frame at a time: ``next()`` releases the frame
/// before it (see :class:`Frame`). A reader and its frames are meant for one thread.
#[pyclass(module = "shmcast", name = "Reader", frozen)]
pub(crate) struct Reader {
    core: Mutex<Core>,
    name: String,
    format: VideoFormat,
    epoch: u64,
    pid: u32,
    slots: u64,
}

stream_properties!(Reader);

impl Reader {
    pub(crate) fn from_inner(r: shm_proto::Reader) -> Reader {
        Reader {
            name: r.name().to_string(),
            format: *r.format(),
            epoch: r.epoch(),
            pid: r.identity().pid,
            slots: r.slots(),
            core: Mutex::new(Core::new(r)),
        }
    }

    fn lock(&self) -> PyResult<MutexGuard<'_, Core>> {
        crate::try_lock(&self.core, || {
            format!("reader of stream {} is in use by another thread (use one reader per thread)", self.name)
        })
    }

    /// Releases the current frame, then waits up to `timeout` for the next one.
    pub(crate) fn poll(slf: &Bound<'_, Reader>, timeout: Option<Duration>) -> PyResult<Polled> {
        let py = slf.py();
        let this = slf.get();
        let mut core = this.lock()?;
        let reader = core.release();
        let generation = core.generation;
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let slice = match deadline {
                None => SIGNAL_SLICE,
                Some(d) => d.saturating_duration_since(Instant::now()).min(SIGNAL_SLICE),
            };
            // The wait runs without the GIL; the reader is ours alone (we hold the lock).
            let r = &mut *reader;
            match py.detach(move || r.wait(slice)) {
                Availability::Ready => {
                    if let Some(f) = reader.try_next() {
                        let meta = *f.meta();
                        let seq = f.seq();
                        let lost = f.lost_before();
                        core.set_current(f);
                        let frame = Frame {
                            reader: slf.clone().unbind(),
                            generation,
                            seq,
                            meta,
                            lost,
                            array: PyOnceLock::new(),
                        };
                        drop(core);
                        return Ok(Polled::Frame(Py::new(py, frame)?));
                    }
                }
                Availability::Gone(s) => return Ok(Polled::Gone(s)),
                Availability::Timeout => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Polled::Timeout);
            }
            py.check_signals()?;
        }
    }

    /// Releases the current frame (a follower moving to another reader).
    pub(crate) fn release_current(&self) {
        if let Ok(mut c) = self.core.try_lock() {
            c.release();
        }
    }

    pub(crate) fn stats_inner(&self) -> PyResult<shm_proto::ReaderStats> {
        Ok(self.lock()?.reader().stats())
    }

    fn is_current_object(&self) -> PyResult<bool> {
        Ok(self.lock()?.reader().is_current())
    }

    fn alive(&self) -> PyResult<bool> {
        Ok(self.lock()?.reader().status().0.is_alive())
    }
}

#[pymethods]
impl Reader {
    #[new]
    #[pyo3(signature = (name, start = "next", attach_timeout = Some(0.0), spin = 0.0, lapped = "newest"))]
    fn new(
        py: Python<'_>,
        name: &str,
        start: &str,
        attach_timeout: Option<f64>,
        spin: f64,
        lapped: &str,
    ) -> PyResult<Reader> {
        let opts = options(start, lapped, spin)?;
        let timeout = crate::timeout_arg(attach_timeout, "attach_timeout")?;
        Ok(Reader::from_inner(open_waiting(py, name, &opts, timeout)?))
    }

    /// next(timeout=None) -> Frame | None
    /// --
    ///
    /// The next frame in order, waiting up to ``timeout`` seconds (``None``: for
    /// ever); ``None`` on timeout. Raises :class:`Closed` once the producer has
    /// closed the stream (or died) and every frame it published was read or lost.
    /// The GIL is released while waiting and Ctrl-C raises ``KeyboardInterrupt``.
    /// Releases the frame returned before (its ``array`` then raises :class:`StaleFrame`).
    #[pyo3(signature = (timeout = None))]
    fn next(slf: &Bound<'_, Reader>, timeout: Option<f64>) -> PyResult<Option<Py<Frame>>> {
        let timeout = crate::timeout_arg(timeout, "timeout")?;
        match Reader::poll(slf, timeout)? {
            Polled::Frame(f) => Ok(Some(f)),
            Polled::Timeout => Ok(None),
            Polled::Gone(s) => Err(Closed::new_err(crate::closed_message(&slf.get().name, s))),
        }
    }

    fn __iter__(slf: Bound<'_, Reader>) -> Bound<'_, Reader> {
        slf
    }

    /// Frames until the producer closes the stream (then the loop ends).
    fn __next__(slf: &Bound<'_, Reader>) -> PyResult<Option<Py<Frame>>> {
        match Reader::poll(slf, None)? {
            Polled::Frame(f) => Ok(Some(f)),
            Polled::Timeout => Err(PyRuntimeError::new_err("unreachable: no timeout")),
            Polled::Gone(_) => Ok(None),
        }
    }

    /// Counters: frames handed out, frames lost (overwritten before this reader
    /// got to them), overruns (frames that failed validation).
    #[getter]
    fn stats(&self) -> PyResult<ReaderStats> {
        Ok(self.stats_inner()?.into())
    }

    /// The producer's pid.
    #[getter]
    fn pid(&self) -> u32 {
        self.pid
    }
    /// The region ``(x, y, w, h)`` the producer draws its own overlay into (a
    /// status band, a clock), which pixel-analysing code should ignore; None if none.
    #[getter]
    fn overlay(&self) -> PyResult<Option<(u32, u32, u32, u32)>> {
        Ok(self.lock()?.reader().overlay().map(|r| (r.x, r.y, r.w, r.h)))
    }
    /// Producer state: "starting", "live", "closed" or "stale".
    #[getter]
    fn state(&self) -> PyResult<&'static str> {
        Ok(self.lock()?.reader().status().0.as_str())
    }

    /// info() -> dict
    /// --
    ///
    /// The stream as ``shmcast-inspect --json`` shows it (without the measured rate).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let i = self.lock()?.reader().info();
        crate::info_dict(py, &i)
    }

    fn __repr__(&self) -> String {
        format!(
            "<shmcast.Reader {} {}x{} {} epoch {:016x}>",
            self.name, self.format.width, self.format.height, self.format.pixel, self.epoch
        )
    }
}

/// A frame, in place in the shared memory.
///
/// ``array`` is a read-only numpy view INTO the mapping (no copy). The producer
/// never waits for readers, so it may overwrite the slot while you use it:
/// compute, then call :meth:`valid` — a result counts only if it returns True.
/// :meth:`copy` makes an independent array and raises :class:`Overrun` if no
/// intact copy could be made.
///
/// A frame is *released* by the next ``next()`` on its reader (or the next
/// iteration of ``follow()``): after that ``array``, ``planes`` and ``copy()``
/// raise :class:`StaleFrame`, ``valid()`` returns False, and arrays taken from
/// it before show whatever the producer writes to that slot later (their
/// memory stays mapped; they never crash). The metadata stays readable.
#[pyclass(module = "shmcast", name = "Frame", frozen)]
pub(crate) struct Frame {
    reader: Py<Reader>,
    generation: u64,
    seq: u64,
    meta: shm_proto::FrameMeta,
    lost: u64,
    array: PyOnceLock<Py<PyAny>>,
}

impl Frame {
    fn stale(&self, r: &Reader) -> PyErr {
        StaleFrame::new_err(format!(
            "frame {} of stream {} was released by a later next() on its reader; copy() it before calling next() to keep it",
            self.meta.frame_id, r.name
        ))
    }

    /// The payload address and length, if the frame is still current.
    fn payload(&self, r: &Reader) -> PyResult<(*const u8, usize)> {
        let mut core = r.lock()?;
        match core.current(self.generation) {
            Some(c) => Ok((c.ptr, c.len)),
            None => Err(self.stale(r)),
        }
    }

    fn view<'py>(
        &self,
        py: Python<'py>,
        layout: view::Layout,
        ptr: *const u8,
        len: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        if layout.end() > len {
            return Err(FormatError::new_err(format!(
                "frame {} of stream {} has {len} bytes, fewer than its format needs ({})",
                self.meta.frame_id,
                self.reader.get().name,
                layout.end()
            )));
        }
        // SAFETY: `ptr..ptr + len` is the payload inside the reader's mapping
        // (shm_proto bounds it by the frame size, which the validated header
        // places inside the mapping), and `layout.end() <= len` was checked above.
        // The view keeps the reader object alive, and with it the mapping; the
        // mapping is read-only and so is the view.
        unsafe { View::ndarray(py, Keep::Reader(self.reader.clone_ref(py)), ptr, layout, true) }
    }
}

#[pymethods]
impl Frame {
    /// Read-only numpy uint8 view of the frame INTO the shared memory: (H, W, 3)
    /// for rgb24/bgr24, (H, W) gray8, (H, W, 2) yuyv, (H*3//2, W) nv12/i420,
    /// (len,) mjpeg. Meaningful only while :meth:`valid` says so.
    #[getter]
    fn array(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let r = self.reader.get();
        let (ptr, len) = self.payload(r)?;
        let a = self.array.get_or_try_init(py, || {
            let layout = view::array(&r.format, len)?;
            self.view(py, layout, ptr, len).map(Bound::unbind)
        })?;
        Ok(a.clone_ref(py))
    }

    /// The planes as separate read-only views: (Y, UV (H/2, W/2, 2)) for nv12,
    /// (Y, U, V) for i420, a one-element tuple for packed formats and mjpeg.
    #[getter]
    fn planes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let r = self.reader.get();
        let (ptr, len) = self.payload(r)?;
        let arrays = view::planes(&r.format, len)
            .into_iter()
            .map(|l| self.view(py, l, ptr, len))
            .collect::<PyResult<Vec<_>>>()?;
        PyTuple::new(py, arrays)
    }

    /// valid() -> bool
    /// --
    ///
    /// The seqlock check, after use: True if the producer has not touched this
    /// frame since it was handed out, so what you computed from ``array`` holds.
    /// False counts one overrun (once) and stays False. False for a released frame.
    fn valid(&self) -> PyResult<bool> {
        let r = self.reader.get();
        let mut core = r.lock()?;
        let Some(cur) = core.current(self.generation) else {
            return Ok(false);
        };
        let Some(f) = cur.frame.take() else {
            return Ok(false);
        };
        if f.is_intact() {
            cur.frame = Some(f);
            return Ok(true);
        }
        // Counts the overrun; the frame is consumed and stays invalid.
        Ok(f.validate())
    }

    /// copy() -> numpy.ndarray
    /// --
    ///
    /// An independent, writable copy with the shape of ``array``, checked intact
    /// after the copy. Raises :class:`Overrun` if the producer overwrote the frame
    /// first (the reader is too slow), :class:`StaleFrame` if the frame was released.
    fn copy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let r = self.reader.get();
        let overrun = || {
            Overrun::new_err(format!(
                "frame {} of stream {} was overwritten by the producer before it could be copied (reader too slow)",
                self.meta.frame_id, r.name
            ))
        };
        // numpy copies the frame's view into a new C-contiguous array (no
        // zero-filled buffer first, padding dropped), then the seqlock check
        // decides, as `Frame::copy_to` would after its own copy.
        let view = self.array(py)?;
        let copy = view.bind(py).call_method0("copy")?;
        let mut core = r.lock()?;
        let Some(cur) = core.current(self.generation) else {
            return Err(self.stale(r));
        };
        let Some(f) = cur.frame.take() else {
            return Err(overrun());
        };
        if f.is_intact() {
            cur.frame = Some(f);
            Ok(copy)
        } else {
            // Counts the overrun; the frame stays consumed (valid() is False from now on).
            f.validate();
            Err(overrun())
        }
    }

    /// The source's frame id (monotonic within a producer run).
    #[getter]
    fn frame_id(&self) -> u64 {
        self.meta.frame_id
    }
    /// Capture time, Unix ns.
    #[getter]
    fn capture_ns(&self) -> u64 {
        self.meta.capture_ns
    }
    /// Publish time, Unix ns (when the producer committed the frame).
    #[getter]
    fn publish_ns(&self) -> u64 {
        self.meta.publish_ns
    }
    /// Frames lost (overwritten before this reader got to them) just before this one.
    #[getter]
    fn lost(&self) -> u64 {
        self.lost
    }
    /// Ring sequence number (0-based within the producer run).
    #[getter]
    fn seq(&self) -> u64 {
        self.seq
    }
    /// Payload bytes.
    #[getter]
    fn nbytes(&self) -> u64 {
        self.meta.len
    }
    /// Frame flags (1: keyframe, 2: discontinuity before this frame).
    #[getter]
    fn flags(&self) -> u32 {
        self.meta.flags
    }
    /// Exposure in µs, if the source knows it.
    #[getter]
    fn exposure_us(&self) -> Option<u32> {
        self.meta.exposure_us
    }
    /// Gain in dB, if the source knows it.
    #[getter]
    fn gain_db(&self) -> Option<f32> {
        self.meta.gain_db
    }
    /// Sensor temperature in °C, if the source knows it.
    #[getter]
    fn temperature_c(&self) -> Option<f32> {
        self.meta.temperature_c
    }
    /// The reader this frame came from.
    #[getter]
    fn reader(&self, py: Python<'_>) -> Py<Reader> {
        self.reader.clone_ref(py)
    }
    /// Pixel format name.
    #[getter]
    fn format(&self) -> &'static str {
        self.reader.get().format.pixel.name()
    }
    /// Width in pixels.
    #[getter]
    fn width(&self) -> u32 {
        self.reader.get().format.width
    }
    /// Height in pixels.
    #[getter]
    fn height(&self) -> u32 {
        self.reader.get().format.height
    }
    /// True until a later ``next()`` on the reader releases this frame.
    #[getter]
    fn current(&self) -> PyResult<bool> {
        Ok(self.reader.get().lock()?.current(self.generation).is_some())
    }

    fn __repr__(&self) -> String {
        let r = self.reader.get();
        format!(
            "<shmcast.Frame {} id {} seq {} {}x{} {} lost {}>",
            r.name, self.meta.frame_id, self.seq, r.format.width, r.format.height, r.format.pixel, self.lost
        )
    }
}

struct FollowState {
    reader: Option<Py<Reader>>,
    detached: bool,
    previous: shm_proto::ReaderStats,
    attach_count: u64,
}

/// follow(name, start="next", spin=0.0, lapped="newest") -> Follow
/// --
///
/// Frames of ``name`` for ever: waits for the producer, follows its restarts
/// (and format changes) and never ends by itself; Ctrl-C stops it. After a
/// restart it starts at the oldest frame of the new producer. Each iteration
/// releases the frame before (as :meth:`Reader.next` does).
#[pyfunction]
#[pyo3(signature = (name, start = "next", spin = 0.0, lapped = "newest"))]
pub(crate) fn follow(name: &str, start: &str, spin: f64, lapped: &str) -> PyResult<Follow> {
    shm_proto::StreamName::new(name).map_err(|e| crate::Error::new_err(e.to_string()))?;
    Ok(Follow {
        name: name.to_string(),
        opts: options(start, lapped, spin)?,
        state: Mutex::new(FollowState {
            reader: None,
            detached: false,
            previous: shm_proto::ReaderStats::default(),
            attach_count: 0,
        }),
    })
}

/// The iterator :func:`follow` returns.
#[pyclass(module = "shmcast", name = "Follow", frozen)]
pub(crate) struct Follow {
    name: String,
    opts: ReaderOptions,
    state: Mutex<FollowState>,
}

impl Follow {
    fn lock(&self) -> PyResult<MutexGuard<'_, FollowState>> {
        crate::try_lock(&self.state, || format!("follow({}) is in use by another thread", self.name))
    }

    /// Tries to (re)open the stream; true if a reader is attached afterwards.
    fn try_attach(&self, py: Python<'_>, st: &mut FollowState) -> PyResult<bool> {
        let start = if st.attach_count == 0 { self.opts.start } else { Start::Oldest };
        let opts = ReaderOptions { start, ..self.opts.clone() };
        let r = match shm_proto::Reader::open(&self.name, &opts) {
            Ok(r) => r,
            Err(e) if e.is_transient() => return Ok(false),
            Err(e) => return Err(crate::open_error(e)),
        };
        if !r.status().0.is_alive() {
            return Ok(false);
        }
        if let Some(cur) = &st.reader
            && cur.get().epoch == r.epoch()
        {
            // The same producer came back (it was paused): resume where we were.
            st.detached = false;
            return Ok(true);
        }
        if let Some(old) = st.reader.take() {
            old.get().release_current();
            st.previous = st.previous + old.get().stats_inner()?;
        }
        st.attach_count += 1;
        st.reader = Some(Py::new(py, Reader::from_inner(r))?);
        st.detached = false;
        Ok(true)
    }
}

#[pymethods]
impl Follow {
    fn __iter__(slf: Bound<'_, Follow>) -> Bound<'_, Follow> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<Frame>> {
        let mut st = self.lock()?;
        loop {
            if (st.reader.is_none() || st.detached) && !self.try_attach(py, &mut st)? {
                nap(py, Duration::from_millis(20))?;
                continue;
            }
            let r = st.reader.as_ref().expect("attached").clone_ref(py);
            match Reader::poll(r.bind(py), Some(Duration::from_millis(200)))? {
                Polled::Frame(f) => return Ok(f),
                Polled::Gone(_) => st.detached = true,
                Polled::Timeout => {
                    // A new producer may have replaced a stale object before we saw the old one die.
                    if !r.get().is_current_object()? || !r.get().alive()? {
                        st.detached = true;
                    }
                }
            }
        }
    }

    /// Counters over every producer followed so far.
    #[getter]
    fn stats(&self) -> PyResult<ReaderStats> {
        let st = self.lock()?;
        let cur = match &st.reader {
            Some(r) => r.get().stats_inner()?,
            None => shm_proto::ReaderStats::default(),
        };
        Ok((st.previous + cur).into())
    }

    /// The reader of the producer followed now (None before the first attach).
    #[getter]
    fn reader(&self, py: Python<'_>) -> PyResult<Option<Py<Reader>>> {
        Ok(self.lock()?.reader.as_ref().map(|r| r.clone_ref(py)))
    }

    /// How many producers (epochs) were attached so far.
    #[getter]
    fn attach_count(&self) -> PyResult<u64> {
        Ok(self.lock()?.attach_count)
    }

    /// Stream name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    fn __repr__(&self) -> String {
        format!("<shmcast.follow {}>", self.name)
    }
}
