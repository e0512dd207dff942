//! Prometheus metrics: a process-wide registry of counters, gauges and
//! histograms, rendered in the text exposition format (version 0.0.4) at
//! `/metrics` by a small HTTP server (`--metrics ADDR:PORT`).
//!
//! Invariants:
//! - Hot paths only touch atomics (`fetch_add`, `store`); the registry lock and
//!   every allocation happen at registration and on the server's threads.
//! - A name is registered once: asking again for the same name and kind returns
//!   the *same* handle, so a part that registers its metrics each time it
//!   (re)attaches keeps counting instead of silently resetting the counter and
//!   orphaning the old handle.
//! - The output is always valid exposition text: names and label names are
//!   sanitised to `[a-zA-Z_:][a-zA-Z0-9_:]*`, help text and label values are
//!   escaped, each family is one contiguous group.
//! - A slow or hostile scraper cannot stall the binary, nor other scrapers for
//!   long: requests are read with a byte limit and timeouts, on a few handler
//!   threads at most.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A histogram with fixed upper bounds (cumulative buckets on render).
pub struct Histogram {
    /// Sorted, finite, distinct upper bounds; `+Inf` is implicit.
    bounds: Vec<f64>,
    /// One count per bound plus the `+Inf` bucket (not cumulative).
    counts: Vec<AtomicU64>,
    sum_bits: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        Histogram {
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            bounds,
            sum_bits: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation (NaN is ignored: it would poison the sum).
    pub fn observe(&self, v: f64) {
        if v.is_nan() {
            return;
        }
        let i = self.bounds.partition_point(|b| *b < v);
        // Relaxed: independent statistics; a scrape may see them a moment apart.
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some((f64::from_bits(b) + v).to_bits()));
    }

    /// Number of observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn same_bounds(&self, bounds: &[f64]) -> bool {
        Histogram::new(bounds).bounds == self.bounds
    }
}

enum Kind {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicU64>),
    GaugeF64(Arc<AtomicU64>),
    Histogram(Arc<Histogram>),
}

struct Entry {
    name: String,
    help: String,
    kind: Kind,
}

/// The registry.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<Vec<Entry>>,
    labels: Mutex<Vec<(String, String)>>,
}

static GLOBAL: OnceLock<Registry> = OnceLock::new();

/// The process-wide registry.
pub fn global() -> &'static Registry {
    GLOBAL.get_or_init(Registry::default)
}

impl Registry {
    /// Returns the handle already registered under `name` when `existing`
    /// accepts it, else registers the one `make` builds (replacing an entry
    /// of another kind: the last registration wins, as before).
    fn get_or_add<T>(
        &self,
        name: &str,
        help: &str,
        existing: impl Fn(&Kind) -> Option<Arc<T>>,
        make: impl FnOnce() -> (Arc<T>, Kind),
    ) -> Arc<T> {
        let name = sanitize_name(name);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.iter_mut().find(|e| e.name == name) {
            if let Some(h) = existing(&e.kind) {
                return h;
            }
            let (h, kind) = make();
            *e = Entry { name, help: help.to_string(), kind };
            return h;
        }
        let (h, kind) = make();
        entries.push(Entry { name, help: help.to_string(), kind });
        h
    }

    /// Labels added to every sample (e.g. `stream="cam0"`).
    pub fn set_labels(&self, labels: &[(&str, &str)]) {
        *self.labels.lock().unwrap_or_else(|p| p.into_inner()) =
            labels.iter().map(|(k, v)| (sanitize_label(k), v.to_string())).collect();
    }

    /// Registers (or returns the already registered) monotonically increasing counter.
    pub fn counter(&self, name: &str, help: &str) -> Arc<AtomicU64> {
        self.get_or_add(
            name,
            help,
            |k| if let Kind::Counter(a) = k { Some(Arc::clone(a)) } else { None },
            || {
                let a = Arc::new(AtomicU64::new(0));
                (Arc::clone(&a), Kind::Counter(a))
            },
        )
    }

