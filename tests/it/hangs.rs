//! Hung requests (`hang:`): a request that waited `after` for its response head is
//! found, the worker's stacks are dumped (the real `py-spy` from PyPI, or the
//! worker's own `faulthandler` after a signal) into one `hang` event, the client
//! gets 504, and the worker is killed and replaced; a response whose body is slow
//! is never a hang, and `kill: false` keeps the worker.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::examples::venv;
use crate::harness::*;

/// The function the fixture's `/stuck` handler never leaves.
const STUCK_FN: &str = "stuck_in_forkyard_hang_test_fn";

fn json_log(pools: &[String]) -> String {
    config_with(pools, "") + "log:\n  level: info\n  format: json\n"
}

/// The `hang` events forkyard logged so far.
fn hang_events(fy: &Forkyard) -> Vec<serde_json::Value> {
    fy.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "hang")
        .collect()
}

/// The pid of the worker that answers `GET /`.
fn worker_pid(fy: &Forkyard) -> i64 {
    let r = fy.get("/").expect("GET /");
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["pid"].as_i64().unwrap()
}

/// `py-spy` from the test virtualenv, if it can dump a Python process here: it
/// needs ptrace rights over a process that is not its child (root, or
/// CAP_SYS_PTRACE, where Yama's ptrace_scope is 1). `None`: the test was skipped.
fn py_spy() -> Option<PathBuf> {
    let venv = venv()?;
    let py_spy = venv.join("bin/py-spy");
    if !py_spy.is_file() {
        skip("target/venv has no py-spy; `make venv` installs tests/requirements.txt");
        return None;
    }
    // The same situation as under forkyard: the dumped process is not py-spy's
    // parent or child.
    let mut target = Command::new("python3")
        .args([
            "-c",
            "import time\nprint('up', flush=True)\nwhile True: time.sleep(1)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start a python3 to dump");
    // Dumped before its interpreter is up, py-spy fails (EFAULT): wait for it.
    let mut up = [0u8; 3];
    let _ = target.stdout.take().map(|mut o| o.read_exact(&mut up));
    let out = Command::new(&py_spy)
        .args(["dump", "--pid", &target.id().to_string()])
        .output();
    let _ = target.kill();
    let _ = target.wait();
    match out {
        Ok(o) if o.status.success() => Some(py_spy),
        Ok(o) => {
            skip(&format!(
                "py-spy cannot dump a process here (run the tests as root or with CAP_SYS_PTRACE): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            None
        }
        Err(e) => {
            skip(&format!("cannot run {}: {e}", py_spy.display()));
            None
        }
    }
}

/// Send `GET path` on a thread; the answer and how long it took.
fn get_in_background(
    fy: &Forkyard,
    path: &'static str,
) -> std::thread::JoinHandle<(std::io::Result<Response>, Duration)> {
    let proxy = fy.proxy;
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = http_get(proxy, path, &[("x-request-id", "hang-test-1")]);
        (r, t0.elapsed())
    })
}

#[test]
fn a_hung_request_is_dumped_with_py_spy_answered_504_and_its_worker_replaced() {
    let Some(py_spy) = py_spy() else { return };
    let after = Duration::from_secs(2);
    let pool = fixture_pool(
        "web",
        1,
        &format!(
            "    hang:\n      after: \"2s\"\n      dump: [\"{}\", \"dump\", \"--pid\", \"{{pid}}\"]\n      dump_timeout: \"20s\"\n",
            py_spy.display()
        ),
    );
    let fy = Forkyard::start(&json_log(&[pool]));
    fy.wait_ready();
    let before = worker_pid(&fy);
    let started = Instant::now();
    let client = get_in_background(&fy, "/stuck");
    let event = wait_for_or_log(&fy, SHORT, "a hang event", || {
        hang_events(&fy).into_iter().next()
    });
    let seen_after = started.elapsed();
    // `after`, a check interval (after/4), py-spy's own time: a few seconds on a
    // loaded machine.
    assert!(
        seen_after < after + Duration::from_secs(12),
        "the hang event came {seen_after:?} after the request"
    );
    assert_eq!(event["pool"], "web");
    assert_eq!(event["worker"], 0);
    assert_eq!(event["pid"], before);
    assert_eq!(event["method"], "GET");
    assert_eq!(event["path"], "/stuck");
    assert_eq!(event["request_id"], "hang-test-1");
    assert!(event["age_ms"].as_u64().unwrap() >= 2000, "{event}");
    assert_eq!(event["dump_result"], "ok", "{event}");
    assert_eq!(event["kill"], true);
    let dump = event["dump"].as_str().unwrap();
    assert!(
        dump.contains(STUCK_FN),
        "the dump names the function the request is stuck in:\n{dump}"
    );
    let (answer, took) = client.join().unwrap();
    let answer = answer.expect("the hung client gets an answer");
    assert_eq!(answer.status, 504, "{answer:?}");
    assert!(answer.body.contains("hung"), "{answer:?}");
    assert!(took < after + Duration::from_secs(25), "{took:?}");
    // A new worker serves.
    let after_pid = wait_for_or_log(&fy, BOOT, "a new worker to serve", || {
        let r = fy.get("/").ok()?;
        (r.status == 200).then(|| r.json()["pid"].as_i64().unwrap())
    });
    assert_ne!(after_pid, before, "the hung worker was replaced");
    assert_eq!(
        fy.metric(r#"forkyard_worker_hangs_total{pool="web"}"#),
        Some(1.0)
    );
    assert_eq!(
        fy.metric(r#"forkyard_worker_exits_total{pool="web",reason="hang"}"#),
        Some(1.0)
    );
    let exit = fy
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "exit" && e["pid"] == before)
        .expect("an exit event for the hung worker");
    assert_eq!(exit["reason"], "hang");
    assert_eq!(exit["signal"], "SIGKILL");
    let status = fy.status();
    let pool = &status["pools"][0];
    let hang = &pool["hangs"][0];
    assert_eq!(hang["path"], "/stuck");
    assert_eq!(hang["pid"], before);
    assert_eq!(hang["killed"], true);
    assert!(hang["dump"].as_str().unwrap().contains(STUCK_FN));
    assert_eq!(pool["workers"][0]["last_exit"]["reason"], "hang");
    assert_eq!(hang_events(&fy).len(), 1, "one hang, one event");
}

/// Read from `s` until `needle` has arrived (or the read times out).
fn read_until(s: &mut TcpStream, got: &mut Vec<u8>, needle: &[u8]) {
    let mut buf = [0u8; 4096];
    while !got.windows(needle.len()).any(|w| w == needle) {
        let n = s.read(&mut buf).expect("read the response");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(got));
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_slow_body_is_not_a_hang_and_kill_false_keeps_the_worker() {
    // Two workers and `retry_on: [timeout]`: a request that timed out would be
    // sent to the other worker, were it not hung.
    let pool = fixture_pool(
        "web",
        2,
        "    hang: { after: \"1s\", kill: false }\n    timeouts: { response_header: \"5s\" }\n    retry_on: [timeout]\n",
    );
    let fy = Forkyard::start(&json_log(&[pool]));
    fy.wait_ready();
    fy.wait_workers_ready("web", 2);
    let pids = || -> Vec<serde_json::Value> {
        let status = fy.status();
        status["pools"][0]["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["pid"].clone())
            .collect()
    };
    let before = pids();

    // The head and a first chunk come at once, the rest only once the gate file
    // exists: the response is flowing, however long the body takes.
    let gate = fy.dir().join("gate");
    let mut s = TcpStream::connect(fy.proxy).unwrap();
    s.set_read_timeout(Some(SHORT)).unwrap();
    write!(
        s,
        "GET /stream-gate?file={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        gate.display()
    )
    .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"first");
    // A negative claim needs time to pass: `after` twice over, with the checks
    // (every 250 ms) running meanwhile.
    std::thread::sleep(Duration::from_millis(2500));
    std::fs::write(&gate, "").unwrap();
    read_until(&mut s, &mut got, b"second");
    assert!(
        hang_events(&fy).is_empty(),
        "a response whose body is slow is not a hang:\n{}",
        fy.log_tail(20)
    );

    // The control: a request that gets no head is a hang, and with kill: false
    // the worker stays; the request waits for the pool's own head timeout and is
    // answered 504 without a retry.
    let client = get_in_background(&fy, "/stuck");
    let event = wait_for_or_log(&fy, SHORT, "a hang event", || {
        hang_events(&fy).into_iter().next()
    });
    assert_eq!(event["kill"], false);
    assert_eq!(event["dump_result"], "none");
    let (answer, took) = client.join().unwrap();
    let answer = answer.expect("an answer");
    assert_eq!(answer.status, 504, "{answer:?}");
    assert!(
        took >= Duration::from_secs(5),
        "waited for the head timeout: {took:?}"
    );
    assert_eq!(pids(), before, "kill: false keeps the workers");
    assert_eq!(hang_events(&fy).len(), 1, "{}", fy.log_tail(20));
    assert_eq!(
        fy.metric(r#"forkyard_worker_exits_total{pool="web",reason="hang"}"#),
        Some(0.0)
    );
    assert_eq!(
        fy.metric(r#"forkyard_retries_total{pool="web"}"#),
        Some(0.0)
    );
    assert_eq!(fy.status()["pools"][0]["hangs"][0]["killed"], false);
}

#[test]
fn the_signal_form_keeps_what_faulthandler_writes() {
    let pool = fixture_pool(
        "web",
        1,
        "    env: { FIXTURE_FAULTHANDLER: \"1\" }\n    hang: { after: \"1s\", dump: { signal: SIGUSR1 } }\n",
    );
    let fy = Forkyard::start(&json_log(&[pool]));
    fy.wait_ready();
    let before = worker_pid(&fy);
    let client = get_in_background(&fy, "/stuck");
    let event = wait_for_or_log(&fy, SHORT, "a hang event", || {
        hang_events(&fy).into_iter().next()
    });
    assert_eq!(event["dump_result"], "signal SIGUSR1", "{event}");
    let dump = event["dump"].as_str().unwrap();
    assert!(dump.contains(STUCK_FN), "faulthandler's stacks:\n{dump}");
    let (answer, _) = client.join().unwrap();
    assert_eq!(answer.expect("an answer").status, 504);
    let after_pid = wait_for_or_log(&fy, BOOT, "a new worker to serve", || {
        let r = fy.get("/").ok()?;
        (r.status == 200).then(|| r.json()["pid"].as_i64().unwrap())
    });
    assert_ne!(after_pid, before);
}

#[test]
fn hang_turned_on_by_a_reload_watches_the_next_request() {
    let ports = free_ports(4);
    let pool = |extra: &str| {
        format!(
            "  web:\n    command: [\"python3\", \"{}\"]\n    ports: \"{ports}-{}\"\n    restart: {{ backoff_min: \"50ms\", backoff_max: \"500ms\" }}\n{extra}",
            fixture_worker().display(),
            ports + 3
        )
    };
    let fy = Forkyard::start(&json_log(&[pool("")]));
    fy.wait_ready();
    let before = worker_pid(&fy);
    let r = fy.reload_with(&json_log(&[pool("    hang: { after: \"1s\" }\n")]));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("pools.web.hang"), "{r:?}");
    assert_eq!(worker_pid(&fy), before, "applied at once, no restart");
    let client = get_in_background(&fy, "/stuck");
    let event = wait_for_or_log(&fy, SHORT, "a hang event", || {
        hang_events(&fy).into_iter().next()
    });
    assert_eq!(event["pid"], before);
    let (answer, _) = client.join().unwrap();
    assert_eq!(answer.expect("an answer").status, 504);
}

/// Pingora's path (a WebSocket upgrade, HTTP/1.0) keeps the same rules: an
/// upgraded connection that stays quiet is no hang; a request without a head is.
#[test]
fn on_the_pingora_path_an_upgrade_is_no_hang_and_a_stuck_request_is() {
    let pool = fixture_pool("web", 1, "    hang: { after: \"1s\" }\n");
    let fy = Forkyard::start(&json_log(&[pool]));
    fy.wait_ready();
    let mut s = TcpStream::connect(fy.proxy).unwrap();
    s.set_read_timeout(Some(SHORT)).unwrap();
    s.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"\r\n\r\n");
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // Quiet for twice `after`, then still open and echoing.
    std::thread::sleep(Duration::from_millis(2500));
    s.write_all(b"ping").unwrap();
    read_until(&mut s, &mut got, b"ping");
    assert!(
        hang_events(&fy).is_empty(),
        "an upgraded connection is not a hang:\n{}",
        fy.log_tail(20)
    );
    drop(s);

    let t0 = Instant::now();
    let answer = raw_exchange(
        fy.proxy,
        b"GET /stuck HTTP/1.0\r\nHost: x\r\nX-Request-Id: old-client\r\n\r\n",
        SHORT,
    )
    .unwrap();
    assert_eq!(
        status_of(&answer),
        Some(504),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(t0.elapsed() < SHORT);
    let event = hang_events(&fy).into_iter().next().expect("a hang event");
    assert_eq!(event["path"], "/stuck");
    assert_eq!(event["request_id"], "old-client");
    assert_eq!(event["kill"], true);
}

/// A preload pool's worker (forked by the preloader, not exec'd) is dumped and
/// replaced the same way; the preloader itself is left alone.
#[test]
fn a_hung_preload_worker_is_dumped_and_forked_again() {
    let Some(py_spy) = py_spy() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pool = crate::preload::preload_pool(
        "web",
        1,
        dir.path(),
        &format!(
            "    hang: {{ after: \"1s\", dump: [\"{}\", \"dump\", \"--pid\", \"{{pid}}\"], dump_timeout: \"20s\" }}\n",
            py_spy.display()
        ),
    );
    let fy = Forkyard::start(&json_log(&[pool]));
    fy.wait_ready();
    let before = worker_pid(&fy);
    let preloader = fy.status()["pools"][0]["preloaders"][0]["pid"].clone();
    let client = get_in_background(&fy, "/stuck");
    let event = wait_for_or_log(&fy, SHORT, "a hang event", || {
        hang_events(&fy).into_iter().next()
    });
    assert_eq!(event["pid"], before);
    assert_eq!(event["dump_result"], "ok", "{event}");
    assert!(
        event["dump"].as_str().unwrap().contains(STUCK_FN),
        "{event}"
    );
    let (answer, _) = client.join().unwrap();
    assert_eq!(answer.expect("an answer").status, 504);
    let after_pid = wait_for_or_log(&fy, BOOT, "a new worker to serve", || {
        let r = fy.get("/").ok()?;
        (r.status == 200).then(|| r.json()["pid"].as_i64().unwrap())
    });
    assert_ne!(after_pid, before);
    assert_eq!(
        fy.status()["pools"][0]["preloaders"][0]["pid"],
        preloader,
        "the same preloader forked the new worker"
    );
}

#[test]
fn check_describes_the_hang_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "pools:\n  web:\n    command: [\"python3\", \"app.py\", \"{port}\"]\n    ports: \"9101-9110\"\n    hang: { after: \"30s\", dump: [py-spy, dump, --pid, \"{pid}\"] }\n",
    )
    .unwrap();
    let run = forkyard_check(&path, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "  hang: a request waiting 30s for its response head: dump with [\"py-spy\", \"dump\", \"--pid\", \"{pid}\"] (at most 10s), then kill the worker; the request gets 504"
        ),
        "{}",
        run.stdout
    );
}
