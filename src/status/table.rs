//! The status report as rows of text: a fixed-width table for the terminal
//! (`forkyard status`) and an HTML page for people (`GET /` on the admin listener).
//! Both show the same columns, from the same [`rows`].

use std::fmt::Write as _;

use super::report::{StatusReport, WorkerReport};

pub(crate) const COLUMNS: [&str; 12] = [
    "POOL",
    "SLOT",
    "PID",
    "STATE",
    "UPTIME",
    "RESTARTS",
    "LAST EXIT",
    "REQUESTS",
    "RSS",
    "PSS",
    "USS",
    "CPU",
];

/// One row of cells per worker, in pool then slot order.
pub(crate) fn rows(report: &StatusReport) -> Vec<[String; 12]> {
    let mut out = Vec::new();
    for pool in &report.pools {
        for w in &pool.workers {
            out.push(row(&pool.name, w));
        }
    }
    out
}

/// "signal SIGKILL, 2s ago", or "reload (exit code 0), 3m05s ago".
fn last_exit(e: &super::report::ExitReport) -> String {
    // "signal SIGKILL" and "exit code 3" say their reason already.
    let what = if e.status.starts_with(&e.reason.replace('_', " ")) {
        e.status.clone()
    } else {
        format!("{} ({})", e.reason, e.status)
    };
    format!("{what}, {} ago", duration(e.seconds_ago))
}

fn row(pool: &str, w: &WorkerReport) -> [String; 12] {
    let dash = || "-".to_owned();
    [
        pool.to_owned(),
        w.slot.to_string(),
        w.pid.map_or_else(dash, |p| p.to_string()),
        w.state.clone(),
        w.uptime_seconds.map_or_else(dash, duration),
        w.restarts.to_string(),
        w.last_exit.as_ref().map_or_else(dash, last_exit),
        w.requests_served.to_string(),
        w.rss_bytes.map_or_else(dash, bytes),
        w.pss_bytes.map_or_else(dash, bytes),
        w.uss_bytes.map_or_else(dash, bytes),
        w.cpu_seconds.map_or_else(dash, |c| format!("{c:.2}s")),
    ]
}

pub(crate) const PRELOADER_COLUMNS: [&str; 9] = [
    "POOL",
    "PRELOADER",
    "PID",
    "STATE",
    "UPTIME",
    "RESTARTS",
    "LAST EXIT",
    "PSS",
    "LAST ERROR",
];

/// One row per live preloader (preload pools only).
pub(crate) fn preloader_rows(report: &StatusReport) -> Vec<[String; 9]> {
    let dash = || "-".to_owned();
    let mut out = Vec::new();
    for pool in &report.pools {
        for p in &pool.preloaders {
            out.push([
                pool.name.clone(),
                format!("generation {}", p.generation),
                p.pid.map_or_else(dash, |p| p.to_string()),
                p.state.clone(),
                p.uptime_seconds.map_or_else(dash, duration),
                p.restarts.to_string(),
                p.last_exit.as_ref().map_or_else(dash, last_exit),
                p.pss_bytes.map_or_else(dash, bytes),
                // The first line of the error; /status has the traceback's tail.
                p.last_error
                    .as_deref()
                    .and_then(|e| e.lines().next())
                    .map_or_else(dash, str::to_owned),
            ]);
        }
    }
    out
}

/// `42s`, `3m05s`, `2h07m`, `3d04h`.
pub(crate) fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `812K`, `23.4M`, `1.2G` (binary units).
pub(crate) fn bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1024.0 * 1024.0 {
        format!("{:.0}K", n / 1024.0)
    } else if n < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1}M", n / (1024.0 * 1024.0))
    } else {
        format!("{:.1}G", n / (1024.0 * 1024.0 * 1024.0))
    }
}

pub(crate) const HANG_COLUMNS: [&str; 7] =
    ["POOL", "SLOT", "PID", "REQUEST", "WAITED", "WHEN", "DUMP"];

