//! Command line and the checked configuration built from it ("parse, then
//! build a checked config"): everything a user can get wrong is rejected here
//! with one clear message, before any file, pipeline or socket exists.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::encoder::EncoderChoice;
use crate::time::parse_time;

const EXAMPLES: &str = "\
Examples:
  # record cam0 into /var/lib/shmcast/cam0 in 60 s segments, keep 48 h or 20 GB
  shmcast-record --name cam0 --dir /var/lib/shmcast/cam0 --retain-hours 48 --retain-gb 20

  # also cut a clip around every detector event (5 s before, 5 s after)
  shmcast-record --name cam0 --dir rec --events /var/lib/shmcast/cam0/events.jsonl --pre 5 --post 5
  shmcast-record --name cam0 --dir rec --mqtt mqtt://127.0.0.1:1883 --topic shmcast/cam0/events

  # what is recorded; one frame by id or by time; a clip between two times
  shmcast-record ls --dir rec --json
  shmcast-record frame --dir rec --id 1234 --out f.png
  shmcast-record frame --dir rec --time 2026-11-30T02:13:05Z --out f.jpg
  shmcast-record clip --dir rec --from 2026-11-30T02:13:00Z --to 2026-11-30T02:13:30Z --out clip.mp4";

/// Record a shmcast stream to fragmented MP4 segments with a SQLite catalog,
/// cut event clips with pre-roll, and find any frame by id or time.
///
/// Without a subcommand it records: H.264 (x264 or openh264) for raw streams,
/// MJPEG kept as it is (QuickTime fragments); a new segment every
/// --segment-seconds and at every producer restart or format change. The
/// catalog (DIR/catalog.sqlite) lists segments, their frames (id, capture
/// time, keyframe), events and clips.
#[derive(Parser, Debug)]
#[command(
    name = "shmcast-record",
    version,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,

    #[command(flatten)]
    pub record: RecordArgs,

    #[command(flatten)]
    pub common: shmcast_common::CommonArgs,
}

/// The recorder's arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct RecordArgs {
    /// Stream name (the producer's --name).
    #[arg(long, required = true)]
    pub name: Option<String>,

    /// Recording directory (created if missing): segments/, clips/, catalog.sqlite.
    #[arg(long, required = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Length of a segment in seconds (cut at the first keyframe after it).
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub segment_seconds: f64,

    /// Delete segments older than this many hours (default: keep by size only).
    #[arg(long, value_name = "HOURS")]
    pub retain_hours: Option<f64>,

    /// Keep the segments under this many GB (10^9 bytes), oldest deleted first.
    #[arg(long, value_name = "GB")]
    pub retain_gb: Option<f64>,

    /// Delete event clips older than this many hours (default 720 = 30 days).
    #[arg(long, default_value_t = 720.0, value_name = "HOURS")]
    pub clip_retain_hours: f64,

    /// Keep the event clips under this many GB (default: no size limit).
    #[arg(long, value_name = "GB")]
    pub clip_retain_gb: Option<f64>,

    /// Follow this detector events file (JSON lines, as appended by shmcast-detect --events).
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,

    /// Also take events from MQTT: `mqtt://[user[:password]@]host[:port]`.
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,

    /// MQTT topic of the events.
    #[arg(long, default_value = "shmcast/events", value_name = "TOPIC")]
    pub topic: String,

    /// Seconds of video kept before an event's start in its clip.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub pre: f64,

    /// Seconds of video kept after an event's end in its clip.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub post: f64,

    /// H.264 encoder: auto (x264 if installed, else openh264), x264, openh264.
    #[arg(long, default_value = "auto", value_name = "NAME")]
    pub encoder: String,

    /// Keyframe interval in seconds (the granularity of stream-copy cuts).
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub gop: f64,

    /// Target bitrate in kbit/s.
    #[arg(long, default_value_t = 2048, value_name = "KBPS")]
    pub bitrate: u32,

    /// Frames buffered between the ring and the encoder; beyond it frames are
    /// dropped (counted), never waited for.
    #[arg(long, default_value_t = 15, value_name = "N")]
    pub queue: u32,
}

