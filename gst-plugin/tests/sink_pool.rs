//! `shmcastsink` lends ring slots to upstream as its buffer pool: frames
//! rendered straight into a slot are published without a copy, and readers
//! see exactly the frames they would see through the copy. Runs the element
//! in this process (registered statically) so the tests can reach the pool,
//! its buffers and the element's counters.
#![forbid(unsafe_code)]

mod common;

use std::time::{Duration, Instant};

use common::until;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use shm_proto::{Event, Follower, Next, PixelFormat, Reader, ReaderOptions, Start, VideoFormat};

/// The colour `videotestsrc pattern=solid-color foreground-color=0xff336699` draws, in RGB.
const RGB: [u8; 3] = [0x33, 0x66, 0x99];

struct Null(gst::Pipeline);
impl Drop for Null {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

fn pipeline(desc: &str) -> Null {
    gst::init().unwrap();
    gstshmcast::plugin_register_static().unwrap();
    Null(gst::parse::launch(desc).unwrap().downcast::<gst::Pipeline>().unwrap())
}

fn stats(p: &Null) -> gst::Structure {
    p.0.by_name("out").unwrap().property::<gst::Structure>("stats")
}

fn stat(s: &gst::Structure, k: &str) -> u64 {
    s.get::<u64>(k).unwrap()
}

/// A probe on the sink's pad that writes the buffer's number into its first
/// 8 bytes — into the lent slot itself when the buffer is one.
fn stamp_buffers(p: &Null) {
    let pad = p.0.by_name("out").unwrap().static_pad("sink").unwrap();
    let n = std::sync::atomic::AtomicU64::new(0);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buf) = info.buffer_mut() {
            let b = buf.make_mut();
            // Relaxed: a counter of this streaming thread's buffers.
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Ok(mut map) = b.map_writable() {
                map[..8].copy_from_slice(&i.to_le_bytes());
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// A frame as a reader got it: (seq, frame id, stamp, capture ns, every
/// pixel after the stamp `rgb`?, lost before it).
type Seen = (u64, u64, u64, u64, bool, u64);

fn check_rgb(fr: &shm_proto::Frame<'_>, rgb: [u8; 3]) -> Option<(u64, bool)> {
    fr.read(|b| {
        let stamp = u64::from_le_bytes(b[..8].try_into().unwrap());
        // Pixels from the fourth on (the stamp covers the first 8 bytes).
        let solid = b[9..].chunks_exact(3).all(|px| px == rgb);
        (stamp, solid)
    })
}

#[test]
fn videotestsrc_renders_into_lent_slots_and_readers_see_every_frame_intact() {
    let name = format!("gst-pool-{}", std::process::id());
    let p = pipeline(&format!(
        "videotestsrc is-live=true pattern=solid-color foreground-color=0xff336699 \
         ! video/x-raw,format=RGB,width=320,height=240,framerate=60/1 ! shmcastsink name=out stream={name}"
    ));
    stamp_buffers(&p);
    p.0.set_state(gst::State::Playing).unwrap();
    let mut f = Follower::new(&name, ReaderOptions::default()).unwrap();
    let attached = until(&mut f, "the ring", |e| match e {
        Event::Attached(a) => Some(a),
        _ => None,
    });
    assert_eq!(attached.format, VideoFormat::new(320, 240, PixelFormat::Rgb24, 60, 1).unwrap());
    let mut seen: Vec<Seen> = Vec::new();
    while seen.len() < 30 {
        let s = until(&mut f, "a frame", |e| match e {
            Event::Frame(fr) => {
                let (stamp, solid) = check_rgb(&fr, RGB).expect("a frame overwritten while read at 60 fps");
                Some((fr.seq(), fr.meta().frame_id, stamp, fr.meta().capture_ns, solid, fr.lost_before()))
            }
            _ => None,
        });
        seen.push(s);
    }
    let st = stats(&p);
    drop(p);
    let now = shm_proto::os::realtime_ns();
    for (i, w) in seen.windows(2).enumerate() {
        let ((s0, id0, _, t0, ..), (s1, id1, _, t1, _, lost)) = (w[0], w[1]);
        assert_eq!((s1, id1, lost), (s0 + 1, id0 + 1, 0), "frame {i}: {seen:?}");
        assert!(t1 >= t0, "capture times go backwards: {seen:?}");
    }
    for &(seq, id, stamp, capture, solid, _) in &seen {
        assert!(solid, "frame {seq} is not the colour drawn: {seen:?}");
        assert_eq!(stamp, id, "frame {seq} carries another buffer's stamp: {seen:?}");
        assert!(capture <= now && now - capture < 600_000_000_000, "capture time {capture} is not recent");
    }
    // Every frame went into a lent slot: nothing was copied, nothing passed over.
    assert!(stat(&st, "frames") >= 30, "{st}");
    assert_eq!(stat(&st, "lent"), stat(&st, "frames"), "{st}");
    assert_eq!(stat(&st, "skipped"), 0, "{st}");
}

/// An `appsrc ! shmcastsink` pipeline and the sink's pool, driven buffer by
/// buffer: which buffers are slots, and what readers see in each case.
struct Driven {
    p: Null,
    src: gst_app::AppSrc,
    name: String,
}

fn caps(format: &str) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", format)
        .field("width", 64)
        .field("height", 16)
        .field("framerate", gst::Fraction::new(30, 1))
        .build()
}

impl Driven {
    fn new(tag: &str) -> Driven {
        let name = format!("gst-pool-{tag}-{}", std::process::id());
        let p = pipeline(&format!(
            "appsrc name=src format=time is-live=false ! shmcastsink name=out stream={name} slots=4 sync=false"
        ));
        let src = p.0.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
        src.set_caps(Some(&caps("RGB")));
        p.0.set_state(gst::State::Playing).unwrap();
        Driven { p, src, name }
    }

    /// The sink's pool, active, as upstream would get it for `caps`.
    fn pool(&self, caps: &gst::Caps) -> gst::BufferPool {
        let pad = self.p.0.by_name("out").unwrap().static_pad("sink").unwrap();
        let mut q = gst::query::Allocation::new(Some(caps), true);
        assert!(pad.query(&mut q), "allocation query refused");
        let (pool, ..) = q.allocation_pools().next().expect("a pool is offered");
        let pool = pool.expect("a pool, not only a size");
        pool.set_active(true).unwrap();
        pool
    }

    fn push(&self, buf: gst::Buffer) {
        self.src.push_buffer(buf).unwrap();
    }

    fn stats(&self) -> gst::Structure {
        stats(&self.p)
    }

    /// Waits until the sink counted `n` frames.
    fn wait_frames(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while stat(&self.stats(), "frames") < n {
            assert!(Instant::now() < deadline, "the sink never published {n} frames: {}", self.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A buffer filled with `v` (a plain one, or one from the pool).
fn filled(mut buf: gst::Buffer, v: u8) -> gst::Buffer {
    buf.get_mut().unwrap().map_writable().unwrap().fill(v);
    buf
}

fn plain(v: u8) -> gst::Buffer {
    filled(gst::Buffer::with_size(64 * 16 * 3).unwrap(), v)
}

/// The next frame a reader gets: (seq, lost before it, its byte value if uniform).
fn next(r: &mut Reader) -> (u64, u64, Option<u8>) {
    let Next::Frame(f) = r.next(Duration::from_secs(60)) else { panic!("no frame") };
    let v = f.read(|b| b.iter().all(|&x| x == b[0]).then_some(b[0])).expect("overwritten");
    (f.seq(), f.lost_before(), v)
}

#[test]
fn one_slot_is_lent_at_a_time_and_abandoned_or_late_loans_never_reach_readers() {
    let d = Driven::new("rules");
    d.push(plain(1));
    d.wait_frames(1);
    let mut r = Reader::open(&d.name, &ReaderOptions { start: Start::Oldest, ..Default::default() }).unwrap();
    assert_eq!(next(&mut r), (0, 0, Some(1)));
    let pool = d.pool(&caps("RGB"));

    // A lent slot, committed in place.
    let a = filled(pool.acquire_buffer(None).unwrap(), 2);
    d.push(a);
    d.wait_frames(2);
    assert_eq!(next(&mut r), (1, 0, Some(2)));
    assert_eq!(stat(&d.stats(), "lent"), 1, "{}", d.stats());

    // Two buffers at once: the first is the slot, the second ordinary
    // memory; pushed second-first, the copy passes over the slot's sequence
    // and the slot, now late, is copied too. Readers see both, in push order.
    let b = filled(pool.acquire_buffer(None).unwrap(), 3);
    let c = filled(pool.acquire_buffer(None).unwrap(), 4);
    d.push(c);
    d.push(b);
    d.wait_frames(4);
    assert_eq!(next(&mut r), (3, 1, Some(4)), "sequence 2 (the late slot's) is passed over");
    assert_eq!(next(&mut r), (4, 0, Some(3)));
    let st = d.stats();
    assert_eq!((stat(&st, "lent"), stat(&st, "skipped")), (1, 1), "{st}");

    // A slot filled and dropped without being pushed (a flush, a discard):
    // nothing is published, the sequence is reused.
    drop(filled(pool.acquire_buffer(None).unwrap(), 5));
    let e = filled(pool.acquire_buffer(None).unwrap(), 6);
    d.push(e);
    d.wait_frames(5);
    assert_eq!(next(&mut r), (5, 0, Some(6)));
    assert_eq!(stat(&d.stats(), "lent"), 2, "{}", d.stats());
    assert!(matches!(r.next(Duration::from_millis(100)), Next::Timeout), "the abandoned slot was published");
    pool.set_active(false).unwrap();
}

#[test]
fn a_slot_lent_before_a_caps_change_is_copied_into_the_new_ring() {
    let d = Driven::new("caps");
    d.push(plain(1));
    d.wait_frames(1);
    let pool = d.pool(&caps("RGB"));
    let late = filled(pool.acquire_buffer(None).unwrap(), 7);
    // New caps (same size, another format): a new ring, while the old ring's
    // slot is still out in `late`.
    d.src.set_caps(Some(&caps("BGR")));
    d.push(plain(8));
    d.wait_frames(2);
    let mut f = Follower::new(&d.name, ReaderOptions { start: Start::Oldest, ..Default::default() }).unwrap();
    let a = until(&mut f, "the new ring", |e| match e {
        Event::Attached(a) => Some(a),
        _ => None,
    });
    assert_eq!(a.format.pixel, PixelFormat::Bgr24);
    let got = |f: &mut Follower| {
        until(f, "a frame", |e| match e {
            Event::Frame(fr) => Some((fr.seq(), fr.read(|b| b.iter().all(|&x| x == b[0]).then_some(b[0])).flatten())),
            _ => None,
        })
    };
    assert_eq!(got(&mut f), (0, Some(8)));
    // The old ring's slot reaches the new ring only as a copy.
    d.push(late);
    d.wait_frames(3);
    assert_eq!(got(&mut f), (1, Some(7)));
    assert_eq!(stat(&d.stats(), "lent"), 0, "{}", d.stats());
    assert_eq!(stat(&d.stats(), "segments"), 2, "{}", d.stats());
    pool.set_active(false).unwrap();
}

#[test]
fn eos_with_a_slot_out_closes_the_ring_and_the_slot_is_released_later() {
    let d = Driven::new("eos");
    d.push(plain(1));
    d.wait_frames(1);
    let pool = d.pool(&caps("RGB"));
    let out = filled(pool.acquire_buffer(None).unwrap(), 9);
    let mut r = Reader::open(&d.name, &ReaderOptions { start: Start::Oldest, ..Default::default() }).unwrap();
    assert_eq!(next(&mut r), (0, 0, Some(1)));
    d.src.end_of_stream().unwrap();
    let bus = d.p.0.bus().unwrap();
    bus.timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Eos]).expect("EOS");
    assert!(matches!(r.next(Duration::from_secs(10)), Next::Gone(shm_proto::ProducerStatus::Closed)));
    // The slot's memory is still mapped and writable after the close.
    drop(filled(out, 10));
    pool.set_active(false).unwrap();
    drop(d);
}
