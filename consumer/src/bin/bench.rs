//! shmcast-bench: throughput and latency of the ring, measured in one run next
//! to baselines (memcpy, raw futex, pipe) so the figures are ratios, not
//! absolute claims.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use shm_proto::baseline::FutexChannel;
use shm_proto::os::realtime_ns;
use shm_proto::{CreateOptions, FrameMeta, Next, PixelFormat, Reader, ReaderOptions, VideoFormat, Writer};
use shmcast_common::bench::{memcpy_fps, percentile, sorted};

/// Benchmark the shmcast ring: writer throughput with 0, 1 and 2 reader
/// processes reading every byte, against single-thread memcpy, and the intact
/// frames per second each reader got (frames it read whole, not overwritten
/// mid-read); publish → wake-up latency with futex waiting and with spinning,
/// against a raw futex and a pipe between two processes, with the processes
/// pinned to different CPUs and unpinned.
///
/// Examples:
///   shmcast-bench                 # full run, table (about a minute)
///   shmcast-bench --quick         # smoke run, a few seconds
///   shmcast-bench --json          # machine-readable
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Short run with small sizes (smoke test; figures are not meaningful).
    #[arg(long)]
    quick: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Put the throughput rings on huge pages (needs reserved huge pages and a hugetlbfs mount).
    #[arg(long)]
    hugepages: bool,
    /// Do not pin processes (by default, with 2+ CPUs, the writer runs on CPU 0
    /// and readers on the others, as a NUMA/CPU-pinned deployment would).
    #[arg(long)]
    no_pin: bool,
    /// Latency samples per mode.
    #[arg(long, default_value_t = 5000)]
    samples: usize,
    /// (internal) CPUs a child process pins itself to.
    #[arg(long, value_delimiter = ',', hide = true, global = true)]
    pin_cpus: Vec<usize>,
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    common: shmcast_common::CommonArgs,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// (internal) a reader process that reads every byte of every frame.
    #[command(hide = true)]
    Reader { name: String },
    /// (internal) a latency reader: futex wait (spin 0) or spinning.
    #[command(hide = true)]
    LatReader {
        name: String,
        samples: usize,
        #[arg(long)]
        spin: bool,
    },
    /// (internal) raw futex receiver.
    #[command(hide = true)]
    FutexRx { name: String, samples: usize },
    /// (internal) pipe receiver (timestamps on stdin).
    #[command(hide = true)]
    PipeRx { samples: usize },
}

