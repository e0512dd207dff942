//! Every long-running binary exits within a second of SIGTERM, in every state:
//! waiting for its producer, attached to a crafted (hostile) segment, and
//! mid-stream with frames flowing — with its summary line where it has one.
//! The time measured is from the signal to the process being reaped.
#![forbid(unsafe_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use shm_proto::{CreateOptions, FrameMeta, PixelFormat, VideoFormat, Writer};
use shmcast_testkit::{Guard, bin, free_port, segment_path, signal, unique_name, wait_for};

/// The deadline the binaries promise.
const PROMISE: Duration = Duration::from_secs(1);

/// Waits until the child's log contains `needle` (the state we want to test).
fn wait_log(g: &Guard, label: &str, needle: &str) {
    wait_for(Duration::from_secs(30), || g.log(label).contains(needle).then_some(()))
        .unwrap_or_else(|| panic!("{label} never logged {needle:?}; log:\n{}", g.log(label)));
}

/// Sends SIGTERM and returns how long the process took to exit, asserting a
/// clean exit within the promise.
fn term(g: &mut Guard, label: &str, state: &str) -> Duration {
    let pid = g.child(label).id();
    let sent = Instant::now();
    signal(pid, "TERM");
    let status = loop {
        if let Some(s) = g.child(label).try_wait().expect("try_wait") {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(30) {
            panic!("{label} ({state}) ignored SIGTERM for 30 s; log:\n{}", g.log(label));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = sent.elapsed();
    eprintln!("{label} ({state}): exited {status} {} ms after SIGTERM", took.as_millis());
    assert!(status.success(), "{label} ({state}) exited with {status}; log:\n{}", g.log(label));
    assert!(took < PROMISE, "{label} ({state}) took {took:?} to honour SIGTERM; log:\n{}", g.log(label));
    took
}

/// A segment under `name` whose words are hostile: a heartbeat just ahead of
/// now (so it looks alive for a moment), `head` and every slot word at u64::MAX.
fn crafted_segment(name: &str) {
    let tmp = std::env::temp_dir().join(format!("e2e-craft-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let f = VideoFormat::new(320, 240, PixelFormat::Gray8, 30, 1).unwrap();
    let bytes = {
        let mut w =
            Writer::create("craft", f, &CreateOptions { slots: 4, dir: Some(tmp.clone()), ..Default::default() })
                .unwrap();
        w.publish(|b| FrameMeta::new(0, 0, b.len() as u64));
        std::fs::read(w.path()).unwrap()
    };
    let _ = std::fs::remove_dir_all(&tmp);
    let mut b = bytes;
    let put = |b: &mut Vec<u8>, off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    put(&mut b, 1024 + 8, shm_proto::os::monotonic_ns() + 1_900_000_000);
    put(&mut b, 1024 + 128, u64::MAX);
    for i in 0..4 {
        put(&mut b, 4096 + 128 * i, u64::MAX);
    }
    std::fs::write(segment_path(name), &b).unwrap();
}

fn producer(g: &mut Guard, name: &str, size: (&str, &str), fps: &str) {
    g.segment(name);
    let label = format!("producer-{name}");
    g.spawn(
        &label,
        Command::new(bin("shmcast-producer"))
            .args(["--name", name, "--source", "testsrc", "--width", size.0, "--height", size.1, "--fps", fps]),
    );
    wait_for(Duration::from_secs(30), || segment_path(name).exists().then_some(()))
        .unwrap_or_else(|| panic!("producer never created its segment; log:\n{}", g.log(&label)));
}

#[test]
fn detector_honours_sigterm_in_every_state() {
    // Waiting for a producer that never comes.
    let name = unique_name("sig-det-wait");
    let mut g = Guard::new();
    g.spawn("det-wait", Command::new(bin("shmcast-detect")).args(["--name", &name, "--events", "-"]));
    wait_log(&g, "det-wait", "waiting for the producer");
    term(&mut g, "det-wait", "waiting");
    assert!(g.log("det-wait").contains("\"type\":\"summary\""), "no summary line:\n{}", g.log("det-wait"));

    // Attached to a crafted segment.
    let name = unique_name("sig-det-craft");
    g.segment(&name);
    crafted_segment(&name);
    g.spawn("det-craft", Command::new(bin("shmcast-detect")).args(["--name", &name, "--events", "-"]));
    wait_log(&g, "det-craft", "attached to producer");
    term(&mut g, "det-craft", "attached to a crafted segment");
    assert!(g.log("det-craft").contains("\"type\":\"summary\""), "no summary line:\n{}", g.log("det-craft"));

    // Mid-stream: 4K frames as fast as the producer can make them.
    let name = unique_name("sig-det-run");
    producer(&mut g, &name, ("3840", "2160"), "0");
    g.spawn("det-run", Command::new(bin("shmcast-detect")).args(["--name", &name, "--events", "-"]));
    wait_log(&g, "det-run", "detector ready");
    term(&mut g, "det-run", "mid-stream at 4K");
    assert!(g.log("det-run").contains("\"type\":\"summary\""), "no summary line:\n{}", g.log("det-run"));
}

#[test]
fn inspect_watch_honours_sigterm_on_a_crafted_segment() {
    let name = unique_name("sig-insp");
    let mut g = Guard::new();
    g.segment(&name);
    crafted_segment(&name);
    g.spawn(
        "insp",
        Command::new(bin("shmcast-inspect")).args(["--name", &name, "--watch", "--json", "--interval", "5"]),
    );
    wait_log(&g, "insp", "\"name\"");
    term(&mut g, "insp", "watching a crafted segment");
}

#[test]
fn rtsp_bridge_and_producer_honour_sigterm() {
    let mut g = Guard::new();
    let name = unique_name("sig-rtsp");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    g.spawn(
        "rtsp-wait",
        Command::new(bin("shmcast-rtsp")).args(["--name", &name, "--listen", &listen, "--mount", "/s"]),
    );
    wait_log(&g, "rtsp-wait", "listening");
    term(&mut g, "rtsp-wait", "no producer, no client");

    producer(&mut g, &name, ("1280", "720"), "30");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    g.spawn(
        "rtsp-run",
        Command::new(bin("shmcast-rtsp")).args(["--name", &name, "--listen", &listen, "--mount", "/s"]),
    );
    wait_log(&g, "rtsp-run", "listening");
    g.spawn(
        "client",
        Command::new("gst-launch-1.0").args([
            "-q",
            "rtspsrc",
            &format!("location=rtsp://{listen}/s"),
            "protocols=tcp",
            "!",
            "fakesink",
        ]),
    );
    wait_log(&g, "rtsp-run", "producer found; serving");
    term(&mut g, "rtsp-run", "serving a client");
    term(&mut g, &format!("producer-{name}"), "publishing at 30 fps");
    assert!(!segment_path(&name).exists(), "the producer left its segment behind");
}
