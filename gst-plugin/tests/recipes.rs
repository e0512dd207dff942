//! The documented recipes for leaving the host, end to end: a producer's ring
//! read by `shmcastsrc`, encoded by GStreamer, and received by a real
//! third-party receiver — ffmpeg's SRT client, a gst-rtsp-server instance in
//! RECORD mode, ffprobe on an HLS playlist and its segments, ffprobe on
//! splitmuxsink's rolling MP4 files (also after SIGKILL with fragmented MP4).
#![forbid(unsafe_code)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(90);
/// The encoder part every recipe shares (what docs/gst-plugin.md shows).
const H264: &str = "videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 \
     ! h264parse config-interval=-1";

/// A 640x360 I420 test-pattern producer at 30 fps, live.
fn start_producer(g: &mut Guard, name: &str) {
    g.segment(name);
    let l = |x: &str| format!("{name}.{x}");
    producer(g, &l("producer"), name, &["--width", "640", "--height", "360", "--format", "i420", "--fps", "30"]);
    wait_live(g, name, &l("producer"));
}

fn temp_dir(g: &mut Guard, tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shmcast-recipe-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    g.path(&d);
    d
}

/// ffprobe's `codec_name,width,height` and packet count of the first video stream.
fn probe(path: &Path) -> Result<(String, u64), String> {
    require_tool("ffprobe");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_packets"])
        .args(["-show_entries", "stream=codec_name,width,height,nb_read_packets", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    // HLS lists the stream once per program too: the first line is enough.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = stdout.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string();
    if !out.status.success() || text.is_empty() {
        return Err(format!("ffprobe {}: {}", path.display(), describe(&out)));
    }
    let (stream, packets) = text.rsplit_once(',').ok_or_else(|| format!("ffprobe output {text:?}"))?;
    Ok((stream.to_string(), packets.parse().map_err(|_| format!("ffprobe output {text:?}"))?))
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == ext)).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn srt_recipe_is_read_by_ffmpeg() {
    require_tool("ffmpeg");
    let name = unique_name("srt");
    let l = |x: &str| format!("{name}.{x}");
    let mut g = Guard::new();
    start_producer(&mut g, &name);
    let port = free_port();
    let pipeline = format!(
        "shmcastsrc stream={name} ! {H264} ! mpegtsmux alignment=7 ! srtsink uri=srt://:{port} wait-for-connection=false"
    );
    g.spawn(&l("sender"), &mut launch(&[], &pipeline));
    wait_for(LONG, || g.log(&l("sender")).contains("Setting pipeline to PLAYING").then_some(()))
        .unwrap_or_else(|| panic!("sender did not start:\n{}", g.log(&l("sender"))));
    // The listener may need a moment after PLAYING: retry the client until it reads.
    let out = wait_for(LONG, || {
        let out = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-loglevel", "info", "-i", &format!("srt://127.0.0.1:{port}")])
            .args(["-frames:v", "60", "-f", "null", "-"])
            .output()
            .ok()?;
        out.status.success().then_some(out)
    })
    .unwrap_or_else(|| panic!("ffmpeg never read the SRT stream; sender:\n{}", g.log(&l("sender"))));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Video: h264") && err.contains("640x360"), "{err}");
    assert!(err.contains("frame=   60"), "{err}");
}

#[test]
fn rtspclientsink_recipe_is_received_by_an_rtsp_record_server() {
    // The Debian python3 has the gi bindings (python3-gi); a python3 earlier
    // on PATH (a virtualenv, pyenv) may not.
    let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let name = unique_name("rtsprec");
    let l = |x: &str| format!("{name}.{x}");
    let mut g = Guard::new();
    start_producer(&mut g, &name);
    let port = free_port();
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rtsp_record_server.py");
    g.spawn(&l("server"), Command::new(python).arg(server).arg(port.to_string()).arg("cam"));
    wait_for(LONG, || g.log(&l("server")).contains("READY").then_some(()))
        .unwrap_or_else(|| panic!("RTSP RECORD server did not start:\n{}", g.log(&l("server"))));
    let pipeline = format!(
        "shmcastsrc stream={name} ! {H264} ! rtspclientsink location=rtsp://127.0.0.1:{port}/cam protocols=tcp"
    );
    g.spawn(&l("sender"), &mut launch(&[], &pipeline));
    wait_for(LONG, || g.log(&l("server")).contains("received 60 frames 640x360").then_some(()))
        .unwrap_or_else(|| panic!("server got no frames:\n{}\nsender:\n{}", g.log(&l("server")), g.log(&l("sender"))));
}

#[test]
fn hls_recipe_playlist_and_segments_are_read_by_ffprobe() {
    let name = unique_name("hls");
    let l = |x: &str| format!("{name}.{x}");
    let mut g = Guard::new();
    start_producer(&mut g, &name);
    let dir = temp_dir(&mut g, "hls");
    let playlist = dir.join("playlist.m3u8");
    let pipeline = format!(
        "shmcastsrc stream={name} ! {H264} ! hlssink2 target-duration=1 max-files=10 playlist-length=5 \
         location={}/seg%05d.ts playlist-location={}",
        dir.display(),
        playlist.display()
    );
    let pid = g.spawn(&l("hls"), &mut launch(&["-e"], &pipeline));
    let segments =
        |text: &str| -> Vec<String> { text.lines().filter(|l| l.ends_with(".ts")).map(str::to_string).collect() };
    wait_for(LONG, || (segments(&std::fs::read_to_string(&playlist).ok()?).len() >= 3).then_some(()))
        .unwrap_or_else(|| panic!("no playlist with 3 segments:\n{}", g.log(&l("hls"))));
    // While live, ffprobe reads the playlist like a player joining.
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height"])
        .args(["-of", "csv=p=0"])
        .arg(&playlist)
        .output()
        .unwrap();
    let first = String::from_utf8_lossy(&out.stdout).lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string);
    assert_eq!(first.as_deref(), Some("h264,640,360"), "{}", describe(&out));
    // Stopped with EOS (-e), the playlist is closed (#EXT-X-ENDLIST) and every
    // segment it lists is complete.
    signal(pid, "INT");
    let status = wait_for(LONG, || g.child(&l("hls")).try_wait().ok().flatten())
        .unwrap_or_else(|| panic!("HLS pipeline did not stop on SIGINT:\n{}", g.log(&l("hls"))));
    assert!(status.success(), "{status}:\n{}", g.log(&l("hls")));
    let text = std::fs::read_to_string(&playlist).unwrap();
    assert!(text.contains("#EXT-X-ENDLIST"), "{text}");
    let (stream, packets) = probe(&playlist).unwrap();
    assert_eq!(stream, "h264,640,360");
    assert!(packets > 0, "{packets} packets through the playlist");
    for s in segments(&text) {
        let path = if Path::new(&s).is_absolute() { PathBuf::from(&s) } else { dir.join(&s) };
        let (stream, packets) = probe(&path).unwrap();
        assert_eq!(stream, "h264,640,360", "{s}");
        assert!(packets > 0, "{s}: no packets");
    }
}