fn main() -> ExitCode {
    let args = Args::parse();
    shmcast_common::main_wrapper("shmcast-bench", || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    shmcast_common::start(&args.common, "shmcast-bench", "bench")?;
    if !args.pin_cpus.is_empty() {
        shm_proto::os::pin_to_cpus(&args.pin_cpus).context("pin to --pin-cpus")?;
    }
    match args.role {
        Some(Role::Reader { ref name }) => reader_child(name),
        Some(Role::LatReader { ref name, spin, samples }) => lat_reader_child(name, spin, samples),
        Some(Role::FutexRx { ref name, samples }) => futex_child(name, samples),
        Some(Role::PipeRx { samples }) => pipe_child(samples),
        None => main_bench(&args),
    }
}

// ------------------------------------------------------------------ children

fn print_result(v: serde_json::Value) {
    println!("RESULT {v}");
    let _ = std::io::stdout().flush();
}

fn open_wait(name: &str, opts: &ReaderOptions) -> anyhow::Result<Reader> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match Reader::open(name, opts) {
            Ok(r) => return Ok(r),
            Err(e) if e.is_transient() && Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// CPUs for readers: all but CPU 0, counted once before anything is pinned.
fn reader_cpus() -> Vec<usize> {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let n = *CPUS.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    (1..n).collect()
}

fn reader_child(name: &str) -> anyhow::Result<()> {
    let mut r = open_wait(name, &ReaderOptions::default())?;
    println!("READY");
    std::io::stdout().flush()?;
    let (mut bytes, mut sum) = (0u64, 0u64);
    loop {
        match r.next(Duration::from_secs(10)) {
            Next::Frame(f) => {
                // Read every byte (as u64 words) — what a consumer using the frame does.
                let s = f.read(|d| {
                    let (words, rest) = d.split_at(d.len() / 8 * 8);
                    let mut s = 0u64;
                    for c in words.chunks_exact(8) {
                        s = s.wrapping_add(u64::from_ne_bytes(c.try_into().expect("8 bytes")));
                    }
                    rest.iter().fold(s, |a, &b| a.wrapping_add(u64::from(b)))
                });
                if let Some(s) = s {
                    sum = sum.wrapping_add(s);
                    bytes += f.len() as u64;
                }
            }
            Next::Timeout => bail!("reader timed out"),
            Next::Gone(_) => break,
        }
    }
    let s = r.stats();
    print_result(json!({"frames": s.frames, "lost": s.lost, "overruns": s.overruns,
        "intact": s.frames.saturating_sub(s.overruns), "bytes": bytes, "sum": sum}));
    Ok(())
}

fn percentiles(v: Vec<u64>) -> serde_json::Value {
    let v = sorted(v.into_iter().map(|ns| ns as f64).collect());
    let p = |q: f64| if v.is_empty() { 0 } else { percentile(&v, q) as u64 };
    json!({"n": v.len(), "p50_ns": p(0.5), "p99_ns": p(0.99), "p999_ns": p(0.999), "max_ns": p(1.0)})
}

fn lat_reader_child(name: &str, spin: bool, samples: usize) -> anyhow::Result<()> {
    let opts =
        ReaderOptions { spin: if spin { Duration::from_secs(3600) } else { Duration::ZERO }, ..Default::default() };
    let mut r = open_wait(name, &opts)?;
    println!("READY");
    std::io::stdout().flush()?;
    let mut lat = Vec::with_capacity(samples);
    while lat.len() < samples {
        match r.next(Duration::from_secs(10)) {
            Next::Frame(f) => {
                let now = realtime_ns();
                lat.push(now.saturating_sub(f.meta().publish_ns));
            }
            Next::Timeout => bail!("latency reader timed out"),
            Next::Gone(_) => break,
        }
    }
    print_result(percentiles(lat));
    Ok(())
}

fn futex_child(name: &str, samples: usize) -> anyhow::Result<()> {
    let ch = FutexChannel::open(name).context("open futex channel")?;
    let mut last = ch.current();
    println!("READY");
    std::io::stdout().flush()?;
    let mut lat = Vec::with_capacity(samples);
    while lat.len() < samples {
        let t = ch.recv(&mut last, Duration::from_secs(10)).context("futex receiver timed out")?;
        if t == 0 {
            // The sender's end marker: two sends that came while this
            // process was descheduled coalesce into one wake-up.
            break;
        }
        lat.push(realtime_ns().saturating_sub(t));
    }
    print_result(percentiles(lat));
    Ok(())
}

fn pipe_child(samples: usize) -> anyhow::Result<()> {
    println!("READY");
    std::io::stdout().flush()?;
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 8];
    let mut lat = Vec::with_capacity(samples);
    while lat.len() < samples {
        stdin.read_exact(&mut buf)?;
        lat.push(realtime_ns().saturating_sub(u64::from_ne_bytes(buf)));
    }
    print_result(percentiles(lat));
    Ok(())
}

// ------------------------------------------------------------------ parent

/// CPUs that benchmark children pin themselves to (empty: not pinned).
static CHILD_CPUS: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Places this process and the children it starts next: the writer on CPU 0
/// and children on the other CPUs, or everyone on every CPU.
fn place(pin: bool) -> anyhow::Result<()> {
    let all: Vec<usize> = (0..=reader_cpus().len()).collect();
    let mut child = CHILD_CPUS.lock().unwrap_or_else(|e| e.into_inner());
    if pin {
        shm_proto::os::pin_to_cpus(&[0]).context("pin writer")?;
        *child = reader_cpus().iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
    } else {
        shm_proto::os::pin_to_cpus(&all).context("unpin")?;
        child.clear();
    }
    Ok(())
}

struct Kid {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Kid {
    fn spawn(args: &[&str], stdin: bool) -> anyhow::Result<Kid> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.args(args);
        let cpus = CHILD_CPUS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !cpus.is_empty() {
            cmd.arg("--pin-cpus").arg(cpus);
        }
        let mut child = cmd
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn benchmark child")?;
        let out = BufReader::new(child.stdout.take().context("child stdout")?);
        let mut k = Kid { child, out };
        k.expect("READY")?;
        Ok(k)
    }

    fn expect(&mut self, prefix: &str) -> anyhow::Result<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.out.read_line(&mut line)? == 0 {
                bail!("benchmark child exited before printing {prefix}");
            }
            if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                return Ok(rest.trim().to_string());
            }
        }
    }

    fn result(mut self) -> anyhow::Result<serde_json::Value> {
        let r = self.expect("RESULT")?;
        let _ = self.child.wait();
        Ok(serde_json::from_str(&r)?)
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn bench_name(tag: &str) -> String {
    format!("bench-{tag}-{}", std::process::id())
}

/// The writer copies a prepared frame into each slot (a camera's one copy)
/// as fast as it can for `secs`, with `readers` reader processes.
fn throughput(w: u32, h: u32, readers: usize, secs: f64, hugepages: bool) -> anyhow::Result<serde_json::Value> {
    let name = bench_name(&format!("tp{w}x{h}r{readers}"));
    let format = VideoFormat::new(w, h, PixelFormat::Rgb24, 0, 1)?;
    let mut writer = Writer::create(&name, format, &CreateOptions { slots: 8, hugepages, ..Default::default() })?;
    let kids: Vec<Kid> = (0..readers).map(|_| Kid::spawn(&["reader", &name], false)).collect::<Result<_, _>>()?;
    let src = vec![0x5au8; format.frame_size as usize];
    // Warm-up: one pass over every slot, not timed.
    for i in 0..8 {
        writer.publish(|buf| {
            buf.copy_from_slice(&src);
            FrameMeta::new(i, 0, buf.len() as u64)
        });
    }
    let start = Instant::now();
    let mut n = 8u64;
    let first = n;
    while start.elapsed().as_secs_f64() < secs {
        writer.publish(|buf| {
            buf.copy_from_slice(&src);
            FrameMeta::new(n, 0, buf.len() as u64)
        });
        n += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = n - first;
    drop(writer);
    let mut results: Vec<serde_json::Value> = kids.into_iter().map(Kid::result).collect::<Result<_, _>>()?;
    for r in &mut results {
        r["intact_fps"] = json!(r["intact"].as_f64().unwrap_or(0.0) / elapsed);
    }
    let size = format.frame_size as f64;
    Ok(json!({
        "width": w, "height": h, "readers": readers, "hugepages": hugepages, "frame_bytes": format.frame_size,
        "frames": n, "fps": n as f64 / elapsed, "gbps": n as f64 * size / elapsed / 1e9,
        "reader_results": results,
    }))
}

fn latency_ring(spin: bool, samples: usize) -> anyhow::Result<serde_json::Value> {
    let name = bench_name(if spin { "latspin" } else { "latfutex" });
    let format = VideoFormat::new(64, 2, PixelFormat::Gray8, 0, 1)?;
    let mut writer = Writer::create(&name, format, &CreateOptions { slots: 8, ..Default::default() })?;
    let samples_arg = samples.to_string();
    let mut kid_args = vec!["lat-reader", name.as_str(), samples_arg.as_str()];
    if spin {
        kid_args.push("--spin");
    }
    let kid = Kid::spawn(&kid_args, false)?;
    // Give the reader time to be asleep (or spinning) before each frame.
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..samples as u64 {
        writer.publish(|buf| FrameMeta::new(i, 0, buf.len() as u64));
        std::thread::sleep(Duration::from_micros(700));
    }
    // Closing ends a reader that lost a few frames (and so waits for more).
    drop(writer);
    kid.result()
}

fn latency_futex(samples: usize) -> anyhow::Result<serde_json::Value> {
    let name = bench_name("rawfutex");
    let ch = FutexChannel::create(&name)?;
    let kid = Kid::spawn(&["futex-rx", &name, &samples.to_string()], false)?;
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..samples {
        ch.send(realtime_ns());
        std::thread::sleep(Duration::from_micros(700));
    }
    std::thread::sleep(Duration::from_millis(5));
    ch.send(0);
    kid.result()
}

fn latency_pipe(samples: usize) -> anyhow::Result<serde_json::Value> {
    let mut kid = Kid::spawn(&["pipe-rx", &samples.to_string()], true)?;
    let mut stdin = kid.child.stdin.take().context("child stdin")?;
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..samples {
        stdin.write_all(&realtime_ns().to_ne_bytes())?;
        stdin.flush()?;
        std::thread::sleep(Duration::from_micros(700));
    }
    kid.result()
}

fn main_bench(args: &Args) -> anyhow::Result<()> {
    let (sizes, secs, samples): (Vec<(u32, u32)>, f64, usize) = if args.quick {
        (vec![(640, 360)], 0.3, 200)
    } else {
        (vec![(1920, 1080), (3840, 2160)], args.secs, args.samples)
    };
    let pin = !args.no_pin && !reader_cpus().is_empty();
    place(pin)?;
    let mut tp = Vec::new();
    for &(w, h) in &sizes {
        let size = w as usize * h as usize * 3;
        let mem = memcpy_fps(size, 8, secs) * size as f64;
        for readers in 0..=2 {
            let mut r = throughput(w, h, readers, secs, args.hugepages)?;
            r["pinned"] = json!(pin);
            let ratio = r["gbps"].as_f64().unwrap_or(0.0) * 1e9 / mem;
            r["memcpy_gbps"] = json!(mem / 1e9);
            r["ratio_to_memcpy"] = json!(ratio);
            tp.push(r);
        }
    }
    // Wake-up latency in both placements: pinned to different CPUs (waking an
    // idle CPU is part of the cost) and unpinned (the scheduler may run the
    // reader where the writer just was).
    let mut lat = serde_json::Map::new();
    let placements: &[bool] = if reader_cpus().is_empty() { &[false] } else { &[true, false] };
    for &p in placements {
        place(p)?;
        lat.insert(
            if p { "pinned" } else { "unpinned" }.to_string(),
            json!({
                "ring_futex": latency_ring(false, samples)?,
                "ring_spin": latency_ring(true, samples)?,
                "raw_futex": latency_futex(samples)?,
                "pipe": latency_pipe(samples)?,
            }),
        );
    }
    let lat = serde_json::Value::Object(lat);
    let report = json!({"throughput": tp, "latency": lat, "quick": args.quick, "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)});
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("throughput: writer copies each frame once into the ring; readers (separate processes) read every byte");
    if tp.first().is_some_and(|r| r["pinned"] == true) {
        println!("(writer pinned to CPU 0, readers to CPUs 1..; memcpy baseline on CPU 0; same placement for latency)");
    }
    println!(
        "{:<11} {:>7} {:>9} {:>8} {:>11} {:>8}  per reader: intact frames/s (read / torn / lost)",
        "frame", "readers", "frames/s", "GB/s", "memcpy GB/s", "ratio"
    );
    for r in &tp {
        let per: Vec<String> = r["reader_results"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        format!(
                            "{:.0} ({}/{}/{})",
                            x["intact_fps"].as_f64().unwrap_or(0.0),
                            x["frames"],
                            x["overruns"],
                            x["lost"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:<11} {:>7} {:>9.1} {:>8.2} {:>11.2} {:>7.2}x  {}",
            format!("{}x{}", r["width"], r["height"]),
            r["readers"],
            r["fps"].as_f64().unwrap_or(0.0),
            r["gbps"].as_f64().unwrap_or(0.0),
            r["memcpy_gbps"].as_f64().unwrap_or(0.0),
            r["ratio_to_memcpy"].as_f64().unwrap_or(0.0),
            per.join("  ")
        );
    }
    for (placement, l) in lat.as_object().into_iter().flatten() {
        println!();
        println!("latency, {placement}: publish -> reader running with the frame (one-way, two processes), µs");
        println!("{:<34} {:>8} {:>8} {:>8} {:>9}", "mode", "p50", "p99", "p99.9", "max");
        let base = l["raw_futex"]["p50_ns"].as_f64().unwrap_or(1.0).max(1.0);
        for (key, label) in [
            ("ring_futex", "ring, futex wait"),
            ("ring_spin", "ring, spinning reader"),
            ("raw_futex", "baseline: raw futex wake"),
            ("pipe", "baseline: pipe write -> read"),
        ] {
            let l = &l[key];
            let us = |k: &str| l[k].as_f64().unwrap_or(0.0) / 1000.0;
            println!(
                "{:<34} {:>8.2} {:>8.2} {:>8.2} {:>9.1}   ({:.2}x raw futex p50)",
                label,
                us("p50_ns"),
                us("p99_ns"),
                us("p999_ns"),
                us("max_ns"),
                l["p50_ns"].as_f64().unwrap_or(0.0) / base
            );
        }
    }
    Ok(())
}
