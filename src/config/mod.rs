//! Loading `config.yaml`: from text to a validated [`Config`], or to every problem in
//! the file at once.
//!
//! The module owns the file format (a public contract, documented key by key in
//! `docs/configuration.md`) and turns it into the [`model`] types, which are all the
//! rest of forkyard ever sees. Loading has two stages:
//!
//! 1. **Shape** (`raw`). The text is parsed into a `serde_yaml::Value` (a YAML syntax
//!    error is reported alone), `${VAR}` references in string values are substituted
//!    (`interpolate`), and the value is deserialized into a serde mirror whose
//!    structs deny unknown keys and whose fields are all optional. serde stops at the
//!    first error, so each error is recorded with its key path, the offending key is
//!    removed from the value tree (safe, since every field is optional), and
//!    deserialization runs again, until it succeeds.
//! 2. **Meaning** (`validate`). The raw mirror is checked field by field and across
//!    fields (port ranges against each other and against listen addresses, routes
//!    against pools), defaults are applied, and the model is built. Every problem is
//!    collected.
//!
//! Every problem carries a key path such as `pools.web.ports`; `location` maps paths
//! to `line:column` by walking yaml-rust2's parser events over the same text, so
//! messages read `config.yaml:14:7: pools.web.ports: …`.

pub mod model;

mod duration;
mod error;
#[cfg(test)]
mod fuzz;
mod interpolate;
mod location;
mod placeholder;
mod raw;
mod schema;
mod secret;
mod size;
mod upstream;
mod validate;
mod validate_admin;
mod validate_hang;
mod validate_hooks;
mod validate_worker_metrics;

use std::path::Path;

use serde_yaml::Value;

pub use duration::parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use location::value_position;
pub use model::*;
pub(crate) use placeholder::Placeholders;
pub use schema::json_schema;
pub use secret::{looks_secret, shown, REDACTED};
pub use size::parse_size;

use error::Issue;
use location::{key_text, KeyPath, LocationIndex, Seg};

/// Deeper flow nesting (`[[[…`) is refused before parsing: serde_yaml rejects more
/// than 128 levels anyway, but only after a parse whose cost grows with the square
/// of the depth. Brackets inside strings count too, hence the slack.
const MAX_FLOW_DEPTH: usize = 256;

/// How many times deserialization is retried after removing a bad key. Each round
/// removes one key, so this bounds the number of shape errors reported.
const MAX_SHAPE_ERRORS: usize = 200;

/// Read and validate a config file. `${VAR}` references are filled from the process
/// environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::new(vec![ConfigError {
            file: path.display().to_string(),
            line: None,
            column: None,
            path: String::new(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    load_from_str(&text, path, &env)
}

/// Validate config text that was read from `source` (used in messages and kept in
/// [`Config::source`]), looking `${VAR}` references up with `env`.
pub fn load_from_str(
    text: &str,
    source: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let file = source.display().to_string();
    if let Some((line, column)) = too_deep(text) {
        return Err(ConfigErrors::new(vec![ConfigError {
            file,
            line: Some(line),
            column: Some(column),
            path: String::new(),
            message: format!("invalid YAML: nested more than {MAX_FLOW_DEPTH} levels deep"),
        }]));
    }
    let mut value = match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Null) => Value::Mapping(Default::default()),
        Ok(value) => value,
        Err(e) => return Err(ConfigErrors::new(vec![syntax_error(&file, text, &e)])),
    };
    let mut index = LocationIndex::build(text);
    let mut issues = Vec::new();
    let mut removed = Vec::new();

    for issue in interpolate::interpolate(&mut value, &mut index, env) {
        removed.extend(remove_deepest_key(&mut value, &issue.path));
        issues.push(issue);
    }
    if let Some(raw) = deserialize_collecting(&mut value, &mut issues, &mut removed) {
        let (config, problems) = validate::validate(raw, source, &index, &removed);
        issues.extend(problems);
        if issues.is_empty() {
            return Ok(config);
        }
    }
    let errors = issues
        .into_iter()
        .map(|issue| {
            let mark = index.locate(&issue.path, issue.at_key);
            ConfigError {
                file: file.clone(),
                line: mark.map(|m| m.line),
                column: mark.map(|m| m.column),
                path: issue.path.to_string(),
                message: issue.message,
            }
        })
        .collect();
    Err(ConfigErrors::new(errors))
}

