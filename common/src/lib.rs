//! Shared pieces of the shmcast binaries: common command-line arguments,
//! logging set-up, the `main` wrapper with deliberate exit codes, signals,
//! the Basic-auth credentials of `--auth`/`--auth-file`, a stream described in
//! JSON (`shmcast-inspect --json`, the web API),
//! the HTTP server and the Prometheus metrics (including the reader metrics
//! every ring consumer exports), the H.264 encoder choice; with feature
//! `gst`, the GStreamer buffer → ring slot copy of `shmcastsink` and the
//! producer's `gst:` source, and the encoder choice checked against
//! GStreamer's registry.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bench;
pub mod describe;
#[cfg(feature = "gst")]
pub mod gst;
pub mod h264;
pub mod http;
pub mod metrics;
pub mod procs;
pub mod reader_metrics;

pub use reader_metrics::ReaderMetrics;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Arguments every binary takes.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Log level: error, warn, info, debug, trace (or a tracing filter such as `shmcast=debug`).
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,

    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (e.g. 127.0.0.1:9100).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
}

/// Sets up logging and, when asked, the metrics server. `binary` and `stream`
/// become labels on every metric.
pub fn start(args: &CommonArgs, binary: &str, stream: &str) -> anyhow::Result<()> {
    init_logging(&args.log_level)?;
    metrics::global().set_labels(&[("binary", binary), ("stream", stream)]);
    if let Some(addr) = args.metrics {
        let local = metrics::serve(addr)?;
        tracing::info!(%local, "serving metrics at /metrics");
    }
    Ok(())
}

/// Sets up `tracing` to stderr at `level`.
pub fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
    Ok(())
}

/// Runs a binary's `run`, printing one error line (`<bin>: error: <chain>`) and
/// exiting 1 on failure, 0 on success. Usage errors exit 2 through clap.
pub fn main_wrapper(bin: &str, run: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{bin}: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A flag set by SIGINT or SIGTERM.
pub fn shutdown_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

/// Whether shutdown was requested.
pub fn should_stop(flag: &AtomicBool) -> bool {
    // Relaxed: a standalone flag polled in a loop.
    flag.load(Ordering::Relaxed)
}

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> u64 {
    shm_proto::os::rss_bytes()
}
