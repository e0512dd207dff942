//! shmcast-rtsp: serves a shmcast ring as an RTSP/H.264 (or RTP/JPEG) stream
//! with gst-rtsp-server.
//!
//! One shared media per mount, so one encoder however many viewers. The ring
//! is read by a feeder thread that exists only while a media exists: it is
//! started from `media-configure`, pushes only while the media pipeline is
//! PLAYING, and ends when the media is unprepared (the last client left).
//! Between clients nothing is mapped, pushed or referenced.
#![forbid(unsafe_code)]

pub mod config;
pub mod feeder;
pub mod pipeline;
pub mod server;
