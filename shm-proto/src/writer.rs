//! The producer side of the ring: one writer per stream.
//!
//! For sequence `s` into slot `s mod slots`: mark the slot *writing s*, let the
//! caller fill the slot's bytes in place, store metadata, store *committed s*
//! (Release), `head = s+1` (Release), bump the notify word and wake all waiters.
//! A background thread beats the heartbeat every 50 ms, also while no frames come.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::CreateError;
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
use crate::sync::Ordering;

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
    heartbeat: Heartbeat,
    owner: Option<Owner>,
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
    pub fn begin(&mut self) -> SlotWriter<'_> {
        let s = self.next;
        let slot = s & (self.geometry.slots - 1);
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
    pub fn commit(self, mut meta: FrameMeta) -> u64 {
        let w = &mut *self.writer;
        meta.len = meta.len.min(w.format.frame_size);
        meta.publish_ns = os::realtime_ns();
        let c = w.region.control();
        let d = w.region.desc(w.geometry.desc_offset(self.slot));
        meta.store(d);
        if w.next == 0 {
            seq::store_state(&c.state.state, layout::state::LIVE);
        }
        seq::commit(&d.seq, &c.head, self.seq);
        w.next = self.seq + 1;
        seq::bump_notify(&c.notify);
        notify::wake_all(&c.notify);
        self.seq
    }
}
