//! `bind: unix`: workers listen on Unix sockets that forkyard places in a private
//! runtime directory (`{socket}`), and the proxy connects over them, with hash
//! balancing and retries as over TCP. Stale sockets left by killed workers are
//! removed; anything else at a socket path is left alone.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::examples::venv;
use crate::harness::*;

fn unix_pool(command: &str, workers: u16, extra: &str) -> String {
    format!(
        "  web:\n    command: {command}\n    workers: {workers}\n    bind: unix\n    ready: {{ http: \"/ready\", timeout: \"60s\" }}\n    restart: {{ backoff_min: \"100ms\", backoff_max: \"500ms\" }}\n    stop: {{ grace: \"5s\" }}\n{extra}"
    )
}

fn fixture_command() -> String {
    format!("[\"python3\", \"{}\"]", fixture_worker().display())
}

/// forkyard with `$RUNTIME_DIRECTORY` set, so the socket paths are known.
fn start(pool: &str, runtime: &Path) -> Forkyard {
    Forkyard::builder(&config_with(&[pool.to_string()], ""))
        .env("RUNTIME_DIRECTORY", runtime)
        .start()
}

fn is_socket(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

#[test]
fn fixture_workers_serve_over_unix_sockets_and_stale_sockets_are_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tmp.path().join("run");
    let pool_dir = runtime.join("web");
    // A socket file left by an earlier run where slot 0's worker will listen.
    std::fs::create_dir_all(&pool_dir).unwrap();
    drop(std::os::unix::net::UnixListener::bind(pool_dir.join("0.sock")).unwrap());
    assert!(is_socket(&pool_dir.join("0.sock")));

    // A post_spawn `http` hook to the worker goes over its socket too; a failure
    // would kill the worker (`on_failure: kill_worker`), so it never gets ready.
    let pool = unix_pool(
        &fixture_command(),
        2,
        "    env: { FIXTURE_UNIX: \"{socket}\" }\n    hooks:\n      post_spawn: [ { name: warm, http: { path: \"/ready\" }, timeout: \"5s\", on_failure: kill_worker } ]\n",
    );
    let mut fy = start(&pool, &runtime);
    fy.wait_workers_ready("web", 2);
    assert_eq!(
        fy.metric(r#"forkyard_hook_failures_total{hook="warm",phase="post_spawn",pool="web",reason="connect"}"#),
        Some(0.0)
    );
    assert!(
        fy.metric(r#"forkyard_hook_runs_total{hook="warm",phase="post_spawn",pool="web"}"#)
            .unwrap_or(0.0)
            >= 2.0
    );
    let mode = std::fs::metadata(&pool_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the pool's socket directory is private");

    let mut pids = std::collections::HashMap::new();
    for _ in 0..6 {
        let r = fy.get("/").unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let j = r.json();
        assert_eq!(j["port"], serde_json::Value::Null, "no FORKYARD_PORT");
        pids.insert(
            j["slot"].as_str().unwrap().to_string(),
            j["pid"].as_i64().unwrap(),
        );
    }
    assert_eq!(pids.len(), 2, "both unix-socket workers answered: {pids:?}");
    assert!(is_socket(&pool_dir.join("0.sock")) && is_socket(&pool_dir.join("1.sock")));

    // SIGKILL leaves the socket file behind, and the fixture (Python's
    // UnixStreamServer) fails with EADDRINUSE on an existing path: the replacement
    // only serves if forkyard removed the stale socket first.
    let victim = pids["0"] as i32;
    nix::sys::signal::kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    wait_for_or_log(&fy, BOOT, "slot 0 replaced and serving", || {
        let r = fy.get("/").ok()?;
        let j = r.json();
        (r.status == 200 && j["slot"] == "0" && j["pid"].as_i64() != Some(i64::from(victim)))
            .then_some(())
    });

    let status = fy.signal_and_wait(Signal::SIGTERM, SHORT);
    assert_eq!(status.code(), Some(0), "{}", fy.log());
    assert!(
        !pool_dir.exists(),
        "the sockets and the pool directory are removed at exit: {:?}",
        std::fs::read_dir(&pool_dir).map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
    );
    assert!(
        runtime.exists(),
        "$RUNTIME_DIRECTORY itself belongs to systemd"
    );
}

#[test]
fn hash_keys_stick_to_unix_socket_workers_and_a_refusing_one_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tmp.path().join("run");
    let pool = unix_pool(
        &fixture_command(),
        3,
        "    env: { FIXTURE_UNIX: \"{socket}\" }\n    lb: { hash: { header: X-User } }\n    retries: 2\n",
    );
    let fy = start(&pool, &runtime);
    fy.wait_workers_ready("web", 3);
    let users: Vec<String> = (0..24).map(|i| format!("u{i}")).collect();
    let slot_for = |user: &str| fy.slot_of("/", &[("X-User", user)]);
    let before: HashMap<&String, usize> = users.iter().map(|u| (u, slot_for(u))).collect();
    assert!(
        users.iter().all(|u| slot_for(u) == before[u]),
        "the same key goes to the same worker"
    );
    assert_eq!(
        before.values().collect::<HashSet<_>>().len(),
        3,
        "keys spread over the three unix-socket workers: {before:?}"
    );

    // The victim closes its socket and its open connections but stays alive, so
    // forkyard keeps it in the balancer: its keys are retried on another worker,
    // and every other key stays where it was.
    let victim = before[&users[0]];
    let r = http_get(fy.proxy, "/close-listener?drop=1", &[("X-User", &users[0])]).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let socket = runtime.join(format!("web/{victim}.sock"));
    wait_for_or_log(
        &fy,
        SHORT,
        "the victim's socket to refuse connections",
        || {
            std::os::unix::net::UnixStream::connect(&socket)
                .is_err()
                .then_some(())
        },
    );
    for u in &users {
        let now = slot_for(u);
        if before[u] == victim {
            assert_ne!(now, victim, "{u} reached the worker that refuses");
        } else {
            assert_eq!(now, before[u], "{u} moved");
        }
    }
    assert!(
        fy.metric(r#"forkyard_retries_total{pool="web"}"#)
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        fy.metric(r#"forkyard_upstream_connect_errors_total{pool="web"}"#)
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#),
        Some(3.0),
        "the refusing worker was still in the balancer: the retries saved its keys"
    );
}

#[test]
fn a_file_that_is_not_a_socket_is_never_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tmp.path().join("run");
    let pool_dir = runtime.join("web");
    std::fs::create_dir_all(&pool_dir).unwrap();
    let precious: PathBuf = pool_dir.join("1.sock");
    std::fs::write(&precious, "not a socket").unwrap();

    let pool = unix_pool(
        &fixture_command(),
        2,
        "    env: { FIXTURE_UNIX: \"{socket}\" }\n",
    );
    let fy = start(&pool, &runtime);
    wait_for_or_log(&fy, BOOT, "slot 0 serving", || {
        (fy.get("/").ok()?.status == 200).then_some(())
    });
    wait_for_or_log(&fy, SHORT, "the refusal in the log", || {
        fy.log()
            .contains("exists and is not a socket; refusing to remove it")
            .then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "not a socket",
        "the file is untouched"
    );
    assert_eq!(
        fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#),
        Some(1.0)
    );
}

#[test]
fn config_check_rejects_ports_and_a_missing_socket_placeholder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "pools:\n  web:\n    command: [\"app\", \"--port\", \"{port}\"]\n    ports: \"9001-9002\"\n    bind: unix\n  api:\n    command: [\"app\", \"{socket}\"]\n    ports: \"9010\"\n",
    )
    .unwrap();
    let check = forkyard_check(&file, &[]);
    let err = &check.stderr;
    assert_eq!(check.code, Some(78), "{err}");
    for want in [
        "config.yaml:4:12: pools.web.ports: bind: unix workers listen on Unix sockets, not ports",
        "config.yaml:3:32: pools.web.command[2]: bind: unix workers have no port: use {socket}",
        "pools.web.command: bind: unix needs {socket} in the command or env",
        "config.yaml:7:22: pools.api.command[1]: {socket} is only set for bind: unix pools",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

fn real_server(command: &str) {
    let Some(venv) = venv() else { return };
    let apps = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps");
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tmp.path().join("run");
    let pool = unix_pool(
        &command.replace("VENV", &venv.display().to_string()),
        2,
        &format!("    cwd: \"{}\"\n", apps.display()),
    )
    .replace("/ready", "/");
    let mut fy = start(&pool, &runtime);
    fy.wait_workers_ready("web", 2);
    for _ in 0..4 {
        let r = fy.get("/hello").unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["path"], "/hello");
    }
    assert!(is_socket(&runtime.join("web/0.sock")));
    let status = fy.signal_and_wait(Signal::SIGTERM, SHORT);
    assert_eq!(status.code(), Some(0), "{}", fy.log());
}

#[test]
fn gunicorn_serves_over_a_unix_socket() {
    real_server(
        r#"["VENV/bin/gunicorn", "--workers", "1", "--bind", "unix:{socket}", "wsgi:app"]"#,
    );
}

#[test]
fn uvicorn_serves_over_a_unix_socket() {
    real_server(r#"["VENV/bin/uvicorn", "--uds", "{socket}", "asgi:app"]"#);
}

#[test]
fn check_shows_the_socket_paths_a_run_will_use() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "pools:\n  web:\n    command: [\"app\", \"--uds\", \"{socket}\"]\n    workers: 2\n    bind: unix\n",
    )
    .unwrap();
    let check = forkyard_check(&file, &["RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"]);
    let text = &check.stdout;
    assert_eq!(check.code, Some(0), "{text}");
    assert!(
        text.contains(r#"slot 1: unix:/tmp/forkyard.<pid>/web/1.sock  ["app", "--uds", "/tmp/forkyard.<pid>/web/1.sock"]"#),
        "{text}"
    );
}
