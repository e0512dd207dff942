//! `--metrics ADDR:PORT` of every binary: fetched with curl, parsed with the
//! official Prometheus Python parser; the expected families are there, with
//! the binary's labels, and counters move between two scrapes.
#![forbid(unsafe_code)]

use std::process::Command;
use std::time::Duration;

use shmcast_testkit::{
    Family, Guard, bin, family, free_port, parse_metrics, require_tool, scrape, unique_name, value, wait_for,
};

/// Scrapes until the server answers with `ready` among its families (the
/// server may answer before the binary has registered everything: the
/// listener starts first), parses, and checks that the text is well-formed
/// for the parser.
fn scrape_parsed_with(g: &Guard, label: &str, addr: &str, ready: &str) -> Vec<Family> {
    let mut last = None;
    wait_for(Duration::from_secs(20), || {
        let fams = parse_metrics(&scrape(addr)?);
        let ok = family(&fams, ready).is_some_and(|f| !f.samples.is_empty());
        last = Some(fams.iter().map(|f| f.name.clone()).collect::<Vec<_>>());
        ok.then_some(fams)
    })
    .unwrap_or_else(|| {
        panic!("no {ready} from http://{addr}/metrics within 20 s (families {last:?}); {label} log:\n{}", g.log(label))
    })
}

fn scrape_parsed(g: &Guard, label: &str, addr: &str) -> Vec<Family> {
    scrape_parsed_with(g, label, addr, "shmcast_frames_total")
}

fn assert_family(fams: &[Family], name: &str, kind: &str, who: &str) {
    let f = family(fams, name).unwrap_or_else(|| {
        let names: Vec<&str> = fams.iter().map(|f| f.name.as_str()).collect();
        panic!("{who}: metric family {name} missing; families: {names:?}")
    });
    assert_eq!(f.kind, kind, "{who}: {name} has type {} (expected {kind})", f.kind);
}

/// The samples carry the `binary` and `stream` labels set by `shmcast_common::start`.
fn assert_labels(fams: &[Family], binary: &str, stream: &str) {
    let f = family(fams, "process_resident_memory_bytes").expect("process_resident_memory_bytes");
    let l = &f.samples[0].labels;
    assert_eq!(l.get("binary").map(String::as_str), Some(binary), "labels {l:?}");
    assert_eq!(l.get("stream").map(String::as_str), Some(stream), "labels {l:?}");
    assert!(f.samples[0].value > 0.0, "RSS must be positive: {f:?}");
}

/// Polls until `metric` is above its value in `before` (bounded), returning the later scrape.
fn until_increased(g: &Guard, label: &str, addr: &str, before: &[Family], metric: &str) -> Vec<Family> {
    let v0 = value(before, metric).unwrap_or_else(|| panic!("{label}: no sample {metric}"));
    let mut last = v0;
    wait_for(Duration::from_secs(20), || {
        let fams = parse_metrics(&scrape(addr)?);
        last = value(&fams, metric)?;
        (last > v0).then_some(fams)
    })
    .unwrap_or_else(|| {
        panic!("{label}: {metric} did not increase within 20 s ({v0} -> {last}); log:\n{}", g.log(label))
    })
}

fn producer(g: &mut Guard, name: &str, metrics: Option<&str>) -> u32 {
    let mut cmd = Command::new(bin("shmcast-producer"));
    cmd.args(["--name", name, "--source", "testsrc", "--width", "320", "--height", "240", "--fps", "30"]);
    if let Some(m) = metrics {
        cmd.args(["--metrics", m]);
    }
    g.segment(name);
    g.spawn(&format!("producer-{name}"), &mut cmd)
}

#[test]
fn producer_serves_metrics() {
    require_tool("curl");
    let name = unique_name("mprod");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut g = Guard::new();
    producer(&mut g, &name, Some(&addr));
    let label = format!("producer-{name}");
    let first = scrape_parsed(&g, &label, &addr);
    for (m, k) in [("shmcast_frames_total", "counter"), ("shmcast_bytes_total", "counter")] {
        assert_family(&first, m, k, "shmcast-producer");
    }
    assert_family(&first, "process_resident_memory_bytes", "gauge", "shmcast-producer");
    assert_labels(&first, "shmcast-producer", &name);
    let second = until_increased(&g, &label, &addr, &first, "shmcast_frames_total");
    assert!(
        value(&second, "shmcast_bytes_total") > value(&first, "shmcast_bytes_total"),
        "bytes must grow with frames"
    );
}

