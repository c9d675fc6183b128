//! Minimal one-shot HTTP/1.1 and TCP checks, used by readiness probes and by the
//! `http` and `wait_for` hook actions. One request per connection, `Connection:
//! close`, only the status line is read. [`fetch`] is the one exception: it reads
//! a whole answer (a worker's metrics), bounded in size.

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
    #[error("{target}: the answer is larger than {limit} bytes")]
    TooLarge { target: String, limit: usize },
}

/// A whole answer: its status and body.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Where [`fetch`] connects.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    Tcp(std::net::SocketAddr),
    Unix(&'a Path),
}

/// `GET path` with `Accept: accept`, and the whole answer (its body at most `limit`
/// bytes): by `Content-Length`, chunked, or up to the close.
pub(crate) async fn fetch(
    target: Target<'_>,
    path: &str,
    accept: &str,
    limit: usize,
) -> Result<Fetched, ProbeError> {
    let (name, host_header) = match target {
        Target::Tcp(addr) => (format!("http://{addr}{path}"), addr.to_string()),
        Target::Unix(socket) => (
            format!("unix:{}:{path}", socket.display()),
            "localhost".to_owned(),
        ),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: forkyard\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    match target {
        Target::Tcp(addr) => {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|source| ProbeError::Connect {
                    target: name.clone(),
                    source,
                })?;
            let _ = stream.set_nodelay(true);
            read_answer(stream, &req, name, limit).await
        }
        Target::Unix(socket) => {
            let stream = connect_unix(socket).await?;
            read_answer(stream, &req, name, limit).await
        }
    }
}

async fn read_answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    req: &str,
    target: String,
    limit: usize,
) -> Result<Fetched, ProbeError> {
    let io = |source| ProbeError::Io {
        target: target.clone(),
        source,
    };
    stream.write_all(req.as_bytes()).await.map_err(io)?;
    // The whole answer: a head (at most 64 KiB) and a body of at most `limit`.
    let cap = limit.saturating_add(64 * 1024);
    let mut raw = Vec::with_capacity(16 * 1024);
    loop {
        // Into the vector's spare room: nothing is zeroed or copied twice.
        raw.reserve(16 * 1024);
        let n = stream.read_buf(&mut raw).await.map_err(io)?;
        if n == 0 {
            break;
        }
        if raw.len() > cap {
            return Err(ProbeError::TooLarge { target, limit });
        }
        // Stop reading once the body is complete (some servers keep the connection
        // open despite `Connection: close`).
        match framing(&raw) {
            Some((_, Framing::Length(length))) if length > limit => {
                return Err(ProbeError::TooLarge { target, limit });
            }
            Some((head, Framing::Length(length))) if raw.len() >= head + length => break,
            Some((head, Framing::Chunked)) if dechunk(&raw[head..]).is_some() => break,
            _ => {}
        }
    }
    let bad = || ProbeError::BadResponse {
        target: target.clone(),
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(bad()),
    };
    let status = response.code.ok_or_else(bad)?;
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let body = &raw[head..];
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(body).ok_or_else(bad)?
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse().map_err(|_| bad())?;
        body.get(..length).ok_or_else(bad)?.to_vec()
    } else {
        body.to_vec()
    };
    if body.len() > limit {
        return Err(ProbeError::TooLarge { target, limit });
    }
    Ok(Fetched { status, body })
}

/// How an answer's body ends.
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// The head's length and how the body ends, once the head is complete.
fn framing(raw: &[u8]) -> Option<(usize, Framing)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = response.parse(raw) else {
        return None;
    };
    let value = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let framing = if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        Framing::Chunked
    } else if let Some(n) = value("content-length").and_then(|v| v.trim().parse().ok()) {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    Some((head, framing))
}

/// A chunked body, whole; `None` when it is cut short or malformed.
fn dechunk(mut s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    loop {
        let line_end = s.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&s[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        s = &s[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(s.get(..size)?);
        s = s.get(size..)?.strip_prefix(b"\r\n")?;
    }
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

    /// Serve `answer` to one connection on a fresh loopback port.
    async fn serve_once(answer: &'static [u8]) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /metrics HTTP/1.1\r\n"));
            assert!(std::str::from_utf8(&buf[..n])
                .unwrap()
                .contains("Accept: text/plain"));
            for part in answer.chunks(7) {
                s.write_all(part).await.unwrap();
            }
            // Keep the connection open: a Content-Length answer must not need the close.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        addr
    }

    #[tokio::test]
    async fn fetches_whole_bodies() {
        let get = |addr| fetch(Target::Tcp(addr), "/metrics", "text/plain", 1000);
        let addr = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\na 1\n\n").await;
        let f = get(addr).await.unwrap();
        assert_eq!((f.status, f.body.as_slice()), (200, &b"a 1\n\n"[..]));
        let addr = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\na 1\n\r\n4\r\nb 2\n\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(get(addr).await.unwrap().body, b"a 1\nb 2\n");
        let addr = serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(get(addr).await.unwrap().status, 404);
        let big: &'static [u8] = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n{}",
                "x".repeat(2000)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        let addr = serve_once(big).await;
        assert!(matches!(get(addr).await, Err(ProbeError::TooLarge { .. })));
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
