//! The client side of every proxy connection: the request-head deadline and size
//! limit, enforced below Pingora's HTTP parser.
//!
//! Pingora reads a request head with a per-read timeout and accepts heads up to
//! 1 MiB, so a client sending one byte every few seconds could hold a connection
//! for ever, and a huge head is answered 400. forkyard wraps each accepted stream in
//! a [`GuardedStream`] that knows which phase the connection is in:
//!
//! - `Head`: reading a request head. It must complete within
//!   `proxy.client_header_timeout` of the connection opening (or of the first byte
//!   of a later request on a keep-alive connection); otherwise the client gets 408
//!   (or a plain close when it sent nothing). A head that is still incomplete after
//!   `proxy.max_header_size` bytes gets 431 and a close. A request line with a
//!   control byte (NUL, a bare CR, ...) or more than two spaces gets 400 and a close:
//!   Pingora would otherwise percent-escape such a line and forward it.
//! - `Busy`: between the parsed head and the end of the response (set by the proxy
//!   in `early_request_filter`); reads and writes pass straight through, bounded by
//!   Pingora's per-read/per-write timeouts (`proxy.client_timeout`).
//! - `Idle`: after a response, waiting for the next request; Pingora's keep-alive
//!   timeout (`proxy.idle_timeout`) bounds it, and the first byte starts `Head`.
//!
//! The phase lives in a [`ConnState`] shared with the request hooks through a
//! task-local ([`with_conn`]). The deadline timer is armed only when a head read
//! would wait, so a request whose head arrives in one read costs no timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest};
use pingora::protocols::{Peek, Shutdown, Ssl, Stream, TimingDigest, UniqueID, UniqueIDType};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

pub(crate) const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
pub(crate) const RESPONSE_400: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
pub(crate) const RESPONSE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Limits on the request head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HeadLimits {
    pub timeout: Duration,
    pub max_size: usize,
}

/// Which phase a connection is in; shared by the stream and the request hooks.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    phase: AtomicU8,
    /// `X-Forwarded-For` for requests that arrive without one: the client's IP,
    /// formatted once per connection rather than once per request.
    pub forwarded_for: std::sync::OnceLock<http::HeaderValue>,
}

impl ConnState {
    /// The head is parsed: reads now belong to the request body.
    pub(crate) fn head_done(&self) {
        self.phase.store(BUSY, Relaxed);
    }

    /// The response is finished: the next byte starts a new head.
    pub(crate) fn request_done(&self) {
        self.phase.store(IDLE, Relaxed);
    }
}

tokio::task_local! {
    static CONN: Arc<ConnState>;
}

/// Run `f` with the current connection's state, when there is one (there is none
/// for subrequests or outside a guarded connection).
pub(crate) fn with_conn<R>(f: impl FnOnce(&ConnState) -> R) -> Option<R> {
    CONN.try_with(|c| f(c)).ok()
}

/// The request line as it arrives, possibly over several reads.
#[derive(Debug, Default)]
pub(crate) struct LineCheck {
    spaces: u8,
    /// A byte other than CR/LF was seen (empty lines before the request line are
    /// allowed, RFC 9112 section 2.2).
    started: bool,
    /// The line ended; later bytes are headers.
    pub(crate) done: bool,
}

impl LineCheck {
    /// Check the next bytes; `false` for a byte no valid request line has: a control
    /// byte, a CR not followed by LF, or a third space.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> bool {
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\n' if self.started => {
                    self.done = true;
                    return true;
                }
                b'\n' => {}
                // A CR at the end of this read may be followed by the LF in the next.
                b'\r' if bytes.get(i + 1).is_none_or(|&n| n == b'\n') => {}
                b' ' => {
                    self.started = true;
                    self.spaces += 1;
                    if self.spaces > 2 {
                        return false;
                    }
                }
                0..=0x1f | 0x7f => return false,
                _ => self.started = true,
            }
        }
        true
    }
}

