//! Single-process tests of the real segment: create, read, close, errors.

use std::time::Duration;

use shm_proto::{
    CreateError, CreateOptions, Event, Follower, FrameMeta, Next, OpenError, PixelFormat, ProducerStatus, Reader,
    ReaderOptions, VideoFormat, Writer,
};

fn unique(tag: &str) -> String {
    format!("t-{tag}-{}", std::process::id())
}

#[test]
fn write_then_read_in_place() {
    let name = unique("basic");
    let f = VideoFormat::new(320, 240, PixelFormat::Gray8, 30, 1).unwrap();
    let mut w = Writer::create(&name, f, &CreateOptions { slots: 4, ..Default::default() }).unwrap();
    let mut r = Reader::open(&name, &ReaderOptions::default()).unwrap();
    assert_eq!(r.format(), &f);
    for i in 0..3u64 {
        w.publish(|buf| {
            buf.fill(i as u8 + 1);
            FrameMeta::new(100 + i, 5, buf.len() as u64)
        });
    }
    for i in 0..3u64 {
        let Next::Frame(fr) = r.next(Duration::from_secs(1)) else { panic!("no frame") };
        assert_eq!(fr.seq(), i);
        assert_eq!(fr.meta().frame_id, 100 + i);
        assert_eq!(fr.read(|d| d.iter().all(|&b| b == i as u8 + 1)), Some(true));
    }
    assert!(matches!(r.next(Duration::from_millis(50)), Next::Timeout));
    let path = w.path().to_path_buf();
    drop(w);
    assert!(!path.exists());
    assert!(matches!(r.next(Duration::from_secs(1)), Next::Gone(ProducerStatus::Closed)));
}

#[test]
fn lapped_reader_counts_exact_losses() {
    let name = unique("lap");
    let f = VideoFormat::new(64, 64, PixelFormat::Gray8, 0, 1).unwrap();
    let mut w = Writer::create(&name, f, &CreateOptions { slots: 4, ..Default::default() }).unwrap();
    let mut r = Reader::open(&name, &ReaderOptions::default()).unwrap();
    for i in 0..10u64 {
        w.publish(|buf| FrameMeta::new(i, 0, buf.len() as u64));
    }
    // Lapped: a live reader lands on the newest frame, the last one the
    // producer will overwrite, and counts everything it skipped.
    let fr = r.try_next().unwrap();
    assert_eq!(fr.seq(), 9);
    assert_eq!(fr.lost_before(), 9);
    assert!(fr.validate());
    assert!(r.try_next().is_none());
    assert_eq!(r.stats().frames + r.stats().lost, 10);

    // With `Lapped::Oldest` it lands on the oldest frame still in the ring.
    let mut r =
        Reader::open(&name, &ReaderOptions { lapped: shm_proto::Lapped::Oldest, ..Default::default() }).unwrap();
    for i in 10..20u64 {
        w.publish(|buf| FrameMeta::new(i, 0, buf.len() as u64));
    }
    let fr = r.try_next().unwrap();
    assert_eq!((fr.seq(), fr.lost_before()), (16, 6));
    let _ = fr.validate();
    let mut seen = 1;
    while r.try_next().is_some() {
        seen += 1;
    }
    assert_eq!(seen + r.stats().lost, 10);
}

#[test]
fn second_writer_refused_and_missing_name() {
    let name = unique("dup");
    let f = VideoFormat::new(64, 64, PixelFormat::Gray8, 0, 1).unwrap();
    let _w = Writer::create(&name, f, &CreateOptions::default()).unwrap();
    let e = Writer::create(&name, f, &CreateOptions::default()).err().unwrap();
    assert!(matches!(e, CreateError::InUse { .. }), "{e}");
    assert!(e.to_string().contains("owned by another running producer (pid"), "{e}");
    let e = Reader::open(&unique("missing"), &ReaderOptions::default()).err().unwrap();
    assert!(matches!(e, OpenError::NotFound { .. }), "{e}");
}

#[test]
fn group_and_mode_are_applied() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let name = unique("group");
    let f = VideoFormat::new(64, 64, PixelFormat::Gray8, 0, 1).unwrap();
    let w = Writer::create(&name, f, &CreateOptions { group: Some("65534".into()), mode: 0o660, ..Default::default() })
        .unwrap();
    let m = std::fs::metadata(w.path()).unwrap();
    assert_eq!(m.gid(), 65534);
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
    let e = Writer::create(
        &unique("nogroup"),
        f,
        &CreateOptions { group: Some("no-such-group-x".into()), ..Default::default() },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("unknown group"), "{e}");
}

