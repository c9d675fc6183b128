//! Bad HTTP through the proxy, sent with a raw TCP client: every malformed, oversized,
//! ambiguous or slow request gets its 4xx or a closed connection, none of it
//! reaches a worker, and forkyard and the workers keep serving afterwards with
//! bounded memory. (limits.rs covers the basic 408/413/431/400 answers.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use std::time::{Duration, Instant};

use crate::harness::*;

const PROXY: &str = "  client_header_timeout: \"2s\"\n  client_timeout: \"2s\"\n  max_header_size: \"8KiB\"\n  max_body: \"1MiB\"\n";

/// forkyard with one fixture worker that logs every request it reads.
fn start(proxy_extra: &str) -> (Forkyard, PathBuf) {
    let cfg = config_with(
        &[fixture_pool(
            "web",
            1,
            "    retries: 0\n    env: { FIXTURE_LOG_REQUESTS: \"{dir}/requests.log\" }\n",
        )],
        "",
    )
    .replacen("proxy:\n", &format!("proxy:\n{proxy_extra}"), 1);
    let fy = Forkyard::start(&cfg);
    fy.wait_ready();
    let log = fy.dir().join("requests.log");
    (fy, log)
}

/// What the worker was asked, without readiness probes.
fn worker_saw(log: &PathBuf) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.ends_with(" /ready"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What came back: a status code, or `None` for a connection closed (or reset)
/// without an answer. An error status must be forkyard's own answer, not the
/// worker's: see `forkyards_own`.
fn answer(fy: &Forkyard, req: &[u8]) -> Option<u16> {
    match raw_exchange(fy.proxy, req, Duration::from_secs(20)) {
        Ok(raw) if raw.is_empty() => None,
        Ok(raw) => {
            let text = String::from_utf8_lossy(&raw);
            let status =
                status_of(&raw).unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
            assert!(
                status < 400 || forkyards_own(&raw),
                "the worker answered this, not forkyard: {text:?}"
            );
            Some(status)
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("no answer and no close within 20s: {e}"),
    }
}

/// Whether an error answer is forkyard's own: an empty body and no `Server:
/// BaseHTTP`. A request forwarded to the fixture worker that Python's parser
/// refused comes back with Python's `Server` header and its HTML error page.
fn forkyards_own(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let head = head.to_ascii_lowercase();
    body.is_empty() && head.contains("content-length: 0") && !head.contains("basehttp")
}

/// The direct address of the pool's one worker.
fn worker_addr(fy: &Forkyard) -> std::net::SocketAddr {
    let port = fy.status()["pools"][0]["workers"][0]["port"]
        .as_u64()
        .unwrap();
    std::net::SocketAddr::from(([127, 0, 0, 1], port as u16))
}

/// forkyard and its worker still answer normally.
fn still_healthy(fy: &Forkyard) {
    let r = fy.get("/after").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(fy.admin_get("/healthz").unwrap().status, 200);
}

#[test]
fn bad_http_malformed_heads_get_400_431_or_a_close_and_never_reach_the_worker() {
    let (fy, log) = start(PROXY);
    let long_line = format!(
        "GET /bad-long-line{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let many_headers = format!(
        "GET /bad-many-headers HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..400)
            .map(|i| format!("X-{i}: {i}\r\n"))
            .collect::<String>()
    );
    let big_headers = format!(
        "GET /bad-big-headers HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..100)
            .map(|i| format!("X-Filler-{i}: {}\r\n", "v".repeat(100)))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        ("request line of 64 KiB", long_line.into_bytes(), Some(431)),
        ("400 small headers", many_headers.into_bytes(), Some(400)),
        ("headers of 10 KiB", big_headers.into_bytes(), Some(431)),
        (
            "garbage",
            b"HELLO WORLD /bad-garbage\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "binary garbage",
            b"\x16\x03\x01\x00\xff\x00\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "bad method",
            b"G@T /bad-method HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "bad version",
            b"GET /bad-version HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "not HTTP",
            b"GET /bad-proto HTTX/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "no spaces",
            b"GET/bad-nospace/HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "two spaces",
            b"GET  /bad-twospace  HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "space in the target",
            b"GET /bad-sp ace HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "target not origin-form",
            b"GET bad-relative HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "NUL in the target",
            b"GET /bad-nul\0x HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "tab in the target",
            b"GET /bad-tab\tx HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "NUL in a header",
            b"GET /bad-nulhdr HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "space before colon",
            b"GET /bad-colon HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "header without colon",
            b"GET /bad-nocolon HTTP/1.1\r\nHost: x\r\njunk\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "obs-fold continuation",
            b"GET /bad-fold HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "bare CR",
            b"GET /bad-cr HTTP/1.1\rHost: x\r\r".to_vec(),
            Some(400),
        ),
        ("HTTP/0.9 line", b"GET /bad-09\r\n\r\n".to_vec(), Some(400)),
    ];
    let mut wrong = Vec::new();
    for (what, req, expected) in &cases {
        let got = answer(&fy, req);
        if got != *expected {
            wrong.push(format!("{what}: got {got:?}, expected {expected:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Bare LF line endings are accepted (RFC 9112 section 2.2 allows it) and the
    // request is forwarded as a clean one.
    let raw = raw_exchange(
        fy.proxy,
        b"GET /ok-bare-lf HTTP/1.1\nHost: x\nConnection: close\n\n",
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(
        status_of(&raw),
        Some(200),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let saw = worker_saw(&log);
    assert!(
        !saw.contains("/bad") && !saw.contains("REJECTED"),
        "the worker got a bad request:\n{saw}"
    );
    assert!(saw.contains("GET /ok-bare-lf"), "{saw}");
    still_healthy(&fy);
    // The control: a bad request sent straight to the worker is refused by Python's
    // own parser, which logs it and answers with its own page. So a bad request
    // that forkyard forwarded would fail the checks above.
    let raw = raw_exchange(
        worker_addr(&fy),
        b"G@T /control-direct HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(status_of(&raw), Some(501));
    assert!(!forkyards_own(&raw), "{}", String::from_utf8_lossy(&raw));
    let saw = worker_saw(&log);
    assert!(
        saw.contains("REJECTED 501 'G@T /control-direct HTTP/1.1'"),
        "{saw}"
    );
}

#[test]
fn bad_http_smuggling_attempts_get_400_and_never_reach_the_worker() {
    let (fy, log) = start(PROXY);
    let cases: &[(&str, &[u8])] = &[
        ("CL.TE", b"POST /smuggle-clte HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled-1 HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("TE.CL", b"POST /smuggle-tecl HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGET /smuggled-2 HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n"),
        ("TE with odd case and CL", b"POST /smuggle-case HTTP/1.1\r\nHost: x\r\ncOnTeNt-LeNgTh: 4\r\ntRaNsFeR-eNcOdInG: chunked\r\n\r\n0\r\n\r\n"),
        ("TE list and CL", b"POST /smuggle-list HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ("TE xchunked and CL", b"POST /smuggle-xchunked HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\nabcd"),
        ("TE space before colon", b"POST /smuggle-tesp HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("TE tab value", b"POST /smuggle-tetab HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n"),
        ("two equal CL", b"POST /smuggle-cl2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        ("two differing CL", b"POST /smuggle-cl3 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 41\r\n\r\nhelloGET /smuggled-3 HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("CL list", b"POST /smuggle-cllist HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!"),
        ("CL with sign", b"POST /smuggle-clsign HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"),
        ("CL not a number", b"POST /smuggle-clnan HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nhello"),
        ("CL negative", b"POST /smuggle-clneg HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
    ];
    for (what, req) in cases {
        assert_eq!(answer(&fy, req), Some(400), "{what}");
    }
    let saw = worker_saw(&log);
    assert!(
        saw.is_empty(),
        "smuggling attempts reached the worker:\n{saw}"
    );
    still_healthy(&fy);
}

#[test]
fn bad_http_bad_chunked_bodies_get_400_or_a_close() {
    let (fy, log) = start(PROXY);
    let cases: &[(&str, &[u8])] = &[
        ("size not hex", b"POST /chunk-nothex HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        ("size overflows", b"POST /chunk-overflow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\nhello\r\n0\r\n\r\n"),
        ("data longer than size", b"POST /chunk-long HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"),
        ("no CRLF after data", b"POST /chunk-nocrlf HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"),
        ("negative size", b"POST /chunk-neg HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
    ];
    // A bad chunk ends the request with 400 (forkyard reads small bodies whole, and
    // hands a body it cannot read to Pingora, whose parser refuses it).
    for (what, req) in cases {
        assert_eq!(answer(&fy, req), Some(400), "{what}");
    }
    // A body that stops: closed after client_timeout (2s), well within 15s.
    let started = Instant::now();
    let got = answer(
        &fy,
        b"POST /chunk-early HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    );
    assert!(matches!(got, None | Some(408)), "{got:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // The body is read whole before a worker is chosen (`buffer.request`): a bad
    // body, or one that stops, never reaches one.
    let saw = worker_saw(&log);
    assert!(
        !saw.contains("/chunk-"),
        "a bad chunked body reached the worker:\n{saw}"
    );
    still_healthy(&fy);
}

/// Write `bytes` one at a time, `gap` apart, until the server answers or closes;
/// returns what it sent and when.
fn trickle(fy: &Forkyard, head: &[u8], bytes: &[u8], gap: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(fy.proxy).unwrap();
    s.set_read_timeout(Some(gap)).unwrap();
    s.write_all(head).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for b in bytes.iter().cycle() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still open after 30s"
        );
        if s.write_all(&[*b]).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    let _ = s.read_to_end(&mut got);
    (got, started.elapsed())
}

#[test]
fn bad_http_slowloris_and_slow_bodies_are_cut_off() {
    let (fy, log) = start(PROXY);
    // Headers trickled one byte per 200ms: each read is quick, but the whole head
    // is due 2s after the connection opened.
    let (raw, took) = trickle(
        &fy,
        b"GET /slowloris HTTP/1.1\r\n",
        b"X-Slow: aaaa\r\n",
        Duration::from_millis(200),
    );
    assert_eq!(
        status_of(&raw),
        Some(408),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    // A body trickled slower than client_timeout (2s) per read: closed.
    let (raw, took) = trickle(
        &fy,
        b"POST /slow-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
        b"x",
        Duration::from_secs(3),
    );
    assert!(
        matches!(status_of(&raw), None | Some(408)),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    // A declared 10 GiB body: 413 at once, nothing sent to the worker.
    let raw = raw_exchange(
        fy.proxy,
        b"POST /huge HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n\r\n",
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(
        status_of(&raw),
        Some(413),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    // A 4 MiB chunked body past max_body (1 MiB): 413 or a close, never a 200.
    let mut s = TcpStream::connect(fy.proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"POST /huge-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = [b"10000\r\n".as_slice(), &[b'z'; 0x10000], b"\r\n"].concat();
    for _ in 0..64 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert!(
        matches!(status_of(&raw), None | Some(413)),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let saw = worker_saw(&log);
    assert!(
        !saw.contains("/slowloris")
            && !saw.contains("POST /huge\n")
            && !saw.ends_with("POST /huge"),
        "{saw}"
    );
    still_healthy(&fy);
}

/// Open file descriptors of a process.
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn bad_http_thousands_of_idle_connections_leave_forkyard_healthy_and_small() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < 4096 && hard > soft {
        setrlimit(Resource::RLIMIT_NOFILE, hard.min(8192), hard).unwrap();
    }
    // forkyard inherits the limit; keep well under it on both sides.
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let n = 2000.min(soft.saturating_sub(300) as usize / 2);
    if n < 200 {
        return skip(&format!(
            "RLIMIT_NOFILE is {soft} (hard limit too); the idle-connection test needs 700"
        ));
    }
    // Idle connections must outlive the test's measurements.
    let (fy, _log) = start(&PROXY.replace("\"2s\"", "\"60s\""));
    let pid = fy.pid();
    assert_eq!(fy.get("/warm").unwrap().status, 200);
    let rss_before = rss_kib(pid);
    let fds_before = fd_count(pid);
    let round = |what: &str| -> u64 {
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = TcpStream::connect(fy.proxy).unwrap();
            // Half send nothing, half a partial head.
            if i % 2 == 1 {
                s.write_all(b"GET /idle HTTP/1.1\r\n").unwrap();
            }
            conns.push(s);
        }
        // (Less a few: fds_before counts transient ones, such as a pooled upstream
        // connection.)
        wait_for_or_log(
            &fy,
            SHORT,
            &format!("forkyard to accept every connection ({what})"),
            || (fd_count(pid) + 10 >= fds_before + n).then_some(()),
        );
        still_healthy(&fy);
        let rss = rss_kib(pid);
        drop(conns);
        wait_for_or_log(
            &fy,
            SHORT,
            &format!("the connections to be closed ({what})"),
            || (fd_count(pid) < fds_before + 50).then_some(()),
        );
        still_healthy(&fy);
        rss
    };
    let first = round("first round");
    let second = round("second round");
    // An idle connection holds no per-request buffer: a silent one costs its task
    // and socket, one with a partial head also the bytes read so far
    // (docs/reliability.md); 8 KiB each is the bound (it was 89 KiB when every
    // connection was a Pingora session).
    let per_conn = first.saturating_sub(rss_before) / n as u64;
    announce(&format!(
        "idle connections: RSS {rss_before} KiB, {first} KiB with {n} open: {per_conn} KiB each"
    ));
    assert!(
        per_conn <= 8,
        "RSS grew from {rss_before} KiB to {first} KiB with {n} idle connections"
    );
    // Memory of closed connections is reused, not leaked: a second round of the
    // same size adds at most a quarter of the first round's growth.
    assert!(
        second < first + (first - rss_before) / 4,
        "RSS {rss_before} KiB, {first} KiB after one round, {second} KiB after two"
    );
}
