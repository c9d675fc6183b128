//! One request on the lean path, from its parsed head to the end of its response.
//!
//! 1. Route it; answer 404 or 503 here when there is no pool or no ready worker.
//! 2. Read its whole body (at most the pool's `buffer.request`, else the request
//!    goes to Pingora and streams), so a slow uploader holds no worker.
//! 3. Pick a worker (the pool's algorithm, never one already tried), take a pooled
//!    connection or open one, send the request, read the response head.
//! 4. A response with a `Content-Length` within the pool's `buffer.response` (or
//!    no body) is read whole before anything goes to the client: if the worker
//!    dies first, an idempotent request is sent to another worker, exactly as if
//!    it had died before answering. Larger, chunked and close-delimited responses
//!    stream.
//!
//! The retry rules are the Pingora path's (see `proxy/mod.rs`): a request counted
//! as hung (`hang:`) is answered 504 and never retried; a connect failure
//! is retried for any method; a worker that closed or reset the connection before
//! a whole (buffered) answer reached forkyard, for idempotent methods; a
//! `retry_on` status or response-head timeout, for idempotent methods while
//! another worker is ready. At most `retries` extra attempts.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use super::access_log;
use super::request::Head;
use super::response::{ChunkScanner, Framing, Response};
use super::upconn::{self, UpConn};
use super::upstreams::{Lease, Refusal};
use super::{headers, Shared};
use crate::config::{LbPolicy, UpstreamPolicy};

/// What the connection does after this request.
pub(crate) enum Next {
    Continue,
    Close,
    /// Pingora takes this request (and the connection): its body is larger than
    /// the pool buffers.
    Fallback(Head),
}

/// How an attempt on one worker failed.
enum Failure {
    /// Nothing reached the worker (connect failed or timed out).
    Connect { timed_out: bool },
    /// The worker closed or reset the connection before a whole answer arrived.
    Died,
    /// The response head did not arrive within `timeouts.response_header`.
    HeadTimeout,
    /// The worker answered something that is not a valid HTTP/1.1 response.
    Invalid,
}

/// A response on its way: the worker's connection, the bytes read so far (head
/// first) and the parsed head.
struct Got {
    conn: UpConn,
    buf: BytesMut,
    resp: Response,
}

