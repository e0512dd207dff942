//! Live views (`/api/streams/{name}/mjpeg`): one encoder thread per stream,
//! width and rate, shared by every viewer of that combination.
//!
//! Invariants:
//! - The encoder publishes the newest JPEG into a [`watch`] channel: it never
//!   waits for a viewer, and a viewer that reads slowly just skips to the
//!   newest picture (one that stops reading is dropped by the server's write
//!   stall limit), so no viewer slows another.
//! - The ring is mapped only while someone watches: the encoder thread ends
//!   (dropping its [`Follower`]) within [`POLL`] of its last viewer leaving.
//! - A producer that restarts is followed: the viewer's stream stays open and
//!   continues with the new producer's frames.
//! - At most [`MAX_FEEDS`] encoders run at once.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use shm_proto::{Event, Follower, ReaderOptions};
use shmcast_common::ReaderMetrics;
use shmcast_common::metrics::{Counter, IntGauge};
use tokio::sync::watch;

use crate::jpeg;

/// How often an encoder checks for its producer and its viewers.
pub const POLL: Duration = Duration::from_millis(100);
/// Encoders running at once (distinct stream/width/rate combinations).
pub const MAX_FEEDS: usize = 32;

/// What one feed is: a stream, an output width and a rate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FeedKey {
    /// Stream name.
    pub name: String,
    /// Requested width (`None`: the frame's).
    pub width: Option<u32>,
    /// Frames per second × 1000.
    pub milli_fps: u32,
}

/// A running encoder; viewers hold it (and a receiver of its pictures).
pub struct Feed {
    rx: watch::Receiver<Option<Bytes>>,
}

impl Feed {
    /// A receiver of the feed's pictures.
    pub fn receiver(&self) -> watch::Receiver<Option<Bytes>> {
        self.rx.clone()
    }
}

/// Every running feed.
pub struct Hub {
    quality: u8,
    feeds: Mutex<HashMap<FeedKey, Weak<Feed>>>,
    running: IntGauge,
    encoded: Counter,
}

impl Hub {
    /// A hub encoding at `quality`.
    pub fn new(quality: u8) -> Hub {
        let m = shmcast_common::metrics::global();
        Hub {
            quality,
            feeds: Mutex::new(HashMap::new()),
            running: m.gauge("shmcast_web_live_encoders", "Live-view encoders running (stream, width, rate)"),
            encoded: m.counter("shmcast_web_live_frames_total", "Live-view frames encoded"),
        }
    }

    /// The feed for `key`, started if none runs; `None` when [`MAX_FEEDS`]
    /// are running.
    pub fn subscribe(&self, key: FeedKey) -> std::io::Result<Option<Arc<Feed>>> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = feeds.get(&key).and_then(Weak::upgrade) {
            return Ok(Some(f));
        }
        feeds.retain(|_, w| w.strong_count() > 0);
        if feeds.len() >= MAX_FEEDS {
            return Ok(None);
        }
        let (tx, rx) = watch::channel(None);
        let feed = Arc::new(Feed { rx });
        let (quality, running, encoded) = (self.quality, self.running.clone(), self.encoded.clone());
        let k = key.clone();
        std::thread::Builder::new()
            .name(format!("live-{}", key.name))
            .spawn(move || encoder(k, quality, tx, running, encoded))?;
        feeds.insert(key, Arc::downgrade(&feed));
        Ok(Some(feed))
    }
}

/// Follows the stream and encodes a frame every period until no viewer is left.
fn encoder(key: FeedKey, quality: u8, tx: watch::Sender<Option<Bytes>>, running: IntGauge, encoded: Counter) {
    running.inc();
    let period = Duration::from_secs_f64(1000.0 / f64::from(key.milli_fps.max(1)));
    let Ok(mut follower) = Follower::new(&key.name, ReaderOptions::default()) else {
        running.dec();
        return;
    };
    let mut metrics = ReaderMetrics::new();
    let mut buf = Vec::new();
    let mut next_due = Instant::now();
    let mut last_record = Instant::now();
    let mut warned = false;
    tracing::debug!(stream = %key.name, width = ?key.width, fps = key.milli_fps as f64 / 1000.0, "live view started");
    while !tx.is_closed() {
        match follower.poll(POLL) {
            Ok(Event::Frame(f)) => {
                let now = Instant::now();
                // Half a period of slack: a frame arriving a little early
                // (jitter) still counts, so a 30 fps view of a 30 fps
                // stream gets every frame.
                if now + period / 2 < next_due {
                    continue;
                }
                // Skip missed periods instead of bursting to catch up.
                next_due = (next_due + period).max(now);
                let format = *f.format();
                buf.resize(f.len(), 0);
                let Ok(n) = f.copy_to(&mut buf) else {
                    // Overwritten while copied: take the next frame.
                    next_due = now;
                    continue;
                };
                match jpeg::encode(&buf[..n], &format, key.width, quality) {
                    Ok(jpg) => {
                        encoded.inc();
                        tx.send_replace(Some(Bytes::from(jpg)));
                    }
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!(stream = %key.name, "live view: {e}");
                    }
                    Err(_) => {}
                }
            }
            Ok(Event::Attached(a)) => {
                tracing::debug!(stream = %key.name, pid = a.pid, format = %a.format, "live view attached");
                warned = false;
            }
            Ok(Event::Detached(s)) => tracing::debug!(stream = %key.name, status = %s, "live view: producer gone"),
            Ok(Event::Idle) => {}
            Err(e) => {
                if !warned {
                    warned = true;
                    tracing::warn!(stream = %key.name, "live view: {e}");
                }
                std::thread::sleep(POLL);
            }
        }
        if last_record.elapsed() >= Duration::from_secs(1) {
            metrics.record(&follower);
            last_record = Instant::now();
        }
    }
    metrics.record(&follower);
    drop(follower);
    running.dec();
    tracing::debug!(stream = %key.name, "live view stopped: no viewer left");
}
