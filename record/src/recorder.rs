//! The recorder: follows the ring, copies each frame once into a buffer of a
//! bounded set and pushes it into the current segment's pipeline; a catalog
//! thread writes what reached the files, applies retention and frees space
//! when the disk is full; event sources and the clip cutter run beside them.
//!
//! Invariants:
//! - The ring is never waited on by anything but `Follower::poll`: no
//!   pipeline, disk or database call can slow the producer. A recorder that
//!   cannot keep up loses frames from the ring (counted by the reader) or
//!   drops them before the encoder (counted here).
//! - Memory is bounded whatever the disk does: at most `queue + 3` frame
//!   buffers, a bounded channel to the catalog thread (frames beyond it are
//!   counted as unlisted), bounded event queues.
//! - A segment is opened for the first frame after a start, a rotation
//!   (`--segment-seconds`), a producer restart or format change, or a failed
//!   segment; closing one (EOS, muxer finishing, fsync) happens on a
//!   separate thread.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use gstreamer as gst;
use shm_proto::{Event, Follower, ReaderOptions, VideoFormat};
use shmcast_common::ReaderMetrics;
use shmcast_common::metrics::{self, Counter, IntGauge};
use tracing::{debug, info, warn};

use crate::catalog::{Catalog, FrameRow, NewSegment};
use crate::config::Config;
use crate::encoder::{self, Encoder};
use crate::segment::{self, EncodeSettings, SegmentWriter, Written};
use crate::{clips, events, ring, time};

/// Channel capacity to the catalog thread (~2 min at 30 fps).
const CATALOG_QUEUE: usize = 4096;
/// Frames are committed at least this often.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// Retention runs this often.
const RETENTION_EVERY: Duration = Duration::from_secs(2);
/// After a failed segment, wait this long before opening the next.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Frames kept in memory at most while the catalog cannot be written
/// (10 minutes at 30 fps, about 300 kB).
const CATALOG_BACKLOG: usize = 18_000;
/// Space to free when the disk is full, at least.
const MIN_FREE_AFTER_FULL: u64 = 4 << 20;

/// The recorder's own metrics (its reader's are [`ReaderMetrics`]).
#[derive(Clone)]
pub struct Metrics {
    /// Frames read but not written (no free buffer, full queue, no segment).
    pub dropped: Counter,
    /// Frames written but missing from the catalog (its queue was full).
    pub unlisted: Counter,
    /// Frames catalogued.
    pub recorded: Counter,
    /// Bytes written to segment files.
    pub bytes: Counter,
    /// Segments opened.
    pub segments: Counter,
    /// Segments in the catalog now.
    pub segments_now: IntGauge,
    /// Event clips cut.
    pub clips: Counter,
    /// Events received.
    pub events: Counter,
    /// Events dropped (queue full, unparsable).
    pub events_dropped: Counter,
    /// Free bytes on the recording's file system.
    pub disk_free: IntGauge,
    /// Times the disk was full.
    pub disk_full: Counter,
    /// Segments deleted by retention or to free space.
    pub deleted: Counter,
}

impl Metrics {
    /// Registers the metrics in the process-wide registry.
    pub fn register() -> Metrics {
        let r = metrics::global();
        Metrics {
            dropped: r.counter(
                "shmcast_record_dropped_frames_total",
                "Frames read but not written: no free buffer, encoder queue full, no segment open.",
            ),
            unlisted: r.counter(
                "shmcast_record_unlisted_frames_total",
                "Frames written to a segment but not catalogued (catalog queue full).",
            ),
            recorded: r.counter("shmcast_record_frames_total", "Frames written and catalogued."),
            bytes: r.counter("shmcast_record_bytes_written_total", "Bytes written to segment files."),
            segments: r.counter("shmcast_record_segments_total", "Segments opened."),
            segments_now: r.gauge("shmcast_record_segments", "Segments in the catalog."),
            clips: r.counter("shmcast_record_clips_total", "Event clips cut."),
            events: r.counter("shmcast_record_events_total", "Events received."),
            events_dropped: r.counter("shmcast_record_events_dropped_total", "Events dropped (queue full, invalid)."),
            disk_free: r.gauge("shmcast_record_disk_free_bytes", "Free bytes on the recording's file system."),
            disk_full: r.counter("shmcast_record_disk_full_total", "Times the disk was found full."),
            deleted: r.counter("shmcast_record_segments_deleted_total", "Segments deleted (retention, full disk)."),
        }
    }
}

