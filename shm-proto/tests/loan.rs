//! Lending slots ([`Writer::lend`]): frames filled in place and committed
//! without a copy, one loan at a time, abandoned loans, passed-over
//! sequences, and loans outliving their writer. Readers must see exactly the
//! frames committed, intact, in order, with every passed-over sequence
//! counted as lost.

use std::time::Duration;

use shm_proto::{
    CreateOptions, FrameMeta, Loan, LoanError, Next, PixelFormat, Reader, ReaderOptions, Start, VideoFormat, Writer,
};

fn unique(tag: &str) -> String {
    format!("t-loan-{tag}-{}", std::process::id())
}

fn ring(tag: &str, slots: u32) -> (Writer, Reader) {
    let f = VideoFormat::new(64, 32, PixelFormat::Gray8, 30, 1).unwrap();
    let w = Writer::create(&unique(tag), f, &CreateOptions { slots, ..Default::default() }).unwrap();
    let r = Reader::open(w.name(), &ReaderOptions { start: Start::Oldest, ..Default::default() }).unwrap();
    (w, r)
}

/// The next frame: (seq, frame_id, lost before it, every byte equal to `fill`?).
fn next(r: &mut Reader, fill: u8) -> (u64, u64, u64, bool) {
    let Next::Frame(f) = r.next(Duration::from_secs(2)) else { panic!("no frame") };
    let intact = f.read(|b| b.iter().all(|&x| x == fill)).expect("frame overwritten");
    (f.seq(), f.meta().frame_id, f.lost_before(), intact)
}

fn assert_send_static<T: Send + 'static>() {}

#[test]
fn a_lent_slot_is_filled_elsewhere_and_committed_without_copy() {
    assert_send_static::<Loan>();
    let (mut w, mut r) = ring("basic", 4);
    for i in 0..6u64 {
        let mut loan = w.lend().expect("no loan is out");
        assert_eq!(loan.seq(), i);
        assert_eq!(loan.len(), w.format().frame_size as usize);
        // Filled in another thread, as a GStreamer source would.
        let loan = std::thread::spawn(move || {
            loan.as_mut().fill(i as u8 + 1);
            loan
        })
        .join()
        .unwrap();
        assert_eq!(w.commit_loan(&loan, FrameMeta::new(100 + i, 7, loan.len() as u64)), Ok(i));
        assert_eq!(
            w.commit_loan(&loan, FrameMeta::new(0, 0, 0)),
            Err(LoanError::Committed { seq: i }),
            "a loan commits once"
        );
        drop(loan);
        assert_eq!(next(&mut r, i as u8 + 1), (i, 100 + i, 0, true));
    }
    assert_eq!(w.skipped(), 0);
    assert!(r.try_next().is_none());
}

#[test]
fn one_loan_at_a_time() {
    let (mut w, _r) = ring("one", 4);
    let a = w.lend().unwrap();
    assert!(w.lend().is_none(), "a second loan while one is out");
    assert!(w.is_lent());
    w.commit_loan(&a, FrameMeta::new(0, 0, 1)).unwrap();
    assert!(w.lend().is_none(), "a committed loan still pins its slot");
    drop(a);
    assert!(!w.is_lent());
    let b = w.lend().unwrap();
    assert_eq!(b.seq(), 1);
}

#[test]
fn an_abandoned_loan_is_never_seen_and_its_sequence_is_reused() {
    let (mut w, mut r) = ring("abandon", 4);
    w.publish(|b| {
        b.fill(1);
        FrameMeta::new(1, 0, b.len() as u64)
    });
    assert_eq!(next(&mut r, 1), (0, 1, 0, true));
    let mut loan = w.lend().unwrap();
    assert_eq!(loan.seq(), 1);
    loan.as_mut()[..10].fill(0xee); // half a frame, then given up
    drop(loan);
    assert!(matches!(r.next(Duration::from_millis(50)), Next::Timeout), "an abandoned frame was handed out");
    // The sequence is reused, by a copy or by another loan.
    assert_eq!(
        w.publish(|b| {
            b.fill(2);
            FrameMeta::new(2, 0, b.len() as u64)
        }),
        1
    );
    assert_eq!(next(&mut r, 2), (1, 2, 0, true));
    let mut loan = w.lend().unwrap();
    assert_eq!(loan.seq(), 2);
    drop(w.lend());
    loan.as_mut().fill(3);
    drop(loan);
    let mut loan = w.lend().unwrap();
    assert_eq!(loan.seq(), 2);
    loan.as_mut().fill(4);
    w.commit_in_place(loan.as_ref(), FrameMeta::new(4, 0, loan.len() as u64)).unwrap();
    assert_eq!(next(&mut r, 4), (2, 4, 0, true));
    assert_eq!(w.skipped(), 0);
}

#[test]
fn a_frame_written_while_a_loan_is_out_passes_over_its_sequence() {
    let (mut w, mut r) = ring("pass", 4);
    let mut loan = w.lend().unwrap();
    assert_eq!(loan.seq(), 0);
    // A copied frame comes first: it cannot take slot 0, which the loan
    // pins, so it takes sequence 1.
    let s = w.publish(|b| {
        b.fill(9);
        FrameMeta::new(9, 0, b.len() as u64)
    });
    assert_eq!((s, w.skipped()), (1, 1));
    loan.as_mut().fill(8);
    assert_eq!(
        w.commit_loan(&loan, FrameMeta::new(8, 0, loan.len() as u64)),
        Err(LoanError::Stale { seq: 0, next: 2 })
    );
    // Sequence 0 is counted lost, never handed out.
    assert_eq!(next(&mut r, 9), (1, 9, 1, true));
    // The loan's bytes are still there to be published by copying.
    let bytes = loan.as_ref().to_vec();
    assert_eq!(
        w.publish(|b| {
            b.copy_from_slice(&bytes);
            FrameMeta::new(8, 0, b.len() as u64)
        }),
        2
    );
    drop(loan);
    assert_eq!(next(&mut r, 8), (2, 8, 0, true));
    assert_eq!(r.stats().lost, 1);
}

