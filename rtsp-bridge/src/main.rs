//! `shmcast-rtsp`: serve a shmcast stream over RTSP. See `--help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shmcast_rtsp::config::{Args, Config, ENV_PASSWORD};

/// glibc gives each new thread its own malloc arena (up to 8 per core) and
/// keeps freed memory in it. Every media (a client arriving after the last one
/// left) brings new GStreamer and encoder threads, so RSS climbed by ~15 MB
/// over the first ~75 connect/disconnect cycles before levelling off (+8 MB
/// still with 2 arenas); with one arena it stays flat within ±1 MB over 300
/// cycles (tests/cycles.rs). The bridge allocates little per frame, so the
/// shared arena costs no measurable contention. The limit must be in the
/// process before the first thread starts, hence first thing in `main`; an
/// explicit MALLOC_ARENA_MAX from the user is kept.
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        shm_proto::os::limit_malloc_arenas(1);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let args = Args::parse();
    shmcast_common::main_wrapper("shmcast-rtsp", || {
        let cfg = Config::from_args(&args, std::env::var(ENV_PASSWORD).ok())?;
        shmcast_common::start(&args.common, "shmcast-rtsp", &cfg.name)?;
        shmcast_rtsp::server::run(cfg)
    })
}
