//! The meteor and motion detector: luma read in place → binned grid →
//! background model (running mean, adaptive noise) → k·σ threshold →
//! components → tracks → classified events.
//!
//! The pipeline per frame is split so that the frame's bytes are only touched
//! in [`Detector::load`]; the caller validates the frame after that and calls
//! [`Detector::process`] only for a frame that was intact. Everything after
//! `load` works on the detector's private grid, so an overrun costs nothing
//! but that frame. With snapshots, [`Detector::process_frame`] reads the frame
//! a second time, only when a track reaches a new peak: it copies the
//! full-resolution luma and keeps the copy only if the frame is still intact.
//!
//! ```
//! use shmcast_consumer::detect::{Config, Detector};
//! use shm_proto::{PixelFormat, VideoFormat};
//! let format = VideoFormat::new(320, 240, PixelFormat::Gray8, 30, 1).unwrap();
//! let mut det = Detector::new(&Config::default(), &format).unwrap();
//! let frame = vec![40u8; format.frame_size as usize];
//! let mut events = Vec::new();
//! for id in 0..20 {
//!     assert!(det.load(&frame));
//!     det.process(id, 0, &mut events);
//! }
//! assert!(events.is_empty());
//! ```
#![forbid(unsafe_code)]

pub mod blobs;
pub mod cli;
pub mod event;
pub mod luma;
pub mod mask;
pub mod model;
pub mod mqtt;
pub mod run;
pub mod sink;
pub mod snapshot;
pub mod track;

use anyhow::{Context as _, bail};
use shm_proto::VideoFormat;

pub use event::{ByType, EventRecord, Summary};
pub use luma::{Binner, auto_bin};
pub use model::{Model, ModelParams, Outcome};
pub use track::{Detection, Finished, Kind, TrackParams, Tracker};

use blobs::{BlobParams, Blobs};

/// A rectangle `x, y, w, h` in full-resolution pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

impl std::str::FromStr for Rect {
    type Err = String;
    fn from_str(s: &str) -> Result<Rect, String> {
        let v: Vec<u32> = s
            .split(',')
            .map(|p| p.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("expected x,y,w,h (four non-negative integers), got {s:?}"))?;
        match v[..] {
            [x, y, w, h] if w > 0 && h > 0 => Ok(Rect { x, y, w, h }),
            _ => Err(format!("expected x,y,w,h with w, h > 0, got {s:?}")),
        }
    }
}

/// Detector configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Bin factor (cells are `bin × bin` pixels); 0 = automatic from the width.
    pub bin: u32,
    /// Regions excluded from detection (`--mask`).
    pub masks: Vec<Rect>,
    /// A mask image (`--mask-file`): dark pixels are excluded.
    pub mask_image: Option<std::sync::Arc<mask::MaskImage>>,
    /// Background model tuning.
    pub model: ModelParams,
    /// Component tuning.
    pub blobs: BlobParams,
    /// Tracking and classification tuning.
    pub track: TrackParams,
    /// Keep a full-resolution luma image of each track's peak frame (for `--snapshots`).
    pub snapshots: bool,
}

/// The model's active map (1 = analysed, 0 = masked) for a `gw × gh` grid of
/// `bin`-pixel cells: every cell that a `--mask` rectangle or the producer's
/// overlay touches, or that holds a masked pixel of the mask image, is off.
fn active_map(
    cfg: &Config,
    format: &VideoFormat,
    overlay: Option<shm_proto::Rect>,
    bin: u32,
    gw: usize,
    gh: usize,
) -> Vec<u8> {
    let mut active = vec![1u8; gw * gh];
    let overlay = overlay.map(|o| Rect { x: o.x, y: o.y, w: o.w, h: o.h });
    for m in cfg.masks.iter().chain(overlay.iter()) {
        let (cx0, cy0) = ((m.x / bin) as usize, (m.y / bin) as usize);
        let cx1 = (m.x.saturating_add(m.w).div_ceil(bin) as usize).min(gw);
        let cy1 = (m.y.saturating_add(m.h).div_ceil(bin) as usize).min(gh);
        for cy in cy0.min(gh)..cy1 {
            for cx in cx0.min(gw)..cx1 {
                active[cy * gw + cx] = 0;
            }
        }
    }
    if let Some(img) = &cfg.mask_image {
        let (w, h) = (format.width, format.height);
        for cy in 0..gh {
            for cx in 0..gw {
                let i = cy * gw + cx;
                if active[i] == 0 {
                    continue;
                }
                let masked = (0..bin)
                    .any(|dy| (0..bin).any(|dx| img.masked_at(cx as u32 * bin + dx, cy as u32 * bin + dy, w, h)));
                if masked {
                    active[i] = 0;
                }
            }
        }
    }
    active
}

