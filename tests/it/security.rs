//! Security defaults: POST endpoints on an admin listener that other machines reach
//! only with a token (403 without one, loopback open as before), the admin bearer
//! token (inline and from a file that is re-read at reload), open GET endpoints,
//! start-up warnings, and secrets kept out of `check` output and logs.

use std::os::unix::fs::PermissionsExt as _;

use crate::harness::*;

const TOKEN: &str = "it-token-0123456789abcdef";

fn post(fy: &Forkyard, path: &str, auth: Option<&str>) -> Response {
    let header = auth.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = header
        .as_deref()
        .map(|h| vec![("Authorization", h)])
        .unwrap_or_default();
    http_request(fy.admin, "POST", path, &headers, b"").expect("POST to admin")
}

/// A config whose admin listener is on all interfaces (reached on 127.0.0.1).
fn public_admin(pool: &str, admin_extra: &str) -> String {
    config_with(&[pool.to_string()], "").replace(
        "  listen: \"{admin}\"",
        &format!("  listen: \"0.0.0.0:{{admin_port}}\"{admin_extra}"),
    )
}

#[test]
fn posts_on_a_public_admin_address_need_a_token() {
    let pool = fixture_pool("web", 2, "").replace("workers: 2", "workers: 1");
    let fy = Forkyard::builder(&public_admin(&pool, ""))
        .env("IT_ADMIN_TOKEN", TOKEN)
        .start();
    fy.wait_ready();
    for path in [
        "/reload",
        "/pools/web/scale?workers=2",
        "/pools/web/restart",
        "/nothing-here",
    ] {
        for auth in [None, Some(TOKEN)] {
            let r = post(&fy, path, auth);
            assert_eq!(r.status, 403, "{path} with {auth:?}: {r:?}");
            assert!(
                r.body
                    .contains("not a loopback address and no admin.token is set")
                    && r.body.contains("forkyard reload")
                    && r.body.contains("set admin.token or admin.token_file"),
                "the answer says how to enable them: {r:?}"
            );
        }
    }
    for path in ["/metrics", "/healthz", "/readyz", "/status", "/"] {
        let r = fy.admin_get(path).unwrap();
        assert_eq!(r.status, 200, "GET {path} stays open: {r:?}");
    }
    assert_eq!(
        fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#),
        Some(1.0),
        "nothing was scaled"
    );
    assert_eq!(
        fy.metric(r#"forkyard_config_reloads_total{result="ok"}"#),
        Some(0.0),
        "nothing was reloaded"
    );

    // A token, set by a reload over the control socket: now the POSTs need it, and
    // answer with it.
    fy.write_config(&public_admin(&pool, "\n  token: \"${IT_ADMIN_TOKEN}\""));
    let config = fy.dir().join("config.yaml");
    let run = run_cli(
        std::process::Command::new(forkyard_bin())
            .args(["reload", "-c", config.to_str().unwrap()])
            .env("IT_ADMIN_TOKEN", TOKEN),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("admin token replaced"), "{run:?}");
    let r = post(&fy, "/pools/web/scale?workers=2", None);
    assert_eq!(r.status, 401, "{r:?}");
    let r = post(&fy, "/pools/web/scale?workers=2", Some(&TOKEN[1..]));
    assert_eq!(r.status, 401, "{r:?}");
    let r = post(&fy, "/pools/web/scale?workers=2", Some(TOKEN));
    assert_eq!(r.status, 200, "{r:?}");
    fy.wait_workers_ready("web", 2);
    assert!(!fy.log().contains(TOKEN), "the token was logged");
}

#[test]
fn posts_on_a_loopback_admin_address_need_no_token() {
    let pool = fixture_pool("web", 2, "").replace("workers: 2", "workers: 1");
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    assert!(fy.admin.ip().is_loopback());
    let r = post(&fy, "/pools/web/scale?workers=2", None);
    assert_eq!(r.status, 200, "{r:?}");
    fy.wait_workers_ready("web", 2);
    let r = post(&fy, "/reload", None);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn admin_token_guards_the_post_endpoints_only() {
    let cfg = config_with(&[fixture_pool("web", 1, "")], "").replace(
        "  listen: \"{admin}\"",
        "  listen: \"{admin}\"\n  token: \"${IT_ADMIN_TOKEN}\"",
    );
    let fy = Forkyard::builder(&cfg).env("IT_ADMIN_TOKEN", TOKEN).start();
    fy.wait_ready();

    for path in ["/reload", "/pools/web/scale?workers=2", "/nothing-here"] {
        for auth in [None, Some("wrong-token-0123456789"), Some(&TOKEN[1..])] {
            let r = post(&fy, path, auth);
            assert_eq!(r.status, 401, "{path} with {auth:?}: {r:?}");
            assert!(
                r.headers
                    .get("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{r:?}"
            );
        }
    }
    // Nothing was scaled by the refused requests.
    assert_eq!(
        fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#),
        Some(1.0)
    );
    let r = post(&fy, "/pools/web/scale?workers=2", Some(TOKEN));
    assert_eq!(r.status, 200, "{r:?}");
    fy.wait_workers_ready("web", 2);
    let r = post(&fy, "/reload", Some(TOKEN));
    assert_eq!(r.status, 200, "{r:?}");

    for path in ["/metrics", "/healthz", "/readyz", "/status", "/"] {
        let r = fy.admin_get(path).unwrap();
        assert_eq!(r.status, 200, "GET {path} stays open: {r:?}");
    }
    assert!(!fy.log().contains(TOKEN), "the token was logged");
    // The test machine may run as root; forkyard says so about this pool.
    let log = fy.log();
    if nix::unistd::geteuid().is_root() {
        assert!(log.contains("workers_as_root"), "{log}");
        assert!(log.contains("pool(s) web set no post_fork user"), "{log}");
    } else {
        assert!(!log.contains("workers_as_root"), "{log}");
    }
}

#[test]
fn token_file_is_read_again_at_reload() {
    // The file must exist before forkyard starts, so it lives in a directory of
    // the test's own (the harness makes `{dir}` only when it starts forkyard).
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("  {TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = config_with(&[fixture_pool("web", 1, "")], "").replace(
        "  listen: \"{admin}\"",
        &format!(
            "  listen: \"{{admin}}\"\n  token_file: \"{}\"",
            token_file.display()
        ),
    );
    let fy = Forkyard::start(&cfg);
    fy.wait_ready();

    assert_eq!(post(&fy, "/reload", None).status, 401);
    let rotated = "rotated-token-fedcba9876543210";
    std::fs::write(&token_file, rotated).unwrap();
    // The old token is still the one in force until the reload reads the file.
    let r = post(&fy, "/reload", Some(TOKEN));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("admin token replaced"), "{r:?}");
    assert_eq!(post(&fy, "/reload", Some(TOKEN)).status, 401);
    let r = post(&fy, "/reload", Some(rotated));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!fy.log().contains(rotated) && !fy.log().contains(TOKEN));
}

#[test]
fn check_redacts_secrets_and_warns_about_risky_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "admin:\n  listen: \"0.0.0.0:9090\"\npools:\n  web:\n    command: [app]\n    ports: 9001-9010\n    env: { APP_ENV: production, API_TOKEN: tok-value-1, db_password: pw-value-2, AWS_SECRET_ACCESS_KEY: key-value-3 }\n    hooks:\n      pre_fork: [ { run: [\"true\"], env: { GITHUB_TOKEN: tok-value-4, MODE: fast } } ]\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
    let CheckRun {
        code,
        stdout,
        stderr,
    } = forkyard_check(&path, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("env APP_ENV=production"), "{stdout}");
    assert!(stdout.contains("env MODE=fast"), "{stdout}");
    for key in [
        "API_TOKEN",
        "db_password",
        "AWS_SECRET_ACCESS_KEY",
        "GITHUB_TOKEN",
    ] {
        assert!(
            stdout.contains(&format!("env {key}=<redacted>")),
            "{stdout}"
        );
    }
    assert!(
        !stdout.contains("-value-"),
        "a secret value was shown: {stdout}"
    );
    // No token on a public address: the POSTs are closed there, which the plan says.
    assert!(
        stdout.contains("closed (403): not a loopback address and no admin.token"),
        "{stdout}"
    );
    assert!(
        !stderr.contains("admin.listen"),
        "no warning for it: {stderr}"
    );
    assert!(
        stderr.contains("is writable by group or others (mode 664)"),
        "{stderr}"
    );

    // With a token: no open-admin warning, and the token is not printed.
    std::fs::write(
        &path,
        format!("admin:\n  listen: \"0.0.0.0:9090\"\n  token: {TOKEN}\npools:\n  web:\n    command: [app]\n    ports: 9001-9010\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let CheckRun {
        code,
        stdout,
        stderr,
    } = forkyard_check(&path, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("bearer token <redacted>"), "{stdout}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
    assert!(!stderr.contains("admin.listen"), "{stderr}");
    assert!(!stderr.contains("writable"), "{stderr}");
}
