//! The Grafana dashboard is proven against a real Prometheus: forkyard runs a config
//! that produces restarts of every kind, 5xx answers and traffic, with a preload
//! pool among its pools; Prometheus (Debian's
//! package) scrapes it every second; then every PromQL expression of
//! `dashboards/forkyard.json`, with the dashboard's variables filled in, is evaluated
//! through Prometheus' HTTP API and must return at least one series with a number.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::harness::*;
use crate::metrics::promtool_check_metrics;

/// Grafana's `$__rate_interval` for a 1 s scrape is max(4 × scrape, interval +
/// scrape) = 4 s; one more second of slack for a loaded machine.
const RATE_INTERVAL: &str = "5s";

pub fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo().join("dashboards/forkyard.json"))
        .expect("read dashboards/forkyard.json");
    serde_json::from_str(&text).expect("dashboards/forkyard.json is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// (panel title, expression) for every query of the dashboard.
pub fn expressions(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("every target has an expr");
            out.push((
                p["title"].as_str().unwrap_or("").to_owned(),
                expr.to_owned(),
            ));
        }
    }
    out
}

#[test]
fn dashboard_is_portable_and_well_formed() {
    let d = dashboard();
    // The datasource is a variable, so both file provisioning and the import
    // dialog work (`__inputs` for the dialog, the variable for provisioning).
    assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS");
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["name"] == "DS_PROMETHEUS").unwrap();
    assert_eq!(
        (ds["type"].as_str(), ds["query"].as_str()),
        (Some("datasource"), Some("prometheus"))
    );
    let pool = vars.iter().find(|v| v["name"] == "pool").unwrap();
    assert_eq!(pool["type"], "query");
    assert_eq!(pool["datasource"]["uid"], "${DS_PROMETHEUS}");

    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id in {p}"
        );
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{g}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        }
    }
    let types: BTreeSet<&str> = panels(&d)
        .iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert!(
        types.contains("stat") && types.contains("timeseries"),
        "{types:?}"
    );
    let titles: Vec<String> = panels(&d)
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for wanted in [
        "workers ready / total",
        "requests/s",
        "p99 latency",
        "5xx ratio",
        "restarts (last hour)",
        "restarts by reason",
        "hook failures by phase and hook",
        "hook duration (p99)",
        "degraded pools",
        "worker memory (rss)",
        "worker memory (pss)",
        "worker unique memory (uss)",
        "pool memory (pss): workers and preloader",
        "worker cpu",
        "config reloads",
        "worker metrics scrape errors",
    ] {
        assert!(
            titles.iter().any(|t| t == wanted),
            "no panel {wanted:?} in {titles:?}"
        );
    }
}

/// Percent-encode a query-string value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl Prometheus {
    fn start(bin: &std::path::Path, target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: forkyard\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_ports(1)).parse().unwrap();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            addr,
            _dir: dir,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn api(&self, path: &str) -> Option<Value> {
        let r = http_get(self.addr, path, &[]).ok()?;
        serde_json::from_str(&r.body).ok()
    }

    /// An instant query: the result vector, or the error text.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let v = self
            .api(&format!("/api/v1/query?query={}", encode(expr)))
            .ok_or("no answer from Prometheus")?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a query result has a sample that is a number (not NaN).
