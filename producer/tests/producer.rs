//! Multi-process tests: the real `shmcast-producer` binary, read back by a
//! `shm_proto::Reader` in the test process.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use shm_proto::stamp::{self, decode_luma};
use shm_proto::{Next, PixelFormat, ProducerStatus, Reader, ReaderOptions, Start};
use shmcast_testkit::{Proc, segment_path, unique_name};

const BIN: &str = env!("CARGO_BIN_EXE_shmcast-producer");

/// The producer on stream `name`, killed (and its segment removed) at drop.
fn spawn(name: &str, args: &[&str]) -> Proc {
    Proc::spawn("shmcast-producer", Command::new(BIN).args(["--name", name]).args(args)).segment(name)
}

/// Opens the stream as soon as it exists (bounded wait).
fn open(p: &mut Proc, name: &str, start: Start, limit: Duration) -> Reader {
    p.open_stream(name, &ReaderOptions { start, ..Default::default() }, limit)
}

/// Runs the producer to completion, for error cases.
fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"))
}

#[test]
fn every_raw_format_reads_back_with_its_stamp() {
    let (w, h) = (640u32, 360u32);
    for pixel in PixelFormat::RAW {
        let n = unique_name(&format!("fmt-{pixel}"));
        let ws = w.to_string();
        let hs = h.to_string();
        let mut p = spawn(
            &n,
            &[
                "--format",
                pixel.name(),
                "--width",
                &ws,
                "--height",
                &hs,
                "--fps",
                "60",
                "--frames",
                "40",
                "--slots",
                "64",
                "--noise",
                "4",
                "--events",
                "30",
            ],
        );
        let mut r = open(&mut p, &n, Start::Oldest, Duration::from_secs(10));
        let fmt = *r.format();
        assert_eq!((fmt.width, fmt.height, fmt.pixel), (w, h, pixel));
        let mut seen = 0u64;
        let mut last_id = None;
        loop {
            match r.next(Duration::from_secs(5)) {
                Next::Frame(f) => {
                    let meta = *f.meta();
                    assert_eq!(meta.len, fmt.frame_size, "{pixel}");
                    assert_eq!(f.len() as u64, fmt.frame_size, "{pixel}");
                    let stamp = f.read(|data| stamp::decode(data, &fmt));
                    let seq = f.seq();
                    let stamp = stamp.unwrap_or_else(|| panic!("{pixel}: overrun at 60 fps with 64 slots"));
                    let stamp =
                        stamp.unwrap_or_else(|| panic!("{pixel}: frame {} has no readable stamp", meta.frame_id));
                    assert_eq!(u64::from(stamp.frame_id), meta.frame_id, "{pixel}");
                    assert_eq!(meta.frame_id, seq, "{pixel}: frame ids count from 0 like sequences");
                    assert!(meta.capture_ns > 0 && meta.publish_ns >= meta.capture_ns, "{pixel}");
                    last_id = Some(meta.frame_id);
                    seen += 1;
                }
                Next::Timeout => panic!("{pixel}: no frame within 5 s; stderr:\n{}", p.stderr()),
                Next::Gone(s) => {
                    assert_eq!(s, ProducerStatus::Closed, "{pixel}");
                    break;
                }
            }
        }
        assert_eq!(last_id, Some(39), "{pixel}");
        assert!(seen >= 30, "{pixel}: read only {seen} of 40 frames");
        assert!(p.wait_exit(Duration::from_secs(10)).success(), "{pixel}: {}", p.stderr());
        assert!(!segment_path(&n).exists(), "{pixel}: segment left behind");
    }
}

