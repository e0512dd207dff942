//! Encoding and validating the static header.
//!
//! [`decode`] is the only way a reader learns the geometry of a segment: it
//! takes the header bytes and the object's real size (from `fstat`) and checks
//! every field, so that every offset used afterwards is in bounds. It is a pure
//! function over bytes and is property-tested over random input.
#![forbid(unsafe_code)]

use std::mem::offset_of;

use crate::error::HeaderError;
use crate::format::{MAX_FRAME_SIZE, MAX_PLANES, PixelFormat, Plane, Rect, VideoFormat};
use crate::layout::{
    FLAG_HUGEPAGES, Geometry, HEADER_FIELDS_SIZE, HeaderFields, LAYOUT_VERSION, MAGIC, MAX_SLOTS, MIN_SLOTS, PAGE,
    SlotDesc, TABLE_OFFSET,
};

/// Producer identity recorded in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Producer pid.
    pub pid: u32,
    /// Random id of the producer run.
    pub epoch: u64,
    /// Start time, Unix ns.
    pub start_unix_ns: u64,
}

/// A validated header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Where things are.
    pub geometry: Geometry,
    /// The frames' format.
    pub format: VideoFormat,
    /// Who produces.
    pub identity: Identity,
    /// Slot data on huge pages.
    pub hugepages: bool,
    /// The producer's own overlay (clipped to the frame); `None` when there is none.
    pub overlay: Option<Rect>,
}

macro_rules! fields {
    ($m:ident) => {
        $m!(magic, u64);
        $m!(version, u32);
        $m!(header_size, u32);
        $m!(total_size, u64);
        $m!(slots, u64);
        $m!(slot_stride, u64);
        $m!(table_offset, u64);
        $m!(data_offset, u64);
        $m!(data_align, u64);
        $m!(desc_size, u32);
        $m!(flags, u32);
        $m!(width, u32);
        $m!(height, u32);
        $m!(fourcc, u32);
        $m!(n_planes, u32);
        $m!(fps_num, u32);
        $m!(fps_den, u32);
        $m!(frame_size, u64);
        $m!(pid, u32);
        $m!(epoch, u64);
        $m!(start_unix_ns, u64);
    };
}

impl HeaderFields {
    /// Reads the fields from native-endian bytes laid out as `#[repr(C)]`.
    /// `None` if `bytes` is shorter than [`HEADER_FIELDS_SIZE`].
    ///
    /// # Panics
    /// Never: every field read lies inside the length checked first.
    pub fn from_bytes(bytes: &[u8]) -> Option<HeaderFields> {
        if bytes.len() < HEADER_FIELDS_SIZE {
            return None;
        }
        let u64_at = |off: usize| u64::from_ne_bytes(bytes[off..off + 8].try_into().expect("8 bytes"));
        let u32_at = |off: usize| u32::from_ne_bytes(bytes[off..off + 4].try_into().expect("4 bytes"));
        let mut h = HeaderFields::default();
        macro_rules! get {
            ($f:ident, u64) => {
                h.$f = u64_at(offset_of!(HeaderFields, $f));
            };
            ($f:ident, u32) => {
                h.$f = u32_at(offset_of!(HeaderFields, $f));
            };
        }
        fields!(get);
        for i in 0..MAX_PLANES {
            h.plane_offset[i] = u64_at(offset_of!(HeaderFields, plane_offset) + 8 * i);
            h.plane_stride[i] = u32_at(offset_of!(HeaderFields, plane_stride) + 4 * i);
            h.plane_row_bytes[i] = u32_at(offset_of!(HeaderFields, plane_row_bytes) + 4 * i);
            h.plane_rows[i] = u32_at(offset_of!(HeaderFields, plane_rows) + 4 * i);
        }
        for i in 0..4 {
            h.overlay[i] = u32_at(offset_of!(HeaderFields, overlay) + 4 * i);
        }
        Some(h)
    }

