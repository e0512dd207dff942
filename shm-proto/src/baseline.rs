//! Baselines for benchmarks, built from the same primitives as the ring: a raw
//! one-way cross-process futex channel (one timestamp word and one futex word
//! in a shared page, both sides read-write). It shows what the ring's
//! publish → wake-up path costs on top of the bare kernel mechanism.
//!
//! A benchmark hook, hidden from the documentation: not part of the ring's API.
#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::layout::PAGE;
use crate::notify;
use crate::region::Region;
use crate::segment::default_dir;
use crate::sync::{AtomicU32, Ordering};

/// A one-way futex channel in a shared page: `send` stores a value and wakes,
/// `recv` sleeps on the futex until a new value arrives.
pub struct FutexChannel {
    region: Region,
    path: PathBuf,
    owner: bool,
}

const VALUE_OFFSET: u64 = 0;
const WORD_OFFSET: u64 = 128;

impl FutexChannel {
    fn path(name: &str) -> PathBuf {
        default_dir().join(format!("shmcast-baseline.{name}"))
    }

    fn map(name: &str, create: bool) -> io::Result<FutexChannel> {
        let path = Self::path(name);
        let file = OpenOptions::new().read(true).write(true).create_new(create).mode(0o600).open(&path)?;
        if create {
            crate::os::fallocate(&file, PAGE)?;
        }
        let region = Region::map(&file, PAGE as usize, true, true)?;
        Ok(FutexChannel { region, path, owner: create })
    }

    /// Creates the channel `name` (removed again on drop).
    ///
    /// # Errors
    /// The I/O error of creating (it exists already: `AlreadyExists`),
    /// sizing or mapping its file.
    pub fn create(name: &str) -> io::Result<FutexChannel> {
        Self::map(name, true)
    }

    /// Opens a channel created by another process.
    ///
    /// # Errors
    /// The I/O error of opening or mapping its file (`NotFound` before the
    /// other process created it).
    pub fn open(name: &str) -> io::Result<FutexChannel> {
        Self::map(name, false)
    }

    fn word(&self) -> &AtomicU32 {
        self.region.control_at::<AtomicU32>(WORD_OFFSET)
    }

    /// The current futex word (pass to `recv` as `last`).
    pub fn current(&self) -> u32 {
        // Acquire: pairs with the Release bump in `send`.
        self.word().load(Ordering::Acquire)
    }

    /// Stores `value` and wakes the receiver.
    pub fn send(&self, value: u64) {
        // Relaxed: published by the Release bump below.
        self.region.control_at::<crate::sync::AtomicU64>(VALUE_OFFSET).store(value, Ordering::Relaxed);
        // SYNC(baseline): pairs with the Acquire load in `recv`.
        self.word().fetch_add(1, Ordering::Release);
        notify::wake_all(self.word());
    }

    /// Waits until the word moves past `*last`, then returns the value sent.
    pub fn recv(&self, last: &mut u32, timeout: Duration) -> Option<u64> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            // SYNC(baseline): pairs with the Release bump in `send`.
            let w = self.word().load(Ordering::Acquire);
            if w != *last {
                *last = w;
                // Relaxed: ordered by the Acquire load above.
                return Some(self.region.control_at::<crate::sync::AtomicU64>(VALUE_OFFSET).load(Ordering::Relaxed));
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return None;
            }
            notify::wait(self.word(), w, deadline - now);
        }
    }
}

impl Drop for FutexChannel {
    fn drop(&mut self) {
        if self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
