//! The consumer side of the ring: any number of readers per stream, each with
//! its own cursor in its own memory. Readers map the segment `PROT_READ` from
//! an `O_RDONLY` descriptor and never write it.
//!
//! `next` delivers frames in order; when the producer has lapped the reader it
//! skips to the oldest frame still there and reports exactly how many were
//! lost. Frames are handed out in place; because the producer may overwrite a
//! slot while it is being used, a result computed from a frame counts only if
//! [`Frame::validate`] (after the use) says the frame was intact.
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::OpenError;
use crate::format::VideoFormat;
use crate::header::Identity;
use crate::layout::SlotDesc;
use crate::name::StreamName;
use crate::notify;
use crate::segment::{self, Mapped, ProducerStatus, STALE_AFTER};
use crate::seq::{self, SlotState};
use crate::writer::FrameMeta;

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
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions { dir: None, spin: Duration::ZERO, stale_after: STALE_AFTER, start: Start::Next }
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
        ReaderStats { frames: self.frames + o.frames, lost: self.lost + o.lost, overruns: self.overruns + o.overruns }
    }
}

/// The result of waiting for a frame.
pub enum Next<'a> {
    /// A frame, in place.
    Frame(Frame<'a>),
    /// Nothing within the timeout; the producer is alive.
    Timeout,
    /// The producer closed or went stale, and every frame it published has been read
    /// or lost.
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
}

/// A read-only view of a stream.
pub struct Reader {
    name: StreamName,
    mapped: Mapped,
    opts: ReaderOptions,
    cursor: u64,
    frames: Cell<u64>,
    lost: Cell<u64>,
    overruns: Cell<u64>,
}

