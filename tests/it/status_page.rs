//! The admin page `/` in a real browser: headless Chromium (Debian's package) renders
//! the workers table, sees the self-refresh, and leaves a screenshot in
//! `target/artifacts/status.png`. Under load, driven over the DevTools protocol,
//! its charts are drawn and move, its event log follows a kill as it happens, and
//! it leaves `target/artifacts/status-page.png` (`make screenshot` copies that to
//! `docs/status-page.png`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

/// Headless, no sandbox (the tests may run as root), no GPU, and nothing that
/// reaches for the network (which is closed).
const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
];

/// Run Chromium headless with the flags this machine needs (no sandbox as root, no
/// background networking: the network is closed) and a fresh profile. Returns stdout.
fn chromium(bin: &Path, profile: &Path, args: &[String]) -> String {
    let out_path = profile.join("stdout.txt");
    let mut child = Command::new(bin)
        .args(CHROMIUM_FLAGS)
        .arg(format!(
            "--user-data-dir={}",
            profile.join("profile").display()
        ))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium {args:?}: {status:?}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish within 90s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(out_path).unwrap_or_default()
}

#[test]
fn status_page_renders_in_chromium() {
    let Some(bin) = tool("chromium", "Debian package chromium") else {
        return;
    };
    let web = fixture_pool(
        "web",
        3,
        "    hooks:\n      post_spawn: [{ name: warm, http: { path: \"/\" } }]\n",
    );
    let fy = Forkyard::start(&config_with(
        &[web, fixture_pool("api", 1, "")],
        "routes:\n  - { path_prefix: \"/api\", pool: api }\n  - { pool: web }\nhooks:\n  on_start: [{ name: check, run: [\"true\"] }]\n",
    ));
    fy.wait_ready();
    wait_for_or_log(&fy, BOOT, "4 ready workers", || {
        let s = fy.status();
        (s["pools"][0]["workers_ready"] == 3 && s["pools"][1]["workers_ready"] == 1).then_some(())
    });
    // Some history for the table: traffic, and one worker killed and restarted.
    for _ in 0..20 {
        fy.get("/").unwrap();
    }
    let pid = fy.status()["pools"][0]["workers"][1]["pid"]
        .as_i64()
        .unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    wait_for_or_log(&fy, BOOT, "slot 1 back", || {
        let w = &fy.status()["pools"][0]["workers"][1];
        (w["state"] == "ready" && w["pid"].as_i64() != Some(pid)).then_some(())
    });

    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", fy.admin);
    let dom = chromium(&bin, dir.path(), &["--dump-dom".into(), url.clone()]);
    // Without scripts the page reloads itself; with them its one script, served by
    // forkyard, refreshes it.
    assert!(dom.contains("<noscript>"), "{dom}");
    assert!(dom.contains(r#"http-equiv="refresh" content="2""#), "{dom}");
    assert_eq!(dom.matches("<script").count(), 1, "{dom}");
    assert!(dom.contains(r#"<script src="/page.js""#), "{dom}");
    let workers_table = dom
        .split(r#"<table id="workers">"#)
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or_else(|| panic!("no workers table: {dom}"));
    let rows = workers_table.matches("<tr><td>").count();
    assert_eq!(rows, 4, "one row per worker:\n{dom}");
    assert!(
        dom.contains(r#"<span class="ready" id="readiness">ready</span>"#),
        "{dom}"
    );
    assert!(dom.contains("signal SIGKILL"), "{dom}");
    assert!(
        dom.contains(r#"<table id="hooks">"#),
        "the hooks table: {dom}"
    );
    assert!(dom.contains("<td>post_spawn</td><td>warm</td>"), "{dom}");

    let shot = artifacts_dir().join("status.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &bin,
        dir.path(),
        &[
            "--window-size=1100,560".into(),
            format!("--screenshot={}", shot.display()),
            url,
        ],
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    announce(&format!("status page screenshot: {}", shot.display()));
}

/// Headless Chromium with its DevTools endpoint, showing `url`.
struct Browser {
    child: std::process::Child,
    _profile: tempfile::TempDir,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
}

impl Browser {
    fn open(bin: &Path, url: &str, width: u32, height: u32) -> Browser {
        use std::io::BufRead;
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .args(CHROMIUM_FLAGS)
            .args(["--remote-debugging-port=0", "--remote-allow-origins=*"])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"; the rest
        // of its stderr is drained so that it never blocks on it.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or("").to_owned());
                }
            }
        });
        let devtools: std::net::SocketAddr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium's DevTools address")
            .parse()
            .unwrap();
        let ws_url = wait_for(SHORT, "the page's DevTools target", || {
            let list = http_get(devtools, "/json/list", &[]).ok()?;
            let targets: serde_json::Value = serde_json::from_str(&list.body).ok()?;
            targets
                .as_array()?
                .iter()
                .find(|t| {
                    t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url))
                })
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
        });
        let (ws, _) = tungstenite::connect(ws_url.as_str()).expect("connect to DevTools");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        Browser {
            child,
            _profile: profile,
            ws,
            next_id: 1,
        }
    }

    /// One DevTools command; its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .expect("send to DevTools");
        loop {
            let reply = self.ws.read().expect("read from DevTools");
            let Ok(text) = reply.to_text() else { continue };
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page (a JSON string, parsed).
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expression} threw: {}",
            r["exceptionDetails"]
        );
        let text = r["result"]["value"].as_str().unwrap_or("null").to_owned();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page shows now: its charts, their points, the event log.
const SNAPSHOT: &str = r#"(() => {
  if (!document.body) return 'null';
  const figs = [...document.querySelectorAll('#charts figure.chart')];
  return JSON.stringify({
    updates: Number(document.body.dataset.chartUpdates || 0),
    charts: figs.map(f => f.dataset.chart),
    points: figs.reduce((n, f) => n + Number(f.dataset.points || 0), 0),
    paths: [...document.querySelectorAll('#charts path.series')].map(p => p.getAttribute('d')),
    bars: document.querySelectorAll('#charts rect.bar').length,
    events: [...document.querySelectorAll('#event-log li .e')].map(e => e.textContent),
    stream: (document.getElementById('events-state') || {}).textContent || '',
    workers: document.querySelectorAll('#workers tbody tr').length,
    preloaders: document.querySelectorAll('#preloaders tbody tr').length,
  });
})()"#;

