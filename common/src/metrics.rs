//! Prometheus metrics of a shmcast binary: one process-wide
//! [`prometheus_client`] registry, rendered in the Prometheus text format
//! (version 0.0.4) at `/metrics` by the [`crate::http`] server
//! (`--metrics ADDR:PORT`).
//!
//! Invariants:
//! - Hot paths only touch the metric handles (atomics; a histogram takes its
//!   own short lock); the registry lock and every allocation happen at
//!   registration and on the server's thread, and a scrape holds the lock
//!   only while encoding into memory, never while talking to the client.
//! - A name is registered once: asking again for the same name and kind
//!   returns the *same* handle, so a part that registers its metrics each
//!   time it (re)attaches keeps counting instead of exporting the family twice.
//! - Names are the exposed ones (`shmcast_frames_total`): a counter's `_total`
//!   is added by the encoder, so it is stripped from the registered name.
//! - `binary` and `stream` labels ([`Metrics::set_labels`]) are on every sample.
//! - Process metrics (`process_resident_memory_bytes`,
//!   `process_cpu_seconds_total`, `process_open_fds`, `process_threads`) are
//!   read from `/proc/self` at each scrape.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::histogram::Histogram;

/// A gauge of whole numbers (frames, clients).
pub type IntGauge = prometheus_client::metrics::gauge::Gauge<u64, AtomicU64>;
/// A gauge of floating-point values (frames per second).
pub type FloatGauge = prometheus_client::metrics::gauge::Gauge<f64, AtomicU64>;

/// A registered handle, kept to answer a second registration of its name.
#[derive(Clone)]
enum Handle {
    Counter(Counter),
    Gauge(IntGauge),
    FloatGauge(FloatGauge),
    Histogram(Histogram, Vec<f64>),
}

struct Entry {
    /// The exposed name (a counter's with `_total`): one family per name.
    exposed: String,
    /// The name registered with the library.
    name: String,
    help: String,
    handle: Handle,
}

struct Inner {
    labels: Vec<(String, String)>,
    entries: Vec<Entry>,
    registry: Registry,
}

impl Inner {
    /// A registry with the current labels holding every entry (the library
    /// fixes a registry's labels when it is made).
    fn rebuild(&mut self) {
        let labels = self.labels.iter().map(|(k, v)| (Cow::Owned(k.clone()), Cow::Owned(v.clone())));
        let mut r = Registry::with_labels(labels);
        r.register_collector(Box::new(ProcessCollector));
        for e in &self.entries {
            add(&mut r, e);
        }
        self.registry = r;
    }
}

fn add(r: &mut Registry, e: &Entry) {
    let (name, help) = (e.name.as_str(), e.help.as_str());
    match &e.handle {
        Handle::Counter(c) => r.register(name, help, c.clone()),
        Handle::Gauge(g) => r.register(name, help, g.clone()),
        Handle::FloatGauge(g) => r.register(name, help, g.clone()),
        Handle::Histogram(h, _) => r.register(name, help, h.clone()),
    }
}

