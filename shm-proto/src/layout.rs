//! The bytes of a segment: `#[repr(C)]` types, offsets and compile-time
//! size/offset assertions.
//!
//! ```text
//! 0        header page: HeaderFields (static after publish) at 0,
//!          Control (state+heartbeat, head, tail, notify: one 128-byte line each) at 1024
//! 4096     slot table: `slots` × SlotDesc (128 bytes each), padded to a page
//! data     slot data: `slots` × `slot_stride`, each slot page (or huge page) aligned
//! ```
//!
//! Invariants (checked by [`crate::header::decode`] before any use):
//! `data_offset + slots * slot_stride == total_size == object size`,
//! `slot_stride % align == 0`, `frame_size <= slot_stride`.
#![forbid(unsafe_code)]

use std::mem::{align_of, offset_of, size_of};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64};

/// `"SHMCAST"` followed by a 0x01 byte, little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMCAST\x01");
/// Version of this layout; bump on any incompatible change.
pub const LAYOUT_VERSION: u32 = 2;
/// Size of the header page and base alignment of everything after it.
pub const PAGE: u64 = 4096;
/// Offset of [`Control`] in the header page.
pub const CONTROL_OFFSET: u64 = 1024;
/// Offset of the slot table.
pub const TABLE_OFFSET: u64 = PAGE;
/// Cache-line padding. NB: 128 rather than 64 because x86_64's spatial
/// prefetcher and aarch64 big cores pull lines in pairs (crossbeam's reasoning).
pub const LINE: usize = 128;
/// Smallest and largest slot counts.
pub const MIN_SLOTS: u64 = 2;
/// See [`MIN_SLOTS`].
pub const MAX_SLOTS: u64 = 1 << 16;

/// Header flag: slot data lives on huge pages.
pub const FLAG_HUGEPAGES: u32 = 1;

/// Producer states stored in [`StateLine::state`].
pub mod state {
    /// Created, source not delivering yet.
    pub const STARTING: u32 = 1;
    /// Delivering frames.
    pub const LIVE: u32 = 2;
    /// Stopped cleanly; no more frames will come.
    pub const CLOSED: u32 = 3;
}

/// The static header: written once before the magic is published, never after.
/// Plain integers, so any bit pattern is a value; validated by `header::decode`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderFields {
    /// [`MAGIC`] once the segment is ready; 0 while initialising. Written last (Release).
    pub magic: u64,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// Size of the header page ([`PAGE`]).
    pub header_size: u32,
    /// Size of the whole object in bytes.
    pub total_size: u64,
    /// Number of slots: a power of two in `MIN_SLOTS..=MAX_SLOTS`.
    pub slots: u64,
    /// Bytes from one slot's data to the next; a multiple of `data_align`.
    pub slot_stride: u64,
    /// Offset of the slot table ([`TABLE_OFFSET`]).
    pub table_offset: u64,
    /// Offset of slot 0's data; a multiple of `data_align`.
    pub data_offset: u64,
    /// Alignment of slot data: 4096, or the huge page size.
    pub data_align: u64,
    /// Size of one slot descriptor (`size_of::<SlotDesc>()`).
    pub desc_size: u32,
    /// [`FLAG_HUGEPAGES`], ...
    pub flags: u32,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// V4L2 fourcc of the pixel format.
    pub fourcc: u32,
    /// Number of planes (0 for compressed formats).
    pub n_planes: u32,
    /// Frame rate numerator.
    pub fps_num: u32,
    /// Frame rate denominator.
    pub fps_den: u32,
    /// Largest payload of one frame.
    pub frame_size: u64,
    /// Plane offsets within a frame.
    pub plane_offset: [u64; 3],
    /// Plane row pitches.
    pub plane_stride: [u32; 3],
    /// Plane bytes of pixel data per row.
    pub plane_row_bytes: [u32; 3],
    /// Plane row counts.
    pub plane_rows: [u32; 3],
    /// Producer process id.
    pub pid: u32,
    /// Random id of this producer run.
    pub epoch: u64,
    /// Producer start time, Unix ns.
    pub start_unix_ns: u64,
    /// The region the producer draws its own overlay into (`x, y, w, h`;
    /// all zero when there is none): pixel-analysing consumers ignore it.
    pub overlay: [u32; 4],
}

/// Bytes of [`HeaderFields`] that `decode` reads.
pub const HEADER_FIELDS_SIZE: usize = size_of::<HeaderFields>();

/// One cache line holding a value.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct CachePadded<T>(pub T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Producer state and heartbeat, written by the producer, read by everyone.
#[repr(C)]
#[derive(Debug, Default)]
pub struct StateLine {
    /// One of [`state`].
    pub state: AtomicU32,
    /// Padding.
    pub _pad: u32,
    /// `CLOCK_MONOTONIC` ns of the last heartbeat (every ≤ 100 ms while alive).
    pub heartbeat_ns: AtomicU64,
}