#[test]
fn gst_videotestsrc_reads_back_count_format_and_size() {
    // i420 at 320x240: frame ids contiguous, every frame read.
    let n = unique_name("gst-i420");
    let mut p = spawn(
        &n,
        &[
            "--source",
            "gst:videotestsrc pattern=ball",
            "--format",
            "i420",
            "--width",
            "320",
            "--height",
            "240",
            "--frames",
            "30",
            "--slots",
            "64",
        ],
    );
    let mut r = open(&mut p, &n, Start::Oldest, Duration::from_secs(20));
    let fmt = *r.format();
    assert_eq!((fmt.width, fmt.height, fmt.pixel), (320, 240, PixelFormat::I420));
    assert_eq!(fmt.fps(), 30.0, "videotestsrc's own rate is carried in the header");
    let mut ids = Vec::new();
    loop {
        match r.next(Duration::from_secs(5)) {
            Next::Frame(f) => {
                let m = *f.meta();
                assert_eq!(m.len, 320 * 240 * 3 / 2);
                assert!(m.capture_ns <= m.publish_ns, "captured after publish: {m:?}");
                assert!(m.publish_ns - m.capture_ns < 1_000_000_000, "capture time 1 s old: {m:?}");
                let y = f.format().planes()[0];
                let distinct = f
                    .read(|d| {
                        d[y.offset as usize..(y.offset + y.span()) as usize].iter().fold([false; 256], |mut a, &v| {
                            a[v as usize] = true;
                            a
                        })
                    })
                    .expect("intact frame");
                let id = f.meta().frame_id;
                assert!(distinct.iter().filter(|&&b| b).count() > 2, "frame {id} looks empty");
                ids.push(id);
            }
            Next::Timeout => panic!("no frame within 5 s; stderr:\n{}", p.stderr()),
            Next::Gone(_) => break,
        }
    }
    assert_eq!(ids, (0..30).collect::<Vec<u64>>(), "stderr:\n{}", p.stderr());
    assert!(p.wait_exit(Duration::from_secs(10)).success(), "{}", p.stderr());
    assert!(!segment_path(&n).exists());
}

#[test]
fn gst_honours_strides_for_widths_gstreamer_pads() {
    // gray8 at width 322: GStreamer pads rows to 324 bytes; the ring's rows are
    // 322. The SMPTE bars are constant down each column in the top half, so a
    // row copied with the wrong stride would be shifted against row 0.
    let n = unique_name("gst-stride");
    let mut p = spawn(
        &n,
        &[
            "--source",
            "gst:videotestsrc pattern=smpte",
            "--format",
            "gray8",
            "--width",
            "322",
            "--height",
            "240",
            "--frames",
            "5",
            "--slots",
            "8",
        ],
    );
    let mut r = open(&mut p, &n, Start::Oldest, Duration::from_secs(20));
    let Next::Frame(f) = r.next(Duration::from_secs(10)) else { panic!("no frame; stderr:\n{}", p.stderr()) };
    let data = f.to_vec().expect("intact frame");
    let row = |y: usize| &data[y * 322..(y + 1) * 322];
    for y in [1, 10, 50, 100] {
        assert_eq!(row(y), row(0), "row {y} differs from row 0: stride not honoured");
    }
    assert!(p.wait_exit(Duration::from_secs(10)).success(), "{}", p.stderr());
}

#[test]
fn gst_every_raw_format_with_padded_strides() {
    // Width 162: GStreamer pads rgb rows to 488 bytes, gray/Y rows to 164, I420
    // chroma to 84; the ring's rows are tight. SMPTE bars are constant down each
    // column in the top half, so every plane's rows there must be identical.
    for pixel in PixelFormat::RAW {
        let n = unique_name(&format!("gst-{pixel}"));
        let mut p = spawn(
            &n,
            &[
                "--source",
                "gst:videotestsrc pattern=smpte",
                "--format",
                pixel.name(),
                "--width",
                "162",
                "--height",
                "120",
                "--frames",
                "3",
                "--slots",
                "4",
            ],
        );
        let mut r = open(&mut p, &n, Start::Oldest, Duration::from_secs(20));
        let fmt = *r.format();
        assert_eq!((fmt.width, fmt.height, fmt.pixel), (162, 120, pixel));
        let Next::Frame(f) = r.next(Duration::from_secs(10)) else { panic!("{pixel}: no frame; {}", p.stderr()) };
        assert_eq!(f.meta().len, fmt.frame_size, "{pixel}");
        let data = f.to_vec().expect("intact frame");
        for (i, pl) in fmt.planes().iter().enumerate() {
            let row = |y: usize| {
                let o = pl.offset as usize + y * pl.stride as usize;
                &data[o..o + pl.row_bytes as usize]
            };
            for y in 1..pl.rows as usize / 2 {
                assert_eq!(row(y), row(0), "{pixel}: plane {i} row {y} differs from row 0 (stride not honoured)");
            }
            let distinct = row(0).windows(2).filter(|w| w[0] != w[1]).count();
            assert!(distinct >= 3, "{pixel}: plane {i} shows no bars");
        }
        assert!(p.wait_exit(Duration::from_secs(10)).success(), "{pixel}: {}", p.stderr());
    }
}

