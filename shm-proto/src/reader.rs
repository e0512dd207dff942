//! The consumer side of the ring: any number of readers per stream, each with
//! its own cursor in its own memory. Readers map the segment `PROT_READ` from
//! an `O_RDONLY` descriptor and never write it.
//!
//! `next` delivers frames in order; when the producer has lapped the reader it
//! skips to the newest frame (or, with [`Lapped::Oldest`], the oldest still
//! there) and reports exactly how many were lost. Frames are handed out in
//! place; because the producer may overwrite a slot while it is being used, a
//! frame's bytes are only lent to a closure ([`Frame::read`]) whose result is
//! kept only if the slot is unchanged afterwards, or copied out whole and
//! validated ([`Frame::copy_to`]). The bytes never outlive the check.
//!
//! Everything a reader uses from the segment is bounded first (see
//! [`crate::ring`]): no content of the object can make a call loop, wait on a
//! slot forever, or index out of the mapping.
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::OpenError;
use crate::format::{Rect, VideoFormat};
use crate::header::Identity;
use crate::layout::SlotDesc;
use crate::meta::FrameMeta;
use crate::name::StreamName;
use crate::notify;
use crate::region::Region;
use crate::ring::{Avail, Cursor, Lapped, RingView};
use crate::segment::{self, Mapped, ProducerStatus, STALE_AFTER};
use crate::seq;
use crate::sync::{AtomicU32, AtomicU64};

/// Longest single futex sleep: the producer's state and heartbeat are
/// re-checked at least this often, so a dead producer is noticed in time.
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// Where a new reader starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Start {
    /// At the next frame to be published (skip what is already there).
    #[default]
    Next,
    /// At the oldest frame still in the ring.
    Oldest,
}

/// Reader options.
#[derive(Clone, Debug)]
pub struct ReaderOptions {
    /// Directory to look in (default: `$SHMCAST_SHM_DIR` or `/dev/shm`, then hugetlbfs mounts).
    pub dir: Option<PathBuf>,
    /// Busy-poll this long before sleeping on the futex (0: sleep at once).
    pub spin: Duration,
    /// Heartbeat age after which the producer is stale.
    pub stale_after: Duration,
    /// Where to start.
    pub start: Start,
    /// Where to land when the producer laps this reader.
    pub lapped: Lapped,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            dir: None,
            spin: Duration::ZERO,
            stale_after: STALE_AFTER,
            start: Start::Next,
            lapped: Lapped::Newest,
        }
    }
}

/// Counters of one reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Frames handed out.
    pub frames: u64,
    /// Frames the producer overwrote before this reader got to them.
    pub lost: u64,
    /// Frames handed out that failed validation after use.
    pub overruns: u64,
}

impl std::ops::Add for ReaderStats {
    type Output = ReaderStats;
    fn add(self, o: ReaderStats) -> ReaderStats {
        ReaderStats {
            frames: self.frames.saturating_add(o.frames),
            lost: self.lost.saturating_add(o.lost),
            overruns: self.overruns.saturating_add(o.overruns),
        }
    }
}

/// The result of waiting for a frame.
pub enum Next<'a> {
    /// A frame, in place.
    Frame(Frame<'a>),
    /// Nothing within the timeout; the producer is alive.
    Timeout,
    /// The producer closed, went stale or broke the protocol, and every frame
    /// it published has been handed out or counted as lost.
    Gone(ProducerStatus),
}

/// What [`Reader::wait`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// A frame is there for `try_next`.
    Ready,
    /// Nothing within the timeout.
    Timeout,
    /// The producer is gone.
    Gone(ProducerStatus),
}

/// A snapshot of a segment's state, for tools.
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    /// Stream name.
    pub name: String,
    /// Path of the object.
    pub path: PathBuf,
    /// Producer status.
    pub status: ProducerStatus,
    /// Heartbeat age.
    pub heartbeat_age: Duration,
    /// Producer identity.
    pub identity: Identity,
    /// Frame format.
    pub format: VideoFormat,
    /// Slot count.
    pub slots: u64,
    /// Bytes between slots.
    pub slot_stride: u64,
    /// Object size.
    pub total_size: u64,
    /// Next sequence to be written.
    pub head: u64,
    /// Oldest readable sequence.
    pub tail: u64,
    /// On huge pages.
    pub hugepages: bool,
    /// The producer's overlay region ([`Reader::overlay`]).
    pub overlay: Option<Rect>,
}

