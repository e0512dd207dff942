//! `shmcastsink`'s segment options at run time: `hugepages` (the ring lies
//! in a hugetlbfs mount, huge-page aligned), `mlock` (this process's locked
//! memory grows by the ring), `mode` and `group` (the object's file mode and
//! group in /dev/shm), and a mode that is not octal. Runs the element in this
//! process (registered statically) so the test can look at its memory.
//!
//! The huge-page test needs pages reserved and hugetlbfs mounted:
//! `scripts/test.sh` does both (`scripts/hugepages.sh`); without them it
//! fails and says so. Only one test here locks memory, so the locked total
//! of this process is its ring's.
#![forbid(unsafe_code)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use shm_proto::{Event, Follower, Reader, ReaderOptions};

fn init() {
    gst::init().unwrap();
    gstshmcast::plugin_register_static().unwrap();
}

/// A playing pipeline, stopped on drop.
struct Playing(gst::Pipeline);

impl Drop for Playing {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// `videotestsrc` (GRAY8 640x480) into `shmcastsink stream=NAME PROPS`.
fn sink_pipeline(name: &str, props: &str) -> gst::Pipeline {
    gst::parse::launch(&format!(
        "videotestsrc is-live=true ! video/x-raw,format=GRAY8,width=640,height=480,framerate=30/1 \
         ! shmcastsink stream={name} slots=2 {props}"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap()
}

/// Plays `pipeline` until a reader got a frame from its ring.
fn play_until_a_frame(pipeline: gst::Pipeline, name: &str) -> Playing {
    let p = Playing(pipeline);
    p.0.set_state(gst::State::Playing).unwrap();
    let mut f = Follower::new(name, ReaderOptions::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no frame from the sink's ring {name}");
        if let Some(msg) = p.0.bus().unwrap().pop_filtered(&[gst::MessageType::Error]) {
            panic!("pipeline error: {msg:?}");
        }
        if let Event::Frame(_) = f.poll(Duration::from_millis(100)).expect("readable segment") {
            return p;
        }
    }
}

/// `VmLck` of this process, in bytes.
fn locked_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmLck:")).expect("VmLck in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// The gid of group `name` in /etc/group.
fn gid_of(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

#[test]
fn hugepages_back_the_ring_with_huge_pages() {
    let (size, free) = shm_proto::os::hugepages();
    let mounts = shm_proto::os::hugetlbfs_mounts();
    assert!(
        free >= 8 && !mounts.is_empty(),
        "huge pages are not set up ({free} free of {size} bytes, mounts {mounts:?}): as root run \
         `source scripts/hugepages.sh && hugepages_reserve 160`"
    );
    init();
    let name = format!("gst-huge-{}", std::process::id());
    let p = play_until_a_frame(sink_pipeline(&name, "hugepages=true"), &name);
    let r = Reader::open(&name, &ReaderOptions::default()).unwrap();
    let info = r.info();
    assert!(info.hugepages, "{info:?}");
    assert!(mounts.iter().any(|m| info.path.starts_with(m)), "{:?} is not in {mounts:?}", info.path);
    assert_eq!(info.slot_stride % size, 0, "slots are huge-page aligned");
    drop(r);
    drop(p);
    assert!(!info.path.exists(), "{:?} left behind", info.path);
}

#[test]
fn mlock_locks_the_ring_in_ram() {
    init();
    let name = format!("gst-mlock-{}", std::process::id());
    let before = locked_bytes();
    let p = play_until_a_frame(sink_pipeline(&name, "mlock=true"), &name);
    let total = Reader::open(&name, &ReaderOptions::default()).unwrap().info().total_size;
    let locked = locked_bytes() - before;
    assert!(locked >= total, "{locked} bytes locked for a ring of {total}");
    drop(p);
    assert_eq!(locked_bytes(), before, "the ring stays locked after the pipeline stopped");
}

#[test]
fn mode_and_group_set_the_segment_file() {
    init();
    let group = "video";
    let gid = gid_of(group).expect("group video (Debian's base-passwd) in /etc/group");
    let name = format!("gst-mode-{}", std::process::id());
    let p = play_until_a_frame(sink_pipeline(&name, &format!("mode=0660 group={group}")), &name);
    let path = Reader::open(&name, &ReaderOptions::default()).unwrap().info().path;
    assert!(path.starts_with(shm_proto::segment::default_dir()), "{path:?}");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660, "{path:?}");
    assert_eq!(meta.gid(), gid, "{path:?}");
    drop(p);

    // A gid works as well as a name; the default mode is 0640.
    let name = format!("gst-gid-{}", std::process::id());
    let p = play_until_a_frame(sink_pipeline(&name, &format!("group={gid}")), &name);
    let path = Reader::open(&name, &ReaderOptions::default()).unwrap().info().path;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.permissions().mode() & 0o7777, meta.gid()), (0o640, gid), "{path:?}");
    drop(p);
}

#[test]
fn a_mode_that_is_not_octal_fails_the_state_change_with_a_clear_error() {
    init();
    let name = format!("gst-badmode-{}", std::process::id());
    let p = Playing(sink_pipeline(&name, "mode=rw"));
    assert!(p.0.set_state(gst::State::Playing).is_err());
    let msg = p.0.bus().unwrap().pop_filtered(&[gst::MessageType::Error]).expect("an error message");
    let gst::MessageView::Error(e) = msg.view() else { unreachable!() };
    assert!(e.error().to_string().contains("mode \"rw\" is not an octal file mode"), "{}", e.error());
}
