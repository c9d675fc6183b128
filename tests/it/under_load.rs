//! The lifecycle promise under continuous load: keep-alive GETs for 15 s or more
//! while, in sequence, a SIGHUP rolls the pool to a changed command line, a random
//! worker is `kill -9`ed every second for 5 s, a worker turns unhealthy (it leaves
//! the balancer at once, then is restarted for it), and a second reload turns on
//! recycling after `max_requests`. Every non-2xx answer and every connection error counts; the
//! expected count is 0. (The kills need the default retries; drain.rs proves
//! reloads, recycles and scale-downs without any.)

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

/// `(port, pid, state)` of every worker entry of pool `web`.
fn workers(fy: &Forkyard) -> Vec<(u16, Option<i32>, String)> {
    let status = fy.status();
    status["pools"][0]["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .map(|w| {
                    (
                        w["port"].as_u64().unwrap_or(0) as u16,
                        w["pid"].as_i64().map(|p| p as i32),
                        w["state"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn config(fy_dir_placeholder: &str, ports: u16, unbuffered: bool, recycle: bool) -> String {
    let command = if unbuffered {
        format!(r#"["python3", "-u", "{}"]"#, fixture_worker().display())
    } else {
        format!(r#"["python3", "{}"]"#, fixture_worker().display())
    };
    config_with(
        &[format!(
            r#"  web:
    command: {command}
    workers: 4
    ports: "{ports}-{end}"
    env: {{ FIXTURE_FAIL_SLOT: "1", FIXTURE_FAIL_FILE: "{fy_dir_placeholder}/unhealthy" }}
    ready: {{ http: "/ready", timeout: "30s" }}
    health: {{ http: "/flaky", interval: "200ms", timeout: "2s", unhealthy_after: 2, healthy_after: 1, restart_after: "2s" }}
{recycle}    restart: {{ backoff_min: "50ms", backoff_max: "500ms", crash_loop: {{ failures: 100, window: "60s" }} }}
    stop: {{ grace: "5s", drain: "10s" }}
"#,
            end = ports + 11,
            recycle = if recycle {
                "    recycle: { max_requests: 400, max_requests_jitter: 50 }\n"
            } else {
                ""
            },
        )],
        "",
    )
}

/// A small deterministic generator for picking workers (seed printed).
struct Lcg(u64);

impl Lcg {
    fn pick(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

#[test]
fn reload_kills_an_unhealthy_worker_and_recycling_under_load_lose_no_request() {
    let ports = free_ports(12);
    let mut fy = Forkyard::start(&config("{dir}", ports, false, false));
    fy.wait_workers_ready("web", 4);
    let dir = fy.dir().to_path_buf();
    let started = Instant::now();
    // Every answer is kept: which worker process answered, and when it was asked.
    let load = Load::to(fy.proxy)
        .clients(4)
        .keep_alive()
        .every(Duration::from_millis(5))
        .answers()
        .start();
    load.wait_for_more(&fy, 200);

    // 1. SIGHUP with a changed command line: a rolling, readiness-gated reload.
    let rewrite = |unbuffered, recycle| {
        let text = config(&dir.display().to_string(), ports, unbuffered, recycle)
            .replace("{proxy}", &fy.proxy.to_string())
            .replace("{admin}", &fy.admin.to_string());
        std::fs::write(dir.join("config.yaml"), text).unwrap();
    };
    rewrite(true, false);
    fy.signal(Signal::SIGHUP);
    wait_for_or_log(&fy, BOOT, "the reload to finish", || {
        (fy.metric(r#"forkyard_config_reloads_total{result="ok"}"#)? == 1.0).then_some(())
    });
    // The last old worker drains and stops after the rollout is done.
    wait_for_or_log(&fy, BOOT, "every old worker stopped for the reload", || {
        (fy.metric(r#"forkyard_worker_exits_total{pool="web",reason="reload"}"#)? >= 4.0)
            .then_some(())
    });

    // 2. kill -9 of a random ready worker every second for 5 s; each time, how long
    //    until its slot has a ready replacement again.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Lcg(seed);
    let mut replaced_ms = Vec::new();
    let kills_started = Instant::now();
    for i in 0..5u32 {
        let ready: Vec<(u16, i32)> = wait_for_or_log(&fy, BOOT, "a ready worker", || {
            let r: Vec<(u16, i32)> = workers(&fy)
                .into_iter()
                .filter(|(_, pid, state)| state == "ready" && pid.is_some())
                .map(|(port, pid, _)| (port, pid.unwrap_or(0)))
                .collect();
            (!r.is_empty()).then_some(r)
        });
        let (port, pid) = ready[rng.pick(ready.len())];
        let killed_at = Instant::now();
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        let back = wait_for_or_log(&fy, BOOT, "the killed worker's replacement", || {
            let ws = workers(&fy);
            let same_slot: Vec<_> = ws.iter().filter(|(p, _, _)| *p == port).collect();
            if same_slot.is_empty() {
                return Some(None); // retired meanwhile (a recycle); not timed
            }
            same_slot
                .iter()
                .any(|(_, p, s)| s == "ready" && *p != Some(pid))
                .then(|| Some(killed_at.elapsed()))
        });
        if let Some(t) = back {
            replaced_ms.push(t.as_millis() as u64);
        }
        // Pace the kills one second apart (a schedule, not a wait for a condition).
        let next = kills_started + Duration::from_secs(u64::from(i) + 1);
        if let Some(left) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
    }

    // 3. Slot 1 turns unhealthy: it leaves the balancer at once, then is restarted.
    let health_before = fy
        .metric(r#"forkyard_worker_restarts_total{pool="web",reason="health"}"#)
        .unwrap_or(0.0);
    std::fs::write(dir.join("unhealthy"), "").unwrap();
    // forkyard takes a worker out of the balancer before it reports it unhealthy.
    let (sick, out_at) = wait_for_or_log(&fy, BOOT, "slot 1 reported unhealthy", || {
        let (_, pid, _) = workers(&fy)
            .into_iter()
            .find(|(_, _, s)| s == "unhealthy")?;
        Some((pid?, Instant::now()))
    });
    wait_for_or_log(&fy, BOOT, "the unhealthy worker restarted", || {
        (fy.metric(r#"forkyard_worker_restarts_total{pool="web",reason="health"}"#)?
            > health_before)
            .then_some(())
    });
    let restarted_at = Instant::now();
    std::fs::remove_file(dir.join("unhealthy")).unwrap();
    wait_for_or_log(&fy, BOOT, "4 ready workers again", || {
        (fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#)? == 4.0).then_some(())
    });

    // 4. A second reload turns recycling on (at once, no restart): workers past
    //    max_requests are recycled, and then again as the load keeps coming.
    rewrite(true, true);
    fy.signal(Signal::SIGHUP);
    wait_for_or_log(&fy, BOOT, "the second reload to finish", || {
        (fy.metric(r#"forkyard_config_reloads_total{result="ok"}"#)? == 2.0).then_some(())
    });
    wait_for_or_log(&fy, BOOT, "a recycle after max_requests", || {
        (fy.metric(r#"forkyard_worker_restarts_total{pool="web",reason="recycle_requests"}"#)?
            >= 1.0)
            .then_some(())
    });
    // The run lasts at least 15 s.
    wait_for_or_log(&fy, BOOT, "15 s of load", || {
        (started.elapsed() >= Duration::from_secs(15)).then_some(())
    });
    let elapsed = started.elapsed();
    let report = load.finish();
    let recycles = fy
        .metric(r#"forkyard_worker_restarts_total{pool="web",reason="recycle_requests"}"#)
        .unwrap_or(0.0);
    let killed = fy
        .metric(r#"forkyard_worker_exits_total{pool="web",reason="signal"}"#)
        .unwrap_or(0.0);
    let retries = fy
        .metric(r#"forkyard_retries_total{pool="web"}"#)
        .unwrap_or(0.0);
    replaced_ms.sort_unstable();
    announce(&format!(
        "under load: {} requests answered 2xx, {} failed, in {:.1} s (seed {seed}); \
         {killed} workers killed by signal, {recycles} recycled, {retries} retries; \
         crash to ready replacement (ms, sorted): {replaced_ms:?}",
        report.ok,
        report.failures.len(),
        elapsed.as_secs_f64()
    ));
    report.assert_no_failures();
    let ok = report.ok;
    // The unhealthy worker served before, and not one request asked after it was
    // reported unhealthy, though the load kept going until its restart.
    let answered_by = |a: &Answer| a.response.json()["pid"].as_i64() == Some(i64::from(sick));
    let asked_while_out = report
        .answers
        .iter()
        .filter(|a| a.sent >= out_at && a.sent <= restarted_at)
        .count();
    assert!(
        report
            .answers
            .iter()
            .any(|a| a.sent < out_at && answered_by(a)),
        "worker {sick} never served before it turned unhealthy"
    );
    let late: Vec<f64> = report
        .answers
        .iter()
        .filter(|a| a.sent >= out_at && answered_by(a))
        .map(|a| (a.sent - out_at).as_secs_f64())
        .collect();
    assert!(
        late.is_empty(),
        "the unhealthy worker {sick} still got {} requests, the first ones asked this many seconds after it was reported unhealthy: {:?}",
        late.len(),
        &late[..late.len().min(10)]
    );
    assert!(
        asked_while_out >= 50,
        "only {asked_while_out} requests between the worker turning unhealthy and its restart"
    );
    assert!(ok > 1000, "the load ran: {ok} requests");
    assert!(killed >= 5.0, "the kills happened: {killed}");
    let status = fy.signal_and_wait(Signal::SIGTERM, SHORT);
    assert_eq!(status.code(), Some(0));
}
