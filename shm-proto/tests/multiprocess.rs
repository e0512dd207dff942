//! Multi-process tests on real shared memory. Child processes are this test
//! binary re-executed with `SHM_CHILD` set, running the `#[ignore]`d `child`
//! test (so a normal run reports it as ignored, never as a test that passed
//! without testing anything), which plays the role named there and prints
//! `RESULT k=v ...` lines the parent parses.

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

const CHILD_ARGS: [&str; 5] = ["--exact", "child", "--ignored", "--nocapture", "--test-threads=1"];

fn spawn_child(role: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(CHILD_ARGS)
        .env("SHM_CHILD", role)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// Reads the child's `RESULT k=v k=v` line.
fn result_of(child: &mut Child) -> HashMap<String, String> {
    if let Some(rx) = RESULTS.with(|m| m.borrow_mut().remove(&child.id())) {
        for line in rx.iter() {
            if let Some((_, rest)) = line.split_once("RESULT ") {
                return parse_result(rest);
            }
        }
        panic!("child printed no RESULT line (status {:?})", child.wait());
    }
    let out = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(out).lines();
    while let Some(line) = lines.next() {
        let line = line.unwrap();
        // libtest prints "test child ... " without a newline before the test runs.
        if let Some(rest) = line.split_once("RESULT ").map(|(_, r)| r.to_string()) {
            // Keep draining so the child never writes into a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return parse_result(&rest);
        }
    }
    panic!("child printed no RESULT line (status {:?})", child.wait());
}

/// Waits for the child's `READY tid=N` line and returns N.
fn ready_tid(child: &mut Child) -> u64 {
    let out = child.stdout.take().expect("piped stdout");
    let mut r = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "child exited before READY (status {:?})", child.try_wait());
        if let Some(tid) = line.split_once("READY tid=").map(|(_, t)| t.trim().parse().unwrap()) {
            child.stdout = None;
            // Hand the rest of the output back for `result_of`.
            let (tx, rx) = std::sync::mpsc::channel::<String>();
            std::thread::spawn(move || {
                for l in r.lines() {
                    let Ok(l) = l else { break };
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
            RESULTS.with(|m| m.borrow_mut().insert(child.id(), rx));
            return tid;
        }
    }
}

thread_local! {
    /// Output of children whose stdout was taken over by `ready_tid`.
    static RESULTS: std::cell::RefCell<HashMap<u32, std::sync::mpsc::Receiver<String>>> =
        std::cell::RefCell::new(HashMap::new());
}

fn parse_result(rest: &str) -> HashMap<String, String> {
    rest.split_whitespace().filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
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

/// The thread id of the calling thread, from `/proc/thread-self` (no unsafe).
fn gettid() -> u64 {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).expect("a tid")
}

#[test]
#[ignore = "a child role for the other tests, run by them with SHM_CHILD set"]
fn child() {
    let role = std::env::var("SHM_CHILD").expect("run by the other tests with SHM_CHILD=<role>");
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
            // Close (drop) right after the last frame, at full speed: readers
            // must still account for every frame before they see the close.
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
            // The thread that will block: libtest's main thread waits on a
            // futex too, so the parent must look at this one.
            println!("READY tid={}", gettid());
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
        // owner:NAME — tries to own NAME; on success reports the object's inode
        // and keeps publishing (slowly) until killed.
        "owner" => match Writer::create(parts[1], stress_format(), &CreateOptions { slots: 2, ..Default::default() }) {
            Ok(mut w) => {
                use std::os::unix::fs::MetadataExt;
                let ino = std::fs::metadata(w.path()).unwrap().ino();
                println!("RESULT ok=1 ino={ino} pid={}", std::process::id());
                for i in 0.. {
                    w.publish(|buf| FrameMeta::new(i, 0, buf.len() as u64));
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Err(e) => println!("RESULT ok=0 in_use={}", u8::from(matches!(e, CreateError::InUse { .. }))),
        },
        // group-reader:NAME — as a member of the object's group: reads a frame,
        // then tries to open the object for writing.
        "group-reader" => {
            let mut r =
                Reader::open(parts[1], &ReaderOptions { start: shm_proto::Start::Oldest, ..Default::default() })
                    .unwrap();
            let got = match r.next(Duration::from_secs(10)) {
                Next::Frame(f) => f.to_vec().is_ok(),
                _ => false,
            };
            let writable = std::fs::OpenOptions::new().write(true).open(r.path()).is_ok();
            println!("RESULT got={} writable={}", u8::from(got), u8::from(writable));
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
    let tid = ready_tid(&mut g.children[0]);
    // Wait until the reader thread sleeps in the kernel on the futex.
    wait_for("reader blocked on futex", Duration::from_secs(10), || {
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
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

/// A child running as nobody:nogroup (65534) from a copy of this test binary
/// in a directory that user can enter (the checkout may sit under a mode-0700
/// home or `mktemp -d` directory). One copy per test process, in a temp
/// directory named after its pid.
fn unprivileged_child(role: &str) -> Command {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    static COPY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let exe = COPY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("shmcast-child-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.join("multiprocess-child");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    });
    let mut c = Command::new(exe);
    c.args(CHILD_ARGS).env("SHM_CHILD", role).uid(65534).gid(65534).current_dir("/");
    c
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
    let out = unprivileged_child(&format!("open:{name}")).output().unwrap();
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
        std::fs::read(w.path()).unwrap()
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
    let e = Writer::create(&name, f, &CreateOptions::default()).err();
    assert!(matches!(e, Some(CreateError::Foreign { .. })), "{e:?}");
    let mut b = good.clone();
    put(&mut b, 0, b"NOTSHMCA");
    std::fs::write(&path, &b).unwrap();
    let e = Writer::create(&name, f, &CreateOptions::default()).err().unwrap();
    assert!(matches!(e, CreateError::Foreign { .. }), "{e}");
}

// ------------------------------------------------------- hostile segments

/// Offsets in the header page (see `shm_proto::layout`).
const STATE: usize = 1024;
const HEARTBEAT: usize = 1024 + 8;
const HEAD: usize = 1024 + 128;
const TAIL: usize = 1024 + 256;
const TABLE: usize = 4096;

/// A temp directory for crafted objects, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("shmcast-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The bytes of a real segment (slots=4) with a few frames in it.
fn real_segment_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut w = Writer::create(
        "craft-src",
        stress_format(),
        &CreateOptions { slots: 4, dir: Some(dir.to_path_buf()), ..Default::default() },
    )
    .unwrap();
    for i in 0..6 {
        w.publish(|buf| FrameMeta::new(i, 0, buf.len() as u64));
    }
    std::fs::read(w.path()).unwrap()
}

fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Runs `f` on another thread and fails the test if it does not return:
/// the property under test is "never hangs", so a hang must fail, not stall CI.
fn must_return<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("{what}: the reader hung"))
}

#[test]
fn crafted_segments_never_hang_or_fool_a_reader() {
    let tmp = TempDir::new("craft");
    let src = TempDir::new("craft-src");
    let good = real_segment_bytes(&src.0);
    let now = shm_proto::os::monotonic_ns();
    let slots = 4usize;
    type Craft = (&'static str, Box<dyn Fn(&mut Vec<u8>)>);
    let crafts: Vec<Craft> = vec![
        (
            "future heartbeat, head and slot words at u64::MAX",
            Box::new(move |b| {
                put_u64(b, HEARTBEAT, u64::MAX);
                put_u64(b, HEAD, u64::MAX);
                put_u64(b, TAIL, 0);
                for i in 0..slots {
                    put_u64(b, TABLE + 128 * i, u64::MAX);
                }
            }),
        ),
        ("heartbeat an hour ahead", Box::new(move |b| put_u64(b, HEARTBEAT, now + 3_600_000_000_000))),
        (
            "fresh heartbeat, head = u64::MAX",
            Box::new(move |b| {
                put_u64(b, HEARTBEAT, now);
                put_u64(b, HEAD, u64::MAX);
            }),
        ),
        (
            "fresh heartbeat, tail beyond head",
            Box::new(move |b| {
                put_u64(b, HEARTBEAT, now);
                put_u64(b, TAIL, 1 << 40);
            }),
        ),
        (
            "fresh heartbeat, every slot stuck being written",
            Box::new(move |b| {
                put_u64(b, HEARTBEAT, now);
                put_u64(b, HEAD, 1000);
                for i in 0..slots {
                    put_u64(b, TABLE + 128 * i, shm_proto::seq::writing(999));
                }
            }),
        ),
        (
            "an unknown state word",
            Box::new(move |b| {
                put_u64(b, HEARTBEAT, now);
                b[STATE..STATE + 4].copy_from_slice(&77u32.to_ne_bytes());
            }),
        ),
    ];
    for (what, craft) in crafts {
        let mut b = good.clone();
        craft(&mut b);
        std::fs::write(tmp.0.join("shmcast.crafted"), &b).unwrap();
        let dir = tmp.0.clone();
        let (status, frames) = must_return(what, move || {
            let opts = ReaderOptions { dir: Some(dir), start: shm_proto::Start::Oldest, ..Default::default() };
            let mut r = Reader::open("crafted", &opts).unwrap();
            let mut frames = 0;
            // Far more calls than slots: each must do bounded work.
            for _ in 0..50 {
                match r.next(Duration::from_millis(20)) {
                    Next::Frame(f) => {
                        frames += 1;
                        let _ = f.to_vec();
                    }
                    Next::Timeout => {}
                    Next::Gone(s) => return (Some(s), frames),
                }
            }
            (None, frames)
        });
        eprintln!("{what}: {status:?} after {frames} frames");
        assert!(frames <= slots, "{what}: {frames} frames from a 4-slot ring");
        match what {
            w if w.contains("u64::MAX") => {
                assert!(matches!(status, Some(ProducerStatus::Corrupt | ProducerStatus::Stale)), "{what}: {status:?}")
            }
            w if w.contains("ahead") => assert_eq!(status, Some(ProducerStatus::Stale), "{what}"),
            w if w.contains("unknown state") => assert_eq!(status, Some(ProducerStatus::Corrupt), "{what}"),
            // Bounded and quiet: nothing handed out from garbage, no hang.
            _ => {}
        }
    }
    // The stale crafted object never holds the name: a producer takes it back.
    let w =
        Writer::create("crafted", stress_format(), &CreateOptions { dir: Some(tmp.0.clone()), ..Default::default() })
            .expect("a crafted object does not own its name");
    assert!(w.replaced().is_some());
}

#[test]
fn headers_with_impossible_slot_counts_are_rejected_before_mapping() {
    let tmp = TempDir::new("slots");
    let src = TempDir::new("slots-src");
    let good = real_segment_bytes(&src.0);
    for v in [0u64, 1, 3, 1 << 17, u64::MAX] {
        let mut b = good.clone();
        put_u64(&mut b, 24, v);
        std::fs::write(tmp.0.join("shmcast.slots"), &b).unwrap();
        let e = Reader::open("slots", &ReaderOptions { dir: Some(tmp.0.clone()), ..Default::default() }).err();
        assert!(e.as_ref().is_some_and(|e| e.to_string().contains("slot count")), "slots={v}: {e:?}");
    }
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap()
}

#[test]
fn a_sparse_huge_object_costs_a_reader_no_memory() {
    let tmp = TempDir::new("sparse");
    let path = tmp.0.join("shmcast.sparse");
    // 256 MiB of nothing: rejected from a pread of the header, never mapped.
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(256 << 20).unwrap();
    let before = rss_kib();
    let e = Reader::open("sparse", &ReaderOptions { dir: Some(tmp.0.clone()), ..Default::default() }).err().unwrap();
    assert!(e.is_transient() || matches!(e, OpenError::Invalid { .. }), "{e}");
    let rejected = rss_kib();
    // A valid header claiming 256 MiB of slots: accepted, mapped, not pre-faulted.
    let fmt = VideoFormat::new(4096, 4096, PixelFormat::Gray8, 30, 1).unwrap();
    let big =
        Writer::create("sparse-big", fmt, &CreateOptions { slots: 16, dir: Some(tmp.0.clone()), ..Default::default() })
            .unwrap();
    assert!(big.total_size() >= 256 << 20);
    let mid = rss_kib();
    let r = Reader::open("sparse-big", &ReaderOptions { dir: Some(tmp.0.clone()), ..Default::default() }).unwrap();
    let after = rss_kib();
    drop(r);
    eprintln!(
        "RSS KiB: before {before}, after rejecting {rejected}; with the writer {mid}, after mapping 256 MiB {after}"
    );
    assert!(rejected < before + 8 * 1024, "rejecting a sparse object cost {} KiB", rejected - before);
    assert!(after < mid + 8 * 1024, "mapping a reader cost {} KiB", after - mid);
}

#[test]
fn racing_producers_leave_exactly_one_owner_of_a_stale_name() {
    use std::os::unix::fs::MetadataExt;
    let name = unique("race");
    let mut g = Guard::new(&[&name]);
    let path = format!("/dev/shm/shmcast.{name}");
    for round in 0..100 {
        // A stale name: its owner killed with SIGKILL (object and lock file left behind).
        let mut first = spawn_child(&format!("owner:{name}"));
        assert_eq!(num(&result_of(&mut first), "ok"), 1, "round {round}");
        first.kill().unwrap();
        first.wait().unwrap();
        let mut racers: Vec<Child> = (0..8).map(|_| spawn_child(&format!("owner:{name}"))).collect();
        let results: Vec<_> = racers.iter_mut().map(result_of).collect();
        let owners: Vec<_> = results.iter().filter(|r| num(r, "ok") == 1).collect();
        assert_eq!(owners.len(), 1, "round {round}: {} owners: {results:?}", owners.len());
        for r in &results {
            if num(r, "ok") == 0 {
                assert_eq!(num(r, "in_use"), 1, "round {round}: a loser failed for another reason: {r:?}");
            }
        }
        let ino = std::fs::metadata(&path).unwrap().ino();
        assert_eq!(num(owners[0], "ino"), ino, "round {round}: the owner writes an object that is not at the path");
        for mut c in racers {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    g.children.clear();
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

#[test]
fn a_stopped_producer_keeps_its_name_and_resumes() {
    use std::os::unix::fs::MetadataExt;
    let name = unique("stop");
    let mut g = Guard::new(&[&name]);
    g.children.push(spawn_child(&format!("owner:{name}")));
    let first = result_of(&mut g.children[0]);
    let pid = g.children[0].id();
    let mut f = Follower::new(&name, ReaderOptions::default()).unwrap();
    let epoch = wait_for("attach", Duration::from_secs(10), || match f.poll(Duration::from_millis(100)).unwrap() {
        Event::Attached(a) => Some(a.epoch),
        _ => None,
    });
    // A frame before the stop, so that "resumes" below means frames after it
    // (the child may be stopped before it has published anything).
    let before = wait_for("a frame before SIGSTOP", Duration::from_secs(10), || {
        match f.poll(Duration::from_millis(100)).unwrap() {
            Event::Frame(fr) => Some(fr.meta().frame_id),
            _ => None,
        }
    });
    signal(pid, "-STOP");
    let status = wait_for("stale", Duration::from_secs(10), || match f.poll(Duration::from_millis(100)).unwrap() {
        Event::Detached(s) => Some(s),
        _ => None,
    });
    assert_eq!(status, ProducerStatus::Stale);
    // Stale, but its process lives and holds the name: nobody takes it over.
    let e = Writer::create(&name, stress_format(), &CreateOptions::default()).err().expect("name taken over");
    let msg = e.to_string();
    assert!(matches!(e, CreateError::InUse { .. }), "{msg}");
    assert!(msg.contains(&format!("pid {pid}")) && msg.contains("stale"), "{msg}");
    signal(pid, "-CONT");
    // The same producer resumes; the follower picks up its frames; no orphan.
    let id = wait_for("frames after SIGCONT", Duration::from_secs(10), || {
        match f.poll(Duration::from_millis(100)).unwrap() {
            Event::Frame(fr) => Some(fr.meta().frame_id),
            Event::Attached(a) => panic!("re-attached to epoch {} instead of resuming {epoch}", a.epoch),
            _ => None,
        }
    });
    assert!(id > before, "frame {id} after SIGCONT, {before} before SIGSTOP");
    let ino = std::fs::metadata(format!("/dev/shm/shmcast.{name}")).unwrap().ino();
    assert_eq!(ino, num(&first, "ino"));
}

/// Needs huge pages (set up by `scripts/test.sh`).
#[test]
fn one_name_across_shm_and_huge_pages() {
    let name = unique("hugename");
    let _g = Guard::new(&[&name]);
    let huge_dir = shm_proto::os::hugetlbfs_mounts().into_iter().next().expect("a hugetlbfs mount (scripts/test.sh)");
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(huge_dir.join(format!("shmcast.{name}")));
    // A stale object in /dev/shm (a copy of a real segment whose producer is gone).
    let src = TempDir::new("hugename-src");
    let mut stale = real_segment_bytes(&src.0);
    put_u64(&mut stale, HEARTBEAT, 1);
    let shm = format!("/dev/shm/shmcast.{name}");
    std::fs::write(&shm, &stale).unwrap();
    let f = VideoFormat::new(64, 64, PixelFormat::Gray8, 30, 1).unwrap();
    let mut w = Writer::create(&name, f, &CreateOptions { slots: 2, hugepages: true, ..Default::default() }).unwrap();
    assert!(!std::path::Path::new(&shm).exists(), "the stale /dev/shm object was left to hide the live one");
    // Even if one reappears, readers choose the live huge-page object.
    std::fs::write(&shm, &stale).unwrap();
    w.publish(|buf| FrameMeta::new(42, 0, buf.len() as u64));
    let mut r = Reader::open(&name, &ReaderOptions { start: shm_proto::Start::Oldest, ..Default::default() }).unwrap();
    assert!(r.info().hugepages, "opened {:?}", r.path());
    let Next::Frame(fr) = r.next(Duration::from_secs(1)) else { panic!("no frame") };
    assert_eq!(fr.meta().frame_id, 42);
    // And no second live producer of the name in /dev/shm.
    let e = Writer::create(&name, f, &CreateOptions::default()).err().expect("a second owner");
    assert!(matches!(e, CreateError::InUse { .. }), "{e}");
}

#[test]
fn a_consumer_in_the_group_reads_but_cannot_write() {
    let name = unique("grp");
    let _g = Guard::new(&[&name]);
    let mut w = Writer::create(
        &name,
        stress_format(),
        &CreateOptions { mode: 0o640, group: Some("65534".into()), ..Default::default() },
    )
    .unwrap();
    w.publish(|buf| {
        fill(buf, 0);
        FrameMeta::new(0, 0, buf.len() as u64)
    });
    let out = unprivileged_child(&format!("group-reader:{name}")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.split_once("RESULT ").map(|(_, r)| parse_result(r)));
    let r = line.unwrap_or_else(|| panic!("no RESULT: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(num(&r, "got"), 1, "{r:?}");
    assert_eq!(num(&r, "writable"), 0, "a group member could open the ring for writing: {r:?}");
}
