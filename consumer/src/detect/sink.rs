//! Where events go: the events output (JSON lines), snapshot PNGs and MQTT,
//! with counts by type.
//!
//! An event is **emitted** — its line written, published to MQTT, counted in
//! the summary and the metrics — only after its snapshot PNG is complete on
//! disk, so whoever reads an event line can open the file it names. All of
//! that happens on one emitter thread, never on the frame thread: the frame
//! thread only queues the event (with the raw peak frame it copied) and goes
//! on with the next frame, so a burst of events never delays frames.
//!
//! Bounds: at most [`SNAPSHOT_QUEUE`] snapshot images wait at once (each is a
//! full frame); an event whose image finds that queue full is emitted
//! without a snapshot (`snapshot_error`, counted as `snapshots_dropped`). At
//! most [`EVENT_QUEUE`] events wait for the emitter; only when that many are
//! queued — the events output itself is stalled, e.g. a stdout nobody reads —
//! does the frame thread wait, as it did when it wrote the lines itself.
//! Events are emitted in the order they were queued.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use anyhow::Context as _;

use super::PeakImage;
use super::event::{ByType, EventRecord};
use super::mqtt::Publisher;
use super::snapshot::write_png;
use super::track::Kind;

/// Snapshot images queued for the emitter before new ones are dropped.
pub const SNAPSHOT_QUEUE: usize = 8;

/// Events queued for the emitter before the frame thread waits.
pub const EVENT_QUEUE: usize = 1024;

/// Where the events output goes.
pub type Output = Box<dyn Write + Send>;

/// One event for the emitter, with its snapshot to write first.
struct Job {
    ev: EventRecord,
    snapshot: Option<(PathBuf, PeakImage)>,
}

/// Counts kept by the emitter, read by the frame thread (metrics, stats line).
#[derive(Default)]
struct Counts {
    events: AtomicU64,
    /// In the order of [`Kind::ALL`].
    by_type: [AtomicU64; 4],
    snapshots_dropped: AtomicU64,
    snapshots_failed: AtomicU64,
    /// Snapshot images queued and not yet written.
    images_queued: AtomicUsize,
}

/// What the emitter thread hands back when it ends.
type Ended = anyhow::Result<(Output, Option<Publisher>)>;

/// The outputs of the detector, fed from the frame thread.
pub struct EventSink {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<Ended>>,
    counts: Arc<Counts>,
    snapshots: Option<PathBuf>,
    name: String,
    queued: u64,
    warned_dropped: bool,
}

