//! The RTSP server: listening socket, authentication, client accounting, the
//! mount (added once the first producer has been seen, because its format
//! fixes the stream's caps), per-media feeders, stats and clean shutdown.
//!
//! Everything here runs on the glib main loop of the main thread, except the
//! `media-configure` and client callbacks, which gst-rtsp-server may call from
//! its own threads (they only touch `Shared`, which is thread-safe).
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp::RTSPStatusCode;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_rtsp_server::{self as rtsp_server, RTSPAuth, RTSPFilterResult, RTSPMediaFactory, RTSPServer, RTSPToken};
use gstreamer_video as gst_video;
use shm_proto::{Reader, ReaderOptions, VideoFormat};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::feeder::{self, Shared};
use crate::pipeline::{self, Encoder};

/// Role given to authenticated users.
const ROLE: &str = "viewer";

/// Runs the bridge until SIGINT/SIGTERM (Ok) or a fatal error.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    gst::init().context("cannot initialise GStreamer")?;
    let encoder = Encoder::resolve(cfg.encoder)?;
    if cfg.listen.port() != 0 {
        // gst-rtsp-server reports a failed bind only as "failed to attach":
        // try first, to say why.
        std::net::TcpListener::bind(cfg.listen).map_err(|e| anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    }
    let shutdown_flag = shmcast_common::shutdown_flag()?;
    let shared = Arc::new(Shared::new(&cfg.name));
    let main_loop = glib::MainLoop::new(None, false);

    let server = RTSPServer::new();
    server.set_address(&cfg.listen.ip().to_string());
    server.set_service(&cfg.listen.port().to_string());
    if let Some(c) = &cfg.auth {
        let auth = RTSPAuth::new();
        let token = RTSPToken::builder().field(rtsp_server::RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE).build();
        auth.add_basic(RTSPAuth::make_basic(&c.user, &c.password).as_str(), &token);
        server.set_auth(Some(&auth));
    }
    connect_clients(&server, &shared, cfg.max_clients);
    let source = server
        .attach(None)
        .map_err(|_| anyhow!("cannot listen on {}: binding the RTSP socket failed (address in use?)", cfg.listen))?;
    let url = format!("rtsp://{}{}", SocketAddr::new(cfg.listen.ip(), server.bound_port() as u16), cfg.mount);
    info!(%url, encoder = encoder.element(), "listening");

    let failure: Rc<RefCell<Option<anyhow::Error>>> = Rc::new(RefCell::new(None));
    wait_for_producer(&cfg, encoder, &server, &shared, &main_loop, &failure, url);
    start_stats(&shared, &main_loop, shutdown_flag);

    main_loop.run();

    info!("shutting down");
    // Relaxed: a standalone flag polled by the feeders.
    shared.shutdown.store(true, Ordering::Relaxed);
    // Closing the clients tears their sessions down and unprepares the media.
    server.client_filter(Some(&mut |_, c| {
        c.close();
        RTSPFilterResult::Remove
    }));
    if let Some(mounts) = server.mount_points() {
        mounts.remove_factory(&cfg.mount);
    }
    let feeders = std::mem::take(&mut *shared.feeders.lock().unwrap_or_else(|p| p.into_inner()));
    for f in feeders {
        let _ = f.join();
    }
    let ctx = glib::MainContext::default();
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        while ctx.iteration(false) {}
        std::thread::sleep(Duration::from_millis(10));
    }
    // Whatever the server did not unprepare yet goes to NULL now.
    for bin in std::mem::take(&mut *shared.pipelines.lock().unwrap_or_else(|p| p.into_inner())) {
        if let Some(bin) = bin.upgrade() {
            let _ = bin.set_state(gst::State::Null);
        }
    }
    source.remove();
    match failure.borrow_mut().take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Counts clients, refuses those beyond `max`, and asks for a keyframe on PLAY.
