//! Tracking components across frames into events, and classifying them.
//!
//! Each frame, active tracks predict where they should be (constant velocity
//! from their last points) and the components inside a gate around that are
//! assigned to them greedily, nearest first; fragments overlapping the same
//! track are merged into its detection. Components nobody claims start new
//! tracks. A track that sees nothing for `max_miss` frames ends, and becomes
//! an event if it is long enough:
//!
//! - `meteor`: at most `meteor_max_frames` long, fast (`meteor_min_speed` to
//!   `meteor_max_speed` px/frame) and straight (points close to one line,
//!   little back-and-forth); a short or faint one must be bright;
//! - `plane` / `satellite`: a long, steady pass of a point of light;
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
    /// Fastest meteor, px/frame (by default as far as `first_jump`, the
    /// largest first step the tracker allows; keep the two together). A
    /// faster "track" is unrelated detections chained through the gate of
    /// a huge one (an I-frame's band across the picture widens the gate by
    /// its own size).
    pub meteor_max_speed: f32,
    /// Fewest frames with a detection for a meteor, counting only
    /// detections next to another in time (on the frame before or after):
    /// one- and two-frame coincidences of noise, and isolated blobs chained
    /// across gaps, are never meteors.
    pub meteor_min_hits: u64,
    /// Fewest such detections for a meteor of ordinary brightness; a
    /// shorter one needs `meteor_short_evidence`. Faint three-frame
    /// coincidences (the refresh of a block at an H.264 keyframe and the
    /// P-frames after it) are not meteors; a bright three-frame streak is.
    pub meteor_sure_hits: u64,
    /// Shortest trail (first to last detection, px) of a meteor of ordinary
    /// brightness; a shorter one needs `meteor_short_evidence`. The faint
    /// blob a keyframe leaves drifts 15–27 px while the P-frames after it
    /// fade it out; the shortest meteor of the corpus travels 57 px.
    pub meteor_sure_trail: f32,
    /// Least evidence (see `meteor_min_evidence`) of a meteor with fewer
    /// than `meteor_sure_hits` detections or a trail shorter than
    /// `meteor_sure_trail`.
    pub meteor_short_evidence: f32,
    /// Least evidence of a meteor: the sum over its detections of their
    /// integrated difference in units of `σ × gain` per cell (see
    /// [`Detection::evidence`]).
    pub meteor_min_evidence: f32,
    /// Fewest frames with a detection for a motion event.
    pub motion_min_hits: usize,
    /// Smallest movement of a motion event's centroid (its extent), in px.
    pub motion_min_extent: f32,
    /// Frames an established, slowly moving track may go undetected and
    /// still continue (coasting at its velocity): an aircraft whose lights
    /// blink, a satellite fading in noise. 45 frames = 1.5 s at 30 fps.
    pub coast_frames: u64,
    /// Largest detection (its box's longer side, px) that still counts as a
    /// point of light (aircraft lights, satellites), not an extended object.
    pub point_max: u32,
    /// Shortest aircraft or satellite pass, in frames.
    pub pass_min_frames: u64,
    /// Fastest satellite, px/frame (faster steady points are aircraft).
    pub satellite_max_speed: f32,
    /// Fastest aircraft or satellite, px/frame.
    pub pass_max_speed: f32,
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
            meteor_max_frames: 60,
            meteor_min_speed: 4.0,
            meteor_max_speed: 120.0,
            meteor_min_hits: 3,
            meteor_sure_hits: 4,
            meteor_sure_trail: 40.0,
            meteor_min_evidence: 300.0,
            meteor_short_evidence: 3000.0,
            motion_min_hits: 4,
            motion_min_extent: 12.0,
            coast_frames: 45,
            point_max: 24,
            pass_min_frames: 45,
            satellite_max_speed: 3.0,
            pass_max_speed: 8.0,
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
    /// Barely above the threshold (peak under twice the seed threshold):
    /// what the noise's tail produces; counted by the threshold's adaptation.
    pub marginal: bool,
    /// Integrated |difference| in units of the seed threshold's noise
    /// (`σ × gain`, luma levels) per cell: how much evidence the detection
    /// carries, independent of the source's noise level.
    pub evidence: f32,
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
        self.marginal &= o.marginal;
        self.evidence += o.evidence;
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
    /// Box of the detection `[x, y, w, h]` (not in the JSON).
    #[serde(skip)]
    pub bbox: [u32; 4],
    /// Capture time of the frame, Unix ns (not in the JSON).
    #[serde(skip)]
    pub capture_ns: u64,
    /// The detection's [`Detection::evidence`] (not in the JSON).
    #[serde(skip)]
    pub evidence: f32,
}

/// Event classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A fast, short, straight streak moving consistently.
    Meteor,
    /// A point of light crossing slowly and steadily that blinks (strobes)
    /// or is faster than a satellite.
    Plane,
    /// A steady point of light crossing slowly in a straight line.
    Satellite,
    /// Anything else that moves.
    Motion,
}

impl Kind {
    /// Every kind, in the order of [`Kind::index`].
    pub const ALL: [Kind; 4] = [Kind::Meteor, Kind::Plane, Kind::Satellite, Kind::Motion];

