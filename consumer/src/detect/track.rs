//! Tracking components across frames into events, and classifying them.
//!
//! Each frame, active tracks predict where they should be (constant velocity
//! from their last points) and the components inside a gate around that are
//! assigned to them greedily, nearest first; fragments overlapping the same
//! track are merged into its detection. Components nobody claims start new
//! tracks. A track that sees nothing for `max_miss` frames ends, and becomes
//! an event if it is long enough:
//!
//! - `meteor`: at most `meteor_max_frames` long, fast (≥ `meteor_min_speed`
//!   px/frame) and straight (points close to one line, little back-and-forth);
//! - `motion`: anything else seen in at least `motion_min_hits` frames that moved.
//!
//! Coordinates here are full-resolution pixels. Tracks come from a pool and
//! keep their buffers, so steady-state tracking allocates nothing.
#![forbid(unsafe_code)]

use serde::Serialize;

/// Tuning of the tracker and classifier.
#[derive(Clone, Debug)]
pub struct TrackParams {
    /// Frames without a detection before a track ends.
    pub max_miss: u64,
    /// Frames without a moving detection before a track ends: a still
    /// region (a stopped object, a ghost) neither extends an event nor joins
    /// the next object that passes by into it.
    pub max_still: u64,
    /// Base gate radius in px.
    pub gate: f32,
    /// Extra gate for a track with one point (no velocity yet), in px: the
    /// largest per-frame jump of a meteor.
    pub first_jump: f32,
    /// Longest meteor, in frames.
    pub meteor_max_frames: u64,
    /// Slowest meteor, px/frame.
    pub meteor_min_speed: f32,
    /// Fewest frames with a detection for a motion event.
    pub motion_min_hits: usize,
    /// Smallest movement of a motion event's centroid (its extent), in px.
    pub motion_min_extent: f32,
    /// Longest event in frames: a longer track is reported and continues as a new one.
    pub max_event_frames: u64,
    /// Most points kept per track (later points are thinned).
    pub max_points: usize,
}

impl Default for TrackParams {
    fn default() -> Self {
        TrackParams {
            max_miss: 3,
            max_still: 15,
            gate: 16.0,
            first_jump: 120.0,
            meteor_max_frames: 20,
            meteor_min_speed: 4.0,
            motion_min_hits: 4,
            motion_min_extent: 4.0,
            max_event_frames: 1800,
            max_points: 512,
        }
    }
}

/// A component in full-resolution pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Detection {
    /// Weighted centroid.
    pub x: f32,
    /// See `x`.
    pub y: f32,
    /// Box `[x, y, w, h]`.
    pub bbox: [u32; 4],
    /// Integrated |difference| (luma levels × pixels).
    pub sum: f32,
    /// Largest cell |difference| (luma levels).
    pub peak: f32,
    /// Whether part of it changed since the previous frame (see [`crate::detect::model::MOVING`]).
    pub moving: bool,
}

impl Detection {
    fn diag(&self) -> f32 {
        (self.bbox[2] as f32).hypot(self.bbox[3] as f32)
    }
    fn merge(&mut self, o: &Detection) {
        let s = self.sum + o.sum;
        if s > 0.0 {
            self.x = (self.x * self.sum + o.x * o.sum) / s;
            self.y = (self.y * self.sum + o.y * o.sum) / s;
        }
        self.sum = s;
        self.peak = self.peak.max(o.peak);
        self.bbox = union(self.bbox, o.bbox);
        self.moving |= o.moving;
    }
}

fn union(a: [u32; 4], b: [u32; 4]) -> [u32; 4] {
    let x0 = a[0].min(b[0]);
    let y0 = a[1].min(b[1]);
    let x1 = (a[0] + a[2]).max(b[0] + b[2]);
    let y1 = (a[1] + a[3]).max(b[1] + b[3]);
    [x0, y0, x1 - x0, y1 - y0]
}

