//! Synthetic events for the test pattern (meteors and moving blobs) and their
//! ground truth.
//!
//! Invariants: events never overlap in time; every pixel an event draws lies
//! at `y >= band_h + MARGIN` and at least `MARGIN` pixels from the other
//! edges; the schedule and every event's geometry depend only on the seed,
//! the frame size, `--events` and the effective fps (never on timing or the
//! pixel format). The truth `bbox` is the extent of the pixels actually
//! drawn, tracked while drawing, so it is exact.
#![forbid(unsafe_code)]

use serde::Serialize;

use crate::canvas::Canvas;
use crate::rng::Rng;

/// Distance kept from the status band and the frame edges.
pub const MARGIN: u32 = 8;

/// What an event is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// A fast straight streak from `p0` to `p1`.
    Meteor {
        /// Start of the track.
        p0: (f64, f64),
        /// End of the track.
        p1: (f64, f64),
        /// Line thickness in pixels (2 or 3).
        thick: u32,
        /// Peak gray level.
        peak: u8,
    },
    /// A textured disk moving from `c0` by `vel` per frame.
    Motion {
        /// Centre at the first frame.
        c0: (f64, f64),
        /// Pixels per frame.
        vel: (f64, f64),
        /// Radius in pixels.
        radius: f64,
        /// Base gray level (texture adds ±`TEXTURE`).
        level: u8,
    },
}

const TEXTURE: i16 = 20;

/// One scheduled event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// First frame id.
    pub start: u64,
    /// Number of frames.
    pub frames: u64,
    /// Geometry.
    pub shape: Shape,
    drawn: Option<(u32, u32, u32, u32)>,
    last_drawn: Option<u64>,
    start_capture_ns: u64,
    last_capture_ns: u64,
}

/// One line of the ground-truth file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Truth {
    /// `meteor` or `motion`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// First frame id drawn.
    pub start_frame: u64,
    /// Last frame id drawn (inclusive).
    pub end_frame: u64,
    /// `[x, y, w, h]` of every drawn pixel.
    pub bbox: [u32; 4],
    /// Brightest gray level drawn, before noise.
    pub peak: u8,
    /// Centre line `[x0, y0, x1, y1]`.
    pub track: [f64; 4],
    /// `end_frame - start_frame + 1`.
    pub frames: u64,
    /// The producer stopped before the event ended.
    pub truncated: bool,
    /// Capture time of the first frame (Unix ns).
    pub start_capture_ns: u64,
    /// Capture time of the last frame (Unix ns).
    pub end_capture_ns: u64,
}

impl Event {
    /// Last frame id (inclusive).
    pub fn end(&self) -> u64 {
        self.start + self.frames - 1
    }

    /// Whether frame `id` shows this event.
    pub fn covers(&self, id: u64) -> bool {
        id >= self.start && id <= self.end()
    }

    fn peak(&self) -> u8 {
        match self.shape {
            Shape::Meteor { peak, .. } => peak,
            Shape::Motion { level, .. } => (i16::from(level) + TEXTURE).clamp(0, 255) as u8,
        }
    }

    fn grow(&mut self, x: u32, y: u32) {
        self.drawn = Some(match self.drawn {
            None => (x, y, x, y),
            Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
        });
    }

