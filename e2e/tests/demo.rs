//! `scripts/demo.sh`: runs by itself for a while with its ffprobe check, serves
//! a stream a second client can probe, prints detector events and the summary,
//! and stops cleanly on --duration and on Ctrl-C (SIGINT), leaving nothing
//! running and nothing in /dev/shm.
#![forbid(unsafe_code)]

use std::process::Command;
use std::time::Duration;

use shmcast_testkit::{
    Guard, bin, bin_dir, free_port, pid_alive, require_tool, script, segment_path, signal, unique_name, wait_for,
};

fn demo_command(name: &str, port: u16, extra: &[&str]) -> Command {
    for b in ["shmcast-producer", "shmcast-detect", "shmcast-rtsp", "shmcast-web"] {
        bin(b);
    }
    let mut cmd = Command::new(script("demo.sh"));
    cmd.args(["--no-setup", "--no-build", "--name", name, "--listen", &format!("127.0.0.1:{port}")])
        .args(["--web", &format!("127.0.0.1:{}", free_port())])
        .arg("--bin-dir")
        .arg(bin_dir())
        .args(extra);
    cmd
}

/// Pids of live processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && pid_alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).split('\0').any(|a| a == needle))
        })
        .collect()
}

fn probe(url: &str) -> Option<String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-timeout", "10000000", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", url])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

#[test]
fn demo_runs_for_a_duration_with_its_check_and_stops_cleanly() {
    require_tool("ffprobe");
    let name = unique_name("demo");
    let port = free_port();
    let mut g = Guard::new();
    g.segment(&name);
    g.spawn("demo-duration", &mut demo_command(&name, port, &["--duration", "20", "--check"]));
    // A second viewer while the demo runs.
    let url = format!("rtsp://127.0.0.1:{port}/{name}");
    wait_for(Duration::from_secs(30), || g.log("demo-duration").contains("stop: Ctrl-C").then_some(()))
        .unwrap_or_else(|| panic!("demo did not come up; output:\n{}", g.log("demo-duration")));
    let seen = wait_for(Duration::from_secs(30), || probe(&url))
        .unwrap_or_else(|| panic!("ffprobe could not read {url}; demo output:\n{}", g.log("demo-duration")));
    assert_eq!(seen, "h264,1280,720", "stream parameters");
    let status = wait_for(Duration::from_secs(90), || g.child("demo-duration").try_wait().ok().flatten())
        .unwrap_or_else(|| panic!("demo did not stop after --duration; output:\n{}", g.log("demo-duration")));
    let out = g.log("demo-duration");
    assert!(status.success(), "demo failed ({status}):\n{out}");
    for want in [
        format!("RTSP stream:  {url}"),
        format!("ffplay -rtsp_transport tcp {url}"),
        "check ok: codec_name=h264 width=1280 height=720".into(),
        "detector summary: frames".into(),
        "web page:     http://127.0.0.1:".into(),
    ] {
        assert!(out.contains(&want), "demo output lacks `{want}`:\n{out}");
    }
    assert!(!segment_path(&name).exists(), "segment left behind:\n{out}");
    // The event printer (a subshell fed by the detector's stdout) ends at the
    // detector's EOF, a moment after the script may have returned.
    wait_for(Duration::from_secs(5), || processes_with(&name).is_empty().then_some(()))
        .unwrap_or_else(|| panic!("processes left: {:?}", processes_with(&name)));
}

#[test]
fn demo_stops_cleanly_on_ctrl_c() {
    let name = unique_name("demoint");
    let port = free_port();
    let mut g = Guard::new();
    g.segment(&name);
    let pid = g.spawn("demo-int", &mut demo_command(&name, port, &[]));
    wait_for(Duration::from_secs(30), || g.log("demo-int").contains("stop: Ctrl-C").then_some(()))
        .unwrap_or_else(|| panic!("demo did not come up; output:\n{}", g.log("demo-int")));
    let children = processes_with(&name);
    assert!(children.len() >= 3, "expected producer, detector and bridge: {children:?}");
    std::thread::sleep(Duration::from_secs(2));
    signal(pid, "INT");
    let status = wait_for(Duration::from_secs(60), || g.child("demo-int").try_wait().ok().flatten())
        .unwrap_or_else(|| panic!("demo ignored SIGINT; output:\n{}", g.log("demo-int")));
    let out = g.log("demo-int");
    assert!(status.success(), "Ctrl-C is a clean stop ({status}):\n{out}");
    assert!(out.contains("demo: stopping") && out.contains("detector summary"), "{out}");
    assert!(!segment_path(&name).exists(), "segment left behind:\n{out}");
    wait_for(Duration::from_secs(5), || processes_with(&name).is_empty().then_some(()))
        .unwrap_or_else(|| panic!("processes left: {:?}", processes_with(&name)));
}