fn overlaps(a: [u32; 4], b: [u32; 4], margin: u32) -> bool {
    a[0] <= b[0] + b[2] + margin
        && b[0] <= a[0] + a[2] + margin
        && a[1] <= b[1] + b[3] + margin
        && b[1] <= a[1] + a[3] + margin
}

/// One point of a track.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct TrackPoint {
    /// Frame id.
    pub frame: u64,
    /// Centroid x, px.
    pub x: f32,
    /// Centroid y, px.
    pub y: f32,
    /// Integrated brightness of the detection (luma levels × px).
    pub sum: f32,
}

/// Event classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A fast, short, straight streak.
    Meteor,
    /// Anything else that moves.
    Motion,
}

/// A finished track, classified.
#[derive(Clone, Debug)]
pub struct Finished {
    /// Class.
    pub kind: Kind,
    /// First frame id with a detection.
    pub start_frame: u64,
    /// Last frame id with a detection.
    pub end_frame: u64,
    /// Capture time of the first frame, Unix ns.
    pub start_capture_ns: u64,
    /// Capture time of the last frame, Unix ns.
    pub end_capture_ns: u64,
    /// Box over the whole track, `[x, y, w, h]` px.
    pub bbox: [u32; 4],
    /// Largest |difference| to the background (luma levels).
    pub peak: f32,
    /// Frame with the largest integrated brightness.
    pub peak_frame: u64,
    /// Box of the detection on `peak_frame`, `[x, y, w, h]` px.
    pub peak_bbox: [u32; 4],
    /// Mean speed, px/frame.
    pub speed: f32,
    /// Track points.
    pub points: Vec<TrackPoint>,
    /// Snapshot slot of the track (see [`Tracker::take_snapshot_slot`]).
    pub snapshot: Option<usize>,
}

struct Track {
    points: Vec<TrackPoint>,
    last: Detection,
    bbox: [u32; 4],
    first_frame: u64,
    last_frame: u64,
    first_capture_ns: u64,
    last_capture_ns: u64,
    peak: f32,
    peak_sum: f32,
    peak_frame: u64,
    peak_bbox: [u32; 4],
    /// Snapshot slot index, when snapshots are kept.
    snapshot: Option<usize>,
    /// Assigned this frame.
    hit: bool,
    /// Every how many hits a point is stored (grows when `max_points` is reached).
    thin: u64,
    hits: u64,
    /// Hits whose detection was moving.
    moving_hits: u64,
    /// Frame of the last moving detection (the first detection counts).
    last_moving: u64,
}

impl Track {
    fn velocity(&self) -> (f32, f32) {
        let n = self.points.len();
        if n < 2 {
            return (0.0, 0.0);
        }
        // Over up to the last 4 points: steadier than the last step alone.
        let a = self.points[n.saturating_sub(4)];
        let b = self.points[n - 1];
        let dt = (b.frame - a.frame).max(1) as f32;
        ((b.x - a.x) / dt, (b.y - a.y) / dt)
    }
}

/// What the tracker did with a frame's detections.
#[derive(Default, Debug, Clone, Copy)]
pub struct FrameResult {
    /// Tracks that got a new peak this frame and hold a snapshot slot: the
    /// caller should copy the frame's image into these slots.
    pub new_peaks: u64,
}

/// The tracker.
pub struct Tracker {
    p: TrackParams,
    active: Vec<Track>,
    pool: Vec<Track>,
    pairs: Vec<(f32, u16, u16)>,
    claimed: Vec<Option<u16>>,
    /// Snapshot slots free for new tracks (when snapshots are kept).
    free_slots: Vec<usize>,
    /// Snapshot slots of tracks that reached a new peak on the current frame:
    /// their image should be refreshed from it.
    pub refresh: Vec<usize>,
    /// Snapshot slots taken by a track on the current frame (their previous
    /// content belongs to an earlier track).
    pub acquired: Vec<usize>,
}

