//! Sequence numbers and the seqlock steps of the ring protocol.
//!
//! Every step that publishes or consumes is here, written once, and used both
//! by the real writer/reader and by the loom model (`tests/loom.rs`).
//!
//! Encoding of a slot's sequence word for frame sequence `s`:
//! `0` = never written, `committed(s) = 2(s+1)`, `writing(s) = 2(s+1) + 1`.
//! Words only grow, so a reader that sees anything but `committed(s)` knows the
//! frame `s` is not (or no longer) there.
//!
//! Readers may only *load* (their mapping is read-only, and atomic RMW or
//! stores on it would fault): every reader-side Acquire is a `Relaxed` load
//! followed by `fence(Acquire)`, which is at least as strong.
#![forbid(unsafe_code)]

use crate::sync::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};

/// The committed encoding of sequence `s`.
#[inline]
pub const fn committed(s: u64) -> u64 {
    (s + 1) << 1
}

/// The in-progress encoding of sequence `s`.
#[inline]
pub const fn writing(s: u64) -> u64 {
    ((s + 1) << 1) | 1
}

/// Writer, step 1: mark the slot as being overwritten with `s`.
#[inline]
pub fn begin_write(slot_seq: &AtomicU64, tail: &AtomicU64, s: u64, slots: u64) {
    // Relaxed: `tail` is a hint for lapped readers; the slot word below is what
    // they trust.
    tail.store((s + 1).saturating_sub(slots), Ordering::Relaxed);
    // Relaxed store, then the Release fence orders it before every payload
    // write that follows.
    // SYNC(begin): pairs with the reader's `fence(Acquire)` in `validate`: a
    // reader that saw any byte of the new payload also sees this mark.
    slot_seq.store(writing(s), Ordering::Relaxed);
    fence(Ordering::Release);
}

/// Writer, step 2: the payload and metadata of `s` are written; publish them.
#[inline]
pub fn commit(slot_seq: &AtomicU64, head: &AtomicU64, s: u64) {
    // SYNC(slot): pairs with `fence(Acquire)` after the slot-word load in
    // `check`: payload and metadata written before are visible to a reader
    // that sees `committed(s)`.
    slot_seq.store(committed(s), Ordering::Release);
    // SYNC(head): pairs with `fence(Acquire)` in `load_head`: a reader that
    // sees `head > s` finds the slot word at `committed(s)` or later.
    head.store(s + 1, Ordering::Release);
}

/// Writer, step 3: wake readers. Returns the new notify value.
#[inline]
pub fn bump_notify(notify: &AtomicU32) -> u32 {
    // SYNC(notify): Release so a reader whose futex wait returns because the
    // word changed (and then loads head with Acquire) sees the new head.
    notify.fetch_add(1, Ordering::Release).wrapping_add(1)
}

/// Holder of a lent slot, before writing its bytes (`Loan::as_mut`): orders
/// the writer's *writing* mark — which happened before the loan reached this
/// thread — before every byte written from here on.
#[inline]
pub fn take_loan() {
    // SYNC(begin), for the holder's thread: pairs with the reader's
    // `fence(Acquire)` in `validate`, as the fence in `begin_write` does for
    // the writer's thread. A reader that saw a byte written after this fence
    // sees the mark, which happens before it (the hand-off of the loan).
    fence(Ordering::Release);
}

/// Writer, lending a slot (see `Writer::lend`): the holder of a loan is done
/// with the slot's bytes — it committed them or gave up — and will never
/// touch them again. Called once, when the loan is dropped, in whatever
/// thread drops it.
#[inline]
pub fn end_loan(out: &AtomicBool) {
    // SYNC(loan): pairs with `fence(Acquire)` in `loan_is_out`: every byte the
    // holder (any thread) wrote into the slot happens before the writer
    // begins writing that slot again, so none of them can land in a later frame.
    out.store(false, Ordering::Release);
}