#[test]
fn the_page_draws_charts_that_move_under_load_and_follows_events_live() {
    let Some(bin) = tool("chromium", "Debian package chromium") else {
        return;
    };
    let app_dir = tempfile::tempdir().unwrap();
    let fy = Forkyard::start(&config_with(
        &[
            fixture_pool("web", 3, ""),
            crate::preload::preload_pool_env(
                "app",
                2,
                app_dir.path(),
                ", PRELOAD_BALLAST_MB: \"24\"",
                "",
            ),
        ],
        "routes:\n  - { path_prefix: \"/app\", pool: app }\n  - { pool: web }\n",
    ));
    fy.wait_workers_ready("web", 3);
    fy.wait_workers_ready("app", 2);
    // Load of three kinds: quick answers, slow ones (latency, in flight), errors.
    let quick = Load::to(fy.proxy).clients(2).keep_alive().start();
    let slow = Load::to(fy.proxy).get("/sleep?s=0.3").clients(2).start();
    let app = Load::to(fy.proxy).get("/app/").keep_alive().start();
    let errors = Load::to(fy.proxy)
        .get("/status?code=503")
        .every(Duration::from_millis(100))
        .start();
    quick.wait_for_more(&fy, 100);
    let samples = |fy: &Forkyard| {
        let h = fy.admin_get("/status/history").unwrap().json();
        h["pools"][0]["samples"].as_array().map_or(0, Vec::len)
    };
    wait_for_or_log(&fy, BOOT, "two samples of history", || {
        (samples(&fy) >= 2).then_some(())
    });
    let history = fy.admin_get("/status/history").unwrap().json();
    let web = &history["pools"][0];
    assert_eq!(
        (&web["name"], &history["keep"]),
        (&"web".into(), &180.into())
    );
    let last = web["samples"].as_array().unwrap().last().unwrap().clone();
    assert!(last["requests_per_second"].as_f64() > Some(0.0), "{last}");
    assert!(
        last["p99_seconds"].as_f64() >= last["p50_seconds"].as_f64(),
        "{last}"
    );
    assert_eq!(last["workers"].as_array().map(Vec::len), Some(3), "{last}");
    // Only what is newer than `since`; a bad one is an error, not an empty answer.
    // (1 ms past the last sample: serde_json without `float_roundtrip` may read a
    // time 1 ULP below what forkyard wrote, which would let that sample through.)
    let since = last["at_unix"].as_f64().unwrap() + 0.001;
    let newer = fy
        .admin_get(&format!("/status/history?since={since}"))
        .unwrap()
        .json();
    assert!(
        newer["pools"][0]["samples"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["at_unix"].as_f64() > last["at_unix"].as_f64()),
        "{newer}"
    );
    let bad = fy.admin_get("/status/history?since=yesterday").unwrap();
    assert_eq!(bad.status, 400, "{bad:?}");
    // A crash for the restarts chart and the event log.
    let kill_worker = |fy: &Forkyard, slot: usize| {
        let pid = fy.status()["pools"][0]["workers"][slot]["pid"]
            .as_i64()
            .unwrap();
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    };
    kill_worker(&fy, 1);

    let url = format!("http://{}/", fy.admin);
    let mut browser = Browser::open(&bin, &url, 1280, 1700);
    let first = wait_for_or_log(&fy, BOOT, "the charts drawn, the event log filled", || {
        let s = browser.eval(SNAPSHOT);
        let drawn = s["charts"].as_array().is_some_and(|c| c.len() == 12)
            && s["points"].as_u64().unwrap_or(0) > 0
            && s["paths"].as_array().is_some_and(|p| !p.is_empty())
            && s["events"].as_array().is_some_and(|e| !e.is_empty())
            && s["stream"].as_str().is_some_and(|t| t.contains("live"));
        drawn.then_some(s)
    });
    let charts: Vec<&str> = first["charts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    for chart in [
        "requests",
        "latency",
        "errors",
        "in_flight",
        "restarts",
        "memory",
    ] {
        assert_eq!(charts.iter().filter(|c| **c == chart).count(), 2, "{first}");
    }
    assert_eq!(first["workers"], 5, "{first}");
    assert!(first["preloaders"].as_u64() >= Some(1), "{first}");

    // Live: a new sample redraws the charts with more points, and a kill reaches
    // the event log without a reload.
    let exits = |s: &serde_json::Value| {
        s["events"]
            .as_array()
            .map_or(0, |e| e.iter().filter(|e| *e == "exit").count())
    };
    kill_worker(&fy, 2);
    let later = wait_for_or_log(&fy, BOOT, "the charts to move and the kill to show", || {
        let s = browser.eval(SNAPSHOT);
        let moved = s["updates"].as_u64() > first["updates"].as_u64()
            && s["points"].as_u64() > first["points"].as_u64()
            && s["paths"] != first["paths"]
            && s["bars"].as_u64() >= Some(1)
            && exits(&s) > exits(&first);
        moved.then_some(s)
    });
    announce(&format!(
        "status page: {} chart points at first, {} after {} more redraws",
        first["points"],
        later["points"],
        later["updates"].as_u64().unwrap_or(0) - first["updates"].as_u64().unwrap_or(0)
    ));

    // `make screenshot`: let a few minutes of history build up under load, with
    // a crash now and then, for docs/status-page.png.
    let for_docs = std::env::var_os("FORKYARD_SCREENSHOT");
    if for_docs.is_some() {
        let mut killed = 0;
        wait_for_or_log(
            &fy,
            Duration::from_secs(600),
            "three minutes of history",
            || {
                let n = samples(&fy);
                if n / 12 > killed {
                    killed += 1;
                    kill_worker(&fy, killed % 3);
                }
                (n >= 36).then_some(())
            },
        );
        wait_for_or_log(&fy, SHORT, "the page to draw the last sample", || {
            let s = browser.eval(SNAPSHOT);
            (s["points"].as_u64() > later["points"].as_u64()).then_some(())
        });
        browser.eval("JSON.stringify(window.scrollTo(0, 0))");
    }

    // A screenshot of it under load, for people (and docs/ via `make screenshot`).
    let shot = browser.call(
        "Page.captureScreenshot",
        serde_json::json!({ "format": "png" }),
    );
    let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 30_000,
        "{} bytes",
        png.len()
    );
    let path = artifacts_dir().join("status-page.png");
    std::fs::write(&path, &png).unwrap();
    announce(&format!("status page under load: {}", path.display()));
    if let Some(docs) = for_docs {
        std::fs::write(&docs, &png).unwrap();
        announce(&format!("and {}", std::path::Path::new(&docs).display()));
    }
    // A hang report as `/status` carries it (`pools[].hangs`): shown, its dump as
    // text, nothing in it taken for markup.
    let hang = browser.eval(
        r#"(() => {
      window.forkyardPage.renderHangs({ pools: [{ name: 'web', hangs: [{
        at_unix: Date.now() / 1000, worker: 1, pid: 4242, method: 'GET', path: '/slow?<b>x</b>',
        request_id: 'req-1', age_seconds: 31.5,
        in_flight: [{ method: 'POST', path: '/upload', request_id: 'req-2', age_seconds: 2 }],
        dump: 'Thread 0x1 (most recent call first):\n  File "app.py", line 3 in <module>\n<img src=x onerror=alert(1)>',
        dump_result: 'ok', killed: true }] }] });
      const section = document.getElementById('hangs');
      return JSON.stringify({
        hidden: section.hidden,
        title: section.querySelector('h3').textContent,
        pre: section.querySelector('pre').textContent,
        rows: section.querySelectorAll('table tr').length,
        injected: section.querySelectorAll('img, b').length,
      });
    })()"#,
    );
    assert_eq!(hang["hidden"], false, "{hang}");
    assert!(
        hang["title"]
            .as_str()
            .is_some_and(|t| t.contains("web worker 1 (pid 4242): GET /slow?<b>x</b>")),
        "{hang}"
    );
    assert!(
        hang["pre"]
            .as_str()
            .is_some_and(|p| p.ends_with("line 3 in <module>\n<img src=x onerror=alert(1)>")),
        "{hang}"
    );
    assert_eq!(hang["rows"], 2, "{hang}");
    assert_eq!(hang["injected"], 0, "{hang}");
    drop(browser);
    for load in [quick, slow, app] {
        load.finish().assert_no_failures();
    }
    let errors = errors.finish();
    assert!(
        errors
            .failures
            .iter()
            .all(|f| f.what.starts_with("status 503")),
        "{:?}",
        errors.failures.first()
    );
}

/// Standard base64 (DevTools' screenshots), without a crate for one test.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|c| u32::from(value(*c))).collect();
        let n = v.iter().fold(0u32, |acc, x| (acc << 6) | x) << (6 * (4 - v.len() as u32));
        let take = v.len() * 6 / 8;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    out
}