/// The status and size of what the client got, for metrics and the access log.
struct Sent {
    status: u16,
    bytes: usize,
    /// The whole response reached the client.
    complete: bool,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Serve `head` (whose body starts in `rest`, which keeps any pipelined bytes
/// after it) on `client`.
pub(crate) async fn run(
    shared: &Shared,
    client: &mut TcpStream,
    addr: SocketAddr,
    head: Head,
    rest: &mut BytesMut,
    closing: bool,
) -> Next {
    let started = Instant::now();
    let start_us = now_us();
    let _inflight = shared.inflight.enter();
    let settings = **shared.settings.load();
    let io = settings.client.io_timeout;
    #[cfg(feature = "fault-injection")]
    if head.fault_injected() {
        panic!(
            "fault injection: the request carried {}: 1",
            crate::fault::PANIC_HEADER
        );
    }
    let close = closing || head.close;

    let Some(up) = shared
        .router
        .load()
        .route(head.host(), head.path())
        .and_then(|i| shared.pools.get(i).cloned())
    else {
        shared.unrouted.inc();
        let body_ok = !head.chunked && skip_body(client, rest, head.content_length, io).await;
        let _ = answer(
            client,
            404,
            "forkyard: no route matches this request\n",
            b"",
            close || !body_ok,
            io,
        )
        .await;
        return if close || !body_ok {
            Next::Close
        } else {
            Next::Continue
        };
    };
    let table = up.table();
    let pool = table.settings.clone();
    drop(table);
    let length = head.content_length.unwrap_or(0);
    if length > pool.upstream.buffer.request {
        return Next::Fallback(head);
    }
    // The whole body, before a worker is chosen.
    let body = if head.chunked {
        match read_chunked(client, rest, pool.upstream.buffer.request, io).await {
            Chunked::Whole(b) => b,
            Chunked::TooBig => return Next::Fallback(head),
            Chunked::Gone => return Next::Close,
            Chunked::Malformed => {
                // Like every 400 for a malformed request: no body.
                let _ = answer(client, 400, "", b"", true, io).await;
                up.requests.record(400, started.elapsed().as_secs_f64());
                return Next::Close;
            }
        }
    } else {
        match read_body(client, rest, length, io).await {
            Some(b) => b,
            None => return Next::Close,
        }
    };
    if body.len() as u64 > settings.client.max_body {
        let text = "forkyard: request body larger than max_body\n";
        let _ = answer(client, 413, text, b"", true, io).await;
        up.requests.record(413, started.elapsed().as_secs_f64());
        return Next::Close;
    }

    let key = match &pool.upstream.lb {
        LbPolicy::Hash(k) => head.hash_key(&k.clone(), addr.ip()),
        _ => None,
    };
    let generated;
    let request_id: &[u8] = match head.request_id() {
        Some(id) => id,
        None => {
            generated = headers::new_request_id();
            generated.as_bytes()
        }
    };
    let mut request = BytesMut::new();
    head.upstream(&mut request, addr.ip(), request_id, start_us, body.len());
    request.extend_from_slice(&body);
    let request = request.freeze();

    let mut tried: Vec<u64> = Vec::new();
    let mut attempts: u32 = 0;
    let mut last_worker = None;
    let outcome: Result<(Lease, Got), Refused> = loop {
        let table = up.table();
        let policy = table.upstream().clone();
        let others = table.entries.len();
        drop(table);
        let mut lease = match up.admit(&tried, key).await {
            Ok(lease) => lease,
            Err(refusal) => {
                break Err(Refused {
                    status: refusal.status(),
                    text: match refusal {
                        Refusal::NoWorker => "forkyard: no ready worker in this pool\n",
                        Refusal::NoOther => "",
                        Refusal::QueueFull => {
                            "forkyard: every worker is busy and the queue is full\n"
                        }
                        Refusal::QueueTimeout => {
                            "forkyard: no worker had room within queue.timeout\n"
                        }
                    },
                    retry_after: refusal.retry_after(),
                })
            }
        };
        if attempts > 0 {
            up.requests.retries.inc();
        }
        attempts += 1;
        last_worker = Some(lease.entry().member.slot.index());
        let may_retry =
            |tried: usize| attempts <= policy.retries && head.idempotent() && others > tried + 1;
        if pool.hang.is_some() {
            lease.watch(
                std::str::from_utf8(head.method()).unwrap_or("-"),
                head.path(),
                std::str::from_utf8(request_id).unwrap_or("-"),
            );
        }
        match attempt(&lease, &request, &policy, head.is_head()).await {
            Ok(got) => {
                lease.answered();
                let status = got.resp.status;
                up.record(lease.entry(), status >= 500);
                if policy.retry_on.status(status) && may_retry(tried.len()) {
                    tried.push(lease.entry().member.id);
                    continue;
                }
                // Read a small body whole before anything goes to the client.
                match buffer_body(got, pool.upstream.buffer.response, &policy).await {
                    Ok(got) => break Ok((lease, got)),
                    Err(failure) => {
                        up.record(lease.entry(), true);
                        if head.idempotent() && attempts <= policy.retries {
                            tried.push(lease.entry().member.id);
                            continue;
                        }
                        break Err(failure_status(&failure));
                    }
                }
            }
            Err(failure) => {
                up.record(lease.entry(), true);
                if lease.hung() {
                    // Counted as hung (and its worker killed, with `hang.kill`):
                    // never sent again, where it could hang another worker.
                    break Err(Refused {
                        status: 504,
                        text: HUNG,
                        retry_after: false,
                    });
                }
                let retry = match failure {
                    Failure::Connect { .. } => {
                        up.requests.connect_errors.inc();
                        attempts <= policy.retries
                    }
                    Failure::Died => head.idempotent() && attempts <= policy.retries,
                    Failure::HeadTimeout => policy.retry_on.timeout && may_retry(tried.len()),
                    Failure::Invalid => false,
                };
                if retry {
                    tried.push(lease.entry().member.id);
                    continue;
                }
                break Err(failure_status(&failure));
            }
        }
    };

    let (sent, keep) = match outcome {
        Err(Refused {
            status,
            text,
            retry_after,
        }) => {
            let extra: &[u8] = if retry_after {
                b"retry-after: 1\r\n"
            } else {
                b""
            };
            let ok = answer(client, status, text, extra, close, io).await;
            (
                Sent {
                    status: if ok { status } else { 0 },
                    bytes: text.len(),
                    complete: ok,
                },
                ok && !close,
            )
        }
        Ok((lease, got)) => {
            let (sent, keep) = deliver(client, got, &lease, &pool.upstream, close, io).await;
            if sent.complete {
                lease.entry().member.served();
            }
            (sent, keep)
        }
    };
    let elapsed = started.elapsed();
    up.requests.record(sent.status, elapsed.as_secs_f64());
    if let Some(log) = &*shared.access_log.load() {
        log.log(&access_log::Entry {
            client: Some(addr.ip()),
            method: std::str::from_utf8(head.method()).unwrap_or("-"),
            target: std::str::from_utf8(head.target()).unwrap_or("/"),
            version: http::Version::HTTP_11,
            status: sent.status,
            bytes: sent.bytes,
            duration_us: elapsed.as_micros() as u64,
            pool: &up.name,
            worker: last_worker,
            attempts,
            request_id: std::str::from_utf8(request_id).unwrap_or("-"),
        });
    }
    if keep {
        Next::Continue
    } else {
        Next::Close
    }
}

/// The answer to a request that hung on its worker (`hang:`).
pub(crate) const HUNG: &str = "forkyard: the worker hung on this request\n";

/// forkyard's own answer instead of a worker's.
struct Refused {
    status: u16,
    text: &'static str,
    /// Add `Retry-After` (the queue was full or timed out).
    retry_after: bool,
}

fn failure_status(f: &Failure) -> Refused {
    let status = match f {
        Failure::Connect { timed_out: true } | Failure::HeadTimeout => 504,
        _ => 502,
    };
    Refused {
        status,
        text: "",
        retry_after: false,
    }
}

/// One attempt on the leased worker: send `request`, read the response head.
async fn attempt(
    lease: &Lease,
    request: &Bytes,
    policy: &UpstreamPolicy,
    head_request: bool,
) -> Result<Got, Failure> {
    let member = &lease.entry().member;
    let pooled = upconn::take(member.id);
    let mut conn = match pooled {
        Some(c) => c,
        None => UpConn::connect(&member.endpoint, policy.connect_timeout)
            .await
            .map_err(|e| Failure::Connect {
                timed_out: e.kind() == std::io::ErrorKind::TimedOut,
            })?,
    };
    let io = policy.response_header_timeout;
    match timeout(io, conn.write_all(request)).await {
        Ok(Ok(())) => {}
        _ => return Err(Failure::Died),
    }
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        // A head that came in part: the rest may wait for our ACK (see `upconn`).
        if !buf.is_empty() {
            conn.quickack();
        }
        match timeout(io, conn.read_buf(&mut buf)).await {
            Err(_) => return Err(Failure::HeadTimeout),
            Ok(Err(_)) | Ok(Ok(0)) => return Err(Failure::Died),
            Ok(Ok(_)) => {}
        }
        loop {
            match Response::parse(&buf, head_request) {
                Err(()) => return Err(Failure::Invalid),
                Ok(None) => break,
                // Interim answers (103 Early Hints, a stray 100) are not forwarded.
                Ok(Some(r)) if r.status < 200 => {
                    buf.advance(r.len);
                }
                Ok(Some(resp)) => return Ok(Got { conn, buf, resp }),
            }
            if buf.is_empty() {
                break;
            }
        }
        if buf.len() > 64 * 1024 {
            return Err(Failure::Invalid);
        }
        if buf.capacity() - buf.len() < 2048 {
            buf.reserve(8192);
        }
    }
}

/// Read the rest of a body of at most `limit` bytes into the buffer.
async fn buffer_body(mut got: Got, limit: u64, policy: &UpstreamPolicy) -> Result<Got, Failure> {
    let Framing::Length(n) = got.resp.framing else {
        return Ok(got);
    };
    if n > limit {
        return Ok(got);
    }
    let want = got.resp.len + n as usize;
    got.buf.reserve(want.saturating_sub(got.buf.len()));
    while got.buf.len() < want {
        got.conn.quickack();
        match timeout(
            policy.response_header_timeout,
            got.conn.read_buf(&mut got.buf),
        )
        .await
        {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(Failure::Died),
        }
    }
    Ok(got)
}

/// Send the response to the client; the worker's connection goes back to the pool
/// when the response ended cleanly. Returns what was sent and whether the client
/// connection stays open.
async fn deliver(
    client: &mut TcpStream,
    got: Got,
    lease: &Lease,
    policy: &UpstreamPolicy,
    close: bool,
    io: Duration,
) -> (Sent, bool) {
    let Got {
        mut conn,
        mut buf,
        mut resp,
    } = got;
    let member = lease.entry().member.id;
    let status = resp.status;
    let close = close || resp.framing == Framing::Close;
    let mut out = std::mem::take(&mut resp.client_head);
    if close {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
    let head_len = out.len();
    buf.advance(resp.len);
    let fail = |bytes| {
        (
            Sent {
                status,
                bytes,
                complete: false,
            },
            false,
        )
    };
    let put_back = |conn: UpConn| {
        if resp.keep_alive {
            upconn::put(member, conn, policy.idle_timeout, policy.keepalive);
        }
    };
    match resp.framing {
        Framing::Empty => {
            if write(client, &out, io).await.is_err() {
                return fail(0);
            }
            if buf.is_empty() {
                put_back(conn);
            }
        }
        Framing::Length(n) if buf.len() as u64 >= n => {
            // Buffered whole: one write.
            out.extend_from_slice(&buf[..n as usize]);
            if write(client, &out, io).await.is_err() {
                return fail(0);
            }
            if buf.len() as u64 == n {
                put_back(conn);
            }
            return (
                Sent {
                    status,
                    bytes: out.len() - head_len,
                    complete: true,
                },
                !close,
            );
        }
        Framing::Length(n) => {
            // Streams: what is here, then the rest as it comes.
            out.extend_from_slice(&buf);
            let mut left = n - buf.len() as u64;
            let mut sent = buf.len();
            if write(client, &out, io).await.is_err() {
                return fail(0);
            }
            let mut chunk = BytesMut::with_capacity(16 * 1024);
            while left > 0 {
                chunk.clear();
                match timeout(policy.response_header_timeout, conn.read_buf(&mut chunk)).await {
                    Ok(Ok(k)) if k > 0 => {
                        let k = (k as u64).min(left) as usize;
                        if write(client, &chunk[..k], io).await.is_err() {
                            return fail(sent);
                        }
                        left -= k as u64;
                        sent += k;
                    }
                    _ => return fail(sent),
                }
            }
            put_back(conn);
            return (
                Sent {
                    status,
                    bytes: sent,
                    complete: true,
                },
                !close,
            );
        }
        Framing::Chunked => {
            let mut scanner = ChunkScanner::default();
            let mut sent = 0;
            let mut pending = buf;
            let mut first = Some(out);
            loop {
                let end = match scanner.feed(&pending) {
                    Ok(e) => e,
                    Err(()) => return fail(sent),
                };
                let take = end.unwrap_or(pending.len());
                let piece = &pending[..take];
                let res = match first.take() {
                    Some(mut head) => {
                        head.extend_from_slice(piece);
                        write(client, &head, io).await
                    }
                    None if !piece.is_empty() => write(client, piece, io).await,
                    None => Ok(()),
                };
                if res.is_err() {
                    return fail(sent);
                }
                sent += take;
                if let Some(end) = end {
                    if end == pending.len() {
                        put_back(conn);
                    }
                    break;
                }
                pending.clear();
                match timeout(policy.response_header_timeout, conn.read_buf(&mut pending)).await {
                    Ok(Ok(k)) if k > 0 => {}
                    _ => return fail(sent),
                }
            }
            return (
                Sent {
                    status,
                    bytes: sent,
                    complete: true,
                },
                !close,
            );
        }
        Framing::Close => {
            out.extend_from_slice(&buf);
            let mut sent = buf.len();
            if write(client, &out, io).await.is_err() {
                return fail(0);
            }
            let mut chunk = BytesMut::with_capacity(16 * 1024);
            loop {
                chunk.clear();
                match timeout(policy.response_header_timeout, conn.read_buf(&mut chunk)).await {
                    Ok(Ok(0)) => break,
                    Ok(Ok(k)) => {
                        if write(client, &chunk[..k], io).await.is_err() {
                            return fail(sent);
                        }
                        sent += k;
                    }
                    _ => return fail(sent),
                }
            }
            return (
                Sent {
                    status,
                    bytes: sent,
                    complete: true,
                },
                false,
            );
        }
    }
    (
        Sent {
            status,
            bytes: 0,
            complete: true,
        },
        !close,
    )
}

/// Write all of `data` to the client within `io`.
async fn write(client: &mut TcpStream, data: &[u8], io: Duration) -> Result<(), ()> {
    match timeout(io, client.write_all(data)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The request body: `length` bytes, starting with what is already in `rest`.
async fn read_body(
    client: &mut TcpStream,
    rest: &mut BytesMut,
    length: u64,
    io: Duration,
) -> Option<Bytes> {
    let length = length as usize;
    while rest.len() < length {
        rest.reserve(length - rest.len());
        match timeout(io, client.read_buf(rest)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
    Some(rest.split_to(length).freeze())
}

/// How reading a chunked request body ended.
enum Chunked {
    /// The whole body, decoded.
    Whole(Bytes),
    /// Longer than the limit: `rest` still holds every byte read, for Pingora.
    TooBig,
    /// The client went away or stalled.
    Gone,
    /// Not valid chunked framing: the request ends here with 400, before any
    /// worker sees it.
    Malformed,
}

/// Read a chunked body of at most `limit` decoded bytes; on success it is taken
/// out of `rest` (pipelined bytes after it stay).
async fn read_chunked(
    client: &mut TcpStream,
    rest: &mut BytesMut,
    limit: u64,
    io: Duration,
) -> Chunked {
    if limit == 0 {
        return Chunked::TooBig;
    }
    let mut scanner = ChunkScanner::default();
    let mut scanned = 0;
    loop {
        match scanner.feed(&rest[scanned..]) {
            Err(()) => return Chunked::Malformed,
            Ok(Some(end)) => {
                let raw = rest.split_to(scanned + end);
                return Chunked::Whole(dechunk(&raw));
            }
            Ok(None) => scanned = rest.len(),
        }
        // Sizes, extensions and CRLFs come on top of the data: allow a little.
        if rest.len() as u64 > limit + 64 * 1024 {
            return Chunked::TooBig;
        }
        rest.reserve(16 * 1024);
        match timeout(io, client.read_buf(rest)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Chunked::Gone,
        }
    }
}

/// The data of a well-formed chunked body (checked by `ChunkScanner`).
fn dechunk(mut raw: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(raw.len());
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = raw[..line_end]
            .split(|b| *b == b';' || *b == b' ' || *b == b'\t')
            .next()
            .unwrap_or_default();
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .unwrap_or(0);
        raw = &raw[line_end + 2..];
        if size == 0 || raw.len() < size {
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[(size + 2).min(raw.len())..];
    }
    out.freeze()
}

/// Read and drop a body nobody will get; `false` if the connection cannot go on.
async fn skip_body(
    client: &mut TcpStream,
    rest: &mut BytesMut,
    length: Option<u64>,
    io: Duration,
) -> bool {
    match length {
        None | Some(0) => true,
        Some(n) if n > 1 << 20 => false,
        Some(n) => read_body(client, rest, n, io).await.is_some(),
    }
}

/// forkyard's own answer with a short text body (or none).
async fn answer(
    client: &mut TcpStream,
    status: u16,
    text: &str,
    extra: &[u8],
    close: bool,
    io: Duration,
) -> bool {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = BytesMut::with_capacity(160 + text.len());
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(itoa::Buffer::new().format(status).as_bytes());
    out.put_u8(b' ');
    out.put_slice(reason.as_bytes());
    out.put_slice(b"\r\nserver: forkyard\r\ncache-control: private, no-store\r\n");
    if !text.is_empty() {
        out.put_slice(b"content-type: text/plain; charset=utf-8\r\n");
    }
    out.put_slice(extra);
    out.put_slice(b"content-length: ");
    out.put_slice(itoa::Buffer::new().format(text.len()).as_bytes());
    out.put_slice(b"\r\n");
    if close {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(text.as_bytes());
    write(client, &out, io).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunk_takes_the_data_and_leaves_sizes_extensions_and_trailers() {
        let raw = b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nT: v\r\n\r\n";
        assert_eq!(&dechunk(raw)[..], b"hello world");
        assert_eq!(&dechunk(b"0\r\n\r\n")[..], b"");
    }
}
