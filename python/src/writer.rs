//! The producer side: `Writer.publish(img)` (one copy, done by numpy) and
//! `with w.frame() as buf:` (fill the slot in place).
//!
//! The ring protocol (begin, commit, close) is `shm_proto::Writer`'s. The
//! arrays handed to numpy point into a second mapping of the same segment that
//! this module makes ([`SlotMap`]) and that every such array keeps alive: so
//! `close()` closes the stream at once (readers see it closed, the name is
//! removed) even while an array from `frame()` is still referenced, and that
//! array never points into unmapped memory. Both mappings are `MAP_SHARED`
//! views of the same pages, so bytes written through one are the bytes the
//! other publishes.

use std::ffi::c_void;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyTuple, PyType};
use shm_proto::layout::{Geometry, PAGE};
use shm_proto::{CreateOptions, FrameMeta, PixelFormat, VideoFormat};

use crate::view::{self, Keep, View};
use crate::{Closed, Error, FormatError};

/// The writer's own read-write mapping of its segment, for the arrays it hands out.
pub(crate) struct SlotMap {
    base: NonNull<u8>,
    len: usize,
    geometry: Geometry,
}

// SAFETY: a pointer to a shared mapping this value owns; the bytes are only
// reached through numpy arrays, and the mapping is unmapped once, in `drop`.
unsafe impl Send for SlotMap {}
// SAFETY: see `Send`; `&SlotMap` only gives out addresses.
unsafe impl Sync for SlotMap {}

impl SlotMap {
    /// Maps the segment `w` created and checks it is that segment (same epoch,
    /// same geometry) by decoding its header.
    fn map(w: &shm_proto::Writer) -> Result<SlotMap, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(w.path())
            .map_err(|e| format!("open {}: {e}", w.path().display()))?;
        let size = file.metadata().map_err(|e| format!("fstat: {e}"))?.len();
        if size != w.total_size() {
            return Err(format!("{} is {size} bytes, expected {}", w.path().display(), w.total_size()));
        }
        let len = usize::try_from(size).map_err(|_| "segment larger than the address space".to_string())?;
        // SAFETY: a fresh shared mapping at an address the kernel picks; it
        // aliases no Rust object. The fd is valid for the call; the mapping
        // outlives it.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                // Pre-faulted like the writer's own mapping: no page faults mid-frame.
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        let mut map = SlotMap {
            base: NonNull::new(raw.cast::<u8>()).ok_or("mmap returned null")?,
            len,
            geometry: Geometry { slots: 0, slot_stride: 0, data_offset: 0, data_align: 0, total_size: 0 },
        };
        // SAFETY: the first page is inside the mapping (`len` ≥ 2 pages, checked
        // by the writer's own layout); the header is written once before the
        // segment is published and never after, so nobody writes it while we read.
        let header = unsafe { std::slice::from_raw_parts(map.base.as_ptr(), PAGE as usize) };
        let decoded = shm_proto::header::decode_bytes(header, size).map_err(|e| e.to_string())?;
        if decoded.identity.epoch != w.epoch() || decoded.geometry.total_size != size {
            return Err(format!("{} was replaced by another segment", w.path().display()));
        }
        map.geometry = decoded.geometry;
        Ok(map)
    }

    /// First byte of the data of sequence `seq`'s slot.
    fn slot(&self, seq: u64) -> *mut u8 {
        let off = self.geometry.data_offset(seq & (self.geometry.slots - 1));
        debug_assert!(off + self.geometry.slot_stride <= self.len as u64);
        self.base.as_ptr().wrapping_add(off as usize)
    }
}

impl Drop for SlotMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once; no array points into
        // it any more (each holds an `Arc<SlotMap>`).
        unsafe { libc::munmap(self.base.as_ptr().cast::<c_void>(), self.len) };
    }
}

/// A writer and the slot it has open, kept together because a Python object
/// cannot hold a Rust borrow.
struct Core {
    /// Declared before `writer`, and cleared before `writer` is used again or
    /// dropped: it borrows `*writer` mutably.
    slot: Option<shm_proto::SlotWriter<'static>>,
    /// Owned (from `Box::leak`), freed in `drop`.
    writer: NonNull<shm_proto::Writer>,
    map: Arc<SlotMap>,
}

