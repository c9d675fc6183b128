//! Connections to workers on the lean path, and each proxy thread's pool of idle
//! keep-alive ones.
//!
//! The pool is thread-local: a connection is only ever used by the thread (and the
//! runtime) that opened it, so taking and returning one costs no lock and no
//! cross-thread wake-up, and no task watches an idle connection. Instead a pooled
//! connection is checked when it is taken: one that has expired
//! (`timeouts.idle`) or that the worker has closed (readable: EOF or stray bytes)
//! is dropped, so a request almost never meets a stale connection. A sweep per
//! thread closes expired connections every second, so the pool holds no socket of
//! a worker that is gone.
//!
//! `TCP_QUICKACK` is set before each read of a worker's response: many Python
//! servers write a response's head and body in two sends without `TCP_NODELAY`,
//! and with delayed ACKs on our side Nagle's algorithm would hold the body for up
//! to 40 ms until our ACK of the head.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use crate::slot::Endpoint;

/// A connection to one worker.
pub(crate) enum UpConn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl UpConn {
    /// Connect to `endpoint` within `timeout`.
    pub(crate) async fn connect(endpoint: &Endpoint, timeout: Duration) -> io::Result<UpConn> {
        let connect = async {
            Ok::<_, io::Error>(match endpoint {
                Endpoint::Tcp(addr) => {
                    let s = TcpStream::connect(addr).await?;
                    s.set_nodelay(true)?;
                    UpConn::Tcp(s)
                }
                Endpoint::Unix(path) => UpConn::Unix(UnixStream::connect(path).await?),
            })
        };
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// Acknowledge the next data at once (TCP only; the kernel clears it again).
    pub(crate) fn quickack(&self) {
        if let UpConn::Tcp(s) = self {
            quickack(s);
        }
    }

    /// Whether an idle connection is still usable: the worker has neither closed
    /// it nor written anything on it.
    fn alive(&self) -> bool {
        let mut byte = [0u8; 1];
        let r = match self {
            UpConn::Tcp(s) => s.try_read(&mut byte),
            UpConn::Unix(s) => s.try_read(&mut byte),
        };
        matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

#[allow(unsafe_code)]
fn quickack(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int and its
    // size; a failure (not a TCP socket) changes nothing.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl AsyncRead for UpConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpConn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            UpConn::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpConn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            UpConn::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpConn::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpConn::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpConn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpConn::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

struct Idle {
    conn: UpConn,
    expires: Instant,
}

thread_local! {
    /// This thread's idle connections, by worker process (member id).
    static IDLE: RefCell<HashMap<u64, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// A pooled connection to member `member`, if one is usable.
pub(crate) fn take(member: u64) -> Option<UpConn> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&member)?;
        let now = Instant::now();
        while let Some(c) = list.pop() {
            if c.expires > now && c.conn.alive() {
                return Some(c.conn);
            }
        }
        None
    })
}

/// Keep `conn` to member `member` for reuse for `idle`, unless `max` are kept.
pub(crate) fn put(member: u64, conn: UpConn, idle: Duration, max: usize) {
    if max == 0 || idle.is_zero() {
        return;
    }
    IDLE.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.entry(member).or_default();
        if list.len() < max {
            list.push(Idle {
                conn,
                expires: Instant::now() + idle,
            });
        }
    });
}

/// Close this thread's expired idle connections, every second, for ever.
pub(crate) async fn sweep() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = Instant::now();
        IDLE.with(|pool| {
            pool.borrow_mut().retain(|_, list| {
                list.retain(|c| c.expires > now);
                !list.is_empty()
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_or_expired_connection_is_not_reused() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at: Endpoint = l.local_addr().unwrap().into();
        let a = UpConn::connect(&at, Duration::from_secs(1)).await.unwrap();
        let (server_a, _) = l.accept().await.unwrap();
        put(1, a, Duration::from_secs(60), 8);
        assert!(take(1).is_some(), "a live connection is reused");
        assert!(take(1).is_none(), "taken once");

        let b = UpConn::connect(&at, Duration::from_secs(1)).await.unwrap();
        put(1, b, Duration::from_secs(60), 8);
        drop(server_a);
        let (server_b, _) = l.accept().await.unwrap();
        drop(server_b);
        // The worker closed it: readable (EOF) soon.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(take(1).is_none(), "a closed connection is dropped");

        let c = UpConn::connect(&at, Duration::from_secs(1)).await.unwrap();
        let _server_c = l.accept().await.unwrap();
        put(2, c, Duration::from_millis(1), 8);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(take(2).is_none(), "an expired connection is dropped");
        put(
            3,
            UpConn::connect(&at, Duration::from_secs(1)).await.unwrap(),
            Duration::from_secs(60),
            0,
        );
        assert!(take(3).is_none(), "keepalive 0 keeps nothing");
    }
}