#[test]
fn gst_mjpeg_is_carried_as_variable_size_frames() {
    let n = unique_name("gst-mjpeg");
    let mut p = spawn(
        &n,
        &[
            "--source",
            "gst:videotestsrc pattern=ball",
            "--format",
            "mjpeg",
            "--width",
            "320",
            "--height",
            "240",
            "--frames",
            "10",
            "--slots",
            "16",
        ],
    );
    let mut r = open(&mut p, &n, Start::Oldest, Duration::from_secs(20));
    assert_eq!(r.format().pixel, PixelFormat::Mjpeg);
    let max = r.format().frame_size;
    let mut n_frames = 0;
    while let Next::Frame(f) = r.next(Duration::from_secs(5)) {
        let d = f.to_vec().expect("intact frame");
        let len = f.meta().len;
        let ok = d.len() as u64 == len && d.starts_with(&[0xFF, 0xD8]) && d.ends_with(&[0xFF, 0xD9]);
        assert!(ok, "frame is not a whole JPEG ({len} bytes)");
        assert!(len > 100 && len < max, "JPEG of {len} bytes (slot {max})");
        n_frames += 1;
    }
    assert_eq!(n_frames, 10, "stderr:\n{}", p.stderr());
    assert!(p.wait_exit(Duration::from_secs(10)).success(), "{}", p.stderr());
}

#[test]
fn gst_end_of_stream_exits_cleanly_and_loop_restarts() {
    // num-buffers=5 ends the stream: exit 0 after 5 frames.
    let n = unique_name("gst-eos");
    let mut p = spawn(
        &n,
        &["--source", "gst:videotestsrc num-buffers=5", "--format", "gray8", "--width", "160", "--height", "120"],
    );
    let st = p.wait_exit(Duration::from_secs(20));
    assert!(st.success(), "EOS must exit 0: {st}; stderr:\n{}", p.stderr());
    assert!(p.stderr().contains("end of stream"), "{}", p.stderr());
    assert!(!segment_path(&n).exists());
    drop(p);

    // With --loop the same source keeps going past its 5 buffers.
    let n = unique_name("gst-loop");
    let mut p = spawn(
        &n,
        &[
            "--source",
            "gst:videotestsrc num-buffers=5",
            "--loop",
            "--format",
            "gray8",
            "--width",
            "160",
            "--height",
            "120",
            "--frames",
            "12",
            "--fps",
            "0",
        ],
    );
    let st = p.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "{st}; stderr:\n{}", p.stderr());
    assert!(p.stderr().contains("looping"), "{}", p.stderr());
    assert!(p.stderr().contains("frames=12"), "{}", p.stderr());
}

#[test]
fn paces_at_30_fps_logs_stats_and_stops_on_sigterm() {
    let n = unique_name("pace");
    let truth = std::env::temp_dir().join(format!("{n}.truth.jsonl"));
    let mut p = spawn(
        &n,
        &[
            "--format",
            "gray8",
            "--width",
            "320",
            "--height",
            "240",
            "--fps",
            "30",
            "--events",
            "100",
            "--truth",
            truth.to_str().unwrap(),
        ],
    );
    let mut r = open(&mut p, &n, Start::Next, Duration::from_secs(10));
    // Skip start-up, then count frames over 3 s of their publish times.
    let (mut first, mut last, mut count) = (None, 0u64, 0u64);
    let window = 3_000_000_000u64;
    while let Next::Frame(f) = r.next(Duration::from_secs(2)) {
        let t = f.meta().publish_ns;
        let lost = f.lost_before();
        assert!(f.validate());
        let t0 = *first.get_or_insert(t);
        if t - t0 > window {
            break;
        }
        if count > 0 {
            assert_eq!(lost, 0, "a reader keeping up loses nothing");
        }
        count += 1;
        last = t;
    }
    let secs = (last - first.expect("frames")) as f64 / 1e9;
    let rate = (count - 1) as f64 / secs;
    assert!((27.0..=33.0).contains(&rate), "rate {rate:.2} fps over {secs:.2} s ({count} frames)");
    // The first stats line comes after 5 s.
    p.wait_for_line("stats", Duration::from_secs(30));
    p.signal("TERM");
    let st = p.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "SIGTERM must exit 0, got {st}; stderr:\n{}", p.stderr());
    assert!(!segment_path(&n).exists(), "segment left in /dev/shm after SIGTERM");
    match r.next(Duration::from_secs(2)) {
        Next::Gone(s) => assert_eq!(s, ProducerStatus::Closed),
        Next::Frame(_) | Next::Timeout => {
            // Frames still queued for this reader: drain, then it must be closed.
            let mut gone = false;
            for _ in 0..64 {
                if let Next::Gone(s) = r.next(Duration::from_secs(2)) {
                    assert_eq!(s, ProducerStatus::Closed);
                    gone = true;
                    break;
                }
            }
            assert!(gone, "reader never saw the stream closed");
        }
    }
    let err = p.stderr();
    assert!(err.contains("stats") && err.contains("fps=") && err.contains("rss_mib="), "no stats line:\n{err}");
    assert!(err.contains("status band") && err.contains("overlay region"), "no band line:\n{err}");
    // The truth file is complete: every line a whole JSON object.
    let text = std::fs::read_to_string(&truth).expect("truth file");
    assert!(text.is_empty() || text.ends_with('\n'));
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
        assert!(v["type"] == "meteor" || v["type"] == "motion", "{line}");
    }
    let _ = std::fs::remove_file(&truth);
}

