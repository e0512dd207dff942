//! shm-proto: shmcast's shared-memory segment and lossy broadcast ring.
//!
//! One producer ([`Writer`]) writes each frame once, in place, into a slot of
//! a POSIX shared-memory object `shmcast.<name>`; any number of readers
//! ([`Reader`], or [`Follower`] to wait for and follow producer restarts) map
//! it read-only and use frames in place. The producer never waits for a
//! reader; a lapped reader skips ahead and is told how many frames it lost.
//!
//! ```no_run
//! use shm_proto::{CreateOptions, FrameMeta, PixelFormat, Reader, ReaderOptions, VideoFormat, Writer};
//! use std::time::Duration;
//!
//! let format = VideoFormat::new(640, 480, PixelFormat::Gray8, 30, 1)?;
//! let mut w = Writer::create("doc", format, &CreateOptions::default())?;
//! let mut r = Reader::open("doc", &ReaderOptions::default())?;
//! w.publish(|buf| { buf.fill(7); FrameMeta::new(0, 0, buf.len() as u64) });
//! if let shm_proto::Next::Frame(f) = r.next(Duration::from_secs(1)) {
//!     // The bytes are lent in place; the sum is kept only if the frame was intact.
//!     if let Some(sum) = f.read(|bytes| bytes.iter().map(|&b| u64::from(b)).sum::<u64>()) {
//!         println!("{sum}");
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod error;
pub mod format;
pub mod header;
pub mod layout;
pub mod meta;
pub mod name;
pub mod ring;
pub mod seq;
pub mod stamp;
pub mod stream_copy;
pub mod sync;

#[cfg(not(loom))]
#[doc(hidden)]
pub mod baseline;
#[cfg(not(loom))]
pub mod follower;
#[cfg(not(loom))]
pub mod notify;
#[cfg(not(loom))]
pub mod os;
#[cfg(not(loom))]
pub mod reader;
#[cfg(not(loom))]
pub mod region;
#[cfg(not(loom))]
pub mod segment;
#[cfg(not(loom))]
pub mod writer;

pub use error::{CreateError, FormatError, HeaderError, LoanError, NameError, OpenError};
pub use format::{PixelFormat, Plane, Rect, VideoFormat};
pub use meta::{FLAG_DISCONT, FLAG_KEYFRAME, FrameMeta};
pub use name::StreamName;
pub use ring::Lapped;
pub use stream_copy::{STREAMING_MIN, copy_streaming};

#[cfg(not(loom))]
pub use follower::{Attached, Event, Follower};
#[cfg(not(loom))]
pub use reader::{Availability, Frame, Next, Overrun, Reader, ReaderOptions, ReaderStats, SegmentInfo, Start};
#[cfg(not(loom))]
pub use segment::{CreateOptions, ProducerStatus, STALE_AFTER};
#[cfg(not(loom))]
pub use writer::{Loan, SlotWriter, Writer};
