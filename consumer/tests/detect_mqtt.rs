//! shmcast-detect publishing events to a real mosquitto broker, across a
//! broker restart.
#![forbid(unsafe_code)]

mod detect_common;

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use detect_common::*;

const WAIT: Duration = Duration::from_secs(60);

fn broker(port: u16) -> Proc {
    shmcast_testkit::require_tool("mosquitto");
    let mut c = Command::new("mosquitto");
    c.args(["-p", &port.to_string(), "-v"]);
    let p = Proc::spawn("mosquitto", &mut c);
    wait_until(&format!("mosquitto listening on port {port}"), WAIT, || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
    });
    p
}

/// A subscriber; what it receives (and its debug lines) is its stdout.
fn subscriber(port: u16, topic: &str) -> Proc {
    shmcast_testkit::require_tool("mosquitto_sub");
    // stdbuf: mosquitto_sub block-buffers its output into a file otherwise.
    let mut c = Command::new("stdbuf");
    c.args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-d"]);
    let p = Proc::spawn("mosquitto_sub", &mut c);
    wait_until("mosquitto_sub subscribed", WAIT, || p.stdout().contains("SUBACK").then_some(()));
    p
}

fn events_in(text: &str) -> Vec<serde_json::Value> {
    json_lines(text).into_iter().filter(|v| v["type"] == "meteor" || v["type"] == "motion").collect()
}

fn events_file(path: &std::path::Path) -> Vec<serde_json::Value> {
    events_in(&std::fs::read_to_string(path).unwrap_or_default())
}

#[test]
fn events_reach_the_broker_and_survive_a_broker_restart() {
    let name = unique("mqtt");
    let dir = std::env::temp_dir().join(format!("shmcast-mqtt-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let topic = format!("shmcast/test/{}", std::process::id());

    let mut b1 = broker(port);
    let s1 = subscriber(port, &topic);
    let events = dir.join("events.jsonl");
    let mut c = Command::new(DETECT);
    c.args(["--name", &name, "--mask", "0,0,640,64", "--events"]).arg(&events).args([
        "--mqtt",
        &format!("mqtt://127.0.0.1:{port}"),
        "--topic",
        &topic,
    ]);
    let mut det = Proc::spawn("shmcast-detect", &mut c).segment(&name);

    let run = |seed: &str| {
        let args = ["--format", "gray8", "--fps", "0", "--noise", "3", "--events", "20", "--frames", "700"];
        let mut p = testsrc(&name, 640, 480, &args);
        p.args(["--slots", "1024", "--seed", seed]);
        let out = Proc::spawn("shmcast-producer", &mut p).output(WAIT);
        assert!(out.status.success(), "producer failed:\n{}", show(&out));
    };

    // Run 1: every event the detector wrote reaches the subscriber.
    run("21");
    det.wait_for_line("producer gone", WAIT);
    let n1 = events_file(&events).len();
    assert!(n1 > 0, "no event from run 1");
    wait_until(&format!("{n1} events at the subscriber"), WAIT, || (events_in(&s1.stdout()).len() >= n1).then_some(()));
    assert_eq!(events_in(&s1.stdout()), events_file(&events), "published events differ from the events file");

    // The broker goes away and comes back on the same port.
    b1.signal("KILL");
    b1.wait_exit(WAIT);
    s1.signal("TERM");
    let _b2 = broker(port);
    let s2 = subscriber(port, &topic);

    // Run 2 (a new producer): its events arrive through the new connection.
    run("22");
    wait_until("the detector done with run 2", WAIT, || {
        (det.stderr().matches("producer gone").count() == 2).then_some(())
    });
    let all = events_file(&events);
    assert!(all.len() > n1, "no event from run 2");
    wait_until(&format!("{} events of run 2 at the subscriber", all.len() - n1), WAIT, || {
        (events_in(&s2.stdout()).len() >= all.len() - n1).then_some(())
    });
    assert_eq!(events_in(&s2.stdout()), all[n1..].to_vec());

    det.signal("TERM");
    let status = det.wait_exit(WAIT);
    let stderr = det.stderr();
    assert!(status.success(), "detector: {status:?}\n{stderr}");
    assert!(stderr.contains("MQTT connection lost"), "{stderr}");
    assert!(stderr.contains("connects=2"), "{stderr}");
    let summary = json_lines(&std::fs::read_to_string(&events).unwrap()).pop().unwrap();
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
    let dir = std::env::temp_dir().join(format!("shmcast-mqtt-stop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let b = broker(port);
    b.signal("STOP"); // the kernel still completes TCP handshakes; nothing answers CONNECT.

    let events = dir.join("events.jsonl");
    let mut c = Command::new(DETECT);
    // From the oldest frame: every frame counts, also those published before
    // the detector's next look for its producer.
    c.args(["--name", &name, "--start", "oldest", "--mask", "0,0,640,64", "--mqtt-queue", "2", "--events"])
        .arg(&events)
        .args(["--mqtt", &format!("mqtt://127.0.0.1:{port}"), "--topic", "shmcast/stopped"]);
    let mut det = Proc::spawn("shmcast-detect", &mut c).segment(&name);

    det.wait_for_line("waiting for the producer", WAIT);
    let args = ["--format", "gray8", "--fps", "0", "--noise", "3", "--events", "20", "--frames", "700"];
    let mut p = testsrc(&name, 640, 480, &args);
    p.args(["--slots", "1024", "--seed", "21"]);
    let out = Proc::spawn("shmcast-producer", &mut p).output(WAIT);
    assert!(out.status.success(), "producer failed:\n{}", show(&out));
    det.wait_for_line("producer gone", WAIT);
    // Its connection attempt timed out (CONNECT never answered) and it retries.
    det.wait_for_line("MQTT broker unavailable", WAIT);

    det.signal("TERM");
    let status = det.wait_exit(WAIT);
    assert!(status.success(), "detector: {status:?}\n{}", det.stderr());
    let summary = json_lines(&std::fs::read_to_string(&events).unwrap()).pop().unwrap();
    assert_eq!(summary["type"], "summary", "{summary}");
    assert_eq!((summary["frames"].as_u64(), summary["lost"].as_u64()), (Some(700), Some(0)), "{summary}");
    let n = summary["events"].as_u64().unwrap();
    let dropped = summary["mqtt_dropped"].as_u64().unwrap();
    assert!(n > 2, "too few events to fill the queue: {summary}");
    assert!(dropped >= n - 2 && dropped <= n, "{summary}");
    b.signal("CONT"); // so that the guard's SIGTERM ends it at once
    let _ = std::fs::remove_dir_all(&dir);
}
