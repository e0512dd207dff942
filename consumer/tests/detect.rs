//! Process tests of shmcast-detect against the real producer: quality on the
//! test pattern, the ball, a static noisy scene, producer restarts, signals,
//! and a missing producer.
#![forbid(unsafe_code)]

mod detect_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use detect_common::*;

const LONG: Duration = Duration::from_secs(120);

fn detector(name: &str, args: &[&str]) -> Command {
    let mut c = Command::new(DETECT);
    c.args(["--name", name, "--attach-timeout", "60"]).args(args);
    c
}

/// The quality targets on the test pattern with ≥ 20 injected events, scored by
/// scripts/eval-detect.sh testsrc (1280x720, noise 4), without any --mask: the
/// status band is the stream's overlay region, ignored by default.
#[test]
fn eval_meets_quality_targets() {
    let out_dir = std::env::temp_dir().join(format!("shmcast-eval-test-{}", std::process::id()));
    let bin_dir = producer_bin().parent().unwrap().to_path_buf();
    let out = eval_detect("testsrc")
        .env("FRAMES", "1500")
        .env("SEED", "2")
        .env("OUT", &out_dir)
        .env("BIN_DIR", &bin_dir)
        .output()
        .expect("run scripts/eval-detect.sh (needs bash and python3)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let _ = std::fs::remove_dir_all(&out_dir);
    assert!(out.status.success(), "evaluation failed:\n{}", show(&out));
    let score = json_lines(&text).into_iter().find(|v| v.get("recall").is_some()).expect("score line");
    assert!(score["truth"].as_u64().unwrap() >= 20, "too few events to judge: {score}");
    assert!(score["recall"].as_f64().unwrap() >= 0.95, "{score}");
    assert!(score["precision"].as_f64().unwrap() >= 0.95, "{score}");
    assert!(score["type_accuracy"].as_f64().unwrap() >= 0.90, "{score}");
    assert_eq!(score["lost"].as_u64(), Some(0), "{score}");
}

/// videotestsrc's bouncing (orange) ball gives motion events whose points
/// follow it, with colour snapshots.
#[test]
fn ball_pattern_gives_motion_following_the_ball() {
    let name = unique("ball");
    let snaps = std::env::temp_dir().join(format!("shmcast-ball-snaps-{}", std::process::id()));
    let snaps_arg = snaps.display().to_string();
    let det = Proc::spawn("shmcast-detect", &mut detector(&name, &["--exit-on-close", "--snapshots", &snaps_arg]))
        .segment(&name);
    let mut p = Command::new(producer_bin());
    p.args(["--name", &name, "--source", "gst:videotestsrc pattern=ball foreground-color=0xffff4000 num-buffers=240"])
        .args(["--width", "320", "--height", "240", "--format", "i420", "--slots", "512", "--log-level", "warn"]);
    let prod = Proc::spawn("shmcast-producer", &mut p).output(LONG);
    assert!(prod.status.success(), "producer failed:\n{}", show(&prod));
    let out = det.output(LONG);
    assert!(out.status.success(), "{}", show(&out));
    let lines = json_lines(&String::from_utf8_lossy(&out.stdout));
    let events: Vec<_> = lines.iter().filter(|v| v["type"] != "summary").collect();
    assert!(!events.is_empty(), "no event:\n{}", show(&out));
    for e in &events {
        assert_eq!(e["type"], "motion", "{e}");
    }
    // The longest event covers most of the run and its points move around.
    let e =
        events.iter().max_by_key(|e| e["end_frame"].as_u64().unwrap() - e["start_frame"].as_u64().unwrap()).unwrap();
    let pts = e["points"].as_array().unwrap();
    assert!(pts.len() >= 100, "{e}");
    let xs: Vec<f64> = pts.iter().map(|p| p["x"].as_f64().unwrap()).collect();
    let ys: Vec<f64> = pts.iter().map(|p| p["y"].as_f64().unwrap()).collect();
    let span = |v: &[f64]| v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min);
    assert!(span(&xs) > 100.0 && span(&ys) > 60.0, "points do not follow a moving ball: {e}");
    // Consecutive points are close: one object followed. (While the ball is
    // near where it was during the model's warm-up it merges with that
    // ghost, which moves the centroid once or twice.)
    let jumps = pts
        .windows(2)
        .filter(|w| {
            let d = (w[1]["x"].as_f64().unwrap() - w[0]["x"].as_f64().unwrap())
                .hypot(w[1]["y"].as_f64().unwrap() - w[0]["y"].as_f64().unwrap());
            let df = (w[1]["frame"].as_u64().unwrap() - w[0]["frame"].as_u64().unwrap()) as f64;
            d > 20.0 * df
        })
        .count();
    assert!(jumps <= 4, "{jumps} jumps between points: {e}");
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["frames"], 240, "{summary}");
    // One PNG per event, named in the event: the full-resolution frame with
    // the ball inside the drawn box.
    for e in &events {
        let path = e["snapshot"].as_str().unwrap_or_else(|| panic!("no snapshot in {e}"));
        check_snapshot(path, e, 320, 240);
    }
    assert_eq!(std::fs::read_dir(&snaps).unwrap().count(), events.len());
    let _ = std::fs::remove_dir_all(&snaps);
}

