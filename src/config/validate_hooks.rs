//! Validation of hook items: one action per item, actions allowed in their phase,
//! failure policies allowed in their phase, and the built-ins' values.

use std::time::Duration;

use super::error::with_suggestion;
use super::location::KeyPath;
use super::model::*;
use super::placeholder::Scope;
use super::raw::*;
use super::validate::{is_env_name, parse_signal, Checker};

const SECOND: Duration = Duration::from_secs(1);
/// Default bound on one attempt of a hook.
pub(super) const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
const ACTIONS: &str = "run, http, wait_for";
const BUILTINS: &str = "close_fds, seed_env, setsid, umask, rlimits, user, group, nice, oom_score_adj, parent_death_signal";

/// Parse `http://host:port/path` (no TLS: forkyard is built without it).
pub(super) fn parse_http_url(text: &str) -> Result<HttpUrl, String> {
    let hint = r#"(expected e.g. "http://127.0.0.1:8000/healthz")"#;
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("invalid URL {text:?} {hint}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{text:?}: https is not supported by hooks (forkyard is built without TLS); use http:// on a local address"
            ))
        }
        _ => return Err(format!("invalid URL {text:?}: it must start with http:// {hint}")),
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("invalid URL {text:?}: no host {hint}"))?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    Ok(HttpUrl {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: uri.port_u16().unwrap_or(80),
        path: path.to_string(),
    })
}

/// Parse `module:attribute` (dotted names of Python identifiers on both sides).
pub(super) fn parse_py_target(text: &str) -> Result<PyTarget, String> {
    let dotted = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|part| {
                let mut chars = part.chars();
                chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
                    && chars.all(|c| c.is_alphanumeric() || c == '_')
            })
    };
    match text.split_once(':') {
        Some((module, attribute)) if dotted(module) && dotted(attribute) => Ok(PyTarget {
            module: module.to_string(),
            attribute: attribute.to_string(),
        }),
        _ => Err(format!(
            r#"invalid Python target {text:?} (expected "module:attribute", e.g. "myapp.models:engine.dispose")"#
        )),
    }
}

/// Split `host:port` (IPv6 as `[::1]:5432`).
fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let err = || {
        format!(
            r#"invalid address {text:?} (expected host:port, e.g. "127.0.0.1:5432" or "db:5432")"#
        )
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(err)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(err)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(err());
    }
    Ok((host.to_string(), port))
}

