//! shmcast-inspect: shows a stream's state, geometry and rates. Never waits for a producer.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use shm_proto::{Reader, ReaderOptions, SegmentInfo};

/// Show the state of a shmcast stream: producer, format, ring positions, frame rate.
///
/// Examples:
///   shmcast-inspect --name cam0
///   shmcast-inspect --name cam0 --json
///   shmcast-inspect --name cam0 --watch --json      # one JSON object per second
///   shmcast-inspect                                  # list all streams
///   shmcast-inspect --clean                          # remove stale segments (never a live one)
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Stream name (the segment is /dev/shm/shmcast.NAME); without it, list all streams.
    #[arg(long)]
    name: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Keep printing every second until interrupted.
    #[arg(long)]
    watch: bool,
    /// Remove the segments (and lock files) of every stream whose producer is
    /// gone — or just of --name — printing each and the memory it frees. A
    /// stream whose producer runs, even stopped, is never touched.
    #[arg(long, conflicts_with = "watch")]
    clean: bool,
    /// Seconds over which the frame rate is measured.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    interval: f64,
    #[command(flatten)]
    common: shmcast_common::CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    shmcast_common::main_wrapper("shmcast-inspect", || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    shmcast_common::start(&args.common, "shmcast-inspect", args.name.as_deref().unwrap_or(""))?;
    anyhow::ensure!(args.interval > 0.0 && args.interval <= 60.0, "--interval must be between 0 and 60 seconds");
    if args.clean {
        return clean(&args);
    }
    let Some(name) = args.name.clone() else {
        return list(&args);
    };
    let stop = shmcast_common::shutdown_flag()?;
    let mut r = open_settled(&name)?;
    let head_gauge = shmcast_common::metrics::global().gauge("shmcast_head", "Next sequence the producer will write");
    let fps_gauge = shmcast_common::metrics::global().gauge_f64("shmcast_fps", "Measured frames per second");
    loop {
        let (info, fps) = measure(&r, Duration::from_secs_f64(args.interval), &stop);
        head_gauge.set(info.head);
        fps_gauge.set(fps);
        if args.json {
            println!("{}", to_json(&info, fps));
        } else {
            print_text(&info, fps);
        }
        if !args.watch || shmcast_common::should_stop(&stop) {
            return Ok(());
        }
        if !info.status.is_alive() && !r.is_current() {
            // The producer was replaced: follow the new one.
            match Reader::open(&name, &ReaderOptions::default()) {
                Ok(new) => r = new,
                Err(e) if e.is_transient() => {}
                Err(e) => return Err(e).context("stream was replaced by an unusable object"),
            }
        }
    }
}

