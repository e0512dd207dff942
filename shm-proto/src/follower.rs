//! Following a stream across producer restarts: wait for the producer to
//! appear, read it, notice when it closes or goes stale, and re-attach when a
//! producer (a new epoch) appears under the same name — without the consumer
//! being restarted.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use crate::error::{NameError, OpenError};
use crate::format::{Rect, VideoFormat};
use crate::name::StreamName;
use crate::reader::{Availability, Frame, Reader, ReaderOptions, ReaderStats, Start};
use crate::segment::ProducerStatus;

/// How often a detached follower looks for a producer.
const RETRY: Duration = Duration::from_millis(50);
/// How often an attached follower checks that its object is still the one
/// under the name (a new producer may have replaced it while the old one, or
/// something posing as it, keeps publishing).
const RECHECK: Duration = Duration::from_millis(250);

/// Something that happened to a followed stream.
pub enum Event<'a> {
    /// A frame, in place.
    Frame(Frame<'a>),
    /// Attached to a producer (first time, or a new epoch after a restart).
    Attached(Attached),
    /// The producer closed or went stale; the follower keeps looking.
    Detached(ProducerStatus),
    /// Nothing happened within the timeout.
    Idle,
}

/// Details of an attach.
#[derive(Clone, Copy, Debug)]
pub struct Attached {
    /// The producer's epoch.
    pub epoch: u64,
    /// The producer's pid.
    pub pid: u32,
    /// The frame format (may differ from the previous producer's).
    pub format: VideoFormat,
    /// Slot count.
    pub slots: u64,
    /// The producer's own overlay region (see [`Reader::overlay`]).
    pub overlay: Option<Rect>,
    /// How many producers this follower has attached to so far (1 for the first).
    pub attach_count: u64,
}

/// A reader that waits for its producer and follows it across restarts.
pub struct Follower {
    name: StreamName,
    opts: ReaderOptions,
    reader: Option<Reader>,
    detached: bool,
    previous: ReaderStats,
    attach_count: u64,
    checked_at: Instant,
    /// Once the stream was replaced under the current reader: the old
    /// segment's head at that moment, read up to before moving on.
    drain_end: Option<u64>,
}

impl Follower {
    /// Follows `name`; nothing is opened until [`Follower::poll`].
    ///
    /// # Errors
    /// [`NameError`] when `name` is not a valid stream name.
    pub fn new(name: &str, opts: ReaderOptions) -> Result<Follower, NameError> {
        Ok(Follower {
            name: StreamName::new(name)?,
            opts,
            reader: None,
            detached: false,
            previous: ReaderStats::default(),
            attach_count: 0,
            drain_end: None,
            checked_at: Instant::now(),
        })
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The current reader, while attached.
    pub fn reader(&self) -> Option<&Reader> {
        self.reader.as_ref().filter(|_| !self.detached)
    }

    /// Whether a live producer is attached.
    pub fn is_attached(&self) -> bool {
        self.reader.is_some() && !self.detached
    }

    /// Counters over every producer followed so far.
    pub fn stats(&self) -> ReaderStats {
        self.previous + self.reader.as_ref().map(Reader::stats).unwrap_or_default()
    }

    fn attach(&mut self, r: Reader) -> Event<'static> {
        if let Some(old) = self.reader.take() {
            // Frames of the old producer left unread are lost too.
            let unread = old.head().saturating_sub(old.cursor());
            self.previous = self.previous + old.stats() + ReaderStats { lost: unread, ..ReaderStats::default() };
        }
        self.drain_end = None;
        self.attach_count += 1;
        let ev = Attached {
            epoch: r.epoch(),
            pid: r.identity().pid,
            format: *r.format(),
            slots: r.slots(),
            overlay: r.overlay(),
            attach_count: self.attach_count,
        };
        self.reader = Some(r);
        self.detached = false;
        Event::Attached(ev)
    }