impl Tracker {
    /// A tracker; `snapshot_slots` is how many tracks can hold a snapshot at once.
    pub fn new(p: TrackParams, snapshot_slots: usize) -> Tracker {
        Tracker {
            p,
            active: Vec::with_capacity(64),
            pool: Vec::new(),
            pairs: Vec::with_capacity(1024),
            claimed: Vec::with_capacity(64),
            free_slots: (0..snapshot_slots).rev().collect(),
            refresh: Vec::with_capacity(snapshot_slots),
            acquired: Vec::with_capacity(snapshot_slots),
        }
    }

    /// Active tracks.
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// Returns a snapshot slot to the free list once its image has been used.
    pub fn release_snapshot_slot(&mut self, slot: usize) {
        self.free_slots.push(slot);
    }

    /// Feeds one frame's detections; finished tracks are classified into `out`.
    pub fn update(&mut self, frame: u64, capture_ns: u64, dets: &[Detection], out: &mut Vec<Finished>) {
        self.refresh.clear();
        self.acquired.clear();
        for t in &mut self.active {
            t.hit = false;
        }
        // Candidate pairs inside each track's gate.
        self.pairs.clear();
        for (ti, t) in self.active.iter().enumerate() {
            let dt = frame.saturating_sub(t.last_frame).max(1) as f32;
            let (vx, vy) = t.velocity();
            let (px, py) = (t.last.x + vx * dt, t.last.y + vy * dt);
            let mut r = self.p.gate + 0.5 * vx.hypot(vy) * dt + t.last.diag();
            if t.points.len() < 2 {
                r += self.p.first_jump;
            }
            for (di, d) in dets.iter().enumerate() {
                let dist = (d.x - px).hypot(d.y - py);
                if dist <= r && ti < u16::MAX as usize && di < u16::MAX as usize {
                    self.pairs.push((dist, ti as u16, di as u16));
                }
            }
        }
        self.pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        self.claimed.clear();
        self.claimed.resize(dets.len(), None);
        // Nearest first, one detection per track; then fragments that overlap
        // a track's chosen detection join it.
        let mut assigned: [Option<Detection>; 256] = [None; 256];
        let n_tracks = self.active.len().min(256);
        for &(_, ti, di) in &self.pairs {
            let (ti, di) = (ti as usize, di as usize);
            if ti >= n_tracks || self.claimed[di].is_some() {
                continue;
            }
            match &mut assigned[ti] {
                None => {
                    assigned[ti] = Some(dets[di]);
                    self.claimed[di] = Some(ti as u16);
                }
                Some(a) => {
                    if overlaps(a.bbox, dets[di].bbox, self.p.gate as u32) {
                        a.merge(&dets[di]);
                        self.claimed[di] = Some(ti as u16);
                    }
                }
            }
        }
        for (ti, a) in assigned.iter().enumerate().take(n_tracks) {
            if let Some(d) = a {
                let t = &mut self.active[ti];
                Self::add(&self.p, t, frame, capture_ns, d);
                if t.peak_frame == frame {
                    // A track that started while every slot was taken gets
                    // one at its next peak after one frees up.
                    if t.snapshot.is_none()
                        && let Some(s) = self.free_slots.pop()
                    {
                        t.snapshot = Some(s);
                        self.acquired.push(s);
                    }
                    if let Some(s) = t.snapshot {
                        self.refresh.push(s);
                    }
                }
            }
        }
        // New tracks, strongest detections first (dets come sorted that way).
        for (di, d) in dets.iter().enumerate() {
            if self.claimed[di].is_some() {
                continue;
            }
            let mut t = self.pool.pop().unwrap_or_else(|| Track {
                points: Vec::with_capacity(64),
                last: Detection::default(),
                bbox: [0; 4],
                first_frame: 0,
                last_frame: 0,
                first_capture_ns: 0,
                last_capture_ns: 0,
                peak: 0.0,
                peak_sum: 0.0,
                peak_frame: 0,
                peak_bbox: [0; 4],
                snapshot: None,
                hit: false,
                thin: 1,
                hits: 0,
                moving_hits: 0,
                last_moving: 0,
            });
            t.points.clear();
            t.bbox = d.bbox;
            t.first_frame = frame;
            t.first_capture_ns = capture_ns;
            t.peak = 0.0;
            t.peak_sum = -1.0;
            t.thin = 1;
            t.hits = 0;
            t.moving_hits = 0;
            t.last_moving = frame;
            t.snapshot = self.free_slots.pop();
            Self::add(&self.p, &mut t, frame, capture_ns, d);
            if let Some(s) = t.snapshot {
                self.acquired.push(s);
                self.refresh.push(s);
            }
            self.active.push(t);
        }
        // End tracks that missed too long, and split very long ones.
        let mut i = 0;
        while i < self.active.len() {
            let t = &self.active[i];
            let ended = frame.saturating_sub(t.last_frame) > self.p.max_miss
                || frame.saturating_sub(t.last_moving) > self.p.max_still;
            let too_long = t.last_frame - t.first_frame + 1 >= self.p.max_event_frames;
            if ended || too_long {
                let t = self.active.swap_remove(i);
                self.finish(t, out);
            } else {
                i += 1;
            }
        }
    }

