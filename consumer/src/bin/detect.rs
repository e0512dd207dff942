//! shmcast-detect: a real-time meteor and motion detector that reads frames
//! in place from a shmcast ring.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use shm_proto::{Event, Follower, ProducerStatus, ReaderOptions, Start, VideoFormat};
use shmcast_common::ReaderMetrics;
use shmcast_common::metrics::{self, Counter, Histogram};
use shmcast_consumer::detect::mask::MaskImage;
use shmcast_consumer::detect::mqtt::{MqttConfig, MqttStats, Publisher};
use shmcast_consumer::detect::sink::EventSink;
use shmcast_consumer::detect::{Config, Detector, EventRecord, Kind, Rect, Summary};

/// Detect meteors and moving objects in a shmcast stream, reading frames in place.
///
/// Events are JSON lines (type, start_frame, end_frame, bbox, peak, capture
/// times, points, speed); at exit a last line with "type":"summary".
///
/// Examples:
///   shmcast-detect --name cam0
///   shmcast-detect --name cam0 --events events.jsonl --snapshots snaps/ --mask 0,0,1280,40
///   shmcast-detect --name cam0 --mqtt mqtt://127.0.0.1:1883 --topic shmcast/cam0/events
#[derive(Parser, Debug)]
#[command(name = "shmcast-detect", version, verbatim_doc_comment)]
struct Args {
    /// Stream name (the producer's --name).
    #[arg(long, default_value = "cam0")]
    name: String,

    /// Where to write events: a file (appended) or - for stdout.
    #[arg(long, default_value = "-", value_name = "FILE|-")]
    events: String,

    /// Write one PNG per event into DIR: the full-resolution luma of its peak
    /// frame with the track's box drawn; the event's JSON names the file.
    #[arg(long, value_name = "DIR")]
    snapshots: Option<PathBuf>,

    /// Exclude a region x,y,w,h (full-resolution pixels) from detection; repeatable.
    /// The producer's own overlay region (e.g. the test pattern's status band)
    /// is always excluded.
    #[arg(long, value_name = "X,Y,W,H")]
    mask: Vec<Rect>,

    /// Exclude the dark pixels of a mask image (PNG, or PGM P5/P2; scaled to
    /// the stream's size): paint what to ignore black, what to analyse white.
    #[arg(long, value_name = "FILE")]
    mask_file: Option<PathBuf>,

    /// Fail if no producer appears within SECS (default: wait forever).
    #[arg(long, value_name = "SECS")]
    attach_timeout: Option<f64>,

    /// Where to start in the ring when first attaching: `oldest` (every frame
    /// still in the ring) or `next` (only frames published from now on).
    #[arg(long, default_value = "oldest", value_parser = ["oldest", "next"])]
    start: String,

    /// Stop after processing N frames.
    #[arg(long, value_name = "N")]
    frames: Option<u64>,

    /// Exit (with the summary) when the producer closes the stream, instead of waiting for a new one.
    #[arg(long)]
    exit_on_close: bool,

    /// Cell size in pixels of the background model (0: automatic, about 960 cells across).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=16))]
    bin: u32,

    /// Detection threshold in noise σ (seed cells; growth uses 0.6 of it).
    #[arg(long, default_value_t = 6.0)]
    k: f32,

    /// Longest meteor, in frames.
    #[arg(long, default_value_t = 60)]
    meteor_max_frames: u64,

    /// Slowest meteor, in pixels per frame.
    #[arg(long, default_value_t = 4.0)]
    meteor_min_speed: f32,

    /// Publish each event as JSON to this MQTT broker (`mqtt://[user:pass@]HOST[:PORT]`).
    #[arg(long, value_name = "URL")]
    mqtt: Option<String>,

    /// MQTT topic for events.
    #[arg(long, default_value = "shmcast/events", value_name = "TOPIC")]
    topic: String,

    /// Events queued for MQTT before new ones are dropped (never blocks detection).
    #[arg(long, default_value_t = 1024)]
    mqtt_queue: usize,

    #[command(flatten)]
    common: shmcast_common::CommonArgs,
}

fn main() -> ExitCode {
    shmcast_common::main_wrapper("shmcast-detect", run)
}

/// The detector's own metrics (the reader's are [`ReaderMetrics`]).
struct Metrics {
    events: Counter,
    /// Events by type, in the order of `Kind::ALL`.
    by_type: Vec<Counter>,
    process: Histogram,
}

