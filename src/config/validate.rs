//! Semantic validation: the raw mirror in, the `model` types out, every problem
//! collected on the way.
//!
//! Each check reports at the key path it is about and carries on with a stand-in
//! value, so one load reports everything. Keys that deserialization already reported
//! and removed are "poisoned": checks that would only repeat that problem (a missing
//! required key, a clash with a default) stay quiet about them.

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::duration::{parse_duration, show};
use super::error::{with_suggestion, Issue};
use super::location::{KeyPath, LocationIndex};
use super::model::*;
use super::raw::*;
use super::size::parse_size;
use super::upstream::UpstreamParts;

const DEFAULT_PROXY_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);
const SECOND: Duration = Duration::from_secs(1);
/// A pool's workers each need a port of their own.
const MAX_WORKERS: usize = u16::MAX as usize;
/// Far beyond any machine's cores; a typo such as `threads: 40000` is refused rather
/// than started.
const MAX_THREADS: usize = 1024;
const COMMAND_EXAMPLE: &str = r#"["python3", "app.py", "--port", "{port}"]"#;

/// Check `raw` and build the model. The `Config` is only meaningful when the issue
/// list comes back empty (and deserialization reported nothing either).
pub(super) fn validate(
    raw: RawConfig,
    source: &Path,
    index: &LocationIndex,
    poisoned: &[KeyPath],
) -> (Config, Vec<Issue>) {
    let mut c = Checker {
        index,
        poisoned,
        issues: Vec::new(),
    };
    let root = KeyPath::root();
    let (proxy, mut listeners) = c.proxy(raw.proxy.unwrap_or_default(), &root.key("proxy"));
    let (admin, admin_listener) = c.admin(raw.admin.unwrap_or_default(), &root.key("admin"));
    listeners.extend(admin_listener);
    c.listen_clashes(&listeners);
    let log = c.log(raw.log.unwrap_or_default(), &root.key("log"));
    let raw_shutdown = raw.shutdown.unwrap_or_default();
    let shutdown = ShutdownConfig {
        timeout: c
            .duration(
                raw_shutdown.timeout,
                &root.key("shutdown").key("timeout"),
                30 * SECOND,
            )
            .unwrap_or(30 * SECOND),
        delay: c
            .duration(
                raw_shutdown.delay,
                &root.key("shutdown").key("delay"),
                Duration::ZERO,
            )
            .unwrap_or(Duration::ZERO),
    };
    let pools = c.pools(raw.pools, &root.key("pools"));
    c.port_clashes(&pools, &listeners);
    let names: Vec<&str> = pools.iter().map(|p| p.config.name.as_str()).collect();
    let routes = c.routes(raw.routes, &root.key("routes"), &names);
    let hooks = c.global_hooks(raw.hooks, &root.key("hooks"));
    let config = Config {
        source: source.to_path_buf(),
        proxy,
        admin,
        log,
        shutdown,
        pools: pools.into_iter().map(|p| p.config).collect(),
        routes,
        hooks,
        watch: raw.reload.and_then(|r| r.watch).unwrap_or(false),
    };
    (config, c.issues)
}

pub(super) struct Checker<'a> {
    index: &'a LocationIndex,
    poisoned: &'a [KeyPath],
    issues: Vec<Issue>,
}

/// A listen address that is valid, with where it was configured.
pub(super) struct Listener {
    pub(super) path: KeyPath,
    pub(super) addr: SocketAddr,
}

struct CheckedPool {
    config: PoolConfig,
    path: KeyPath,
    /// `None` when the range was missing or invalid (already reported).
    ports: Option<PortRange>,
}

