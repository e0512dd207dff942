//! An MJPEG ring is served as RTP/JPEG without re-encoding.
#![forbid(unsafe_code)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use shm_proto::{CreateOptions, FrameMeta, PixelFormat, VideoFormat, Writer};

/// Publishes JPEG frames from videotestsrc ! jpegenc into an MJPEG ring.
fn mjpeg_producer(name: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    gst::init().unwrap();
    let format = VideoFormat::new(320, 240, PixelFormat::Mjpeg, 30, 1).unwrap();
    let mut w = Writer::create(name, format, &CreateOptions::default()).expect("create MJPEG ring");
    w.set_live();
    let p = gst::parse::launch(
        "videotestsrc is-live=true ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 ! jpegenc ! \
         appsink name=sink sync=false max-buffers=2",
    )
    .expect("videotestsrc ! jpegenc (gstreamer1.0-plugins-good installed?)")
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = p.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    std::thread::spawn(move || {
        let mut id = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) else { continue };
            let Some(buf) = sample.buffer() else { continue };
            let Ok(map) = buf.map_readable() else { continue };
            let jpeg = map.as_slice();
            w.publish(|slot| {
                let n = jpeg.len().min(slot.len());
                slot[..n].copy_from_slice(&jpeg[..n]);
                FrameMeta::new(id, shm_proto::os::realtime_ns(), n as u64)
            });
            id += 1;
        }
        let _ = p.set_state(gst::State::Null);
    })
}

/// Stops the writer thread and unlinks the ring even when the test fails.
struct Cleanup(String, Arc<AtomicBool>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        self.1.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(shm_proto::segment::default_dir().join(format!("shmcast.{}", self.0)));
    }
}

#[test]
fn mjpeg_is_passed_through_as_rtp_jpeg() {
    require_tool("ffprobe");
    let name = unique("mjpeg");
    let stop = Arc::new(AtomicBool::new(false));
    let _cleanup = Cleanup(name.clone(), Arc::clone(&stop));
    let producer = mjpeg_producer(&name, Arc::clone(&stop));
    let (b, url) = bridge(&name, &[]);
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_name,width,height"])
        .args(["-of", "default=noprint_wrappers=1", &url])
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("codec_name=mjpeg"), "{text} {}\n{}", String::from_utf8_lossy(&out.stderr), b.log());
    assert!(text.contains("width=320") && text.contains("height=240"), "{text}");
    let mut c = RtspClient::connect(&url).unwrap();
    c.play(&url).unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(c.receive_frames(30, Duration::from_secs(20)), 30);
    c.teardown(&url);
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
}
