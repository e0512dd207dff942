//! `scripts/deploy.sh`: the dry-run commands for the example config (numactl
//! and the taskset fallback), config errors, and a real start: processes
//! pinned, a killed process restarted, `stop` leaving nothing behind; a
//! `[web]` section whose page serves the deployed detector's events and
//! snapshots from the config alone. Also
//! `scripts/monitor_memory.sh` and shellcheck of every shell script.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shmcast_testkit::{
    Deployment, Guard, bin, bin_dir, deploy_sh, describe, pid_alive, pid_of, proc_status_field, repo_root,
    require_tool, script, segment_path, signal, unique_name, wait_for,
};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dry_run_prints_numactl_commands_for_the_example() {
    require_tool("numactl");
    let example = repo_root().join("deploy/example.toml");
    let out = deploy_sh(&["start", "--dry-run", example.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    let b = bin_dir();
    let expect = [
        format!("numactl --physcpubind=0 --membind=0 -- {}/shmcast-producer --name cam0 ", b.display()),
        "--source testsrc --width 1280 --height 720 --format rgb24 --fps 30 --slots 8 --metrics 127.0.0.1:9101 \
         --events 5 --noise 2"
            .to_string(),
        format!("numactl --physcpubind=1 --membind=0 -- {}/shmcast-detect --name cam0 ", b.display()),
        format!("numactl --physcpubind=1 --membind=0 -- {}/shmcast-rtsp --name cam0 ", b.display()),
        "--listen 127.0.0.1:8554 --mount /cam0 --metrics 127.0.0.1:9103".to_string(),
        format!("numactl --physcpubind=1 --membind=0 -- {}/shmcast-record --name cam0 ", b.display()),
        "--dir /tmp/cam0.rec --metrics 127.0.0.1:9104".to_string(),
    ];
    for e in &expect {
        assert!(text.contains(e), "dry run lacks `{e}`:\n{text}");
    }
}

#[test]
fn dry_run_falls_back_to_taskset_and_node_binding() {
    let dir = tempdir("dryrun");
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        "[stream]\nname = \"x1\"\n[producer]\nnuma_node = 0\n[detect]\ncpus = \"0-1\"\n[rtsp]\nnuma_node = 0\ncpus = 1\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let text = stdout(&deploy_sh(&["start", "--dry-run", c], &[]));
    assert!(text.contains("numactl --cpunodebind=0 --membind=0 -- "), "{text}");
    assert!(text.contains("numactl --physcpubind=0-1 -- "), "{text}");
    assert!(text.contains("numactl --physcpubind=1 --membind=0 -- "), "{text}");
    let text = stdout(&deploy_sh(&["start", "--dry-run", c], &[("SHMCAST_DEPLOY_NO_NUMACTL", "1")]));
    // Node 0's CPUs come from sysfs for the producer.
    let node0 = std::fs::read_to_string("/sys/devices/system/node/node0/cpulist").unwrap();
    assert!(text.contains(&format!("taskset -c {} ", node0.trim())), "{text}");
    assert!(text.contains("taskset -c 0-1 "), "{text}");
    assert!(text.contains("taskset -c 1 "), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("numactl")), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn config_errors_are_one_clear_line() {
    let dir = tempdir("badcfg");
    for (body, msg) in [
        ("[stream]\nname = \"bad name\"\n[producer]\n", "stream.name must match"),
        ("[stream]\nname = \"ok\"\n[producer]\ncpus = \"zero\"\n", "producer.cpus must be a CPU list"),
        ("[stream]\nname = \"ok\"\n", "no process to run"),
        ("[stream]\nname = \"ok\"\n[producer]\nfps = \n", "not valid TOML"),
        ("[stream]\nname = \"ok\"\nwidth = true\n[producer]\n", "stream.width: expected int"),
        ("[stream]\nname = \"ok\"\n[prodcuer]\n", "unknown section(s) [prodcuer]"),
    ] {
        let cfg = dir.join("c.toml");
        std::fs::write(&cfg, body).unwrap();
        let out = deploy_sh(&["start", "--dry-run", cfg.to_str().unwrap()], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {}", describe(&out));
        assert!(err.starts_with("deploy: error: ") && err.contains(msg), "{body}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let out = deploy_sh(&["start", "/nonexistent.toml"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"), "{}", describe(&out));
    let _ = std::fs::remove_dir_all(dir);
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("e2e-deploy-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn start_pins_restarts_and_stops_cleanly() {
    for b in ["shmcast-producer", "shmcast-detect", "shmcast-rtsp"] {
        bin(b);
    }
    let name = unique_name("deploy");
    let d = Deployment::new("run", &name);
    let rtsp_port = shmcast_testkit::free_port();
    d.write_config(&format!(
        "[stream]\nname = \"{name}\"\nwidth = 320\nheight = 240\nfps = 15\nslots = 4\n\
             [run]\nbackoff_min = 0.2\nbackoff_max = 1.0\nstop_timeout = 5\n\
             [producer]\nnuma_node = 0\ncpus = \"1\"\n\
             [detect]\ncpus = \"0\"\nargs = [\"--events\", \"/dev/null\"]\n\
             [rtsp]\ncpus = \"0-1\"\nlisten = \"127.0.0.1:{rtsp_port}\"\nmount = \"/t\"\n"
    ));

    let out = d.run(&["start"]);
    assert!(out.status.success(), "{}", describe(&out));
    let st = wait_for(Duration::from_secs(15), || {
        let st = d.status();
        ["producer", "detect", "rtsp"].iter().all(|p| pid_of(&st, p).is_some()).then_some(st)
    })
    .unwrap_or_else(|| panic!("not all processes running: {}", d.status()));
    let pids: Vec<(&str, u32)> = ["producer", "detect", "rtsp"].iter().map(|p| (*p, pid_of(&st, p).unwrap())).collect();
    for (role, pid, want) in [("producer", pids[0].1, "1"), ("detect", pids[1].1, "0"), ("rtsp", pids[2].1, "0-1")] {
        assert_eq!(proc_status_field(pid, "Cpus_allowed_list").as_deref(), Some(want), "{role} pid {pid} placement");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(String::from_utf8_lossy(&cmdline).contains(&format!("shmcast-{role}")), "pid {pid} is not {role}");
    }
    // The producer's segment appears.
    wait_for(Duration::from_secs(10), || segment_path(&name).exists().then_some(()))
        .unwrap_or_else(|| panic!("no segment; producer log:\n{}", d.log("producer")));

    // A crash (SIGKILL) is restarted with a new pid and counted; the others stay.
    signal(pids[0].1, "KILL");
    let st = wait_for(Duration::from_secs(15), || {
        let st = d.status();
        pid_of(&st, "producer").filter(|p| *p != pids[0].1).map(|_| st)
    })
    .unwrap_or_else(|| panic!("producer not restarted: {}\n{}", d.status(), d.log("supervisor")));
    assert_eq!(st["processes"]["producer"]["restarts"], 1, "{st}");
    assert_eq!(st["processes"]["producer"]["last_exit"], "signal SIGKILL", "{st}");
    let new_producer = pid_of(&st, "producer").unwrap();
    assert_eq!(proc_status_field(new_producer, "Cpus_allowed_list").as_deref(), Some("1"));
    assert!(pid_alive(pids[1].1) && pid_alive(pids[2].1), "consumers must survive a producer crash");

    // status (text) names each process.
    let out = d.run(&["status"]);
    let text = stdout(&out);
    assert!(out.status.success() && text.contains("producer") && text.contains("rtsp"), "{}", describe(&out));

    // A second start is refused while running.
    let out = d.run(&["start"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already running"));

    let out = d.run(&["stop"]);
    assert!(out.status.success(), "{}", describe(&out));
    for pid in [new_producer, pids[1].1, pids[2].1] {
        assert!(!pid_alive(pid), "pid {pid} still running after stop");
    }
    assert!(!segment_path(&name).exists(), "segment left after stop");
    for f in ["supervisor.pid", "producer.pid", "detect.pid", "rtsp.pid"] {
        assert!(!d.run_dir().join(f).exists(), "{f} left after stop");
    }
    // Status now says not running (exit 3).
    let out = d.run(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
}

#[test]
fn stop_cleans_up_after_a_killed_supervisor() {
    bin("shmcast-producer");
    let name = unique_name("deploykill");
    let d = Deployment::new("kill", &name);
    d.write_config(&format!("[stream]\nname = \"{name}\"\nwidth = 160\nheight = 120\n[producer]\n"));
    let out = d.run(&["start"]);
    assert!(out.status.success(), "{}", describe(&out));
    let producer = wait_for(Duration::from_secs(10), || d.pid("producer")).unwrap();
    let sup: u32 = std::fs::read_to_string(d.run_dir().join("supervisor.pid")).unwrap().trim().parse().unwrap();
    signal(sup, "KILL");
    wait_for(Duration::from_secs(5), || (!pid_alive(sup)).then_some(())).unwrap();
    assert!(pid_alive(producer));
    signal(producer, "KILL"); // and the producer leaves a stale segment
    wait_for(Duration::from_secs(5), || (!pid_alive(producer)).then_some(())).unwrap();
    assert!(segment_path(&name).exists());
    let out = d.run(&["stop"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!segment_path(&name).exists(), "stale segment left: {}", describe(&out));
}

#[test]
fn monitor_memory_writes_csv_until_the_process_exits() {
    let dir = tempdir("mon");
    let csv = dir.join("m.csv");
    let mut sleeper = Command::new("sleep").arg("1.5").spawn().unwrap();
    let out = Command::new(script("monitor_memory.sh"))
        .args(["--interval", "0.2", "--out", csv.to_str().unwrap(), &format!("sleeper={}", sleeper.id())])
        .output()
        .unwrap();
    let _ = sleeper.wait();
    assert!(out.status.success(), "{}", describe(&out));
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for col in ["time_s", "label", "pid", "rss_kb", "pss_kb", "private_kb", "shared_kb", "anon_kb", "cpu_pct"] {
        assert!(header.contains(&col), "column {col} missing: {header:?}");
    }
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(rows.len() >= 3, "too few samples:\n{text}");
    let rss = header.iter().position(|c| *c == "rss_kb").unwrap();
    let pss = header.iter().position(|c| *c == "pss_kb").unwrap();
    for r in &rows {
        assert_eq!(r.len(), header.len(), "{r:?}");
        assert_eq!(r[2], "sleeper");
        assert!(r[rss].parse::<u64>().unwrap() > 0 && r[pss].parse::<u64>().unwrap() > 0, "{r:?}");
    }
    let bad = Command::new(script("monitor_memory.sh")).arg("notapid").output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", describe(&bad));
    let _ = std::fs::remove_dir_all(dir);
}

/// A process that exits between two reads of one sample (its `/proc/PID/fd`
/// gone under `find`) must cost that sample only: the monitor once ended there
/// (`set -e` with `pipefail`), and the soak test then judged too few samples.
/// Processes living 3 ms each, written one after another into a pidfile and
/// sampled every millisecond, hit that window within seconds; the monitor
/// must run until its `--duration`, not stop at the first vanished process.
#[test]
fn monitor_memory_survives_processes_exiting_mid_sample() {
    let dir = tempdir("monrace");
    let csv = dir.join("m.csv");
    let pidfile = dir.join("churn.pid");
    let churn = format!("while :; do sleep 0.003 & echo $! > '{}'; wait; done", pidfile.display());
    let mut guard = Guard::new();
    guard.spawn("monrace-churn", Command::new("bash").args(["-c", &churn]));
    wait_for(Duration::from_secs(10), || pidfile.exists().then_some(())).expect("the churn loop writes its first pid");
    let duration = Duration::from_secs(5);
    let started = std::time::Instant::now();
    let out = Command::new(script("monitor_memory.sh"))
        .args(["--interval", "0.001", "--duration", &duration.as_secs().to_string(), "--out", csv.to_str().unwrap()])
        .arg(format!("churn=@{}", pidfile.display()))
        .output()
        .unwrap();
    let ran = started.elapsed();
    assert!(out.status.success(), "the monitor failed after {ran:?}: {}", describe(&out));
    // A pidfile target keeps the monitor going while the file exists, so only
    // --duration (or a failure) ends it.
    assert!(ran >= duration, "the monitor stopped after {ran:?}, before its {duration:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Every shell script of the repository (tracked, or new and not ignored):
/// `*.sh` files and files starting with a shell `#!` line.
fn shell_scripts() -> Vec<PathBuf> {
    let root = repo_root();
    let out = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(&root)
        .output()
        .expect("run git ls-files");
    assert!(out.status.success(), "git ls-files: {}", describe(&out));
    let is_shell = |p: &Path| {
        if p.extension().is_some_and(|e| e == "sh") {
            return true;
        }
        let Ok(mut f) = std::fs::File::open(p) else { return false };
        let mut head = [0u8; 128];
        let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
        let first = String::from_utf8_lossy(&head[..n]);
        let first = first.lines().next().unwrap_or("");
        first.starts_with("#!") && ["sh", "bash", "dash"].iter().any(|s| first.split([' ', '/']).any(|w| w == *s))
    };
    let mut scripts: Vec<PathBuf> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| root.join(String::from_utf8_lossy(f).as_ref()))
        .filter(|p| p.is_file() && is_shell(p))
        .collect();
    scripts.sort();
    scripts
}

#[test]
fn operations_scripts_pass_shellcheck() {
    require_tool("shellcheck");
    let scripts = shell_scripts();
    // The repository's scripts at the time of writing: a script must not drop out of the check unnoticed.
    for known in [".ci/run", "scripts/demo.sh", "scripts/hugepages.sh", "scripts/eval-detect.sh", "scripts/test.sh"] {
        assert!(scripts.contains(&repo_root().join(known)), "{known} not found among {scripts:?}");
    }
    let out = Command::new("shellcheck").arg("-x").args(&scripts).current_dir(repo_root()).output().unwrap();
    assert!(out.status.success(), "shellcheck over {} scripts: {}", scripts.len(), describe(&out));
}

/// The systemd units keep the ring writable by the producer alone: consumers
/// run as another user that is only in the producer's group (read access to
/// a mode-0640 object), and the producer cleans a stale segment before it starts.
#[test]
fn systemd_units_separate_the_writer_from_the_readers() {
    let dir = shmcast_testkit::repo_root().join("deploy/systemd");
    let key = |unit: &str, k: &str| -> Option<String> {
        let text = std::fs::read_to_string(dir.join(unit)).unwrap_or_else(|e| panic!("{unit}: {e}"));
        text.lines().find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
    };
    let producer = "shmcast-producer@.service";
    let (p_user, p_group) = (key(producer, "User").unwrap(), key(producer, "Group").unwrap());
    assert!(
        key(producer, "ExecStartPre").is_some_and(|c| c.contains("shmcast-inspect --clean --name %i")),
        "the producer unit does not clean a stale segment first"
    );
    for unit in ["shmcast-detect@.service", "shmcast-rtsp@.service"] {
        let user = key(unit, "User").unwrap_or_else(|| panic!("{unit}: no User="));
        assert_ne!(user, p_user, "{unit} runs as the producer's user: it could truncate the ring");
        assert_ne!(key(unit, "Group"), Some(p_group.clone()), "{unit} runs in the producer's primary group");
        let groups = key(unit, "SupplementaryGroups").unwrap_or_default();
        assert!(groups.split_whitespace().any(|g| g == p_group), "{unit} cannot read the ring (not in {p_group})");
    }
}

fn curl(url: &str) -> Option<Vec<u8>> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", url])
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl (run scripts/setup.sh): {e}"));
    out.status.success().then_some(out.stdout)
}

#[test]
fn web_section_serves_what_the_deployed_detector_writes() {
    for b in ["shmcast-producer", "shmcast-detect", "shmcast-web"] {
        bin(b);
    }
    let name = unique_name("deployweb");
    let d = Deployment::new("web", &name);
    let events = d.dir().join("events.jsonl");
    // Not created here: the web server (or the detector) makes it.
    let snaps = d.dir().join("snaps");
    let port = shmcast_testkit::free_port();
    d.write_config(&format!(
        "[stream]\nname = \"{name}\"\nwidth = 640\nheight = 360\nfps = 30\n\
             [run]\nstop_timeout = 5\n\
             [producer]\nargs = [\"--events\", \"100\", \"--noise\", \"2\"]\n\
             [detect]\nargs = [\"--events\", \"{}\", \"--snapshots={}\"]\n\
             [web]\nlisten = \"127.0.0.1:{port}\"\n",
        events.display(),
        snaps.display()
    ));

    let dry = stdout(&d.run(&["start", "--dry-run"]));
    let want =
        format!("/shmcast-web --listen 127.0.0.1:{port} --config {}", d.config().canonicalize().unwrap().display());
    assert!(dry.contains(&want), "dry run lacks `{want}`:\n{dry}");

    let out = d.run(&["start"]);
    assert!(out.status.success(), "{}", describe(&out));
    let base = format!("http://127.0.0.1:{port}");
    // An event of this stream with its picture, found by the web page from the config alone.
    let ev = wait_for(Duration::from_secs(60), || {
        let body = curl(&format!("{base}/api/events?stream={name}"))?;
        let list: Vec<serde_json::Value> = serde_json::from_slice(&body).ok()?;
        list.into_iter().find(|e| e.get("snapshot_url").is_some())
    })
    .unwrap_or_else(|| {
        panic!(
            "no event with a snapshot from the deployed detector\nweb log:\n{}\ndetect log:\n{}",
            d.log("web"),
            d.log("detect")
        )
    });
    assert_eq!(ev["stream"], name.as_str());
    let jpeg = curl(&format!("{base}{}", ev["snapshot_url"].as_str().unwrap())).expect("snapshot");
    assert!(jpeg.starts_with(&[0xff, 0xd8]), "not a JPEG");
    let web_pid = d.pid("web").expect("web pid");

    let out = d.run(&["stop"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!pid_alive(web_pid), "shmcast-web still running after stop");
}
