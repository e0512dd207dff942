//! Prometheus metrics: a process-wide registry of counters, gauges and
//! histograms, rendered in the text exposition format at `/metrics` by a small
//! HTTP server thread (`--metrics ADDR:PORT`).
//!
//! Hot paths only touch atomics; rendering happens on the server thread.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A histogram with fixed upper bounds (cumulative buckets on render).
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    sum_bits: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        // Relaxed: independent statistics; a scrape may see them a moment apart.
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some((f64::from_bits(b) + v).to_bits()));
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
    fn add(&self, name: &str, help: &str, kind: Kind) {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.retain(|x| x.name != name);
        e.push(Entry { name: name.to_string(), help: help.to_string(), kind });
    }

    /// Labels added to every sample (e.g. `stream="cam0"`).
    pub fn set_labels(&self, labels: &[(&str, &str)]) {
        *self.labels.lock().unwrap_or_else(|p| p.into_inner()) =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// Registers a monotonically increasing counter.
    pub fn counter(&self, name: &str, help: &str) -> Arc<AtomicU64> {
        let a = Arc::new(AtomicU64::new(0));
        self.add(name, help, Kind::Counter(Arc::clone(&a)));
        a
    }

    /// Registers an integer gauge.
    pub fn gauge(&self, name: &str, help: &str) -> Arc<AtomicU64> {
        let a = Arc::new(AtomicU64::new(0));
        self.add(name, help, Kind::Gauge(Arc::clone(&a)));
        a
    }

    /// Registers a float gauge (store `f64::to_bits`).
    pub fn gauge_f64(&self, name: &str, help: &str) -> Arc<AtomicU64> {
        let a = Arc::new(AtomicU64::new(0f64.to_bits()));
        self.add(name, help, Kind::GaugeF64(Arc::clone(&a)));
        a
    }

    /// Registers a histogram with the given bucket upper bounds.
    pub fn histogram(&self, name: &str, help: &str, bounds: &[f64]) -> Arc<Histogram> {
        let h = Arc::new(Histogram::new(bounds));
        self.add(name, help, Kind::Histogram(Arc::clone(&h)));
        h
    }

    /// The text exposition of every metric, plus the process's RSS.
    pub fn render(&self) -> String {
        let labels = self.labels.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let lbl = |extra: Option<(&str, String)>| {
            let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            if let Some((k, v)) = extra {
                parts.push(format!("{k}=\"{v}\""));
            }
            if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
        };
        let mut out = String::new();
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for e in entries.iter() {
            let (kind, _) = match &e.kind {
                Kind::Counter(_) => ("counter", ()),
                Kind::Gauge(_) | Kind::GaugeF64(_) => ("gauge", ()),
                Kind::Histogram(_) => ("histogram", ()),
            };
            let _ = writeln!(out, "# HELP {} {}", e.name, e.help.replace('\n', " "));
            let _ = writeln!(out, "# TYPE {} {kind}", e.name);
            // Relaxed: a scrape is a snapshot; values need no mutual consistency.
            match &e.kind {
                Kind::Counter(a) | Kind::Gauge(a) => {
                    let _ = writeln!(out, "{}{} {}", e.name, lbl(None), a.load(Ordering::Relaxed));
                }
                Kind::GaugeF64(a) => {
                    let _ =
                        writeln!(out, "{}{} {}", e.name, lbl(None), fmt_f64(f64::from_bits(a.load(Ordering::Relaxed))));
                }
                Kind::Histogram(h) => {
                    let mut cum = 0;
                    for (i, b) in h.bounds.iter().enumerate() {
                        cum += h.counts[i].load(Ordering::Relaxed);
                        let _ = writeln!(out, "{}_bucket{} {cum}", e.name, lbl(Some(("le", fmt_f64(*b)))));
                    }
                    cum += h.counts[h.bounds.len()].load(Ordering::Relaxed);
                    let _ = writeln!(out, "{}_bucket{} {cum}", e.name, lbl(Some(("le", "+Inf".into()))));
                    let sum = f64::from_bits(h.sum_bits.load(Ordering::Relaxed));
                    let _ = writeln!(out, "{}_sum{} {}", e.name, lbl(None), fmt_f64(sum));
                    let _ = writeln!(out, "{}_count{} {}", e.name, lbl(None), h.count.load(Ordering::Relaxed));
                }
            }
        }
        let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory size in bytes.");
        let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
        let _ = writeln!(out, "process_resident_memory_bytes{} {}", lbl(None), crate::rss_bytes());
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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

/// Serves `/metrics` on `addr` from a background thread. Fails at once (e.g.
/// address in use) so the binary can exit with one clear line.
pub fn serve(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for conn in listener.incoming().flatten() {
            let _ = handle(conn);
        }
    })?;
    Ok(local)
}

fn handle(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Drain headers (bounded).
    let mut line = String::new();
    for _ in 0..100 {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = if request.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?"))
    {
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", global().render())
    } else {
        ("404 Not Found", "text/plain", "not found; try /metrics\n".to_string())
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
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
    }
}
