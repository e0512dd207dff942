//! shmcast-producer: writes frames from the test pattern, a V4L2 camera or a
//! GStreamer pipeline into the shared-memory ring `shmcast.<name>`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use clap::Parser;
use shm_proto::{CreateOptions, FrameMeta, PixelFormat, Rect, VideoFormat};
use shmcast_common::CommonArgs;
use shmcast_producer::output::{Output, Pacer, TruthFile};
use shmcast_producer::scene;
use shmcast_producer::testsrc::{Settings, TestSrc};
use shmcast_producer::{gst_source, v4l2_source};

const BIN: &str = "shmcast-producer";

const AFTER_HELP: &str = "\
The test pattern: a static night-sky background (fixed stars, soft texture),
plus everything that moves confined to the STATUS BAND at the top of the frame,
the rectangle x=0,y=0,w=W,h=band_h with band_h = 4*block, block = the stamp's
block size (StampLayout::for_frame(W,H).block; band_h = min(H,16) when no stamp
fits). 640x480 -> 0,0,640,64; 1280x720 -> 0,0,1280,128; 1920x1080 -> 0,0,1920,192.
The band holds the frame stamp (frame id + capture time) and a sweeping bar; the
producer logs it at start. Injected events (--events) never touch it. Frame ids
are 0,1,2,... from the start. Ground truth (--truth): JSON lines with type
(meteor|motion), start_frame, end_frame, bbox [x,y,w,h], peak, track, frames,
truncated, start_capture_ns, end_capture_ns. See docs/producer.md.

Examples:
  shmcast-producer --name cam0
  shmcast-producer --name cam0 --width 1920 --height 1080 --format nv12 --fps 30 --noise 4 \\
                   --events 5 --truth truth.jsonl --seed 42
  shmcast-producer --name cam0 --source \"gst:videotestsrc pattern=ball\" --format i420
  shmcast-producer --name cam0 --source \"gst:filesrc location=clip.mp4 ! decodebin\" --loop
  shmcast-producer --name cam0 --source \"gst:videotestsrc\" --format mjpeg --fps 15
  shmcast-producer --name cam0 --source v4l2:/dev/video0 --format yuyv --width 640 --height 480
  shmcast-producer --name bench --fps 0 --frames 1000 --width 3840 --height 2160

Exit status: 0 on --frames N, end of stream, SIGINT or SIGTERM (the stream is
closed, readers woken, the name unlinked); 1 on an error (one line on stderr,
nothing left in /dev/shm); 2 on a usage error.";

/// Capture frames into a shmcast shared-memory ring.
#[derive(Parser, Debug)]
#[command(name = BIN, version, about, after_help = AFTER_HELP)]
struct Args {
    /// Stream name ([A-Za-z0-9_.-]{1,64}); the segment is /dev/shm/shmcast.<NAME>.
    #[arg(long)]
    name: String,

    /// Source: `testsrc`, `v4l2:/dev/videoN` or `gst:'<pipeline producing video>'`.
    #[arg(long, default_value = "testsrc")]
    source: String,

    /// Frame width in pixels.
    #[arg(long, default_value_t = 1280)]
    width: u32,

    /// Frame height in pixels.
    #[arg(long, default_value_t = 720)]
    height: u32,

    /// Pixel format: rgb24, bgr24, gray8, yuyv, nv12, i420, or mjpeg (gst:/v4l2: only).
    #[arg(long, default_value = "rgb24", value_parser = parse_pixel)]
    format: PixelFormat,

    /// Frames per second; 0 = as fast as possible. Default: 30 for testsrc,
    /// the source's own rate for gst: and v4l2: (a value makes gst: add videorate).
    #[arg(long)]
    fps: Option<u32>,

    /// Ring slots (a power of two, 2..=65536).
    #[arg(long, default_value_t = 8)]
    slots: u32,

    /// Stop after N frames (exit 0).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    frames: Option<u64>,

    /// Back the ring with huge pages (needs a hugetlbfs mount and reserved pages).
    #[arg(long)]
    hugepages: bool,

    /// Lock the ring in RAM (root or a large RLIMIT_MEMLOCK).
    #[arg(long)]
    mlock: bool,

    /// File mode of the segment, octal.
    #[arg(long, default_value = "0640", value_parser = parse_mode)]
    mode: u32,

    /// Group owning the segment (name or gid), so readers in that group can map it.
    #[arg(long)]
    group: Option<String>,

    /// Seed of the test pattern (background, noise, events).
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// testsrc: Gaussian sensor noise, standard deviation in gray levels (0..=64).
    #[arg(long, default_value_t = 0.0, value_name = "SIGMA")]
    noise: f64,

    /// testsrc: inject on average K synthetic events (meteor, motion) per 1000 frames.
    #[arg(long, default_value_t = 0.0, value_name = "K")]
    events: f64,

    /// testsrc: write the events' ground truth to FILE (JSON lines).
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,

    /// gst: restart the pipeline at end of stream instead of exiting.
    #[arg(long = "loop")]
    looping: bool,

    #[command(flatten)]
    common: CommonArgs,
}

fn parse_pixel(s: &str) -> Result<PixelFormat, String> {
    s.parse::<PixelFormat>().map_err(|e| e.to_string())
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 0640"))
}