    /// Draws the event's frame `id` (must be covered) onto `c`.
    pub fn draw(&mut self, c: &mut Canvas<'_>, id: u64, capture_ns: u64) {
        let k = id - self.start;
        if k == 0 {
            self.start_capture_ns = capture_ns;
        }
        self.last_drawn = Some(id);
        self.last_capture_ns = capture_ns;
        match self.shape {
            Shape::Meteor { p0, p1, thick, peak } => {
                let d = self.frames as f64;
                let head = (k as f64 + 1.0) / d;
                // The visible trail is about three frames of travel.
                let tail = (head - 3.0 / d).max(0.0);
                // Fade in and out, never below 45 % of the peak.
                let env = 0.45 + 0.55 * (std::f64::consts::PI * (k as f64 + 0.5) / d).sin();
                let (dx, dy) = (p1.0 - p0.0, p1.1 - p0.1);
                let len = (dx * dx + dy * dy).sqrt() * (head - tail);
                let n = (len * 2.0).ceil() as u64 + 1;
                for i in 0..n {
                    let f = if n > 1 { i as f64 / (n - 1) as f64 } else { 1.0 };
                    let s = tail + (head - tail) * f;
                    let (px, py) = (p0.0 + dx * s, p0.1 + dy * s);
                    let v = (f64::from(peak) * env * (0.75 + 0.25 * f)).round().clamp(0.0, 255.0) as u8;
                    let x0 = (px - f64::from(thick) / 2.0).floor().max(0.0) as u32;
                    let y0 = (py - f64::from(thick) / 2.0).floor().max(0.0) as u32;
                    for yy in y0..y0 + thick {
                        for xx in x0..x0 + thick {
                            c.put_max(xx, yy, v);
                            self.grow(xx, yy);
                        }
                    }
                }
            }
            Shape::Motion { c0, vel, radius, level } => {
                let (cx, cy) = (c0.0 + vel.0 * k as f64, c0.1 + vel.1 * k as f64);
                let cell = (radius / 3.0).max(2.0);
                let x0 = (cx - radius).floor().max(0.0) as u32;
                let y0 = (cy - radius).floor().max(0.0) as u32;
                let x1 = (cx + radius).ceil() as u32;
                let y1 = (cy + radius).ceil() as u32;
                let r2 = radius * radius;
                for y in y0..=y1 {
                    for x in x0..=x1 {
                        let (ox, oy) = (f64::from(x) + 0.5 - cx, f64::from(y) + 0.5 - cy);
                        if ox * ox + oy * oy > r2 {
                            continue;
                        }
                        // The checker moves with the disk: texture a tracker can follow.
                        let odd = (((ox + radius) / cell).floor() as i64 + ((oy + radius) / cell).floor() as i64) & 1;
                        let v = (i16::from(level) + if odd == 1 { TEXTURE } else { -TEXTURE }).clamp(0, 255) as u8;
                        c.put_noisy(x, y, v);
                        self.grow(x, y);
                    }
                }
            }
        }
    }

    /// The ground truth of what was drawn so far; `None` if nothing was.
    pub fn truth(&self) -> Option<Truth> {
        let last = self.last_drawn?;
        let (x0, y0, x1, y1) = self.drawn?;
        let track = match self.shape {
            Shape::Meteor { p0, p1, .. } => [p0.0, p0.1, p1.0, p1.1],
            Shape::Motion { c0, vel, .. } => {
                let k = (self.frames - 1) as f64;
                [c0.0, c0.1, c0.0 + vel.0 * k, c0.1 + vel.1 * k]
            }
        };
        Some(Truth {
            kind: match self.shape {
                Shape::Meteor { .. } => "meteor",
                Shape::Motion { .. } => "motion",
            },
            start_frame: self.start,
            end_frame: last,
            bbox: [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
            peak: self.peak(),
            track: track.map(|v| (v * 10.0).round() / 10.0),
            frames: last - self.start + 1,
            truncated: last != self.end(),
            start_capture_ns: self.start_capture_ns,
            end_capture_ns: self.last_capture_ns,
        })
    }
}

/// The seeded sequence of events.
pub struct Schedule {
    rng: Rng,
    width: f64,
    height: f64,
    area: (f64, f64, f64, f64),
    fps: f64,
    min_gap: u64,
    mean_gap: f64,
    current: Event,
}

/// Mean event length in frames: half meteors (3–15 frames, mean 9), half
/// motion (1–5 s, mean 3 s).
fn mean_duration(fps: f64) -> f64 {
    0.5 * 9.0 + 0.5 * 3.0 * fps
}

impl Schedule {
    /// A schedule of `per_1000` events per 1000 frames on average for a
    /// `width` × `height` frame whose status band is `band_h` rows high.
    /// `fps` is the stream rate (motion lasts 1–5 s of it). Returns the
    /// schedule and, when the rate cannot be met without overlap, the rate
    /// that will be delivered instead.
    pub fn new(seed: u64, width: u32, height: u32, band_h: u32, per_1000: f64, fps: f64) -> (Schedule, Option<f64>) {
        let m = f64::from(MARGIN);
        let area = (m, f64::from(band_h) + m, f64::from(width) - m, f64::from(height) - m);
        let min_gap = ((fps / 2.0).round() as u64).max(15);
        let cycle = 1000.0 / per_1000.max(1e-9);
        let busy = mean_duration(fps) + min_gap as f64;
        let (mean_gap, capped) = if cycle >= busy { (cycle - busy, None) } else { (0.0, Some(1000.0 / busy)) };
        let mut s = Schedule {
            rng: Rng::new(0, 0),
            width: f64::from(width),
            height: f64::from(height),
            area,
            fps,
            min_gap,
            mean_gap,
            current: Event {
                start: 0,
                frames: 1,
                shape: Shape::Motion { c0: (0.0, 0.0), vel: (0.0, 0.0), radius: 0.0, level: 0 },
                drawn: None,
                last_drawn: None,
                start_capture_ns: 0,
                last_capture_ns: 0,
            },
        };
        s.rng = Rng::new(seed, 3);
        // The first event leaves two seconds to learn the background.
        let first = (2.0 * fps).round() as u64 + s.rng.exponential(s.mean_gap) as u64;
        s.current = s.make(first);
        (s, capped)
    }

