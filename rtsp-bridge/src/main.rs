//! `shmcast-rtsp`: serve a shmcast stream over RTSP. See `--help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shmcast_rtsp::config::{Args, Config, ENV_PASSWORD};

fn main() -> ExitCode {
    let args = Args::parse();
    shmcast_common::main_wrapper("shmcast-rtsp", || {
        let cfg = Config::from_args(&args, std::env::var(ENV_PASSWORD).ok())?;
        shmcast_common::start(&args.common, "shmcast-rtsp", &cfg.name)?;
        shmcast_rtsp::server::run(cfg)
    })
}
