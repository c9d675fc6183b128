//! `forkyard check`: the resolved plan of a validated config, for humans.

use std::fmt::Write;

use crate::config::{
    shown, Config, ControlSocket, HangDump, Hook, HookAction, LogFormat, Phase, ReadyProbe,
    REDACTED,
};

/// One line per hook: phase, name, action, timeout, failure policy.
fn describe_hooks(out: &mut String, indent: &str, phase: Phase, hooks: &[Hook]) {
    for h in hooks {
        let action = match &h.action {
            HookAction::Run(argv) => format!("run {argv:?}"),
            HookAction::Http { target, method, .. } => format!("http {method} {target:?}"),
            HookAction::WaitFor(t) => format!("wait_for {t:?}"),
            HookAction::Builtin(b) => format!("built-in {b:?}"),
            HookAction::Call(t) => format!("call {t}"),
        };
        let _ = writeln!(
            out,
            "{indent}hook {} {}: {action}, timeout {:?}, retries {}, on_failure {}",
            phase.as_str(),
            h.name,
            h.timeout,
            h.retries,
            h.on_failure.as_str()
        );
        for (k, v) in &h.env {
            let _ = writeln!(out, "{indent}  env {k}={}", shown(k, v));
        }
    }
}

/// A readable description of what `forkyard run` would start.
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config: {} (valid)", config.source.display());
    let listen: Vec<String> = config.proxy.listen.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(
        out,
        "proxy: listen {} ({} thread{})",
        listen.join(", "),
        config.proxy.threads,
        if config.proxy.threads.get() == 1 {
            ""
        } else {
            "s"
        }
    );
    let admin = &config.admin;
    let auth = match (&admin.token, &admin.token_file) {
        (None, _) if admin.listen.ip().is_loopback() => {
            "no token, open to local processes (a loopback address)".to_string()
        }
        (None, _) => "closed (403): not a loopback address and no admin.token".to_string(),
        (Some(_), Some(file)) => format!("bearer token from {}", file.display()),
        (Some(_), None) => format!("bearer token {REDACTED}"),
    };
    let _ = writeln!(
        out,
        "admin: listen {} (/ /status /metrics /healthz /readyz; POST /reload, /pools/<name>/scale, /pools/<name>/restart: {auth})",
        admin.listen
    );
    let socket = match &admin.socket {
        ControlSocket::Off => "off (admin.socket: false)".to_string(),
        ControlSocket::Path(path) => format!("{} (mode 0600)", path.display()),
        ControlSocket::Default => format!(
            "{} (mode 0600; the default for this user and environment)",
            crate::sockets::control::default_path(admin.listen.port()).display()
        ),
    };
    let _ = writeln!(
        out,
        "control socket: {socket}: every endpoint, POSTs without a token, for forkyard's user and root (forkyard reload, scale, restart, status)"
    );
    let _ = writeln!(
        out,
        "log: level {}, format {}",
        config.log.level.as_str(),
        match config.log.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    );
    let _ = writeln!(out, "shutdown: drain timeout {:?}", config.shutdown.timeout);
    for pool in &config.pools {
        let ready = match &pool.ready.probe {
            ReadyProbe::Tcp => "tcp".to_string(),
            ReadyProbe::Http { path } => format!("http {path}"),
        };
        let addressing = match &pool.socket_dir {
            Some(dir) => format!("unix sockets in {}", per_process(dir)),
            None => format!("ports {}-{}", pool.ports.start, pool.ports.end),
        };
        let _ = writeln!(
            out,
            "pool {}: {} worker{}, {addressing}, cwd {}, ready {} within {:?}, restart backoff {:?}..{:?} (reset after {:?}), stop {} then SIGKILL after {:?}",
            pool.name,
            pool.workers,
            if pool.workers.get() == 1 { "" } else { "s" },
            pool.cwd.display(),
            ready,
            pool.ready.timeout,
            pool.restart.backoff_min,
            pool.restart.backoff_max,
            pool.restart.reset_after,
            pool.stop.signal.as_str(),
            pool.stop.grace,
        );
        if let Some(p) = &pool.preload {
            let options: Vec<String> = p
                .server_options
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(
                out,
                "  preload: app {} with {}, imports {:?}, server {}({}), gc_freeze {}; workers are forked from it and get a socket forkyard holds",
                p.app,
                p.python,
                p.imports,
                p.server.name(),
                options.join(", "),
                p.gc_freeze,
            );
        }
        if let Some(h) = &pool.hang {
            let dump = match &h.dump {
                None => "no dump".to_string(),
                Some(HangDump::Command(argv)) => {
                    format!("dump with {argv:?} (at most {:?})", h.dump_timeout)
                }
                Some(HangDump::Signal(s)) => format!(
                    "dump by {} to the worker (its output for at most {:?})",
                    s.as_str(),
                    h.dump_timeout
                ),
            };
            let then = if h.kill {
                "then kill the worker; the request gets 504"
            } else {
                "the worker keeps running"
            };
            let _ = writeln!(
                out,
                "  hang: a request waiting {:?} for its response head: {dump}, {then}",
                h.after
            );
        }
        for slot in 0..pool.workers.get() {
            let port = pool.slot_port(slot);
            let socket = pool.socket_path(port);
            let argv: Vec<String> = pool
                .command
                .iter()
                .map(|a| per_process(std::path::Path::new(&pool.fill(a, slot, port))))
                .collect();
            let addr = match &socket {
                Some(p) => format!("unix:{}", per_process(p)),
                None => format!("127.0.0.1:{port}"),
            };
            let _ = writeln!(out, "  slot {slot}: {addr}  {argv:?}");
        }
        if let Some(m) = &pool.metrics {
            let _ = writeln!(
                out,
                "  metrics: each ready worker's GET {} merged into /metrics (timeout {:?}, at most {} series)",
                m.path, m.timeout, m.max_series
            );
        }
        // Values of secret-looking names are redacted (see config::looks_secret).
        for (k, v) in &pool.env {
            let _ = writeln!(out, "  env {k}={}", shown(k, v));
        }
        for phase in Phase::ALL {
            describe_hooks(&mut out, "  ", phase, pool.hooks.phase(phase));
        }
    }
    for phase in Phase::ALL {
        describe_hooks(&mut out, "", phase, config.hooks.phase(phase));
    }
    for (i, route) in config.routes.iter().enumerate() {
        let _ = writeln!(
            out,
            "route {i}: host {} path_prefix {} -> pool {}",
            route.host.as_deref().unwrap_or("*"),
            route.path_prefix.as_deref().unwrap_or("/"),
            route.pool
        );
    }
    out
}

/// A socket path as `forkyard run` will have it: the runtime directory is named
/// after the running process's pid (unless `$RUNTIME_DIRECTORY` is set), so this
/// process's pid is shown as `<pid>`.
fn per_process(path: &std::path::Path) -> String {
    path.display().to_string().replace(
        &format!("/forkyard.{}/", std::process::id()),
        "/forkyard.<pid>/",
    )
}
