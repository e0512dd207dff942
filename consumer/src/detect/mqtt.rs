//! The MQTT publisher of the detector: [`rumqttc`] (MQTT 3.1.1, QoS 0, clean
//! session) driven on a thread of its own.
//!
//! The detector must never wait for a broker, so events go through a bounded
//! queue (the client's request channel) to the publisher thread; when the
//! queue is full the event is dropped and counted. The thread connects,
//! publishes, keeps the session alive (PINGREQ), and when the broker goes
//! away (refused, closed, write error) reconnects with a capped back-off.
//! The event loop reads the connection all the time, so a broker that went
//! away is noticed at once, not by a later publish written into a dead
//! socket; the messages it held back at that moment are kept and sent after
//! the reconnection (a clean session would otherwise drop them).
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use tokio::sync::Notify;

/// Where and how to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttConfig {
    /// `host:port`.
    pub addr: String,
    /// Topic to publish to.
    pub topic: String,
    /// Client id (≤ 23 characters, as MQTT 3.1.1 servers must accept).
    pub client_id: String,
    /// User name, when the URL has one.
    pub username: Option<String>,
    /// Password, when the URL has one.
    pub password: Option<String>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
}

impl MqttConfig {
    /// Parses `mqtt://[user[:password]@]host[:port]` (port 1883 by default).
    pub fn from_url(url: &str, topic: &str) -> anyhow::Result<MqttConfig> {
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .with_context(|| format!("invalid MQTT URL {url:?}: expected mqtt://HOST:PORT"))?;
        let rest = rest.trim_end_matches('/');
        let (cred, hostport) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, rest),
        };
        let (username, password) = match cred {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (Some(c.to_string()), None),
            },
            None => (None, None),
        };
        if hostport.is_empty() {
            bail!("invalid MQTT URL {url:?}: no host");
        }
        let has_port = if hostport.starts_with('[') { hostport.contains("]:") } else { hostport.contains(':') };
        let addr = if has_port { hostport.to_string() } else { format!("{hostport}:1883") };
        if topic.is_empty() || topic.contains(['+', '#']) {
            bail!("invalid MQTT topic {topic:?}: must be non-empty without wildcards");
        }
        Ok(MqttConfig {
            addr,
            topic: topic.to_string(),
            client_id: format!("shmcast-{}", std::process::id()),
            username,
            password,
            keep_alive: Duration::from_secs(30),
        })
    }
}

/// Largest event accepted for publishing (larger ones are dropped and counted):
/// far above any event's JSON, far below what a broker accepts by default.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Counters of a publisher.
#[derive(Default, Debug)]
pub struct MqttStats {
    /// Messages written to the broker.
    pub published: AtomicU64,
    /// Messages dropped because the queue was full (or the message too large).
    pub dropped: AtomicU64,
    /// Connections made (the first one and every reconnect).
    pub connects: AtomicU64,
}

/// The handle the detector publishes through.
pub struct Publisher {
    client: AsyncClient,
    topic: String,
    stats: Arc<MqttStats>,
    /// Set by `close`: stop retrying a broker that is not there.
    closing: Arc<AtomicBool>,
    /// Whether the broker has accepted the current connection.
    connected: Arc<AtomicBool>,
    /// Stops the thread wherever it is.
    abort: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Starts the publisher thread with a queue of `queue` messages.
    ///
    /// # Errors
    /// When the thread or its runtime cannot be started.
    pub fn start(cfg: MqttConfig, queue: usize, stats: Arc<MqttStats>) -> anyhow::Result<Publisher> {
        let queue = queue.max(1);
        let (host, port) = split_host_port(&cfg.addr)?;
        let mut opts = MqttOptions::new(cfg.client_id.clone(), host, port);
        opts.set_keep_alive(cfg.keep_alive)
            .set_clean_session(true)
            .set_max_packet_size(64 * 1024, MAX_PAYLOAD + 64 * 1024 + cfg.topic.len())
            .set_request_channel_capacity(queue);
        if let Some(user) = &cfg.username {
            opts.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
        }
        let (client, mut eventloop) = AsyncClient::new(opts, queue);
        eventloop.network_options.set_connection_timeout(2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the MQTT runtime")?;
        let closing = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        let abort = Arc::new(Notify::new());
        let worker = Worker {
            cfg: cfg.clone(),
            queue,
            stats: Arc::clone(&stats),
            closing: Arc::clone(&closing),
            connected: Arc::clone(&connected),
            abort: Arc::clone(&abort),
        };
        let thread = std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || rt.block_on(worker.run(&mut eventloop)))
            .context("cannot start the MQTT thread")?;
        Ok(Publisher { client, topic: cfg.topic, stats, closing, connected, abort, thread: Some(thread) })
    }