#[test]
fn splitmuxsink_recipe_files_are_read_by_ffprobe_after_a_clean_stop() {
    let name = unique_name("mp4");
    let l = |x: &str| format!("{name}.{x}");
    let mut g = Guard::new();
    start_producer(&mut g, &name);
    let dir = temp_dir(&mut g, "mp4");
    let pipeline = format!(
        "shmcastsrc stream={name} ! {H264} ! splitmuxsink max-size-time=1000000000 location={}/rec%05d.mp4",
        dir.display()
    );
    let pid = g.spawn(&l("rec"), &mut launch(&["-e"], &pipeline));
    wait_for(LONG, || (files_with(&dir, "mp4").len() >= 3).then_some(()))
        .unwrap_or_else(|| panic!("no 3 files:\n{}", g.log(&l("rec"))));
    signal(pid, "INT");
    let status = wait_for(LONG, || g.child(&l("rec")).try_wait().ok().flatten())
        .unwrap_or_else(|| panic!("recording did not stop on SIGINT:\n{}", g.log(&l("rec"))));
    assert!(status.success(), "{status}:\n{}", g.log(&l("rec")));
    for f in files_with(&dir, "mp4") {
        let (stream, packets) = probe(&f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stream, "h264,640,360", "{}", f.display());
        assert!(packets > 0, "{}: no packets", f.display());
    }
}

#[test]
fn splitmuxsink_fragmented_mp4_files_survive_sigkill() {
    let name = unique_name("fmp4");
    let l = |x: &str| format!("{name}.{x}");
    let mut g = Guard::new();
    start_producer(&mut g, &name);
    let dir = temp_dir(&mut g, "fmp4");
    // filesink unbuffered: what the muxer wrote is in the file even if the
    // process dies the next instant.
    let pipeline = format!(
        "shmcastsrc stream={name} ! {H264} ! splitmuxsink max-size-time=2000000000 async-finalize=true \
         muxer-factory=mp4mux muxer-properties=properties,fragment-duration=(uint)200 \
         sink-properties=properties,buffer-mode=unbuffered location={}/rec%05d.mp4",
        dir.display()
    );
    let pid = g.spawn(&l("rec"), &mut launch(&[], &pipeline));
    // Kill it while a file is being written: two finished files and a third
    // with at least one fragment in it.
    let seen = wait_for(LONG, || {
        let files = files_with(&dir, "mp4");
        (files.len() >= 3 && probe(files.last()?).is_ok_and(|(_, n)| n > 0)).then_some(files)
    })
    .unwrap_or_else(|| panic!("no 3 files:\n{}", g.log(&l("rec"))));
    signal(pid, "KILL");
    let _ = g.child(&l("rec")).wait();
    let files = files_with(&dir, "mp4");
    // Every file seen with data is readable, the one being written included.
    // A file splitmuxsink opened in the instant between that look and the
    // kill may hold nothing yet; there can be at most one.
    assert!(files.len() <= seen.len() + 1, "{files:?}");
    for f in &seen {
        let (stream, packets) = probe(f).unwrap_or_else(|e| panic!("after SIGKILL: {e}"));
        assert_eq!(stream, "h264,640,360", "{}", f.display());
        assert!(packets > 0, "{}: no packets", f.display());
    }
}
