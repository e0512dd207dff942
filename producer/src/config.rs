//! Command line and the checked configuration built from it ("parse, then
//! build a checked config"): everything a user can get wrong is rejected here
//! with one clear message, before any source, pipeline or segment exists.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;
use shm_proto::{CreateOptions, PixelFormat, VideoFormat};

use crate::testsrc::Settings;

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
// The field docs are the `--help` text, written for a terminal (`<NAME>`).
#[allow(rustdoc::invalid_html_tags)]
#[derive(Parser, Debug)]
#[command(name = crate::BIN, version, about, after_help = AFTER_HELP)]
pub struct Args {
    /// Stream name ([A-Za-z0-9_.-]{1,64}); the segment is /dev/shm/shmcast.<NAME>.
    #[arg(long)]
    pub name: String,

    /// Source: `testsrc`, `v4l2:/dev/videoN` or `gst:'<pipeline producing video>'`.
    #[arg(long, default_value = "testsrc")]
    pub source: String,

    /// Frame width in pixels.
    #[arg(long, default_value_t = 1280)]
    pub width: u32,

    /// Frame height in pixels.
    #[arg(long, default_value_t = 720)]
    pub height: u32,

    /// Pixel format: rgb24, bgr24, gray8, yuyv, nv12, i420, or mjpeg (gst:/v4l2: only).
    #[arg(long, default_value = "rgb24", value_parser = parse_pixel)]
    pub format: PixelFormat,

    /// Frames per second; 0 = as fast as possible. Default: 30 for testsrc,
    /// the source's own rate for gst: and v4l2: (a value makes gst: add videorate).
    #[arg(long)]
    pub fps: Option<u32>,

    /// Ring slots (a power of two, 2..=65536).
    #[arg(long, default_value_t = 8)]
    pub slots: u32,

    /// Stop after N frames (exit 0).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub frames: Option<u64>,

    /// Back the ring with huge pages (needs a hugetlbfs mount and reserved pages).
    #[arg(long)]
    pub hugepages: bool,

    /// Lock the ring in RAM (root or a large RLIMIT_MEMLOCK).
    #[arg(long)]
    pub mlock: bool,

    /// File mode of the segment, octal.
    #[arg(long, default_value = "0640", value_parser = parse_mode)]
    pub mode: u32,

    /// Group owning the segment (name or gid), so readers in that group can map it.
    #[arg(long)]
    pub group: Option<String>,

    /// Seed of the test pattern (background, noise, events).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// testsrc: Gaussian sensor noise, standard deviation in gray levels (0..=64).
    #[arg(long, default_value_t = 0.0, value_name = "SIGMA")]
    pub noise: f64,

    /// testsrc: inject on average K synthetic events (meteor, motion) per 1000 frames.
    #[arg(long, default_value_t = 0.0, value_name = "K")]
    pub events: f64,

    /// testsrc: write the events' ground truth to FILE (JSON lines).
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,

    /// gst: restart the pipeline at end of stream instead of exiting.
    #[arg(long = "loop")]
    pub looping: bool,

    #[command(flatten)]
    pub common: shmcast_common::CommonArgs,
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

/// What every source needs: the stream it writes and the frames it delivers.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Stream name (checked).
    pub name: String,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Pixel format of the ring.
    pub pixel: PixelFormat,
    /// `None`: the source's own rate (30 for testsrc); `Some(0)`: as fast as
    /// possible; `Some(n)`: n frames per second.
    pub fps: Option<u32>,
    /// Stop after this many frames.
    pub frames: Option<u64>,
    /// Ring options.
    pub create: CreateOptions,
}

/// The source and what is particular to it.
#[derive(Clone, Debug)]
pub enum Source {
    /// The built-in test pattern.
    TestSrc {
        /// Seed, noise, events.
        settings: Settings,
        /// Where to write the events' ground truth.
        truth: Option<PathBuf>,
    },
    /// A V4L2 capture device.
    V4l2 {
        /// Its path, e.g. `/dev/video0`.
        device: PathBuf,
    },
    /// A GStreamer pipeline.
    Gst {
        /// The user's pipeline description.
        pipeline: String,
        /// Restart at end of stream.
        looping: bool,
    },
}

/// The checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The stream and frames, shared by every source.
    pub stream: SourceConfig,
    /// The source.
    pub source: Source,
}