/// Needs huge pages reserved and hugetlbfs mounted: `scripts/test.sh` does
/// both (`scripts/hugepages.sh`); without them this test fails and says so.
#[test]
fn hugepages_and_mlock() {
    let (size, free) = shm_proto::os::hugepages();
    assert!(
        free >= 8 && !shm_proto::os::hugetlbfs_mounts().is_empty(),
        "huge pages are not set up ({free} free of {size} bytes, mounts {:?}): as root run \
         `source scripts/hugepages.sh && hugepages_reserve 160`",
        shm_proto::os::hugetlbfs_mounts()
    );
    let name = unique("huge");
    let f = VideoFormat::new(640, 480, PixelFormat::Gray8, 30, 1).unwrap();
    let mut w =
        Writer::create(&name, f, &CreateOptions { slots: 2, hugepages: true, mlock: true, ..Default::default() })
            .unwrap();
    assert!(shm_proto::os::hugetlbfs_mounts().iter().any(|m| w.path().starts_with(m)), "{:?}", w.path());
    let mut r = Reader::open(&name, &ReaderOptions::default()).unwrap();
    let info = r.info();
    assert!(info.hugepages);
    assert_eq!(info.slot_stride % size, 0, "slots are huge-page aligned");
    w.publish(|buf| {
        buf.fill(9);
        FrameMeta::new(1, 0, buf.len() as u64)
    });
    let Next::Frame(fr) = r.next(Duration::from_secs(1)) else { panic!("no frame") };
    assert_eq!(fr.read(|d| d.iter().all(|&b| b == 9)), Some(true));
    // More than is reserved: a clear error at creation.
    let big = VideoFormat::new(16384, 16384, PixelFormat::Rgb24, 30, 1).unwrap();
    let e = Writer::create(&unique("huge2"), big, &CreateOptions { slots: 64, hugepages: true, ..Default::default() })
        .err()
        .unwrap();
    assert!(e.to_string().contains("huge pages"), "{e}");
}

/// A producer restarted while a follower still had frames of the old one to
/// read: the follower reads them first, then moves to the new one; nothing is
/// lost. (It used to move on at its next check of the name and drop the
/// backlog without counting it, e.g. a detector descheduled on a loaded machine.)
#[test]
fn a_follower_reads_the_backlog_of_a_replaced_stream_before_moving_on() {
    let name = unique("drain");
    let f = VideoFormat::new(64, 48, PixelFormat::Gray8, 30, 1).unwrap();
    let opts = CreateOptions { slots: 16, ..Default::default() };
    let publish = |w: &mut Writer, ids: std::ops::Range<u64>| {
        for i in ids {
            w.publish(|buf| FrameMeta::new(i, 5, buf.len() as u64));
        }
    };
    let mut fol = Follower::new(&name, ReaderOptions::default()).unwrap();
    let mut w = Writer::create(&name, f, &opts).unwrap();
    assert!(matches!(fol.poll(Duration::from_secs(1)).unwrap(), Event::Attached(_)));
    publish(&mut w, 0..6);
    let Event::Frame(first) = fol.poll(Duration::from_secs(1)).unwrap() else { panic!("no frame") };
    assert_eq!(first.meta().frame_id, 0);
    drop(w);
    let mut w2 = Writer::create(&name, f, &opts).unwrap();
    publish(&mut w2, 100..103);
    // Let the follower's periodic check of the name (every 250 ms) come due
    // while five frames of the old producer are still unread.
    std::thread::sleep(Duration::from_millis(300));
    let mut seen = Vec::new();
    for _ in 0..100 {
        match fol.poll(Duration::from_millis(100)).unwrap() {
            Event::Frame(fr) => seen.push(Some(fr.meta().frame_id)),
            Event::Attached(_) => seen.push(None),
            Event::Detached(_) | Event::Idle => {}
        }
        if seen.len() == 9 {
            break;
        }
    }
    let old: Vec<Option<u64>> = (1..6).map(Some).collect();
    let new: Vec<Option<u64>> = (100..103).map(Some).collect();
    assert_eq!(seen, [old, vec![None], new].concat());
    assert_eq!(fol.stats().lost, 0);
    drop(w2);
}
