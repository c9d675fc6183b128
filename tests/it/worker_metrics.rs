//! Merged worker metrics (`metrics:` of a pool): workers running the real
//! `prometheus_client` (tests/fixtures/metrics_app.py, from target/venv) are
//! scraped through forkyard's `/metrics`. The merged counters equal the requests
//! sent and never decrease across a `kill -9`, a rolling restart and a reload;
//! gauges are per worker; histograms are summed; Unix-socket workers and preload
//! pools are merged too; a worker whose endpoint is broken or hangs costs at most
//! the timeout and is counted, and forkyard's own metrics are served all the same.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::examples::venv;
use crate::harness::*;
use crate::metrics::promtool_check_metrics;

fn metrics_app() -> std::path::PathBuf {
    repo().join("tests/fixtures/metrics_app.py")
}

/// A pool of the metrics app on free ports, with `metrics:` on.
fn app_pool(name: &str, workers: u16, venv: &Path, extra: &str) -> String {
    let port = free_ports(workers + 2);
    format!(
        r#"  {name}:
    command: ["{python}", "{app}", "--port", "{{port}}"]
    workers: {workers}
    ports: "{port}-{end}"
    ready: {{ tcp: true, timeout: "60s" }}
    restart: {{ backoff_min: "50ms", backoff_max: "500ms" }}
    stop: {{ grace: "5s" }}
    metrics: {{ path: "/metrics", timeout: "5s" }}
{extra}"#,
        python = venv.join("bin/python3").display(),
        app = metrics_app().display(),
        end = port + workers + 1,
    )
}

/// `n` GETs of `path` through the proxy, each answered 200.
fn send(fy: &Forkyard, path: &str, n: usize) {
    for _ in 0..n {
        let r = fy.get(path).expect("a request through the proxy");
        assert_eq!(r.status, 200, "{r:?}");
    }
}

/// Wait until `series` is `want` in forkyard's `/metrics`.
fn wait_metric(fy: &Forkyard, series: &str, want: f64) {
    wait_for_or_log(fy, SHORT, &format!("{series} = {want}"), || {
        (fy.metric(series)? == want).then_some(())
    });
}

const TOTAL: &str = r#"app_requests_total{pool="web",path="/"}"#;
const COUNT: &str = r#"app_latency_seconds_count{pool="web"}"#;

