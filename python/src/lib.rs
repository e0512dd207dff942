//! `shmcast._native`: the Rust half of the `shmcast` Python package.
//!
//! Readers hand frames to Python as read-only numpy arrays that point INTO the
//! shared-memory mapping (no copy); writers hand out writable arrays over the
//! slot being filled. Arrays are made by numpy itself from small owner objects
//! that implement numpy's `__array_interface__` protocol, so the module needs no
//! numpy C API and one abi3 wheel serves every CPython ≥ 3.9. The owner object
//! keeps the mapping alive for as long as any array points into it.
//!
//! `unsafe` here is limited to what the binding needs and each block carries
//! its proof: keeping a borrowed `shm_proto::Frame`/`SlotWriter` next to the
//! reader/writer it borrows from (a Python object cannot hold a Rust borrow),
//! and handing raw addresses of the mapping to numpy.
#![deny(unsafe_op_in_unsafe_fn)]

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList};

/// The Python properties of the stream a [`reader::Reader`] reads or a
/// [`writer::Writer`] writes, from the fields both keep (`name`, `format`,
/// `slots`, `epoch`): one more `#[pymethods]` block for each class (pyo3's
/// `multiple-pymethods`).
macro_rules! stream_properties {
    ($class:ty) => {
        #[pyo3::pymethods]
        impl $class {
            /// Stream name.
            #[getter]
            fn name(&self) -> &str {
                &self.name
            }
            /// Frame width in pixels.
            #[getter]
            fn width(&self) -> u32 {
                self.format.width
            }
            /// Frame height in pixels.
            #[getter]
            fn height(&self) -> u32 {
                self.format.height
            }
            /// Pixel format name: rgb24, bgr24, gray8, yuyv, nv12, i420 or mjpeg.
            #[getter]
            fn format(&self) -> &'static str {
                self.format.pixel.name()
            }
            /// Nominal frame rate (0.0 when the producer did not say).
            #[getter]
            fn fps(&self) -> f64 {
                self.format.fps()
            }
            /// Bytes of one raw frame (the largest payload for mjpeg).
            #[getter]
            fn frame_size(&self) -> u64 {
                self.format.frame_size
            }
            /// Slots in the ring.
            #[getter]
            fn slots(&self) -> u64 {
                self.slots
            }
            /// The producer run's random id (a new one each time a producer
            /// creates the stream).
            #[getter]
            fn epoch(&self) -> u64 {
                self.epoch
            }
        }
    };
}

mod reader;
mod view;
mod writer;

pyo3::create_exception!(shmcast, Error, PyException, "Base class of every shmcast error.");
pyo3::create_exception!(
    shmcast,
    NotFound,
    Error,
    "No stream under that name (no producer has created it, or it was removed)."
);
pyo3::create_exception!(shmcast, InUse, Error, "A live producer already publishes under that name.");
pyo3::create_exception!(
    shmcast,
    FormatError,
    Error,
    "A format, size or array that does not fit the stream (unknown pixel format, odd size for 4:2:0, wrong shape or dtype)."
);
pyo3::create_exception!(
    shmcast,
    Overrun,
    Error,
    "The producer overwrote a frame while it was being copied: no intact copy could be made."
);
pyo3::create_exception!(
    shmcast,
    Closed,
    Error,
    "The stream's producer closed it or died (reader), or the writer was closed (writer)."
);
pyo3::create_exception!(
    shmcast,
    StaleFrame,
    Error,
    "A frame's data was used after a later `next()` on its reader released it."
);

/// Locks `m` without waiting: a lock held by another thread raises
/// `RuntimeError` with the message `busy()` (readers, writers and `follow()`
/// are for one thread each, and a thread blocking here while holding the GIL
/// could deadlock with one that waits for the GIL while holding the lock); a
/// poisoned lock is taken over, its data being left consistent by every
/// holder.
pub(crate) fn try_lock<T>(m: &Mutex<T>, busy: impl FnOnce() -> String) -> PyResult<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Ok(g),
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err(PyRuntimeError::new_err(busy())),
    }
}

/// Longest stretch spent waiting without the GIL before looking at Python's
/// signal flags: Ctrl-C raises `KeyboardInterrupt` within about this long.
pub(crate) const SIGNAL_SLICE: Duration = Duration::from_millis(20);

/// Maps a `shm_proto` open error to the matching Python exception, with the
/// message the command-line tools print after `error: `.
pub(crate) fn open_error(e: shm_proto::OpenError) -> PyErr {
    match e {
        shm_proto::OpenError::NotFound { .. } => NotFound::new_err(e.to_string()),
        _ => Error::new_err(e.to_string()),
    }
}

