//! Where events go: the events file (JSON lines), snapshot PNGs (written by
//! a background thread from a bounded queue) and MQTT, with counts by type.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::Context as _;

use super::event::{ByType, EventRecord};
use super::mqtt::Publisher;
use super::snapshot::{SnapshotJob, SnapshotWriter};

/// Snapshots queued for the writer thread before new ones are dropped.
pub const SNAPSHOT_QUEUE: usize = 8;

/// The outputs of the detector.
pub struct EventSink {
    out: Box<dyn Write>,
    snapshots: Option<(PathBuf, SnapshotWriter)>,
    mqtt: Option<Publisher>,
    name: String,
    count: u64,
    by_type: ByType,
    warned_dropped: bool,
}

impl EventSink {
    /// Events go to `out`; with `snapshots` a PNG per event into that
    /// directory (which must exist); with `mqtt` each event's JSON is published.
    pub fn new(
        out: Box<dyn Write>,
        snapshots: Option<PathBuf>,
        mqtt: Option<Publisher>,
        name: &str,
    ) -> anyhow::Result<EventSink> {
        let snapshots = match snapshots {
            Some(dir) => Some((dir, SnapshotWriter::start(SNAPSHOT_QUEUE)?)),
            None => None,
        };
        Ok(EventSink {
            out,
            snapshots,
            mqtt,
            name: name.to_string(),
            count: 0,
            by_type: ByType::default(),
            warned_dropped: false,
        })
    }

    /// Events emitted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Events emitted, by type.
    pub fn by_type(&self) -> ByType {
        self.by_type
    }

    /// Snapshots dropped because the writer's queue was full.
    pub fn snapshots_dropped(&self) -> u64 {
        // Relaxed: a statistics counter.
        self.snapshots.as_ref().map_or(0, |(_, w)| w.dropped.load(Ordering::Relaxed))
    }

    /// Writes one event (and queues its snapshot, publishes it to MQTT).
    /// Never waits for the snapshot writer or the broker.
    pub fn emit(&mut self, mut ev: EventRecord) -> anyhow::Result<()> {
        self.count += 1;
        self.by_type.add(ev.kind);
        if let (Some((dir, writer)), Some(img)) = (&self.snapshots, ev.image.take()) {
            let file = format!("{}-{}-{:06}-{}.png", self.name, ev.start_frame, self.count, ev.kind.as_str());
            let path = dir.join(&file);
            let frame = img.frame;
            let job = SnapshotJob { path: path.clone(), image: img, peak_bbox: ev.peak_bbox, bbox: ev.bbox };
            if writer.submit(job) {
                ev.snapshot = Some(path.display().to_string());
                ev.snapshot_frame = frame;
            } else if !self.warned_dropped {
                self.warned_dropped = true;
                tracing::warn!(
                    "snapshot writer busy ({SNAPSHOT_QUEUE} PNGs queued): event written without snapshot (logged once)"
                );
            }
        }
        let line = ev.to_json();
        tracing::info!(kind = ev.kind.as_str(), start = ev.start_frame, end = ev.end_frame, bbox = ?ev.bbox, "event");
        writeln!(self.out, "{line}").context("cannot write events")?;
        self.out.flush().context("cannot write events")?;
        if let Some(m) = &self.mqtt {
            m.publish(line);
        }
        Ok(())
    }

    /// Writes a last line (the summary) to the events output.
    pub fn write_line(&mut self, line: &str) -> anyhow::Result<()> {
        writeln!(self.out, "{line}").context("cannot write events")?;
        self.out.flush().context("cannot write events")
    }

    /// Finishes the snapshots still queued and hands back the MQTT publisher
    /// (to be closed by the caller).
    pub fn finish_snapshots(&mut self) -> Option<Publisher> {
        if let Some((_, w)) = self.snapshots.take() {
            w.close();
        }
        self.mqtt.take()
    }
}