    /// Registers (or returns the already registered) integer gauge.
    pub fn gauge(&self, name: &str, help: &str) -> Arc<AtomicU64> {
        self.get_or_add(
            name,
            help,
            |k| if let Kind::Gauge(a) = k { Some(Arc::clone(a)) } else { None },
            || {
                let a = Arc::new(AtomicU64::new(0));
                (Arc::clone(&a), Kind::Gauge(a))
            },
        )
    }

    /// Registers (or returns the already registered) float gauge (store `f64::to_bits`).
    pub fn gauge_f64(&self, name: &str, help: &str) -> Arc<AtomicU64> {
        self.get_or_add(
            name,
            help,
            |k| if let Kind::GaugeF64(a) = k { Some(Arc::clone(a)) } else { None },
            || {
                let a = Arc::new(AtomicU64::new(0f64.to_bits()));
                (Arc::clone(&a), Kind::GaugeF64(a))
            },
        )
    }

    /// Registers a histogram with the given bucket upper bounds (or returns the
    /// one already registered under `name` with the same bounds).
    pub fn histogram(&self, name: &str, help: &str, bounds: &[f64]) -> Arc<Histogram> {
        self.get_or_add(
            name,
            help,
            |k| match k {
                Kind::Histogram(h) if h.same_bounds(bounds) => Some(Arc::clone(h)),
                _ => None,
            },
            || {
                let h = Arc::new(Histogram::new(bounds));
                (Arc::clone(&h), Kind::Histogram(h))
            },
        )
    }

    /// The text exposition of every metric, plus process metrics (resident
    /// memory, CPU time, open file descriptors, threads).
    pub fn render(&self) -> String {
        let labels = self.labels.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let base: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_value(v))).collect();
        let plain = if base.is_empty() { String::new() } else { format!("{{{}}}", base.join(",")) };
        let with_le = |le: &str| {
            let mut parts = base.clone();
            parts.push(format!("le=\"{le}\""));
            format!("{{{}}}", parts.join(","))
        };
        let mut out = String::with_capacity(4096);
        let family = |out: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            // Relaxed loads: a scrape is a snapshot; values need no mutual consistency.
            for e in entries.iter() {
                match &e.kind {
                    Kind::Counter(a) => {
                        family(&mut out, &e.name, &e.help, "counter");
                        let _ = writeln!(out, "{}{plain} {}", e.name, a.load(Ordering::Relaxed));
                    }
                    Kind::Gauge(a) => {
                        family(&mut out, &e.name, &e.help, "gauge");
                        let _ = writeln!(out, "{}{plain} {}", e.name, a.load(Ordering::Relaxed));
                    }
                    Kind::GaugeF64(a) => {
                        family(&mut out, &e.name, &e.help, "gauge");
                        let v = fmt_f64(f64::from_bits(a.load(Ordering::Relaxed)));
                        let _ = writeln!(out, "{}{plain} {v}", e.name);
                    }
                    Kind::Histogram(h) => {
                        family(&mut out, &e.name, &e.help, "histogram");
                        // Read the per-bucket counts once, then derive the total
                        // from them so `_count` always equals the `+Inf` bucket
                        // even while observations race with the scrape.
                        let mut cum = 0u64;
                        for (i, b) in h.bounds.iter().enumerate() {
                            cum += h.counts[i].load(Ordering::Relaxed);
                            let _ = writeln!(out, "{}_bucket{} {cum}", e.name, with_le(&fmt_f64(*b)));
                        }
                        cum += h.counts[h.bounds.len()].load(Ordering::Relaxed);
                        let _ = writeln!(out, "{}_bucket{} {cum}", e.name, with_le("+Inf"));
                        let sum = f64::from_bits(h.sum_bits.load(Ordering::Relaxed));
                        let _ = writeln!(out, "{}_sum{plain} {}", e.name, fmt_f64(sum));
                        let _ = writeln!(out, "{}_count{plain} {cum}", e.name);
                    }
                }
            }
        }
        let proc = ProcessStats::read();
        family(&mut out, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge");
        let _ = writeln!(out, "process_resident_memory_bytes{plain} {}", crate::rss_bytes());
        if let Some(cpu) = proc.cpu_seconds {
            family(
                &mut out,
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                "counter",
            );
            let _ = writeln!(out, "process_cpu_seconds_total{plain} {}", fmt_f64(cpu));
        }
        if let Some(fds) = proc.open_fds {
            family(&mut out, "process_open_fds", "Number of open file descriptors.", "gauge");
            let _ = writeln!(out, "process_open_fds{plain} {fds}");
        }
        if let Some(threads) = proc.threads {
            family(&mut out, "process_threads", "Number of OS threads in the process.", "gauge");
            let _ = writeln!(out, "process_threads{plain} {threads}");
        }
        out
    }
}

