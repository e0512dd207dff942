//! `shmcast-rtsp-bench`: end-to-end measurements of the RTSP bridge with a
//! real GStreamer client.
//!
//! `latency` (default): for each size, runs `shmcast-producer`'s stamped test
//! pattern and `shmcast-rtsp` on it (the binaries next to this one),
//! plays the stream with `rtspsrc ! decodebin ! appsink`, decodes the stamp
//! from every decoded frame's luma and compares its capture time with
//! CLOCK_REALTIME now. Prints p50/p99 latency, time from PLAY to the first
//! decoded frame, and the bridge's CPU (utime+stime over the measuring window).
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use shm_proto::PixelFormat;
use shmcast_common::bench::{ChildGuard, cpu_seconds, percentile, sibling_bin, sorted};

mod join;

/// Benchmark the RTSP bridge end to end.
#[derive(Parser)]
#[command(
    name = "shmcast-rtsp-bench",
    after_help = "Examples:\n  shmcast-rtsp-bench latency --seconds 10\n  \
                  shmcast-rtsp-bench latency --size 640x360 --format nv12 --seconds 5"
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Latency, time to first frame and bridge CPU at 720p30 and 1080p30.
    Latency {
        /// Seconds measured per size (after a 2 s warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Pixel format of the source.
        #[arg(long, default_value = "i420")]
        format: String,
        /// Encoder passed to shmcast-rtsp.
        #[arg(long, default_value = "auto")]
        encoder: String,
        /// Sizes to measure, WxH (repeatable).
        #[arg(long = "size", default_values_t = ["1280x720".to_string(), "1920x1080".to_string()])]
        sizes: Vec<String>,
    },
    /// Time from a client's start (and from its PLAY) to its first decoded
    /// frame, over repeated joins: the first client of an idle mount, and a
    /// client joining a mount another client is playing.
    Join {
        /// Joins measured per case and size (after one unmeasured warm-up join).
        #[arg(long, default_value_t = 20)]
        joins: usize,
        /// Pixel format of the source.
        #[arg(long, default_value = "i420")]
        format: String,
        /// Encoder passed to shmcast-rtsp.
        #[arg(long, default_value = "auto")]
        encoder: String,
        /// Sizes to measure, WxH (repeatable).
        #[arg(long = "size", default_values_t = ["1280x720".to_string(), "1920x1080".to_string()])]
        sizes: Vec<String>,
        /// The measuring client's rtspsrc `latency` (its jitterbuffer, ms).
        #[arg(long, default_value_t = 0)]
        client_latency: u32,
        /// Seconds the mount stays without any client before each first-client join.
        #[arg(long, default_value_t = 2.0)]
        idle: f64,
        /// Seconds over which the idle bridge's CPU is measured (no client).
        #[arg(long, default_value_t = 10.0)]
        idle_window: f64,
        /// Extra argument for shmcast-rtsp (repeatable), e.g. --bridge-arg=--gop --bridge-arg=2.
        #[arg(long = "bridge-arg", allow_hyphen_values = true)]
        bridge_args: Vec<String>,
        /// The shmcast-rtsp binary to measure (default: the one next to this
        /// bench), e.g. an older build as a baseline.
        #[arg(long, value_name = "PATH")]
        bridge: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    shmcast_common::main_wrapper("shmcast-rtsp-bench", || {
        shmcast_common::init_logging("warn")?;
        match args.cmd {
            Some(Cmd::Latency { seconds, format, encoder, sizes }) => latency(seconds, &format, &encoder, &sizes),
            Some(Cmd::Join {
                joins,
                format,
                encoder,
                sizes,
                client_latency,
                idle,
                idle_window,
                bridge_args,
                bridge,
            }) => join::run(&join::Options {
                joins,
                format,
                encoder,
                sizes,
                client_latency,
                idle: Duration::from_secs_f64(idle.max(0.0)),
                idle_window: Duration::from_secs_f64(idle_window.max(0.1)),
                bridge_args,
                bridge,
            }),
            None => latency(10, "i420", "auto", &["1280x720".into(), "1920x1080".into()]),
        }
    })
}

struct Row {
    size: String,
    frames: usize,
    undecoded: usize,
    p50: f64,
    p99: f64,
    max: f64,
    first_ms: f64,
    cpu: f64,
}

fn latency(seconds: u64, format: &str, encoder: &str, sizes: &[String]) -> anyhow::Result<()> {
    gst::init()?;
    let pixel: PixelFormat = format.parse().map_err(|e| anyhow!("{e}"))?;
    let exe = sibling_bin("shmcast-rtsp")?;
    let producer = sibling_bin("shmcast-producer")?;
    let mut rows = Vec::new();
    for size in sizes {
        let (w, h) = size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .with_context(|| format!("bad --size {size}"))?;
        rows.push(measure(&exe, &producer, w, h, pixel, encoder, seconds)?);
    }
    println!(
        "\nshmcast-rtsp end to end ({format} source @ 30 fps, encoder {encoder}, client rtspsrc(tcp, latency=0) ! decodebin ! appsink)"
    );
    println!(
        "| size | frames | undecodable | latency p50 | latency p99 | max | PLAY→first frame | bridge CPU (1 stream) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} ms | {:.1} % of a core |",
            r.size, r.frames, r.undecoded, r.p50, r.p99, r.max, r.first_ms, r.cpu
        );
    }
    Ok(())
}

