//! Command line and the checked configuration built from it ("parse, then
//! build a checked config"): everything a user can get wrong is rejected here
//! with one clear message, before any socket or pipeline exists.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;

/// Environment variable holding the password for `--auth-user`.
pub const ENV_PASSWORD: &str = "SHMCAST_RTSP_PASSWORD";

const EXAMPLES: &str = "\
Examples:
  # serve cam0 at rtsp://127.0.0.1:8554/cam0
  shmcast-rtsp --name cam0 --listen 127.0.0.1:8554 --mount /cam0

  # all interfaces, at most 4 viewers, 2 s keyframe interval, 4 Mbit/s
  shmcast-rtsp --name cam0 --listen 0.0.0.0:8554 --max-clients 4 --gop 2 --bitrate 4000

  # RTSP Basic authentication, password from the environment
  SHMCAST_RTSP_PASSWORD=secret shmcast-rtsp --name cam0 --auth-user viewer

  # watch it
  ffplay -rtsp_transport tcp rtsp://127.0.0.1:8554/cam0
  gst-launch-1.0 rtspsrc location=rtsp://127.0.0.1:8554/cam0 latency=0 ! decodebin ! autovideosink";

/// Serve a shmcast stream over RTSP (H.264, or RTP/JPEG for MJPEG sources).
///
/// Waits for the producer if it is not there yet, keeps clients connected
/// across producer restarts (repeating the last frame while it is gone), and
/// shares one encoder between all viewers of a mount.
#[derive(Parser, Debug)]
#[command(name = "shmcast-rtsp", version, after_help = EXAMPLES)]
pub struct Args {
    /// Stream name (the producer's --name).
    #[arg(long)]
    pub name: String,

    /// Address and port to listen on (port 0: pick a free port, logged at start).
    #[arg(long, default_value = "127.0.0.1:8554", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,

    /// Mount path, starting with '/' (default: / followed by the stream name).
    #[arg(long, value_name = "PATH")]
    pub mount: Option<String>,

    /// Refuse (503) connections beyond this many simultaneous clients.
    #[arg(long, value_name = "N")]
    pub max_clients: Option<u32>,

    /// H.264 encoder: auto (x264 if installed, else openh264), x264, openh264.
    #[arg(long, default_value = "auto", value_name = "NAME")]
    pub encoder: String,

    /// Keyframe interval in seconds.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub gop: f64,

    /// Target bitrate in kbit/s.
    #[arg(long, default_value_t = 2048, value_name = "KBPS")]
    pub bitrate: u32,

    /// RTSP Basic credentials USER:PASSWORD.
    #[arg(long, value_name = "USER:PASSWORD", conflicts_with_all = ["auth_file", "auth_user"])]
    pub auth: Option<String>,

    /// File whose first line is USER:PASSWORD.
    #[arg(long, value_name = "FILE", conflicts_with = "auth_user")]
    pub auth_file: Option<PathBuf>,

    /// User name for Basic authentication; the password comes from $SHMCAST_RTSP_PASSWORD.
    #[arg(long, value_name = "USER")]
    pub auth_user: Option<String>,

    /// While nobody watches, keep the mount's media prepared (pipeline and
    /// encoder built, idle, ring unmapped) so that a first client starts as
    /// fast as a joining one: `prepared` (default) or `off` (build the media
    /// on the first client's DESCRIBE, free it when the last one leaves).
    #[arg(long, default_value = "prepared", value_name = "MODE")]
    pub standby: String,

    /// Give up (exit 1) if no producer appeared within this many seconds.
    #[arg(long, value_name = "SECS")]
    pub attach_timeout: Option<f64>,

    #[command(flatten)]
    pub common: shmcast_common::CommonArgs,
}

/// Which H.264 encoder the user asked for (shared with every binary that encodes).
pub use shmcast_common::h264::EncoderChoice;

/// RTSP Basic credentials (shared with every binary that takes `--auth`).
pub use shmcast_common::auth::Credentials;

/// The checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Stream name.
    pub name: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Mount path.
    pub mount: String,
    /// Client limit.
    pub max_clients: Option<u32>,
    /// Encoder choice.
    pub encoder: EncoderChoice,
    /// Keyframe interval.
    pub gop: Duration,
    /// kbit/s.
    pub bitrate: u32,
    /// Credentials, when authentication is on.
    pub auth: Option<Credentials>,
    /// Attach timeout.
    pub attach_timeout: Option<Duration>,
    /// Keep a media prepared while nobody watches.
    pub standby: bool,
}

fn parse_mount(m: &str) -> anyhow::Result<String> {
    if !m.starts_with('/') {
        bail!("invalid --mount {m:?}: must start with '/' (e.g. /cam0)");
    }
    if m.len() > 1 && m.ends_with('/') {
        bail!("invalid --mount {m:?}: must not end with '/'");
    }
    if let Some(c) = m.chars().find(|c| !(c.is_ascii_alphanumeric() || "/_-.~".contains(*c))) {
        bail!("invalid --mount {m:?}: character {c:?} not allowed (use letters, digits, / _ - . ~)");
    }
    if m.contains("//") {
        bail!("invalid --mount {m:?}: empty path segment");
    }
    Ok(m.to_string())
}

