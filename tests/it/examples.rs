//! The shipped examples, run for real under forkyard.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::harness::*;

/// The virtualenv `make test` builds (`make venv`), or `None` (skip) outside CI.
pub fn venv() -> Option<std::path::PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv");
    if venv.join(".installed").exists() {
        return Some(venv);
    }
    skip("target/venv is missing; run `make venv` (`make test` does)");
    None
}

#[test]
fn pyramid_sqlalchemy_workers_each_use_their_own_connection_pool() {
    let Some(venv) = venv() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let yaml =
        std::fs::read_to_string(root.join("examples/pyramid-sqlalchemy/config.yaml")).unwrap();
    let db = tempfile::tempdir().unwrap();
    let ports = free_ports(10);
    let fy = Forkyard::builder(&yaml)
        .env("VENV", &venv)
        .env("DB_PATH", db.path().join("app.db"))
        .env("WORKER_PORTS", format!("{ports}-{}", ports + 9))
        .start();
    fy.wait_ready();
    wait_for_or_log(&fy, BOOT, "3 ready workers", || {
        (fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#)? == 3.0).then_some(())
    });
    assert!(
        fy.log().contains("schema ready at"),
        "on_start created the schema:\n{}",
        fy.log()
    );
    let mut opened_by: HashMap<i64, HashSet<i64>> = HashMap::new();
    let mut randoms = HashSet::new();
    for _ in 0..30 {
        let r = fy.get("/").unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let j = r.json();
        assert_eq!(j["greeting"], "hello from a schema created by on_start");
        let pid = j["pid"].as_i64().unwrap();
        opened_by
            .entry(pid)
            .or_default()
            .insert(j["connection_opened_by_pid"].as_i64().unwrap());
        randoms.insert(j["random"].to_string());
    }
    assert_eq!(opened_by.len(), 3, "three workers answered: {opened_by:?}");
    for (pid, openers) in &opened_by {
        assert_eq!(
            openers,
            &HashSet::from([*pid]),
            "worker {pid} only used connections it opened itself"
        );
    }
    assert!(
        randoms.len() >= 3,
        "per-worker seeds give different random streams: {randoms:?}"
    );
    assert_eq!(
        fy.metric(r#"forkyard_hook_runs_total{hook="initdb",phase="on_start",pool=""}"#),
        Some(1.0)
    );
}