fn has_number(result: &[Value]) -> bool {
    result.iter().any(|s| {
        s["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| !v.is_nan())
    })
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let Some(prometheus) = tool("prometheus", "Debian package prometheus") else {
        return;
    };
    // web: healthy workers that crash on /crash (exit_code) and get kill -9 (signal);
    // each spawn's post_spawn warm-up expects a status the fixture never sends, so
    // it fails (http_status) and, with `skip`, the worker is used anyway.
    // With max_in_flight 1, the /sleep load below keeps requests in the queue.
    // Its `metrics:` path answers JSON, not Prometheus text: scrape errors (parse).
    // slow: a worker that never becomes ready, killed after 1s (boot_timeout).
    // A forkyard-wide on_start check fails too (exit), with `skip`.
    let web = fixture_pool(
        "web",
        2,
        "    max_in_flight: 1\n    queue: { max: 100, timeout: \"30s\" }\n    metrics: { path: \"/\" }\n    hooks:\n      post_spawn: [{ name: warm, http: { path: \"/\", expect_status: 204 }, on_failure: skip }]\n",
    );
    let slow = fixture_pool(
        "slow",
        1,
        "    env: { FIXTURE_NEVER_READY: \"1\" }\n    ready: { tcp: true, timeout: \"1s\" }\n",
    );
    // pre: a preload pool (its preloader's PSS and restarts).
    let app_dir = tempfile::tempdir().unwrap();
    let pre = crate::preload::preload_pool("pre", 1, app_dir.path(), "");
    // hung: every request for /stuck hangs; after 1s the worker is killed (hangs).
    let hung = fixture_pool("hung", 1, "    hang: { after: \"1s\" }\n");
    let fy = Forkyard::start(&config_with(
        &[web, slow, pre, hung],
        "routes:\n  - { path_prefix: \"/slow\", pool: slow }\n  - { path_prefix: \"/pre\", pool: pre }\n  - { path_prefix: \"/stuck\", pool: hung }\n  - { pool: web }\nhooks:\n  on_start: [{ name: check, run: [\"false\"], on_failure: skip }]\n",
    ));
    wait_for_or_log(&fy, BOOT, "2 ready web workers", || {
        (fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#)? == 2.0).then_some(())
    });
    let prom = Prometheus::start(&prometheus, fy.admin);
    wait_for_or_log(&fy, BOOT, "Prometheus to be ready", || {
        http_get(prom.addr, "/-/ready", &[])
            .ok()
            .filter(|r| r.status == 200)
    });

    // One reload (the file is unchanged, so it succeeds and changes nothing).
    let r = http_post(fy.admin, "/reload").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // One restart by signal, before any crash could beat the kill to the worker.
    let pid = wait_for_or_log(&fy, SHORT, "a web worker's pid", || {
        fy.status()["pools"][0]["workers"][0]["pid"].as_i64()
    });
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    wait_for_or_log(&fy, SHORT, "the restart by signal", || {
        (fy.metric(r#"forkyard_worker_restarts_total{pool="web",reason="signal"}"#)? >= 1.0)
            .then_some(())
    });
    // Traffic for the rest of the test: mostly 200s, a crash now and then (502 and
    // a restart by exit_code), and requests for the pool that is never ready (503).
    let traffic = [
        ("/", 10),
        ("/crash", 1000),
        ("/slow", 1000),
        ("/stuck", 1500),
    ]
    .map(|(path, ms)| {
        Load::to(fy.proxy)
            .get(path)
            .every(Duration::from_millis(ms))
            .start()
    });
    // Four clients for two workers that take one request each: two wait.
    let queued = Load::to(fy.proxy).clients(4).get("/sleep?s=0.1").start();

    // The `pool` variable, as Grafana resolves it: label_values(forkyard_workers, pool).
    let var = &dashboard()["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "pool")
        .unwrap()["query"]["query"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(var, "label_values(forkyard_workers, pool)");
    let pools: Vec<String> = wait_for_or_log(&fy, BOOT, "the pool variable's values", || {
        let v = prom.api(&format!(
            "/api/v1/label/pool/values?match[]={}",
            encode("forkyard_workers")
        ))?;
        let values: Vec<String> = v["data"]
            .as_array()?
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        (values.len() == 4).then_some(values)
    });
    assert_eq!(pools, ["hung", "pre", "slow", "web"]);
    // Every pool selected, as the multi-value variable renders it.
    let pool_value = format!("({})", pools.join("|"));

    let queries: Vec<(String, String, String)> = expressions(&dashboard())
        .into_iter()
        .map(|(title, expr)| {
            let filled = expr
                .replace("$__rate_interval", RATE_INTERVAL)
                .replace("$pool", &pool_value);
            assert!(!filled.contains('$'), "unfilled variable in {expr}");
            (title, expr, filled)
        })
        .collect();
    assert!(queries.len() >= 20, "only {} queries", queries.len());

    let mut last_failures = Vec::new();
    let done = wait_for_ok(Duration::from_secs(120), || {
        last_failures.clear();
        for (title, expr, filled) in &queries {
            match prom.query(filled) {
                Err(e) => last_failures.push(format!("{title}: {expr}\n    error: {e}")),
                Ok(r) if has_number(&r) => {}
                Ok(r) => last_failures.push(format!(
                    "{title}: {expr}\n    {} series, none with a number: {r:?}",
                    r.len()
                )),
            }
        }
        last_failures.is_empty()
    });
    let [ok, crashes, unready, stuck] = traffic.map(Load::finish);
    assert!(ok.ok > 0 && crashes.sent() > 0 && unready.sent() > 0 && stuck.sent() > 0);
    assert!(queued.finish().ok > 0);
    assert!(
        done,
        "{} of {} dashboard queries return no data:\n  {}\nforkyard log tail:\n{}\nprometheus log tail:\n{}",
        last_failures.len(),
        queries.len(),
        last_failures.join("\n  "),
        tail(&fy.log(), 30),
        tail(&prom.log(), 15),
    );
    announce(&format!(
        "dashboard: all {} queries returned data from a real Prometheus",
        queries.len()
    ));
    assert!(fy.metric(r#"forkyard_config_reloads_total{result="ok"}"#) >= Some(1.0));
    // The hook failures are there, by phase and hook.
    for series in [
        r#"forkyard_hook_failures_total{hook="warm",phase="post_spawn",pool="web",reason="http_status"}"#,
        r#"forkyard_hook_failures_total{hook="check",phase="on_start",pool="",reason="exit"}"#,
    ] {
        let n = fy.metric(series).unwrap_or(0.0);
        assert!(n >= 1.0, "{series} = {n}");
    }
    // A hang really happened (the panel's counter is pre-created at 0).
    let n = fy
        .metric(r#"forkyard_worker_hangs_total{pool="hung"}"#)
        .unwrap_or(0.0);
    assert!(
        n >= 1.0,
        "forkyard_worker_hangs_total{{pool=\"hung\"}} = {n}"
    );
    // Every kind of restart really happened.
    for reason in ["exit_code", "signal", "boot_timeout"] {
        let series = format!(
            "forkyard_worker_restarts_total{{pool=\"{}\",reason=\"{reason}\"}}",
            if reason == "boot_timeout" {
                "slow"
            } else {
                "web"
            }
        );
        let n = fy.metric(&series).unwrap_or(0.0);
        assert!(n >= 1.0, "{series} = {n}");
    }
    // And the live scrape, after all that, is still clean for promtool.
    promtool_check_metrics(&fy.metrics());
}

/// Poll `f` until it returns true or `timeout` passes; false on timeout.
fn wait_for_ok(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