/// Process statistics from `/proc/self` (absent fields when unreadable).
struct ProcessStats {
    cpu_seconds: Option<f64>,
    open_fds: Option<usize>,
    threads: Option<u64>,
}

impl ProcessStats {
    fn read() -> ProcessStats {
        // utime and stime are fields 14 and 15 of /proc/self/stat, counted
        // after the parenthesised command name (which may contain spaces), in
        // USER_HZ ticks: 100 on every Linux architecture we build for (the
        // kernel exports a fixed USER_HZ to userspace whatever its HZ).
        let cpu_seconds = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| {
            let rest = s.rsplit_once(") ")?.1;
            let mut it = rest.split_whitespace().skip(11);
            let utime: u64 = it.next()?.parse().ok()?;
            let stime: u64 = it.next()?.parse().ok()?;
            Some((utime + stime) as f64 / 100.0)
        });
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count());
        let threads = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()));
        ProcessStats { cpu_seconds, open_fds, threads }
    }
}

/// A valid metric name: invalid characters become `_`, a leading digit gets a `_` prefix.
fn sanitize_name(name: &str) -> String {
    sanitize(name, true)
}

/// A valid label name (no `:` allowed).
fn sanitize_label(name: &str) -> String {
    sanitize(name, false)
}

fn sanitize(name: &str, colon_ok: bool) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || (colon_ok && c == ':') { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Label values escape backslash, double quote and newline.
fn escape_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Help text escapes backslash and newline (quotes are literal there).
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

/// At most this many scrapes are answered at once; more connections are
/// answered `503` without reading their request.
const MAX_HANDLERS: usize = 4;
/// Bytes of request (line and headers) read at most: `/metrics` needs none of it.
const MAX_REQUEST_BYTES: u64 = 16 * 1024;
/// Per-read and per-write timeout of a scrape connection.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `/metrics` on `addr` from a background thread. Fails at once (e.g.
/// address in use) so the binary can exit with one clear line.
pub fn serve(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another process listens there: choose another --metrics port)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot serve metrics on {addr}: {e}{hint}")
    })?;
    let local = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else {
                // EMFILE and the like: back off instead of spinning on accept.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            // AcqRel: pairs with the handler's decrement so the count never
            // exceeds MAX_HANDLERS (the value is the only shared state).
            if active.fetch_add(1, Ordering::AcqRel) >= MAX_HANDLERS {
                active.fetch_sub(1, Ordering::AcqRel);
                let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
                let _ = respond(&mut conn, "503 Service Unavailable", "text/plain", "busy; retry\n", false);
                continue;
            }
            let done = Arc::clone(&active);
            let spawned = std::thread::Builder::new().name("metrics-conn".into()).spawn(move || {
                let _ = handle(conn);
                done.fetch_sub(1, Ordering::AcqRel);
            });
            if spawned.is_err() {
                active.fetch_sub(1, Ordering::AcqRel);
            }
        }
    })?;
    Ok(local)
}

fn handle(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new((&conn).take(MAX_REQUEST_BYTES));
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Drain the headers so the client sees a clean close, within the byte limit.
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    drop(reader);
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let is_metrics = path == "/metrics" || path.starts_with("/metrics?");
    match method {
        "GET" | "HEAD" if is_metrics => {
            let body = global().render();
            respond(&mut conn, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &body, method == "HEAD")
        }
        "GET" | "HEAD" if path == "/" => {
            respond(&mut conn, "200 OK", "text/plain", "shmcast metrics: see /metrics\n", method == "HEAD")
        }
        "GET" | "HEAD" => respond(&mut conn, "404 Not Found", "text/plain", "not found; try /metrics\n", false),
        _ => respond(&mut conn, "405 Method Not Allowed", "text/plain", "only GET /metrics\n", false),
    }
}