/// Subcommands that read a recording.
#[derive(Subcommand, Debug, Clone)]
pub enum Cmd {
    /// Write one frame, by producer frame id or capture time, as PNG or JPEG:
    /// from the live ring if it is still there (exact), else decoded from the
    /// segments. Prints which tier answered.
    Frame {
        /// Recording directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Producer frame id (the newest recording of it when ids restarted).
        #[arg(long, conflicts_with = "time", required_unless_present = "time")]
        id: Option<u64>,
        /// Capture time: RFC 3339 (2026-11-30T02:13:05.2Z) or Unix seconds; the nearest frame.
        #[arg(long, value_name = "TIME")]
        time: Option<String>,
        /// Output image; the extension chooses the format (.png or .jpg/.jpeg).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Stream whose ring to look in first (default: the one recorded in DIR).
        #[arg(long)]
        name: Option<String>,
        /// Skip the ring; decode from the segments.
        #[arg(long)]
        disk_only: bool,
    },
    /// Cut a clip between two capture times from the segments (stream copy,
    /// widened to the keyframe at or before --from).
    Clip {
        /// Recording directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Start: RFC 3339 or Unix seconds.
        #[arg(long, value_name = "TIME")]
        from: String,
        /// End: RFC 3339 or Unix seconds.
        #[arg(long, value_name = "TIME")]
        to: String,
        /// Output file (.mp4 for H.264, .mov for MJPEG recordings).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// List the segments and clips of a recording.
    Ls {
        /// Recording directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// JSON: {"segments": [...], "clips": [...]}, times as RFC 3339.
        #[arg(long)]
        json: bool,
    },
}

/// Where events come from.
#[derive(Clone, Debug)]
pub struct MqttSource {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Credentials.
    pub credentials: Option<(String, String)>,
    /// Topic.
    pub topic: String,
}

/// The checked recorder configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Stream name.
    pub name: String,
    /// Recording directory.
    pub dir: PathBuf,
    /// Segment length.
    pub segment: Duration,
    /// Age limit of segments.
    pub retain_age: Option<Duration>,
    /// Size limit of segments in bytes.
    pub retain_bytes: Option<u64>,
    /// Age limit of event clips.
    pub clip_retain_age: Duration,
    /// Size limit of event clips in bytes.
    pub clip_retain_bytes: Option<u64>,
    /// Events file to follow.
    pub events: Option<PathBuf>,
    /// MQTT events.
    pub mqtt: Option<MqttSource>,
    /// Pre-roll.
    pub pre: Duration,
    /// Post-roll.
    pub post: Duration,
    /// Encoder choice.
    pub encoder: EncoderChoice,
    /// Keyframe interval.
    pub gop: Duration,
    /// kbit/s.
    pub bitrate: u32,
    /// Frames queued before the encoder.
    pub queue: u32,
}

fn secs(v: f64, what: &str, min: f64, max: f64) -> anyhow::Result<Duration> {
    if !(v.is_finite() && v >= min && v <= max) {
        bail!("invalid {what} {v}: expected seconds in [{min}, {max}]");
    }
    Ok(Duration::from_secs_f64(v))
}

fn gb(v: Option<f64>, what: &str) -> anyhow::Result<Option<u64>> {
    match v {
        None => Ok(None),
        Some(g) if g.is_finite() && g > 0.0 && g < 1e6 => Ok(Some((g * 1e9) as u64)),
        Some(g) => bail!("invalid {what} {g}: expected a positive number of GB"),
    }
}

/// Parses `mqtt://[user[:password]@]host[:port]`.
pub fn parse_mqtt(url: &str, topic: &str) -> anyhow::Result<MqttSource> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .with_context(|| format!("invalid --mqtt {url:?}: expected mqtt://HOST[:PORT]"))?
        .trim_end_matches('/');
    let (cred, hostport) = match rest.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, rest),
    };
    let credentials = cred.map(|c| match c.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => (c.to_string(), String::new()),
    });
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            (h, p.parse::<u16>().with_context(|| format!("invalid --mqtt {url:?}: bad port {p:?}"))?)
        }
        _ => (hostport, 1883),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("invalid --mqtt {url:?}: no host");
    }
    if topic.is_empty() || topic.contains(['+', '#']) && !topic.ends_with('#') {
        bail!("invalid --topic {topic:?}");
    }
    Ok(MqttSource { host: host.to_string(), port, credentials, topic: topic.to_string() })
}

