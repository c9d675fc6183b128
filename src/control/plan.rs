//! What a reload does with each changed key: every key of config.yaml is in one of
//! three classes ([`Class`]), listed in [`KEYS`] and, for people, in the table of
//! `docs/operations.md` (a test keeps the two equal).
//!
//! [`plan`] compares the running config with the new one field by field. The
//! comparisons destructure each config struct without `..`, so a field added to the
//! config does not compile until it is classified here.

use crate::config::{
    AdminConfig, Config, LogConfig, PoolConfig, PoolHooks, ProxyConfig, ShutdownConfig,
    UpstreamPolicy,
};

/// How a reload applies a changed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// From the next request, check, spawn or stop; no worker is restarted.
    AtOnce,
    /// Each worker of the pool is replaced, one at a time, by one that runs the new
    /// value (readiness-gated, rolled back if a new worker never becomes ready).
    Rolling,
    /// Not applied: the reload is refused (`result="error"`), nothing changes, and
    /// the message names the key. Restart forkyard to apply it.
    Restart,
}

impl Class {
    /// As the table in docs/operations.md writes it.
    #[cfg(test)]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Class::AtOnce => "at once",
            Class::Rolling => "rolling",
            Class::Restart => "restart",
        }
    }
}

/// Every key of config.yaml and its class. Pool keys are written `pools.*.<key>`.
pub(crate) const KEYS: &[(&str, Class)] = &[
    ("proxy.listen", Class::Restart),
    ("proxy.threads", Class::Restart),
    ("proxy.client_header_timeout", Class::AtOnce),
    ("proxy.client_timeout", Class::AtOnce),
    ("proxy.idle_timeout", Class::AtOnce),
    ("proxy.max_header_size", Class::AtOnce),
    ("proxy.max_body", Class::AtOnce),
    ("admin.listen", Class::Restart),
    ("admin.token", Class::AtOnce),
    ("admin.token_file", Class::AtOnce),
    ("admin.socket", Class::Restart),
    ("log.level", Class::AtOnce),
    ("log.format", Class::Restart),
    ("log.access", Class::AtOnce),
    ("shutdown.timeout", Class::AtOnce),
    ("shutdown.delay", Class::AtOnce),
    ("reload.watch", Class::AtOnce),
    ("hooks.on_start", Class::AtOnce),
    ("hooks.on_shutdown", Class::AtOnce),
    ("routes", Class::AtOnce),
    ("pools", Class::Restart),
    ("pools.*.command", Class::Rolling),
    ("pools.*.preload", Class::Rolling),
    ("pools.*.env", Class::Rolling),
    ("pools.*.cwd", Class::Rolling),
    ("pools.*.hooks.pre_fork", Class::Rolling),
    ("pools.*.hooks.post_fork", Class::Rolling),
    ("pools.*.workers", Class::AtOnce),
    ("pools.*.ports", Class::Restart),
    ("pools.*.bind", Class::Restart),
    ("pools.*.ready", Class::AtOnce),
    ("pools.*.health", Class::AtOnce),
    ("pools.*.hang", Class::AtOnce),
    ("pools.*.recycle", Class::AtOnce),
    ("pools.*.restart", Class::AtOnce),
    ("pools.*.stop", Class::AtOnce),
    ("pools.*.hooks.post_spawn", Class::AtOnce),
    ("pools.*.hooks.pre_stop", Class::AtOnce),
    ("pools.*.hooks.on_exit", Class::AtOnce),
    ("pools.*.lb", Class::AtOnce),
    ("pools.*.weights", Class::AtOnce),
    ("pools.*.retries", Class::AtOnce),
    ("pools.*.retry_on", Class::AtOnce),
    ("pools.*.eject", Class::AtOnce),
    ("pools.*.timeouts", Class::AtOnce),
    ("pools.*.keepalive", Class::AtOnce),
    ("pools.*.buffer", Class::AtOnce),
    ("pools.*.max_in_flight", Class::AtOnce),
    ("pools.*.queue", Class::AtOnce),
    ("pools.*.metrics", Class::AtOnce),
];

/// One changed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    /// As in config.yaml: `proxy.max_body`, `pools.web.lb`.
    pub(crate) key: String,
    pub(crate) class: Class,
}

