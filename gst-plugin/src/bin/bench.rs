//! shmcast-gst-bench: `shmcastsink` → `shmcastsrc` against GStreamer's own
//! `shmsink` → `shmsrc`, with the same source and receivers, in one run.
//!
//! The sender is `videotestsrc pattern=solid-color` (RGB, unsynchronised);
//! every receiver is a separate process ending in `fakesink sync=false`. A pad
//! probe on the sending element's sink pad writes a stamp (frame number and
//! `CLOCK_REALTIME`) into the first bytes of each frame; a probe on each
//! receiver's `fakesink` reads it, so latency is publish → buffer in the
//! receiver's pipeline and losses are gaps in the frame numbers. CPU per
//! frame is each process's user+system time over its frames; run-queue is
//! the time its threads were runnable but waiting for a CPU (`schedstat`),
//! which on a shared machine is what decides throughput and latency; faults
//! are the receiver's minor page faults per frame.
//!
//! Every process runs in its own session (`setsid`), hence its own scheduler
//! autogroup, as separate services do; `--same-session` puts them all in
//! the bench's group, where the CPU a copying receiver uses is taken from
//! the sender's share. Before the rows, the copy out of a ring slot is
//! timed in this process four ways (`Frame::copy_to`, `Frame::read` +
//! memcpy, `Frame::read` + streaming stores as `shmcastsrc` does, memcpy
//! between heap buffers).
//!
//! Rows: `shmcast` (`videotestsrc` renders each frame straight into a ring
//! slot that `shmcastsink`'s buffer pool lends it, and the sink publishes
//! the slot without a copy — the `tx no-copy` column says for how many
//! frames; each `shmcastsrc` copies it out into a pooled buffer and
//! validates it);
//! `shm copy` (`identity drop-allocation=true` makes `shmsink` copy each
//! frame into its area, as it must for a camera or any source owning its
//! buffers; `shmsrc` hands out the area without copying); `shm zero-copy`
//! (`videotestsrc` renders straight into shmsink's area).
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use gstreamer as gst;
use gstreamer::prelude::*;

/// Compare shmcastsink → shmcastsrc with shmsink → shmsrc: frames/s,
/// publish → receiver latency and CPU per frame, 1080p and 4K RGB, 1 and 2
/// receivers; then a stalled receiver under each.
///
/// Examples:
///   shmcast-gst-bench
///   shmcast-gst-bench --secs 5 --sizes 1920x1080
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,

    /// Seconds each receiver measures.
    #[arg(long, default_value_t = 3.0, global = true)]
    secs: f64,

    /// Frame sizes (WxH, comma-separated).
    #[arg(long, default_value = "1920x1080,3840x2160", value_delimiter = ',')]
    sizes: Vec<String>,

    /// Runs of each row, interleaved (A B C A B C ...); the table shows medians.
    #[arg(long, default_value_t = 3)]
    reps: usize,

    /// Do not pin the sender to CPU 0 and the receivers to CPU 1.
    #[arg(long)]
    no_pin: bool,

    /// Start the sender and receivers in this session (one scheduler
    /// autogroup for all, as when typed into one shell) instead of one
    /// session each (as separate services run).
    #[arg(long)]
    same_session: bool,

    /// Also measure `shmcastsrc latest=true` (the newest frame each time
    /// instead of every frame in order), as an extra row.
    #[arg(long)]
    latest: bool,

    /// Receiver counts to measure (comma-separated).
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    receivers: Vec<usize>,

    /// Back shmcastsink's ring with huge pages (`hugepages=true`; needs free
    /// huge pages, see `/proc/sys/vm/nr_hugepages`).
    #[arg(long, global = true)]
    hugepages: bool,

    /// Skip the stalled-receiver runs.
    #[arg(long)]
    no_stall: bool,

    /// Log level (GStreamer warnings go to stderr).
    #[arg(long, default_value = "warn", global = true)]
    log_level: String,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// (internal) run the sending pipeline; prints one JSON line per 100 ms.
    Sender {
        #[arg(long)]
        transport: Transport,
        #[arg(long)]
        width: u32,
        #[arg(long)]
        height: u32,
        #[arg(long)]
        channel: String,
    },
    /// (internal) run one receiving pipeline; prints one JSON result line.
    Receiver {
        #[arg(long)]
        transport: Transport,
        #[arg(long)]
        width: u32,
        #[arg(long)]
        height: u32,
        #[arg(long)]
        channel: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Transport {
    Shmcast,
    ShmcastLatest,
    ShmCopy,
    ShmZeroCopy,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Shmcast => "shmcast",
            Transport::ShmcastLatest => "shmcast latest=true",
            Transport::ShmCopy => "shm copy",
            Transport::ShmZeroCopy => "shm zero-copy",
        }
    }
    fn arg(self) -> &'static str {
        match self {
            Transport::Shmcast => "shmcast",
            Transport::ShmcastLatest => "shmcast-latest",
            Transport::ShmCopy => "shm-copy",
            Transport::ShmZeroCopy => "shm-zero-copy",
        }
    }
}

