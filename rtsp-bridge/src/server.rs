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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp::RTSPStatusCode;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_rtsp_server::{
    self as rtsp_server, RTSPAuth, RTSPFilterResult, RTSPMedia, RTSPMediaFactory, RTSPMediaStatus, RTSPServer,
    RTSPToken,
};
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
    let (source, port) = listen(&server).with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let url = format!("rtsp://{}{}", SocketAddr::new(cfg.listen.ip(), port), cfg.mount);
    info!(%url, encoder = encoder.element(), "listening");

    let failure: Rc<RefCell<Option<anyhow::Error>>> = Rc::new(RefCell::new(None));
    let standby = Arc::new(Standby::new(&cfg, port));
    let fail = {
        let (main_loop, failure) = (main_loop.clone(), Rc::clone(&failure));
        move |e: anyhow::Error| {
            *failure.borrow_mut() = Some(e);
            main_loop.quit();
        }
    };
    wait_for_producer(&cfg, encoder, &server, &shared, &standby, fail, url);
    start_stats(&shared, &standby, &main_loop, shutdown_flag);

    main_loop.run();

    info!("shutting down");
    // Relaxed: a standalone flag polled by the feeders.
    shared.shutdown.store(true, Ordering::Relaxed);
    // Closing the clients tears their sessions down and unprepares the media.
    server.client_filter(Some(&mut |_, c| {
        c.close();
        RTSPFilterResult::Remove
    }));
    standby.release();
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
    source.destroy();
    match failure.borrow_mut().take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Binds the server's socket and accepts its clients on the main loop, like
/// `RTSPServer::attach`, with one difference: `TCP_NODELAY` on the listening
/// socket (Linux hands it down to every accepted socket). Without it the
/// first RTP packets after the PLAY response waited for the client's delayed
/// ACK of that response (Nagle): about 40 ms more to every join, measured.
fn listen(server: &RTSPServer) -> anyhow::Result<(glib::Source, u16)> {
    use rtsp_server::gio;
    let socket = server
        .create_socket(None::<&gio::Cancellable>)
        .map_err(|e| anyhow!("binding the RTSP socket failed (address in use?): {e}"))?;
    socket.set_option(libc::IPPROTO_TCP, libc::TCP_NODELAY, 1).map_err(|e| anyhow!("cannot set TCP_NODELAY: {e}"))?;
    let port = socket
        .local_address()
        .ok()
        .and_then(|a| a.downcast::<gio::InetSocketAddress>().ok())
        .map(|a| a.port())
        .context("cannot read the RTSP socket's port")?;
    let srv = server.clone();
    let source = gio::prelude::SocketExtManual::create_source(
        &socket,
        glib::IOCondition::IN | glib::IOCondition::ERR | glib::IOCondition::HUP | glib::IOCondition::NVAL,
        None::<&gio::Cancellable>,
        Some("shmcast-rtsp-listen"),
        glib::Priority::DEFAULT,
        move |sock, cond| {
            if RTSPServer::io_func(sock, cond, &srv).is_err() {
                warn!("cannot accept a client");
            }
            glib::ControlFlow::Continue
        },
    );
    source.attach(None);
    Ok((source, port))
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
        // Emitted once the PLAY response is sent and the client's transport is active.
        client.connect_play_request(move |_, _| {
            let now = (s.epoch.elapsed().as_nanos() as u64).max(1);
            // Relaxed: a timestamp for a statistic (the latest PLAY).
            s.play_at.store(now, Ordering::Relaxed);
            debug!("client PLAY: asking for a keyframe");
            send_at_once(&s);
            force_key_unit(&s);
            s.play.notify();
        });
    });
}

/// gst-rtsp-server's sinks wait for each packet's timestamp (plus the
/// pipeline latency) on the clock before sending it ("rate control", which
/// its client turns on again at every SETUP): pointless for a live source,
/// which the camera paces, and it delays a joining client's keyframe. Off
/// for every media, once the new client's transport is active.
fn send_at_once(shared: &Shared) {
    let medias: Vec<RTSPMedia> = {
        let mut m = shared.medias.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|w| w.upgrade().is_some());
        m.iter().filter_map(|w| w.upgrade()).collect()
    };
    for media in medias {
        media.set_rate_control(false);
    }
}

