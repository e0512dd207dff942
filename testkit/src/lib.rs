//! Helpers shared by the shmcast tests and benchmarks, in one place:
//!
//! - where things are: [`repo_root`], [`bin_dir`], [`bin`], [`script`],
//!   [`require_tool`] (tests never skip: a missing tool fails the test);
//! - unique stream names and their segment files: [`unique_name`], [`segment_path`];
//! - child processes that never outlive a test: [`Proc`] (one child, its output
//!   in log files, SIGTERM then SIGKILL on drop) and [`Guard`] (several children,
//!   segments and paths removed on drop);
//! - waiting for the event a test needs, bounded by a deadline that fails the
//!   test: [`wait_for`], [`wait_until`], [`wait_for_file`], [`Proc::wait_for_line`],
//!   [`wait_for_metric`];
//! - `scripts/deploy.sh` against one config and run directory, stopped and
//!   cleaned up at drop: [`Deployment`], [`deploy_sh`], [`pid_of`];
//! - Prometheus scraping and parsing with the official Python parser: [`scrape`],
//!   [`parse_metrics`], [`family`], [`value`];
//! - the benchmark measures of `shmcast_common::bench`, re-exported:
//!   [`cpu_seconds`], [`percentile`], [`memcpy_fps`].
//!
//! A dev-dependency only (`publish = false`).
#![forbid(unsafe_code)]

mod deploy;
mod metrics;
mod process;

pub use deploy::{Deployment, deploy_sh, pid_of};
pub use metrics::{Family, Sample, family, parse_metrics, scrape, value, wait_for_metric};
pub use process::{Guard, Proc, describe, pid_alive, proc_status_field, rss_kib, signal, strip_ansi};
pub use shmcast_common::bench::{cpu_seconds, memcpy_fps, percentile, sorted};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root (this crate lives in `<root>/testkit`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testkit has a parent").to_path_buf()
}

/// The directory holding the workspace binaries: tests run from
/// `<target>/<profile>/deps/`, benchmark binaries from `<target>/<profile>/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("the running binary has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The path of a workspace binary, or a message saying how to build it.
pub fn try_bin(name: &str) -> Result<PathBuf, String> {
    let p = bin_dir().join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: build the workspace first (`cargo build --release --workspace`, or run \
             `cargo test --workspace --release`, which builds every binary)",
            p.display()
        ))
    }
}

/// The path of a workspace binary, failing the test with a clear message when
/// it has not been built.
pub fn bin(name: &str) -> PathBuf {
    try_bin(name).unwrap_or_else(|e| panic!("{e}"))
}

/// A script under `scripts/`.
pub fn script(name: &str) -> PathBuf {
    let p = repo_root().join("scripts").join(name);
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// Fails the test with a clear message when a required tool is missing
/// (tests never skip: `scripts/setup.sh` installs these).
pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "`{tool}` is not installed: run scripts/setup.sh");
}

/// A stream name unique to this test process: `<tag>-<pid>`. Tags are unique
/// within a test binary; the pid keeps parallel test binaries apart.
pub fn unique_name(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

/// The segment file of a stream (`$SHMCAST_SHM_DIR` or `/dev/shm`).
pub fn segment_path(name: &str) -> PathBuf {
    shm_proto::segment::default_dir().join(format!("shmcast.{name}"))
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes (then `None`).
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` until it returns `Some`; fails the test naming `what` when
/// `timeout` passes first.
pub fn wait_until<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for(timeout, f).unwrap_or_else(|| panic!("no {what} within {timeout:?}"))
}

/// Waits until `path` exists; fails the test when `timeout` passes first.
pub fn wait_for_file(path: &Path, timeout: Duration) {
    wait_until(&format!("file {}", path.display()), timeout, || path.exists().then_some(()));
}

/// A free TCP port on 127.0.0.1 (bound then released: another process could
/// take it in between, which is unlikely enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// Parses JSON lines, skipping anything else.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().filter_map(|l| serde_json::from_str(l.trim()).ok()).collect()
}
