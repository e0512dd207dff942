//! shmcast-producer: writes frames from the test pattern, a V4L2 camera or a
//! GStreamer pipeline into the shared-memory ring `shmcast.<name>`. See `--help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shmcast_producer::BIN;
use shmcast_producer::config::{Args, Config};

fn main() -> ExitCode {
    let args = Args::parse();
    shmcast_common::main_wrapper(BIN, || {
        let cfg = Config::from_args(&args)?;
        shmcast_common::start(&args.common, BIN, &cfg.stream.name)?;
        let stop = shmcast_common::shutdown_flag()?;
        shmcast_producer::run(&cfg, &stop)
    })
}
