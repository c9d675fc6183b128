//! The messages forkyard and a preloader exchange (docs/preload.md describes them
//! for people writing a preloader in another language). One JSON object per
//! packet, tagged by `type`. A new worker reports its `post_fork` steps with the
//! `hooks::PostForkReport` lines a `forkyard __child` process writes.

use serde::{Deserialize, Serialize};

use crate::config::{Builtin, Hook, HookAction, OnFailure, PoolConfig};
use crate::hooks::{AttemptError, FailureReason};
use crate::process::child_spec::ChildSpec;

/// The protocol version this forkyard speaks.
pub(crate) const PROTOCOL: u32 = 1;

/// What the preloader is to load, in `FORKYARD_PRELOAD_SPEC`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Spec {
    pub(crate) protocol: u32,
    pub(crate) pool: String,
    pub(crate) generation: u64,
    pub(crate) app: String,
    pub(crate) server: String,
    pub(crate) server_options: serde_json::Map<String, serde_json::Value>,
    pub(crate) imports: Vec<String>,
    pub(crate) gc_freeze: bool,
}

impl Spec {
    pub(crate) fn of(config: &PoolConfig, generation: u64) -> Option<Spec> {
        let p = config.preload.as_ref()?;
        Some(Spec {
            protocol: PROTOCOL,
            pool: config.name.clone(),
            generation,
            app: p.app.to_string(),
            server: p.server.name(),
            server_options: p.server_options.iter().cloned().collect(),
            imports: p.imports.clone(),
            gc_freeze: p.gc_freeze,
        })
    }
}

/// One step for the preloader (a `pre_fork` `call:`) or the new worker (its
/// `post_fork` items, built-ins first in their fixed order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Item {
    pub(crate) name: String,
    /// `call`, `run`, or a built-in's key (`seed_env`, `user`, …).
    pub(crate) kind: &'static str,
    /// `call`: `module:attribute`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) target: Option<String>,
    /// `run`: the argv (placeholders filled) and extra environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) argv: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) env: Vec<(String, String)>,
    /// A built-in's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) value: Option<serde_json::Value>,
    pub(crate) timeout_s: f64,
    pub(crate) retries: u32,
    pub(crate) retry_delay_s: f64,
    pub(crate) on_failure: OnFailure,
}

impl Item {
    /// `None` for actions a preloader never runs (validation keeps them out).
    pub(crate) fn of(hook: &Hook) -> Option<Item> {
        let (kind, target, argv, value) = match &hook.action {
            HookAction::Call(t) => ("call", Some(t.to_string()), None, None),
            HookAction::Run(argv) => ("run", None, Some(argv.clone()), None),
            HookAction::Builtin(b) => (b.kind(), None, None, Some(builtin_value(b))),
            HookAction::Http { .. } | HookAction::WaitFor(_) => return None,
        };
        Some(Item {
            name: hook.name.clone(),
            kind,
            target,
            argv,
            env: hook.env.clone(),
            value,
            timeout_s: hook.timeout.as_secs_f64(),
            retries: hook.retries,
            retry_delay_s: hook.retry_delay.as_secs_f64(),
            on_failure: hook.on_failure,
        })
    }
}

fn builtin_value(b: &Builtin) -> serde_json::Value {
    use serde_json::json;
    match b {
        Builtin::CloseFds(on) | Builtin::Setsid(on) => json!(on),
        Builtin::SeedEnv(name) | Builtin::User(name) | Builtin::Group(name) => json!(name),
        Builtin::Umask(m) => json!(m),
        Builtin::Nice(n) | Builtin::OomScoreAdj(n) => json!(n),
        Builtin::ParentDeathSignal(s) => json!(*s as i32),
        Builtin::Rlimits(limits) => serde_json::Value::Object(
            limits
                .iter()
                .map(|(r, v)| (r.name().to_string(), json!(v)))
                .collect(),
        ),
    }
}