/// How many tracks can hold a snapshot image at once. Each is a full
/// `width × height` luma buffer (plus one spare for copying), so this bounds
/// the memory: 5 × 8.3 MB at 4K. A track beyond these takes a buffer when one
/// frees up and it reaches a new peak; an event that never got one has none.
pub const SNAPSHOT_SLOTS: usize = 4;

/// A copy of a frame's raw payload at full resolution (for snapshots; the
/// snapshot writer converts it to gray or RGB).
#[derive(Clone, Debug)]
pub struct PeakImage {
    /// Width in pixels (the stream's width).
    pub width: usize,
    /// Height in pixels (the stream's height).
    pub height: usize,
    /// Frame id of the image; `None` while the buffer holds nothing valid.
    pub frame: Option<u64>,
    /// The stream's format (how to read `data`).
    pub format: VideoFormat,
    /// The frame's payload, `format.frame_size` bytes.
    pub data: Vec<u8>,
}

/// The detector for one stream format.
pub struct Detector {
    format: VideoFormat,
    binner: Binner,
    model: Model,
    blobs: Blobs,
    tracker: Tracker,
    cur: Vec<f32>,
    dets: Vec<Detection>,
    finished: Vec<Finished>,
    images: Vec<PeakImage>,
    /// Where a frame is copied before it is known to be intact; swapped with
    /// the track's image when it is (so an overrun keeps the previous peak).
    spare: Vec<u8>,
    /// Copies dropped because the producer overwrote the slot while copying.
    snapshot_overruns: u64,
    /// Whether the "event without snapshot" warning was given.
    warned_no_snapshot: bool,
    loaded: bool,
    last: Option<Outcome>,
    rebaselines: u64,
    busy: u64,
    /// Components found (detections), cumulative.
    detections: u64,
    /// Threshold gain control (see [`NoiseTail`]).
    tail: NoiseTail,
}

/// The seed threshold's adaptation to the noise's tail.
///
/// Compressed video has heavy-tailed noise: a JPEG block or an H.264
/// macroblock that flickers now and then is far more likely than Gaussian
/// noise of the same variance to cross `k·σ`. Instead of assuming a
/// distribution, the detector measures the result: the rate of marginal
/// detections (peak under twice the seed threshold) that no track explains
/// (each starts a new track; real objects start a track once, then are
/// claimed by it, and are mostly far above the threshold). While that rate, per 100 000 cells
/// per frame, is above [`NoiseTail::TARGET`], both thresholds are raised by 1 %
/// per frame (up to ×[`NoiseTail::MAX_GAIN`]); below half of it they relax
/// by 0.5 % per frame, never under the configured `k`. During the first
/// [`NoiseTail::CALIBRATION`] frames after the warm-up nothing is reported
/// and the steps are 5x larger, so the gain has converged before detection starts.
#[derive(Clone, Copy, Debug)]
struct NoiseTail {
    gain: f32,
    rate: f32,
    calibrating: u32,
}

impl NoiseTail {
    /// Unexplained detections per 100 000 cells per frame aimed at.
    const TARGET: f32 = 0.4;
    const MAX_GAIN: f32 = 2.0;
    const CALIBRATION: u32 = 30;

    fn new() -> NoiseTail {
        NoiseTail { gain: 1.0, rate: 0.0, calibrating: NoiseTail::CALIBRATION }
    }

    /// Folds one frame's count of unexplained detections in; returns the new gain.
    fn update(&mut self, unexplained: usize, cells: usize) -> f32 {
        let per = unexplained as f32 * 1e5 / cells.max(1) as f32;
        let fast = self.calibrating > 0;
        self.rate += (if fast { 0.2 } else { 0.02 }) * (per - self.rate);
        let (up, down) = if fast { (1.05, 1.0 / 1.025) } else { (1.01, 1.0 / 1.005) };
        if self.rate > NoiseTail::TARGET {
            self.gain = (self.gain * up).min(NoiseTail::MAX_GAIN);
        } else if self.rate < 0.5 * NoiseTail::TARGET {
            self.gain = (self.gain * down).max(1.0);
        }
        self.gain
    }
}

