//! A reload applies every key it reports: each row of the table in
//! docs/operations.md that can change on reload, changed on a running forkyard,
//! with its effect shown through the proxy, the metrics or the log — and the keys
//! that need a restart refused by name, with nothing changed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::*;

/// A config with one pool `web` of fixture workers on `ports`, `pool` added to
/// the pool and `top` to the file.
fn yaml(ports: u16, workers: u16, pool: &str, top: &str) -> String {
    format!(
        "proxy:\n  listen: \"{{proxy}}\"\nadmin:\n  listen: \"{{admin}}\"\nshutdown:\n  timeout: \"10s\"\n{top}pools:\n  web:\n    command: [\"python3\", \"{worker}\"]\n    workers: {workers}\n    ports: \"{ports}-{end}\"\n    ready: {{ http: \"/ready\", timeout: \"15s\" }}\n    restart: {{ backoff_min: \"50ms\", backoff_max: \"500ms\", crash_loop: {{ failures: 100 }} }}\n{pool}",
        worker = fixture_worker().display(),
        end = ports + 9,
    )
}

/// Reload and expect it applied, with `item` in the answer.
fn applied(fy: &Forkyard, text: &str, item: &str) {
    let r = fy.reload_with(text);
    assert_eq!(r.status, 200, "{r:?}\n{}", fy.log());
    assert!(r.body.contains(item), "expected {item:?} in {r:?}");
}

fn metric_or_zero(fy: &Forkyard, series: &str) -> f64 {
    fy.metric(series).unwrap_or(0.0)
}

