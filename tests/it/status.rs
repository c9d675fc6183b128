//! `/status` reports every worker (slot, pid, state, uptime, restarts, last exit,
//! requests served, RSS), and `forkyard status` / `forkyard probe` read the admin
//! listener from the terminal.

use std::process::Command;
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::harness::*;

fn worker(status: &Value, pool: usize, slot: usize) -> Value {
    status["pools"][pool]["workers"][slot].clone()
}

#[test]
fn status_reports_workers_restarts_and_requests() {
    let started = Instant::now();
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 2, "")], ""));
    fy.wait_ready();
    wait_for_or_log(&fy, BOOT, "2 ready workers", || {
        (fy.status()["pools"][0]["workers_ready"] == 2).then_some(())
    });
    for _ in 0..10 {
        assert_eq!(fy.get("/").unwrap().status, 200);
    }
    // A request is counted once its answer is sent, so the last one may lag.
    let served = |s: &Value| -> u64 {
        (0..2)
            .map(|i| worker(s, 0, i)["requests_served"].as_u64().unwrap())
            .sum()
    };
    let (read, s) = wait_for_or_log(&fy, SHORT, "the 10 requests to be counted", || {
        let read = Instant::now();
        let s = fy.status();
        (served(&s) >= 10).then_some((read, s))
    });
    assert_eq!(s["ready"], true);
    assert_eq!(s["not_ready_reason"], Value::Null);
    assert_eq!(s["pid"], fy.pid());
    assert_eq!(s["hooks"], serde_json::json!([]), "no hooks declared");
    let pool = &s["pools"][0];
    assert_eq!(pool["name"], "web");
    assert_eq!(pool["workers_total"], 2);
    assert_eq!(served(&s), 10, "{s:#}");
    let w0 = worker(&s, 0, 0);
    assert_eq!(w0["slot"], 0);
    assert_eq!(w0["state"], "ready");
    assert!(w0["rss_bytes"].as_u64().unwrap() > 1_000_000, "{w0}");
    // A worker's uptime is younger than the forkyard this test started, and grows
    // with the clock.
    let uptime = |w: &Value| w["uptime_seconds"].as_f64().unwrap();
    let u1 = uptime(&w0);
    assert!(
        u1 > 0.0 && u1 <= started.elapsed().as_secs_f64(),
        "uptime {u1} s, forkyard started {:?} ago",
        started.elapsed()
    );
    let u2 = wait_for_or_log(&fy, SHORT, "slot 0's uptime to grow", || {
        let u = uptime(&worker(&fy.status(), 0, 0));
        (u >= u1 + 0.2).then_some(u)
    });
    assert!(
        u2 - u1 <= read.elapsed().as_secs_f64(),
        "uptime grew by {} s in {:?}",
        u2 - u1,
        read.elapsed()
    );
    assert_eq!(w0["restarts"], 0);
    assert_eq!(w0["last_exit"], Value::Null);

    // Kill slot 0: it comes back with a new pid, one restart and the reason.
    let old = w0["pid"].as_i64().unwrap();
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    let w0 = wait_for_or_log(&fy, BOOT, "slot 0 back with a new pid", || {
        let w = worker(&fy.status(), 0, 0);
        (w["state"] == "ready" && w["pid"].as_i64() != Some(old)).then_some(w)
    });
    assert_eq!(w0["restarts"], 1);
    assert_eq!(w0["last_exit"]["reason"], "signal");
    assert_eq!(w0["last_exit"]["status"], "signal SIGKILL");
    assert_eq!(w0["requests_served"], 0, "a new process starts from 0");
    assert_eq!(fy.status()["pools"][0]["restarts"], 1);

    // The human page shows the same.
    let page = fy.admin_get("/").unwrap();
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].starts_with("text/html"));
    assert!(page
        .body
        .contains(&format!("<td class=\"num\">{}</td>", w0["pid"])));
    assert!(page.body.contains("signal SIGKILL"));
}

#[test]
fn status_command_prints_the_table() {
    let fy = Forkyard::start(&config_with(
        &[fixture_pool("web", 2, ""), fixture_pool("api", 1, "")],
        "routes:\n  - { path_prefix: \"/api\", pool: api }\n  - { pool: web }\n",
    ));
    fy.wait_ready();
    wait_for_or_log(&fy, BOOT, "3 ready workers", || {
        let s = fy.status();
        (s["pools"][0]["workers_ready"] == 2 && s["pools"][1]["workers_ready"] == 1).then_some(())
    });
    let admin = fy.admin.to_string();
    let out = Command::new(forkyard_bin())
        .args(["status", "--admin", &admin])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("forkyard status:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("ready; web 2/2 ready, api 1/1 ready"),
        "{text}"
    );
    assert!(lines[2].starts_with("POOL"), "{text}");
    let rows: Vec<&&str> = lines[3..].iter().filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows.iter().all(|r| r.contains(" ready ")), "{text}");

    let out = Command::new(forkyard_bin())
        .args(["status", "--json", "--admin", &admin])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pools"][1]["name"], "api");

    // Nothing listening: a clear message and exit 1.
    let dead = format!("127.0.0.1:{}", free_ports(1));
    let out = Command::new(forkyard_bin())
        .args(["status", "--admin", &dead])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