/// Maps a `shm_proto` create error to the matching Python exception.
pub(crate) fn create_error(e: shm_proto::CreateError) -> PyErr {
    match e {
        shm_proto::CreateError::InUse { .. } => InUse::new_err(e.to_string()),
        shm_proto::CreateError::Format(_) | shm_proto::CreateError::Slots(_) => FormatError::new_err(e.to_string()),
        _ => Error::new_err(e.to_string()),
    }
}

/// The message a reader gives when its producer is gone.
pub(crate) fn closed_message(name: &str, status: shm_proto::ProducerStatus) -> String {
    match status {
        shm_proto::ProducerStatus::Closed => format!("stream {name} was closed by its producer"),
        _ => format!("stream {name}: the producer stopped beating its heartbeat (it died or hangs)"),
    }
}

/// numpy's `asarray`, imported once.
pub(crate) fn numpy_fn<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyAny>> {
    static NUMPY: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let np = NUMPY.get_or_try_init(py, || PyModule::import(py, "numpy").map(Bound::unbind))?;
    np.bind(py).getattr(name)
}

/// Parses a timeout in seconds: `None` is forever, negatives are an error.
pub(crate) fn timeout_arg(t: Option<f64>, what: &str) -> PyResult<Option<Duration>> {
    match t {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s.min(1e9)))),
        Some(s) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{what} must be None or a number of seconds >= 0, got {s}"
        ))),
    }
}

/// A dictionary describing the stream a reader has open, as `shmcast-inspect --json` prints it
/// (without the measured frame rate).
pub(crate) fn info_dict<'py>(py: Python<'py>, i: &shm_proto::SegmentInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &i.name)?;
    d.set_item("path", i.path.display().to_string())?;
    d.set_item("state", i.status.as_str())?;
    d.set_item("pid", i.identity.pid)?;
    d.set_item("epoch", i.identity.epoch)?;
    d.set_item("start_unix_ns", i.identity.start_unix_ns)?;
    d.set_item("width", i.format.width)?;
    d.set_item("height", i.format.height)?;
    d.set_item("format", i.format.pixel.name())?;
    d.set_item("fps_nominal", i.format.fps())?;
    d.set_item("frame_size", i.format.frame_size)?;
    d.set_item("slots", i.slots)?;
    d.set_item("slot_stride", i.slot_stride)?;
    d.set_item("size_bytes", i.total_size)?;
    d.set_item("hugepages", i.hugepages)?;
    d.set_item("head", i.head)?;
    d.set_item("tail", i.tail)?;
    d.set_item("heartbeat_age_ms", i.heartbeat_age.as_millis() as u64)?;
    Ok(d)
}

/// streams() -> list[dict]
/// --
///
/// Every stream present, one dict per stream with the keys of
/// ``shmcast-inspect --json`` (name, path, state, pid, epoch, width, height,
/// format, fps_nominal, frame_size, slots, head, tail, heartbeat_age_ms, ...).
/// A segment that cannot be opened is listed as ``{"name": ..., "error": message}``.
/// Never waits.
#[pyfunction]
fn streams(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let out = PyList::empty(py);
    for n in shm_proto::segment::list() {
        match shm_proto::Reader::open(&n, &shm_proto::ReaderOptions::default()) {
            Ok(r) => out.append(info_dict(py, &r.info())?)?,
            Err(e) => {
                let d = PyDict::new(py);
                d.set_item("name", &n)?;
                d.set_item("error", e.to_string())?;
                out.append(d)?;
            }
        }
    }
    Ok(out)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("InUse", py.get_type::<InUse>())?;
    m.add("FormatError", py.get_type::<FormatError>())?;
    m.add("Overrun", py.get_type::<Overrun>())?;
    m.add("Closed", py.get_type::<Closed>())?;
    m.add("StaleFrame", py.get_type::<StaleFrame>())?;
    m.add_function(wrap_pyfunction!(streams, m)?)?;
    m.add_function(wrap_pyfunction!(reader::follow, m)?)?;
    m.add_class::<reader::Reader>()?;
    m.add_class::<reader::Frame>()?;
    m.add_class::<reader::ReaderStats>()?;
    m.add_class::<reader::Follow>()?;
    m.add_class::<writer::Writer>()?;
    m.add_class::<writer::FrameSlot>()?;
    m.add_class::<view::View>()?;
    let formats: Vec<&str> = shm_proto::PixelFormat::ALL.iter().map(|f| f.name()).collect();
    m.add("FORMATS", formats)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
