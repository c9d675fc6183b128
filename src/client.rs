//! A tiny blocking HTTP/1.1 client for `forkyard status`, `probe` and the control
//! commands (`reload`, `scale`, `restart`): one request over a fresh connection,
//! over TCP or forkyard's control socket, bounded in time. It exists so that a
//! container image needs no curl or wget for its HEALTHCHECK. [`follow`] reads the
//! event stream (`GET /events`) for `forkyard events`.

use std::io::{BufRead, BufReader, Read, Write};
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
    #[error("{addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
    #[error("{addr} sent nothing for {seconds}s, not even its heartbeat")]
    Silent { addr: String, seconds: u64 },
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
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let raw = match target {
        Target::Tcp(authority) => exchange(
            tcp(authority, timeout, left)?,
            authority.trim_end_matches(":80"),
            method,
            path,
            &addr,
        )?,
        Target::Unix(socket) => {
            exchange(unix(socket, &addr, left)?, "localhost", method, path, &addr)?
        }
    };
    parse(&raw).ok_or(ClientError::NotHttp { addr })
}

/// A connection to `authority` within `timeout`; each read and write is then bounded
/// by what `io` says is left.
fn tcp(
    authority: &str,
    timeout: Duration,
    io: impl Fn() -> Duration,
) -> Result<TcpStream, ClientError> {
    let resolve = |source| ClientError::Resolve {
        addr: authority.to_owned(),
        source,
    };
    let connect = |source| ClientError::Connect {
        addr: authority.to_owned(),
        source,
    };
    let to = authority
        .to_socket_addrs()
        .map_err(resolve)?
        .next()
        .ok_or_else(|| resolve(std::io::ErrorKind::NotFound.into()))?;
    let stream = TcpStream::connect_timeout(&to, timeout).map_err(connect)?;
    stream.set_read_timeout(Some(io())).map_err(connect)?;
    stream.set_write_timeout(Some(io())).map_err(connect)?;
    Ok(stream)
}

/// A connection to the control socket (`addr` names it in errors), each read and
/// write bounded by what `io` says is left.
fn unix(
    socket: &std::path::Path,
    addr: &str,
    io: impl Fn() -> Duration,
) -> Result<UnixStream, ClientError> {
    let connect = |source| ClientError::Connect {
        addr: addr.to_owned(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(connect)?;
    stream.set_read_timeout(Some(io())).map_err(connect)?;
    stream.set_write_timeout(Some(io())).map_err(connect)?;
    Ok(stream)
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

/// One Server-Sent Events message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: Option<String>,
    /// `message` when the server named none.
    pub event: String,
    pub data: String,
}

/// How an event stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// forkyard said so (`event: end`): it is stopping.
    Ended,
    /// The connection closed without that: forkyard died, or cut this reader off.
    Closed,
    /// `on_message` asked to stop.
    Stopped,
}

/// `GET path` on `target` as an event stream: `on_message` gets each message until
/// the stream ends (or it returns `false`). Connecting and the answer's head are
/// bounded by `timeout`; after that, a stream silent for `idle` (forkyard sends a
/// heartbeat every 15 s) is an error.
pub fn follow(
    target: &Target,
    path: &str,
    timeout: Duration,
    idle: Duration,
    mut on_message: impl FnMut(Message) -> bool,
) -> Result<StreamEnd, ClientError> {
    let addr = target.to_string();
    let connect = |source| ClientError::Connect {
        addr: addr.clone(),
        source,
    };
    let read_err = |source: std::io::Error| {
        if matches!(
            source.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            ClientError::Silent {
                addr: addr.clone(),
                seconds: idle.as_secs(),
            }
        } else {
            ClientError::Read {
                addr: addr.clone(),
                source,
            }
        }
    };
    let (stream, host) = match target {
        Target::Tcp(authority) => (
            Timed::Tcp(tcp(authority, timeout, || timeout)?, idle),
            authority.trim_end_matches(":80").to_owned(),
        ),
        Target::Unix(socket) => (
            Timed::Unix(unix(socket, &addr, || timeout)?, idle),
            "localhost".to_owned(),
        ),
    };
    let mut reader = BufReader::new(stream);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: forkyard/{}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    reader
        .get_mut()
        .write_all(request.as_bytes())
        .map_err(connect)?;
    // The head.
    let mut head = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(read_err)? == 0 {
            return Err(ClientError::NotHttp { addr: addr.clone() });
        }
        if line.trim_end().is_empty() {
            break;
        }
        head.push(line.trim_end().to_owned());
    }
    let status = head
        .first()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| ClientError::NotHttp { addr: addr.clone() })?;
    if status != 200 {
        let mut body = String::new();
        let _ = reader.take(64 * 1024).read_to_string(&mut body);
        return Err(ClientError::Status {
            addr: addr.clone(),
            status,
            body: body.trim().to_owned(),
        });
    }
    // From now on a read may wait for `idle`.
    reader.get_mut().set_idle().map_err(connect)?;
    let (mut id, mut event, mut data) = (None, String::new(), Vec::<String>::new());
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(read_err)? == 0 {
            return Ok(StreamEnd::Closed);
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            if data.is_empty() && event.is_empty() {
                continue;
            }
            let message = Message {
                id: id.take(),
                event: if event.is_empty() {
                    "message".to_owned()
                } else {
                    std::mem::take(&mut event)
                },
                data: std::mem::take(&mut data).join("\n"),
            };
            if message.event == "end" {
                return Ok(StreamEnd::Ended);
            }
            if !on_message(message) {
                return Ok(StreamEnd::Stopped);
            }
            continue;
        }
        if l.starts_with(':') {
            continue;
        }
        let (field, value) = l.split_once(':').unwrap_or((l, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => event = value.to_owned(),
            "data" => data.push(value.to_owned()),
            _ => {}
        }
    }
}

