//! The metrics HTTP server (`common::http` + `common::metrics`) against
//! well-behaved and hostile clients, over real TCP connections: answers and
//! errors, a port in use, garbage, huge headers, slow-loris and idle
//! connections, more connections than it serves, and a frame path that keeps
//! counting while all of that goes on.
#![forbid(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use shmcast_common::http::{self, Limits};
use shmcast_common::metrics;

/// How long a test waits for an event before it fails (never reached when
/// the server works: every wait below ends on the event itself).
const WAIT: Duration = Duration::from_secs(30);

/// The default `--metrics` server of this test process.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| metrics::serve("127.0.0.1:0".parse().unwrap()).expect("serve metrics"))
}

/// A server of `metrics::routes` with its own limits.
fn server_with(max_connections: usize, header_timeout: Duration, connection_timeout: Duration) -> SocketAddr {
    let limits = Limits {
        max_connections,
        max_request_bytes: 8192,
        header_timeout,
        connection_timeout,
        write_stall_timeout: connection_timeout,
    };
    let listener = http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    http::spawn(listener, metrics::routes(), limits).unwrap()
}

/// Timeouts no test run reaches: what stalls stays connected for the whole test.
const NEVER: Duration = Duration::from_secs(3600);

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Sends `req` and reads the answer until the server closes.
fn request(addr: SocketAddr, req: &[u8]) -> String {
    let mut s = connect(addr);
    s.write_all(req).unwrap();
    read_all(&mut s)
}

fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        // A server that closes with unread request bytes resets the connection.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading the answer: {e} (after {:?})", String::from_utf8_lossy(&out)),
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn get_metrics(addr: SocketAddr) -> String {
    request(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// Whether the server has closed `s`: reads until EOF or reset (bounded by WAIT).
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Whether `s` is still open with nothing to read, without waiting.
fn still_open(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let open = matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    open
}

#[test]
fn answers_metrics_index_404_and_405() {
    let addr = server();
    metrics::global().counter("http_test_served_total", "Served").inc();
    let ok = get_metrics(addr);
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4; charset=utf-8"), "{ok}");
    assert!(ok.contains("\nhttp_test_served_total 1\n"), "{ok}");
    assert!(ok.contains("# TYPE process_resident_memory_bytes gauge"), "{ok}");
    let (head, body) = ok.split_once("\r\n\r\n").unwrap();
    assert!(head.to_ascii_lowercase().contains(&format!("content-length: {}", body.len())), "{ok}");
    // A query string is still /metrics; HTTP/1.0 works.
    assert!(request(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 200 OK\r\n"));
    let head = request(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
    assert!(request(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").contains("see /metrics"));
    assert!(request(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(
        request(addr, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc").starts_with("HTTP/1.1 405")
    );
}

#[test]
fn a_port_in_use_is_one_clear_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let err = format!("{:#}", metrics::serve(addr).unwrap_err());
    assert!(err.starts_with(&format!("cannot serve metrics on {addr}: ")), "{err}");
    assert!(err.contains("in use") && err.contains("choose another --metrics port"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn garbage_and_huge_requests_are_refused_and_the_server_stays_up() {
    let addr = server();
    for junk in [&b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"[..], b"GET\r\n\r\n", b"\r\n\r\n\r\n"] {
        let answer = request(addr, junk);
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{junk:?} -> {answer}");
    }
    // Headers far beyond the limit: refused once the limit is reached, never buffered whole.
    let mut s = connect(addr);
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
    let line = format!("X-Pad: {}\r\n", "a".repeat(1000));
    for _ in 0..1000 {
        if s.write_all(line.as_bytes()).is_err() {
            break; // the server has closed the connection
        }
    }
    let answer = read_all(&mut s);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(get_metrics(addr).starts_with("HTTP/1.1 200 OK\r\n"));
}

#[test]
fn slow_and_idle_clients_do_not_block_others() {
    let addr = server_with(8, NEVER, NEVER);
    // One sends nothing; one sends a header line, then stalls (slow-loris).
    let idle = connect(addr);
    let mut loris = connect(addr);
    loris.write_all(b"GET /metrics HTTP/1.1\r\nX-a: b\r\n").unwrap();
    // Others are answered while they are connected.
    for _ in 0..5 {
        assert!(get_metrics(addr).starts_with("HTTP/1.1 200 OK\r\n"));
    }
    assert!(still_open(&idle) && still_open(&loris), "the stalled clients were answered or closed");
}

#[test]
fn slow_and_idle_clients_are_closed_by_the_header_timeout() {
    let addr = server_with(8, Duration::from_millis(200), NEVER);
    let mut idle = connect(addr);
    let mut loris = connect(addr);
    loris.write_all(b"GET /metrics HTTP/1.1\r\nX-a: b\r\n").unwrap();
    // A byte now and then does not keep it alive: the timeout covers all the headers.
    let drip = std::thread::spawn({
        let mut s = loris.try_clone().unwrap();
        move || {
            while s.write_all(b"x").is_ok() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    assert!(closed_by_server(&mut idle), "the idle connection was never closed");
    assert!(closed_by_server(&mut loris), "the slow-loris connection was never closed");
    drip.join().unwrap();
}

#[test]
fn a_connection_ends_at_the_connection_timeout_whatever_it_waits_for() {
    // A binary's own route (merged with the metrics) whose answer never comes.
    let router = metrics::routes().route("/stall", axum::routing::get(std::future::pending::<&'static str>));
    let limits = Limits { connection_timeout: Duration::from_millis(300), ..Limits::default() };
    let addr = http::spawn(http::bind("127.0.0.1:0".parse().unwrap()).unwrap(), router, limits).unwrap();
    assert!(get_metrics(addr).starts_with("HTTP/1.1 200 OK\r\n"));
    let mut s = connect(addr);
    s.write_all(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(closed_by_server(&mut s), "the stalled connection was never closed");
}

#[test]
fn connections_beyond_the_limit_get_503_and_slots_come_back() {
    let addr = server_with(2, NEVER, NEVER);
    let held: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
    // Wait until the server has accepted both (a third one is then refused).
    let start = Instant::now();
    let busy = loop {
        let answer = get_metrics(addr);
        if answer.starts_with("HTTP/1.1 503") {
            break answer;
        }
        assert!(start.elapsed() < WAIT, "never refused a connection beyond the limit: {answer}");
    };
    assert!(busy.contains("busy; retry"), "{busy}");
    // Once the held connections go, scrapes are served again.
    drop(held);
    let start = Instant::now();
    while !get_metrics(addr).starts_with("HTTP/1.1 200 OK\r\n") {
        assert!(start.elapsed() < WAIT, "the server never recovered its connection slots");
    }
}

#[test]
fn hostile_scrapers_never_hold_up_the_frame_path() {
    let addr = server_with(64, NEVER, NEVER);
    let m = metrics::global();
    let frames = m.counter("http_test_frames_total", "Frames of the simulated frame path");
    let wake = m.histogram("http_test_wake_seconds", "Wake-up of the simulated frame path", &[1e-5, 1e-3, 0.1]);
    // Stalled and hostile clients connected during the whole run.
    let mut stalled: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    for s in &mut stalled[..2] {
        s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
    }
    // Scrapers hammering the server concurrently, good and bad.
    let done = Arc::new(AtomicBool::new(false));
    let scrapers: Vec<_> = (0..4)
        .map(|i| {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !done.load(Ordering::Relaxed) {
                    if i % 2 == 0 {
                        let answer = get_metrics(addr);
                        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") || answer.starts_with("HTTP/1.1 503"));
                    } else {
                        let _ = request(addr, b"BREW /coffee HTCPCP/1.0\r\n\x00\x01\r\n\r\n");
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    // The frame path: a million counts and observations, finishing while the
    // stalled clients are still connected (nothing it does waits for them).
    const N: u64 = 1_000_000;
    for i in 0..N {
        frames.inc();
        wake.observe((i % 1000) as f64 * 1e-6);
    }
    assert!(stalled.iter().all(still_open), "the frame path finished only after the stalled clients were dropped");
    done.store(true, Ordering::Relaxed);
    let scrapes: u64 = scrapers.into_iter().map(|t| t.join().expect("a scraper failed")).sum();
    assert!(scrapes > 0);
    let text = get_metrics(addr);
    assert!(text.contains(&format!("\nhttp_test_frames_total {N}\n")), "{text}");
    assert!(text.contains(&format!("\nhttp_test_wake_seconds_count {N}\n")), "{text}");
}