// SAFETY: `Core` is only reached through the `Mutex` in `Writer`, so one
// thread at a time uses it; the slot borrows only the writer this same `Core`
// owns, so the two move between threads together.
unsafe impl Send for Core {}

impl Core {
    /// The writer, for use while no slot is open.
    fn writer(&mut self) -> PyResult<&mut shm_proto::Writer> {
        if self.slot.is_some() {
            return Err(Error::new_err("a frame() of this writer is still open; finish its `with` block first"));
        }
        // SAFETY: valid until `drop` (from `Box::leak`); no slot is open, so
        // this is the only borrow, and it is tied to `&mut self`.
        Ok(unsafe { self.writer.as_mut() })
    }

    /// Opens the next slot; returns its sequence number.
    fn begin(&mut self) -> PyResult<u64> {
        self.writer()?;
        // SAFETY: as in `writer`; the borrow is not tied to `self` so that the
        // slot made from it can be stored in `self.slot`, which is cleared
        // before the writer is borrowed again or freed.
        let w: &'static mut shm_proto::Writer = unsafe { &mut *self.writer.as_ptr() };
        let s = w.begin();
        let seq = s.seq();
        self.slot = Some(s);
        Ok(seq)
    }

    /// Publishes the open slot.
    fn commit(&mut self, meta: FrameMeta) -> PyResult<u64> {
        match self.slot.take() {
            Some(s) => Ok(s.commit(meta)),
            None => Err(Error::new_err("no frame() is open")),
        }
    }

    /// A numpy array over the open slot `seq` with `layout`, writable.
    fn array<'py>(&self, py: Python<'py>, seq: u64, layout: view::Layout) -> PyResult<Bound<'py, PyAny>> {
        assert!(layout.end() as u64 <= self.map.geometry.slot_stride, "layout within the slot");
        // SAFETY: the slot's data is `slot_stride` bytes inside the mapping
        // (geometry decoded from this very segment) and `layout` lies within it
        // (asserted above). The array holds an `Arc` of the mapping, so it stays
        // mapped, read-write, while the array exists.
        unsafe { View::ndarray(py, Keep::Writer(Arc::clone(&self.map)), self.map.slot(seq), layout, false) }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // An open slot is abandoned (never published).
        self.slot = None;
        // SAFETY: from `Box::leak` in `Writer::new`, freed once here, after the
        // only borrow of it (`slot`) was cleared.
        drop(unsafe { Box::from_raw(self.writer.as_ptr()) });
    }
}

fn lock_core<'a>(m: &'a Mutex<Option<Core>>, name: &str) -> PyResult<MutexGuard<'a, Option<Core>>> {
    crate::try_lock(m, || format!("writer of stream {name} is in use by another thread"))
}

