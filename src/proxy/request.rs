//! A request head on the lean path: parsed once with `httparse` into offsets into
//! its own bytes, with the facts forwarding needs, and the request as it goes to a
//! worker (hop-by-hop headers removed, `X-Forwarded-*`, `X-Request-Id` and
//! `X-Request-Start` added).

use std::net::IpAddr;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::headers::{fnv1a, X_REQUEST_ID};
use super::ProxySettings;
use crate::config::HashKey;

/// Most headers a lean-path request may have; more go to Pingora.
const MAX_HEADERS: usize = 64;

/// Where each part of a head is, as offsets into its bytes.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    /// The head's length, up to and including the blank line.
    pub(crate) len: usize,
    method: Range<usize>,
    target: Range<usize>,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    version: u8,
    headers: Vec<(Range<usize>, Range<usize>)>,
}

fn range(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

impl Parsed {
    /// `Ok(None)` while the head is incomplete; `Err` for anything `httparse`
    /// refuses (or too many headers): such a request is Pingora's to answer.
    pub(crate) fn parse(buf: &[u8]) -> Result<Option<Parsed>, ()> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version)
                else {
                    return Err(());
                };
                Ok(Some(Parsed {
                    len,
                    method: range(buf, method.as_bytes()),
                    target: range(buf, path.as_bytes()),
                    version,
                    headers: req
                        .headers
                        .iter()
                        .map(|h| (range(buf, h.name.as_bytes()), range(buf, h.value)))
                        .collect(),
                }))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(_) => Err(()),
        }
    }
}

/// A whole request head and what forwarding needs to know about it.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) raw: Bytes,
    parsed: Parsed,
    /// `Content-Length`, when there is exactly one valid one.
    pub(crate) content_length: Option<u64>,
    /// The client asked to close after this request (`Connection: close`).
    pub(crate) close: bool,
    /// `Transfer-Encoding: chunked`: the body is read whole and forwarded with a
    /// `Content-Length`.
    pub(crate) chunked: bool,
    /// Something only Pingora handles: `Upgrade`, `Expect`, `Transfer-Encoding`,
    /// a repeated or invalid `Content-Length`, a `Connection` option other than
    /// `close`/`keep-alive`.
    unusual: bool,
    host: Option<Range<usize>>,
    request_id: Option<Range<usize>>,
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Headers a proxy must not forward (RFC 9110 7.6.1), and the ones forkyard sets
/// itself.
fn dropped(name: &[u8]) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-start",
    ]
    .iter()
    .any(|d| eq(name, d))
}