const STAMP_MAGIC: u64 = 0x5348_4d43_5354_4d50; // "SHMCSTMP"
/// Slots of the ring.
const SLOTS: u64 = 8;
/// shmsink's area in frames (rounded up to a power of two of bytes: 64 MiB
/// at 1080p RGB, 256 MiB at 4K — more slack than the ring's 8 slots).
const SHM_FRAMES: u64 = 10;

fn main() -> ExitCode {
    shmcast_common::main_wrapper("shmcast-gst-bench", run)
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shmcast_common::init_logging(&cli.log_level)?;
    match cli.role {
        Some(Role::Sender { transport, width, height, ref channel }) => {
            sender(transport, width, height, channel, cli.hugepages)
        }
        Some(Role::Receiver { transport, width, height, ref channel }) => {
            receiver(transport, width, height, channel, cli.secs)
        }
        None => orchestrate(&cli),
    }
}

/// Minor page faults of this process so far.
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| s.rsplit_once(") ")?.1.split_whitespace().nth(7)?.parse().ok())
        .unwrap_or(0)
}

/// Seconds the threads of this process spent runnable but waiting for a CPU
/// (the second field of each thread's `schedstat`): time lost to other
/// processes on a loaded machine.
fn runq_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum::<u64>() as f64
        / 1e9
}

