//! `shmcast-detect`'s command line and the checked configuration built from
//! it ("parse, then build a checked config"): everything a user can get wrong
//! (a bad threshold, an unreadable mask image, a malformed MQTT URL) is
//! rejected here with one clear message, before any stream is opened.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, ValueEnum};

use super::mask::MaskImage;
use super::mqtt::MqttConfig;
use super::{Config, Rect};

/// Detect meteors and moving objects in a shmcast stream, reading frames in place.
///
/// Events are JSON lines (type, start_frame, end_frame, bbox, peak, capture
/// times, points, speed); at exit a last line with "type":"summary".
///
/// Examples:
///   shmcast-detect --name cam0
///   shmcast-detect --name cam0 --events events.jsonl --snapshots snaps/ --mask 0,0,1280,40
///   shmcast-detect --name cam0 --mask-file mask.png
///   shmcast-detect --name cam0 --mqtt mqtt://127.0.0.1:1883 --topic shmcast/cam0/events
#[derive(Parser, Debug)]
#[command(name = "shmcast-detect", version, verbatim_doc_comment)]
pub struct Args {
    /// Stream name (the producer's --name).
    #[arg(long, default_value = "cam0")]
    pub name: String,

    /// Where to write events: a file (appended) or - for stdout.
    #[arg(long, default_value = "-", value_name = "FILE|-")]
    pub events: String,

    /// Write one PNG per event into DIR: the full-resolution luma of its peak
    /// frame with the track's box drawn; the event's JSON names the file.
    #[arg(long, value_name = "DIR")]
    pub snapshots: Option<PathBuf>,

    /// Exclude a region x,y,w,h (full-resolution pixels) from detection; repeatable.
    /// The producer's own overlay region (e.g. the test pattern's status band)
    /// is always excluded.
    #[arg(long, value_name = "X,Y,W,H")]
    pub mask: Vec<Rect>,

    /// Exclude the dark pixels of a mask image (PNG, or PGM P5/P2; scaled to
    /// the stream's size): paint what to ignore black, what to analyse white.
    #[arg(long, value_name = "FILE")]
    pub mask_file: Option<PathBuf>,

    /// Fail if no producer appears within SECS (default: wait forever).
    #[arg(long, value_name = "SECS")]
    pub attach_timeout: Option<f64>,

    /// Where to start in the ring when first attaching.
    #[arg(long, value_enum, default_value_t = StartAt::Oldest)]
    pub start: StartAt,

    /// Stop after processing N frames.
    #[arg(long, value_name = "N")]
    pub frames: Option<u64>,

    /// Exit (with the summary) when the producer closes the stream, instead of waiting for a new one.
    #[arg(long)]
    pub exit_on_close: bool,

    /// Cell size in pixels of the background model (0: automatic, about 960 cells across).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub bin: u32,

    /// Detection threshold in noise σ (seed cells; growth uses 0.6 of it).
    #[arg(long, default_value_t = 6.0)]
    pub k: f32,

    /// Longest meteor, in frames.
    #[arg(long, default_value_t = 60)]
    pub meteor_max_frames: u64,

    /// Slowest meteor, in pixels per frame.
    #[arg(long, default_value_t = 4.0)]
    pub meteor_min_speed: f32,

    /// Publish each event as JSON to this MQTT broker (`mqtt://[user:pass@]HOST[:PORT]`).
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,

    /// MQTT topic for events.
    #[arg(long, default_value = "shmcast/events", value_name = "TOPIC")]
    pub topic: String,

    /// Events queued for MQTT before new ones are dropped (never blocks detection).
    #[arg(long, default_value_t = 1024)]
    pub mqtt_queue: usize,

    /// Options common to all shmcast binaries.
    #[command(flatten)]
    pub common: shmcast_common::CommonArgs,
}

/// Where to start reading the ring when first attaching (`--start`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StartAt {
    /// Every frame still in the ring.
    Oldest,
    /// Only frames published from now on.
    Next,
}

impl From<StartAt> for shm_proto::Start {
    fn from(s: StartAt) -> shm_proto::Start {
        match s {
            StartAt::Oldest => shm_proto::Start::Oldest,
            StartAt::Next => shm_proto::Start::Next,
        }
    }
}

