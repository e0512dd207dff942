//! `shmcast-record`: records a shmcast stream into fragmented MP4 segments
//! with a SQLite catalog, cuts event clips with pre-roll, and finds any frame
//! by id or capture time in the live ring or on disk. See `docs/record.md`.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod clips;
pub mod config;
pub mod encoder;
pub mod events;
pub mod ls;
pub mod media;
pub mod recorder;
pub mod ring;
pub mod segment;
pub mod tiers;
pub mod time;
