//! Header work on the request path: framing checks, `X-Forwarded-*`,
//! `X-Request-Id`, hop-by-hop response headers, and hash keys.

use std::cell::Cell;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::config::HashKey;

pub(crate) const X_REQUEST_ID: &str = "x-request-id";

/// Why a request's framing is unsafe to forward, if it is. Pingora drops
/// `Content-Length` when `Transfer-Encoding` is also present, so the raw head is
/// checked for that case (only chunked requests pay for it).
pub(crate) fn framing_error(
    req: &RequestHeader,
    raw_head: impl FnOnce() -> Bytes,
) -> Option<&'static str> {
    let mut cl = req.headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = cl.next() {
        if cl.next().is_some() || first.as_bytes().contains(&b',') {
            return Some("duplicate Content-Length");
        }
    }
    if req.headers.contains_key(header::TRANSFER_ENCODING) && has_content_length(&raw_head()) {
        return Some("both Content-Length and Transfer-Encoding");
    }
    None
}

/// Why a request target is not one a worker should get, if it is not: anything
/// but origin-form (`/path`), absolute-form (`http://…`), `*` for OPTIONS and
/// authority-form for CONNECT. Pingora percent-escapes a request line with stray
/// spaces into a target such as `%20/x%20`; this refuses it.
pub(crate) fn target_error(req: &RequestHeader) -> Option<&'static str> {
    let target = req.raw_path();
    let ok = target.first() == Some(&b'/')
        || (target == b"*" && req.method == http::Method::OPTIONS)
        || req.method == http::Method::CONNECT
        || target.starts_with(b"http://")
        || target.starts_with(b"https://");
    (!ok).then_some("request target is not origin-form or absolute-form")
}

fn has_content_length(head: &[u8]) -> bool {
    head.split(|b| *b == b'\n')
        .skip(1)
        .any(|line| line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

/// `X-Forwarded-For` (appended), `-Proto` and `-Host` for the upstream request.
/// `plain_xff` gives the value for a request that has no `X-Forwarded-For` (the
/// connection caches it).
pub(crate) fn set_forwarded(
    upstream: &mut RequestHeader,
    client_ip: Option<IpAddr>,
    host: Option<HeaderValue>,
    plain_xff: impl FnOnce(IpAddr) -> HeaderValue,
) -> pingora::Result<()> {
    if let Some(ip) = client_ip {
        let prev = upstream
            .headers
            .get("x-forwarded-for")
            .map(HeaderValue::as_bytes)
            .filter(|p| !p.iter().all(u8::is_ascii_whitespace));
        match prev {
            None => upstream.insert_header("x-forwarded-for", plain_xff(ip))?,
            Some(p) => {
                let mut xff = String::with_capacity(p.len() + 41);
                xff.push_str(&String::from_utf8_lossy(p));
                xff.push_str(", ");
                xff.push_str(&ip.to_string());
                upstream.insert_header("x-forwarded-for", xff)?;
            }
        }
    }
    upstream.insert_header("x-forwarded-proto", HeaderValue::from_static("http"))?;
    match host {
        Some(h) => upstream.insert_header("x-forwarded-host", h)?,
        None => {
            upstream.remove_header("x-forwarded-host");
        }
    }
    Ok(())
}

thread_local! {
    static ID: Cell<(u64, u64)> = Cell::new((rand::random::<u64>(), 0));
}

/// The `X-Forwarded-For` value of a request from `ip` that carried none.
pub(crate) fn ip_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A fresh request id: 16 hex digits of a per-thread random prefix plus a counter
/// (unique within a run, cheap, not a secret).
pub(crate) fn new_request_id() -> HeaderValue {
    let v = ID.with(|c| {
        let (seed, n) = c.get();
        c.set((seed, n + 1));
        super::selection::mix(seed ^ n)
    });
    let mut out = [0u8; 16];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Remove hop-by-hop headers from a worker's response (Pingora manages
/// `Connection` and framing for the client itself).
pub(crate) fn strip_hop_by_hop(resp: &mut ResponseHeader) {
    if let Some(conn) = resp.headers.get(header::CONNECTION) {
        let nominated: Vec<String> = conn
            .to_str()
            .unwrap_or_default()
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive" && t != "upgrade")
            .collect();
        for name in nominated {
            resp.remove_header(name.as_str());
        }
    }
    for name in ["keep-alive", "proxy-connection", "te"] {
        if resp.headers.contains_key(name) {
            resp.remove_header(name);
        }
    }
}

/// The 64-bit hash key of a request, or `None` when it lacks the attribute.
pub(crate) fn hash_key(
    req: &RequestHeader,
    key: &HashKey,
    client_ip: Option<IpAddr>,
) -> Option<u64> {
    match key {
        HashKey::Header(name) => req.headers.get(name.as_str()).map(|v| fnv1a(v.as_bytes())),
        HashKey::Cookie(name) => req
            .headers
            .get_all(header::COOKIE)
            .iter()
            .find_map(|v| cookie(v.as_bytes(), name.as_bytes()))
            .map(fnv1a),
        HashKey::ClientIp => client_ip.map(|ip| match ip {
            IpAddr::V4(a) => fnv1a(&a.octets()),
            IpAddr::V6(a) => fnv1a(&a.octets()),
        }),
    }
}

pub(crate) fn cookie<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|b| *b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        (pair[..eq].trim_ascii() == name).then(|| pair[eq + 1..].trim_ascii())
    })
}

