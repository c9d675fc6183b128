//! The JSON Schema of `config.yaml`, generated from the raw serde mirror (`raw`) with
//! schemars, so that it cannot drift from what the loader accepts: every key, its
//! `///` documentation and `deny_unknown_fields` come from the same types.
//!
//! The schema describes the *shape* (keys, types, value formats), which is what an
//! editor needs to complete and check keys while the user types. Cross-field rules
//! (port ranges that overlap, routes naming missing pools) stay with `validate` and
//! `forkyard check`. A value may always be a `${VAR}` reference instead, since
//! substitution happens before the shape is checked.
//!
//! The types whose serde impls are hand-written get hand-written schemas here.

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Value};

use super::raw::{RawCommand, RawConfig, RawDuration, RawEnv, RawListen, RawPools, Scalar};

/// Matches a string with a `${VAR}` reference in it.
const INTERPOLATED: &str = r"\$\{";

/// `value`, or a string with a `${VAR}` reference.
fn or_interpolated(value: Value) -> Schema {
    json_schema!({
        "anyOf": [
            value,
            { "type": "string", "pattern": INTERPOLATED }
        ]
    })
}

/// The schema as pretty-printed JSON (`forkyard schema`, `docs/config.schema.json`).
pub fn json_schema() -> String {
    let generator = SchemaGenerator::new(SchemaSettings::draft07());
    let mut schema = generator.into_root_schema_for::<RawConfig>();
    // A pool has `command` or `preload`, never both (the loader says so with a
    // location; editors learn it here).
    if let Some(pool) = schema
        .get_mut("definitions")
        .and_then(|d| d.get_mut("Pool"))
        .and_then(Value::as_object_mut)
    {
        pool.insert(
            "oneOf".into(),
            json!([{ "required": ["command"] }, { "required": ["preload"] }]),
        );
    }
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

/// Marker types that stand for a raw field in the schema (`#[schemars(with)]`):
/// the field is a `Scalar`, `usize` or `bool` to serde, but has a known format.
macro_rules! formats {
    ($($(#[$doc:meta])* $name:ident => $schema:expr;)*) => {$(
        $(#[$doc])*
        pub(super) struct $name;

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                $schema
            }
        }
    )*};
}

formats! {
    /// A whole number of at least 1 (`workers`, `threads`).
    Count => or_interpolated(json!({ "type": "integer", "minimum": 1 }));
    /// `true` or `false`.
    Flag => or_interpolated(json!({ "type": "boolean" }));
    /// A whole number (range checks are `forkyard check`'s).
    Integer => or_interpolated(json!({ "type": "integer" }));
    /// A hook's `on_failure`.
    FailurePolicy => or_interpolated(json!({ "enum": ["abort", "skip", "kill_worker"] }));
    /// A pool's `bind`.
    BindMode => or_interpolated(json!({ "enum": ["port", "inherit", "unix"] }));
    /// `IP:port`.
    Address => address();
    /// `admin.socket`: an absolute path, or `false`.
    SocketPath => or_interpolated(json!({
        "anyOf": [
            { "type": "string", "pattern": "^/", "examples": ["/run/forkyard/forkyard.sock"] },
            { "type": "boolean" }
        ]
    }));
    LogLevel => or_interpolated(json!({ "enum": ["error", "warn", "info", "debug", "trace"] }));
    LogFormat => or_interpolated(json!({ "enum": ["text", "json"] }));
    /// `"START-END"` or one port.
    PortRange => json_schema!({
        "anyOf": [
            { "type": "integer", "minimum": 1, "maximum": 65535 },
            {
                "type": "string",
                "pattern": r"^[0-9]{1,5}(-[0-9]{1,5})?$",
                "examples": ["9001-9099", "9001"]
            },
            { "type": "string", "pattern": INTERPOLATED }
        ]
    });
    /// A signal name, with or without `SIG`, any case.
    SignalName => or_interpolated(json!({
        "type": "string",
        "pattern": "^([Ss][Ii][Gg])?[A-Za-z][A-Za-z0-9+]*$",
        "examples": ["SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL"]
    }));
}

fn address() -> Schema {
    or_interpolated(json!({
        "type": "string",
        "pattern": r"^(\[[0-9A-Fa-f:.]+\]|[0-9.]+):[0-9]{1,5}$",
        "examples": ["0.0.0.0:8080", "127.0.0.1:9090", "[::]:8080"]
    }))
}

/// A string where a number or boolean is also accepted (kept as written).
fn scalar() -> Value {
    json!({ "type": ["string", "number", "boolean"] })
}

impl JsonSchema for Scalar {
    fn schema_name() -> Cow<'static, str> {
        "Scalar".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        Schema::try_from(scalar()).unwrap_or_default()
    }
}

