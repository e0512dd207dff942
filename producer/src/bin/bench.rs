//! shmcast-producer-bench: producer throughput at `--fps 0` (1080p and 4K,
//! test pattern and GStreamer `videotestsrc`) as frames/s and as a ratio to
//! single-thread memcpy of the same frame size measured in the same run, and
//! CPU per frame at 1080p30 from `/proc/<pid>/stat`.
//!
//! It runs the real `shmcast-producer` binary (next to this one in the target
//! directory) and counts frames through the ring's head, read by a reader
//! that never touches the payload, so the figures are the producer's own.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use shm_proto::{Reader, ReaderOptions};
use shmcast_common::bench::{ChildGuard, cpu_seconds, memcpy_fps, sibling_bin};

const BIN: &str = "shmcast-producer-bench";

/// Measure shmcast-producer throughput and CPU cost.
#[derive(Parser, Debug)]
#[command(
    name = BIN,
    version,
    about,
    after_help = "Examples:\n  shmcast-producer-bench\n  shmcast-producer-bench --seconds 5 --cpu-seconds 20\n  shmcast-producer-bench --only gst"
)]
struct Args {
    /// Seconds of measurement per throughput case.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds of measurement per CPU-at-30-fps case.
    #[arg(long, default_value_t = 10.0)]
    cpu_seconds: f64,
    /// Run only the cases whose label contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Path of shmcast-producer (default: next to this binary).
    #[arg(long)]
    producer: Option<PathBuf>,
}

struct Case {
    label: &'static str,
    width: u32,
    height: u32,
    args: &'static [&'static str],
}

const THROUGHPUT: &[Case] = &[
    Case { label: "testsrc 1080p rgb24", width: 1920, height: 1080, args: &[] },
    Case { label: "testsrc 1080p rgb24 noise 4", width: 1920, height: 1080, args: &["--noise", "4"] },
    Case { label: "testsrc 1080p nv12", width: 1920, height: 1080, args: &["--format", "nv12"] },
    Case { label: "testsrc 4K rgb24", width: 3840, height: 2160, args: &[] },
    Case { label: "gst videotestsrc 1080p rgb24", width: 1920, height: 1080, args: &["--source", "gst:videotestsrc"] },
    Case {
        label: "gst videotestsrc black 1080p rgb24",
        width: 1920,
        height: 1080,
        args: &["--source", "gst:videotestsrc pattern=black"],
    },
    Case { label: "gst videotestsrc 4K rgb24", width: 3840, height: 2160, args: &["--source", "gst:videotestsrc"] },
];

const CPU: &[Case] = &[
    Case { label: "testsrc 1080p30 rgb24", width: 1920, height: 1080, args: &[] },
    Case {
        label: "testsrc 1080p30 rgb24 noise 4 events 5",
        width: 1920,
        height: 1080,
        args: &["--noise", "4", "--events", "5"],
    },
    Case {
        label: "gst videotestsrc 1080p30 rgb24",
        width: 1920,
        height: 1080,
        args: &["--source", "gst:videotestsrc"],
    },
];

struct Measured {
    fps: f64,
    cpu_per_frame_ms: f64,
    cpu_share: f64,
    frame_size: u64,
}

/// Runs one producer case and measures `secs` seconds after warm-up.
fn measure(producer: &Path, c: &Case, fps: u32, secs: f64) -> anyhow::Result<Measured> {
    let name = format!("bench-{}", std::process::id());
    let (w, h, f) = (c.width.to_string(), c.height.to_string(), fps.to_string());
    let mut cmd = Command::new(producer);
    cmd.args(["--name", &name, "--width", &w, "--height", &h, "--fps", &f, "--log-level", "warn"]).args(c.args);
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().context("cannot start the producer")?;
    let mut guard = ChildGuard(child);
    let pid = guard.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        match Reader::open(&name, &ReaderOptions::default()) {
            Ok(r) => break r,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                if let Some(st) = guard.0.try_wait()? {
                    bail!("{}: producer exited early ({st})", c.label);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => bail!("{}: {e}", c.label),
        }
    };
    // Warm-up: the first frame, then one more second.
    while r.head() == 0 {
        if Instant::now() > deadline {
            bail!("{}: no frame within 30 s", c.label);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (t0, h0, c0) = (Instant::now(), r.head(), cpu_seconds(pid).context("the producer is gone")?);
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (t1, h1, c1) = (Instant::now(), r.head(), cpu_seconds(pid).context("the producer is gone")?);
    let frames = (h1 - h0) as f64;
    let dt = (t1 - t0).as_secs_f64();
    let frame_size = r.format().frame_size;
    drop(r);
    guard.stop();
    Ok(Measured {
        fps: frames / dt,
        cpu_per_frame_ms: (c1 - c0) * 1000.0 / frames.max(1.0),
        cpu_share: (c1 - c0) / dt,
        frame_size,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    shmcast_common::main_wrapper(BIN, || run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let producer = match &args.producer {
        Some(p) => p.clone(),
        None => sibling_bin("shmcast-producer")?,
    };
    let wanted = |c: &Case| args.only.as_deref().is_none_or(|o| c.label.contains(o));
    println!(
        "memcpy baseline (single thread, 8 rotating page-aligned destination frames, {:.1} s each):",
        args.seconds
    );
    let mut baseline = std::collections::BTreeMap::new();
    for (label, size) in
        [("1080p rgb24", 1920 * 1080 * 3usize), ("1080p nv12", 1920 * 1080 * 3 / 2), ("4K rgb24", 3840 * 2160 * 3)]
    {
        let fps = memcpy_fps(size, 8, args.seconds);
        println!("  {label:<12} {size:>9} B  {fps:>8.1} frames/s  {:>6.2} GB/s", fps * size as f64 / 1e9);
        baseline.insert(size as u64, fps);
    }
    println!();
    println!("producer throughput at --fps 0 ({:.1} s after 1 s warm-up):", args.seconds);
    println!("| case | frame bytes | frames/s | GB/s | × memcpy | CPU ms/frame | cores |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for c in THROUGHPUT.iter().filter(|c| wanted(c)) {
        let m = measure(&producer, c, 0, args.seconds)?;
        let base = baseline.get(&m.frame_size).copied().unwrap_or_else(|| memcpy_fps(m.frame_size as usize, 8, 1.0));
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
            c.label,
            m.frame_size,
            m.fps,
            m.fps * m.frame_size as f64 / 1e9,
            m.fps / base,
            m.cpu_per_frame_ms,
            m.cpu_share
        );
    }
    println!();
    println!("CPU at 30 fps ({:.1} s after 1 s warm-up, utime+stime from /proc/<pid>/stat):", args.cpu_seconds);
    println!("| case | frames/s | CPU ms/frame | % of one core |");
    println!("|---|---:|---:|---:|");
    for c in CPU.iter().filter(|c| wanted(c)) {
        let m = measure(&producer, c, 30, args.cpu_seconds)?;
        println!("| {} | {:.2} | {:.3} | {:.1} |", c.label, m.fps, m.cpu_per_frame_ms, m.cpu_share * 100.0);
    }
    Ok(())
}