/// Everything that differs between two configs.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) changes: Vec<Change>,
}

impl Plan {
    /// The keys that need a restart.
    pub(crate) fn refused(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.class == Class::Restart)
    }

    /// Whether pool `name` needs a rolling replacement.
    pub(crate) fn rolls(&self, name: &str) -> bool {
        let prefix = format!("pools.{name}.");
        self.changes
            .iter()
            .any(|c| c.class == Class::Rolling && c.key.starts_with(&prefix))
    }

    /// Record `key` (a [`KEYS`] name) as changed when `changed`.
    fn note(&mut self, key: &'static str, pool: Option<&str>, changed: bool) {
        if !changed {
            return;
        }
        let class = KEYS
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(Class::Restart, |(_, c)| *c);
        debug_assert!(KEYS.iter().any(|(k, _)| *k == key), "{key} is not in KEYS");
        let key = match pool {
            Some(name) => key.replacen('*', name, 1),
            None => key.to_string(),
        };
        self.changes.push(Change { key, class });
    }
}

/// What differs between `old` and `new`.
pub(crate) fn plan(old: &Config, new: &Config) -> Plan {
    let mut p = Plan::default();
    let Config {
        source: _,
        proxy,
        admin,
        log,
        shutdown,
        pools,
        routes,
        hooks,
        watch,
    } = new;
    let names = |c: &[PoolConfig]| c.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    if names(&old.pools) != names(pools) {
        // Everything that refers to pools (routes, the default route) follows;
        // the one thing to say is that this needs a restart.
        p.note("pools", None, true);
        return p;
    }
    proxy_keys(&mut p, &old.proxy, proxy);
    admin_keys(&mut p, &old.admin, admin);
    log_keys(&mut p, &old.log, log);
    shutdown_keys(&mut p, &old.shutdown, shutdown);
    p.note("reload.watch", None, old.watch != *watch);
    p.note("hooks.on_start", None, old.hooks.on_start != hooks.on_start);
    p.note(
        "hooks.on_shutdown",
        None,
        old.hooks.on_shutdown != hooks.on_shutdown,
    );
    p.note("routes", None, old.routes != *routes);
    for (a, b) in old.pools.iter().zip(pools) {
        pool_keys(&mut p, a, b);
    }
    p
}

fn proxy_keys(p: &mut Plan, a: &ProxyConfig, b: &ProxyConfig) {
    let ProxyConfig {
        listen,
        threads,
        client_header_timeout,
        client_timeout,
        idle_timeout,
        max_header_size,
        max_body,
    } = b;
    p.note("proxy.listen", None, a.listen != *listen);
    p.note("proxy.threads", None, a.threads != *threads);
    p.note(
        "proxy.client_header_timeout",
        None,
        a.client_header_timeout != *client_header_timeout,
    );
    p.note(
        "proxy.client_timeout",
        None,
        a.client_timeout != *client_timeout,
    );
    p.note("proxy.idle_timeout", None, a.idle_timeout != *idle_timeout);
    p.note(
        "proxy.max_header_size",
        None,
        a.max_header_size != *max_header_size,
    );
    p.note("proxy.max_body", None, a.max_body != *max_body);
}

fn admin_keys(p: &mut Plan, a: &AdminConfig, b: &AdminConfig) {
    let AdminConfig {
        listen,
        token,
        token_file,
        socket,
    } = b;
    p.note("admin.listen", None, a.listen != *listen);
    p.note("admin.socket", None, a.socket != *socket);
    // A token read from a file is compared by value: a rotated file is a change.
    p.note(
        "admin.token",
        None,
        a.token != *token && token_file.is_none(),
    );
    p.note(
        "admin.token_file",
        None,
        a.token_file != *token_file || (token_file.is_some() && a.token != *token),
    );
}

fn log_keys(p: &mut Plan, a: &LogConfig, b: &LogConfig) {
    let LogConfig {
        level,
        format,
        access,
    } = b;
    p.note("log.level", None, a.level != *level);
    p.note("log.format", None, a.format != *format);
    p.note("log.access", None, a.access != *access);
}

fn shutdown_keys(p: &mut Plan, a: &ShutdownConfig, b: &ShutdownConfig) {
    let ShutdownConfig { timeout, delay } = b;
    p.note("shutdown.timeout", None, a.timeout != *timeout);
    p.note("shutdown.delay", None, a.delay != *delay);
}

