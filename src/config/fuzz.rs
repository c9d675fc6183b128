//! Property tests of the loader on structurally plausible YAML: real configs with
//! random mutations (keys removed, renamed with typos, values of the wrong type,
//! bad durations, sizes and ports, unicode, huge numbers, deep nesting), and
//! generated documents with anchors, aliases and merge keys. Whatever the input,
//! loading never panics, is deterministic, and ends in either a config whose
//! cross-field rules hold or a non-empty list of errors, each with a location that
//! exists in the text.
//!
//! `PROPTEST_CASES=20000 cargo test --lib config::fuzz` runs a longer session.

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_yaml::{Mapping, Value};

use super::*;

/// Real configs to mutate: the default one, the Pyramid example, and one that sets
/// every section.
const BASES: &[&str] = &[
    include_str!("../../config.yaml"),
    include_str!("../../examples/pyramid-sqlalchemy/config.yaml"),
    RICH,
];

const RICH: &str = r#"proxy:
  listen: ["127.0.0.1:8080", "[::1]:8081"]
  threads: 2
  client_header_timeout: 5s
  client_timeout: 30s
  idle_timeout: 60s
  max_header_size: 16KiB
  max_body: 10MiB
admin: { listen: "127.0.0.1:9090" }
log: { level: debug, format: json, access: true }
shutdown: { timeout: 10s, delay: 1s }
reload: { watch: true }
hooks:
  on_start: [ { name: check, run: ["true"], timeout: 5s, retries: 2, retry_delay: 100ms } ]
  on_shutdown: [ { run: ["true"], on_failure: skip } ]
pools:
  web:
    command: ["python3", "app.py", "--port", "{port}", "--worker", "{worker}"]
    workers: 3
    ports: "9001-9010"
    env: { APP_ENV: "${APP_ENV:-prod}", API_TOKEN: "${TOKEN}", N: 3 }
    cwd: "."
    bind: port
    ready: { http: /healthz, timeout: 30s, interval: 100ms }
    health: { http: /healthz, interval: 5s, timeout: 1s, unhealthy_after: 3, healthy_after: 2, restart_after: 30s }
    recycle: { max_requests: 1000, max_requests_jitter: 10, max_lifetime: 6h, max_rss: 512MiB }
    restart: { backoff_min: 100ms, backoff_max: 30s, reset_after: 60s }
    stop: { signal: SIGTERM, grace: 30s, drain: 10s }
    lb: { hash: { header: X-User } }
    weights: [1, 2, 3]
    retries: 1
    retry_on: [502, 503, timeout]
    eject: { consecutive_failures: 3, base_time: 1s, max_time: 5s, max_percent: 30 }
    timeouts: { connect: 100ms, response_header: 2s, idle: 9s }
    keepalive: 8
    hooks:
      pre_fork: [ { name: db, wait_for: { tcp: "127.0.0.1:5432" }, timeout: 10s } ]
      post_fork: [ { close_fds: true }, { seed_env: SEED }, { rlimits: { nofile: 1024, core: 0 } }, { umask: "022" }, { parent_death_signal: SIGTERM } ]
      post_spawn: [ { name: warm, http: { path: /, method: GET }, on_failure: kill_worker } ]
      pre_stop: [ { http: { path: /drain } } ]
      on_exit: [ { run: ["true"], env: { WHY: x } } ]
  api:
    command: [./api, "{port}"]
    ports: 9100
    bind: inherit
    ready: { http: / }
    lb: least_requests
routes:
  - { host: api.example.com, path_prefix: /api, pool: api }
  - { pool: web }
"#;

/// Every key of the format, so mutations land on real keys and typos of them.
const KEYS: &[&str] = &[
    "proxy",
    "admin",
    "log",
    "shutdown",
    "pools",
    "routes",
    "hooks",
    "reload",
    "listen",
    "threads",
    "client_header_timeout",
    "client_timeout",
    "idle_timeout",
    "max_header_size",
    "max_body",
    "token",
    "token_file",
    "level",
    "format",
    "access",
    "timeout",
    "delay",
    "watch",
    "web",
    "api",
    "command",
    "workers",
    "ports",
    "env",
    "cwd",
    "bind",
    "ready",
    "health",
    "recycle",
    "restart",
    "stop",
    "lb",
    "weights",
    "retries",
    "retry_on",
    "eject",
    "timeouts",
    "keepalive",
    "http",
    "tcp",
    "interval",
    "unhealthy_after",
    "healthy_after",
    "restart_after",
    "max_requests",
    "max_requests_jitter",
    "max_lifetime",
    "max_rss",
    "backoff_min",
    "backoff_max",
    "reset_after",
    "crash_loop",
    "signal",
    "grace",
    "drain",
    "hash",
    "header",
    "cookie",
    "client_ip",
    "consecutive_failures",
    "base_time",
    "max_time",
    "max_percent",
    "connect",
    "response_header",
    "idle",
    "host",
    "path_prefix",
    "pool",
    "on_start",
    "on_shutdown",
    "pre_fork",
    "post_fork",
    "post_spawn",
    "pre_stop",
    "on_exit",
    "name",
    "run",
    "wait_for",
    "on_failure",
    "retry_delay",
    "close_fds",
    "seed_env",
    "setsid",
    "umask",
    "rlimits",
    "user",
    "group",
    "nice",
    "oom_score_adj",
    "parent_death_signal",
    "path",
    "url",
    "method",
    "expect_status",
    "<<",
];