impl Checker<'_> {
    /// Already reported by deserialization: `path` or one of its ancestors was removed.
    pub(super) fn poisoned(&self, path: &KeyPath) -> bool {
        self.poisoned.iter().any(|p| path.starts_with(p))
    }

    /// Something at, above or below `path` was removed.
    pub(super) fn touched(&self, path: &KeyPath) -> bool {
        self.poisoned
            .iter()
            .any(|p| path.starts_with(p) || p.starts_with(path))
    }

    pub(super) fn error(&mut self, path: &KeyPath, message: impl Into<String>) {
        if !self.poisoned(path) {
            self.issues.push(Issue::at(path.clone(), message));
        }
    }

    pub(super) fn key_error(&mut self, path: &KeyPath, message: impl Into<String>) {
        if !self.poisoned(path) {
            self.issues.push(Issue::at_key(path.clone(), message));
        }
    }

    pub(super) fn missing(&mut self, path: &KeyPath, hint: &str) {
        let key = path.last_key().unwrap_or_default();
        self.error(path, format!("missing required key {key:?} ({hint})"));
    }

    /// A scalar's text, as written in the file when YAML typed it (`3.10`, not `3.1`).
    pub(super) fn text(&self, scalar: &Scalar, path: &KeyPath) -> String {
        match self.index.plain_text(path) {
            Some(source) if scalar.typed => source.to_owned(),
            _ => scalar.text.clone(),
        }
    }

    /// `None` when invalid (reported) or removed; the default when absent.
    pub(super) fn duration(
        &mut self,
        raw: Option<RawDuration>,
        path: &KeyPath,
        default: Duration,
    ) -> Option<Duration> {
        match raw {
            None if self.poisoned(path) => None,
            None => Some(default),
            Some(RawDuration(text)) => match parse_duration(&text) {
                Ok(d) => Some(d),
                Err(message) => {
                    self.error(path, message);
                    None
                }
            },
        }
    }

    pub(super) fn positive_duration(
        &mut self,
        raw: Option<RawDuration>,
        path: &KeyPath,
        default: Duration,
    ) -> Option<Duration> {
        let d = self.duration(raw, path, default)?;
        if d.is_zero() {
            let key = path.last_key().unwrap_or_default();
            self.error(path, format!("{key} must be greater than 0"));
            return None;
        }
        Some(d)
    }

    pub(super) fn address(&mut self, scalar: &Scalar, path: &KeyPath) -> Option<SocketAddr> {
        let text = self.text(scalar, path);
        match SocketAddr::from_str(&text) {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    path,
                    format!(
                        r#"invalid listen address {text:?} (expected IP:port, e.g. "0.0.0.0:8080", "127.0.0.1:8080" or "[::]:8080"; host names are not accepted)"#
                    ),
                );
                None
            }
        }
    }

    fn proxy(&mut self, raw: RawProxy, path: &KeyPath) -> (ProxyConfig, Vec<Listener>) {
        let listen_path = path.key("listen");
        let mut listeners = Vec::new();
        match raw.listen {
            None if self.poisoned(&listen_path) => {}
            None => listeners.push(Listener {
                path: listen_path,
                addr: DEFAULT_PROXY_LISTEN,
            }),
            Some(RawListen::One(scalar)) => {
                if let Some(addr) = self.address(&scalar, &listen_path) {
                    listeners.push(Listener {
                        path: listen_path,
                        addr,
                    });
                }
            }
            Some(RawListen::Many(items)) => {
                if items.is_empty() {
                    self.error(&listen_path, "listen must name at least one address");
                }
                for (i, scalar) in items.iter().enumerate() {
                    let item_path = listen_path.index(i);
                    if let Some(addr) = self.address(scalar, &item_path) {
                        listeners.push(Listener {
                            path: item_path,
                            addr,
                        });
                    }
                }
            }
        }
        let threads = self.count(raw.threads, &path.key("threads"), MAX_THREADS);
        let config = ProxyConfig {
            listen: listeners.iter().map(|l| l.addr).collect(),
            threads,
            client_header_timeout: self.timeout_or(
                raw.client_header_timeout,
                &path.key("client_header_timeout"),
                10 * SECOND,
            ),
            client_timeout: self.timeout_or(
                raw.client_timeout,
                &path.key("client_timeout"),
                60 * SECOND,
            ),
            idle_timeout: self.timeout_or(raw.idle_timeout, &path.key("idle_timeout"), 60 * SECOND),
            max_header_size: self.size_between(
                raw.max_header_size,
                &path.key("max_header_size"),
                32 << 10,
                (1 << 10, 512 << 10),
            ) as usize,
            max_body: self.size_between(
                raw.max_body,
                &path.key("max_body"),
                100 << 20,
                (0, u64::MAX),
            ),
        };
        (config, listeners)
    }

    /// A count from 1 to `max`; out of range is an error, and 1 stands in for it
    /// (a huge count would otherwise size allocations further on).
    fn count(&mut self, raw: Option<usize>, path: &KeyPath, max: usize) -> NonZeroUsize {
        let n = self.at_least_one(raw, path);
        if n.get() > max {
            let key = path.last_key().unwrap_or_default();
            self.error(path, format!("{key} must be at most {max}"));
            return NonZeroUsize::MIN;
        }
        n
    }

    fn at_least_one(&mut self, raw: Option<usize>, path: &KeyPath) -> NonZeroUsize {
        match raw.map(NonZeroUsize::new) {
            None => NonZeroUsize::MIN,
            Some(Some(n)) => n,
            Some(None) => {
                let key = path.last_key().unwrap_or_default();
                self.error(path, format!("{key} must be at least 1"));
                NonZeroUsize::MIN
            }
        }
    }

    /// Two listeners that could not both bind: same port, and the same IP or one of
    /// them on all interfaces. Port 0 (any free port) never clashes.
    fn listen_clashes(&mut self, listeners: &[Listener]) {
        for (j, later) in listeners.iter().enumerate() {
            let clash = listeners[..j].iter().find(|earlier| {
                let (a, b) = (earlier.addr, later.addr);
                a.port() != 0
                    && a.port() == b.port()
                    && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
            });
            if let Some(earlier) = clash {
                let message = if earlier.addr == later.addr {
                    format!("address {} is already used by {}", later.addr, earlier.path)
                } else {
                    format!(
                        "address {} clashes with {} {} (same port, and one of them listens on all interfaces)",
                        later.addr, earlier.path, earlier.addr
                    )
                };
                self.error(&later.path, message);
            }
        }
    }

    fn log(&mut self, raw: RawLog, path: &KeyPath) -> LogConfig {
        let level_path = path.key("level");
        let level = match raw.level.map(|s| self.text(&s, &level_path)).as_deref() {
            None | Some("info") => LogLevel::Info,
            Some("error") => LogLevel::Error,
            Some("warn") => LogLevel::Warn,
            Some("debug") => LogLevel::Debug,
            Some("trace") => LogLevel::Trace,
            Some(other) => {
                let levels = ["error", "warn", "info", "debug", "trace"];
                let message = format!(
                    "invalid log level {other:?} (expected one of: {})",
                    levels.join(", ")
                );
                self.error(&level_path, with_suggestion(message, other, &levels));
                LogLevel::Info
            }
        };
        let format_path = path.key("format");
        let format = match raw.format.map(|s| self.text(&s, &format_path)).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                let message = format!("invalid log format {other:?} (expected one of: text, json)");
                self.error(
                    &format_path,
                    with_suggestion(message, other, &["text", "json"]),
                );
                LogFormat::Text
            }
        };
        LogConfig {
            level,
            format,
            access: raw.access.unwrap_or(false),
        }
    }

    fn pools(&mut self, raw: Option<RawPools>, path: &KeyPath) -> Vec<CheckedPool> {
        let Some(RawPools(raw)) = raw else {
            if !self.touched(path) {
                self.missing(path, "at least one pool is needed");
            }
            return Vec::new();
        };
        if raw.is_empty() && !self.touched(path) {
            self.error(path, "pools must define at least one pool");
        }
        raw.into_iter()
            .map(|(name, pool)| {
                let name = name.text;
                let pool_path = path.key(name.as_str());
                self.pool(name, pool, pool_path)
            })
            .collect()
    }

    fn pool(&mut self, name: String, raw: RawPool, path: KeyPath) -> CheckedPool {
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            self.key_error(
                &path,
                format!(
                    r#"invalid pool name {name:?} (use lowercase letters, digits, "_" and "-")"#
                ),
            );
        }
        let preload_path = path.key("preload");
        let preload = raw.preload.map(|p| self.preload(p, &preload_path));
        let command = match (&preload, raw.command) {
            (Some(_), Some(_)) => {
                self.key_error(
                    &preload_path,
                    "a pool has either command (forkyard runs your program for each worker) or preload (forkyard imports your Python app once and forks each worker from it), not both",
                );
                Vec::new()
            }
            (Some(_), None) => Vec::new(),
            (None, raw_command) => self.command(raw_command, &path.key("command")),
        };
        let workers_path = path.key("workers");
        let workers = self.count(raw.workers, &workers_path, MAX_WORKERS);
        let env = self.env(raw.env, &path.key("env"));
        let cwd_path = path.key("cwd");
        let cwd = match raw.cwd {
            None => PathBuf::from("."),
            Some(cwd) if cwd.is_empty() => {
                self.error(
                    &cwd_path,
                    r#"cwd must not be empty (use "." for the directory forkyard runs in)"#,
                );
                PathBuf::from(".")
            }
            Some(cwd) => PathBuf::from(cwd),
        };
        let bind_path = path.key("bind");
        let bind = match raw
            .bind
            .as_ref()
            .map(|b| self.text(b, &bind_path))
            .as_deref()
        {
            None | Some("port") => Bind::Port,
            Some("inherit") => Bind::Inherit,
            Some("unix") => Bind::Unix,
            Some(other) => {
                let message =
                    format!("invalid bind {other:?} (expected one of: port, inherit, unix)");
                self.error(
                    &bind_path,
                    with_suggestion(message, other, &["port", "inherit", "unix"]),
                );
                Bind::Port
            }
        };
        let ports_path = path.key("ports");
        let (ports, socket_dir) = if bind == Bind::Unix {
            if raw.ports.is_some() {
                self.error(
                    &ports_path,
                    "bind: unix workers listen on Unix sockets, not ports: leave ports out (use {socket} in the command)",
                );
            }
            let dir = crate::sockets::pool_dir(&name);
            self.socket_path_length(&dir, workers, &bind_path);
            (Some(unix_slots(workers)), Some(dir))
        } else {
            (self.ports(raw.ports, &ports_path, workers), None)
        };
        self.pool_placeholders(&command, &env, bind, &path);
        let ready_given = raw.ready.is_some();
        let ready = self.ready(raw.ready, &path.key("ready"));
        // A preload pool's TCP probe waits for an HTTP answer (`supervisor::preload`).
        if bind == Bind::Inherit && ready.probe == ReadyProbe::Tcp && preload.is_none() {
            let at = if ready_given {
                path.key("ready")
            } else {
                bind_path.clone()
            };
            self.error(
                &at,
                r#"bind: inherit needs an HTTP ready probe, e.g. ready: { http: "/" } (forkyard's own socket accepts TCP connections before the worker does)"#,
            );
        }
        let health = self.health(raw.health, &path.key("health"));
        let recycle = self.recycle(raw.recycle, &path.key("recycle"));
        let restart = self.restart(raw.restart.unwrap_or_default(), &path.key("restart"));
        let stop = self.stop(raw.stop.unwrap_or_default(), &path.key("stop"));
        let hooks = self.pool_hooks(raw.hooks, &path.key("hooks"), bind, preload.is_some());
        let response_header_given = raw
            .timeouts
            .as_ref()
            .is_some_and(|t| t.response_header.is_some());
        let upstream = self.upstream(
            UpstreamParts {
                lb: raw.lb,
                weights: raw.weights,
                retries: raw.retries,
                retry_on: raw.retry_on,
                eject: raw.eject,
                timeouts: raw.timeouts,
                keepalive: raw.keepalive,
                buffer: raw.buffer,
                max_in_flight: raw.max_in_flight,
                queue: raw.queue,
            },
            &path,
            workers,
        );
        let hang = self.hang(
            raw.hang,
            &path.key("hang"),
            super::validate_hang::HangBounds {
                bind,
                response_header: upstream.response_header_timeout,
                response_header_given,
            },
        );
        let metrics = self.worker_metrics(raw.metrics, &path.key("metrics"));
        let config = PoolConfig {
            name,
            command,
            preload,
            workers,
            ports: ports.unwrap_or(PortRange { start: 1, end: 1 }),
            env,
            cwd,
            bind,
            socket_dir,
            ready,
            health,
            hang,
            recycle,
            restart,
            stop,
            hooks,
            upstream,
            metrics,
        };
        CheckedPool {
            config,
            path,
            // Unix pools' slot numbers are not ports: they clash with nothing.
            ports: ports.filter(|_| bind != Bind::Unix),
        }
    }

    fn preload(&mut self, raw: RawPreload, path: &KeyPath) -> Preload {
        use super::validate_hooks::parse_py_target;
        let stand_in = PyTarget {
            module: String::new(),
            attribute: String::new(),
        };
        let app = match raw.app {
            None => {
                self.missing(
                    &path.key("app"),
                    r#"the app to import, "module:attribute", e.g. "myapp.wsgi:application""#,
                );
                stand_in.clone()
            }
            Some(text) => parse_py_target(&text).unwrap_or_else(|m| {
                self.error(&path.key("app"), m);
                stand_in.clone()
            }),
        };
        let python = match raw.python {
            Some(p) if p.trim().is_empty() => {
                self.error(
                    &path.key("python"),
                    r#"python must not be empty (e.g. "python3" or "target/venv/bin/python3")"#,
                );
                "python3".to_string()
            }
            Some(p) => p,
            None => "python3".to_string(),
        };
        let server = match raw.server.as_deref() {
            None => PreloadServer::Waitress,
            Some(text) => match PreloadServer::NAMED.iter().find(|(n, _)| *n == text) {
                Some((_, s)) => s.clone(),
                None if text.contains(':') => match parse_py_target(text) {
                    Ok(t) => PreloadServer::Custom(t),
                    Err(m) => {
                        self.error(&path.key("server"), m);
                        PreloadServer::Waitress
                    }
                },
                None => {
                    let names: Vec<&str> = PreloadServer::NAMED.iter().map(|(n, _)| *n).collect();
                    let message = format!(
                        r#"unknown server {text:?} (expected one of: {}, or "module:function" called as function(app, sock, **server_options))"#,
                        names.join(", ")
                    );
                    self.error(&path.key("server"), with_suggestion(message, text, &names));
                    PreloadServer::Waitress
                }
            },
        };
        let imports_path = path.key("imports");
        let imports: Vec<String> = raw.imports.unwrap_or_default();
        for (i, module) in imports.iter().enumerate() {
            let ok = !module.is_empty()
                && module.split('.').all(|p| {
                    let mut c = p.chars();
                    c.next().is_some_and(|c| c.is_alphabetic() || c == '_')
                        && c.all(|c| c.is_alphanumeric() || c == '_')
                });
            if !ok {
                self.error(
                    &imports_path.index(i),
                    format!(r#"invalid module name {module:?} (expected a dotted name such as "numpy" or "myapp.models")"#),
                );
            }
        }
        Preload {
            app,
            python,
            server,
            server_options: raw.server_options.unwrap_or_default().into_iter().collect(),
            imports,
            gc_freeze: raw.gc_freeze.unwrap_or(true),
        }
    }

    pub(super) fn command(&mut self, raw: Option<RawCommand>, path: &KeyPath) -> Vec<String> {
        let Some(RawCommand(items)) = raw else {
            self.missing(path, &format!("the worker's argv, e.g. {COMMAND_EXAMPLE}"));
            return Vec::new();
        };
        let argv: Vec<String> = items
            .iter()
            .enumerate()
            .map(|(i, s)| self.text(s, &path.index(i)))
            .collect();
        match argv.first() {
            None => self.error(
                path,
                format!("command must not be empty (expected the program and its arguments, e.g. {COMMAND_EXAMPLE})"),
            ),
            Some(program) if program.trim().is_empty() => {
                self.error(&path.index(0), "the program name (command[0]) must not be empty")
            }
            Some(_) => {}
        }
        argv
    }

    /// The longest socket path must fit in `sun_path` (107 bytes and a NUL).
    fn socket_path_length(&mut self, dir: &Path, workers: NonZeroUsize, path: &KeyPath) {
        let longest = dir.join(socket_file_name(unix_slots(workers).len() - 1));
        let len = longest.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            self.error(
                path,
                format!(
                    "the worker socket path {} is {len} bytes, more than the {MAX_SOCKET_PATH} a Unix socket allows (set RUNTIME_DIRECTORY or XDG_RUNTIME_DIR to a shorter directory, or shorten the pool name)",
                    longest.display()
                ),
            );
        }
    }

    fn ports(
        &mut self,
        raw: Option<Scalar>,
        path: &KeyPath,
        workers: NonZeroUsize,
    ) -> Option<PortRange> {
        let Some(scalar) = raw else {
            self.missing(
                path,
                r#"the ports the workers listen on, e.g. ports: "9001-9010""#,
            );
            return None;
        };
        let text = self.text(&scalar, path);
        let range = match parse_port_range(&text) {
            Ok(range) => range,
            Err(message) => {
                self.error(path, message);
                return None;
            }
        };
        if range.len() < workers.get() {
            let n = range.len();
            let noun = if n == 1 { "port" } else { "ports" };
            self.error(
                path,
                format!(
                    "port range {} has {n} {noun} but workers is {workers}",
                    show_range(range)
                ),
            );
        }
        Some(range)
    }

    pub(super) fn env(&mut self, raw: Option<RawEnv>, path: &KeyPath) -> Vec<(String, String)> {
        let Some(RawEnv(vars)) = raw else {
            return Vec::new();
        };
        vars.into_iter()
            .map(|(name, value)| {
                let name = name.text;
                let var_path = path.key(name.as_str());
                if !is_env_name(&name) {
                    self.key_error(
                        &var_path,
                        format!(r#"invalid environment variable name {name:?} (use letters, digits and "_", not starting with a digit)"#),
                    );
                }
                let value = self.text(&value, &var_path);
                (name, value)
            })
            .collect()
    }

    fn ready(&mut self, raw: Option<RawReady>, path: &KeyPath) -> ReadyCheck {
        let default_timeout = 30 * SECOND;
        let default_interval = Duration::from_millis(100);
        let Some(raw) = raw else {
            return ReadyCheck {
                probe: ReadyProbe::Tcp,
                timeout: default_timeout,
                interval: default_interval,
            };
        };
        let probe = self.probe(raw.tcp, raw.http, path, "ready");
        ReadyCheck {
            probe,
            timeout: self
                .positive_duration(raw.timeout, &path.key("timeout"), default_timeout)
                .unwrap_or(default_timeout),
            interval: self
                .positive_duration(raw.interval, &path.key("interval"), default_interval)
                .unwrap_or(default_interval),
        }
    }

    /// Exactly one of `tcp: true` / `http: "/path"` under `key` (`ready`, `health`).
    fn probe(
        &mut self,
        tcp: Option<bool>,
        http: Option<String>,
        path: &KeyPath,
        key: &str,
    ) -> ReadyProbe {
        let (tcp_path, http_path) = (path.key("tcp"), path.key("http"));
        match (tcp, http) {
            (Some(true), Some(_)) => {
                self.error(
                    path,
                    format!(
                        r#"{key} must set exactly one of tcp: true or http: "/path", not both"#
                    ),
                );
                ReadyProbe::Tcp
            }
            (Some(false), _) => {
                self.error(
                    &tcp_path,
                    r#"tcp: false is not a probe (use tcp: true, or remove tcp and set http: "/path")"#,
                );
                ReadyProbe::Tcp
            }
            (None, None) => {
                if !self.poisoned(&tcp_path) && !self.poisoned(&http_path) {
                    self.error(
                        path,
                        format!(r#"{key} must set one of tcp: true or http: "/path""#),
                    );
                }
                ReadyProbe::Tcp
            }
            (Some(true), None) => ReadyProbe::Tcp,
            (None, Some(http)) => {
                if !http.starts_with('/') {
                    self.error(
                        &http_path,
                        format!(r#"http path {http:?} must start with "/""#),
                    );
                }
                ReadyProbe::Http { path: http }
            }
        }
    }

    fn recycle(&mut self, raw: Option<RawRecycle>, path: &KeyPath) -> Recycle {
        let Some(raw) = raw else {
            return Recycle::default();
        };
        if raw.max_requests == Some(0) {
            self.error(&path.key("max_requests"), "max_requests must be at least 1");
        }
        let mut size = |raw: Option<Scalar>, key: &str| {
            raw.and_then(|scalar| {
                let p = path.key(key);
                let text = self.text(&scalar, &p);
                match parse_size(&text) {
                    Ok(n) => Some(n),
                    Err(m) => {
                        self.error(&p, m);
                        None
                    }
                }
            })
        };
        let max_rss = size(raw.max_rss, "max_rss");
        let max_uss = size(raw.max_uss, "max_uss");
        Recycle {
            max_requests: raw.max_requests.filter(|n| *n > 0),
            max_requests_jitter: raw.max_requests_jitter.unwrap_or(0),
            max_lifetime: raw
                .max_lifetime
                .and_then(|d| self.positive_duration(Some(d), &path.key("max_lifetime"), SECOND)),
            max_rss,
            max_uss,
        }
    }

    fn health(&mut self, raw: Option<RawHealth>, path: &KeyPath) -> Option<HealthCheck> {
        let raw = raw?;
        let probe = self.probe(raw.tcp, raw.http, path, "health");
        let at_least_one = |c: &mut Self, v: Option<u32>, key: &str, default: u32| -> u32 {
            match v {
                None => default,
                Some(0) => {
                    c.error(&path.key(key), format!("{key} must be at least 1"));
                    default
                }
                Some(n) => n,
            }
        };
        let unhealthy_after = at_least_one(self, raw.unhealthy_after, "unhealthy_after", 3);
        let healthy_after = at_least_one(self, raw.healthy_after, "healthy_after", 2);
        Some(HealthCheck {
            probe,
            interval: self
                .positive_duration(raw.interval, &path.key("interval"), 5 * SECOND)
                .unwrap_or(5 * SECOND),
            timeout: self
                .positive_duration(raw.timeout, &path.key("timeout"), SECOND)
                .unwrap_or(SECOND),
            unhealthy_after,
            healthy_after,
            restart_after: self
                .duration(raw.restart_after, &path.key("restart_after"), 30 * SECOND)
                .unwrap_or(30 * SECOND),
        })
    }

    fn restart(&mut self, raw: RawRestart, path: &KeyPath) -> RestartPolicy {
        let (min_default, max_default) = (Duration::from_millis(100), 30 * SECOND);
        let reset_default = 60 * SECOND;
        let (min_path, max_path) = (path.key("backoff_min"), path.key("backoff_max"));
        let (min_given, max_given) = (raw.backoff_min.is_some(), raw.backoff_max.is_some());
        let min = self.positive_duration(raw.backoff_min, &min_path, min_default);
        let max = self.duration(raw.backoff_max, &max_path, max_default);
        if let (Some(min), Some(max)) = (min, max) {
            if min > max {
                let default_note = |given: bool| if given { "" } else { " (the default)" };
                let message = format!(
                    "backoff_min {}{} is greater than backoff_max {}{}",
                    show(min),
                    default_note(min_given),
                    show(max),
                    default_note(max_given)
                );
                self.error(if min_given { &min_path } else { &max_path }, message);
            }
        }
        let crash = raw.crash_loop.unwrap_or_default();
        let crash_path = path.key("crash_loop");
        let failures = self.at_least_one(crash.failures, &crash_path.key("failures"));
        RestartPolicy {
            backoff_min: min.unwrap_or(min_default),
            backoff_max: max.unwrap_or(max_default),
            reset_after: self
                .duration(raw.reset_after, &path.key("reset_after"), reset_default)
                .unwrap_or(reset_default),
            crash_loop_failures: if crash.failures.is_some() {
                failures.get()
            } else {
                5
            },
            crash_loop_window: self
                .positive_duration(crash.window, &crash_path.key("window"), 60 * SECOND)
                .unwrap_or(60 * SECOND),
        }
    }

    fn stop(&mut self, raw: RawStop, path: &KeyPath) -> StopPolicy {
        let signal_path = path.key("signal");
        let signal = match raw.signal {
            None => Signal::SIGTERM,
            Some(scalar) => {
                let text = self.text(&scalar, &signal_path);
                match parse_signal(&text) {
                    Ok(signal) => signal,
                    Err(message) => {
                        self.error(&signal_path, message);
                        Signal::SIGTERM
                    }
                }
            }
        };
        let grace = self
            .duration(raw.grace, &path.key("grace"), 30 * SECOND)
            .unwrap_or(30 * SECOND);
        let drain = self
            .duration(raw.drain, &path.key("drain"), 30 * SECOND)
            .unwrap_or(30 * SECOND);
        StopPolicy {
            signal,
            grace,
            drain,
        }
    }

    /// Worker port ranges must not overlap each other (a range is the pool's whole
    /// reservation), and the ports the configured workers use must not be ones
    /// forkyard itself listens on where workers bind (127.0.0.1, or all interfaces).
    fn port_clashes(&mut self, pools: &[CheckedPool], listeners: &[Listener]) {
        for (j, pool) in pools.iter().enumerate() {
            let Some(range) = pool.ports else { continue };
            let ports_path = pool.path.key("ports");
            for other in &pools[..j] {
                if let Some(other_range) = other.ports.filter(|r| r.overlaps(&range)) {
                    self.error(
                        &ports_path,
                        format!(
                            "port range {} overlaps pool {:?} (ports {})",
                            show_range(range),
                            other.config.name,
                            show_range(other_range)
                        ),
                    );
                }
            }
            let used = used_ports(range, pool.config.workers);
            for listener in listeners {
                let (ip, port) = (listener.addr.ip(), listener.addr.port());
                let shared = ip.is_unspecified() || ip == Ipv4Addr::LOCALHOST;
                if port != 0 && shared && used.contains(port) {
                    self.error(
                        &ports_path,
                        format!(
                            "workers use ports {}, which include port {port} of {} {} (workers listen on 127.0.0.1)",
                            show_range(used),
                            listener.path,
                            listener.addr
                        ),
                    );
                }
            }
        }
    }

    fn routes(&mut self, raw: Option<Vec<RawRoute>>, path: &KeyPath, pools: &[&str]) -> Vec<Route> {
        let pool_list = pools.join(", ");
        let raw = raw.unwrap_or_default();
        if raw.is_empty() {
            return match pools {
                [only] => vec![Route {
                    host: None,
                    path_prefix: None,
                    pool: (*only).to_owned(),
                }],
                [] => Vec::new(),
                _ => {
                    if !self.touched(path) {
                        self.error(
                            path,
                            format!("routes are required when there is more than one pool (pools: {pool_list})"),
                        );
                    }
                    Vec::new()
                }
            };
        }
        let mut routes = Vec::new();
        for (i, route) in raw.into_iter().enumerate() {
            let route_path = path.index(i);
            let host = route.host.map(|h| {
                self.host(&h, &route_path.key("host"));
                h.to_ascii_lowercase()
            });
            if let Some(prefix) = &route.path_prefix {
                if !prefix.starts_with('/') {
                    self.error(
                        &route_path.key("path_prefix"),
                        format!(r#"path_prefix {prefix:?} must start with "/""#),
                    );
                }
            }
            let pool_path = route_path.key("pool");
            let pool = match route.pool {
                None => {
                    self.missing(&pool_path, &format!("pools: {pool_list}"));
                    String::new()
                }
                Some(name) => {
                    let removed = self.poisoned(&KeyPath::root().key("pools").key(name.as_str()));
                    if !pools.contains(&name.as_str()) && !removed {
                        let message = format!("unknown pool {name:?} (pools: {pool_list})");
                        self.error(&pool_path, with_suggestion(message, &name, pools));
                    }
                    name
                }
            };
            routes.push(Route {
                host,
                path_prefix: route.path_prefix,
                pool,
            });
        }
        routes
    }

    fn host(&mut self, host: &str, path: &KeyPath) {
        let bracketed = host.starts_with('[');
        if host.is_empty() {
            self.error(
                path,
                "host must not be empty (leave it out to match any host)",
            );
        } else if (host.contains(':') && !bracketed) || host.contains("]:") {
            self.error(
                path,
                format!("host {host:?} must not include a port (the Host header is matched without its port)"),
            );
        } else if host
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '*')
        {
            self.error(
                path,
                format!(r#"invalid host {host:?} (expected an exact host name like "api.example.com"; wildcards are not supported)"#),
            );
        }
    }
}

fn parse_port_range(text: &str) -> Result<PortRange, String> {
    let malformed = || {
        format!(
            r#"invalid port range {text:?} (expected "START-END" like "9001-9099", or a single port like "9001")"#
        )
    };
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (text.trim(), text.trim()),
    };
    let port = |s: &str| {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        s.parse::<u16>()
            .map_err(|_| format!("port range {text:?} has a port above 65535"))
    };
    let (start, end) = (port(a)?, port(b)?);
    if start == 0 {
        return Err(format!(
            "port range {} contains port 0 (ports are 1-65535)",
            show_range(PortRange { start, end })
        ));
    }
    if start > end {
        return Err(format!(
            "port range {start}-{end} is reversed (the first port must not be greater than the last)"
        ));
    }
    Ok(PortRange { start, end })
}

/// The ports of slots `0..workers`, clamped to the range.
fn used_ports(range: PortRange, workers: NonZeroUsize) -> PortRange {
    let extra = u16::try_from(workers.get() - 1).unwrap_or(u16::MAX);
    PortRange {
        start: range.start,
        end: range.start.saturating_add(extra).min(range.end),
    }
}

fn show_range(range: PortRange) -> String {
    if range.start == range.end {
        range.start.to_string()
    } else {
        format!("{}-{}", range.start, range.end)
    }
}

pub(super) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// `SIGTERM`, `TERM` or `sigterm`.
pub(super) fn parse_signal(text: &str) -> Result<Signal, String> {
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if let Ok(signal) = Signal::from_str(&name) {
        return Ok(signal);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "signal numbers are not accepted, use a name like SIGTERM (got {text})"
        ));
    }
    let message = format!(
        "unknown signal {text:?} (expected a name like SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2 or SIGKILL)"
    );
    let known: Vec<&str> = Signal::iterator().map(Signal::as_str).collect();
    Err(with_suggestion(message, &name, &known))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{load_from_str, ConfigError};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn errors(yaml: &str) -> Vec<ConfigError> {
        match load_from_str(yaml, Path::new("config.yaml"), &no_env) {
            Ok(config) => panic!("expected errors, got {config:#?}"),
            Err(e) => e.0,
        }
    }

    /// The one error `yaml` has, as displayed: `config.yaml:L:C: path: message`.
    fn one(yaml: &str) -> String {
        let errors = errors(yaml);
        assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
        errors[0].to_string()
    }

    /// A valid pool to put other keys next to.
    const POOL: &str = "pools:\n  web:\n    command: [app]\n    ports: \"9001\"\n";

    #[test]
    fn unknown_key_with_suggestion() {
        let e = one("pools:\n  web:\n    command: [app]\n    ports: \"9001\"\n    wrokers: 2\n");
        assert_eq!(
            e,
            r#"config.yaml:5:5: pools.web.wrokers: unknown key "wrokers" (expected one of: command, preload, workers, ports, env, cwd, bind, ready, health, hang, recycle, restart, stop, hooks, lb, weights, retries, retry_on, eject, timeouts, keepalive, buffer, max_in_flight, queue, metrics); did you mean "workers"?"#
        );
        let errors = errors(&format!("{POOL}prxy: {{}}\n"));
        assert_eq!(errors[0].path, "prxy");
        assert_eq!((errors[0].line, errors[0].column), (Some(5), Some(1)));
        assert_eq!(
            errors[0].message,
            r#"unknown key "prxy" (expected one of: proxy, admin, log, shutdown, pools, routes, hooks, reload); did you mean "proxy"?"#
        );
    }

    #[test]
    fn wrong_type() {
        assert_eq!(
            one("pools:\n  web:\n    command: [app]\n    ports: \"9001\"\n    workers: four\n"),
            r#"config.yaml:5:14: pools.web.workers: expected a whole number, found string "four""#
        );
        assert_eq!(
            one(&format!("{POOL}proxy: [1]\n")),
            "config.yaml:5:1: proxy: expected a mapping, found a list"
        );
    }

    #[test]
    fn command_given_as_one_string() {
        assert_eq!(
            one("pools:\n  web:\n    command: python3 app.py\n    ports: \"9001\"\n"),
            r#"config.yaml:3:14: pools.web.command: expected a list of strings (argv), found string "python3 app.py"; write each argument separately, e.g. ["python3", "app.py"]"#
        );
    }

    #[test]
    fn bad_list_item_is_reported_once() {
        assert_eq!(
            one("pools:\n  web:\n    command: [app, {x: 1}]\n    ports: \"9001\"\n"),
            "config.yaml:3:20: pools.web.command[1]: expected a string, found a mapping"
        );
    }

    #[test]
    fn bad_duration() {
        assert_eq!(
            one(&format!(
                "{POOL}    restart: {{ backoff_max: \"5 sec\" }}\n"
            )),
            r#"config.yaml:5:29: pools.web.restart.backoff_max: invalid duration "5 sec" (expected e.g. "5s", "250ms", "1m"; bare numbers are not durations)"#
        );
    }

    #[test]
    fn number_as_duration() {
        assert_eq!(
            one(&format!("{POOL}shutdown:\n  timeout: 30\n")),
            r#"config.yaml:6:12: shutdown.timeout: invalid duration 30 (expected e.g. "5s", "250ms", "1m"; bare numbers are not durations)"#
        );
    }

    #[test]
    fn bad_listen_address() {
        assert_eq!(
            one(&format!("proxy:\n  listen: localhost:80\n{POOL}")),
            r#"config.yaml:2:11: proxy.listen: invalid listen address "localhost:80" (expected IP:port, e.g. "0.0.0.0:8080", "127.0.0.1:8080" or "[::]:8080"; host names are not accepted)"#
        );
    }

    #[test]
    fn duplicate_listen_address() {
        assert_eq!(
            one(&format!("proxy:\n  listen: [\"0.0.0.0:80\", \"0.0.0.0:80\"]\n{POOL}")),
            "config.yaml:2:26: proxy.listen[1]: address 0.0.0.0:80 is already used by proxy.listen[0]"
        );
    }

    #[test]
    fn admin_clashes_with_proxy() {
        assert_eq!(
            one(&format!("admin:\n  listen: 127.0.0.1:8080\n{POOL}")),
            "config.yaml:2:11: admin.listen: address 127.0.0.1:8080 clashes with proxy.listen 0.0.0.0:8080 (same port, and one of them listens on all interfaces)"
        );
    }

    #[test]
    fn port_zero_listeners_never_clash() {
        let yaml =
            format!("proxy:\n  listen: \"127.0.0.1:0\"\nadmin:\n  listen: \"127.0.0.1:0\"\n{POOL}");
        assert!(load_from_str(&yaml, Path::new("c.yaml"), &no_env).is_ok());
    }

    #[test]
    fn counts_have_an_upper_bound() {
        assert_eq!(
            one(&format!("proxy:\n  threads: 100000\n{POOL}")),
            "config.yaml:2:12: proxy.threads: threads must be at most 1024"
        );
        assert_eq!(
            one("pools:\n  web:\n    command: [app]\n    ports: 9001-9010\n    workers: 8604264891437405252\n    weights: [1]\n"),
            "config.yaml:5:14: pools.web.workers: workers must be at most 65535"
        );
    }

    #[test]
    fn threads_zero() {
        assert_eq!(
            one(&format!("proxy:\n  threads: 0\n{POOL}")),
            "config.yaml:2:12: proxy.threads: threads must be at least 1"
        );
    }

    #[test]
    fn workers_zero() {
        assert_eq!(
            one(&format!("{POOL}    workers: 0\n")),
            "config.yaml:5:14: pools.web.workers: workers must be at least 1"
        );
    }

    #[test]
    fn empty_command() {
        assert_eq!(
            one("pools:\n  web:\n    command: []\n    ports: \"9001\"\n"),
            r#"config.yaml:3:5: pools.web.command: command must not be empty (expected the program and its arguments, e.g. ["python3", "app.py", "--port", "{port}"])"#
        );
    }

    #[test]
    fn empty_program() {
        assert_eq!(
            one("pools:\n  web:\n    command: [\"\", x]\n    ports: \"9001\"\n"),
            "config.yaml:3:15: pools.web.command[0]: the program name (command[0]) must not be empty"
        );
    }

    #[test]
    fn missing_command() {
        assert_eq!(
            one("pools:\n  web:\n    ports: \"9001\"\n"),
            r#"config.yaml:2:3: pools.web.command: missing required key "command" (the worker's argv, e.g. ["python3", "app.py", "--port", "{port}"])"#
        );
    }

    #[test]
    fn bad_pool_name() {
        assert_eq!(
            one("pools:\n  Web.1:\n    command: [app]\n    ports: \"9001\"\n"),
            r#"config.yaml:2:3: pools.Web.1: invalid pool name "Web.1" (use lowercase letters, digits, "_" and "-")"#
        );
    }

    #[test]
    fn no_pools() {
        assert_eq!(
            one("log:\n  level: info\n"),
            r#"config.yaml:1:1: pools: missing required key "pools" (at least one pool is needed)"#
        );
        assert_eq!(
            one("pools: {}\n"),
            "config.yaml:1:1: pools: pools must define at least one pool"
        );
        assert_eq!(
            one(""),
            r#"config.yaml: pools: missing required key "pools" (at least one pool is needed)"#
        );
    }

    #[test]
    fn missing_ports() {
        assert_eq!(
            one("pools:\n  web:\n    command: [app]\n"),
            r#"config.yaml:2:3: pools.web.ports: missing required key "ports" (the ports the workers listen on, e.g. ports: "9001-9010")"#
        );
    }

    fn ports(value: &str) -> String {
        one(&format!(
            "pools:\n  web:\n    command: [app]\n    ports: {value}\n"
        ))
    }

    #[test]
    fn malformed_port_range() {
        assert_eq!(
            ports("\"9001..9002\""),
            r#"config.yaml:4:12: pools.web.ports: invalid port range "9001..9002" (expected "START-END" like "9001-9099", or a single port like "9001")"#
        );
        assert_eq!(
            ports("70000"),
            r#"config.yaml:4:12: pools.web.ports: port range "70000" has a port above 65535"#
        );
    }

    #[test]
    fn reversed_port_range() {
        assert_eq!(
            ports("9099-9001"),
            "config.yaml:4:12: pools.web.ports: port range 9099-9001 is reversed (the first port must not be greater than the last)"
        );
    }

    #[test]
    fn port_range_with_port_zero() {
        assert_eq!(
            ports("0-10"),
            "config.yaml:4:12: pools.web.ports: port range 0-10 contains port 0 (ports are 1-65535)"
        );
    }

    #[test]
    fn port_range_smaller_than_workers() {
        assert_eq!(
            one("pools:\n  web:\n    command: [app]\n    workers: 4\n    ports: 9001-9002\n"),
            "config.yaml:5:12: pools.web.ports: port range 9001-9002 has 2 ports but workers is 4"
        );
    }

    #[test]
    fn overlapping_port_ranges() {
        let yaml = "pools:\n  web:\n    command: [app]\n    ports: 9001-9099\n  api:\n    command: [app]\n    ports: 9050-9150\nroutes:\n  - pool: web\n";
        assert_eq!(
            one(yaml),
            r#"config.yaml:7:12: pools.api.ports: port range 9050-9150 overlaps pool "web" (ports 9001-9099)"#
        );
    }

    #[test]
    fn worker_port_is_a_listen_port() {
        let yaml = "proxy:\n  listen: [\"0.0.0.0:8080\", \"0.0.0.0:9002\"]\npools:\n  web:\n    command: [app]\n    workers: 4\n    ports: 9001-9099\n";
        assert_eq!(
            one(yaml),
            "config.yaml:7:12: pools.web.ports: workers use ports 9001-9004, which include port 9002 of proxy.listen[1] 0.0.0.0:9002 (workers listen on 127.0.0.1)"
        );
        // Another IP on the same port does not clash with 127.0.0.1.
        let yaml = yaml.replace("0.0.0.0:9002", "10.0.0.1:9002");
        assert!(load_from_str(&yaml, Path::new("c.yaml"), &no_env).is_ok());
    }

    fn ready(value: &str) -> String {
        one(&format!("{POOL}    ready: {value}\n"))
    }

    #[test]
    fn ready_with_both_probes() {
        assert_eq!(
            ready("{ tcp: true, http: /healthz }"),
            r#"config.yaml:5:5: pools.web.ready: ready must set exactly one of tcp: true or http: "/path", not both"#
        );
    }

    #[test]
    fn ready_with_no_probe() {
        assert_eq!(
            ready("{ timeout: 5s }"),
            r#"config.yaml:5:5: pools.web.ready: ready must set one of tcp: true or http: "/path""#
        );
    }

    #[test]
    fn ready_tcp_false() {
        assert_eq!(
            ready("{ tcp: false }"),
            r#"config.yaml:5:19: pools.web.ready.tcp: tcp: false is not a probe (use tcp: true, or remove tcp and set http: "/path")"#
        );
    }

    #[test]
    fn ready_http_path_without_slash() {
        assert_eq!(
            ready("{ http: healthz }"),
            r#"config.yaml:5:20: pools.web.ready.http: http path "healthz" must start with "/""#
        );
    }

    #[test]
    fn ready_interval_zero() {
        assert_eq!(
            ready("{ tcp: true, interval: 0s }"),
            "config.yaml:5:35: pools.web.ready.interval: interval must be greater than 0"
        );
    }

    #[test]
    fn ready_probe_with_wrong_type_is_reported_once() {
        assert_eq!(
            ready("{ tcp: \"yes\" }"),
            r#"config.yaml:5:19: pools.web.ready.tcp: expected true or false, found string "yes""#
        );
    }

    #[test]
    fn backoff_min_above_max() {
        assert_eq!(
            one(&format!("{POOL}    restart: {{ backoff_min: 5s, backoff_max: 1s }}\n")),
            "config.yaml:5:29: pools.web.restart.backoff_min: backoff_min 5s is greater than backoff_max 1s"
        );
        assert_eq!(
            one(&format!("{POOL}    restart: {{ backoff_max: 50ms }}\n")),
            "config.yaml:5:29: pools.web.restart.backoff_max: backoff_min 100ms (the default) is greater than backoff_max 50ms"
        );
    }

    #[test]
    fn backoff_min_zero() {
        assert_eq!(
            one(&format!("{POOL}    restart: {{ backoff_min: 0ms }}\n")),
            "config.yaml:5:29: pools.web.restart.backoff_min: backoff_min must be greater than 0"
        );
    }

    #[test]
    fn unknown_signal() {
        assert_eq!(
            one(&format!("{POOL}    stop: {{ signal: SIGTREM }}\n")),
            r#"config.yaml:5:21: pools.web.stop.signal: unknown signal "SIGTREM" (expected a name like SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2 or SIGKILL); did you mean "SIGTERM"?"#
        );
        assert_eq!(
            one(&format!("{POOL}    stop: {{ signal: 15 }}\n")),
            "config.yaml:5:21: pools.web.stop.signal: signal numbers are not accepted, use a name like SIGTERM (got 15)"
        );
    }

    #[test]
    fn signal_names_with_or_without_prefix() {
        for (text, signal) in [
            ("TERM", nix::sys::signal::Signal::SIGTERM),
            ("SIGQUIT", nix::sys::signal::Signal::SIGQUIT),
            ("usr1", nix::sys::signal::Signal::SIGUSR1),
        ] {
            let yaml = format!("{POOL}    stop: {{ signal: {text} }}\n");
            let config = load_from_str(&yaml, Path::new("c.yaml"), &no_env);
            assert_eq!(config.map(|c| c.pools[0].stop.signal), Ok(signal));
        }
    }

    const TWO_POOLS: &str = "pools:\n  web:\n    command: [app]\n    ports: \"9001\"\n  api:\n    command: [app]\n    ports: \"9002\"\n";

    #[test]
    fn routes_required_with_two_pools() {
        assert_eq!(
            one(TWO_POOLS),
            "config.yaml:1:1: routes: routes are required when there is more than one pool (pools: web, api)"
        );
    }

    #[test]
    fn route_to_unknown_pool() {
        assert_eq!(
            one(&format!(
                "{TWO_POOLS}routes:\n  - pool: web\n  - {{ path_prefix: /api, pool: wbe }}\n"
            )),
            r#"config.yaml:10:32: routes[1].pool: unknown pool "wbe" (pools: web, api); did you mean "web"?"#
        );
    }

    #[test]
    fn route_without_pool() {
        assert_eq!(
            one(&format!("{POOL}routes:\n  - host: a.example\n")),
            r#"config.yaml:6:5: routes[0].pool: missing required key "pool" (pools: web)"#
        );
    }

    #[test]
    fn path_prefix_without_slash() {
        assert_eq!(
            one(&format!(
                "{POOL}routes:\n  - {{ path_prefix: api, pool: web }}\n"
            )),
            r#"config.yaml:6:20: routes[0].path_prefix: path_prefix "api" must start with "/""#
        );
    }

    #[test]
    fn host_with_port() {
        assert_eq!(
            one(&format!(
                "{POOL}routes:\n  - {{ host: \"a.example:80\", pool: web }}\n"
            )),
            r#"config.yaml:6:13: routes[0].host: host "a.example:80" must not include a port (the Host header is matched without its port)"#
        );
    }

    #[test]
    fn invalid_env_name() {
        assert_eq!(
            one(&format!("{POOL}    env:\n      APP-ENV: production\n")),
            r#"config.yaml:6:7: pools.web.env.APP-ENV: invalid environment variable name "APP-ENV" (use letters, digits and "_", not starting with a digit)"#
        );
    }

    #[test]
    fn invalid_log_level_and_format() {
        let errors = errors(&format!("{POOL}log:\n  level: verbose\n  format: jsno\n"));
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                r#"config.yaml:6:10: log.level: invalid log level "verbose" (expected one of: error, warn, info, debug, trace)"#,
                r#"config.yaml:7:11: log.format: invalid log format "jsno" (expected one of: text, json); did you mean "json"?"#,
            ]
        );
    }

    #[test]
    fn removed_pool_is_not_also_an_unknown_route_target() {
        assert_eq!(
            one(&format!(
                "{TWO_POOLS}  db: 3\nroutes:\n  - pool: db\n  - pool: web\n"
            )),
            "config.yaml:8:7: pools.db: expected a mapping, found number 3"
        );
    }
}