fn pool_keys(p: &mut Plan, a: &PoolConfig, b: &PoolConfig) {
    let PoolConfig {
        name,
        command,
        preload,
        workers,
        ports,
        env,
        cwd,
        bind,
        socket_dir: _,
        ready,
        health,
        hang,
        recycle,
        restart,
        stop,
        hooks,
        upstream,
        metrics,
    } = b;
    let pool = Some(name.as_str());
    p.note("pools.*.command", pool, a.command != *command);
    p.note("pools.*.preload", pool, a.preload != *preload);
    p.note("pools.*.env", pool, a.env != *env);
    p.note("pools.*.cwd", pool, a.cwd != *cwd);
    p.note("pools.*.workers", pool, a.workers != *workers);
    // A `bind: unix` pool's range follows `workers`; only the range of a port pool
    // is the user's own.
    p.note(
        "pools.*.ports",
        pool,
        a.ports != *ports && *bind != crate::config::Bind::Unix,
    );
    p.note("pools.*.bind", pool, a.bind != *bind);
    p.note("pools.*.ready", pool, a.ready != *ready);
    p.note("pools.*.health", pool, a.health != *health);
    p.note("pools.*.hang", pool, a.hang != *hang);
    p.note("pools.*.recycle", pool, a.recycle != *recycle);
    p.note("pools.*.restart", pool, a.restart != *restart);
    p.note("pools.*.stop", pool, a.stop != *stop);
    p.note("pools.*.metrics", pool, a.metrics != *metrics);
    hook_keys(p, pool, &a.hooks, hooks);
    upstream_keys(p, pool, &a.upstream, upstream);
}

fn hook_keys(p: &mut Plan, pool: Option<&str>, a: &PoolHooks, b: &PoolHooks) {
    let PoolHooks {
        pre_fork,
        post_fork,
        post_spawn,
        pre_stop,
        on_exit,
    } = b;
    p.note("pools.*.hooks.pre_fork", pool, a.pre_fork != *pre_fork);
    p.note("pools.*.hooks.post_fork", pool, a.post_fork != *post_fork);
    p.note(
        "pools.*.hooks.post_spawn",
        pool,
        a.post_spawn != *post_spawn,
    );
    p.note("pools.*.hooks.pre_stop", pool, a.pre_stop != *pre_stop);
    p.note("pools.*.hooks.on_exit", pool, a.on_exit != *on_exit);
}

