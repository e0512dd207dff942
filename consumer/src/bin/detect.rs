//! shmcast-detect: a real-time meteor and motion detector that reads frames
//! in place from a shmcast ring. See `--help`; the detector is
//! [`shmcast_consumer::detect`].
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shmcast_consumer::detect::cli::{Args, Settings};

fn main() -> ExitCode {
    let args = Args::parse();
    shmcast_common::main_wrapper("shmcast-detect", || {
        let settings = Settings::from_args(&args)?;
        shmcast_common::start(&args.common, "shmcast-detect", &settings.name)?;
        let stop = shmcast_common::shutdown_flag()?;
        shmcast_consumer::detect::run::run(settings, &stop)
    })
}
