//! Probing whether a freshly spawned worker can take traffic.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::timeout;

use crate::config::ReadyProbe;
use crate::probe;

/// Probe `addr` every `interval` until it passes. The caller bounds the total time.
pub async fn wait_ready(addr: SocketAddr, check: &ReadyProbe, interval: Duration) {
    loop {
        if probe_once(addr, check).await {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// One attempt: `true` if the worker passed.
pub async fn probe_once(addr: SocketAddr, check: &ReadyProbe) -> bool {
    let host = addr.ip().to_string();
    let attempt = async {
        match check {
            ReadyProbe::Tcp => probe::connect(&host, addr.port()).await.is_ok(),
            ReadyProbe::Http { path } => matches!(
                probe::http_status(&host, addr.port(), "GET", path).await,
                Ok(200..=299)
            ),
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
        let addr = l.local_addr().unwrap();
        assert!(probe_once(addr, &ReadyProbe::Tcp).await);
        drop(l);
        assert!(!probe_once(addr, &ReadyProbe::Tcp).await);
    }
}
