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

/// A tiny TCP "database" for `tests/fixtures/tcpdb.py`: it answers the example's
/// queries with fixed rows and records which client connection each process's
/// queries arrive on.
struct TinyDb {
    port: u16,
    /// Connection number → the pids whose queries came on it.
    seen: std::sync::Arc<std::sync::Mutex<HashMap<usize, HashSet<i64>>>>,
}

impl TinyDb {
    fn start() -> TinyDb {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen =
            std::sync::Arc::new(std::sync::Mutex::new(HashMap::<usize, HashSet<i64>>::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for (id, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { continue };
                let record = record.clone();
                std::thread::spawn(move || {
                    let reader = BufReader::new(conn.try_clone().unwrap());
                    for line in reader.lines().map_while(Result::ok) {
                        let q: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                        if let Some(pid) = q["pid"].as_i64() {
                            record.lock().unwrap().entry(id).or_default().insert(pid);
                        }
                        let sql = q["sql"].as_str().unwrap_or_default().to_uppercase();
                        let answer = if sql.contains("COUNT(") {
                            serde_json::json!({"columns": ["count_1"], "rows": [[1]]})
                        } else if sql.contains("FROM GREETINGS") {
                            serde_json::json!({"columns": ["id", "text"], "rows": [[1, "hello from a tiny TCP database"]]})
                        } else {
                            serde_json::json!({"columns": [], "rows": [], "rowcount": 0})
                        };
                        if conn.write_all(format!("{answer}\n").as_bytes()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        TinyDb { port, seen }
    }

    fn connections(&self) -> HashMap<usize, HashSet<i64>> {
        self.seen.lock().unwrap().clone()
    }
}

/// Run the example preloaded against a fresh tiny database, `requests` GETs;
/// returns the database's connections and the pids of the workers that answered.
fn preloaded_against_tiny_db(
    venv: &Path,
    yaml: &str,
) -> (HashMap<usize, HashSet<i64>>, HashSet<i64>, HashSet<i64>) {
    let db = TinyDb::start();
    let ports = free_ports(10);
    let fy = Forkyard::builder(yaml)
        .env("VENV", venv)
        .env("DATABASE_URL", format!("tcpdb://127.0.0.1:{}/", db.port))
        .env("PYTHONPATH", repo().join("tests/fixtures"))
        .env("WORKER_PORTS", format!("{ports}-{}", ports + 9))
        .start();
    fy.wait_workers_ready("web", 3);
    let (mut workers, mut openers) = (HashSet::new(), HashSet::new());
    for _ in 0..30 {
        let r = fy.get("/").unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let j = r.json();
        assert_eq!(j["greeting"], "hello from a tiny TCP database");
        workers.insert(j["pid"].as_i64().unwrap());
        openers.insert(j["connection_opened_by_pid"].as_i64().unwrap());
    }
    assert_eq!(workers.len(), 3, "three workers answered");
    (db.connections(), workers, openers)
}

#[test]
fn preloaded_pyramid_sqlalchemy_workers_share_the_import_time_connection_unless_post_fork_disposes_it(
) {
    let Some(venv) = venv() else { return };
    let yaml =
        std::fs::read_to_string(repo().join("examples/pyramid-sqlalchemy/preload.yaml")).unwrap();
    let dispose = "        - { name: dispose, call: \"models:engine.dispose\" }\n";
    assert!(yaml.contains(dispose), "the example declares the dispose");

    // Without the declared action: the workers' queries arrive on the connection
    // the preloader opened at import, several worker pids on one connection.
    let (connections, workers, openers) =
        preloaded_against_tiny_db(&venv, &yaml.replace(dispose, ""));
    let shared = connections
        .values()
        .map(|pids| pids.intersection(&workers).count())
        .max()
        .unwrap_or(0);
    assert!(
        shared >= 2,
        "several workers on one connection without dispose: {connections:?} (workers {workers:?})"
    );
    // (Which process opened the connection a worker ends up with is not asserted:
    // workers writing on one socket read each other's answers, and a confused
    // worker may drop it and open its own. That is the hazard.)
    let _ = openers;

    // With `post_fork: [{ call: "models:engine.dispose" }]`: every pid has its own.
    let (connections, workers, openers) = preloaded_against_tiny_db(&venv, &yaml);
    for pids in connections.values() {
        assert_eq!(pids.len(), 1, "one process per connection: {connections:?}");
    }
    for w in &workers {
        assert!(
            connections.values().any(|pids| pids.contains(w)),
            "worker {w} queried on a connection of its own: {connections:?}"
        );
    }
    assert_eq!(
        openers, workers,
        "each worker opened the connection it used"
    );
}

#[test]
fn pyramid_sqlalchemy_runs_preloaded_on_sqlite() {
    let Some(venv) = venv() else { return };
    let yaml =
        std::fs::read_to_string(repo().join("examples/pyramid-sqlalchemy/preload.yaml")).unwrap();
    let db = tempfile::tempdir().unwrap();
    let ports = free_ports(10);
    let fy = Forkyard::builder(&yaml)
        .env("VENV", &venv)
        .env(
            "DATABASE_URL",
            format!("sqlite:///{}", db.path().join("app.db").display()),
        )
        .env("WORKER_PORTS", format!("{ports}-{}", ports + 9))
        .start();
    fy.wait_workers_ready("web", 3);
    let mut randoms = HashSet::new();
    let mut pids = HashSet::new();
    for _ in 0..30 {
        let j = fy.get("/").unwrap().json();
        assert_eq!(j["greeting"], "hello from a schema created by on_start");
        assert_eq!(j["connection_opened_by_pid"], j["pid"], "{j}");
        pids.insert(j["pid"].to_string());
        randoms.insert(j["random"].to_string());
    }
    assert_eq!(pids.len(), 3);
    assert_eq!(randoms.len(), 30, "reseeded per worker: no number repeats");
    for hook in ["dispose", "reseed"] {
        let series =
            format!(r#"forkyard_hook_runs_total{{hook="{hook}",phase="post_fork",pool="web"}}"#);
        assert!(fy.metric(&series).unwrap_or(0.0) >= 3.0, "{series}");
    }
}