/// One row per kept hang record (`hang:`), oldest first; the dumps themselves are
/// in `/status`.
pub(crate) fn hang_rows(report: &StatusReport) -> Vec<[String; 7]> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut out = Vec::new();
    for pool in &report.pools {
        for h in &pool.hangs {
            let killed = if h.killed { ", killed" } else { "" };
            out.push([
                pool.name.clone(),
                h.worker.to_string(),
                h.pid.to_string(),
                format!("{} {} ({})", h.method, h.path, h.request_id),
                duration(h.age_seconds),
                format!("{} ago{killed}", duration(now - h.at_unix)),
                h.dump_result.clone(),
            ]);
        }
    }
    out
}

pub(crate) const HOOK_COLUMNS: [&str; 7] = [
    "POOL",
    "PHASE",
    "HOOK",
    "RUNS",
    "FAILURES",
    "LAST RESULT",
    "LAST RUN",
];

/// One row per declared hook, in declaration order.
pub(crate) fn hook_rows(report: &StatusReport) -> Vec<[String; 7]> {
    report
        .hooks
        .iter()
        .map(|h| {
            let last_run = match (h.last_run_seconds_ago, h.last_duration_seconds) {
                (Some(ago), Some(took)) => format!("{} ago, took {took:.2}s", duration(ago)),
                (Some(ago), None) => format!("{} ago", duration(ago)),
                _ => "-".to_owned(),
            };
            [
                if h.pool.is_empty() {
                    "-".into()
                } else {
                    h.pool.clone()
                },
                h.phase.clone(),
                h.hook.clone(),
                h.runs.to_string(),
                h.failures.to_string(),
                h.last_result
                    .clone()
                    .unwrap_or_else(|| "not run yet".into()),
                last_run,
            ]
        })
        .collect()
}

/// A one-line summary: readiness, then ready/total per pool.
pub(crate) fn summary(report: &StatusReport) -> String {
    let pools: Vec<String> = report
        .pools
        .iter()
        .map(|p| {
            let degraded = if p.degraded { " (degraded)" } else { "" };
            format!(
                "{} {}/{} ready{degraded}",
                p.name, p.workers_ready, p.workers_total
            )
        })
        .collect();
    let ready = match &report.not_ready_reason {
        None => "ready".to_owned(),
        Some(why) => format!("NOT READY ({why})"),
    };
    format!(
        "forkyard {} (pid {}, up {}): {}; {}",
        report.version,
        report.pid,
        duration(report.uptime_seconds),
        ready,
        pools.join(", ")
    )
}

/// The fixed-width terminal table, with the hooks below it when there are any.
pub fn text(report: &StatusReport) -> String {
    let mut out = summary(report);
    out.push_str("\n\n");
    out.push_str(&aligned(&COLUMNS.map(str::to_owned), &rows(report)));
    let preloaders = preloader_rows(report);
    if !preloaders.is_empty() {
        out.push('\n');
        out.push_str(&aligned(&PRELOADER_COLUMNS.map(str::to_owned), &preloaders));
    }
    let hangs = hang_rows(report);
    if !hangs.is_empty() {
        out.push('\n');
        out.push_str(&aligned(&HANG_COLUMNS.map(str::to_owned), &hangs));
    }
    if !report.hooks.is_empty() {
        out.push('\n');
        out.push_str(&aligned(
            &HOOK_COLUMNS.map(str::to_owned),
            &hook_rows(report),
        ));
    }
    out
}