impl JsonSchema for RawDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: whole numbers with units ns, us, ms, s, m, h or d, such as \"250ms\", \"5s\" or \"1m30s\". Bare numbers are not durations.",
            "anyOf": [
                { "type": "string", "pattern": "^([0-9]+(ns|us|ms|s|m|h|d))+$", "examples": ["250ms", "5s", "1m"] },
                { "type": "string", "pattern": INTERPOLATED }
            ]
        })
    }
}

impl JsonSchema for RawListen {
    fn schema_name() -> Cow<'static, str> {
        "Listen".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let one = Value::from(address());
        json_schema!({
            "description": "One IP:port, or a non-empty list of them.",
            "anyOf": [
                one,
                { "type": "array", "minItems": 1, "items": one }
            ]
        })
    }
}

impl JsonSchema for RawCommand {
    fn schema_name() -> Cow<'static, str> {
        "Command".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "argv as a list, never a shell string: [\"python3\", \"app.py\", \"--port\", \"{port}\"].",
            "type": "array",
            "minItems": 1,
            "items": scalar()
        })
    }
}

impl JsonSchema for RawEnv {
    fn schema_name() -> Cow<'static, str> {
        "Env".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Environment variables for the workers, NAME: value.",
            "type": "object",
            "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" },
            "additionalProperties": scalar()
        })
    }
}

impl JsonSchema for RawPools {
    fn schema_name() -> Cow<'static, str> {
        "Pools".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let pool = Value::from(generator.subschema_for::<Option<super::raw::RawPool>>());
        json_schema!({
            "description": "Worker pools by name ([a-z0-9_-]+), in file order; at least one.",
            "type": "object",
            "minProperties": 1,
            "propertyNames": { "pattern": "^[a-z0-9_-]+$" },
            "additionalProperties": pool
        })
    }
}

impl JsonSchema for super::raw::RawSize {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes with a unit: B, KB, MB, GB, KiB, MiB or GiB, such as \"32KiB\" or \"10MiB\"; or 0.",
            "anyOf": [
                { "type": "string", "pattern": "^[0-9]+(B|KB|MB|GB|KiB|MiB|GiB)$", "examples": ["32KiB", "10MiB"] },
                { "const": 0 },
                { "const": "0" },
                { "type": "string", "pattern": INTERPOLATED }
            ]
        })
    }
}

impl JsonSchema for super::raw::RawLb {
    fn schema_name() -> Cow<'static, str> {
        "Lb".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let map = generator.subschema_for::<super::raw::RawLbMap>();
        let names: Vec<&str> = super::LbPolicy::NAMED.iter().map(|(n, _)| *n).collect();
        json_schema!({
            "description": format!("{} (round_robin is the default), or {{ hash: {{ header: NAME }} | {{ cookie: NAME }} | {{ client_ip: true }} }}.", names.join(", ")),
            "anyOf": [
                { "type": "string", "enum": names },
                map
            ]
        })
    }
}

impl JsonSchema for super::raw::RawDump {
    fn schema_name() -> Cow<'static, str> {
        "HangDump".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let command = generator.subschema_for::<RawCommand>();
        let map = generator.subschema_for::<super::raw::RawDumpMap>();
        json_schema!({
            "description": "An argv run with {pid} (the hung worker's process), {pool}, {worker} and {port} or {socket} filled, such as [\"py-spy\", \"dump\", \"--pid\", \"{pid}\"]; or { signal: SIGUSR1 }, sent to the worker process alone.",
            "anyOf": [command, map]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_every_top_level_key_and_denies_others() {
        let schema: Value = serde_json::from_str(&json_schema()).unwrap();
        let props = schema["properties"].as_object().unwrap();
        let keys: Vec<&str> = props.keys().map(String::as_str).collect();
        for k in ["proxy", "admin", "log", "shutdown", "pools", "routes"] {
            assert!(keys.contains(&k), "{k} missing: {keys:?}");
        }
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
        let pool = &schema["definitions"]["Pool"];
        assert_eq!(pool["additionalProperties"], false, "{pool}");
        assert!(pool["properties"]["workers"]["description"]
            .as_str()
            .unwrap()
            .contains("Default 1"));
        assert_eq!(
            pool["oneOf"],
            json!([{ "required": ["command"] }, { "required": ["preload"] }])
        );
        assert_eq!(schema["required"], json!(["pools"]));
    }
}
