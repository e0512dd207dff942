//! Measures shared by the benchmark binaries and the tests, each taken one
//! way so that every benchmark's figures compare: CPU time from `/proc`
//! ([`cpu_seconds`]), nearest-rank percentiles, and the memcpy baseline the
//! "× memcpy" figures are divided by.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub use crate::procs::cpu_seconds;

/// A workspace binary next to the running one (the benchmarks run the real
/// binaries from the same target directory).
pub fn sibling_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate this binary")?;
    let p = exe.with_file_name(name);
    if !p.is_file() {
        bail!("{} not found; build it first: cargo build --release --workspace", p.display());
    }
    Ok(p)
}

/// A child process of a benchmark, stopped on every exit path: SIGTERM at
/// drop (so it unlinks its segment), SIGKILL after 3 s.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Sends SIGTERM and waits (bounded) for the exit; SIGKILL after 3 s.
    pub fn stop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            if let Ok(pid) = i32::try_from(self.0.id()) {
                let pid = rustix::process::Pid::from_raw(pid);
                if let Some(pid) = pid {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `v` sorted ascending (NaN last), for [`percentile`].
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The `q`-quantile (0.0..=1.0) of an ascending slice by nearest rank:
/// element `round((n - 1) * q)`; NaN for an empty slice.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    sorted[i]
}

/// The memcpy baseline: single-thread copies of one `size`-byte frame into
/// `slots` rotating destinations for `secs` seconds, in frames per second
/// (× `size` for bytes per second).
///
/// Measured the way a writer fills a ring: destinations start on a page
/// boundary like ring slots and are touched once before timing (the ring's
/// pages are pre-faulted); the source is a plain `Vec`, like a producer's
/// prepared frame.
pub fn memcpy_fps(size: usize, slots: usize, secs: f64) -> f64 {
    const PAGE: usize = 4096;
    let slots = slots.max(1);
    let src: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
    let mut backing: Vec<Vec<u8>> = (0..slots).map(|_| vec![1u8; size + PAGE]).collect();
    let mut dst: Vec<&mut [u8]> = backing
        .iter_mut()
        .map(|d| {
            let skip = (PAGE - d.as_ptr() as usize % PAGE) % PAGE;
            &mut d[skip..skip + size]
        })
        .collect();
    for d in dst.iter_mut() {
        d.copy_from_slice(&src);
    }
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed().as_secs_f64() < secs {
        dst[n % slots].copy_from_slice(&src);
        std::hint::black_box(&dst[n % slots]);
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v = sorted(vec![5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 1.0), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn cpu_time_of_this_process_grows() {
        let me = std::process::id();
        let t0 = cpu_seconds(me).expect("own /proc/self/stat");
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed().as_millis() < 200 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(cpu_seconds(me).unwrap() > t0);
        assert!(memcpy_fps(4096, 2, 0.01) > 0.0);
    }
}