    /// Tries to (re)open the stream. `Ok(None)`: nothing new yet.
    fn try_attach(&mut self) -> Result<Option<Event<'static>>, OpenError> {
        // After a restart, start at the oldest frame so as little as possible is missed.
        let start = if self.attach_count == 0 { self.opts.start } else { Start::Oldest };
        let opts = ReaderOptions { start, ..self.opts.clone() };
        match Reader::open(self.name.as_str(), &opts) {
            Ok(r) => {
                let (status, _) = r.status();
                if !status.is_alive() {
                    return Ok(None);
                }
                if let Some(cur) = &self.reader
                    && cur.epoch() == r.epoch()
                    && cur.is_current()
                {
                    if cur.corruption().is_some() {
                        // Never trust a segment again once it broke the protocol.
                        return Ok(None);
                    }
                    // The same producer came back (e.g. it was paused): resume.
                    self.detached = false;
                    return Ok(None);
                }
                Ok(Some(self.attach(r)))
            }
            Err(e) if e.is_transient() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `timeout` for something to happen. Errors are segments that
    /// cannot be used (permission, foreign or corrupt object); the follower
    /// stays usable and the caller may keep polling.
    ///
    /// # Errors
    /// The [`OpenError`] of a segment that exists but cannot be used: not
    /// permitted, foreign, corrupt, or an I/O failure. A missing or not yet
    /// published segment is no error: the follower keeps waiting.
    ///
    /// # Panics
    /// Never: the reader it waits on was attached just before.
    pub fn poll(&mut self, timeout: Duration) -> Result<Event<'_>, OpenError> {
        self.poll_with(timeout, false)
    }

    /// Like [`Follower::poll`], but a frame event is the newest committed
    /// frame ([`Reader::latest`]): frames older than it are skipped and
    /// counted lost (its [`crate::Frame::lost_before`]). For consumers that
    /// want the freshest frame rather than every frame when they fall behind.
    ///
    /// # Errors
    /// As [`Follower::poll`].
    pub fn poll_latest(&mut self, timeout: Duration) -> Result<Event<'_>, OpenError> {
        self.poll_with(timeout, true)
    }

    fn poll_with(&mut self, timeout: Duration, latest: bool) -> Result<Event<'_>, OpenError> {
        let deadline = Instant::now() + timeout;
        if self.reader.is_none() || self.detached {
            loop {
                if let Some(ev) = self.try_attach()? {
                    return Ok(ev);
                }
                if !self.detached && self.reader.is_some() {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    return Ok(Event::Idle);
                }
                std::thread::sleep(RETRY.min(deadline - now));
            }
        }
        if self.checked_at.elapsed() >= RECHECK {
            self.checked_at = Instant::now();
            if let Some(r) = self.reader.as_ref().filter(|r| !r.is_current()) {
                // A restarted producer replaced the stream while frames of
                // the old one are still unread: they can be read still (the
                // old producer is gone), so read them first — up to the head
                // seen now, so that a writer still publishing into the
                // replaced segment cannot hold us there.
                let end = *self.drain_end.get_or_insert(r.head());
                if r.cursor() >= end
                    && let Some(ev) = self.try_attach()?
                {
                    return Ok(ev);
                }
            }
        }
        let r = self.reader.as_ref().expect("attached");
        match r.wait(deadline.saturating_duration_since(Instant::now())) {
            Availability::Ready => {}
            Availability::Timeout => {
                // A new producer may have replaced a stale object before we
                // noticed the old one die.
                if !r.is_current()
                    && let Some(ev) = self.try_attach()?
                {
                    return Ok(ev);
                }
                return Ok(Event::Idle);
            }
            Availability::Gone(status) => {
                self.detached = true;
                return Ok(Event::Detached(status));
            }
        }
        let r = self.reader.as_mut().expect("attached");
        Ok(match if latest { r.latest() } else { r.try_next() } {
            Some(f) => Event::Frame(f),
            None => Event::Idle,
        })
    }
}
