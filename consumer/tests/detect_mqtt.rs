//! shmcast-detect publishing events to a real mosquitto broker, across a
//! broker restart.
#![forbid(unsafe_code)]

mod detect_common;

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use detect_common::*;

const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().unwrap().port()
}

fn broker(port: u16, log: &Path) -> Proc {
    let mut c = Command::new("mosquitto");
    c.args(["-p", &port.to_string(), "-v"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(File::create(log).unwrap()))
        .stderr(Stdio::from(File::create(log.with_extension("err")).unwrap()));
    let p = Proc::spawn("mosquitto (install it: apt-get install mosquitto, see scripts/setup.sh)", &mut c);
    assert!(
        wait_until(WAIT, || TcpStream::connect(("127.0.0.1", port)).is_ok()),
        "mosquitto did not listen on port {port}"
    );
    p
}

/// A subscriber writing what it receives (and its debug lines) to `out`.
fn subscriber(port: u16, topic: &str, out: &Path) -> Proc {
    // stdbuf: mosquitto_sub block-buffers its output into a file otherwise.
    let mut c = Command::new("stdbuf");
    c.args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-d"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(File::create(out).unwrap()))
        .stderr(Stdio::null());
    let p = Proc::spawn("mosquitto_sub (install it: apt-get install mosquitto-clients)", &mut c);
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(out).unwrap_or_default().contains("SUBACK")),
        "mosquitto_sub did not subscribe"
    );
    p
}

fn events_in(path: &Path) -> Vec<serde_json::Value> {
    json_lines(&std::fs::read_to_string(path).unwrap_or_default())
        .into_iter()
        .filter(|v| v["type"] == "meteor" || v["type"] == "motion")
        .collect()
}

