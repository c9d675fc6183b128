//! Probing whether a freshly spawned worker can take traffic.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::ReadyProbe;

/// Bound on one probe attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Probe `addr` every `interval` until it passes. The caller bounds the total time.
pub async fn wait_ready(addr: SocketAddr, probe: &ReadyProbe, interval: Duration) {
    loop {
        if probe_once(addr, probe).await {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// One attempt: `true` if the worker passed.
pub async fn probe_once(addr: SocketAddr, probe: &ReadyProbe) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        match probe {
            ReadyProbe::Tcp => Some(true),
            ReadyProbe::Http { path } => {
                let req = format!(
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: forkyard-ready\r\nConnection: close\r\n\r\n"
                );
                stream.write_all(req.as_bytes()).await.ok()?;
                let mut head = [0u8; 64];
                let mut len = 0;
                while len < 12 {
                    let n = stream.read(&mut head[len..]).await.ok()?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                }
                Some(status_is_success(&head[..len]))
            }
        }
    };
    matches!(timeout(ATTEMPT_TIMEOUT, attempt).await, Ok(Some(true)))
}

/// `HTTP/1.x 2xx` at the start of a response.
fn status_is_success(head: &[u8]) -> bool {
    head.len() >= 12 && head.starts_with(b"HTTP/1.") && head[8] == b' ' && head[9] == b'2'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert!(status_is_success(b"HTTP/1.1 200 OK\r\n"));
        assert!(status_is_success(b"HTTP/1.0 204 No Content"));
        assert!(!status_is_success(b"HTTP/1.1 503 Service Unavailable"));
        assert!(!status_is_success(b"HTTP/1.1 2"));
        assert!(!status_is_success(b"SSH-2.0-OpenSSH_9.2p1"));
    }

    #[tokio::test]
    async fn tcp_probe_needs_a_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        assert!(probe_once(addr, &ReadyProbe::Tcp).await);
        drop(l);
        assert!(!probe_once(addr, &ReadyProbe::Tcp).await);
    }
}