/// A client joining a running shared media sees garbage until the next IDR:
/// ask the encoder for one now, with SPS/PPS (the feeder then sends it a
/// frame at once, see [`crate::feeder::PlaySignal`]).
fn force_key_unit(shared: &Shared) {
    let pays: Vec<gst::Element> = {
        let mut p = shared.pay.lock().unwrap_or_else(|p| p.into_inner());
        p.retain(|w| w.upgrade().is_some());
        p.iter().filter_map(|w| w.upgrade()).collect()
    };
    for pay in pays {
        let ev = gst_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build();
        pay.send_event(ev);
    }
}

/// Polls for the producer; once it is there, mounts the stream with its
/// format. Fails the run (`fail`) after `--attach-timeout`.
fn wait_for_producer(
    cfg: &Config,
    encoder: Encoder,
    server: &RTSPServer,
    shared: &Arc<Shared>,
    standby: &Arc<Standby>,
    fail: impl Fn(anyhow::Error) + 'static,
    url: String,
) {
    let (cfg, server, shared, standby) = (cfg.clone(), server.clone(), Arc::clone(shared), Arc::clone(standby));
    let started = Instant::now();
    let mut announced = false;
    let mut error_logged = false;
    let mut tick = move || {
        match Reader::open(&cfg.name, &ReaderOptions::default()) {
            Ok(r) if r.status().0.is_alive() => {
                let format = *r.format();
                drop(r);
                let factory = mount(&cfg, encoder, &server, &shared, format);
                standby.set_factory(factory);
                standby.ensure();
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
            fail(anyhow!("no producer for stream {} within {:.1} s (--attach-timeout)", cfg.name, t.as_secs_f64()));
            return glib::ControlFlow::Break;
        }
        glib::ControlFlow::Continue
    };
    if tick() == glib::ControlFlow::Continue {
        glib::timeout_add_local(Duration::from_millis(100), tick);
    }
}

fn mount(
    cfg: &Config,
    encoder: Encoder,
    server: &RTSPServer,
    shared: &Arc<Shared>,
    format: VideoFormat,
) -> RTSPMediaFactory {
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
        mounts.add_factory(&cfg.mount, factory.clone());
    }
    factory
}

/// The mount's media kept prepared while nobody watches (`--standby
/// prepared`): its pipeline and encoder exist, its feeder is idle (nothing
/// pushed, ring unmapped), and a client's DESCRIBE finds it in the factory's
/// cache of shared medias — keyed by port and path, so a client that reaches
/// the server through the port it listens on — instead of building one.
///
/// The bridge holds one `prepare` of it (gst-rtsp-server counts them and
/// unprepares a media only when the count drops to zero), so the last client
/// leaving does not tear it down. A media that failed (status error) or was
/// unprepared is replaced, at most every [`STANDBY_RETRY`].
struct Standby {
    enabled: bool,
    url: String,
    factory: Mutex<Option<RTSPMediaFactory>>,
    media: Mutex<Option<RTSPMedia>>,
    /// A prepare is under way (on its own thread: it blocks until preroll).
    busy: AtomicBool,
    tried: Mutex<Option<Instant>>,
    released: AtomicBool,
}

const STANDBY_RETRY: Duration = Duration::from_secs(5);

impl Standby {
    fn new(cfg: &Config, port: u16) -> Standby {
        Standby {
            enabled: cfg.standby,
            url: format!("rtsp://127.0.0.1:{port}{}", cfg.mount),
            factory: Mutex::new(None),
            media: Mutex::new(None),
            busy: AtomicBool::new(false),
            tried: Mutex::new(None),
            released: AtomicBool::new(false),
        }
    }

    fn set_factory(&self, factory: RTSPMediaFactory) {
        *self.factory.lock().unwrap_or_else(|p| p.into_inner()) = Some(factory);
    }

