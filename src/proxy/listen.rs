//! The proxy's listeners and threads.
//!
//! `proxy.threads` threads, each with its own single-threaded tokio runtime and its
//! own listening socket per `proxy.listen` address, bound with `SO_REUSEPORT`: the
//! kernel spreads new connections over the threads, and a connection, its requests
//! and its upstream connections stay on one thread for their whole life, with no
//! work stealing and no cross-thread wake-up (nginx's model). Each thread keeps its
//! own pool of idle upstream connections (`idle`).
//!
//! The sockets are bound at start-up, before anything else runs, so a busy port is
//! a clear error. Shutdown is two steps, as the server's shutdown order needs:
//! [`Threads::stop_accepting`] closes the listening sockets and tells every
//! connection to close after its current request; [`Threads::close`] then drops the
//! runtimes, which cancels whatever is left.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrStorage,
};
use tokio::sync::watch;

use super::conn::{self, Front};

/// The listen backlog of each socket (the kernel caps it at `somaxconn`).
const BACKLOG: i32 = 4096;

/// Bind one `SO_REUSEPORT` listening socket for `addr`.
fn bind_one(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd: OwnedFd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    // SAFETY: `fd` is a listening TCP socket we own; ownership moves to the listener.
    #[allow(unsafe_code)]
    Ok(unsafe { std::net::TcpListener::from_raw_fd(fd.into_raw_fd()) })
}

/// Every thread's listening sockets, bound: `sockets[thread]` has one per address.
pub(crate) struct Bound {
    sockets: Vec<Vec<std::net::TcpListener>>,
}

/// Bind `threads` sockets for each of `addrs`; the first error names its address.
pub(crate) fn bind_all(
    addrs: &[SocketAddr],
    threads: usize,
) -> Result<Bound, (SocketAddr, std::io::Error)> {
    let mut sockets = Vec::with_capacity(threads);
    for _ in 0..threads {
        let mut mine = Vec::with_capacity(addrs.len());
        for addr in addrs {
            mine.push(bind_one(*addr).map_err(|e| (*addr, e))?);
        }
        sockets.push(mine);
    }
    Ok(Bound { sockets })
}

/// The running proxy threads.
pub(crate) struct Threads {
    /// `true` stops accepting; connections close after their current request.
    stopping: watch::Sender<bool>,
    /// Dropping it ends every thread's runtime.
    close: Vec<tokio::sync::oneshot::Sender<()>>,
    /// One per accept loop; all closed once every loop has stopped.
    accepting: tokio::sync::mpsc::Receiver<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Threads {
    /// Start one thread per entry of `bound`, serving `front`.
    pub(crate) fn start(bound: Bound, front: Arc<Front>) -> std::io::Result<Threads> {
        let (stopping, stop_rx) = watch::channel(false);
        let (accept_tx, accepting) = tokio::sync::mpsc::channel(1);
        let mut close = Vec::new();
        let mut threads = Vec::new();
        for (i, sockets) in bound.sockets.into_iter().enumerate() {
            let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
            close.push(close_tx);
            let (front, stop_rx, accept_tx) = (front.clone(), stop_rx.clone(), accept_tx.clone());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("forkyard-proxy-{i}"))
                    .spawn(move || {
                        runtime.block_on(async move {
                            tokio::spawn(super::upconn::sweep());
                            for socket in sockets {
                                let (front, stop_rx, done) =
                                    (front.clone(), stop_rx.clone(), accept_tx.clone());
                                match tokio::net::TcpListener::from_std(socket) {
                                    Ok(listener) => {
                                        tokio::spawn(accept_loop(listener, front, stop_rx, done));
                                    }
                                    Err(e) => {
                                        tracing::error!(error = %e, "cannot serve a proxy listener")
                                    }
                                }
                            }
                            drop(accept_tx);
                            let _ = close_rx.await;
                        });
                        // Dropping the runtime cancels every connection left.
                        drop(runtime);
                    })?,
            );
        }
        Ok(Threads {
            stopping,
            close,
            accepting,
            threads,
        })
    }

    /// Stop accepting; every connection closes after its current request. Returns
    /// once every accept loop has stopped.
    pub(crate) async fn stop_accepting(&mut self) {
        let _ = self.stopping.send(true);
        while self.accepting.recv().await.is_some() {}
    }

    /// Drop every connection left and end the threads.
    pub(crate) fn close(self) {
        drop(self.close);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Resolves once shutdown has begun.
pub(crate) async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // The borrow guard is dropped here, before the caller awaits anything else.
    let _ = stopping.wait_for(|s| *s).await.map(|_| ());
}

/// Accept connections until told to stop; each one is a task of this thread.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    front: Arc<Front>,
    mut stopping: watch::Receiver<bool>,
    _done: tokio::sync::mpsc::Sender<()>,
) {
    let connections = stopping.clone();
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stopping) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    tokio::spawn(conn::serve(front.clone(), stream, client, connections.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}
