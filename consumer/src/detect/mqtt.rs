//! A small MQTT 3.1.1 publisher (QoS 0) on its own thread.
//!
//! The detector must never wait for a broker, so events go through a bounded
//! queue to the publisher thread; when the queue is full the event is dropped
//! and counted. The thread connects, publishes, keeps the session alive with
//! PINGREQ, and when the broker goes away (connection refused, closed, write
//! error) reconnects with a capped back-off, keeping the message it was about
//! to send. Before each publish it checks without blocking whether the broker
//! closed the connection, so a restarted broker does not swallow the first
//! message after it went away (a write into a closed TCP connection succeeds
//! once).
#![forbid(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

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

/// Counters of a publisher.
#[derive(Default, Debug)]
pub struct MqttStats {
    /// Messages written to the broker.
    pub published: AtomicU64,
    /// Messages dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Connections made (the first one and every reconnect).
    pub connects: AtomicU64,
}

/// The handle the detector publishes through.
pub struct Publisher {
    tx: Option<SyncSender<String>>,
    stats: Arc<MqttStats>,
    closing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Starts the publisher thread with a queue of `queue` messages.
    pub fn start(cfg: MqttConfig, queue: usize, stats: Arc<MqttStats>) -> anyhow::Result<Publisher> {
        let (tx, rx) = sync_channel(queue.max(1));
        let closing = Arc::new(AtomicBool::new(false));
        let (s, c) = (Arc::clone(&stats), Arc::clone(&closing));
        let thread = std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || Worker { cfg, rx, stats: s, closing: c, conn: None, last_error: None }.run())
            .context("cannot start the MQTT thread")?;
        Ok(Publisher { tx: Some(tx), stats, closing, thread: Some(thread) })
    }

    /// Queues `payload`; never blocks. False (and counted) when the queue is full.
    pub fn publish(&self, payload: String) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(payload) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                // Relaxed: a statistic.
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> &MqttStats {
        &self.stats
    }

    /// Sends what is queued if the broker is there, waiting at most `timeout`,
    /// then stops the thread.
    pub fn close(mut self, timeout: Duration) {
        self.shutdown(timeout);
    }

    fn shutdown(&mut self, timeout: Duration) {
        drop(self.tx.take());
        let deadline = Instant::now() + timeout;
        if let Some(t) = self.thread.take() {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            // Relaxed: a stop request the worker polls.
            self.closing.store(true, Ordering::Relaxed);
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.shutdown(Duration::from_millis(500));
    }
}

struct Worker {
    cfg: MqttConfig,
    rx: Receiver<String>,
    stats: Arc<MqttStats>,
    closing: Arc<AtomicBool>,
    conn: Option<TcpStream>,
    /// The last connect error logged (each distinct error is logged once).
    last_error: Option<String>,
}

impl Worker {
    fn closing(&self) -> bool {
        // Relaxed: a standalone flag.
        self.closing.load(Ordering::Relaxed)
    }

