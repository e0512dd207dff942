//! The detector's events: its JSON-lines files followed as they grow (like
//! `tail -F`: truncation and replacement start the file again), the last
//! [`KEEP`] events kept in memory with an id, and each new one broadcast to
//! the Server-Sent Events clients.
//!
//! Invariants (the files are written by another process: hostile input):
//! - At start, at most the last [`START_TAIL`] bytes of a file are read.
//! - A line longer than [`MAX_LINE`] is skipped; a line that is not a JSON
//!   object is skipped (counted in `shmcast_web_bad_event_lines_total`).
//! - Memory: [`KEEP`] events, a partial line of at most [`MAX_LINE`] per file.
//! - A snapshot is served only from a `--snapshots` directory, by the file
//!   name the event gives (never its directory part), so an event cannot
//!   point the server at another file.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use shmcast_common::metrics::Counter;
use tokio::sync::broadcast;

use crate::config::EventSource;

/// Events kept in memory.
pub const KEEP: usize = 1000;
/// Longest accepted line.
pub const MAX_LINE: usize = 1 << 20;
/// Bytes of an existing file read at start.
pub const START_TAIL: u64 = 8 << 20;
/// How often the files are checked for new lines.
pub const POLL: Duration = Duration::from_millis(100);

/// Where a listing of events starts (`/api/events?since=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// Events after this id.
    Id(u64),
    /// Events that started at or after this time (ns since the Unix epoch,
    /// UTC): their `start_capture_ns`, else their `start_time`.
    Time(i128),
}

impl Since {
    /// An event id (digits) or an RFC 3339 time (`2026-11-30T06:00:00Z`,
    /// `2026-11-30T07:00:00.5+01:00`).
    pub fn parse(s: &str) -> Result<Since, String> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().map(Since::Id).map_err(|_| format!("invalid since={s}: event id out of range"));
        }
        chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| Since::Time(unix_ns(&t))).ok_or_else(|| {
            format!("invalid since={s:?}: expected an event id or an RFC 3339 time such as 2026-11-30T06:00:00Z")
        })
    }

    fn admits(&self, e: &StoredEvent) -> bool {
        match *self {
            Since::Id(id) => e.id > id,
            Since::Time(t) => e.start_ns.is_some_and(|s| s >= t),
        }
    }
}

/// The event's start time in ns since the epoch: `start_capture_ns`, else
/// `start_time` (RFC 3339).
fn start_ns(obj: &serde_json::Map<String, Value>) -> Option<i128> {
    if let Some(ns) = obj.get("start_capture_ns").and_then(Value::as_u64).filter(|&n| n > 0) {
        return Some(i128::from(ns));
    }
    let t = obj.get("start_time").and_then(Value::as_str)?;
    chrono::DateTime::parse_from_rfc3339(t).ok().map(|t| unix_ns(&t))
}

/// ns since the epoch, for any year chrono parses (i64 ns end in 2262).
fn unix_ns(t: &chrono::DateTime<chrono::FixedOffset>) -> i128 {
    i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos())
}

/// One event: the detector's JSON object plus `id` and `stream`.
#[derive(Debug)]
pub struct StoredEvent {
    /// Id, increasing from 1 in this server's run.
    pub id: u64,
    /// When it started (ns since the epoch), if the event says.
    pub start_ns: Option<i128>,
    /// Stream name ("" when unknown).
    pub stream: String,
    /// Event type (`meteor`, `motion`, ...).
    pub kind: String,
    /// The object as served (with `id`, `stream` and, when the image can be
    /// served, `snapshot_url`).
    pub json: Value,
    /// The snapshot file, when one of the `--snapshots` directories holds it.
    pub snapshot: Option<PathBuf>,
}

/// The events store.
pub struct Events {
    events: Mutex<VecDeque<Arc<StoredEvent>>>,
    next_id: Mutex<u64>,
    tx: broadcast::Sender<Arc<StoredEvent>>,
    snapshot_dirs: Vec<PathBuf>,
    bad_lines: Counter,
    count: Counter,
}

impl Events {
    /// An empty store serving snapshots from `snapshot_dirs` (canonical).
    pub fn new(snapshot_dirs: Vec<PathBuf>) -> Events {
        let m = shmcast_common::metrics::global();
        Events {
            events: Mutex::new(VecDeque::new()),
            next_id: Mutex::new(1),
            tx: broadcast::channel(256).0,
            snapshot_dirs,
            bad_lines: m.counter("shmcast_web_bad_event_lines_total", "Event lines skipped (too long or not JSON)"),
            count: m.counter("shmcast_web_events_total", "Events read from the detector's files"),
        }
    }

