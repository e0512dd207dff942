//! Command line and the checked configuration built from it: everything a
//! user can get wrong is rejected here with one clear message, before any
//! socket exists.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;

const EXAMPLES: &str = "\
Examples:
  # every stream of the host at http://127.0.0.1:8080/
  shmcast-web --listen 127.0.0.1:8080

  # with the detector's events and snapshots of cam0
  shmcast-web --events cam0=/var/lib/shmcast/cam0.jsonl --snapshots cam0=/var/lib/shmcast/snaps

  # the events and snapshots of every detector that scripts/deploy.sh runs from these configs
  shmcast-web --config deploy/cam0.toml --config deploy/cam1.toml

  # on the LAN, with HTTP Basic authentication
  shmcast-web --listen 0.0.0.0:8080 --auth-file /etc/shmcast/web.auth

  # a still of cam0, 640 pixels wide; a live view
  curl -o cam0.jpg 'http://127.0.0.1:8080/api/streams/cam0/snapshot.jpg?width=640'
  ffplay 'http://127.0.0.1:8080/api/streams/cam0/mjpeg?fps=10'";

/// Show every shmcast stream of the host in a browser: live view, snapshots
/// encoded on request from the ring, and the detector's events with pictures.
///
/// Routes: `/` (the page), `/api/streams`, `/api/streams/{name}`,
/// `/api/streams/{name}/snapshot.jpg[?width=W]`,
/// `/api/streams/{name}/mjpeg[?fps=F&width=W]`,
/// `/api/events[?stream=S&type=T&since=ID]`, `/api/events/stream` (Server-Sent
/// Events), `/api/events/{id}/snapshot.jpg[?width=W]`, `/metrics`.
#[derive(Parser, Debug)]
#[command(name = "shmcast-web", version, after_help = EXAMPLES)]
pub struct Args {
    /// Address and port to listen on (port 0: pick a free port, logged at start).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,

    /// A detector's events file (JSON lines), `STREAM=FILE` or just FILE (the
    /// stream is then taken from the snapshot names). Repeatable.
    #[arg(long = "events", value_name = "[STREAM=]FILE")]
    pub events: Vec<String>,

    /// A detector's snapshot directory, `STREAM=DIR` or DIR; only images
    /// inside these directories are served. Repeatable.
    #[arg(long = "snapshots", value_name = "[STREAM=]DIR")]
    pub snapshots: Vec<String>,

    /// A deployment config (the TOML of scripts/deploy.sh): its stream's
    /// detector writes events and snapshots where its `[detect] args` say
    /// (`--events FILE`, `--snapshots DIR`), and they are read from there.
    /// Relative paths are taken from the current directory, as for the
    /// detector deploy.sh starts there. Repeatable (one config per stream).
    #[arg(long = "config", value_name = "DEPLOY.toml")]
    pub configs: Vec<PathBuf>,

    /// HTTP Basic credentials USER:PASSWORD.
    #[arg(long, value_name = "USER:PASSWORD", conflicts_with = "auth_file")]
    pub auth: Option<String>,

    /// File whose first line is USER:PASSWORD.
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,

    /// Connections served at once (a live view or event stream holds one).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_connections: usize,

    /// JPEG quality of snapshots and live views (1..=100).
    #[arg(long, default_value_t = 80, value_name = "Q")]
    pub quality: u8,

    #[command(flatten)]
    pub common: shmcast_common::CommonArgs,
}

/// HTTP Basic credentials (shared with every binary that takes `--auth`).
pub use shmcast_common::auth::Credentials;

/// An events file and the stream it belongs to (if given).
#[derive(Clone, Debug)]
pub struct EventSource {
    /// Stream name, when given as `STREAM=FILE`.
    pub stream: Option<String>,
    /// The JSON-lines file.
    pub path: PathBuf,
}

/// The checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Events files.
    pub events: Vec<EventSource>,
    /// Directories snapshots may be served from (canonical paths).
    pub snapshot_dirs: Vec<PathBuf>,
    /// Credentials, when authentication is on.
    pub auth: Option<Credentials>,
    /// Connection limit.
    pub max_connections: usize,
    /// JPEG quality.
    pub quality: u8,
}

