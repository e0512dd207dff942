//! The bridge with real clients: ffprobe, gst-launch, the raw RTSP client;
//! authentication, --max-clients and command-line errors.
#![forbid(unsafe_code)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Runs `gst-launch-1.0 rtspsrc ! rtph264depay ! fakesink num-buffers=N`;
/// true when the sink got its N frames (gst-launch prints "Got EOS" then).
/// NB: the exit status is not used: when a client's teardown races another
/// client's on the shared media, rtspsrc sometimes reports "Could not send
/// message" for its PAUSE *after* it got all its frames.
fn gst_launch_frames(url: &str, n: u32) -> (bool, String) {
    let out = Command::new("gst-launch-1.0")
        .args(["rtspsrc", &format!("location={url}"), "protocols=tcp"])
        .args(["!", "rtph264depay", "!", "fakesink", &format!("num-buffers={n}")])
        .stdin(Stdio::null())
        .output()
        .expect("run gst-launch-1.0");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (text.contains("Got EOS from element"), text)
}

#[test]
fn ffprobe_gst_launch_and_two_clients() {
    require_tool("ffprobe");
    require_tool("gst-launch-1.0");
    let name = unique("probe");
    let _p = producer(&name, 640, 360, "rgb24");
    let (b, url) = bridge(&name, &[]);

    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_name,width,height"])
        .args(["-of", "default=noprint_wrappers=1", &url])
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ffprobe failed: {}\n{}", String::from_utf8_lossy(&out.stderr), b.log());
    assert!(text.contains("codec_name=h264"), "{text}");
    assert!(text.contains("width=640") && text.contains("height=360"), "{text}");

    // gst-launch reads 30 frames (access units after the depayloader).
    let (ok, text) = gst_launch_frames(&url, 30);
    assert!(ok, "gst-launch did not get 30 frames: {text}\n{}", b.log());

    // Two clients at once, each receiving frames of the one shared media.
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut c = RtspClient::connect(&url).expect("connect");
                c.play(&url).unwrap_or_else(|r| panic!("PLAY refused: {r:?}"));
                let n = c.receive_frames(60, Duration::from_secs(20));
                c.teardown(&url);
                n
            })
        })
        .collect();
    // Meanwhile a gst-launch client too.
    let (ok, text) = gst_launch_frames(&url, 30);
    assert!(ok, "third client did not get 30 frames: {text}\n{}", b.log());
    for c in clients {
        assert_eq!(c.join().unwrap(), 60, "a concurrent client got too few frames; bridge:\n{}", b.log());
    }
}

#[test]
fn authentication() {
    let name = unique("auth");
    let _p = producer(&name, 320, 240, "i420");
    let (b, url) = bridge(&name, &["--auth", "viewer:s3cret"]);

    let mut c = RtspClient::connect(&url).unwrap();
    let r = c.play(&url).expect_err("no credentials must be refused");
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("WWW-Authenticate").is_some_and(|v| v.starts_with("Basic")), "{r:?}");

    let mut c = RtspClient::connect(&url).unwrap().with_basic("viewer", "wrong");
    assert_eq!(c.play(&url).expect_err("wrong password must be refused").status, 401);
    let mut c = RtspClient::connect(&url).unwrap().with_basic("intruder", "s3cret");
    assert_eq!(c.play(&url).expect_err("wrong user must be refused").status, 401);

    let mut c = RtspClient::connect(&url).unwrap().with_basic("viewer", "s3cret");
    c.play(&url).unwrap_or_else(|r| panic!("right credentials refused: {r:?}\n{}", b.log()));
    assert_eq!(c.receive_frames(10, Duration::from_secs(20)), 10);
    c.teardown(&url);
}

