//! What forkyard tells a new worker process to do before it execs the app, and what
//! the worker process reports back.
//!
//! forkyard serialises a [`ChildSpec`] into the `FORKYARD_CHILD_SPEC` variable of
//! the `forkyard __child` process it starts for each worker (see `child.rs`); that
//! process sends [`Report`]s as JSON lines over an inherited pipe.

use serde::{Deserialize, Serialize};

use crate::config::{Builtin, HookAction, OnFailure, PoolConfig, Rlimit};

/// The environment variable that carries the spec. Never reaches the app.
pub const SPEC_ENV: &str = "FORKYARD_CHILD_SPEC";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    /// The app's argv, placeholders filled.
    pub argv: Vec<String>,
    /// The pipe to report on (inherited, not close-on-exec).
    pub report_fd: i32,
    /// Close inherited fds other than 0-2 before running hooks and the app.
    pub close_fds: bool,
    /// Start a new session (then forkyard does not create the process group).
    pub setsid: bool,
    /// Built-ins, in the order they are applied.
    pub builtins: Vec<ChildBuiltin>,
    /// `run:` hooks, in file order, run after the built-ins.
    pub hooks: Vec<ChildHook>,
    /// A listening socket to pass to the app as fd 3 (`bind: inherit`), and its
    /// name for `LISTEN_FDNAMES`. Set by `spawn`.
    pub listen_fd: Option<i32>,
    pub listen_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildBuiltin {
    pub name: String,
    pub abort_on_failure: bool,
    pub action: BuiltinAction,
}

/// A built-in in a serialisable form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BuiltinAction {
    Setsid,
    Umask(u32),
    /// (resource name, limit or None for unlimited)
    Rlimits(Vec<(String, Option<u64>)>),
    Nice(i32),
    OomScoreAdj(i32),
    Group(String),
    User(String),
    ParentDeathSignal(i32),
    SeedEnv(String),
    CloseFds(bool),
}

impl BuiltinAction {
    /// The application order: session and limits first, privileges dropped late
    /// (lowering oom_score_adj needs them), the death signal after the drop (a
    /// credential change clears it), fds closed last.
    fn rank(&self) -> u8 {
        match self {
            BuiltinAction::Setsid => 0,
            BuiltinAction::Umask(_) => 1,
            BuiltinAction::Rlimits(_) => 2,
            BuiltinAction::Nice(_) => 3,
            BuiltinAction::OomScoreAdj(_) => 4,
            BuiltinAction::Group(_) => 5,
            BuiltinAction::User(_) => 6,
            BuiltinAction::ParentDeathSignal(_) => 7,
            BuiltinAction::SeedEnv(_) => 8,
            BuiltinAction::CloseFds(_) => 9,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildHook {
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout_ms: u64,
    pub retries: u32,
    pub retry_delay_ms: u64,
    pub abort_on_failure: bool,
}

/// One line on the report pipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Report {
    /// One attempt of a hook or built-in finished.
    Attempt {
        hook: String,
        ok: bool,
        /// A `hooks::FailureReason` name when not ok.
        reason: Option<String>,
        duration_s: f64,
        message: String,
        attempt: u32,
        last: bool,
    },
    /// A line of a `run:` hook's output.
    Output {
        hook: String,
        stream: String,
        line: String,
    },
    /// A hook failed with `abort`/`kill_worker`: the process exits without the app.
    Abort { hook: String, reason: String },
    /// Everything passed; the app is exec'd next.
    Exec,
}

impl ChildSpec {
    /// The spec for one spawn of `pool`'s worker with app argv `argv`.
    /// `fill` fills placeholders for this slot.
    pub fn for_pool(
        pool: &PoolConfig,
        argv: Vec<String>,
        fill: impl Fn(&str) -> String,
    ) -> ChildSpec {
        let mut builtins = Vec::new();
        let mut hooks = Vec::new();
        let mut close_fds = true;
        let mut setsid = false;
        for hook in &pool.hooks.post_fork {
            let abort_on_failure = hook.on_failure != OnFailure::Skip;
            match &hook.action {
                HookAction::Run(cmd) => hooks.push(ChildHook {
                    name: hook.name.clone(),
                    argv: cmd.iter().map(|a| fill(a)).collect(),
                    env: hook.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect(),
                    timeout_ms: hook.timeout.as_millis() as u64,
                    retries: hook.retries,
                    retry_delay_ms: hook.retry_delay.as_millis() as u64,
                    abort_on_failure,
                }),
                HookAction::Builtin(b) => {
                    let action = match b {
                        Builtin::CloseFds(on) => {
                            close_fds = *on;
                            BuiltinAction::CloseFds(*on)
                        }
                        Builtin::Setsid(on) => {
                            setsid = *on;
                            if !on {
                                continue;
                            }
                            BuiltinAction::Setsid
                        }
                        Builtin::SeedEnv(name) => BuiltinAction::SeedEnv(name.clone()),
                        Builtin::Umask(m) => BuiltinAction::Umask(*m),
                        Builtin::Rlimits(limits) => BuiltinAction::Rlimits(
                            limits
                                .iter()
                                .map(|(r, v)| (rlimit_name(*r).to_string(), *v))
                                .collect(),
                        ),
                        Builtin::User(u) => BuiltinAction::User(u.clone()),
                        Builtin::Group(g) => BuiltinAction::Group(g.clone()),
                        Builtin::Nice(n) => BuiltinAction::Nice(*n),
                        Builtin::OomScoreAdj(n) => BuiltinAction::OomScoreAdj(*n),
                        Builtin::ParentDeathSignal(s) => {
                            BuiltinAction::ParentDeathSignal(*s as i32)
                        }
                    };
                    builtins.push(ChildBuiltin {
                        name: hook.name.clone(),
                        abort_on_failure,
                        action,
                    });
                }
                // Validation keeps other actions out of post_fork.
                HookAction::Http { .. } | HookAction::WaitFor(_) => {}
            }
        }
        builtins.sort_by_key(|b| b.action.rank());
        ChildSpec {
            argv,
            report_fd: -1,
            close_fds,
            setsid,
            builtins,
            hooks,
            listen_fd: None,
            listen_name: pool.name.clone(),
        }
    }
}

fn rlimit_name(r: Rlimit) -> &'static str {
    Rlimit::ALL
        .iter()
        .find(|(_, x)| *x == r)
        .map_or("nofile", |(n, _)| n)
}