impl EventSink {
    /// Events go to `out`; with `snapshots` a PNG per event into that
    /// directory (which must exist); with `mqtt` each event's JSON is
    /// published. Starts the emitter thread.
    pub fn new(
        out: Output,
        snapshots: Option<PathBuf>,
        mqtt: Option<Publisher>,
        name: &str,
    ) -> anyhow::Result<EventSink> {
        let (tx, rx) = sync_channel::<Job>(EVENT_QUEUE);
        let counts = Arc::new(Counts::default());
        let c = Arc::clone(&counts);
        let thread = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || emitter(&rx, out, mqtt, &c))
            .context("cannot start the event emitter thread")?;
        Ok(EventSink {
            tx: Some(tx),
            thread: Some(thread),
            counts,
            snapshots,
            name: name.to_string(),
            queued: 0,
            warned_dropped: false,
        })
    }

    /// Events emitted so far.
    pub fn count(&self) -> u64 {
        // Relaxed: a statistics counter (exact after `finish`, which joins the emitter).
        self.counts.events.load(Ordering::Relaxed)
    }

    /// Events emitted so far, by type.
    pub fn by_type(&self) -> ByType {
        // Relaxed: statistics counters.
        let n = |k: Kind| self.counts.by_type[k.index()].load(Ordering::Relaxed);
        ByType {
            meteor: n(Kind::Meteor),
            plane: n(Kind::Plane),
            satellite: n(Kind::Satellite),
            motion: n(Kind::Motion),
        }
    }

    /// Snapshots dropped because [`SNAPSHOT_QUEUE`] images were waiting.
    pub fn snapshots_dropped(&self) -> u64 {
        // Relaxed: a statistics counter.
        self.counts.snapshots_dropped.load(Ordering::Relaxed)
    }

    /// Snapshots that could not be written (the event was emitted without).
    pub fn snapshots_failed(&self) -> u64 {
        // Relaxed: a statistics counter.
        self.counts.snapshots_failed.load(Ordering::Relaxed)
    }

    /// Queues one event for the emitter (with its snapshot, when snapshots
    /// are written and the event has an image). Never waits for a PNG or the
    /// broker; waits only when [`EVENT_QUEUE`] events are already queued.
    /// Fails when the emitter has stopped on an output error (that error).
    pub fn emit(&mut self, mut ev: EventRecord) -> anyhow::Result<()> {
        self.queued += 1;
        let mut snapshot = None;
        if let (Some(dir), Some(img)) = (&self.snapshots, ev.image.take()) {
            // Relaxed: only this thread increments; the emitter decrements
            // after writing. A stale read only lets one image more or less
            // through for a moment — the bound is approximate by at most that.
            if self.counts.images_queued.load(Ordering::Relaxed) < SNAPSHOT_QUEUE {
                self.counts.images_queued.fetch_add(1, Ordering::Relaxed);
                let file = format!("{}-{}-{:06}-{}.png", self.name, ev.start_frame, self.queued, ev.kind.as_str());
                snapshot = Some((dir.join(file), img));
            } else {
                // Relaxed: a statistics counter.
                self.counts.snapshots_dropped.fetch_add(1, Ordering::Relaxed);
                ev.snapshot_error = Some(format!("snapshot writer busy ({SNAPSHOT_QUEUE} snapshots queued)"));
                if !self.warned_dropped {
                    self.warned_dropped = true;
                    tracing::warn!(
                        "snapshot writer busy ({SNAPSHOT_QUEUE} snapshots queued): event emitted without snapshot \
                         (logged once)"
                    );
                }
            }
        }
        let Some(tx) = &self.tx else { anyhow::bail!("the event emitter has stopped") };
        if tx.send(Job { ev, snapshot }).is_err() {
            // The emitter ended: it stopped on an error, which it returns.
            self.tx = None;
            return match self.thread.take().map(JoinHandle::join) {
                Some(Ok(Err(e))) => Err(e),
                Some(Err(_)) => Err(anyhow::anyhow!("the event emitter thread panicked")),
                _ => Err(anyhow::anyhow!("the event emitter has stopped")),
            };
        }
        Ok(())
    }

    /// Emits everything queued (snapshots included), stops the emitter and
    /// hands back the events output (for the summary line) and the MQTT
    /// publisher (to be closed by the caller).
    pub fn finish(&mut self) -> anyhow::Result<(Output, Option<Publisher>)> {
        self.tx.take();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => anyhow::bail!("the event emitter thread panicked"),
            None => anyhow::bail!("the event emitter has stopped"),
        }
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The emitter thread: for each event, writes its snapshot (if any), then
/// counts it, writes its line and publishes it. Ends when the sink closes
/// the queue, or on the first error writing the events output.
fn emitter(rx: &Receiver<Job>, mut out: Output, mqtt: Option<Publisher>, counts: &Counts) -> Ended {
    while let Ok(Job { mut ev, snapshot }) = rx.recv() {
        if let Some((path, img)) = snapshot {
            match write_png(&path, &img, ev.peak_bbox, ev.bbox) {
                Ok(()) => {
                    ev.snapshot = Some(path.display().to_string());
                    ev.snapshot_frame = img.frame;
                }
                Err(e) => {
                    tracing::warn!(start_frame = ev.start_frame, "{e:#}; event emitted without snapshot");
                    // Relaxed: a statistics counter.
                    counts.snapshots_failed.fetch_add(1, Ordering::Relaxed);
                    ev.snapshot_error = Some(format!("{e:#}"));
                }
            }
            drop(img);
            // Relaxed: pairs with nothing; the frame thread only compares it to the bound.
            counts.images_queued.fetch_sub(1, Ordering::Relaxed);
        }
        // Relaxed: statistics counters.
        counts.events.fetch_add(1, Ordering::Relaxed);
        counts.by_type[ev.kind.index()].fetch_add(1, Ordering::Relaxed);
        let line = ev.to_json();
        tracing::info!(kind = ev.kind.as_str(), start = ev.start_frame, end = ev.end_frame, bbox = ?ev.bbox, "event");
        writeln!(out, "{line}").context("cannot write events")?;
        out.flush().context("cannot write events")?;
        if let Some(m) = &mqtt {
            m.publish(line);
        }
    }
    Ok((out, mqtt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::track::{Finished, TrackPoint};
    use shm_proto::{PixelFormat, VideoFormat};
    use std::sync::Mutex;

    /// An events output the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn event(start: u64, image: bool) -> EventRecord {
        let f = VideoFormat::new(64, 48, PixelFormat::Gray8, 30, 1).unwrap();
        let fin = Finished {
            kind: Kind::Meteor,
            start_frame: start,
            end_frame: start + 5,
            start_capture_ns: 0,
            end_capture_ns: 0,
            bbox: [4, 4, 20, 10],
            peak: 50.0,
            peak_frame: start + 2,
            peak_bbox: [8, 6, 6, 4],
            speed: 20.0,
            points: vec![TrackPoint {
                frame: start,
                x: 10.0,
                y: 8.0,
                sum: 1.0,
                bbox: [0; 4],
                capture_ns: 0,
                evidence: 0.0,
            }],
            snapshot: None,
        };
        let img = image.then(|| PeakImage {
            width: 64,
            height: 48,
            frame: Some(start + 2),
            format: f,
            data: vec![20; f.frame_size as usize],
        });
        EventRecord::new(fin, img)
    }

    #[test]
    fn lines_come_after_their_snapshots_and_failures_are_said() {
        let dir = std::env::temp_dir().join(format!("shmcast-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Shared::default();
        let mut sink = EventSink::new(Box::new(out.clone()), Some(dir.clone()), None, "t").unwrap();
        for i in 0..20 {
            sink.emit(event(100 * i, i != 3)).unwrap();
        }
        let (_, mqtt) = sink.finish().unwrap();
        assert!(mqtt.is_none());
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 20);
        // In order; every snapshot named exists; the dropped ones say why.
        let mut named = 0;
        for (i, v) in lines.iter().enumerate() {
            assert_eq!(v["start_frame"], 100 * i as u64);
            if let Some(p) = v["snapshot"].as_str() {
                assert!(std::path::Path::new(p).is_file(), "{p}");
                assert!(v.get("snapshot_error").is_none());
                named += 1;
            } else if i != 3 {
                assert!(v["snapshot_error"].as_str().unwrap().contains("busy"), "{v}");
            }
        }
        assert_eq!(named as u64 + sink.snapshots_dropped(), 19);
        assert_eq!((sink.count(), sink.by_type().meteor), (20, 20));
        // A snapshot that cannot be written: the event is emitted with the reason.
        let out = Shared::default();
        let mut sink = EventSink::new(Box::new(out.clone()), Some(dir.join("missing")), None, "t").unwrap();
        sink.emit(event(7, true)).unwrap();
        sink.finish().unwrap();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert!(v.get("snapshot").is_none(), "{v}");
        assert!(v["snapshot_error"].as_str().unwrap().contains("cannot write snapshot"), "{v}");
        assert_eq!(sink.snapshots_failed(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
