//! The detector on the short evaluation corpus: night-sky clips rendered by
//! scripts/make-corpus.py (numpy scene, ffmpeg H.264 / MJPEG), fed through
//! shmcast-producer's GStreamer source (filesrc ! decodebin), scored by
//! scripts/score-corpus.py. Asserts the quality targets on those clips:
//! meteor recall and precision ≥ 0.95 per condition, type right ≥ 90 %, an
//! aircraft pass is at most two events, no false event on the static sky.
//! (The full corpus runs from `scripts/eval-detect.sh`.)
#![forbid(unsafe_code)]

mod detect_common;

use detect_common::*;

#[test]
fn short_corpus_meets_quality_targets() {
    let out_dir = std::env::temp_dir().join(format!("shmcast-corpus-test-{}", std::process::id()));
    let bin_dir = producer_bin().parent().unwrap().to_path_buf();
    let out = eval_detect("ci")
        .env("OUT", &out_dir)
        .env("BIN_DIR", &bin_dir)
        .output()
        .expect("run scripts/eval-detect.sh ci (needs bash; scripts/setup.sh installs the rest)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let _ = std::fs::remove_dir_all(&out_dir);
    assert!(out.status.success(), "evaluation failed:\n{}", show(&out));
    let score = json_lines(&text).into_iter().find(|v| v.get("overall").is_some()).expect("score line");
    let overall = &score["overall"];
    assert!(overall["recall"].as_f64().unwrap() >= 0.95, "{score}");
    assert!(overall["precision"].as_f64().unwrap() >= 0.95, "{score}");
    assert!(overall["type_right"].as_f64().unwrap() >= 0.90, "{score}");
    assert_eq!(score["failures"].as_u64(), Some(0), "{score}");
    // The corpus has meteors, an aircraft, a satellite and a static sky.
    assert!(text.contains("static sky: 0 false events"), "{text}");
    let planes = overall["plane_pieces"].as_array().unwrap();
    assert!(!planes.is_empty() && planes.iter().all(|p| (1..=2).contains(&p.as_u64().unwrap())), "{score}");
}