fn connect_clients(server: &RTSPServer, shared: &Arc<Shared>, max: Option<u32>) {
    let shared = Arc::clone(shared);
    server.connect_client_connected(move |_, client| {
        let clients = &shared.metrics.clients;
        // Client callbacks may run on several threads: decide and count in one step.
        let accepted = clients
            .inner()
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| match max {
                Some(m) if n >= u64::from(m) => None,
                _ => Some(n + 1),
            })
            .is_ok();
        if !accepted {
            info!(max_clients = max.unwrap_or(0), "refusing a client: --max-clients reached");
            client.connect_pre_describe_request(|_, _| RTSPStatusCode::ServiceUnavailable);
            client.connect_pre_setup_request(|_, _| RTSPStatusCode::ServiceUnavailable);
            client.connect_pre_play_request(|_, _| RTSPStatusCode::ServiceUnavailable);
            return;
        }
        debug!("client connected");
        let s = Arc::clone(&shared);
        client.connect_closed(move |_| {
            s.metrics.clients.dec();
            debug!("client closed");
        });
        let s = Arc::clone(&shared);
        client.connect_play_request(move |_, _| force_key_unit(&s));
    });
}

/// A client joining a running shared media sees garbage until the next IDR:
/// ask the encoder for one now, with SPS/PPS.
fn force_key_unit(shared: &Shared) {
    let pay = shared.pay.lock().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|w| w.upgrade());
    if let Some(pay) = pay {
        let ev = gst_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build();
        pay.send_event(ev);
    }
}

/// Polls for the producer; once it is there, mounts the stream with its
/// format. Fails the run after `--attach-timeout`.
fn wait_for_producer(
    cfg: &Config,
    encoder: Encoder,
    server: &RTSPServer,
    shared: &Arc<Shared>,
    main_loop: &glib::MainLoop,
    failure: &Rc<RefCell<Option<anyhow::Error>>>,
    url: String,
) {
    let (cfg, server, shared, main_loop, failure) =
        (cfg.clone(), server.clone(), Arc::clone(shared), main_loop.clone(), Rc::clone(failure));
    let started = Instant::now();
    let mut announced = false;
    let mut error_logged = false;
    let mut tick = move || {
        match Reader::open(&cfg.name, &ReaderOptions::default()) {
            Ok(r) if r.status().0.is_alive() => {
                let format = *r.format();
                drop(r);
                mount(&cfg, encoder, &server, &shared, format);
                info!(%url, %format, "producer found; serving");
                return glib::ControlFlow::Break;
            }
            Ok(_) => {}
            Err(e) if e.is_transient() => {}
            Err(e) => {
                if !error_logged {
                    warn!(stream = %cfg.name, "cannot open stream: {e}; still waiting");
                    error_logged = true;
                }
            }
        }
        if !announced {
            info!(stream = %cfg.name, "waiting for the producer");
            announced = true;
        }
        if let Some(t) = cfg.attach_timeout
            && started.elapsed() >= t
        {
            *failure.borrow_mut() =
                Some(anyhow!("no producer for stream {} within {:.1} s (--attach-timeout)", cfg.name, t.as_secs_f64()));
            main_loop.quit();
            return glib::ControlFlow::Break;
        }
        glib::ControlFlow::Continue
    };
    if tick() == glib::ControlFlow::Continue {
        glib::timeout_add_local(Duration::from_millis(100), tick);
    }
}

fn mount(cfg: &Config, encoder: Encoder, server: &RTSPServer, shared: &Arc<Shared>, format: VideoFormat) {
    let _ = shared.first.set(format);
    let factory = RTSPMediaFactory::new();
    let launch = pipeline::launch(cfg, encoder, &format);
    debug!(%launch, "media pipeline");
    factory.set_launch(&launch);
    // One media (one encoder) for every viewer of the mount.
    factory.set_shared(true);
    if cfg.auth.is_some() {
        factory.add_role_from_structure(
            &gst::Structure::builder(ROLE)
                .field(rtsp_server::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                .field(rtsp_server::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                .build(),
        );
    }
    let shared = Arc::clone(shared);
    factory.connect_media_configure(move |_, media| configure(&shared, media));
    if let Some(mounts) = server.mount_points() {
        mounts.add_factory(&cfg.mount, factory);
    }
}

fn count_buffers(pad: &gst::Pad, count: impl Fn() + Send + Sync + 'static) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        count();
        gst::PadProbeReturn::Ok
    });
}