pub(crate) struct GuardedStream {
    inner: Stream,
    state: Arc<ConnState>,
    limits: HeadLimits,
    /// Bytes read in the current head phase.
    head_bytes: usize,
    /// The request line of the current head, checked as it arrives.
    line: LineCheck,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    rejected: bool,
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .field("head_bytes", &self.head_bytes)
            .finish()
    }
}

impl GuardedStream {
    pub(crate) fn new(inner: Stream, state: Arc<ConnState>, limits: HeadLimits) -> GuardedStream {
        GuardedStream {
            inner,
            state,
            limits,
            head_bytes: 0,
            line: LineCheck::default(),
            deadline: Instant::now() + limits.timeout,
            timer: None,
            rejected: false,
        }
    }

    /// Best effort: one non-blocking write of a canned response, then an error that
    /// makes Pingora close the connection.
    fn reject(
        &mut self,
        cx: &mut Context<'_>,
        response: &'static [u8],
        why: &str,
    ) -> std::io::Error {
        if !self.rejected {
            self.rejected = true;
            let _ = Pin::new(&mut self.inner).poll_write(cx, response);
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
        std::io::Error::new(std::io::ErrorKind::TimedOut, why.to_owned())
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let phase = this.state.phase.load(Relaxed);
        if phase == BUSY {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if phase == HEAD && this.head_bytes >= this.limits.max_size {
            // Pingora wants more of a head that is already at the limit.
            return Poll::Ready(Err(this.reject(cx, RESPONSE_431, "request head too large")));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if phase == IDLE {
                    if n > 0 {
                        this.state.phase.store(HEAD, Relaxed);
                        this.head_bytes = n;
                        this.line = LineCheck::default();
                        this.deadline = Instant::now() + this.limits.timeout;
                    }
                } else {
                    this.head_bytes += n;
                }
                if n > 0 && !this.line.done && !this.line.feed(&buf.filled()[before..]) {
                    return Poll::Ready(Err(this.reject(cx, RESPONSE_400, "bad request line")));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if phase == HEAD => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    let err = if this.head_bytes > 0 {
                        this.reject(cx, RESPONSE_408, "client_header_timeout")
                    } else {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "client sent nothing")
                    };
                    return Poll::Ready(Err(err));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, d: SocketDigest) {
        self.inner.set_socket_digest(d)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// A Pingora [`ServerApp`] that guards each connection, then hands it to `inner`
/// (the HTTP proxy) with the connection state in scope. The head limits are read
/// from the proxy settings when the connection opens.
pub(crate) struct FrontApp<A> {
    pub inner: Arc<A>,
    pub settings: Arc<arc_swap::ArcSwap<super::ProxySettings>>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for FrontApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let state = Arc::new(ConnState::default());
        let limits = self.settings.load().head;
        let guarded: Stream = Box::new(GuardedStream::new(stream, state.clone(), limits));
        // The inner app loops over keep-alive requests itself and returns `None`.
        CONN.scope(state, self.inner.process_new(guarded, shutdown))
            .await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::LineCheck;

    fn ok(pieces: &[&[u8]]) -> bool {
        let mut c = LineCheck::default();
        pieces.iter().all(|p| c.feed(p))
    }

    #[test]
    fn request_lines() {
        assert!(ok(&[b"GET / HTTP/1.1\r\nHost: a b c d\r\n"]));
        assert!(ok(&[b"GET /a", b"b HTTP/1.1\r", b"\nX: \x01\r\n"]));
        assert!(ok(&[b"\r\nGET / HTTP/1.1\n"]));
        assert!(!ok(&[b"GET /a\0b HTTP/1.1\r\n"]));
        assert!(!ok(&[b"GET  /a HTTP/1.1\r\n"]));
        assert!(!ok(&[b"GET /a ", b"b HTTP/1.1\r\n"]));
        assert!(!ok(&[b"GET /a\rb HTTP/1.1\r\n"]));
        assert!(!ok(&[b"GET /a\tb HTTP/1.1\r\n"]));
    }
}
