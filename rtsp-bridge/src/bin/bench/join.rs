//! `shmcast-rtsp-bench join`: how long a viewer waits for its first picture.
//!
//! For each size: `shmcast-producer`'s stamped 30 fps test pattern, `shmcast-rtsp` on
//! it, and a real GStreamer client per join (`rtspsrc protocols=tcp
//! latency=L ! decodebin ! videoconvert ! appsink sync=false`), built afresh
//! for every join and set to NULL after its first decoded frame (which tears
//! its session down). Two cases, each after one unmeasured warm-up join (it
//! loads the client's plugins):
//!
//! - **first client**: nobody else is connected (the bench waits until the
//!   bridge's `shmcast_rtsp_clients` gauge reads 0, then `--idle` seconds);
//! - **joining client**: a resident client of the same kind plays the mount
//!   during all the joins.
//!
//! Per join it records, on the client's monotonic clock from the call that
//! sets the pipeline to PLAYING: when rtspsrc sent each request (its
//! `before-send` signal: OPTIONS, DESCRIBE, SETUP, PLAY — so "DESCRIBE→SETUP"
//! is the DESCRIBE round trip, media preparation included), the first RTP
//! buffer entering the jitterbuffer, the first buffer leaving rtspsrc, and
//! the first decoded frame at the appsink, whose stamp gives the frame's age
//! (capture → decoded) and shows that it decoded (a readable stamp).
//! "PLAY→frame" is from sending PLAY to that first decoded frame; "start→frame"
//! is everything a viewer waits.
//!
//! Also measured: the idle bridge (no client, producer running): CPU
//! (utime+stime over `--idle-window`) and VmRSS.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use shm_proto::{PixelFormat, VideoFormat};

use shmcast_common::bench::{ChildGuard, cpu_seconds, percentile, sibling_bin, sorted};

/// The `join` command's options.
pub struct Options {
    pub joins: usize,
    pub format: String,
    pub encoder: String,
    pub sizes: Vec<String>,
    pub client_latency: u32,
    pub idle: Duration,
    pub idle_window: Duration,
    pub bridge_args: Vec<String>,
    pub bridge: Option<PathBuf>,
}

/// A source and a bridge serving it; both stopped on drop.
struct Rig {
    url: String,
    /// The bridge's "PLAY → keyframe out of the encoder" figures (ms), from its debug log.
    keyframes: Arc<Mutex<Vec<f64>>>,
    metrics: String,
    pid: u32,
    _bridge: ChildGuard,
    /// Dropped after the bridge (fields drop in order).
    _src: ChildGuard,
}