/// FNV-1a: a small, fixed (seedless) hash, so a key maps to the same worker in
/// every run of forkyard.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn framing() {
        let raw = || {
            Bytes::from_static(
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
        };
        assert_eq!(framing_error(&req(&[("content-length", "3")]), raw), None);
        assert!(framing_error(
            &req(&[("content-length", "3"), ("content-length", "3")]),
            raw
        )
        .is_some());
        assert!(framing_error(&req(&[("content-length", "3, 3")]), raw).is_some());
        assert!(framing_error(&req(&[("transfer-encoding", "chunked")]), raw).is_some());
        let chunked_only =
            || Bytes::from_static(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(
            framing_error(&req(&[("transfer-encoding", "chunked")]), chunked_only),
            None
        );
    }

    #[test]
    fn targets() {
        let t = |m: &str, target: &[u8]| {
            target_error(&RequestHeader::build(m, target, None).unwrap()).is_none()
        };
        assert!(t("GET", b"/a?b=c"));
        assert!(t("GET", b"http://example.com/a"));
        assert!(t("OPTIONS", b"*"));
        assert!(!t("GET", b"*"));
        assert!(!t("GET", b"%20/a%20"));
        assert!(!t("GET", b"a/b"));
    }

    #[test]
    fn hash_keys() {
        let r = req(&[("x-user", "alice"), ("cookie", "a=1; sid=xyz; b=2")]);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let h = |k: HashKey| hash_key(&r, &k, Some(ip));
        assert_eq!(h(HashKey::Header("x-user".into())), Some(fnv1a(b"alice")));
        assert_eq!(h(HashKey::Cookie("sid".into())), Some(fnv1a(b"xyz")));
        assert_eq!(h(HashKey::Cookie("nope".into())), None);
        assert_eq!(h(HashKey::Header("x-none".into())), None);
        assert_eq!(h(HashKey::ClientIp), Some(fnv1a(&[10, 1, 2, 3])));
    }

    #[test]
    fn request_ids_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn strips_response_hop_by_hop() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.append_header("connection", "close, x-secret").unwrap();
        r.append_header("x-secret", "1").unwrap();
        r.append_header("keep-alive", "timeout=5").unwrap();
        r.append_header("x-kept", "1").unwrap();
        strip_hop_by_hop(&mut r);
        assert!(r.headers.get("x-secret").is_none());
        assert!(r.headers.get("keep-alive").is_none());
        assert!(r.headers.get("x-kept").is_some());
    }
}