impl Checker<'_> {
    pub(super) fn global_hooks(
        &mut self,
        raw: Option<RawGlobalHooks>,
        path: &KeyPath,
    ) -> GlobalHooks {
        let raw = raw.unwrap_or_default();
        GlobalHooks {
            on_start: self.hook_list(raw.on_start, Phase::OnStart, path, None, false),
            on_shutdown: self.hook_list(raw.on_shutdown, Phase::OnShutdown, path, None, false),
        }
    }

    /// The hooks of a pool whose workers bind with `bind`; `preload` when it is a
    /// preload pool (which allows `call:`).
    pub(super) fn pool_hooks(
        &mut self,
        raw: Option<RawPoolHooks>,
        path: &KeyPath,
        bind: Bind,
        preload: bool,
    ) -> PoolHooks {
        let raw = raw.unwrap_or_default();
        let b = Some(bind);
        PoolHooks {
            pre_fork: self.hook_list(raw.pre_fork, Phase::PreFork, path, b, preload),
            post_fork: self.hook_list(raw.post_fork, Phase::PostFork, path, b, preload),
            post_spawn: self.hook_list(raw.post_spawn, Phase::PostSpawn, path, b, preload),
            pre_stop: self.hook_list(raw.pre_stop, Phase::PreStop, path, b, preload),
            on_exit: self.hook_list(raw.on_exit, Phase::OnExit, path, b, preload),
        }
    }

    /// `bind` is the pool's, `None` for the global hooks.
    fn hook_list(
        &mut self,
        raw: Option<Vec<RawHook>>,
        phase: Phase,
        parent: &KeyPath,
        bind: Option<Bind>,
        preload: bool,
    ) -> Vec<Hook> {
        let path = parent.key(phase.as_str());
        let mut hooks: Vec<Hook> = Vec::new();
        for (i, item) in raw.unwrap_or_default().into_iter().enumerate() {
            let item_path = path.index(i);
            let scope = match bind {
                Some(bind) => Scope::Pool(bind),
                None => Scope::Once(phase),
            };
            if let Some(hook) = self.hook(item, phase, scope, i, &item_path, preload) {
                if hooks.iter().any(|h| h.name == hook.name) {
                    self.error(
                        &item_path.key("name"),
                        format!("duplicate hook name {:?} in {} (names label metrics and must be unique per phase)", hook.name, phase.as_str()),
                    );
                }
                hooks.push(hook);
            }
        }
        hooks
    }

    fn hook(
        &mut self,
        raw: RawHook,
        phase: Phase,
        scope: Scope,
        index: usize,
        path: &KeyPath,
        preload: bool,
    ) -> Option<Hook> {
        let raw_builtins = raw_builtins(&raw);
        let name = match raw.name {
            None => format!("{}.{index}", phase.as_str()),
            Some(name) => {
                let ok = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                if !ok {
                    self.error(
                        &path.key("name"),
                        format!(
                            r#"invalid hook name {name:?} (use letters, digits, "_", "-" and ".")"#
                        ),
                    );
                }
                name
            }
        };
        let timeout = self
            .positive_duration(raw.timeout, &path.key("timeout"), DEFAULT_HOOK_TIMEOUT)
            .unwrap_or(DEFAULT_HOOK_TIMEOUT);
        let retry_delay = self
            .duration(raw.retry_delay, &path.key("retry_delay"), SECOND)
            .unwrap_or(SECOND);
        let retries = raw.retries.unwrap_or(0);
        if retries > 100 {
            self.error(
                &path.key("retries"),
                format!("retries {retries} is too many (at most 100)"),
            );
        }
        let on_failure = self.on_failure(raw.on_failure, phase, &path.key("on_failure"));
        let env_path = path.key("env");
        let env = self.env(raw.env, &env_path);
        for (name, value) in &env {
            self.placeholders(value, &env_path.key(name.as_str()), scope);
        }

        let mut actions: Vec<(&str, HookAction)> = Vec::new();
        if let Some(cmd) = raw.run {
            let run_path = path.key("run");
            let argv = self.command(Some(cmd), &run_path);
            for (i, arg) in argv.iter().enumerate() {
                self.placeholders(arg, &run_path.index(i), scope);
            }
            actions.push(("run", HookAction::Run(argv)));
        }
        if let Some(http) = raw.http {
            if let Some(a) = self.http_action(http, phase, &path.key("http")) {
                actions.push(("http", a));
            } else {
                actions.push(("http", HookAction::Run(Vec::new())));
            }
        }
        if let Some(w) = raw.wait_for {
            let a = self.wait_for(w, &path.key("wait_for"));
            actions.push(("wait_for", a.unwrap_or(HookAction::Run(Vec::new()))));
        }
        if let Some(call) = raw.call {
            let call_path = path.key("call");
            let target = match parse_py_target(&call) {
                Ok(t) => HookAction::Call(t),
                Err(m) => {
                    self.error(&call_path, m);
                    HookAction::Run(Vec::new())
                }
            };
            actions.push(("call", target));
        }
        for (key, b) in self.builtins(&raw_builtins, path) {
            actions.push((
                key,
                b.map(HookAction::Builtin)
                    .unwrap_or(HookAction::Run(Vec::new())),
            ));
        }

        let (key, action) = match actions.len() {
            1 => actions.pop()?,
            0 => {
                if !self.poisoned(path) {
                    let call = if preload && matches!(phase, Phase::PreFork | Phase::PostFork) {
                        ", call"
                    } else {
                        ""
                    };
                    let more = if phase == Phase::PostFork {
                        format!("{call}, or a built-in ({BUILTINS})")
                    } else {
                        call.to_string()
                    };
                    self.error(
                        path,
                        format!("a hook needs exactly one action key: {ACTIONS}{more}"),
                    );
                }
                return None;
            }
            _ => {
                let keys: Vec<&str> = actions.iter().map(|(k, _)| *k).collect();
                self.error(
                    path,
                    format!("a hook has exactly one action, this one has {} ({}); split it into separate items", keys.len(), keys.join(", ")),
                );
                return None;
            }
        };
        let action_path = path.key(key);
        match (&action, phase) {
            (HookAction::Builtin(_), p) if p != Phase::PostFork => {
                self.key_error(
                    &action_path,
                    format!(
                        "{key} is a post_fork built-in; it cannot be used in {}",
                        phase.as_str()
                    ),
                );
            }
            (HookAction::WaitFor(_) | HookAction::Http { .. }, Phase::PostFork) => {
                self.key_error(
                    &action_path,
                    format!("{key} cannot run in post_fork (which runs inside the new worker process); use pre_fork for it"),
                );
            }
            (HookAction::Call(_), p) if !matches!(p, Phase::PreFork | Phase::PostFork) => {
                self.key_error(
                    &action_path,
                    format!(
                        "call runs Python in a preload pool's preloader (pre_fork) or in its new worker (post_fork); it cannot be used in {}",
                        phase.as_str()
                    ),
                );
            }
            (HookAction::Call(_), _) if !preload => {
                self.key_error(
                    &action_path,
                    "call needs a preload pool (a pool with preload: instead of command:): forkyard cannot call into a program it only starts",
                );
            }
            _ => {}
        }
        Some(Hook {
            name,
            action,
            timeout,
            on_failure,
            retries,
            retry_delay,
            env,
        })
    }

    fn on_failure(&mut self, raw: Option<Scalar>, phase: Phase, path: &KeyPath) -> OnFailure {
        let default = phase.default_on_failure();
        let Some(raw) = raw else { return default };
        let text = self.text(&raw, path);
        let allowed: &[OnFailure] = match phase {
            Phase::OnStart => &[OnFailure::Abort, OnFailure::Skip],
            Phase::PreFork | Phase::PostFork | Phase::PostSpawn => {
                &[OnFailure::Abort, OnFailure::Skip, OnFailure::KillWorker]
            }
            Phase::PreStop | Phase::OnExit | Phase::OnShutdown => &[OnFailure::Skip],
        };
        let names: Vec<&str> = allowed.iter().map(|p| p.as_str()).collect();
        match allowed.iter().find(|p| p.as_str() == text) {
            Some(p) => *p,
            None => {
                let why = if matches!(phase, Phase::PreStop | Phase::OnExit | Phase::OnShutdown) {
                    " (a failure here is logged and counted, and stopping goes on)"
                } else {
                    ""
                };
                let message = format!(
                    "on_failure {text:?} is not allowed in {} (expected {}){why}",
                    phase.as_str(),
                    names.join(" or ")
                );
                self.error(path, with_suggestion(message, &text, &names));
                default
            }
        }
    }

    fn http_action(
        &mut self,
        raw: RawHttpAction,
        phase: Phase,
        path: &KeyPath,
    ) -> Option<HookAction> {
        let target = match (raw.path, raw.url) {
            (Some(_), Some(_)) => {
                self.error(path, "http must set exactly one of path or url, not both");
                return None;
            }
            (None, None) => {
                if !self.poisoned(path) {
                    self.error(path, r#"http must set path: "/warm" (a path on the worker) or url: "http://host:port/path""#);
                }
                return None;
            }
            (Some(p), None) => {
                if !p.starts_with('/') {
                    self.error(
                        &path.key("path"),
                        format!(r#"path {p:?} must start with "/""#),
                    );
                }
                if !matches!(phase, Phase::PostSpawn | Phase::PreStop) {
                    self.error(
                        &path.key("path"),
                        format!("path targets the worker, which only exists in post_spawn and pre_stop; use url: in {}", phase.as_str()),
                    );
                }
                HttpTarget::WorkerPath(p)
            }
            (None, Some(u)) => match parse_http_url(&u) {
                Ok(url) => HttpTarget::Url(url),
                Err(m) => {
                    self.error(&path.key("url"), m);
                    return None;
                }
            },
        };
        let method = raw
            .method
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            let message = format!(
                "unknown method {method:?} (expected one of: {})",
                METHODS.join(", ")
            );
            self.error(
                &path.key("method"),
                with_suggestion(message, &method, &METHODS),
            );
        }
        if let Some(code) = raw.expect_status {
            if !(100..=599).contains(&code) {
                self.error(
                    &path.key("expect_status"),
                    format!("expect_status {code} is not an HTTP status (100-599)"),
                );
            }
        }
        Some(HookAction::Http {
            target,
            method,
            expect_status: raw.expect_status,
        })
    }

    fn wait_for(&mut self, raw: RawWaitFor, path: &KeyPath) -> Option<HookAction> {
        match (raw.tcp, raw.http) {
            (Some(_), Some(_)) => {
                self.error(
                    path,
                    "wait_for must set exactly one of tcp or http, not both",
                );
                None
            }
            (None, None) => {
                if !self.poisoned(path) {
                    self.error(
                        path,
                        r#"wait_for must set tcp: "host:port" or http: "http://host:port/path""#,
                    );
                }
                None
            }
            (Some(tcp), None) => {
                let tcp_path = path.key("tcp");
                let text = self.text(&tcp, &tcp_path);
                match parse_host_port(&text) {
                    Ok((host, port)) => Some(HookAction::WaitFor(WaitTarget::Tcp { host, port })),
                    Err(m) => {
                        self.error(&tcp_path, m);
                        None
                    }
                }
            }
            (None, Some(url)) => match parse_http_url(&url) {
                Ok(u) => Some(HookAction::WaitFor(WaitTarget::Http(u))),
                Err(m) => {
                    self.error(&path.key("http"), m);
                    None
                }
            },
        }
    }

    /// Every built-in key present, each with its parsed value (`None` when invalid).
    fn builtins(
        &mut self,
        raw: &RawBuiltins,
        path: &KeyPath,
    ) -> Vec<(&'static str, Option<Builtin>)> {
        let mut out = Vec::new();
        if let Some(v) = raw.close_fds {
            out.push(("close_fds", Some(Builtin::CloseFds(v))));
        }
        if let Some(name) = &raw.seed_env {
            let ok = is_env_name(name);
            if !ok {
                self.error(
                    &path.key("seed_env"),
                    format!("invalid environment variable name {name:?}"),
                );
            }
            out.push(("seed_env", ok.then(|| Builtin::SeedEnv(name.clone()))));
        }
        if let Some(v) = raw.setsid {
            out.push(("setsid", Some(Builtin::Setsid(v))));
        }
        if let Some(umask) = &raw.umask {
            let p = path.key("umask");
            let text = self.text(umask, &p);
            let parsed = if umask.typed {
                Err(format!(
                    r#"umask must be a quoted octal string such as "022" (got {text}, which YAML reads as a number)"#
                ))
            } else {
                u32::from_str_radix(&text, 8)
                    .ok()
                    .filter(|m| *m <= 0o777 && !text.is_empty())
                    .ok_or_else(|| {
                        format!(r#"invalid umask {text:?} (expected octal such as "022" or "077")"#)
                    })
            };
            match parsed {
                Ok(m) => out.push(("umask", Some(Builtin::Umask(m)))),
                Err(m) => {
                    self.error(&p, m);
                    out.push(("umask", None));
                }
            }
        }
        if let Some(RawEnv(limits)) = &raw.rlimits {
            let p = path.key("rlimits");
            let mut parsed = Vec::new();
            let names: Vec<&str> = Rlimit::ALL.iter().map(|(n, _)| *n).collect();
            for (name, value) in limits {
                let lp = p.key(name.text.as_str());
                let Some((_, which)) = Rlimit::ALL.iter().find(|(n, _)| *n == name.text) else {
                    let message = format!(
                        "unknown resource limit {:?} (expected one of: {})",
                        name.text,
                        names.join(", ")
                    );
                    self.key_error(&lp, with_suggestion(message, &name.text, &names));
                    continue;
                };
                let text = self.text(value, &lp);
                let v = if text == "unlimited" || text == "infinity" {
                    Some(None)
                } else {
                    text.parse::<u64>().ok().map(Some)
                };
                match v {
                    Some(v) => parsed.push((*which, v)),
                    None => self.error(
                        &lp,
                        format!(
                            r#"invalid limit {text:?} (expected a whole number or "unlimited")"#
                        ),
                    ),
                }
            }
            out.push(("rlimits", Some(Builtin::Rlimits(parsed))));
        }
        if let Some(user) = &raw.user {
            let p = path.key("user");
            let text = self.text(user, &p);
            let known = nix::unistd::User::from_name(&text).ok().flatten().is_some()
                || text.parse::<u32>().is_ok();
            if !known {
                self.error(
                    &p,
                    format!("unknown user {text:?} (no such user on this machine)"),
                );
            }
            out.push(("user", known.then_some(Builtin::User(text))));
        }
        if let Some(group) = &raw.group {
            let p = path.key("group");
            let text = self.text(group, &p);
            let known = crate::account::gid(&text).is_ok();
            if !known {
                self.error(
                    &p,
                    format!("unknown group {text:?} (no such group on this machine)"),
                );
            }
            out.push(("group", known.then_some(Builtin::Group(text))));
        }
        if let Some(n) = raw.nice {
            let ok = (-20..=19).contains(&n);
            if !ok {
                self.error(
                    &path.key("nice"),
                    format!("nice {n} is out of range (-20 to 19)"),
                );
            }
            out.push(("nice", ok.then_some(Builtin::Nice(n))));
        }
        if let Some(n) = raw.oom_score_adj {
            let ok = (-1000..=1000).contains(&n);
            if !ok {
                self.error(
                    &path.key("oom_score_adj"),
                    format!("oom_score_adj {n} is out of range (-1000 to 1000)"),
                );
            }
            out.push(("oom_score_adj", ok.then_some(Builtin::OomScoreAdj(n))));
        }
        if let Some(sig) = &raw.parent_death_signal {
            let p = path.key("parent_death_signal");
            let text = self.text(sig, &p);
            match parse_signal(&text) {
                Ok(s) => out.push(("parent_death_signal", Some(Builtin::ParentDeathSignal(s)))),
                Err(m) => {
                    self.error(&p, m);
                    out.push(("parent_death_signal", None));
                }
            }
        }
        out
    }
}

/// The built-in keys of a raw hook, borrowed out so the rest can be moved.
struct RawBuiltins {
    close_fds: Option<bool>,
    seed_env: Option<String>,
    setsid: Option<bool>,
    umask: Option<Scalar>,
    rlimits: Option<RawEnv>,
    user: Option<Scalar>,
    group: Option<Scalar>,
    nice: Option<i32>,
    oom_score_adj: Option<i32>,
    parent_death_signal: Option<Scalar>,
}

fn raw_builtins(raw: &RawHook) -> RawBuiltins {
    RawBuiltins {
        close_fds: raw.close_fds,
        seed_env: raw.seed_env.clone(),
        setsid: raw.setsid,
        umask: raw.umask.clone(),
        rlimits: raw.rlimits.clone(),
        user: raw.user.clone(),
        group: raw.group.clone(),
        nice: raw.nice,
        oom_score_adj: raw.oom_score_adj,
        parent_death_signal: raw.parent_death_signal.clone(),
    }
}