    /// The name used in events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Meteor => "meteor",
            Kind::Plane => "plane",
            Kind::Satellite => "satellite",
            Kind::Motion => "motion",
        }
    }

    /// Position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
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
    /// Snapshot slot of the track (released with [`Tracker::release_snapshot_slot`]).
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
    /// Frame of the last moving detection or of the last progress of the
    /// centroid (the first detection counts).
    last_moving: u64,
    /// Where the centroid was when it last made progress: `(x, y)`.
    anchor: (f32, f32),
    /// Hits whose detection was point-like (see [`TrackParams::point_max`]).
    small_hits: u64,
    /// Times the centroid progressed 3 px from where it last progressed,
    /// getting further from where the track began (jitter between two
    /// places does not count).
    progress: u32,
    /// Centroid of the first detection.
    origin: (f32, f32),
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
    /// Tracks started on the current frame from marginal detections (see
    /// [`Detection::marginal`]) that nobody claimed.
    pub started: usize,
    /// Meteors whose track ended but that another track still being
    /// followed may turn out to continue (see [`Tracker::join`]).
    pending: Vec<Finished>,
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
            started: 0,
            pending: Vec::with_capacity(8),
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
        // Fast tracks (meteors) take every moving fragment inside their gate:
        // a faint streak breaks into pieces along its path (compression,
        // noise), which would otherwise start tracks of their own beside it.
        // They never take a detection that holds still: the ghost a streak
        // leaves behind in P-frames of compressed video.
        let mut fast = [false; 256];
        for (f, t) in fast.iter_mut().zip(&self.active) {
            let (vx, vy) = t.velocity();
            *f = t.points.len() >= 2 && vx.hypot(vy) >= 2.0 * self.p.meteor_min_speed;
        }
        // Candidate pairs inside each track's gate.
        self.pairs.clear();
        for (ti, t) in self.active.iter().enumerate() {
            let fast_track = fast.get(ti).copied().unwrap_or(false);
            let dt = frame.saturating_sub(t.last_frame).max(1) as f32;
            let (vx, vy) = t.velocity();
            let (px, py) = (t.last.x + vx * dt, t.last.y + vy * dt);
            let mut r = self.p.gate + 0.5 * vx.hypot(vy) * dt + t.last.diag();
            if t.points.len() < 2 {
                // No velocity yet: a meteor's next detection can be a whole
                // frame's travel away, and its first detection is smeared
                // over about that length; a compact blob gets a small jump.
                r += self.p.first_jump.min(3.0 * t.last.diag());
            }
            // A meteor in flight continues along its line: a detection off
            // to the side (an aircraft appearing where a meteor just
            // ended) is something else, even inside the gate's radius.
            let speed = vx.hypot(vy);
            let across_max = self.p.gate + 0.1 * speed * dt;
            // An established point of light (aircraft, satellite) never
            // takes an extended detection: a meteor crossing it.
            let point = t.hits >= 10 && 10 * t.small_hits >= 9 * t.hits;
            for (di, d) in dets.iter().enumerate() {
                let dist = (d.x - px).hypot(d.y - py);
                let off_line = fast_track && ((d.x - px) * vy - (d.y - py) * vx).abs() > across_max * speed;
                let extended = point && d.bbox[2].max(d.bbox[3]) > self.p.point_max;
                if dist <= r
                    && (d.moving || !fast_track)
                    && !off_line
                    && !extended
                    && ti < u16::MAX as usize
                    && di < u16::MAX as usize
                {
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
                    if overlaps(a.bbox, dets[di].bbox, self.p.gate as u32) || fast[ti] {
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
        self.started = 0;
        for (di, d) in dets.iter().enumerate() {
            if self.claimed[di].is_some() {
                continue;
            }
            self.started += usize::from(d.marginal);
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
                anchor: (0.0, 0.0),
                small_hits: 0,
                progress: 0,
                origin: (0.0, 0.0),
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
            t.small_hits = 0;
            t.progress = 0;
            t.origin = (d.x, d.y);
            t.last_moving = frame;
            t.anchor = (d.x, d.y);
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
            let coasts = self.coasts(t);
            let max_miss = if coasts { self.p.coast_frames.max(self.p.max_miss) } else { self.p.max_miss };
            // A slow point of light that has travelled steadily (progressed
            // 3 px at least 3 times) may also stall that long: it progresses
            // only every few detections and may be undetected in between (a
            // satellite under clouds). A compression blob that held still
            // and jumped once may not.
            let max_still =
                if coasts && t.progress >= 3 { self.p.coast_frames.max(self.p.max_still) } else { self.p.max_still };
            let ended =
                frame.saturating_sub(t.last_frame) > max_miss || frame.saturating_sub(t.last_moving) > max_still;
            let too_long = t.last_frame - t.first_frame + 1 >= self.p.max_event_frames;
            if ended || too_long {
                let t = self.active.swap_remove(i);
                self.finish(t, out);
            } else {
                i += 1;
            }
        }
        self.release_pending(false, out);
    }

    /// Moves the held-back meteors that no active track can join any more
    /// (every track alive when they ended has ended too, or is too long to
    /// be a meteor) — or all of them with `all` — to `out`.
    fn release_pending(&mut self, all: bool, out: &mut Vec<Finished>) {
        let mut i = 0;
        while i < self.pending.len() {
            let m = &self.pending[i];
            let joinable = |t: &Track| {
                t.first_frame <= m.end_frame + self.p.max_miss + 1
                    && t.last_frame - t.first_frame < self.p.meteor_max_frames + 10
            };
            if all || !self.active.iter().any(joinable) {
                let m = self.pending.swap_remove(i);
                // A short meteor must be bright: three faint detections right
                // after a keyframe are how compression noise lines up. Checked
                // here, after the joins: two short faint pieces of one faint
                // streak are one meteor.
                // The same holds for a short trail: five faint detections
                // drifting 15–27 px from a keyframe's refreshed block are
                // compression noise; a meteor that short must be bright.
                let evidence = m.points.iter().map(|q| q.evidence).sum::<f32>();
                let hits = in_runs(&m.points);
                let trail = m.points.first().zip(m.points.last()).map_or(0.0, |(a, b)| (b.x - a.x).hypot(b.y - a.y));
                let short = hits < self.p.meteor_sure_hits || trail < self.p.meteor_sure_trail;
                if short && evidence < self.p.meteor_short_evidence {
                    tracing::debug!(
                        start = m.start_frame,
                        end = m.end_frame,
                        hits,
                        trail,
                        evidence,
                        "short faint streak: not a meteor"
                    );
                    if let Some(s) = m.snapshot {
                        self.free_slots.push(s);
                    }
                } else {
                    out.push(m);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Whether `t` is an established point-like track that moves slowly and
    /// steadily: it may go [`TrackParams::coast_frames`] without a detection
    /// (blinking lights) or without progress (a slow satellite under clouds).
    fn coasts(&self, t: &Track) -> bool {
        let n = t.points.len();
        // Only points of light coast: an extended object that vanishes is
        // gone, and the next one to appear nearby is another object.
        if t.hits >= 5 && n >= 2 && 10 * t.small_hits >= 7 * t.hits {
            let (vx, vy) = t.velocity();
            let (a, b) = (t.points[0], t.points[n - 1]);
            return vx.hypot(vy) <= self.p.pass_max_speed && (b.x - a.x).hypot(b.y - a.y) >= 3.0;
        }
        false
    }

    fn add(p: &TrackParams, t: &mut Track, frame: u64, capture_ns: u64, d: &Detection) {
        t.hits += 1;
        t.moving_hits += u64::from(d.moving);
        t.small_hits += u64::from(d.bbox[2].max(d.bbox[3]) <= p.point_max);
        // Progress of the centroid counts as movement too: a dim, slow point
        // changes its cells too little per frame to be flagged moving.
        let progressed = (d.x - t.anchor.0).hypot(d.y - t.anchor.1) >= 3.0;
        if d.moving || progressed {
            t.last_moving = frame;
        }
        if progressed {
            let from = |(x, y): (f32, f32)| (x - t.origin.0).hypot(y - t.origin.1);
            if from((d.x, d.y)) >= from(t.anchor) + 2.0 {
                t.progress += 1;
            }
            t.anchor = (d.x, d.y);
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
            t.points.push(TrackPoint {
                frame,
                x: d.x,
                y: d.y,
                sum: d.sum,
                bbox: d.bbox,
                capture_ns,
                evidence: d.evidence,
            });
        }
    }

    /// Ends every track (stream closed, producer restarted, exit).
    pub fn flush(&mut self, out: &mut Vec<Finished>) {
        while let Some(t) = self.active.pop() {
            self.finish(t, out);
        }
        self.release_pending(true, out);
    }

    fn finish(&mut self, mut t: Track, out: &mut Vec<Finished>) {
        Self::trim(&mut t);
        let class = self.classify(&t).map(|(kind, speed, core)| {
            if let Some((first, last)) = core {
                Self::cut(&mut t, first, last);
            }
            (kind, speed)
        });
        match class {
            Some((kind, speed)) => self.emit(
                Finished {
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
                },
                out,
            ),
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

    /// Hands a classified track on: other kinds go to `out` at once; a
    /// meteor joins a held-back meteor it continues (see [`Tracker::join`])
    /// or is held back itself until no active track can continue it.
    fn emit(&mut self, f: Finished, out: &mut Vec<Finished>) {
        if f.kind != Kind::Meteor {
            out.push(f);
            return;
        }
        let mut f = f;
        // Each join removes a held-back meteor: at most `pending.len()` rounds.
        while let Some((i, joined)) = self.pending.iter().enumerate().find_map(|(i, m)| Some((i, self.join(m, &f)?))) {
            let m = self.pending.swap_remove(i);
            // The joined event keeps the snapshot of the brighter piece.
            for s in [m.snapshot, f.snapshot] {
                if let Some(s) = s
                    && joined.snapshot != Some(s)
                {
                    self.free_slots.push(s);
                }
            }
            tracing::debug!(
                a = ?(m.start_frame, m.end_frame), b = ?(f.start_frame, f.end_frame),
                "two meteor tracks joined into one meteor"
            );
            f = joined;
        }
        self.pending.push(f);
    }

    /// Two meteor events are one meteor when they are near in time (they
    /// overlap, or the gap between them is one the tracker itself bridges:
    /// `max_miss` frames) and their points taken together pass the meteor
    /// test on their own — one straight line, every step forward at a
    /// consistent speed, smeared, dense. A faint streak that breaks into
    /// pieces whose centroids jump around (compression, noise) can be
    /// followed by two tracks at once, each a meteor; together they are the
    /// one meteor that was seen. Points of the same frame are combined into
    /// one (brightness-weighted centroid, union of boxes), faint ends are
    /// trimmed as [`Tracker::trim`] does, and the rest must pass whole,
    /// without the cut of stalled or backward ends.
    fn join(&self, a: &Finished, b: &Finished) -> Option<Finished> {
        let gap = self.p.max_miss + 1;
        if a.kind != Kind::Meteor
            || b.kind != Kind::Meteor
            || b.start_frame > a.end_frame + gap
            || a.start_frame > b.end_frame + gap
        {
            return None;
        }
        let mut pts: Vec<TrackPoint> = Vec::with_capacity(a.points.len() + b.points.len());
        let (mut i, mut j) = (0, 0);
        while i < a.points.len() || j < b.points.len() {
            let q = match (a.points.get(i), b.points.get(j)) {
                (Some(p), Some(q)) if p.frame == q.frame => {
                    i += 1;
                    j += 1;
                    let s = p.sum + q.sum;
                    let w = if s > 0.0 { p.sum / s } else { 0.5 };
                    TrackPoint {
                        x: w * p.x + (1.0 - w) * q.x,
                        y: w * p.y + (1.0 - w) * q.y,
                        sum: s,
                        bbox: union(p.bbox, q.bbox),
                        evidence: p.evidence + q.evidence,
                        ..*p
                    }
                }
                (Some(p), Some(q)) if p.frame < q.frame => {
                    i += 1;
                    *p
                }
                (Some(p), None) => {
                    i += 1;
                    *p
                }
                (_, Some(q)) => {
                    j += 1;
                    *q
                }
                (None, None) => break,
            };
            pts.push(q);
        }
        // Faint ends dropped as for any track (a noise blob the gate let
        // join a piece — which is how a streak ends up in two tracks: a
        // track started on a faint blob beside the streak takes the streak's
        // first detection, gets a wrong velocity from the pair and follows
        // the next blob it predicts, while the rest of the streak starts a
        // track of its own). Then all of it: a union the meteor test would
        // have to cut (an end that stalls or turns back) is not one streak.
        let (first, last) = Self::unfaint(&pts);
        pts.truncate(last + 1);
        pts.drain(..first);
        // Both pieces must remain (a piece that was only faint ends is not
        // joined, it stays an event of its own).
        let (f0, f1) = (pts.first()?.frame, pts.last()?.frame);
        if [a, b].iter().any(|e| e.end_frame < f0 || e.start_frame > f1) {
            return None;
        }
        let (kind, speed, None) = self.meteor_points(&pts)? else { return None };
        let (p0, p1) = (pts[0], pts[pts.len() - 1]);
        let bright = |f: &Finished| f.points.iter().map(|q| q.sum).fold(0.0f32, f32::max);
        let top = if bright(a) >= bright(b) { a } else { b };
        Some(Finished {
            kind,
            start_frame: p0.frame,
            end_frame: p1.frame,
            start_capture_ns: p0.capture_ns,
            end_capture_ns: p1.capture_ns,
            bbox: pts.iter().skip(1).fold(p0.bbox, |acc, q| union(acc, q.bbox)),
            peak: a.peak.max(b.peak),
            peak_frame: top.peak_frame,
            peak_bbox: top.peak_bbox,
            speed,
            points: pts,
            snapshot: top.snapshot,
        })
    }

    /// Drops faint detections at either end of a track (noise that the
    /// gate let join just before or after the object: under 15 % of the
    /// track's median brightness), and shrinks the track's span and box to
    /// what remains. Only for tracks whose points are all stored.
    fn trim(t: &mut Track) {
        if t.thin != 1 {
            return;
        }
        let (first, last) = Self::unfaint(&t.points);
        Self::cut(t, first, last);
    }

    /// The range of `pts` without the faint points at either end (see
    /// [`Tracker::trim`]); all of them when fewer than 4.
    fn unfaint(pts: &[TrackPoint]) -> (usize, usize) {
        if pts.len() < 4 {
            return (0, pts.len().saturating_sub(1));
        }
        let mut sums: Vec<f32> = pts.iter().map(|p| p.sum).collect();
        sums.sort_unstable_by(f32::total_cmp);
        let faint = 0.15 * sums[sums.len() / 2];
        let first = pts.iter().position(|p| p.sum >= faint).unwrap_or(0);
        let last = pts.iter().rposition(|p| p.sum >= faint).unwrap_or(pts.len() - 1);
        (first, last)
    }

    /// Keeps points `first..=last` of a track whose points are all stored and
    /// shrinks its span and box to them.
    fn cut(t: &mut Track, first: usize, last: usize) {
        if (first == 0 && last + 1 >= t.points.len()) || first > last || last >= t.points.len() {
            return;
        }
        let removed = t.points.len() - (last + 1 - first);
        t.points.truncate(last + 1);
        t.points.drain(..first);
        t.hits = t.hits.saturating_sub(removed as u64);
        let (a, b) = (t.points[0], t.points[t.points.len() - 1]);
        t.first_frame = a.frame;
        t.first_capture_ns = a.capture_ns;
        t.last_frame = b.frame;
        t.last_capture_ns = b.capture_ns;
        t.bbox = t.points.iter().skip(1).fold(a.bbox, |acc, p| union(acc, p.bbox));
        t.small_hits = t.small_hits.min(t.hits);
        t.moving_hits = t.moving_hits.min(t.hits);
    }

    /// The class of a finished track and its speed; for a meteor whose
    /// track had stalled ends, the range of points that are the meteor.
    fn classify(&self, t: &Track) -> Option<Class> {
        let pts = &t.points;
        let n = t.hits;
        if n < 2 || pts.len() < 2 {
            return None;
        }
        let p = &self.p;
        let (a, b) = (pts[0], pts[pts.len() - 1]);
        let frames = (b.frame - a.frame).max(1);
        let span = t.last_frame - t.first_frame + 1;
        let disp = (b.x - a.x).hypot(b.y - a.y);
        let path: f32 = pts.windows(2).map(|w| (w[1].x - w[0].x).hypot(w[1].y - w[0].y)).sum();
        if let Some(m) = self.meteor(t) {
            return Some(m);
        }
        let fit = LineFit::new(pts);
        let speed = fit.speed();

        // Aircraft and satellites: a point of light crossing steadily and long.
        let point_like = 10 * t.small_hits >= 7 * n;
        if point_like
            && span >= p.pass_min_frames
            && n >= 10
            && speed >= 0.2
            && speed <= p.pass_max_speed
            && disp >= 20.0
            && fit.beyond(pts, 6.0 + 0.03 * disp) <= pts.len() / 50
        {
            // Blinking: frames several times brighter than usual (strobes),
            // or long stretches without a detection.
            let mut sums: Vec<f32> = pts.iter().map(|q| q.sum).collect();
            sums.sort_unstable_by(f32::total_cmp);
            let median = sums[sums.len() / 2];
            let flashes = sums.iter().filter(|&&v| v >= 3.0 * median).count();
            let blinking = flashes >= 3 && 50 * flashes >= sums.len();
            let gappy = 10 * n < 6 * span;
            let kind = if blinking || gappy || speed > p.satellite_max_speed { Kind::Plane } else { Kind::Satellite };
            return Some((kind, speed, None));
        }

        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for q in pts {
            x0 = x0.min(q.x);
            y0 = y0.min(q.y);
            x1 = x1.max(q.x);
            y1 = y1.max(q.y);
        }
        let extent = (x1 - x0).hypot(y1 - y0);
        // Mostly still detections: a ghost or a stopped object, not motion.
        let moving = t.moving_hits as usize;
        let hits = n as usize;
        // And a coherent path: not detections jumping about (noise that the
        // gates happened to chain), which travel far more than they get anywhere.
        let coherent = span >= 8 && 2 * n >= span && path <= 3.0 * extent + 8.0;
        if moving >= p.motion_min_hits && 2 * moving >= hits && extent >= p.motion_min_extent && coherent {
            return Some((Kind::Motion, path / frames as f32, None));
        }
        None
    }
}

impl Tracker {
    /// The meteor test: the track's points, without stalled ends, must be
    /// fast, short, straight, and move forward consistently on every frame.
    ///
    /// Stalled ends: compressed video repeats a block unchanged through a
    /// run of P-frames, so the last (or first) detection of a streak can stay
    /// put for a few frames; those are cut when the track otherwise moves
    /// fast (its median step is at least the slowest meteor's). Compression
    /// noise, by contrast, holds still through a GOP and jumps when an
    /// I-frame refreshes the blocks: a track whose steps are mostly stalls is
    /// never a meteor (each step must advance at least 0.3 × the speed).
    fn meteor(&self, t: &Track) -> Option<Class> {
        if t.thin != 1 {
            return None;
        }
        self.meteor_points(&t.points)
    }

    /// [`Tracker::meteor`] on a track's points (every one of them, in frame order).
    fn meteor_points(&self, all: &[TrackPoint]) -> Option<Class> {
        let p = &self.p;
        if all.len() < 3 || all[all.len() - 1].frame - all[0].frame + 1 > p.meteor_max_frames + 10 {
            return None;
        }
        let step =
            |w: &[TrackPoint]| (w[1].x - w[0].x).hypot(w[1].y - w[0].y) / (w[1].frame - w[0].frame).max(1) as f32;
        let mut steps: Vec<f32> = all.windows(2).map(step).collect();
        steps.sort_unstable_by(f32::total_cmp);
        let median = steps[steps.len() / 2];
        let (mut first, mut last) = (0, all.len() - 1);
        if median >= p.meteor_min_speed {
            // An end step is cut when it stalls or goes against the
            // direction of the rest (a noise blob next to where the streak began).
            let off = |w: &[TrackPoint], a: &TrackPoint, b: &TrackPoint| {
                step(w) < 0.25 * median || (w[1].x - w[0].x) * (b.x - a.x) + (w[1].y - w[0].y) * (b.y - a.y) <= 0.0
            };
            while last > first + 2 && off(&all[last - 1..=last], &all[first], &all[last - 1]) {
                last -= 1;
            }
            while last > first + 2 && off(&all[first..=first + 1], &all[first + 1], &all[last]) {
                first += 1;
            }
        }
        let pts = &all[first..=last];
        let n = pts.len() as u64;
        let (a, b) = (pts[0], pts[pts.len() - 1]);
        let span = b.frame - a.frame + 1;
        if span > p.meteor_max_frames || n < p.meteor_min_hits {
            return None;
        }
        // Detections in runs: only a detection with another one on the frame
        // before or after counts towards the fewest hits. A meteor is seen on
        // consecutive frames; isolated blobs that a track's wide first gate
        // chained across gaps (the large, faint blobs of an I-frame that
        // refreshes a GOP's compression noise) are not.
        let in_runs = in_runs(pts);
        if in_runs < p.meteor_min_hits {
            return None;
        }
        let fit = LineFit::new(pts);
        let speed = fit.speed();
        let disp = (b.x - a.x).hypot(b.y - a.y);
        // Straight: every point near the line of motion.
        if speed < p.meteor_min_speed || speed > p.meteor_max_speed || fit.max_across > 4.0 + 0.05 * disp {
            return None;
        }
        // Consistent: each step's velocity close to the fitted one, and
        // forward by at least 0.3 × the speed (one outlier allowed from 5 points).
        let tol = 0.5 * speed + 4.0;
        let (ux, uy) = (fit.vx / speed, fit.vy / speed);
        let bad = pts
            .windows(2)
            .filter(|w| {
                let dt = (w[1].frame - w[0].frame).max(1) as f32;
                let (sx, sy) = ((w[1].x - w[0].x) / dt, (w[1].y - w[0].y) / dt);
                (sx - fit.vx).hypot(sy - fit.vy) > tol || sx * ux + sy * uy < 0.3 * speed
            })
            .count();
        let dense = 2 * n >= span;
        // A meteor smears along its path during a frame's exposure: the
        // median detection is about as long as a frame's travel. Noise blobs
        // that happen to line up are compact.
        let mut lens: Vec<f32> = pts.iter().map(|q| (q.bbox[2] as f32).hypot(q.bbox[3] as f32)).collect();
        lens.sort_unstable_by(f32::total_cmp);
        let smeared = lens[lens.len() / 2] >= 0.6 * speed;
        // A slow one is not much longer than its travel either: the block
        // refresh of an H.264 I-frame makes wide, faint blobs (40–120 px)
        // that wobble by 4–13 px/frame while the P-frames after it fade
        // them out. A fast meteor may leave a trail a few frames long, but
        // not a band across the whole picture: an I-frame that refreshes a
        // band of blocks the width of the frame changes 1280x370 px at once.
        // Nor is any one detection a band: a track that began on an
        // I-frame's band (a median of small blobs after one 1280x620 box)
        // is not a meteor either; a meteor's own detections differ in
        // length by far less than 3x the bound.
        let len = lens[lens.len() / 2];
        let bound = if speed >= 20.0 { 6.0 * speed + 64.0 } else { 3.0 * speed + 16.0 };
        let streak = len <= bound && lens[lens.len() - 1] <= 3.0 * bound;
        // And enough light in all: the track's integrated difference, in
        // units of the threshold's noise, at least `meteor_min_evidence`.
        // Compression noise that lines up for three frames carries a tenth
        // of what the faintest meteor of the corpus does.
        let evidence = pts.iter().map(|q| q.evidence).sum::<f32>();
        let clear = evidence >= p.meteor_min_evidence;
        if dense && smeared && streak && clear && bad <= usize::from(pts.len() >= 5) {
            // (A short one must also be bright: see `release_pending`.)
            tracing::debug!(start = a.frame, end = b.frame, hits = in_runs, evidence, speed, "meteor");
            let core = (first > 0 || last + 1 < all.len()).then_some((first, last));
            return Some((Kind::Meteor, speed, core));
        }
        None
    }
}

/// Detections with another one on the frame before or after.
fn in_runs(pts: &[TrackPoint]) -> u64 {
    (0..pts.len())
        .filter(|&i| {
            (i > 0 && pts[i - 1].frame + 1 == pts[i].frame)
                || (i + 1 < pts.len() && pts[i].frame + 1 == pts[i + 1].frame)
        })
        .count() as u64
}

/// A track's class, its speed (px/frame) and, for a meteor whose track had
/// stalled ends, the range of points that are the meteor.
type Class = (Kind, f32, Option<(usize, usize)>);

/// Least-squares uniform motion through track points: `x = x0 + vx·t`,
/// `y = y0 + vy·t` (t = frame), and the largest distance of a point from it.
struct LineFit {
    vx: f32,
    vy: f32,
    /// Largest distance of a point from the line of motion (across it only).
    max_across: f32,
    /// Position at the first point's frame.
    x0: f32,
    /// See `x0`.
    y0: f32,
}

impl LineFit {
    fn new(pts: &[TrackPoint]) -> LineFit {
        let n = pts.len() as f64;
        let t0 = pts[0].frame;
        let (mut st, mut sx, mut sy, mut stt, mut stx, mut sty) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for q in pts {
            let t = (q.frame - t0) as f64;
            st += t;
            sx += f64::from(q.x);
            sy += f64::from(q.y);
            stt += t * t;
            stx += t * f64::from(q.x);
            sty += t * f64::from(q.y);
        }
        let den = n * stt - st * st;
        let (vx, vy) =
            if den.abs() > 1e-9 { ((n * stx - st * sx) / den, (n * sty - st * sy) / den) } else { (0.0, 0.0) };
        let (x0, y0) = ((sx - vx * st) / n, (sy - vy * st) / n);
        let max_residual = pts
            .iter()
            .map(|q| {
                let t = (q.frame - t0) as f64;
                (f64::from(q.x) - x0 - vx * t).hypot(f64::from(q.y) - y0 - vy * t)
            })
            .fold(0.0f64, f64::max);
        let v = vx.hypot(vy);
        let (mx, my) = (sx / n, sy / n);
        let max_across = if v > 1e-6 {
            let (ux, uy) = (vx / v, vy / v);
            pts.iter().map(|q| ((f64::from(q.x) - mx) * uy - (f64::from(q.y) - my) * ux).abs()).fold(0.0f64, f64::max)
        } else {
            max_residual
        };
        LineFit { vx: vx as f32, vy: vy as f32, max_across: max_across as f32, x0: x0 as f32, y0: y0 as f32 }
    }

    /// How many of `pts` (the points fitted) are further than `tol` from
    /// where the uniform motion puts them.
    fn beyond(&self, pts: &[TrackPoint], tol: f32) -> usize {
        let t0 = pts.first().map_or(0, |q| q.frame);
        pts.iter()
            .filter(|q| {
                let t = (q.frame - t0) as f32;
                (q.x - self.x0 - self.vx * t).hypot(q.y - self.y0 - self.vy * t) > tol
            })
            .count()
    }

    fn speed(&self) -> f32 {
        self.vx.hypot(self.vy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, s: u32) -> Detection {
        Detection {
            x,
            y,
            bbox: [x as u32 - s / 2, y as u32 - s / 2, s, s],
            sum: 100.0,
            peak: 50.0,
            moving: true,
            marginal: false,
            evidence: 1000.0,
        }
    }

    /// One detection on each of frames `0..frames`, through a default tracker.
    fn one_per_frame(frames: u64, det_at: impl Fn(u64) -> Detection) -> Vec<Finished> {
        let mut t = Tracker::new(TrackParams::default(), 0);
        run(&mut t, (0..frames).map(|f| (f, vec![det_at(f)])))
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
        tracker.flush(&mut out);
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
            // Streaks smeared over a frame's travel (25 px).
            (20, vec![det(100.0, 100.0, 24)]),
            (21, vec![det(125.0, 100.0, 24)]),
            (23, vec![det(175.0, 100.0, 24)]),
            (24, vec![det(200.0, 100.0, 24)]),
        ];
        let out = run(&mut t, frames.into_iter());
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, Kind::Meteor);
        assert_eq!(out[0].points.len(), 4);
    }

    fn point(x: f32, y: f32, sum: f32) -> Detection {
        Detection {
            x,
            y,
            bbox: [x as u32 - 3, y as u32 - 3, 6, 6],
            sum,
            peak: 30.0,
            moving: true,
            marginal: false,
            evidence: 100.0,
        }
    }

    #[test]
    fn a_blinking_point_is_one_plane_and_a_steady_one_a_satellite() {
        // An aircraft: a steady light at 2 px/frame, a strobe every 20 frames
        // (5 times brighter), and 25-frame gaps where it was lost: one event.
        let mut t = Tracker::new(TrackParams::default(), 0);
        let plane = (0..300u64).filter(|f| !(100..125).contains(f)).map(|f| {
            let sum = if f % 20 == 0 { 500.0 } else { 100.0 };
            (f, vec![point(50.0 + 2.0 * f as f32, 100.0 + 0.5 * f as f32, sum)])
        });
        let out = run(&mut t, plane);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, Kind::Plane);
        assert_eq!((out[0].start_frame, out[0].end_frame), (0, 299));
        // A satellite: steady, 0.7 px/frame.
        let mut t = Tracker::new(TrackParams::default(), 0);
        let sat = (0..400u64).map(|f| (f, vec![point(300.0 - 0.7 * f as f32, 50.0 + 0.3 * f as f32, 80.0)]));
        let out = run(&mut t, sat);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, Kind::Satellite);
    }

    #[test]
    fn a_meteor_ending_where_an_aircraft_appears_is_two_events() {
        // As on a held-out H.264 clip: a meteor straight down at 25 px/frame
        // ends at frame 157; three frames later an aircraft appears 45 px to
        // the side of where the meteor would be, inside the gate's radius.
        let mut t = Tracker::new(TrackParams::default(), 0);
        let meteor = (148..158u64).map(|f| (f, vec![det(749.0, 327.0 + 25.0 * (f - 148) as f32, 25)]));
        let plane = (161..436u64).map(|f| {
            let k = (f - 161) as f32;
            let sum = if f % 17 == 0 { 500.0 } else { 100.0 };
            (f, vec![point(701.0 + 2.1 * k, 594.0 - 2.2 * k, sum)])
        });
        let out = run(&mut t, meteor.chain(plane));
        let kinds: Vec<(Kind, u64, u64)> = out.iter().map(|e| (e.kind, e.start_frame, e.end_frame)).collect();
        assert_eq!(kinds, vec![(Kind::Meteor, 148, 157), (Kind::Plane, 161, 435)]);
    }

    #[test]
    fn a_meteor_crossing_a_satellite_is_two_events() {
        // As on a held-out raw clip: a meteor at 25 px/frame starts right by
        // a dim satellite while noise hides the satellite for a few frames;
        // the satellite's track took the streak's detections and lost the
        // satellite.
        let mut t = Tracker::new(TrackParams::default(), 0);
        let sat = |f: u64| point(300.0 + 1.1 * f as f32, 400.0, 80.0);
        let frames = (0..400u64).map(|f| {
            let mut dets = if (196..208).contains(&f) { vec![] } else { vec![sat(f)] };
            if (200..205).contains(&f) {
                // Starts where the satellite is (520, 400) at frame 200.
                dets.push(det(522.0 + 20.0 * (f - 200) as f32, 402.0 + 15.0 * (f - 200) as f32, 25));
            }
            (f, dets)
        });
        let out = run(&mut t, frames);
        let kinds: Vec<(Kind, u64, u64)> = out.iter().map(|e| (e.kind, e.start_frame, e.end_frame)).collect();
        assert_eq!(kinds, vec![(Kind::Meteor, 200, 204), (Kind::Satellite, 0, 399)]);
    }

    #[test]
    fn a_band_across_the_frame_is_not_a_meteor_a_trail_is() {
        // As measured on an hour of static H.264 sky (CRF 28, GOP 60): an
        // I-frame refreshed a band of blocks the width of the picture, whose
        // centroid moved 44 px/frame for three frames, bright in all.
        let track = |w: u32, h: u32| {
            one_per_frame(4, |f| {
                let (x, y) = (640.0, 300.0 + 44.0 * f as f32);
                let mut d = det(x, y, 4);
                d.bbox = [(x - w as f32 / 2.0) as u32, (y - h as f32 / 2.0) as u32, w, h];
                d.evidence = 20_000.0;
                d
            })
        };
        assert!(track(1280, 370).iter().all(|e| e.kind != Kind::Meteor));
        // A fast meteor leaving a trail four frames long is still one.
        let trail = track(12, 176);
        assert_eq!(trail.len(), 1, "{trail:?}");
        assert_eq!(trail[0].kind, Kind::Meteor);
        // As measured on a second hour (seed 14): a track that began on a
        // 1280x620 band and went on over small faint blobs, 6 px/frame. Its
        // median detection is small; its first one is the band.
        let out = one_per_frame(4, |f| {
            let (x, y) = (700.0 - 6.0 * f as f32, 388.0 - 6.0 * f as f32);
            let mut d = det(x, y, 12);
            if f == 0 {
                d.bbox = [60, 78, 1280 - 60, 620];
            }
            d.evidence = 20_000.0;
            d
        });
        assert!(out.iter().all(|e| e.kind != Kind::Meteor), "{out:?}");
        // As measured on a third hour (seed 16): three detections 380 px
        // apart across a 1280x320 band, chained through the band's gate.
        let out = one_per_frame(3, |f| {
            let mut d = det(200.0 + 380.0 * f as f32, 450.0, 200);
            if f == 1 {
                d.bbox = [0, 296, 1280, 320];
            }
            d.evidence = 7_000.0;
            d
        });
        assert!(out.iter().all(|e| e.kind != Kind::Meteor), "{out:?}");
    }

    #[test]
    fn two_frame_flukes_and_compact_chains_are_not_meteors() {
        let mut t = Tracker::new(TrackParams::default(), 0);
        // Two detections of a real streak: too few for a meteor.
        let out = run(&mut t, vec![(10, vec![det(100.0, 100.0, 30)]), (11, vec![det(130.0, 100.0, 30)])].into_iter());
        assert!(out.is_empty(), "{out:?}");
        // Compact blobs lined up at 40 px/frame: not smeared like a meteor.
        let mut t = Tracker::new(TrackParams { first_jump: 120.0, ..TrackParams::default() }, 0);
        let out = run(&mut t, (0..5u64).map(|f| (f, vec![det(100.0 + 40.0 * f as f32, 300.0, 4)])));
        assert!(out.iter().all(|e| e.kind != Kind::Meteor), "{out:?}");
    }

    #[test]
    fn short_faint_streaks_are_not_meteors_short_bright_ones_are() {
        // As measured on an hour of static H.264 sky (CRF 28, GOP 60): three
        // false meteors, each three faint detections on the frames right
        // after a keyframe, straight and with enough evidence in all. Every
        // meteor of the evaluation corpora has at least four detections on
        // consecutive frames; the test pattern draws bright 3-frame meteors.
        let streak = |frames: u64, evidence: f32| {
            one_per_frame(frames, |f| Detection {
                evidence,
                ..det(100.0 + 25.0 * f as f32, 100.0 + 5.0 * f as f32, 25)
            })
        };
        let short = TrackParams::default().meteor_short_evidence;
        assert!(streak(3, 0.3 * short).is_empty(), "{:?}", streak(3, 0.3 * short));
        for (frames, evidence) in [(4, 0.2 * short), (3, 0.4 * short)] {
            let out = streak(frames, evidence);
            assert_eq!(out.len(), 1, "{frames} frames of evidence {evidence}: {out:?}");
            assert_eq!((out[0].kind, out[0].start_frame, out[0].end_frame), (Kind::Meteor, 0, frames - 1));
        }
    }

    #[test]
    fn short_faint_trails_are_not_meteors_short_bright_ones_are() {
        // As measured on two hours of static H.264 sky (CRF 28, GOP 60):
        // five faint detections drifting 5–7 px/frame from a keyframe's
        // refreshed block, 15–27 px in all. The shortest meteor of the
        // evaluation corpora travels 57 px.
        let drift = |speed: f32, evidence: f32| {
            one_per_frame(5, |f| Detection {
                evidence,
                ..det(300.0 + speed * f as f32, 600.0 - 0.5 * speed * f as f32, 8)
            })
        };
        let short = TrackParams::default().meteor_short_evidence;
        let faint = drift(5.5, 0.15 * short);
        assert!(faint.iter().all(|e| e.kind != Kind::Meteor), "{faint:?}");
        for (speed, evidence) in [(5.5, 1.5 * short), (11.0, 0.15 * short)] {
            let out = drift(speed, evidence);
            assert_eq!(out.len(), 1, "{speed} px/frame of evidence {evidence}: {out:?}");
            assert_eq!(out[0].kind, Kind::Meteor, "{out:?}");
        }
    }

    #[test]
    fn isolated_blobs_chained_across_gaps_are_not_meteors() {
        // As measured on a static H.264 sky (CRF 28, GOP 60) at the first
        // I-frame after the detector learned: large faint blobs on frames
        // 60, 61 and 64 along a line, each long enough to look smeared.
        let mut t = Tracker::new(TrackParams::default(), 0);
        let blobs = [(60, 1001.0, 3.0), (61, 1045.0, 57.0), (64, 1191.0, 180.0)];
        let out = run(&mut t, blobs.into_iter().map(|(f, x, y)| (f, vec![det(x, y, 80)])));
        assert!(out.iter().all(|e| e.kind != Kind::Meteor), "{out:?}");
    }

    #[test]
    fn compression_blobs_stalling_then_jumping_are_not_meteors() {
        // A block that holds still through a run of P-frames and jumps on
        // the I-frame, twice: the old per-step tolerance took it for a slow meteor.
        let mut t = Tracker::new(TrackParams::default(), 0);
        let blob = (0..9u64).map(|f| (f, vec![det(500.0 + 12.0 * (f / 3) as f32, 500.0 + 4.0 * (f / 3) as f32, 16)]));
        let out = run(&mut t, blob);
        assert!(out.iter().all(|e| e.kind != Kind::Meteor), "{out:?}");
        // A real streak with little evidence (compression noise lined up): no meteor.
        let mut t = Tracker::new(TrackParams::default(), 0);
        let faint = (0..3u64).map(|f| {
            let mut d = det(100.0 + 12.0 * f as f32, 100.0, 16);
            d.evidence = 40.0;
            (f, vec![d])
        });
        assert!(run(&mut t, faint).is_empty());
        // An I-frame's block refresh: a wide blob (60 px) wobbling 6 px/frame
        // while it fades: far longer than its travel, not a streak.
        let mut t = Tracker::new(TrackParams::default(), 0);
        let wide = (0..3u64).map(|f| (f, vec![det(400.0 + 6.0 * f as f32, 300.0 + 2.0 * f as f32, 60)]));
        assert!(run(&mut t, wide).iter().all(|e| e.kind != Kind::Meteor));
    }

    #[test]
    fn a_meteor_whose_last_detection_stalls_is_cut_to_its_flight() {
        // 10 frames at 20 px/frame, then the last streak stays put for 6
        // frames (a block repeated by P-frames): one meteor, ending at frame 19.
        let mut t = Tracker::new(TrackParams::default(), 0);
        let pts = (10..26u64).map(|f| {
            let k = f.min(19) - 10;
            (f, vec![det(100.0 + 20.0 * k as f32, 300.0 + 5.0 * k as f32, 24)])
        });
        let out = run(&mut t, pts);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, Kind::Meteor);
        assert_eq!((out[0].start_frame, out[0].end_frame), (10, 19));
    }

    fn meteor_piece(frames: std::ops::RangeInclusive<u64>, x0: f32, y0: f32, vx: f32, vy: f32) -> Finished {
        let points: Vec<TrackPoint> = frames
            .clone()
            .map(|f| {
                let k = (f - 100) as f32;
                let (x, y) = (x0 + vx * k, y0 + vy * k);
                let len = vx.hypot(vy) as u32;
                TrackPoint {
                    frame: f,
                    x,
                    y,
                    sum: 400.0,
                    bbox: [x as u32 - len / 2, y as u32 - 4, len, 8],
                    capture_ns: f,
                    evidence: 200.0,
                }
            })
            .collect();
        let bbox = points.iter().skip(1).fold(points[0].bbox, |a, q| union(a, q.bbox));
        Finished {
            kind: Kind::Meteor,
            start_frame: *frames.start(),
            end_frame: *frames.end(),
            start_capture_ns: *frames.start(),
            end_capture_ns: *frames.end(),
            bbox,
            peak: 40.0,
            peak_frame: *frames.start(),
            peak_bbox: points[0].bbox,
            speed: vx.hypot(vy),
            points,
            snapshot: None,
        }
    }

    #[test]
    fn two_pieces_of_one_streak_are_one_meteor() {
        // A faint 7-frame meteor at 31 px/frame followed by two tracks that
        // share a frame: frames 100–102 and 102–106.
        let mut t = Tracker::new(TrackParams::default(), 0);
        let mut out = Vec::new();
        t.emit(meteor_piece(100..=102, 200.0, 300.0, 30.0, 8.0), &mut out);
        t.emit(meteor_piece(102..=106, 200.0, 300.0, 30.0, 8.0), &mut out);
        t.flush(&mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, Kind::Meteor);
        assert_eq!((out[0].start_frame, out[0].end_frame), (100, 106));
        assert_eq!(out[0].points.len(), 7);
        // As measured on a faint H.264 streak (-25 px/frame): a track began
        // on a faint blob beside the streak (frame 545), took the streak's
        // first detection (546), and followed the next faint blob it
        // predicted (547, going the wrong way); the rest of the streak
        // (547-549) became a second track. One meteor, 546-549.
        let pt = |frame: u64, x: f32, sum: f32| TrackPoint {
            frame,
            x,
            y: 140.0 + 0.3 * (x - 925.0),
            sum,
            bbox: [x as u32 - 12, 134, 24, 12],
            capture_ns: frame,
            evidence: sum / 5.0,
        };
        let piece = |points: Vec<TrackPoint>| {
            let (a, b) = (points[0], points[points.len() - 1]);
            Finished {
                kind: Kind::Meteor,
                start_frame: a.frame,
                end_frame: b.frame,
                start_capture_ns: a.frame,
                end_capture_ns: b.frame,
                bbox: points.iter().skip(1).fold(a.bbox, |acc, q| union(acc, q.bbox)),
                peak: 24.0,
                peak_frame: a.frame,
                peak_bbox: a.bbox,
                speed: 20.0,
                points,
                snapshot: None,
            }
        };
        let mut t = Tracker::new(TrackParams::default(), 0);
        let mut out = Vec::new();
        t.emit(piece(vec![pt(545, 942.0, 144.0), pt(546, 953.0, 1773.0), pt(547, 967.0, 156.0)]), &mut out);
        t.emit(piece(vec![pt(547, 925.0, 1516.0), pt(548, 900.0, 1472.0), pt(549, 880.0, 1598.0)]), &mut out);
        t.flush(&mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].start_frame, out[0].end_frame), (546, 549));
        // Each piece is short (3 detections) and faint (evidence 415 and
        // 917): alone, neither is a meteor; the short-and-faint test comes
        // after the joins.
        let mut t = Tracker::new(TrackParams::default(), 0);
        let mut out = Vec::new();
        t.emit(piece(vec![pt(547, 925.0, 1516.0), pt(548, 900.0, 1472.0), pt(549, 880.0, 1598.0)]), &mut out);
        t.flush(&mut out);
        assert!(out.is_empty(), "{out:?}");
        // After a gap the tracker itself would bridge (3 frames missed): one meteor.
        let mut t = Tracker::new(TrackParams::default(), 0);
        let mut out = Vec::new();
        t.emit(meteor_piece(100..=103, 200.0, 300.0, 30.0, 8.0), &mut out);
        t.emit(meteor_piece(107..=110, 200.0, 300.0, 30.0, 8.0), &mut out);
        t.flush(&mut out);
        assert_eq!(out.len(), 1, "{out:?}");
    }

    #[test]
    fn meteors_that_are_not_one_streak_stay_apart() {
        let pairs = [
            // Same time, crossing at right angles.
            (meteor_piece(100..=104, 200.0, 300.0, 30.0, 0.0), meteor_piece(101..=105, 260.0, 200.0, 0.0, 30.0)),
            // Same line, but the second one goes back the way the first came.
            (meteor_piece(100..=104, 200.0, 300.0, 30.0, 0.0), meteor_piece(105..=109, 450.0, 300.0, -30.0, 0.0)),
            // Same line and direction, but much slower.
            (meteor_piece(100..=104, 200.0, 300.0, 30.0, 0.0), meteor_piece(105..=110, 350.0, 300.0, 8.0, 0.0)),
            // On one line, but 5 frames apart: two meteors.
            (meteor_piece(100..=103, 200.0, 300.0, 30.0, 0.0), meteor_piece(109..=112, 200.0, 300.0, 30.0, 0.0)),
        ];
        for (a, b) in pairs {
            let mut t = Tracker::new(TrackParams::default(), 0);
            let mut out = Vec::new();
            t.emit(a, &mut out);
            t.emit(b, &mut out);
            t.flush(&mut out);
            assert_eq!(out.len(), 2, "{out:?}");
        }
    }

    #[test]
    fn a_meteor_is_held_back_only_while_a_track_could_continue_it() {
        // A meteor, then nothing: reported a few frames after it ended, not at the end of the stream.
        let mut t = Tracker::new(TrackParams::default(), 0);
        let mut out = Vec::new();
        for f in 100..108u64 {
            t.update(f, f, &[det(100.0 + 30.0 * (f - 100) as f32, 200.0, 30)], &mut out);
        }
        let mut reported = None;
        for f in 108..130u64 {
            t.update(f, f, &[], &mut out);
            if !out.is_empty() && reported.is_none() {
                reported = Some(f);
            }
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(reported.unwrap() <= 112, "{reported:?}");
    }
}
