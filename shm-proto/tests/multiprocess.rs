//! Multi-process tests on real shared memory. Child processes are this test
//! binary re-executed with `SHM_CHILD` set: the `child` test then plays the
//! role named there and prints `RESULT <json-ish>` lines the parent parses.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shm_proto::{
    CreateError, CreateOptions, Event, Follower, FrameMeta, Next, OpenError, PixelFormat, ProducerStatus, Reader,
    ReaderOptions, VideoFormat, Writer,
};

// ---------------------------------------------------------------- helpers

fn unique(tag: &str) -> String {
    format!("mp-{tag}-{}", std::process::id())
}

/// Kills the child and removes the segment on drop, even when a test fails.
struct Guard {
    children: Vec<Child>,
    names: Vec<String>,
}

impl Guard {
    fn new(names: &[&str]) -> Guard {
        Guard { children: vec![], names: names.iter().map(|s| s.to_string()).collect() }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.names {
            let _ = std::fs::remove_file(format!("/dev/shm/shmcast.{n}"));
        }
    }
}

fn spawn_child(role: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("SHM_CHILD", role)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// Reads the child's `RESULT k=v k=v` line.
fn result_of(child: &mut Child) -> HashMap<String, String> {
    let out = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(out).lines();
    while let Some(line) = lines.next() {
        let line = line.unwrap();
        // libtest prints "test child ... " without a newline before the test runs.
        if let Some(rest) = line.split_once("RESULT ").map(|(_, r)| r.to_string()) {
            // Keep draining so the child never writes into a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return rest
                .split_whitespace()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
        }
    }
    panic!("child printed no RESULT line (status {:?})", child.wait());
}

fn num(m: &HashMap<String, String>, k: &str) -> u64 {
    m.get(k).unwrap_or_else(|| panic!("no {k} in {m:?}")).parse().unwrap()
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The payload of frame `seq`: every 8-byte word derives from the sequence,
/// so any mix of two frames is detected.
fn pattern_word(seq: u64, i: usize) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

fn fill(buf: &mut [u8], seq: u64) {
    // Written in two halves with a yield between them, to widen the window in
    // which a reader could see a half-written frame.
    let half = buf.len() / 16 * 8;
    let (a, b) = buf.split_at_mut(half);
    for (i, c) in a.chunks_exact_mut(8).enumerate() {
        c.copy_from_slice(&pattern_word(seq, i).to_ne_bytes());
    }
    std::thread::yield_now();
    for (i, c) in b.chunks_exact_mut(8).enumerate() {
        c.copy_from_slice(&pattern_word(seq, i + half / 8).to_ne_bytes());
    }
}

fn matches_pattern(data: &[u8], seq: u64) -> bool {
    data.chunks_exact(8).enumerate().all(|(i, c)| u64::from_ne_bytes(c.try_into().unwrap()) == pattern_word(seq, i))
}

fn stress_format() -> VideoFormat {
    VideoFormat::new(256, 128, PixelFormat::Gray8, 0, 1).unwrap()
}

// ---------------------------------------------------------------- children

#[test]
fn child() {
    let Ok(role) = std::env::var("SHM_CHILD") else { return };
    let parts: Vec<&str> = role.split(':').collect();
    match parts[0] {
        // writer:NAME:FRAMES:SLOTS:PERIOD_US — publishes pattern frames, then closes.
        "writer" => {
            let (name, frames, slots, period): (&str, u64, u32, u64) =
                (parts[1], parts[2].parse().unwrap(), parts[3].parse().unwrap(), parts[4].parse().unwrap());
            let mut w = Writer::create(name, stress_format(), &CreateOptions { slots, ..Default::default() }).unwrap();
            println!("RESULT epoch={} pid={}", w.epoch(), std::process::id());
            // Give readers time to attach before the first frame.
            std::thread::sleep(Duration::from_millis(300));
            for i in 0..frames {
                w.publish(|buf| {
                    fill(buf, i);
                    FrameMeta::new(i, shm_proto::os::realtime_ns(), buf.len() as u64)
                });
                if period > 0 {
                    std::thread::sleep(Duration::from_micros(period));
                }
            }
            // Hold the stream open briefly so readers drain, then close (drop).
            std::thread::sleep(Duration::from_millis(100));
        }
        // reader:NAME:SLOW_US — reads until closed, verifying every accepted frame.
        "reader" => {
            let (name, slow_us): (&str, u64) = (parts[1], parts[2].parse().unwrap());
            let mut r = wait_for("segment", Duration::from_secs(10), || {
                Reader::open(name, &ReaderOptions { start: shm_proto::Start::Oldest, ..Default::default() }).ok()
            });
            let (mut accepted, mut torn, mut last) = (0u64, 0u64, None::<u64>);
            let mut backwards = 0u64;
            loop {
                match r.next(Duration::from_secs(5)) {
                    Next::Frame(f) => {
                        let seq = f.seq();
                        if last.is_some_and(|l| seq <= l) {
                            backwards += 1;
                        }
                        last = Some(seq);
                        let ok = f.read(|d| {
                            let ok = matches_pattern(d, seq);
                            if slow_us > 0 {
                                std::thread::sleep(Duration::from_micros(slow_us));
                            }
                            ok
                        });
                        if let Some(ok) = ok {
                            accepted += 1;
                            if !ok {
                                torn += 1;
                            }
                        }
                    }
                    Next::Timeout => panic!("reader timed out"),
                    Next::Gone(_) => break,
                }
            }
            let s = r.stats();
            println!(
                "RESULT accepted={accepted} torn={torn} frames={} lost={} overruns={} backwards={backwards} head={}",
                s.frames,
                s.lost,
                s.overruns,
                r.head()
            );
        }
        // blocked-reader:NAME — waits (futex, no spin) for one frame.
        "blocked-reader" => {
            let name = parts[1];
            let mut r = Reader::open(name, &ReaderOptions::default()).unwrap();
            println!("READY");
            match r.next(Duration::from_secs(20)) {
                Next::Frame(f) => {
                    let lat = shm_proto::os::realtime_ns().saturating_sub(f.meta().publish_ns);
                    println!("RESULT got=1 seq={} latency_ns={lat}", f.seq());
                }
                _ => println!("RESULT got=0"),
            }
        }
        // write-mapping:NAME — tries to write into its read-only mapping (must fault).
        "write-mapping" => {
            let r = Reader::open(parts[1], &ReaderOptions::default()).unwrap();
            let p = r.mapping_addr() as *mut u8;
            println!("about to write");
            // SAFETY: deliberately writes to a PROT_READ mapping to prove it
            // faults; the process is expected to die of SIGSEGV here.
            unsafe { std::ptr::write_volatile(p.add(4096 * 3), 1) };
            println!("RESULT wrote=1");
        }
        // open:NAME — opens and prints the error kind.
        "open" => match Reader::open(parts[1], &ReaderOptions::default()) {
            Ok(_) => println!("RESULT open=ok"),
            Err(e) => println!("RESULT open=err kind={}", error_kind(&e)),
        },
        other => panic!("unknown child role {other}"),
    }
}

fn error_kind(e: &OpenError) -> &'static str {
    match e {
        OpenError::NotFound { .. } => "notfound",
        OpenError::PermissionDenied { .. } => "permission",
        OpenError::Invalid { .. } => "invalid",
        OpenError::Name(_) => "name",
        OpenError::Io { .. } => "io",
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn stress_no_torn_frames_and_exact_loss_accounting() {
    let name = unique("stress");
    let mut g = Guard::new(&[&name]);
    let frames = 20_000u64;
    g.children.push(spawn_child(&format!("writer:{name}:{frames}:4:0")));
    let _ = result_of(&mut g.children[0]);
    // One reader keeps up as best it can; one is deliberately slow.
    g.children.push(spawn_child(&format!("reader:{name}:0")));
    g.children.push(spawn_child(&format!("reader:{name}:200")));
    let fast = result_of(&mut g.children[1]);
    let slow = result_of(&mut g.children[2]);
    for (who, r) in [("fast", &fast), ("slow", &slow)] {
        assert_eq!(num(r, "torn"), 0, "{who} reader accepted a torn frame: {r:?}");
        assert_eq!(num(r, "backwards"), 0, "{who} reader saw sequences go backwards: {r:?}");
        assert_eq!(num(r, "head"), frames, "{who}: {r:?}");
        assert_eq!(num(r, "frames") + num(r, "lost"), frames, "{who}: seen + lost != written: {r:?}");
        assert_eq!(num(r, "accepted") + num(r, "overruns"), num(r, "frames"), "{who}: {r:?}");
    }
    // The slow reader was lapped (otherwise this test proves nothing).
    assert!(num(&slow, "lost") > 0, "slow reader was never lapped: {slow:?}");
    eprintln!("fast: {fast:?}\nslow: {slow:?}");
    for c in &mut g.children {
        assert!(c.wait().unwrap().success());
    }
}

#[test]
fn reader_mapping_is_read_only() {
    let name = unique("ro");
    let _g = Guard::new(&[&name]);
    let _w = Writer::create(&name, stress_format(), &CreateOptions::default()).unwrap();
    let mut c = spawn_child(&format!("write-mapping:{name}"));
    let status = c.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.signal() == Some(libc::SIGSEGV) || status.signal() == Some(libc::SIGBUS),
        "writing a reader's mapping did not fault: {status:?}"
    );
}

#[test]
fn blocked_reader_is_woken_by_writer_process() {
    let name = unique("wake");
    let mut g = Guard::new(&[&name]);
    let mut w = Writer::create(&name, stress_format(), &CreateOptions::default()).unwrap();
    g.children.push(spawn_child(&format!("blocked-reader:{name}")));
    let pid = g.children[0].id();
    // Wait until the child sleeps in the kernel on the futex.
    wait_for("reader blocked on futex", Duration::from_secs(10), || {
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
        (wchan.contains("futex") && state == Some('S')).then_some(())
    });
    w.publish(|buf| FrameMeta::new(1, 0, buf.len() as u64));
    let r = result_of(&mut g.children[0]);
    assert_eq!(num(&r, "got"), 1, "{r:?}");
    assert_eq!(num(&r, "seq"), 0);
    eprintln!("wake latency {} ns", num(&r, "latency_ns"));
}

#[test]
fn killed_writer_goes_stale_and_a_new_writer_is_followed() {
    let name = unique("restart");
    let mut g = Guard::new(&[&name]);
    g.children.push(spawn_child(&format!("writer:{name}:1000000:8:5000")));
    let first = result_of(&mut g.children[0]);
    let mut f = Follower::new(&name, ReaderOptions::default()).unwrap();
    let epoch1 = wait_for("attach", Duration::from_secs(10), || match f.poll(Duration::from_millis(100)).unwrap() {
        Event::Attached(a) => Some(a.epoch),
        _ => None,
    });
    assert_eq!(epoch1, num(&first, "epoch"));
    wait_for("frames", Duration::from_secs(10), || {
        matches!(f.poll(Duration::from_millis(100)).unwrap(), Event::Frame(_)).then_some(())
    });

    // SIGKILL: no clean close; the heartbeat goes stale.
    g.children[0].kill().unwrap();
    g.children[0].wait().unwrap();
    let killed = Instant::now();
    let status = wait_for("stale", Duration::from_secs(10), || match f.poll(Duration::from_millis(50)).unwrap() {
        Event::Detached(s) => Some(s),
        _ => None,
    });
    let noticed = killed.elapsed();
    assert_eq!(status, ProducerStatus::Stale);
    assert!(noticed < Duration::from_secs(1), "stale producer noticed after {noticed:?}");

    // A new writer replaces the stale object; the follower resumes on it.
    g.children.push(spawn_child(&format!("writer:{name}:1000000:8:5000")));
    let second = result_of(&mut g.children[1]);
    let epoch2 = wait_for("re-attach", Duration::from_secs(10), || match f.poll(Duration::from_millis(100)).unwrap() {
        Event::Attached(a) => Some(a.epoch),
        _ => None,
    });
    assert_eq!(epoch2, num(&second, "epoch"));
    assert_ne!(epoch1, epoch2);
    let seq = wait_for("frames from the new writer", Duration::from_secs(10), || {
        match f.poll(Duration::from_millis(100)).unwrap() {
            Event::Frame(fr) => Some(fr.meta().frame_id),
            _ => None,
        }
    });
    assert!(seq < 1_000_000);
}

#[test]
fn second_writer_fails_and_stale_name_is_replaced() {
    let name = unique("owner");
    let mut g = Guard::new(&[&name]);
    g.children.push(spawn_child(&format!("writer:{name}:1000000:4:10000")));
    let first = result_of(&mut g.children[0]);
    let e = Writer::create(&name, stress_format(), &CreateOptions::default()).err().expect("second writer must fail");
    match &e {
        CreateError::InUse { pid, .. } => assert_eq!(u64::from(*pid), num(&first, "pid")),
        other => panic!("expected InUse, got {other}"),
    }
    g.children[0].kill().unwrap();
    g.children[0].wait().unwrap();
    let w = Writer::create(&name, stress_format(), &CreateOptions::default()).expect("stale name is replaced");
    assert_eq!(w.replaced().map(u64::from), Some(num(&first, "pid")));
}

#[test]
fn too_small_shm_fails_at_creation_with_sizes() {
    // A size far beyond what /dev/shm has free.
    let name = unique("huge");
    let _g = Guard::new(&[&name]);
    let f = VideoFormat::new(16384, 16384, PixelFormat::Rgb24, 30, 1).unwrap();
    let e = Writer::create(&name, f, &CreateOptions { slots: 256, ..Default::default() }).err().unwrap();
    let msg = e.to_string();
    assert!(matches!(e, CreateError::NoSpace { .. }), "{msg}");
    assert!(msg.contains("needs") && msg.contains("free"), "{msg}");
    assert!(!std::path::Path::new(&format!("/dev/shm/shmcast.{name}")).exists(), "left an object behind");

    // A small tmpfs mounted for the test (root): creation fails cleanly, never SIGBUS.
    assert_eq!(unsafe_free_geteuid(), 0, "this test mounts a tmpfs and must run as root");
    let dir = std::env::temp_dir().join(format!("shmcast-small-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&dir).status().unwrap();
    assert!(st.success(), "mount tmpfs failed");
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _u = Umount(dir.clone());
    let f = VideoFormat::new(640, 480, PixelFormat::Rgb24, 30, 1).unwrap();
    let e = Writer::create(&name, f, &CreateOptions { dir: Some(dir.clone()), ..Default::default() }).err().unwrap();
    let msg = e.to_string();
    assert!(matches!(e, CreateError::NoSpace { needed, .. } if needed > 1 << 20), "{msg}");
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "left an object behind");
}

fn unsafe_free_geteuid() -> u32 {
    // Root check without unsafe: /proc/self/status "Uid: real effective ...".
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)).unwrap().parse().unwrap()
}

#[test]
fn unreadable_object_is_permission_denied() {
    let name = unique("perm");
    let _g = Guard::new(&[&name]);
    let f = stress_format();
    let _w = Writer::create(&name, f, &CreateOptions { mode: 0o600, ..Default::default() }).unwrap();
    // Open as an unprivileged user (root would bypass the mode).
    use std::os::unix::process::CommandExt;
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("SHM_CHILD", format!("open:{name}"))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("RESULT open=err kind=permission"),
        "stdout: {text}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Mode 0640 and readable by the owner.
    use std::os::unix::fs::PermissionsExt;
    let default = unique("mode");
    let _g2 = Guard::new(&[&default]);
    let w = Writer::create(&default, f, &CreateOptions::default()).unwrap();
    assert_eq!(std::fs::metadata(w.path()).unwrap().permissions().mode() & 0o777, 0o640);
}

#[test]
fn foreign_and_corrupt_objects_give_specific_errors() {
    let name = unique("corrupt");
    let _g = Guard::new(&[&name]);
    let path = format!("/dev/shm/shmcast.{name}");
    let f = stress_format();
    // A valid segment's bytes as the starting point.
    let good = {
        let w = Writer::create(&name, f, &CreateOptions { slots: 2, ..Default::default() }).unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        std::mem::forget(w); // keep the file; the writer's heartbeat thread dies with the test process
        bytes
    };
    let _ = std::fs::remove_file(&path);
    let open = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        Reader::open(&name, &ReaderOptions::default()).err().map(|e| e.to_string()).unwrap_or_else(|| "ok".into())
    };
    let put = |b: &mut Vec<u8>, off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
    assert_eq!(open(&good), "ok");
    let mut b = good.clone();
    put(&mut b, 0, b"NOTSHMCA");
    assert!(open(&b).contains("bad magic"), "{}", open(&b));
    let mut b = good.clone();
    put(&mut b, 8, &99u32.to_ne_bytes());
    assert!(open(&b).contains("layout version 99"), "{}", open(&b));
    assert!(open(&good[..good.len() - 4096]).contains("truncated"), "{}", open(&good[..good.len() - 4096]));
    assert!(open(&good[..100]).contains("smaller than"), "{}", open(&good[..100]));
    // slots (offset 24): 0 and 2^40
    for v in [0u64, 1 << 40] {
        let mut b = good.clone();
        put(&mut b, 24, &v.to_ne_bytes());
        assert!(open(&b).contains("slot count"), "{}", open(&b));
    }
    // slot_stride (offset 32) that overflows; data_offset (offset 48) past the end.
    let mut b = good.clone();
    put(&mut b, 32, &(u64::MAX - 4095).to_ne_bytes());
    assert!(open(&b).contains("inconsistent geometry"), "{}", open(&b));
    let mut b = good.clone();
    put(&mut b, 48, &(good.len() as u64 * 2).to_ne_bytes());
    assert!(open(&b).contains("inconsistent geometry"), "{}", open(&b));
    // Bad names.
    assert!(Reader::open("a/b", &ReaderOptions::default()).err().unwrap().to_string().contains("'/'"));
    assert!(
        Reader::open(&"x".repeat(200), &ReaderOptions::default()).err().unwrap().to_string().contains("200 characters")
    );
    assert!(matches!(Reader::open(&unique("nothing"), &ReaderOptions::default()), Err(OpenError::NotFound { .. })));
    // A writer refuses to replace a foreign object.
    std::fs::write(&path, b"hello").unwrap();
    std::thread::sleep(Duration::from_millis(10));
    let e = Writer::create(&name, f, &CreateOptions::default()).err();
    // A tiny file younger than 2 s may be a producer still initialising.
    assert!(matches!(e, Some(CreateError::InUse { .. }) | Some(CreateError::Foreign { .. })), "{e:?}");
    let mut b = good.clone();
    put(&mut b, 0, b"NOTSHMCA");
    std::fs::write(&path, &b).unwrap();
    let e = Writer::create(&name, f, &CreateOptions::default()).err().unwrap();
    assert!(matches!(e, CreateError::Foreign { .. }), "{e}");
}