fn measure(
    exe: &Path,
    producer: &Path,
    w: u32,
    h: u32,
    pixel: PixelFormat,
    encoder: &str,
    seconds: u64,
) -> anyhow::Result<Row> {
    let name = format!("rtspbench{}x{}p{}", w, h, std::process::id());
    // The producer's test pattern: the frame stamp (frame id + capture time)
    // in its top band, a moving bar and a starry background at 30 fps.
    let (ws, hs) = (w.to_string(), h.to_string());
    let src = Command::new(producer)
        .args(["--name", &name, "--width", &ws, "--height", &hs, "--format", pixel.name(), "--fps", "30"])
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start shmcast-producer")?;
    let mut src = ChildGuard(src);
    let mut child = Command::new(exe)
        .args(["--name", &name, "--listen", "127.0.0.1:0", "--mount", "/bench", "--encoder", encoder])
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let pid = child.id();
    let _guard = ChildGuard(child);
    // The bridge logs `listening url=rtsp://127.0.0.1:PORT/bench`.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("rtsp://")
                && line.contains("serving")
                && let Some(tx) = tx.take()
            {
                let url: String = line[i..].chars().take_while(|c| !c.is_whitespace()).collect();
                let _ = tx.send(url);
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(20)).context("shmcast-rtsp did not start serving")?;

    let samples = Arc::new(Mutex::new(Vec::<f64>::new()));
    let undecoded = Arc::new(Mutex::new(0usize));
    let first = Arc::new(Mutex::new(None::<Instant>));
    let measuring = Arc::new(AtomicBool::new(false));
    let pipeline = gst::parse::launch(&format!(
        "rtspsrc location={url} latency=0 protocols=tcp ! decodebin ! videoconvert ! \
         video/x-raw,format=I420 ! appsink name=sink sync=false max-buffers=2 drop=true"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow!("not a pipeline"))?;
    let sink = pipeline.by_name("sink").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).context("no appsink")?;
    {
        let (samples, undecoded, first, measuring) =
            (Arc::clone(&samples), Arc::clone(&undecoded), Arc::clone(&first), Arc::clone(&measuring));
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let now = shm_proto::os::realtime_ns();
                    first.lock().unwrap().get_or_insert_with(Instant::now);
                    let (Some(buf), Some(caps)) = (sample.buffer(), sample.caps()) else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let Ok(info) = gst_video::VideoInfo::from_caps(caps) else { return Ok(gst::FlowSuccess::Ok) };
                    let Ok(frame) = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, &info) else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let stride = info.stride()[0] as usize;
                    let stamp = frame
                        .plane_data(0)
                        .ok()
                        .and_then(|y| shm_proto::stamp::decode_luma(y, stride, 1, info.width(), info.height()));
                    // Relaxed: a standalone flag.
                    if measuring.load(Ordering::Relaxed) {
                        match stamp {
                            Some(st) => samples.lock().unwrap().push(st.age_us(now) as f64 / 1000.0),
                            None => *undecoded.lock().unwrap() += 1,
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    let play = Instant::now();
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().context("bus")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while first.lock().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = pipeline.set_state(gst::State::Null);
            bail!("no decoded frame from {url} within 15 s");
        }
        if let Some(msg) = bus.timed_pop_filtered(gst::ClockTime::from_mseconds(20), &[gst::MessageType::Error]) {
            let _ = pipeline.set_state(gst::State::Null);
            bail!("client error: {msg:?}");
        }
    }
    let first_ms = first.lock().unwrap().map(|t| t.duration_since(play).as_secs_f64() * 1000.0).unwrap_or(f64::NAN);
    std::thread::sleep(Duration::from_secs(2));
    measuring.store(true, Ordering::Relaxed);
    let (c0, t0) = (cpu_seconds(pid).context("the bridge is gone")?, Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    let (c1, t1) = (cpu_seconds(pid).context("the bridge is gone")?, Instant::now());
    measuring.store(false, Ordering::Relaxed);
    pipeline.set_state(gst::State::Null)?;
    src.stop();
    let v = sorted(std::mem::take(&mut *samples.lock().unwrap()));
    let n = v.len();
    let undecoded = *undecoded.lock().unwrap();
    Ok(Row {
        size: format!("{w}x{h}"),
        frames: n,
        undecoded,
        p50: percentile(&v, 0.5),
        p99: percentile(&v, 0.99),
        max: percentile(&v, 1.0),
        first_ms,
        cpu: (c1 - c0) / (t1 - t0).as_secs_f64() * 100.0,
    })
}