#[test]
fn max_clients_refuses_the_next_client() {
    let name = unique("max");
    let _p = producer(&name, 320, 240, "nv12");
    let (b, url) = bridge(&name, &["--max-clients", "1"]);

    let mut first = RtspClient::connect(&url).unwrap();
    first.play(&url).unwrap_or_else(|r| panic!("first client refused: {r:?}"));
    assert_eq!(first.receive_frames(5, Duration::from_secs(20)), 5);

    let mut second = RtspClient::connect(&url).unwrap();
    let r = second.play(&url).expect_err("second client must be refused");
    assert_eq!(r.status, 503, "{r:?}");
    drop(second);

    // The first keeps streaming; once it leaves, a new client is accepted.
    assert_eq!(first.receive_frames(5, Duration::from_secs(20)), 5);
    first.teardown(&url);
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = RtspClient::connect(&url).unwrap();
        match c.play(&url) {
            Ok(()) => {
                assert_eq!(c.receive_frames(5, Duration::from_secs(20)), 5);
                break;
            }
            Err(r) => {
                assert_eq!(r.status, 503, "{r:?}");
                assert!(std::time::Instant::now() < deadline, "slot never freed; bridge:\n{}", b.log());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn run_bridge_expect_error(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shmcast-rtsp")).args(args).output().expect("run shmcast-rtsp");
    let err = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "expected one error line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_string()
}

#[test]
fn command_line_errors_are_one_line() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let e = run_bridge_expect_error(&["--name", "x", "--listen", &addr]);
    assert!(e.contains("cannot listen on") && e.contains("in use"), "{e}");

    let e = run_bridge_expect_error(&["--name", "x", "--mount", "cam0"]);
    assert!(e.contains("--mount") && e.contains("'/'"), "{e}");
    let e = run_bridge_expect_error(&["--name", "x", "--encoder", "vp9"]);
    assert!(e.contains("unknown --encoder"), "{e}");
    let e = run_bridge_expect_error(&["--name", "x", "--auth", "nopassword"]);
    assert!(e.contains("USER:PASSWORD"), "{e}");

    // No producer: waits (and says so), then --attach-timeout makes it an error.
    let name = unique("absent");
    let out = Command::new(env!("CARGO_BIN_EXE_shmcast-rtsp"))
        .args(["--name", &name, "--listen", "127.0.0.1:0", "--attach-timeout", "1"])
        .output()
        .unwrap();
    let err = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("waiting for the producer"), "{err}");
    assert!(err.contains("no producer for stream"), "{err}");
}

#[test]
fn waits_for_a_late_producer_and_stops_cleanly() {
    let name = unique("late");
    let mut b = Proc::spawn(
        "shmcast-rtsp",
        Command::new(env!("CARGO_BIN_EXE_shmcast-rtsp")).args(["--name", &name, "--listen", "127.0.0.1:0"]),
    );
    b.wait_for_line("waiting for the producer", Duration::from_secs(20));
    let _p = producer(&name, 320, 240, "yuyv");
    let url = url_in(&b.wait_for_line("serving", Duration::from_secs(20)));
    let mut c = RtspClient::connect(&url).unwrap();
    c.play(&url).unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(c.receive_frames(10, Duration::from_secs(20)), 10);
    // SIGTERM with a client connected: clean exit 0.
    b.signal("TERM");
    let st = b.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "{}", b.log());
}

#[test]
fn a_stalled_client_neither_grows_memory_nor_stalls_others() {
    let name = unique("stall");
    let _p = producer(&name, 1280, 720, "i420");
    let (b, url) = bridge(&name, &["--bitrate", "8000"]);
    // This client PLAYs and then never reads: its TCP window fills up.
    let mut stalled = RtspClient::connect(&url).unwrap();
    stalled.play(&url).unwrap_or_else(|r| panic!("{r:?}"));
    let mut reader = RtspClient::connect(&url).unwrap();
    reader.play(&url).unwrap_or_else(|r| panic!("{r:?}"));
    reader.receive_frames(30, Duration::from_secs(20));
    let before = b.rss_kib();
    // 6 s at 30 fps: the reading client keeps getting (nearly) every frame.
    let got = reader.receive_for(Duration::from_secs(6));
    let after = b.rss_kib();
    eprintln!("reader got {got} frames in 6 s; bridge VmRSS {before} -> {after} KiB");
    assert!(got >= 150, "the reading client got only {got} frames in 6 s next to a stalled one:\n{}", b.log());
    assert!(after < before + 8 * 1024, "bridge RSS grew from {before} to {after} KiB with a stalled client");
    drop(stalled);
}
