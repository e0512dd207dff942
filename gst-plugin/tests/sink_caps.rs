//! `shmcastsink` in a pipeline whose caps change mid-stream: the ring is
//! recreated with the new format (a new epoch) and a reader following the
//! stream sees both formats; EOS closes the stream. Runs the element in this
//! process (registered statically) so the test can change the caps.
#![forbid(unsafe_code)]

mod common;

use common::until;
use gstreamer as gst;
use gstreamer::prelude::*;
use shm_proto::{Event, Follower, PixelFormat, ProducerStatus, ReaderOptions, VideoFormat};

#[test]
fn caps_change_recreates_the_ring_and_eos_closes_it() {
    gst::init().unwrap();
    gstshmcast::plugin_register_static().unwrap();
    let name = format!("gst-capschange-{}", std::process::id());
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc is-live=true ! capsfilter name=cf caps=video/x-raw,format=RGB,width=320,height=240,framerate=30/1 \
         ! shmcastsink stream={name}"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    struct Null(gst::Pipeline);
    impl Drop for Null {
        fn drop(&mut self) {
            let _ = self.0.set_state(gst::State::Null);
        }
    }
    let p = Null(pipeline);
    p.0.set_state(gst::State::Playing).unwrap();

    let mut f = Follower::new(&name, ReaderOptions::default()).unwrap();
    let first = until(&mut f, "the first format", |e| match e {
        Event::Attached(a) => Some(a),
        _ => None,
    });
    assert_eq!(first.format, VideoFormat::new(320, 240, PixelFormat::Rgb24, 30, 1).unwrap());
    until(&mut f, "a 320x240 frame", |e| matches!(e, Event::Frame(fr) if fr.meta().len == 320 * 240 * 3).then_some(()));

    let cf = p.0.by_name("cf").unwrap();
    cf.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "NV12")
            .field("width", 640)
            .field("height", 480)
            .field("framerate", gst::Fraction::new(30, 1))
            .build(),
    );
    let second = until(&mut f, "the new format", |e| match e {
        Event::Attached(a) => Some(a),
        _ => None,
    });
    assert_eq!(second.format, VideoFormat::new(640, 480, PixelFormat::Nv12, 30, 1).unwrap());
    assert_ne!(second.epoch, first.epoch, "a new ring, a new epoch");
    until(&mut f, "a 640x480 frame", |e| {
        matches!(e, Event::Frame(fr) if fr.meta().len == 640 * 480 * 3 / 2).then_some(())
    });

    // EOS marks the stream closed.
    p.0.send_event(gst::event::Eos::new());
    until(&mut f, "the stream to close", |e| matches!(e, Event::Detached(ProducerStatus::Closed)).then_some(()));
    let stats = p.0.by_name("shmcastsink0").unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("segments").unwrap(), 2, "{stats}");
}