#[test]
fn proxy_keys_apply_to_the_next_request_without_restarting_workers() {
    let ports = free_ports(12);
    // `proxy:` keys go under the proxy section the base config already has.
    let base = |proxy: &str| {
        yaml(ports, 2, "", "").replace(
            "  listen: \"{proxy}\"\n",
            &format!("  listen: \"{{proxy}}\"\n{proxy}"),
        )
    };
    let fy = Forkyard::start(&base(""));
    fy.wait_workers_ready("web", 2);
    let before = fy.slot_pids(0);

    // proxy.max_body: a 2 KiB body passes, then is refused with 413.
    let body = vec![b'x'; 2048];
    let r = http_request(fy.proxy, "POST", "/upload", &[], &body).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    applied(&fy, &base("  max_body: 1KiB\n"), "proxy.max_body applied");
    let r = http_request(fy.proxy, "POST", "/upload", &[], &body).unwrap();
    assert_eq!(r.status, 413, "{r:?}");

    // proxy.max_header_size: a 2 KiB header passes, then gets 431.
    let big = "y".repeat(2048);
    assert_eq!(
        http_get(fy.proxy, "/", &[("x-big", &big)]).unwrap().status,
        200
    );
    applied(
        &fy,
        &base("  max_body: 1KiB\n  max_header_size: 1KiB\n"),
        "proxy.max_header_size applied",
    );
    let raw = raw_exchange(
        fy.proxy,
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        SHORT,
    )
    .unwrap();
    assert_eq!(
        status_of(&raw),
        Some(431),
        "{}",
        String::from_utf8_lossy(&raw)
    );

    // proxy.client_header_timeout: an unfinished head gets 408 after 1 s, not 10 s.
    applied(
        &fy,
        &base("  client_header_timeout: 1s\n"),
        "proxy.client_header_timeout applied",
    );
    let started = Instant::now();
    let raw = raw_exchange(fy.proxy, b"GET / HTTP/1.1\r\nHost: x\r\n", SHORT).unwrap();
    assert_eq!(
        status_of(&raw),
        Some(408),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // proxy.idle_timeout: an idle keep-alive connection is closed after 1 s.
    applied(
        &fy,
        &base("  idle_timeout: 1s\n"),
        "proxy.idle_timeout applied",
    );
    let mut stream = TcpStream::connect(fy.proxy).unwrap();
    stream.set_read_timeout(Some(SHORT)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut all = Vec::new();
    let read = stream.read_to_end(&mut all);
    assert!(
        read.is_ok() && started.elapsed() < Duration::from_secs(8),
        "closed after {:?}: {read:?}",
        started.elapsed()
    );
    assert_eq!(status_of(&all), Some(200));

    // proxy.client_timeout: a body that stalls is cut off after 1 s, not 60 s.
    applied(
        &fy,
        &base("  client_timeout: 1s\n"),
        "proxy.client_timeout applied",
    );
    let started = Instant::now();
    let _ = raw_exchange(
        fy.proxy,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-this",
        SHORT,
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered after {:?}",
        started.elapsed()
    );

    // log.access: lines appear for requests from now on.
    assert!(!fy.log().contains("/access-probe"));
    applied(
        &fy,
        &(base("") + "log: { access: true }\n"),
        "log.access applied",
    );
    assert_eq!(fy.get("/access-probe").unwrap().status, 200);
    wait_for_or_log(&fy, SHORT, "an access log line", || {
        fy.log()
            .contains("\"GET /access-probe HTTP/1.1\" 200")
            .then_some(())
    });

    assert_eq!(fy.slot_pids(0), before, "no worker was restarted");
}

#[test]
fn shutdown_keys_and_on_shutdown_apply_at_the_next_shutdown() {
    let ports = free_ports(12);
    let mut fy = Forkyard::start(&yaml(ports, 1, "", ""));
    fy.wait_workers_ready("web", 1);
    let marker = fy.dir().join("on_shutdown-ran");
    applied(
        &fy,
        &yaml(
            ports,
            1,
            "",
            &format!(
                "hooks:\n  on_shutdown: [ {{ run: [\"touch\", \"{}\"] }} ]\n",
                marker.display()
            ),
        )
        .replace("timeout: \"10s\"", "timeout: \"1s\""),
        "shutdown.timeout applied",
    );
    // A request that outlives the new 1 s drain timeout.
    let proxy = fy.proxy;
    let slow = std::thread::spawn(move || http_get(proxy, "/sleep?s=20", &[]));
    wait_for_or_log(&fy, SHORT, "the slow request in flight", || {
        (metric_or_zero(
            &fy,
            r#"forkyard_worker_in_flight_requests{pool="web",worker="0"}"#,
        ) == 1.0)
            .then_some(())
    });
    let started = Instant::now();
    let status = fy.signal_and_wait(Signal::SIGTERM, Duration::from_secs(60));
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the drain took {:?}; shutdown.timeout is 1s",
        started.elapsed()
    );
    let log = fy.log();
    assert!(
        log.contains("result=\"timeout\"") && log.contains("timeout_ms=1000"),
        "{log}"
    );
    assert!(
        marker.exists(),
        "the on_shutdown hook added by the reload ran"
    );
    let _ = slow.join();
}

#[test]
fn reload_watch_turned_on_by_a_reload_picks_up_the_next_save() {
    let ports = free_ports(12);
    let fy = Forkyard::start(&yaml(ports, 1, "", ""));
    fy.wait_workers_ready("web", 1);
    applied(
        &fy,
        &yaml(ports, 1, "", "reload: { watch: true }\n"),
        "reload.watch applied",
    );
    let ok = r#"forkyard_config_reloads_total{result="ok"}"#;
    let before = metric_or_zero(&fy, ok);
    // A save, and no SIGHUP or POST: the watch reloads by itself.
    fy.write_config(&yaml(ports, 2, "", "reload: { watch: true }\n"));
    fy.wait_workers_ready("web", 2);
    assert!(metric_or_zero(&fy, ok) > before);
}

#[test]
fn balancing_keys_apply_to_the_next_request() {
    let ports = free_ports(12);
    // Slot 0 answers /flaky with 503 while the file exists.
    let fail_file = "{dir}/fail";
    let pool = |extra: &str| {
        format!(
            "    env: {{ FIXTURE_FAIL_SLOT: \"0\", FIXTURE_FAIL_FILE: \"{fail_file}\" }}\n    eject: {{ consecutive_failures: 0 }}\n    retries: 1\n{extra}"
        )
    };
    let base = |extra: &str| yaml(ports, 3, &pool(extra), "");
    let fy = Forkyard::start(&base(""));
    fy.wait_workers_ready("web", 3);
    let before = fy.slot_pids(0);
    let slots = |n: usize, headers: &[(&str, &str)]| -> Vec<usize> {
        (0..n).map(|_| fy.slot_of("/", headers)).collect()
    };

    // lb: round robin rotates a key; hash on X-K keeps it on one slot.
    let key = [("X-K", "alice")];
    let rr = slots(6, &key);
    assert!(rr.iter().any(|s| *s != rr[0]), "{rr:?}");
    applied(
        &fy,
        &base("    lb: { hash: { header: X-K } }\n"),
        "pools.web.lb applied",
    );
    let hashed = slots(12, &key);
    assert!(hashed.iter().all(|s| *s == hashed[0]), "{hashed:?}");

    // weights: slot 2 with 8 of 10 shares takes most requests.
    applied(
        &fy,
        &base("    weights: [1, 1, 8]\n"),
        "pools.web.weights applied",
    );
    let picks = slots(100, &[]);
    let slot2 = picks.iter().filter(|s| **s == 2).count();
    assert!(slot2 >= 70, "slot 2 got {slot2} of 100");

    // retry_on: 503s from slot 0 reach clients, then are retried elsewhere.
    std::fs::write(fy.dir().join("fail"), "").unwrap();
    let failed = |n| {
        (0..n)
            .filter(|_| fy.get("/flaky").map(|r| r.status).ok() != Some(200))
            .count()
    };
    assert!(
        failed(12) > 0,
        "slot 0's 503s reach clients without retry_on"
    );
    applied(
        &fy,
        &base("    retry_on: [503]\n"),
        "pools.web.retry_on applied",
    );
    assert_eq!(failed(24), 0, "503s are retried on another worker");

    // retries: with 0 retries the 503s reach clients again.
    applied(
        &fy,
        &base("    retry_on: [503]\n    retries: 0\n").replace("    retries: 1\n", ""),
        "pools.web.retries applied",
    );
    assert!(failed(12) > 0, "retries: 0 sends no second attempt");

    // eject: two failures in a row take slot 0 out.
    let ejections = r#"forkyard_worker_ejections_total{pool="web",worker="0"}"#;
    applied(
        &fy,
        &base("    retry_on: [503]\n").replace(
            "eject: { consecutive_failures: 0 }",
            "eject: { consecutive_failures: 2, base_time: 60s, max_percent: 50 }",
        ),
        "pools.web.eject applied",
    );
    wait_for_or_log(&fy, SHORT, "slot 0 ejected", || {
        let _ = fy.get("/flaky");
        (metric_or_zero(&fy, ejections) >= 1.0).then_some(())
    });
    assert!(
        slots(30, &[]).iter().all(|s| *s != 0),
        "an ejected worker gets no request"
    );

    // timeouts: a 3 s answer is fine, then times out at the new 1 s.
    std::fs::remove_file(fy.dir().join("fail")).unwrap();
    assert_eq!(fy.get("/sleep?s=3").unwrap().status, 200);
    applied(
        &fy,
        &base("    timeouts: { response_header: 1s }\n"),
        "pools.web.timeouts applied",
    );
    assert_eq!(fy.get("/sleep?s=3").unwrap().status, 504);

    assert_eq!(fy.slot_pids(0), before, "no worker was restarted");
}

#[test]
fn worker_policy_keys_apply_without_restarting_workers() {
    let ports = free_ports(12);
    let runs = |phase: &str, hook: &str| {
        format!(r#"forkyard_hook_runs_total{{hook="{hook}",phase="{phase}",pool="web"}}"#)
    };
    let fy = Forkyard::start(&yaml(ports, 2, "", ""));
    fy.wait_workers_ready("web", 2);
    let before = fy.slot_pids(0);
    // SIGKILL the ready worker of `slot` (a slot being replaced has two entries).
    let kill_slot = |slot: u64| {
        let pid = wait_for_or_log(&fy, SHORT, "a ready worker in the slot", || {
            fy.status()["pools"][0]["workers"]
                .as_array()?
                .iter()
                .find(|w| w["slot"].as_u64() == Some(slot) && w["state"] == "ready")?["pid"]
                .as_i64()
        });
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    };

    // workers: scaled in place.
    applied(&fy, &yaml(ports, 3, "", ""), "web: scaled to 3");
    fy.wait_workers_ready("web", 3);
    assert_eq!(
        &fy.slot_pids(0)[..2],
        &before[..],
        "the first two kept running"
    );

    // health: turned on; a sick worker leaves the balancer.
    let health = "    health: { http: \"/healthz\", interval: \"200ms\", unhealthy_after: 2, restart_after: \"1h\" }\n";
    applied(&fy, &yaml(ports, 3, health, ""), "pools.web.health applied");
    let r = http_get(
        format!("127.0.0.1:{}", ports + 1).parse().unwrap(),
        "/sick",
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 503, "slot 1 is sick from now on");
    wait_for_or_log(&fy, SHORT, "one unhealthy worker", || {
        (metric_or_zero(&fy, r#"forkyard_workers{pool="web",state="unhealthy"}"#) == 1.0)
            .then_some(())
    });

    // hooks.post_spawn, hooks.on_exit, restart.crash_loop: a killed worker is
    // replaced through the new hooks, and one failure now marks the pool degraded.
    let hooks = format!(
        "{health}    hooks:\n      post_spawn: [ {{ name: warm, http: {{ path: \"/\" }} }} ]\n      on_exit: [ {{ name: bye, run: [\"true\"] }} ]\n      pre_stop: [ {{ name: stopping, run: [\"true\"] }} ]\n"
    );
    let crash = "    restart: { backoff_min: \"50ms\", backoff_max: \"500ms\", crash_loop: { failures: 1 } }\n";
    let with_hooks = yaml(ports, 3, &hooks, "").replace(
        "    restart: { backoff_min: \"50ms\", backoff_max: \"500ms\", crash_loop: { failures: 100 } }\n",
        crash,
    );
    applied(&fy, &with_hooks, "pools.web.hooks.post_spawn applied");
    kill_slot(0);
    wait_for_or_log(&fy, BOOT, "post_spawn and on_exit of the new hooks", || {
        (metric_or_zero(&fy, &runs("post_spawn", "warm")) >= 1.0
            && metric_or_zero(&fy, &runs("on_exit", "bye")) >= 1.0)
            .then_some(())
    });
    wait_for_or_log(&fy, SHORT, "the crash-loop breaker at 1 failure", || {
        fy.log().contains("pool degraded").then_some(())
    });
    fy.wait_workers_ready("web", 2);

    // stop: the next stop uses SIGKILL; pre_stop runs before it.
    let stop = "    stop: { signal: SIGKILL, grace: \"5s\" }\n";
    applied(
        &fy,
        &yaml(ports, 2, &format!("{hooks}{stop}"), "").replace(
            "    restart: { backoff_min: \"50ms\", backoff_max: \"500ms\", crash_loop: { failures: 100 } }\n",
            crash,
        ),
        "pools.web.stop applied",
    );
    wait_for_or_log(
        &fy,
        SHORT,
        "slot 2 stopped with SIGKILL after pre_stop",
        || {
            (fy.log()
                .contains("reason=\"scale_down\" status=signal SIGKILL")
                && metric_or_zero(&fy, &runs("pre_stop", "stopping")) >= 1.0)
                .then_some(())
        },
    );

    // recycle: max_requests 5 replaces a worker after its fifth request.
    let recycled = r#"forkyard_worker_restarts_total{pool="web",reason="recycle_requests"}"#;
    assert_eq!(metric_or_zero(&fy, recycled), 0.0);
    applied(
        &fy,
        &yaml(ports, 2, "    recycle: { max_requests: 5 }\n", ""),
        "pools.web.recycle applied",
    );
    wait_for_or_log(&fy, BOOT, "a recycle", || {
        let _ = fy.get("/");
        (metric_or_zero(&fy, recycled) >= 1.0).then_some(())
    });

    // ready: the next boot uses the new probe (here one that never passes).
    let boot_timeouts = r#"forkyard_worker_exits_total{pool="web",reason="boot_timeout"}"#;
    applied(
        &fy,
        &yaml(ports, 2, "", "").replace(
            "ready: { http: \"/ready\", timeout: \"15s\" }",
            "ready: { http: \"/status?code=503\", timeout: \"1s\" }",
        ),
        "pools.web.ready applied",
    );
    kill_slot(1);
    wait_for_or_log(&fy, BOOT, "a boot timeout under the new probe", || {
        (metric_or_zero(&fy, boot_timeouts) >= 1.0).then_some(())
    });
}

/// One GET on a fresh connection, timed: when its first byte arrived and when the
/// whole answer had (both from the moment the request was sent).
fn timed_get(addr: std::net::SocketAddr, path: &str) -> (Duration, Duration, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SHORT)).unwrap();
    let sent = Instant::now();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut first = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        first.get_or_insert_with(|| sent.elapsed());
        got.extend_from_slice(&buf[..n]);
    }
    (first.expect("an answer"), sent.elapsed(), got)
}

#[test]
fn data_path_keys_apply_to_the_next_request_without_restarting_workers() {
    let ports = free_ports(12);
    let fy = Forkyard::start(&yaml(ports, 1, "", ""));
    fy.wait_workers_ready("web", 1);
    let before = fy.slot_pids(0);

    // keepalive: by default the upstream connection is kept, so the worker sees
    // one peer port for the requests of one client connection; with 0 it sees a
    // new one each time (the first may still reuse the connection idle before).
    let peers = || -> Vec<u64> {
        let mut c = Conn::open(fy.proxy).unwrap();
        (0..3)
            .map(|_| c.get("/").unwrap().json()["peer"].as_u64().unwrap())
            .collect()
    };
    let p = peers();
    assert_eq!(p[1], p[2], "kept alive by default: {p:?}");
    applied(
        &fy,
        &yaml(ports, 1, "    keepalive: 0\n", ""),
        "pools.web.keepalive applied",
    );
    let p = peers();
    assert_ne!(p[1], p[2], "a new upstream connection each time: {p:?}");

    // buffer.response: by default an answer leaves forkyard whole, so nothing
    // arrives before the worker's pause is over; with 0 the head comes at once.
    let pause = Duration::from_millis(800);
    let split = format!("/split?pause={}", pause.as_secs_f64());
    let (first, _, got) = timed_get(fy.proxy, &split);
    assert!(
        got.ends_with(&[b'x'; 64]),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(first >= pause, "buffered: first byte after {first:?}");
    applied(
        &fy,
        &yaml(ports, 1, "    buffer: { response: 0 }\n", ""),
        "pools.web.buffer applied",
    );
    let (first, whole, got) = timed_get(fy.proxy, &split);
    assert!(
        got.ends_with(&[b'x'; 64]),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        whole - first >= pause,
        "streamed: the head came {:?} before the body",
        whole - first
    );

    // buffer.request: a small chunked body reaches the worker with a length by
    // default, and chunked once request buffering is off.
    let chunked_post = |fy: &Forkyard| -> serde_json::Value {
        let raw = raw_exchange(
            fy.proxy,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            SHORT,
        )
        .unwrap();
        let text = String::from_utf8_lossy(&raw);
        serde_json::from_str(&text[text.find('{').expect("a JSON body")..]).unwrap()
    };
    let r = chunked_post(&fy);
    assert_eq!(
        (r["bytes"].as_u64(), r["chunked"].as_bool()),
        (Some(5), Some(false)),
        "{r}"
    );
    applied(
        &fy,
        &yaml(ports, 1, "    buffer: { request: 0 }\n", ""),
        "pools.web.buffer applied",
    );
    let r = chunked_post(&fy);
    assert_eq!(
        (r["bytes"].as_u64(), r["chunked"].as_bool()),
        (Some(5), Some(true)),
        "{r}"
    );

    // max_in_flight and queue: with no limit a second request goes to the busy
    // worker; with max_in_flight 1 and no queue it is refused at once; with a
    // queue and a short timeout it is refused after waiting.
    let gate = fy.dir().join("go");
    let hold = format!("/sleep?until={}", gate.display());
    let proxy = fy.proxy;
    let held = std::thread::spawn(move || http_get(proxy, &hold, &[]));
    wait_for_or_log(&fy, SHORT, "the worker busy", || {
        (fy.metric(r#"forkyard_worker_in_flight_requests{pool="web",worker="0"}"#) == Some(1.0))
            .then_some(())
    });
    assert_eq!(fy.get("/").unwrap().status, 200, "no limit yet");
    applied(
        &fy,
        &yaml(
            ports,
            1,
            "    max_in_flight: 1\n    queue: { max: 0 }\n",
            "",
        ),
        "pools.web.max_in_flight applied",
    );
    let r = fy.get("/").unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        fy.metric(r#"forkyard_queue_rejections_total{pool="web",reason="full"}"#),
        Some(1.0)
    );
    applied(
        &fy,
        &yaml(
            ports,
            1,
            "    max_in_flight: 1\n    queue: { max: 10, timeout: \"300ms\" }\n",
            "",
        ),
        "pools.web.queue applied",
    );
    let r = fy.get("/").unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        fy.metric(r#"forkyard_queue_rejections_total{pool="web",reason="timeout"}"#),
        Some(1.0)
    );
    std::fs::write(&gate, "").unwrap();
    assert_eq!(held.join().unwrap().unwrap().status, 200);

    assert_eq!(fy.slot_pids(0), before, "no worker was restarted");
}

#[test]
fn rolling_keys_replace_every_worker_with_the_new_value() {
    let ports = free_ports(12);
    let fy = Forkyard::start(&yaml(ports, 2, "", ""));
    fy.wait_workers_ready("web", 2);
    let env_of = |name: &str| -> Vec<Option<String>> {
        (0..2)
            .map(|slot| {
                let r = http_get(
                    format!("127.0.0.1:{}", pids_port(&fy, slot))
                        .parse()
                        .unwrap(),
                    "/info",
                    &[],
                )
                .unwrap();
                r.json()["env"][name].as_str().map(str::to_owned)
            })
            .collect()
    };
    let mut last = fy.slot_pids(0);
    let mut step = |text: String, what: &str| {
        applied(&fy, &text, "web: replaced");
        wait_for_or_log(&fy, SHORT, "the old workers gone", || {
            (fy.slot_pids(0).len() == 2).then_some(())
        });
        let now = fy.slot_pids(0);
        assert_eq!(now.len(), 2, "{what}: {now:?}");
        assert!(
            now.iter().zip(&last).all(|(a, b)| a.1 != b.1),
            "{what}: every worker replaced: {last:?} -> {now:?}"
        );
        last = now;
    };

    // env
    step(yaml(ports, 2, "    env: { TAG: \"two\" }\n", ""), "env");
    assert_eq!(env_of("TAG"), [Some("two".into()), Some("two".into())]);

    // command
    let command = yaml(ports, 2, "    env: { TAG: \"two\" }\n", "").replace(
        "command: [\"python3\",",
        "command: [\"env\", \"FROM_COMMAND=yes\", \"python3\",",
    );
    step(command.clone(), "command");
    assert_eq!(
        env_of("FROM_COMMAND"),
        [Some("yes".into()), Some("yes".into())]
    );

    // cwd
    step(
        command.replace("    workers: 2\n", "    workers: 2\n    cwd: \"/tmp\"\n"),
        "cwd",
    );
    let cwd: Vec<String> = (0..2)
        .map(|slot| {
            let r = http_get(
                format!("127.0.0.1:{}", pids_port(&fy, slot))
                    .parse()
                    .unwrap(),
                "/info",
                &[],
            )
            .unwrap();
            r.json()["cwd"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(cwd, ["/tmp", "/tmp"]);

    // hooks.pre_fork and hooks.post_fork
    let hooks = "    hooks:\n      pre_fork: [ { name: prep, run: [\"true\"] } ]\n      post_fork: [ { seed_env: NEW_SEED } ]\n";
    step(
        command.replace(
            "    workers: 2\n",
            &format!("    workers: 2\n    cwd: \"/tmp\"\n{hooks}"),
        ),
        "hooks",
    );
    assert!(env_of("NEW_SEED")
        .iter()
        .all(|s| s.as_ref().is_some_and(|s| s.len() == 64)));
    assert_eq!(
        fy.metric(r#"forkyard_hook_runs_total{hook="prep",phase="pre_fork",pool="web"}"#),
        Some(2.0)
    );
}

/// The port slot `slot`'s worker listens on now.
fn pids_port(fy: &Forkyard, slot: usize) -> u16 {
    fy.status()["pools"][0]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["slot"].as_u64() == Some(slot as u64) && w["state"] == "ready")
        .and_then(|w| w["port"].as_u64())
        .expect("a ready worker in the slot") as u16
}

#[test]
fn keys_that_need_a_restart_are_refused_by_name_and_nothing_changes() {
    let ports = free_ports(24);
    let fy = Forkyard::start(&yaml(ports, 2, "", ""));
    fy.wait_workers_ready("web", 2);
    let before = fy.slot_pids(0);
    let other = free_ports(2);
    let keys = [
        (
            "proxy.listen",
            yaml(ports, 2, "", "").replace(
                "listen: \"{proxy}\"",
                &format!("listen: \"127.0.0.1:{other}\""),
            ),
        ),
        (
            "proxy.threads",
            yaml(ports, 2, "", "")
                .replace("listen: \"{proxy}\"", "listen: \"{proxy}\"\n  threads: 2"),
        ),
        (
            "admin.listen",
            yaml(ports, 2, "", "").replace(
                "listen: \"{admin}\"",
                &format!("listen: \"127.0.0.1:{}\"", other + 1),
            ),
        ),
        (
            "admin.socket",
            yaml(ports, 2, "", "").replace(
                "listen: \"{admin}\"",
                "listen: \"{admin}\"\n  socket: false",
            ),
        ),
        ("log.format", yaml(ports, 2, "", "log: { format: json }\n")),
        ("pools", yaml(ports, 2, "", "").replace("  web:", "  api:")),
        ("pools.web.ports", yaml(ports + 12, 2, "", "")),
        ("pools.web.bind", yaml(ports, 2, "    bind: inherit\n", "")),
    ];
    let refused = keys.len();
    for (key, text) in keys {
        let r = fy.reload_with(&text);
        assert_eq!(r.status, 422, "{key}: {r:?}");
        assert!(
            r.body
                .contains(&format!("{key}: changing it needs a restart")),
            "{key}: {r:?}"
        );
        assert!(r.body.contains("nothing changed"), "{key}: {r:?}");
        assert_eq!(fy.slot_pids(0), before, "{key}: workers untouched");
    }
    assert_eq!(
        fy.metric(r#"forkyard_config_reloads_total{result="error"}"#),
        Some(refused as f64)
    );
    assert_eq!(fy.get("/").unwrap().status, 200);
}