/// Values that are valid somewhere, nearly valid, or wrong in a telling way; each
/// is YAML text as it would appear in the file.
const SCALARS: &[&str] = &[
    "5s",
    "250ms",
    "1m30s",
    "0s",
    "\"5 sec\"",
    "-1s",
    "99999999999999999999h",
    "1e3s",
    "\"\"",
    "30",
    "-1",
    "0",
    "1",
    "65535",
    "65536",
    "4294967296",
    "18446744073709551616",
    "123456789012345678901234567890",
    "-0",
    "0x1F",
    "0o17",
    "1_000",
    "3.10",
    ".inf",
    "-.inf",
    ".nan",
    "1e308",
    "true",
    "false",
    "yes",
    "no",
    "~",
    "null",
    "32KiB",
    "1MB",
    "\"10 GB\"",
    "1.5GiB",
    "-5MiB",
    "9001-9010",
    "9010-9001",
    "0-65535",
    "70000",
    "\"9001 - 9010\"",
    "\"0.0.0.0:8080\"",
    "\"127.0.0.1:0\"",
    "\"[::1]:9090\"",
    "localhost:8080",
    "\"999.1.1.1:80\"",
    "SIGTERM",
    "SIGKILL",
    "TERM",
    "SIGFOO",
    "15",
    "\"${APP_ENV}\"",
    "\"${UNSET_VAR}\"",
    "\"${X:-default}\"",
    "\"${\"",
    "\"$${X}\"",
    "\"${A:-${B}}\"",
    "\"{port}\"",
    "\"{nope}\"",
    "round_robin",
    "least_requests",
    "random",
    "fastest",
    "skip",
    "abort",
    "kill_worker",
    "port",
    "inherit",
    "/healthz",
    "healthz",
    "\"http://127.0.0.1:1/x\"",
    "\"ftp://x\"",
    "\"wörker\"",
    "\"\\u202e\\u0000\"",
    "\"🙂\"",
    "\"\\t\"",
    "!!binary aGVsbG8=",
    "!custom x",
    "'single ''quoted'''",
];

/// Environment seen by `${VAR}`: some set, with awkward values.
fn env(name: &str) -> Option<String> {
    match name {
        "APP_ENV" => Some("staging".into()),
        "TOKEN" => Some("s3cr3t".into()),
        "X" => Some("${X}".into()),
        "B" => Some("nested".into()),
        "EMPTY" => Some(String::new()),
        "UNI" => Some("ünï\u{202e}".into()),
        _ => None,
    }
}

/// A generated YAML node, rendered in block or flow style.
#[derive(Debug, Clone)]
enum Node {
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
    Anchored(&'static str, Box<Node>),
    Alias(&'static str),
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(KEYS).prop_map(str::to_owned),
        3 => (select(KEYS), any::<Index>(), 0u8..5).prop_map(|(k, i, how)| typo(k, i, how)),
        1 => "\\PC{1,8}".prop_map(|s| quote(&s)),
    ]
}

/// A typo of `key`: a character dropped, doubled, swapped, upper-cased or replaced
/// by a look-alike.
fn typo(key: &str, at: Index, how: u8) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    let i = at
        .index(chars.len().max(1))
        .min(chars.len().saturating_sub(1));
    match (how, chars.get(i).copied()) {
        (0, Some(_)) => {
            chars.remove(i);
        }
        (1, Some(c)) => chars.insert(i, c),
        (2, Some(_)) if i + 1 < chars.len() => chars.swap(i, i + 1),
        (3, Some(c)) => chars[i] = c.to_ascii_uppercase(),
        (_, Some(_)) => chars[i] = 'ö',
        _ => {}
    }
    let s: String = chars.into_iter().collect();
    if s.is_empty() {
        "\"\"".into()
    } else {
        quote(&s)
    }
}

/// `s` as a YAML double-quoted scalar (JSON's string syntax is valid YAML).
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(SCALARS).prop_map(str::to_owned),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
        1 => "-?[0-9]{15,40}",
        1 => "\\PC{0,16}".prop_map(|s| quote(&s)),
        1 => "[a-z0-9_ ]{1,12}",
    ]
}

