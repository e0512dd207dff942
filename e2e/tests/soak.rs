//! The short CI variant of `scripts/soak.sh`: the whole pipeline for 2 minutes
//! with RTSP client churn and producer restarts (kill -9 and SIGTERM), memory
//! sampled for every process; it must end by itself, pass, and print the
//! growth of each process.
#![forbid(unsafe_code)]

use std::process::Command;
use std::time::Duration;

use shmcast_testkit::{Guard, bin, bin_dir, require_tool, script, wait_for};

#[test]
fn soak_ci_variant_passes() {
    for b in ["shmcast-producer", "shmcast-detect", "shmcast-rtsp"] {
        bin(b);
    }
    for t in ["ffprobe", "gst-launch-1.0", "python3"] {
        require_tool(t);
    }
    let mut g = Guard::new();
    let mut cmd = Command::new(script("soak.sh"));
    cmd.arg("--ci").arg("--bin-dir").arg(bin_dir());
    g.spawn("soak", &mut cmd);
    // The run lasts 2 minutes; the bound is generous for a loaded machine
    // (it is a deadline against hanging, not a timing assertion).
    let status = wait_for(Duration::from_secs(600), || g.child("soak").try_wait().ok().flatten())
        .unwrap_or_else(|| panic!("soak.sh --ci did not finish within 10 min; output:\n{}", g.log("soak")));
    let out = g.log("soak");
    assert!(status.success(), "soak.sh --ci failed ({status}):\n{out}");
    for want in ["by kill -9", "by SIGTERM", "anon MB/h", "\"type\":\"summary\"", "soak: ok"] {
        assert!(out.contains(want), "soak output lacks `{want}`:\n{out}");
    }
    for p in ["producer", "detect", "rtsp"] {
        assert!(
            out.lines().any(|l| l.starts_with(p) && l.trim_end().ends_with("ok")),
            "no passing growth line for {p}:\n{out}"
        );
    }
}