    /// Checks the standby media, replacing it if it failed or is gone.
    /// Called on the main loop (at mount, then every second).
    fn ensure(self: &Arc<Self>) {
        // Relaxed: standalone flags.
        if !self.enabled || self.released.load(Ordering::Relaxed) || self.busy.load(Ordering::Relaxed) {
            return;
        }
        {
            let mut m = self.media.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(media) = m.as_ref() {
                match media.status() {
                    RTSPMediaStatus::Error => {
                        warn!("the standby media failed; building a new one");
                        if let Some(old) = m.take() {
                            let _ = old.unprepare();
                        }
                    }
                    RTSPMediaStatus::Unprepared => {
                        m.take();
                    }
                    _ => return,
                }
            }
        }
        {
            let mut t = self.tried.lock().unwrap_or_else(|p| p.into_inner());
            if t.is_some_and(|t| t.elapsed() < STANDBY_RETRY) {
                return;
            }
            *t = Some(Instant::now());
        }
        let Some(factory) = self.factory.lock().unwrap_or_else(|p| p.into_inner()).clone() else { return };
        self.busy.store(true, Ordering::Relaxed);
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("rtsp-standby".into()).spawn(move || {
            if let Err(e) = me.prepare(&factory) {
                warn!("cannot keep a media prepared: {e:#}");
            }
            me.busy.store(false, Ordering::Relaxed);
        });
        if spawned.is_err() {
            self.busy.store(false, Ordering::Relaxed);
        }
    }

    fn prepare(&self, factory: &RTSPMediaFactory) -> anyhow::Result<()> {
        let (_, url) = gstreamer_rtsp::RTSPUrl::parse(&self.url);
        let url = url.with_context(|| format!("cannot parse {}", self.url))?;
        let media = factory.construct(&url).context("cannot construct the media")?;
        {
            let mut m = self.media.lock().unwrap_or_else(|p| p.into_inner());
            // Relaxed: a standalone flag.
            if self.released.load(Ordering::Relaxed) {
                return Ok(());
            }
            *m = Some(media.clone());
        }
        // The bus watch goes to the default main context, which the main loop runs.
        media.prepare(None).context("cannot prepare the media")?;
        debug!("standby media prepared");
        Ok(())
    }

    /// Gives the standby media up (shutdown).
    fn release(&self) {
        // Relaxed: a standalone flag.
        self.released.store(true, Ordering::Relaxed);
        if let Some(m) = self.media.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = m.unprepare();
        }
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
            let s = Arc::clone(shared);
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                s.metrics.encoded.inc();
                let key = info.buffer().is_some_and(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT));
                // Relaxed: a timestamp for a statistic.
                if key
                    && let Ok(at) = s.play_at.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |_| Some(0))
                    && at != 0
                {
                    let dt = (s.epoch.elapsed().as_nanos() as u64).saturating_sub(at);
                    s.metrics.play_to_keyframe.observe(dt as f64 / 1e9);
                    debug!(ms = format_args!("{:.1}", dt as f64 / 1e6), "keyframe out of the encoder after a PLAY");
                }
                gst::PadProbeReturn::Ok
            });
        }
        let mut pays = shared.pay.lock().unwrap_or_else(|p| p.into_inner());
        pays.retain(|w| w.upgrade().is_some());
        pays.push(pay.downgrade());
    }
    {
        let mut m = shared.medias.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|w| w.upgrade().is_some());
        m.push(media.downgrade());
    }
    let prepared = Arc::new(AtomicBool::new(false));
    {
        let prepared = Arc::clone(&prepared);
        media.connect_prepared(move |_| {
            // Relaxed: a standalone flag polled by the feeder.
            prepared.store(true, Ordering::Relaxed);
        });
    }
    let link = feeder::MediaLink { stream: media.stream(0), prepared };
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
    match feeder::spawn(Arc::clone(shared), appsrc, stop, out, link) {
        Ok(h) => {
            let mut f = shared.feeders.lock().unwrap_or_else(|p| p.into_inner());
            f.retain(|h| !h.is_finished());
            f.push(h);
        }
        Err(e) => warn!("cannot start a feeder thread: {e}"),
    }
}

/// Once a second: encoded fps, pruning, the shutdown flag; every 5 s the stats line.
fn start_stats(shared: &Arc<Shared>, standby: &Arc<Standby>, main_loop: &glib::MainLoop, flag: Arc<AtomicBool>) {
    let (shared, standby, main_loop) = (Arc::clone(shared), Arc::clone(standby), main_loop.clone());
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
        standby.ensure();
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