#[test]
fn status_command_exits_3_when_not_ready() {
    let pool = fixture_pool("web", 1, "    env: { FIXTURE_NEVER_READY: \"1\" }\n");
    let fy = Forkyard::start(&config_with(&[pool], ""));
    wait_for_or_log(&fy, BOOT, "the admin listener", || {
        fy.admin_get("/status").ok()
    });
    let out = Command::new(forkyard_bin())
        .args(["status", "--admin", &fy.admin.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("NOT READY (no ready worker in pool(s): web)"),
        "{text}"
    );
}

#[test]
fn probe_exits_0_only_on_2xx() {
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 1, "")], ""));
    fy.wait_ready();
    let probe = |url: String| {
        Command::new(forkyard_bin())
            .args(["probe", &url, "--timeout", "2s"])
            .output()
            .unwrap()
    };
    assert_eq!(
        probe(format!("http://{}/healthz", fy.admin)).status.code(),
        Some(0)
    );
    assert_eq!(
        probe(format!("http://{}/readyz", fy.admin)).status.code(),
        Some(0)
    );
    let out = probe(format!("http://{}/nope", fy.admin));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("answered 404"));
    let dead = probe(format!("http://127.0.0.1:{}/healthz", free_ports(1)));
    assert_eq!(dead.status.code(), Some(1));
}

#[test]
fn status_lists_every_hook_with_its_last_result() {
    let web = fixture_pool(
        "web",
        1,
        "    hooks:\n      post_spawn: [{ name: warm, http: { path: \"/\", expect_status: 204 }, on_failure: skip }]\n      on_exit: [{ name: bye, run: [\"true\"] }]\n",
    );
    let fy = Forkyard::start(&config_with(
        &[web],
        "hooks:\n  on_start: [{ name: check, run: [\"true\"] }]\n",
    ));
    fy.wait_ready();
    let hooks = wait_for_or_log(&fy, BOOT, "post_spawn to have run", || {
        let s = fy.status();
        let hooks = s["hooks"].as_array()?.clone();
        let warm = hooks.iter().find(|h| h["hook"] == "warm")?;
        (warm["runs"] == 1).then_some(hooks)
    });
    let find = |name: &str| hooks.iter().find(|h| h["hook"] == name).unwrap().clone();
    let check = find("check");
    assert_eq!(
        (check["pool"].as_str(), check["phase"].as_str()),
        (Some(""), Some("on_start"))
    );
    assert_eq!(check["last_result"], "ok");
    assert!(check["last_run_unix"].as_f64().unwrap() > 1.0e9);
    let warm = find("warm");
    assert_eq!(
        (warm["pool"].as_str(), warm["phase"].as_str()),
        (Some("web"), Some("post_spawn"))
    );
    assert_eq!(
        (warm["runs"].as_u64(), warm["failures"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(warm["last_result"], "http_status");
    let bye = find("bye");
    assert_eq!(bye["runs"], 0, "declared, not run yet");
    assert_eq!(bye["last_result"], Value::Null);

    let out = Command::new(forkyard_bin())
        .args(["status", "--admin", &fy.admin.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PHASE") && text.contains("http_status") && text.contains("not run yet"),
        "{text}"
    );
}

/// Scaling shows in /status, and a removed worker's per-worker series are deleted.
#[test]
fn scaled_down_workers_leave_status_and_metrics() {
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 2, "")], ""));
    fy.wait_ready();
    let r = http_post(fy.admin, "/pools/web/scale?workers=3").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for_or_log(&fy, BOOT, "3 ready workers in /status", || {
        (fy.status()["pools"][0]["workers_ready"] == 3).then_some(())
    });
    let series = |slot: usize| {
        format!("forkyard_worker_resident_memory_bytes{{pool=\"web\",worker=\"{slot}\"}}")
    };
    let start_time = r#"forkyard_worker_start_time_seconds{pool="web",worker="2"}"#;
    wait_for_or_log(&fy, SHORT, "slot 2's series", || {
        (fy.metric(&series(2)).is_some() && fy.metric(start_time).is_some()).then_some(())
    });

    let r = http_post(fy.admin, "/pools/web/scale?workers=1").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for_or_log(&fy, BOOT, "one worker left in /status", || {
        (fy.status()["pools"][0]["workers_total"] == 1).then_some(())
    });
    let text = fy.metrics();
    for slot in [1, 2] {
        assert!(
            !text.contains(&series(slot)),
            "slot {slot} still has a series:\n{text}"
        );
        assert!(
            !text.contains(&format!(
                "forkyard_worker_start_time_seconds{{pool=\"web\",worker=\"{slot}\"}}"
            )),
            "slot {slot} still has a start time:\n{text}"
        );
    }
    assert!(text.contains(&series(0)));
    assert!(
        text.contains(r#"forkyard_worker_exits_total{pool="web",reason="scale_down"} 2"#),
        "{text}"
    );
}
