//! The data path: a worker killed between its response's head and body costs no
//! GET (the response is held back until it is whole) and fails a POST cleanly;
//! slow uploaders hold no worker (request bodies are read before a worker is
//! chosen); `max_in_flight` and the queue admit requests to busy workers;
//! `X-Request-Start` reaches the worker.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::*;

/// The pids of the pool's ready workers.
fn ready_pids(fy: &Forkyard) -> Vec<i32> {
    fy.status()["pools"][0]["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter(|w| w["state"] == "ready")
                .filter_map(|w| w["pid"].as_i64())
                .map(|p| p as i32)
                .collect()
        })
        .unwrap_or_default()
}

/// `kill -9` a ready worker every `every` until `stop`; returns how many.
fn killer(fy: &Forkyard, every: Duration, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    let admin = fy.admin;
    std::thread::spawn(move || {
        let mut kills = 0;
        let mut n = 0usize;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(every);
            let Ok(r) = http_get(admin, "/status", &[]) else {
                continue;
            };
            let pids: Vec<i32> = r.json()["pools"][0]["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|w| w["state"] == "ready")
                .filter_map(|w| w["pid"].as_i64())
                .map(|p| p as i32)
                .collect();
            if pids.len() > 1 {
                n += 1;
                let pid = pids[n % pids.len()];
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                kills += 1;
            }
        }
        kills
    })
}

#[test]
fn a_worker_killed_between_head_and_body_costs_no_get() {
    // Each answer's head and body are 0.2 s apart: a kill every 0.5 s lands in the
    // gap again and again.
    let pool = fixture_pool("web", 4, "    retries: 3\n");
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_workers_ready("web", 4);
    let load = Load::to(fy.proxy)
        .clients(6)
        .keep_alive()
        .get("/split?pause=0.2")
        .start();
    load.wait_for_more(&fy, 20);
    let stop = Arc::new(AtomicBool::new(false));
    let kills = killer(&fy, Duration::from_millis(500), stop.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let kills = kills.join().unwrap();
    let report = load.finish();
    report.assert_no_failures();
    assert!(kills >= 10, "only {kills} kills");
    let retries = fy
        .metric(r#"forkyard_retries_total{pool="web"}"#)
        .unwrap_or(0.0);
    assert!(
        retries >= 1.0,
        "some kill landed between a head and its body and was retried: {retries}"
    );
    eprintln!(
        "{} GETs, {kills} kills, {retries} retries, 0 failed",
        report.ok
    );
}

#[test]
fn with_response_buffering_off_the_same_kill_cuts_a_get_short() {
    // The negative control of the test above: with `buffer: { response: 0 }` the
    // head goes to the client at once, and a kill in the gap truncates the answer.
    let pool = fixture_pool("web", 2, "    buffer: { response: 0 }\n    retries: 3\n");
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_workers_ready("web", 2);
    let proxy = fy.proxy;
    let request = std::thread::spawn(move || http_get(proxy, "/split?pause=3", &[]));
    // The worker has the request and paused after its head.
    wait_for_or_log(&fy, SHORT, "the request at a worker", || {
        (fy.metric(r#"forkyard_worker_in_flight_requests{pool="web",worker="0"}"#) == Some(1.0)
            || fy.metric(r#"forkyard_worker_in_flight_requests{pool="web",worker="1"}"#)
                == Some(1.0))
        .then_some(())
    });
    for p in ready_pids(&fy) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
    }
    let r = request.join().unwrap();
    assert!(
        r.as_ref().map_or(true, |r| r.body.len() < 64),
        "a truncated answer, not a whole one: {r:?}"
    );
}

#[test]
fn a_post_whose_worker_dies_before_answering_whole_is_not_retried() {
    let log = "{dir}/requests";
    let pool = fixture_pool(
        "web",
        2,
        &format!("    retries: 3\n    env: {{ FIXTURE_LOG_REQUESTS: \"{log}\" }}\n"),
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_workers_ready("web", 2);
    let proxy = fy.proxy;
    let post =
        std::thread::spawn(move || http_request(proxy, "POST", "/split?pause=5", &[], b"payload"));
    let log = fy.dir().join("requests");
    wait_for_or_log(&fy, SHORT, "the POST at a worker", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("POST /split"))
    });
    for p in ready_pids(&fy) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
    }
    let r = post.join().unwrap().expect("an answer");
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("POST /split")
            .count(),
        1,
        "sent to one worker only"
    );
}