    fn run(mut self) {
        let mut pending: Option<String> = None;
        let mut backoff = Duration::from_millis(100);
        let mut last_sent = Instant::now();
        let mut senders_gone = false;
        loop {
            if self.closing() {
                break;
            }
            if self.conn.is_none() {
                match connect(&self.cfg) {
                    Ok(s) => {
                        self.conn = Some(s);
                        backoff = Duration::from_millis(100);
                        last_sent = Instant::now();
                        // Relaxed: a statistic.
                        let n = self.stats.connects.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::info!(broker = %self.cfg.addr, topic = %self.cfg.topic, connects = n, "MQTT connected");
                        self.last_error = None;
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        if self.last_error.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(broker = %self.cfg.addr, "MQTT broker unavailable, retrying: {msg}");
                            self.last_error = Some(msg);
                        }
                        if senders_gone {
                            break;
                        }
                        sleep_unless(&self.closing, backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
            }
            let msg = match pending.take() {
                Some(m) => m,
                None if senders_gone => break,
                None => match self.rx.recv_timeout(self.cfg.keep_alive / 2) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        if last_sent.elapsed() >= self.cfg.keep_alive / 2 {
                            if self.send(&[0xC0, 0x00]).is_err() {
                                self.lost("ping failed");
                            }
                            last_sent = Instant::now();
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        senders_gone = true;
                        continue;
                    }
                },
            };
            if self.broker_closed() {
                self.lost("broker closed the connection");
                pending = Some(msg);
                continue;
            }
            let packet = publish_packet(&self.cfg.topic, msg.as_bytes());
            match self.send(&packet) {
                Ok(()) => {
                    last_sent = Instant::now();
                    // Relaxed: a statistic.
                    self.stats.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.lost(&format!("write failed: {e}"));
                    pending = Some(msg);
                }
            }
        }
        if self.conn.is_some() {
            let _ = self.send(&[0xE0, 0x00]);
        }
    }

    fn lost(&mut self, why: &str) {
        if self.conn.take().is_some() {
            tracing::warn!(broker = %self.cfg.addr, "MQTT connection lost ({why}); reconnecting");
        }
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.conn {
            Some(s) => s.write_all(bytes),
            None => Err(ErrorKind::NotConnected.into()),
        }
    }

    /// Whether the broker closed the connection (EOF or error), without blocking;
    /// drains anything it sent (PINGRESP).
    fn broker_closed(&mut self) -> bool {
        let Some(s) = &mut self.conn else { return true };
        if s.set_nonblocking(true).is_err() {
            return true;
        }
        let mut buf = [0u8; 256];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        };
        closed || s.set_nonblocking(false).is_err()
    }
}

fn sleep_unless(flag: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    // Relaxed: a standalone flag.
    while Instant::now() < end && !flag.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
}

fn connect(cfg: &MqttConfig) -> anyhow::Result<TcpStream> {
    let addrs: Vec<SocketAddr> =
        cfg.addr.to_socket_addrs().with_context(|| format!("cannot resolve {}", cfg.addr))?.collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
            Ok(mut s) => {
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(Duration::from_secs(2)))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(&connect_packet(cfg))?;
                let mut ack = [0u8; 4];
                s.read_exact(&mut ack).context("no CONNACK from the broker")?;
                if ack[0] != 0x20 || ack[1] != 0x02 {
                    bail!("unexpected reply to CONNECT: {ack:02x?}");
                }
                match ack[3] {
                    0 => return Ok(s),
                    1 => bail!("broker refused the connection: unacceptable protocol version"),
                    2 => bail!("broker refused the connection: identifier rejected"),
                    3 => bail!("broker refused the connection: server unavailable"),
                    4 => bail!("broker refused the connection: bad user name or password"),
                    5 => bail!("broker refused the connection: not authorized"),
                    rc => bail!("broker refused the connection: code {rc}"),
                }
            }
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e).with_context(|| format!("cannot connect to {}", cfg.addr)),
        None => bail!("{} resolves to no address", cfg.addr),
    }
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len().min(65535) as u16).to_be_bytes());
    out.extend_from_slice(&s[..s.len().min(65535)]);
}

fn connect_packet(cfg: &MqttConfig) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    let mut flags = 0x02; // clean session
    if cfg.username.is_some() {
        flags |= 0x80;
    }
    if cfg.password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&(cfg.keep_alive.as_secs().min(65535) as u16).to_be_bytes());
    put_str(&mut body, cfg.client_id.as_bytes());
    if let Some(u) = &cfg.username {
        put_str(&mut body, u.as_bytes());
    }
    if let Some(p) = &cfg.password {
        put_str(&mut body, p.as_bytes());
    }
    let mut out = vec![0x10];
    put_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + topic.len() + 8);
    out.push(0x30); // PUBLISH, QoS 0, no retain
    put_len(&mut out, 2 + topic.len() + payload.len());
    put_str(&mut out, topic.as_bytes());
    out.extend_from_slice(payload);
    out
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
    fn packets() {
        let mut v = Vec::new();
        put_len(&mut v, 321);
        assert_eq!(v, [0xC1, 0x02]);
        let p = publish_packet("t", b"hi");
        assert_eq!(p, [0x30, 5, 0, 1, b't', b'h', b'i']);
        let c = MqttConfig::from_url("mqtt://h:1", "t").unwrap();
        let p = connect_packet(&c);
        assert_eq!(&p[2..10], &[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02]);
    }
}
