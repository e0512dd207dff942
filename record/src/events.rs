//! Event sources: the detector's JSON lines followed as they are appended to
//! a file, and MQTT messages with the same JSON (see docs/detect.md).
//!
//! Both are hostile input: lines are bounded (a longer one is skipped),
//! JSON that is not an event with capture times is counted and ignored, and
//! the queue to the clip cutter is bounded (an event that does not fit is
//! dropped and counted). Each source runs on its own thread and honours the
//! stop flag within 200 ms.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::MqttSource;
use crate::recorder::Metrics;

/// Longest accepted event line.
const MAX_LINE: usize = 1 << 20;
const POLL: Duration = Duration::from_millis(200);

/// An event, as the clip cutter needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventIn {
    /// `file` or `mqtt`.
    pub source: &'static str,
    /// `meteor`, `motion`, ...
    pub kind: String,
    /// Capture time of the first detection (Unix ns).
    pub start_ns: u64,
    /// Capture time of the last detection.
    pub end_ns: u64,
    /// First frame id.
    pub start_frame: Option<u64>,
    /// Last frame id.
    pub end_frame: Option<u64>,
    /// The JSON as received.
    pub json: String,
}

/// Parses one event line; `None` for anything that is not an event (the
/// detector's summary line, garbage).
pub fn parse_event(line: &str, source: &'static str) -> Option<EventIn> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let kind = v.get("type")?.as_str()?;
    if kind == "summary" || kind.is_empty() || kind.len() > 64 {
        return None;
    }
    let start_ns = v.get("start_capture_ns")?.as_u64()?;
    let end_ns = v.get("end_capture_ns").and_then(|x| x.as_u64()).unwrap_or(start_ns).max(start_ns);
    // A day is far beyond any event; a longer span is not trusted.
    if end_ns - start_ns > 86_400_000_000_000 {
        return None;
    }
    let kind: String = kind.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    Some(EventIn {
        source,
        kind: if kind.is_empty() { "event".into() } else { kind },
        start_ns,
        end_ns,
        start_frame: v.get("start_frame").and_then(|x| x.as_u64()),
        end_frame: v.get("end_frame").and_then(|x| x.as_u64()),
        json: v.to_string(),
    })
}

