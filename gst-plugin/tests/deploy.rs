//! A `[[pipeline]]` process in `scripts/deploy.sh`: a `gst-launch-1.0` line
//! reading the ring with `shmcastsrc` (here into HLS), pinned, restarted by
//! the supervisor after a SIGKILL, and stopped with the rest.
#![forbid(unsafe_code)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use shmcast_testkit::{pid_alive, proc_status_field, script};

const LONG: Duration = Duration::from_secs(60);

fn deploy(args: &[&str]) -> std::process::Output {
    Command::new(script("deploy.sh")).args(args).env("SHMCAST_BIN_DIR", bin_dir()).output().expect("run deploy.sh")
}

fn pipeline_pid(cfg: &str, run_dir: &str) -> Option<(u32, u64)> {
    let out = deploy(&["status", "--json", "--run-dir", run_dir, cfg]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let p = &v["processes"]["pipeline-hls"];
    Some((p["pid"].as_u64()? as u32, p["restarts"].as_u64()?))
}

fn segments(playlist: &Path) -> usize {
    std::fs::read_to_string(playlist).map_or(0, |t| t.lines().filter(|l| l.ends_with(".ts")).count())
}

#[test]
fn deploy_runs_a_supervised_pinned_gst_pipeline() {
    plugin_dir();
    bin("shmcast-producer");
    let name = unique_name("deploypipe");
    let dir = std::env::temp_dir().join(format!("shmcast-deploy-pipeline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (run_dir, cfg, playlist) = (dir.join("run"), dir.join("cfg.toml"), dir.join("live.m3u8"));
    std::fs::write(
        &cfg,
        format!(
            "[stream]\nname = \"{name}\"\nwidth = 320\nheight = 240\nformat = \"i420\"\nfps = 30\n\
             [run]\nbackoff_min = 0.2\nbackoff_max = 1.0\nstop_timeout = 5\n\
             [producer]\ncpus = \"0\"\n\
             [[pipeline]]\nname = \"hls\"\ncpus = \"1\"\n\
             launch = \"shmcastsrc stream={{stream}} ! videoconvert ! video/x-raw,format=I420 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! h264parse \
             ! hlssink2 target-duration=1 location={}/seg%05d.ts playlist-location={}\"\n",
            dir.display(),
            playlist.display()
        ),
    )
    .unwrap();
    let (c, r) = (cfg.to_str().unwrap().to_string(), run_dir.to_str().unwrap().to_string());
    let mut g = Guard::new();
    g.segment(&name);
    g.on_drop(&[script("deploy.sh").to_str().unwrap(), "stop", "--timeout", "3", "--run-dir", &r, &c]);
    g.path(&dir);

    // The dry run shows the gst-launch line, {stream} filled in, and the plugin path.
    let out = deploy(&["start", "--dry-run", "--run-dir", &r, &c]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(text.contains(&format!("gst-launch-1.0 -e shmcastsrc stream={name} '!' videoconvert")), "{text}");
    assert!(text.contains(&format!("GST_PLUGIN_PATH={}", bin_dir().display())), "{text}");
    assert!(text.contains("# pipeline-hls: restart=on-failure"), "{text}");

    let out = deploy(&["start", "--run-dir", &r, &c]);
    assert!(out.status.success(), "{}", describe(&out));
    let log = || std::fs::read_to_string(run_dir.join("pipeline-hls.log")).unwrap_or_default();
    wait_for(LONG, || (segments(&playlist) >= 2).then_some(()))
        .unwrap_or_else(|| panic!("no HLS segments; pipeline log:\n{}", log()));
    let (pid, restarts) = pipeline_pid(&c, &r).expect("pipeline running");
    assert_eq!(restarts, 0);
    assert_eq!(proc_status_field(pid, "Cpus_allowed_list").as_deref(), Some("1"), "pinned");

    // Killed: restarted with a new pid, and it delivers again.
    signal(pid, "KILL");
    let (pid2, restarts) = wait_for(LONG, || pipeline_pid(&c, &r).filter(|(p, _)| *p != pid))
        .unwrap_or_else(|| panic!("pipeline not restarted; log:\n{}", log()));
    assert_eq!(restarts, 1);
    let before = std::fs::metadata(&playlist).and_then(|m| m.modified()).unwrap();
    wait_for(LONG, || std::fs::metadata(&playlist).and_then(|m| m.modified()).ok().filter(|t| *t > before).map(|_| ()))
        .unwrap_or_else(|| panic!("restarted pipeline writes no playlist; log:\n{}", log()));

    let out = deploy(&["stop", "--run-dir", &r, &c]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!pid_alive(pid2), "pipeline still running after stop");
    assert!(!segment_path(&name).exists(), "segment left after stop");
}
