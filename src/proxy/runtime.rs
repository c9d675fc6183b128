//! The proxy's tokio runtime.
//!
//! With one proxy thread, a current-thread runtime driven by one dedicated thread:
//! no work-stealing machinery, no cross-worker queues. With more threads, tokio's
//! multi-threaded (work-stealing) runtime, so a busy connection's neighbours can
//! move to an idle thread. Either way the runtime is separate from forkyard's
//! control runtime, and shutting it down drops every proxy connection at once.

use std::future::Future;
use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) enum ProxyRuntime {
    Multi(Runtime),
    Single {
        handle: Handle,
        stop: oneshot::Sender<()>,
    },
}

impl ProxyRuntime {
    pub(crate) fn new(threads: NonZeroUsize) -> std::io::Result<ProxyRuntime> {
        if threads.get() > 1 {
            return Ok(ProxyRuntime::Multi(
                Builder::new_multi_thread()
                    .worker_threads(threads.get())
                    .thread_name("forkyard-proxy")
                    .enable_all()
                    .build()?,
            ));
        }
        let rt = Builder::new_current_thread().enable_all().build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("forkyard-proxy".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
                // Dropping the runtime here cancels every proxy task.
                drop(rt);
            })?;
        Ok(ProxyRuntime::Single { handle, stop })
    }

    pub(crate) fn spawn<F>(&self, f: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            ProxyRuntime::Multi(rt) => rt.spawn(f),
            ProxyRuntime::Single { handle, .. } => handle.spawn(f),
        }
    }

    /// Stop every proxy task without waiting for them.
    pub(crate) fn shutdown(self) {
        match self {
            ProxyRuntime::Multi(rt) => rt.shutdown_background(),
            ProxyRuntime::Single { stop, .. } => {
                let _ = stop.send(());
            }
        }
    }
}