/// The mutable part of the header page.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Control {
    /// State and heartbeat.
    pub state: CachePadded<StateLine>,
    /// Sequence number of the next frame to be written.
    pub head: CachePadded<AtomicU64>,
    /// Oldest sequence still readable (`head - slots`, floored at 0).
    pub tail: CachePadded<AtomicU64>,
    /// Futex word readers wait on; bumped after every publish and state change.
    pub notify: CachePadded<AtomicU32>,
}

/// One slot's descriptor. `seq` is the seqlock word (see [`crate::seq`]); the
/// other fields are the metadata of the frame in the slot, valid only while
/// `seq` reads the same committed value before and after reading them.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct SlotDesc {
    /// Seqlock word: 0 empty, `2(s+1)+1` writing `s`, `2(s+1)` committed `s`.
    pub seq: AtomicU64,
    /// The source's frame id.
    pub frame_id: AtomicU64,
    /// Capture time, Unix ns (`CLOCK_REALTIME`).
    pub capture_ns: AtomicU64,
    /// Publish time, Unix ns (`CLOCK_REALTIME`).
    pub publish_ns: AtomicU64,
    /// Payload length in bytes (≤ `frame_size`).
    pub len: AtomicU64,
    /// `FLAG_*` of [`crate::FrameMeta`].
    pub flags: AtomicU32,
    /// Exposure in µs; `u32::MAX` when unknown.
    pub exposure_us: AtomicU32,
    /// Gain in dB as `f32` bits; NaN when unknown.
    pub gain_db: AtomicU32,
    /// Sensor temperature in milli-°C; `i32::MIN` when unknown.
    pub temperature_mc: AtomicI32,
}

const _: () = {
    assert!(HEADER_FIELDS_SIZE <= CONTROL_OFFSET as usize);
    assert!(offset_of!(HeaderFields, magic) == 0);
    assert!(offset_of!(HeaderFields, version) == 8);
    assert!(offset_of!(HeaderFields, overlay) == HEADER_FIELDS_SIZE - 16);
    assert!(size_of::<Control>() == 4 * LINE);
    assert!(offset_of!(Control, head) == LINE);
    assert!(offset_of!(Control, tail) == 2 * LINE);
    assert!(offset_of!(Control, notify) == 3 * LINE);
    assert!(CONTROL_OFFSET as usize + size_of::<Control>() <= PAGE as usize);
    assert!((CONTROL_OFFSET as usize).is_multiple_of(align_of::<Control>()));
    assert!(size_of::<SlotDesc>() == LINE);
    assert!(align_of::<SlotDesc>() == LINE);
    assert!((TABLE_OFFSET as usize).is_multiple_of(LINE));
};

/// Rounds `v` up to a multiple of `align` (a power of two); `None` on overflow.
pub fn round_up(v: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(v.checked_add(align - 1)? & !(align - 1))
}

/// Where everything lives in a segment of a given geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Slot count.
    pub slots: u64,
    /// Bytes between slots' data.
    pub slot_stride: u64,
    /// Offset of slot 0's data.
    pub data_offset: u64,
    /// Alignment of slot data.
    pub data_align: u64,
    /// Whole object size.
    pub total_size: u64,
}

impl Geometry {
    /// Computes the geometry for `slots` slots of `frame_size` bytes aligned to
    /// `data_align`; `None` if anything overflows.
    pub fn compute(slots: u64, frame_size: u64, data_align: u64) -> Option<Geometry> {
        let table_end = TABLE_OFFSET.checked_add(slots.checked_mul(size_of::<SlotDesc>() as u64)?)?;
        let data_offset = round_up(table_end, data_align)?;
        let slot_stride = round_up(frame_size.max(1), data_align)?;
        let total_size = data_offset.checked_add(slots.checked_mul(slot_stride)?)?;
        Some(Geometry { slots, slot_stride, data_offset, data_align, total_size })
    }

    /// Offset of slot `i`'s descriptor.
    pub fn desc_offset(&self, slot: u64) -> u64 {
        TABLE_OFFSET + slot * size_of::<SlotDesc>() as u64
    }

    /// Offset of slot `i`'s data.
    pub fn data_offset(&self, slot: u64) -> u64 {
        self.data_offset + slot * self.slot_stride
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_is_page_aligned() {
        let g = Geometry::compute(8, 1920 * 1080 * 3, PAGE).unwrap();
        assert_eq!(g.data_offset % PAGE, 0);
        assert_eq!(g.slot_stride % PAGE, 0);
        assert!(g.slot_stride >= 1920 * 1080 * 3);
        assert_eq!(g.total_size, g.data_offset + 8 * g.slot_stride);
    }

    #[test]
    fn geometry_overflow_is_none() {
        assert!(Geometry::compute(1 << 40, 1 << 40, PAGE).is_none());
    }
}