/// User+system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(") ")?.1;
            let mut it = rest.split_whitespace().skip(11);
            let utime: u64 = it.next()?.parse().ok()?;
            let stime: u64 = it.next()?.parse().ok()?;
            // USER_HZ is 100 on Linux.
            Some((utime + stime) as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

fn init_gst() -> anyhow::Result<()> {
    gst::init().context("cannot initialise GStreamer")?;
    gstshmcast::plugin_register_static().context("cannot register the shmcast elements")?;
    Ok(())
}

fn caps(width: u32, height: u32) -> String {
    format!("video/x-raw,format=RGB,width={width},height={height},framerate=0/1")
}

fn play(desc: &str) -> anyhow::Result<gst::Pipeline> {
    let p = gst::parse::launch(desc)
        .with_context(|| format!("cannot parse {desc}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
    p.set_state(gst::State::Playing).map_err(|_| anyhow!("cannot start {desc}"))?;
    Ok(p)
}

fn bus_error(p: &gst::Pipeline) -> Option<String> {
    let msg = p.bus()?.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(e) => Some(e.error().to_string()),
        _ => None,
    }
}

fn sender(transport: Transport, width: u32, height: u32, channel: &str, hugepages: bool) -> anyhow::Result<()> {
    init_gst()?;
    let frame = u64::from(width) * u64::from(height) * 3;
    let src = format!("videotestsrc pattern=solid-color foreground-color=0xff336699 ! {}", caps(width, height));
    let desc = match transport {
        Transport::Shmcast | Transport::ShmcastLatest => {
            format!(
                "{src} ! shmcastsink name=out stream={channel} slots={SLOTS} sync=false{}",
                if hugepages { " hugepages=true" } else { "" }
            )
        }
        Transport::ShmCopy => format!(
            "{src} ! identity drop-allocation=true ! shmsink name=out socket-path={channel} shm-size={} \
             wait-for-connection=false sync=false",
            (frame * SHM_FRAMES).next_power_of_two()
        ),
        Transport::ShmZeroCopy => format!(
            "{src} ! shmsink name=out socket-path={channel} shm-size={} wait-for-connection=false sync=false",
            (frame * SHM_FRAMES).next_power_of_two()
        ),
    };
    let p = play(&desc)?;
    let count = Arc::new(Mutex::new(0u64));
    let out = p.by_name("out").context("no sink")?;
    let pad = out.static_pad("sink").context("no sink pad")?;
    {
        let count = Arc::clone(&count);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buf) = info.buffer_mut() {
                let n = {
                    let mut c = count.lock().unwrap();
                    *c += 1;
                    *c
                };
                let b = buf.make_mut();
                if let Ok(mut map) = b.map_writable() {
                    map[..8].copy_from_slice(&STAMP_MAGIC.to_ne_bytes());
                    map[8..16].copy_from_slice(&n.to_ne_bytes());
                    map[16..24].copy_from_slice(&shm_proto::os::realtime_ns().to_ne_bytes());
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    // Report progress until killed.
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(e) = bus_error(&p) {
            let _ = p.set_state(gst::State::Null);
            bail!("sender pipeline error: {e}");
        }
        let frames = *count.lock().unwrap();
        // Frames shmcastsink published from a lent slot (no copy); -1 for shmsink.
        let lent = match transport {
            Transport::Shmcast | Transport::ShmcastLatest => {
                out.property::<gst::Structure>("stats").get::<u64>("lent").map_or(-1, |v| v as i64)
            }
            _ => -1,
        };
        println!(
            "{{\"t\":{:.3},\"frames\":{frames},\"cpu\":{:.3},\"runq\":{:.3},\"lent\":{lent}}}",
            start.elapsed().as_secs_f64(),
            cpu_seconds(),
            runq_seconds()
        );
    }
}

#[derive(Default)]
struct Recv {
    frames: u64,
    gaps: u64,
    last: Option<u64>,
    lat_us: Vec<f64>,
    /// When the first frame came: time, CPU, run-queue wait, minor faults.
    first: Option<(Instant, f64, f64, u64)>,
}

fn receiver(transport: Transport, width: u32, height: u32, channel: &str, secs: f64) -> anyhow::Result<()> {
    init_gst()?;
    let desc = match transport {
        Transport::Shmcast => format!("shmcastsrc stream={channel} ! fakesink name=out sync=false"),
        Transport::ShmcastLatest => format!("shmcastsrc stream={channel} latest=true ! fakesink name=out sync=false"),
        _ => format!(
            "shmsrc socket-path={channel} is-live=true ! {} ! fakesink name=out sync=false",
            caps(width, height)
        ),
    };
    let p = play(&desc)?;
    let state = Arc::new(Mutex::new(Recv::default()));
    let pad = p.by_name("out").context("no fakesink")?.static_pad("sink").context("no sink pad")?;
    {
        let state = Arc::clone(&state);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let now = shm_proto::os::realtime_ns();
            if let Some(buf) = info.buffer()
                && let Ok(map) = buf.map_readable()
                && map.len() >= 24
                && map[..8] == STAMP_MAGIC.to_ne_bytes()
            {
                let n = u64::from_ne_bytes(map[8..16].try_into().unwrap());
                let t = u64::from_ne_bytes(map[16..24].try_into().unwrap());
                let mut s = state.lock().unwrap();
                if s.first.is_none() {
                    s.first = Some((Instant::now(), cpu_seconds(), runq_seconds(), minor_faults()));
                }
                s.frames += 1;
                if let Some(l) = s.last
                    && n > l + 1
                {
                    s.gaps += n - l - 1;
                }
                s.last = Some(n);
                s.lat_us.push(now.saturating_sub(t) as f64 / 1000.0);
            }
            gst::PadProbeReturn::Ok
        });
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs + 10.0);
    let result = loop {
        std::thread::sleep(Duration::from_millis(20));
        if let Some(e) = bus_error(&p) {
            let _ = p.set_state(gst::State::Null);
            bail!("receiver pipeline error: {e}");
        }
        let s = state.lock().unwrap();
        if let Some((t0, ..)) = s.first
            && t0.elapsed().as_secs_f64() >= secs
        {
            break Some(());
        }
        if Instant::now() > deadline {
            break None;
        }
    };
    let (lost, torn) = match transport {
        Transport::Shmcast | Transport::ShmcastLatest => {
            let st = p.by_name("shmcastsrc0").map(|e| e.property::<gst::Structure>("stats"));
            let g = |k: &str| st.as_ref().and_then(|s| s.get::<u64>(k).ok()).unwrap_or(0);
            (g("lost"), g("torn"))
        }
        _ => (0, 0),
    };
    let mut s = state.lock().unwrap();
    let (cpu_now, runq_now, faults_now) = (cpu_seconds(), runq_seconds(), minor_faults());
    let (elapsed, cpu, runq, faults) = s.first.map_or((0.0, 0.0, 0.0, 0), |(t0, c0, q0, f0)| {
        (t0.elapsed().as_secs_f64(), cpu_now - c0, runq_now - q0, faults_now.saturating_sub(f0))
    });
    s.lat_us.sort_by(f64::total_cmp);
    let pct = |q: f64| s.lat_us.get(((s.lat_us.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    println!(
        "{{\"frames\":{},\"secs\":{elapsed:.3},\"gaps\":{},\"lost\":{lost},\"torn\":{torn},\"p50_us\":{:.1},\"p99_us\":{:.1},\"cpu\":{cpu:.3},\"runq\":{runq:.3},\"faults\":{faults},\"complete\":{}}}",
        s.frames,
        s.gaps,
        pct(0.5),
        pct(0.99),
        result.is_some()
    );
    drop(s);
    // Shut down without waiting on a possibly blocked peer for long.
    let _ = p.set_state(gst::State::Null);
    Ok(())
}

/// Removes the shared areas a killed `shmsink` process left: GStreamer
/// names them `shmpipe.<pid>.<n>` (numbers padded with spaces) and unlinks
/// them only on a clean stop.
fn remove_shm_areas(pid: u32) {
    let dir = shm_proto::segment::default_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("shmpipe.")) else { continue };
        if rest.split('.').next().is_some_and(|p| p.trim().parse::<u32>() == Ok(pid)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A child process of this binary, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cli: &Cli, cpu: Option<usize>, args: &[String]) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe()?;
    // `setsid` and `taskset` exec the program: the child's pid is the program's.
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if !cli.same_session {
        argv.push("setsid".into());
    }
    if let Some(c) = cpu
        && !cli.no_pin
    {
        argv.extend(["taskset".into(), "-c".into(), c.to_string().into()]);
    }
    argv.push(exe.into());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .args(args)
        .args(["--secs", &cli.secs.to_string(), "--log-level", &cli.log_level])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Ok(Proc(cmd.spawn().context("cannot start a child")?))
}

/// Sender progress lines with the time they arrived.
fn follow_sender(p: &mut Proc) -> mpsc::Receiver<(Instant, Progress)> {
    let (tx, rx) = mpsc::channel();
    let out = p.0.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let Ok(v) = parse_progress(&line) else { continue };
            if tx.send((Instant::now(), v)).is_err() {
                break;
            }
        }
    });
    rx
}