/// Ground truth lines without the timing fields.
fn truth_without_times(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("truth file");
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"));
            let o = v.as_object_mut().expect("object");
            assert!(o["start_capture_ns"].as_u64().unwrap() <= o["end_capture_ns"].as_u64().unwrap());
            o.remove("start_capture_ns");
            o.remove("end_capture_ns");
            v
        })
        .collect()
}

#[test]
fn truth_is_well_formed_and_deterministic_for_a_seed() {
    let run_once = |tag: &str, seed: &str, format: &str| {
        let n = unique_name(tag);
        let truth = std::env::temp_dir().join(format!("{n}.jsonl"));
        let out = run(&[
            "--name",
            &n,
            "--format",
            format,
            "--width",
            "320",
            "--height",
            "240",
            "--fps",
            "0",
            "--frames",
            "3000",
            "--events",
            "10",
            "--seed",
            seed,
            "--noise",
            "3",
            "--truth",
            truth.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!segment_path(&n).exists());
        let v = truth_without_times(&truth);
        let _ = std::fs::remove_file(&truth);
        v
    };
    let a = run_once("truth-a", "7", "gray8");
    let b = run_once("truth-b", "7", "rgb24");
    let c = run_once("truth-c", "8", "gray8");
    assert_eq!(a, b, "same seed, same events (whatever the pixel format)");
    assert_ne!(a, c, "another seed, other events");
    assert!(a.len() >= 10, "only {} events in 3000 frames at 10/1000", a.len());
    let band_h = shmcast_producer::status_band(320, 240).3 as u64;
    let mut prev_end = None;
    for v in &a {
        let (s, e) = (v["start_frame"].as_u64().unwrap(), v["end_frame"].as_u64().unwrap());
        assert!(s <= e && e < 3000, "{v}");
        assert_eq!(v["frames"].as_u64().unwrap(), e - s + 1);
        if let Some(p) = prev_end {
            assert!(s > p, "events overlap: {v}");
        }
        prev_end = Some(e);
        let bbox: Vec<u64> = v["bbox"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert!(bbox[1] >= band_h, "event inside the status band: {v}");
        assert!(bbox[0] + bbox[2] <= 320 && bbox[1] + bbox[3] <= 240, "{v}");
        assert!(v["peak"].as_u64().unwrap() >= 130, "{v}");
        match v["type"].as_str().unwrap() {
            "meteor" => assert!((3..=15).contains(&(e - s + 1)), "{v}"),
            "motion" => assert!(!v["truncated"].as_bool().unwrap() || e == 2999, "{v}"),
            other => panic!("unknown type {other}"),
        }
    }
}

fn assert_fails(args: &[&str], code: i32, needle: &str, n: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: stderr:\n{err}");
    assert!(err.contains(needle), "{args:?}: expected {needle:?} in:\n{err}");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    if code == 1 {
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("shmcast-producer: error: "), "{args:?}: last line {last:?}");
    }
    assert!(!segment_path(n).exists(), "{args:?} left {} behind", segment_path(n).display());
}

#[test]
fn errors_give_one_line_a_nonzero_exit_and_leave_nothing() {
    let n = unique_name("err");
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--source", "foo"], 1, "unknown source"),
        (&["--source", "gst:this_is_not_an_element"], 1, "no element"),
        (&["--source", "gst:videotestsrc ! ! ("], 1, "cannot parse pipeline"),
        (&["--source", "gst:filesrc location=/nonexistent/x.mp4 ! decodebin"], 1, "Resource not found"),
        (&["--source", "v4l2:/dev/video-nonexistent-99"], 1, "no such device"),
        (&["--source", "v4l2:/dev/null"], 1, "not a V4L2 device"),
        (&["--source", "v4l2:"], 1, "needs a device path"),
        (&["--format", "mjpeg"], 1, "raw formats only"),
        (&["--format", "rgb48"], 2, "unknown pixel format"),
        (&["--width", "100000"], 1, "out of range"),
        (&["--width", "0"], 1, "out of range"),
        (&["--format", "nv12", "--width", "641"], 1, "even width"),
        (&["--slots", "3"], 1, "slot count 3"),
        (&["--width", "16384", "--height", "16384", "--slots", "256"], 1, "free"),
        (&["--noise=-1"], 1, "--noise"),
        (&["--source", "gst:videotestsrc", "--events", "3"], 1, "testsrc only"),
    ];
    for (extra, code, needle) in cases {
        let mut args = vec!["--name", n.as_str(), "--frames", "3"];
        args.extend_from_slice(extra);
        assert_fails(&args, *code, needle, &n);
    }
    assert_fails(&["--name", "bad/name", "--frames", "3"], 1, "contains '/'", "bad");
}

