//! 100 connect / PLAY / receive / TEARDOWN cycles, so that a leak per client
//! or per media shows up as RSS growth after the warm-up: with the standby
//! media (the default) every cycle wakes its feeder (ring mapped, pool filled)
//! and puts it back to idle; with `--standby off` every cycle builds and tears
//! down the shared media (encoder, feeder, pool).
#![forbid(unsafe_code)]

mod common;

use std::time::Duration;

use common::*;

fn cycle(url: &str, b: &Proc) {
    let mut c = RtspClient::connect(url).expect("connect");
    c.play(url).unwrap_or_else(|r| panic!("PLAY refused: {r:?}\n{}", b.log()));
    // Really playing: RTP data of at least two frames arrived.
    assert_eq!(c.receive_frames(2, Duration::from_secs(20)), 2, "no RTP data; bridge:\n{}", b.log());
    c.teardown(url);
}

/// The highest RSS seen right after each of `n` cycles. The peak is what a
/// leak would push up; the idle value is not comparable, since glibc returns
/// a varying part of the freed heap between clients.
fn cycles_peak_rss(url: &str, b: &Proc, n: usize) -> u64 {
    (0..n)
        .map(|_| {
            cycle(url, b);
            b.rss_kib()
        })
        .max()
        .unwrap_or(0)
}

/// One after the other, not as two tests run in parallel: two bridges
/// cycling at once on two cores made the allocator's breathing exceed the
/// bound once in three runs.
#[test]
fn hundred_client_cycles_do_not_grow_rss() {
    cycles_keep_rss_flat("cycles", &[]);
    cycles_keep_rss_flat("cyclesoff", &["--standby", "off"]);
}

fn cycles_keep_rss_flat(tag: &str, args: &[&str]) {
    let name = unique(tag);
    let _p = producer(&name, 640, 360, "i420");
    let (b, url) = bridge(&name, args);
    // The allocator settles over the first ~100 media (a 1000-cycle soak is
    // flat after that, within ±1 MB of breathing).
    for _ in 0..100 {
        cycle(&url, &b);
    }
    let warm = cycles_peak_rss(&url, &b, 20);
    // SHMCAST_RTSP_CYCLES=N: a longer soak (default 100 measured cycles).
    let total: usize = std::env::var("SHMCAST_RTSP_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    for i in 0..total.saturating_sub(20) {
        cycle(&url, &b);
        if i % 100 == 99 && total > 100 {
            eprintln!("cycle {}: peak {} KiB", i + 1, cycles_peak_rss(&url, &b, 10));
        }
    }
    let after = cycles_peak_rss(&url, &b, 20);
    let growth = after as i64 - warm as i64;
    eprintln!("bridge VmRSS after warm-up {warm} KiB, after {total} more cycles {after} KiB, growth {growth} KiB");
    assert!(warm > 0, "could not read the bridge's VmRSS");
    if growth >= 2048 {
        // The allocator's breathing (about 2 MB, a 1000-cycle soak shows no
        // trend) can reach the bound once and then stays; a leak keeps
        // growing: as many cycles again must not add half as much.
        for _ in 0..total.saturating_sub(20) {
            cycle(&url, &b);
        }
        let again = cycles_peak_rss(&url, &b, 20);
        let more = again as i64 - after as i64;
        eprintln!("bridge VmRSS after {total} cycles more {again} KiB, growth {more} KiB");
        assert!(
            more < 1024,
            "RSS keeps growing over client cycles: {warm} -> {after} -> {again} KiB (every {total} cycles)"
        );
    }

    // Nothing held between clients: the ring is mapped only while someone plays.
    let maps = || std::fs::read_to_string(format!("/proc/{}/maps", b.pid())).unwrap_or_default();
    let segment = format!("shmcast.{name}");
    let mut c = RtspClient::connect(&url).unwrap();
    c.play(&url).unwrap_or_else(|r| panic!("{r:?}"));
    c.receive_frames(2, Duration::from_secs(20));
    assert!(maps().contains(&segment), "the ring is not mapped while a client plays");
    c.teardown(&url);
    drop(c);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while maps().contains(&segment) {
        assert!(std::time::Instant::now() < deadline, "the ring stays mapped with no client:\n{}", b.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}
