//! `shmcast-web`: every shmcast stream of the host in a browser. See `--help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shmcast_web::config::{Args, Config};

fn main() -> ExitCode {
    let args = Args::parse();
    shmcast_common::main_wrapper("shmcast-web", || {
        let cfg = Config::from_args(&args)?;
        shmcast_common::start(&args.common, "shmcast-web", "")?;
        shmcast_web::run(cfg)
    })
}