#[test]
fn a_name_in_use_is_refused_and_the_owner_keeps_running() {
    let n = unique_name("inuse");
    let mut owner =
        spawn(&n, &["--format", "gray8", "--width", "160", "--height", "120", "--fps", "50", "--mode", "0604"]);
    let mut r = open(&mut owner, &n, Start::Next, Duration::from_secs(10));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(segment_path(&n)).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o604, "--mode not applied");
    assert!(matches!(r.next(Duration::from_secs(5)), Next::Frame(_)));
    for source in ["testsrc", "gst:videotestsrc"] {
        let out = run(&["--name", &n, "--source", source, "--frames", "3"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("owned by another running producer (pid"), "{err}");
    }
    let epoch = r.epoch();
    let head = r.head();
    std::thread::sleep(Duration::from_millis(200));
    assert!(r.head() > head, "the owner stopped producing");
    assert_eq!(r.epoch(), epoch);
    assert!(segment_path(&n).exists());
    owner.signal("INT");
    assert!(owner.wait_exit(Duration::from_secs(10)).success(), "SIGINT must exit 0: {}", owner.stderr());
    assert!(!segment_path(&n).exists());
}

#[test]
fn hugepages_and_mlock_with_reserved_pages() {
    let mounts = shm_proto::os::hugetlbfs_mounts();
    let (size, free) = shm_proto::os::hugepages();
    assert!(
        !mounts.is_empty() && free >= 8,
        "huge pages are not set up (hugetlbfs mounts {mounts:?}, {free} free pages of {size} bytes): \
         run as root `source scripts/hugepages.sh && hugepages_reserve 160` before this test \
         (scripts/test.sh does) and `hugepages_release` after"
    );
    let n = unique_name("huge");
    let mut p = spawn(
        &n,
        &[
            "--format",
            "gray8",
            "--width",
            "640",
            "--height",
            "480",
            "--slots",
            "4",
            "--fps",
            "30",
            "--hugepages",
            "--mlock",
        ],
    );
    let mut r = open(&mut p, &n, Start::Next, Duration::from_secs(10));
    let info = r.info();
    assert!(info.hugepages, "header does not say huge pages");
    assert!(
        mounts.iter().any(|m| info.path.starts_with(m)),
        "segment {} is not on hugetlbfs {mounts:?}",
        info.path.display()
    );
    assert!(!segment_path(&n).exists(), "a huge-page segment must not be in /dev/shm");
    let mut got = 0;
    while got < 10 {
        match r.next(Duration::from_secs(5)) {
            Next::Frame(f) => {
                let s = f.read(|d| decode_luma(d, 640, 1, 640, 480)).expect("intact frame");
                let id = f.meta().frame_id;
                assert_eq!(s.map(|s| u64::from(s.frame_id)), Some(id));
                got += 1;
            }
            _ => panic!("no frames from the huge-page stream; stderr:\n{}", p.stderr()),
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap_or_default();
    let locked_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmLck:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(p.stderr().contains("mlock=true"), "{}", p.stderr());
    let path = info.path.clone();
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(10)).success(), "{}", p.stderr());
    assert!(!path.exists(), "huge-page segment left behind");
    eprintln!("huge-page stream ok: {} ({locked_kb} KiB locked as reported by VmLck)", path.display());
}
