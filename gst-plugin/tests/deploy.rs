//! A `[[pipeline]]` process in `scripts/deploy.sh`: a `gst-launch-1.0` line
//! reading the ring with `shmcastsrc` (here into HLS), pinned, restarted by
//! the supervisor after a SIGKILL, and stopped with the rest.
#![forbid(unsafe_code)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use shmcast_testkit::{Deployment, pid_alive, pid_of, proc_status_field};

const LONG: Duration = Duration::from_secs(60);

/// The HLS pipeline's pid and restart count, when it runs.
fn pipeline(d: &Deployment) -> Option<(u32, u64)> {
    let st = d.status();
    Some((pid_of(&st, "pipeline-hls")?, st["processes"]["pipeline-hls"]["restarts"].as_u64()?))
}

fn segments(playlist: &Path) -> usize {
    std::fs::read_to_string(playlist).map_or(0, |t| t.lines().filter(|l| l.ends_with(".ts")).count())
}

#[test]
fn deploy_runs_a_supervised_pinned_gst_pipeline() {
    plugin_dir();
    bin("shmcast-producer");
    let name = unique_name("deploypipe");
    let d = Deployment::new("pipeline", &name);
    let playlist = d.dir().join("live.m3u8");
    d.write_config(&format!(
        "[stream]\nname = \"{name}\"\nwidth = 320\nheight = 240\nformat = \"i420\"\nfps = 30\n\
             [run]\nbackoff_min = 0.2\nbackoff_max = 1.0\nstop_timeout = 5\n\
             [producer]\ncpus = \"0\"\n\
             [[pipeline]]\nname = \"hls\"\ncpus = \"1\"\n\
             launch = \"shmcastsrc stream={{stream}} ! videoconvert ! video/x-raw,format=I420 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! h264parse \
             ! hlssink2 target-duration=1 location={}/seg%05d.ts playlist-location={}\"\n",
        d.dir().display(),
        playlist.display()
    ));

    // The dry run shows the gst-launch line, {stream} filled in, and the plugin path.
    let out = d.run(&["start", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(text.contains(&format!("gst-launch-1.0 -e shmcastsrc stream={name} '!' videoconvert")), "{text}");
    assert!(text.contains(&format!("GST_PLUGIN_PATH={}", bin_dir().display())), "{text}");
    assert!(text.contains("# pipeline-hls: restart=on-failure"), "{text}");

    let out = d.run(&["start"]);
    assert!(out.status.success(), "{}", describe(&out));
    let log = || d.log("pipeline-hls");
    wait_for(LONG, || (segments(&playlist) >= 2).then_some(()))
        .unwrap_or_else(|| panic!("no HLS segments; pipeline log:\n{}", log()));
    let (pid, restarts) = pipeline(&d).expect("pipeline running");
    assert_eq!(restarts, 0);
    assert_eq!(proc_status_field(pid, "Cpus_allowed_list").as_deref(), Some("1"), "pinned");

    // Killed: restarted with a new pid, and it delivers again.
    signal(pid, "KILL");
    let (pid2, restarts) = wait_for(LONG, || pipeline(&d).filter(|(p, _)| *p != pid))
        .unwrap_or_else(|| panic!("pipeline not restarted; log:\n{}", log()));
    assert_eq!(restarts, 1);
    let before = std::fs::metadata(&playlist).and_then(|m| m.modified()).unwrap();
    wait_for(LONG, || std::fs::metadata(&playlist).and_then(|m| m.modified()).ok().filter(|t| *t > before).map(|_| ()))
        .unwrap_or_else(|| panic!("restarted pipeline writes no playlist; log:\n{}", log()));

    let out = d.run(&["stop"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!pid_alive(pid2), "pipeline still running after stop");
    assert!(!segment_path(&name).exists(), "segment left after stop");
}
