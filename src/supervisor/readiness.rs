//! Probing whether a worker can take traffic: one attempt, bounded.

use tokio::time::timeout;

use crate::config::ReadyProbe;
use crate::probe;
use crate::slot::Endpoint;

/// One attempt: `true` if the worker passed.
pub(crate) async fn probe_once(endpoint: &Endpoint, check: &ReadyProbe) -> bool {
    let attempt = async {
        match (check, endpoint) {
            (ReadyProbe::Tcp, Endpoint::Tcp(a)) => {
                probe::connect(&a.ip().to_string(), a.port()).await.is_ok()
            }
            (ReadyProbe::Tcp, Endpoint::Unix(p)) => probe::connect_unix(p).await.is_ok(),
            (ReadyProbe::Http { path }, Endpoint::Tcp(a)) => matches!(
                probe::http_status(&a.ip().to_string(), a.port(), "GET", path).await,
                Ok(200..=299)
            ),
            (ReadyProbe::Http { path }, Endpoint::Unix(p)) => {
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
        let endpoint = Endpoint::Tcp(l.local_addr().unwrap());
        assert!(probe_once(&endpoint, &ReadyProbe::Tcp).await);
        drop(l);
        assert!(!probe_once(&endpoint, &ReadyProbe::Tcp).await);
    }
}