impl Rig {
    fn start(exe: &Path, format: VideoFormat, encoder: &str, extra: &[String]) -> anyhow::Result<Rig> {
        let name = format!("rtspjoin{}x{}p{}", format.width, format.height, std::process::id());
        // The producer's stamped test pattern at 30 fps.
        let (ws, hs) = (format.width.to_string(), format.height.to_string());
        let src = Command::new(sibling_bin("shmcast-producer")?)
            .args(["--name", &name, "--width", &ws, "--height", &hs, "--format", format.pixel.name(), "--fps", "30"])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start shmcast-producer")?;
        let src = ChildGuard(src);
        let mut child = Command::new(exe)
            .args(["--name", &name, "--listen", "127.0.0.1:0", "--mount", "/bench", "--encoder", encoder])
            .args(["--metrics", "127.0.0.1:0", "--log-level", "info,shmcast_rtsp::server=debug"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let pid = child.id();
        let guard = ChildGuard(child);
        // `serving metrics at /metrics local=ADDR` then `producer found; serving url=rtsp://…`.
        let (tx, rx) = mpsc::channel();
        let keyframes = Arc::new(Mutex::new(Vec::new()));
        let kf = Arc::clone(&keyframes);
        std::thread::spawn(move || {
            let word = |line: &str, key: &str| {
                line.find(key).map(|i| line[i + key.len()..].chars().take_while(|c| !c.is_whitespace()).collect())
            };
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("serving metrics")
                    && let Some(a) = word(&line, "local=")
                {
                    let _ = tx.send((true, a));
                } else if line.contains("producer found")
                    && let Some(u) = word(&line, "url=")
                {
                    let _ = tx.send((false, u));
                } else if line.contains("keyframe out of the encoder")
                    && let Some(ms) = word(&line, "ms=").and_then(|v: String| v.parse::<f64>().ok())
                {
                    kf.lock().unwrap_or_else(|p| p.into_inner()).push(ms);
                }
            }
        });
        let (mut url, mut metrics) = (None, None);
        while url.is_none() || metrics.is_none() {
            let (is_metrics, v) =
                rx.recv_timeout(Duration::from_secs(20)).context("shmcast-rtsp did not start serving within 20 s")?;
            if is_metrics { metrics = Some(v) } else { url = Some(v) }
        }
        Ok(Rig {
            url: url.unwrap_or_default(),
            keyframes,
            metrics: metrics.unwrap_or_default(),
            pid,
            _src: src,
            _bridge: guard,
        })
    }

    /// A gauge or counter of the bridge's /metrics (first sample of `name`).
    fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let mut s = TcpStream::connect(&self.metrics)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.metrics)?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .with_context(|| format!("no {name} in the bridge's metrics"))
    }

    /// Waits until the bridge counts no client.
    fn wait_no_client(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.metric("shmcast_rtsp_clients")? > 0.0 {
            if Instant::now() > deadline {
                bail!("the bridge still counts a client 30 s after the last one left");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
    }
}

/// What one client saw, on its monotonic clock.
#[derive(Default)]
struct Timeline {
    /// When rtspsrc sent each request (OPTIONS, DESCRIBE, SETUP, PLAY, …).
    sent: Vec<Instant>,
    rtp_in: Option<Instant>,
    rtp_out: Option<Instant>,
    decoded: Option<Instant>,
    /// The first decoded frame whose stamp reads (a frame decoded against
    /// its real references, not a guess of the decoder).
    good: Option<Instant>,
    /// Frames decoded before `good`.
    bad: usize,
    /// Capture → decoded of the `good` frame.
    age_ms: Option<f64>,
}

type Shared = Arc<Mutex<Timeline>>;

fn lock(t: &Shared) -> std::sync::MutexGuard<'_, Timeline> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

fn first_buffer_probe(pad: &gst::Pad, tl: &Shared, slot: fn(&mut Timeline) -> &mut Option<Instant>) {
    let tl = Arc::clone(tl);
    pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, _| {
        let now = Instant::now();
        slot(&mut lock(&tl)).get_or_insert(now);
        gst::PadProbeReturn::Remove
    });
}

/// A real client: rtspsrc (TCP) → decodebin → appsink, instrumented.
struct Client {
    pipeline: gst::Pipeline,
    tl: Shared,
}

impl Client {
    fn new(url: &str, latency: u32) -> anyhow::Result<Client> {
        let pipeline = gst::parse::launch(&format!(
            "rtspsrc name=src location={url} latency={latency} protocols=tcp ! decodebin ! videoconvert ! \
             video/x-raw,format=I420 ! appsink name=sink sync=false max-buffers=2 drop=true"
        ))
        .context("client pipeline (gstreamer1.0-plugins-good and -libav installed?)")?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
        let tl: Shared = Arc::default();
        let src = pipeline.by_name("src").context("no rtspsrc")?;
        {
            let tl = Arc::clone(&tl);
            src.connect("before-send", false, move |_| {
                lock(&tl).sent.push(Instant::now());
                Some(true.to_value())
            });
        }
        {
            let tl = Arc::clone(&tl);
            src.connect("new-manager", false, move |args| {
                let manager = args.get(1)?.get::<gst::Element>().ok()?;
                let tl = Arc::clone(&tl);
                manager.connect("new-jitterbuffer", false, move |args| {
                    let jb = args.get(1)?.get::<gst::Element>().ok()?;
                    if let Some(pad) = jb.static_pad("sink") {
                        first_buffer_probe(&pad, &tl, |t| &mut t.rtp_in);
                    }
                    None
                });
                None
            });
        }
        {
            let tl = Arc::clone(&tl);
            src.connect_pad_added(move |_, pad| first_buffer_probe(pad, &tl, |t| &mut t.rtp_out));
        }
        let sink =
            pipeline.by_name("sink").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).context("no appsink")?;
        {
            let tl = Arc::clone(&tl);
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |s| {
                        let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let (now, real) = (Instant::now(), shm_proto::os::realtime_ns());
                        let mut t = lock(&tl);
                        if t.good.is_some() {
                            return Ok(gst::FlowSuccess::Ok);
                        }
                        t.decoded.get_or_insert(now);
                        let age = (|| {
                            let info = gst_video::VideoInfo::from_caps(sample.caps()?).ok()?;
                            let frame =
                                gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer()?, &info).ok()?;
                            let y = frame.plane_data(0).ok()?;
                            let st = shm_proto::stamp::decode_luma(
                                y,
                                info.stride()[0] as usize,
                                1,
                                info.width(),
                                info.height(),
                            )?;
                            Some(st.age_us(real) as f64 / 1000.0)
                        })();
                        match age {
                            Some(a) => {
                                t.good = Some(now);
                                t.age_ms = Some(a);
                            }
                            None => t.bad += 1,
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        }
        Ok(Client { pipeline, tl })
    }