impl Head {
    pub(crate) fn new(raw: Bytes, parsed: Parsed) -> Head {
        let mut head = Head {
            raw,
            parsed,
            content_length: None,
            close: false,
            chunked: false,
            unusual: false,
            host: None,
            request_id: None,
        };
        let mut lengths = 0;
        for (n, v) in &head.parsed.headers {
            let (name, value) = (&head.raw[n.clone()], &head.raw[v.clone()]);
            if eq(name, "content-length") {
                lengths += 1;
                head.content_length = std::str::from_utf8(value)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse().ok());
                if head.content_length.is_none() {
                    head.unusual = true;
                }
            } else if eq(name, "transfer-encoding") {
                // Plain `chunked` is read whole (up to `buffer.request`) and sent on
                // with a length; any other coding is Pingora's.
                if head.chunked || !eq(value.trim_ascii(), "chunked") {
                    head.unusual = true;
                }
                head.chunked = true;
            } else if eq(name, "upgrade") || eq(name, "expect") {
                head.unusual = true;
            } else if eq(name, "connection") {
                for token in value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if eq(token, "close") {
                        head.close = true;
                    } else if !token.is_empty() && !eq(token, "keep-alive") {
                        head.unusual = true;
                    }
                }
            } else if eq(name, "host") {
                if head.host.is_some() {
                    head.unusual = true;
                }
                head.host = Some(v.clone());
            } else if eq(name, X_REQUEST_ID) {
                head.request_id = Some(v.clone());
            }
        }
        if lengths > 1 || (lengths > 0 && head.chunked) {
            head.unusual = true;
        }
        head
    }

    pub(crate) fn method(&self) -> &[u8] {
        &self.raw[self.parsed.method.clone()]
    }

    pub(crate) fn target(&self) -> &[u8] {
        &self.raw[self.parsed.target.clone()]
    }

    /// The path part of the target (before `?`).
    pub(crate) fn path(&self) -> &str {
        let t = self.target();
        let end = t.iter().position(|b| *b == b'?').unwrap_or(t.len());
        std::str::from_utf8(&t[..end]).unwrap_or("/")
    }

    pub(crate) fn host(&self) -> Option<&str> {
        self.host
            .clone()
            .and_then(|r| std::str::from_utf8(&self.raw[r]).ok())
    }

    pub(crate) fn request_id(&self) -> Option<&[u8]> {
        self.request_id.clone().map(|r| &self.raw[r])
    }

    /// `GET`, `HEAD`, `PUT`, `DELETE` and `OPTIONS` (RFC 9110 9.2.2).
    pub(crate) fn idempotent(&self) -> bool {
        matches!(
            self.method(),
            b"GET" | b"HEAD" | b"PUT" | b"DELETE" | b"OPTIONS"
        )
    }

    /// The test suite's `X-Forkyard-Test-Panic: 1` (see `fault`).
    #[cfg(feature = "fault-injection")]
    pub(crate) fn fault_injected(&self) -> bool {
        self.parsed.headers.iter().any(|(n, v)| {
            eq(&self.raw[n.clone()], crate::fault::PANIC_HEADER) && &self.raw[v.clone()] == b"1"
        })
    }

    pub(crate) fn is_head(&self) -> bool {
        self.method() == b"HEAD"
    }

    /// Whether the lean path takes this request under `settings` (the pool's
    /// `buffer.request` is checked once the request is routed).
    pub(crate) fn lean(&self, settings: &ProxySettings) -> bool {
        let method_ok = matches!(
            self.method(),
            b"GET" | b"HEAD" | b"POST" | b"PUT" | b"DELETE" | b"PATCH" | b"OPTIONS"
        );
        let body_ok = self
            .content_length
            .is_none_or(|n| n <= settings.client.max_body);
        self.parsed.version == 1
            && method_ok
            && !self.unusual
            && self.target().first() == Some(&b'/')
            && body_ok
    }

    /// The request's hash key for `key`.
    pub(crate) fn hash_key(&self, key: &HashKey, client: IpAddr) -> Option<u64> {
        match key {
            HashKey::Header(name) => self
                .parsed
                .headers
                .iter()
                .find(|(n, _)| eq(&self.raw[n.clone()], name))
                .map(|(_, v)| fnv1a(&self.raw[v.clone()])),
            HashKey::Cookie(name) => self
                .parsed
                .headers
                .iter()
                .filter(|(n, _)| eq(&self.raw[n.clone()], "cookie"))
                .find_map(|(_, v)| super::headers::cookie(&self.raw[v.clone()], name.as_bytes()))
                .map(fnv1a),
            HashKey::ClientIp => Some(match client {
                IpAddr::V4(a) => fnv1a(&a.octets()),
                IpAddr::V6(a) => fnv1a(&a.octets()),
            }),
        }
    }

    /// The head as it goes to a worker: the request line, the client's headers but
    /// hop-by-hop ones and the ones set here, then `X-Forwarded-For` (appended to the
    /// client's), `-Proto`, `-Host`, `X-Request-Id` (when the client sent none) and
    /// `X-Request-Start` (microseconds since the epoch).
    pub(crate) fn upstream(
        &self,
        out: &mut BytesMut,
        client: IpAddr,
        request_id: &[u8],
        start_us: u64,
        body_len: usize,
    ) {
        out.reserve(self.raw.len() + 160);
        out.put_slice(self.method());
        out.put_u8(b' ');
        out.put_slice(self.target());
        out.put_slice(b" HTTP/1.1\r\n");
        let mut xff: Option<&[u8]> = None;
        for (n, v) in &self.parsed.headers {
            let name = &self.raw[n.clone()];
            if dropped(name) || (self.chunked && eq(name, "transfer-encoding")) {
                if eq(name, "x-forwarded-for") {
                    let v = &self.raw[v.clone()];
                    if !v.iter().all(u8::is_ascii_whitespace) {
                        xff = Some(v);
                    }
                }
                continue;
            }
            out.put_slice(name);
            out.put_slice(b": ");
            out.put_slice(&self.raw[v.clone()]);
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"x-forwarded-for: ");
        if let Some(prev) = xff {
            out.put_slice(prev);
            out.put_slice(b", ");
        }
        put_ip(out, client);
        out.put_slice(b"\r\nx-forwarded-proto: http\r\n");
        if let Some(host) = &self.host {
            out.put_slice(b"x-forwarded-host: ");
            out.put_slice(&self.raw[host.clone()]);
            out.put_slice(b"\r\n");
        }
        if self.request_id.is_none() {
            out.put_slice(b"x-request-id: ");
            out.put_slice(request_id);
            out.put_slice(b"\r\n");
        }
        if self.chunked {
            out.put_slice(b"content-length: ");
            out.put_slice(itoa::Buffer::new().format(body_len).as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"x-request-start: t=");
        out.put_slice(itoa::Buffer::new().format(start_us).as_bytes());
        out.put_slice(b"\r\n\r\n");
    }
}