#[test]
fn a_committed_loan_kept_alive_keeps_its_frame_intact() {
    let (mut w, mut r) = ring("pin", 4);
    let mut loan = w.lend().unwrap();
    loan.as_mut().fill(5);
    w.commit_loan(&loan, FrameMeta::new(5, 0, loan.len() as u64)).unwrap();
    // A reader holds frame 0 in place while ten frames are written: the ring
    // wraps twice around the pinned slot, and frame 0 stays valid.
    let Next::Frame(held) = r.next(Duration::from_secs(1)) else { panic!("no frame") };
    assert_eq!(held.seq(), 0);
    let mut seqs = Vec::new();
    for i in 0..10u8 {
        seqs.push(w.publish(|b| {
            b.fill(20 + i);
            FrameMeta::new(20 + u64::from(i), 0, b.len() as u64)
        }));
    }
    assert!(seqs.iter().all(|s| s % 4 != 0), "slot 0 was written while pinned: {seqs:?}");
    assert_eq!(seqs, [1, 2, 3, 5, 6, 7, 9, 10, 11, 13]);
    assert_eq!(w.skipped(), 3);
    assert!(loan.as_ref().iter().all(|&b| b == 5), "the loaned frame changed");
    assert_eq!(held.read(|b| b.iter().all(|&x| x == 5)), Some(true), "the held frame was overwritten");
    drop(loan);
    // Every frame handed out after it is one that was committed, intact;
    // passed-over sequences are counted lost.
    let mut got = Vec::new();
    while let Some(f) = r.try_next() {
        let id = f.meta().frame_id;
        assert_eq!(f.read(|b| b.iter().all(|&x| u64::from(x) == id)), Some(true));
        got.push(f.seq());
    }
    assert!(!got.is_empty() && got.iter().all(|s| seqs.contains(s)), "{got:?}");
    assert_eq!(r.stats().frames + r.stats().lost, 14);
    // The slot is the writer's again.
    assert_eq!(w.publish(|b| FrameMeta::new(99, 0, b.len() as u64)), 14);
    assert_eq!(w.skipped(), 3);
}

#[test]
fn commit_in_place_only_for_the_lent_slot() {
    let (mut w, mut r) = ring("inplace", 4);
    let other = vec![0u8; w.format().frame_size as usize];
    assert_eq!(w.commit_in_place(&other, FrameMeta::new(0, 0, 0)), Err(LoanError::NotLent));
    let mut loan = w.lend().unwrap();
    loan.as_mut().fill(6);
    assert_eq!(w.commit_in_place(&other, FrameMeta::new(0, 0, 0)), Err(LoanError::NotTheSlot));
    assert_eq!(w.commit_in_place(&loan.as_ref()[1..], FrameMeta::new(0, 0, 0)), Err(LoanError::NotTheSlot));
    assert_eq!(w.commit_in_place(&loan.as_ref()[..10], FrameMeta::new(0, 0, 0)), Err(LoanError::NotTheSlot));
    assert_eq!(w.commit_in_place(loan.as_ref(), FrameMeta::new(6, 0, 1 << 40)), Ok(0));
    let Next::Frame(f) = r.next(Duration::from_secs(1)) else { panic!("no frame") };
    assert_eq!(f.len(), loan.len(), "len clamped to the frame size");
    assert_eq!(f.read(|b| b.iter().all(|&x| x == 6)), Some(true));
}

#[test]
fn a_loan_outlives_its_writer_and_never_reaches_the_next_segment() {
    let f = VideoFormat::new(64, 32, PixelFormat::Gray8, 30, 1).unwrap();
    let name = unique("replace");
    let mut w = Writer::create(&name, f, &CreateOptions { slots: 2, ..Default::default() }).unwrap();
    let mut loan = w.lend().unwrap();
    let old = w.epoch();
    // A format change: the writer is replaced while the loan is out.
    drop(w);
    let g = VideoFormat::new(32, 32, PixelFormat::Gray8, 30, 1).unwrap();
    let mut w = Writer::create(&name, g, &CreateOptions { slots: 2, ..Default::default() }).unwrap();
    assert_ne!(w.epoch(), old);
    let mut r = Reader::open(&name, &ReaderOptions { start: Start::Oldest, ..Default::default() }).unwrap();
    // The old mapping is still there to write into (no dangling memory).
    loan.as_mut().fill(7);
    assert!(loan.as_ref().iter().all(|&b| b == 7));
    assert_eq!(w.commit_loan(&loan, FrameMeta::new(7, 0, 1)), Err(LoanError::NotLent));
    assert_eq!(w.commit_in_place(loan.as_ref(), FrameMeta::new(7, 0, 1)), Err(LoanError::NotLent));
    // The new writer lends and publishes as if the old loan did not exist.
    let mut fresh = w.lend().unwrap();
    assert_eq!(fresh.seq(), 0);
    assert_eq!(w.commit_loan(&loan, FrameMeta::new(7, 0, 1)), Err(LoanError::NotLent));
    fresh.as_mut().fill(8);
    w.commit_loan(&fresh, FrameMeta::new(8, 0, fresh.len() as u64)).unwrap();
    drop(loan);
    assert_eq!(next(&mut r, 8), (0, 8, 0, true));
    assert!(r.try_next().is_none());
}