impl Config {
    /// Checks the arguments. `env_password` is the value of [`ENV_PASSWORD`].
    pub fn from_args(a: &Args, env_password: Option<String>) -> anyhow::Result<Config> {
        shm_proto::StreamName::new(&a.name).map_err(|e| anyhow::anyhow!("invalid --name: {e}"))?;
        let mount = parse_mount(a.mount.as_deref().unwrap_or(&format!("/{}", a.name)))?;
        let encoder = match a.encoder.to_ascii_lowercase().as_str() {
            "auto" => EncoderChoice::Auto,
            "x264" | "x264enc" => EncoderChoice::X264,
            "openh264" | "openh264enc" => EncoderChoice::OpenH264,
            other => bail!("unknown --encoder {other:?}: expected auto, x264 or openh264"),
        };
        if !(a.gop.is_finite() && a.gop > 0.0 && a.gop <= 60.0) {
            bail!("invalid --gop {}: expected seconds in (0, 60]", a.gop);
        }
        if a.bitrate == 0 || a.bitrate > 200_000 {
            bail!("invalid --bitrate {}: expected 1..=200000 kbit/s", a.bitrate);
        }
        if a.max_clients == Some(0) {
            bail!("invalid --max-clients 0: expected at least 1");
        }
        let auth = if let Some(c) = Credentials::from_flags(a.auth.as_deref(), a.auth_file.as_deref())? {
            Some(c)
        } else if let Some(user) = &a.auth_user {
            let Some(password) = env_password.filter(|p| !p.is_empty()) else {
                bail!("--auth-user {user:?} needs the password in ${ENV_PASSWORD}");
            };
            if user.is_empty() || user.contains(':') {
                bail!("invalid --auth-user {user:?}: must be non-empty without ':'");
            }
            Some(Credentials { user: user.clone(), password })
        } else {
            None
        };
        let attach_timeout = match a.attach_timeout {
            None => None,
            Some(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
            Some(s) => bail!("invalid --attach-timeout {s}: expected seconds ≥ 0"),
        };
        let standby = match a.standby.to_ascii_lowercase().as_str() {
            "prepared" => true,
            "off" => false,
            other => bail!("unknown --standby {other:?}: expected prepared or off"),
        };
        Ok(Config {
            name: a.name.clone(),
            listen: a.listen,
            mount,
            max_clients: a.max_clients,
            encoder,
            gop: Duration::from_secs_f64(a.gop),
            bitrate: a.bitrate,
            auth,
            attach_timeout,
            standby,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["shmcast-rtsp", "--name", "cam0"];
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    #[test]
    fn defaults() {
        let c = Config::from_args(&args(&[]), None).unwrap();
        assert_eq!(c.mount, "/cam0");
        assert_eq!(c.encoder, EncoderChoice::Auto);
        assert_eq!(c.gop, Duration::from_secs(1));
        assert!(c.auth.is_none());
        assert!(c.standby);
        assert!(!Config::from_args(&args(&["--standby", "off"]), None).unwrap().standby);
        assert!(Config::from_args(&args(&["--standby", "warm"]), None).is_err());
    }

    #[test]
    fn rejects_bad_mounts_and_encoders() {
        for m in ["cam0", "/cam 0", "/cam0/", "/a//b", "/a?b"] {
            let e = Config::from_args(&args(&["--mount", m]), None).unwrap_err();
            assert!(e.to_string().contains("--mount"), "{m}: {e}");
        }
        assert!(Config::from_args(&args(&["--mount", "/a/b-c.d"]), None).is_ok());
        let e = Config::from_args(&args(&["--encoder", "vp8"]), None).unwrap_err();
        assert!(e.to_string().contains("unknown --encoder"), "{e}");
    }

    #[test]
    fn credentials_from_flag_env_and_file() {
        let c = Config::from_args(&args(&["--auth", "u:p:q"]), None).unwrap();
        let a = c.auth.unwrap();
        assert_eq!((a.user.as_str(), a.password.as_str()), ("u", "p:q"));
        assert!(Config::from_args(&args(&["--auth", "nocolon"]), None).is_err());
        assert!(Config::from_args(&args(&["--auth-user", "u"]), None).is_err());
        let c = Config::from_args(&args(&["--auth-user", "u"]), Some("pw".into())).unwrap();
        assert_eq!(c.auth.unwrap().password, "pw");
        let path = std::env::temp_dir().join(format!("shmcast-rtsp-auth-{}", std::process::id()));
        std::fs::write(&path, "fileuser:filepw\n").unwrap();
        let c = Config::from_args(&args(&["--auth-file", path.to_str().unwrap()]), None).unwrap();
        std::fs::remove_file(&path).unwrap();
        let a = c.auth.unwrap();
        assert_eq!((a.user.as_str(), a.password.as_str()), ("fileuser", "filepw"));
        assert!(!format!("{a:?}").contains("filepw"));
    }
}
