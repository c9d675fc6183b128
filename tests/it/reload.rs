//! Reloading config.yaml while serving: a rolling replacement on SIGHUP, rollback
//! of the slots already replaced when a later slot of the new generation fails, an
//! invalid file or a key that needs a restart changing nothing, routes swapped under
//! an open connection, and `--watch`. Every pool here has `retries: 0`, so no retry
//! hides a request sent to a worker that is going away.

use std::collections::HashMap;

use nix::sys::signal::Signal;

use crate::harness::*;

fn config(gen: &str, extra_env: &str, ports: u16) -> String {
    config_with(
        &[format!(
            "  web:\n    command: [\"python3\", \"{}\"]\n    workers: 3\n    ports: \"{ports}-{}\"\n    env: {{ GEN: \"{gen}\"{extra_env} }}\n    retries: 0\n    ready: {{ tcp: true, timeout: \"15s\" }}\n    restart: {{ backoff_min: \"50ms\", backoff_max: \"500ms\" }}\n    stop: {{ grace: \"5s\" }}\n",
            fixture_worker().display(),
            ports + 9
        )],
        "",
    )
}

fn gens(fy: &Forkyard) -> Vec<String> {
    (0..12)
        .map(|_| {
            fy.get("/info").unwrap().json()["env"]["GEN"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn sighup_rolls_workers_with_zero_failed_requests() {
    let ports = free_ports(10);
    let mut fy = Forkyard::start(&config("1", "", ports));
    fy.wait_workers_ready("web", 3);
    let load = Load::to(fy.proxy).clients(2).keep_alive().start();
    load.wait_for_more(&fy, 20);
    fy.write_config(&config("2", "", ports));
    fy.signal(Signal::SIGHUP);
    wait_for_or_log(&fy, BOOT, "the reload to finish", || {
        (fy.metric(r#"forkyard_config_reloads_total{result="ok"}"#)? == 1.0).then_some(())
    });
    // The load runs until the last old worker has exited.
    wait_for_or_log(&fy, BOOT, "old workers stopped", || {
        (fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#)? == 3.0
            && fy.metric(r#"forkyard_workers{pool="web",state="stopping"}"#)? == 0.0
            && fy.metric(r#"forkyard_worker_exits_total{pool="web",reason="reload"}"#)? == 3.0)
            .then_some(())
    });
    load.wait_for_more(&fy, 20);
    load.finish().assert_no_failures();
    assert!(
        gens(&fy).iter().all(|g| g == "2"),
        "every worker runs the new config"
    );
    assert_eq!(
        fy.metric(r#"forkyard_worker_restarts_total{pool="web",reason="signal"}"#),
        Some(0.0)
    );
    assert_eq!(fy.signal_and_wait(Signal::SIGTERM, SHORT).code(), Some(0));
}

/// One environment variable of a running process.
fn environ_var(pid: i64, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// Every worker process in `/status`: (slot, pid, its GEN).
fn workers_by_generation(admin: std::net::SocketAddr) -> Vec<(u64, i64, String)> {
    let Ok(status) = http_get(admin, "/status", &[]) else {
        return Vec::new();
    };
    let status = status.json();
    let Some(workers) = status["pools"][0]["workers"].as_array() else {
        return Vec::new();
    };
    workers
        .iter()
        .filter_map(|w| {
            let pid = w["pid"].as_i64()?;
            Some((w["slot"].as_u64()?, pid, environ_var(pid, "GEN")?))
        })
        .collect()
}

/// The (pid, GEN) serving each slot, asked through the proxy.
fn serving(fy: &Forkyard) -> HashMap<String, (i64, String)> {
    let mut by_slot = HashMap::new();
    wait_for_or_log(fy, SHORT, "an answer from every slot", || {
        let info = fy.get("/info").ok()?.json();
        let env = &info["env"];
        by_slot.insert(
            env["FORKYARD_WORKER"].as_str()?.to_string(),
            (info["pid"].as_i64()?, env["GEN"].as_str()?.to_string()),
        );
        (by_slot.len() == 3).then_some(())
    });
    by_slot
}

#[test]
fn a_generation_failing_at_its_third_slot_rolls_the_first_two_back() {
    let ports = free_ports(10);
    let fy = Forkyard::start(&config("1", "", ports));
    fy.wait_workers_ready("web", 3);
    let before = serving(&fy);
    assert!(before.values().all(|(_, g)| g == "1"), "{before:?}");
    let load = Load::to(fy.proxy).clients(2).keep_alive().start();
    // Watch which generation each slot runs while the rollout goes on.
    let admin = fy.admin;
    let seen = Sampler::start(move || Some(workers_by_generation(admin)));
    // Generation 2 starts in slots 0 and 1, and exits at once in slot 2.
    fy.write_config(&config(
        "2",
        ", FIXTURE_EXIT_AT_START: \"3\", FIXTURE_EXIT_AT_START_SLOT: \"2\"",
        ports,
    ));
    let r = http_post(fy.admin, "/reload").unwrap();
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.body.contains("rolled_back"), "{r:?}");
    let seen: Vec<(u64, i64, String)> = seen.finish().into_iter().flat_map(|(_, w)| w).collect();
    load.wait_for_more(&fy, 20);
    load.finish().assert_no_failures();
    assert_eq!(
        fy.metric(r#"forkyard_config_reloads_total{result="rolled_back"}"#),
        Some(1.0)
    );
    // The rollout got past slots 0 and 1: each ran a worker of generation 2.
    for slot in [0, 1] {
        assert!(
            seen.iter().any(|(s, _, g)| *s == slot && g == "2"),
            "slot {slot} never ran generation 2: {seen:?}"
        );
    }
    // Now every slot runs generation 1 again: slots 0 and 1 in new processes (their
    // generation-2 workers were replaced), slot 2 in its first one.
    let after = serving(&fy);
    assert!(
        after.values().all(|(_, g)| g == "1"),
        "every slot runs generation 1 again; (pid, GEN) by slot: {after:?}"
    );
    for slot in ["0", "1"] {
        assert_ne!(after[slot].0, before[slot].0, "slot {slot} was rolled back");
    }
    assert_eq!(after["2"].0, before["2"].0, "slot 2 was never replaced");
}

#[test]
fn an_invalid_config_on_reload_changes_nothing() {
    let ports = free_ports(10);
    let fy = Forkyard::start(&config("1", "", ports));
    fy.wait_ready();
    fy.write_config(&config("2", "", ports).replace("workers: 3", "wrokers: 3"));
    let r = http_post(fy.admin, "/reload").unwrap();
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(
        fy.metric(r#"forkyard_config_reloads_total{result="error"}"#),
        Some(1.0)
    );
    // The log reaches the test through a pipe reader thread: wait for the line.
    wait_for_or_log(&fy, SHORT, "the errors to be logged with locations", || {
        fy.log().contains("unknown key \"wrokers\"").then_some(())
    });
    assert!(gens(&fy).iter().all(|g| g == "1"));
}

#[test]
fn a_watched_config_reloads_on_save_and_a_crash_loop_is_fixed_by_it() {
    let ports = free_ports(10);
    // Generation 1 crashes at start: the pool goes degraded.
    let broken = config("1", ", FIXTURE_EXIT_AT_START: \"3\"", ports).replace(
        "restart: { backoff_min: \"50ms\", backoff_max: \"500ms\" }",
        "restart: { backoff_min: \"50ms\", backoff_max: \"500ms\", crash_loop: { failures: 3, window: \"60s\" } }",
    ) + "reload:\n  watch: true\n";
    let fy = Forkyard::start(&broken);
    wait_for_or_log(&fy, BOOT, "the pool to be degraded", || {
        (fy.metric(r#"forkyard_pool_degraded{pool="web"}"#)? == 1.0).then_some(())
    });
    // Saving a fixed file is enough.
    fy.write_config(&(config("2", "", ports) + "reload:\n  watch: true\n"));
    wait_for_or_log(&fy, BOOT, "the fixed generation to serve", || {
        (fy.metric(r#"forkyard_config_reloads_total{result="ok"}"#)? >= 1.0
            && fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#)? == 3.0)
            .then_some(())
    });
    assert!(gens(&fy).iter().all(|g| g == "2"));
    assert_eq!(
        fy.metric(r#"forkyard_pool_degraded{pool="web"}"#),
        Some(0.0)
    );
    // A broken save is reported and changes nothing.
    fy.write_config(
        &(config("3", "", ports).replace("workers: 3", "workers: [3]")
            + "reload:\n  watch: true\n"),
    );
    wait_for_or_log(&fy, BOOT, "the broken save to be reported", || {
        (fy.metric(r#"forkyard_config_reloads_total{result="error"}"#)? >= 1.0).then_some(())
    });
    assert!(gens(&fy).iter().all(|g| g == "2"));
}

#[test]
fn changed_routes_apply_on_reload_without_dropping_a_connection() {
    let web = fixture_pool("web", 1, "");
    let api = fixture_pool("api", 1, "");
    let routes = |api_goes_to: &str| {
        format!("routes:\n  - {{ path_prefix: /api, pool: {api_goes_to} }}\n  - {{ pool: web }}\n")
    };
    let fy = Forkyard::start(&config_with(&[web.clone(), api.clone()], &routes("api")));
    fy.wait_workers_ready("web", 1);
    fy.wait_workers_ready("api", 1);
    let mut conn = Conn::open(fy.proxy).unwrap();
    let pool_of = |conn: &mut Conn| {
        let r = conn.get("/api/x").expect("answered");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.keeps_alive(), "the connection stays open");
        r.json()["pool"].as_str().unwrap().to_string()
    };
    assert_eq!(pool_of(&mut conn), "api");

    fy.write_config(&config_with(&[web, api], &routes("web")));
    let r = http_post(fy.admin, "/reload").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("routes replaced"), "{r:?}");
    // The same connection: its next request takes the new route.
    assert_eq!(pool_of(&mut conn), "web");
    assert_eq!(
        fy.metric(r#"forkyard_worker_exits_total{pool="api",reason="reload"}"#),
        Some(0.0),
        "no worker was touched"
    );
}

#[test]
fn a_reload_that_changes_ports_is_refused_and_changes_nothing() {
    let ports = free_ports(20);
    let fy = Forkyard::start(&config("1", "", ports));
    fy.wait_ready();
    // The proxy's worker addresses are fixed at start: a new range needs a restart.
    fy.write_config(&config("2", "", ports + 10));
    let r = http_post(fy.admin, "/reload").unwrap();
    assert!(r.status >= 400, "{r:?}");
    assert!(
        r.body
            .contains("pools.web.ports: changing it needs a restart"),
        "{r:?}"
    );
    assert_eq!(
        fy.metric(r#"forkyard_config_reloads_total{result="error"}"#),
        Some(1.0)
    );
    assert!(
        gens(&fy).iter().all(|g| g == "1"),
        "the old workers keep serving"
    );
}