fn put_ip(out: &mut BytesMut, ip: IpAddr) {
    use std::io::Write;
    let mut w = out.writer();
    let _ = write!(w, "{ip}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn head(text: &str) -> Head {
        let p = Parsed::parse(text.as_bytes()).unwrap().unwrap();
        Head::new(Bytes::copy_from_slice(&text.as_bytes()[..p.len]), p)
    }

    fn settings() -> ProxySettings {
        ProxySettings {
            client: super::super::ClientLimits {
                io_timeout: Duration::from_secs(1),
                idle_secs: 1,
                max_header_size: 1024,
                max_body: 1 << 20,
            },
            head: super::super::HeadLimits {
                timeout: Duration::from_secs(1),
                max_size: 1024,
            },
        }
    }

    #[test]
    fn incomplete_heads_wait_and_bad_ones_go_to_pingora() {
        assert!(Parsed::parse(b"GET / HTTP/1.1\r\nHost: a")
            .unwrap()
            .is_none());
        assert!(Parsed::parse(b"GET /\0 HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn only_plain_requests_take_the_lean_path() {
        let s = settings();
        assert!(head("GET /x HTTP/1.1\r\nHost: a\r\n\r\n").lean(&s));
        assert!(head("POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n").lean(&s));
        for other in [
            "GET /x HTTP/1.0\r\n\r\n",
            "CONNECT a:1 HTTP/1.1\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n", // over max_body
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert!(!head(other).lean(&s), "{other:?}");
        }
        let chunked = head("POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(chunked.lean(&s) && chunked.chunked);
        let mut out = BytesMut::new();
        chunked.upstream(&mut out, "127.0.0.1".parse().unwrap(), b"i", 1, 5);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            text.contains("content-length: 5\r\n")
                && !text.to_ascii_lowercase().contains("transfer-encoding"),
            "{text}"
        );
        let close = head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(close.lean(&s) && close.close);
    }

    #[test]
    fn the_worker_gets_forwarding_headers_and_no_hop_by_hop_ones() {
        let h = head("GET /a?b HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Host: evil\r\nAccept: */*\r\n\r\n");
        let mut out = BytesMut::new();
        h.upstream(&mut out, "127.0.0.1".parse().unwrap(), b"abc", 42, 0);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert_eq!(
            text,
            "GET /a?b HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: example.com\r\nx-request-id: abc\r\nx-request-start: t=42\r\n\r\n"
        );
        let kept = head("GET / HTTP/1.1\r\nX-Request-Id: mine\r\n\r\n");
        let mut out = BytesMut::new();
        kept.upstream(&mut out, "::1".parse().unwrap(), b"abc", 1, 0);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            text.contains("X-Request-Id: mine\r\n") && !text.contains("abc"),
            "{text}"
        );
        assert!(text.contains("x-forwarded-for: ::1\r\n"), "{text}");
        assert_eq!(kept.path(), "/");
        assert_eq!(h.path(), "/a");
    }
}
