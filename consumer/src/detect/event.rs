//! Event records as written to `--events` (one JSON object per line) and
//! published to MQTT. Keys are the docs/design.md contract: `type`, `start_frame`,
//! `end_frame`, `bbox`, `peak`, capture times; plus track points and speed.
#![forbid(unsafe_code)]

use serde::Serialize;

use super::PeakImage;
use super::track::{Finished, Kind, TrackPoint};

/// One detected event.
#[derive(Clone, Debug, Serialize)]
pub struct EventRecord {
    /// `meteor` or `motion`.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// First frame id.
    pub start_frame: u64,
    /// Last frame id (inclusive).
    pub end_frame: u64,
    /// `[x, y, w, h]` in full-resolution pixels, covering the whole track.
    pub bbox: [u32; 4],
    /// Largest difference to the background, in luma levels (0–255).
    pub peak: f32,
    /// Frame id of the brightest detection (the snapshot's frame).
    pub peak_frame: u64,
    /// `[x, y, w, h]` of the object on `peak_frame` (the inner box of the snapshot).
    pub peak_bbox: [u32; 4],
    /// Capture time of the first frame, Unix ns.
    pub start_capture_ns: u64,
    /// Capture time of the last frame, Unix ns.
    pub end_capture_ns: u64,
    /// `start_capture_ns` as ISO 8601 UTC.
    pub start_time: String,
    /// Mean speed in px/frame.
    pub speed: f32,
    /// Track points (centroids per frame; long tracks are thinned).
    pub points: Vec<TrackPoint>,
    /// The snapshot file, when one was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Frame id shown in the snapshot: `peak_frame`, unless that frame was
    /// overwritten while it was copied (or no buffer was free then), in which
    /// case the brightest frame that could be kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_frame: Option<u64>,
    /// Why the event has no snapshot although snapshots are written (the
    /// writer was busy, or the PNG could not be written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_error: Option<String>,
    /// The peak frame's full-resolution luma, for the snapshot.
    #[serde(skip)]
    pub image: Option<PeakImage>,
}

impl EventRecord {
    /// An event from a finished track.
    pub fn new(f: Finished, image: Option<PeakImage>) -> EventRecord {
        let round = |v: f32| (v * 10.0).round() / 10.0;
        EventRecord {
            kind: f.kind,
            start_frame: f.start_frame,
            end_frame: f.end_frame,
            bbox: f.bbox,
            peak: round(f.peak),
            peak_frame: f.peak_frame,
            peak_bbox: f.peak_bbox,
            start_capture_ns: f.start_capture_ns,
            end_capture_ns: f.end_capture_ns,
            start_time: iso8601(f.start_capture_ns),
            speed: round(f.speed),
            points: f
                .points
                .into_iter()
                .map(|p| TrackPoint { x: round(p.x), y: round(p.y), sum: p.sum.round(), ..p })
                .collect(),
            snapshot: None,
            snapshot_frame: None,
            snapshot_error: None,
            image,
        }
    }

    /// The JSON line (without newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"type\":\"error\",\"error\":\"{e}\"}}"))
    }
}

/// Event counts by type.
#[derive(Clone, Copy, Debug, Serialize, Default, PartialEq, Eq)]
pub struct ByType {
    /// `meteor` events.
    pub meteor: u64,
    /// `plane` events.
    pub plane: u64,
    /// `satellite` events.
    pub satellite: u64,
    /// `motion` events.
    pub motion: u64,
}

impl ByType {
    /// Counts one event of `kind`.
    pub fn add(&mut self, kind: Kind) {
        *self.get_mut(kind) += 1;
    }
    /// The count of `kind`.
    pub fn get(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Meteor => self.meteor,
            Kind::Plane => self.plane,
            Kind::Satellite => self.satellite,
            Kind::Motion => self.motion,
        }
    }
    fn get_mut(&mut self, kind: Kind) -> &mut u64 {
        match kind {
            Kind::Meteor => &mut self.meteor,
            Kind::Plane => &mut self.plane,
            Kind::Satellite => &mut self.satellite,
            Kind::Motion => &mut self.motion,
        }
    }
}

/// The last line of `--events`.
#[derive(Clone, Copy, Debug, Serialize, Default)]
pub struct Summary {
    /// Always `summary`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Frames handed to the detector.
    pub frames: u64,
    /// Frames the producer overwrote before the detector got to them.
    pub lost: u64,
    /// Frames whose result was dropped because they were overwritten while read.
    pub overruns: u64,
    /// Events reported.
    pub events: u64,
    /// Events reported, by type.
    pub by_type: ByType,
    /// Whole-frame changes that re-baselined the model.
    pub rebaselines: u64,
    /// Producers attached to (1 + restarts followed).
    pub attaches: u64,
    /// Events not published to MQTT because its queue was full.
    pub mqtt_dropped: u64,
    /// Snapshots not written because the writer's queue was full.
    pub snapshots_dropped: u64,
    /// Snapshots that could not be written (disk full, directory gone, ...).
    pub snapshots_failed: u64,
}

/// Unix ns as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn iso8601(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let ms = (ns / 1_000_000) % 1000;
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123_000_000), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601(1_795_000_000_000_000_000), "2026-11-18T11:06:40.000Z");
    }

    #[test]
    fn json_has_the_contract_keys() {
        let f = Finished {
            kind: Kind::Meteor,
            start_frame: 3,
            end_frame: 9,
            start_capture_ns: 1,
            end_capture_ns: 2,
            bbox: [1, 2, 3, 4],
            peak: 99.04,
            peak_frame: 5,
            peak_bbox: [1, 2, 3, 4],
            speed: 12.34,
            points: vec![TrackPoint {
                frame: 3,
                x: 1.26,
                y: 2.0,
                sum: 10.0,
                bbox: [0; 4],
                capture_ns: 0,
                evidence: 0.0,
            }],
            snapshot: None,
        };
        let v: serde_json::Value = serde_json::from_str(&EventRecord::new(f, None).to_json()).unwrap();
        assert_eq!(v["type"], "meteor");
        assert_eq!(v["start_frame"], 3);
        assert_eq!(v["end_frame"], 9);
        assert_eq!(v["bbox"], serde_json::json!([1, 2, 3, 4]));
        assert!((v["points"][0]["x"].as_f64().unwrap() - 1.3).abs() < 1e-6);
        assert!(v.get("snapshot").is_none());
        let s = serde_json::to_value(Summary { kind: "summary", frames: 5, ..Summary::default() }).unwrap();
        assert_eq!(s["type"], "summary");
        assert_eq!(s["frames"], 5);
    }
}