/// A read-only view of a stream.
pub struct Reader {
    name: StreamName,
    mapped: Mapped,
    opts: ReaderOptions,
    cursor: Cursor,
    overruns: Cell<u64>,
}

impl RingView for Mapped {
    fn slots(&self) -> u64 {
        self.decoded.geometry.slots
    }
    fn head(&self) -> &AtomicU64 {
        &self.region.control().head
    }
    fn slot_seq(&self, slot: u64) -> &AtomicU64 {
        &self.desc(slot).seq
    }
    fn load_meta(&self, slot: u64) -> FrameMeta {
        FrameMeta::load(self.desc(slot))
    }
    fn state(&self) -> &AtomicU32 {
        &self.region.control().state.state
    }
}

impl Mapped {
    fn desc(&self, slot: u64) -> &SlotDesc {
        let g = &self.decoded.geometry;
        self.region.desc(g.desc_offset(slot & (g.slots - 1)))
    }
}

impl Reader {
    /// Opens the stream `name` read-only. Never waits: a missing producer is
    /// [`OpenError::NotFound`] (see [`crate::Follower`] to wait and follow restarts).
    ///
    /// # Errors
    /// [`OpenError::Name`] for an invalid name, [`OpenError::NotFound`] when no
    /// producer has created it, [`OpenError::PermissionDenied`] when this user
    /// may not map it, [`OpenError::Invalid`] for a segment that is not ready,
    /// foreign, of another layout version or corrupt (the header is validated
    /// before anything in it is used), [`OpenError::Io`] otherwise.
    /// [`OpenError::is_transient`] tells which are worth retrying.
    pub fn open(name: &str, opts: &ReaderOptions) -> Result<Reader, OpenError> {
        let name = StreamName::new(name)?;
        let mapped = segment::open_readonly(&name, opts.dir.as_deref())?;
        let head = seq::load_head(&mapped.region.control().head);
        let slots = mapped.decoded.geometry.slots;
        let pos = match opts.start {
            Start::Next => head,
            Start::Oldest => head.saturating_sub(slots),
        };
        Ok(Reader { name, mapped, opts: opts.clone(), cursor: Cursor::new(pos), overruns: Cell::new(0) })
    }