    fn add(p: &TrackParams, t: &mut Track, frame: u64, capture_ns: u64, d: &Detection) {
        t.hits += 1;
        t.moving_hits += u64::from(d.moving);
        if d.moving {
            t.last_moving = frame;
        }
        t.hit = true;
        t.last = *d;
        t.last_frame = frame;
        t.last_capture_ns = capture_ns;
        t.bbox = union(t.bbox, d.bbox);
        t.peak = t.peak.max(d.peak);
        if d.sum > t.peak_sum {
            t.peak_sum = d.sum;
            t.peak_frame = frame;
            t.peak_bbox = d.bbox;
        }
        if (t.hits - 1).is_multiple_of(t.thin) {
            if t.points.len() == p.max_points {
                // Keep every other point and store half as often from now on.
                let mut k = 0;
                t.points.retain(|_| {
                    k += 1;
                    k % 2 == 1
                });
                t.thin *= 2;
            }
            t.points.push(TrackPoint { frame, x: d.x, y: d.y, sum: d.sum });
        }
    }

    /// Ends every track (stream closed, producer restarted, exit).
    pub fn flush(&mut self, out: &mut Vec<Finished>) {
        while let Some(t) = self.active.pop() {
            self.finish(t, out);
        }
    }

    fn finish(&mut self, mut t: Track, out: &mut Vec<Finished>) {
        match self.classify(&t) {
            Some((kind, speed)) => out.push(Finished {
                kind,
                start_frame: t.first_frame,
                end_frame: t.last_frame,
                start_capture_ns: t.first_capture_ns,
                end_capture_ns: t.last_capture_ns,
                bbox: t.bbox,
                peak: t.peak,
                peak_frame: t.peak_frame,
                peak_bbox: t.peak_bbox,
                speed,
                points: t.points.clone(),
                // The caller releases the slot after writing the snapshot.
                snapshot: t.snapshot.take(),
            }),
            None => {
                if t.hits >= 3 {
                    tracing::debug!(
                        start = t.first_frame, end = t.last_frame, hits = t.hits, moving = t.moving_hits,
                        bbox = ?t.bbox, "track dropped (too short, not moving, or a still change)"
                    );
                }
                if let Some(s) = t.snapshot.take() {
                    self.free_slots.push(s);
                }
            }
        }
        self.pool.push(t);
    }