    /// New events as they are read.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.tx.subscribe()
    }

    /// Kept events matching the filters, oldest first.
    pub fn query(&self, stream: Option<&str>, kind: Option<&str>, since: Option<Since>) -> Vec<Arc<StoredEvent>> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .filter(|e| stream.is_none_or(|s| e.stream == s))
            .filter(|e| kind.is_none_or(|k| e.kind == k))
            .filter(|e| since.is_none_or(|s| s.admits(e)))
            .cloned()
            .collect()
    }

    /// The kept event `id`.
    pub fn get(&self, id: u64) -> Option<Arc<StoredEvent>> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().find(|e| e.id == id).cloned()
    }

    /// Adds one line of `source`'s file.
    pub fn add_line(&self, source: &EventSource, line: &[u8]) {
        let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(line) else {
            self.bad_lines.inc();
            return;
        };
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or("").to_string();
        if kind == "summary" {
            return;
        }
        let file_name =
            obj.get("snapshot").and_then(Value::as_str).and_then(|p| Path::new(p).file_name()).map(|n| n.to_owned());
        let stream = source
            .stream
            .clone()
            .or_else(|| obj.get("stream").and_then(Value::as_str).map(str::to_string))
            .or_else(|| stream_from_snapshot_name(file_name.as_ref()?.to_str()?))
            .unwrap_or_default();
        let snapshot = file_name.and_then(|n| self.find_snapshot(Path::new(&n)));
        let mut id_lock = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        let id = *id_lock;
        *id_lock += 1;
        obj.insert("id".into(), id.into());
        obj.insert("stream".into(), stream.clone().into());
        if snapshot.is_some() {
            obj.insert("snapshot_url".into(), format!("/api/events/{id}/snapshot.jpg").into());
        }
        let start_ns = start_ns(&obj);
        let e = Arc::new(StoredEvent { id, start_ns, stream, kind, json: Value::Object(obj), snapshot });
        {
            let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
            if events.len() >= KEEP {
                events.pop_front();
            }
            events.push_back(Arc::clone(&e));
        }
        drop(id_lock);
        self.count.inc();
        // No receiver is fine: nobody listens.
        let _ = self.tx.send(e);
    }

    /// The snapshot file `name` in one of the snapshot directories.
    fn find_snapshot(&self, name: &Path) -> Option<PathBuf> {
        self.snapshot_dirs.iter().find_map(|dir| {
            let p = std::fs::canonicalize(dir.join(name)).ok()?;
            (p.starts_with(dir) && p.is_file()).then_some(p)
        })
    }

    /// Follows every file until `stop` is set.
    pub fn spawn_tailer(self: &Arc<Self>, sources: Vec<EventSource>, stop: Arc<AtomicBool>) -> std::io::Result<()> {
        let me = Arc::clone(self);
        std::thread::Builder::new().name("events".into()).spawn(move || {
            let mut tails: Vec<Tail> = sources.into_iter().map(Tail::new).collect();
            while !shmcast_common::should_stop(&stop) {
                for t in &mut tails {
                    t.poll(&me);
                }
                std::thread::sleep(POLL);
            }
        })?;
        Ok(())
    }
}

/// `<stream>-<start_frame>-<n>-<type>.png` → `<stream>` (stream names may
/// contain '-').
fn stream_from_snapshot_name(name: &str) -> Option<String> {
    let stem = name.strip_suffix(".png")?;
    let mut parts = stem.rsplitn(4, '-');
    let (_kind, _n, _start) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next().filter(|s| !s.is_empty()).map(str::to_string)
}

/// One followed file.
struct Tail {
    source: EventSource,
    /// (device, inode) of the file being read.
    id: Option<(u64, u64)>,
    offset: u64,
    partial: Vec<u8>,
    /// Dropping the rest of an overlong line.
    skipping: bool,
    warned: bool,
}

impl Tail {
    fn new(source: EventSource) -> Tail {
        Tail { source, id: None, offset: 0, partial: Vec::new(), skipping: false, warned: false }
    }

