//! A loom model of the ring protocol: 1 writer, 2 readers, 2 slots.
//!
//! The model uses the very steps of `shm_proto::seq` that the real writer and
//! reader use (under `--cfg loom` they run on loom's atomics). The payload of
//! a slot is two words written with Relaxed atomics, standing in for the bytes
//! (loom would report the real code's plain byte copies as the data race the
//! seqlock is designed around). Checked in every interleaving:
//! no torn frame is ever accepted; sequences never go backwards; losses are
//! reported, so `accepted + overruns + lost == cursor`.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p shm-proto --release --test loom`
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;
use shm_proto::seq::{self, SlotState};

const SLOTS: u64 = 2;
const FRAMES: u64 = 3;

struct Ring {
    head: AtomicU64,
    tail: AtomicU64,
    seqs: [AtomicU64; SLOTS as usize],
    payload: [[AtomicU64; 2]; SLOTS as usize],
}

fn word(s: u64, i: u64) -> u64 {
    s * 10 + i + 1
}

fn write(ring: &Ring, s: u64) {
    let slot = (s % SLOTS) as usize;
    seq::begin_write(&ring.seqs[slot], &ring.tail, s, SLOTS);
    for i in 0..2 {
        ring.payload[slot][i].store(word(s, i as u64), Ordering::Relaxed);
    }
    seq::commit(&ring.seqs[slot], &ring.head, s);
}

#[derive(Default, Debug)]
struct ReaderState {
    cursor: u64,
    accepted: u64,
    overruns: u64,
    lost: u64,
    last: Option<u64>,
}

/// One `next` attempt, mirroring `Reader::advance` + use + `Frame::validate`.
fn read_once(ring: &Ring, st: &mut ReaderState) {
    loop {
        let head = seq::load_head(&ring.head);
        if st.cursor >= head {
            return;
        }
        let tail = seq::load_tail(&ring.tail);
        if st.cursor < tail {
            st.lost += tail - st.cursor;
            st.cursor = tail;
            if st.cursor >= head {
                return;
            }
        }
        let s = st.cursor;
        let slot = (s % SLOTS) as usize;
        match seq::check(&ring.seqs[slot], s) {
            SlotState::Ready => {
                st.cursor = s + 1;
                if let Some(l) = st.last {
                    assert!(s > l, "sequence went backwards: {l} then {s}");
                }
                st.last = Some(s);
                let a = ring.payload[slot][0].load(Ordering::Relaxed);
                let b = ring.payload[slot][1].load(Ordering::Relaxed);
                if seq::validate(&ring.seqs[slot], s) {
                    assert_eq!((a, b), (word(s, 0), word(s, 1)), "torn frame {s} accepted");
                    st.accepted += 1;
                } else {
                    st.overruns += 1;
                }
                return;
            }
            SlotState::Overwritten => {
                let next = seq::load_tail(&ring.tail).max(s + 1);
                st.lost += next - s;
                st.cursor = next;
            }
            SlotState::NotYet => {
                panic!("head {head} > {s} but slot word is {} (tail {tail})", ring.seqs[slot].load(Ordering::Relaxed))
            }
        }
    }
}

#[test]
fn ring_protocol() {
    loom::model(|| {
        let ring = Arc::new(Ring {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            seqs: [AtomicU64::new(0), AtomicU64::new(0)],
            payload: [[AtomicU64::new(0), AtomicU64::new(0)], [AtomicU64::new(0), AtomicU64::new(0)]],
        });
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || {
                    let mut st = ReaderState::default();
                    read_once(&ring, &mut st);
                    read_once(&ring, &mut st);
                    st
                })
            })
            .collect();
        for s in 0..FRAMES {
            write(&ring, s);
        }
        for r in readers {
            let mut st = r.join().unwrap();
            // Drain after the writer is done: everything is accounted for.
            for _ in 0..FRAMES {
                read_once(&ring, &mut st);
            }
            assert_eq!(st.cursor, FRAMES, "{st:?}");
            assert_eq!(st.accepted + st.overruns + st.lost, FRAMES, "{st:?}");
        }
    });
}
