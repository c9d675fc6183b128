//! The admin page `/` in a real browser: headless Chromium (Debian's package) renders
//! the workers table, sees the self-refresh, and leaves a screenshot in
//! `target/artifacts/status.png`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

/// Run Chromium headless with the flags this machine needs (no sandbox as root, no
/// background networking: the network is closed) and a fresh profile. Returns stdout.
fn chromium(bin: &Path, profile: &Path, args: &[String]) -> String {
    let out_path = profile.join("stdout.txt");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
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
    assert!(
        dom.contains(r#"<meta http-equiv="refresh" content="2">"#),
        "{dom}"
    );
    assert!(!dom.contains("<script"), "no JavaScript at all");
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