fn syntax_error(file: &str, text: &str, e: &serde_yaml::Error) -> ConfigError {
    let location = e.location();
    let mut message = e.to_string();
    if let Some(l) = &location {
        // The position is shown in front; drop serde_yaml's copy of it.
        message = message.replacen(
            &format!(" at line {} column {}", l.line(), l.column()),
            "",
            1,
        );
    }
    let (path, message) = match too_large(&message) {
        Some((path, number)) if number.starts_with('-') => (
            path.to_owned(),
            format!("number {number} is too small (at least {})", i64::MIN),
        ),
        Some((path, number)) => (
            path.to_owned(),
            format!("number {number} is too large (at most {})", u64::MAX),
        ),
        None => {
            let alias = location
                .as_ref()
                .filter(|_| message == "unknown anchor")
                .and_then(|l| alias_at(text, l.index()));
            match alias {
                Some(name) => (
                    String::new(),
                    format!("invalid YAML: alias *{name} refers to no anchor (define it earlier with &{name})"),
                ),
                None if message == "repetition limit exceeded" => (
                    String::new(),
                    "invalid YAML: aliases expand to too many values (repetition limit exceeded); expand nested aliases by hand".into(),
                ),
                None => (String::new(), format!("invalid YAML: {message}")),
            }
        }
    };
    ConfigError {
        file: file.to_owned(),
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        path,
        message,
    }
}

/// serde_yaml's message for an integer beyond u64 or i64 (it is valid YAML, but no
/// `Value` holds it): `PATH: invalid type: integer `N` as u128, expected …` (or
/// `i128`), split into the key path and the number.
fn too_large(message: &str) -> Option<(&str, &str)> {
    let (path, rest) = match message.split_once(": invalid type: integer `") {
        Some(split) => split,
        None => ("", message.strip_prefix("invalid type: integer `")?),
    };
    let (number, _) = rest
        .split_once("` as u128")
        .or_else(|| rest.split_once("` as i128"))?;
    Some((path, number))
}

/// The name of the alias (`*name`) at byte `index` of `text`.
fn alias_at(text: &str, index: usize) -> Option<&str> {
    let rest = text.get(index..)?.strip_prefix('*')?;
    let end = rest
        .find(|c: char| c.is_whitespace() || ",[]{}".contains(c))
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|name| !name.is_empty())
}

/// Where `[`/`{` nesting first exceeds [`MAX_FLOW_DEPTH`], as a 1-based line and
/// column; a deliberately rough count that ignores quoting.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut column) = (0usize, 1, 0);
    for c in text.chars() {
        column += 1;
        match c {
            '\n' => (line, column) = (line + 1, 0),
            '[' | '{' => depth += 1,
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_FLOW_DEPTH {
            return Some((line, column));
        }
    }
    None
}

/// Deserialize the raw mirror, recording each error and removing the key it is
/// about, until it succeeds. `None` when the root itself is wrong or there are too
/// many errors.
fn deserialize_collecting(
    value: &mut Value,
    issues: &mut Vec<Issue>,
    removed: &mut Vec<KeyPath>,
) -> Option<raw::RawConfig> {
    for _ in 0..MAX_SHAPE_ERRORS {
        let error = match serde_path_to_error::deserialize::<_, raw::RawConfig>(&*value) {
            Ok(raw) => return Some(raw),
            Err(e) => e,
        };
        let path = KeyPath::from_serde(error.path());
        let (message, at_key) = raw::describe_serde_error(&error.inner().to_string(), &path);
        issues.push(Issue {
            path: path.clone(),
            at_key,
            message,
        });
        removed.push(remove_deepest_key(value, &path)?);
    }
    issues.push(Issue::at(
        KeyPath::root(),
        format!("stopped after {MAX_SHAPE_ERRORS} errors; fix these and try again"),
    ));
    None
}