/// A metrics registry (the binaries use [`global`]).
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut inner = Inner { labels: Vec::new(), entries: Vec::new(), registry: Registry::default() };
        inner.rebuild();
        Metrics { inner: Mutex::new(inner) }
    }
}

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// The process-wide registry, served by `--metrics`.
pub fn global() -> &'static Metrics {
    GLOBAL.get_or_init(Metrics::default)
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns the handle registered under `name` when `existing` accepts it,
    /// else registers the one `make` builds. `suffix` is what the encoder
    /// appends to the name (`_total` for a counter). A name taken by another kind
    /// keeps its first registration (two families of one name would make
    /// the whole exposition invalid); the new handle then counts unexported
    /// and a warning says so.
    fn get_or_add<T>(
        &self,
        name: &str,
        suffix: &str,
        help: &str,
        existing: impl Fn(&Handle) -> Option<T>,
        make: impl FnOnce() -> (T, Handle),
    ) -> T {
        let name = sanitize_name(name);
        let exposed = format!("{name}{suffix}");
        let mut inner = self.lock();
        if let Some(e) = inner.entries.iter().find(|e| e.exposed == exposed) {
            if let Some(h) = existing(&e.handle) {
                return h;
            }
            tracing::warn!(metric = %name, "metric registered twice with different kinds; the second is not exported");
            return make().0;
        }
        let (h, handle) = make();
        let entry = Entry { exposed, name, help: help.trim_end_matches('.').to_string(), handle };
        add(&mut inner.registry, &entry);
        inner.entries.push(entry);
        h
    }

    /// Labels added to every sample (e.g. `stream="cam0"`); invalid label
    /// names are sanitised.
    pub fn set_labels(&self, labels: &[(&str, &str)]) {
        let mut inner = self.lock();
        inner.labels = labels.iter().map(|(k, v)| (sanitize_label(k), v.to_string())).collect();
        inner.rebuild();
    }

    /// Registers (or returns the already registered) counter. `name` is the
    /// exposed name, `_total` included.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        let base = name.strip_suffix("_total").unwrap_or(name);
        self.get_or_add(
            base,
            "_total",
            help,
            |h| if let Handle::Counter(c) = h { Some(c.clone()) } else { None },
            || {
                let c = Counter::default();
                (c.clone(), Handle::Counter(c))
            },
        )
    }

    /// Registers (or returns the already registered) gauge of whole numbers.
    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.get_or_add(
            name,
            "",
            help,
            |h| if let Handle::Gauge(g) = h { Some(g.clone()) } else { None },
            || {
                let g = IntGauge::default();
                (g.clone(), Handle::Gauge(g))
            },
        )
    }

    /// Registers (or returns the already registered) floating-point gauge.
    pub fn gauge_f64(&self, name: &str, help: &str) -> FloatGauge {
        self.get_or_add(
            name,
            "",
            help,
            |h| if let Handle::FloatGauge(g) = h { Some(g.clone()) } else { None },
            || {
                let g = FloatGauge::default();
                (g.clone(), Handle::FloatGauge(g))
            },
        )
    }

    /// Registers a histogram with the given bucket upper bounds (sorted,
    /// deduplicated, non-finite ones dropped: `+Inf` is implicit), or returns
    /// the one already registered under `name` with the same bounds.
    pub fn histogram(&self, name: &str, help: &str, bounds: &[f64]) -> Histogram {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        self.get_or_add(
            name,
            "",
            help,
            |h| match h {
                Handle::Histogram(h, b) if *b == bounds => Some(h.clone()),
                _ => None,
            },
            || {
                let h = Histogram::new(bounds.iter().copied());
                (h.clone(), Handle::Histogram(h, bounds.clone()))
            },
        )
    }

    /// The text exposition (format 0.0.4) of every metric and the process metrics.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let inner = self.lock();
        // Writing into a String cannot fail; an encoder error would be a bug
        // in a metric's encoding, and half a scrape is still better than none.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &inner.registry) {
            tracing::warn!("cannot encode metrics: {e}");
        }
        out
    }
}

/// `GET /metrics` (and `HEAD`): the process-wide registry, to merge into a
/// binary's [`Router`].
pub fn routes() -> Router {
    Router::new().route("/metrics", get(|| async { ([(header::CONTENT_TYPE, CONTENT_TYPE)], global().render()) }))
}