/// Where one deployment's detector writes: its stream, events file and
/// snapshot directory (either may be absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployOutputs {
    /// `[stream] name`.
    pub stream: String,
    /// The detector's `--events FILE` (not `-`, which is its log).
    pub events: Option<PathBuf>,
    /// The detector's `--snapshots DIR`.
    pub snapshots: Option<PathBuf>,
}

/// Reads a deployment config (the TOML of scripts/deploy.sh) for its
/// detector's outputs. A config without an enabled `[detect]` section has none.
pub fn deploy_outputs(path: &std::path::Path) -> anyhow::Result<DeployOutputs> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --config {}", path.display()))?;
    parse_deploy(&text).with_context(|| format!("invalid --config {}", path.display()))
}

fn parse_deploy(text: &str) -> anyhow::Result<DeployOutputs> {
    let t: toml::Table =
        text.parse().map_err(|e: toml::de::Error| anyhow::anyhow!("not valid TOML: {}", e.message()))?;
    let stream =
        t.get("stream").and_then(|s| s.get("name")).and_then(|n| n.as_str()).context("no [stream] name")?.to_string();
    shm_proto::StreamName::new(&stream).map_err(|e| anyhow::anyhow!("stream.name: {e}"))?;
    let mut out = DeployOutputs { stream, events: None, snapshots: None };
    let Some(detect) = t.get("detect") else { return Ok(out) };
    if detect.get("enabled").and_then(|v| v.as_bool()) == Some(false) {
        return Ok(out);
    }
    let Some(args) = detect.get("args") else { return Ok(out) };
    let args: Vec<&str> = args
        .as_array()
        .and_then(|a| a.iter().map(|v| v.as_str()).collect::<Option<Vec<_>>>())
        .context("detect.args must be a list of strings")?;
    // Both `--flag VALUE` and `--flag=VALUE`, as clap takes them; the last one wins.
    let mut i = 0;
    while i < args.len() {
        let (flag, inline) = match args[i].split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (args[i], None),
        };
        let value = match inline {
            Some(v) => Some(v),
            None if flag == "--events" || flag == "--snapshots" => {
                i += 1;
                args.get(i).copied()
            }
            None => None,
        };
        match (flag, value) {
            ("--events", Some(v)) => out.events = (v != "-").then(|| PathBuf::from(v)),
            ("--snapshots", Some(v)) => out.snapshots = Some(PathBuf::from(v)),
            ("--events" | "--snapshots", None) => bail!("detect.args: {flag} without a value"),
            _ => {}
        }
        i += 1;
    }
    Ok(out)
}

/// Splits `STREAM=PATH` (a stream name then '=') from a plain path.
fn split_stream(s: &str) -> (Option<String>, &str) {
    if let Some((name, path)) = s.split_once('=')
        && shm_proto::StreamName::new(name).is_ok()
    {
        return (Some(name.to_string()), path);
    }
    (None, s)
}

