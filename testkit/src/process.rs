//! Child processes that never outlive a test, and what a test asks of them.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a child gets to honour SIGTERM at drop before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// Whether a process is alive (and not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()).is_some_and(|c| c != 'Z' && c != 'X'),
        Err(_) => false,
    }
}

/// Sends a signal (`TERM`, `INT`, `KILL`, `9`, ...) with `kill(1)` (the tests
/// make no raw FFI calls).
pub fn signal(pid: u32, sig: &str) {
    let sig = sig.trim_start_matches('-');
    let _ = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).stderr(Stdio::null()).status();
}

/// A field of `/proc/PID/status`, e.g. `Cpus_allowed_list`.
pub fn proc_status_field(pid: u32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

/// Resident set size of process `pid` in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_field(pid, "VmRSS").and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
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

/// `s` without ANSI escape sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One child process of a test. Its stdout and stderr go to log files (so
/// nothing blocks on a full pipe, and the logs can be read at any time); at
/// drop it gets SIGTERM, then SIGKILL, and its log files and the segments
/// registered with [`Proc::segment`] are removed — also when the test fails.
pub struct Proc {
    /// The child; wait on it or check it directly when needed.
    pub child: Child,
    label: String,
    out: PathBuf,
    err: PathBuf,
    segments: Vec<String>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` (stdin from /dev/null, `NO_COLOR=1`); `label` names it in
    /// failure messages and log file names.
    pub fn spawn(label: &str, cmd: &mut Command) -> Proc {
        static N: AtomicU32 = AtomicU32::new(0);
        // Relaxed: only uniqueness of the number matters.
        let n = N.fetch_add(1, Ordering::Relaxed);
        let safe: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(40).collect();
        let base = std::env::temp_dir().join(format!("shmcast-test-{}-{n}-{safe}", std::process::id()));
        let (out, err) = (base.with_extension("out"), base.with_extension("err"));
        let file = |p: &PathBuf| std::fs::File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        let child = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file(&out))
            .stderr(file(&err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label} ({cmd:?}): {e}"));
        Proc { child, label: label.to_string(), out, err, segments: Vec::new(), status: None }
    }

    /// Removes the segment of stream `name` at drop.
    pub fn segment(mut self, name: &str) -> Proc {
        self.segments.push(name.to_string());
        self
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// What it wrote to stderr so far (escape sequences removed).
    pub fn stderr(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.err).unwrap_or_default())
    }

    /// Everything it wrote so far: stdout, then stderr.
    pub fn log(&self) -> String {
        self.stdout() + &self.stderr()
    }

    /// Sends a signal (see [`signal`]).
    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// Its exit status, if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Polls `f` until it returns `Some`; fails the test naming `what` when
    /// the process exits first (unless `exit_ok`, which polls once more after
    /// the exit) or `timeout` passes.
    fn poll<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        exit_ok: bool,
        mut f: impl FnMut(&mut Proc) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if let Some(st) = self.try_exit() {
                // Its output is complete once it has exited: one last look.
                if let Some(v) = f(self).filter(|_| exit_ok) {
                    return v;
                }
                panic!("{} exited ({st}) before {what}; stderr:\n{}", self.label, self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?} from {}; stderr:\n{}",
                self.label,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until a line of stderr contains `what` and returns that line;
    /// fails the test when the process exits first or `timeout` passes.
    pub fn wait_for_line(&mut self, what: &str, timeout: Duration) -> String {
        self.poll(&format!("log line {what:?}"), timeout, true, |p| {
            p.stderr().lines().find(|l| l.contains(what)).map(str::to_string)
        })
    }

    /// Waits for the exit; fails the test when `timeout` passes first.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.poll("exit", timeout, true, |p| p.try_exit())
    }

    /// Waits for the exit (failing the test after `timeout`) and returns the
    /// status with everything written to stdout and stderr.
    pub fn output(mut self, timeout: Duration) -> Output {
        let status = self.wait_exit(timeout);
        Output { status, stdout: self.stdout().into_bytes(), stderr: self.stderr().into_bytes() }
    }

    /// Opens stream `name` (which this process creates) as soon as it
    /// exists; fails the test when the process exits first or `timeout` passes.
    pub fn open_stream(&mut self, name: &str, opts: &shm_proto::ReaderOptions, timeout: Duration) -> shm_proto::Reader {
        self.poll(&format!("stream {name}"), timeout, false, |p| match shm_proto::Reader::open(name, opts) {
            Ok(r) => Some(r),
            Err(e) if e.is_transient() => None,
            Err(e) => panic!("cannot open {name}: {e}; {} stderr:\n{}", p.label, p.stderr()),
        })
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_exit_quiet().is_none() {
            self.signal("TERM");
            let deadline = Instant::now() + TERM_GRACE;
            while Instant::now() < deadline && self.try_exit_quiet().is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for s in &self.segments {
            let _ = std::fs::remove_file(crate::segment_path(s));
            for dir in shm_proto::os::hugetlbfs_mounts() {
                let _ = std::fs::remove_file(dir.join(format!("shmcast.{s}")));
            }
        }
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
    }
}

impl Proc {
    fn try_exit_quiet(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }
}

/// Several children, segments and paths of one test, all cleaned up at drop:
/// commands registered with [`Guard::on_drop`] run first, then every child
/// gets SIGTERM (then SIGKILL), then segments and paths are removed.
#[derive(Default)]
pub struct Guard {
    children: Vec<Proc>,
    segments: Vec<String>,
    paths: Vec<PathBuf>,
    on_drop: Vec<Vec<String>>,
}

impl Guard {
    /// A new, empty guard.
    pub fn new() -> Guard {
        Guard::default()
    }

    /// Starts `cmd` as child `label` (see [`Proc::spawn`]); returns its pid.
    pub fn spawn(&mut self, label: &str, cmd: &mut Command) -> u32 {
        let p = Proc::spawn(label, cmd);
        let pid = p.pid();
        self.children.push(p);
        pid
    }

    /// The child `label`.
    pub fn proc(&mut self, label: &str) -> &mut Proc {
        self.children.iter_mut().find(|p| p.label == label).unwrap_or_else(|| panic!("no child {label}"))
    }

    /// What child `label` wrote so far: stdout, then stderr.
    pub fn log(&self, label: &str) -> String {
        self.children.iter().find(|p| p.label == label).unwrap_or_else(|| panic!("no child {label}")).log()
    }

    /// The child `label`, to check or wait on.
    pub fn child(&mut self, label: &str) -> &mut Child {
        &mut self.proc(label).child
    }

    /// Removes the segment of stream `name` at drop.
    pub fn segment(&mut self, name: &str) {
        self.segments.push(name.to_string());
    }

    /// Removes a file or directory at drop.
    pub fn path(&mut self, p: impl Into<PathBuf>) {
        self.paths.push(p.into());
    }

    /// Runs a command at drop, before the children are stopped.
    pub fn on_drop(&mut self, argv: &[&str]) {
        self.on_drop.push(argv.iter().map(|s| s.to_string()).collect());
    }

    /// SIGTERM to every child, then waits (bounded) for them; SIGKILL to the rest.
    pub fn stop_all(&mut self) {
        for p in &mut self.children {
            if p.try_exit_quiet().is_none() {
                p.signal("TERM");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in &mut self.children {
            while Instant::now() < deadline && p.try_exit_quiet().is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
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
            let _ = std::fs::remove_file(crate::segment_path(s));
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
