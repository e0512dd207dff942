//! A checked base + length of memory holding a segment: heap-backed (tests,
//! benchmarks of the protocol alone) or a shared mapping (real streams). The
//! protocol code sees only [`Region`] and never knows where its memory came from.
//!
//! # Soundness of in-place frames
//!
//! A reader hands out `&[u8]` into slot data that the producer — another
//! process — may overwrite at any moment (lossy broadcast: the camera never
//! waits). Concurrent non-atomic writes and reads of the same bytes are a data
//! race, which Rust's memory model (like C++'s) leaves undefined; the same
//! caveat that crossbeam's `SeqLock` documents. We rely on what holds in
//! practice for memory shared with another process:
//! 1. the compiler cannot see the other process's writes, so it cannot
//!    exploit the race: to this process the bytes are ordinary memory it only
//!    reads, and every load really happens (no value can be "invented");
//! 2. the hardware gives some bytes, old or new, never a trap;
//! 3. the seqlock protocol ([`crate::seq`]) decides *after* the use whether the
//!    bytes were stable: the result of a use is kept only when the slot word
//!    still reads `committed(s)`; otherwise it is dropped and counted as an
//!    overrun. Torn frames are therefore never *accepted*, only possibly looked at.
//!
//! The in-process heap backing used by tests carries the same caveat between
//! threads. Atomics in the region are only ever accessed through `&AtomicU*`
//! at offsets checked against the region's length and alignment.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use crate::layout::{CONTROL_OFFSET, Control, HEADER_FIELDS_SIZE, HeaderFields, PAGE, SlotDesc};

/// Atomic integer types that may be viewed in a region at any checked offset.
pub(crate) trait AtomicWord {}
impl AtomicWord for std::sync::atomic::AtomicU32 {}
impl AtomicWord for std::sync::atomic::AtomicU64 {}

enum Backing {
    Heap(Layout),
    Map,
}

/// Memory holding one segment.
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    backing: Backing,
}

// SAFETY: a Region is a pointer to memory that is either owned by it (heap)
// or a shared mapping it owns; all access through it goes via atomics or the
// documented in-place slices, which are designed for concurrent use.
unsafe impl Send for Region {}
// SAFETY: see `Send`; `&Region` only exposes atomics and shared byte views.
unsafe impl Sync for Region {}

impl Region {
    /// Zeroed, page-aligned heap memory of `len` bytes, writable: the
    /// process-local backing the protocol tests run on. A test hook, not API.
    ///
    /// # Panics
    /// If `len` rounded up to a page exceeds `isize::MAX`; aborts (like any
    /// allocation) when memory is exhausted.
    #[doc(hidden)]
    pub fn heap(len: usize) -> Region {
        let layout = Layout::from_size_align(len.max(PAGE as usize), PAGE as usize).expect("region size fits a Layout");
        // SAFETY: the layout has non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Region { ptr, len, writable: true, backing: Backing::Heap(layout) }
    }