/// A connection whose read timeout becomes `idle` once the head is read.
enum Timed {
    Tcp(TcpStream, Duration),
    Unix(UnixStream, Duration),
}

impl Timed {
    fn set_idle(&mut self) -> std::io::Result<()> {
        match self {
            Timed::Tcp(s, idle) => s.set_read_timeout(Some(*idle)),
            Timed::Unix(s, idle) => s.set_read_timeout(Some(*idle)),
        }
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Timed::Tcp(s, ..) => s.read(buf),
            Timed::Unix(s, ..) => s.read(buf),
        }
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Timed::Tcp(s, ..) => s.write(buf),
            Timed::Unix(s, ..) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Timed::Tcp(s, ..) => s.flush(),
            Timed::Unix(s, ..) => s.flush(),
        }
    }
}

/// An event's JSON object (the log's fields) as one line for people:
/// `13:20:01.123 WARN  exit            pool=web worker=1 reason=signal … — worker exited`.
/// Anything that is not such an object comes back as it is.
pub fn event_text(data: &str) -> String {
    let Ok(Ordered(fields)) = serde_json::from_str::<Ordered>(data) else {
        return data.to_owned();
    };
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let timestamp = get("timestamp");
    let time = timestamp.get(11..23).unwrap_or(timestamp);
    let mut out = format!("{time} {:<5} {:<17}", get("level"), get("event"));
    for (key, value) in &fields {
        if matches!(
            key.as_str(),
            "timestamp" | "level" | "event" | "message" | "target"
        ) {
            continue;
        }
        let value = match value {
            serde_json::Value::String(s) if !s.is_empty() && !s.contains([' ', '"', '=']) => {
                s.clone()
            }
            other => other.to_string(),
        };
        out.push_str(&format!(" {key}={value}"));
    }
    let message = get("message");
    if !message.is_empty() {
        out.push_str(" — ");
        out.push_str(message);
    }
    out
}

/// A JSON object's members in their order.
struct Ordered(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(Visitor)
    }
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
    fn an_event_reads_as_one_line_in_the_log_order() {
        let line = event_text(
            r#"{"timestamp":"2026-11-27T10:14:50.576751Z","level":"WARN","message":"worker exited","event":"exit","pool":"web","worker":0,"pid":9117,"reason":"signal","status":"signal SIGKILL","uptime_ms":2352,"target":"forkyard::supervisor::lifecycle"}"#,
        );
        assert_eq!(
            line,
            r#"10:14:50.576 WARN  exit              pool=web worker=0 pid=9117 reason=signal status="signal SIGKILL" uptime_ms=2352 — worker exited"#
        );
        assert_eq!(event_text("not json"), "not json");
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