/// One progress line of the sender.
#[derive(Clone, Copy)]
struct Progress {
    frames: u64,
    cpu: f64,
    runq: f64,
    /// Frames published from a lent slot (shmcastsink), or -1.
    lent: i64,
}

/// Parses `{"t":..,"frames":N,"cpu":C,"runq":Q,"lent":L}` without a JSON dependency.
fn parse_progress(line: &str) -> Result<Progress, ()> {
    let field = |k: &str| line.split_once(&format!("\"{k}\":")).map(|(_, r)| r.split([',', '}']).next().unwrap_or(""));
    let frames = field("frames").and_then(|v| v.parse().ok()).ok_or(())?;
    let cpu = field("cpu").and_then(|v| v.parse().ok()).ok_or(())?;
    let runq = field("runq").and_then(|v| v.parse().ok()).ok_or(())?;
    let lent = field("lent").and_then(|v| v.parse().ok()).unwrap_or(-1);
    Ok(Progress { frames, cpu, runq, lent })
}

fn num(line: &str, k: &str) -> f64 {
    line.split_once(&format!("\"{k}\":"))
        .and_then(|(_, r)| r.split([',', '}']).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Copy-out costs in this process, ms per frame (medians): `Frame::copy_to`
/// (volatile 64-byte loads), `Frame::read` + memcpy, `Frame::read` +
/// streaming stores (what `shmcastsrc` does for frames of
/// `shm_proto::STREAMING_MIN` bytes or more), and memcpy between two heap
/// buffers.
fn copy_compare((w, h): (u32, u32), rounds: usize) -> anyhow::Result<[f64; 4]> {
    use shm_proto::{CreateOptions, FrameMeta, Next, PixelFormat, Reader, ReaderOptions, Start, VideoFormat, Writer};
    let name = format!("gstbench-copy-{}", std::process::id());
    let format = VideoFormat::new(w, h, PixelFormat::Rgb24, 0, 1)?;
    let size = format.frame_size as usize;
    let mut writer = Writer::create(&name, format, &CreateOptions { slots: SLOTS as u32, ..CreateOptions::default() })?;
    let mut reader = Reader::open(&name, &ReaderOptions { start: Start::Next, ..ReaderOptions::default() })?;
    // Fault every slot in, as a running producer has.
    for i in 0..SLOTS {
        writer.publish(|slot| {
            slot.fill(i as u8);
            FrameMeta::new(i, 0, size as u64)
        });
    }
    let (src, mut dst) = (vec![7u8; size], vec![1u8; size]);
    let mut times: [Vec<f64>; 4] = Default::default();
    for i in 0..rounds as u64 {
        writer.publish(|slot| {
            slot[0] = i as u8;
            FrameMeta::new(SLOTS + i, 0, size as u64)
        });
        let Next::Frame(frame) = reader.next(Duration::from_secs(1)) else { bail!("copy comparison: no frame") };
        let t = Instant::now();
        frame.copy_to(&mut dst).map_err(|e| anyhow!("{e}"))?;
        times[0].push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        frame.read(|b| dst[..b.len()].copy_from_slice(b)).context("copy comparison: overrun")?;
        times[1].push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        frame.read(|b| shm_proto::copy_streaming(&mut dst[..b.len()], b)).context("copy comparison: overrun")?;
        times[2].push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        dst.copy_from_slice(&src);
        times[3].push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&dst);
    }
    Ok(times.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }))
}