/// A shape as Python prints it: `(480, 640, 3)`, `(5,)`.
fn py_shape(s: &[usize]) -> String {
    let parts: Vec<String> = s.iter().map(usize::to_string).collect();
    if parts.len() == 1 { format!("({},)", parts[0]) } else { format!("({})", parts.join(", ")) }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A frame rate as a fraction: whole numbers exactly, others to 1/1000.
fn fps_fraction(fps: f64) -> PyResult<(u32, u32)> {
    if !(fps.is_finite() && (0.0..=1000.0).contains(&fps)) {
        return Err(FormatError::new_err(format!("frame rate {fps} is out of range (0 to 1000)")));
    }
    if fps.fract() == 0.0 { Ok((fps as u32, 1)) } else { Ok(((fps * 1000.0).round() as u32, 1000)) }
}

/// Writer(name, width, height, format="rgb24", fps=30, slots=8, *, max_payload=None, overlay=None, mode=0o640, hugepages=False)
/// --
///
/// Creates the stream ``name`` (``/dev/shm/shmcast.<name>``) and publishes
/// frames into it; every shmcast reader (Python or the Rust tools) can use them.
/// Raises :class:`InUse` if a live producer owns the name (a dead one's stream
/// is replaced), :class:`FormatError` for a bad format or size. ``overlay``
/// ``(x, y, w, h)``: a region you draw your own overlay into, which consumers
/// analysing pixels (``shmcast-detect``) then ignore.
///
/// Publish with :meth:`publish` (one copy) or fill a slot in place with
/// ``with w.frame() as buf:``. :meth:`close` (or garbage collection, or leaving
/// a ``with Writer(...)`` block, or interpreter exit) closes the stream: readers
/// see it closed and the name is removed.
#[pyclass(module = "shmcast", name = "Writer", frozen, weakref, subclass)]
pub(crate) struct Writer {
    /// `None` once closed.
    core: Mutex<Option<Core>>,
    name: String,
    format: VideoFormat,
    slots: u64,
    path: String,
    epoch: u64,
}

stream_properties!(Writer);

impl Writer {
    /// The open writer, locked; `Closed` once closed.
    fn core(&self) -> PyResult<MappedGuard<'_>> {
        let g = lock_core(&self.core, &self.name)?;
        if g.is_none() {
            return Err(Closed::new_err(format!("writer of stream {} is closed", self.name)));
        }
        Ok(MappedGuard(g))
    }

    fn meta(&self, seq: u64, frame_id: Option<u64>, capture_ns: Option<u64>, len: u64) -> FrameMeta {
        FrameMeta::new(frame_id.unwrap_or(seq), capture_ns.unwrap_or_else(now_ns), len)
    }

    /// Checks that `src` is a uint8 ndarray of exactly `shape`, or says what was wrong.
    fn check_array(&self, src: &Bound<'_, PyAny>, shape: &[usize]) -> PyResult<()> {
        let py = src.py();
        let ndarray = crate::numpy_fn(py, "ndarray")?;
        let wrong = |got: String| {
            FormatError::new_err(format!(
                "stream {} is {} {}x{}: publish() needs a uint8 numpy array of shape {}, got {got}",
                self.name,
                self.format.pixel,
                self.format.width,
                self.format.height,
                py_shape(shape)
            ))
        };
        if !src.is_instance(&ndarray)? {
            return Err(wrong(src.get_type().name()?.to_string()));
        }
        let got_shape: Vec<usize> = src.getattr("shape")?.extract()?;
        let dtype = src.getattr("dtype")?.str()?.to_string();
        if got_shape != shape || dtype != "uint8" {
            return Err(wrong(format!("{dtype} {}", py_shape(&got_shape))));
        }
        Ok(())
    }

    /// The array layout of a whole slot (mjpeg: its whole payload area).
    fn slot_layout(&self) -> PyResult<view::Layout> {
        if self.format.pixel.is_compressed() {
            Ok(view::Layout { offset: 0, shape: vec![self.format.frame_size as usize], strides: vec![1] })
        } else {
            view::slot(&self.format)
        }
    }
}

/// A locked, open writer.
struct MappedGuard<'a>(MutexGuard<'a, Option<Core>>);

impl std::ops::Deref for MappedGuard<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        self.0.as_ref().expect("checked open")
    }
}

impl std::ops::DerefMut for MappedGuard<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        self.0.as_mut().expect("checked open")
    }
}