/// Messages to the catalog thread, in the order things happened.
enum Msg {
    Frame(Written),
    /// A segment finished normally: final size, frames pushed.
    Closed {
        id: i64,
        bytes: u64,
        pushed: u64,
    },
    /// A segment stopped after a failure: keep what the file holds.
    Aborted {
        id: i64,
        pushed: u64,
    },
    DiskFull,
}

/// Free bytes on the file system holding `dir`.
pub fn disk_free(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Records until `stop` is set.
pub fn run(cfg: Config, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    gst::init().context("cannot initialise GStreamer")?;
    let encoder = Encoder::resolve(cfg.encoder)?;
    for d in [cfg.dir.clone(), cfg.dir.join("segments"), cfg.dir.join("clips")] {
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut cat = Catalog::open(&cfg.dir, true)?;
    if let Some(other) = cat.meta("stream")?
        && other != cfg.name
    {
        anyhow::bail!("{} records stream {other:?}, not {:?}: use another --dir", cfg.dir.display(), cfg.name);
    }
    cat.set_meta("stream", &cfg.name)?;
    let encoding = encoder::Encoding { encoder, gop: cfg.gop, bitrate: cfg.bitrate };
    cat.set_meta("encoding", &encoding.to_meta())?;
    repair(&mut cat)?;
    let m = Metrics::register();
    m.segments_now.set(cat.segments()?.len() as u64);

    let (tx, rx) = sync_channel::<Msg>(CATALOG_QUEUE);
    let (wtx, wrx) = sync_channel::<Written>(CATALOG_QUEUE);
    // Frames from the pad probes join the ordered message stream here.
    let forward = {
        let tx = tx.clone();
        std::thread::Builder::new().name("record-probe".into()).spawn(move || {
            while let Ok(w) = wrx.recv() {
                if tx.send(Msg::Frame(w)).is_err() {
                    break;
                }
            }
        })?
    };
    let catalog = {
        let cfg = cfg.clone();
        let m = m.clone();
        let stop = Arc::clone(&stop);
        std::thread::Builder::new().name("record-catalog".into()).spawn(move || catalog_thread(cfg, rx, m, stop))?
    };

    let rotate = Arc::new(AtomicBool::new(false));
    let (etx, erx) = sync_channel::<events::EventIn>(256);
    let mut side: Vec<JoinHandle<()>> = Vec::new();
    if let Some(path) = &cfg.events {
        side.push(events::follow_file(path.clone(), etx.clone(), Arc::clone(&stop), m.clone())?);
    }
    if let Some(mq) = &cfg.mqtt {
        side.push(events::mqtt(mq.clone(), &cfg.name, etx.clone(), Arc::clone(&stop), m.clone())?);
    }
    drop(etx);
    if cfg.events.is_some() || cfg.mqtt.is_some() {
        let (cfg, m, stop, rotate) = (cfg.clone(), m.clone(), Arc::clone(&stop), Arc::clone(&rotate));
        side.push(
            std::thread::Builder::new()
                .name("record-clips".into())
                .spawn(move || clips::event_worker(cfg, erx, rotate, stop, m))?,
        );
    }

    let settings = EncodeSettings { encoder, gop: cfg.gop, bitrate: cfg.bitrate, queue: cfg.queue };
    info!(
        stream = %cfg.name, dir = %cfg.dir.display(), encoder = encoder.element(),
        segment_s = cfg.segment.as_secs_f64(), "recording"
    );
    let mut r = Recorder {
        cfg: &cfg,
        cat,
        settings,
        m: m.clone(),
        tx: tx.clone(),
        wtx,
        unlisted: m.unlisted.clone(),
        cur: None,
        format: None,
        epoch: 0,
        buffers: Buffers::default(),
        closers: Vec::new(),
        retry_at: None,
        full_logged: false,
        reader_metrics: ReaderMetrics::new(),
        rotate,
    };
    let result = r.follow(&stop);
    r.close_current();
    for h in r.closers.drain(..) {
        let _ = h.join();
    }
    drop(r);
    drop(tx);
    let _ = forward.join();
    let _ = catalog.join();
    stop.store(true, Ordering::Relaxed);
    for h in side {
        let _ = h.join();
    }
    result
}

/// Frame buffers, reused once the pipeline has released them (bounded).
#[derive(Default)]
struct Buffers {
    free: Vec<gst::Buffer>,
    max: usize,
    format: Option<VideoFormat>,
}

impl Buffers {
    fn reset(&mut self, format: VideoFormat, max: usize) {
        self.free.clear();
        self.max = max;
        self.format = Some(format);
    }

    /// A writable buffer of the format's frame size; `None` when all are in use.
    fn acquire(&mut self) -> Option<gst::Buffer> {
        let format = self.format?;
        if let Some(i) = self.free.iter().position(|b| b.is_writable()) {
            // The pipeline has dropped its reference: we hold the only one.
            let b = self.free.swap_remove(i);
            return Some(b);
        }
        if self.free.len() >= self.max {
            return None;
        }
        let mut b = gst::Buffer::with_size(format.frame_size as usize).ok()?;
        if let Some(bm) = b.get_mut() {
            encoder::add_layout_meta(bm, &format).ok()?;
        }
        Some(b)
    }

    fn keep(&mut self, b: gst::Buffer) {
        if self.free.len() < self.max {
            self.free.push(b);
        }
    }
}

struct Recorder<'a> {
    cfg: &'a Config,
    cat: Catalog,
    settings: EncodeSettings,
    m: Metrics,
    tx: SyncSender<Msg>,
    wtx: SyncSender<Written>,
    unlisted: Counter,
    cur: Option<SegmentWriter>,
    format: Option<VideoFormat>,
    epoch: u64,
    buffers: Buffers,
    closers: Vec<JoinHandle<()>>,
    retry_at: Option<Instant>,
    full_logged: bool,
    /// The follower's counts, added to the process-wide reader metrics.
    reader_metrics: ReaderMetrics,
    rotate: Arc<AtomicBool>,
}

impl Recorder<'_> {
    fn follow(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let mut follower = Follower::new(&self.cfg.name, ReaderOptions::default())
            .map_err(|e| anyhow::anyhow!("invalid --name: {e}"))?;
        let mut open_error_logged = false;
        let mut waiting_logged = false;
        let mut stats_at = Instant::now();
        let mut stats_frames = 0u64;
        while !shmcast_common::should_stop(stop) {
            match follower.poll(Duration::from_millis(100)) {
                Ok(Event::Frame(f)) => self.on_frame(f),
                Ok(Event::Attached(a)) => {
                    info!(
                        stream = %self.cfg.name, pid = a.pid, epoch = format_args!("{:016x}", a.epoch),
                        format = %a.format, attach = a.attach_count, "producer attached"
                    );
                    // A new producer (or format): a new segment.
                    self.close_current();
                    self.format = Some(a.format);
                    self.epoch = a.epoch;
                    self.buffers.reset(a.format, self.cfg.queue as usize + 3);
                    open_error_logged = false;
                }
                Ok(Event::Detached(status)) => {
                    warn!(stream = %self.cfg.name, ?status, "producer gone; segment closed, waiting for it to return");
                    self.close_current();
                }
                Ok(Event::Idle) => {
                    if !follower.is_attached() && !waiting_logged {
                        info!(stream = %self.cfg.name, "waiting for the producer");
                        waiting_logged = true;
                    }
                }
                Err(e) => {
                    if !open_error_logged {
                        warn!(stream = %self.cfg.name, "cannot open stream: {e}; retrying");
                        open_error_logged = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            self.check_failure();
            if self.rotate.swap(false, Ordering::Relaxed) && self.cur.is_some() {
                debug!("rotation asked for a clip");
                self.close_current();
            }
            self.account(&follower);
            if stats_at.elapsed() >= Duration::from_secs(10) {
                let reader = self.reader_metrics.totals();
                let frames = reader.frames;
                info!(
                    stream = %self.cfg.name,
                    fps = format_args!("{:.1}", (frames - stats_frames) as f64 / stats_at.elapsed().as_secs_f64()),
                    frames, lost = reader.lost,
                    overruns = reader.overruns,
                    dropped = self.m.dropped.get(),
                    bytes = self.m.bytes.get(),
                    segments = self.m.segments.get(),
                    clips = self.m.clips.get(),
                    "recording stats"
                );
                stats_at = Instant::now();
                stats_frames = frames;
            }
        }
        Ok(())
    }

    fn account(&mut self, follower: &Follower) {
        self.reader_metrics.record(follower);
    }

    fn on_frame(&mut self, f: shm_proto::Frame<'_>) {
        let meta = *f.meta();
        self.reader_metrics.observe_wake(meta.publish_ns);
        let Some(format) = self.format else { return };
        if meta.len > format.frame_size {
            self.m.dropped.inc();
            return;
        }
        let due = self.cur.as_ref().is_some_and(|c| {
            meta.capture_ns.saturating_sub(c.start_ns) >= self.cfg.segment.as_nanos() as u64
                || c.opened.elapsed() >= self.cfg.segment + Duration::from_secs(5)
        });
        if due {
            self.close_current();
        }
        if self.cur.is_none() && !self.open_segment(&format, meta.capture_ns) {
            self.m.dropped.inc();
            return;
        }
        let Some(mut buf) = self.buffers.acquire() else {
            self.m.dropped.inc();
            return;
        };
        let copied = {
            let Some(b) = buf.get_mut() else { return };
            if b.size() != format.frame_size as usize {
                b.set_size(format.frame_size as usize);
            }
            let n = match b.map_writable() {
                Ok(mut map) => ring::copy_frame(&f, map.as_mut_slice()),
                Err(_) => None,
            };
            if let Some(n) = n
                && format.pixel.is_compressed()
            {
                b.set_size(n);
            }
            n.is_some()
        };
        if !copied {
            // Overwritten during the copy (counted by the reader) or too large.
            self.buffers.keep(buf);
            return;
        }
        if let Some(c) = self.cur.as_mut() {
            let kept = c.push(buf, meta.frame_id, meta.capture_ns);
            self.buffers.keep(kept);
        }
    }

    fn open_segment(&mut self, format: &VideoFormat, start_ns: u64) -> bool {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        self.retry_at = None;
        let rel = segment_name(&self.cfg.name, start_ns, self.epoch, format, &self.cfg.dir);
        let path = self.cfg.dir.join(&rel);
        let fmt = format.to_string();
        let new = NewSegment {
            path: &rel,
            stream: &self.cfg.name,
            epoch: self.epoch,
            format: &fmt,
            codec: segment::codec(format),
            width: format.width,
            height: format.height,
            start_ns,
        };
        let id = match self.cat.insert_segment(&new) {
            Ok(id) => id,
            Err(e) => {
                warn!("cannot catalogue a new segment: {e:#}; retrying in 1 s");
                if crate::catalog::is_disk_full(&e) {
                    let _ = self.tx.try_send(Msg::DiskFull);
                }
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                return false;
            }
        };
        let counters = segment::Counters { unlisted: self.unlisted.clone(), dropped: self.m.dropped.clone() };
        match SegmentWriter::start(id, path, format, &self.settings, start_ns, self.wtx.clone(), counters) {
            Ok(w) => {
                debug!(segment = %rel, "segment opened");
                // Relaxed: statistics.
                self.m.segments.inc();
                self.cur = Some(w);
                true
            }
            Err(e) => {
                warn!("cannot start segment {rel}: {e:#}; retrying in 1 s");
                let _ = self.cat.delete_segment(id);
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                false
            }
        }
    }

    /// Ends the current segment; the muxer finishes on a closer thread.
    fn close_current(&mut self) {
        let Some(w) = self.cur.take() else { return };
        self.closers.retain(|h| !h.is_finished());
        let tx = self.tx.clone();
        // Frames the queue dropped are counted already.
        let (id, pushed) = (w.id, w.pushed - w.leaked);
        let spawned = std::thread::Builder::new().name("record-close".into()).spawn(move || {
            let bytes = w.finish();
            let _ = tx.send(Msg::Closed { id, bytes, pushed });
        });
        match spawned {
            Ok(h) => self.closers.push(h),
            Err(e) => warn!("cannot start a closer thread: {e}"),
        }
    }

    fn check_failure(&mut self) {
        let Some(f) = self.cur.as_ref().and_then(SegmentWriter::failure) else { return };
        let Some(w) = self.cur.take() else { return };
        let (id, pushed) = (w.id, w.pushed - w.leaked);
        if f.no_space {
            // Relaxed: statistics.
            self.m.disk_full.inc();
            if !self.full_logged {
                warn!(
                    dir = %self.cfg.dir.display(),
                    "disk full while writing {}: freeing the oldest segments; recording goes on",
                    w.path.display()
                );
                self.full_logged = true;
            }
        } else {
            warn!("segment {} failed: {}; starting a new one", w.path.display(), f.message);
        }
        let _ = w.abort();
        let _ = self.tx.send(Msg::Aborted { id, pushed });
        if f.no_space {
            let _ = self.tx.send(Msg::DiskFull);
        }
        self.retry_at = Some(Instant::now() + Duration::from_millis(200));
    }
}

/// `segments/<name>-<UTC time>-<epoch>.<ext>`, unique in `dir`.
fn segment_name(name: &str, start_ns: u64, epoch: u64, format: &VideoFormat, dir: &Path) -> String {
    let base = format!("segments/{name}-{}-{:08x}", time::file_stamp(start_ns), epoch as u32);
    let ext = segment::extension(format);
    let mut rel = format!("{base}.{ext}");
    let mut n = 1;
    while dir.join(&rel).exists() && n < 1000 {
        rel = format!("{base}-{n}.{ext}");
        n += 1;
    }
    rel
}

/// Start-up repair: a segment left `open` by a crash keeps exactly the
/// frames its file holds; a catalogued file that is gone is dropped from the
/// catalog; a segment file the catalog does not know is removed.
pub fn repair(cat: &mut Catalog) -> anyhow::Result<()> {
    for s in cat.open_segments()? {
        let path = cat.abs(&s.path);
        let kept = match segment::scan(&path) {
            Ok(samples) if !samples.is_empty() => {
                let max = samples.iter().map(|x| x.pts_ns).max();
                // The muxer's timescale may round a timestamp by a few µs.
                let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                cat.trim_segment(s.id, max.map(|m| m + 1_000_000), bytes)?
            }
            Ok(_) | Err(_) => cat.trim_segment(s.id, None, 0)?,
        };
        if kept == 0 {
            let _ = std::fs::remove_file(&path);
        }
        info!(segment = %s.path, frames = kept, "repaired a segment left open");
    }
    for s in cat.segments()? {
        if !cat.abs(&s.path).exists() {
            warn!(segment = %s.path, "segment file missing; dropped from the catalog");
            cat.delete_segment(s.id)?;
        }
    }
    let known: std::collections::HashSet<String> = cat.segments()?.into_iter().map(|s| s.path).collect();
    if let Ok(rd) = std::fs::read_dir(cat.dir().join("segments")) {
        for e in rd.flatten().take(1_000_000) {
            let rel = format!("segments/{}", e.file_name().to_string_lossy());
            let is_segment = rel.ends_with(".mp4") || rel.ends_with(".mov");
            if is_segment && !known.contains(&rel) {
                info!(file = %rel, "removing a segment file the catalog does not list");
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

struct CatalogState {
    cfg: Config,
    cat: Catalog,
    m: Metrics,
    batch: HashMap<i64, Vec<FrameRow>>,
    listed: HashMap<i64, u64>,
    sizes: HashMap<i64, u64>,
    paths: HashMap<i64, PathBuf>,
    /// Since when the catalog's file system is full (frames wait in `batch`).
    catalog_full: Option<Instant>,
}

fn catalog_thread(cfg: Config, rx: Receiver<Msg>, m: Metrics, stop: Arc<AtomicBool>) {
    let cat = match Catalog::open(&cfg.dir, true) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("catalog: {e:#}");
            stop.store(true, Ordering::Relaxed);
            return;
        }
    };
    let mut st = CatalogState {
        cfg,
        cat,
        m,
        batch: HashMap::new(),
        listed: HashMap::new(),
        sizes: HashMap::new(),
        paths: HashMap::new(),
        catalog_full: None,
    };
    let mut committed = Instant::now();
    let mut retained = Instant::now() - RETENTION_EVERY;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Msg::Frame(w)) => {
                st.batch.entry(w.segment).or_default().push(w.frame);
                *st.listed.entry(w.segment).or_default() += 1;
            }
            Ok(Msg::Closed { id, bytes, pushed }) => {
                st.flush();
                st.count_bytes(id, bytes);
                if let Err(e) = st.cat.close_segment(id, bytes) {
                    warn!("catalog: cannot close segment {id}: {e:#}");
                    if crate::catalog::is_disk_full(&e) {
                        st.free_space();
                        let _ = st.cat.close_segment(id, bytes);
                    }
                }
                st.forget(id, pushed);
            }
            Ok(Msg::Aborted { id, pushed }) => {
                st.flush();
                st.repair_one(id);
                st.forget(id, pushed);
            }
            Ok(Msg::DiskFull) => {
                st.flush();
                st.free_space();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                st.flush();
                break;
            }
        }
        if committed.elapsed() >= COMMIT_EVERY {
            st.flush();
            committed = Instant::now();
        }
        if retained.elapsed() >= RETENTION_EVERY {
            st.retention();
            retained = Instant::now();
        }
    }
    st.cat.checkpoint();
}

impl CatalogState {
    fn path(&mut self, id: i64) -> Option<PathBuf> {
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        let s = self.cat.segment(id).ok()??;
        let p = self.cat.abs(&s.path);
        self.paths.insert(id, p.clone());
        Some(p)
    }

    fn count_bytes(&mut self, id: i64, bytes: u64) {
        let prev = self.sizes.insert(id, bytes).unwrap_or(0);
        // Relaxed: statistics.
        self.m.bytes.inc_by(bytes.saturating_sub(prev));
    }

    /// Commits the batched frames, one transaction per segment. The file's
    /// data is flushed to disk first, so the catalog is not ahead of it.
    fn flush(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        for (id, frames) in batch {
            let Some(path) = self.path(id) else { continue };
            segment::sync_file(&path);
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            self.count_bytes(id, bytes);
            let mut r = self.cat.append_frames(id, &frames, bytes);
            if let Err(e) = &r
                && crate::catalog::is_disk_full(e)
                && disk_free(&self.cfg.dir).is_some_and(|f| f < MIN_FREE_AFTER_FULL)
            {
                // The segments share the full file system: free some.
                self.free_space();
                r = self.cat.append_frames(id, &frames, bytes);
            }
            match r {
                Ok(()) => {
                    // Relaxed: statistics.
                    self.m.recorded.inc_by(frames.len() as u64);
                    if let Some(since) = self.catalog_full.take() {
                        info!(
                            after_s = since.elapsed().as_secs(),
                            "catalog: writable again; the frames kept meanwhile are catalogued"
                        );
                    }
                }
                Err(e) if crate::catalog::is_disk_full(&e) => {
                    if self.catalog_full.is_none() {
                        // Relaxed: statistics.
                        self.m.disk_full.inc();
                        warn!(
                            "catalog: disk full ({e:#}); the failed transactions changed nothing, up to \
                             {CATALOG_BACKLOG} frames are kept in memory until there is space; recording goes on"
                        );
                        self.catalog_full = Some(Instant::now());
                    }
                    self.keep_for_later(id, frames);
                }
                Err(e) => {
                    warn!("catalog: cannot add {} frames to segment {id}: {e:#}", frames.len());
                    self.m.unlisted.inc_by(frames.len() as u64);
                }
            }
        }
    }

    /// Puts frames that could not be catalogued back in front of the batch,
    /// keeping at most [`CATALOG_BACKLOG`] frames in all (the oldest beyond
    /// it are counted as unlisted).
    fn keep_for_later(&mut self, id: i64, frames: Vec<FrameRow>) {
        let entry = self.batch.entry(id).or_default();
        entry.splice(0..0, frames);
        let mut total: usize = self.batch.values().map(Vec::len).sum();
        let mut ids: Vec<i64> = self.batch.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if total <= CATALOG_BACKLOG {
                break;
            }
            let Some(v) = self.batch.get_mut(&id) else { continue };
            let n = (total - CATALOG_BACKLOG).min(v.len());
            v.drain(..n);
            total -= n;
            // Relaxed: statistics.
            self.m.unlisted.inc_by(n as u64);
        }
    }

    fn forget(&mut self, id: i64, pushed: u64) {
        let listed = self.listed.remove(&id).unwrap_or(0);
        // Relaxed: statistics. Frames pushed that never reached the muxer
        // (the appsrc queue dropped them) are drops.
        self.m.dropped.inc_by(pushed.saturating_sub(listed));
        self.sizes.remove(&id);
        self.paths.remove(&id);
    }

    /// Keeps what the file of a failed segment really holds.
    fn repair_one(&mut self, id: i64) {
        let Some(path) = self.path(id) else { return };
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let max = segment::scan(&path).ok().and_then(|s| s.iter().map(|x| x.pts_ns).max());
        match self.cat.trim_segment(id, max.map(|m| m + 1_000_000), bytes) {
            Ok(0) => {
                let _ = std::fs::remove_file(&path);
            }
            Ok(_) => {}
            Err(e) => warn!("catalog: cannot repair segment {id}: {e:#}"),
        }
    }

    /// Deletes a segment: its rows first (one transaction), then its file.
    /// When even that transaction fails for lack of space, the file goes
    /// first and the row follows (a missing file is dropped at the next start).
    fn delete(&mut self, id: i64, path: &str) -> bool {
        let abs = self.cat.abs(path);
        let ok = match self.cat.delete_segment(id) {
            Ok(_) => true,
            Err(e) if crate::catalog::is_disk_full(&e) => {
                let _ = std::fs::remove_file(&abs);
                self.cat.delete_segment(id).is_ok()
            }
            Err(e) => {
                warn!("catalog: cannot delete segment {path}: {e:#}");
                false
            }
        };
        if ok {
            let _ = std::fs::remove_file(&abs);
            // Relaxed: statistics.
            self.m.deleted.inc();
        }
        ok
    }

    /// Frees the oldest closed segments until a margin is free.
    fn free_space(&mut self) {
        let Ok(segs) = self.cat.segments() else { return };
        let closed: Vec<_> = segs.iter().filter(|s| s.state == "closed").collect();
        let recent = closed.iter().rev().take(3).map(|s| s.bytes).max().unwrap_or(0);
        let want = (2 * recent).max(MIN_FREE_AFTER_FULL);
        let (mut n, mut freed) = (0u64, 0u64);
        for s in &closed {
            if disk_free(&self.cfg.dir).is_some_and(|f| f >= want) {
                break;
            }
            if self.delete(s.id, &s.path) {
                n += 1;
                freed += s.bytes;
            }
        }
        info!(segments = n, freed_bytes = freed, free = ?disk_free(&self.cfg.dir), "freed space");
        self.update_gauges();
    }

    fn update_gauges(&self) {
        if let Some(f) = disk_free(&self.cfg.dir) {
            self.m.disk_free.set(f);
        }
        if let Ok(s) = self.cat.segments() {
            self.m.segments_now.set(s.len() as u64);
        }
    }

    fn retention(&mut self) {
        let now = shm_proto::os::realtime_ns();
        if let Ok(segs) = self.cat.segments() {
            let closed: Vec<_> = segs.iter().filter(|s| s.state == "closed").collect();
            let mut total: u64 = segs.iter().map(|s| s.bytes).sum();
            for s in closed {
                let too_old = self.cfg.retain_age.is_some_and(|a| s.end_ns < now.saturating_sub(a.as_nanos() as u64));
                let too_big = self.cfg.retain_bytes.is_some_and(|b| total > b);
                if !(too_old || too_big) {
                    break;
                }
                if self.delete(s.id, &s.path) {
                    debug!(segment = %s.path, too_old, too_big, "retention deleted a segment");
                    total = total.saturating_sub(s.bytes);
                }
            }
        }
        if let Ok(clips) = self.cat.clips() {
            let mut total: u64 = clips.iter().map(|c| c.bytes).sum();
            for c in clips {
                let too_old = c.created_ns < now.saturating_sub(self.cfg.clip_retain_age.as_nanos() as u64);
                let too_big = self.cfg.clip_retain_bytes.is_some_and(|b| total > b);
                if !(too_old || too_big) {
                    break;
                }
                if let Ok(Some(p)) = self.cat.delete_clip(c.id) {
                    let _ = std::fs::remove_file(self.cat.abs(&p));
                    total = total.saturating_sub(c.bytes);
                }
            }
        }
        self.cat.checkpoint();
        self.update_gauges();
    }
}
