//! The `shmcast-detect` process: follow a stream, run the [`Detector`] on
//! every frame read in place, hand events to the [`EventSink`], keep the
//! metrics and the periodic stats line, and write the summary at the end.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shm_proto::{Event, Follower, ProducerStatus, ReaderOptions, VideoFormat};
use shmcast_common::ReaderMetrics;
use shmcast_common::metrics::{self, Counter, Histogram};

use super::cli::{EventsTo, Settings};
use super::mqtt::{MqttStats, Publisher};
use super::sink::{EventSink, Output};
use super::{Config, Detector, EventRecord, Kind, Summary};

/// The detector's own metrics (the reader's are [`ReaderMetrics`]):
/// `shmcast_events_total`, `shmcast_events_<type>_total`, `shmcast_process_seconds`.
pub struct Metrics {
    events: Counter,
    /// Events by type, in the order of `Kind::ALL`.
    by_type: Vec<Counter>,
    process: Histogram,
}

impl Metrics {
    /// Registers the metrics in the process's registry.
    pub fn register() -> Metrics {
        let m = metrics::global();
        let proc_bounds = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 3.3e-2, 5e-2, 0.1, 0.2, 0.5];
        Metrics {
            events: m.counter("shmcast_events_total", "Events reported"),
            by_type: Kind::ALL
                .iter()
                .map(|k| {
                    let name = format!("shmcast_events_{}_total", k.as_str());
                    m.counter(&name, &format!("Events of type {} reported", k.as_str()))
                })
                .collect(),
            process: m.histogram("shmcast_process_seconds", "Per-frame processing time", &proc_bounds),
        }
    }

    /// Brings the event counters up to the sink's counts.
    fn record(&self, sink: &EventSink) {
        self.events.inc_by(sink.count().saturating_sub(self.events.get()));
        for (kind, c) in Kind::ALL.iter().zip(&self.by_type) {
            c.inc_by(sink.by_type().get(*kind).saturating_sub(c.get()));
        }
    }
}

/// Processing-time percentiles over a stats period, without allocating per frame.
pub struct Times {
    buf: Vec<f64>,
    scratch: Vec<f64>,
    n: usize,
}

impl Default for Times {
    fn default() -> Self {
        Times::new()
    }
}

impl Times {
    /// Keeps the last 4096 times of a period.
    pub fn new() -> Times {
        Times { buf: vec![0.0; 4096], scratch: Vec::with_capacity(4096), n: 0 }
    }
    /// Adds one time, in seconds.
    pub fn push(&mut self, v: f64) {
        let i = self.n % self.buf.len();
        self.buf[i] = v;
        self.n += 1;
    }
    /// (p50, p99, max) in ms, and resets.
    pub fn take(&mut self) -> (f64, f64, f64) {
        let k = self.n.min(self.buf.len());
        self.n = 0;
        if k == 0 {
            return (0.0, 0.0, 0.0);
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.buf[..k]);
        self.scratch.sort_unstable_by(f64::total_cmp);
        let q = |p: f64| self.scratch[((k as f64 - 1.0) * p).round() as usize] * 1e3;
        (q(0.5), q(0.99), self.scratch[k - 1] * 1e3)
    }
}