#[test]
fn detector_serves_metrics() {
    require_tool("curl");
    let name = unique_name("mdet");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut g = Guard::new();
    producer(&mut g, &name, None);
    let label = format!("detect-{name}");
    g.spawn(
        &label,
        Command::new(bin("shmcast-detect")).args(["--name", &name, "--events", "/dev/null", "--metrics", &addr]),
    );
    let first = scrape_parsed(&g, &label, &addr);
    for (m, k) in [
        ("shmcast_frames_total", "counter"),
        ("shmcast_lost_frames_total", "counter"),
        ("shmcast_overruns_total", "counter"),
        ("shmcast_reader_lag_frames", "gauge"),
        ("shmcast_wake_latency_seconds", "histogram"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert_family(&first, m, k, "shmcast-detect");
    }
    assert_labels(&first, "shmcast-detect", &name);
    let second = until_increased(&g, &label, &addr, &first, "shmcast_frames_total");
    // The histogram's +Inf bucket equals its count (a consistent snapshot).
    let h = family(&second, "shmcast_wake_latency_seconds").unwrap();
    let inf = h.samples.iter().find(|s| s.labels.get("le").is_some_and(|l| l == "+Inf")).expect("+Inf bucket");
    let count = h.samples.iter().find(|s| s.name.ends_with("_count")).expect("_count");
    assert_eq!(inf.value, count.value, "{h:?}");
    assert!(count.value > 0.0, "no wake-up latency observed: {h:?}");
}

#[test]
fn rtsp_bridge_serves_metrics() {
    require_tool("curl");
    require_tool("gst-launch-1.0");
    let name = unique_name("mrtsp");
    let addr = format!("127.0.0.1:{}", free_port());
    let rtsp_port = free_port();
    let mut g = Guard::new();
    producer(&mut g, &name, None);
    let label = format!("rtsp-{name}");
    g.spawn(
        &label,
        Command::new(bin("shmcast-rtsp")).args([
            "--name",
            &name,
            "--listen",
            &format!("127.0.0.1:{rtsp_port}"),
            "--mount",
            "/m",
            "--metrics",
            &addr,
        ]),
    );
    // The server answers before any client; the feeder's families may appear
    // only once a client makes the bridge attach to the ring.
    let first = scrape_parsed_with(&g, &label, &addr, "process_resident_memory_bytes");
    assert_labels(&first, "shmcast-rtsp", &name);
    // A real client: the bridge encodes while someone watches.
    let url = format!("rtsp://127.0.0.1:{rtsp_port}/m");
    g.spawn(
        "rtsp-client",
        Command::new("gst-launch-1.0").args([
            "-q",
            "rtspsrc",
            &format!("location={url}"),
            "protocols=tcp",
            "!",
            "fakesink",
        ]),
    );
    let with_client = wait_for(Duration::from_secs(20), || {
        let fams = parse_metrics(&scrape(&addr)?);
        (value(&fams, "shmcast_rtsp_clients")? >= 1.0).then_some(fams)
    })
    .unwrap_or_else(|| panic!("shmcast_rtsp_clients never reached 1; bridge log:\n{}", g.log(&label)));
    for (m, k) in [
        ("shmcast_rtsp_clients", "gauge"),
        ("shmcast_encoded_frames_total", "counter"),
        ("shmcast_encoded_fps", "gauge"),
        ("shmcast_frames_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert_family(&with_client, m, k, "shmcast-rtsp");
    }
    until_increased(&g, &label, &addr, &with_client, "shmcast_encoded_frames_total");
}

#[test]
fn inspect_watch_serves_metrics() {
    require_tool("curl");
    let help = Command::new(bin("shmcast-inspect")).arg("--help").output().expect("run shmcast-inspect --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--watch") && help.contains("--metrics"), "shmcast-inspect lacks --watch/--metrics:\n{help}");
    let name = unique_name("minsp");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut g = Guard::new();
    producer(&mut g, &name, None);
    // inspect never waits: let the producer create its segment first.
    wait_for(Duration::from_secs(10), || shmcast_testkit::segment_path(&name).exists().then_some(()))
        .expect("producer segment");
    let label = format!("inspect-{name}");
    g.spawn(&label, Command::new(bin("shmcast-inspect")).args(["--name", &name, "--watch", "--metrics", &addr]));
    let fams = scrape_parsed_with(&g, &label, &addr, "shmcast_head");
    assert_family(&fams, "process_resident_memory_bytes", "gauge", "shmcast-inspect");
    assert_labels(&fams, "shmcast-inspect", &name);
}

#[test]
fn metrics_port_in_use_is_a_clear_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let name = unique_name("mbusy");
    let mut g = Guard::new();
    g.segment(&name);
    let out = Command::new(bin("shmcast-producer"))
        .args(["--name", &name, "--source", "testsrc", "--width", "320", "--height", "240", "--frames", "30"])
        .args(["--metrics", &addr])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail with the port taken: {}", shmcast_testkit::describe(&out));
    assert!(err.contains(&format!("cannot serve metrics on {addr}")) && err.contains("in use"), "unclear error: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!shmcast_testkit::segment_path(&name).exists(), "a failed start must leave no segment");
}
