//! `scripts/deploy.sh` as the deployment tests drive it: with this build's
//! binaries, against one config and run directory in a fresh temporary
//! directory, stopped and cleaned up even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{Guard, bin_dir, describe, script};

/// Runs `scripts/deploy.sh ARGS` with this build's binaries
/// (`SHMCAST_BIN_DIR`) and the extra environment `env`.
pub fn deploy_sh(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(script("deploy.sh"));
    cmd.args(args).env("SHMCAST_BIN_DIR", bin_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run deploy.sh")
}

/// The pid of process `role` (`producer`, `detect`, `pipeline-hls`, ...) in
/// the output of `deploy.sh status --json`, when it runs.
pub fn pid_of(status: &serde_json::Value, role: &str) -> Option<u32> {
    status["processes"][role]["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

/// One deployment: a fresh directory `<tmp>/shmcast-deploy-<tag>-<pid>`
/// holding its config ([`Deployment::config`], written by
/// [`Deployment::write_config`]) and its run directory. At drop, in this
/// order: `deploy.sh stop`, the guard's children stopped, the stream's
/// segment and the directory removed.
pub struct Deployment {
    dir: PathBuf,
    config: PathBuf,
    run_dir: PathBuf,
    guard: Guard,
}

impl Deployment {
    /// A deployment of stream `stream` (whose segment is removed at drop) in
    /// a fresh directory named after `tag` (unique within a test binary).
    pub fn new(tag: &str, stream: &str) -> Deployment {
        let dir = std::env::temp_dir().join(format!("shmcast-deploy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let (config, run_dir) = (dir.join("deploy.toml"), dir.join("run"));
        let mut guard = Guard::new();
        guard.on_drop(&[
            script("deploy.sh").to_str().expect("UTF-8 path"),
            "stop",
            "--timeout",
            "3",
            "--run-dir",
            run_dir.to_str().expect("UTF-8 path"),
            config.to_str().expect("UTF-8 path"),
        ]);
        guard.segment(stream);
        guard.path(&dir);
        Deployment { dir, config, run_dir, guard }
    }

    /// The deployment's directory (removed at drop): a place for its outputs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The config file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The run directory (`--run-dir`): pid files and one `<role>.log` a process.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The guard cleaning up after the test, for more children or paths.
    pub fn guard(&mut self) -> &mut Guard {
        &mut self.guard
    }

    /// Writes the config file.
    pub fn write_config(&self, toml: &str) {
        std::fs::write(&self.config, toml).unwrap_or_else(|e| panic!("write {}: {e}", self.config.display()));
    }

    /// `deploy.sh ARGS --run-dir RUN CONFIG` (ARGS: the command and its flags).
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend([
            "--run-dir",
            self.run_dir.to_str().expect("UTF-8 path"),
            self.config.to_str().expect("UTF-8 path"),
        ]);
        deploy_sh(&all, &[])
    }

    /// `deploy.sh status --json`, parsed; fails the test when it is not JSON.
    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {}", describe(&out)))
    }

    /// The pid of process `role`, when it runs (see [`pid_of`]).
    pub fn pid(&self, role: &str) -> Option<u32> {
        pid_of(&self.status(), role)
    }

    /// What process `role` logged so far (empty when nothing yet).
    pub fn log(&self, role: &str) -> String {
        std::fs::read_to_string(self.run_dir.join(format!("{role}.log"))).unwrap_or_default()
    }
}
