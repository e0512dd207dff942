//! The HTTP server of the shmcast binaries: [`axum`] routes served over
//! HTTP/1.1 by [`hyper`] on a one-thread [`tokio`] runtime of its own, so a
//! binary's frame path (its own threads) never waits for a client.
//!
//! `--metrics` serves [`crate::metrics::routes`] through [`spawn`]; a binary
//! with more to serve merges its routes into the same [`Router`] first, or,
//! when it runs its own runtime, awaits [`serve`].
//!
//! Invariants (what a slow or hostile client can cost):
//! - A request's line and headers are read into at most [`Limits::max_request_bytes`]
//!   (more is answered `431` and the connection closed) within
//!   [`Limits::header_timeout`] (a slow-loris is dropped then).
//! - A connection lives at most [`Limits::connection_timeout`], whatever it
//!   does (a client that never reads its answer included), and serves one
//!   request (`Connection: close`).
//! - At most [`Limits::max_connections`] connections are served at once; the
//!   next ones get a `503` written without waiting and are closed.
//! - A client that accepts no byte of its answer for [`Limits::write_stall_timeout`]
//!   is dropped (what bounds a long answer, a live stream, whose
//!   `connection_timeout` is long).
//! - A failing `accept` (out of file descriptors) backs off instead of spinning.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;

/// What one client may cost the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Bytes of request line and headers buffered at most (hyper's floor is 8 KiB).
    pub max_request_bytes: usize,
    /// Time to receive the request line and headers.
    pub header_timeout: Duration,
    /// Lifetime of a connection, from accept to close.
    pub connection_timeout: Duration,
    /// Time a write may wait for the client to take bytes before the
    /// connection is dropped.
    pub write_stall_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 32,
            max_request_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(10),
        }
    }
}

/// The answer to a connection beyond [`Limits::max_connections`].
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbusy; retry\n";

/// Binds `addr` now, so that a taken port is an error of the caller's start-up.
///
/// # Errors
/// The bind error (`AddrInUse` for a port another process listens on).
pub fn bind(addr: SocketAddr) -> std::io::Result<StdListener> {
    let listener = StdListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `router` on `listener` from a background thread with its own
/// runtime; returns the address it listens on.
///
/// # Errors
/// When the thread or its runtime cannot be started.
pub fn spawn(listener: StdListener, router: Router, limits: Limits) -> std::io::Result<SocketAddr> {
    let local = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("http".into()).spawn(move || {
        rt.block_on(async move {
            match TcpListener::from_std(listener) {
                Ok(l) => serve(l, router, limits).await,
                Err(e) => tracing::warn!("cannot serve HTTP on {local}: {e}"),
            }
        });
    })?;
    Ok(local)
}

/// Serves `router` on `listener` until the runtime stops.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and the like: the error repeats until a descriptor is free.
                tracing::debug!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Best effort and never waiting: a full socket buffer just loses the answer.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let _slot = slot;
            connection(stream, router, limits).await;
        });
    }
}

async fn connection(stream: TcpStream, router: Router, limits: Limits) {
    let _ = stream.set_nodelay(true);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_request_bytes.max(8192))
        .keep_alive(false);
    let stream = StallGuard { inner: stream, limit: limits.write_stall_timeout, stalled: None };
    let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    match tokio::time::timeout(limits.connection_timeout, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("HTTP connection: {e}"),
        Err(_) => tracing::debug!("HTTP connection dropped after {:?}", limits.connection_timeout),
    }
}

/// A socket whose writes fail with `TimedOut` once the client has taken no
/// byte for `limit` (hyper then drops the connection).
struct StallGuard {
    inner: TcpStream,
    limit: Duration,
    /// Armed while a write waits for the client.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl StallGuard {
    fn check<T>(&mut self, cx: &mut Context<'_>, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("client took no byte for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
