//! `shmcast-record`: record a shmcast stream; read the recording. See `--help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shmcast_record::config::{Args, Cmd, Config, time_arg};
use shmcast_record::tiers::{self, Query, Tier};
use shmcast_record::{catalog, clips, ls, recorder, time};

const BIN: &str = "shmcast-record";

fn main() -> ExitCode {
    let args = Args::parse();
    shmcast_common::main_wrapper(BIN, || match args.cmd {
        None => {
            let cfg = Config::from_args(&args.record)?;
            let stop = shmcast_common::shutdown_flag()?;
            shmcast_common::start(&args.common, BIN, &cfg.name)?;
            recorder::run(cfg, stop)
        }
        Some(cmd) => {
            shmcast_common::init_logging(&args.common.log_level)?;
            subcommand(cmd)
        }
    })
}

fn subcommand(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Ls { dir, json } => ls::run(&dir, json),
        Cmd::Frame { dir, id, time: t, out, name, disk_only } => {
            let q = match (id, t) {
                (Some(id), _) => Query::Id(id),
                (None, Some(t)) => Query::Time(time_arg(&t, "--time")?),
                (None, None) => anyhow::bail!("give --id or --time"),
            };
            let f = tiers::frame(&dir, q, &out, name.as_deref(), disk_only)?;
            match f.tier {
                Tier::Ring => {
                    println!("ring: frame {} captured {} -> {}", f.frame_id, time::rfc3339(f.capture_ns), out.display())
                }
                Tier::Disk { segment, pts_ns } => println!(
                    "disk: frame {} captured {} from {} at {:.3} s -> {}",
                    f.frame_id,
                    time::rfc3339(f.capture_ns),
                    segment,
                    pts_ns as f64 / 1e9,
                    out.display()
                ),
            }
            Ok(())
        }
        Cmd::Clip { dir, from, to, out } => {
            let (from, to) = (time_arg(&from, "--from")?, time_arg(&to, "--to")?);
            let cat = catalog::Catalog::open(&dir, false)?;
            let c = clips::cut(&cat, from, to, &out)?;
            println!(
                "clip: {} frames {}..{} captured {} .. {} ({} bytes, {} segments, {}, {} re-encoded) -> {}",
                c.frames,
                c.first_frame.map_or("?".into(), |v| v.to_string()),
                c.last_frame.map_or("?".into(), |v| v.to_string()),
                time::rfc3339(c.first_ns),
                time::rfc3339(c.last_ns),
                c.bytes,
                c.segments,
                c.method.name(),
                c.reencoded,
                out.display()
            );
            Ok(())
        }
    }
}
