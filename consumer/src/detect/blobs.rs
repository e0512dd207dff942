//! Connected components of the foreground map, found from horizontal runs.
//!
//! The foreground is sparse (whole-frame changes are handled before this), so
//! the map is scanned for non-zero 16-cell blocks, turned into runs, and runs
//! touching runs of the previous row (8-connectivity, plus a small gap
//! tolerance so a streak broken by noise stays one piece) are joined with
//! union–find. Components are then filtered (despeckle: enough cells and at
//! least one strong cell) and nearby ones merged. Every buffer is allocated
//! once with a fixed capacity; a frame that would overflow it is reported as
//! too busy (the caller treats it like a whole-frame change).
#![forbid(unsafe_code)]

use super::model::{LEVEL, MOVING, STRONG};

/// One component, in grid cells.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Blob {
    /// Cells.
    pub cells: u32,
    /// Cells above the strong threshold.
    pub strong: u32,
    /// Cells that changed since the previous frame.
    pub moving: u32,
    /// Bounding box, inclusive-exclusive: `x0..x1`, `y0..y1`.
    pub x0: u32,
    /// See `x0`.
    pub y0: u32,
    /// See `x0`.
    pub x1: u32,
    /// See `x0`.
    pub y1: u32,
    /// Sum of |difference| over the cells (luma levels × cells).
    pub sum: f32,
    /// Weighted centroid (cell units, cell centres at +0.5).
    pub cx: f32,
    /// See `cx`.
    pub cy: f32,
    /// Largest |difference| of a cell.
    pub peak: f32,
}

impl Blob {
    fn merge(&mut self, o: &Blob) {
        let s = self.sum + o.sum;
        if s > 0.0 {
            self.cx = (self.cx * self.sum + o.cx * o.sum) / s;
            self.cy = (self.cy * self.sum + o.cy * o.sum) / s;
        }
        self.sum = s;
        self.cells += o.cells;
        self.strong += o.strong;
        self.moving += o.moving;
        self.x0 = self.x0.min(o.x0);
        self.y0 = self.y0.min(o.y0);
        self.x1 = self.x1.max(o.x1);
        self.y1 = self.y1.max(o.y1);
        self.peak = self.peak.max(o.peak);
    }

