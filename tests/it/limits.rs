//! Timeouts and request limits, each with its documented answer: 504 for upstream
//! timeouts, 408 for a slow request head, 431 for a large head, 413 for a large
//! body, 400 for ambiguous framing (which never reaches a worker).

use std::time::{Duration, Instant};

use crate::harness::*;

fn proxy_config(proxy_extra: &str, pool_extra: &str) -> String {
    config_with(&[fixture_pool("web", 1, pool_extra)], "").replacen(
        "proxy:\n",
        &format!("proxy:\n{proxy_extra}"),
        1,
    )
}

#[test]
fn response_header_timeout_gives_504() {
    let fy = Forkyard::start(&proxy_config(
        "",
        "    timeouts: { response_header: \"1s\" }\n",
    ));
    fy.wait_ready();
    let started = Instant::now();
    let r = fy.get("/sleep?s=10").unwrap();
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fy.get("/").unwrap().status, 200, "the worker still serves");
}

#[test]
fn connect_timeout_gives_504() {
    // The fixture's listen backlog is full and never drained: connects hang.
    let fy = Forkyard::start(&proxy_config(
        "",
        "    retries: 0\n    timeouts: { connect: \"500ms\" }\n    env: { FIXTURE_NO_ACCEPT: \"1\" }\n",
    ));
    fy.wait_ready();
    let r = fy.get("/").unwrap();
    assert_eq!(r.status, 504, "{r:?}");
}

#[test]
fn slow_request_head_gets_408() {
    let fy = Forkyard::start(&proxy_config("  client_header_timeout: \"1s\"\n", ""));
    fy.wait_ready();
    let started = Instant::now();
    let raw = raw_exchange(
        fy.proxy,
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(
        status_of(&raw),
        Some(408),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn large_head_gets_431_and_large_body_413() {
    let fy = Forkyard::start(&proxy_config(
        "  max_header_size: \"8KiB\"\n  max_body: \"1KiB\"\n",
        "",
    ));
    fy.wait_ready();
    let big = "a".repeat(12 * 1024);
    let r = http_get(fy.proxy, "/", &[("X-Big", &big)]).unwrap();
    assert_eq!(r.status, 431, "{r:?}");
    let small = "a".repeat(2 * 1024);
    assert_eq!(
        http_get(fy.proxy, "/", &[("X-Small", &small)])
            .unwrap()
            .status,
        200
    );

    let r = http_request(fy.proxy, "POST", "/upload", &[], &[b'x'; 2048]).unwrap();
    assert_eq!(r.status, 413, "{r:?}");
    let r = http_request(fy.proxy, "POST", "/upload", &[], &[b'x'; 1024]).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    // Chunked, over the limit.
    let mut req = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'y'; 512]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let raw = raw_exchange(fy.proxy, &req, Duration::from_secs(20)).unwrap();
    assert_eq!(
        status_of(&raw),
        Some(413),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn ambiguous_framing_gets_400_and_never_reaches_a_worker() {
    let fy = Forkyard::start(&proxy_config("", ""));
    fy.wait_ready();
    let count = || fy.get("/").unwrap().json()["count"].as_i64().unwrap();
    let before = count();
    for req in [
        &b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        &b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"[..],
        &b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
    ] {
        let raw = raw_exchange(fy.proxy, req, Duration::from_secs(20)).unwrap();
        assert_eq!(status_of(&raw), Some(400), "{}", String::from_utf8_lossy(&raw));
    }
    assert_eq!(count(), before + 1, "only our own GET reached the worker");
}
