//! Frames of 1 MiB or more leave the ring through `shmcastsrc`'s streaming
//! copy (`shm_proto::copy_streaming`) when packed, row by row when GStreamer
//! pads the rows: every byte arrives either way, and a writer publishing
//! flat out under the copy never gets a torn frame pushed. Runs the element
//! in this process with a `Writer` of the test's own, so the test knows what
//! each frame holds.
#![forbid(unsafe_code)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use shm_proto::{CreateOptions, FrameMeta, PixelFormat, VideoFormat, Writer};

struct Null(gst::Pipeline);
impl Drop for Null {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// A writer of `width`x`height` RGB and a playing
/// `shmcastsrc ! appsink` pipeline reading it.
fn rig(tag: &str, width: u32, height: u32) -> (Writer, Null, gst_app::AppSink, common::Guard) {
    gst::init().unwrap();
    gstshmcast::plugin_register_static().unwrap();
    let name = common::unique_name(tag);
    let format = VideoFormat::new(width, height, PixelFormat::Rgb24, 30, 1).unwrap();
    assert!(format.frame_size >= shm_proto::STREAMING_MIN as u64, "the frames take the streaming copy");
    let w = Writer::create(&name, format, &CreateOptions { slots: 4, ..CreateOptions::default() }).unwrap();
    let mut guard = common::Guard::new();
    guard.segment(&name);
    let desc = format!("shmcastsrc stream={name} ! appsink name=sink sync=false max-buffers=4 drop=false");
    let p = Null(gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap());
    let sink = p.0.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    p.0.set_state(gst::State::Playing).unwrap();
    (w, p, sink, guard)
}

/// The byte at `i` of frame `id`: differs between neighbouring bytes and
/// between frames, so a byte left over or misplaced shows.
fn pattern(id: u64, i: usize) -> u8 {
    (id.wrapping_mul(131) as usize ^ i.wrapping_mul(7) ^ (i >> 11)) as u8
}

fn publish_pattern(w: &mut Writer, id: u64) {
    w.publish(|slot| {
        for (i, b) in slot.iter_mut().enumerate() {
            *b = pattern(id, i);
        }
        FrameMeta::new(id, 0, slot.len() as u64)
    });
}

/// Checks `n` frames of a `width`x`height` RGB ring arrive with every
/// byte in place, in GStreamer's layout of the negotiated caps.
fn every_byte_arrives(tag: &str, width: u32, height: u32, n: usize) {
    let (mut w, _p, sink, _guard) = rig(tag, width, height);
    let row = width as usize * 3;
    let mut id = 0u64;
    let mut checked = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while checked < n {
        assert!(Instant::now() < deadline, "{checked} of {n} frames arrived");
        publish_pattern(&mut w, id);
        id += 1;
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) else { continue };
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let stride = info.stride()[0] as usize;
        let buf = sample.buffer().unwrap();
        let frame = buf.offset();
        let map = buf.map_readable().unwrap();
        for y in 0..height as usize {
            let got = &map[y * stride..y * stride + row];
            if let Some(x) = (0..row).find(|&x| got[x] != pattern(frame, y * row + x)) {
                panic!("frame {frame}, row {y}, byte {x}: {} instead of {}", got[x], pattern(frame, y * row + x));
            }
        }
        checked += 1;
    }
}

#[test]
fn large_packed_frames_arrive_byte_for_byte() {
    // 1920x1080 RGB: 6.2 MB, rows of 5760 bytes (GStreamer's stride too).
    every_byte_arrives("large-packed", 1920, 1080, 5);
}

#[test]
fn large_padded_frames_arrive_byte_for_byte() {
    // 1922 pixels: 5766-byte rows in the ring, 5768 in GStreamer's layout,
    // so every row is restrided.
    every_byte_arrives("large-padded", 1922, 1080, 5);
}

#[test]
fn a_writer_publishing_flat_out_never_gets_a_torn_large_frame_pushed() {
    let (mut w, _p, sink, _guard) = rig("large-torn", 1920, 1080);
    // Each frame is one byte value, its id: a copy that mixes two frames
    // holds two values.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                w.publish(|slot| {
                    slot.fill(id as u8);
                    FrameMeta::new(id, 0, slot.len() as u64)
                });
                id += 1;
            }
            id
        })
    };
    let mut pulled = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut mixed = Vec::new();
    while pulled < 200 && Instant::now() < deadline {
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) else { continue };
        let buf = sample.buffer().unwrap();
        let map = buf.map_readable().unwrap();
        let want = buf.offset() as u8;
        if let Some(at) = map.iter().position(|&b| b != want) {
            mixed.push((buf.offset(), at, map[at]));
        }
        pulled += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let published = writer.join().unwrap();
    assert!(pulled >= 50, "only {pulled} frames pulled in 60 s");
    assert!(published > pulled, "the writer ran ahead of the copy ({published} published)");
    assert!(mixed.is_empty(), "torn frames pushed (frame, byte, value): {mixed:?}");
}