struct Row {
    size: String,
    transport: Transport,
    receivers: usize,
    stalled: bool,
    send_fps: f64,
    send_cpu_ms: f64,
    /// Share of the wall time the sender's threads waited for a CPU (%).
    send_runq: f64,
    /// Share of the sender's frames published from a lent ring slot
    /// (shmcastsink's pool in use: no copy in the sender); `None` for shmsink.
    lent_share: Option<f64>,
    recv: Vec<String>,
}

fn measure(cli: &Cli, transport: Transport, (w, h): (u32, u32), receivers: usize, stall: bool) -> anyhow::Result<Row> {
    let channel = match transport {
        Transport::Shmcast | Transport::ShmcastLatest => format!("gstbench-{}", std::process::id()),
        _ => format!("/tmp/shmcast-gstbench-{}.sock", std::process::id()),
    };
    let _ = std::fs::remove_file(&channel);
    let common = |role: &str| {
        vec![
            role.to_string(),
            "--transport".into(),
            transport.arg().into(),
            "--width".into(),
            w.to_string(),
            "--height".into(),
            h.to_string(),
            "--channel".into(),
            channel.clone(),
        ]
    };
    let mut sender_args = common("sender");
    if cli.hugepages {
        sender_args.push("--hugepages".into());
    }
    let mut sender = spawn(cli, Some(0), &sender_args)?;
    let progress = follow_sender(&mut sender);
    // Wait until frames flow.
    let ready = Instant::now() + Duration::from_secs(30);
    loop {
        match progress.recv_timeout(Duration::from_secs(1)) {
            Ok((_, p)) if p.frames > 0 => break,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < ready => {}
            _ => bail!("{} sender did not start", transport.label()),
        }
    }
    let mut recvs = Vec::new();
    if stall {
        // A receiver that attaches, then is stopped (SIGSTOP) and never reads again.
        let r = spawn(cli, Some(1), &common("receiver"))?;
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill").args(["-STOP", &r.0.id().to_string()]).status();
        recvs.push(r);
    }
    let t0 = Instant::now();
    let mut live = Vec::new();
    for _ in 0..receivers {
        live.push(spawn(cli, Some(1), &common("receiver"))?);
    }
    let mut results = Vec::new();
    for r in &mut live {
        let mut out = String::new();
        if let Some(o) = r.0.stdout.take() {
            for line in BufReader::new(o).lines().map_while(Result::ok) {
                out = line;
            }
        }
        let _ = r.0.wait();
        results.push(out);
    }
    let t1 = Instant::now();
    // Sender frames and CPU over the receivers' run.
    let samples: Vec<(Instant, Progress)> = progress.try_iter().collect();
    let in_window: Vec<_> = samples.iter().filter(|(t, _)| *t >= t0 && *t <= t1).collect();
    let (send_fps, send_cpu_ms, send_runq, lent_share) = match (in_window.first(), in_window.last()) {
        (Some((ta, a)), Some((tb, b))) if tb > ta => {
            let dt = (*tb - *ta).as_secs_f64();
            let df = b.frames.saturating_sub(a.frames) as f64;
            let cpu = if df > 0.0 { (b.cpu - a.cpu) * 1000.0 / df } else { f64::NAN };
            let lent = if a.lent >= 0 && b.lent >= 0 && df > 0.0 { Some((b.lent - a.lent) as f64 / df) } else { None };
            (df / dt, cpu, (b.runq - a.runq) * 100.0 / dt, lent)
        }
        _ => (f64::NAN, f64::NAN, f64::NAN, None),
    };
    for r in &recvs {
        let _ = Command::new("kill").args(["-CONT", &r.0.id().to_string()]).status();
    }
    drop(recvs);
    let sender_pid = sender.0.id();
    drop(sender);
    // The sender was killed: remove what it left (its socket, and its segment
    // or shmsink's areas).
    let _ = std::fs::remove_file(&channel);
    if matches!(transport, Transport::Shmcast | Transport::ShmcastLatest) {
        let _ = std::fs::remove_file(shm_proto::segment::default_dir().join(format!("shmcast.{channel}")));
    } else {
        remove_shm_areas(sender_pid);
    }
    Ok(Row {
        size: format!("{w}x{h}"),
        transport,
        receivers,
        stalled: stall,
        send_fps,
        send_cpu_ms,
        send_runq,
        lent_share,
        recv: results,
    })
}

