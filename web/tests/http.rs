//! `shmcast-web` driven over HTTP by a real client (reqwest), against real
//! producers and a real detector: every route, authentication, 404s, a
//! snapshot decoded by a JPEG decoder with the frame stamp read back from it,
//! MJPEG parts counted across a producer restart, events over Server-Sent
//! Events as the detector writes them, connect/disconnect cycles, slow
//! clients, a taken port and SIGTERM.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use shm_proto::{Reader, ReaderOptions};
use shmcast_testkit::{Guard, bin, free_port, pid_alive, segment_path, signal, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(WAIT).build().unwrap()
}

fn producer(g: &mut Guard, label: &str, name: &str, size: (u32, u32), extra: &[&str]) -> u32 {
    let mut cmd = Command::new(bin("shmcast-producer"));
    cmd.args(["--name", name, "--source", "testsrc", "--fps", "30"]);
    cmd.args(["--width", &size.0.to_string(), "--height", &size.1.to_string()]).args(extra);
    g.segment(name);
    let pid = g.spawn(label, &mut cmd);
    wait_for(WAIT, || {
        Reader::open(name, &ReaderOptions::default()).ok().filter(|r| r.head() > 0 && r.info().identity.pid == pid)
    })
    .unwrap_or_else(|| panic!("producer {name} did not publish: {}", g.log(label)));
    pid
}

/// Starts the web server on a free port; returns its base URL and pid.
fn web(g: &mut Guard, label: &str, extra: &[&str]) -> (String, u32) {
    let pid = g.spawn(label, Command::new(bin("shmcast-web")).args(["--listen", "127.0.0.1:0"]).args(extra));
    let url = wait_for(WAIT, || {
        let log = g.log(label);
        let at = log.find("listening on http://")?;
        let rest = &log[at + "listening on ".len()..];
        Some(rest[..rest.find('/').map(|i| rest[i + 2..].find('/').unwrap() + i + 2)?].to_string())
    })
    .unwrap_or_else(|| panic!("shmcast-web did not start: {}", g.log(label)));
    (url, pid)
}

/// A decoded JPEG: width, height, and its luma (BT.601 from the decoder's RGB).
fn decode_jpeg(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut d = jpeg_decoder::Decoder::new(bytes);
    let px = d.decode().expect("a valid JPEG");
    let info = d.info().unwrap();
    let luma = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => px,
        jpeg_decoder::PixelFormat::RGB24 => px
            .chunks_exact(3)
            .map(|c| ((299 * u32::from(c[0]) + 587 * u32::from(c[1]) + 114 * u32::from(c[2])) / 1000) as u8)
            .collect(),
        other => panic!("unexpected JPEG pixel format {other:?}"),
    };
    (u32::from(info.width), u32::from(info.height), luma)
}

fn size(jpg: &[u8]) -> (u32, u32) {
    let (w, h, _) = decode_jpeg(jpg);
    (w, h)
}

fn newest_frame_id(name: &str) -> u64 {
    let mut r =
        Reader::open(name, &ReaderOptions { start: shm_proto::Start::Oldest, ..ReaderOptions::default() }).unwrap();
    r.latest().map(|f| f.meta().frame_id).unwrap()
}

fn maps_segment(pid: u32, name: &str) -> bool {
    let seg = segment_path(name).display().to_string();
    std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default().contains(&seg)
}

/// Reads a multipart stream until `n` more JPEG parts arrived; returns the last.
fn read_parts(body: &mut impl Read, buf: &mut Vec<u8>, n: usize) -> Vec<u8> {
    let mut seen = 0;
    let mut last = Vec::new();
    let mut chunk = [0u8; 65536];
    while seen < n {
        // A part: boundary line, headers, blank line, Content-Length bytes, CRLF.
        if let Some(hdr_end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..hdr_end]).to_string();
            assert!(head.contains("--shmcastframe"), "bad part header {head:?}");
            assert!(head.contains("Content-Type: image/jpeg"), "{head:?}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .expect("Content-Length")
                .trim()
                .parse()
                .unwrap();
            let end = hdr_end + 4 + len + 2;
            if buf.len() >= end {
                last = buf[hdr_end + 4..hdr_end + 4 + len].to_vec();
                buf.drain(..end);
                seen += 1;
                continue;
            }
        }
        let k = body.read(&mut chunk).expect("read live view");
        assert!(k > 0, "live view ended after {seen} parts");
        buf.extend_from_slice(&chunk[..k]);
    }
    last
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rss_kb(pid: u32) -> u64 {
    shmcast_testkit::rss_kib(pid)
}

