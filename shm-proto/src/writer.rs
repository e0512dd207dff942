//! The producer side of the ring: one writer per stream.
//!
//! For sequence `s` into slot `s mod slots`: mark the slot *writing s*, let the
//! caller fill the slot's bytes in place, store metadata, store *committed s*
//! (Release), `head = s+1` (Release), bump the notify word and wake all waiters.
//! A background thread beats the heartbeat every 50 ms, also while no frames come.
//!
//! # Lending a slot
//!
//! [`Writer::lend`] hands the next slot out as an owned [`Loan`] (`Send`,
//! `'static`: it keeps the mapping alive through an `Arc`), so that another
//! component — a GStreamer buffer pool, for one — can render a frame straight
//! into the ring: the slot is marked *writing s* first, exactly as
//! [`Writer::begin`] does, and [`Writer::commit_loan`] /
//! [`Writer::commit_in_place`] publish it without a copy. Rules:
//! - at most one loan is out at a time; while it is, `lend` returns `None`;
//! - the lent slot is *pinned* until the loan is dropped, committed or not:
//!   the writer neither lends nor writes it. A frame written meanwhile whose
//!   sequence maps to the pinned slot takes the next sequence instead; the
//!   passed-over sequence is never published (readers count it lost, like a
//!   frame overwritten before they got to it) — see [`Writer::skipped`];
//! - a loan dropped without a commit abandons its frame: the slot keeps its
//!   *writing* mark (readers never take its bytes), and the sequence is
//!   reused by the next frame unless it was passed over;
//! - a commit is refused ([`LoanError`]) unless the loan is this writer's,
//!   out, uncommitted and its sequence is still the next one: a loan of a
//!   writer that was replaced (a format change) never reaches the new segment.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{CreateError, LoanError};
use crate::format::VideoFormat;
use crate::header::Identity;
use crate::layout::{self, Geometry};
pub use crate::meta::{FLAG_DISCONT, FLAG_KEYFRAME, FrameMeta};
use crate::name::StreamName;
use crate::notify;
use crate::os;
use crate::region::Region;
use crate::segment::{self, CreateOptions, Owner};
use crate::seq;
use crate::sync::{AtomicBool as LoanFlag, Ordering};

/// Heartbeat period (well under the 100 ms the design promises).
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(50);

struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The producer's handle on a stream. Dropping it closes the stream: state
/// closed, readers woken, name unlinked.
pub struct Writer {
    name: StreamName,
    region: Arc<Region>,
    geometry: Geometry,
    format: VideoFormat,
    identity: Identity,
    path: PathBuf,
    dev_ino: (u64, u64),
    replaced: Option<u32>,
    next: u64,
    /// A frame was committed (the first one marks the stream live).
    live: bool,
    /// The loan out, if any: its slot is pinned while its flag is set.
    lent: Option<Lent>,
    /// Sequences passed over because their slot was pinned by a loan.
    skipped: u64,
    heartbeat: Heartbeat,
    owner: Option<Owner>,
}

/// The writer's record of the slot it lent.
struct Lent {
    /// Set while the [`Loan`] lives; cleared (Release) by its `drop`.
    out: Arc<LoanFlag>,
    seq: u64,
    slot: u64,
    committed: bool,
}