#[test]
fn merged_counters_never_decrease_across_a_kill_and_a_rolling_restart() {
    let Some(venv) = venv() else { return };
    let fy = Forkyard::start(&config_with(&[app_pool("web", 3, &venv, "")], ""));
    fy.wait_workers_ready("web", 3);
    // Scrape all along: the merged counter and histogram count, from one scrape each.
    let admin = fy.admin;
    let sampler = Sampler::start(move || {
        let text = http_get(admin, "/metrics", &[]).ok()?.body;
        Some((metric_value(&text, TOTAL)?, metric_value(&text, COUNT)?))
    });

    send(&fy, "/", 30);
    wait_metric(&fy, TOTAL, 30.0);
    let text = fy.metrics();
    // Gauges: one per worker, labelled with its slot.
    let before = fy.slot_pids(0);
    assert_eq!(before.len(), 3, "{before:?}");
    for (slot, pid) in &before {
        let series = format!(r#"app_pid{{pool="web",worker="{slot}"}}"#);
        assert_eq!(
            metric_value(&text, &series),
            Some(*pid as f64),
            "{series}\n{text}"
        );
    }
    // Histograms: summed per bucket.
    for (series, want) in [
        (r#"app_latency_seconds_count{pool="web"}"#, 30.0),
        (r#"app_latency_seconds_bucket{pool="web",le="0.001"}"#, 0.0),
        (r#"app_latency_seconds_bucket{pool="web",le="0.005"}"#, 30.0),
        (r#"app_latency_seconds_bucket{pool="web",le="+Inf"}"#, 30.0),
    ] {
        assert_eq!(metric_value(&text, series), Some(want), "{series}\n{text}");
    }
    // `_created` series are dropped; prometheus_client's process metrics join
    // forkyard's own family of that name; families appear once.
    assert!(!text.contains("_created"), "{text}");
    assert!(
        text.contains("\nprocess_cpu_seconds_total{pool=\"web\"} "),
        "{text}"
    );
    assert_eq!(text.matches("# TYPE app_requests_total counter").count(), 1);
    assert_eq!(text.matches("# TYPE process_cpu_seconds_total").count(), 1);
    // prometheus_client's default collectors agree with forkyard's own families.
    for reason in ["conflict", "parse", "too_many_series"] {
        let series =
            format!(r#"forkyard_worker_metrics_errors_total{{pool="web",reason="{reason}"}}"#);
        assert_eq!(metric_value(&text, &series), Some(0.0), "{series}\n{text}");
    }

    // kill -9 the worker of slot 0: its count stays in the pool's total.
    let (_, victim) = before[0];
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    wait_for_or_log(&fy, SHORT, "slot 0 back with a new process", || {
        let now = fy.slot_pids(0);
        (now.len() == 3
            && now[0].1 != victim
            && fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#)? == 3.0)
            .then_some(())
    });
    send(&fy, "/", 20);
    wait_metric(&fy, TOTAL, 50.0);
    // The gauge of slot 0 is its new process's.
    let now = fy.slot_pids(0);
    let series = r#"app_pid{pool="web",worker="0"}"#;
    wait_metric(&fy, series, now[0].1 as f64);

    // A rolling restart replaces every worker.
    let r = http_post(fy.admin, "/pools/web/restart").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    wait_for_or_log(&fy, SHORT, "3 new workers on /status", || {
        let now = fy.slot_pids(0);
        let new = now.len() == 3
            && now
                .iter()
                .all(|(_, pid)| !before.iter().any(|(_, old)| old == pid));
        new.then_some(())
    });
    send(&fy, "/", 10);
    wait_metric(&fy, TOTAL, 60.0);
    wait_metric(&fy, COUNT, 60.0);

    let samples = sampler.finish();
    assert!(samples.len() > 10, "only {} scrapes", samples.len());
    for pair in samples.windows(2) {
        let ((_, (a, a_count)), (_, (b, b_count))) = (pair[0], pair[1]);
        assert!(b >= a, "the merged counter went down from {a} to {b}");
        assert!(
            b_count >= a_count,
            "the merged histogram count went down from {a_count} to {b_count}"
        );
    }
    promtool_check_metrics(&fy.metrics());
}

#[test]
fn broken_worker_endpoints_cost_at_most_the_timeout_and_are_counted() {
    // Fixture workers (standard library only): `/` answers JSON (not Prometheus
    // text), `/status?code=404` a 404, `/sleep?s=60` nothing for a minute, and
    // `closed` stops accepting connections. The hung one has a short timeout, the
    // others a long one, so that a loaded machine makes none of them time out.
    let broken = |name: &str, path: &str| {
        let timeout = if name == "hung" { "500ms" } else { "5s" };
        fixture_pool(
            name,
            1,
            &format!("    metrics: {{ path: \"{path}\", timeout: \"{timeout}\" }}\n"),
        )
    };
    let closed = broken("closed", "/metrics");
    let closed_port = first_port(&closed);
    let fy = Forkyard::start(&config_with(
        &[
            broken("garbage", "/"),
            broken("missing", "/status?code=404"),
            broken("hung", "/sleep?s=60"),
            closed,
        ],
        "routes:\n  - { pool: garbage }\n",
    ));
    for pool in ["garbage", "missing", "hung", "closed"] {
        fy.wait_workers_ready(pool, 1);
    }
    let closer = format!("127.0.0.1:{closed_port}").parse().unwrap();
    let r = http_get(closer, "/close-listener", &[]).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    wait_for(SHORT, "the closed worker to refuse connections", || {
        std::net::TcpStream::connect(closer).is_err().then_some(())
    });
    for _ in 0..3 {
        let started = Instant::now();
        let r = fy.admin_get("/metrics").unwrap();
        let took = started.elapsed();
        assert_eq!(r.status, 200);
        // Far below the minute the hung worker takes: its 500ms (or the 5s the
        // others may take on a loaded machine), plus slack.
        assert!(
            took < Duration::from_secs(5 + 2),
            "/metrics took {took:?} with a hung worker and a 500ms timeout"
        );
        let own = r#"forkyard_workers{pool="hung",state="ready"} 1"#;
        assert!(r.body.contains(own), "{}", r.body);
    }
    let text = fy.metrics();
    for (pool, reason) in [
        ("garbage", "parse"),
        ("missing", "http_status"),
        ("hung", "timeout"),
        ("closed", "connect"),
    ] {
        let series =
            format!(r#"forkyard_worker_metrics_errors_total{{pool="{pool}",reason="{reason}"}}"#);
        let n = metric_value(&text, &series).unwrap_or(0.0);
        assert!(n >= 3.0, "{series} = {n}\n{text}");
    }
    // One log line per worker whose outcome changed, not one per scrape.
    let log = fy.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("worker_metrics_error") && l.contains("garbage"))
        .count();
    assert_eq!(lines, 1, "{log}");
    promtool_check_metrics(&text);
}

#[test]
fn unix_socket_workers_and_preload_pools_are_merged_and_a_reload_turns_it_on() {
    let Some(venv) = venv() else { return };
    let python = venv.join("bin/python3");
    let fixtures = repo().join("tests/fixtures");
    let uds = format!(
        r#"  uds:
    command: ["{python}", "{app}", "--unix", "{{socket}}"]
    workers: 2
    bind: unix
    ready: {{ tcp: true, timeout: "60s" }}
    stop: {{ grace: "5s" }}
    metrics: {{ path: "/metrics", timeout: "5s" }}
"#,
        python = python.display(),
        app = metrics_app().display(),
    );
    let port = free_ports(4);
    let pre = |metrics: &str| {
        format!(
            r#"  pre:
    preload: {{ app: "metrics_app:app", server: waitress, python: "{python}" }}
    cwd: "{fixtures}"
    env: {{ PYTHONPATH: "{fixtures}", PYTHONDONTWRITEBYTECODE: "1" }}
    workers: 2
    ports: "{port}-{end}"
    stop: {{ grace: "5s" }}
{metrics}"#,
            python = python.display(),
            fixtures = fixtures.display(),
            end = port + 3,
        )
    };
    let routes = "routes:\n  - { path_prefix: \"/pre\", pool: pre }\n  - { pool: uds }\n";
    let fy = Forkyard::start(&config_with(&[uds.clone(), pre("")], routes));
    fy.wait_workers_ready("uds", 2);
    fy.wait_workers_ready("pre", 2);
    send(&fy, "/", 5);
    send(&fy, "/pre/x", 3);
    wait_metric(&fy, r#"app_requests_total{pool="uds",path="/"}"#, 5.0);
    let text = fy.metrics();
    assert!(
        text.contains(r#"app_pid{pool="uds",worker="1"} "#),
        "{text}"
    );
    // No `metrics:` for pre yet: none of its app's series.
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("app_") && l.contains(r#"pool="pre""#)),
        "{text}"
    );

    // `metrics:` is applied at once: the next scrape merges the pool.
    let pre_on = pre("    metrics: { path: \"/metrics\", timeout: \"5s\" }\n");
    let r = fy.reload_with(&config_with(&[uds.clone(), pre_on.clone()], routes));
    assert_eq!(r.status, 200, "{r:?}");
    fy.wait_workers_ready("pre", 2);
    // The reload rolled pre onto a new preloader: its old workers, drained, were
    // scraped once more on their way out (metrics: was on by then), so the three
    // requests they served count.
    let pre_total = r#"app_requests_total{pool="pre",path="/pre/x"}"#;
    wait_metric(&fy, pre_total, 3.0);
    send(&fy, "/pre/x", 4);
    wait_metric(&fy, pre_total, 7.0);
    wait_metric(&fy, r#"app_requests_total{pool="uds",path="/"}"#, 5.0);
    let text = fy.metrics();
    assert!(
        text.contains(r#"app_pid{pool="pre",worker="0"} "#),
        "{text}"
    );
    promtool_check_metrics(&text);

    // Turned off by a reload: the pool's merged series are gone at the next scrape.
    let uds_off = uds.replace("    metrics: { path: \"/metrics\", timeout: \"5s\" }\n", "");
    assert_ne!(uds_off, uds);
    let r = fy.reload_with(&config_with(&[uds_off, pre_on], routes));
    assert_eq!(r.status, 200, "{r:?}");
    let text = fy.metrics();
    assert!(!text.contains(r#"app_requests_total{pool="uds""#), "{text}");
    assert_eq!(
        metric_value(&text, r#"forkyard_worker_metrics_series{pool="uds"}"#),
        Some(0.0)
    );
    assert_eq!(metric_value(&text, pre_total), Some(7.0), "{text}");
}

#[test]
fn a_worker_stopped_on_purpose_is_scraped_once_more_so_its_last_requests_count() {
    let Some(venv) = venv() else { return };
    let fy = Forkyard::start(&config_with(&[app_pool("web", 2, &venv, "")], ""));
    fy.wait_workers_ready("web", 2);
    assert_eq!(fy.metric(TOTAL), None, "no request yet");
    // Requests that no scrape of /metrics sees before their workers are replaced:
    // only the scrape after each old worker was drained can count them.
    send(&fy, "/", 10);
    let r = http_post(fy.admin, "/pools/web/restart").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    wait_metric(&fy, TOTAL, 10.0);
    send(&fy, "/", 5);
    wait_metric(&fy, TOTAL, 15.0);
}
