//! `shmcast-web`: every shmcast stream of the host in a browser.
//!
//! [`run`] serves, on the project's HTTP stack ([`shmcast_common::http`]):
//! the page (`/`), the stream list and details, snapshots encoded on request
//! from the newest intact frame of the ring, shared live views
//! ([`live`]), the detector's events with their pictures ([`events`]) and
//! `/metrics`, optionally behind HTTP Basic authentication.
#![forbid(unsafe_code)]

pub mod config;
pub mod events;
pub mod jpeg;
pub mod live;
pub mod streams;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{self, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::json;
use shm_proto::{OpenError, Reader, ReaderOptions, Start};
use shmcast_common::metrics::{Counter, Histogram};

use crate::config::{Config, Credentials};
use crate::events::Events;
use crate::live::{FeedKey, Hub};
use crate::streams::Directory;

/// The page: one self-contained file (no external assets).
const PAGE: &str = include_str!("page.html");

/// Longest a snapshot waits for a first frame of a stream that has none yet.
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(2);

/// Everything the handlers share.
pub struct App {
    cfg: Config,
    streams: Arc<Directory>,
    events: Arc<Events>,
    hub: Hub,
    snapshots: Counter,
    snapshot_seconds: Histogram,
}

type Shared = Arc<App>;

/// A JSON error answer.
fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": msg.into() }))).into_response()
}

fn no_stream(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no stream named {name:?}"))
}

/// The host name the client used (for RTSP links of bridges on all interfaces).
fn request_host(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    // "[::1]:8080" / "box:8080" / "box"
    if let Some(rest) = host.strip_prefix('[') {
        return format!("[{}]", rest.split(']').next().unwrap_or(""));
    }
    host.split(':').next().unwrap_or(host).to_string()
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE))
}

async fn list_streams(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let host = request_host(&headers);
    let list: Vec<_> = app.streams.all().iter().map(|s| s.to_json(&host)).collect();
    axum::Json(list).into_response()
}

async fn one_stream(State(app): State<Shared>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    match app.streams.get(&name) {
        Some(s) => axum::Json(s.to_json(&request_host(&headers))).into_response(),
        None => no_stream(&name),
    }
}

#[derive(Deserialize)]
struct SnapshotQuery {
    width: Option<u32>,
}

/// Copies the newest intact frame of `name` and encodes it.
fn snapshot_blocking(name: &str, width: Option<u32>, quality: u8) -> Result<Vec<u8>, (StatusCode, String)> {
    let mut r = match Reader::open(name, &ReaderOptions { start: Start::Oldest, ..ReaderOptions::default() }) {
        Ok(r) => r,
        Err(OpenError::NotFound { .. } | OpenError::Name(_)) => {
            return Err((StatusCode::NOT_FOUND, format!("no stream named {name:?}")));
        }
        Err(e) => return Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    };
    let mut buf = Vec::new();
    let deadline = Instant::now() + FIRST_FRAME_WAIT;
    // An overrun means the producer lapped the copy: the next newest frame is
    // tried; a few attempts cover any sane producer.
    for _ in 0..8 {
        let Some(f) = r.latest() else {
            if Instant::now() >= deadline || !r.status().0.is_alive() {
                return Err((StatusCode::SERVICE_UNAVAILABLE, format!("stream {name:?} has no frame yet")));
            }
            let _ = r.wait(Duration::from_millis(100));
            continue;
        };
        let format = *f.format();
        buf.resize(f.len(), 0);
        if let Ok(n) = f.copy_to(&mut buf) {
            return jpeg::encode(&buf[..n], &format, width, quality)
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("stream {name:?}: {e}")));
        }
    }
    Err((StatusCode::SERVICE_UNAVAILABLE, format!("stream {name:?}: every copy was overwritten")))
}

fn jpeg_response(jpg: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-store")], jpg).into_response()
}

async fn snapshot(State(app): State<Shared>, Path(name): Path<String>, Query(q): Query<SnapshotQuery>) -> Response {
    let start = Instant::now();
    let quality = app.cfg.quality;
    let n = name.clone();
    let r = tokio::task::spawn_blocking(move || snapshot_blocking(&n, q.width, quality)).await;
    match r {
        Ok(Ok(jpg)) => {
            app.snapshots.inc();
            app.snapshot_seconds.observe(start.elapsed().as_secs_f64());
            jpeg_response(jpg)
        }
        Ok(Err((status, msg))) => error(status, msg),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("snapshot of {name:?} failed: {e}")),
    }
}