    /// Maps `len` bytes of `file` shared, read-only or read-write; with
    /// `populate`, pre-faults every page.
    pub(crate) fn map(file: &std::fs::File, len: usize, writable: bool, populate: bool) -> io::Result<Region> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a fresh mapping at an address the kernel picks; it aliases no
        // Rust object. The fd is valid for the call; the mapping outlives it.
        let raw = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, file.as_raw_fd(), 0) };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(raw.cast::<u8>()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(Region { ptr, len, writable, backing: Backing::Map })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length region (never, for a valid segment).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this process may write the region.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Locks the whole region in RAM.
    pub(crate) fn mlock(&self) -> io::Result<()> {
        // SAFETY: the range is exactly this region's live memory.
        let r = unsafe { libc::mlock(self.ptr.as_ptr().cast(), self.len) };
        if r != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// The address of an access of `len` bytes at `off`, aligned to `align`.
    ///
    /// # Panics
    /// If the access leaves the region or is misaligned. Offsets come from a
    /// [`Geometry`](crate::layout::Geometry) validated against the region's
    /// size and from constants, never straight from the shared bytes, so a
    /// panic here is a bug in this crate, not a hostile segment.
    fn check(&self, off: u64, len: usize, align: usize) -> usize {
        let off = usize::try_from(off).expect("offset fits usize");
        assert!(off.checked_add(len).is_some_and(|end| end <= self.len), "region access out of bounds");
        assert!((self.ptr.as_ptr() as usize + off).is_multiple_of(align), "misaligned region access");
        off
    }

    /// Copies the static header out of the region.
    pub(crate) fn read_header(&self) -> HeaderFields {
        let mut buf = [0u8; HEADER_FIELDS_SIZE];
        self.check(0, buf.len(), 1);
        // SAFETY: bounds checked above; `buf` is a distinct local. The bytes are
        // static once the segment is published; before that a racy copy is
        // harmless because `header::decode` rejects anything unpublished.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), buf.as_mut_ptr(), buf.len()) };
        HeaderFields::from_bytes(&buf).expect("buffer is header-sized")
    }

    /// Writes the static header (writer only, before publishing the magic).
    pub(crate) fn write_header(&self, h: &HeaderFields) {
        assert!(self.writable, "write to a read-only region");
        let bytes = h.to_bytes();
        // The magic (first 8 bytes) is published separately with Release.
        self.check(8, bytes.len() - 8, 8);
        // SAFETY: bounds checked; the region is writable; no reader trusts these
        // bytes before the magic is published after them.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr().add(8), self.ptr.as_ptr().add(8), bytes.len() - 8) };
    }

    /// The magic word, as an atomic (published last by the writer).
    pub(crate) fn magic(&self) -> &AtomicU64 {
        let off = self.check(0, 8, 8);
        // SAFETY: in bounds and 8-aligned (checked); AtomicU64 has the layout of
        // u64 and the region lives as long as the borrow.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// The control block in the header page.
    pub(crate) fn control(&self) -> &Control {
        let off = self.check(CONTROL_OFFSET, std::mem::size_of::<Control>(), std::mem::align_of::<Control>());
        // SAFETY: in bounds and aligned (checked); Control is atomics and
        // padding, valid for any bit pattern, including zeroed fresh memory.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<Control>() }
    }

    /// An atomic at byte offset `off` (for the benchmark baselines' own page).
    pub(crate) fn control_at<T: AtomicWord>(&self, off: u64) -> &T {
        let off = self.check(off, std::mem::size_of::<T>(), std::mem::align_of::<T>());
        // SAFETY: in bounds and aligned (checked); `AtomicWord` types are
        // atomics, valid for any bit pattern.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<T>() }
    }

    /// The descriptor at byte offset `off` (from `Geometry::desc_offset`).
    pub(crate) fn desc(&self, off: u64) -> &SlotDesc {
        let off = self.check(off, std::mem::size_of::<SlotDesc>(), std::mem::align_of::<SlotDesc>());
        // SAFETY: in bounds and aligned (checked); SlotDesc is atomics, valid
        // for any bit pattern.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<SlotDesc>() }
    }

    /// In-place view of `len` bytes at `off`: the one function through which
    /// bytes the producer may be writing are read. See the module docs: the
    /// caller must validate the slot after using them.
    pub(crate) fn bytes(&self, off: u64, len: usize) -> &[u8] {
        let off = self.check(off, len, 1);
        // SAFETY: in bounds (checked), initialised (zeroed or written), and
        // alive for the borrow. Concurrent writes by the producer are the
        // documented seqlock race of the module docs, resolved by `seq::validate`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off), len) }
    }

    /// Copies `dst.len()` bytes at `off` into `dst` with volatile loads: the
    /// copy-out of bytes the producer may be writing. Volatile, like
    /// crossbeam's `SeqLock` reads, so that every byte is really loaded once
    /// from the shared memory and the compiler can neither re-read nor
    /// assume anything about it; whether the copy is intact is decided by the
    /// seqlock check after it.
    pub(crate) fn copy_out(&self, off: u64, dst: &mut [u8]) {
        let off = self.check(off, dst.len(), 1);
        // SAFETY: `off..off + dst.len()` is inside the region (checked above)
        // and stays mapped for the borrow of `self`.
        let src = unsafe { self.ptr.as_ptr().add(off) };
        volatile_copy(src, dst);
    }

    /// Mutable view of `len` bytes of slot data at `off`, for the writer.
    ///
    /// Exclusive within this process because it is only called for a slot
    /// that nobody else in the process may touch: by [`crate::writer::Writer`],
    /// through `&mut self`, for the one slot it is writing (never a slot a
    /// loan pins), and by a [`crate::writer::Loan`], through `&mut self`, for
    /// the slot it pins (which the writer then neither writes nor lends).
    #[allow(clippy::mut_from_ref)] // exclusivity is the writer's or the loan's `&mut self`, see above
    pub(crate) fn bytes_mut(&self, off: u64, len: usize) -> &mut [u8] {
        assert!(self.writable, "write to a read-only region");
        let off = self.check(off, len, 1);
        // SAFETY: in bounds (checked), writable, alive for the borrow. No other
        // `&mut` to these bytes exists (the writer holds `&mut Writer`, or the
        // loan `&mut Loan` for its pinned slot, while the slice lives); readers'
        // concurrent views are the documented seqlock race.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(off), len) }
    }

    /// Address of the first byte (for reports and fault tests).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
}

/// Copies `dst.len()` bytes from `src` with volatile loads, 64 bytes at a time
/// where `src` is aligned (slot data is page-aligned, so all but the tail).
/// NB: measured at about 1.4x the time of a plain memcpy of a 1080p RGB frame
/// (`cargo bench -p shm-proto --bench ring -- copy_1080p`, 2.73 vs 2.00 ms on
/// a loaded 2-vCPU machine): the price of loads the compiler may not merge,
/// repeat or elide.
fn volatile_copy(src: *const u8, dst: &mut [u8]) {
    type Chunk = [u64; 8];
    const CHUNK: usize = std::mem::size_of::<Chunk>();
    let len = dst.len();
    let head = src.align_offset(std::mem::align_of::<Chunk>()).min(len);
    let body = (len - head) / CHUNK;
    for (i, b) in dst[..head].iter_mut().enumerate() {
        // SAFETY: `i < head <= len`: inside the source range the caller checked.
        *b = unsafe { std::ptr::read_volatile(src.add(i)) };
    }
    for i in 0..body {
        let at = head + i * CHUNK;
        // SAFETY: `at + CHUNK <= len`, so the chunk is inside the checked
        // source range, and `src + at` is aligned for `Chunk` (`head` aligned it).
        let v = unsafe { std::ptr::read_volatile(src.add(at).cast::<Chunk>()) };
        for (j, w) in v.iter().enumerate() {
            dst[at + 8 * j..at + 8 * j + 8].copy_from_slice(&w.to_ne_bytes());
        }
    }
    let tail = head + body * CHUNK;
    for (i, b) in dst[tail..].iter_mut().enumerate() {
        // SAFETY: `tail + i < len`: inside the checked source range.
        *b = unsafe { std::ptr::read_volatile(src.add(tail + i)) };
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        match self.backing {
            // SAFETY: allocated in `heap` with this very layout.
            Backing::Heap(layout) => unsafe { dealloc(self.ptr.as_ptr(), layout) },
            // SAFETY: unmaps exactly the mapping made in `map`; no borrow of it
            // outlives `self`.
            Backing::Map => unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.len);
            },
        }
    }
}
