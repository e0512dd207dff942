//! The streams of the host, as `shmcast-inspect` finds them: the segment
//! list, each segment's header (opened, read and closed again each round, so
//! no ring stays mapped for discovery), the frame rate measured from the
//! head's progress, the frames the source dropped (gaps in the producer's
//! frame ids), the processes mapping each segment and the RTSP bridge
//! serving it.
//!
//! One background thread refreshes the list every [`PERIOD`]; handlers read
//! the last list and never touch `/proc` themselves.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use shm_proto::{Reader, ReaderOptions, SegmentInfo, Start};
use shmcast_common::procs::{self, Process, RtspBridge};

/// How often the list is refreshed.
pub const PERIOD: Duration = Duration::from_millis(500);
/// How often `/proc` is scanned for readers and bridges (it costs more).
const PROC_PERIOD: Duration = Duration::from_secs(2);

/// One stream as the API shows it.
#[derive(Clone, Debug)]
pub struct Stream {
    /// The header, as last read.
    pub info: SegmentInfo,
    /// Frames per second published, measured.
    pub fps: f64,
    /// Frames the source dropped before publishing (frame id gaps) since
    /// this server first saw the producer.
    pub lost: u64,
    /// Processes mapping the segment, the producer excluded.
    pub readers: Vec<Process>,
    /// The RTSP bridge serving the stream, if one runs.
    pub rtsp: Option<RtspBridge>,
}

impl Stream {
    /// The keys of [`shmcast_common::describe::segment`] (those of
    /// `shmcast-inspect --json` but `overlay`), plus `lost_frames` and
    /// `rtsp_url` (with `host` standing in for an unspecified listen address).
    pub fn to_json(&self, host: &str) -> Value {
        let rtsp_url = self.rtsp.as_ref().map(|b| rtsp_url(b, host));
        let mut m = shmcast_common::describe::segment(&self.info, self.fps, &self.readers);
        m.insert("lost_frames".into(), self.lost.into());
        m.insert("rtsp_url".into(), rtsp_url.into());
        Value::Object(m)
    }
}

fn rtsp_url(b: &RtspBridge, host: &str) -> String {
    let (ip, port) = b.listen.rsplit_once(':').unwrap_or((b.listen.as_str(), "8554"));
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let host = match ip {
        "0.0.0.0" | "::" | "" => host.to_string(),
        ip if ip.contains(':') => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("rtsp://{host}:{port}{}", b.mount)
}

/// What the refresher remembers of a stream between rounds.
struct Sample {
    at: Instant,
    epoch: u64,
    head: u64,
    frame_id: Option<u64>,
    lost: u64,
    fps: f64,
}

/// The shared list of streams.
#[derive(Default)]
pub struct Directory {
    streams: RwLock<Vec<Stream>>,
}

impl Directory {
    /// Every stream, by name.
    pub fn all(&self) -> Vec<Stream> {
        self.streams.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One stream; a segment that appeared since the last round is read now.
    pub fn get(&self, name: &str) -> Option<Stream> {
        if let Some(s) = self.all().into_iter().find(|s| s.info.name == name) {
            return Some(s);
        }
        let r = Reader::open(name, &ReaderOptions::default()).ok()?;
        Some(Stream { info: r.info(), fps: 0.0, lost: 0, readers: Vec::new(), rtsp: None })
    }

    /// Refreshes the list every [`PERIOD`] until `stop` is set.
    pub fn spawn_refresher(self: &Arc<Self>, stop: Arc<AtomicBool>) -> std::io::Result<()> {
        let dir = Arc::clone(self);
        std::thread::Builder::new().name("discovery".into()).spawn(move || {
            let mut samples: HashMap<String, Sample> = HashMap::new();
            let mut procs_at: Option<Instant> = None;
            let mut mapping = Default::default();
            let mut bridges = Vec::new();
            while !shmcast_common::should_stop(&stop) {
                let mut list = round(&mut samples);
                if procs_at.is_none_or(|t| t.elapsed() >= PROC_PERIOD) {
                    let paths: Vec<&std::path::Path> = list.iter().map(|s| s.info.path.as_path()).collect();
                    mapping = procs::mapping(&paths);
                    bridges = procs::rtsp_bridges();
                    procs_at = Some(Instant::now());
                }
                for s in &mut list {
                    let producer = s.info.identity.pid;
                    s.readers = mapping
                        .get(&s.info.path.display().to_string())
                        .map(|v: &Vec<Process>| v.iter().filter(|p| p.pid != producer).cloned().collect())
                        .unwrap_or_default();
                    s.rtsp = bridges.iter().find(|b| b.name == s.info.name).cloned();
                }
                *dir.streams.write().unwrap_or_else(|p| p.into_inner()) = list;
                std::thread::sleep(PERIOD);
            }
        })?;
        Ok(())
    }
}

/// Reads every segment's header once, updating the rate samples.
fn round(samples: &mut HashMap<String, Sample>) -> Vec<Stream> {
    let mut list = Vec::new();
    let names = shm_proto::segment::list();
    samples.retain(|n, _| names.contains(n));
    for name in names {
        let Ok(mut r) = Reader::open(&name, &ReaderOptions { start: Start::Oldest, ..ReaderOptions::default() }) else {
            continue;
        };
        let info = r.info();
        let frame_id = r.latest().map(|f| f.meta().frame_id);
        let now = Instant::now();
        let s = samples.entry(name.clone()).or_insert(Sample {
            at: now,
            epoch: info.identity.epoch,
            head: info.head,
            frame_id,
            lost: 0,
            fps: 0.0,
        });
        if s.epoch != info.identity.epoch {
            *s = Sample { at: now, epoch: info.identity.epoch, head: info.head, frame_id, lost: 0, fps: 0.0 };
        }
        let dt = now.duration_since(s.at).as_secs_f64();
        if dt >= 0.9 {
            let published = info.head.saturating_sub(s.head);
            s.fps = if info.status.is_alive() { published as f64 / dt } else { 0.0 };
            if let (Some(a), Some(b)) = (s.frame_id, frame_id) {
                // Frame ids advance by one per captured frame: more than the
                // head moved is what the source dropped.
                s.lost += b.saturating_sub(a).saturating_sub(published);
            }
            s.at = now;
            s.head = info.head;
            s.frame_id = frame_id;
        }
        list.push(Stream { info, fps: s.fps, lost: s.lost, readers: Vec::new(), rtsp: None });
    }
    list.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtsp_urls() {
        let b = |listen: &str| RtspBridge { pid: 1, name: "cam0".into(), listen: listen.into(), mount: "/cam0".into() };
        assert_eq!(rtsp_url(&b("127.0.0.1:8554"), "h"), "rtsp://127.0.0.1:8554/cam0");
        assert_eq!(rtsp_url(&b("0.0.0.0:9000"), "box.lan"), "rtsp://box.lan:9000/cam0");
        assert_eq!(rtsp_url(&b("[::]:9000"), "box.lan"), "rtsp://box.lan:9000/cam0");
        assert_eq!(rtsp_url(&b("[::1]:9000"), "h"), "rtsp://[::1]:9000/cam0");
    }
}