impl Config {
    /// Checks the arguments.
    pub fn from_args(a: &Args) -> anyhow::Result<Config> {
        let auth = Credentials::from_flags(a.auth.as_deref(), a.auth_file.as_deref())?;
        let mut events = Vec::new();
        for e in &a.events {
            let (stream, path) = split_stream(e);
            if path.is_empty() {
                bail!("invalid --events {e:?}: expected [STREAM=]FILE");
            }
            events.push(EventSource { stream, path: PathBuf::from(path) });
        }
        let mut snapshot_dirs = Vec::new();
        for path in &a.configs {
            let d = deploy_outputs(path)?;
            if let Some(e) = d.events {
                events.push(EventSource { stream: Some(d.stream.clone()), path: e });
            }
            if let Some(dir) = d.snapshots {
                // The detector creates it when it starts; it may not have yet.
                std::fs::create_dir_all(&dir).with_context(|| {
                    format!("--config {}: cannot create snapshot directory {}", path.display(), dir.display())
                })?;
                let dir = std::fs::canonicalize(&dir).with_context(|| {
                    format!("--config {}: cannot open snapshot directory {}", path.display(), dir.display())
                })?;
                if !snapshot_dirs.contains(&dir) {
                    snapshot_dirs.push(dir);
                }
            }
        }
        for d in &a.snapshots {
            let (_, path) = split_stream(d);
            let dir = std::fs::canonicalize(path)
                .with_context(|| format!("invalid --snapshots {d:?}: cannot open directory {path}"))?;
            if !dir.is_dir() {
                bail!("invalid --snapshots {d:?}: {} is not a directory", dir.display());
            }
            snapshot_dirs.push(dir);
        }
        if a.max_connections == 0 || a.max_connections > 10_000 {
            bail!("invalid --max-connections {}: expected 1..=10000", a.max_connections);
        }
        if a.quality == 0 || a.quality > 100 {
            bail!("invalid --quality {}: expected 1..=100", a.quality);
        }
        Ok(Config {
            listen: a.listen,
            events,
            snapshot_dirs,
            auth,
            max_connections: a.max_connections,
            quality: a.quality,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["shmcast-web"];
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    #[test]
    fn defaults_and_limits() {
        let c = Config::from_args(&args(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.auth.is_none() && c.events.is_empty());
        assert!(Config::from_args(&args(&["--quality", "0"])).is_err());
        assert!(Config::from_args(&args(&["--max-connections", "0"])).is_err());
        let e = Config::from_args(&args(&["--snapshots", "/nonexistent-dir"])).unwrap_err();
        assert!(format!("{e:#}").contains("--snapshots"), "{e:#}");
    }

    #[test]
    fn events_with_and_without_stream() {
        let c = Config::from_args(&args(&["--events", "cam0=/tmp/a.jsonl", "--events", "/tmp/b=c.jsonl"])).unwrap();
        assert_eq!(c.events[0].stream.as_deref(), Some("cam0"));
        assert_eq!(c.events[0].path, PathBuf::from("/tmp/a.jsonl"));
        // "/tmp/b" is not a stream name: the whole argument is the path.
        assert_eq!(c.events[1].stream, None);
        assert_eq!(c.events[1].path, PathBuf::from("/tmp/b=c.jsonl"));
    }

    #[test]
    fn deploy_configs_give_the_detector_outputs() {
        let d = parse_deploy(
            "[stream]\nname = \"cam0\"\n[detect]\nargs = [\"--mask\", \"0,0,1,1\", \"--events\", \"/tmp/e.jsonl\", \
             \"--snapshots=snaps\"]\n",
        )
        .unwrap();
        assert_eq!(d.stream, "cam0");
        assert_eq!(d.events, Some(PathBuf::from("/tmp/e.jsonl")));
        assert_eq!(d.snapshots, Some(PathBuf::from("snaps")));
        // Events to stdout, a disabled detector, no detector: nothing to read.
        let d = parse_deploy("[stream]\nname = \"c\"\n[detect]\nargs = [\"--events\", \"-\"]\n").unwrap();
        assert_eq!((d.events, d.snapshots), (None, None));
        let d =
            parse_deploy("[stream]\nname = \"c\"\n[detect]\nenabled = false\nargs = [\"--events\", \"e\"]\n").unwrap();
        assert_eq!(d.events, None);
        assert_eq!(parse_deploy("[stream]\nname = \"c\"\n").unwrap().events, None);
        for bad in [
            "[stream]\n",
            "[stream]\nname = \"bad name\"\n",
            "[stream]\nname = \"c\"\n[detect]\nargs = [\"--events\"]\n",
            "[stream]\nname = \"c\"\n[detect]\nargs = [1]\n",
            "[stream\n",
        ] {
            assert!(parse_deploy(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_example_deploy_config_is_read() {
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example.toml");
        let d = deploy_outputs(&example).unwrap();
        assert_eq!(d.stream, "cam0");
        assert_eq!(d.events, Some(PathBuf::from("/tmp/cam0.events.jsonl")));
    }

    #[test]
    fn credentials_from_flag_and_file() {
        let c = Config::from_args(&args(&["--auth", "u:p:q"])).unwrap();
        let a = c.auth.unwrap();
        assert_eq!((a.user.as_str(), a.password.as_str()), ("u", "p:q"));
        assert!(Config::from_args(&args(&["--auth", "nocolon"])).is_err());
        let path = std::env::temp_dir().join(format!("shmcast-web-auth-{}", std::process::id()));
        std::fs::write(&path, "fileuser:filepw\n").unwrap();
        let c = Config::from_args(&args(&["--auth-file", path.to_str().unwrap()])).unwrap();
        std::fs::remove_file(&path).unwrap();
        let a = c.auth.unwrap();
        assert_eq!((a.user.as_str(), a.password.as_str()), ("fileuser", "filepw"));
        assert!(!format!("{a:?}").contains("filepw"));
    }
}