/// Opens the stream without waiting for a producer; a segment that exists but
/// is still being initialised (a producer starting right now) gets up to 2 s.
fn open_settled(name: &str) -> Result<Reader, shm_proto::OpenError> {
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        match Reader::open(name, &ReaderOptions::default()) {
            Err(e @ shm_proto::OpenError::Invalid { reason: shm_proto::HeaderError::NotReady, .. })
            | Err(e @ shm_proto::OpenError::Invalid { reason: shm_proto::HeaderError::TooSmall { .. }, .. }) => {
                if Instant::now() >= end {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Samples head twice `interval` apart.
fn measure(r: &Reader, interval: Duration, stop: &std::sync::atomic::AtomicBool) -> (SegmentInfo, f64) {
    let start = Instant::now();
    let h0 = r.head();
    while start.elapsed() < interval && !shmcast_common::should_stop(stop) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let h1 = r.head();
    let secs = start.elapsed().as_secs_f64();
    (r.info(), if secs > 0.0 { h1.saturating_sub(h0) as f64 / secs } else { 0.0 })
}

/// The processes mapping the segment, its producer and this process excluded
/// (from `/proc/*/maps`).
fn readers(i: &SegmentInfo) -> Vec<shmcast_common::procs::Process> {
    let me = std::process::id();
    let mut m = shmcast_common::procs::mapping(&[i.path.as_path()]);
    m.remove(&i.path.display().to_string())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.pid != me && p.pid != i.identity.pid)
        .collect()
}

fn to_json(i: &SegmentInfo, fps: f64) -> serde_json::Value {
    let mut m = shmcast_common::describe::segment(i, fps, &readers(i));
    // The producer's overlay (e.g. the test pattern's status band with the
    // frame stamp), as recorded in the segment header.
    m.insert("overlay".into(), serde_json::json!(i.overlay.map(|o| [o.x, o.y, o.w, o.h])));
    serde_json::Value::Object(m)
}

fn print_text(i: &SegmentInfo, fps: f64) {
    println!("stream      {} ({})", i.name, i.path.display());
    println!(
        "state       {} (pid {}, epoch {:016x}, heartbeat {} ms ago)",
        i.status,
        i.identity.pid,
        i.identity.epoch,
        i.heartbeat_age.as_millis()
    );
    println!("format      {} ({} bytes per frame)", i.format, i.format.frame_size);
    println!(
        "ring        {} slots x {} bytes = {:.1} MiB{}",
        i.slots,
        i.slot_stride,
        i.total_size as f64 / 1048576.0,
        if i.hugepages { " on huge pages" } else { "" }
    );
    println!("head/tail   {} / {}", i.head, i.tail);
    if let Some(o) = i.overlay {
        println!("overlay     {o} (drawn by the producer, e.g. the frame stamp)");
    }
    println!("fps         {fps:.2} (measured)");
    let readers = readers(i);
    if readers.is_empty() {
        println!("readers     none");
    }
    for (n, p) in readers.iter().enumerate() {
        println!("{:<12}{} {}", if n == 0 { "readers" } else { "" }, p.pid, p.command);
    }
}

fn clean(args: &Args) -> anyhow::Result<()> {
    let names = match &args.name {
        Some(n) => vec![n.clone()],
        None => shm_proto::segment::list(),
    };
    let (mut removed, mut freed) = (0, 0u64);
    for n in &names {
        let name = shm_proto::StreamName::new(n)?;
        let Some(done) = shm_proto::segment::clean_stale(&name).with_context(|| format!("cannot clean {n}"))? else {
            continue;
        };
        for (path, r) in done {
            match r {
                Ok(bytes) => {
                    println!("removed {n}: {} ({:.1} MiB)", path.display(), bytes as f64 / 1048576.0);
                    removed += 1;
                    freed += bytes;
                }
                Err(why) => println!("kept {n}: {}: {why}", path.display()),
            }
        }
    }
    println!("{removed} stale segment(s) removed, {:.1} MiB freed", freed as f64 / 1048576.0);
    Ok(())
}

fn list(args: &Args) -> anyhow::Result<()> {
    let names = shm_proto::segment::list();
    let mut rows = Vec::new();
    for n in &names {
        match Reader::open(n, &ReaderOptions::default()) {
            Ok(r) => {
                let i = r.info();
                rows.push(serde_json::json!({"name": n, "state": i.status.as_str(), "pid": i.identity.pid,
                    "width": i.format.width, "height": i.format.height, "format": i.format.pixel.name(), "head": i.head}));
            }
            Err(e) => rows.push(serde_json::json!({"name": n, "error": e.to_string()})),
        }
    }
    if args.json {
        println!("{}", serde_json::Value::Array(rows));
    } else if rows.is_empty() {
        println!("no streams in {}", shm_proto::segment::default_dir().display());
    } else {
        for r in rows {
            match r.get("error") {
                Some(e) => println!("{:<24} error: {}", r["name"].as_str().unwrap_or(""), e.as_str().unwrap_or("")),
                None => println!(
                    "{:<24} {:<8} pid {:<8} {}x{} {} head {}",
                    r["name"].as_str().unwrap_or(""),
                    r["state"].as_str().unwrap_or(""),
                    r["pid"],
                    r["width"],
                    r["height"],
                    r["format"].as_str().unwrap_or(""),
                    r["head"]
                ),
            }
        }
    }
    Ok(())
}