#[test]
fn events_reach_the_broker_and_survive_a_broker_restart() {
    let name = unique("mqtt");
    let _seg = Segment(name.clone());
    let dir = std::env::temp_dir().join(format!("shmcast-mqtt-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let topic = format!("shmcast/test/{}", std::process::id());

    let mut b1 = broker(port, &dir.join("broker1.log"));
    let s1 = subscriber(port, &topic, &dir.join("sub1.txt"));
    let events_file = dir.join("events.jsonl");
    let mut c = Command::new(DETECT);
    c.args(["--name", &name, "--mask", "0,0,640,64", "--events"])
        .arg(&events_file)
        .args(["--mqtt", &format!("mqtt://127.0.0.1:{port}"), "--topic", &topic])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(dir.join("detect.log")).unwrap()));
    let mut det = Proc::spawn("shmcast-detect", &mut c);
    // The log without colour codes.
    let log = || {
        let raw = std::fs::read_to_string(dir.join("detect.log")).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut esc = false;
        for ch in raw.chars() {
            match (esc, ch) {
                (false, '\x1b') => esc = true,
                (true, 'm') => esc = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    };

    let run = |seed: &str| {
        let args = ["--format", "gray8", "--fps", "0", "--noise", "3", "--events", "20", "--frames", "700"];
        let mut p = testsrc(&name, 640, 480, &args);
        p.args(["--slots", "1024", "--seed", seed]);
        let out = Proc::spawn("shmcast-producer", &mut p).output(WAIT);
        assert!(out.status.success(), "producer failed:\n{}", show(&out));
    };

    // Run 1: every event the detector wrote reaches the subscriber.
    run("21");
    assert!(wait_until(WAIT, || log().contains("producer gone")), "detector did not finish run 1:\n{}", log());
    assert!(!events_in(&events_file).is_empty(), "no event from run 1");
    let n1 = events_in(&events_file).len();
    let sub1 = dir.join("sub1.txt");
    assert!(
        wait_until(WAIT, || events_in(&sub1).len() >= n1),
        "subscriber got {} of {n1} events",
        events_in(&sub1).len()
    );
    assert_eq!(events_in(&sub1), events_in(&events_file), "published events differ from the events file");

    // The broker goes away and comes back on the same port.
    b1.signal(9);
    b1.wait_timeout(WAIT);
    s1.signal(15);
    let _b2 = broker(port, &dir.join("broker2.log"));
    let _s2 = subscriber(port, &topic, &dir.join("sub2.txt"));

    // Run 2 (a new producer): its events arrive through the new connection.
    run("22");
    assert!(wait_until(WAIT, || log().matches("producer gone").count() == 2), "detector did not finish run 2");
    assert!(events_in(&events_file).len() > n1, "no event from run 2");
    let all = events_in(&events_file);
    let sub2 = dir.join("sub2.txt");
    assert!(
        wait_until(WAIT, || events_in(&sub2).len() >= all.len() - n1),
        "after the broker restart the subscriber got {} of {} events",
        events_in(&sub2).len(),
        all.len() - n1
    );
    assert_eq!(events_in(&sub2), all[n1..].to_vec());

    det.signal(15);
    let status = det.wait_timeout(WAIT);
    let stderr = log();
    assert!(status.is_some_and(|s| s.success()), "detector: {status:?}\n{stderr}");
    assert!(stderr.contains("MQTT connection lost"), "{stderr}");
    assert!(stderr.contains("connects=2"), "{stderr}");
    let summary = json_lines(&std::fs::read_to_string(&events_file).unwrap()).pop().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["mqtt_dropped"], 0, "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A broker that accepts the TCP connection but never answers (stopped with
/// SIGSTOP): the detector still processes every frame, keeps at most
/// `--mqtt-queue` events for it, counts the others as dropped, and stops on
/// SIGTERM.
#[test]
fn a_stopped_broker_never_blocks_detection() {
    let name = unique("mqttstop");
    let _seg = Segment(name.clone());
    let dir = std::env::temp_dir().join(format!("shmcast-mqtt-stop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let b = broker(port, &dir.join("broker.log"));
    b.signal(19); // SIGSTOP: the kernel still completes TCP handshakes; nothing answers CONNECT.

    let events_file = dir.join("events.jsonl");
    let log_file = dir.join("detect.log");
    let mut c = Command::new(DETECT);
    // From the oldest frame: every frame counts, also those published before
    // the detector's next look for its producer.
    c.args(["--name", &name, "--start", "oldest", "--mask", "0,0,640,64", "--mqtt-queue", "2", "--events"])
        .arg(&events_file)
        .args(["--mqtt", &format!("mqtt://127.0.0.1:{port}"), "--topic", "shmcast/stopped"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(&log_file).unwrap()));
    let mut det = Proc::spawn("shmcast-detect", &mut c);
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();

    assert!(wait_until(WAIT, || log().contains("waiting for the producer")), "detector did not start:\n{}", log());
    let args = ["--format", "gray8", "--fps", "0", "--noise", "3", "--events", "20", "--frames", "700"];
    let mut p = testsrc(&name, 640, 480, &args);
    p.args(["--slots", "1024", "--seed", "21"]);
    let out = Proc::spawn("shmcast-producer", &mut p).output(WAIT);
    assert!(out.status.success(), "producer failed:\n{}", show(&out));
    assert!(wait_until(WAIT, || log().contains("producer gone")), "detector did not finish:\n{}", log());
    // Its connection attempt timed out (CONNECT never answered) and it retries.
    assert!(wait_until(WAIT, || log().contains("MQTT broker unavailable")), "{}", log());

    det.signal(15);
    let status = det.wait_timeout(WAIT);
    assert!(status.is_some_and(|s| s.success()), "detector: {status:?}\n{}", log());
    let summary = json_lines(&std::fs::read_to_string(&events_file).unwrap()).pop().unwrap();
    assert_eq!(summary["type"], "summary", "{summary}");
    assert_eq!((summary["frames"].as_u64(), summary["lost"].as_u64()), (Some(700), Some(0)), "{summary}");
    let events = summary["events"].as_u64().unwrap();
    let dropped = summary["mqtt_dropped"].as_u64().unwrap();
    assert!(events > 2, "too few events to fill the queue: {summary}");
    assert!(dropped >= events - 2 && dropped <= events, "{summary}");
    b.signal(18); // SIGCONT, so that the guard's SIGKILL ends it at once
    let _ = std::fs::remove_dir_all(&dir);
}