/// The parsed `--source`.
enum Source {
    TestSrc,
    V4l2(PathBuf),
    Gst(String),
}

fn parse_source(s: &str) -> anyhow::Result<Source> {
    if s == "testsrc" {
        Ok(Source::TestSrc)
    } else if let Some(p) = s.strip_prefix("v4l2:") {
        if p.is_empty() {
            bail!("--source v4l2: needs a device path, e.g. v4l2:/dev/video0");
        }
        Ok(Source::V4l2(PathBuf::from(p)))
    } else if let Some(p) = s.strip_prefix("gst:") {
        if p.trim().is_empty() {
            bail!("--source gst: needs a pipeline, e.g. gst:'videotestsrc pattern=ball'");
        }
        Ok(Source::Gst(p.to_string()))
    } else {
        bail!("unknown source {s:?} (expected testsrc, v4l2:/dev/videoN or gst:'<pipeline>')")
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    shmcast_common::main_wrapper(BIN, || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    shmcast_common::start(&args.common, BIN, &args.name)?;
    let source = parse_source(&args.source)?;
    if !(0.0..=64.0).contains(&args.noise) {
        bail!("--noise {} is out of range (0..=64)", args.noise);
    }
    if !(0.0..=1000.0).contains(&args.events) {
        bail!("--events {} is out of range (0..=1000 per 1000 frames)", args.events);
    }
    if !matches!(source, Source::TestSrc) && (args.noise > 0.0 || args.events > 0.0 || args.truth.is_some()) {
        bail!("--noise, --events and --truth apply to --source testsrc only");
    }
    if args.looping && !matches!(source, Source::Gst(_)) {
        bail!("--loop applies to gst: sources only");
    }
    // Check the frame geometry before touching any source or /dev/shm.
    VideoFormat::new(args.width, args.height, args.format, 0, 1)?;
    shm_proto::StreamName::new(&args.name)?;
    let create = CreateOptions {
        slots: args.slots,
        mode: args.mode,
        group: args.group.clone(),
        hugepages: args.hugepages,
        mlock: args.mlock,
        dir: None,
        overlay: None,
    };
    let stop = shmcast_common::shutdown_flag()?;
    match source {
        Source::TestSrc => run_testsrc(&args, &create, &stop),
        Source::Gst(pipeline) => gst_source::run(
            &gst_source::GstConfig {
                name: &args.name,
                pipeline: &pipeline,
                width: args.width,
                height: args.height,
                pixel: args.format,
                fps: args.fps,
                frames: args.frames,
                looping: args.looping,
                create: &create,
            },
            &stop,
        ),
        Source::V4l2(device) => v4l2_source::run(
            &v4l2_source::V4l2Config {
                name: &args.name,
                device: &device,
                width: args.width,
                height: args.height,
                pixel: args.format,
                fps: args.fps,
                frames: args.frames,
                create: &create,
            },
            &stop,
        ),
    }
}

fn run_testsrc(args: &Args, create: &CreateOptions, stop: &AtomicBool) -> anyhow::Result<()> {
    if args.format.is_compressed() {
        bail!("testsrc draws raw formats only; {} needs a gst: or v4l2: source", args.format);
    }
    let fps = args.fps.unwrap_or(30);
    let format = VideoFormat::new(args.width, args.height, args.format, fps, 1)?;
    let settings = Settings {
        seed: args.seed,
        noise: args.noise,
        events: args.events,
        fps: if fps == 0 { 30.0 } else { fps.into() },
    };
    // The stream first: a name in use or a full /dev/shm fails before the
    // (at large sizes, slow) background preparation.
    // The status band changes every frame by design: record it in the header
    // as the producer's overlay, so pixel-analysing consumers ignore it.
    let (bx, by, bw, bh) = scene::status_band(format.width, format.height);
    let create = CreateOptions { overlay: Some(Rect::new(bx, by, bw, bh)), ..create.clone() };
    let mut out = Output::create(&args.name, format, &create)?;
    let (mut src, capped) = TestSrc::new(&format, &settings)?;
    if let Some(rate) = capped {
        tracing::warn!(
            requested = args.events,
            delivered = format_args!("{rate:.1}"),
            "--events asks for more events than fit without overlap; delivering about this many per 1000 frames"
        );
    }
    debug_assert_eq!(src.band(), (bx, by, bw, bh));
    tracing::info!(x = bx, y = by, w = bw, h = bh, "status band (recorded as the stream's overlay region)");
    let mut truth = match &args.truth {
        Some(p) => Some(TruthFile::create(p)?),
        None => None,
    };
    let mut pacer = Pacer::new(fps);
    let size = format.frame_size;
    let mut id = 0u64;
    while args.frames.is_none_or(|n| id < n) {
        if !pacer.wait(stop) {
            break;
        }
        let capture = shm_proto::os::realtime_ns();
        let mut ended = None;
        out.publish(|slot| {
            ended = src.render(slot, id, capture);
            FrameMeta::new(id, capture, size)
        });
        if let (Some(t), Some(f)) = (ended, truth.as_mut()) {
            f.write(&t)?;
        }
        id += 1;
    }
    if let (Some(t), Some(f)) = (src.unfinished(), truth.as_mut()) {
        f.write(&t).context("at exit")?;
    }
    tracing::info!(frames = out.stats.frames(), "stopping");
    Ok(())
}