impl Writer {
    /// Creates the segment `shmcast.<name>` and starts the heartbeat.
    ///
    /// The name is owned for the writer's lifetime (see [`crate::segment`]):
    /// another running producer of the same name — even a stopped one — makes
    /// this fail with [`CreateError::InUse`]; an object left by a producer that
    /// is gone is replaced, and [`Writer::replaced`] tells its pid.
    ///
    /// # Errors
    /// A bad name or slot count, the name in use, a foreign object under the
    /// name, too little memory in the backing filesystem, or an OS failure.
    pub fn create(name: &str, format: VideoFormat, opts: &CreateOptions) -> Result<Writer, CreateError> {
        let name = StreamName::new(name)?;
        let identity =
            Identity { pid: std::process::id(), epoch: os::random_u64() | 1, start_unix_ns: os::realtime_ns() };
        let created = segment::create(&name, &format, opts, &identity)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let region = Arc::clone(&created.region);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("shmcast-heartbeat".into())
                .spawn(move || {
                    // Relaxed: a plain flag; the join in `drop` synchronises.
                    while !stop.load(Ordering::Relaxed) {
                        // Relaxed: a standalone timestamp; nothing is published through it.
                        region.control().state.heartbeat_ns.store(os::monotonic_ns(), Ordering::Relaxed);
                        std::thread::park_timeout(HEARTBEAT_PERIOD);
                    }
                })
                .map_err(|error| CreateError::Io { name: name.to_string(), op: "spawn heartbeat thread", error })?
        };
        Ok(Writer {
            name,
            region: created.region,
            geometry: created.geometry,
            format,
            identity,
            path: created.path,
            dev_ino: created.dev_ino,
            replaced: created.replaced,
            next: 0,
            live: false,
            lent: None,
            skipped: 0,
            heartbeat: Heartbeat { stop, thread: Some(thread) },
            owner: Some(created.owner),
        })
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
    /// Path of the segment object.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The frame format.
    pub fn format(&self) -> &VideoFormat {
        &self.format
    }
    /// This run's epoch id.
    pub fn epoch(&self) -> u64 {
        self.identity.epoch
    }
    /// Slot count.
    pub fn slots(&self) -> u32 {
        self.geometry.slots as u32
    }
    /// Bytes of the whole segment.
    pub fn total_size(&self) -> u64 {
        self.geometry.total_size
    }
    /// Pid of a stale producer whose object this writer replaced (0 if unknown).
    pub fn replaced(&self) -> Option<u32> {
        self.replaced
    }
    /// Sequence number of the next frame.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Sequences passed over so far because a loan pinned their slot (see
    /// the module docs); readers count each as one lost frame.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Whether a [`Loan`] is out (not dropped yet, committed or not).
    pub fn is_lent(&mut self) -> bool {
        self.pinned().is_some()
    }

    /// The slot a loan still pins, forgetting a loan that was dropped.
    fn pinned(&mut self) -> Option<u64> {
        let out = self.lent.as_ref().map(|l| seq::loan_is_out(&l.out))?;
        if out {
            self.lent.as_ref().map(|l| l.slot)
        } else {
            self.lent = None;
            None
        }
    }

    /// The sequence and slot of the next frame, passing over a sequence
    /// whose slot a loan pins (one at most: only one slot is ever pinned).
    fn claim(&mut self) -> (u64, u64) {
        let mask = self.geometry.slots - 1;
        if self.pinned() == Some(self.next & mask) {
            self.next += 1;
            self.skipped += 1;
        }
        (self.next, self.next & mask)
    }

    /// Marks the stream live before the first frame (the first commit does too).
    pub fn set_live(&self) {
        self.set_state(layout::state::LIVE);
    }

    fn set_state(&self, state: u32) {
        let c = self.region.control();
        // SYNC(close): Release, so a reader that sees CLOSED sees every frame
        // published before it; the notify bump below wakes waiters to look.
        seq::store_state(&c.state.state, state);
        seq::bump_notify(&c.notify);
        notify::wake_all(&c.notify);
    }

