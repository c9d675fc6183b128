//! One client connection: read each request head within its limits, then either
//! proxy it on forkyard's own lean path ([`exchange`](super::exchange)) or hand the
//! connection to Pingora's HTTP proxy for the rest of its life.
//!
//! The lean path takes the common request — HTTP/1.1, an ordinary method, an
//! origin-form target, no body or a `Content-Length` body within
//! `buffer.request`, no `Upgrade`, `Expect` or `Transfer-Encoding` — and nothing
//! else: anything unusual (WebSocket upgrades, chunked uploads, large bodies,
//! HTTP/1.0, a head `httparse` refuses) goes to Pingora with the bytes already read
//! put back in front of the stream, exactly as if Pingora had accepted the
//! connection itself (`FrontApp` and `ForkyardProxy` do the same routing,
//! balancing, retries and recording there).
//!
//! The request head's limits are the ones the Pingora path enforces too
//! (`front.rs`): it must arrive within `proxy.client_header_timeout` of the
//! connection opening (or of the first byte of a later request), else 408 (or a
//! plain close when nothing came); a head still incomplete at
//! `proxy.max_header_size` gets 431; a request line with a control byte or a third
//! space gets 400. Between requests the connection holds no buffer: it waits for
//! the next byte with nothing allocated, at most `proxy.idle_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use pingora::apps::ServerApp;
use pingora::protocols::SocketDigest;
use pingora::proxy::HttpProxy;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::front::{FrontApp, LineCheck, RESPONSE_400, RESPONSE_408, RESPONSE_431};
use super::request::{Head, Parsed};
use super::{exchange, ForkyardProxy, Shared};

/// The Pingora side, for the requests the lean path leaves to it.
pub(crate) type Fallback = FrontApp<HttpProxy<ForkyardProxy>>;

/// What every connection of the proxy shares.
pub(crate) struct Front {
    pub(crate) shared: Arc<Shared>,
    pub(crate) fallback: Arc<Fallback>,
}

/// How far a head read got.
enum HeadRead {
    /// The connection closed, or stayed silent past the deadline: close quietly.
    Gone,
    /// Answer this and close.
    Reject(&'static [u8]),
    /// A whole head is in the buffer, `len` bytes long.
    Complete(Parsed),
    /// Not for the lean path: hand the connection to Pingora.
    Fallback,
}

/// Serve one client connection until it closes.
pub(crate) async fn serve(
    front: Arc<Front>,
    mut stream: TcpStream,
    client: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut leftover = BytesMut::new();
    let mut first = true;
    loop {
        let settings = **front.shared.settings.load();
        // Wait for the first byte of the next request (the first request's head
        // deadline runs from the connection's opening).
        let mut deadline = Instant::now() + settings.head.timeout;
        if leftover.is_empty() {
            // Nothing is allocated for a connection until it sends something.
            let wait = if first {
                settings.head.timeout
            } else {
                Duration::from_secs(settings.client.idle_secs)
            };
            let mut stop = shutdown.clone();
            tokio::select! {
                biased;
                _ = super::listen::stopped(&mut stop), if !first => return,
                r = stream.readable() => if r.is_err() { return },
                _ = tokio::time::sleep(wait) => return,
            }
            if !first {
                deadline = Instant::now() + settings.head.timeout;
            }
        }
        first = false;
        let mut buf = std::mem::take(&mut leftover);
        let parsed = match read_head(&mut stream, &mut buf, deadline, settings.head.max_size).await
        {
            HeadRead::Gone => return,
            HeadRead::Reject(answer) => {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, answer).await;
                return;
            }
            HeadRead::Fallback => return Box::pin(hand_over(front, stream, buf, shutdown)).await,
            HeadRead::Complete(p) => p,
        };
        let head = Head::new(buf.split_to(parsed.len).freeze(), parsed);
        if !head.lean(&settings) {
            // Put the head back in front of what follows it.
            let mut all = BytesMut::from(&head.raw[..]);
            all.extend_from_slice(&buf);
            return Box::pin(hand_over(front, stream, all, shutdown)).await;
        }
        let closing = *shutdown.borrow();
        // Boxed: the exchange's state (a few KiB) exists only while a request is
        // in flight, not in every idle connection's task.
        let exchange = Box::pin(exchange::run(
            &front.shared,
            &mut stream,
            client,
            head,
            &mut buf,
            closing,
        ));
        match exchange.await {
            exchange::Next::Continue => {
                // Bytes of a pipelined next request stay for the next round.
                leftover = buf;
                if leftover.is_empty() {
                    leftover = BytesMut::new();
                }
                if *shutdown.borrow() {
                    return;
                }
            }
            exchange::Next::Close => return,
            exchange::Next::Fallback(head) => {
                let mut all = BytesMut::from(&head.raw[..]);
                all.extend_from_slice(&buf);
                return Box::pin(hand_over(front, stream, all, shutdown)).await;
            }
        }
    }
}

/// Read until a whole request head is in `buf`, within `deadline` and `max` bytes.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Instant,
    max: usize,
) -> HeadRead {
    let mut line = LineCheck::default();
    let mut checked = 0;
    loop {
        if !buf.is_empty() {
            if !line.done {
                if !line.feed(&buf[checked..]) {
                    return HeadRead::Reject(RESPONSE_400);
                }
                checked = buf.len();
            }
            match Parsed::parse(buf) {
                Ok(Some(p)) if p.len > max => return HeadRead::Reject(RESPONSE_431),
                Ok(Some(p)) => return HeadRead::Complete(p),
                Ok(None) => {}
                Err(()) => return HeadRead::Fallback,
            }
            if buf.len() >= max {
                return HeadRead::Reject(RESPONSE_431);
            }
        }
        match tokio::time::timeout_at(deadline, read_some(stream, buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return HeadRead::Gone,
            Ok(Ok(_)) => {}
            Err(_) if buf.is_empty() => return HeadRead::Gone,
            Err(_) => return HeadRead::Reject(RESPONSE_408),
        }
    }
}

thread_local! {
    /// Where head bytes are read first, so a connection's buffer is only as large
    /// as what it has sent (a partial head waiting for more holds its bytes, not
    /// a read-sized buffer).
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}
const SCRATCH_LEN: usize = 16 * 1024;

/// Read what the socket has (at least one byte, or 0 at its end) onto `buf`.
/// (Through `poll_read`, which also clears the socket's readiness after a short
/// read, so the next wait for a request really waits.)
async fn read_some(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    use std::task::Poll;
    use tokio::io::{AsyncRead, ReadBuf};
    std::future::poll_fn(|cx| {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut read = ReadBuf::new(&mut scratch[..]);
            match std::pin::Pin::new(&mut *stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    buf.extend_from_slice(read.filled());
                    Poll::Ready(Ok(read.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
}

/// Give the connection, with `read` (bytes already taken from it) put back in
/// front, to Pingora's proxy, which serves it from here on.
async fn hand_over(
    front: Arc<Front>,
    stream: TcpStream,
    read: BytesMut,
    shutdown: watch::Receiver<bool>,
) {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let mut l4 = pingora::protocols::l4::stream::Stream::from(stream);
    pingora::protocols::GetSocketDigest::set_socket_digest(&mut l4, SocketDigest::from_raw_fd(fd));
    let mut read = read;
    if read.has_remaining() {
        l4.rewind(&read);
        read.clear();
    }
    let _ = front.fallback.process_new(Box::new(l4), &shutdown).await;
}