/// Remove the deepest map key on `path` from the tree and return its path.
///
/// Only map keys are removed, never list items (that would shift the indices of
/// later items away from their positions in the file): a bad field inside a list
/// item removes that field, a bad list item removes the whole list.
fn remove_deepest_key(value: &mut Value, path: &KeyPath) -> Option<KeyPath> {
    let segs = path.segs();
    let mut deepest = None;
    let mut node: &Value = value;
    for (i, seg) in segs.iter().enumerate() {
        node = match (seg, untagged(node)) {
            (Seg::Key(k), Value::Mapping(map)) => {
                match find_key(map, k).and_then(|key| map.get(&key)) {
                    Some(child) => {
                        deepest = Some(i);
                        child
                    }
                    None => break,
                }
            }
            (Seg::Index(n), Value::Sequence(items)) => match items.get(*n) {
                Some(item) => item,
                None => break,
            },
            _ => break,
        };
    }
    let depth = deepest?;
    let mut node: &mut Value = value;
    for seg in &segs[..depth] {
        node = match (seg, untagged_mut(node)) {
            (Seg::Key(k), Value::Mapping(map)) => {
                let key = find_key(map, k)?;
                map.get_mut(&key)?
            }
            (Seg::Index(n), Value::Sequence(items)) => items.get_mut(*n)?,
            _ => return None,
        };
    }
    match (&segs[depth], untagged_mut(node)) {
        (Seg::Key(k), Value::Mapping(map)) => {
            let key = find_key(map, k)?;
            // Keep file order: pool order is meaningful.
            map.shift_remove(&key);
        }
        _ => return None,
    }
    Some(KeyPath::from_segs(segs[..=depth].to_vec()))
}

fn find_key(map: &serde_yaml::Mapping, key: &str) -> Option<Value> {
    map.keys()
        .find(|k| key_text(k).as_deref() == Some(key))
        .cloned()
}

fn untagged(value: &Value) -> &Value {
    match value {
        Value::Tagged(t) => untagged(&t.value),
        other => other,
    }
}

fn untagged_mut(value: &mut Value) -> &mut Value {
    match value {
        Value::Tagged(t) => untagged_mut(&mut t.value),
        other => other,
    }
}

