//! The reader's cursor over a ring: which frame to hand out next, how many
//! were lost, and whether the producer's words still make sense.
//!
//! This is the code both the real [`crate::Reader`] and the loom model
//! (`tests/loom.rs`) run: it sees the ring only through [`RingView`], which the
//! shared mapping and the model's in-process ring both implement.
//!
//! Invariants, whatever another process writes into the segment:
//! - every call does bounded work: at most `slots + 2` slot inspections, and the
//!   cursor is clamped to `head - slots` before any loop, so a `head` of
//!   `u64::MAX` costs the same as a `head` of 10;
//! - the cursor only moves forward, and every sequence it passes over is either
//!   handed out (`frames`) or counted (`lost`): `frames + lost == cursor - start`;
//! - a `head` beyond [`MAX_SEQ`] or below one seen before is corruption, reported,
//!   never used as a loop count.
#![forbid(unsafe_code)]

use crate::meta::FrameMeta;
use crate::seq::{self, SlotState};
use crate::sync::{AtomicU32, AtomicU64};

/// Largest sequence number a real producer can reach: at a million frames a
/// second, 2^62 frames take 146,000 years. A larger `head` is corruption.
pub const MAX_SEQ: u64 = 1 << 62;

/// The words of a ring a reader looks at. Implemented by the shared mapping
/// and by the loom model.
pub trait RingView {
    /// Slot count: a power of two ≥ 2 (validated when the segment was opened).
    fn slots(&self) -> u64;
    /// The `head` word.
    fn head(&self) -> &AtomicU64;
    /// The seqlock word of slot `slot` (`0..slots`).
    fn slot_seq(&self, slot: u64) -> &AtomicU64;
    /// The metadata of slot `slot` (validated by the caller afterwards).
    fn load_meta(&self, slot: u64) -> FrameMeta;
    /// The producer state word.
    fn state(&self) -> &AtomicU32;
}

/// Where a reader that the producer has lapped lands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lapped {
    /// The newest committed frame: the one the producer will overwrite last,
    /// so a slow reader still gets intact frames under overload (live consumers).
    #[default]
    Newest,
    /// The oldest frame still in the ring: loses the fewest frames, but that is
    /// the slot the producer overwrites next, so under overload most reads tear.
    Oldest,
}

/// What [`Cursor::available`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Avail {
    /// A frame past the cursor has been published.
    Ready,
    /// Nothing new.
    Empty,
    /// The segment's words break the ring protocol.
    Corrupt(&'static str),
}

/// A reader's position and counters. Lives in the reader's own memory.
#[derive(Clone, Debug)]
pub struct Cursor {
    pos: u64,
    frames: u64,
    lost: u64,
    last_head: u64,
    corrupt: Option<&'static str>,
}

impl Cursor {
    /// A cursor at sequence `pos` (clamped to [`MAX_SEQ`]).
    pub fn new(pos: u64) -> Cursor {
        let pos = pos.min(MAX_SEQ);
        Cursor { pos, frames: 0, lost: 0, last_head: pos, corrupt: None }
    }