    /// Whether the frame area outside the band can hold events at all.
    pub fn fits(width: u32, height: u32, band_h: u32) -> bool {
        width >= 4 * MARGIN + 32 && height >= band_h + 4 * MARGIN + 32
    }

    fn make(&mut self, start: u64) -> Event {
        let r = &mut self.rng;
        let (ax0, ay0, ax1, ay1) = self.area;
        let (frames, shape) = if r.f64() < 0.5 {
            let frames = r.range_u64(3, 15);
            let thick = r.range_u64(2, 3) as u32;
            let peak = r.range_u64(200, 255) as u8;
            let diag = (self.width * self.width + self.height * self.height).sqrt();
            let mut len = diag * r.range_f64(0.12, 0.35);
            let theta = r.range_f64(0.0, std::f64::consts::TAU);
            let m = f64::from(thick);
            let (sx, sy) = (r.f64(), r.f64());
            let p0 = loop {
                let (dx, dy) = (len * theta.cos(), len * theta.sin());
                let (lox, hix) = (ax0 + m - dx.min(0.0), ax1 - m - dx.max(0.0));
                let (loy, hiy) = (ay0 + m - dy.min(0.0), ay1 - m - dy.max(0.0));
                if lox < hix && loy < hiy {
                    break (lox + (hix - lox) * sx, loy + (hiy - loy) * sy);
                }
                len *= 0.8;
            };
            let p1 = (p0.0 + len * theta.cos(), p0.1 + len * theta.sin());
            (frames, Shape::Meteor { p0, p1, thick, peak })
        } else {
            let frames = ((self.fps * r.range_f64(1.0, 5.0)).round() as u64).max(2);
            let radius = (self.width * r.range_f64(0.015, 0.04)).max(4.0).min((ay1 - ay0) / 4.0);
            let level = r.range_u64(130, 180) as u8;
            let mut speed = r.range_f64(0.5, 3.0);
            let theta = r.range_f64(0.0, std::f64::consts::TAU);
            let m = radius + 1.0;
            let (sx, sy) = (r.f64(), r.f64());
            let (c0, vel) = loop {
                let len = speed * (frames - 1) as f64;
                let (dx, dy) = (len * theta.cos(), len * theta.sin());
                let (lox, hix) = (ax0 + m - dx.min(0.0), ax1 - m - dx.max(0.0));
                let (loy, hiy) = (ay0 + m - dy.min(0.0), ay1 - m - dy.max(0.0));
                if lox < hix && loy < hiy {
                    let c0 = (lox + (hix - lox) * sx, loy + (hiy - loy) * sy);
                    break (c0, (speed * theta.cos(), speed * theta.sin()));
                }
                speed *= 0.8;
            };
            (frames, Shape::Motion { c0, vel, radius, level })
        };
        Event { start, frames, shape, drawn: None, last_drawn: None, start_capture_ns: 0, last_capture_ns: 0 }
    }

    /// The event showing in frame `id`, if any (frame ids must not go
    /// backwards). The caller reports an event's truth after drawing its last
    /// frame (`id == event.end()`).
    pub fn at(&mut self, id: u64) -> Option<&mut Event> {
        while id > self.current.end() {
            let gap = self.min_gap + self.rng.exponential(self.mean_gap) as u64;
            let next = self.current.end() + 1 + gap;
            self.current = self.make(next);
        }
        if self.current.covers(id) { Some(&mut self.current) } else { None }
    }

    /// The event in progress that was drawn at least once but not to its end
    /// (for the truth file at exit).
    pub fn unfinished(&self) -> Option<Truth> {
        let t = self.current.truth()?;
        t.truncated.then_some(t)
    }
}
