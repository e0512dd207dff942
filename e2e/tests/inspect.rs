//! `shmcast-inspect --json` reports what a tool needs to know of a stream
//! without re-deriving it: here the producer's overlay region (the test
//! pattern's status band with the frame stamp), read from the segment header.
#![forbid(unsafe_code)]

use std::process::Command;
use std::time::Duration;

use shmcast_testkit::{Proc, bin, describe, unique_name};

#[test]
fn inspect_json_reports_the_overlay_the_producer_logs() {
    for (w, h, band) in [(640u32, 480u32, [0u32, 0, 640, 64]), (1280, 720, [0, 0, 1280, 128])] {
        let name = unique_name(&format!("inspect-overlay-{w}"));
        let mut p = Proc::spawn(
            "shmcast-producer",
            Command::new(bin("shmcast-producer")).args([
                "--name",
                &name,
                "--width",
                &w.to_string(),
                "--height",
                &h.to_string(),
                "--format",
                "gray8",
            ]),
        )
        .segment(&name);
        let line = p.wait_for_line("status band", Duration::from_secs(30));
        p.wait_for_line("stream created", Duration::from_secs(30));
        let out = Command::new(bin("shmcast-inspect")).args(["--name", &name, "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(v["overlay"], serde_json::json!(band), "{}", describe(&out));
        let logged = format!("x={} y={} w={} h={}", band[0], band[1], band[2], band[3]);
        assert!(line.contains(&logged), "producer logged {line:?}, inspect reports {band:?}");
    }
}