    /// Writes the fields as native-endian `#[repr(C)]` bytes (padding zeroed).
    pub fn to_bytes(&self) -> [u8; HEADER_FIELDS_SIZE] {
        let mut out = [0u8; HEADER_FIELDS_SIZE];
        macro_rules! put {
            ($f:ident, $t:ty) => {
                let off = offset_of!(HeaderFields, $f);
                let b = self.$f.to_ne_bytes();
                out[off..off + b.len()].copy_from_slice(&b);
            };
        }
        fields!(put);
        for i in 0..MAX_PLANES {
            let off = offset_of!(HeaderFields, plane_offset) + 8 * i;
            out[off..off + 8].copy_from_slice(&self.plane_offset[i].to_ne_bytes());
            let off = offset_of!(HeaderFields, plane_stride) + 4 * i;
            out[off..off + 4].copy_from_slice(&self.plane_stride[i].to_ne_bytes());
            let off = offset_of!(HeaderFields, plane_row_bytes) + 4 * i;
            out[off..off + 4].copy_from_slice(&self.plane_row_bytes[i].to_ne_bytes());
            let off = offset_of!(HeaderFields, plane_rows) + 4 * i;
            out[off..off + 4].copy_from_slice(&self.plane_rows[i].to_ne_bytes());
        }
        for i in 0..4 {
            let off = offset_of!(HeaderFields, overlay) + 4 * i;
            out[off..off + 4].copy_from_slice(&self.overlay[i].to_ne_bytes());
        }
        out
    }
}

/// Builds the header of a new segment. `magic` is left 0: the writer publishes
/// it last.
pub fn encode(
    geometry: &Geometry,
    format: &VideoFormat,
    identity: &Identity,
    hugepages: bool,
    overlay: Option<Rect>,
) -> HeaderFields {
    let overlay = overlay.map(|r| r.clip(format.width, format.height)).unwrap_or_default();
    let mut h = HeaderFields {
        magic: 0,
        version: LAYOUT_VERSION,
        header_size: PAGE as u32,
        total_size: geometry.total_size,
        slots: geometry.slots,
        slot_stride: geometry.slot_stride,
        table_offset: TABLE_OFFSET,
        data_offset: geometry.data_offset,
        data_align: geometry.data_align,
        desc_size: std::mem::size_of::<SlotDesc>() as u32,
        flags: if hugepages { FLAG_HUGEPAGES } else { 0 },
        width: format.width,
        height: format.height,
        fourcc: format.pixel.fourcc(),
        n_planes: format.n_planes,
        fps_num: format.fps_num,
        fps_den: format.fps_den,
        frame_size: format.frame_size,
        pid: identity.pid,
        epoch: identity.epoch,
        start_unix_ns: identity.start_unix_ns,
        overlay: [overlay.x, overlay.y, overlay.w, overlay.h],
        ..HeaderFields::default()
    };
    for (i, p) in format.planes().iter().enumerate() {
        h.plane_offset[i] = p.offset;
        h.plane_stride[i] = p.stride;
        h.plane_row_bytes[i] = p.row_bytes;
        h.plane_rows[i] = p.rows;
    }
    h
}

/// Validates header bytes against the object's real size.
///
/// ```
/// use shm_proto::header::decode_bytes;
/// use shm_proto::error::HeaderError;
/// assert_eq!(decode_bytes(&[0u8; 16], 16), Err(HeaderError::TooSmall { size: 16, needed: 8192 }));
/// ```
///
/// # Errors
/// [`HeaderError::TooSmall`] for an object smaller than two pages or bytes
/// shorter than the header; otherwise as [`decode`].
pub fn decode_bytes(bytes: &[u8], actual_size: u64) -> Result<Decoded, HeaderError> {
    if actual_size < PAGE * 2 {
        return Err(HeaderError::TooSmall { size: actual_size, needed: PAGE * 2 });
    }
    let h = HeaderFields::from_bytes(bytes)
        .ok_or(HeaderError::TooSmall { size: bytes.len() as u64, needed: HEADER_FIELDS_SIZE as u64 })?;
    decode(&h, actual_size)
}

