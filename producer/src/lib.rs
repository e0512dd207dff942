//! shmcast-producer: sources that write frames into a shmcast ring — the
//! built-in test pattern, V4L2 cameras and any GStreamer pipeline — behind one
//! checked configuration ([`config::Config`]).
#![forbid(unsafe_code)]

pub mod canvas;
pub mod config;
pub mod events;
pub mod gst_source;
pub mod output;
pub mod rng;
pub mod scene;
pub mod testsrc;
pub mod v4l2_source;

use std::sync::atomic::AtomicBool;

pub use scene::status_band;

use config::{Config, Source};

/// The binary's name, in messages and metric labels.
pub const BIN: &str = "shmcast-producer";

/// Runs the configured source until `--frames`, end of stream or `stop`.
pub fn run(cfg: &Config, stop: &AtomicBool) -> anyhow::Result<()> {
    let c = &cfg.stream;
    match &cfg.source {
        Source::TestSrc { settings, truth } => testsrc::run(c, settings, truth.as_deref(), stop),
        Source::Gst { pipeline, looping } => gst_source::run(c, pipeline, *looping, stop),
        Source::V4l2 { device } => v4l2_source::run(c, device, stop),
    }
}