impl Reader {
    /// Opens the stream `name` read-only. Never waits: a missing producer is
    /// [`OpenError::NotFound`] (see [`crate::Follower`] to wait and follow restarts).
    pub fn open(name: &str, opts: &ReaderOptions) -> Result<Reader, OpenError> {
        let name = StreamName::new(name)?;
        let mapped = segment::open_readonly(&name, opts.dir.as_deref())?;
        let mut r = Reader {
            name,
            mapped,
            opts: opts.clone(),
            cursor: 0,
            frames: Cell::new(0),
            lost: Cell::new(0),
            overruns: Cell::new(0),
        };
        r.cursor = match opts.start {
            Start::Next => r.head(),
            Start::Oldest => seq::load_tail(&r.mapped.region.control().tail.0),
        };
        Ok(r)
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
        self.cursor
    }
    /// Counters.
    pub fn stats(&self) -> ReaderStats {
        ReaderStats { frames: self.frames.get(), lost: self.lost.get(), overruns: self.overruns.get() }
    }
    /// Next sequence the producer will write.
    pub fn head(&self) -> u64 {
        seq::load_head(&self.mapped.region.control().head.0)
    }
    /// Producer status and heartbeat age.
    pub fn status(&self) -> (ProducerStatus, Duration) {
        self.mapped.status(self.opts.stale_after)
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
            tail: seq::load_tail(&self.mapped.region.control().tail.0),
            hugepages: self.mapped.decoded.hugepages,
        }
    }

    fn desc(&self, s: u64) -> &SlotDesc {
        let g = &self.mapped.decoded.geometry;
        self.mapped.region.desc(g.desc_offset(s & (g.slots - 1)))
    }

    /// Moves the cursor to a frame that is ready, counting losses; returns
    /// its sequence, metadata and how many frames were skipped to get there.
    fn advance(&mut self) -> Option<(u64, FrameMeta, u64)> {
        let control = self.mapped.region.control();
        let start = self.cursor;
        loop {
            let head = seq::load_head(&control.head.0);
            if self.cursor >= head {
                return None;
            }
            let tail = seq::load_tail(&control.tail.0);
            if self.cursor < tail {
                self.lost.set(self.lost.get() + (tail - self.cursor));
                self.cursor = tail;
                // `tail` (Relaxed) may be newer than the `head` we loaded:
                // the frame at the new cursor may not be visible to us yet.
                if self.cursor >= head {
                    return None;
                }
            }
            let s = self.cursor;
            let d = self.desc(s);
            match seq::check(&d.seq, s) {
                SlotState::Ready => {
                    let meta = FrameMeta::load(d);
                    if seq::validate(&d.seq, s) {
                        self.cursor = s + 1;
                        self.frames.set(self.frames.get() + 1);
                        return Some((s, meta, s - start));
                    }
                    // Overwritten while reading the metadata: lapped.
                    self.lost.set(self.lost.get() + 1);
                    self.cursor = s + 1;
                }
                SlotState::Overwritten => {
                    let next = seq::load_tail(&control.tail.0).max(s + 1);
                    self.lost.set(self.lost.get() + (next - s));
                    self.cursor = next;
                }
                // head > s means committed(s) was published; a smaller word
                // means the segment is not behaving as a shmcast ring.
                SlotState::NotYet => return None,
            }
        }
    }

    fn frame(&self, s: u64, meta: FrameMeta, lost_before: u64) -> Frame<'_> {
        let g = &self.mapped.decoded.geometry;
        let format = &self.mapped.decoded.format;
        let len = meta.len.min(format.frame_size) as usize;
        let data = self.mapped.region.bytes(g.data_offset(s & (g.slots - 1)), len);
        Frame { seq: s, meta, data, lost_before, desc: self.desc(s), format, overruns: &self.overruns }
    }

    /// The next frame in order, if one is there; never blocks.
    pub fn try_next(&mut self) -> Option<Frame<'_>> {
        let (s, meta, lost) = self.advance()?;
        Some(self.frame(s, meta, lost))
    }

    /// The newest committed frame, skipping (and counting as lost) anything older.
    pub fn latest(&mut self) -> Option<Frame<'_>> {
        let head = self.head();
        if head == 0 || head <= self.cursor {
            return None;
        }
        if head - 1 > self.cursor {
            self.lost.set(self.lost.get() + (head - 1 - self.cursor));
            self.cursor = head - 1;
        }
        self.try_next()
    }

    /// Waits until a frame is there, the producer is gone, or `timeout`
    /// passes. Spins first for the configured spin time, then sleeps on the
    /// shared futex, re-checking the producer at least every 100 ms.
    pub fn wait(&self, timeout: Duration) -> Availability {
        let control = self.mapped.region.control();
        let start = Instant::now();
        let spin_until = start + self.opts.spin;
        let deadline = start + timeout;
        loop {
            let n = seq::load_notify(&control.notify.0);
            if seq::load_head(&control.head.0) > self.cursor {
                return Availability::Ready;
            }
            let (status, _) = self.status();
            if !status.is_alive() {
                return Availability::Gone(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return Availability::Timeout;
            }
            if now < spin_until {
                std::hint::spin_loop();
                continue;
            }
            notify::wait(&control.notify.0, n, (deadline - now).min(MAX_SLEEP));
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
pub struct Frame<'a> {
    seq: u64,
    meta: FrameMeta,
    data: &'a [u8],
    lost_before: u64,
    desc: &'a SlotDesc,
    format: &'a VideoFormat,
    overruns: &'a Cell<u64>,
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
    /// The payload, in place: `meta().len` bytes. May change under you if the
    /// producer laps this reader; call [`Frame::validate`] after using it.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
    /// Frames lost just before this one.
    pub fn lost_before(&self) -> u64 {
        self.lost_before
    }
    /// The stream's format.
    pub fn format(&self) -> &'a VideoFormat {
        self.format
    }
    /// Bytes of plane `i` (raw formats), in place.
    pub fn plane(&self, i: usize) -> Option<&'a [u8]> {
        let p = self.format.planes().get(i)?;
        let start = p.offset as usize;
        self.data.get(start..start + p.span() as usize)
    }
    /// Whether the slot still holds this frame (no counting).
    pub fn is_intact(&self) -> bool {
        seq::validate(&self.desc.seq, self.seq)
    }
    /// Validates after use: true if the frame was intact the whole time since
    /// it was handed out; otherwise counts an overrun, and whatever was computed
    /// from it must be dropped.
    pub fn validate(self) -> bool {
        let ok = self.is_intact();
        if !ok {
            self.overruns.set(self.overruns.get() + 1);
        }
        ok
    }
}