fn upstream_keys(p: &mut Plan, pool: Option<&str>, a: &UpstreamPolicy, b: &UpstreamPolicy) {
    let UpstreamPolicy {
        lb,
        weights,
        retries,
        retry_on,
        eject,
        connect_timeout,
        response_header_timeout,
        idle_timeout,
        keepalive,
        buffer,
        max_in_flight,
        queue,
    } = b;
    p.note("pools.*.lb", pool, a.lb != *lb);
    // A slot without a weight has weight 1 (the default list follows `workers`).
    let weight = |w: &[u32], i: usize| w.get(i).copied().unwrap_or(1);
    let n = a.weights.len().max(weights.len());
    p.note(
        "pools.*.weights",
        pool,
        (0..n).any(|i| weight(&a.weights, i) != weight(weights, i)),
    );
    p.note("pools.*.retries", pool, a.retries != *retries);
    p.note("pools.*.retry_on", pool, a.retry_on != *retry_on);
    p.note("pools.*.eject", pool, a.eject != *eject);
    p.note(
        "pools.*.timeouts",
        pool,
        a.connect_timeout != *connect_timeout
            || a.response_header_timeout != *response_header_timeout
            || a.idle_timeout != *idle_timeout,
    );
    p.note("pools.*.keepalive", pool, a.keepalive != *keepalive);
    p.note("pools.*.buffer", pool, a.buffer != *buffer);
    p.note(
        "pools.*.max_in_flight",
        pool,
        a.max_in_flight != *max_in_flight,
    );
    p.note("pools.*.queue", pool, a.queue != *queue);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
pools:
  web:
    command: ["python3", "app.py", "{port}"]
    ports: "9001-9010"
    workers: 2
    ready: { http: "/" }
    hooks:
      post_fork:
        - seed_env: SEED
"#;

    fn load(text: &str) -> Config {
        crate::config::load_from_str(text, Path::new("c.yaml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// Every key, with an edit of BASE that changes only it.
    fn edits() -> Vec<(&'static str, String)> {
        let pool = |extra: &str| format!("{BASE}{extra}");
        vec![
            (
                "proxy.listen",
                pool("proxy: { listen: \"127.0.0.1:8181\" }\n"),
            ),
            ("proxy.threads", pool("proxy: { threads: 2 }\n")),
            (
                "proxy.client_header_timeout",
                pool("proxy: { client_header_timeout: 3s }\n"),
            ),
            (
                "proxy.client_timeout",
                pool("proxy: { client_timeout: 3s }\n"),
            ),
            ("proxy.idle_timeout", pool("proxy: { idle_timeout: 3s }\n")),
            (
                "proxy.max_header_size",
                pool("proxy: { max_header_size: 8KiB }\n"),
            ),
            ("proxy.max_body", pool("proxy: { max_body: 1MiB }\n")),
            (
                "admin.listen",
                pool("admin: { listen: \"127.0.0.1:9191\" }\n"),
            ),
            (
                "admin.token",
                pool("admin: { token: \"0123456789abcdef0123\" }\n"),
            ),
            ("admin.socket", pool("admin: { socket: false }\n")),
            ("log.level", pool("log: { level: debug }\n")),
            ("log.format", pool("log: { format: json }\n")),
            ("log.access", pool("log: { access: true }\n")),
            ("shutdown.timeout", pool("shutdown: { timeout: 5s }\n")),
            ("shutdown.delay", pool("shutdown: { delay: 1s }\n")),
            ("reload.watch", pool("reload: { watch: true }\n")),
            (
                "hooks.on_start",
                pool("hooks: { on_start: [ { run: [\"true\"] } ] }\n"),
            ),
            (
                "hooks.on_shutdown",
                pool("hooks: { on_shutdown: [ { run: [\"true\"] } ] }\n"),
            ),
            (
                "routes",
                pool("routes: [ { path_prefix: \"/\", pool: web } ]\n"),
            ),
            ("pools", BASE.replace("web:", "api:")),
            ("pools.web.command", BASE.replace("app.py", "app2.py")),
            (
                "pools.web.env",
                pool("    env: { A: b }\n").replace("\nproxy", "proxy"),
            ),
            (
                "pools.web.cwd",
                BASE.replace("    workers: 2", "    workers: 2\n    cwd: /tmp"),
            ),
            (
                "pools.web.hooks.pre_fork",
                BASE.replace(
                    "      post_fork:",
                    "      pre_fork: [ { run: [\"true\"] } ]\n      post_fork:",
                ),
            ),
            ("pools.web.hooks.post_fork", BASE.replace("SEED", "SEED2")),
            (
                "pools.web.workers",
                BASE.replace("workers: 2", "workers: 3"),
            ),
            ("pools.web.ports", BASE.replace("9010", "9011")),
            (
                "pools.web.bind",
                BASE.replace("    workers: 2", "    workers: 2\n    bind: inherit"),
            ),
            (
                "pools.web.ready",
                BASE.replace("http: \"/\" }", "http: \"/\", timeout: 5s }"),
            ),
            (
                "pools.web.health",
                BASE.replace(
                    "    workers: 2",
                    "    workers: 2\n    health: { http: /healthz }",
                ),
            ),
            (
                "pools.web.hang",
                BASE.replace("    workers: 2", "    workers: 2\n    hang: { after: 30s }"),
            ),
            (
                "pools.web.recycle",
                BASE.replace(
                    "    workers: 2",
                    "    workers: 2\n    recycle: { max_requests: 10 }",
                ),
            ),
            (
                "pools.web.restart",
                BASE.replace(
                    "    workers: 2",
                    "    workers: 2\n    restart: { backoff_min: 1s }",
                ),
            ),
            (
                "pools.web.stop",
                BASE.replace("    workers: 2", "    workers: 2\n    stop: { grace: 1s }"),
            ),
            (
                "pools.web.hooks.post_spawn",
                BASE.replace(
                    "      post_fork:",
                    "      post_spawn: [ { http: { path: /ready } } ]\n      post_fork:",
                ),
            ),
            (
                "pools.web.hooks.pre_stop",
                BASE.replace(
                    "      post_fork:",
                    "      pre_stop: [ { run: [\"true\"] } ]\n      post_fork:",
                ),
            ),
            (
                "pools.web.hooks.on_exit",
                BASE.replace(
                    "      post_fork:",
                    "      on_exit: [ { run: [\"true\"] } ]\n      post_fork:",
                ),
            ),
            (
                "pools.web.lb",
                BASE.replace("    workers: 2", "    workers: 2\n    lb: random"),
            ),
            (
                "pools.web.weights",
                BASE.replace("    workers: 2", "    workers: 2\n    weights: [1, 3]"),
            ),
            (
                "pools.web.retries",
                BASE.replace("    workers: 2", "    workers: 2\n    retries: 0"),
            ),
            (
                "pools.web.retry_on",
                BASE.replace("    workers: 2", "    workers: 2\n    retry_on: [503]"),
            ),
            (
                "pools.web.eject",
                BASE.replace(
                    "    workers: 2",
                    "    workers: 2\n    eject: { consecutive_failures: 2 }",
                ),
            ),
            (
                "pools.web.timeouts",
                BASE.replace(
                    "    workers: 2",
                    "    workers: 2\n    timeouts: { connect: 1s }",
                ),
            ),
            (
                "pools.web.keepalive",
                BASE.replace("    workers: 2", "    workers: 2\n    keepalive: 4"),
            ),
            (
                "pools.web.buffer",
                BASE.replace(
                    "    workers: 2",
                    "    workers: 2\n    buffer: { response: 0 }",
                ),
            ),
            (
                "pools.web.max_in_flight",
                BASE.replace("    workers: 2", "    workers: 2\n    max_in_flight: 1"),
            ),
            (
                "pools.web.queue",
                BASE.replace("    workers: 2", "    workers: 2\n    queue: { max: 10 }"),
            ),
            (
                "pools.web.metrics",
                BASE.replace(
                    "    workers: 2",
                    "    workers: 2\n    metrics: { path: /metrics }",
                ),
            ),
        ]
    }

    #[test]
    fn each_key_is_reported_alone_with_its_class() {
        let base = load(BASE);
        assert!(plan(&base, &base).changes.is_empty());
        let mut seen = Vec::new();
        for (key, text) in edits() {
            let changes = plan(&base, &load(&text)).changes;
            assert_eq!(changes.len(), 1, "{key}: {changes:?}\n{text}");
            assert_eq!(changes[0].key, key, "{text}");
            let generic = key.replacen("pools.web.", "pools.*.", 1);
            let class = KEYS.iter().find(|(k, _)| *k == generic).unwrap().1;
            assert_eq!(changes[0].class, class, "{key}");
            seen.push(generic);
        }
        for (key, _) in KEYS {
            // admin.token_file needs a file; it is covered by the security tests.
            // pools.*.preload needs a preload pool: see the next test.
            assert!(
                ["admin.token_file", "pools.*.preload"].contains(key)
                    || seen.iter().any(|s| s == key),
                "{key} has no edit in this test"
            );
        }
    }

    #[test]
    fn a_changed_preload_key_rolls_the_pool() {
        let preload = BASE.replace(
            r#"command: ["python3", "app.py", "{port}"]"#,
            r#"preload: { app: "app:application" }"#,
        );
        let base = load(&preload);
        let changed = load(&preload.replace("app:application", "app:other"));
        let changes = plan(&base, &changed).changes;
        assert_eq!(
            changes,
            [Change {
                key: "pools.web.preload".into(),
                class: Class::Rolling
            }]
        );
        // From a command to a preload pool: both keys, both rolling.
        let keys: Vec<String> = plan(&load(BASE), &base)
            .changes
            .into_iter()
            .map(|c| c.key)
            .collect();
        assert_eq!(keys, ["pools.web.command", "pools.web.preload"]);
    }

    #[test]
    fn the_operations_doc_lists_every_key_with_its_class() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"),
        )
        .unwrap();
        for (key, class) in KEYS {
            let row = format!("| `{key}` | {} |", class.as_str());
            assert!(doc.contains(&row), "docs/operations.md lacks the row {row}");
        }
    }
}