/// Validates decoded header fields against the object's real size.
///
/// # Errors
/// [`HeaderError::NotReady`] while the magic is not yet published, and the
/// [`HeaderError`] naming the first field that is foreign (magic, version),
/// inconsistent (format, planes, rate) or does not fit `actual_size` (slots,
/// strides, offsets). No field is trusted before it is checked.
pub fn decode(h: &HeaderFields, actual_size: u64) -> Result<Decoded, HeaderError> {
    if actual_size < PAGE * 2 {
        return Err(HeaderError::TooSmall { size: actual_size, needed: PAGE * 2 });
    }
    if h.magic == 0 {
        return Err(HeaderError::NotReady);
    }
    if h.magic != MAGIC {
        return Err(HeaderError::BadMagic { found: h.magic });
    }
    if h.version != LAYOUT_VERSION {
        return Err(HeaderError::VersionMismatch { expected: LAYOUT_VERSION, found: h.version });
    }
    if h.total_size != actual_size {
        return Err(HeaderError::SizeMismatch { claimed: h.total_size, actual: actual_size });
    }
    if h.header_size as u64 != PAGE || h.table_offset != TABLE_OFFSET {
        return Err(HeaderError::Geometry("header size or slot table offset is not the fixed layout"));
    }
    if h.desc_size as usize != std::mem::size_of::<SlotDesc>() {
        return Err(HeaderError::Geometry("slot descriptor size differs from this build"));
    }
    if !(MIN_SLOTS..=MAX_SLOTS).contains(&h.slots) || !h.slots.is_power_of_two() {
        return Err(HeaderError::SlotCount(h.slots));
    }
    if !h.data_align.is_power_of_two() || h.data_align < PAGE || h.data_align > (1 << 30) {
        return Err(HeaderError::Geometry("data alignment is not a power of two between 4 KiB and 1 GiB"));
    }
    if h.frame_size == 0 || h.frame_size > MAX_FRAME_SIZE {
        return Err(HeaderError::Geometry("frame size is 0 or larger than 1 GiB"));
    }
    let expect = Geometry::compute(h.slots, h.frame_size, h.data_align)
        .ok_or(HeaderError::Geometry("slot geometry overflows"))?;
    if !h.slot_stride.is_multiple_of(h.data_align) || h.slot_stride < h.frame_size {
        return Err(HeaderError::Geometry("slot stride is misaligned or smaller than a frame"));
    }
    if !h.data_offset.is_multiple_of(h.data_align) || h.data_offset < expect.data_offset {
        return Err(HeaderError::Geometry("slot data overlaps the slot table or is misaligned"));
    }
    let end = h
        .slots
        .checked_mul(h.slot_stride)
        .and_then(|d| d.checked_add(h.data_offset))
        .ok_or(HeaderError::Geometry("slot data size overflows"))?;
    if end != h.total_size {
        return Err(HeaderError::Geometry("slot data does not end at the end of the object"));
    }
    let pixel = PixelFormat::from_fourcc(h.fourcc).ok_or(HeaderError::UnknownFourcc(h.fourcc))?;
    let mut format = VideoFormat::new(h.width, h.height, pixel, h.fps_num, h.fps_den.max(1))?;
    if h.fps_den == 0 {
        return Err(HeaderError::Geometry("frame rate denominator is 0"));
    }
    if pixel.is_compressed() {
        if h.n_planes != 0 {
            return Err(HeaderError::Geometry("compressed format with planes"));
        }
        format = format.with_max_payload(h.frame_size)?;
    } else {
        if h.n_planes != format.n_planes {
            return Err(HeaderError::Geometry("plane count does not match the pixel format"));
        }
        let mut planes = [Plane::default(); MAX_PLANES];
        for (i, plane) in planes.iter_mut().enumerate().take(h.n_planes as usize) {
            let p = Plane {
                offset: h.plane_offset[i],
                stride: h.plane_stride[i],
                row_bytes: h.plane_row_bytes[i],
                rows: h.plane_rows[i],
            };
            let min = format.planes[i];
            if p.row_bytes != min.row_bytes || p.rows != min.rows || p.stride < p.row_bytes {
                return Err(HeaderError::Geometry("plane rows or row size do not match the frame size"));
            }
            let plane_end = p.offset.checked_add(p.span()).ok_or(HeaderError::Geometry("plane overflows"))?;
            if plane_end > h.frame_size {
                return Err(HeaderError::Geometry("plane lies past the end of the frame"));
            }
            *plane = p;
        }
        if h.frame_size < format.frame_size {
            return Err(HeaderError::Geometry("frame size is smaller than the pixel format needs"));
        }
        format.planes = planes;
        format.frame_size = h.frame_size;
    }
    Ok(Decoded {
        geometry: Geometry {
            slots: h.slots,
            slot_stride: h.slot_stride,
            data_offset: h.data_offset,
            data_align: h.data_align,
            total_size: h.total_size,
        },
        format,
        identity: Identity { pid: h.pid, epoch: h.epoch, start_unix_ns: h.start_unix_ns },
        hugepages: h.flags & FLAG_HUGEPAGES != 0,
        // Hostile values are clipped, never trusted as offsets.
        overlay: Some(Rect::new(h.overlay[0], h.overlay[1], h.overlay[2], h.overlay[3]).clip(h.width, h.height))
            .filter(|r| !r.is_empty()),
    })
}