fn respond(conn: &mut TcpStream, status: &str, ctype: &str, body: &str, head_only: bool) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !head_only {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_format() {
        let r = Registry::default();
        r.set_labels(&[("stream", "cam0")]);
        let c = r.counter("shmcast_frames_total", "Frames.");
        c.fetch_add(3, Ordering::Relaxed);
        let h = r.histogram("shmcast_wake_seconds", "Wake-up latency.", &[0.001, 0.01]);
        h.observe(0.0005);
        h.observe(0.5);
        let text = r.render();
        assert!(text.contains("shmcast_frames_total{stream=\"cam0\"} 3"), "{text}");
        assert!(text.contains("shmcast_wake_seconds_bucket{stream=\"cam0\",le=\"0.001\"} 1"), "{text}");
        assert!(text.contains("shmcast_wake_seconds_bucket{stream=\"cam0\",le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("shmcast_wake_seconds_count{stream=\"cam0\"} 2"), "{text}");
        assert!(text.contains("# TYPE process_resident_memory_bytes gauge"), "{text}");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"), "{text}");
    }

    #[test]
    fn registering_again_returns_the_same_handle() {
        let r = Registry::default();
        let a = r.counter("x_total", "X.");
        a.fetch_add(5, Ordering::Relaxed);
        let b = r.counter("x_total", "X.");
        assert!(Arc::ptr_eq(&a, &b));
        let h1 = r.histogram("h", "H.", &[1.0, 2.0]);
        let h2 = r.histogram("h", "H.", &[2.0, 1.0]);
        assert!(Arc::ptr_eq(&h1, &h2));
        let text = r.render();
        assert_eq!(text.matches("# TYPE x_total counter").count(), 1, "{text}");
        assert!(text.contains("x_total 5"), "{text}");
        // Another kind under the same name replaces the entry.
        let g = r.gauge("x_total", "now a gauge");
        g.store(2, Ordering::Relaxed);
        let text = r.render();
        assert!(text.contains("# TYPE x_total gauge") && text.contains("x_total 2"), "{text}");
    }

    #[test]
    fn escapes_and_sanitises() {
        let r = Registry::default();
        r.set_labels(&[("stream", "a\"b\\c\nd"), ("bad-label", "v")]);
        r.gauge("9bad name", "line one\nline \\two");
        let text = r.render();
        assert!(text.contains("# HELP _9bad_name line one\\nline \\\\two\n"), "{text}");
        assert!(text.contains("_9bad_name{stream=\"a\\\"b\\\\c\\nd\",bad_label=\"v\"} 0"), "{text}");
    }

    #[test]
    fn histogram_bounds_and_nan() {
        let h = Histogram::new(&[0.5, f64::NAN, 0.1, 0.5, f64::INFINITY]);
        assert_eq!(h.bounds, vec![0.1, 0.5]);
        h.observe(0.1); // le is inclusive
        h.observe(f64::NAN);
        h.observe(7.0);
        assert_eq!(h.counts[0].load(Ordering::Relaxed), 1);
        assert_eq!(h.counts[2].load(Ordering::Relaxed), 1);
        assert_eq!(h.count(), 2);
    }

    #[test]
    fn serves_http_and_refuses_a_busy_port() {
        let local = serve("127.0.0.1:0".parse().unwrap()).unwrap();
        global().counter("served_total", "Served.").fetch_add(1, Ordering::Relaxed);
        let get = |req: &str| {
            let mut s = TcpStream::connect(local).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("served_total 1"), "{ok}");
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{ok}");
        assert!(get("GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // An oversized request is cut at the byte limit, never buffered whole.
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100_000));
        let mut s = TcpStream::connect(local).unwrap();
        let _ = s.write_all(big.as_bytes());
        // A client that connects and sends nothing does not hold up others:
        // a scrape is answered while it is still connected.
        let mut idle = TcpStream::connect(local).unwrap();
        assert!(get("GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200 OK\r\n"));
        idle.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        let still_open = matches!(idle.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(still_open, "the idle connection was answered or closed before the scrape");
        let err = serve(local).unwrap_err().to_string();
        assert!(err.contains("cannot serve metrics on") && err.contains("choose another --metrics port"), "{err}");
    }
}
