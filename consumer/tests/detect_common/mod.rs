//! Helpers of the detector's process tests that only they need: the
//! detector binary, the evaluation script without inherited knobs, a test
//! pattern producer. Children, waits and names come from `shmcast-testkit`.
#![forbid(unsafe_code)]
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

pub const DETECT: &str = env!("CARGO_BIN_EXE_shmcast-detect");

#[allow(unused_imports)]
pub use shmcast_testkit::{Proc, describe as show, free_port, json_lines, unique_name as unique, wait_until};

/// `bash scripts/eval-detect.sh MODE` with none of the script's knobs
/// inherited from the caller's environment (a `SEED` or `WIDTH` exported in
/// a shell must not change what a test measures): the test sets the ones it
/// means with `.env`. `SHMCAST_VENV` (where the set-up put numpy) is kept.
pub fn eval_detect(mode: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(shmcast_testkit::script("eval-detect.sh")).arg(mode);
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
        "STATIC_MINUTES",
        "STATIC_TS",
        "WIDTH",
    ] {
        cmd.env_remove(knob);
    }
    cmd
}

pub fn producer_bin() -> PathBuf {
    shmcast_testkit::bin("shmcast-producer")
}

/// A producer on testsrc (`--log-level warn`; the test adds the rest).
pub fn testsrc(name: &str, w: u32, h: u32, args: &[&str]) -> Command {
    let mut c = Command::new(producer_bin());
    c.args(["--name", name, "--source", "testsrc", "--width", &w.to_string(), "--height", &h.to_string()])
        .args(["--log-level", "warn"])
        .args(args);
    c
}