#[test]
fn streams_snapshots_live_view_and_errors() {
    let mut g = Guard::new();
    let name = format!("web-a-{}", std::process::id());
    producer(&mut g, "web-a-producer", &name, (640, 480), &["--format", "nv12"]);
    let (base, web_pid) = web(&mut g, "web-a", &[]);
    let c = client();

    // The page and the stream list (the inspect keys and more).
    let page = c.get(format!("{base}/")).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("/api/streams"));
    let list: serde_json::Value = wait_for(WAIT, || {
        let v: serde_json::Value = c.get(format!("{base}/api/streams")).send().ok()?.json().ok()?;
        v.as_array()?.iter().any(|s| s["name"] == name.as_str() && s["fps"].as_f64().unwrap_or(0.0) > 0.0).then_some(v)
    })
    .expect("stream listed with a measured rate");
    let s = list.as_array().unwrap().iter().find(|s| s["name"] == name.as_str()).unwrap();
    for k in ["state", "pid", "width", "height", "format", "fps_nominal", "head", "tail", "lost_frames", "readers"] {
        assert!(s.get(k).is_some(), "key {k} missing: {s}");
    }
    let one: serde_json::Value = c.get(format!("{base}/api/streams/{name}")).send().unwrap().json().unwrap();
    assert_eq!((one["width"].as_u64(), one["format"].as_str()), (Some(640), Some("nv12")));

    // A snapshot: full size, and its stamp is a frame the producer published.
    let before = newest_frame_id(&name);
    let r = c.get(format!("{base}/api/streams/{name}/snapshot.jpg")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    let jpg = r.bytes().unwrap();
    let after = newest_frame_id(&name);
    let (w, h, luma) = decode_jpeg(&jpg);
    assert_eq!((w, h), (640, 480));
    let stamp = shm_proto::stamp::decode_luma(&luma, w as usize, 1, w, h).expect("stamp decodes from the JPEG");
    let id = u64::from(stamp.frame_id);
    assert!(before <= id && id <= after, "stamp frame {id} not among the published {before}..={after}");
    let small = c.get(format!("{base}/api/streams/{name}/snapshot.jpg?width=320")).send().unwrap().bytes().unwrap();
    assert_eq!(size(&small), (320, 240));

    // Unknown streams and routes: 404 with a JSON error.
    for path in ["/api/streams/nope", "/api/streams/nope/snapshot.jpg", "/api/streams/nope/mjpeg", "/nothing"] {
        let r = c.get(format!("{base}{path}")).send().unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let v: serde_json::Value = r.json().unwrap();
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    assert_eq!(c.get(format!("{base}/api/streams/{name}/mjpeg?fps=0")).send().unwrap().status(), 400);

    // Live view: parts counted; the web maps the ring while watched, and
    // lists itself as a reader.
    let mut live = c.get(format!("{base}/api/streams/{name}/mjpeg?fps=15&width=320")).send().unwrap();
    assert_eq!(live.status(), 200);
    assert!(live.headers()["content-type"].to_str().unwrap().starts_with("multipart/x-mixed-replace"));
    let mut buf = Vec::new();
    let part = read_parts(&mut live, &mut buf, 5);
    assert_eq!(size(&part), (320, 240));
    assert!(maps_segment(web_pid, &name));
    wait_for(WAIT, || {
        let v: serde_json::Value = c.get(format!("{base}/api/streams/{name}")).send().ok()?.json().ok()?;
        v["readers"].as_array()?.iter().any(|p| p["pid"] == web_pid).then_some(())
    })
    .expect("the web listed as a reader while it watches");

    // The producer restarts: the same live view goes on with the new one.
    let old = g.child("web-a-producer").id();
    signal(old, "TERM");
    wait_for(WAIT, || (!pid_alive(old)).then_some(())).expect("producer stops");
    let new_pid = producer(&mut g, "web-a-producer2", &name, (640, 480), &["--format", "yuyv"]);
    let part = read_parts(&mut live, &mut buf, 5);
    assert_eq!(size(&part), (320, 240));
    let one: serde_json::Value = wait_for(WAIT, || {
        let v: serde_json::Value = c.get(format!("{base}/api/streams/{name}")).send().ok()?.json().ok()?;
        (v["pid"] == new_pid).then_some(v)
    })
    .unwrap();
    assert_eq!(one["format"], "yuyv");

    // Nobody watches: the ring is unmapped.
    drop(live);
    wait_for(WAIT, || (!maps_segment(web_pid, &name)).then_some(())).expect("ring unmapped after the last viewer");

    let m = c.get(format!("{base}/metrics")).send().unwrap().text().unwrap();
    for fam in ["shmcast_web_snapshots_total", "shmcast_web_live_frames_total", "process_resident_memory_bytes"] {
        assert!(m.contains(fam), "{fam} missing from /metrics:\n{m}");
    }
}

#[test]
fn basic_authentication() {
    let mut g = Guard::new();
    let (base, _) = web(&mut g, "web-auth", &["--auth", "viewer:s3cret"]);
    let c = client();
    for path in ["/", "/api/streams", "/metrics", "/api/events"] {
        let r = c.get(format!("{base}{path}")).send().unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
        let r = c.get(format!("{base}{path}")).basic_auth("viewer", Some("wrong")).send().unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = c.get(format!("{base}{path}")).basic_auth("viewer", Some("s3cret")).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[test]
fn events_stream_as_the_detector_writes_them() {
    let mut g = Guard::new();
    let name = format!("web-ev-{}", std::process::id());
    let dir = std::env::temp_dir().join(format!("shmcast-web-ev-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("snaps")).unwrap();
    g.path(dir.clone());
    let events = dir.join("events.jsonl");
    let snaps = dir.join("snaps");
    producer(&mut g, "web-ev-producer", &name, (640, 360), &["--events", "100", "--noise", "2"]);
    let ev_arg = format!("{name}={}", events.display());
    let (base, _) = web(&mut g, "web-ev", &["--events", &ev_arg, "--snapshots", snaps.to_str().unwrap()]);
    let c = client();

    // Subscribe first, then start the detector.
    let mut sse = c.get(format!("{base}/api/events/stream")).send().unwrap();
    assert_eq!(sse.status(), 200);
    assert!(sse.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut text = String::new();
    let mut chunk = [0u8; 4096];
    while !text.contains(": connected") {
        let n = sse.read(&mut chunk).unwrap();
        assert!(n > 0);
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    g.spawn(
        "web-ev-detect",
        Command::new(bin("shmcast-detect")).args(["--name", &name]).args([
            "--events",
            events.to_str().unwrap(),
            "--snapshots",
            snaps.to_str().unwrap(),
        ]),
    );
    // The first event with a picture (the detector leaves it out of an
    // event whose frame was overwritten while it copied it).
    let mut seen = 0;
    let ev: serde_json::Value = loop {
        if let Some(at) = text.find("event: event\n") {
            let rest = &text[at..];
            if let Some(end) = rest.find("\n\n") {
                let data = rest[..end].lines().find_map(|l| l.strip_prefix("data: ")).expect("data line");
                let ev: serde_json::Value = serde_json::from_str(data).unwrap();
                assert_eq!(ev["stream"], name.as_str());
                assert!(ev["id"].as_u64().unwrap() > seen, "ids increase: {ev}");
                seen = ev["id"].as_u64().unwrap();
                text = rest[end + 2..].to_string();
                if ev.get("snapshot_url").is_some() {
                    break ev;
                }
                continue;
            }
        }
        let n = sse.read(&mut chunk).unwrap();
        assert!(n > 0, "event stream ended: {text}; detector: {}", g.log("web-ev-detect"));
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
    };
    assert_eq!(ev["stream"], name.as_str());
    let id = ev["id"].as_u64().unwrap();
    let kind = ev["type"].as_str().unwrap().to_string();
    let url = ev["snapshot_url"].as_str().expect("snapshot_url");
    let r = c.get(format!("{base}{url}")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(size(&r.bytes().unwrap()), (640, 360));
    let r = c.get(format!("{base}{url}?width=160")).send().unwrap();
    assert_eq!(size(&r.bytes().unwrap()), (160, 90));

    // The same event through the list, with the filters.
    let list: Vec<serde_json::Value> =
        c.get(format!("{base}/api/events?stream={name}&type={kind}")).send().unwrap().json().unwrap();
    assert!(list.iter().any(|e| e["id"] == id), "{list:?}");
    let list: Vec<serde_json::Value> = c.get(format!("{base}/api/events?since={id}")).send().unwrap().json().unwrap();
    assert!(list.iter().all(|e| e["id"].as_u64().unwrap() > id));
    // By time: the event's own start_time includes it, a later time does not.
    let start = ev["start_time"].as_str().expect("start_time").to_string();
    let r = c.get(format!("{base}/api/events")).query(&[("since", start.as_str())]).send().unwrap();
    assert_eq!(r.status(), 200);
    let list: Vec<serde_json::Value> = r.json().unwrap();
    assert!(list.iter().any(|e| e["id"] == id), "since={start}: {list:?}");
    let r = c.get(format!("{base}/api/events")).query(&[("since", "2999-01-01T00:00:00Z")]).send().unwrap();
    assert!(r.json::<Vec<serde_json::Value>>().unwrap().is_empty());
    let r = c.get(format!("{base}/api/events?since=yesterday")).send().unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<serde_json::Value>().unwrap()["error"].as_str().unwrap().contains("RFC 3339"));
    let none: Vec<serde_json::Value> = c.get(format!("{base}/api/events?stream=other")).send().unwrap().json().unwrap();
    assert!(none.is_empty());
    assert_eq!(c.get(format!("{base}/api/events/999999/snapshot.jpg")).send().unwrap().status(), 404);
}

#[test]
fn thousand_viewers_come_and_go_and_slow_clients_do_not_exhaust_it() {
    let mut g = Guard::new();
    let name = format!("web-cyc-{}", std::process::id());
    producer(&mut g, "web-cyc-producer", &name, (320, 240), &[]);
    let (base, pid) = web(&mut g, "web-cyc", &["--max-connections", "64"]);
    let c = client();
    // One viewer stays, so each newcomer gets the current picture at once.
    let mut keep = c.get(format!("{base}/api/streams/{name}/mjpeg?fps=30")).send().unwrap();
    let mut keep_buf = Vec::new();
    read_parts(&mut keep, &mut keep_buf, 1);
    let cycle = |n: usize| {
        for _ in 0..n {
            let mut r = c.get(format!("{base}/api/streams/{name}/mjpeg?fps=30")).send().unwrap();
            let mut buf = Vec::new();
            read_parts(&mut r, &mut buf, 1);
        }
    };
    cycle(200);
    let rss0 = rss_kb(pid);
    cycle(1000);
    let rss1 = rss_kb(pid);
    println!("RSS over 1000 viewer connects/disconnects: {rss0} kB -> {rss1} kB ({:+} kB)", rss1 as i64 - rss0 as i64);
    assert!(rss1 < rss0 + 2048, "RSS grew {rss0} -> {rss1} kB");

    // Slow-loris: connections that never finish their headers do not stop
    // others, and are dropped.
    let addr = base.trim_start_matches("http://").to_string();
    let mut lorises: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /api/streams HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    let r = c.get(format!("{base}/api/streams")).send().unwrap();
    assert_eq!(r.status(), 200);
    for s in &mut lorises {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut sink = Vec::new();
        // The server closes it (after its header timeout): read ends.
        let _ = s.read_to_end(&mut sink);
    }
    // A viewer that never reads (a raw socket: its buffers fill) does not
    // stall the others.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    write!(stalled, "GET /api/streams/{name}/mjpeg?fps=30 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    read_parts(&mut keep, &mut keep_buf, 60);
}

#[test]
fn port_in_use_and_sigterm() {
    let mut g = Guard::new();
    let port = free_port();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = Command::new(bin("shmcast-web")).args(["--listen", &format!("127.0.0.1:{port}")]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", shmcast_testkit::describe(&out));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("shmcast-web: error: cannot listen on") && err.contains("in use"), "{err}");

    let name = format!("web-term-{}", std::process::id());
    producer(&mut g, "web-term-producer", &name, (320, 240), &[]);
    let (base, pid) = web(&mut g, "web-term", &[]);
    let mut live = client().get(format!("{base}/api/streams/{name}/mjpeg")).send().unwrap();
    read_parts(&mut live, &mut Vec::new(), 1);
    let t = Instant::now();
    signal(pid, "TERM");
    let status = wait_for(Duration::from_secs(1), || g.child("web-term").try_wait().ok().flatten())
        .unwrap_or_else(|| panic!("shmcast-web still running 1 s after SIGTERM"));
    println!("exited {:?} after SIGTERM", t.elapsed());
    assert!(status.success(), "{status:?}: {}", g.log("web-term"));
}