#[derive(Deserialize)]
struct LiveQuery {
    fps: Option<f64>,
    width: Option<u32>,
}

const BOUNDARY: &str = "shmcastframe";

async fn mjpeg(State(app): State<Shared>, Path(name): Path<String>, Query(q): Query<LiveQuery>) -> Response {
    let fps = q.fps.unwrap_or(10.0);
    if !(fps.is_finite() && fps > 0.0 && fps <= 60.0) {
        return error(StatusCode::BAD_REQUEST, format!("invalid fps {fps}: expected (0, 60]"));
    }
    if shm_proto::segment::find(
        &match shm_proto::StreamName::new(&name) {
            Ok(n) => n,
            Err(_) => return no_stream(&name),
        },
        None,
    )
    .is_none()
    {
        return no_stream(&name);
    }
    let key = FeedKey { name: name.clone(), width: q.width, milli_fps: (fps * 1000.0).round() as u32 };
    let feed = match app.hub.subscribe(key) {
        Ok(Some(f)) => f,
        Ok(None) => return error(StatusCode::SERVICE_UNAVAILABLE, "too many live views running; retry later"),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot start live view: {e}")),
    };
    let rx = feed.receiver();
    let viewers = shmcast_common::metrics::global().gauge("shmcast_web_live_viewers", "Live-view clients connected");
    viewers.inc();
    let guard = ViewerGuard(viewers);
    let parts = futures_util::stream::unfold((feed, rx, true, guard), |(feed, mut rx, first, guard)| async move {
        if !(first && rx.borrow().is_some()) {
            rx.changed().await.ok()?;
        }
        let jpg = rx.borrow_and_update().clone()?;
        let mut part = Vec::with_capacity(jpg.len() + 128);
        part.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpg.len()).as_bytes(),
        );
        part.extend_from_slice(&jpg);
        part.extend_from_slice(b"\r\n");
        Some((Ok::<_, Infallible>(Bytes::from(part)), (feed, rx, false, guard)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, format!("multipart/x-mixed-replace; boundary={BOUNDARY}"))
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(parts))
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Counts a connected viewer while it lives.
struct ViewerGuard(shmcast_common::metrics::IntGauge);

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    stream: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    /// An event id or an RFC 3339 time.
    since: Option<String>,
}

