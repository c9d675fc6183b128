//! Minimal one-shot HTTP/1.1 and TCP checks, used by readiness probes and by the
//! `http` and `wait_for` hook actions. One request per connection, `Connection:
//! close`, only the status line is read.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{target}: {source}")]
    Io {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{target}: not an HTTP response")]
    BadResponse { target: String },
}

/// Open a TCP connection to `host:port` (host names are resolved).
pub(crate) async fn connect(host: &str, port: u16) -> Result<TcpStream, ProbeError> {
    TcpStream::connect((host, port))
        .await
        .map_err(|source| ProbeError::Connect {
            target: format!("{host}:{port}"),
            source,
        })
}

/// Send one request and return the response's status code.
pub(crate) async fn http_status(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
) -> Result<u16, ProbeError> {
    let target = format!("http://{host}:{port}{path}");
    let stream = connect(host, port).await?;
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    request_status(stream, &host_header, method, path, target).await
}

/// Open a connection to the Unix socket at `socket`.
pub(crate) async fn connect_unix(socket: &Path) -> Result<UnixStream, ProbeError> {
    UnixStream::connect(socket)
        .await
        .map_err(|source| ProbeError::Connect {
            target: format!("unix:{}", socket.display()),
            source,
        })
}

/// `http_status` over a Unix socket (`Host: localhost`).
pub(crate) async fn http_status_unix(
    socket: &Path,
    method: &str,
    path: &str,
) -> Result<u16, ProbeError> {
    let target = format!("unix:{}:{path}", socket.display());
    let stream = connect_unix(socket).await?;
    request_status(stream, "localhost", method, path, target).await
}

async fn request_status<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host_header: &str,
    method: &str,
    path: &str,
    target: String,
) -> Result<u16, ProbeError> {
    let io = |source| ProbeError::Io {
        target: target.clone(),
        source,
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: forkyard\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.map_err(io)?;
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        let n = stream.read(&mut head[len..]).await.map_err(io)?;
        if n == 0 {
            break;
        }
        len += n;
    }
    parse_status(&head[..len]).ok_or(ProbeError::BadResponse { target })
}

/// Bound on one probe attempt, for callers that have no better bound.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// The status code of `HTTP/1.x NNN ...`.
fn parse_status(head: &[u8]) -> Option<u16> {
    if head.len() < 12 || !head.starts_with(b"HTTP/1.") || head[8] != b' ' {
        return None;
    }
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 204 No Content"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.1 503 Service Unavailable"), Some(503));
        assert_eq!(parse_status(b"HTTP/1.1 2"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH_9.2p1"), None);
    }

    #[tokio::test]
    async fn talks_to_a_real_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            s.write_all(b"HTTP/1.1 418 I'm a teapot\r\n\r\n")
                .await
                .unwrap();
        });
        assert_eq!(
            http_status("127.0.0.1", port, "GET", "/").await.unwrap(),
            418
        );
    }

    #[tokio::test]
    async fn talks_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /ready HTTP/1.1\r\nHost: localhost\r\n"));
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
        });
        assert_eq!(http_status_unix(&path, "GET", "/ready").await.unwrap(), 204);
        let gone = dir.path().join("nothing.sock");
        assert!(matches!(
            http_status_unix(&gone, "GET", "/").await,
            Err(ProbeError::Connect { .. })
        ));
    }
}
