//! The tracing layer that copies each lifecycle event (a record with an `event`
//! field, at INFO or above) into the [`Hub`] as the JSON object the JSON log line
//! has: `timestamp`, `level`, `message`, the record's fields in order, `target`.
//!
//! It has its own filter, apart from `log.level`: the feed carries every lifecycle
//! event whatever the log shows. Callsites without an `event` field are never
//! enabled for it, so it costs nothing for other records.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::metadata::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};

use super::hub::Hub;

/// Publishes lifecycle events into `hub`. Install it with its [`Lifecycle`]
/// filter: `Capture::new(hub).with_filter(Lifecycle)`.
pub(crate) struct Capture {
    hub: &'static Hub,
}

impl Capture {
    pub(crate) fn new(hub: &'static Hub) -> Capture {
        Capture { hub }
    }
}

/// Whether a record is a lifecycle event the feed carries.
fn lifecycle(meta: &Metadata<'_>) -> bool {
    meta.is_event() && *meta.level() <= Level::INFO && meta.fields().field("event").is_some()
}

/// The filter of [`Capture`] alone: lifecycle events.
pub(crate) struct Lifecycle;

impl<S> Filter<S> for Lifecycle {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        lifecycle(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if lifecycle(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::INFO)
    }
}

/// The fields of one record, in order.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    event: Option<String>,
    fields: Vec<(&'static str, Value)>,
}

impl Fields {
    fn add(&mut self, field: &Field, value: Value) {
        match (field.name(), value) {
            ("message", Value::String(s)) => self.message = Some(s),
            ("event", Value::String(s)) => {
                self.event = Some(s.clone());
                self.fields.push(("event", Value::String(s)));
            }
            (name, value) => self.fields.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.add(field, v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.add(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.add(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.add(field, Value::String(format!("{value:?}")));
    }
}

/// `"key":value` into `out`, after a comma unless first.
fn push(out: &mut String, key: &str, value: &Value) {
    if out.len() > 1 {
        out.push(',');
    }
    // Serializing a string or a `Value` cannot fail.
    let _ = write!(
        out,
        "{}:{}",
        Value::String(key.to_owned()),
        serde_json::to_string(value).unwrap_or_default()
    );
}

/// The JSON object of a record, in the JSON log's order.
fn json(meta: &Metadata<'_>, fields: &Fields, at: SystemTime) -> String {
    let mut out = String::with_capacity(256);
    out.push('{');
    let at = humantime::format_rfc3339_micros(at).to_string();
    push(&mut out, "timestamp", &Value::String(at));
    push(&mut out, "level", &Value::String(meta.level().to_string()));
    if let Some(message) = &fields.message {
        push(&mut out, "message", &Value::String(message.clone()));
    }
    for (name, value) in &fields.fields {
        push(&mut out, name, value);
    }
    push(&mut out, "target", &Value::String(meta.target().to_owned()));
    out.push('}');
    out
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(name) = fields.event.clone() else {
            return;
        };
        let json = json(event.metadata(), &fields, SystemTime::now());
        self.hub.publish(name, json);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::events::hub::Replay;

    #[test]
    fn lifecycle_events_become_json_lines_with_the_log_field_names() {
        static HUB: LazyLock<Hub> = LazyLock::new(Hub::new);
        let subscriber = tracing_subscriber::registry()
            .with(Capture::new(&HUB).with_filter(Lifecycle))
            // The log's own filter shows nothing: the feed does not depend on it.
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::sink)
                    .with_filter(LevelFilter::ERROR),
            );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                event = crate::events::SPAWN,
                pool = "web",
                worker = 0usize,
                pid = 42i32,
                endpoint = %"127.0.0.1:9001",
                ratio = 0.5f64,
                ok = true,
                "worker spawned"
            );
            tracing::info!(pool = "web", "not a lifecycle event");
            tracing::debug!(event = crate::events::HOOK_FINISH, "below INFO");
            tracing::warn!(event = crate::events::EXIT, reason = ?"signal", "worker \"exited\"");
        });
        let (events, _) = HUB.subscribe(Replay::Last(10));
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].name, "spawn");
        let line = &events[0].json;
        let keys: Vec<&str> = line
            .split(['{', ','])
            .filter_map(|kv| kv.split(':').next())
            .map(|k| k.trim_matches('"'))
            .filter(|k| !k.is_empty())
            .collect();
        assert_eq!(
            keys,
            [
                "timestamp",
                "level",
                "message",
                "event",
                "pool",
                "worker",
                "pid",
                "endpoint",
                "ratio",
                "ok",
                "target"
            ],
            "{line}"
        );
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "worker spawned");
        assert_eq!(v["worker"], 0);
        assert_eq!(v["pid"], 42);
        assert_eq!(v["endpoint"], "127.0.0.1:9001");
        assert_eq!(v["ok"], true);
        assert_eq!(v["target"], module_path!());
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
        let v: Value = serde_json::from_str(&events[1].json).unwrap();
        assert_eq!(
            (&v["level"], &v["reason"], &v["message"]),
            (
                &Value::from("WARN"),
                &Value::from("\"signal\""),
                &Value::from("worker \"exited\"")
            )
        );
    }
}
