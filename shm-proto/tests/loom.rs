//! Loom models of the ring protocol: 1 writer, 1 reader, 2 slots, 3 frames,
//! for each lapped policy, with a close, and with a slot lent to another
//! thread (filled there and committed, or abandoned there).
//!
//! The readers run the shipped cursor code ([`shm_proto::ring::Cursor`], the
//! very `advance`/`available` that `Reader` runs) over a [`RingView`] of this
//! model's in-process ring, and the writer runs the shipped steps of
//! `shm_proto::seq`. The payload of a slot is two words written with Relaxed
//! atomics, standing in for the bytes (loom would report the real code's plain
//! byte copies as the data race the seqlock is designed around); the same two
//! words also stand in for the slot's metadata, which `advance` validates.
//! Checked in every interleaving:
//! - no torn frame or torn metadata is ever accepted;
//! - sequences never go backwards;
//! - a reader that has seen the stream closed has been given every frame
//!   published before the close, or counted it lost: `frames + lost == written`.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p shm-proto --release --test loom`
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use loom::thread;
use shm_proto::layout::state;
use shm_proto::meta::FrameMeta;
use shm_proto::ring::{Avail, Cursor, Lapped, RingView};
use shm_proto::seq;

const SLOTS: u64 = 2;
const FRAMES: u64 = 3;

struct Ring {
    head: AtomicU64,
    tail: AtomicU64,
    state: AtomicU32,
    seqs: [AtomicU64; SLOTS as usize],
    payload: [[AtomicU64; 2]; SLOTS as usize],
}

impl RingView for Ring {
    fn slots(&self) -> u64 {
        SLOTS
    }
    fn head(&self) -> &AtomicU64 {
        &self.head
    }
    fn slot_seq(&self, slot: u64) -> &AtomicU64 {
        &self.seqs[slot as usize]
    }
    fn load_meta(&self, slot: u64) -> FrameMeta {
        let p = &self.payload[slot as usize];
        FrameMeta::new(p[0].load(Ordering::Relaxed), p[1].load(Ordering::Relaxed), 0)
    }
    fn state(&self) -> &AtomicU32 {
        &self.state
    }
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
struct Seen {
    accepted: u64,
    overruns: u64,
    last: Option<u64>,
}

/// One `Reader::try_next` + a use of the bytes + the check `Frame::read` makes.
fn read_once(ring: &Ring, c: &mut Cursor, lapped: Lapped, seen: &mut Seen) {
    let Some((s, meta, _)) = c.advance(ring, lapped) else { return };
    assert_eq!((meta.frame_id, meta.capture_ns), (word(s, 0), word(s, 1)), "torn metadata of {s} handed out");
    if let Some(l) = seen.last {
        assert!(s > l, "sequence went backwards: {l} then {s}");
    }
    seen.last = Some(s);
    let slot = (s % SLOTS) as usize;
    let a = ring.payload[slot][0].load(Ordering::Relaxed);
    let b = ring.payload[slot][1].load(Ordering::Relaxed);
    if seq::validate(&ring.seqs[slot], s) {
        assert_eq!((a, b), (word(s, 0), word(s, 1)), "torn frame {s} accepted");
        seen.accepted += 1;
    } else {
        seen.overruns += 1;
    }
}

fn new_ring() -> Arc<Ring> {
    Arc::new(Ring {
        head: AtomicU64::new(0),
        tail: AtomicU64::new(0),
        state: AtomicU32::new(state::LIVE),
        seqs: [AtomicU64::new(0), AtomicU64::new(0)],
        payload: [[AtomicU64::new(0), AtomicU64::new(0)], [AtomicU64::new(0), AtomicU64::new(0)]],
    })
}

/// A reader thread that reads twice, concurrently with what follows.
fn spawn_reader(ring: &Arc<Ring>, lapped: Lapped) -> thread::JoinHandle<(Cursor, Seen)> {
    let ring = Arc::clone(ring);
    thread::spawn(move || {
        let mut c = Cursor::new(0);
        let mut seen = Seen::default();
        read_once(&ring, &mut c, lapped, &mut seen);
        read_once(&ring, &mut c, lapped, &mut seen);
        (c, seen)
    })
}

/// A reader running concurrently with the writer, which publishes three
/// frames into two slots: nothing torn is accepted, and after the writer is
/// done everything is accounted for. Readers write nothing shared, so one
/// reader per model checks every behaviour a second one could add.
fn one_reader(lapped: Lapped) {
    loom::model(move || {
        let ring = new_ring();
        let reader = spawn_reader(&ring, lapped);
        for s in 0..FRAMES {
            write(&ring, s);
        }
        let (mut c, mut seen) = reader.join().unwrap();
        for _ in 0..FRAMES {
            read_once(&ring, &mut c, lapped, &mut seen);
        }
        assert_eq!(c.pos(), FRAMES, "{seen:?}");
        assert_eq!(c.frames() + c.lost(), FRAMES, "{seen:?}");
        assert_eq!(c.frames(), seen.accepted + seen.overruns, "{seen:?}");
        assert!(c.corrupt().is_none());
    });
}

#[test]
fn a_reader_landing_on_the_newest_never_accepts_a_torn_frame() {
    one_reader(Lapped::Newest);
}

#[test]
fn a_reader_landing_on_the_oldest_never_accepts_a_torn_frame() {
    one_reader(Lapped::Oldest);
}

/// The close path: a reader that sees the stream closed has been given every
/// frame published before the close, or counted it lost.
#[test]
fn a_reader_that_sees_the_close_has_every_frame_accounted() {
    loom::model(|| {
        let ring = new_ring();
        let reader = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let mut c = Cursor::new(0);
                let mut seen = Seen::default();
                read_once(&ring, &mut c, Lapped::Newest, &mut seen);
                // What `Reader::wait` does before it reports `Gone(Closed)`:
                // the state (Acquire), then `head` once more.
                if seq::load_state(&ring.state) == state::CLOSED {
                    for _ in 0..=FRAMES {
                        if c.available(&*ring) != Avail::Ready {
                            break;
                        }
                        read_once(&ring, &mut c, Lapped::Newest, &mut seen);
                    }
                    assert_eq!(c.available(&*ring), Avail::Empty);
                    assert_eq!(c.frames() + c.lost(), FRAMES, "closed but not every frame accounted: {seen:?}");
                }
                (c, seen)
            })
        };
        for s in 0..FRAMES {
            write(&ring, s);
        }
        seq::store_state(&ring.state, state::CLOSED);
        let (c, seen) = reader.join().unwrap();
        assert_eq!(c.frames(), seen.accepted + seen.overruns, "{seen:?}");
    });
}