/// Decodes a snapshot PNG and checks it is the `width × height` frame (RGB:
/// the source is colour) with a 2-px green box drawn around the event's peak
/// box (the object on the snapshot's frame) and the object inside it.
fn check_snapshot(path: &str, e: &serde_json::Value, width: u32, height: u32) {
    let file = std::fs::File::open(path).unwrap_or_else(|err| panic!("{path}: {err}"));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG data");
    assert_eq!((info.width, info.height), (width, height), "{path} is not the full frame");
    assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight), "{path}");
    let (w, h) = (width as i64, height as i64);
    let rgb = |x: i64, y: i64| {
        let i = 3 * (y * w + x) as usize;
        [buf[i], buf[i + 1], buf[i + 2]]
    };
    // Gray level of a pixel (the mean of its channels).
    let px = |x: i64, y: i64| (rgb(x, y).iter().map(|&v| u16::from(v)).sum::<u16>() / 3) as u8;
    let b: Vec<i64> = e["peak_bbox"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let (bx, by, bw, bh) = (b[0], b[1], b[2], b[3]);
    assert!(bw > 0 && bh > 0 && bx + bw <= w && by + bh <= h, "{e}");
    // The box: every pixel of the 2-px ring just outside the bbox (inside the
    // frame) is green.
    let mut ring = Vec::new();
    for y in by - 2..by + bh + 2 {
        for x in bx - 2..bx + bw + 2 {
            let on_ring = y < by || y >= by + bh || x < bx || x >= bx + bw;
            if on_ring && (0..w).contains(&x) && (0..h).contains(&y) {
                ring.push(rgb(x, y));
            }
        }
    }
    assert!(ring.len() >= 8, "{path}: box entirely outside the frame? {e}");
    // The object: inside the box, pixels clearly differ from the frame's
    // background (its median outside the box).
    let mut outside: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .filter(|&(x, y)| x < bx - 2 || x >= bx + bw + 2 || y < by - 2 || y >= by + bh + 2)
        .map(|(x, y)| px(x, y))
        .collect();
    outside.sort_unstable();
    let background = i32::from(outside[outside.len() / 2]);
    assert!(ring.iter().all(|&v| v == [0, 255, 0]), "{path}: no complete green box around {b:?}");
    // Colour survived: the frame is not gray everywhere (videotestsrc's ball
    // scene has a coloured ball).
    let coloured = (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).filter(|&(x, y)| {
        let [r, g, b] = rgb(x, y);
        r.abs_diff(g) > 40 || g.abs_diff(b) > 40
    });
    assert!(coloured.count() > ring.len(), "{path}: no colour in the snapshot");
    let differing = (by..by + bh)
        .flat_map(|y| (bx..bx + bw).map(move |x| (x, y)))
        .filter(|&(x, y)| (i32::from(px(x, y)) - background).abs() > 60)
        .count();
    assert!(differing >= 20, "{path}: only {differing} pixels inside {b:?} differ from the background {background}");
}

