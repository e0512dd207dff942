//! The metrics every ring consumer exports, one definition for all of them:
//! `shmcast_frames_total`, `shmcast_lost_frames_total`,
//! `shmcast_overruns_total` (from the reader's own [`ReaderStats`]),
//! `shmcast_reader_lag_frames` and `shmcast_wake_latency_seconds`.
//!
//! Each reader (a [`Follower`]) keeps its own [`ReaderMetrics`]; they all
//! feed the same process-wide families, adding what their reader counted
//! since their last [`ReaderMetrics::record`], so several readers in one
//! process (one per RTSP media) and readers that come and go add up.

use shm_proto::{Follower, ReaderStats};

use crate::metrics::{self, Counter, Histogram, IntGauge, Metrics};

/// Upper bounds of `shmcast_wake_latency_seconds`: 10 µs (a futex wake-up on
/// an idle core) to 0.5 s (a starved or stopped process).
pub const WAKE_BUCKETS: [f64; 14] = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.5];

/// One reader's view of the reader families.
pub struct ReaderMetrics {
    frames: Counter,
    lost: Counter,
    overruns: Counter,
    lag: IntGauge,
    wake: Histogram,
    /// The reader's counters at the last `record`.
    seen: ReaderStats,
}

impl Default for ReaderMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ReaderMetrics {
    /// The reader families of the process-wide registry.
    pub fn new() -> ReaderMetrics {
        ReaderMetrics::in_registry(metrics::global())
    }

    /// The reader families of `m` (registered on first use, shared after).
    pub fn in_registry(m: &Metrics) -> ReaderMetrics {
        ReaderMetrics {
            frames: m.counter("shmcast_frames_total", "Frames this process read from the ring"),
            lost: m.counter("shmcast_lost_frames_total", "Frames the producer overwrote before this process read them"),
            overruns: m
                .counter("shmcast_overruns_total", "Frames overwritten while this process read them (result dropped)"),
            lag: m.gauge("shmcast_reader_lag_frames", "Frames published but not yet read (head - cursor)"),
            wake: m.histogram(
                "shmcast_wake_latency_seconds",
                "Time from a frame's publication to this process receiving it",
                &WAKE_BUCKETS,
            ),
            seen: ReaderStats::default(),
        }
    }

    /// Adds what `follower` counted since the last call, and sets the lag
    /// of its current reader (0 while detached).
    pub fn record(&mut self, follower: &Follower) {
        let lag = follower.reader().map_or(0, |r| r.head().saturating_sub(r.cursor()));
        self.record_stats(follower.stats(), lag);
    }

    /// Adds what a reader whose counters are now `stats` counted since the
    /// last call (counters only grow: a smaller value adds nothing), and sets the lag.
    pub fn record_stats(&mut self, stats: ReaderStats, lag: u64) {
        self.frames.inc_by(stats.frames.saturating_sub(self.seen.frames));
        self.lost.inc_by(stats.lost.saturating_sub(self.seen.lost));
        self.overruns.inc_by(stats.overruns.saturating_sub(self.seen.overruns));
        self.seen = stats;
        self.lag.set(lag);
    }

    /// Observes the wake-up latency of a frame published at `publish_ns`
    /// (`CLOCK_REALTIME`), received now.
    pub fn observe_wake(&self, publish_ns: u64) {
        let now = shm_proto::os::realtime_ns();
        self.wake.observe(now.saturating_sub(publish_ns) as f64 * 1e-9);
    }

    /// The process-wide totals (every reader's), for log lines.
    pub fn totals(&self) -> ReaderStats {
        ReaderStats { frames: self.frames.get(), lost: self.lost.get(), overruns: self.overruns.get() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_add_their_own_deltas_to_one_family() {
        let m = Metrics::default();
        let mut a = ReaderMetrics::in_registry(&m);
        let mut b = ReaderMetrics::in_registry(&m);
        a.record_stats(ReaderStats { frames: 10, lost: 2, overruns: 1 }, 3);
        a.record_stats(ReaderStats { frames: 15, lost: 2, overruns: 1 }, 1);
        // A second reader (a new media) starts from zero and adds up.
        b.record_stats(ReaderStats { frames: 4, lost: 1, overruns: 0 }, 0);
        assert_eq!(a.totals(), ReaderStats { frames: 19, lost: 3, overruns: 1 });
        a.observe_wake(shm_proto::os::realtime_ns());
        let text = m.render();
        assert_eq!(text.matches("# TYPE shmcast_frames_total counter").count(), 1, "{text}");
        assert!(text.contains("shmcast_frames_total 19\n"), "{text}");
        assert!(text.contains("shmcast_lost_frames_total 3\n"), "{text}");
        assert!(text.contains("shmcast_overruns_total 1\n"), "{text}");
        assert!(text.contains("shmcast_reader_lag_frames 0\n"), "{text}");
        assert!(text.contains("shmcast_wake_latency_seconds_bucket{le=\"1e-05\"} 1\n"), "{text}");
        assert!(text.contains("shmcast_wake_latency_seconds_count 1\n"), "{text}");
    }
}