    fn near(&self, o: &Blob, gap: u32) -> bool {
        self.x0 <= o.x1 + gap && o.x0 <= self.x1 + gap && self.y0 <= o.y1 + gap && o.y0 <= self.y1 + gap
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Run {
    y: u32,
    x0: u32,
    x1: u32,
}

/// Tuning of the component step.
#[derive(Clone, Debug)]
pub struct BlobParams {
    /// Smallest component kept, in cells.
    pub min_cells: u32,
    /// Components closer than this many cells are merged.
    pub gap: u32,
    /// Most runs per frame before the frame counts as too busy.
    pub max_runs: usize,
    /// Most components reported per frame (the strongest are kept).
    pub max_blobs: usize,
}

impl Default for BlobParams {
    fn default() -> Self {
        BlobParams { min_cells: 2, gap: 2, max_runs: 16384, max_blobs: 64 }
    }
}

/// Reusable buffers of the component step.
pub struct Blobs {
    p: BlobParams,
    runs: Vec<Run>,
    parent: Vec<u32>,
    slot: Vec<u32>,
    raw: Vec<Blob>,
    /// Components of the last frame, strongest first.
    pub blobs: Vec<Blob>,
}

impl Blobs {
    /// Buffers for the given limits.
    pub fn new(p: BlobParams) -> Blobs {
        Blobs {
            runs: Vec::with_capacity(p.max_runs),
            parent: Vec::with_capacity(p.max_runs),
            slot: Vec::with_capacity(p.max_runs),
            raw: Vec::with_capacity(p.max_runs),
            blobs: Vec::with_capacity(p.max_blobs),
            p,
        }
    }

    /// Bytes of private memory.
    pub fn memory_bytes(&self) -> usize {
        self.runs.capacity() * std::mem::size_of::<Run>()
            + (self.parent.capacity() + self.slot.capacity()) * 4
            + (self.raw.capacity() + self.blobs.capacity()) * std::mem::size_of::<Blob>()
    }

    fn find(&mut self, mut i: u32) -> u32 {
        while self.parent[i as usize] != i {
            let p = self.parent[self.parent[i as usize] as usize];
            self.parent[i as usize] = p;
            i = p;
        }
        i
    }

    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi as usize] = lo;
        }
    }

    /// Finds the components of `fg` (`gw` cells wide), weighting cells by
    /// `|diff|`. Returns false when the frame is too busy (too many runs).
    pub fn find_blobs(&mut self, fg: &[u8], diff: &[f32], gw: usize) -> bool {
        self.runs.clear();
        self.parent.clear();
        self.blobs.clear();
        let gap = self.p.gap as usize;
        let mut prev = 0..0;
        for (y, row) in fg.chunks_exact(gw).enumerate() {
            let row_start = self.runs.len();
            let mut x = 0;
            while x < gw {
                // Skip empty 16-cell blocks quickly.
                if x + 16 <= gw && row[x..x + 16].iter().fold(0u8, |a, &b| a | b) == 0 {
                    x += 16;
                    continue;
                }
                if row[x] == 0 {
                    x += 1;
                    continue;
                }
                let x0 = x;
                let mut end = x + 1;
                // Extend over set cells and over gaps of up to `gap` cells.
                let mut i = end;
                while i < gw && i <= end + gap {
                    if row[i] != 0 {
                        end = i + 1;
                    }
                    i += 1;
                }
                if self.runs.len() == self.p.max_runs {
                    return false;
                }
                let id = self.runs.len() as u32;
                self.runs.push(Run { y: y as u32, x0: x0 as u32, x1: end as u32 });
                self.parent.push(id);
                // 8-connectivity with the previous row, widened by the gap.
                for j in prev.clone() {
                    let p = self.runs[j];
                    if p.x0 as usize <= end + gap && x0 <= p.x1 as usize + gap {
                        self.union(id, j as u32);
                    }
                }
                x = end;
            }
            prev = row_start..self.runs.len();
        }

        // One raw component per root run, accumulated over its cells.
        self.raw.clear();
        self.slot.clear();
        self.slot.resize(self.runs.len(), u32::MAX);
        for i in 0..self.runs.len() {
            let root = self.find(i as u32) as usize;
            if self.slot[root] == u32::MAX {
                self.slot[root] = self.raw.len() as u32;
                self.raw.push(Blob { x0: u32::MAX, y0: u32::MAX, ..Blob::default() });
            }
            let b = &mut self.raw[self.slot[root] as usize];
            let r = self.runs[i];
            let base = r.y as usize * gw;
            let (mut sx, mut sy) = (b.cx * b.sum, b.cy * b.sum);
            for x in r.x0..r.x1 {
                let v = fg[base + x as usize];
                if v == 0 {
                    continue;
                }
                let w = diff[base + x as usize].abs();
                b.cells += 1;
                b.strong += u32::from(v & LEVEL == STRONG);
                b.moving += u32::from(v & MOVING != 0);
                b.sum += w;
                sx += w * (x as f32 + 0.5);
                sy += w * (r.y as f32 + 0.5);
                b.peak = b.peak.max(w);
            }
            if b.sum > 0.0 {
                b.cx = sx / b.sum;
                b.cy = sy / b.sum;
            }
            b.x0 = b.x0.min(r.x0);
            b.x1 = b.x1.max(r.x1);
            b.y0 = b.y0.min(r.y);
            b.y1 = b.y1.max(r.y + 1);
        }

        // Merge components that are close (a streak or body split in pieces).
        let mut i = 0;
        while i < self.raw.len() {
            let mut j = i + 1;
            let mut merged = false;
            while j < self.raw.len() {
                if self.raw[i].near(&self.raw[j], self.p.gap) {
                    let o = self.raw.swap_remove(j);
                    self.raw[i].merge(&o);
                    merged = true;
                } else {
                    j += 1;
                }
            }
            if !merged {
                i += 1;
            }
        }

        // Despeckle, keep the strongest.
        for b in &self.raw {
            if b.cells >= self.p.min_cells && b.strong > 0 {
                self.blobs.push(*b);
            }
        }
        self.blobs.sort_unstable_by(|a, b| b.sum.total_cmp(&a.sum));
        self.blobs.truncate(self.p.max_blobs);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::model::WEAK;

    #[test]
    fn finds_separate_blobs_and_drops_specks() {
        let (w, h) = (64, 32);
        let mut fg = vec![0u8; w * h];
        let diff = vec![10.0f32; w * h];
        // A 4x3 blob with one strong cell.
        for y in 5..8 {
            for x in 10..14 {
                fg[y * w + x] = WEAK;
            }
        }
        fg[6 * w + 11] = STRONG;
        // A diagonal streak (8-connected), all strong.
        for i in 0..10 {
            fg[(15 + i) * w + 30 + i] = STRONG;
        }
        // Specks: a lone strong cell, a weak pair.
        fg[2 * w + 50] = STRONG;
        fg[28 * w + 5] = WEAK;
        fg[28 * w + 6] = WEAK;
        let mut b = Blobs::new(BlobParams::default());
        assert!(b.find_blobs(&fg, &diff, w));
        assert_eq!(b.blobs.len(), 2, "{:?}", b.blobs);
        let streak = *b.blobs.iter().find(|b| b.x0 == 30).unwrap();
        assert_eq!((streak.x0, streak.y0, streak.x1, streak.y1, streak.cells), (30, 15, 40, 25, 10));
        let blob = *b.blobs.iter().find(|b| b.x0 == 10).unwrap();
        assert_eq!((blob.x0, blob.y0, blob.x1, blob.y1, blob.cells), (10, 5, 14, 8, 12));
        assert!((blob.cx - 12.0).abs() < 1e-4 && (blob.cy - 6.5).abs() < 1e-4);
    }

    #[test]
    fn small_gaps_are_bridged() {
        let w = 40;
        let mut fg = vec![0u8; w * 4];
        let diff = vec![5.0f32; w * 4];
        fg[w + 3..w + 8].fill(STRONG);
        fg[w + 10..w + 15].fill(STRONG);
        let mut b = Blobs::new(BlobParams::default());
        assert!(b.find_blobs(&fg, &diff, w));
        assert_eq!(b.blobs.len(), 1);
        assert_eq!(b.blobs[0].cells, 10);
    }

    #[test]
    fn too_busy_is_reported() {
        let w = 64;
        let fg: Vec<u8> = (0..w * 64).map(|i| if i % 8 == 0 { STRONG } else { 0 }).collect();
        let diff = vec![5.0f32; w * 64];
        let mut b = Blobs::new(BlobParams { max_runs: 100, ..BlobParams::default() });
        assert!(!b.find_blobs(&fg, &diff, w));
    }
}
