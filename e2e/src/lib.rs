//! Helpers for the end-to-end tests in `tests/`: locating the release
//! binaries and scripts, child-process guards that never leave processes or
//! segments behind, bounded polling, free ports, and fetching and parsing
//! Prometheus metrics with real tools (curl and the Python `prometheus_client`
//! parser).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root (this crate lives in `<root>/e2e`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e has a parent").to_path_buf()
}

/// The directory holding the release binaries: tests run from
/// `<target>/release/deps/`, so it is the parent of the test's directory.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap().to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// The path of a workspace binary, failing the test with a clear message when
/// it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} not found: build the workspace first (`cargo build --release --workspace`, or run \
         `cargo test --workspace --release`, which builds every binary)",
        p.display()
    );
    p
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

/// A unique stream name for a test (includes the pid).
pub fn unique_name(tag: &str) -> String {
    format!("e2e-{tag}-{}", std::process::id())
}

/// The segment file of a stream.
pub fn segment_path(name: &str) -> PathBuf {
    shm_dir().join(format!("shmcast.{name}"))
}

fn shm_dir() -> PathBuf {
    std::env::var_os("SHMCAST_SHM_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/dev/shm"))
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1 (bound then released: another process could
/// take it in between, which is unlikely enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// Whether a process is alive (and not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()).is_some_and(|c| c != 'Z' && c != 'X'),
        Err(_) => false,
    }
}

/// Sends a signal with `kill(1)` (the tests make no raw FFI calls).
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).stderr(Stdio::null()).status();
}

/// A field of `/proc/PID/status`, e.g. `Cpus_allowed_list`.
pub fn proc_status_field(pid: u32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

/// Kills its children (SIGTERM, then SIGKILL), removes the named segments and
/// paths, even when the test fails.
#[derive(Default)]
pub struct Guard {
    children: Vec<(String, Child)>,
    segments: Vec<String>,
    paths: Vec<PathBuf>,
    /// Shell commands run at drop (e.g. `deploy.sh stop`), before the kills.
    on_drop: Vec<Vec<String>>,
}

impl Guard {
    /// A new, empty guard.
    pub fn new() -> Guard {
        Guard::default()
    }

    /// Starts `cmd` with stdout/stderr to files under the system temp dir and
    /// keeps it. Returns its pid.
    pub fn spawn(&mut self, label: &str, cmd: &mut Command) -> u32 {
        let log = std::env::temp_dir().join(format!("e2e-{label}-{}.log", std::process::id()));
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label} ({cmd:?}): {e}"));
        let pid = child.id();
        self.children.push((label.to_string(), child));
        self.paths.push(log);
        pid
    }

    /// The log of a spawned child so far.
    pub fn log(&self, label: &str) -> String {
        let p = std::env::temp_dir().join(format!("e2e-{label}-{}.log", std::process::id()));
        std::fs::read_to_string(p).unwrap_or_default()
    }

    /// The child `label`, to check or wait on.
    pub fn child(&mut self, label: &str) -> &mut Child {
        &mut self.children.iter_mut().find(|(l, _)| l == label).unwrap_or_else(|| panic!("no child {label}")).1
    }

    /// Removes `/dev/shm/shmcast.<name>` at drop.
    pub fn segment(&mut self, name: &str) {
        self.segments.push(name.to_string());
    }

    /// Removes a file or directory at drop.
    pub fn path(&mut self, p: impl Into<PathBuf>) {
        self.paths.push(p.into());
    }

    /// Runs a command at drop, before the children are killed.
    pub fn on_drop(&mut self, argv: &[&str]) {
        self.on_drop.push(argv.iter().map(|s| s.to_string()).collect());
    }

    /// SIGTERM every child and wait (bounded) for them, then SIGKILL.
    pub fn stop_all(&mut self) {
        for (_, c) in &self.children {
            signal(c.id(), "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, c) in &mut self.children {
            while Instant::now() < deadline {
                if !matches!(c.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for argv in &self.on_drop {
            let _ = Command::new(&argv[0]).args(&argv[1..]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        self.stop_all();
        for s in &self.segments {
            let _ = std::fs::remove_file(segment_path(s));
        }
        for p in &self.paths {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Formats a finished command's status, stdout and stderr for a failure message.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Fetches `http://ADDR/metrics` with curl; `None` until the server answers.
pub fn scrape(addr: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", &format!("http://{addr}/metrics")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl (run scripts/setup.sh): {e}"));
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One parsed sample: metric name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Sample name (e.g. `x_bucket` for a histogram bucket).
    pub name: String,
    /// Label set.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// A parsed family: name, type, samples.
#[derive(Debug, Clone)]
pub struct Family {
    /// The family name as the parser reports it (counters lose `_total`).
    pub name: String,
    /// `counter`, `gauge`, `histogram`, ...
    pub kind: String,
    /// Samples.
    pub samples: Vec<Sample>,
}

const PARSER: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
# Non-finite values as strings: JSON has no NaN/Inf.
val = lambda v: v if math.isfinite(v) else str(v)
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": fam.name, "type": fam.type,
                "samples": [{"name": s.name, "labels": s.labels, "value": val(s.value)} for s in fam.samples]})
print(json.dumps(out))
"#;

/// Parses exposition text with the official Python client's parser (from the
/// Debian package `python3-prometheus-client`, hence `/usr/bin/python3`).
/// Panics with the parser's message when the text is invalid.
pub fn parse_metrics(text: &str) -> Vec<Family> {
    let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let mut child = Command::new(python)
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'prometheus_client'"),
        "the Prometheus parser is missing: run scripts/setup.sh (apt package python3-prometheus-client)"
    );
    assert!(out.status.success(), "the Prometheus parser rejected the metrics text: {err}\n--- text ---\n{text}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("parser output is JSON");
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    v.as_array()
        .expect("parser output is a list")
        .iter()
        .map(|f| Family {
            name: str_of(&f["name"]),
            kind: str_of(&f["type"]),
            samples: f["samples"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| Sample {
                    name: str_of(&s["name"]),
                    labels: s["labels"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), str_of(v)))
                        .collect(),
                    value: s["value"]
                        .as_f64()
                        .or_else(|| s["value"].as_str().and_then(|t| t.parse().ok()))
                        .unwrap_or(f64::NAN),
                })
                .collect(),
        })
        .collect()
}

/// Finds a family by its exposition name (`x_total` also matches family `x`).
pub fn family<'a>(fams: &'a [Family], name: &str) -> Option<&'a Family> {
    fams.iter().find(|f| f.name == name || name.strip_suffix("_total").is_some_and(|n| f.name == n))
}

/// The value of the sample named `name` with no `le`/quantile label (the first).
pub fn value(fams: &[Family], name: &str) -> Option<f64> {
    fams.iter().flat_map(|f| &f.samples).find(|s| s.name == name && !s.labels.contains_key("le")).map(|s| s.value)
}
