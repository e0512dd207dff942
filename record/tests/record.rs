//! The recorder as a process, against the real producer: the catalog agrees
//! with the stamps decoded from the segments, frames come from the ring and
//! from disk, event clips cover their pre- and post-roll, retention deletes
//! oldest first, a SIGKILL leaves a playable segment and a consistent
//! catalog, a full disk is survived, a producer restart starts a new segment.
#![forbid(unsafe_code)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use shmcast_record::catalog::Catalog;

fn catalog_ids(dir: &Path, path: &str) -> Vec<u64> {
    let cat = Catalog::open(dir, false).unwrap();
    let s =
        cat.segments().unwrap().into_iter().find(|s| s.path == path).unwrap_or_else(|| panic!("{path} not catalogued"));
    cat.frames(s.id).unwrap().iter().map(|f| f.frame_id).collect()
}

/// Losses the recorder counted (ring losses, overruns, drops before the encoder).
fn counted_losses(addr: &str) -> u64 {
    ["shmcast_lost_frames_total", "shmcast_overruns_total", "shmcast_record_dropped_frames_total"]
        .iter()
        .map(|n| metric(addr, n).unwrap_or(0.0) as u64)
        .sum()
}

#[test]
fn catalog_matches_decoded_stamps_and_frames_come_from_ring_then_disk() {
    let mut g = Guard::new();
    let name = unique_name("rec-cat");
    let dir = temp_dir(&mut g, "cat");
    // 128 slots: about 4 s of frames stay in the ring.
    producer(&mut g, "cat-prod", &name, (640, 360), "i420", 128);
    let addr = format!("127.0.0.1:{}", shmcast_testkit::free_port());
    recorder(&mut g, "cat-rec", &name, &dir, &["--segment-seconds", "2", "--metrics", &addr]);
    // 20 s in closed segments.
    let v = wait_for(LONG, || {
        let v = ls(&dir);
        (closed_frames(&v) >= 600).then_some(v)
    })
    .unwrap_or_else(|| panic!("20 s were not recorded:\n{}", g.log("cat-rec")));

    // ls --json: the documented shape, RFC 3339 times.
    let segs = closed(&v);
    for s in &segs {
        for k in ["path", "first_frame", "last_frame", "start", "end"] {
            assert!(!s[k].is_null(), "segment without {k}: {s}");
        }
        let start = chrono::DateTime::parse_from_rfc3339(s["start"].as_str().unwrap()).expect("RFC 3339 start");
        let ns = start.timestamp_nanos_opt().unwrap() as u64;
        assert!(ns.abs_diff(s["start_ns"].as_u64().unwrap()) < 1_000, "{s}");
        assert!(chrono::DateTime::parse_from_rfc3339(s["end"].as_str().unwrap()).is_ok());
    }
    assert!(v["clips"].is_array());

    // Every closed segment holds exactly the frames the catalog lists, in order.
    let mut gaps = 0u64;
    let mut prev_last: Option<u64> = None;
    for s in &segs {
        let path = s["path"].as_str().unwrap();
        let decoded = ids(&dir.join(path));
        let listed = catalog_ids(&dir, path);
        assert_eq!(decoded, listed, "{path}: decoded stamps vs catalog");
        assert_eq!(listed.first().copied(), s["first_frame"].as_u64(), "{path}");
        assert_eq!(listed.last().copied(), s["last_frame"].as_u64(), "{path}");
        for w in listed.windows(2) {
            gaps += w[1] - w[0] - 1;
        }
        if let Some(p) = prev_last {
            gaps += listed[0] - p - 1;
        }
        prev_last = listed.last().copied();
    }
    let counted = counted_losses(&addr);
    assert!(gaps <= counted, "{gaps} frames missing between catalogued frames, {counted} counted as lost/dropped");

    // The newest catalogued frame is still in the ring: exact, from memory.
    // (On a loaded machine the ring may lap it between the catalog query and
    // the lookup: then another, newer frame is asked for, a few times at most.)
    let mut from_ring = None;
    for _ in 0..5 {
        let cat = Catalog::open(&dir, false).unwrap();
        let newest = cat.segments().unwrap().iter().filter_map(|s| s.last_frame).max().unwrap();
        drop(cat);
        let png = dir.join("ring.png");
        let o = Command::new(bin("shmcast-record"))
            .args([
                "frame",
                "--dir",
                dir.to_str().unwrap(),
                "--id",
                &newest.to_string(),
                "--out",
                png.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() && out.starts_with("ring:") {
            assert_eq!(image_id(&png), newest);
            from_ring = Some(out);
            break;
        }
        eprintln!("frame {newest} not answered from the ring: {}", describe(&o));
    }
    assert!(from_ring.is_some(), "no catalogued frame was answered from the ring:\n{}", g.log("cat-rec"));

    // The first recorded frame is long gone from the ring: decoded from disk.
    let oldest = segs[0]["first_frame"].as_u64().unwrap() + 7;
    let jpg = dir.join("disk.jpg");
    let out =
        run_ok(&["frame", "--dir", dir.to_str().unwrap(), "--id", &oldest.to_string(), "--out", jpg.to_str().unwrap()]);
    assert!(out.starts_with("disk:"), "{out}");
    assert_eq!(image_id(&jpg), oldest);

    // Around a keyframe in the middle of a segment (the seek lands on the
    // keyframe at or before the frame, decoding goes forward to it): the
    // frame before it, the keyframe, the two after it.
    let cat = Catalog::open(&dir, false).unwrap();
    let seg = cat.segments().unwrap().into_iter().find(|s| s.path == segs[1]["path"].as_str().unwrap()).unwrap();
    let fr = cat.frames(seg.id).unwrap();
    drop(cat);
    let k = (1..fr.len() - 2).find(|&i| fr[i].key).expect("a keyframe inside a 2 s segment");
    for f in &fr[k - 1..=k + 2] {
        let png = dir.join(format!("around-{}.png", f.frame_id));
        let id = f.frame_id.to_string();
        let out = run_ok(&[
            "frame",
            "--dir",
            dir.to_str().unwrap(),
            "--id",
            &id,
            "--out",
            png.to_str().unwrap(),
            "--disk-only",
        ]);
        assert!(out.starts_with("disk:"), "{out}");
        assert_eq!(image_id(&png), f.frame_id, "{out}");
    }

    // By time, from disk: the frame captured nearest to the time asked.
    let cat = Catalog::open(&dir, false).unwrap();
    let seg = cat.segments().unwrap().into_iter().find(|s| s.path == segs[1]["path"].as_str().unwrap()).unwrap();
    let f = cat.frames(seg.id).unwrap()[20];
    drop(cat);
    let t = format!("{}.{:09}", f.capture_ns / 1_000_000_000, f.capture_ns % 1_000_000_000);
    let png = dir.join("time.png");
    let out =
        run_ok(&["frame", "--dir", dir.to_str().unwrap(), "--time", &t, "--out", png.to_str().unwrap(), "--disk-only"]);
    assert!(out.starts_with("disk:"), "{out}");
    assert_eq!(image_id(&png), f.frame_id);

    // A missing frame is one clear error line.
    let o = Command::new(bin("shmcast-record"))
        .args(["frame", "--dir", dir.to_str().unwrap(), "--id", "999999999", "--out", "/tmp/never.png"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.starts_with("shmcast-record: error: ") && err.lines().count() == 1, "{err}");
}

#[test]
fn event_clip_covers_pre_and_post_roll() {
    let mut g = Guard::new();
    let name = unique_name("rec-clip");
    let dir = temp_dir(&mut g, "clip");
    let events = dir.join("events.jsonl");
    std::fs::write(&events, "{\"type\":\"summary\",\"frames\":0}\n").unwrap();
    producer(&mut g, "clip-prod", &name, (640, 360), "i420", 64);
    // One long segment: the clip cutter must have it closed for the clip.
    recorder(
        &mut g,
        "clip-rec",
        &name,
        &dir,
        &["--segment-seconds", "600", "--events", events.to_str().unwrap(), "--pre", "1", "--post", "1"],
    );
    wait_for(LONG, || {
        (segments(&ls(&dir)).iter().map(|s| s["frames"].as_u64().unwrap()).sum::<u64>() >= 90).then_some(())
    })
    .unwrap_or_else(|| panic!("nothing recorded:\n{}", g.log("clip-rec")));
    let cat = Catalog::open(&dir, false).unwrap();
    let seg = cat.segments().unwrap().pop().unwrap();
    let frames = cat.frames(seg.id).unwrap();
    drop(cat);
    let (a, b) = (frames[50], frames[60]);
    append_line(
        &events,
        &format!(
            "{{\"type\":\"meteor\",\"start_frame\":{},\"end_frame\":{},\"bbox\":[1,2,3,4],\"start_capture_ns\":{},\
             \"end_capture_ns\":{}}}",
            a.frame_id, b.frame_id, a.capture_ns, b.capture_ns
        ),
    );
    let v = wait_for(LONG, || {
        let v = ls(&dir);
        (!v["clips"].as_array().unwrap().is_empty()).then_some(v)
    })
    .unwrap_or_else(|| panic!("no clip was cut:\n{}", g.log("clip-rec")));
    let clip = &v["clips"][0];
    let path = dir.join(clip["path"].as_str().unwrap());
    assert!(clip["path"].as_str().unwrap().contains("meteor"), "{clip}");
    assert_eq!(clip["event"]["start_frame"].as_u64(), Some(a.frame_id), "{clip}");
    let st = stamps(&path);
    let all: Vec<(u32, u32)> = st.iter().map(|s| s.expect("every clip frame has a stamp")).collect();
    for w in all.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1, "clip frames are consecutive: {:?}", &all);
    }
    // Frame-exact, covering [start - pre, end + post]: from the last frame
    // captured at or before start - pre to the first at or after end + post.
    let (from, to) = (a.capture_ns - 1_000_000_000, b.capture_ns + 1_000_000_000);
    let cat = Catalog::open(&dir, false).unwrap();
    let now: Vec<_> = cat.segments().unwrap().iter().flat_map(|s| cat.frames(s.id).unwrap()).collect();
    drop(cat);
    let lo = now.iter().map(|f| f.capture_ns).filter(|&c| c <= from).max().expect("a frame at or before start - pre");
    let hi = now.iter().map(|f| f.capture_ns).filter(|&c| c >= to).min().expect("a frame at or after end + post");
    let listed: Vec<u64> =
        now.iter().filter(|f| f.capture_ns >= lo && f.capture_ns <= hi).map(|f| f.frame_id).collect();
    let got: Vec<u64> = all.iter().map(|s| u64::from(s.0)).collect();
    assert_eq!(got, listed, "clip frames vs catalogued frames in [start - pre, end + post]");
}

/// Unix seconds with nine decimals (exact).
fn unix(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// Every frame of a clip: decoded stamps (asserting each decodes), checked
/// with ffmpeg (no decoding error) and ffprobe (same frame count).
fn clip_ids(path: &Path) -> Vec<u64> {
    let got = ids(path);
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        // Timestamps kept in the file's time base: the default one-tick-per-frame
        // time base would merge capture-jittered frames (a muxer warning, not a decoding error).
        .args(["-fps_mode", "passthrough", "-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "ffmpeg decoding {}: {}", path.display(), describe(&out));
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries", "stream=nb_read_frames"])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    let n: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    assert_eq!(n, got.len(), "ffprobe counts {n} frames in {}, GStreamer {}", path.display(), got.len());
    got
}

#[test]
fn clips_are_frame_exact_with_only_the_head_reencoded() {
    require_tool("ffmpeg");
    require_tool("ffprobe");
    let mut g = Guard::new();
    let name = unique_name("rec-exact");
    let dir = temp_dir(&mut g, "exact");
    producer(&mut g, "exact-prod", &name, (640, 360), "i420", 64);
    // 2 s segments, a keyframe every second (30 frames).
    recorder(&mut g, "exact-rec", &name, &dir, &["--segment-seconds", "2", "--gop", "1"]);
    wait_for(LONG, || (closed(&ls(&dir)).len() >= 3).then_some(()))
        .unwrap_or_else(|| panic!("3 segments were not recorded:\n{}", g.log("exact-rec")));
    let cat = Catalog::open(&dir, false).unwrap();
    let segs: Vec<_> = cat.segments().unwrap().into_iter().filter(|s| s.state == "closed").take(3).collect();
    let per_seg: Vec<Vec<_>> = segs.iter().map(|s| cat.frames(s.id).unwrap()).collect();
    drop(cat);
    let all: Vec<_> = per_seg.iter().flatten().copied().collect();
    let keys: Vec<usize> = (0..all.len()).filter(|&i| all[i].key).collect();
    assert!(keys.len() >= 5, "{} keyframes in 3 segments", keys.len());
    let half = |i: usize| (all[i + 1].capture_ns - all[i].capture_ns) / 2;
    let clip = |tag: &str, from: u64, to: u64| -> (Vec<u64>, String) {
        let out = dir.join(format!("{tag}.mp4"));
        let line = run_ok(&[
            "clip",
            "--dir",
            dir.to_str().unwrap(),
            "--from",
            &unix(from),
            "--to",
            &unix(to),
            "--out",
            out.to_str().unwrap(),
        ]);
        (clip_ids(&out), line)
    };
    let expect = |i: usize, j: usize| -> Vec<u64> { all[i..=j].iter().map(|f| f.frame_id).collect() };

    // Across segments, from mid-GOP to mid-GOP, bounds between frames: the
    // clip covers them, from the frame on screen at `from` (the one before
    // it) to the first frame at or after `to` (the one after it).
    let (i, j) = (keys[0] + 7, keys[keys.len() - 1] - 5);
    let (got, line) = clip("across", all[i].capture_ns - half(i - 1), all[j].capture_ns + half(j));
    assert_eq!(got, expect(i - 1, j + 1), "{line}");
    assert!(line.contains("copy+head"), "{line}");
    // Bounds exactly on frames.
    let (got, line) = clip("exact", all[i].capture_ns, all[j].capture_ns);
    assert_eq!(got, expect(i, j), "{line}");
    // Entirely inside one GOP (no keyframe in the range): all re-encoded.
    let (i, j) = (keys[1] + 3, keys[1] + 12);
    let (got, line) = clip("gop", all[i].capture_ns, all[j].capture_ns);
    assert_eq!(got, expect(i, j), "{line}");
    assert!(line.contains(&format!("{} re-encoded", j - i + 1)), "{line}");
    // Starting on a keyframe: all stream copy.
    let (i, j) = (keys[2], keys[2] + 40);
    let (got, line) = clip("key", all[i].capture_ns, all[j].capture_ns);
    assert_eq!(got, expect(i, j), "{line}");
    assert!(line.contains(", copy, 0 re-encoded"), "{line}");
    // A single frame.
    let i = keys[1] + 20;
    let (got, _) = clip("one", all[i].capture_ns, all[i].capture_ns);
    assert_eq!(got, expect(i, i));
}

#[test]
fn retention_deletes_oldest_segments_first_and_the_catalog_agrees() {
    let mut g = Guard::new();
    let name = unique_name("rec-ret");
    let dir = temp_dir(&mut g, "ret");
    producer(&mut g, "ret-prod", &name, (640, 360), "i420", 16);
    let addr = format!("127.0.0.1:{}", shmcast_testkit::free_port());
    // 0.0004 GB = 400 kB: a handful of one-second segments at 800 kbit/s.
    recorder(
        &mut g,
        "ret-rec",
        &name,
        &dir,
        &["--segment-seconds", "1", "--bitrate", "800", "--retain-gb", "0.0004", "--metrics", &addr],
    );
    let first = wait_for(LONG, || segments(&ls(&dir)).first().map(|s| s["path"].as_str().unwrap().to_string()))
        .expect("no segment");
    wait_for(LONG, || (metric(&addr, "shmcast_record_segments_deleted_total").unwrap_or(0.0) >= 3.0).then_some(()))
        .unwrap_or_else(|| panic!("retention deleted nothing:\n{}", g.log("ret-rec")));
    let v = ls(&dir);
    let segs = segments(&v);
    assert!(segs.iter().all(|s| s["path"] != first.as_str()), "the oldest segment {first} is still there");
    assert!(!dir.join(&first).exists(), "{first} still on disk");
    // Oldest first: what is left is the newest, in order.
    let starts: Vec<u64> = segs.iter().map(|s| s["start_ns"].as_u64().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    let closed_bytes: u64 = closed(&v).iter().map(|s| s["bytes"].as_u64().unwrap()).sum();
    let biggest = closed(&v).iter().map(|s| s["bytes"].as_u64().unwrap()).max().unwrap_or(0);
    assert!(closed_bytes <= 400_000 + 2 * biggest, "{closed_bytes} bytes kept for a 400 kB limit");
    // The files on disk are the catalogued ones (checked at one moment in between rotations).
    let agree = wait_for(LONG, || {
        let listed: BTreeSet<String> =
            segments(&ls(&dir)).iter().map(|s| s["path"].as_str().unwrap().to_string()).collect();
        let on_disk: BTreeSet<String> = std::fs::read_dir(dir.join("segments"))
            .unwrap()
            .flatten()
            .map(|e| format!("segments/{}", e.file_name().to_string_lossy()))
            .collect();
        (listed == on_disk).then_some(())
    });
    assert!(agree.is_some(), "catalog and segment directory disagree");
}

#[test]
fn sigkill_leaves_a_playable_segment_and_restart_repairs_the_catalog() {
    require_tool("ffprobe");
    let mut g = Guard::new();
    let name = unique_name("rec-kill");
    let dir = temp_dir(&mut g, "kill");
    producer(&mut g, "kill-prod", &name, (640, 360), "i420", 16);
    let rec = recorder(&mut g, "kill-rec", &name, &dir, &["--segment-seconds", "600"]);
    let path = wait_for(LONG, || {
        segments(&ls(&dir))
            .iter()
            .find(|s| s["frames"].as_u64().unwrap() >= 75)
            .map(|s| s["path"].as_str().unwrap().to_string())
    })
    .unwrap_or_else(|| panic!("nothing recorded:\n{}", g.log("kill-rec")));
    signal(rec, "KILL");
    wait_for(LONG, || g.child("kill-rec").try_wait().ok().flatten()).expect("recorder did not die");

    let file = dir.join(&path);
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries", "stream=nb_read_frames"])
        .args(["-of", "csv=p=0"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe cannot read the killed segment: {}", describe(&out));
    let n: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("a frame count");
    assert!(n >= 30, "only {n} frames readable after SIGKILL");
    let decoded: BTreeSet<u64> = ids(&file).into_iter().collect();

    // Restart: the open segment is repaired to what its file holds.
    recorder(&mut g, "kill-rec2", &name, &dir, &["--segment-seconds", "600"]);
    let v = wait_for(LONG, || {
        let v = ls(&dir);
        segments(&v).iter().any(|s| s["path"] == path.as_str() && s["state"] == "closed").then_some(v)
    })
    .unwrap_or_else(|| panic!("the killed segment was not repaired:\n{}", g.log("kill-rec2")));
    let s = segments(&v).into_iter().find(|s| s["path"] == path.as_str()).unwrap();
    let listed = catalog_ids(&dir, &path);
    assert!(!listed.is_empty());
    assert_eq!(s["frames"].as_u64(), Some(listed.len() as u64));
    assert!(listed.iter().all(|id| decoded.contains(id)), "the catalog lists frames the file does not hold");
    // Recording goes on in a new segment.
    wait_for(LONG, || {
        segments(&ls(&dir)).iter().any(|s| s["path"] != path.as_str() && s["frames"].as_u64() > Some(10)).then_some(())
    })
    .unwrap_or_else(|| panic!("no new segment after the restart:\n{}", g.log("kill-rec2")));
}

/// A small tmpfs mounted for the test, unmounted at drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_full_disk_frees_the_oldest_segments_and_recording_goes_on() {
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    assert_eq!(uid.trim(), "0", "this test mounts a tmpfs: run it as root (scripts/test.sh does)");
    let mnt = std::env::temp_dir().join(format!("shmcast-record-full-{}", std::process::id()));
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"]).arg(&mnt).status().unwrap();
    assert!(st.success(), "cannot mount a tmpfs on {}", mnt.display());
    let _m = Mount(mnt.clone());
    let mut g = Guard::new();
    let name = unique_name("rec-full");
    producer(&mut g, "full-prod", &name, (1280, 720), "i420", 16);
    let addr = format!("127.0.0.1:{}", shmcast_testkit::free_port());
    let rec =
        recorder(&mut g, "full-rec", &name, &mnt, &["--segment-seconds", "1", "--bitrate", "8000", "--metrics", &addr]);
    wait_for(LONG, || g.log("full-rec").contains("disk full").then_some(()))
        .unwrap_or_else(|| panic!("the disk never filled:\n{}", g.log("full-rec")));
    let opened = metric(&addr, "shmcast_record_segments_total").unwrap_or(0.0);
    wait_for(LONG, || (metric(&addr, "shmcast_record_segments_total").unwrap_or(0.0) >= opened + 4.0).then_some(()))
        .unwrap_or_else(|| panic!("recording stopped after the disk filled:\n{}", g.log("full-rec")));
    assert!(pid_alive(rec));
    let log = g.log("full-rec");
    assert_eq!(log.matches("disk full").count(), 1, "one line for a full disk:\n{log}");
    let closed_after = wait_for(LONG, || {
        let v = ls(&mnt);
        let c = closed(&v);
        (c.len() >= 2).then_some(c)
    })
    .expect("closed segments after the disk filled");
    for s in &closed_after {
        assert!(mnt.join(s["path"].as_str().unwrap()).exists(), "catalogued segment missing: {s}");
    }
    // Ends cleanly on SIGTERM.
    signal(rec, "TERM");
    let status = wait_for(LONG, || g.child("full-rec").try_wait().ok().flatten()).expect("recorder did not stop");
    assert!(status.success(), "{status:?}\n{}", g.log("full-rec"));
    drop(g);
}

fn assert_root(what: &str) {
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    assert_eq!(uid.trim(), "0", "this test {what}: run it as root (scripts/test.sh does)");
}

fn run_tool(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", describe(&out));
}

/// Resident memory of a process (kB).
fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// An ext4 file system in a loop-mounted image, thawed and unmounted at drop.
struct Ext4 {
    mnt: PathBuf,
    image: PathBuf,
}

impl Ext4 {
    fn new(tag: &str, mb: u64) -> Ext4 {
        let base = std::env::temp_dir().join(format!("shmcast-record-{tag}-{}", std::process::id()));
        let (mnt, image) = (base.join("mnt"), base.join("fs.img"));
        std::fs::create_dir_all(&mnt).unwrap();
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(mb << 20).unwrap();
        drop(f);
        run_tool(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        let ext4 = Ext4 { mnt, image };
        run_tool(Command::new("mount").args(["-o", "loop"]).arg(&ext4.image).arg(&ext4.mnt));
        ext4
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.mnt).output();
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        if let Some(base) = self.image.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

#[test]
fn a_stalled_disk_drops_and_counts_frames_with_bounded_memory() {
    assert_root("freezes a loop-mounted file system");
    let fs = Ext4::new("frozen", 128);
    let dir = fs.mnt.join("rec");
    let mut g = Guard::new();
    let name = unique_name("rec-stall");
    // 720p I420: 1.4 MB a frame, 41 MB a second if frames were kept.
    producer(&mut g, "stall-prod", &name, (1280, 720), "i420", 16);
    let addr = format!("127.0.0.1:{}", shmcast_testkit::free_port());
    let rec = recorder(&mut g, "stall-rec", &name, &dir, &["--segment-seconds", "600", "--metrics", &addr]);
    let recorded = || metric(&addr, "shmcast_record_frames_total").unwrap_or(0.0) as u64;
    wait_for(LONG, || (recorded() >= 90).then_some(()))
        .unwrap_or_else(|| panic!("nothing recorded:\n{}", g.log("stall-rec")));
    let base_rss = rss_kb(rec);
    let base_lost = counted_losses(&addr);
    // Every write, fsync and SQLite commit on the file system now blocks.
    run_tool(Command::new("fsfreeze").arg("-f").arg(&fs.mnt));
    let frozen_at = std::time::Instant::now();
    let mut max_rss = base_rss;
    // 300 frames lost while frozen (10 s at 30 fps).
    let lost = wait_for(LONG, || {
        max_rss = max_rss.max(rss_kb(rec));
        let l = counted_losses(&addr);
        (l >= base_lost + 300).then_some(l)
    });
    max_rss = max_rss.max(rss_kb(rec));
    let frozen_for = frozen_at.elapsed();
    let catalogued_while_frozen = recorded();
    run_tool(Command::new("fsfreeze").arg("-u").arg(&fs.mnt));
    let lost = lost.unwrap_or_else(|| panic!("no frame was dropped with the disk stalled:\n{}", g.log("stall-rec")));
    let grown_mb = max_rss.saturating_sub(base_rss) / 1024;
    eprintln!(
        "stalled {:.1} s: {} frames counted lost/dropped, RSS {} MB -> max {} MB",
        frozen_for.as_secs_f64(),
        lost - base_lost,
        base_rss / 1024,
        max_rss / 1024
    );
    // Keeping the frames would have taken 400 MB; the recorder holds its
    // queue (15 + 3 frames, 25 MB) and some encoder state.
    assert!(grown_mb < 100, "RSS grew by {grown_mb} MB while the disk was stalled");
    assert!(pid_alive(rec));
    // Recording goes on once the disk is back.
    wait_for(LONG, || (recorded() >= catalogued_while_frozen + 60).then_some(()))
        .unwrap_or_else(|| panic!("recording did not resume:\n{}", g.log("stall-rec")));
    signal(rec, "TERM");
    let status = wait_for(LONG, || g.child("stall-rec").try_wait().ok().flatten()).expect("recorder did not stop");
    assert!(status.success(), "{status:?}\n{}", g.log("stall-rec"));
    drop(g);
}

#[test]
fn a_full_catalog_disk_keeps_the_catalog_whole_and_recovers() {
    assert_root("mounts a tmpfs");
    // The catalog alone on a 2 MB tmpfs (through a symbolic link), the
    // segments elsewhere: SQLite is the one to meet the full disk.
    let mnt = std::env::temp_dir().join(format!("shmcast-record-catmnt-{}", std::process::id()));
    std::fs::create_dir_all(&mnt).unwrap();
    run_tool(Command::new("mount").args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"]).arg(&mnt));
    let _m = Mount(mnt.clone());
    let mut g = Guard::new();
    let dir = temp_dir(&mut g, "catfull");
    std::fs::write(mnt.join("catalog.sqlite"), b"").unwrap();
    std::os::unix::fs::symlink(mnt.join("catalog.sqlite"), dir.join("catalog.sqlite")).unwrap();
    let name = unique_name("rec-catfull");
    producer(&mut g, "cf-prod", &name, (640, 360), "i420", 16);
    let addr = format!("127.0.0.1:{}", shmcast_testkit::free_port());
    let rec = recorder(&mut g, "cf-rec", &name, &dir, &["--segment-seconds", "600", "--metrics", &addr]);
    let recorded = || metric(&addr, "shmcast_record_frames_total").unwrap_or(0.0) as u64;
    wait_for(LONG, || (recorded() >= 60).then_some(()))
        .unwrap_or_else(|| panic!("nothing recorded:\n{}", g.log("cf-rec")));
    assert!(mnt.join("catalog.sqlite").is_file(), "the catalog is not on the small file system");
    // Fill the file system to the last byte.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    wait_for(LONG, || g.log("cf-rec").contains("catalog: disk full").then_some(()))
        .unwrap_or_else(|| panic!("SQLite never met the full disk:\n{}", g.log("cf-rec")));
    assert!(pid_alive(rec));
    // Never half-written: the catalog is whole while the disk is full.
    let cat = Catalog::open(&dir, false).unwrap();
    assert_eq!(cat.integrity_check().unwrap(), "ok");
    drop(cat);
    std::fs::remove_file(&filler).unwrap();
    wait_for(LONG, || g.log("cf-rec").contains("catalog: writable again").then_some(()))
        .unwrap_or_else(|| panic!("the catalog did not recover:\n{}", g.log("cf-rec")));
    let after = recorded();
    wait_for(LONG, || (recorded() >= after + 30).then_some(()))
        .unwrap_or_else(|| panic!("recording did not go on:\n{}", g.log("cf-rec")));
    signal(rec, "TERM");
    let status = wait_for(LONG, || g.child("cf-rec").try_wait().ok().flatten()).expect("recorder did not stop");
    assert!(status.success(), "{status:?}\n{}", g.log("cf-rec"));
    let log = g.log("cf-rec");
    assert_eq!(log.matches("disk full").count(), 1, "one line for the full disk:\n{log}");
    // The frames kept in memory meanwhile were catalogued: the catalog lists
    // exactly the frames the segment holds.
    let v = ls(&dir);
    let segs = closed(&v);
    assert_eq!(segs.len(), 1, "{v}");
    let path = segs[0]["path"].as_str().unwrap();
    assert_eq!(ids(&dir.join(path)), catalog_ids(&dir, path), "decoded stamps vs catalog");
    let cat = Catalog::open(&dir, false).unwrap();
    assert_eq!(cat.integrity_check().unwrap(), "ok");
}

#[test]
fn producer_restart_with_another_format_starts_a_new_segment() {
    let mut g = Guard::new();
    let name = unique_name("rec-restart");
    let dir = temp_dir(&mut g, "restart");
    let p1 = producer(&mut g, "rs-prod1", &name, (640, 360), "i420", 16);
    recorder(&mut g, "rs-rec", &name, &dir, &["--segment-seconds", "600"]);
    wait_for(LONG, || {
        (segments(&ls(&dir)).iter().map(|s| s["frames"].as_u64().unwrap()).sum::<u64>() >= 45).then_some(())
    })
    .unwrap_or_else(|| panic!("nothing recorded:\n{}", g.log("rs-rec")));
    signal(p1, "TERM");
    wait_for(LONG, || g.child("rs-prod1").try_wait().ok().flatten()).expect("producer did not stop");
    producer(&mut g, "rs-prod2", &name, (320, 240), "nv12", 16);
    let v = wait_for(LONG, || {
        let v = ls(&dir);
        let segs = segments(&v);
        (segs.len() >= 2 && segs[1]["frames"].as_u64() >= Some(45)).then_some(v)
    })
    .unwrap_or_else(|| panic!("no segment for the new producer:\n{}", g.log("rs-rec")));
    let segs = segments(&v);
    assert_eq!(segs[0]["state"], "closed", "{v}");
    assert!(segs[0]["format"].as_str().unwrap().starts_with("640x360"), "{v}");
    assert!(segs[1]["format"].as_str().unwrap().starts_with("320x240"), "{v}");
    assert_ne!(segs[0]["epoch"], segs[1]["epoch"]);
    let first = ids(&dir.join(segs[0]["path"].as_str().unwrap()));
    assert_eq!(first, catalog_ids(&dir, segs[0]["path"].as_str().unwrap()));
    // The second producer's ids start again from 0.
    let cat = Catalog::open(&dir, false).unwrap();
    let second = cat.segments().unwrap().into_iter().find(|s| s.path == segs[1]["path"].as_str().unwrap()).unwrap();
    assert!(second.first_frame.unwrap() < 60, "{second:?}");
    let _ = Duration::ZERO;
}

#[test]
fn an_mqtt_event_gets_its_clip() {
    require_tool("mosquitto");
    require_tool("mosquitto_pub");
    let mut g = Guard::new();
    let name = unique_name("rec-mqtt");
    let dir = temp_dir(&mut g, "mqtt");
    let port = shmcast_testkit::free_port();
    g.spawn("mqtt-broker", Command::new("mosquitto").args(["-p", &port.to_string()]));
    wait_for(LONG, || std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .unwrap_or_else(|| panic!("mosquitto did not listen:\n{}", g.log("mqtt-broker")));
    producer(&mut g, "mqtt-prod", &name, (640, 360), "i420", 16);
    let url = format!("mqtt://127.0.0.1:{port}");
    let topic = format!("shmcast/{name}/events");
    recorder(
        &mut g,
        "mqtt-rec",
        &name,
        &dir,
        &["--segment-seconds", "2", "--mqtt", &url, "--topic", &topic, "--pre", "0.5", "--post", "0.5"],
    );
    wait_for(LONG, || g.log("mqtt-rec").contains("MQTT connected").then_some(()))
        .unwrap_or_else(|| panic!("no MQTT connection:\n{}", g.log("mqtt-rec")));
    let seg = wait_for(LONG, || closed(&ls(&dir)).first().cloned()).expect("a closed segment");
    let cat = Catalog::open(&dir, false).unwrap();
    let s = cat.segments().unwrap().into_iter().find(|s| s.path == seg["path"].as_str().unwrap()).unwrap();
    let frames = cat.frames(s.id).unwrap();
    drop(cat);
    let (a, b) = (frames[20], frames[30]);
    let msg = format!(
        "{{\"type\":\"motion\",\"start_frame\":{},\"end_frame\":{},\"start_capture_ns\":{},\"end_capture_ns\":{}}}",
        a.frame_id, b.frame_id, a.capture_ns, b.capture_ns
    );
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", &topic, "-m", &msg])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let v = wait_for(LONG, || {
        let v = ls(&dir);
        (!v["clips"].as_array().unwrap().is_empty()).then_some(v)
    })
    .unwrap_or_else(|| panic!("no clip for the MQTT event:\n{}", g.log("mqtt-rec")));
    let clip = &v["clips"][0];
    assert_eq!(clip["event"]["type"], "motion", "{clip}");
    let got = ids(&dir.join(clip["path"].as_str().unwrap()));
    assert!(got.first().unwrap() <= &a.frame_id && got.last().unwrap() >= &b.frame_id, "{got:?}");
}

#[test]
fn mjpeg_is_recorded_as_it_is() {
    require_tool("ffprobe");
    let mut g = Guard::new();
    let name = unique_name("rec-mjpeg");
    let dir = temp_dir(&mut g, "mjpeg");
    let _ = std::fs::remove_file(segment_path(&name));
    g.spawn(
        "mj-prod",
        Command::new(bin("shmcast-producer")).args([
            "--name",
            &name,
            "--source",
            "gst:videotestsrc is-live=true",
            "--width",
            "320",
            "--height",
            "240",
            "--format",
            "mjpeg",
            "--fps",
            "30",
        ]),
    );
    g.segment(&name);
    recorder(&mut g, "mj-rec", &name, &dir, &["--segment-seconds", "1"]);
    let seg = wait_for(LONG, || closed(&ls(&dir)).first().cloned())
        .unwrap_or_else(|| panic!("no closed segment:\n{}\n{}", g.log("mj-rec"), g.log("mj-prod")));
    let path = dir.join(seg["path"].as_str().unwrap());
    assert!(path.extension().is_some_and(|e| e == "mov"), "{seg}");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args(["-show_entries", "stream=codec_name,nb_read_frames", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("mjpeg,"), "{}", describe(&out));
    let n: u64 = text.trim().split(',').nth(1).unwrap().parse().unwrap();
    assert_eq!(Some(n), seg["frames"].as_u64(), "{seg}");
    let png = dir.join("mj.png");
    let id = seg["first_frame"].as_u64().unwrap() + 3;
    let o = run_ok(&[
        "frame",
        "--dir",
        dir.to_str().unwrap(),
        "--id",
        &id.to_string(),
        "--out",
        png.to_str().unwrap(),
        "--disk-only",
    ]);
    assert!(o.starts_with("disk:"), "{o}");
    assert_eq!(stamps(&png).len(), 1);
}

/// Sends SIGTERM and asserts a clean exit within a second.
fn term_within_a_second(g: &mut Guard, label: &str, state: &str) {
    let pid = g.child(label).id();
    let sent = std::time::Instant::now();
    signal(pid, "TERM");
    let status = wait_for(LONG, || g.child(label).try_wait().ok().flatten())
        .unwrap_or_else(|| panic!("{label} ({state}) ignored SIGTERM:\n{}", g.log(label)));
    let took = sent.elapsed();
    eprintln!("{label} ({state}): exited {status} {} ms after SIGTERM", took.as_millis());
    assert!(status.success(), "{label} ({state}) exited with {status}:\n{}", g.log(label));
    assert!(took < Duration::from_secs(1), "{label} ({state}) took {took:?}:\n{}", g.log(label));
}

/// A segment under `name` whose words are hostile: a heartbeat just ahead of
/// now, `head` and every slot word at u64::MAX.
fn crafted_segment(name: &str) {
    use shm_proto::{CreateOptions, FrameMeta, PixelFormat, VideoFormat, Writer};
    let tmp = std::env::temp_dir().join(format!("shmcast-record-craft-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let f = VideoFormat::new(320, 240, PixelFormat::Gray8, 30, 1).unwrap();
    let bytes = {
        let mut w =
            Writer::create("craft", f, &CreateOptions { slots: 4, dir: Some(tmp.clone()), ..Default::default() })
                .unwrap();
        w.publish(|b| FrameMeta::new(0, 0, b.len() as u64));
        std::fs::read(w.path()).unwrap()
    };
    let _ = std::fs::remove_dir_all(&tmp);
    let mut b = bytes;
    let put = |b: &mut Vec<u8>, off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    put(&mut b, 1024 + 8, shm_proto::os::monotonic_ns() + 1_900_000_000);
    put(&mut b, 1024 + 128, u64::MAX);
    for i in 0..4 {
        put(&mut b, 4096 + 128 * i, u64::MAX);
    }
    std::fs::write(segment_path(name), &b).unwrap();
}

#[test]
fn recorder_honours_sigterm_in_every_state() {
    let mut g = Guard::new();
    let dir = temp_dir(&mut g, "term");
    let events = dir.join("events.jsonl");
    let extra = ["--segment-seconds", "2", "--events", events.to_str().unwrap()];
    // Waiting for a producer that never comes.
    let name = unique_name("rec-term-wait");
    recorder(&mut g, "term-wait", &name, &dir.join("a"), &extra);
    wait_for(LONG, || g.log("term-wait").contains("waiting for the producer").then_some(()))
        .unwrap_or_else(|| panic!("never waited:\n{}", g.log("term-wait")));
    term_within_a_second(&mut g, "term-wait", "waiting for the producer");
    // On a crafted, hostile segment.
    let name = unique_name("rec-term-craft");
    g.segment(&name);
    crafted_segment(&name);
    recorder(&mut g, "term-craft", &name, &dir.join("b"), &extra);
    std::thread::sleep(Duration::from_millis(300));
    term_within_a_second(&mut g, "term-craft", "crafted segment");
    // Recording, with frames flowing and an event source.
    let name = unique_name("rec-term-live");
    producer(&mut g, "term-prod", &name, (1280, 720), "i420", 16);
    recorder(&mut g, "term-live", &name, &dir.join("c"), &extra);
    wait_for(LONG, || {
        (segments(&ls(&dir.join("c"))).iter().map(|s| s["frames"].as_u64().unwrap()).sum::<u64>() >= 30).then_some(())
    })
    .unwrap_or_else(|| panic!("nothing recorded:\n{}", g.log("term-live")));
    term_within_a_second(&mut g, "term-live", "recording");
    // The segment it was writing is closed in the catalog.
    assert!(segments(&ls(&dir.join("c"))).iter().all(|s| s["state"] == "closed"), "{}", ls(&dir.join("c")));
}

#[test]
fn subcommands_take_log_level_and_report_a_missing_recording_in_one_line() {
    let mut g = Guard::new();
    let dir = temp_dir(&mut g, "empty");
    let png = dir.join("f.png");
    for cmd in ["ls", "frame"] {
        let mut args = vec![cmd, "--log-level", "debug", "--dir", dir.to_str().unwrap()];
        if cmd == "frame" {
            args.extend(["--id", "1", "--out", png.to_str().unwrap()]);
        }
        let out = Command::new(bin("shmcast-record")).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        assert_eq!(err.lines().count(), 1, "{args:?}: one error line: {err}");
        assert!(err.starts_with("shmcast-record: error: no recording in"), "{args:?}: {err}");
    }
}
