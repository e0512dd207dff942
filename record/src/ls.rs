//! The `ls` subcommand: segments and clips, as a table or as JSON
//! (`{"segments": [...], "clips": [...]}`, times as RFC 3339).
#![forbid(unsafe_code)]

use std::path::Path;

use serde_json::json;

use crate::catalog::Catalog;
use crate::time::rfc3339;

/// The listing as JSON.
pub fn listing(cat: &Catalog) -> anyhow::Result<serde_json::Value> {
    let segments: Vec<_> = cat
        .segments()?
        .into_iter()
        .map(|s| {
            json!({
                "path": s.path,
                "first_frame": s.first_frame,
                "last_frame": s.last_frame,
                "start": rfc3339(s.start_ns),
                "end": rfc3339(s.end_ns),
                "start_ns": s.start_ns,
                "end_ns": s.end_ns,
                "frames": s.frames,
                "keyframes": s.keyframes,
                "lost": s.lost,
                "bytes": s.bytes,
                "state": s.state,
                "codec": s.codec,
                "format": s.format,
                "epoch": format!("{:016x}", s.epoch),
            })
        })
        .collect();
    let mut clips = Vec::new();
    for c in cat.clips()? {
        let event = match c.event_id {
            Some(id) => cat.event_json(id)?.and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok()),
            None => None,
        };
        clips.push(json!({
            "path": c.path,
            "from": rfc3339(c.from_ns),
            "to": rfc3339(c.to_ns),
            "start": rfc3339(c.first_ns),
            "end": rfc3339(c.last_ns),
            "first_frame": c.first_frame,
            "last_frame": c.last_frame,
            "frames": c.frames,
            "bytes": c.bytes,
            "created": rfc3339(c.created_ns),
            "method": c.method,
            "event": event,
        }));
    }
    Ok(json!({ "segments": segments, "clips": clips }))
}

/// Prints the listing of `dir`.
pub fn run(dir: &Path, as_json: bool) -> anyhow::Result<()> {
    let cat = Catalog::open(dir, false)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&listing(&cat)?)?);
        return Ok(());
    }
    println!(
        "{:<60} {:>9} {:>9} {:<28} {:<28} {:>7} {:>11} state",
        "segment", "first", "last", "start", "end", "frames", "bytes"
    );
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for s in cat.segments()? {
        println!(
            "{:<60} {:>9} {:>9} {:<28} {:<28} {:>7} {:>11} {}",
            s.path,
            opt(s.first_frame),
            opt(s.last_frame),
            rfc3339(s.start_ns),
            rfc3339(s.end_ns),
            s.frames,
            s.bytes,
            s.state
        );
    }
    let clips = cat.clips()?;
    if !clips.is_empty() {
        println!();
        println!(
            "{:<60} {:>9} {:>9} {:<28} {:<28} {:>7} {:>11}",
            "clip", "first", "last", "start", "end", "frames", "bytes"
        );
        for c in clips {
            println!(
                "{:<60} {:>9} {:>9} {:<28} {:<28} {:>7} {:>11}",
                c.path,
                opt(c.first_frame),
                opt(c.last_frame),
                rfc3339(c.first_ns),
                rfc3339(c.last_ns),
                c.frames,
                c.bytes
            );
        }
    }
    Ok(())
}
