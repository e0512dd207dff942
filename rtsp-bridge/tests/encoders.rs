//! `--encoder` against a GStreamer that really cannot see the encoders.
//!
//! The encoder plugins are installed on the test machines, so the "not
//! installed" paths are tested by running the bridge with a registry of its
//! own: `GST_PLUGIN_SYSTEM_PATH_1_0` is a temporary directory holding symlinks
//! to just the plugins the bridge's pipelines use, `GST_PLUGIN_PATH_1_0` is
//! empty and `GST_REGISTRY_1_0` is a fresh file, so the machine's registry
//! cache (which lists every installed plugin) is not reused.
#![forbid(unsafe_code)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Plugins the bridge's H.264 media needs besides the encoder: appsrc (app),
/// videoscale + videoconvert (videoconvertscale), capsfilter/queue/tee/funnel
/// (coreelements), rtph264pay/rtpjpegpay (rtp), and what gst-rtsp-server builds
/// around the payloader: rtpbin (rtpmanager; without it every DESCRIBE gets
/// 503) and udpsrc/udpsink for UDP clients (udp; the raw client below uses
/// TCP, so it works without them).
const BASE_PLUGINS: &[&str] = &["coreelements", "app", "videoconvertscale", "rtp", "rtpmanager", "udp"];
/// openh264enc (gstreamer1.0-plugins-bad).
const OPENH264_PLUGIN: &str = "openh264";

/// GStreamer's system plugin directory: pkg-config's answer (gstreamer-rs
/// needs pkg-config and the .pc files to build at all), else Debian's path.
fn system_plugin_dir() -> PathBuf {
    let from_pkg_config = Command::new("pkg-config")
        .args(["--variable=pluginsdir", "gstreamer-1.0"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|d| d.join("libgstcoreelements.so").exists());
    let dir = from_pkg_config.unwrap_or_else(|| PathBuf::from("/usr/lib/x86_64-linux-gnu/gstreamer-1.0"));
    assert!(
        dir.join("libgstcoreelements.so").exists(),
        "GStreamer's plugin directory not found (tried pkg-config --variable=pluginsdir gstreamer-1.0 and {}): \
         run scripts/setup.sh",
        dir.display()
    );
    dir
}

/// A private plugin directory and registry file; removed on drop.
struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// Links `plugins` (names without `libgst`/`.so`) from the system directory.
    fn with(tag: &str, plugins: &[&str]) -> Registry {
        let system = system_plugin_dir();
        let dir = std::env::temp_dir().join(format!("shmcast-encoders-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("plugins")).expect("create the test's plugin dir");
        let reg = Registry { dir };
        for p in plugins {
            let file = format!("libgst{p}.so");
            let src = system.join(&file);
            assert!(src.exists(), "{} is missing: run scripts/setup.sh", src.display());
            std::os::unix::fs::symlink(&src, reg.plugins().join(&file)).expect("symlink a plugin");
        }
        reg
    }

    fn plugins(&self) -> PathBuf {
        self.dir.join("plugins")
    }

    /// The bridge with this registry only. The un-suffixed variables are
    /// removed too: GStreamer reads them when the `_1_0` ones are unset.
    fn bridge(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_shmcast-rtsp"));
        c.args(args)
            .env("GST_PLUGIN_SYSTEM_PATH_1_0", self.plugins())
            .env("GST_PLUGIN_PATH_1_0", "")
            .env("GST_REGISTRY_1_0", self.dir.join("registry.bin"))
            .env_remove("GST_PLUGIN_SYSTEM_PATH")
            .env_remove("GST_PLUGIN_PATH")
            .env_remove("GST_REGISTRY")
            .stdin(Stdio::null());
        c
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the bridge (no producer; `--attach-timeout` bounds the run should it
/// wrongly start) and returns its one error line after checking exit status 1
/// and that stderr holds nothing else.
fn expect_one_error_line(reg: &Registry, encoder: &str) -> String {
    let name = unique(&format!("enc-{encoder}"));
    let out = reg
        .bridge(&["--name", &name, "--listen", "127.0.0.1:0", "--attach-timeout", "5", "--encoder", encoder])
        .output()
        .expect("run shmcast-rtsp");
    let err = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "--encoder {encoder}: expected exit 1; stderr:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "--encoder {encoder}: expected one line; stderr:\n{err}");
    assert!(lines[0].starts_with("shmcast-rtsp: error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_string()
}

#[test]
fn no_encoder_installed_is_one_clear_error() {
    let reg = Registry::with("none", BASE_PLUGINS);
    let e = expect_one_error_line(&reg, "auto");
    assert!(e.contains("no H.264 encoder installed"), "{e}");
    assert!(e.contains("gstreamer1.0-plugins-ugly (x264enc)"), "{e}");
    assert!(e.contains("gstreamer1.0-plugins-bad (openh264enc)"), "{e}");

    for (flag, element, package) in
        [("x264", "x264enc", "gstreamer1.0-plugins-ugly"), ("openh264", "openh264enc", "gstreamer1.0-plugins-bad")]
    {
        let e = expect_one_error_line(&reg, flag);
        assert!(e.contains(&format!("{element} is not installed (install {package})")), "{e}");
        assert!(e.contains("no other H.264 encoder is installed either"), "{e}");
    }
}

#[test]
fn missing_x264_with_openh264_installed_points_to_openh264() {
    let reg = Registry::with("openh264-only", &[BASE_PLUGINS, &[OPENH264_PLUGIN]].concat());
    let e = expect_one_error_line(&reg, "x264");
    assert!(e.contains("--encoder x264: x264enc is not installed (install gstreamer1.0-plugins-ugly)"), "{e}");
    assert!(e.contains("openh264enc is installed: use --encoder openh264 or --encoder auto"), "{e}");
}

/// Positive control for the two tests above (the private registry does find
/// what is linked into it, and that set is all a stream needs): with openh264
/// linked in, `--encoder auto` picks openh264enc, and a client gets frames.
#[test]
fn auto_picks_openh264_when_x264_is_missing_and_serves() {
    let reg = Registry::with("auto-openh264", &[BASE_PLUGINS, &[OPENH264_PLUGIN]].concat());
    let name = unique("enc-auto");
    let _p = producer(&name, 320, 240, "i420");
    let mut b =
        Proc::spawn("shmcast-rtsp", &mut reg.bridge(&["--name", &name, "--listen", "127.0.0.1:0", "--mount", "/test"]));
    let listening = b.wait_for_line("listening", Duration::from_secs(30));
    assert!(listening.contains("encoder=\"openh264enc\"") || listening.contains("encoder=openh264enc"), "{listening}");
    let url = url_in(&b.wait_for_line("serving", Duration::from_secs(30)));
    let mut c = RtspClient::connect(&url).expect("connect to the bridge");
    c.play(&url).unwrap_or_else(|r| panic!("PLAY refused: {r:?}\nbridge:\n{}", b.log()));
    let got = c.receive_frames(30, Duration::from_secs(20));
    assert_eq!(got, 30, "openh264 stream: too few frames; bridge:\n{}", b.log());
    c.teardown(&url);
}
