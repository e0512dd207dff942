//! CPU time of a process; which processes map a stream's segment (its readers, and its producer),
//! found from `/proc/*/maps`, and their command lines; and which RTSP
//! bridges (`shmcast-rtsp`) serve which stream, from `/proc/*/cmdline`.
//!
//! Invariants: every file read is bounded ([`MAX_MAPS_BYTES`],
//! [`MAX_CMDLINE_BYTES`]); processes that vanish or hide their maps
//! (another user's, without privileges) are skipped silently.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Bytes of one `/proc/PID/maps` read at most.
pub const MAX_MAPS_BYTES: u64 = 4 << 20;
/// Bytes of one `/proc/PID/cmdline` read at most.
pub const MAX_CMDLINE_BYTES: u64 = 16 << 10;
/// Characters of a command line kept for display.
pub const MAX_COMMAND_CHARS: usize = 200;

/// A process mapping a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Its command line, arguments joined by spaces (shortened).
    pub command: String,
}

fn read_bounded(path: &Path, max: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::open(path).ok()?.take(max).read_to_end(&mut out).ok()?;
    Some(out)
}

fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc").into_iter().flatten().filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
}

/// utime + stime of process `pid` in seconds: fields 14 and 15 of
/// `/proc/PID/stat`, counted after the parenthesised command name (which may
/// contain spaces and parentheses), in `CLK_TCK` ticks. `None` once the
/// process is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = read_bounded(&Path::new("/proc").join(pid.to_string()).join("stat"), MAX_CMDLINE_BYTES)?;
    let s = String::from_utf8_lossy(&s);
    let rest = s.rsplit_once(") ")?.1;
    let mut it = rest.split_whitespace().skip(11);
    let utime: u64 = it.next()?.parse().ok()?;
    let stime: u64 = it.next()?.parse().ok()?;
    Some((utime + stime) as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// The arguments of process `pid`.
pub fn argv(pid: u32) -> Option<Vec<String>> {
    let raw = read_bounded(Path::new(&format!("/proc/{pid}/cmdline")), MAX_CMDLINE_BYTES)?;
    Some(raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

/// The command line of `pid` for display.
pub fn command(pid: u32) -> String {
    let mut s = argv(pid).map(|a| a.join(" ")).unwrap_or_default();
    if s.is_empty() {
        // A kernel thread or a process that cleared its arguments.
        s = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string();
    }
    if s.chars().count() > MAX_COMMAND_CHARS {
        s = s.chars().take(MAX_COMMAND_CHARS - 1).collect::<String>() + "…";
    }
    s
}

/// For each of `paths` (segment files), the processes that map it, by pid.
pub fn mapping(paths: &[&Path]) -> BTreeMap<String, Vec<Process>> {
    let mut out: BTreeMap<String, Vec<Process>> = BTreeMap::new();
    if paths.is_empty() {
        return out;
    }
    let wanted: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    for pid in pids() {
        let Some(maps) = read_bounded(Path::new(&format!("/proc/{pid}/maps")), MAX_MAPS_BYTES) else {
            continue;
        };
        let text = String::from_utf8_lossy(&maps);
        let mut found: Vec<&str> = Vec::new();
        for line in text.lines() {
            // "addr perms offset dev inode      path[ (deleted)]"
            let Some(idx) = line.find(" /") else { continue };
            let path = line[idx + 1..].trim_end_matches(" (deleted)");
            if let Some(w) = wanted.iter().find(|w| w.as_str() == path)
                && !found.contains(&w.as_str())
            {
                found.push(w.as_str());
            }
        }
        for w in found {
            out.entry(w.to_string()).or_default().push(Process { pid, command: command(pid) });
        }
    }
    out
}

/// An RTSP bridge serving a stream, from its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtspBridge {
    /// The bridge's pid.
    pub pid: u32,
    /// The stream it serves (`--name`).
    pub name: String,
    /// Its `--listen` address (default 127.0.0.1:8554).
    pub listen: String,
    /// Its mount path (`--mount`, default `/<name>`).
    pub mount: String,
}

/// Parses a `shmcast-rtsp` command line; `None` for any other program.
pub fn parse_rtsp_bridge(pid: u32, argv: &[String]) -> Option<RtspBridge> {
    let prog = argv.first()?;
    if Path::new(prog).file_name()? != "shmcast-rtsp" {
        return None;
    }
    let opt = |flag: &str| -> Option<String> {
        let eq = format!("{flag}=");
        argv.iter().enumerate().skip(1).find_map(|(i, a)| {
            if a == flag { argv.get(i + 1).cloned() } else { a.strip_prefix(&eq).map(str::to_string) }
        })
    };
    let name = opt("--name")?;
    let listen = opt("--listen").unwrap_or_else(|| "127.0.0.1:8554".to_string());
    let mount = opt("--mount").unwrap_or_else(|| format!("/{name}"));
    Some(RtspBridge { pid, name, listen, mount })
}

/// Every running `shmcast-rtsp`.
pub fn rtsp_bridges() -> Vec<RtspBridge> {
    pids().filter_map(|pid| parse_rtsp_bridge(pid, &argv(pid)?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtsp_command_lines() {
        let a = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        let b = parse_rtsp_bridge(7, &a("/usr/bin/shmcast-rtsp --name cam0 --listen=0.0.0.0:9000")).unwrap();
        assert_eq!((b.name.as_str(), b.listen.as_str(), b.mount.as_str()), ("cam0", "0.0.0.0:9000", "/cam0"));
        let b = parse_rtsp_bridge(7, &a("shmcast-rtsp --mount /x --name c")).unwrap();
        assert_eq!((b.listen.as_str(), b.mount.as_str()), ("127.0.0.1:8554", "/x"));
        assert!(parse_rtsp_bridge(7, &a("shmcast-rtsp-bench --name cam0")).is_none());
        assert!(parse_rtsp_bridge(7, &a("shmcast-rtsp --listen 1.2.3.4:5")).is_none());
    }

    #[test]
    fn finds_this_process_mapping_a_file() {
        // The test binary itself is mapped by this process.
        let exe = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
        let m = mapping(&[exe.as_path()]);
        let procs = &m[&exe.display().to_string()];
        assert!(procs.iter().any(|p| p.pid == std::process::id()), "{procs:?}");
    }
}