/// Serves [`routes`] (plus a pointer to them at `/`) on `addr` from a
/// background thread; returns the address it listens on.
///
/// # Errors
/// When `addr` cannot be bound (in use, not local, no permission), with the
/// `--metrics` option named, so that the binary exits with one clear line.
pub fn serve(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let cannot = |e: std::io::Error| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another process listens there: choose another --metrics port)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot serve metrics on {addr}: {e}{hint}")
    };
    let listener = crate::http::bind(addr).map_err(cannot)?;
    let router = routes()
        .route("/", get(|| async { "shmcast metrics: see /metrics\n" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found; try /metrics\n") });
    crate::http::spawn(listener, router, crate::http::Limits::default()).map_err(cannot)
}

/// Process statistics from `/proc/self`, read at each scrape (a family is
/// left out when its file cannot be read).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rss = ConstGauge::new(crate::rss_bytes());
        rss.encode(enc.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            rss.metric_type(),
        )?)?;
        if let Some(cpu) = crate::procs::cpu_seconds(std::process::id()) {
            let c = ConstCounter::new(cpu);
            c.encode(enc.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
            let g = ConstGauge::new(d.count() as u64);
            g.encode(enc.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors",
                None,
                g.metric_type(),
            )?)?;
        }
        let threads = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse::<u64>().ok())
        });
        if let Some(t) = threads {
            let g = ConstGauge::new(t);
            g.encode(enc.encode_descriptor(
                "process_threads",
                "Number of OS threads in the process",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_format() {
        let r = Metrics::default();
        r.set_labels(&[("stream", "cam0")]);
        let c = r.counter("shmcast_frames_total", "Frames.");
        c.inc_by(3);
        let h = r.histogram("shmcast_wake_seconds", "Wake-up latency", &[0.001, 0.01]);
        h.observe(0.0005);
        h.observe(0.5);
        let text = r.render();
        assert!(text.contains("# HELP shmcast_frames_total Frames.\n"), "{text}");
        assert!(text.contains("# TYPE shmcast_frames_total counter\n"), "{text}");
        assert!(text.contains("shmcast_frames_total{stream=\"cam0\"} 3\n"), "{text}");
        assert!(text.contains("shmcast_wake_seconds_bucket{stream=\"cam0\",le=\"0.001\"} 1\n"), "{text}");
        assert!(text.contains("shmcast_wake_seconds_bucket{stream=\"cam0\",le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("shmcast_wake_seconds_count{stream=\"cam0\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE process_resident_memory_bytes gauge\n"), "{text}");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"), "{text}");
        assert!(text.contains("# TYPE process_threads gauge\n"), "{text}");
    }

    #[test]
    fn registering_again_returns_the_same_handle() {
        let r = Metrics::default();
        let a = r.counter("x_total", "X");
        a.inc_by(5);
        let b = r.counter("x_total", "X");
        assert_eq!(b.get(), 5);
        let h1 = r.histogram("h", "H", &[1.0, 2.0]);
        let h2 = r.histogram("h", "H", &[2.0, 1.0, f64::INFINITY]);
        h1.observe(1.5);
        h2.observe(1.5);
        let text = r.render();
        assert_eq!(text.matches("# TYPE x_total counter").count(), 1, "{text}");
        assert!(text.contains("x_total 5\n"), "{text}");
        assert!(text.contains("h_count 2\n"), "{text}");
        // Another kind under a taken name is not exported: one family per name.
        let g = r.gauge("x_total", "now a gauge");
        g.set(2);
        let text = r.render();
        assert_eq!(text.matches("# TYPE x_total").count(), 1, "{text}");
        assert!(text.contains("x_total 5\n"), "{text}");
    }

    #[test]
    fn labels_set_after_registration_apply_to_every_family() {
        let r = Metrics::default();
        r.gauge("early", "Registered before the labels").set(7);
        r.set_labels(&[("binary", "b"), ("stream", "s")]);
        let text = r.render();
        assert!(text.contains("early{binary=\"b\",stream=\"s\"} 7\n"), "{text}");
        assert!(text.contains("process_resident_memory_bytes{binary=\"b\",stream=\"s\"} "), "{text}");
    }

    #[test]
    fn escapes_and_sanitises() {
        let r = Metrics::default();
        r.set_labels(&[("stream", "a\"b\\c\nd"), ("bad-label", "v")]);
        r.gauge("9bad name", "line one\nline \\two");
        let text = r.render();
        assert!(text.contains("# HELP _9bad_name line one\\nline \\\\two.\n"), "{text}");
        assert!(text.contains("_9bad_name{stream=\"a\\\"b\\\\c\\nd\",bad_label=\"v\"} 0\n"), "{text}");
    }

    #[test]
    fn float_gauge_and_nan_observations() {
        let r = Metrics::default();
        r.gauge_f64("fps", "Frames per second").set(29.97);
        let h = r.histogram("h", "H", &[0.5, f64::NAN, 0.1, 0.5]);
        h.observe(0.1); // le is inclusive
        h.observe(7.0);
        let text = r.render();
        assert!(text.contains("fps 29.97\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"0.1\"} 1\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"0.5\"} 1\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"+Inf\"} 2\n"), "{text}");
    }
}