async fn list_events(State(app): State<Shared>, Query(q): Query<EventsQuery>) -> Response {
    let since = match q.since.as_deref().map(events::Since::parse).transpose() {
        Ok(s) => s,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let list: Vec<_> =
        app.events.query(q.stream.as_deref(), q.kind.as_deref(), since).iter().map(|e| e.json.clone()).collect();
    axum::Json(list).into_response()
}

async fn event_stream(State(app): State<Shared>) -> Response {
    let rx = app.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let ev = sse::Event::default().id(e.id.to_string()).event("event").data(e.json.to_string());
                    return Some((Ok::<_, Infallible>(ev), rx));
                }
                // A client too slow for 256 events misses some; it goes on.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    // The first comment tells the client it is connected.
    let hello = futures_util::stream::once(async { Ok(sse::Event::default().comment("connected")) });
    Sse::new(hello.chain(stream)).keep_alive(sse::KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

async fn event_snapshot(State(app): State<Shared>, Path(id): Path<String>, Query(q): Query<SnapshotQuery>) -> Response {
    let Some(e) = id.parse::<u64>().ok().and_then(|id| app.events.get(id)) else {
        return error(StatusCode::NOT_FOUND, format!("no event {id:?}"));
    };
    let Some(path) = e.snapshot.clone() else {
        return error(StatusCode::NOT_FOUND, format!("event {id} has no snapshot"));
    };
    let quality = app.cfg.quality;
    match tokio::task::spawn_blocking(move || png_to_jpeg(&path, q.width, quality)).await {
        Ok(Ok(jpg)) => jpeg_response(jpg),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("snapshot of event {id}: {e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Reads a PNG (the detector's snapshot) and encodes it as JPEG.
fn png_to_jpeg(path: &std::path::Path, width: Option<u32>, quality: u8) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // The file is another process's output: decoding is bounded in memory.
    let mut dec = png::Decoder::new_with_limits(std::io::BufReader::new(file), png::Limits { bytes: 256 << 20 });
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().context("not a PNG")?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).context("bad PNG")?;
    let (w, h) = (info.width, info.height);
    let channels = info.color_type.samples();
    let px = &buf[..info.buffer_size()];
    let (data, pixel) = match channels {
        1 => (px.to_vec(), shm_proto::PixelFormat::Gray8),
        2 => (px.chunks_exact(2).map(|c| c[0]).collect(), shm_proto::PixelFormat::Gray8),
        3 => (px.to_vec(), shm_proto::PixelFormat::Rgb24),
        _ => (px.chunks_exact(4).flat_map(|c| [c[0], c[1], c[2]]).collect(), shm_proto::PixelFormat::Rgb24),
    };
    let format = shm_proto::VideoFormat::new(w, h, pixel, 0, 1)?;
    Ok(jpeg::encode(&data, &format, width, quality)?)
}

async fn not_found(req: Request) -> Response {
    error(StatusCode::NOT_FOUND, format!("no route {}", req.uri().path()))
}

/// HTTP Basic authentication of every route.
async fn basic_auth(creds: Arc<Credentials>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .is_some_and(|raw| {
            let want = format!("{}:{}", creds.user, creds.password);
            constant_time_eq(&raw, want.as_bytes())
        });
    if ok {
        return next.run(req).await;
    }
    let mut r = error(StatusCode::UNAUTHORIZED, "authentication required");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"shmcast\""));
    r
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The routes (without authentication).
pub fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/streams", get(list_streams))
        .route("/api/streams/{name}", get(one_stream))
        .route("/api/streams/{name}/snapshot.jpg", get(snapshot))
        .route("/api/streams/{name}/mjpeg", get(mjpeg))
        .route("/api/events", get(list_events))
        .route("/api/events/stream", get(event_stream))
        .route("/api/events/{id}/snapshot.jpg", get(event_snapshot))
        .with_state(app)
        .merge(shmcast_common::metrics::routes())
        .fallback(not_found)
}

/// Serves until SIGINT or SIGTERM.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    let listener = shmcast_common::http::bind(cfg.listen).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another process listens there: choose another --listen port)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot listen on {}: {e}{hint}", cfg.listen)
    })?;
    let local = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let streams = Arc::new(Directory::default());
    streams.spawn_refresher(Arc::clone(&stop)).context("cannot start the discovery thread")?;
    let events = Arc::new(Events::new(cfg.snapshot_dirs.clone()));
    events.spawn_tailer(cfg.events.clone(), Arc::clone(&stop)).context("cannot start the events thread")?;
    let m = shmcast_common::metrics::global();
    let app = Arc::new(App {
        hub: Hub::new(cfg.quality),
        streams,
        events,
        snapshots: m.counter("shmcast_web_snapshots_total", "Snapshots served"),
        snapshot_seconds: m.histogram(
            "shmcast_web_snapshot_seconds",
            "Time to copy and encode a snapshot",
            &[0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
        ),
        cfg: cfg.clone(),
    });
    let mut routes = router(app);
    if let Some(creds) = cfg.auth.clone() {
        let creds = Arc::new(creds);
        routes = routes.layer(middleware::from_fn(move |req, next| basic_auth(Arc::clone(&creds), req, next)));
    }
    let limits = shmcast_common::http::Limits {
        max_connections: cfg.max_connections,
        max_request_bytes: 16 * 1024,
        header_timeout: Duration::from_secs(5),
        // Live views and event streams last as long as the viewer wants;
        // a viewer that stops reading is dropped by the stall limit.
        connection_timeout: Duration::from_secs(365 * 24 * 3600),
        write_stall_timeout: Duration::from_secs(10),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_name("web")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).context("cannot use the listening socket")?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        tracing::info!("listening on http://{local}/");
        tokio::select! {
            () = shmcast_common::http::serve(listener, routes, limits) => {}
            _ = term.recv() => tracing::info!("SIGTERM: exiting"),
            _ = int.recv() => tracing::info!("SIGINT: exiting"),
        }
        anyhow::Ok(())
    });
    // Relaxed: a standalone flag the background threads poll.
    stop.store(true, Ordering::Relaxed);
    // Encodes in flight are not waited for beyond this.
    rt.shutdown_timeout(Duration::from_millis(300));
    result
}