    /// Stream name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
    /// Path of the object.
    pub fn path(&self) -> &Path {
        &self.mapped.path
    }
    /// Frame format.
    pub fn format(&self) -> &VideoFormat {
        &self.mapped.decoded.format
    }
    /// The region the producer draws its own overlay into (clipped to the
    /// frame); pixel-analysing consumers ignore it. `None` when there is none.
    pub fn overlay(&self) -> Option<Rect> {
        self.mapped.decoded.overlay
    }
    /// Producer identity (pid, epoch, start time).
    pub fn identity(&self) -> Identity {
        self.mapped.decoded.identity
    }
    /// Producer's epoch.
    pub fn epoch(&self) -> u64 {
        self.mapped.decoded.identity.epoch
    }
    /// Slot count.
    pub fn slots(&self) -> u64 {
        self.mapped.decoded.geometry.slots
    }
    /// Next sequence this reader will read.
    pub fn cursor(&self) -> u64 {
        self.cursor.pos()
    }
    /// Counters.
    pub fn stats(&self) -> ReaderStats {
        ReaderStats { frames: self.cursor.frames(), lost: self.cursor.lost(), overruns: self.overruns.get() }
    }
    /// Next sequence the producer will write (as the segment says: unchecked).
    pub fn head(&self) -> u64 {
        seq::load_head(&self.mapped.region.control().head)
    }
    /// Producer status and heartbeat age; [`ProducerStatus::Corrupt`] once this
    /// reader has seen the segment break the ring protocol.
    pub fn status(&self) -> (ProducerStatus, Duration) {
        let (status, age) = self.mapped.status(self.opts.stale_after);
        if self.cursor.corrupt().is_some() { (ProducerStatus::Corrupt, age) } else { (status, age) }
    }
    /// Why this reader found the segment corrupt, once it did.
    pub fn corruption(&self) -> Option<&'static str> {
        self.cursor.corrupt()
    }
    /// Whether the object this reader mapped is still the one under its name.
    pub fn is_current(&self) -> bool {
        segment::same_object(&self.mapped.path, self.mapped.dev_ino)
    }
    /// Address of the mapping's first byte (for fault tests and reports).
    pub fn mapping_addr(&self) -> usize {
        self.mapped.region.as_ptr() as usize
    }

    /// A snapshot for tools.
    pub fn info(&self) -> SegmentInfo {
        let (status, heartbeat_age) = self.status();
        let g = self.mapped.decoded.geometry;
        SegmentInfo {
            name: self.name.to_string(),
            path: self.mapped.path.clone(),
            status,
            heartbeat_age,
            identity: self.identity(),
            format: *self.format(),
            slots: g.slots,
            slot_stride: g.slot_stride,
            total_size: g.total_size,
            head: self.head(),
            tail: seq::load_tail(&self.mapped.region.control().tail),
            hugepages: self.mapped.decoded.hugepages,
            overlay: self.overlay(),
        }
    }

    fn frame(&self, s: u64, meta: FrameMeta, lost_before: u64) -> Frame<'_> {
        let g = &self.mapped.decoded.geometry;
        let format = &self.mapped.decoded.format;
        // `meta.len` comes from the segment: never past the slot.
        let len = meta.len.min(format.frame_size) as usize;
        Frame {
            seq: s,
            meta,
            region: &self.mapped.region,
            offset: g.data_offset(s & (g.slots - 1)),
            len,
            lost_before,
            desc: self.mapped.desc(s),
            format,
            overruns: &self.overruns,
        }
    }

    /// The next frame in order, if one is there; never blocks.
    pub fn try_next(&mut self) -> Option<Frame<'_>> {
        let (s, meta, lost) = self.cursor.advance(&self.mapped, self.opts.lapped)?;
        Some(self.frame(s, meta, lost))
    }

    /// The newest committed frame, skipping (and counting as lost) anything older.
    pub fn latest(&mut self) -> Option<Frame<'_>> {
        let (s, meta, lost) = self.cursor.latest(&self.mapped)?;
        Some(self.frame(s, meta, lost))
    }

    /// Waits until a frame is there, the producer is gone, or `timeout`
    /// passes. Spins first for the configured spin time, then sleeps on the
    /// shared futex, re-checking the producer at least every 100 ms.
    ///
    /// `Gone` comes only once every frame published before the producer
    /// closed (or died) has been made available: the state is read with
    /// Acquire and `head` read again after it (SYNC(close)).
    pub fn wait(&self, timeout: Duration) -> Availability {
        let control = self.mapped.region.control();
        let start = Instant::now();
        let spin_until = start + self.opts.spin;
        let deadline = start + timeout;
        loop {
            let n = seq::load_notify(&control.notify);
            match self.cursor.available(&self.mapped) {
                Avail::Ready => return Availability::Ready,
                Avail::Corrupt(_) => return Availability::Gone(ProducerStatus::Corrupt),
                Avail::Empty => {}
            }
            let (status, _) = self.status();
            if !status.is_alive() {
                // SYNC(close): the state load above was Acquire; a head
                // published before the close is visible now.
                return match self.cursor.available(&self.mapped) {
                    Avail::Ready => Availability::Ready,
                    Avail::Corrupt(_) => Availability::Gone(ProducerStatus::Corrupt),
                    Avail::Empty => Availability::Gone(status),
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Availability::Timeout;
            }
            if now < spin_until {
                std::hint::spin_loop();
                continue;
            }
            notify::wait(&control.notify, n, (deadline - now).min(MAX_SLEEP));
        }
    }

    /// The next frame in order, waiting up to `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Next<'_> {
        match self.wait(timeout) {
            Availability::Ready => match self.try_next() {
                Some(f) => Next::Frame(f),
                None => Next::Timeout,
            },
            Availability::Timeout => Next::Timeout,
            Availability::Gone(s) => Next::Gone(s),
        }
    }
}