const ANCHORS: &[&str] = &["a", "b", "c"];

fn node() -> impl Strategy<Value = Node> {
    scalar()
        .prop_map(Node::Scalar)
        .prop_recursive(6, 48, 6, |inner| {
            prop_oneof![
                3 => prop::collection::vec((key(), inner.clone()), 0..6).prop_map(Node::Map),
                2 => prop::collection::vec(inner.clone(), 0..5).prop_map(Node::Seq),
                1 => (select(ANCHORS), inner).prop_map(|(a, n)| Node::Anchored(a, Box::new(n))),
                1 => select(ANCHORS).prop_map(Node::Alias),
            ]
        })
}

/// Render `node` at `indent` spaces; `flow` picks `{…}`/`[…]` for everything below.
fn render(node: &Node, indent: usize, flow: bool, out: &mut String) {
    let pad = " ".repeat(indent);
    match node {
        Node::Scalar(s) => out.push_str(s),
        Node::Alias(a) => {
            out.push('*');
            out.push_str(a);
        }
        Node::Anchored(a, inner) => {
            out.push('&');
            out.push_str(a);
            out.push(' ');
            // An anchored block collection has to start on the next line.
            render(inner, indent, true, out);
        }
        Node::Seq(items) if flow || items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(item, indent, true, out);
            }
            out.push(']');
        }
        Node::Map(entries) if flow || entries.is_empty() => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push_str(": ");
                render(v, indent, true, out);
            }
            out.push('}');
        }
        Node::Seq(items) => {
            for item in items {
                out.push('\n');
                out.push_str(&pad);
                out.push_str("- ");
                render(item, indent + 2, false, out);
            }
        }
        Node::Map(entries) => {
            for (k, v) in entries {
                out.push('\n');
                out.push_str(&pad);
                out.push_str(k);
                out.push_str(": ");
                render(v, indent + 2, false, out);
            }
        }
    }
}

fn to_value(node: &Node) -> Value {
    let mut text = String::new();
    render(node, 0, true, &mut text);
    serde_yaml::from_str(&text).unwrap_or(Value::String(text))
}

/// One change to a real config, applied at a path chosen by `at`.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(Node),
    Remove,
    Rename(String),
    Insert(String, Node),
    WrapInList,
    Nest(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => node().prop_map(Mutation::Replace),
        2 => Just(Mutation::Remove),
        2 => key().prop_map(Mutation::Rename),
        2 => (key(), node()).prop_map(|(k, n)| Mutation::Insert(k, n)),
        1 => Just(Mutation::WrapInList),
        1 => (1usize..200).prop_map(Mutation::Nest),
    ]
}

/// Walk down from `value` choosing children with `at`, for up to `depth` steps,
/// then apply `m` there.
fn mutate(value: &mut Value, at: &[Index], m: &Mutation) {
    let Some((first, rest)) = at.split_first() else {
        return apply(value, m);
    };
    match value {
        Value::Mapping(map) if !map.is_empty() => {
            let i = first.index(map.len());
            let Some(key) = map.keys().nth(i).cloned() else {
                return;
            };
            if rest.is_empty()
                || !matches!(map.get(&key), Some(Value::Mapping(_) | Value::Sequence(_)))
            {
                apply_entry(map, key, m);
            } else if let Some(child) = map.get_mut(&key) {
                mutate(child, rest, m);
            }
        }
        Value::Sequence(items) if !items.is_empty() => {
            let i = first.index(items.len());
            mutate(&mut items[i], rest, m);
        }
        other => apply(other, m),
    }
}

fn apply_entry(map: &mut Mapping, key: Value, m: &Mutation) {
    match m {
        Mutation::Remove => {
            map.shift_remove(&key);
        }
        Mutation::Rename(new) => {
            if let Some(v) = map.shift_remove(&key) {
                let new_key = serde_yaml::from_str(new).unwrap_or(Value::String(new.clone()));
                map.insert(new_key, v);
            }
        }
        Mutation::Insert(k, n) => {
            let k = serde_yaml::from_str(k).unwrap_or(Value::String(k.clone()));
            map.insert(k, to_value(n));
        }
        _ => {
            if let Some(v) = map.get_mut(&key) {
                apply(v, m);
            }
        }
    }
}

fn apply(value: &mut Value, m: &Mutation) {
    match m {
        Mutation::Replace(n) => *value = to_value(n),
        Mutation::WrapInList => *value = Value::Sequence(vec![value.clone()]),
        Mutation::Nest(depth) => {
            for _ in 0..*depth {
                *value = Value::Sequence(vec![value.clone()]);
            }
        }
        Mutation::Remove => *value = Value::Null,
        Mutation::Rename(_) | Mutation::Insert(..) => {
            if let Value::Mapping(map) = value {
                if let Some(key) = map.keys().next().cloned() {
                    apply_entry(map, key, m);
                }
            }
        }
    }
}