/// Runs the detector until `stop` is set (SIGINT/SIGTERM), `--frames` were
/// processed, or (with `--exit-on-close`) the producer closed the stream;
/// writes the summary line last.
pub fn run(s: Settings, stop: &AtomicBool) -> anyhow::Result<()> {
    if let (Some(path), Some(img)) = (&s.mask_file, &s.detector.mask_image) {
        tracing::info!(
            file = %path.display(), size = format!("{}x{}", img.width, img.height),
            masked = format!("{:.1}%", 100.0 * img.masked_fraction()), "mask image"
        );
    }
    if let Some(dir) = &s.snapshots {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create snapshot directory {}", dir.display()))?;
    }
    let out: Output = match &s.events {
        EventsTo::Stdout => Box::new(std::io::stdout()),
        EventsTo::File(path) => {
            let f = File::options()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open events file {}", path.display()))?;
            Box::new(BufWriter::new(f))
        }
    };
    let mqtt_stats = Arc::new(MqttStats::default());
    let mqtt = match &s.mqtt {
        Some(c) => {
            tracing::info!(broker = %c.addr, topic = %c.topic, "publishing events to MQTT");
            Some(Publisher::start(c.clone(), s.mqtt_queue, Arc::clone(&mqtt_stats))?)
        }
        None => None,
    };
    let mut sink = EventSink::new(out, s.snapshots.clone(), mqtt, &s.name)?;

    let m = Metrics::register();
    let mut reader_metrics = ReaderMetrics::new();
    let mut follower = Follower::new(&s.name, ReaderOptions { start: s.start, ..ReaderOptions::default() })
        .with_context(|| format!("invalid stream name {:?}", s.name))?;
    let started = Instant::now();
    let mut detector: Option<Detector> = None;
    let mut events: Vec<EventRecord> = Vec::with_capacity(16);
    let mut attaches = 0u64;
    let mut processed = 0u64;
    let mut times = Times::new();
    let mut last_stats = Instant::now();
    let mut period_frames = 0u64;
    let mut last_open_error: Option<String> = None;
    let mut rebaselines_before = 0u64;
    tracing::info!(stream = %s.name, "waiting for the producer");

    loop {
        if shmcast_common::should_stop(stop) {
            tracing::info!("stopping on signal");
            break;
        }
        if s.frames.is_some_and(|n| processed >= n) {
            break;
        }
        let wait_start_ns = shm_proto::os::realtime_ns();
        match follower.poll(Duration::from_millis(100)) {
            Ok(Event::Frame(frame)) => {
                let t0 = Instant::now();
                let meta = *frame.meta();
                // Only a frame published while we waited measures the wake-up;
                // one that was already there measures our backlog.
                if meta.publish_ns >= wait_start_ns {
                    reader_metrics.observe_wake(meta.publish_ns);
                }
                let Some(det) = detector.as_mut() else {
                    // Cannot happen: a frame comes only after an attach.
                    continue;
                };
                // The grid is used only if the frame was intact while `load`
                // read it. With --snapshots, `process_frame` reads it again on
                // a track's new peak and checks it again after that copy.
                match frame.read(|data| det.load(data)) {
                    Some(true) => {
                        frame.read(|data| {
                            det.process_frame(meta.frame_id, meta.capture_ns, data, || frame.is_intact(), &mut events)
                        });
                    }
                    Some(false) => {}
                    // The reader counted the overrun (shmcast_overruns_total).
                    None => {}
                }
                processed += 1;
                period_frames += 1;
                let dt = t0.elapsed().as_secs_f64();
                m.process.observe(dt);
                times.push(dt);
            }
            Ok(Event::Attached(a)) => {
                attaches += 1;
                last_open_error = None;
                tracing::info!(
                    stream = %s.name, epoch = format!("{:016x}", a.epoch), pid = a.pid,
                    format = %a.format, slots = a.slots, "attached to producer"
                );
                if let Some(d) = detector.as_mut() {
                    rebaselines_before += d.rebaselines();
                    d.flush(&mut events);
                }
                if let Some(o) = a.overlay {
                    tracing::info!(overlay = %o, "the producer's overlay region is not analysed");
                }
                let d = make_detector(&s.detector, &a.format, a.overlay)?;
                let (gw, gh, bin) = d.grid();
                tracing::info!(grid = format!("{gw}x{gh}"), bin, model_bytes = d.memory_bytes(), "detector ready");
                detector = Some(d);
            }
            Ok(Event::Detached(status)) => {
                tracing::info!(stream = %s.name, status = %status, "producer gone; waiting for a new one");
                if let Some(d) = detector.as_mut() {
                    d.flush(&mut events);
                }
                if s.exit_on_close && status == ProducerStatus::Closed {
                    for ev in events.drain(..) {
                        sink.emit(ev)?;
                    }
                    break;
                }
            }
            Ok(Event::Idle) => {}
            Err(e) => {
                let msg = format!("{e}");
                if last_open_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!("cannot attach to stream {}: {msg}", s.name);
                    last_open_error = Some(msg);
                }
            }
        }
        for ev in events.drain(..) {
            sink.emit(ev)?;
        }
        if attaches == 0
            && let Some(t) = s.attach_timeout
            && started.elapsed() >= t
        {
            let why = last_open_error.map(|e| format!(": {e}")).unwrap_or_default();
            bail!(
                "no producer for stream {} after {} s{why} (is shmcast-producer --name {} running?)",
                s.name,
                t.as_secs_f64(),
                s.name
            );
        }
        // Counters from the follower (cumulative over producers).
        let st = follower.stats();
        reader_metrics.record(&follower);
        m.record(&sink);
        if last_stats.elapsed() >= Duration::from_secs(5) {
            let secs = last_stats.elapsed().as_secs_f64();
            let (p50, p99, max) = times.take();
            let (sigma, tracks, dets) =
                detector.as_ref().map(|d| (d.sigma(), d.active_tracks(), d.detections())).unwrap_or((0.0, 0, 0));
            tracing::info!(
                fps = format!("{:.1}", period_frames as f64 / secs),
                frames = st.frames,
                lost = st.lost,
                overruns = st.overruns,
                events = sink.count(),
                p50_ms = format!("{p50:.2}"),
                p99_ms = format!("{p99:.2}"),
                max_ms = format!("{max:.2}"),
                sigma = format!("{sigma:.2}"),
                tracks,
                detections = dets,
                "stats"
            );
            period_frames = 0;
            last_stats = Instant::now();
        }
    }

    if let Some(d) = detector.as_mut() {
        d.flush(&mut events);
        rebaselines_before += d.rebaselines();
        tracing::info!(
            detections = d.detections(),
            sigma = format!("{:.2}", d.sigma()),
            gain = format!("{:.2}", d.threshold_gain()),
            "detector totals"
        );
    }
    for ev in events.drain(..) {
        sink.emit(ev)?;
    }
    // Every queued event emitted (its snapshot written first).
    let (mut out, mqtt) = sink.finish()?;
    if let Some(p) = mqtt {
        p.close(Duration::from_secs(2));
    }
    m.record(&sink);
    let st = follower.stats();
    let summary = Summary {
        kind: "summary",
        frames: st.frames,
        lost: st.lost,
        overruns: st.overruns,
        events: sink.count(),
        by_type: sink.by_type(),
        rebaselines: rebaselines_before,
        attaches,
        mqtt_dropped: mqtt_stats.dropped.load(Ordering::Relaxed),
        snapshots_dropped: sink.snapshots_dropped(),
        snapshots_failed: sink.snapshots_failed(),
    };
    writeln!(out, "{}", serde_json::to_string(&summary)?).context("cannot write events")?;
    out.flush().context("cannot write events")?;
    tracing::info!(frames = st.frames, lost = st.lost, overruns = st.overruns, events = sink.count(), "done");
    Ok(())
}

fn make_detector(cfg: &Config, format: &VideoFormat, overlay: Option<shm_proto::Rect>) -> anyhow::Result<Detector> {
    Detector::for_stream(cfg, format, overlay).with_context(|| format!("cannot detect on {format}"))
}