/// A static scene with sensor noise gives nothing, without any --mask (the
/// status band is the stream's overlay region).
#[test]
fn static_noisy_scene_gives_no_events() {
    let name = unique("static");
    let det = Proc::spawn("shmcast-detect", &mut detector(&name, &["--exit-on-close"])).segment(&name);
    let args = ["--format", "nv12", "--fps", "0", "--noise", "4", "--frames", "900", "--slots", "1024", "--seed", "5"];
    let prod = Proc::spawn("shmcast-producer", &mut testsrc(&name, 1280, 720, &args)).output(LONG);
    assert!(prod.status.success(), "producer failed:\n{}", show(&prod));
    let out = det.output(LONG);
    assert!(out.status.success(), "{}", show(&out));
    let lines = json_lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(lines.len(), 1, "expected only the summary:\n{}", show(&out));
    assert_eq!(lines[0]["type"], "summary");
    assert_eq!(lines[0]["events"], 0);
    assert_eq!(lines[0]["frames"], 900);
}

/// The detector follows a producer restart (new epoch) without being
/// restarted, and SIGTERM ends it with the summary and exit 0.
#[test]
fn follows_producer_restart_and_exits_cleanly_on_sigterm() {
    let name = unique("restart");
    let mut det = Proc::spawn("shmcast-detect", &mut detector(&name, &[])).segment(&name);
    // A deep ring: this test is about following restarts, not speed, so a
    // detector descheduled on a loaded machine must not be lapped.
    let args = ["--format", "gray8", "--fps", "200", "--frames", "200", "--slots", "256"];
    det.wait_for_line("waiting for the producer", LONG);
    for run in 0..2 {
        let prod = Proc::spawn("shmcast-producer", &mut testsrc(&name, 640, 480, &args)).output(LONG);
        assert!(prod.status.success(), "producer run {run} failed:\n{}", show(&prod));
        assert!(det.try_exit().is_none(), "detector exited after producer run {run}:\n{}", det.stderr());
    }
    det.signal("TERM");
    let out = det.output(LONG);
    assert!(out.status.success(), "{}", show(&out));
    let lines = json_lines(&String::from_utf8_lossy(&out.stdout));
    let summary = lines.last().expect("summary line");
    assert_eq!(summary["type"], "summary", "{}", show(&out));
    assert_eq!(summary["attaches"], 2, "{summary}");
    // Both runs were read from their oldest frame: every frame is read or,
    // if the 256-slot ring lapped a detector descheduled for over a second,
    // counted lost — also those of the first producer still unread when the
    // second one replaced it.
    let (frames, lost) = (summary["frames"].as_u64().unwrap(), summary["lost"].as_u64().unwrap());
    assert_eq!(frames + lost, 400, "{summary}");
    assert!(frames > 300, "{summary}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("attached to producer").count(), 2, "{stderr}");
    assert!(stderr.contains("producer gone"), "{stderr}");
}

/// No producer within --attach-timeout: one error line, exit 1.
#[test]
fn missing_producer_times_out() {
    let name = unique("missing");
    let mut c = Command::new(DETECT);
    c.args(["--name", &name, "--attach-timeout", "0.5"]);
    let out = Proc::spawn("shmcast-detect", &mut c).output(LONG);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("shmcast-detect: error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("no producer") && errors[0].contains(&name), "{stderr}");
}

/// Bad arguments are one clear line, not a panic.
#[test]
fn bad_arguments_are_refused() {
    let out = Command::new(DETECT).args(["--mask", "1,2,3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("x,y,w,h"), "{}", show(&out));
    let out = Command::new(DETECT).args(["--name", "bad/name", "--attach-timeout", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", show(&out));
}

/// A producer far faster than the detector with a 2-slot ring: the detector
/// is lapped, counts lost frames (and overruns, when a slot is overwritten
/// while it is read), keeps going and reports consistent totals.
#[test]
fn overload_counts_lost_frames_and_keeps_running() {
    let name = unique("overload");
    let det = Proc::spawn("shmcast-detect", &mut detector(&name, &["--exit-on-close"])).segment(&name);
    let args = ["--format", "rgb24", "--fps", "0", "--noise", "4", "--frames", "1500", "--slots", "2"];
    let prod = Proc::spawn("shmcast-producer", &mut testsrc(&name, 1280, 720, &args)).output(LONG);
    assert!(prod.status.success(), "producer failed:\n{}", show(&prod));
    let out = det.output(LONG);
    assert!(out.status.success(), "{}", show(&out));
    let lines = json_lines(&String::from_utf8_lossy(&out.stdout));
    let s = lines.last().expect("summary");
    assert_eq!(s["type"], "summary", "{}", show(&out));
    let (frames, lost, overruns) =
        (s["frames"].as_u64().unwrap(), s["lost"].as_u64().unwrap(), s["overruns"].as_u64().unwrap());
    assert!(lost > 0, "{s}");
    assert!(frames + lost <= 1500 && overruns <= frames, "{s}");
}

/// `--mask-file` with a PNG drawn by ffmpeg (another tool, at another size:
/// scaled to the stream) that blacks out the left half of the frame: the test
/// pattern's injected events there give no event at all, those in the right
/// half are still found.
#[test]
fn mask_file_drawn_by_ffmpeg_hides_its_region() {
    let name = unique("maskfile");
    let dir = std::env::temp_dir().join(format!("shmcast-maskfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mask = dir.join("mask.png");
    let truth = dir.join("truth.jsonl");
    let ff = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=white:s=320x180"])
        .args(["-vf", "drawbox=x=0:y=0:w=160:h=180:color=black:t=fill", "-frames:v", "1"])
        .arg(&mask)
        .output()
        .expect("run ffmpeg (installed by scripts/setup.sh)");
    assert!(ff.status.success(), "ffmpeg failed:\n{}", show(&ff));
    let mask_arg = mask.display().to_string();
    let det = Proc::spawn("shmcast-detect", &mut detector(&name, &["--exit-on-close", "--mask-file", &mask_arg]))
        .segment(&name);
    let truth_arg = truth.display().to_string();
    let args = ["--format", "gray8", "--fps", "0", "--noise", "4", "--frames", "1500", "--slots", "2048"];
    let args2 = ["--events", "20", "--seed", "3", "--truth", &truth_arg];
    let prod =
        Proc::spawn("shmcast-producer", &mut testsrc(&name, 1280, 720, &[&args[..], &args2[..]].concat())).output(LONG);
    assert!(prod.status.success(), "producer failed:\n{}", show(&prod));
    let out = det.output(LONG);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mask image"), "{}", show(&out));
    let lines = json_lines(&String::from_utf8_lossy(&out.stdout));
    let summary = lines.last().expect("summary");
    assert_eq!((&summary["type"], &summary["frames"], &summary["lost"]), (&"summary".into(), &1500.into(), &0.into()));
    let events: Vec<_> = lines.iter().filter(|v| v["type"] != "summary").collect();
    let truth = json_lines(&std::fs::read_to_string(&truth).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    let bbox = |v: &serde_json::Value| -> [u64; 4] { std::array::from_fn(|i| v["bbox"][i].as_u64().unwrap()) };
    // Nothing is detected in the masked half, not even the part of an event
    // that crosses into the other half.
    for e in &events {
        assert!(bbox(e)[0] >= 640, "event in the masked half: {e}");
    }
    let left: Vec<_> = truth.iter().filter(|t| bbox(t)[0] + bbox(t)[2] < 640).collect();
    let right: Vec<_> = truth.iter().filter(|t| bbox(t)[0] >= 648).collect();
    assert!(left.len() >= 3 && right.len() >= 3, "seed gives {} events left, {} right", left.len(), right.len());
    // Events wholly in the analysed half are found (frames overlap, boxes intersect).
    let found = right
        .iter()
        .filter(|t| {
            let (tb, f0, f1) = (bbox(t), t["start_frame"].as_u64().unwrap(), t["end_frame"].as_u64().unwrap());
            events.iter().any(|e| {
                let (eb, e0, e1) = (bbox(e), e["start_frame"].as_u64().unwrap(), e["end_frame"].as_u64().unwrap());
                e0 <= f1
                    && f0 <= e1
                    && eb[0] <= tb[0] + tb[2]
                    && tb[0] <= eb[0] + eb[2]
                    && eb[1] <= tb[1] + tb[3]
                    && tb[1] <= eb[1] + eb[3]
            })
        })
        .count();
    assert!(10 * found >= 9 * right.len(), "found {found} of {} events in the analysed half", right.len());
}

/// Under a burst of events with snapshots (the test pattern with 200 events
/// per 1000 frames, 960x540 colour frames whose PNGs take longer to write
/// than the detector takes per frame, fed as fast as it reads them), every event line that names a
/// snapshot is read only when that file is already complete; an event
/// without a snapshot says why (`snapshot_error`), and every PNG written is
/// named by an event.
#[test]
fn events_are_emitted_after_their_snapshots_are_written() {
    let name = unique("snapburst");
    let snaps = std::env::temp_dir().join(format!("shmcast-snapburst-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&snaps);
    let snaps_arg = snaps.display().to_string();
    let mut det = Proc::spawn("shmcast-detect", &mut detector(&name, &["--exit-on-close", "--snapshots", &snaps_arg]))
        .segment(&name);
    // A ring holding every frame (1.6 GB of /dev/shm): the detector sees all of them.
    let args = ["--format", "nv12", "--fps", "0", "--noise", "4", "--events", "200", "--frames", "2000"];
    let mut prod = Proc::spawn(
        "shmcast-producer",
        &mut testsrc(&name, 960, 540, &[&args[..], &["--slots", "2048", "--seed", "8"]].concat()),
    );
    // Read the event lines as they appear (as a consumer of the stream
    // would), checking each one's snapshot at once.
    let deadline = Instant::now() + LONG;
    let (mut read, mut named, mut without) = (0, Vec::new(), 0);
    let mut summary = None;
    loop {
        let exited = det.try_exit().is_some();
        let text = det.stdout();
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        for line in complete.lines().skip(read) {
            read += 1;
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if v["type"] == "summary" {
                summary = Some(v);
                continue;
            }
            match v["snapshot"].as_str() {
                Some(p) => {
                    assert!(Path::new(p).is_file(), "event line readable before its snapshot {p} exists: {line}");
                    named.push(p.to_string());
                }
                None => {
                    assert!(v["snapshot_error"].is_string(), "no snapshot and no snapshot_error: {line}");
                    without += 1;
                }
            }
        }
        if exited {
            break;
        }
        assert!(Instant::now() < deadline, "detector still running after {LONG:?}:\n{}", det.stderr());
        std::thread::sleep(Duration::from_millis(2));
    }
    let p = prod.wait_exit(LONG);
    assert!(p.success(), "producer failed:\n{}", prod.stderr());
    let out = det.output(LONG);
    assert!(out.status.success(), "{}", show(&out));
    let summary = summary.expect("summary line");
    assert_eq!((summary["frames"].as_u64(), summary["lost"].as_u64()), (Some(2000), Some(0)), "{summary}");
    assert!(named.len() >= 15, "only {} events with a snapshot: {summary}", named.len());
    assert_eq!((named.len() + without) as u64, summary["events"].as_u64().unwrap(), "{summary}");
    assert_eq!(without as u64, summary["snapshots_dropped"].as_u64().unwrap(), "{summary}");
    // Every PNG in the directory is named by an event, and complete.
    let pngs: Vec<_> = std::fs::read_dir(&snaps).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(pngs.len(), named.len(), "{pngs:?}");
    for p in &named {
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).unwrap())).read_info();
        assert!(dec.is_ok_and(|d| (d.info().width, d.info().height) == (960, 540)), "{p} is not a complete PNG");
    }
    let _ = std::fs::remove_dir_all(&snaps);
}
