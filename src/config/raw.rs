//! The raw serde mirror of `config.yaml`: its shape, and nothing else.
//!
//! Every struct denies unknown keys and every field is optional, so that a key with a
//! bad value can be removed and deserialization retried (see `config::load_from_str`).
//! Values that need checking (addresses, durations, port ranges, names) are kept as
//! text here and checked in `validate`, which is where defaults are applied. The `///`
//! comments state each default; they are meant to feed a JSON schema later.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::duration::DURATION_HINT;
use super::error::with_suggestion;
use super::location::KeyPath;
use super::size::SIZE_HINT;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The HTTP reverse proxy. Default: listen on `0.0.0.0:8080` with 1 thread.
    pub proxy: Option<RawProxy>,
    /// The admin endpoints (/metrics, /healthz, /readyz, /status). Default: `127.0.0.1:9090`.
    pub admin: Option<RawAdmin>,
    /// Logging. Default: level `info`, format `text`.
    pub log: Option<RawLog>,
    /// Shutdown. Default: drain for up to `30s`.
    pub shutdown: Option<RawShutdown>,
    /// Required. Worker pools by name (`[a-z0-9_-]+`), in file order; at least one.
    pub pools: Option<RawPools>,
    /// Optional with one pool (then one catch-all route to it); required with more.
    /// First match wins.
    pub routes: Option<Vec<RawRoute>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// One `IP:port` or a list of them. Default `"0.0.0.0:8080"`.
    pub listen: Option<RawListen>,
    /// Proxy worker threads, at least 1. Default 1.
    pub threads: Option<usize>,
    /// Time a client has to send a whole request head. Default `"10s"`.
    pub client_header_timeout: Option<RawDuration>,
    /// Bound on each read of a request body and each write of a response to the
    /// client. Default `"60s"`.
    pub client_timeout: Option<RawDuration>,
    /// How long an idle client keep-alive connection is kept open. Default `"60s"`.
    pub idle_timeout: Option<RawDuration>,
    /// Largest request head (request line and headers). Default `"32KiB"`.
    pub max_header_size: Option<RawSize>,
    /// Largest request body. Default `"100MiB"`.
    pub max_body: Option<RawSize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// One `IP:port`. Default `"127.0.0.1:9090"`.
    pub listen: Option<Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `error`, `warn`, `info`, `debug` or `trace`. Default `info`.
    pub level: Option<Scalar>,
    /// `text` or `json`. Default `text`.
    pub format: Option<Scalar>,
    /// One line per proxied request, in common log format (`format: text`) or JSON
    /// (`format: json`). Default `false`.
    pub access: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// How long in-flight requests may take to finish after SIGTERM. Default `"30s"`.
    pub timeout: Option<RawDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    /// Required. argv, non-empty; may use `{port}`, `{worker}` and `{pool}`.
    pub command: Option<RawCommand>,
    /// Number of worker processes, at least 1. Default 1.
    pub workers: Option<usize>,
    /// Required. `"A-B"` (inclusive) or a single port; at least `workers` ports.
    pub ports: Option<Scalar>,
    /// Extra environment variables, in file order. Default: none.
    pub env: Option<RawEnv>,
    /// Working directory of the workers. Default `"."`.
    pub cwd: Option<String>,
    /// Readiness probe. Default `{ tcp: true, timeout: "30s", interval: "100ms" }`.
    pub ready: Option<RawReady>,
    /// Restart backoff. Default `{ backoff_min: "100ms", backoff_max: "30s", reset_after: "60s" }`.
    pub restart: Option<RawRestart>,
    /// How workers are stopped. Default `{ signal: SIGTERM, grace: "30s" }`.
    pub stop: Option<RawStop>,
    /// Load-balancing algorithm: `round_robin`, `least_requests`, `random`, or
    /// `{ hash: { header: NAME } | { cookie: NAME } | { client_ip: true } }`.
    /// Default `round_robin`.
    pub lb: Option<RawLb>,
    /// One weight (at least 1) per worker slot. Default: 1 for every slot.
    pub weights: Option<Vec<u32>>,
    /// Extra attempts on other workers after a failure. Default 2.
    pub retries: Option<u32>,
    /// Responses retried on another worker (idempotent requests only): 5xx status
    /// codes and `timeout`. Default: none.
    pub retry_on: Option<Vec<Scalar>>,
    /// Outlier ejection. Default `{ consecutive_failures: 5, base_time: "10s",
    /// max_time: "5m", max_percent: 50 }`.
    pub eject: Option<RawEject>,
    /// Upstream timeouts. Default `{ connect: "5s", response_header: "60s", idle: "60s" }`.
    pub timeouts: Option<RawUpstreamTimeouts>,
    /// Idle keep-alive connections kept per worker. Default 32.
    pub keepalive: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEject {
    /// Connect errors or 5xx answers in a row that eject a worker; 0 turns ejection
    /// off. Default 5.
    pub consecutive_failures: Option<u32>,
    /// First ejection time; the n-th ejection lasts n times this. Default `"10s"`.
    pub base_time: Option<RawDuration>,
    /// Longest ejection. Default `"5m"`.
    pub max_time: Option<RawDuration>,
    /// Most of the pool's workers (percent) ejected at once. Default 50.
    pub max_percent: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTimeouts {
    /// Connecting to a worker. Default `"5s"`.
    pub connect: Option<RawDuration>,
    /// Waiting for the response head, and for each further read. Default `"60s"`.
    pub response_header: Option<RawDuration>,
    /// How long an unused keep-alive connection to a worker is kept. Default `"60s"`.
    pub idle: Option<RawDuration>,
}

/// `lb`: an algorithm name, or a mapping for hashing.
#[derive(Debug, Clone)]
pub enum RawLb {
    Name(String),
    Map(RawLbMap),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLbMap {
    /// Consistent hashing on one request attribute.
    pub hash: Option<RawHash>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHash {
    /// Hash on this request header's value.
    pub header: Option<String>,
    /// Hash on this cookie's value.
    pub cookie: Option<String>,
    /// Hash on the client's IP address; only `true` is meaningful.
    pub client_ip: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReady {
    /// Probe by TCP connect; only `true` is meaningful. Default: the probe when
    /// `ready` is not given.
    pub tcp: Option<bool>,
    /// Probe by `GET <path>` expecting 2xx; the path starts with `/`. No default.
    pub http: Option<String>,
    /// A worker not ready by then is killed and restarted. Default `"30s"`.
    pub timeout: Option<RawDuration>,
    /// Time between probes. Default `"100ms"`.
    pub interval: Option<RawDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    /// First restart delay, greater than 0. Default `"100ms"`.
    pub backoff_min: Option<RawDuration>,
    /// Largest restart delay, at least `backoff_min`. Default `"30s"`.
    pub backoff_max: Option<RawDuration>,
    /// Up this long, a worker's backoff starts over. Default `"60s"`.
    pub reset_after: Option<RawDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStop {
    /// Signal name such as `SIGTERM` or `TERM`. Default `SIGTERM`.
    pub signal: Option<Scalar>,
    /// Time between the signal and SIGKILL. Default `"30s"`.
    pub grace: Option<RawDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Exact host, case-insensitive, without a port. Default: any host.
    pub host: Option<String>,
    /// Path prefix starting with `/`, matched on segment boundaries. Default: any path.
    pub path_prefix: Option<String>,
    /// Required. The pool that serves matching requests.
    pub pool: Option<String>,
}

/// A string, or a number or boolean written where a string is expected.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub text: String,
    /// True when YAML typed it as a number or boolean; its text is then
    /// serde_yaml's rendering (`3.1` for `3.10`) and the source text is better.
    pub typed: bool,
}

/// `proxy.listen`: one address or a list of them.
#[derive(Debug, Clone, PartialEq)]
pub enum RawListen {
    One(Scalar),
    Many(Vec<Scalar>),
}

/// A pool's argv.
#[derive(Debug, Clone, PartialEq)]
pub struct RawCommand(pub Vec<Scalar>);

/// Pools in file order.
#[derive(Debug, Clone, Default)]
pub struct RawPools(pub Vec<(Scalar, RawPool)>);

/// Environment variables in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEnv(pub Vec<(Scalar, Scalar)>);

/// A duration string, parsed by `validate`.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDuration(pub String);

/// A size string such as `"32KiB"`, parsed by `validate`.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSize(pub String);

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar {
            text: v.to_owned(),
            typed: false,
        })
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(typed(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(typed(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(typed(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(typed(serde_yaml::Number::from(v)))
    }
}

fn typed(v: impl fmt::Display) -> Scalar {
    Scalar {
        text: v.to_string(),
        typed: true,
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

impl<'de> Deserialize<'de> for RawListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawListen;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"an address like "0.0.0.0:8080" or a list of them"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawListen, E> {
                ScalarVisitor.visit_str(v).map(RawListen::One)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawListen, E> {
                ScalarVisitor.visit_i64(v).map(RawListen::One)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawListen, E> {
                ScalarVisitor.visit_u64(v).map(RawListen::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawListen, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Scalar>()? {
                    items.push(item);
                }
                Ok(RawListen::Many(items))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawCommand;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a list of strings like ["python3", "app.py", "--port", "{port}"]"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawCommand, E> {
                Err(E::custom(format!(
                    "expected a list of strings (argv), found string {v:?}; write each argument separately, e.g. {}",
                    argv_example(v)
                )))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawCommand, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Scalar>()? {
                    items.push(item);
                }
                Ok(RawCommand(items))
            }
        }
        d.deserialize_any(V)
    }
}

/// `"python3 app.py"` → `["python3", "app.py"]`, to show what was meant.
fn argv_example(command: &str) -> String {
    let words: Vec<String> = command
        .split_whitespace()
        .take(8)
        .map(|w| format!("{w:?}"))
        .collect();
    format!("[{}]", words.join(", "))
}

impl<'de> Deserialize<'de> for RawPools {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPools;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping from pool names to pools")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPools, A::Error> {
                let mut pools = Vec::new();
                while let Some(name) = map.next_key::<Scalar>()? {
                    // A pool written as `web:` with nothing under it is an empty pool.
                    let pool = map.next_value::<Option<RawPool>>()?.unwrap_or_default();
                    pools.push((name, pool));
                }
                Ok(RawPools(pools))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for RawEnv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEnv;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping from variable names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEnv, A::Error> {
                let mut vars = Vec::new();
                while let Some(name) = map.next_key::<Scalar>()? {
                    vars.push((name, map.next_value::<Scalar>()?));
                }
                Ok(RawEnv(vars))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl V {
            fn bare_number<E: de::Error>(n: impl fmt::Display) -> Result<RawDuration, E> {
                Err(E::custom(format!("invalid duration {n} ({DURATION_HINT})")))
            }
        }
        impl<'de> Visitor<'de> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a duration string ({DURATION_HINT})")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                V::bare_number(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                V::bare_number(v)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                V::bare_number(serde_yaml::Number::from(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl V {
            fn bare_number<E: de::Error>(n: impl fmt::Display) -> Result<RawSize, E> {
                Err(E::custom(format!("invalid size {n} ({SIZE_HINT})")))
            }
        }
        impl<'de> Visitor<'de> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a size string ({SIZE_HINT})")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                V::bare_number(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                V::bare_number(v)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawSize, E> {
                V::bare_number(serde_yaml::Number::from(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawLb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawLb;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("round_robin, least_requests, random or { hash: { header: NAME } }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawLb, E> {
                Ok(RawLb::Name(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawLb, A::Error> {
                RawLbMap::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawLb::Map)
            }
        }
        d.deserialize_any(V)
    }
}

/// Reword a serde error at `path` for people: which key is unknown and what would be
/// valid, or what type was expected and what was found. Returns the message and
/// whether it is about the key rather than the value.
pub(super) fn describe_serde_error(message: &str, path: &KeyPath) -> (String, bool) {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let key = match path.last_key() {
            Some(k) => k.to_owned(),
            None => rest.split('`').next().unwrap_or_default().to_owned(),
        };
        return (unknown_key(&key, rest), true);
    }
    let body = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    if let Some((found, expected)) = body.and_then(|b| b.rsplit_once(", expected ")) {
        return (
            format!(
                "expected {}, found {}",
                expected_words(expected),
                found_words(found)
            ),
            false,
        );
    }
    (message.to_owned(), false)
}

/// `rest` is serde's text after "unknown field `": "x`, expected one of `a`, `b`",
/// "x`, expected `a` or `b`" or "x`, there are no fields".
fn unknown_key(key: &str, rest: &str) -> String {
    let expected: Vec<&str> = match rest.split_once(", expected ") {
        Some((_, list)) => list.split('`').skip(1).step_by(2).collect(),
        None => Vec::new(),
    };
    let message = if expected.is_empty() {
        format!("unknown key {key:?} (this section takes no keys)")
    } else {
        format!(
            "unknown key {key:?} (expected one of: {})",
            expected.join(", ")
        )
    };
    if key == "<<" {
        return format!(
            "{message}; YAML merge keys are not supported, use an alias instead (e.g. `restart: *defaults`)"
        );
    }
    with_suggestion(message, key, &expected)
}

fn expected_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" => "a mapping".to_owned(),
        e if e.starts_with("struct ") => "a mapping".to_owned(),
        e => e.to_owned(),
    }
}

fn found_words(found: &str) -> String {
    let backticked = |prefix: &str| {
        found
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('`'))
            .and_then(|r| r.strip_suffix('`'))
            .map(str::to_owned)
    };
    if let Some(n) = backticked("integer ").or_else(|| backticked("floating point ")) {
        return format!("number {n}");
    }
    if let Some(b) = backticked("boolean ") {
        return b;
    }
    match found {
        "map" => "a mapping".to_owned(),
        "sequence" => "a list".to_owned(),
        "unit value" => "an empty value".to_owned(),
        "enum" => "a tagged value".to_owned(),
        f => f.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(keys: &[&str]) -> KeyPath {
        keys.iter().fold(KeyPath::root(), |p, k| p.key(*k))
    }

    #[test]
    fn unknown_field_messages() {
        let (m, at_key) = describe_serde_error(
            "unknown field `wrokers`, expected one of `command`, `workers`, `ports`",
            &path(&["pools", "web", "wrokers"]),
        );
        assert!(at_key);
        assert_eq!(
            m,
            r#"unknown key "wrokers" (expected one of: command, workers, ports); did you mean "workers"?"#
        );
        let (m, _) = describe_serde_error(
            "unknown field `x`, expected `timeout`",
            &path(&["shutdown", "x"]),
        );
        assert_eq!(m, r#"unknown key "x" (expected one of: timeout)"#);
    }

    #[test]
    fn type_messages() {
        let p = path(&["a"]);
        let cases = [
            (
                "invalid type: string \"four\", expected usize",
                "expected a whole number, found string \"four\"",
            ),
            (
                "invalid value: integer `-1`, expected usize",
                "expected a whole number, found number -1",
            ),
            (
                "invalid type: map, expected a string",
                "expected a string, found a mapping",
            ),
            (
                "invalid type: sequence, expected struct RawPool",
                "expected a mapping, found a list",
            ),
            (
                "invalid type: string \"yes\", expected a boolean",
                "expected true or false, found string \"yes\"",
            ),
            (
                "invalid type: string \"a, expected b\", expected usize",
                "expected a whole number, found string \"a, expected b\"",
            ),
            ("something else", "something else"),
        ];
        for (serde, ours) in cases {
            assert_eq!(describe_serde_error(serde, &p).0, ours);
        }
    }

    #[test]
    fn argv_example_splits_words() {
        assert_eq!(argv_example("python3 app.py"), r#"["python3", "app.py"]"#);
    }
}