    fn poll(&mut self, events: &Events) {
        let meta = match std::fs::metadata(&self.source.path) {
            Ok(m) => m,
            Err(e) => {
                if !self.warned {
                    self.warned = true;
                    tracing::info!(file = %self.source.path.display(), "events file not readable yet: {e}");
                }
                return;
            }
        };
        self.warned = false;
        let id = (meta.dev(), meta.ino());
        if self.id != Some(id) {
            // First look, or the file was replaced: start it again.
            let first = self.id.is_none();
            self.id = Some(id);
            self.offset = if first { meta.len().saturating_sub(START_TAIL) } else { 0 };
            self.partial.clear();
            // Mid-file: the first (partial) line is dropped.
            self.skipping = self.offset > 0;
        }
        if meta.len() < self.offset {
            // Truncated.
            self.offset = 0;
            self.partial.clear();
            self.skipping = false;
        }
        if meta.len() == self.offset {
            return;
        }
        let Ok(mut f) = std::fs::File::open(&self.source.path) else { return };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut chunk = vec![0u8; 64 << 10];
        // Bounded per poll: at most 16 MiB, then the next poll goes on.
        for _ in 0..256 {
            let n = match f.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.offset += n as u64;
            let mut rest = &chunk[..n];
            while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                let (line, after) = rest.split_at(nl);
                if self.skipping {
                    self.skipping = false;
                } else if self.partial.len() + line.len() > MAX_LINE {
                    events.bad_lines.inc();
                } else {
                    self.partial.extend_from_slice(line);
                    let l = std::mem::take(&mut self.partial);
                    if !l.iter().all(u8::is_ascii_whitespace) {
                        events.add_line(&self.source, &l);
                    }
                }
                self.partial.clear();
                rest = &after[1..];
            }
            if !self.skipping {
                if self.partial.len() + rest.len() > MAX_LINE {
                    events.bad_lines.inc();
                    self.partial.clear();
                    self.skipping = true;
                } else {
                    self.partial.extend_from_slice(rest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_an_id_or_an_rfc3339_time() {
        assert_eq!(Since::parse("42"), Ok(Since::Id(42)));
        let t = 1_764_482_400_000_000_000i128; // 2025-11-30T06:00:00Z
        assert_eq!(Since::parse("2025-11-30T06:00:00Z"), Ok(Since::Time(t)));
        assert_eq!(Since::parse("2025-11-30T07:00:00.5+01:00"), Ok(Since::Time(t + 500_000_000)));
        assert!(matches!(Since::parse("2999-01-01T00:00:00Z"), Ok(Since::Time(_))));
        for bad in ["", "-1", "yesterday", "2025-11-30", "2025-11-30 06:00:00", "99999999999999999999999"] {
            let e = Since::parse(bad).unwrap_err();
            assert!(e.starts_with("invalid since="), "{bad}: {e}");
        }

        let events = Events::new(Vec::new());
        let src = EventSource { stream: Some("cam0".into()), path: PathBuf::from("x") };
        // By capture time, by start_time (the detector writes both), and one with neither.
        events.add_line(&src, format!("{{\"type\":\"meteor\",\"start_capture_ns\":{}}}", t - 1).as_bytes());
        events.add_line(&src, b"{\"type\":\"plane\",\"start_time\":\"2025-11-30T06:00:00.000Z\"}");
        events.add_line(&src, format!("{{\"type\":\"motion\",\"start_capture_ns\":{}}}", t + 1).as_bytes());
        events.add_line(&src, b"{\"type\":\"motion\"}");
        let kinds = |s: Since| events.query(None, None, Some(s)).iter().map(|e| e.kind.clone()).collect::<Vec<_>>();
        assert_eq!(kinds(Since::Time(t)), ["plane", "motion"]);
        assert_eq!(kinds(Since::Time(t + 2)), Vec::<String>::new());
        assert_eq!(kinds(Since::Id(2)), ["motion", "motion"]);
    }

    #[test]
    fn stream_names_from_snapshot_files() {
        assert_eq!(stream_from_snapshot_name("cam0-60-1-meteor.png").as_deref(), Some("cam0"));
        assert_eq!(stream_from_snapshot_name("front-door-7-12-motion.png").as_deref(), Some("front-door"));
        assert_eq!(stream_from_snapshot_name("x.png"), None);
    }

    #[test]
    fn follows_appends_truncation_and_bad_lines() {
        let dir = std::env::temp_dir().join(format!("shmcast-web-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("e.jsonl");
        std::fs::write(&path, "{\"type\":\"meteor\",\"start_frame\":1}\nnot json\n{\"type\":\"mot").unwrap();
        let events = Events::new(Vec::new());
        let mut t = Tail::new(EventSource { stream: Some("cam0".into()), path: path.clone() });
        t.poll(&events);
        assert_eq!(events.query(None, None, None).len(), 1);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"ion\"}\n{\"type\":\"summary\"}\n").unwrap();
        t.poll(&events);
        let all = events.query(None, None, None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].kind, "motion");
        assert_eq!(all[1].json["stream"], "cam0");
        assert_eq!(events.query(None, Some("meteor"), None).len(), 1);
        assert_eq!(events.query(None, None, Some(Since::Id(1))).len(), 1);
        assert_eq!(events.query(Some("other"), None, None).len(), 0);
        std::fs::write(&path, "{\"type\":\"meteor\"}\n").unwrap();
        t.poll(&events);
        assert_eq!(events.query(None, None, None).len(), 3);
        assert_eq!(events.bad_lines.get(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
