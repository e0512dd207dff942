//! shmcast-producer: sources that write frames into a shmcast ring — the
//! built-in test pattern, V4L2 cameras and any GStreamer pipeline.
#![forbid(unsafe_code)]

pub mod canvas;
pub mod events;
pub mod gst_source;
pub mod output;
pub mod rng;
pub mod scene;
pub mod testsrc;
pub mod v4l2_source;

pub use scene::status_band;