    fn classify(&self, t: &Track) -> Option<(Kind, f32)> {
        let pts = &t.points;
        let n = t.hits as usize;
        if n < 2 {
            return None;
        }
        let (a, b) = (pts[0], pts[pts.len() - 1]);
        let frames = (b.frame - a.frame).max(1);
        let disp = (b.x - a.x).hypot(b.y - a.y);
        let speed = disp / frames as f32;
        let path: f32 = pts.windows(2).map(|w| (w[1].x - w[0].x).hypot(w[1].y - w[0].y)).sum();
        // Largest distance of a point from the chord first→last.
        let (ux, uy) = if disp > 0.0 { ((b.x - a.x) / disp, (b.y - a.y) / disp) } else { (1.0, 0.0) };
        let off = pts.iter().map(|p| ((p.x - a.x) * uy - (p.y - a.y) * ux).abs()).fold(0.0f32, f32::max);
        let straight = path <= 1.25 * disp + 2.0 && off <= 4.0 + 0.08 * disp;
        let span = t.last_frame - t.first_frame + 1;
        if span <= self.p.meteor_max_frames && speed >= self.p.meteor_min_speed && straight {
            return Some((Kind::Meteor, speed));
        }
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for p in pts {
            x0 = x0.min(p.x);
            y0 = y0.min(p.y);
            x1 = x1.max(p.x);
            y1 = y1.max(p.y);
        }
        let extent = (x1 - x0).hypot(y1 - y0);
        // Mostly still detections: a ghost or a stopped object, not motion.
        let moving = t.moving_hits as usize;
        if moving >= self.p.motion_min_hits && 2 * moving >= n && extent >= self.p.motion_min_extent {
            return Some((Kind::Motion, path / frames as f32));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, s: u32) -> Detection {
        Detection { x, y, bbox: [x as u32 - s / 2, y as u32 - s / 2, s, s], sum: 100.0, peak: 50.0, moving: true }
    }

    fn run(tracker: &mut Tracker, frames: impl Iterator<Item = (u64, Vec<Detection>)>) -> Vec<Finished> {
        let mut out = Vec::new();
        let mut last = 0;
        for (f, d) in frames {
            tracker.update(f, f * 1000, &d, &mut out);
            last = f;
        }
        for f in last + 1..last + 10 {
            tracker.update(f, f * 1000, &[], &mut out);
        }
        out
    }

    #[test]
    fn a_fast_straight_streak_is_a_meteor() {
        let mut t = Tracker::new(TrackParams::default(), 0);
        let out = run(
            &mut t,
            (100..108).map(|f| (f, vec![det(100.0 + 30.0 * (f - 100) as f32, 200.0 + 10.0 * (f - 100) as f32, 20)])),
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, Kind::Meteor);
        assert_eq!((out[0].start_frame, out[0].end_frame), (100, 107));
        assert!((out[0].speed - 31.6).abs() < 0.5, "{}", out[0].speed);
    }

    #[test]
    fn a_slow_long_blob_is_motion() {
        let mut t = Tracker::new(TrackParams::default(), 0);
        let out = run(
            &mut t,
            (0..90).map(|f| (f, vec![det(300.0 + 2.0 * f as f32, 200.0 + 20.0 * (f as f32 / 10.0).sin(), 40)])),
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, Kind::Motion);
        assert_eq!((out[0].start_frame, out[0].end_frame), (0, 89));
    }

    #[test]
    fn one_frame_flashes_and_short_gaps() {
        let mut t = Tracker::new(TrackParams::default(), 0);
        // A single-frame flash is dropped; a meteor with one missed frame stays one event.
        let frames = vec![
            (5, vec![det(600.0, 600.0, 8)]),
            (20, vec![det(100.0, 100.0, 10)]),
            (21, vec![det(125.0, 100.0, 10)]),
            (23, vec![det(175.0, 100.0, 10)]),
            (24, vec![det(200.0, 100.0, 10)]),
        ];
        let out = run(&mut t, frames.into_iter());
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, Kind::Meteor);
        assert_eq!(out[0].points.len(), 4);
    }
}