// Lending (`Writer::lend`): the slot is marked in the writer's thread, its
// payload written by the loan's holder in another thread, and the loan ended
// (`seq::end_loan`) in whichever thread drops it.

/// The holder's payload for a frame it abandons.
const GARBAGE: u64 = 999;

/// A loaned frame over a slot a reader may be reading: frames 0 and 1 are
/// written, then frame 2 is lent (slot 0, holding frame 0), filled by the
/// holder's thread and committed by the writer after the hand-back. A reader
/// reading frame 0 meanwhile must see the overwrite, and frame 2 is never
/// accepted torn. The mark is stored in the writer's thread and the bytes in
/// the holder's: the holder's own Release fence (`seq::take_loan`) is what
/// orders the mark before its bytes for a reader; without it this model
/// finds frame 0 accepted with a byte of frame 2.
#[test]
fn a_slot_filled_by_the_loan_holder_is_never_accepted_torn() {
    loom::model(|| {
        let ring = new_ring();
        write(&ring, 0);
        let reader = spawn_reader(&ring, Lapped::Oldest);
        write(&ring, 1);
        // lend(): mark, then hand the loan to the holder.
        seq::begin_write(&ring.seqs[0], &ring.tail, 2, SLOTS);
        let holder = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                // `Loan::as_mut`, in the holder's thread.
                seq::take_loan();
                for i in 0..2 {
                    ring.payload[0][i].store(word(2, i as u64), Ordering::Relaxed);
                }
            })
        };
        // The filled buffer comes back (a push to the sink): commit it.
        holder.join().unwrap();
        seq::commit(&ring.seqs[0], &ring.head, 2);
        let (mut c, mut seen) = reader.join().unwrap();
        for _ in 0..FRAMES {
            read_once(&ring, &mut c, Lapped::Oldest, &mut seen);
        }
        assert_eq!(c.frames() + c.lost(), FRAMES, "{seen:?}");
        assert_eq!(c.frames(), seen.accepted + seen.overruns, "{seen:?}");
    });
}

/// An abandoned loan: frame 1 is lent (slot 1), the holder writes garbage
/// into it in its thread and drops the loan there. The writer, without
/// waiting, either still sees the loan out — and passes sequence 1 over,
/// writing frame 2 into slot 0 — or sees it ended — and reuses sequence 1 in
/// slot 1, after every garbage byte (SYNC(loan)). Either way no reader
/// accepts garbage or a torn frame, and every sequence below `head` is
/// handed out or counted lost.
#[test]
fn an_abandoned_loan_ended_in_another_thread_never_leaks_into_a_frame() {
    loom::model(|| {
        let ring = new_ring();
        let out = Arc::new(AtomicBool::new(true));
        write(&ring, 0);
        seq::begin_write(&ring.seqs[1], &ring.tail, 1, SLOTS);
        let holder = {
            let (ring, out) = (Arc::clone(&ring), Arc::clone(&out));
            thread::spawn(move || {
                seq::take_loan();
                for i in 0..2 {
                    ring.payload[1][i].store(GARBAGE, Ordering::Relaxed);
                }
                seq::end_loan(&out);
            })
        };
        let reader = spawn_reader(&ring, Lapped::Newest);
        // The next frame: the writer's `claim`.
        let published = if seq::loan_is_out(&out) {
            write(&ring, 2); // sequence 1 passed over
            3
        } else {
            write(&ring, 1); // sequence 1 reused
            2
        };
        holder.join().unwrap();
        let (mut c, mut seen) = reader.join().unwrap();
        for _ in 0..FRAMES {
            read_once(&ring, &mut c, Lapped::Newest, &mut seen);
        }
        assert_eq!(c.pos(), published, "{seen:?}");
        assert_eq!(c.frames() + c.lost(), published, "{seen:?}");
        assert_eq!(c.frames(), seen.accepted + seen.overruns, "{seen:?}");
        assert!(c.corrupt().is_none());
    });
}
