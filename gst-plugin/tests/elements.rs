//! The elements driven through the real GStreamer tools: what
//! `gst-inspect-1.0` shows, `shmcastsink` read by the workspace's own
//! consumers, `shmcastsrc` reading the workspace's producer (frames,
//! timestamps, restarts, format changes), and the errors users see.
#![forbid(unsafe_code)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

#[test]
fn inspect_shows_documented_properties_and_pad_templates() {
    for (element, props, pad) in [
        (
            "shmcastsink",
            &["stream", "slots", "hugepages", "mlock", "mode", "group", "stats"][..],
            "SINK template: 'sink'",
        ),
        (
            "shmcastsrc",
            &["stream", "start", "attach-timeout", "do-timestamp", "is-live", "stats"][..],
            "SRC template: 'src'",
        ),
    ] {
        let out = gst_tool("gst-inspect-1.0").arg(element).output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(pad), "{element}: no pad template:\n{text}");
        for p in props {
            let line = text.lines().find(|l| l.trim_start().starts_with(&format!("{p} ")));
            let line = line.unwrap_or_else(|| panic!("{element}: property {p} missing:\n{text}"));
            assert!(
                line.split_once(':').is_some_and(|(_, blurb)| blurb.trim().len() > 10),
                "{element}.{p} undocumented"
            );
        }
        for caps in ["RGB", "BGR", "GRAY8", "YUY2", "NV12", "I420", "image/jpeg"] {
            assert!(text.contains(caps), "{element}: {caps} missing from the pad template:\n{text}");
        }
    }
}

