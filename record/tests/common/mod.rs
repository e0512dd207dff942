//! Helpers for the recorder's process tests: start the real producer and
//! recorder under a guard, read the catalog through `shmcast-record ls
//! --json`, and decode frame stamps from segments, clips and images with
//! GStreamer.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
pub use shmcast_testkit::{Guard, bin, describe, pid_alive, require_tool, segment_path, signal, unique_name, wait_for};

/// Generous bound for things that normally take a second or two (the
/// machine is shared and loaded).
pub const LONG: Duration = Duration::from_secs(120);

/// A fresh directory under the temp dir, removed by the guard.
pub fn temp_dir(g: &mut Guard, tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shmcast-record-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    g.path(&d);
    d
}

/// Starts the test-pattern producer and waits for its ring.
pub fn producer(g: &mut Guard, label: &str, name: &str, size: (u32, u32), format: &str, slots: u32) -> u32 {
    let _ = std::fs::remove_file(segment_path(name));
    let pid = g.spawn(
        label,
        Command::new(bin("shmcast-producer")).args([
            "--name",
            name,
            "--source",
            "testsrc",
            "--width",
            &size.0.to_string(),
            "--height",
            &size.1.to_string(),
            "--format",
            format,
            "--slots",
            &slots.to_string(),
            "--fps",
            "30",
        ]),
    );
    g.segment(name);
    assert!(
        wait_for(LONG, || segment_path(name).exists().then_some(())).is_some(),
        "producer did not create its ring:\n{}",
        g.log(label)
    );
    pid
}

/// Starts the recorder and waits for its "recording" line.
pub fn recorder(g: &mut Guard, label: &str, name: &str, dir: &Path, extra: &[&str]) -> u32 {
    let mut cmd = Command::new(bin("shmcast-record"));
    cmd.args(["--name", name, "--dir", dir.to_str().unwrap()]).args(extra);
    let pid = g.spawn(label, &mut cmd);
    assert!(
        wait_for(LONG, || g.log(label).contains("recording").then_some(())).is_some(),
        "recorder did not start:\n{}",
        g.log(label)
    );
    pid
}

/// `shmcast-record ls --dir DIR --json`.
pub fn ls(dir: &Path) -> serde_json::Value {
    let out =
        Command::new(bin("shmcast-record")).args(["ls", "--dir", dir.to_str().unwrap(), "--json"]).output().unwrap();
    assert!(out.status.success(), "ls failed: {}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ls --json is not JSON: {e}\n{}", describe(&out)))
}

/// The segments of an `ls --json` listing.
pub fn segments(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["segments"].as_array().cloned().unwrap_or_default()
}

/// Closed segments with frames.
pub fn closed(v: &serde_json::Value) -> Vec<serde_json::Value> {
    segments(v).into_iter().filter(|s| s["state"] == "closed" && s["frames"].as_u64().unwrap_or(0) > 0).collect()
}

/// Frames in closed segments.
pub fn closed_frames(v: &serde_json::Value) -> u64 {
    closed(v).iter().map(|s| s["frames"].as_u64().unwrap()).sum()
}

/// Runs `shmcast-record` with arguments; panics with its output on failure.
pub fn run_ok(args: &[&str]) -> String {
    let out = Command::new(bin("shmcast-record")).args(args).output().unwrap();
    assert!(out.status.success(), "shmcast-record {args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Decodes a media file (segment, clip, PNG/JPEG) and reads the stamp of
/// every frame: `(frame id, time µs mod 2^32)`, `None` where it does not decode.
pub fn stamps(path: &Path) -> Vec<Option<(u32, u32)>> {
    gst::init().unwrap();
    let p = gst::parse::launch(&format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! video/x-raw,format=GRAY8 ! appsink name=sink sync=false",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = p.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut out = Vec::new();
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        let st = (|| {
            let info = gst_video::VideoInfo::from_caps(s.caps()?).ok()?;
            let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(s.buffer()?, &info).ok()?;
            let y = frame.plane_data(0).ok()?;
            shm_proto::stamp::decode_luma(y, info.stride()[0] as usize, 1, info.width(), info.height())
        })();
        out.push(st.map(|s| (s.frame_id, s.time_us)));
        if sink.is_eos() {
            break;
        }
    }
    let bus = p.bus().unwrap();
    let err = bus.pop_filtered(&[gst::MessageType::Error]);
    p.set_state(gst::State::Null).unwrap();
    if out.is_empty() {
        panic!("{} did not decode: {err:?}", path.display());
    }
    out
}

/// The frame ids decoded from a file, asserting every stamp decodes.
pub fn ids(path: &Path) -> Vec<u64> {
    stamps(path)
        .into_iter()
        .enumerate()
        .map(|(i, s)| u64::from(s.unwrap_or_else(|| panic!("frame {i} of {} has no readable stamp", path.display())).0))
        .collect()
}

/// The stamp of a single image.
pub fn image_id(path: &Path) -> u64 {
    let s = stamps(path);
    assert_eq!(s.len(), 1, "{} holds {} frames", path.display(), s.len());
    u64::from(s[0].unwrap_or_else(|| panic!("{} has no readable stamp", path.display())).0)
}

/// Scrapes one metric value from the recorder's metrics endpoint.
pub fn metric(addr: &str, name: &str) -> Option<f64> {
    let text = shmcast_testkit::scrape(addr)?;
    shmcast_testkit::value(&shmcast_testkit::parse_metrics(&text), name)
}

/// Appends a line to a file (as the detector does).
pub fn append_line(path: &Path, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    writeln!(f, "{line}").unwrap();
}