/// A frame handed out in place.
///
/// Its bytes live in a slot the producer may overwrite at any moment, so they
/// are never handed out as a plain `&[u8]` that could outlive the check: use
/// [`Frame::read`] (a closure over the bytes in place, validated after it
/// returns) or [`Frame::copy_to`] (a copy, validated).
pub struct Frame<'a> {
    seq: u64,
    meta: FrameMeta,
    region: &'a Region,
    offset: u64,
    len: usize,
    lost_before: u64,
    desc: &'a SlotDesc,
    format: &'a VideoFormat,
    overruns: &'a Cell<u64>,
}

/// A frame was overwritten by the producer while it was being read or copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("frame {seq} was overwritten while it was read (the reader is too slow for the ring)")]
pub struct Overrun {
    /// The frame's ring sequence number.
    pub seq: u64,
}

impl<'a> Frame<'a> {
    /// Ring sequence number (0-based within the producer run).
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Metadata (validated when the frame was handed out).
    pub fn meta(&self) -> &FrameMeta {
        &self.meta
    }
    /// Payload length in bytes (`meta().len`, at most the format's frame size).
    pub fn len(&self) -> usize {
        self.len
    }
    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Frames lost just before this one.
    pub fn lost_before(&self) -> u64 {
        self.lost_before
    }
    /// The stream's format.
    pub fn format(&self) -> &'a VideoFormat {
        self.format
    }

    /// Runs `f` over the payload in place (no copy) and returns its result if
    /// the frame was intact the whole time; `None` (and one overrun counted)
    /// if the producer overwrote the slot meanwhile, in which case whatever
    /// `f` computed must be, and is, dropped. Planes lie at the offsets of
    /// [`VideoFormat::planes`].
    ///
    /// The bytes cannot escape the closure:
    ///
    /// ```compile_fail
    /// # fn f(frame: &shm_proto::Frame<'_>) {
    /// let leaked: Option<&[u8]> = frame.read(|bytes| bytes);
    /// # }
    /// ```
    pub fn read<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let r = f(self.region.bytes(self.offset, self.len));
        if self.is_intact() {
            Some(r)
        } else {
            self.overruns.set(self.overruns.get().saturating_add(1));
            None
        }
    }

    /// Copies the payload into `dst[..len()]` and returns the length, or
    /// [`Overrun`] (counted) if the producer overwrote the slot during the
    /// copy: an `Ok` copy is intact. The copy reads the shared bytes with
    /// volatile loads (see [`crate::region`]).
    ///
    /// # Errors
    /// [`Overrun`] if the producer overwrote the slot during the copy (`dst`
    /// then holds torn bytes).
    ///
    /// # Panics
    /// If `dst` is shorter than [`Frame::len`].
    pub fn copy_to(&self, dst: &mut [u8]) -> Result<usize, Overrun> {
        assert!(dst.len() >= self.len, "copy_to: destination of {} bytes for a {}-byte frame", dst.len(), self.len);
        self.region.copy_out(self.offset, &mut dst[..self.len]);
        if self.is_intact() {
            Ok(self.len)
        } else {
            self.overruns.set(self.overruns.get().saturating_add(1));
            Err(Overrun { seq: self.seq })
        }
    }

    /// The payload as a new, intact `Vec` (see [`Frame::copy_to`]).
    ///
    /// # Errors
    /// [`Overrun`] if the producer overwrote the slot during the copy.
    pub fn to_vec(&self) -> Result<Vec<u8>, Overrun> {
        let mut v = vec![0u8; self.len];
        self.copy_to(&mut v)?;
        Ok(v)
    }

    /// Address of the payload's first byte in this process, for bindings that
    /// lend the bytes out under their own rules (e.g. a read-only numpy view).
    /// Reading through it is the caller's `unsafe`: the bytes may change at any
    /// time, and a result is only good if [`Frame::is_intact`] holds after it.
    pub fn as_ptr(&self) -> *const u8 {
        self.region.as_ptr().wrapping_add(self.offset as usize)
    }

    /// Whether the slot still holds this frame (no counting).
    pub fn is_intact(&self) -> bool {
        seq::validate(&self.desc.seq, self.seq)
    }

    /// Validates after a use through [`Frame::as_ptr`] or a nested
    /// [`Frame::read`]: true if the frame was intact the whole time since it
    /// was handed out; otherwise counts an overrun.
    pub fn validate(self) -> bool {
        let ok = self.is_intact();
        if !ok {
            self.overruns.set(self.overruns.get().saturating_add(1));
        }
        ok
    }
}