    /// Queues `payload`; never blocks. False (and counted) when the queue is
    /// full or the payload larger than [`MAX_PAYLOAD`].
    pub fn publish(&self, payload: String) -> bool {
        let queued = payload.len() <= MAX_PAYLOAD
            && self.client.try_publish(self.topic.as_str(), QoS::AtMostOnce, false, payload).is_ok();
        if !queued {
            // Relaxed: a statistic.
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// The counters.
    pub fn stats(&self) -> &MqttStats {
        &self.stats
    }

    /// Sends what is queued if the broker is connected, waiting at most
    /// `timeout`, then stops the thread (at once when no broker is connected).
    pub fn close(mut self, timeout: Duration) {
        self.shutdown(timeout);
    }

    fn shutdown(&mut self, timeout: Duration) {
        let Some(t) = self.thread.take() else { return };
        // Relaxed: a stop request the worker polls; the disconnect below
        // travels through the queue, after every message queued before it.
        self.closing.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
        // Relaxed: a standalone flag; at worst the wait below is cut short or used.
        let timeout = if self.connected.load(Ordering::Relaxed) { timeout } else { Duration::ZERO };
        let deadline = Instant::now() + timeout;
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The worker ends at its next await on this (a stored permit if it is busy).
        self.abort.notify_one();
        let _ = t.join();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.shutdown(Duration::from_millis(500));
    }
}

struct Worker {
    cfg: MqttConfig,
    queue: usize,
    stats: Arc<MqttStats>,
    closing: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    abort: Arc<Notify>,
}

impl Worker {
    async fn run(self, eventloop: &mut EventLoop) {
        let mut connected = false;
        let mut backoff = Duration::from_millis(100);
        // The last connect error logged (each distinct error is logged once).
        let mut last_error: Option<String> = None;
        // Requests the event loop held back when the connection went away.
        let mut kept = VecDeque::new();
        loop {
            let event = tokio::select! {
                _ = self.abort.notified() => break,
                e = eventloop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    connected = true;
                    // Relaxed: a standalone flag read by `close`.
                    self.connected.store(true, Ordering::Relaxed);
                    backoff = Duration::from_millis(100);
                    last_error = None;
                    // A clean session starts with nothing pending: resend what was kept.
                    eventloop.pending.extend(kept.drain(..));
                    // Relaxed: a statistic.
                    let n = self.stats.connects.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::info!(broker = %self.cfg.addr, topic = %self.cfg.topic, connects = n, "MQTT connected");
                }
                Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                    // Relaxed: a statistic.
                    self.stats.published.fetch_add(1, Ordering::Relaxed);
                }
                // Everything queued before `close` has gone out.
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    let msg = e.to_string();
                    if connected {
                        tracing::warn!(broker = %self.cfg.addr, "MQTT connection lost ({msg}); reconnecting");
                        connected = false;
                        // Relaxed: a standalone flag read by `close`.
                        self.connected.store(false, Ordering::Relaxed);
                    } else if last_error.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(broker = %self.cfg.addr, "MQTT broker unavailable, retrying: {msg}");
                    }
                    last_error = Some(msg);
                    kept.extend(eventloop.pending.drain(..));
                    while kept.len() > self.queue {
                        kept.pop_front();
                        // Relaxed: a statistic.
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    // Relaxed: a standalone flag.
                    if self.closing.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::select! {
                        _ = self.abort.notified() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// `host:port` (`[v6]:port` too) of a configured address.
fn split_host_port(addr: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = addr.rsplit_once(':').with_context(|| format!("invalid MQTT address {addr:?}: no port"))?;
    let port = port.parse().with_context(|| format!("invalid MQTT port in {addr:?}"))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        bail!("invalid MQTT address {addr:?}: no host");
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = MqttConfig::from_url("mqtt://127.0.0.1:1884", "a/b").unwrap();
        assert_eq!((c.addr.as_str(), c.username.as_deref()), ("127.0.0.1:1884", None));
        let c = MqttConfig::from_url("mqtt://u:p@broker", "t").unwrap();
        assert_eq!(
            (c.addr.as_str(), c.username.as_deref(), c.password.as_deref()),
            ("broker:1883", Some("u"), Some("p"))
        );
        assert_eq!(MqttConfig::from_url("mqtt://[::1]", "t").unwrap().addr, "[::1]:1883");
        assert!(MqttConfig::from_url("http://x", "t").is_err());
        assert!(MqttConfig::from_url("mqtt://x", "a/#").is_err());
    }

    #[test]
    fn host_and_port() {
        assert_eq!(split_host_port("broker:1883").unwrap(), ("broker".to_string(), 1883));
        assert_eq!(split_host_port("[::1]:1884").unwrap(), ("::1".to_string(), 1884));
        assert!(split_host_port("broker:x").is_err());
        assert!(split_host_port(":1883").is_err());
    }

    /// Without a broker: publishing never blocks, the queue is bounded (the
    /// excess is dropped and counted), and close returns.
    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = MqttConfig::from_url(&format!("mqtt://127.0.0.1:{port}"), "t").unwrap();
        let stats = Arc::new(MqttStats::default());
        let p = Publisher::start(cfg, 4, Arc::clone(&stats)).unwrap();
        let accepted = (0..20).filter(|i| p.publish(format!("event {i}"))).count();
        assert!((4..20).contains(&accepted), "accepted {accepted}");
        assert_eq!(stats.dropped.load(Ordering::Relaxed), (20 - accepted) as u64);
        assert!(!p.publish("x".repeat(MAX_PAYLOAD + 1)));
        p.close(Duration::from_millis(100));
        assert_eq!(stats.published.load(Ordering::Relaxed), 0);
        assert_eq!(stats.connects.load(Ordering::Relaxed), 0);
    }
}