/// A client that uploads `size` bytes a few at a time until `stop`.
fn slow_upload(
    addr: std::net::SocketAddr,
    size: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut s) = TcpStream::connect(addr) else {
            return;
        };
        let head = format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n");
        if s.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && sent < size {
            if s.write_all(b"abcd").is_err() {
                return;
            }
            sent += 4;
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// p99 of GETs from 4 clients over `window`, while `uploads` slow uploaders run.
fn p99_with_uploads(fy: &Forkyard, uploads: usize, window: Duration) -> (Duration, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let uploaders: Vec<_> = (0..uploads)
        .map(|_| slow_upload(fy.proxy, 100 * 1024, stop.clone()))
        .collect();
    // The uploads have started (and, without buffering, hold the workers).
    std::thread::sleep(Duration::from_millis(300));
    let load = Load::to(fy.proxy).clients(4).get("/").latencies().start();
    let end = Instant::now() + window;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = load.finish();
    stop.store(true, Ordering::Relaxed);
    for u in uploaders {
        let _ = u.join();
    }
    for f in report.failures.iter().take(3) {
        eprintln!("failure: {f}");
    }
    let mut l = report.latencies.clone();
    l.sort();
    let p99 = l
        .get(l.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or(window);
    (
        p99,
        report.failures.len() + if l.is_empty() { 1 } else { 0 },
    )
}

fn synchronous_pool(extra: &str) -> String {
    fixture_pool(
        "web",
        4,
        &format!("    env: {{ FIXTURE_SINGLE_THREAD: \"1\" }}\n    max_in_flight: 1\n    queue: {{ timeout: \"5s\" }}\n{extra}"),
    )
}

#[test]
fn slow_uploaders_hold_no_worker() {
    let fy = Forkyard::start(&config_with(&[synchronous_pool("")], ""));
    fy.wait_workers_ready("web", 4);
    let window = Duration::from_secs(3);
    let (quiet, _) = p99_with_uploads(&fy, 0, window);
    let (busy, failed) = p99_with_uploads(&fy, 40, window);
    assert_eq!(failed, 0, "every GET answered");
    assert!(
        busy <= quiet.mul_f64(1.5).max(Duration::from_millis(50)),
        "p99 {busy:?} with 40 slow uploaders against {quiet:?} without"
    );
    eprintln!("p99 without slow uploaders {quiet:?}, with 40 {busy:?}");
}

#[test]
fn without_request_buffering_slow_uploaders_hold_the_workers() {
    // The negative control: `buffer: { request: 0 }` streams bodies, and 40 slow
    // uploads occupy all four single-threaded workers.
    let fy = Forkyard::start(&config_with(
        &[synchronous_pool("    buffer: { request: 0 }\n")],
        "",
    ));
    fy.wait_workers_ready("web", 4);
    let window = Duration::from_secs(3);
    let (quiet, _) = p99_with_uploads(&fy, 0, window);
    let (busy, failed) = p99_with_uploads(&fy, 40, window);
    assert!(
        failed > 0 || busy > quiet.mul_f64(1.5).max(Duration::from_millis(50)),
        "p99 {busy:?} with uploads against {quiet:?}: the uploads should hold the workers"
    );
}

#[test]
fn max_in_flight_one_never_gives_a_worker_a_second_request() {
    let pool = fixture_pool(
        "web",
        2,
        "    max_in_flight: 1\n    queue: { max: 100, timeout: \"20s\" }\n",
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_workers_ready("web", 2);
    let load = Load::to(fy.proxy).clients(8).get("/sleep?s=0.05").start();
    load.wait_for_more(&fy, 40);
    load.finish().assert_no_failures();
    for w in fy.status()["pools"][0]["workers"].as_array().unwrap() {
        let p = w["port"].as_u64().unwrap() as u16;
        let busy = http_get(format!("127.0.0.1:{p}").parse().unwrap(), "/busy", &[])
            .unwrap()
            .json();
        assert_eq!(busy["most"], 1, "slot {}: {busy}", w["slot"]);
    }
    // The requests queued: the wait histogram saw them.
    assert!(
        fy.metric(r#"forkyard_queue_wait_seconds_count{pool="web"}"#)
            .unwrap_or(0.0)
            > 0.0
    );
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let pool = fixture_pool(
        "web",
        1,
        "    max_in_flight: 1\n    queue: { max: 1, timeout: \"30s\" }\n",
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_workers_ready("web", 1);
    let gate = fy.dir().join("go");
    let path = format!("/sleep?until={}", gate.display());
    let proxy = fy.proxy;
    // One request on the worker, one in the queue...
    let held: Vec<_> = (0..2)
        .map(|_| {
            let p = path.clone();
            std::thread::spawn(move || http_get(proxy, &p, &[]))
        })
        .collect();
    wait_for_or_log(&fy, SHORT, "one request queued", || {
        (fy.metric(r#"forkyard_queue_depth{pool="web"}"#) == Some(1.0)).then_some(())
    });
    // ...so the next one finds the queue full.
    let r = fy.get("/").unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.headers.get("retry-after").map(String::as_str),
        Some("1"),
        "{r:?}"
    );
    assert_eq!(
        fy.metric(r#"forkyard_queue_rejections_total{pool="web",reason="full"}"#),
        Some(1.0)
    );
    std::fs::write(&gate, "").unwrap();
    for h in held {
        assert_eq!(h.join().unwrap().unwrap().status, 200);
    }
}

#[test]
fn a_queued_request_that_waits_too_long_gets_503() {
    let pool = fixture_pool(
        "web",
        1,
        "    max_in_flight: 1\n    queue: { max: 10, timeout: \"500ms\" }\n",
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_workers_ready("web", 1);
    let gate = fy.dir().join("go");
    let path = format!("/sleep?until={}", gate.display());
    let proxy = fy.proxy;
    let held = std::thread::spawn(move || http_get(proxy, &path, &[]));
    wait_for_or_log(&fy, SHORT, "the worker busy", || {
        (fy.metric(r#"forkyard_worker_in_flight_requests{pool="web",worker="0"}"#) == Some(1.0))
            .then_some(())
    });
    let r = fy.get("/").unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.headers.contains_key("retry-after"), "{r:?}");
    assert_eq!(
        fy.metric(r#"forkyard_queue_rejections_total{pool="web",reason="timeout"}"#),
        Some(1.0)
    );
    std::fs::write(&gate, "").unwrap();
    assert_eq!(held.join().unwrap().unwrap().status, 200);
}

#[test]
fn x_request_start_reaches_the_worker() {
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 1, "")], ""));
    fy.wait_workers_ready("web", 1);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let r = fy.get("/").unwrap().json();
    let value = r["headers"]["x-request-start"]
        .as_str()
        .unwrap_or_else(|| panic!("no X-Request-Start in {r}"));
    let t: u64 = value.strip_prefix("t=").unwrap().parse().unwrap();
    assert!(t >= before && t < before + 60_000_000, "{t} vs {before}");
    // A client's own X-Request-Start is replaced, not forwarded.
    let r = http_get(fy.proxy, "/", &[("X-Request-Start", "t=1")])
        .unwrap()
        .json();
    assert_ne!(r["headers"]["x-request-start"], "t=1", "{r}");
    assert!(r["headers"]["x-request-start"].is_string(), "{r}");
}