/// The figures of one run of a row.
#[derive(Clone, Copy, Default)]
struct Figures {
    send_fps: f64,
    recv_fps: f64,
    p50: f64,
    p99: f64,
    send_cpu_ms: f64,
    recv_cpu_ms: f64,
    send_runq: f64,
    recv_runq: f64,
    recv_faults: f64,
    gaps: f64,
    torn: f64,
    /// Share of the sender's frames published from a lent slot (NaN: shmsink).
    lent: f64,
    complete: bool,
}

fn figures(r: &Row) -> Figures {
    let n = r.recv.len().max(1) as f64;
    let mean = |f: &dyn Fn(&str) -> f64| r.recv.iter().map(|l| f(l)).sum::<f64>() / n;
    Figures {
        send_fps: r.send_fps,
        recv_fps: mean(&|l| num(l, "frames") / num(l, "secs")),
        p50: mean(&|l| num(l, "p50_us")),
        p99: mean(&|l| num(l, "p99_us")),
        send_cpu_ms: r.send_cpu_ms,
        recv_cpu_ms: mean(&|l| num(l, "cpu") * 1000.0 / num(l, "frames")),
        send_runq: r.send_runq,
        recv_runq: mean(&|l| num(l, "runq") * 100.0 / num(l, "secs")),
        recv_faults: mean(&|l| num(l, "faults") / num(l, "frames")),
        gaps: mean(&|l| num(l, "gaps")),
        torn: mean(&|l| num(l, "torn")),
        lent: r.lent_share.unwrap_or(f64::NAN),
        complete: r.recv.iter().all(|l| l.contains("\"complete\":true")),
    }
}