/// Load `text` twice and check everything that must hold whatever the input.
fn check(text: &str) -> Result<(), TestCaseError> {
    let first = load_from_str(text, Path::new("c.yaml"), &env);
    let second = load_from_str(text, Path::new("c.yaml"), &env);
    match (&first, &second) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
        (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
        _ => prop_assert!(false, "loading twice gave different outcomes"),
    }
    match first {
        Ok(config) => {
            prop_assert!(!config.pools.is_empty());
            prop_assert!(!config.routes.is_empty());
            for pool in &config.pools {
                prop_assert!(pool.workers.get() <= pool.ports.len(), "{}", pool.name);
                prop_assert!(!pool.command.is_empty());
                prop_assert!(pool.restart.backoff_min <= pool.restart.backoff_max);
            }
            for (i, a) in config.pools.iter().enumerate() {
                for b in &config.pools[i + 1..] {
                    prop_assert!(a.name != b.name);
                    prop_assert!(!a.ports.overlaps(&b.ports), "{} {}", a.name, b.name);
                }
            }
            for route in &config.routes {
                prop_assert!(config.pool(&route.pool).is_some(), "{}", route.pool);
            }
        }
        Err(errors) => {
            prop_assert!(!errors.is_empty());
            let lines = text.lines().count().max(1);
            for e in errors.iter() {
                let shown = e.to_string();
                prop_assert!(shown.starts_with("c.yaml"), "{}", shown);
                prop_assert!(!e.message.is_empty());
                if let Some(line) = e.line {
                    prop_assert!(
                        line >= 1 && line <= lines + 1,
                        "line {} of {}: {}",
                        line,
                        lines,
                        shown
                    );
                }
                if let Some(column) = e.column {
                    prop_assert!(column >= 1, "{}", shown);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    /// A real config with a few mutations, serialized back to YAML.
    #[test]
    fn mutated_real_configs_load_or_fail_cleanly(
        base in select(BASES),
        mutations in prop::collection::vec((prop::collection::vec(any::<Index>(), 0..5), mutation()), 1..4),
    ) {
        let mut value: Value = serde_yaml::from_str(base).unwrap_or(Value::Null);
        for (at, m) in &mutations {
            mutate(&mut value, at, m);
        }
        let text = serde_yaml::to_string(&value).unwrap_or_default();
        check(&text)?;
    }

    /// A real config with a key or value edited in the text itself, so comments,
    /// anchors and quoting of the original survive.
    #[test]
    fn textually_edited_real_configs_load_or_fail_cleanly(
        base in select(BASES),
        from in select(KEYS),
        to in prop_oneof![key(), scalar()],
    ) {
        let text = base.replacen(&format!("{from}:"), &format!("{to}:"), 1)
            .replacen(&format!(" {from}"), &format!(" {to}"), 1);
        check(&text)?;
    }

    /// Generated documents, block or flow style, with anchors and aliases.
    #[test]
    fn generated_documents_load_or_fail_cleanly(root in node(), flow in any::<bool>()) {
        let mut text = String::new();
        render(&root, 0, flow, &mut text);
        check(text.trim_start_matches('\n'))?;
    }

    /// A valid pool with one generated value in each position that takes a scalar.
    #[test]
    fn every_value_position_takes_any_scalar(
        key in select(&["workers", "ports", "cwd", "bind", "lb", "retries", "keepalive", "weights", "retry_on", "command", "env"][..]),
        value in scalar(),
    ) {
        let text = format!(
            "pools:\n  web:\n    command: [app]\n    ports: 9001-9010\n    {key}: {value}\n"
        );
        let text = text.replacen("    command: [app]\n", if key == "command" { "" } else { "    command: [app]\n" }, 1);
        let text = text.replacen("    ports: 9001-9010\n", if key == "ports" { "" } else { "    ports: 9001-9010\n" }, 1);
        check(&text)?;
    }
}

#[test]
fn every_base_is_valid() {
    for base in BASES {
        if let Err(e) = load_from_str(base, Path::new("c.yaml"), &env) {
            // The rich base names no user or group, so it loads anywhere.
            panic!("a fuzz base does not load:\n{e}");
        }
    }
}

#[test]
fn alias_bombs_are_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    text.push_str("pools: *a9\n");
    let started = std::time::Instant::now();
    let errors = load_from_str(&text, Path::new("c.yaml"), &env).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        errors.to_string(),
        "c.yaml: invalid YAML: aliases expand to too many values (repetition limit exceeded); expand nested aliases by hand"
    );
}