    /// Starts writing the next frame: the slot is marked *writing* and its
    /// bytes are handed out to fill in place. Dropping the returned
    /// [`SlotWriter`] without `commit` abandons the frame (the sequence is reused).
    ///
    /// While a [`Loan`] is out, a frame whose sequence maps to the lent slot
    /// takes the next sequence (see the module docs).
    pub fn begin(&mut self) -> SlotWriter<'_> {
        let (s, slot) = self.claim();
        let c = self.region.control();
        let d = self.region.desc(self.geometry.desc_offset(slot));
        seq::begin_write(&d.seq, &c.tail, s, self.geometry.slots);
        SlotWriter { writer: self, seq: s, slot }
    }

    /// Writes one frame with a closure that fills the slot and returns the
    /// metadata (its `len` says how many bytes were written).
    pub fn publish(&mut self, fill: impl FnOnce(&mut [u8]) -> FrameMeta) -> u64 {
        let mut w = self.begin();
        let meta = fill(w.buf());
        w.commit(meta)
    }

    /// Lends the next slot out, marked *writing*, to be filled in place by
    /// whoever holds the [`Loan`] and published by [`Writer::commit_loan`] or
    /// [`Writer::commit_in_place`]. `None` while another loan is out: the
    /// caller fills its own memory and publishes by copying.
    pub fn lend(&mut self) -> Option<Loan> {
        if self.pinned().is_some() {
            return None;
        }
        let s = self.next;
        let slot = s & (self.geometry.slots - 1);
        let c = self.region.control();
        let d = self.region.desc(self.geometry.desc_offset(slot));
        // The mark is stored (and fenced) here, before the loan leaves this
        // thread: whoever fills the slot got the loan through a hand-off that
        // orders this before their writes (SYNC(begin) holds across it).
        seq::begin_write(&d.seq, &c.tail, s, self.geometry.slots);
        let out = Arc::new(LoanFlag::new(true));
        self.lent = Some(Lent { out: Arc::clone(&out), seq: s, slot, committed: false });
        Some(Loan {
            region: Arc::clone(&self.region),
            out,
            seq: s,
            off: self.geometry.data_offset(slot),
            len: self.format.frame_size as usize,
        })
    }

    /// Publishes the frame `loan` holds, filled in place (see
    /// [`SlotWriter::commit`] for `meta`). The loan stays valid (its slot
    /// pinned, its bytes the committed frame) until it is dropped; its holder
    /// must not write the bytes after this.
    ///
    /// # Errors
    /// [`LoanError`]: the loan is not this writer's outstanding one, was
    /// committed already, or its sequence was passed over. Nothing is published.
    pub fn commit_loan(&mut self, loan: &Loan, meta: FrameMeta) -> Result<u64, LoanError> {
        let ours = self.lent.as_ref().is_some_and(|l| Arc::ptr_eq(&l.out, &loan.out));
        if !ours {
            return Err(LoanError::NotLent);
        }
        self.commit_lent(meta)
    }

    /// Publishes the lent slot when `bytes` is exactly its memory (same
    /// address and length): for callers that only see the loan's bytes, as a
    /// GStreamer element sees a buffer whose memory wraps the [`Loan`]. The
    /// address is only compared, never dereferenced.
    ///
    /// # Errors
    /// As [`Writer::commit_loan`]; [`LoanError::NotTheSlot`] when `bytes`
    /// are not the lent slot.
    pub fn commit_in_place(&mut self, bytes: &[u8], meta: FrameMeta) -> Result<u64, LoanError> {
        let Some(slot) = self.lent.as_ref().map(|l| l.slot) else { return Err(LoanError::NotLent) };
        let at = self.region.as_ptr().wrapping_add(self.geometry.data_offset(slot) as usize);
        if !std::ptr::eq(bytes.as_ptr(), at) || bytes.len() as u64 != self.format.frame_size {
            return Err(LoanError::NotTheSlot);
        }
        self.commit_lent(meta)
    }

    fn commit_lent(&mut self, meta: FrameMeta) -> Result<u64, LoanError> {
        let next = self.next;
        let Some(l) = self.lent.as_mut() else { return Err(LoanError::NotLent) };
        if !seq::loan_is_out(&l.out) {
            return Err(LoanError::NotLent);
        }
        if l.committed {
            return Err(LoanError::Committed { seq: l.seq });
        }
        if l.seq != next {
            return Err(LoanError::Stale { seq: l.seq, next });
        }
        l.committed = true;
        let (s, slot) = (l.seq, l.slot);
        Ok(self.commit_slot(s, slot, meta))
    }

    /// Stores `meta` and commits sequence `s` in `slot`: the one commit path.
    fn commit_slot(&mut self, s: u64, slot: u64, mut meta: FrameMeta) -> u64 {
        meta.len = meta.len.min(self.format.frame_size);
        meta.publish_ns = os::realtime_ns();
        let c = self.region.control();
        let d = self.region.desc(self.geometry.desc_offset(slot));
        meta.store(d);
        if !self.live {
            seq::store_state(&c.state.state, layout::state::LIVE);
            self.live = true;
        }
        seq::commit(&d.seq, &c.head, s);
        self.next = s + 1;
        seq::bump_notify(&c.notify);
        notify::wake_all(&c.notify);
        s
    }

    /// Closes the stream (same as dropping it).
    pub fn close(self) {}
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Relaxed: the join below synchronises with the thread.
        self.heartbeat.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.heartbeat.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        // Unlink only what is still ours: a successor that replaced us after we
        // were deemed stale keeps its stream.
        self.set_state(layout::state::CLOSED);
        segment::unlink_if_same(&self.path, self.dev_ino);
        // Last: while the lock is held nobody else can create the name.
        drop(self.owner.take());
    }
}