/// forkyard → preloader.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Fork a worker. Five descriptors come with it, in this order: the worker's
    /// listening socket, its report pipe (write end), its stdout and stderr (write
    /// ends) and its "go" pipe (read end).
    Fork {
        id: u64,
        worker: usize,
        /// Set in the worker's environment: the pool's `env` (placeholders
        /// filled) and `FORKYARD_POOL`, `FORKYARD_WORKER`, `FORKYARD_PORT` or
        /// `FORKYARD_SOCKET`.
        env: Vec<(String, String)>,
        setsid: bool,
        close_fds: bool,
        post_fork: Vec<Item>,
    },
    /// One attempt of a `pre_fork` `call:`, in the preloader.
    Call { id: u64, hook: Item },
}

impl Request {
    /// The fork request for the worker `spec` describes, with environment `env`.
    pub(crate) fn fork(id: u64, spec: &ChildSpec, env: &[(String, String)]) -> Request {
        Request::Fork {
            id,
            worker: spec.worker,
            env: env.to_vec(),
            setsid: spec.setsid,
            close_fds: spec.close_fds,
            post_fork: spec
                .builtins
                .iter()
                .chain(&spec.hooks)
                .filter_map(Item::of)
                .collect(),
        }
    }
}

/// preloader → forkyard.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Reply {
    /// The app is imported; fork requests are welcome.
    Ready {
        #[serde(default)]
        protocol: u32,
        pid: i32,
        #[serde(default)]
        python: String,
        #[serde(default)]
        import_seconds: f64,
    },
    /// The app could not be imported; the preloader exits next.
    Failed {
        stage: String,
        error: String,
        #[serde(default)]
        traceback: String,
    },
    Forked {
        id: u64,
        pid: i32,
    },
    Refused {
        id: u64,
        reason: FailureReason,
        message: String,
    },
    Called {
        id: u64,
        error: Option<AttemptError>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_fork_request_lists_built_ins_first_then_the_hooks_in_order() {
        let text = r#"
pools:
  web:
    preload: { app: "app:application" }
    ports: "9001-9002"
    hooks:
      post_fork:
        - { call: "app:engine.dispose", timeout: 5s }
        - { seed_env: APP_SEED }
        - { rlimits: { nofile: 1024, core: unlimited } }
        - { name: prep, run: ["mkdir", "-p", "/tmp/w{worker}"] }
"#;
        let config = crate::config::load_from_str(text, Path::new("c.yaml"), &|_| None).unwrap();
        let pool = &config.pools[0];
        let spec = ChildSpec::for_pool(pool, 1, 9002, Vec::new(), |s| pool.fill(s, 1, 9002));
        let json =
            serde_json::to_value(Request::fork(7, &spec, &[("A".into(), "b".into())])).unwrap();
        assert_eq!(json["type"], "fork");
        assert_eq!(json["id"], 7);
        assert_eq!(json["worker"], 1);
        assert_eq!(json["env"], serde_json::json!([["A", "b"]]));
        let kinds: Vec<&str> = json["post_fork"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["rlimits", "seed_env", "call", "run"]);
        let items = json["post_fork"].as_array().unwrap();
        assert_eq!(
            items[0]["value"],
            serde_json::json!({"nofile": 1024, "core": null})
        );
        assert_eq!(items[2]["target"], "app:engine.dispose");
        assert_eq!(items[2]["timeout_s"], 5.0);
        assert_eq!(items[2]["on_failure"], "abort");
        assert_eq!(
            items[3]["argv"],
            serde_json::json!(["mkdir", "-p", "/tmp/w1"])
        );
    }

    #[test]
    fn replies_are_read() {
        let r: Reply = serde_json::from_str(
            r#"{"type":"refused","id":3,"reason":"threads","message":"'warmup' (Python thread)"}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Reply::Refused {
                id: 3,
                reason: FailureReason::Threads,
                message: "'warmup' (Python thread)".into()
            }
        );
        let r: Reply = serde_json::from_str(
            r#"{"type":"called","id":4,"error":{"reason":"exception","message":"boom"}}"#,
        )
        .unwrap();
        assert!(matches!(
            r,
            Reply::Called {
                id: 4,
                error: Some(_)
            }
        ));
        let r: Reply = serde_json::from_str(r#"{"type":"forked","id":5,"pid":123}"#).unwrap();
        assert_eq!(r, Reply::Forked { id: 5, pid: 123 });
    }
}
