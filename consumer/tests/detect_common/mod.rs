//! Helpers shared by the detector's process tests: locating binaries, child
//! guards that kill on drop, unique names, bounded waits.
#![forbid(unsafe_code)]
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const DETECT: &str = env!("CARGO_BIN_EXE_shmcast-detect");

#[allow(unused_imports)]
pub use shmcast_testkit::{bin as sibling_bin, describe as show, json_lines, unique_name as unique};

/// `bash scripts/eval-detect.sh MODE` with none of the script's knobs
/// inherited from the caller's environment (a `SEED` or `WIDTH` exported in
/// a shell must not change what a test measures): the test sets the ones it
/// means with `.env`. `SHMCAST_VENV` (where the set-up put numpy) is kept.
#[allow(dead_code)]
pub fn eval_detect(mode: &str) -> Command {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/eval-detect.sh")).arg(mode);
    for knob in [
        "BIN_DIR",
        "CORPUS",
        "DETECT_ARGS",
        "EVENTS",
        "FORMAT",
        "FRAMES",
        "HEIGHT",
        "NOISE",
        "ONLY",
        "OUT",
        "SEED",
        "STATIC_CLIPS",
        "STATIC_FRAMES",
        "WIDTH",
    ] {
        cmd.env_remove(knob);
    }
    cmd
}

pub fn producer_bin() -> PathBuf {
    sibling_bin("shmcast-producer")
}

/// Kills the child (if still running) and removes the segment on drop.
pub struct Proc {
    pub child: Option<Child>,
    pub what: String,
}

impl Proc {
    pub fn spawn(what: &str, cmd: &mut Command) -> Proc {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc { child: Some(child), what: what.to_string() }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // `kill(1)`: std has no way to send SIGTERM, and this crate forbids raw FFI calls.
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status();
    }

    /// Waits up to `timeout` for exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for exit and collects output (stdout/stderr must be piped).
    pub fn output(mut self, timeout: Duration) -> Output {
        let status = self.wait_timeout(timeout);
        let child = self.child.take().expect("child");
        if status.is_none() {
            let mut c = child;
            let _ = c.kill();
            let out = c.wait_with_output().expect("output");
            panic!(
                "{} did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                self.what,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        child.wait_with_output().expect("output")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Removes `/dev/shm/shmcast.<name>` on drop.
pub struct Segment(pub String);

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/shmcast.{}", self.0));
    }
}

/// A producer on testsrc (fast, a ring holding every frame, gray8).
pub fn testsrc(name: &str, w: u32, h: u32, args: &[&str]) -> Command {
    let mut c = Command::new(producer_bin());
    c.args(["--name", name, "--source", "testsrc", "--width", &w.to_string(), "--height", &h.to_string()])
        .args(["--log-level", "warn"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}