    /// Starts the client; returns the start instant.
    fn play(&self) -> anyhow::Result<Instant> {
        let t0 = Instant::now();
        self.pipeline.set_state(gst::State::Playing).context("client to PLAYING")?;
        Ok(t0)
    }

    /// Waits for the first decoded frame whose stamp reads (an error on the bus fails).
    fn wait_decoded(&self) -> anyhow::Result<()> {
        let bus = self.pipeline.bus().context("bus")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while lock(&self.tl).good.is_none() {
            if Instant::now() > deadline {
                bail!("no decoded frame with a readable stamp within 20 s");
            }
            if let Some(msg) = bus.timed_pop_filtered(gst::ClockTime::from_mseconds(5), &[gst::MessageType::Error]) {
                bail!("client error: {msg:?}");
            }
        }
        Ok(())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// One join's figures, ms from the client's start.
struct Join {
    describe: f64,
    setup: f64,
    play: f64,
    rtp_in: f64,
    rtp_out: f64,
    decoded: f64,
    good: f64,
    bad: usize,
    age: Option<f64>,
    /// Bridge side: its PLAY response → the next keyframe out of its encoder.
    keyframe: f64,
}

fn join_once(rig: &Rig, latency: u32) -> anyhow::Result<Join> {
    rig.keyframes.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let c = Client::new(&rig.url, latency)?;
    let t0 = c.play()?;
    c.wait_decoded()?;
    let t = lock(&c.tl);
    let ms = |i: Option<Instant>| i.map_or(f64::NAN, |i| i.saturating_duration_since(t0).as_secs_f64() * 1000.0);
    let j = Join {
        describe: ms(t.sent.get(1).copied()),
        setup: ms(t.sent.get(2).copied()),
        play: ms(t.sent.get(3).copied()),
        rtp_in: ms(t.rtp_in),
        rtp_out: ms(t.rtp_out),
        decoded: ms(t.decoded),
        good: ms(t.good),
        bad: t.bad,
        age: t.age_ms,
        keyframe: f64::NAN,
    };
    drop(t);
    drop(c);
    // The bridge logged the figure before sending the frame; its line may still be in the pipe.
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut j = j;
    while Instant::now() < deadline {
        if let Some(&ms) = rig.keyframes.lock().unwrap_or_else(|p| p.into_inner()).first() {
            j.keyframe = ms;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(j)
}

/// p50/p90/max of a column.
fn stats(v: impl Iterator<Item = f64>) -> String {
    let v = sorted(v.filter(|x| x.is_finite()).collect());
    if v.is_empty() {
        return "–".into();
    }
    format!("{:.0} / {:.0} / {:.0}", percentile(&v, 0.5), percentile(&v, 0.9), percentile(&v, 1.0))
}

struct CaseRow {
    size: String,
    case: &'static str,
    joins: Vec<Join>,
}

struct IdleRow {
    size: String,
    cpu: f64,
    rss_mb: f64,
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    gst::init()?;
    if o.joins == 0 {
        bail!("--joins must be at least 1");
    }
    let pixel: PixelFormat = o.format.parse().map_err(|e| anyhow!("{e}"))?;
    let exe: PathBuf = match &o.bridge {
        Some(p) => p.clone(),
        None => sibling_bin("shmcast-rtsp")?,
    };
    let (mut rows, mut idle_rows) = (Vec::new(), Vec::new());
    for size in &o.sizes {
        let (w, h) = size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .with_context(|| format!("bad --size {size}"))?;
        let format = VideoFormat::new(w, h, pixel, 30, 1).map_err(|e| anyhow!("{e}"))?;
        let rig = Rig::start(&exe, format, &o.encoder, &o.bridge_args)?;
        eprintln!("{size}: warm-up join");
        join_once(&rig, o.client_latency).context("warm-up join")?;
        rig.wait_no_client()?;
        std::thread::sleep(o.idle);

        // The idle bridge: producer running, nobody watching.
        let (c0, t0) = (cpu_seconds(rig.pid).unwrap_or(0.0), Instant::now());
        std::thread::sleep(o.idle_window);
        let cpu = (cpu_seconds(rig.pid).unwrap_or(0.0) - c0) / t0.elapsed().as_secs_f64() * 100.0;
        idle_rows.push(IdleRow { size: size.clone(), cpu, rss_mb: rig.rss_kib() as f64 / 1024.0 });

        let mut first = Vec::new();
        for i in 0..o.joins {
            rig.wait_no_client()?;
            std::thread::sleep(o.idle);
            first.push(join_once(&rig, o.client_latency).with_context(|| format!("first-client join {i}"))?);
        }
        eprintln!("{size}: {} first-client joins done", first.len());

        let resident = Client::new(&rig.url, o.client_latency)?;
        resident.play()?;
        resident.wait_decoded().context("resident client")?;
        // Let the resident client settle into steady state.
        std::thread::sleep(Duration::from_secs(1));
        let mut joining = Vec::new();
        for i in 0..o.joins {
            joining.push(join_once(&rig, o.client_latency).with_context(|| format!("joining-client join {i}"))?);
            std::thread::sleep(Duration::from_millis(300));
        }
        drop(resident);
        eprintln!("{size}: {} joining-client joins done", joining.len());
        rows.push(CaseRow { size: size.clone(), case: "first client (idle mount)", joins: first });
        rows.push(CaseRow { size: size.clone(), case: "joining a playing mount", joins: joining });
    }

    println!(
        "\nshmcast-rtsp join time (bridge {}, {} source @ 30 fps, encoder {}, bridge args {:?}; client: rtspsrc \
         protocols=tcp latency={} ! decodebin ! videoconvert ! appsink sync=false; {} joins per row, after 1 warm-up \
         join; mount idle {:.1} s before each first-client join)",
        exe.display(),
        o.format,
        o.encoder,
        o.bridge_args,
        o.client_latency,
        o.joins,
        o.idle.as_secs_f64()
    );
    println!("ms from the client's start, p50 / p90 / max:\n");
    println!(
        "| size | case | DESCRIBE sent | SETUP sent (DESCRIBE answered) | PLAY sent | first RTP in | out of jitterbuffer | \
         first decoded frame | **first good frame** | **PLAY → good frame** | its age (capture → decoded) | joins with undecodable frames first | bridge: PLAY answered → keyframe out of encoder |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let j = &r.joins;
        let garbled = j.iter().filter(|x| x.bad > 0).count();
        let max_bad = j.iter().map(|x| x.bad).max().unwrap_or(0);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | **{}** | **{}** | {} | {}/{} (≤ {} frames) | {} |",
            r.size,
            r.case,
            stats(j.iter().map(|x| x.describe)),
            stats(j.iter().map(|x| x.setup)),
            stats(j.iter().map(|x| x.play)),
            stats(j.iter().map(|x| x.rtp_in)),
            stats(j.iter().map(|x| x.rtp_out)),
            stats(j.iter().map(|x| x.decoded)),
            stats(j.iter().map(|x| x.good)),
            stats(j.iter().map(|x| x.good - x.play)),
            stats(j.iter().filter_map(|x| x.age)),
            garbled,
            j.len(),
            max_bad,
            stats(j.iter().map(|x| x.keyframe)),
        );
    }
    println!("\nidle bridge (producer running, no client, after the warm-up client left):\n");
    println!("| size | CPU | VmRSS |");
    println!("|---|---|---|");
    for r in &idle_rows {
        println!(
            "| {} | {:.2} % of a core (over {:.0} s) | {:.1} MiB |",
            r.size,
            r.cpu,
            o.idle_window.as_secs_f64(),
            r.rss_mb
        );
    }
    Ok(())
}
