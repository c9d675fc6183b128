//! Probing whether a freshly spawned worker can take traffic.

use std::time::Duration;

use tokio::time::timeout;

use crate::config::ReadyProbe;
use crate::probe;
use crate::proxy::WorkerAddr;

/// Probe `addr` every `interval` until it passes. The caller bounds the total time.
pub async fn wait_ready(addr: &WorkerAddr, check: &ReadyProbe, interval: Duration) {
    loop {
        if probe_once(addr, check).await {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// One attempt: `true` if the worker passed.
pub async fn probe_once(addr: &WorkerAddr, check: &ReadyProbe) -> bool {
    let attempt = async {
        match (check, addr) {
            (ReadyProbe::Tcp, WorkerAddr::Tcp(a)) => {
                probe::connect(&a.ip().to_string(), a.port()).await.is_ok()
            }
            (ReadyProbe::Tcp, WorkerAddr::Unix(p)) => probe::connect_unix(p).await.is_ok(),
            (ReadyProbe::Http { path }, WorkerAddr::Tcp(a)) => matches!(
                probe::http_status(&a.ip().to_string(), a.port(), "GET", path).await,
                Ok(200..=299)
            ),
            (ReadyProbe::Http { path }, WorkerAddr::Unix(p)) => {
                matches!(probe::http_status_unix(p, "GET", path).await, Ok(200..=299))
            }
        }
    };
    timeout(probe::ATTEMPT_TIMEOUT, attempt)
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_probe_needs_a_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = WorkerAddr::Tcp(l.local_addr().unwrap());
        assert!(probe_once(&addr, &ReadyProbe::Tcp).await);
        drop(l);
        assert!(!probe_once(&addr, &ReadyProbe::Tcp).await);
    }
}