/// A new media: reach its appsrc and payloader, count, start its feeder.
fn configure(shared: &Arc<Shared>, media: &rtsp_server::RTSPMedia) {
    let Some(first) = shared.first.get() else { return };
    let Ok(bin) = media.element().downcast::<gst::Bin>() else {
        warn!("media element is not a bin");
        return;
    };
    let Some(appsrc) = bin.by_name("src").and_then(|e| e.downcast::<gst_app::AppSrc>().ok()) else {
        warn!("media has no appsrc named src");
        return;
    };
    appsrc.set_caps(pipeline::source_caps(first, pipeline::rate(first)).as_ref());
    let out = Arc::new(AtomicU64::new(0));
    if let Some(pad) = appsrc.static_pad("src") {
        let out = Arc::clone(&out);
        count_buffers(&pad, move || {
            // Relaxed: a statistic.
            out.fetch_add(1, Ordering::Relaxed);
        });
    }
    if let Some(pay) = bin.by_name("pay0") {
        if let Some(pad) = pay.static_pad("sink") {
            let encoded = shared.metrics.encoded.clone();
            count_buffers(&pad, move || {
                encoded.inc();
            });
        }
        *shared.pay.lock().unwrap_or_else(|p| p.into_inner()) = Some(pay.downgrade());
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        media.connect_unprepared(move |_| {
            // Relaxed: a standalone flag polled by the feeder.
            stop.store(true, Ordering::Relaxed);
        });
    }
    {
        let mut p = shared.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        p.retain(|w| w.upgrade().is_some());
        p.push(bin.upcast_ref::<gst::Element>().downgrade());
    }
    debug!("media configured; starting its feeder");
    match feeder::spawn(Arc::clone(shared), appsrc, stop, out) {
        Ok(h) => {
            let mut f = shared.feeders.lock().unwrap_or_else(|p| p.into_inner());
            f.retain(|h| !h.is_finished());
            f.push(h);
        }
        Err(e) => warn!("cannot start a feeder thread: {e}"),
    }
}

/// Once a second: encoded fps, pruning, the shutdown flag; every 5 s the stats line.
fn start_stats(shared: &Arc<Shared>, main_loop: &glib::MainLoop, flag: Arc<AtomicBool>) {
    let (shared, main_loop) = (Arc::clone(shared), main_loop.clone());
    let mut last = (Instant::now(), 0u64);
    let mut ticks = 0u64;
    let mut quit_sent = false;
    // 100 ms ticks so that a signal is acted on promptly.
    glib::timeout_add_local(Duration::from_millis(100), move || {
        if shmcast_common::should_stop(&flag) {
            if !quit_sent {
                main_loop.quit();
                quit_sent = true;
            }
            return glib::ControlFlow::Continue;
        }
        ticks += 1;
        if !ticks.is_multiple_of(10) {
            return glib::ControlFlow::Continue;
        }
        let m = &shared.metrics;
        let encoded = m.encoded.get();
        let dt = last.0.elapsed().as_secs_f64();
        let fps = (encoded - last.1) as f64 / dt.max(1e-3);
        m.encoded_fps.set(fps);
        last = (Instant::now(), encoded);
        shared.feeders.lock().unwrap_or_else(|p| p.into_inner()).retain(|h| !h.is_finished());
        if ticks.is_multiple_of(50) {
            let reader = m.reader.totals();
            info!(
                clients = m.clients.get(),
                frames_in = reader.frames,
                encoded,
                encoded_fps = format_args!("{fps:.1}"),
                dropped = m.dropped.get(),
                lost = reader.lost,
                overruns = reader.overruns,
                rss_mb = format_args!("{:.1}", shmcast_common::rss_bytes() as f64 / 1048576.0),
                "stats"
            );
        }
        glib::ControlFlow::Continue
    });
}
