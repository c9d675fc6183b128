//! A tiny blocking HTTP/1.1 client for `forkyard status`, `probe` and the control
//! commands (`reload`, `scale`, `restart`): one request over a fresh connection,
//! over TCP or forkyard's control socket, bounded in time. It exists so that a
//! container image needs no curl or wget for its HEALTHCHECK.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host:port`.
    Tcp(String),
    /// A unix socket: forkyard's control socket.
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(addr) => f.write_str(addr),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {0:?}: expected http://HOST:PORT/PATH")]
    Url(String),
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the answer from {addr} failed: {source}")]
    Read {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} answered something that is not HTTP")]
    NotHttp { addr: String },
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `http://host:port/path` → (`host:port`, `/path`). The port defaults to 80.
pub fn split_url(url: &str) -> Result<(String, String), ClientError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::Url(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(ClientError::Url(url.to_owned()));
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let authority = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_owned()))
}

/// `GET url`, all of it within `timeout`.
pub fn get(url: &str, timeout: Duration) -> Result<Response, ClientError> {
    let (addr, path) = split_url(url)?;
    request(&Target::Tcp(addr), "GET", &path, timeout)
}

/// One request with an empty body to `target`, all of it within `timeout`.
pub fn request(
    target: &Target,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let deadline = Instant::now() + timeout;
    let addr = target.to_string();
    let connect = |source| ClientError::Connect {
        addr: addr.clone(),
        source,
    };
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let raw = match target {
        Target::Tcp(authority) => {
            let resolve = |source| ClientError::Resolve {
                addr: authority.clone(),
                source,
            };
            let to = authority
                .to_socket_addrs()
                .map_err(resolve)?
                .next()
                .ok_or_else(|| resolve(std::io::ErrorKind::NotFound.into()))?;
            let stream = TcpStream::connect_timeout(&to, timeout).map_err(connect)?;
            stream.set_read_timeout(Some(left())).map_err(connect)?;
            stream.set_write_timeout(Some(left())).map_err(connect)?;
            exchange(
                stream,
                authority.trim_end_matches(":80"),
                method,
                path,
                &addr,
            )?
        }
        Target::Unix(socket) => {
            let stream = UnixStream::connect(socket).map_err(connect)?;
            stream.set_read_timeout(Some(left())).map_err(connect)?;
            stream.set_write_timeout(Some(left())).map_err(connect)?;
            exchange(stream, "localhost", method, path, &addr)?
        }
    };
    parse(&raw).ok_or(ClientError::NotHttp { addr })
}

/// Send the request on `stream` and read the whole answer.
fn exchange(
    mut stream: impl Read + Write,
    host: &str,
    method: &str,
    path: &str,
    addr: &str,
) -> Result<Vec<u8>, ClientError> {
    let body_length = if method == "GET" || method == "HEAD" {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: forkyard/{}\r\nConnection: close\r\n{body_length}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|source| ClientError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let mut raw = Vec::new();
    stream
        .take(16 * 1024 * 1024)
        .read_to_end(&mut raw)
        .map_err(|source| ClientError::Read {
            addr: addr.to_owned(),
            source,
        })?;
    Ok(raw)
}

fn parse(raw: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    if !status_line.starts_with("HTTP/1.") {
        return None;
    }
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some(Response { status, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let s = |u: &str| split_url(u).map_err(|e| e.to_string());
        assert_eq!(
            s("http://127.0.0.1:9090/healthz").unwrap(),
            ("127.0.0.1:9090".into(), "/healthz".into())
        );
        assert_eq!(
            s("http://localhost").unwrap(),
            ("localhost:80".into(), "/".into())
        );
        assert_eq!(
            s("http://[::1]:9090/x?y=1").unwrap(),
            ("[::1]:9090".into(), "/x?y=1".into())
        );
        assert_eq!(s("http://[::1]/").unwrap().0, "[::1]:80");
        assert!(s("https://example.com/").is_err());
        assert!(s("http:///x").is_err());
    }

    #[test]
    fn parses_plain_and_chunked_answers() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
        let r = parse(b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n6\r\n ready\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "not ready"));
        assert!(parse(b"SSH-2.0-x\r\n\r\n").is_none());
    }
}
