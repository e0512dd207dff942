//! Helpers for the process tests: running the real `gst-launch-1.0` and
//! `gst-inspect-1.0` with this build's plugin (`GST_PLUGIN_PATH` pointing at
//! the directory holding `libgstshmcast.so`, a private registry per test
//! process), and reading what `fakesink -v` prints about each buffer.
#![allow(dead_code, unused_imports)]

use std::path::PathBuf;
use std::process::Command;

pub use shmcast_testkit::{
    Guard, bin, bin_dir, describe, free_port, require_tool, segment_path, signal, unique_name, wait_for,
};

/// The directory holding `libgstshmcast.so` (the release build's output dir).
pub fn plugin_dir() -> PathBuf {
    let dir = bin_dir();
    assert!(
        dir.join("libgstshmcast.so").is_file(),
        "{}/libgstshmcast.so not found: build it with `cargo build --release -p gst-plugin-shmcast`",
        dir.display()
    );
    dir
}

/// A command for a GStreamer tool that finds this build's plugin.
pub fn gst_tool(tool: &str) -> Command {
    require_tool(tool);
    let mut cmd = Command::new(tool);
    let registry = std::env::temp_dir().join(format!("shmcast-gst-registry-{}.bin", std::process::id()));
    cmd.env("GST_PLUGIN_PATH", plugin_dir()).env("GST_REGISTRY", registry).env_remove("GST_DEBUG");
    cmd
}

/// `gst-launch-1.0 [flags] PIPELINE...` (the description split on spaces, as
/// a shell would; quote nothing).
pub fn launch(flags: &[&str], pipeline: &str) -> Command {
    let mut cmd = gst_tool("gst-launch-1.0");
    cmd.args(flags).args(pipeline.split_whitespace());
    cmd
}

/// One buffer as `fakesink silent=false` prints it under `gst-launch-1.0 -v`:
/// `last-message = chain ******* (NAME:sink) (BYTES bytes, dts: .., pts: .., ..)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Chain {
    /// Payload bytes.
    pub bytes: u64,
    /// PTS in ns, when set.
    pub pts: Option<u64>,
    /// Buffer offset (the ring frame id for shmcastsrc).
    pub offset: Option<u64>,
    /// The DISCONT flag.
    pub discont: bool,
}

fn parse_time(s: &str) -> Option<u64> {
    // H:MM:SS.nnnnnnnnn
    let (hms, frac) = s.split_once('.')?;
    let mut it = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (it.next()??, it.next()??, it.next()??);
    Some(((h * 60 + m) * 60 + sec) * 1_000_000_000 + frac.parse::<u64>().ok()?)
}

/// The buffers `fakesink` reported in `log`, in order.
pub fn chains(log: &str) -> Vec<Chain> {
    log.lines()
        .filter(|l| l.contains("last-message = chain"))
        .filter_map(|l| {
            let inner = l.split_once("last-message = chain")?.1;
            let bytes = inner.split_once(") (")?.1.split_once(" bytes")?.0.parse().ok()?;
            let field = |key: &str| inner.split_once(key).map(|(_, r)| r.split([',', ' ']).next().unwrap_or(""));
            Some(Chain {
                bytes,
                pts: field("pts: ").and_then(parse_time),
                offset: field("offset: ").and_then(|v| v.parse().ok()),
                discont: inner.contains(" discont"),
            })
        })
        .collect()
}

/// The caps lines `gst-launch-1.0 -v` printed for `element`'s src pad.
pub fn src_caps(log: &str, element: &str) -> Vec<String> {
    let needle = format!("{element}.GstPad:src: caps = ");
    log.lines().filter_map(|l| l.split_once(&needle).map(|(_, c)| c.to_string())).collect()
}

/// Starts a test-pattern producer.
pub fn producer(g: &mut Guard, label: &str, name: &str, args: &[&str]) -> u32 {
    let mut cmd = Command::new(bin("shmcast-producer"));
    cmd.args(["--name", name, "--source", "testsrc"]).args(args);
    g.spawn(label, &mut cmd)
}

/// `shmcast-inspect --name NAME --json`, when it succeeds.
pub fn inspect(name: &str) -> Option<serde_json::Value> {
    let out = Command::new(bin("shmcast-inspect")).args(["--name", name, "--json"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Waits until the stream is live according to `shmcast-inspect`.
pub fn wait_live(g: &Guard, name: &str, label: &str) -> serde_json::Value {
    wait_for(std::time::Duration::from_secs(60), || inspect(name).filter(|v| v["state"] == "live"))
        .unwrap_or_else(|| panic!("stream {name} never became live; {label} output:\n{}", g.log(label)))
}

/// Runs `cmd` under the guard to its end and returns its exit status and
/// output; a process that does not end within 2 minutes fails the test with
/// its output (a hang detector, not a timing assertion).
pub fn run_to_end(g: &mut Guard, label: &str, cmd: &mut Command) -> (std::process::ExitStatus, String) {
    g.spawn(label, cmd);
    let status = wait_for(std::time::Duration::from_secs(120), || g.child(label).try_wait().ok().flatten())
        .unwrap_or_else(|| panic!("{label} did not end; output so far:\n{}", g.log(label)));
    // The log is complete once the process has ended.
    (status, g.log(label))
}

/// Polls the follower until `want` accepts an event (bounded, so a broken
/// element fails the test instead of hanging it).
pub fn until<T>(f: &mut shm_proto::Follower, what: &str, mut want: impl FnMut(shm_proto::Event<'_>) -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Some(v) = want(f.poll(std::time::Duration::from_millis(100)).expect("readable segment")) {
            return v;
        }
    }
    panic!("timed out waiting for {what}");
}