#[test]
fn videotestsrc_into_shmcastsink_is_read_by_detect_and_inspect() {
    let name = unique_name("gstsink");
    let l = |x: &str| format!("{name}.{x}");
    let mut g = Guard::new();
    g.segment(&name);
    let pipeline = format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,format=NV12,width=640,height=360,framerate=30/1 \
         ! shmcastsink stream={name}"
    );
    g.spawn(&l("sink"), &mut launch(&[], &pipeline));
    let info = wait_live(&g, &name, &l("sink"));
    assert_eq!((info["width"].as_u64(), info["height"].as_u64()), (Some(640), Some(360)), "{info}");
    assert_eq!(info["format"], "nv12", "{info}");
    let out = Command::new(bin("shmcast-detect"))
        .args(["--name", &name, "--frames", "45", "--events", "-", "--attach-timeout", "30"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .unwrap_or_else(|| panic!("no summary:\n{}", describe(&out)));
    assert_eq!(summary["frames"], 45, "{summary}");
    // Stopping the pipeline closes the stream and removes the segment.
    signal(g.child(&l("sink")).id(), "INT");
    wait_for(LONG, || g.child(&l("sink")).try_wait().ok().flatten())
        .unwrap_or_else(|| panic!("gst-launch ignored SIGINT:\n{}", g.log(&l("sink"))));
    assert!(!segment_path(&name).exists(), "segment left behind");
}

#[test]
fn every_ring_format_passes_through_sink_and_src() {
    // The sink publishes each format and the src delivers it back with the
    // same caps; JPEG frames keep their variable size.
    for (caps, fmt) in [
        ("video/x-raw,format=RGB", "rgb24"),
        ("video/x-raw,format=BGR", "bgr24"),
        ("video/x-raw,format=GRAY8", "gray8"),
        ("video/x-raw,format=YUY2", "yuyv"),
        ("video/x-raw,format=NV12", "nv12"),
        ("video/x-raw,format=I420", "i420"),
        ("video/x-raw,format=I420 ! jpegenc ! image/jpeg", "mjpeg"),
    ] {
        let name = unique_name(&format!("fmt-{fmt}"));
        let l = |x: &str| format!("{name}.{x}");
        let mut g = Guard::new();
        g.segment(&name);
        let pipeline = format!(
            "videotestsrc is-live=true ! {caps},width=320,height=240,framerate=30/1 ! shmcastsink stream={name}"
        );
        g.spawn(&l("sink"), &mut launch(&[], &pipeline));
        let info = wait_live(&g, &name, &l("sink"));
        assert_eq!(info["format"], fmt, "{info}");
        let (status, log) = run_to_end(
            &mut g,
            &l("src"),
            &mut launch(&["-v"], &format!("shmcastsrc stream={name} num-buffers=10 ! fakesink silent=false")),
        );
        assert!(status.success(), "{fmt}: {log}");
        let c = chains(&log);
        assert_eq!(c.len(), 10, "{fmt}: {log}");
        let want = caps.rsplit(" ! ").next().unwrap().replace("video/x-raw,format=", "format=(string)");
        let got = src_caps(&log, "shmcastsrc0");
        assert!(got.iter().any(|c| c.contains(&want) && c.contains("width=(int)320")), "{fmt}: {got:?}");
        if fmt == "mjpeg" {
            assert!(c.iter().all(|b| b.bytes > 0 && b.bytes < 320 * 240 * 2), "{c:?}");
        }
    }
}

#[test]
fn producer_into_shmcastsrc_gives_n_frames_with_monotonic_timestamps() {
    let name = unique_name("gstsrc");
    let l = |x: &str| format!("{name}.{x}");
    let mut g = Guard::new();
    g.segment(&name);
    producer(&mut g, &l("producer"), &name, &["--width", "640", "--height", "360", "--format", "rgb24", "--fps", "60"]);
    wait_live(&g, &name, &l("producer"));
    let n = 120;
    let pipeline = format!("shmcastsrc stream={name} num-buffers={n} ! fakesink silent=false sync=true");
    let (status, log) = run_to_end(&mut g, &l("src"), &mut launch(&["-v"], &pipeline));
    assert!(status.success(), "{log}");
    assert!(log.contains("Pipeline is live"), "is-live=true is the default:\n{log}");
    let c = chains(&log);
    assert_eq!(c.len(), n, "{log}");
    assert!(c.iter().all(|b| b.bytes == 640 * 360 * 3), "sizes");
    let pts: Vec<u64> = c.iter().map(|b| b.pts.expect("every buffer has a PTS")).collect();
    assert!(pts.windows(2).all(|w| w[1] > w[0]), "PTS not increasing: {pts:?}");
    // Frame ids (offsets) increase; gaps are marked DISCONT.
    for w in c.windows(2) {
        let (a, b) = (w[0].offset.unwrap(), w[1].offset.unwrap());
        assert!(b > a, "offsets {a} -> {b}");
        assert!(b == a + 1 || w[1].discont, "gap {a} -> {b} without DISCONT");
    }
    // Spacing follows the producer's 60 fps capture times (16.7 ms), not arrival.
    let mean = (pts[n - 1] - pts[0]) as f64 / (n - 1) as f64 / 1e6;
    assert!((10.0..30.0).contains(&mean), "mean PTS step {mean:.2} ms");
}

#[test]
fn shmcastsrc_not_live_prerolls_and_stamps_from_the_first_frame() {
    let name = unique_name("gstnotlive");
    let l = |x: &str| format!("{name}.{x}");
    let mut g = Guard::new();
    g.segment(&name);
    producer(&mut g, &l("producer"), &name, &["--width", "320", "--height", "240", "--format", "rgb24", "--fps", "60"]);
    wait_live(&g, &name, &l("producer"));
    let n = 60;
    let pipeline = format!("shmcastsrc stream={name} is-live=false num-buffers={n} ! fakesink silent=false sync=true");
    let (status, log) = run_to_end(&mut g, &l("src"), &mut launch(&["-v"], &pipeline));
    assert!(status.success(), "{log}");
    // A live pipeline skips the preroll; this one prerolls on the first frame.
    assert!(!log.contains("Pipeline is live"), "{log}");
    assert!(log.contains("Pipeline is PREROLLED"), "{log}");
    let c = chains(&log);
    assert_eq!(c.len(), n, "{log}");
    let pts: Vec<u64> = c.iter().map(|b| b.pts.expect("every buffer has a PTS")).collect();
    assert_eq!(pts[0], 0, "the first frame starts the timeline");
    assert!(pts.windows(2).all(|w| w[1] > w[0]), "PTS not increasing: {pts:?}");
    // Spacing follows the producer's 60 fps capture times (16.7 ms).
    let mean = (pts[n - 1] - pts[0]) as f64 / (n - 1) as f64 / 1e6;
    assert!((10.0..30.0).contains(&mean), "mean PTS step {mean:.2} ms");
}

#[test]
fn shmcastsrc_keeps_running_across_a_producer_kill_and_restart() {
    let name = unique_name("gstrestart");
    let l = |x: &str| format!("{name}.{x}");
    let mut g = Guard::new();
    g.segment(&name);
    let args = ["--width", "320", "--height", "240", "--format", "i420", "--fps", "30"];
    producer(&mut g, &l("p1"), &name, &args);
    let first = wait_live(&g, &name, &l("p1"));
    g.spawn(&l("src"), &mut launch(&["-v"], &format!("shmcastsrc stream={name} ! fakesink silent=false")));
    wait_for(LONG, || (chains(&g.log(&l("src"))).len() >= 20).then_some(()))
        .unwrap_or_else(|| panic!("no frames:\n{}", g.log(&l("src"))));
    signal(g.child(&l("p1")).id(), "KILL");
    let _ = g.child(&l("p1")).wait();
    let before = chains(&g.log(&l("src"))).len();
    producer(&mut g, &l("p2"), &name, &args);
    let second = wait_for(LONG, || inspect(&name).filter(|v| v["state"] == "live" && v["epoch"] != first["epoch"]))
        .unwrap_or_else(|| panic!("no second producer:\n{}", g.log(&l("p2"))));
    assert_ne!(first["pid"], second["pid"]);
    // The new producer's frames arrive: frame ids start again from 0.
    let c = wait_for(LONG, || {
        let c = chains(&g.log(&l("src")));
        (c.len() >= before + 20).then_some(c)
    })
    .unwrap_or_else(|| panic!("no frames after the restart:\n{}", g.log(&l("src"))));
    let restart = (before..c.len()).find(|&i| c[i].offset < c[i - 1].offset).expect("frame ids restart");
    assert!(c[restart].discont, "first frame of the new producer is DISCONT");
    let pts: Vec<u64> = c.iter().filter_map(|b| b.pts).collect();
    assert!(pts.windows(2).all(|w| w[1] > w[0]), "PTS not increasing across the restart");
    assert!(matches!(g.child(&l("src")).try_wait(), Ok(None)), "pipeline stopped:\n{}", g.log(&l("src")));
}

#[test]
fn shmcastsrc_renegotiates_when_the_producer_changes_format() {
    let name = unique_name("gstcaps");
    let l = |x: &str| format!("{name}.{x}");
    let mut g = Guard::new();
    g.segment(&name);
    producer(&mut g, &l("p1"), &name, &["--width", "320", "--height", "240", "--format", "rgb24", "--fps", "30"]);
    wait_live(&g, &name, &l("p1"));
    // videoconvert downstream accepts whatever the ring carries.
    let pipeline =
        format!("shmcastsrc stream={name} ! videoconvert ! video/x-raw,format=I420 ! fakesink name=out silent=false");
    g.spawn(&l("src"), &mut launch(&["-v"], &pipeline));
    wait_for(LONG, || (chains(&g.log(&l("src"))).len() >= 10).then_some(()))
        .unwrap_or_else(|| panic!("no frames:\n{}", g.log(&l("src"))));
    g.child(&l("p1")).kill().unwrap();
    let _ = g.child(&l("p1")).wait();
    producer(&mut g, &l("p2"), &name, &["--width", "640", "--height", "480", "--format", "nv12", "--fps", "30"]);
    wait_for(LONG, || chains(&g.log(&l("src"))).iter().any(|c| c.bytes == 640 * 480 * 3 / 2).then_some(()))
        .unwrap_or_else(|| panic!("no 640x480 frames after the format change:\n{}", g.log(&l("src"))));
    let caps = src_caps(&g.log(&l("src")), "shmcastsrc0");
    assert!(caps.first().is_some_and(|c| c.contains("format=(string)RGB") && c.contains("width=(int)320")), "{caps:?}");
    assert!(caps.last().is_some_and(|c| c.contains("format=(string)NV12") && c.contains("width=(int)640")), "{caps:?}");
    assert!(matches!(g.child(&l("src")).try_wait(), Ok(None)), "pipeline stopped:\n{}", g.log(&l("src")));
}

#[test]
fn shmcastsink_refuses_a_name_a_live_producer_owns() {
    let name = unique_name("gstbusy");
    let l = |x: &str| format!("{name}.{x}");
    let mut g = Guard::new();
    g.segment(&name);
    let pid = producer(&mut g, &l("producer"), &name, &["--width", "320", "--height", "240", "--fps", "30"]);
    wait_live(&g, &name, &l("producer"));
    let pipeline = format!("videotestsrc num-buffers=5 ! shmcastsink stream={name}");
    let (status, text) = run_to_end(&mut g, &l("sink"), &mut launch(&[], &pipeline));
    assert!(!status.success(), "{text}");
    let want = format!("stream {name} is owned by another running producer (pid {pid}, live, heartbeat");
    assert!(text.contains(&want), "no `{want}` in:\n{text}");
    // The producer's stream is untouched.
    assert_eq!(inspect(&name).unwrap()["pid"], pid);
}

#[test]
fn shmcastsrc_errors_clearly_on_a_foreign_segment_and_a_missing_producer() {
    let name = unique_name("gstforeign");
    let l = |x: &str| format!("{name}.{x}");
    let mut g = Guard::new();
    g.segment(&name);
    std::fs::write(segment_path(&name), vec![0x5au8; 3 * 4096]).unwrap();
    let (status, text) =
        run_to_end(&mut g, &l("foreign"), &mut launch(&[], &format!("shmcastsrc stream={name} ! fakesink")));
    assert!(!status.success(), "{text}");
    assert!(text.contains(&format!("cannot open stream {name}: bad magic")), "{text}");

    let missing = unique_name("gstmissing");
    let pipeline = format!("shmcastsrc stream={missing} attach-timeout=1 ! fakesink");
    let (status, text) = run_to_end(&mut g, &l("missing"), &mut launch(&[], &pipeline));
    assert!(!status.success(), "{text}");
    assert!(text.contains(&format!("cannot open stream {missing}: not found (is the producer running?)")), "{text}");
}

#[test]
fn waiting_shmcastsrc_stops_on_interrupt() {
    // No producer: create() is waiting when the pipeline is stopped.
    let name = unique_name("gstwait");
    let l = |x: &str| format!("{name}.{x}");
    let mut g = Guard::new();
    let pid = g.spawn(&l("src"), &mut launch(&[], &format!("shmcastsrc stream={name} ! fakesink")));
    wait_for(LONG, || g.log(&l("src")).contains("Setting pipeline to PLAYING").then_some(()))
        .unwrap_or_else(|| panic!("pipeline did not start:\n{}", g.log(&l("src"))));
    signal(pid, "INT");
    let status = wait_for(LONG, || g.child(&l("src")).try_wait().ok().flatten())
        .unwrap_or_else(|| panic!("shmcastsrc did not stop:\n{}", g.log(&l("src"))));
    assert!(status.success(), "{status}:\n{}", g.log(&l("src")));
}
