//! What every source shares: the ring writer with its statistics line and
//! metrics, frame pacing, and the ground-truth file.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use shm_proto::{CreateOptions, FrameMeta, VideoFormat, Writer};
use shmcast_common::metrics::{Counter, FloatGauge};

use crate::events::Truth;

/// Period of the statistics line.
pub const STATS_PERIOD: Duration = Duration::from_secs(5);

/// Frame and byte counters, logged every [`STATS_PERIOD`] and exported as metrics.
pub struct Stats {
    frames: u64,
    bytes: u64,
    last: Instant,
    last_frames: u64,
    last_bytes: u64,
    m_frames: Counter,
    m_bytes: Counter,
    m_fps: FloatGauge,
    m_dropped: Counter,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Counters starting now.
    pub fn new() -> Stats {
        let m = shmcast_common::metrics::global();
        Stats {
            frames: 0,
            bytes: 0,
            last: Instant::now(),
            last_frames: 0,
            last_bytes: 0,
            m_frames: m.counter("shmcast_frames_total", "frames published"),
            m_bytes: m.counter("shmcast_bytes_total", "payload bytes published"),
            m_fps: m.gauge_f64("shmcast_fps", "frames per second over the last stats period"),
            m_dropped: m.counter("shmcast_dropped_frames_total", "source frames that could not be published"),
        }
    }

    /// Frames published so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Counts one published frame of `bytes`; logs the stats line when due.
    pub fn frame(&mut self, bytes: u64) {
        self.frames += 1;
        self.bytes += bytes;
        self.m_frames.inc();
        self.m_bytes.inc_by(bytes);
        let now = Instant::now();
        let dt = now.duration_since(self.last);
        if dt >= STATS_PERIOD {
            let secs = dt.as_secs_f64();
            let fps = (self.frames - self.last_frames) as f64 / secs;
            let mbps = (self.bytes - self.last_bytes) as f64 / secs / 1e6;
            self.m_fps.set(fps);
            tracing::info!(
                fps = format_args!("{fps:.1}"),
                frames = self.frames,
                mb_per_s = format_args!("{mbps:.1}"),
                rss_mib = format_args!("{:.1}", shmcast_common::rss_bytes() as f64 / 1048576.0),
                "stats"
            );
            self.last = now;
            self.last_frames = self.frames;
            self.last_bytes = self.bytes;
        }
    }

    /// Counts a source frame that was dropped (e.g. larger than a slot).
    pub fn dropped(&self) {
        self.m_dropped.inc();
    }
}

/// Paces frames at a fixed rate against a monotonic schedule, or not at all.
pub struct Pacer {
    period: Option<Duration>,
    next: Instant,
    late: u64,
}

impl Pacer {
    /// A pacer for `fps` frames per second (0: as fast as possible).
    pub fn new(fps: u32) -> Pacer {
        let period = (fps > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(fps)));
        Pacer { period, next: Instant::now(), late: 0 }
    }

    /// Waits for the next frame's tick. Returns false when `stop` was set
    /// meanwhile. Sleeps in slices of at most 100 ms so signals act quickly.
    pub fn wait(&mut self, stop: &AtomicBool) -> bool {
        let Some(period) = self.period else { return !shmcast_common::should_stop(stop) };
        loop {
            if shmcast_common::should_stop(stop) {
                return false;
            }
            let now = Instant::now();
            if now >= self.next {
                break;
            }
            std::thread::sleep((self.next - now).min(Duration::from_millis(100)));
        }
        self.next += period;
        let now = Instant::now();
        // More than two periods behind (a stall, a suspended VM): restart the
        // schedule instead of bursting frames to catch up.
        if now > self.next + 2 * period {
            self.late += 1;
            if self.late == 1 || self.late.is_power_of_two() {
                tracing::warn!(times = self.late, "cannot keep up with the frame rate; schedule restarted");
            }
            self.next = now;
        }
        true
    }
}

/// The ground-truth file: one JSON line per event, flushed as it is written.
pub struct TruthFile {
    path: PathBuf,
    out: BufWriter<File>,
}

impl TruthFile {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> anyhow::Result<TruthFile> {
        let file = File::create(path).with_context(|| format!("cannot create truth file {}", path.display()))?;
        Ok(TruthFile { path: path.to_path_buf(), out: BufWriter::new(file) })
    }

    /// Appends one event and flushes it to the file.
    pub fn write(&mut self, t: &Truth) -> anyhow::Result<()> {
        let write = |out: &mut BufWriter<File>| -> std::io::Result<()> {
            serde_json::to_writer(&mut *out, t)?;
            out.write_all(b"\n")?;
            out.flush()
        };
        write(&mut self.out).with_context(|| format!("cannot write truth file {}", self.path.display()))
    }
}

/// The ring writer plus statistics.
pub struct Output {
    /// The ring.
    pub writer: Writer,
    /// Counters.
    pub stats: Stats,
}

impl Output {
    /// Creates the stream and logs what was created.
    pub fn create(name: &str, format: VideoFormat, opts: &CreateOptions) -> anyhow::Result<Output> {
        let writer = Writer::create(name, format, opts)?;
        if let Some(pid) = writer.replaced() {
            tracing::warn!(pid, "replaced the stale segment of a dead producer");
        }
        tracing::info!(
            path = %writer.path().display(),
            format = %writer.format(),
            slots = writer.slots(),
            mib = format_args!("{:.1}", writer.total_size() as f64 / 1048576.0),
            hugepages = opts.hugepages,
            mlock = opts.mlock,
            "stream created"
        );
        Ok(Output { writer, stats: Stats::new() })
    }

    /// Writes one frame: `fill` fills the slot and returns the metadata.
    pub fn publish(&mut self, fill: impl FnOnce(&mut [u8]) -> FrameMeta) {
        let mut len = 0;
        self.writer.publish(|buf| {
            let m = fill(buf);
            len = m.len;
            m
        });
        self.stats.frame(len);
    }
}

/// Fails early, before a source is started, when a running producer owns
/// `name` (creating the stream would fail the same way later, after e.g. a
/// camera was already opened).
pub fn check_name_free(name: &str, opts: &CreateOptions) -> anyhow::Result<()> {
    shm_proto::segment::check_free(&shm_proto::StreamName::new(name)?, opts)?;
    Ok(())
}