#[pymethods]
impl Writer {
    #[new]
    #[pyo3(signature = (name, width, height, format = "rgb24", fps = 30.0, slots = 8, *, max_payload = None, overlay = None, mode = 0o640, hugepages = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        width: u32,
        height: u32,
        format: &str,
        fps: f64,
        slots: u32,
        max_payload: Option<u64>,
        overlay: Option<(u32, u32, u32, u32)>,
        mode: u32,
        hugepages: bool,
    ) -> PyResult<Writer> {
        let pixel: PixelFormat =
            format.parse().map_err(|e: shm_proto::FormatError| FormatError::new_err(e.to_string()))?;
        let (num, den) = fps_fraction(fps)?;
        let mut vf =
            VideoFormat::new(width, height, pixel, num, den).map_err(|e| FormatError::new_err(e.to_string()))?;
        if let Some(b) = max_payload {
            vf = vf.with_max_payload(b).map_err(|e| FormatError::new_err(e.to_string()))?;
        }
        let overlay = overlay.map(|(x, y, w, h)| shm_proto::Rect::new(x, y, w, h));
        let opts = CreateOptions { slots, mode, hugepages, overlay, ..CreateOptions::default() };
        let w = shm_proto::Writer::create(name, vf, &opts).map_err(crate::create_error)?;
        let map = SlotMap::map(&w)
            .map_err(|e| Error::new_err(format!("cannot create stream {}: map its slots: {e}", w.name())))?;
        w.set_live();
        Ok(Writer {
            name: w.name().to_string(),
            format: vf,
            slots: u64::from(w.slots()),
            path: w.path().display().to_string(),
            epoch: w.epoch(),
            core: Mutex::new(Some(Core {
                slot: None,
                writer: NonNull::from(Box::leak(Box::new(w))),
                map: Arc::new(map),
            })),
        })
    }

    /// publish(img, frame_id=None, capture_ns=None) -> int
    /// --
    ///
    /// Publishes ``img`` (one copy, by numpy): a uint8 ndarray of the stream's
    /// shape — (H, W, 3) rgb24/bgr24, (H, W) gray8, (H, W, 2) yuyv, (H*3//2, W)
    /// nv12/i420 — in any memory layout; for mjpeg, any bytes-like JPEG.
    /// ``frame_id`` defaults to the sequence number, ``capture_ns`` to now (Unix ns).
    /// Returns the frame's sequence number. Raises :class:`FormatError` for an
    /// array of another shape or dtype, :class:`Closed` after :meth:`close`.
    #[pyo3(signature = (img, frame_id = None, capture_ns = None))]
    fn publish(
        &self,
        py: Python<'_>,
        img: &Bound<'_, PyAny>,
        frame_id: Option<u64>,
        capture_ns: Option<u64>,
    ) -> PyResult<u64> {
        let (src, layout, len) = if self.format.pixel.is_compressed() {
            let src = crate::numpy_fn(py, "frombuffer")?.call1((img, "u1"))?;
            let n: usize = src.getattr("size")?.extract()?;
            if n == 0 || n as u64 > self.format.frame_size {
                return Err(FormatError::new_err(format!(
                    "stream {} takes {} frames of 1 to {} bytes, got {n}",
                    self.name, self.format.pixel, self.format.frame_size
                )));
            }
            (src, view::Layout { offset: 0, shape: vec![n], strides: vec![1] }, n as u64)
        } else {
            let layout = view::slot(&self.format)?;
            self.check_array(img, &layout.shape)?;
            (img.clone(), layout, self.format.frame_size)
        };
        let mut core = self.core()?;
        let seq = core.begin()?;
        let dst = core.array(py, seq, layout)?;
        // numpy copies (releasing the GIL for large arrays); on failure the slot is abandoned.
        let copied = crate::numpy_fn(py, "copyto")?.call1((&dst, &src));
        dst.getattr("flags")?.setattr("writeable", false)?;
        if let Err(e) = copied {
            core.slot = None;
            return Err(e);
        }
        core.commit(self.meta(seq, frame_id, capture_ns, len))
    }

    /// frame(frame_id=None, capture_ns=None, length=None) -> FrameSlot
    /// --
    ///
    /// Zero-copy publishing: ``with w.frame() as buf: ...`` gives the next slot
    /// as a writable uint8 array of the stream's shape (for mjpeg: the whole
    /// payload area; say how many bytes you wrote with ``length``). Leaving the
    /// block publishes it; an exception abandons it. After the block ``buf`` is
    /// read-only (writes raise ``ValueError``) and must not be used: the writer
    /// reuses the slot. ``capture_ns`` defaults to the time the block was entered.
    #[pyo3(signature = (frame_id = None, capture_ns = None, length = None))]
    fn frame(
        slf: &Bound<'_, Writer>,
        frame_id: Option<u64>,
        capture_ns: Option<u64>,
        length: Option<u64>,
    ) -> PyResult<FrameSlot> {
        let w = slf.get();
        let len = match length {
            Some(n) if n == 0 || n > w.format.frame_size => {
                return Err(PyValueError::new_err(format!(
                    "length must be 1 to {} bytes, got {n}",
                    w.format.frame_size
                )));
            }
            Some(n) => n,
            None => w.format.frame_size,
        };
        Ok(FrameSlot {
            writer: slf.clone().unbind(),
            frame_id,
            capture_ns,
            len,
            open_slot: Mutex::new(None),
            entered: AtomicBool::new(false),
        })
    }

    /// close()
    /// --
    ///
    /// Closes the stream now: readers see it closed, the name is removed, and
    /// further ``publish()``/``frame()`` raise :class:`Closed`. A ``frame()``
    /// block still open is abandoned. Idempotent. Arrays from ``frame()`` that
    /// are still referenced stay valid memory (no longer part of any stream).
    fn close(&self) -> PyResult<()> {
        let core = lock_core(&self.core, &self.name)?.take();
        drop(core);
        Ok(())
    }

    fn __enter__(slf: Bound<'_, Writer>) -> Bound<'_, Writer> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }

    /// True once :meth:`close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.core.lock().map(|g| g.is_none()).unwrap_or(false)
    }
    /// The array shape ``publish()`` takes and ``frame()`` gives.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.slot_layout()?.shape)
    }
    /// Path of the segment.
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }
    /// Sequence number the next frame will get.
    #[getter]
    fn next_seq(&self) -> PyResult<u64> {
        Ok(self.core()?.writer()?.next_seq())
    }

    fn __repr__(&self) -> String {
        format!(
            "<shmcast.Writer {} {}x{} {}{}>",
            self.name,
            self.format.width,
            self.format.height,
            self.format.pixel,
            if self.closed() { " closed" } else { "" }
        )
    }
}