/// Where events go (`--events`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventsTo {
    /// Standard output (`-`).
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

/// The checked configuration of a detector run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Stream name.
    pub name: String,
    /// Where events go.
    pub events: EventsTo,
    /// Snapshot directory (created by the run).
    pub snapshots: Option<PathBuf>,
    /// The detector's configuration (masks, mask image, thresholds).
    pub detector: Config,
    /// The mask image's path, for the log.
    pub mask_file: Option<PathBuf>,
    /// Fail when no producer appeared within this time.
    pub attach_timeout: Option<Duration>,
    /// Where to start in the ring on the first attach.
    pub start: shm_proto::Start,
    /// Stop after this many frames.
    pub frames: Option<u64>,
    /// Exit when the producer closes the stream.
    pub exit_on_close: bool,
    /// MQTT broker and topic, when publishing.
    pub mqtt: Option<MqttConfig>,
    /// MQTT queue length.
    pub mqtt_queue: usize,
}

impl Settings {
    /// Checks the arguments and loads the mask image.
    pub fn from_args(args: &Args) -> anyhow::Result<Settings> {
        let attach_timeout = match args.attach_timeout {
            Some(t) if !(t.is_finite() && t >= 0.0) => bail!("invalid --attach-timeout {t}: expected seconds ≥ 0"),
            Some(t) => Some(Duration::from_secs_f64(t)),
            None => None,
        };
        if !(args.k.is_finite() && args.k > 0.0) {
            bail!("invalid --k {}: expected a positive number", args.k);
        }
        if !(args.meteor_min_speed.is_finite() && args.meteor_min_speed >= 0.0) {
            bail!("invalid --meteor-min-speed {}: expected a number ≥ 0", args.meteor_min_speed);
        }
        let mut detector = Config {
            bin: args.bin,
            masks: args.mask.clone(),
            snapshots: args.snapshots.is_some(),
            ..Config::default()
        };
        if let Some(path) = &args.mask_file {
            detector.mask_image = Some(Arc::new(MaskImage::load(path)?));
        }
        detector.model.k_strong = args.k;
        detector.model.k_weak = 0.6 * args.k;
        detector.track.meteor_max_frames = args.meteor_max_frames;
        detector.track.meteor_min_speed = args.meteor_min_speed;
        let mqtt = args.mqtt.as_deref().map(|url| MqttConfig::from_url(url, &args.topic)).transpose()?;
        Ok(Settings {
            name: args.name.clone(),
            events: if args.events == "-" { EventsTo::Stdout } else { EventsTo::File(PathBuf::from(&args.events)) },
            snapshots: args.snapshots.clone(),
            detector,
            mask_file: args.mask_file.clone(),
            attach_timeout,
            start: args.start.into(),
            frames: args.frames,
            exit_on_close: args.exit_on_close,
            mqtt,
            mqtt_queue: args.mqtt_queue,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> anyhow::Result<Settings> {
        let args = Args::try_parse_from(std::iter::once("shmcast-detect").chain(a.iter().copied()))?;
        Settings::from_args(&args)
    }

    #[test]
    fn defaults_and_checks() {
        let s = parse(&[]).unwrap();
        assert_eq!((s.name.as_str(), &s.events, s.start), ("cam0", &EventsTo::Stdout, shm_proto::Start::Oldest));
        let s = parse(&["--start", "next", "--events", "e.jsonl", "--attach-timeout", "1.5"]).unwrap();
        assert_eq!(s.start, shm_proto::Start::Next);
        assert_eq!(s.events, EventsTo::File("e.jsonl".into()));
        assert_eq!(s.attach_timeout, Some(Duration::from_millis(1500)));
        assert!(parse(&["--start", "newest"]).is_err());
        assert!(parse(&["--k", "0"]).is_err());
        assert!(parse(&["--attach-timeout", "-1"]).is_err());
        assert!(parse(&["--mqtt", "http://x"]).is_err());
        assert!(parse(&["--mask-file", "/nonexistent/mask.png"]).is_err());
    }
}
