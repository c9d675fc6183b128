//! A tiny blocking HTTP/1.1 client for `forkyard status` and `forkyard probe`: one
//! `GET` over a fresh connection, bounded in time. It exists so that a container
//! image needs no curl or wget for its HEALTHCHECK.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

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
    let deadline = Instant::now() + timeout;
    let resolve = |source| ClientError::Resolve {
        addr: addr.clone(),
        source,
    };
    let target = addr
        .to_socket_addrs()
        .map_err(resolve)?
        .next()
        .ok_or_else(|| resolve(std::io::ErrorKind::NotFound.into()))?;
    let connect = |source| ClientError::Connect {
        addr: addr.clone(),
        source,
    };
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(connect)?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    stream.set_read_timeout(Some(left)).map_err(connect)?;
    stream.set_write_timeout(Some(left)).map_err(connect)?;
    let host = addr.trim_end_matches(":80");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: forkyard/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(request.as_bytes()).map_err(connect)?;
    let mut raw = Vec::new();
    stream
        .take(16 * 1024 * 1024)
        .read_to_end(&mut raw)
        .map_err(|source| ClientError::Read {
            addr: addr.clone(),
            source,
        })?;
    parse(&raw).ok_or(ClientError::NotHttp { addr })
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
