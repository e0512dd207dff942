//! Arrays over the mapping: a [`View`] describes a block of the mapping
//! (address, shape, strides, read-only or not) through numpy's
//! `__array_interface__`, and `numpy.asarray(view)` makes an ndarray over it
//! whose `base` is the view. The view owns a [`Keep`] that keeps the mapping
//! mapped, so an array can never point into unmapped memory, whatever the
//! Python code does with the reader, the writer or the frame afterwards.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use shm_proto::{PixelFormat, VideoFormat};

use crate::FormatError;

/// What keeps the memory an array points into mapped.
pub(crate) enum Keep {
    /// The reader object whose mapping it is.
    Reader(#[allow(dead_code)] Py<crate::reader::Reader>),
    /// The writer's own mapping of its segment.
    Writer(#[allow(dead_code)] Arc<crate::writer::SlotMap>),
}

/// Shape and strides of one array over a frame: `(rows, cols[, channels])`
/// with byte strides, and the offset of its first byte in the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub offset: usize,
    pub shape: Vec<usize>,
    pub strides: Vec<isize>,
}

impl Layout {
    /// One past the last byte it touches, relative to the payload.
    pub fn end(&self) -> usize {
        self.offset
            + self.shape.iter().zip(&self.strides).map(|(&n, &s)| n.saturating_sub(1) * s as usize).sum::<usize>()
            + 1
    }
}

/// Channels of the one plane of a packed format.
fn channels(p: PixelFormat) -> usize {
    match p {
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => 3,
        PixelFormat::Yuyv => 2,
        _ => 1,
    }
}

/// Array of one plane: rows × (row_bytes / channels) [× channels].
fn plane_layout(p: &shm_proto::Plane, ch: usize) -> Layout {
    let cols = p.row_bytes as usize / ch;
    let (shape, strides) = if ch == 1 {
        (vec![p.rows as usize, cols], vec![p.stride as isize, 1])
    } else {
        (vec![p.rows as usize, cols, ch], vec![p.stride as isize, ch as isize, 1])
    };
    Layout { offset: p.offset as usize, shape, strides }
}

/// The layouts of `Frame.planes`: one per plane (NV12's UV plane as
/// `(H/2, W/2, 2)`); a compressed frame is one 1-D array of `len` bytes.
pub(crate) fn planes(f: &VideoFormat, len: usize) -> Vec<Layout> {
    if f.pixel.is_compressed() {
        return vec![Layout { offset: 0, shape: vec![len], strides: vec![1] }];
    }
    let ps = f.planes();
    match f.pixel {
        PixelFormat::Nv12 => vec![plane_layout(&ps[0], 1), plane_layout(&ps[1], 2)],
        p => ps.iter().enumerate().map(|(i, pl)| plane_layout(pl, if i == 0 { channels(p) } else { 1 })).collect(),
    }
}

/// The layout of `Frame.array`: `(H, W, 3)` rgb24/bgr24, `(H, W)` gray8,
/// `(H, W, 2)` yuyv, `(H*3//2, W)` nv12/i420 (possible only when the planes
/// follow each other with the luma stride, as the tightly packed layout does),
/// `(len,)` for compressed frames.
pub(crate) fn array(f: &VideoFormat, len: usize) -> PyResult<Layout> {
    let ps = planes(f, len);
    match f.pixel {
        PixelFormat::Nv12 | PixelFormat::I420 => {
            let y = &f.planes()[0];
            let stride = y.stride as u64;
            // Every chroma row must sit where row `height + k` of a (H*3/2, W) array with
            // the luma stride would: true for the packed layouts, checked for any other.
            let chroma_rows = f.height as u64 / 2;
            let fits = if f.pixel == PixelFormat::Nv12 {
                let uv = &f.planes()[1];
                uv.offset == y.offset + stride * y.rows as u64
                    && uv.stride as u64 == stride
                    && uv.row_bytes == y.row_bytes
                    && uv.rows as u64 == chroma_rows
            } else {
                // I420: U and V rows are half as long; two chroma rows make one array row.
                let (u, v) = (&f.planes()[1], &f.planes()[2]);
                stride == y.row_bytes as u64
                    && u.offset == y.offset + stride * y.rows as u64
                    && u.stride as u64 * 2 == stride
                    && v.offset == u.offset + u.stride as u64 * u.rows as u64
                    && v.stride == u.stride
            };
            if !fits {
                return Err(FormatError::new_err(format!(
                    "this {} stream has padded planes; Frame.array cannot show them as one ({}x{}) array: use Frame.planes",
                    f.pixel,
                    f.height * 3 / 2,
                    f.width
                )));
            }
            Ok(Layout {
                offset: y.offset as usize,
                shape: vec![f.height as usize * 3 / 2, y.row_bytes as usize],
                strides: vec![stride as isize, 1],
            })
        }
        _ => Ok(ps.into_iter().next().expect("one plane")),
    }
}

/// The writable layout of a writer's slot, the same as [`array`].
pub(crate) fn slot(f: &VideoFormat) -> PyResult<Layout> {
    array(f, f.frame_size as usize)
}

/// A block of a shared-memory mapping, described to numpy.
///
/// You never make one: ``numpy.asarray`` makes the arrays of ``Frame.array``,
/// ``Frame.planes`` and ``Writer.frame()`` from it; it is their ``.base`` and
/// keeps the mapping alive while they exist.
#[pyclass(module = "shmcast", name = "_View", frozen)]
pub(crate) struct View {
    _keep: Keep,
    addr: usize,
    layout: Layout,
    readonly: bool,
}

impl View {
    /// An ndarray over `layout` at `base`.
    ///
    /// # Safety
    /// `base + layout.end()` must lie inside a mapping that `keep` keeps
    /// mapped (and, unless `readonly`, writable) for as long as `keep` lives.
    pub(crate) unsafe fn ndarray<'py>(
        py: Python<'py>,
        keep: Keep,
        base: *const u8,
        layout: Layout,
        readonly: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let view = View { _keep: keep, addr: base as usize + layout.offset, layout, readonly };
        crate::numpy_fn(py, "asarray")?.call1((Bound::new(py, view)?,))
    }
}

#[pymethods]
impl View {
    /// numpy's array interface (version 3): typestr ``|u1``, the shape, byte
    /// strides and ``(address, read_only)``.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("typestr", "|u1")?;
        d.set_item("shape", PyTuple::new(py, &self.layout.shape)?)?;
        d.set_item("strides", PyTuple::new(py, &self.layout.strides)?)?;
        d.set_item("data", (self.addr, self.readonly))?;
        Ok(d)
    }
}