impl Config {
    /// Checks the arguments.
    pub fn from_args(a: &Args) -> anyhow::Result<Config> {
        if !(0.0..=64.0).contains(&a.noise) {
            bail!("--noise {} is out of range (0..=64)", a.noise);
        }
        if !(0.0..=1000.0).contains(&a.events) {
            bail!("--events {} is out of range (0..=1000 per 1000 frames)", a.events);
        }
        let source = if a.source == "testsrc" {
            let fps = a.fps.unwrap_or(30);
            let settings = Settings {
                seed: a.seed,
                noise: a.noise,
                events: a.events,
                fps: if fps == 0 { 30.0 } else { fps.into() },
            };
            Source::TestSrc { settings, truth: a.truth.clone() }
        } else if let Some(p) = a.source.strip_prefix("v4l2:") {
            if p.is_empty() {
                bail!("--source v4l2: needs a device path, e.g. v4l2:/dev/video0");
            }
            Source::V4l2 { device: PathBuf::from(p) }
        } else if let Some(p) = a.source.strip_prefix("gst:") {
            if p.trim().is_empty() {
                bail!("--source gst: needs a pipeline, e.g. gst:'videotestsrc pattern=ball'");
            }
            Source::Gst { pipeline: p.to_string(), looping: a.looping }
        } else {
            bail!("unknown source {:?} (expected testsrc, v4l2:/dev/videoN or gst:'<pipeline>')", a.source)
        };
        if !matches!(source, Source::TestSrc { .. }) && (a.noise > 0.0 || a.events > 0.0 || a.truth.is_some()) {
            bail!("--noise, --events and --truth apply to --source testsrc only");
        }
        if a.looping && !matches!(source, Source::Gst { .. }) {
            bail!("--loop applies to gst: sources only");
        }
        if matches!(source, Source::TestSrc { .. }) && a.format.is_compressed() {
            bail!("testsrc draws raw formats only; {} needs a gst: or v4l2: source", a.format);
        }
        // The frame geometry and the name, before touching any source or /dev/shm.
        VideoFormat::new(a.width, a.height, a.format, 0, 1)?;
        shm_proto::StreamName::new(&a.name)?;
        let create = CreateOptions {
            slots: a.slots,
            mode: a.mode,
            group: a.group.clone(),
            hugepages: a.hugepages,
            mlock: a.mlock,
            dir: None,
            overlay: None,
        };
        let stream = SourceConfig {
            name: a.name.clone(),
            width: a.width,
            height: a.height,
            pixel: a.format,
            fps: a.fps,
            frames: a.frames,
            create,
        };
        Ok(Config { stream, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["shmcast-producer", "--name", "cam0"];
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    #[test]
    fn sources_parse_into_one_shared_stream_config() {
        let c = Config::from_args(&args(&["--noise", "4", "--truth", "t.jsonl"])).unwrap();
        assert!(matches!(c.source, Source::TestSrc { ref settings, ref truth }
            if settings.noise == 4.0 && settings.fps == 30.0 && truth.is_some()));
        assert_eq!((c.stream.width, c.stream.height, c.stream.pixel), (1280, 720, PixelFormat::Rgb24));
        let c = Config::from_args(&args(&["--source", "gst:videotestsrc", "--loop", "--fps", "0"])).unwrap();
        assert!(matches!(c.source, Source::Gst { ref pipeline, looping: true } if pipeline == "videotestsrc"));
        assert_eq!(c.stream.fps, Some(0));
        let c = Config::from_args(&args(&["--source", "v4l2:/dev/video9", "--slots", "4"])).unwrap();
        assert!(matches!(c.source, Source::V4l2 { ref device } if device.to_str() == Some("/dev/video9")));
        assert_eq!(c.stream.create.slots, 4);
    }

    #[test]
    fn rejects_what_does_not_fit_the_source() {
        for (a, needle) in [
            (&["--source", "v4l2:"][..], "needs a device path"),
            (&["--source", "gst: "][..], "needs a pipeline"),
            (&["--source", "rtsp://x"][..], "unknown source"),
            (&["--source", "gst:videotestsrc", "--noise", "1"][..], "testsrc only"),
            (&["--loop"][..], "gst: sources only"),
            (&["--format", "mjpeg"][..], "raw formats only"),
            (&["--noise", "65"][..], "out of range"),
            (&["--events", "1001"][..], "out of range"),
        ] {
            let e = Config::from_args(&args(a)).unwrap_err();
            assert!(e.to_string().contains(needle), "{a:?}: {e}");
        }
    }
}