/// Writer: whether a loan is still held (Acquire; see `end_loan`). While it
/// is, the writer neither lends nor writes the lent slot.
#[inline]
pub fn loan_is_out(out: &AtomicBool) -> bool {
    let v = out.load(Ordering::Relaxed);
    // SYNC(loan): pairs with the Release store in `end_loan`.
    fence(Ordering::Acquire);
    v
}

/// Reader: the next sequence the producer will write (Acquire).
#[inline]
pub fn load_head(head: &AtomicU64) -> u64 {
    let h = head.load(Ordering::Relaxed);
    // SYNC(head): pairs with the Release store of `head` in `commit`.
    fence(Ordering::Acquire);
    h
}

/// Reader: the oldest readable sequence (a hint; see `begin_write`).
#[inline]
pub fn load_tail(tail: &AtomicU64) -> u64 {
    // Relaxed: only used to skip ahead; the slot word decides.
    tail.load(Ordering::Relaxed)
}

/// Reader: the notify word, read before checking for frames and waiting on it.
#[inline]
pub fn load_notify(notify: &AtomicU32) -> u32 {
    let n = notify.load(Ordering::Relaxed);
    // SYNC(notify): pairs with the Release `fetch_add` in `bump_notify`; orders
    // this load before the head load that follows, so a bump we missed makes
    // the futex wait return at once.
    fence(Ordering::Acquire);
    n
}

/// Writer: store the producer state (`layout::state::*`).
#[inline]
pub fn store_state(state: &AtomicU32, value: u32) {
    // SYNC(close): pairs with `fence(Acquire)` in `load_state`: a reader that
    // sees `CLOSED` also sees the final `head`, so it can hand out every frame
    // published before the close before it reports the stream gone.
    state.store(value, Ordering::Release);
}

/// Reader: the producer state (Acquire; see `store_state`).
#[inline]
pub fn load_state(state: &AtomicU32) -> u32 {
    let v = state.load(Ordering::Relaxed);
    // SYNC(close): pairs with the Release store in `store_state`.
    fence(Ordering::Acquire);
    v
}

/// What a reader finds in the slot where it expects sequence `s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// `s` is committed: read it, then `validate`.
    Ready,
    /// `s` has not been written (or not finished) yet.
    NotYet,
    /// `s` was overwritten (the slot holds a later frame, or one is being written).
    Overwritten,
}

/// Reader, step 1: is sequence `s` in its slot?
#[inline]
pub fn check(slot_seq: &AtomicU64, s: u64) -> SlotState {
    let w = slot_seq.load(Ordering::Relaxed);
    // SYNC(slot): pairs with the Release store in `commit`.
    fence(Ordering::Acquire);
    let want = committed(s);
    if w == want {
        SlotState::Ready
    } else if w < want || w == writing(s) {
        SlotState::NotYet
    } else {
        SlotState::Overwritten
    }
}

/// Reader, step 2 (after using the payload and metadata of `s`): true if the
/// producer did not touch the slot meanwhile, so everything read is intact.
#[inline]
pub fn validate(slot_seq: &AtomicU64, s: u64) -> bool {
    // SYNC(begin): pairs with the Release fence in `begin_write`: if any read
    // above saw bytes of a newer frame, the load below sees its writing mark.
    fence(Ordering::Acquire);
    slot_seq.load(Ordering::Relaxed) == committed(s)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn encoding_orders() {
        assert!(committed(0) > 0);
        assert!(writing(0) > committed(0));
        assert!(committed(1) > writing(0));
    }

    #[test]
    fn steps_in_one_thread() {
        let (slot, head, tail) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
        assert_eq!(check(&slot, 0), SlotState::NotYet);
        begin_write(&slot, &tail, 0, 2);
        assert_eq!(check(&slot, 0), SlotState::NotYet);
        commit(&slot, &head, 0);
        assert_eq!(check(&slot, 0), SlotState::Ready);
        assert!(validate(&slot, 0));
        begin_write(&slot, &tail, 2, 2);
        assert!(!validate(&slot, 0));
        assert_eq!(check(&slot, 0), SlotState::Overwritten);
        assert_eq!(load_tail(&tail), 1);
    }
}
