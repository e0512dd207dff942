//! Capture times: Unix nanoseconds (`CLOCK_REALTIME`, as the producer stamps
//! them) to and from RFC 3339.
#![forbid(unsafe_code)]

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339 in UTC with microseconds, e.g. `2026-11-30T02:13:05.123456Z`.
pub fn rfc3339(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let sub = (ns % 1_000_000_000) as u32;
    match DateTime::<Utc>::from_timestamp(secs, sub) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Micros, true),
        None => format!("@{ns}ns"),
    }
}

/// A compact UTC time for file names, e.g. `20261130T021305.123Z`.
pub fn file_stamp(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let sub = (ns % 1_000_000_000) as u32;
    match DateTime::<Utc>::from_timestamp(secs, sub) {
        Some(t) => t.format("%Y%m%dT%H%M%S%.3fZ").to_string(),
        None => ns.to_string(),
    }
}

/// Parses RFC 3339 (any offset) or Unix seconds (`1764468785.25`) into Unix ns.
pub fn parse_time(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    // Digits with up to nine decimals: exact to the nanosecond.
    if let Some((int, frac)) = s.split_once('.').or(Some((s, "")))
        && !int.is_empty()
        && int.len() <= 11
        && frac.len() <= 9
        && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        let secs: u64 = int.parse()?;
        let frac_ns: u64 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse()? };
        if secs >= 100_000_000_000 {
            bail!("Unix seconds out of range");
        }
        return Ok(secs * 1_000_000_000 + frac_ns);
    }
    if let Ok(secs) = s.parse::<f64>() {
        if !(secs.is_finite() && (0.0..1e11).contains(&secs)) {
            bail!("Unix seconds out of range");
        }
        return Ok((secs * 1e9).round() as u64);
    }
    let t = DateTime::parse_from_rfc3339(s).context("expected RFC 3339 (2026-11-30T02:13:05Z) or Unix seconds")?;
    let ns = t.timestamp_nanos_opt().context("time out of range")?;
    u64::try_from(ns).ok().context("time before 1970")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ns = 1_764_468_785_123_456_000;
        let s = rfc3339(ns);
        assert_eq!(s, "2025-11-30T02:13:05.123456Z");
        assert_eq!(parse_time(&s).unwrap(), ns);
        assert_eq!(parse_time("2025-11-30T03:13:05.123456+01:00").unwrap(), ns);
        assert_eq!(parse_time("1764468785.5").unwrap(), 1_764_468_785_500_000_000);
        assert_eq!(parse_time("1796017319.489988184").unwrap(), 1_796_017_319_489_988_184);
        assert_eq!(parse_time("1796017319").unwrap(), 1_796_017_319_000_000_000);
        assert_eq!(file_stamp(ns), "20251130T021305.123Z");
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("-5").is_err());
    }
}
