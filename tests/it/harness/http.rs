//! A small HTTP/1.1 client: one request on a fresh connection ([`http_request`]),
//! requests on one keep-alive connection ([`Conn`]), and raw bytes for requests no
//! well-behaved client would send ([`raw_exchange`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a connect may take, and a read may wait.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Lower-case names; the last value of a repeated header.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Whether the server keeps the connection open after this response.
    pub fn keeps_alive(&self) -> bool {
        !self
            .headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// One request's head and body as they go on the wire; `Host` is added unless given,
/// and `Content-Length` for a non-empty body.
fn encode(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn eof(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what.to_string())
}

/// Read one whole response: status line, headers, and a body framed by
/// `Content-Length`, chunked encoding or the end of the connection.
fn read_response(r: &mut impl BufRead) -> std::io::Result<Response> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(eof("closed before the status line"));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = HashMap::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(eof("closed in the headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(eof("closed in a chunked body"));
            }
            let size = line.trim().split(';').next().unwrap_or("");
            let n = usize::from_str_radix(size, 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if n == 0 {
                // Trailers, then the empty line.
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let at = body.len();
            body.resize(at + n, 0);
            r.read_exact(&mut body[at..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = headers.get("content-length") {
        let n: usize = n
            .parse()
            .map_err(|_| std::io::Error::other(format!("bad Content-Length {n:?}")))?;
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if !(status < 200 || status == 204 || status == 304) {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// One request with any method, headers and body on a fresh connection
/// (`Connection: close`).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = connect(addr)?;
    s.write_all(&encode(addr, method, path, headers, body, true))?;
    read_response(&mut BufReader::new(s))
}

/// A GET on a fresh connection.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    http_request(addr, "GET", path, headers, b"")
}

/// A POST with an empty body on a fresh connection.
pub fn http_post(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    http_request(addr, "POST", path, &[], b"")
}

/// One keep-alive connection for several requests in a row.
pub struct Conn {
    addr: SocketAddr,
    stream: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        Ok(Conn {
            addr,
            stream: BufReader::new(connect(addr)?),
        })
    }

    /// One request on this connection; any failure to get a whole response is an
    /// error. After a response that does not [keep it alive](Response::keeps_alive),
    /// open a new one.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        self.stream
            .get_mut()
            .write_all(&encode(self.addr, method, path, headers, body, false))?;
        read_response(&mut self.stream)
    }

    /// How long a read may wait (default 30 s), for a request that takes longer.
    pub fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.stream.get_ref().set_read_timeout(Some(timeout))
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        self.request("GET", path, &[], b"")
    }
}

/// Send `bytes` as they are and read until the server closes or `timeout` passes
/// without data.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// The status code at the start of a raw response, if any.
pub fn status_of(raw: &[u8]) -> Option<u16> {
    std::str::from_utf8(raw.get(9..12)?).ok()?.parse().ok()
}