impl Detector {
    /// A detector for `format` (any raw format) of a stream without an overlay.
    pub fn new(cfg: &Config, format: &VideoFormat) -> anyhow::Result<Detector> {
        Detector::for_stream(cfg, format, None)
    }

    /// A detector for a stream: `format` and the producer's `overlay` region
    /// ([`shm_proto::Reader::overlay`]), which is masked like a `--mask`
    /// rectangle: the producer draws into it, so it is never analysed.
    pub fn for_stream(
        cfg: &Config,
        format: &VideoFormat,
        overlay: Option<shm_proto::Rect>,
    ) -> anyhow::Result<Detector> {
        if format.pixel.is_compressed() {
            bail!(
                "format {} is compressed; the detector needs a raw format (gray8, nv12, i420, yuyv, rgb24, bgr24)",
                format.pixel
            );
        }
        let bin = if cfg.bin == 0 { auto_bin(format.width) } else { cfg.bin };
        let binner = Binner::new(format, bin)
            .with_context(|| format!("frame {}x{} too small for bin {bin}", format.width, format.height))?;
        let (gw, gh) = (binner.gw(), binner.gh());
        let cells = gw * gh;
        let mut model = Model::new(cells, cfg.model.clone());
        let active = active_map(cfg, format, overlay, binner.bin() as u32, gw, gh);
        model.set_active(&active);
        let slots = if cfg.snapshots { SNAPSHOT_SLOTS } else { 0 };
        let (w, h) = (format.width as usize, format.height as usize);
        let size = format.frame_size as usize;
        let images = (0..slots)
            .map(|_| PeakImage { width: w, height: h, frame: None, format: *format, data: vec![0; size] })
            .collect();
        let spare = if cfg.snapshots { vec![0; size] } else { Vec::new() };
        Ok(Detector {
            format: *format,
            model,
            blobs: Blobs::new(cfg.blobs.clone()),
            tracker: Tracker::new(cfg.track.clone(), slots),
            cur: vec![0.0; cells],
            dets: Vec::with_capacity(cfg.blobs.max_blobs),
            finished: Vec::new(),
            images,
            spare,
            snapshot_overruns: 0,
            warned_no_snapshot: false,
            binner,
            loaded: false,
            last: None,
            rebaselines: 0,
            busy: 0,
            detections: 0,
            tail: NoiseTail::new(),
        })
    }