/// A valid pool named `name` with every default, for unit tests elsewhere.
#[cfg(test)]
pub(crate) fn test_pool(name: &str) -> PoolConfig {
    let text = format!(
        "pools:\n  {name}:\n    command: [\"python3\", \"app.py\", \"{{port}}\"]\n    ports: \"9001-9010\"\n    workers: 2\n"
    );
    let config =
        load_from_str(&text, Path::new("test.yaml"), &|_| None).unwrap_or_else(|e| panic!("{e}"));
    config.pools[0].clone()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::num::NonZeroUsize;
    use std::path::PathBuf;
    use std::time::Duration;

    use nix::sys::signal::Signal;
    use proptest::prelude::*;

    use super::*;

    const FULL: &str = r#"proxy:
  listen: "0.0.0.0:8080"
  threads: 2
admin:
  listen: "127.0.0.1:9090"
log:
  level: debug
  format: json
shutdown:
  timeout: "45s"
pools:
  web:
    command: ["python3", "examples/app.py", "--port", "{port}"]
    workers: 4
    ports: "9001-9099"
    env: { APP_ENV: production, PYTHON: 3.10, DEBUG: false }
    cwd: "."
    ready: { http: "/healthz", timeout: "20s", interval: "250ms" }
    restart: { backoff_min: "200ms", backoff_max: "1m30s", reset_after: "2m" }
    stop: { signal: SIGQUIT, grace: "10s" }
  api:
    command: [./api, "{port}", 7]
    ports: 9200
routes:
  - { host: "API.example.com", path_prefix: "/api", pool: api }
  - { pool: web }
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn test_env(name: &str) -> Option<String> {
        match name {
            "WORKERS" => Some("3".into()),
            "APP_ENV" => Some("staging".into()),
            "PORT_RANGE" => Some("9100-9199".into()),
            _ => None,
        }
    }

    fn load_ok(yaml: &str, env: &dyn Fn(&str) -> Option<String>) -> Config {
        match load_from_str(yaml, Path::new("config.yaml"), env) {
            Ok(config) => config,
            Err(e) => panic!("expected a valid config, got:\n{e}"),
        }
    }

    fn load_err(yaml: &str, env: &dyn Fn(&str) -> Option<String>) -> ConfigErrors {
        match load_from_str(yaml, Path::new("config.yaml"), env) {
            Ok(config) => panic!("expected errors, got {config:#?}"),
            Err(e) => e,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn full_example() {
        let config = load_ok(FULL, &no_env);
        assert_eq!(config.source, PathBuf::from("config.yaml"));
        assert_eq!(
            config.proxy.listen,
            ["0.0.0.0:8080".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(config.proxy.threads.get(), 2);
        assert_eq!(
            config.admin.listen,
            "127.0.0.1:9090".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(config.log.level, LogLevel::Debug);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.shutdown.timeout, secs(45));

        let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["web", "api"]);
        let web = &config.pools[0];
        assert_eq!(
            web.command,
            ["python3", "examples/app.py", "--port", "{port}"]
        );
        assert_eq!(web.workers.get(), 4);
        assert_eq!(
            web.ports,
            PortRange {
                start: 9001,
                end: 9099
            }
        );
        assert_eq!(web.slot_port(3), 9004);
        let env: Vec<(&str, &str)> = web
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // Numbers and booleans keep the text they were written with.
        assert_eq!(
            env,
            [
                ("APP_ENV", "production"),
                ("PYTHON", "3.10"),
                ("DEBUG", "false")
            ]
        );
        assert_eq!(web.cwd, PathBuf::from("."));
        assert_eq!(
            web.ready,
            ReadyCheck {
                probe: ReadyProbe::Http {
                    path: "/healthz".into()
                },
                timeout: secs(20),
                interval: Duration::from_millis(250),
            }
        );
        assert_eq!(
            web.restart,
            RestartPolicy {
                backoff_min: Duration::from_millis(200),
                backoff_max: secs(90),
                reset_after: secs(120),
                crash_loop_failures: 5,
                crash_loop_window: secs(60),
            }
        );
        assert_eq!(
            web.stop,
            StopPolicy {
                signal: Signal::SIGQUIT,
                grace: secs(10),
                drain: secs(30),
            }
        );

        let api = config.pool("api").unwrap();
        assert_eq!(api.command, ["./api", "{port}", "7"]);
        assert_eq!(
            api.ports,
            PortRange {
                start: 9200,
                end: 9200
            }
        );
        // Defaults.
        assert_eq!(api.workers.get(), 1);
        assert_eq!(api.ready.probe, ReadyProbe::Tcp);

        assert_eq!(
            config.routes,
            [
                Route {
                    host: Some("api.example.com".into()),
                    path_prefix: Some("/api".into()),
                    pool: "api".into()
                },
                Route {
                    host: None,
                    path_prefix: None,
                    pool: "web".into()
                },
            ]
        );
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let config = load_ok(
            "pools:\n  web:\n    command: [app]\n    ports: 9001-9010\n",
            &no_env,
        );
        let expected = Config {
            source: PathBuf::from("config.yaml"),
            proxy: ProxyConfig {
                listen: vec!["0.0.0.0:8080".parse().unwrap()],
                threads: NonZeroUsize::MIN,
                client_header_timeout: secs(10),
                client_timeout: secs(60),
                idle_timeout: secs(60),
                max_header_size: 32 * 1024,
                max_body: 100 * 1024 * 1024,
            },
            admin: AdminConfig {
                listen: "127.0.0.1:9090".parse().unwrap(),
                token: None,
                token_file: None,
                socket: ControlSocket::Default,
            },
            log: LogConfig {
                level: LogLevel::Info,
                format: LogFormat::Text,
                access: false,
            },
            shutdown: ShutdownConfig {
                timeout: secs(30),
                delay: Duration::ZERO,
            },
            pools: vec![PoolConfig {
                name: "web".into(),
                command: vec!["app".into()],
                preload: None,
                workers: NonZeroUsize::MIN,
                ports: PortRange {
                    start: 9001,
                    end: 9010,
                },
                socket_dir: None,
                env: vec![],
                cwd: PathBuf::from("."),
                ready: ReadyCheck {
                    probe: ReadyProbe::Tcp,
                    timeout: secs(30),
                    interval: Duration::from_millis(100),
                },
                health: None,
                hang: None,
                recycle: Recycle::default(),
                bind: Bind::Port,
                restart: RestartPolicy {
                    backoff_min: Duration::from_millis(100),
                    backoff_max: secs(30),
                    reset_after: secs(60),
                    crash_loop_failures: 5,
                    crash_loop_window: secs(60),
                },
                stop: StopPolicy {
                    signal: Signal::SIGTERM,
                    grace: secs(30),
                    drain: secs(30),
                },
                hooks: PoolHooks::default(),
                upstream: UpstreamPolicy {
                    lb: LbPolicy::RoundRobin,
                    weights: vec![1],
                    retries: 2,
                    retry_on: RetryOn::default(),
                    eject: Some(EjectPolicy {
                        consecutive_failures: 5,
                        base_time: secs(10),
                        max_time: secs(300),
                        max_percent: 50,
                    }),
                    connect_timeout: secs(5),
                    response_header_timeout: secs(60),
                    idle_timeout: secs(60),
                    keepalive: 32,
                    buffer: Buffering {
                        request: 1 << 20,
                        response: 64 << 10,
                    },
                    max_in_flight: None,
                    queue: QueuePolicy {
                        max: 1000,
                        timeout: secs(30),
                    },
                },
                metrics: None,
            }],
            routes: vec![Route {
                host: None,
                path_prefix: None,
                pool: "web".into(),
            }],
            hooks: GlobalHooks::default(),
            watch: false,
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn pools_keep_file_order() {
        let yaml = "pools:\n  zeta: {command: [a], ports: '9001'}\n  alpha: {command: [a], ports: '9002'}\n  mid: {command: [a], ports: '9003'}\nroutes:\n  - pool: mid\n";
        let names: Vec<String> = load_ok(yaml, &no_env)
            .pools
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn listen_accepts_a_list() {
        let yaml = "proxy:\n  listen: [\"0.0.0.0:80\", \"[::1]:81\"]\npools:\n  web: {command: [a], ports: '9001'}\n";
        let listen = load_ok(yaml, &no_env).proxy.listen;
        assert_eq!(
            listen,
            [
                "0.0.0.0:80".parse::<SocketAddr>().unwrap(),
                "[::1]:81".parse().unwrap()
            ]
        );
    }

    #[test]
    fn aliases_are_resolved() {
        let yaml = "pools:\n  web:\n    command: [a]\n    ports: '9001'\n    restart: &r { backoff_max: 5s }\n  api:\n    command: [a]\n    ports: '9002'\n    restart: *r\nroutes:\n  - pool: web\n";
        let config = load_ok(yaml, &no_env);
        assert_eq!(config.pools[1].restart.backoff_max, secs(5));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let yaml = "\
proxy:
  threads: 0
pools:
  web:
    command: [app]
    wrokers: 2
    ports: 9001-9002
    restart: { backoff_max: \"5 sec\" }
  api:
    command: [app]
    ports: 9002
routes:
  - pool: wbe
";
        let errors = load_err(yaml, &no_env);
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "config.yaml:2:12: proxy.threads: threads must be at least 1",
                r#"config.yaml:6:5: pools.web.wrokers: unknown key "wrokers" (expected one of: command, preload, workers, ports, env, cwd, bind, ready, health, hang, recycle, restart, stop, hooks, lb, weights, retries, retry_on, eject, timeouts, keepalive, buffer, max_in_flight, queue, metrics); did you mean "workers"?"#,
                r#"config.yaml:8:29: pools.web.restart.backoff_max: invalid duration "5 sec" (expected e.g. "5s", "250ms", "1m"; bare numbers are not durations)"#,
                r#"config.yaml:11:12: pools.api.ports: port range 9002 overlaps pool "web" (ports 9001-9002)"#,
                r#"config.yaml:13:11: routes[0].pool: unknown pool "wbe" (pools: web, api); did you mean "web"?"#,
            ]
        );
        assert_eq!(errors.to_string(), shown.join("\n"));
        let e = &errors.0[2];
        assert_eq!((e.line, e.column), (Some(8), Some(29)));
        assert_eq!(e.path, "pools.web.restart.backoff_max");
    }

    #[test]
    fn yaml_syntax_error_is_reported_alone() {
        let errors = load_err("pools:\n  web: [\n  x: 1\n", &no_env);
        assert_eq!(errors.len(), 1);
        let e = &errors.0[0];
        assert!(e.line.is_some() && e.column.is_some(), "{e:?}");
        assert!(e.message.starts_with("invalid YAML: "), "{e}");
        assert_eq!((e.line, e.column), (Some(4), Some(1)));
        // serde_yaml's copy of the position is dropped; its context position stays.
        assert!(!e.message.contains(" at line 4 column 1"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_quickly() {
        let text = format!("pools: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let errors = load_err(&text, &no_env);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            errors.to_string(),
            "config.yaml:1:264: invalid YAML: nested more than 256 levels deep"
        );
        // Nesting serde_yaml accepts stays well under the limit.
        let text = format!(
            "pools: {{web: {{command: [app], ports: '9001', env: {{A: \"{}\"}}}}}}\n",
            "[".repeat(100)
        );
        load_ok(&text, &no_env);
    }

    #[test]
    fn numbers_beyond_u64_are_too_large_at_their_key() {
        let yaml = "pools:\n  web:\n    command: [a]\n    ports: '9001'\n    workers: 123456789012345678901234567890\n";
        assert_eq!(
            load_err(yaml, &no_env).to_string(),
            "config.yaml:5:14: pools.web.workers: number 123456789012345678901234567890 is too large (at most 18446744073709551615)"
        );
        let yaml = yaml.replace(": 1234", ": -1234");
        assert_eq!(
            load_err(&yaml, &no_env).to_string(),
            "config.yaml:5:14: pools.web.workers: number -123456789012345678901234567890 is too small (at least -9223372036854775808)"
        );
    }

    #[test]
    fn an_alias_without_anchor_is_named() {
        let yaml = "pools:\n  web:\n    command: [a]\n    ports: '9001'\n    restart: *defaults\n";
        assert_eq!(
            load_err(yaml, &no_env).to_string(),
            "config.yaml:5:14: invalid YAML: alias *defaults refers to no anchor (define it earlier with &defaults)"
        );
    }

    #[test]
    fn top_level_must_be_a_mapping() {
        let errors = load_err("- a\n- b\n", &no_env);
        assert_eq!(
            errors.to_string(),
            "config.yaml:1:1: expected a mapping, found a list"
        );
    }

    #[test]
    fn unreadable_file_is_one_error_without_position() {
        let path = Path::new("/nonexistent/forkyard/config.yaml");
        let errors = load(path).unwrap_err();
        assert_eq!(errors.len(), 1);
        let e = &errors.0[0];
        assert_eq!((e.line, e.column, e.path.as_str()), (None, None, ""));
        assert!(
            e.to_string()
                .starts_with("/nonexistent/forkyard/config.yaml: cannot read the config file: "),
            "{e}"
        );
    }

    #[test]
    fn load_reads_a_file() {
        let path =
            std::env::temp_dir().join(format!("forkyard-config-test-{}.yaml", std::process::id()));
        std::fs::write(&path, "pools:\n  web: {command: [a], ports: '9001'}\n").unwrap();
        let result = load(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(result.unwrap().source, path);
    }

    #[test]
    fn env_variables_and_defaults() {
        let yaml = "pools:\n  web:\n    command: [app, \"${APP_ENV}\", \"${MODE:-fast}\", \"$${HOME}\"]\n    ports: ${PORT_RANGE}\n    env: { WHERE: \"${APP_ENV:-dev}-${REGION:-eu}\" }\n";
        let config = load_ok(yaml, &test_env);
        let web = &config.pools[0];
        assert_eq!(web.command, ["app", "staging", "fast", "${HOME}"]);
        assert_eq!(
            web.ports,
            PortRange {
                start: 9100,
                end: 9199
            }
        );
        assert_eq!(web.env, [("WHERE".to_string(), "staging-eu".to_string())]);
    }

    #[test]
    fn plain_substitutions_are_retyped_quoted_ones_are_not() {
        let plain = "pools:\n  web:\n    command: [app]\n    ports: 9001-9010\n    workers: ${WORKERS:-4}\n";
        assert_eq!(load_ok(plain, &test_env).pools[0].workers.get(), 3);
        assert_eq!(load_ok(plain, &no_env).pools[0].workers.get(), 4);
        let quoted = plain.replace("${WORKERS:-4}", "\"${WORKERS:-4}\"");
        assert_eq!(
            load_err(&quoted, &test_env).to_string(),
            r#"config.yaml:5:14: pools.web.workers: expected a whole number, found string "3""#
        );
    }

    #[test]
    fn unset_variable_is_an_error_at_its_value() {
        let yaml =
            "pools:\n  web:\n    command: [app, \"--db\", \"${DB_URL}\"]\n    ports: 9001-9010\n";
        assert_eq!(
            load_err(yaml, &no_env).to_string(),
            "config.yaml:3:28: pools.web.command[2]: environment variable \"DB_URL\" is not set and has no default (set it, or write ${DB_URL:-default})"
        );
    }

    #[test]
    fn keys_are_not_substituted() {
        let yaml = "pools:\n  web:\n    command: [app]\n    ports: 9001-9010\n    env: { \"A${X}\": \"${X:-v}\" }\n";
        assert_eq!(
            load_err(yaml, &no_env).to_string(),
            r#"config.yaml:5:12: pools.web.env.A${X}: invalid environment variable name "A${X}" (use letters, digits and "_", not starting with a digit)"#
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = load_from_str(&text, Path::new("c.yaml"), &no_env);
        }

        #[test]
        fn damaged_config_never_panics(cut in 0usize..FULL.len(), len in 0usize..20, junk in "[ -~\\n]{0,6}") {
            let end = (cut + len).min(FULL.len());
            if FULL.is_char_boundary(cut) && FULL.is_char_boundary(end) {
                let text = format!("{}{junk}{}", &FULL[..cut], &FULL[end..]);
                if let Err(errors) = load_from_str(&text, Path::new("c.yaml"), &no_env) {
                    prop_assert!(!errors.is_empty());
                }
            }
        }
    }
}
