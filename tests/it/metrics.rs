//! `/metrics` is valid Prometheus text (checked by the real `promtool`), and every
//! known series exists at 0 before the first event.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::*;

#[test]
fn promtool_accepts_a_live_scrape() {
    let fy = Forkyard::start(&config_with(
        &[fixture_pool("web", 2, ""), fixture_pool("api", 1, "")],
        "routes:\n  - { path_prefix: \"/api\", pool: api }\n  - { pool: web }\n",
    ));
    fy.wait_ready();
    wait_for_or_log(&fy, BOOT, "all 3 workers ready", || {
        let web = fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#)?;
        (web == 2.0).then_some(())
    });
    for _ in 0..5 {
        fy.get("/").unwrap();
    }
    let text = fy.metrics();
    for series in [
        r#"forkyard_worker_restarts_total{pool="api",reason="exit_code"} 0"#,
        r#"forkyard_worker_restarts_total{pool="web",reason="signal"} 0"#,
        r#"forkyard_workers{pool="api",state="backoff"} 0"#,
        r#"forkyard_upstream_connect_errors_total{pool="api"} 0"#,
        r#"forkyard_requests_total{code_class="5xx",pool="api"} 0"#,
        "# TYPE forkyard_request_duration_seconds histogram",
        "forkyard_build_info{version=",
        "process_resident_memory_bytes ",
        r#"forkyard_worker_starts_total{pool="web"} 2"#,
        r#"forkyard_worker_exits_total{pool="api",reason="scale_down"} 0"#,
        r#"forkyard_worker_boot_seconds_count{pool="web"} 2"#,
        r#"forkyard_config_reloads_total{result="error"} 0"#,
        r#"forkyard_worker_start_time_seconds{pool="api",worker="0"} "#,
        r#"forkyard_worker_resident_memory_bytes{pool="web",worker="1"} "#,
        r#"forkyard_worker_cpu_seconds_total{pool="api",worker="0"} "#,
    ] {
        assert!(text.contains(series), "missing {series}:\n{text}");
    }
    promtool_check_metrics(&text);
}

/// `promtool check metrics` on a scrape: no output and exit 0 (lint included).
pub fn promtool_check_metrics(text: &str) {
    let Some(promtool) = tool("promtool", "Debian package prometheus") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