    /// The format this detector was built for.
    pub fn format(&self) -> &VideoFormat {
        &self.format
    }
    /// Grid size `(width, height, bin)`.
    pub fn grid(&self) -> (usize, usize, usize) {
        (self.binner.gw(), self.binner.gh(), self.binner.bin())
    }
    /// Private memory of the detector (model, grid, buffers), in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.binner.memory_bytes()
            + self.model.memory_bytes()
            + self.cur.len() * 4
            + self.blobs.memory_bytes()
            + self.images.iter().map(|i| i.data.len()).sum::<usize>()
            + self.spare.len()
    }
    /// Snapshot copies dropped because the frame was overwritten while copied.
    pub fn snapshot_overruns(&self) -> u64 {
        self.snapshot_overruns
    }
    /// Times the model re-baselined after a whole-frame change (or a too busy frame).
    pub fn rebaselines(&self) -> u64 {
        self.rebaselines + self.busy
    }
    /// Global noise σ of a cell, in luma levels.
    pub fn sigma(&self) -> f32 {
        self.model.sigma()
    }
    /// The factor by which the thresholds are currently raised above `k`
    /// because the noise has a heavy tail (see the module docs).
    pub fn threshold_gain(&self) -> f32 {
        self.tail.gain
    }
    /// Components found so far (candidate detections before tracking).
    pub fn detections(&self) -> u64 {
        self.detections
    }
    /// Active tracks.
    pub fn active_tracks(&self) -> usize {
        self.tracker.active()
    }
    /// The outcome of the last processed frame.
    pub fn last_outcome(&self) -> Option<Outcome> {
        self.last
    }

    /// Reads a frame's luma in place into the grid. The only access to the
    /// frame's bytes; validate the frame after this returns. False when the
    /// payload is too short for the format (nothing is loaded).
    pub fn load(&mut self, frame: &[u8]) -> bool {
        self.loaded = self.binner.bin_frame(frame, &mut self.cur);
        self.loaded
    }

    /// Processes the grid loaded by [`Detector::load`] (call only when the
    /// frame validated); appends events of tracks that ended to `out`. Takes
    /// no snapshot image: see [`Detector::process_frame`].
    pub fn process(&mut self, frame_id: u64, capture_ns: u64, out: &mut Vec<EventRecord>) {
        self.process_frame(frame_id, capture_ns, &[], || false, out);
    }

    /// [`Detector::process`], and with snapshots enabled, when a track reaches
    /// a new peak on this frame: copies `frame`'s full-resolution luma (read
    /// in place again) into that track's image, keeping the copy only if
    /// `intact()` (the frame's post-use validation) still holds afterwards;
    /// otherwise the track keeps its previous peak image.
    pub fn process_frame(
        &mut self,
        frame_id: u64,
        capture_ns: u64,
        frame: &[u8],
        intact: impl Fn() -> bool,
        out: &mut Vec<EventRecord>,
    ) {
        if !std::mem::take(&mut self.loaded) {
            return;
        }
        let outcome = self.model.update(&self.cur);
        self.last = Some(outcome);
        self.dets.clear();
        match outcome {
            Outcome::Detect => {
                let gw = self.binner.gw();
                if self.blobs.find_blobs(&self.model.fg, &self.model.diff, gw) {
                    let b = self.binner.bin() as f32;
                    // Twice the seed threshold, in levels (global σ).
                    let marginal = 2.0 * self.model.seed_threshold() * self.model.sigma();
                    // The noise the threshold is set against, in levels.
                    let noise = self.model.gain() * self.model.threshold_sigma();
                    let bu = self.binner.bin() as u32;
                    let area = b * b;
                    let gh = self.binner.gh();
                    let mut global = false;
                    for bl in &self.blobs.blobs {
                        // A component spanning nearly the whole picture is a
                        // global change (an I-frame that re-quantises the
                        // whole sky), not an object: no meteor, the fastest
                        // being `meteor_max_speed`, smears over that much in one
                        // frame. Measured: the first I-frame after a start
                        // (frame 60 of a static hour) made a 1280x720
                        // component whose track became a `motion` event.
                        if (bl.x1 - bl.x0) as usize * 10 >= 9 * gw && (bl.y1 - bl.y0) as usize * 10 >= 9 * gh {
                            global = true;
                            continue;
                        }
                        self.dets.push(Detection {
                            x: bl.cx * b,
                            y: bl.cy * b,
                            bbox: [bl.x0 * bu, bl.y0 * bu, (bl.x1 - bl.x0) * bu, (bl.y1 - bl.y0) * bu],
                            sum: bl.sum * area,
                            peak: bl.peak,
                            // A couple of changing cells: not just noise on a still region.
                            moving: bl.moving >= 2,
                            marginal: bl.peak < marginal,
                            evidence: bl.sum / noise,
                        });
                    }
                    if global {
                        self.busy += 1;
                    }
                } else {
                    // Too much foreground to be objects: treat as a scene change.
                    self.busy += 1;
                }
            }
            Outcome::Rebaseline => {
                self.rebaselines += 1;
                // What was being tracked is no longer comparable.
                self.tracker.flush(&mut self.finished);
            }
            Outcome::Warmup => {}
        }
        self.detections += self.dets.len() as u64;
        let calibrating = outcome == Outcome::Detect && self.tail.calibrating > 0;
        if calibrating {
            // Calibrating the noise tail: every detection is unexplained;
            // nothing is tracked or reported yet.
            self.tail.calibrating -= 1;
            let unexplained = self.dets.iter().filter(|d| d.marginal).count();
            let g = self.tail.update(unexplained, self.model.active_cells());
            self.model.set_gain(g);
            self.dets.clear();
        }
        self.tracker.update(frame_id, capture_ns, &self.dets, &mut self.finished);
        if outcome == Outcome::Detect && !calibrating {
            let g = self.tail.update(self.tracker.started, self.model.active_cells());
            self.model.set_gain(g);
        }
        for &slot in &self.tracker.acquired {
            // A buffer taken over from an earlier track holds its image.
            self.images[slot].frame = None;
        }
        self.capture(frame_id, frame, intact);
        self.drain(out);
    }

    /// Copies the frame into the images of the tracks that peaked on it (one
    /// copy of the frame, however many tracks).
    fn capture(&mut self, frame_id: u64, frame: &[u8], intact: impl Fn() -> bool) {
        let Some((&first, rest)) = self.tracker.refresh.split_first() else { return };
        if frame.is_empty() {
            return;
        }
        // The raw payload, one memcpy; the writer thread converts it.
        let Some(src) = frame.get(..self.spare.len()) else { return };
        self.spare.copy_from_slice(src);
        if !intact() {
            // The producer overwrote the slot while we copied: the copy may
            // mix two frames. Keep the previous peak.
            self.snapshot_overruns += 1;
            return;
        }
        std::mem::swap(&mut self.spare, &mut self.images[first].data);
        self.images[first].frame = Some(frame_id);
        let img = std::mem::take(&mut self.images[first].data);
        for &s in rest {
            self.images[s].data.copy_from_slice(&img);
            self.images[s].frame = Some(frame_id);
        }
        self.images[first].data = img;
    }

    fn drain(&mut self, out: &mut Vec<EventRecord>) {
        for f in self.finished.drain(..) {
            let image = f.snapshot.and_then(|s| {
                self.tracker.release_snapshot_slot(s);
                // NB: a clone per event (not per frame): the buffer stays with the detector.
                self.images[s].frame.map(|_| self.images[s].clone())
            });
            if image.is_none() && !self.images.is_empty() && !self.warned_no_snapshot {
                self.warned_no_snapshot = true;
                tracing::warn!(
                    start_frame = f.start_frame,
                    "event without snapshot: more than {SNAPSHOT_SLOTS} tracks at once, or its frames were \
                     overwritten while copied (logged once)"
                );
            }
            out.push(EventRecord::new(f, image));
        }
    }

    /// Ends all tracks (producer gone, exit) and appends their events to `out`.
    pub fn flush(&mut self, out: &mut Vec<EventRecord>) {
        self.tracker.flush(&mut self.finished);
        self.drain(out);
    }

    /// Flushes tracks and forgets the background (a new producer).
    pub fn reset(&mut self, out: &mut Vec<EventRecord>) {
        self.flush(out);
        self.model.reset();
        self.tail = NoiseTail::new();
        self.model.set_gain(1.0);
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_proto::PixelFormat;

    /// A synthetic night sky: gradient + noise; `draw` adds objects.
    fn frames(
        format: &VideoFormat,
        n: u64,
        noise: f32,
        draw: impl Fn(u64, usize, usize) -> f32,
    ) -> impl Iterator<Item = (u64, Vec<u8>)> {
        let (w, h) = (format.width as usize, format.height as usize);
        let size = format.frame_size as usize;
        let mut rng = 0x1234_5678_9abc_def1u64;
        (0..n).map(move |id| {
            let mut buf = vec![0u8; size];
            for y in 0..h {
                for x in 0..w {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    // Sum of 4 uniforms: roughly Gaussian, σ ≈ 1.
                    let u = (0..4).map(|k| ((rng >> (16 * k)) & 0xffff) as f32 / 65536.0).sum::<f32>() - 2.0;
                    let v = 30.0 + 20.0 * y as f32 / h as f32 + noise * u * 1.73 + draw(id, x, y);
                    buf[y * w + x] = v.clamp(0.0, 255.0) as u8;
                }
            }
            (id, buf)
        })
    }

    fn run(det: &mut Detector, it: impl Iterator<Item = (u64, Vec<u8>)>) -> Vec<EventRecord> {
        let mut out = Vec::new();
        for (id, f) in it {
            assert!(det.load(&f));
            det.process_frame(id, id * 33_000_000, &f, || true, &mut out);
        }
        det.flush(&mut out);
        out
    }

    #[test]
    fn meteor_and_motion_on_a_noisy_sky() {
        let format = VideoFormat::new(320, 240, PixelFormat::Gray8, 30, 1).unwrap();
        let mut det = Detector::new(&Config { snapshots: true, ..Config::default() }, &format).unwrap();
        let events = run(
            &mut det,
            frames(&format, 200, 3.0, |id, x, y| {
                let (x, y) = (x as f32, y as f32);
                // A meteor: frames 70..78 (after the warm-up and the noise
                // calibration), a 3 px thick streak moving 20 px/frame.
                let meteor = if (70..78).contains(&id) {
                    let head = 20.0 + 20.0 * (id - 70) as f32;
                    let on = (y - (60.0 + 0.3 * x)).abs() < 1.5 && x > head - 25.0 && x <= head;
                    if on { 150.0 } else { 0.0 }
                } else {
                    0.0
                };
                // A blob (not a point of light: 32 px): frames 110..190, moving 1 px/frame.
                let blob = if (110..190).contains(&id) {
                    let cx = 100.0 + (id - 110) as f32;
                    if (x - cx).hypot(y - 170.0) < 16.0 { 90.0 } else { 0.0 }
                } else {
                    0.0
                };
                meteor + blob
            }),
        );
        assert_eq!(events.len(), 2, "{events:?}");
        let (m, b) = (&events[0], &events[1]);
        assert_eq!(m.kind, Kind::Meteor);
        assert!(m.start_frame >= 70 && m.end_frame <= 78, "{m:?}");
        assert!(m.speed > 15.0 && m.speed < 25.0, "{m:?}");
        assert_eq!(b.kind, Kind::Motion);
        assert!(b.start_frame <= 112 && b.end_frame >= 188, "{b:?}");
        let [x, y, w, h] = b.bbox;
        assert!(x <= 86 && x + w >= 194 && y <= 156 && y + h >= 184, "{b:?}");
        // Snapshots: the peak frame's full-resolution image was kept, and
        // the object is in it, inside the event's box.
        for ev in [m, b] {
            let img = ev.image.as_ref().expect("snapshot image");
            assert_eq!((img.width, img.height, img.data.len()), (320, 240, 320 * 240));
            let luma = snapshot::render(img).pixels;
            assert_eq!(img.frame, Some(ev.peak_frame), "{ev:?}");
            let [x, y, w, h] = ev.bbox.map(|v| v as usize);
            let inside = (y..y + h).flat_map(|yy| (x..x + w).map(move |xx| (xx, yy)));
            let brightest = inside.map(|(xx, yy)| luma[yy * 320 + xx]).max().unwrap();
            assert!(brightest > 100, "{brightest} in {:?}", ev.bbox);
        }
    }

    #[test]
    fn snapshot_copy_of_an_overwritten_frame_is_dropped() {
        let format = VideoFormat::new(320, 240, PixelFormat::Gray8, 30, 1).unwrap();
        let mut det = Detector::new(&Config { snapshots: true, ..Config::default() }, &format).unwrap();
        // A blob moving 2 px/frame, growing: every frame is a new peak.
        let blob = |id: u64, x: usize, y: usize| {
            // Detection starts after the warm-up and the noise calibration (50 frames).
            let (cx, r) = (2.0 * id as f32 - 60.0, 0.2 * id as f32 - 8.0);
            if id >= 60 && (x as f32 - cx).hypot(y as f32 - 120.0) < r { 120.0 } else { 0.0 }
        };
        let mut out = Vec::new();
        for (id, f) in frames(&format, 100, 2.0, blob) {
            assert!(det.load(&f));
            // From frame 80 on, every copy is "overwritten" while read.
            det.process_frame(id, 0, &f, || id < 80, &mut out);
        }
        det.flush(&mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        let ev = &out[0];
        assert!(ev.peak_frame >= 90, "{ev:?}");
        // The last intact copy is kept, not a torn one.
        assert_eq!(ev.image.as_ref().and_then(|i| i.frame), Some(79), "{ev:?}");
        // One per new peak from frame 80 on (nearly every frame: the blob grows).
        assert!((15..=20).contains(&det.snapshot_overruns()), "{}", det.snapshot_overruns());
        // Without snapshots nothing is copied or kept.
        let mut det = Detector::new(&Config::default(), &format).unwrap();
        let mut out = Vec::new();
        for (id, f) in frames(&format, 100, 2.0, blob) {
            assert!(det.load(&f));
            det.process_frame(id, 0, &f, || true, &mut out);
        }
        det.flush(&mut out);
        assert!(out.len() == 1 && out[0].image.is_none(), "{out:?}");
        assert_eq!(det.memory_bytes(), Detector::new(&Config::default(), &format).unwrap().memory_bytes());
    }

    #[test]
    fn lights_switching_rebaselines_without_events() {
        let format = VideoFormat::new(320, 240, PixelFormat::Gray8, 30, 1).unwrap();
        let mut det = Detector::new(&Config::default(), &format).unwrap();
        let events = run(&mut det, frames(&format, 120, 3.0, |id, _, y| if id >= 50 && y > 40 { 60.0 } else { 0.0 }));
        assert!(events.is_empty(), "{events:?}");
        assert!(det.rebaselines() >= 1);
    }

    #[test]
    fn a_change_spanning_the_whole_picture_is_no_object() {
        // As an I-frame re-quantising the whole sky: for four frames a
        // thin outline around the picture brightens — too few cells for a
        // global rebaseline, but one component the size of the picture.
        let format = VideoFormat::new(320, 240, PixelFormat::Gray8, 30, 1).unwrap();
        let mut det = Detector::new(&Config::default(), &format).unwrap();
        let outline = |id: u64, x: usize, y: usize| {
            let edge = x == 2 || x == 317 || y == 2 || y == 237;
            if (60..64).contains(&id) && edge { 60.0 } else { 0.0 }
        };
        let events = run(&mut det, frames(&format, 100, 2.0, outline));
        assert!(events.is_empty(), "{events:?}");
        assert!(det.rebaselines() >= 1, "no frame was taken for a global change");
    }

    #[test]
    fn masked_region_is_ignored() {
        let format = VideoFormat::new(320, 240, PixelFormat::Gray8, 30, 1).unwrap();
        let cfg = Config { masks: vec!["0,0,320,40".parse().unwrap()], ..Config::default() };
        let mut det = Detector::new(&cfg, &format).unwrap();
        // A bar sweeping through the masked band every frame.
        let bar = |id: u64, x: usize, y: usize| {
            if y < 32 && (x as u64 + 300 - 3 * id % 300) % 300 < 12 { 150.0 } else { 0.0 }
        };
        let events = run(&mut det, frames(&format, 120, 2.0, bar));
        assert!(events.is_empty(), "{events:?}");
        // Without the mask the bar is motion.
        let mut det = Detector::new(&Config::default(), &format).unwrap();
        assert!(!run(&mut det, frames(&format, 120, 2.0, bar)).is_empty());
    }

    #[test]
    fn overlay_and_mask_image_are_ignored() {
        let format = VideoFormat::new(320, 240, PixelFormat::Gray8, 30, 1).unwrap();
        // A bar sweeping through the top band every frame, as a producer's status band does.
        let bar = |id: u64, x: usize, y: usize| {
            if y < 32 && (x as u64 + 300 - 3 * id % 300) % 300 < 12 { 150.0 } else { 0.0 }
        };
        let overlay = Some(shm_proto::Rect::new(0, 0, 320, 40));
        let mut det = Detector::for_stream(&Config::default(), &format, overlay).unwrap();
        assert!(run(&mut det, frames(&format, 120, 2.0, bar)).is_empty());
        // The same band painted black in a (smaller) mask image.
        let masked = (0..16 * 12).map(|i| i / 16 < 2).collect();
        let img = mask::MaskImage { width: 16, height: 12, masked };
        let cfg = Config { mask_image: Some(std::sync::Arc::new(img)), ..Config::default() };
        let mut det = Detector::new(&cfg, &format).unwrap();
        assert!(run(&mut det, frames(&format, 120, 2.0, bar)).is_empty());
        // Neither: the bar is motion.
        let mut det = Detector::new(&Config::default(), &format).unwrap();
        assert!(!run(&mut det, frames(&format, 120, 2.0, bar)).is_empty());
    }

    #[test]
    fn rects_parse() {
        assert_eq!("1, 2,3,4".parse::<Rect>().unwrap(), Rect { x: 1, y: 2, w: 3, h: 4 });
        assert!("1,2,3".parse::<Rect>().is_err());
        assert!("1,2,0,4".parse::<Rect>().is_err());
        assert!("a,2,3,4".parse::<Rect>().is_err());
    }
}