    /// The next sequence this cursor will look at.
    pub fn pos(&self) -> u64 {
        self.pos
    }
    /// Frames handed out.
    pub fn frames(&self) -> u64 {
        self.frames
    }
    /// Frames skipped: overwritten before this reader got to them, or skipped
    /// to land on the newest frame.
    pub fn lost(&self) -> u64 {
        self.lost
    }
    /// Why the segment was found corrupt, once it was.
    pub fn corrupt(&self) -> Option<&'static str> {
        self.corrupt
    }

    fn check_head(&self, h: u64) -> Result<u64, &'static str> {
        if let Some(why) = self.corrupt {
            Err(why)
        } else if h > MAX_SEQ {
            Err("head is beyond any real sequence number")
        } else if h < self.last_head {
            Err("head went backwards")
        } else {
            Ok(h)
        }
    }

    fn head<V: RingView>(&mut self, v: &V) -> Option<u64> {
        match self.check_head(seq::load_head(v.head())) {
            Ok(h) => {
                self.last_head = h;
                Some(h)
            }
            Err(why) => {
                self.corrupt = Some(why);
                None
            }
        }
    }

    fn skip_to(&mut self, s: u64) {
        if s > self.pos {
            self.lost = self.lost.saturating_add(s - self.pos);
            self.pos = s;
        }
    }

    /// Whether a frame past the cursor is there. Loads `head` (Acquire).
    pub fn available<V: RingView>(&self, v: &V) -> Avail {
        match self.check_head(seq::load_head(v.head())) {
            Ok(h) if h > self.pos => Avail::Ready,
            Ok(_) => Avail::Empty,
            Err(why) => Avail::Corrupt(why),
        }
    }

    /// Moves to the next frame that can be handed out; returns its sequence,
    /// its metadata (intact when loaded) and how many frames were skipped to
    /// get there. `None`: nothing to hand out now (or the segment is corrupt:
    /// see [`Cursor::corrupt`]).
    pub fn advance<V: RingView>(&mut self, v: &V, lapped: Lapped) -> Option<(u64, FrameMeta, u64)> {
        let mut head = self.head(v)?;
        let slots = v.slots();
        let start = self.pos;
        // Every pass moves `pos` forward by at least one or returns, and after
        // the clamp at most `slots` sequences separate `pos` from `head`, so
        // this bound is never what ends a well-formed ring's loop.
        for _ in 0..slots.saturating_add(2) {
            if self.pos >= head {
                return None;
            }
            let oldest = head.saturating_sub(slots);
            if self.pos < oldest {
                self.skip_to(match lapped {
                    Lapped::Newest => head - 1,
                    Lapped::Oldest => oldest,
                });
            }
            let s = self.pos;
            let slot = s & (slots - 1);
            match seq::check(v.slot_seq(slot), s) {
                SlotState::Ready => {
                    let meta = v.load_meta(slot);
                    if seq::validate(v.slot_seq(slot), s) {
                        self.pos = s + 1;
                        self.frames += 1;
                        return Some((s, meta, s - start));
                    }
                    // Overwritten while the metadata was read: lapped.
                    self.skip_to(s + 1);
                    head = self.head(v)?;
                }
                SlotState::Overwritten => {
                    // The producer lapped us since `head` was loaded.
                    self.skip_to(s + 1);
                    head = self.head(v)?;
                }
                // `head > s` was published after `committed(s)` (SYNC(head)), so
                // a smaller or in-progress word here is not a ring behaving:
                // skip the slot (counted), never wait on it.
                SlotState::NotYet => self.skip_to(s + 1),
            }
        }
        None
    }

    /// Skips to the newest published frame (counting what it passes as lost)
    /// and hands it out like [`Cursor::advance`].
    pub fn latest<V: RingView>(&mut self, v: &V) -> Option<(u64, FrameMeta, u64)> {
        let head = self.head(v)?;
        if head == 0 || head <= self.pos {
            return None;
        }
        let start = self.pos;
        self.skip_to(head - 1);
        self.advance(v, Lapped::Newest).map(|(s, m, _)| (s, m, s - start))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    struct Fake {
        head: AtomicU64,
        seqs: Vec<AtomicU64>,
        state: AtomicU32,
    }

    impl Fake {
        fn new(slots: usize) -> Fake {
            Fake {
                head: AtomicU64::new(0),
                seqs: (0..slots).map(|_| AtomicU64::new(0)).collect(),
                state: AtomicU32::new(2),
            }
        }
        fn publish(&self, s: u64) {
            let slot = (s as usize) & (self.seqs.len() - 1);
            self.seqs[slot].store(seq::committed(s), Ordering::Relaxed);
            self.head.store(s + 1, Ordering::Relaxed);
        }
    }

    impl RingView for Fake {
        fn slots(&self) -> u64 {
            self.seqs.len() as u64
        }
        fn head(&self) -> &AtomicU64 {
            &self.head
        }
        fn slot_seq(&self, slot: u64) -> &AtomicU64 {
            &self.seqs[slot as usize]
        }
        fn load_meta(&self, slot: u64) -> FrameMeta {
            FrameMeta::new(slot, 0, 0)
        }
        fn state(&self) -> &AtomicU32 {
            &self.state
        }
    }

    #[test]
    fn in_order_then_lapped_to_newest_with_exact_losses() {
        let f = Fake::new(4);
        let mut c = Cursor::new(0);
        f.publish(0);
        assert_eq!(c.advance(&f, Lapped::Newest).map(|x| x.0), Some(0));
        for s in 1..=10 {
            f.publish(s);
        }
        let (s, _, lost) = c.advance(&f, Lapped::Newest).unwrap();
        assert_eq!((s, lost), (10, 9));
        assert_eq!(c.frames() + c.lost(), 11);
    }

    #[test]
    fn lapped_to_oldest() {
        let f = Fake::new(4);
        let mut c = Cursor::new(0);
        for s in 0..=10 {
            f.publish(s);
        }
        let (s, _, lost) = c.advance(&f, Lapped::Oldest).unwrap();
        assert_eq!((s, lost), (7, 7));
    }

    #[test]
    fn hostile_words_cost_bounded_work_and_are_reported() {
        // head = u64::MAX, every slot word u64::MAX: corrupt at once.
        let f = Fake::new(4);
        f.head.store(u64::MAX, Ordering::Relaxed);
        for w in &f.seqs {
            w.store(u64::MAX, Ordering::Relaxed);
        }
        let mut c = Cursor::new(0);
        assert!(c.advance(&f, Lapped::Newest).is_none());
        assert!(c.corrupt().is_some());
        assert!(matches!(c.available(&f), Avail::Corrupt(_)));

        // A plausible head but every slot stuck "being written" or garbage:
        // skipped (counted), bounded, never waited on.
        let f = Fake::new(4);
        f.head.store(1000, Ordering::Relaxed);
        for (i, w) in f.seqs.iter().enumerate() {
            w.store(if i % 2 == 0 { seq::writing(999) } else { u64::MAX }, Ordering::Relaxed);
        }
        let mut c = Cursor::new(0);
        assert!(c.advance(&f, Lapped::Newest).is_none());
        assert_eq!(c.pos(), 1000);
        assert_eq!(c.lost(), 1000);
        assert_eq!(c.available(&f), Avail::Empty);

        // head going backwards.
        f.head.store(10, Ordering::Relaxed);
        assert!(matches!(c.available(&f), Avail::Corrupt("head went backwards")));
    }
}
