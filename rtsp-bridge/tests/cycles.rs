//! 100 connect / PLAY / receive / TEARDOWN cycles: every cycle builds and
//! tears down the shared media (encoder, feeder, pool), so a leak per client
//! or per media shows up as RSS growth after the warm-up.
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

#[test]
fn hundred_client_cycles_do_not_grow_rss() {
    let name = unique("cycles");
    let _p = producer(&name, 640, 360, "i420");
    let (b, url) = bridge(&name, &[]);
    for _ in 0..20 {
        cycle(&url, &b);
    }
    std::thread::sleep(Duration::from_millis(500));
    let warm = b.rss_kib();
    for _ in 0..100 {
        cycle(&url, &b);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = b.rss_kib();
    let growth = after as i64 - warm as i64;
    eprintln!("bridge VmRSS after warm-up {warm} KiB, after 100 cycles {after} KiB, growth {growth} KiB");
    assert!(warm > 0, "could not read the bridge's VmRSS");
    assert!(growth < 2048, "RSS grew by {growth} KiB over 100 client cycles (warm {warm} KiB, after {after} KiB)");
}