fn aligned<const N: usize>(head: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = head.each_ref().map(|h| h.chars().count());
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(head).chain(rows) {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The admin page: the same tables as HTML, with room for what its script
/// (`/page.js`, served by `admin`) adds: a chart row per pool, the hang dumps and
/// the live event log. The script refreshes the tables every `refresh_seconds`;
/// without scripts a `<meta http-equiv="refresh">` reloads the whole page instead.
pub(crate) fn html(report: &StatusReport, refresh_seconds: u32) -> String {
    let mut h = String::with_capacity(8 * 1024);
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<noscript><meta http-equiv="refresh" content="{refresh_seconds}"></noscript>
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>forkyard status</title>
<link rel="stylesheet" href="/page.css">
<script src="/page.js" defer></script>
</head><body>
<header><h1>forkyard {version}</h1></header>
"#,
        version = escape(&report.version),
    );
    let (class, ready) = match &report.not_ready_reason {
        None => ("ready", "ready".to_owned()),
        Some(why) => ("not-ready", format!("not ready: {}", escape(why))),
    };
    let pools: Vec<String> = report
        .pools
        .iter()
        .map(|p| {
            let degraded = if p.degraded {
                " <span class=\"not-ready\">(degraded)</span>"
            } else {
                ""
            };
            format!(
                "{} {}/{} ready{degraded}",
                escape(&p.name),
                p.workers_ready,
                p.workers_total
            )
        })
        .collect();
    let _ = writeln!(
        h,
        r#"<div id="live"><p class="summary">pid {} &middot; up {} &middot; <span class="{class}" id="readiness">{ready}</span> &middot; {}</p></div>"#,
        report.pid,
        duration(report.uptime_seconds),
        pools.join(", ")
    );
    h.push_str("<section id=\"charts\"></section>\n");
    h.push_str("<div id=\"tables\"><h2>Workers</h2>\n<table id=\"workers\"><thead><tr>");
    for c in COLUMNS {
        let _ = write!(h, "<th>{}</th>", escape(&c.to_lowercase()));
    }
    h.push_str("</tr></thead><tbody>\n");
    for r in rows(report) {
        h.push_str("<tr>");
        for (i, cell) in r.iter().enumerate() {
            let class = match i {
                3 => format!(" class=\"state-{}\"", escape(cell)),
                1 | 2 | 5 | 7..=11 => " class=\"num\"".to_owned(),
                _ => String::new(),
            };
            let _ = write!(h, "<td{class}>{}</td>", escape(cell));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n");
    let preloaders = preloader_rows(report);
    if !preloaders.is_empty() {
        h.push_str("<h2>Preloaders</h2>\n<table id=\"preloaders\"><thead><tr>");
        for c in PRELOADER_COLUMNS {
            let _ = write!(h, "<th>{}</th>", escape(&c.to_lowercase()));
        }
        h.push_str("</tr></thead><tbody>\n");
        for r in preloaders {
            h.push_str("<tr>");
            for (i, cell) in r.iter().enumerate() {
                let class = match i {
                    3 => format!(" class=\"state-{}\"", escape(cell)),
                    2 | 5 | 7 => " class=\"num\"".to_owned(),
                    _ => String::new(),
                };
                let _ = write!(h, "<td{class}>{}</td>", escape(cell));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("<h2>Hooks</h2>\n");
    if report.hooks.is_empty() {
        h.push_str("<p id=\"hooks\">No lifecycle hooks are declared.</p>\n");
    } else {
        h.push_str("<table id=\"hooks\"><thead><tr>");
        for c in HOOK_COLUMNS {
            let _ = write!(h, "<th>{}</th>", escape(&c.to_lowercase()));
        }
        h.push_str("</tr></thead><tbody>\n");
        for r in hook_rows(report) {
            h.push_str("<tr>");
            for (i, cell) in r.iter().enumerate() {
                let class = if i == 3 || i == 4 {
                    " class=\"num\""
                } else {
                    ""
                };
                let _ = write!(h, "<td{class}>{}</td>", escape(cell));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</div>\n");
    h.push_str(
        "<section id=\"hangs\" hidden><h2>Hang dumps</h2><div id=\"hang-list\"></div></section>\n\
         <section id=\"events-panel\"><h2>Events <span id=\"events-state\" class=\"muted\"></span></h2><ol id=\"event-log\"></ol></section>\n",
    );
    let _ = write!(
        h,
        "<footer>Tables refresh every {refresh_seconds}s, charts every 5s (the last 15 minutes); events arrive as they happen. Machine-readable: <a href=\"/status\">/status</a> &middot; <a href=\"/status/history\">/status/history</a> &middot; <a href=\"/events\">/events</a> &middot; <a href=\"/metrics\">/metrics</a> &middot; <a href=\"/readyz\">/readyz</a></footer>\n</body></html>\n"
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::report::{ExitReport, PoolReport};

    fn sample() -> StatusReport {
        StatusReport {
            version: "0.1.0".into(),
            pid: 7,
            uptime_seconds: 75.0,
            ready: false,
            not_ready_reason: Some("no ready worker in pool(s): <api>".into()),
            pools: vec![PoolReport {
                name: "web".into(),
                workers_total: 2,
                workers_ready: 1,
                restarts: 1,
                degraded: false,
                workers: vec![
                    WorkerReport {
                        slot: 0,
                        port: 9001,
                        pid: Some(42),
                        state: "ready".into(),
                        uptime_seconds: Some(3700.0),
                        restarts: 0,
                        last_exit: None,
                        requests_served: 12,
                        rss_bytes: Some(25 * 1024 * 1024),
                        pss_bytes: Some(10 * 1024 * 1024),
                        uss_bytes: Some(4 * 1024 * 1024),
                        cpu_seconds: Some(0.5),
                    },
                    WorkerReport {
                        slot: 1,
                        port: 9002,
                        pid: None,
                        state: "backoff".into(),
                        uptime_seconds: None,
                        restarts: 1,
                        last_exit: Some(ExitReport {
                            reason: "signal".into(),
                            status: "signal SIGKILL".into(),
                            at_unix: 0.0,
                            seconds_ago: 2.0,
                        }),
                        requests_served: 0,
                        rss_bytes: None,
                        pss_bytes: None,
                        uss_bytes: None,
                        cpu_seconds: None,
                    },
                ],
                preloaders: vec![],
                hangs: vec![crate::status::report::HangReport {
                    at_unix: 0.0,
                    worker: 0,
                    pid: 42,
                    method: "GET".into(),
                    path: "/slow".into(),
                    request_id: "abc".into(),
                    age_seconds: 31.0,
                    in_flight: vec![],
                    dump: "Thread 1 (idle)".into(),
                    dump_result: "ok".into(),
                    killed: true,
                }],
            }],
            hooks: vec![],
        }
    }

    #[test]
    fn terminal_table_lines_up() {
        let t = text(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("NOT READY"), "{t}");
        assert!(lines[2].starts_with("POOL  SLOT  PID  STATE"), "{t}");
        assert!(
            lines[3].contains("1h01m") && lines[3].contains("25.0M"),
            "{t}"
        );
        assert!(lines[4].contains(" signal SIGKILL, 2s ago"), "{t}");
        let col = lines[2].find("STATE").unwrap();
        assert_eq!(&lines[3][col..col + 5], "ready");
        assert!(lines[6].starts_with("POOL  SLOT  PID  REQUEST"), "{t}");
        assert!(
            lines[7].contains("GET /slow (abc)") && lines[7].contains("31s"),
            "{t}"
        );
        assert!(
            lines[7].contains("ago, killed") && lines[7].ends_with("ok"),
            "{t}"
        );
    }

    #[test]
    fn html_escapes_and_refreshes() {
        let h = html(&sample(), 2);
        // Without scripts the page reloads itself; with them, page.js refreshes it.
        assert!(h.contains(r#"<noscript><meta http-equiv="refresh" content="2"></noscript>"#));
        assert!(h.contains("&lt;api&gt;") && !h.contains("<api>"));
        assert!(h.contains(r#"<td class="state-backoff">backoff</td>"#));
        // Its one script is a file of forkyard's: no inline script, no inline style.
        assert_eq!(h.matches("<script").count(), 1);
        assert!(h.contains(r#"<script src="/page.js" defer></script>"#));
        assert!(!h.contains("<style") && !h.contains(" style="));
        for id in ["charts", "live", "tables", "hangs", "event-log"] {
            assert!(h.contains(&format!("id=\"{id}\"")), "{id}");
        }
    }

    #[test]
    fn units() {
        assert_eq!(duration(59.9), "59s");
        assert_eq!(duration(90.0), "1m30s");
        assert_eq!(duration(90_000.0), "1d01h");
        assert_eq!(bytes(512 * 1024), "512K");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0G");
    }
}