impl Config {
    /// Checks the recorder's arguments.
    pub fn from_args(a: &RecordArgs) -> anyhow::Result<Config> {
        let name = a.name.clone().context("--name is required")?;
        shm_proto::StreamName::new(&name).map_err(|e| anyhow::anyhow!("invalid --name: {e}"))?;
        let dir = a.dir.clone().context("--dir is required")?;
        let encoder = EncoderChoice::parse(&a.encoder)?;
        if a.bitrate == 0 || a.bitrate > 200_000 {
            bail!("invalid --bitrate {}: expected 1..=200000 kbit/s", a.bitrate);
        }
        if a.queue == 0 || a.queue > 1000 {
            bail!("invalid --queue {}: expected 1..=1000 frames", a.queue);
        }
        let retain_age = match a.retain_hours {
            None => None,
            Some(h) => Some(secs(h * 3600.0, "--retain-hours (in seconds)", 1.0, 1e9)?),
        };
        Ok(Config {
            name,
            dir,
            segment: secs(a.segment_seconds, "--segment-seconds", 0.5, 86_400.0)?,
            retain_age,
            retain_bytes: gb(a.retain_gb, "--retain-gb")?,
            clip_retain_age: secs(a.clip_retain_hours * 3600.0, "--clip-retain-hours (in seconds)", 1.0, 1e10)?,
            clip_retain_bytes: gb(a.clip_retain_gb, "--clip-retain-gb")?,
            events: a.events.clone(),
            mqtt: a.mqtt.as_deref().map(|u| parse_mqtt(u, &a.topic)).transpose()?,
            pre: secs(a.pre, "--pre", 0.0, 3600.0)?,
            post: secs(a.post, "--post", 0.0, 3600.0)?,
            encoder,
            gop: secs(a.gop, "--gop", 0.04, 60.0)?,
            bitrate: a.bitrate,
            queue: a.queue,
        })
    }
}

/// A time argument as Unix ns.
pub fn time_arg(s: &str, what: &str) -> anyhow::Result<u64> {
    parse_time(s).with_context(|| format!("invalid {what} {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["shmcast-record"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn record_defaults_and_checks() {
        let a = args(&["--name", "cam0", "--dir", "/tmp/x"]);
        assert!(a.cmd.is_none());
        let c = Config::from_args(&a.record).unwrap();
        assert_eq!(c.segment, Duration::from_secs(60));
        assert_eq!(c.pre, Duration::from_secs(5));
        assert!(c.retain_bytes.is_none());
        let a = args(&["--name", "cam0", "--dir", "/tmp/x", "--retain-gb", "0.5", "--segment-seconds", "2"]);
        let c = Config::from_args(&a.record).unwrap();
        assert_eq!(c.retain_bytes, Some(500_000_000));
        for bad in [["--segment-seconds", "0"], ["--retain-gb", "-1"], ["--encoder", "vp8"], ["--pre", "nan"]] {
            let flag = format!("{}={}", bad[0], bad[1]);
            let a = args(&["--name", "cam0", "--dir", "/tmp/x", &flag]);
            let e = Config::from_args(&a.record).unwrap_err().to_string();
            assert!(e.contains(bad[0].trim_start_matches("--").split('-').next().unwrap()), "{bad:?}: {e}");
        }
    }

    #[test]
    fn subcommands_need_no_name() {
        let a = args(&["ls", "--dir", "/tmp/x", "--json"]);
        assert!(matches!(a.cmd, Some(Cmd::Ls { json: true, .. })));
        let a = args(&["frame", "--dir", "d", "--id", "5", "--out", "f.png"]);
        assert!(matches!(a.cmd, Some(Cmd::Frame { id: Some(5), .. })));
        assert!(Args::try_parse_from(["shmcast-record", "frame", "--dir", "d", "--out", "f.png"]).is_err());
        assert!(Args::try_parse_from(["shmcast-record", "--dir", "d"]).is_err());
    }

    #[test]
    fn mqtt_urls() {
        let m = parse_mqtt("mqtt://u:p@broker:1884", "t/x").unwrap();
        assert_eq!((m.host.as_str(), m.port), ("broker", 1884));
        assert_eq!(m.credentials, Some(("u".into(), "p".into())));
        assert_eq!(parse_mqtt("mqtt://127.0.0.1", "t").unwrap().port, 1883);
        assert!(parse_mqtt("http://x", "t").is_err());
        assert!(parse_mqtt("mqtt://x:notaport", "t").is_err());
    }
}