/// What `FrameSlot.__enter__` opened.
struct OpenSlot {
    array: Py<PyAny>,
    seq: u64,
    capture_ns: u64,
}

/// The context manager :meth:`Writer.frame` returns.
#[pyclass(module = "shmcast", name = "FrameSlot", frozen)]
pub(crate) struct FrameSlot {
    writer: Py<Writer>,
    frame_id: Option<u64>,
    capture_ns: Option<u64>,
    len: u64,
    open_slot: Mutex<Option<OpenSlot>>,
    entered: AtomicBool,
}

#[pymethods]
impl FrameSlot {
    fn __enter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        // Relaxed: a plain once-flag; the writer's lock orders everything else.
        if self.entered.swap(true, Ordering::Relaxed) {
            return Err(Error::new_err("this frame() was already entered; call w.frame() for each frame"));
        }
        let w = self.writer.get();
        let layout = w.slot_layout()?;
        let capture_ns = self.capture_ns.unwrap_or_else(now_ns);
        let mut core = w.core()?;
        let seq = core.begin()?;
        let array = match core.array(py, seq, layout) {
            Ok(a) => a.unbind(),
            Err(e) => {
                core.slot = None;
                return Err(e);
            }
        };
        *self.open_slot.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(OpenSlot { array: array.clone_ref(py), seq, capture_ns });
        Ok(array)
    }

    #[pyo3(signature = (exc_type, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyType>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let Some(open) = self.open_slot.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(false);
        };
        // The slot is about to be published and later reused: no writes through
        // this array any more.
        open.array.bind(py).getattr("flags")?.setattr("writeable", false)?;
        let w = self.writer.get();
        let mut g = lock_core(&w.core, &w.name)?;
        let Some(core) = g.as_mut() else {
            // Closed inside the block: the slot was abandoned with the writer.
            return Ok(false);
        };
        if exc_type.is_some() {
            core.slot = None;
            return Ok(false);
        }
        core.commit(w.meta(open.seq, self.frame_id, Some(open.capture_ns), self.len))?;
        Ok(false)
    }
}
