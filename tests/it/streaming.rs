//! Bodies stream through the proxy in both directions: a chunked response arrives
//! piece by piece, a chunked request body reaches the worker before it is complete,
//! and a 100 MiB upload passes without being held in forkyard's memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::*;

/// Read from `s` until `needle` has been seen (or panic after `SHORT`).
fn read_until(fy: &Forkyard, s: &mut TcpStream, seen: &mut Vec<u8>, needle: &[u8]) {
    let mut buf = [0u8; 4096];
    wait_for_or_log(
        fy,
        SHORT,
        &format!("{:?} to arrive", String::from_utf8_lossy(needle)),
        || {
            if seen.windows(needle.len()).any(|w| w == needle) {
                return Some(());
            }
            match s.read(&mut buf) {
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("read failed: {e}"),
            }
            None
        },
    );
}

#[test]
fn a_streaming_response_arrives_incrementally() {
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 1, "")], ""));
    fy.wait_ready();
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("go");
    let mut s = TcpStream::connect(fy.proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        s,
        "GET /stream-gate?file={} HTTP/1.1\r\nHost: x\r\n\r\n",
        gate.display()
    )
    .unwrap();
    let mut seen = Vec::new();
    // The worker holds "second" back until the gate exists: "first" must get here
    // on its own.
    read_until(&fy, &mut s, &mut seen, b"first");
    assert!(!seen.windows(6).any(|w| w == b"second"));
    std::fs::write(&gate, "").unwrap();
    read_until(&fy, &mut s, &mut seen, b"second");
    read_until(&fy, &mut s, &mut seen, b"0\r\n\r\n");
}

#[test]
fn a_small_chunked_body_reaches_the_worker_whole_with_a_length() {
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 1, "")], ""));
    fy.wait_ready();
    let raw = raw_exchange(
        fy.proxy,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        SHORT,
    )
    .unwrap();
    let text = String::from_utf8_lossy(&raw);
    let v: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    assert_eq!(v["bytes"], 11, "{text}");
}

#[test]
fn a_chunked_request_body_streams_to_the_worker_without_request_buffering() {
    let fy = Forkyard::start(&config_with(
        &[fixture_pool("web", 1, "    buffer: { request: 0 }\n")],
        "",
    ));
    fy.wait_ready();
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("got-first-chunk");
    let mut s = TcpStream::connect(fy.proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        s,
        "POST /upload?gate={} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        gate.display()
    )
    .unwrap();
    // The worker has the first chunk while the request is still open.
    wait_for_or_log(&fy, SHORT, "the worker to get the first chunk", || {
        gate.exists().then_some(())
    });
    s.write_all(b"6\r\n world\r\n0\r\n\r\n").unwrap();
    let mut seen = Vec::new();
    read_until(&fy, &mut s, &mut seen, b"}");
    let text = String::from_utf8_lossy(&seen);
    let json = &text[text.find('{').unwrap()..];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["bytes"], 11);
    let expected: u64 = b"hello world".iter().map(|b| u64::from(*b)).sum();
    assert_eq!(v["sum"], expected);
}

#[test]
fn a_100_mib_upload_is_not_buffered_in_memory() {
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 1, "")], ""));
    fy.wait_ready();
    let pid = fy.pid();
    let before = rss_kib(pid);
    const SIZE: usize = 100 << 20;
    let mut s = TcpStream::connect(fy.proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![7u8; 256 * 1024];
    let mut peak = before;
    for _ in 0..SIZE / chunk.len() {
        s.write_all(&chunk).unwrap();
        peak = peak.max(rss_kib(pid));
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    assert_eq!(v["bytes"], SIZE as u64);
    assert!(
        peak < before + 32 * 1024,
        "forkyard RSS grew from {before} KiB to {peak} KiB during a 100 MiB upload"
    );
}