impl Metrics {
    fn register() -> Metrics {
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
}

/// Processing-time percentiles over a stats period, without allocating per frame.
struct Times {
    buf: Vec<f64>,
    scratch: Vec<f64>,
    n: usize,
}

impl Times {
    fn new() -> Times {
        Times { buf: vec![0.0; 4096], scratch: Vec::with_capacity(4096), n: 0 }
    }
    fn push(&mut self, v: f64) {
        let i = self.n % self.buf.len();
        self.buf[i] = v;
        self.n += 1;
    }
    /// (p50, p99, max) in ms, and resets.
    fn take(&mut self) -> (f64, f64, f64) {
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

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    shmcast_common::start(&args.common, "shmcast-detect", &args.name)?;
    let stop = shmcast_common::shutdown_flag()?;
    if let Some(t) = args.attach_timeout
        && !(t.is_finite() && t >= 0.0)
    {
        bail!("invalid --attach-timeout {t}: expected seconds ≥ 0");
    }
    if !(args.k.is_finite() && args.k > 0.0) {
        bail!("invalid --k {}: expected a positive number", args.k);
    }

    let mut cfg =
        Config { bin: args.bin, masks: args.mask.clone(), snapshots: args.snapshots.is_some(), ..Config::default() };
    if let Some(path) = &args.mask_file {
        let img = MaskImage::load(path)?;
        tracing::info!(
            file = %path.display(), size = format!("{}x{}", img.width, img.height),
            masked = format!("{:.1}%", 100.0 * img.masked_fraction()), "mask image"
        );
        cfg.mask_image = Some(Arc::new(img));
    }
    cfg.model.k_strong = args.k;
    cfg.model.k_weak = 0.6 * args.k;
    cfg.track.meteor_max_frames = args.meteor_max_frames;
    cfg.track.meteor_min_speed = args.meteor_min_speed;

    if let Some(dir) = &args.snapshots {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create snapshot directory {}", dir.display()))?;
    }
    let out: Box<dyn Write> = if args.events == "-" {
        Box::new(std::io::stdout())
    } else {
        let f = File::options()
            .create(true)
            .append(true)
            .open(&args.events)
            .with_context(|| format!("cannot open events file {}", args.events))?;
        Box::new(BufWriter::new(f))
    };
    let mqtt_stats = Arc::new(MqttStats::default());
    let mqtt = match &args.mqtt {
        Some(url) => {
            let c = MqttConfig::from_url(url, &args.topic)?;
            tracing::info!(broker = %c.addr, topic = %c.topic, "publishing events to MQTT");
            Some(Publisher::start(c, args.mqtt_queue, Arc::clone(&mqtt_stats))?)
        }
        None => None,
    };
    let mut sink = EventSink::new(out, args.snapshots.clone(), mqtt, &args.name)?;

    let m = Metrics::register();
    let mut reader_metrics = ReaderMetrics::new();
    let start = if args.start == "next" { Start::Next } else { Start::Oldest };
    let mut follower = Follower::new(&args.name, ReaderOptions { start, ..ReaderOptions::default() })
        .with_context(|| format!("invalid stream name {:?}", args.name))?;
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
    tracing::info!(stream = %args.name, "waiting for the producer");

    loop {
        if shmcast_common::should_stop(&stop) {
            tracing::info!("stopping on signal");
            break;
        }
        if args.frames.is_some_and(|n| processed >= n) {
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
                    stream = %args.name, epoch = format!("{:016x}", a.epoch), pid = a.pid,
                    format = %a.format, slots = a.slots, "attached to producer"
                );
                if let Some(d) = detector.as_mut() {
                    rebaselines_before += d.rebaselines();
                    d.flush(&mut events);
                }
                if let Some(o) = a.overlay {
                    tracing::info!(overlay = %o, "the producer's overlay region is not analysed");
                }
                detector = Some(make_detector(&cfg, &a.format, a.overlay)?);
                if let Some(d) = &detector {
                    let (gw, gh, bin) = d.grid();
                    tracing::info!(grid = format!("{gw}x{gh}"), bin, model_bytes = d.memory_bytes(), "detector ready");
                }
            }
            Ok(Event::Detached(status)) => {
                tracing::info!(stream = %args.name, status = %status, "producer gone; waiting for a new one");
                if let Some(d) = detector.as_mut() {
                    d.flush(&mut events);
                }
                if args.exit_on_close && status == ProducerStatus::Closed {
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
                    tracing::warn!("cannot attach to stream {}: {msg}", args.name);
                    last_open_error = Some(msg);
                }
            }
        }
        for ev in events.drain(..) {
            sink.emit(ev)?;
        }
        if attaches == 0
            && let Some(t) = args.attach_timeout
            && started.elapsed().as_secs_f64() >= t
        {
            let why = last_open_error.map(|e| format!(": {e}")).unwrap_or_default();
            bail!(
                "no producer for stream {} after {t} s{why} (is shmcast-producer --name {} running?)",
                args.name,
                args.name
            );
        }
        // Counters from the follower (cumulative over producers).
        let st = follower.stats();
        reader_metrics.record(&follower);
        m.events.inc_by(sink.count().saturating_sub(m.events.get()));
        for (kind, c) in Kind::ALL.iter().zip(&m.by_type) {
            c.inc_by(sink.by_type().get(*kind).saturating_sub(c.get()));
        }
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
    if let Some(p) = sink.finish_snapshots() {
        p.close(Duration::from_secs(2));
    }
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
    };
    sink.write_line(&serde_json::to_string(&summary)?)?;
    tracing::info!(frames = st.frames, lost = st.lost, overruns = st.overruns, events = sink.count(), "done");
    Ok(())
}

fn make_detector(cfg: &Config, format: &VideoFormat, overlay: Option<shm_proto::Rect>) -> anyhow::Result<Detector> {
    Detector::for_stream(cfg, format, overlay).with_context(|| format!("cannot detect on {format}"))
}
