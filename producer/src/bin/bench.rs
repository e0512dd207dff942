//! shmcast-producer-bench: producer throughput at `--fps 0` (1080p and 4K,
//! test pattern and GStreamer `videotestsrc`) as frames/s and as a ratio to
//! single-thread memcpy of the same frame size measured in the same run, and
//! CPU per frame at 1080p30 from `/proc/<pid>/stat`.
//!
//! It runs the real `shmcast-producer` binary (next to this one in the target
//! directory) and counts frames through the ring's head, read by a reader
//! that never touches the payload, so the figures are the producer's own.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use shm_proto::{Reader, ReaderOptions};

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

/// Kills the producer on every exit path.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn producer_path(given: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("cannot locate this binary")?;
    let p = exe.with_file_name("shmcast-producer");
    if !p.exists() {
        bail!("{} not found; build it first: cargo build --release -p shmcast-producer", p.display());
    }
    Ok(p)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32, tick: f64) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("cannot read /proc/<pid>/stat")?;
    let rest = text.rsplit_once(") ").map(|(_, r)| r).context("odd /proc/<pid>/stat")?;
    // After the command name: state is field 3, utime 14, stime 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).context("utime")?;
    let st: f64 = f.get(12).and_then(|v| v.parse().ok()).context("stime")?;
    Ok((ut + st) / tick)
}

fn clock_tick() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

struct Measured {
    fps: f64,
    cpu_per_frame_ms: f64,
    cpu_share: f64,
    frame_size: u64,
}

/// Runs one producer case and measures `secs` seconds after warm-up.
fn measure(producer: &PathBuf, c: &Case, fps: u32, secs: f64, tick: f64) -> anyhow::Result<Measured> {
    let name = format!("bench-{}", std::process::id());
    let (w, h, f) = (c.width.to_string(), c.height.to_string(), fps.to_string());
    let mut cmd = Command::new(producer);
    cmd.args(["--name", &name, "--width", &w, "--height", &h, "--fps", &f, "--log-level", "warn"]).args(c.args);
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().context("cannot start the producer")?;
    let mut guard = Guard(child);
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
    let (t0, h0, c0) = (Instant::now(), r.head(), cpu_seconds(pid, tick)?);
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (t1, h1, c1) = (Instant::now(), r.head(), cpu_seconds(pid, tick)?);
    let frames = (h1 - h0) as f64;
    let dt = (t1 - t0).as_secs_f64();
    let frame_size = r.format().frame_size;
    drop(r);
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let end = Instant::now() + Duration::from_secs(10);
    while guard.0.try_wait()?.is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Measured {
        fps: frames / dt,
        cpu_per_frame_ms: (c1 - c0) * 1000.0 / frames.max(1.0),
        cpu_share: (c1 - c0) / dt,
        frame_size,
    })
}

/// Single-thread memcpy of `size`-byte frames from one source into 8
/// rotating destinations (like a ring of 8 slots), in frames per second.
/// Destinations start on a page boundary like ring slots; the source is a
/// plain `Vec` like the producer's prepared background.
fn memcpy_fps(size: usize, secs: f64) -> f64 {
    const PAGE: usize = 4096;
    let src: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
    let mut dst: Vec<Vec<u8>> = (0..8).map(|_| vec![1u8; size + PAGE]).collect();
    let mut slots: Vec<&mut [u8]> = dst
        .iter_mut()
        .map(|d| {
            let skip = (PAGE - d.as_ptr() as usize % PAGE) % PAGE;
            &mut d[skip..skip + size]
        })
        .collect();
    for d in slots.iter_mut() {
        d.copy_from_slice(&src);
    }
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed().as_secs_f64() < secs {
        slots[n % 8].copy_from_slice(&src);
        std::hint::black_box(&slots[n % 8]);
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() -> ExitCode {
    let args = Args::parse();
    shmcast_common::main_wrapper(BIN, || run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let producer = producer_path(&args.producer)?;
    let tick = clock_tick();
    let wanted = |c: &Case| args.only.as_deref().is_none_or(|o| c.label.contains(o));
    println!("memcpy baseline (single thread, 8 rotating destination frames, {:.1} s each):", args.seconds);
    let mut baseline = std::collections::BTreeMap::new();
    for (label, size) in
        [("1080p rgb24", 1920 * 1080 * 3usize), ("1080p nv12", 1920 * 1080 * 3 / 2), ("4K rgb24", 3840 * 2160 * 3)]
    {
        let fps = memcpy_fps(size, args.seconds);
        println!("  {label:<12} {size:>9} B  {fps:>8.1} frames/s  {:>6.2} GB/s", fps * size as f64 / 1e9);
        baseline.insert(size as u64, fps);
    }
    println!();
    println!("producer throughput at --fps 0 ({:.1} s after 1 s warm-up):", args.seconds);
    println!("| case | frame bytes | frames/s | GB/s | × memcpy | CPU ms/frame | cores |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for c in THROUGHPUT.iter().filter(|c| wanted(c)) {
        let m = measure(&producer, c, 0, args.seconds, tick)?;
        let base = baseline.get(&m.frame_size).copied().unwrap_or_else(|| memcpy_fps(m.frame_size as usize, 1.0));
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
        let m = measure(&producer, c, 30, args.cpu_seconds, tick)?;
        println!("| {} | {:.2} | {:.3} | {:.1} |", c.label, m.fps, m.cpu_per_frame_ms, m.cpu_share * 100.0);
    }
    Ok(())
}