/// A slot being written; see [`Writer::begin`].
pub struct SlotWriter<'a> {
    writer: &'a mut Writer,
    seq: u64,
    slot: u64,
}

impl SlotWriter<'_> {
    /// The sequence number this frame will have.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The slot's bytes, `frame_size` long, to fill in place. Raw formats
    /// start with the planes at the offsets of [`VideoFormat::planes`].
    pub fn buf(&mut self) -> &mut [u8] {
        let g = &self.writer.geometry;
        self.writer.region.bytes_mut(g.data_offset(self.slot), self.writer.format.frame_size as usize)
    }

    /// Publishes the frame. `meta.len` is clamped to the frame size;
    /// `publish_ns` is set now. Returns the frame's sequence number.
    pub fn commit(self, meta: FrameMeta) -> u64 {
        self.writer.commit_slot(self.seq, self.slot, meta)
    }
}

/// A slot lent out by [`Writer::lend`]: its bytes (`frame_size` long, raw
/// formats laid out as [`VideoFormat::planes`]) to fill in place, owned, so
/// it can live in another thread or inside a GStreamer memory. It keeps the
/// mapping alive, so it never dangles, even after its writer is dropped or
/// replaced (its segment is then closed and unlinked, and the loan can no
/// longer be committed anywhere). Dropping it ends the loan: an uncommitted
/// frame is abandoned, and the slot is the writer's again.
pub struct Loan {
    region: Arc<Region>,
    out: Arc<LoanFlag>,
    seq: u64,
    off: u64,
    len: usize,
}

impl Loan {
    /// The sequence the frame gets if it is committed.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Length of the slot's bytes (the format's frame size).
    pub fn len(&self) -> usize {
        self.len
    }
    /// True for an empty slot (never: frame sizes are at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsRef<[u8]> for Loan {
    fn as_ref(&self) -> &[u8] {
        self.region.bytes(self.off, self.len)
    }
}

/// The slot's bytes to fill. Fill them through a slice taken in the thread
/// that writes them (`as_mut` fences the *writing* mark before them for that
/// thread; a GStreamer memory wrapping the loan takes it where the buffer is
/// acquired, the thread that fills it).
impl AsMut<[u8]> for Loan {
    fn as_mut(&mut self) -> &mut [u8] {
        // Exclusive: the writer neither writes nor lends this slot while the
        // loan lives (it is pinned), and `&mut self` excludes other views
        // through the loan.
        seq::take_loan();
        self.region.bytes_mut(self.off, self.len)
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        seq::end_loan(&self.out);
    }
}

impl std::fmt::Debug for Loan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loan").field("seq", &self.seq).field("len", &self.len).finish_non_exhaustive()
    }
}
