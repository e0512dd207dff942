//! Frames whose rows GStreamer pads (RGB 322 pixels wide: 966 bytes a row in
//! the ring, 968 in GStreamer's layout; I420 at 322x242 pads every plane)
//! go through `shmcastsink` → `shmcastsrc` with every pixel in place: the
//! sink packs the rows into the ring, the source restrides them back. Runs
//! both elements in this process (registered statically) and checks every
//! byte of every row of the buffers reaching the sink pad of a `fakesink`.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;

/// A playing pipeline, stopped on drop.
struct Playing(gst::Pipeline);

impl Drop for Playing {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

fn play(desc: &str) -> Playing {
    let p = Playing(gst::parse::launch(desc).unwrap().downcast::<gst::Pipeline>().unwrap());
    p.0.set_state(gst::State::Playing).unwrap();
    p
}

/// Runs a solid-colour `caps` stream through the ring and returns the
/// first `n` buffers the receiving `fakesink` got, with their caps.
fn through_the_ring(caps: &str, n: usize) -> (Vec<Vec<u8>>, gst::Caps) {
    gst::init().unwrap();
    gstshmcast::plugin_register_static().unwrap();
    let name = format!("gst-padded-{}-{}", std::process::id(), caps.len());
    let _tx = play(&format!(
        "videotestsrc is-live=true pattern=solid-color foreground-color=0xff102030 ! {caps},framerate=30/1 \
         ! shmcastsink stream={name}"
    ));
    let rx = play(&format!("shmcastsrc stream={name} ! fakesink name=out"));
    let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let pad = rx.0.by_name("out").unwrap().static_pad("sink").unwrap();
    {
        let got = Arc::clone(&got);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                got.lock().unwrap().push(b.map_readable().unwrap().to_vec());
            }
            gst::PadProbeReturn::Ok
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "fewer than {n} buffers from the ring");
        if let Some(msg) = rx.0.bus().unwrap().pop_filtered(&[gst::MessageType::Error]) {
            panic!("receiver error: {msg:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let caps = pad.current_caps().unwrap();
    let bufs = got.lock().unwrap().drain(..n).collect();
    (bufs, caps)
}

#[test]
fn padded_rgb_rows_keep_every_pixel() {
    let (bufs, caps) = through_the_ring("video/x-raw,format=RGB,width=322,height=240", 5);
    let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
    assert_eq!(info.stride()[0], 968, "GStreamer pads 966-byte rows to 968");
    for b in &bufs {
        assert_eq!(b.len(), info.size());
        for y in 0..240 {
            let row = &b[y * 968..y * 968 + 966];
            assert!(row.chunks(3).all(|px| px == [0x10, 0x20, 0x30]), "row {y}: {:?}", &row[..12]);
        }
    }
}

#[test]
fn padded_i420_planes_keep_every_pixel() {
    let (bufs, caps) = through_the_ring("video/x-raw,format=I420,width=322,height=242", 5);
    let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
    // Y of 0x102030 in BT.601 limited range, and its chroma.
    let planes = [(322usize, 242usize), (161, 121), (161, 121)];
    for b in &bufs {
        assert_eq!(b.len(), info.size());
        for (p, &(w, h)) in planes.iter().enumerate() {
            let (off, stride) = (info.offset()[p], info.stride()[p] as usize);
            let first = b[off];
            for y in 0..h {
                let row = &b[off + y * stride..off + y * stride + w];
                assert!(row.iter().all(|v| *v == first), "plane {p} row {y} not uniform: {row:?}");
            }
        }
    }
}