/// The header-validation fuzz body: decoding arbitrary bytes never panics, and
/// anything accepted has all offsets inside the object. Run by the property
/// test over random input and by the seed-corpus test. A test hook, not API.
///
/// # Panics
/// When a decoded header would place anything outside the object (the bug
/// the fuzzing looks for).
#[doc(hidden)]
pub fn fuzz_decode(bytes: &[u8], actual_size: u64) {
    if let Ok(d) = decode_bytes(bytes, actual_size) {
        let g = d.geometry;
        assert!(g.data_offset + g.slots * g.slot_stride <= actual_size);
        assert!(g.desc_offset(g.slots - 1) + std::mem::size_of::<SlotDesc>() as u64 <= g.data_offset);
        for p in d.format.planes() {
            assert!(p.offset + p.span() <= d.format.frame_size);
        }
        assert!(d.format.frame_size <= g.slot_stride);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MAGIC;

    fn valid(slots: u64, pixel: PixelFormat) -> (HeaderFields, u64) {
        let f = VideoFormat::new(64, 48, pixel, 30, 1).unwrap();
        let g = Geometry::compute(slots, f.frame_size, PAGE).unwrap();
        let mut h =
            encode(&g, &f, &Identity { pid: 1, epoch: 2, start_unix_ns: 3 }, false, Some(Rect::new(0, 0, 64, 8)));
        h.magic = MAGIC;
        (h, g.total_size)
    }

    #[test]
    fn round_trip_every_format() {
        for pixel in PixelFormat::ALL {
            let (h, size) = valid(4, pixel);
            let bytes = h.to_bytes();
            assert_eq!(HeaderFields::from_bytes(&bytes).unwrap(), h);
            let d = decode_bytes(&bytes, size).unwrap();
            assert_eq!(d.format.pixel, pixel);
            assert_eq!(d.geometry.slots, 4);
            assert_eq!(d.identity.epoch, 2);
            assert_eq!(d.overlay, Some(Rect::new(0, 0, 64, 8)));
        }
    }

    #[test]
    fn specific_errors() {
        let (h, size) = valid(4, PixelFormat::Rgb24);
        let mut bad = h;
        bad.magic = 0xdead_beef;
        assert_eq!(decode(&bad, size), Err(HeaderError::BadMagic { found: 0xdead_beef }));
        let mut bad = h;
        bad.magic = 0;
        assert_eq!(decode(&bad, size), Err(HeaderError::NotReady));
        let mut bad = h;
        bad.version = 99;
        assert_eq!(decode(&bad, size), Err(HeaderError::VersionMismatch { expected: LAYOUT_VERSION, found: 99 }));
        assert_eq!(decode(&h, size - 4096), Err(HeaderError::SizeMismatch { claimed: size, actual: size - 4096 }));
        for slots in [0u64, 3, 1 << 40] {
            let mut bad = h;
            bad.slots = slots;
            assert_eq!(decode(&bad, size), Err(HeaderError::SlotCount(slots)));
        }
        let mut bad = h;
        bad.slot_stride = u64::MAX - 4095;
        assert!(matches!(decode(&bad, size), Err(HeaderError::Geometry(_))));
        let mut bad = h;
        bad.data_offset = size;
        assert!(matches!(decode(&bad, size), Err(HeaderError::Geometry(_))));
        let mut bad = h;
        bad.plane_offset[0] = 1 << 20;
        assert!(matches!(decode(&bad, size), Err(HeaderError::Geometry(_))));
        let mut bad = h;
        bad.fourcc = 0x1234;
        assert_eq!(decode(&bad, size), Err(HeaderError::UnknownFourcc(0x1234)));
        let mut bad = h;
        bad.width = 0;
        assert!(matches!(decode(&bad, size), Err(HeaderError::Format(_))));
    }

    #[test]
    fn seed_corpus() {
        let (h, size) = valid(8, PixelFormat::I420);
        let good = h.to_bytes();
        fuzz_decode(&good, size);
        for i in 0..good.len() {
            for v in [0u8, 0xff, 0x80, 1] {
                let mut b = good;
                b[i] = v;
                fuzz_decode(&b, size);
                fuzz_decode(&b, size + 4096);
            }
        }
        fuzz_decode(&[], 0);
        fuzz_decode(&[0xff; 512], u64::MAX);
    }
}