fn deliver(line: &str, source: &'static str, tx: &SyncSender<EventIn>, m: &Metrics) {
    if line.trim().is_empty() {
        return;
    }
    // Relaxed: statistics.
    match parse_event(line, source) {
        Some(e) => {
            m.events.fetch_add(1, Ordering::Relaxed);
            if tx.try_send(e).is_err() {
                m.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        None => {
            if !line.contains("\"summary\"") {
                m.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Follows `path` from its current end: new complete lines are events. A
/// truncated or replaced file is read again from its start.
pub fn follow_file(
    path: PathBuf,
    tx: SyncSender<EventIn>,
    stop: Arc<AtomicBool>,
    m: Metrics,
) -> anyhow::Result<JoinHandle<()>> {
    // Start at the end (as it is now): events already in the file were handled before.
    let mut pos = std::fs::metadata(&path).map(|md| md.len()).unwrap_or(0);
    Ok(std::thread::Builder::new().name("record-events".into()).spawn(move || {
        let mut file: Option<(File, u64)> = None;
        let mut partial: Vec<u8> = Vec::new();
        let mut skipping = false;
        let mut missing_logged = false;
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            let md = match std::fs::metadata(&path) {
                Ok(md) => md,
                Err(_) => {
                    if !missing_logged {
                        info!(file = %path.display(), "events file not there yet; waiting for it");
                        missing_logged = true;
                    }
                    file = None;
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            if file.as_ref().is_none_or(|(_, ino)| *ino != md.ino()) {
                match File::open(&path) {
                    Ok(f) => {
                        if file.is_some() || missing_logged {
                            // Replaced or newly created: all of it is new.
                            pos = 0;
                        }
                        file = Some((f, md.ino()));
                        partial.clear();
                    }
                    Err(e) => {
                        warn!(file = %path.display(), "cannot open events file: {e}");
                        std::thread::sleep(POLL);
                        continue;
                    }
                }
            }
            if md.len() < pos {
                pos = 0;
                partial.clear();
            }
            if md.len() == pos {
                std::thread::sleep(POLL);
                continue;
            }
            let Some((f, _)) = file.as_mut() else { continue };
            if f.seek(SeekFrom::Start(pos)).is_err() {
                std::thread::sleep(POLL);
                continue;
            }
            let n = match f.read(&mut buf) {
                Ok(0) | Err(_) => {
                    std::thread::sleep(POLL);
                    continue;
                }
                Ok(n) => n,
            };
            pos += n as u64;
            for &b in &buf[..n] {
                if b == b'\n' {
                    if !skipping {
                        deliver(&String::from_utf8_lossy(&partial), "file", &tx, &m);
                    }
                    partial.clear();
                    skipping = false;
                } else if !skipping {
                    partial.push(b);
                    if partial.len() > MAX_LINE {
                        warn!(file = %path.display(), "event line longer than {MAX_LINE} bytes skipped");
                        m.events_dropped.fetch_add(1, Ordering::Relaxed);
                        partial.clear();
                        skipping = true;
                    }
                }
            }
        }
    })?)
}

/// Subscribes to `src.topic` and turns each message into an event;
/// reconnects with a 1 s pause while the broker is away.
pub fn mqtt(
    src: MqttSource,
    stream: &str,
    tx: SyncSender<EventIn>,
    stop: Arc<AtomicBool>,
    m: Metrics,
) -> anyhow::Result<JoinHandle<()>> {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let id: String = format!("shmcast-rec-{}-{}", stream, std::process::id()).chars().take(23).collect();
    let mut opts = MqttOptions::new(id, src.host.clone(), src.port);
    opts.set_keep_alive(Duration::from_secs(15));
    opts.set_max_packet_size(MAX_LINE, MAX_LINE);
    if let Some((u, p)) = &src.credentials {
        opts.set_credentials(u.clone(), p.clone());
    }
    let (client, mut conn) = Client::new(opts, 16);
    Ok(std::thread::Builder::new().name("record-mqtt".into()).spawn(move || {
        let mut down_logged = false;
        while !stop.load(Ordering::Relaxed) {
            match conn.recv_timeout(POLL) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    info!(broker = %format!("{}:{}", src.host, src.port), topic = %src.topic, "MQTT connected");
                    down_logged = false;
                    if let Err(e) = client.try_subscribe(src.topic.clone(), QoS::AtMostOnce) {
                        warn!("MQTT subscribe: {e}");
                    }
                }
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    deliver(&String::from_utf8_lossy(&p.payload), "mqtt", &tx, &m);
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    if !down_logged {
                        warn!(broker = %format!("{}:{}", src.host, src.port), "MQTT: {e}; retrying every second");
                        down_logged = true;
                    }
                    for _ in 0..5 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(POLL);
                    }
                }
                Err(rumqttc::RecvTimeoutError::Timeout) => {}
                Err(rumqttc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = client.try_disconnect();
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_detector_lines_and_ignores_others() {
        let line = r#"{"type":"meteor","start_frame":60,"end_frame":70,"bbox":[1,2,3,4],"start_capture_ns":1000,"end_capture_ns":2000}"#;
        let e = parse_event(line, "file").unwrap();
        assert_eq!(
            (e.kind.as_str(), e.start_ns, e.end_ns, e.start_frame, e.end_frame),
            ("meteor", 1000, 2000, Some(60), Some(70))
        );
        assert!(parse_event(r#"{"type":"summary","frames":3}"#, "file").is_none());
        assert!(parse_event("not json", "file").is_none());
        assert!(parse_event(r#"{"type":"motion"}"#, "file").is_none());
        assert!(parse_event(r#"{"type":"motion","start_capture_ns":-5}"#, "file").is_none());
        let e = parse_event(r#"{"type":"../../x","start_capture_ns":5,"end_capture_ns":1}"#, "mqtt").unwrap();
        assert_eq!((e.kind.as_str(), e.end_ns), ("x", 5));
    }

    #[test]
    fn follows_appends_from_the_end_and_rereads_a_replaced_file() {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!("shmcast-record-events-{}.jsonl", std::process::id()));
        let line = |n: u64| format!("{{\"type\":\"motion\",\"start_frame\":{n},\"start_capture_ns\":{}}}\n", 1000 + n);
        std::fs::write(&path, line(1)).unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let stop = Arc::new(AtomicBool::new(false));
        let h = follow_file(path.clone(), tx, Arc::clone(&stop), Metrics::register()).unwrap();
        let recv = || rx.recv_timeout(Duration::from_secs(30)).map(|e: EventIn| e.start_frame);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        // A line written in two pieces (the follower may read in between) is
        // one event; garbage and the summary are skipped.
        f.write_all(b"{\"type\":\"meteor\",\"start_frame\":2,").unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        f.write_all(b"\"start_capture_ns\":5}\nnot json\n{\"type\":\"summary\"}\n").unwrap();
        f.write_all(line(3).as_bytes()).unwrap();
        assert_eq!(recv(), Ok(Some(2)), "the line already there at start is not an event");
        assert_eq!(recv(), Ok(Some(3)));
        // Replaced (new inode): read from its start.
        drop(f);
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, line(4)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(recv(), Ok(Some(4)));
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