/// The median of each figure over the runs of a row (NaN sorts last).
fn median(runs: &[Figures]) -> Figures {
    let m = |f: fn(&Figures) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.is_nan().cmp(&b.is_nan()).then(a.total_cmp(b)));
        let finite = v.iter().filter(|x| !x.is_nan()).count();
        if finite == 0 { f64::NAN } else { v[(finite - 1) / 2] }
    };
    Figures {
        send_fps: m(|f| f.send_fps),
        recv_fps: m(|f| f.recv_fps),
        p50: m(|f| f.p50),
        p99: m(|f| f.p99),
        send_cpu_ms: m(|f| f.send_cpu_ms),
        recv_cpu_ms: m(|f| f.recv_cpu_ms),
        send_runq: m(|f| f.send_runq),
        recv_runq: m(|f| f.recv_runq),
        recv_faults: m(|f| f.recv_faults),
        gaps: m(|f| f.gaps),
        torn: m(|f| f.torn),
        lent: m(|f| f.lent),
        complete: runs.iter().all(|f| f.complete),
    }
}

/// The header of the rows' table.
fn print_header() {
    println!(
        "| size | transport | receivers | tx fps | rx fps | ratio | p50 µs | p99 µs | tx CPU ms/frame | rx CPU ms/frame \
         | tx run-queue | rx run-queue | rx faults/frame | gaps | torn | tx no-copy |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
}

fn print_row(r: &Row, f: &Figures, base: Option<&Figures>) {
    let ratio = base.map(|b| f.recv_fps / b.recv_fps);
    println!(
        "| {} | {} | {}{} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} % | {:.0} % | {:.1} | {:.0} | {:.0} | {} |{}",
        r.size,
        r.transport.label(),
        r.receivers,
        if r.stalled { " + 1 stopped" } else { "" },
        f.send_fps,
        f.recv_fps,
        ratio.map_or("".into(), |x| format!("{x:.2}x")),
        f.p50,
        f.p99,
        f.send_cpu_ms,
        f.recv_cpu_ms,
        f.send_runq,
        f.recv_runq,
        f.recv_faults,
        f.gaps,
        f.torn,
        if f.lent.is_nan() { "—".to_string() } else { format!("{:.0} %", f.lent * 100.0) },
        if f.complete { "" } else { " (a receiver got no frames)" },
    );
}

fn orchestrate(cli: &Cli) -> anyhow::Result<()> {
    let sizes: Vec<(u32, u32)> = cli
        .sizes
        .iter()
        .map(|s| {
            let (w, h) = s.split_once('x').ok_or_else(|| anyhow!("size {s:?} is not WxH"))?;
            Ok((w.parse()?, h.parse()?))
        })
        .collect::<anyhow::Result<_>>()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# shmcast-gst-bench: videotestsrc pattern=solid-color RGB, sync=false; {} s per receiver, medians of {} \
         interleaved runs; {}; {}; shmcastsink ring on {}; {} CPUs; load {}",
        cli.secs,
        cli.reps.max(1),
        if cli.no_pin { "unpinned".to_string() } else { "sender on CPU 0, receivers on CPU 1".to_string() },
        if cli.same_session {
            "all processes in one session (one scheduler autogroup)"
        } else {
            "each process in its own session (its own scheduler autogroup, like a service)"
        },
        if cli.hugepages { "huge pages" } else { "4 KiB pages" },
        cpus,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("# copy out of a ring slot, in this process (medians of 60 copies; ms per frame):");
    println!(
        "| size | Frame::copy_to (volatile loads) | Frame::read + memcpy | Frame::read + streaming stores \
         (shmcastsrc) | memcpy heap -> heap |"
    );
    println!("|---|---|---|---|---|");
    for &size in &sizes {
        let [vol, read, stream, heap] = copy_compare(size, 60)?;
        println!(
            "| {}x{} | {vol:.2} | {read:.2} ({:.2}x) | {stream:.2} ({:.2}x) | {heap:.2} |",
            size.0,
            size.1,
            read / vol,
            stream / vol
        );
    }
    println!();
    println!(
        "# rx fps is per receiver; ratio = rx fps / shm copy rx fps; latency = stamp written on the sink's pad -> \
         receiver's fakesink; CPU = user+system ms per frame; gaps = frames a receiver never got; torn = shmcastsrc \
         copies dropped (overwritten during the copy); run-queue = share of the wall time the \
         process's threads were runnable but waiting for a CPU (taken by other processes); faults = minor page faults. \
         shmcastsrc copies every frame out of the ring; shmsrc hands \
         out the shared area and its receiver reads only the stamp. shmsink waits for its slowest receiver; \
         shmcastsink never waits (a slow receiver loses frames, counted as gaps). tx no-copy = share of the \
         sender's frames videotestsrc rendered straight into a ring slot lent by shmcastsink's pool (published \
         without a copy); the rest were copied into a slot."
    );
    print_header();
    for &size in &sizes {
        for &receivers in &cli.receivers {
            let mut transports = vec![Transport::ShmCopy, Transport::ShmZeroCopy, Transport::Shmcast];
            if cli.latest {
                transports.push(Transport::ShmcastLatest);
            }
            let mut runs: Vec<Vec<(Row, Figures)>> = Vec::new();
            runs.resize_with(transports.len(), Vec::new);
            for _ in 0..cli.reps.max(1) {
                for (i, t) in transports.iter().enumerate() {
                    let row = measure(cli, *t, size, receivers, false)?;
                    let f = figures(&row);
                    runs[i].push((row, f));
                }
            }
            let medians: Vec<Figures> =
                runs.iter().map(|r| median(&r.iter().map(|(_, f)| *f).collect::<Vec<_>>())).collect();
            for (i, r) in runs.iter().enumerate() {
                print_row(&r[0].0, &medians[i], Some(&medians[0]));
            }
        }
    }
    if !cli.no_stall {
        println!();
        println!(
            "# stalled receiver: one receiver attaches and is then stopped (SIGSTOP); tx fps and the other receiver's rx fps meanwhile"
        );
        print_header();
        let size = sizes[0];
        for t in [Transport::ShmCopy, Transport::Shmcast] {
            let r = measure(cli, t, size, 1, true)?;
            print_row(&r, &figures(&r), None);
        }
    }
    Ok(())
}
