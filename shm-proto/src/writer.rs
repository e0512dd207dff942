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
use crate::layout::{self, Geometry, SlotDesc};
use crate::name::StreamName;
use crate::notify;
use crate::os;
use crate::region::Region;
use crate::segment::{self, CreateOptions};
use crate::seq;
use crate::sync::Ordering;

/// Heartbeat period (well under the 100 ms the design promises).
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(50);

/// Frame flag: a keyframe (compressed sources).
pub const FLAG_KEYFRAME: u32 = 1;
/// Frame flag: the source reported a discontinuity before this frame.
pub const FLAG_DISCONT: u32 = 2;

/// Metadata of one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameMeta {
    /// The source's frame id (monotonic within a producer run).
    pub frame_id: u64,
    /// Capture time, Unix ns.
    pub capture_ns: u64,
    /// Publish time, Unix ns (set by the writer at commit).
    pub publish_ns: u64,
    /// Payload length in bytes (the frame size for raw formats).
    pub len: u64,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Exposure time in µs, when the source knows it.
    pub exposure_us: Option<u32>,
    /// Gain in dB, when the source knows it.
    pub gain_db: Option<f32>,
    /// Sensor temperature in °C, when the source knows it.
    pub temperature_c: Option<f32>,
}

impl FrameMeta {
    /// Metadata with just an id, a capture time and a length.
    pub fn new(frame_id: u64, capture_ns: u64, len: u64) -> FrameMeta {
        FrameMeta {
            frame_id,
            capture_ns,
            publish_ns: 0,
            len,
            flags: 0,
            exposure_us: None,
            gain_db: None,
            temperature_c: None,
        }
    }

    pub(crate) fn store(&self, d: &SlotDesc) {
        // Relaxed: published by the Release store of the slot word in `seq::commit`.
        d.frame_id.store(self.frame_id, Ordering::Relaxed);
        d.capture_ns.store(self.capture_ns, Ordering::Relaxed);
        d.publish_ns.store(self.publish_ns, Ordering::Relaxed);
        d.len.store(self.len, Ordering::Relaxed);
        d.flags.store(self.flags, Ordering::Relaxed);
        d.exposure_us.store(self.exposure_us.unwrap_or(u32::MAX), Ordering::Relaxed);
        d.gain_db.store(self.gain_db.unwrap_or(f32::NAN).to_bits(), Ordering::Relaxed);
        let mc = self.temperature_c.map(|t| (t * 1000.0) as i32).unwrap_or(i32::MIN);
        d.temperature_mc.store(mc, Ordering::Relaxed);
    }

    pub(crate) fn load(d: &SlotDesc) -> FrameMeta {
        // Relaxed: validated afterwards by `seq::validate`.
        let exposure = d.exposure_us.load(Ordering::Relaxed);
        let gain = f32::from_bits(d.gain_db.load(Ordering::Relaxed));
        let mc = d.temperature_mc.load(Ordering::Relaxed);
        FrameMeta {
            frame_id: d.frame_id.load(Ordering::Relaxed),
            capture_ns: d.capture_ns.load(Ordering::Relaxed),
            publish_ns: d.publish_ns.load(Ordering::Relaxed),
            len: d.len.load(Ordering::Relaxed),
            flags: d.flags.load(Ordering::Relaxed),
            exposure_us: (exposure != u32::MAX).then_some(exposure),
            gain_db: (!gain.is_nan()).then_some(gain),
            temperature_c: (mc != i32::MIN).then(|| mc as f32 / 1000.0),
        }
    }
}

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
}

impl Writer {
    /// Creates the segment `shmcast.<name>` and starts the heartbeat.
    ///
    /// A live producer under the same name makes this fail with
    /// [`CreateError::InUse`]; a stale one (dead pid or old heartbeat) is
    /// replaced, and [`Writer::replaced`] tells its pid.
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
                        region.control().state.0.heartbeat_ns.store(os::monotonic_ns(), Ordering::Relaxed);
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
        // Relaxed: readers poll the state as a standalone flag (they read no
        // data through it); the notify bump below (Release) wakes waiters so
        // they look at it promptly.
        c.state.0.state.store(state, Ordering::Relaxed);
        seq::bump_notify(&c.notify.0);
        notify::wake_all(&c.notify.0);
    }

    /// Starts writing the next frame: the slot is marked *writing* and its
    /// bytes are handed out to fill in place. Dropping the returned
    /// [`SlotWriter`] without `commit` abandons the frame (the sequence is reused).
    pub fn begin(&mut self) -> SlotWriter<'_> {
        let s = self.next;
        let slot = s & (self.geometry.slots - 1);
        let c = self.region.control();
        let d = self.region.desc(self.geometry.desc_offset(slot));
        seq::begin_write(&d.seq, &c.tail.0, s, self.geometry.slots);
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
            // Relaxed: readers poll the state; the notify below wakes them.
            c.state.0.state.store(layout::state::LIVE, Ordering::Relaxed);
        }
        seq::commit(&d.seq, &c.head.0, self.seq);
        w.next = self.seq + 1;
        seq::bump_notify(&c.notify.0);
        notify::wake_all(&c.notify.0);
        self.seq
    }
}
