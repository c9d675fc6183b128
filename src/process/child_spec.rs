//! What forkyard tells a new worker process to do before it execs the app.
//!
//! forkyard serialises a [`ChildSpec`] into the `FORKYARD_CHILD_SPEC` variable of
//! the `forkyard __child` process it starts for each worker (see `child.rs`); that
//! process reports back with typed `hooks::PostForkReport`s over an inherited pipe.
//! The hooks travel as the config's own [`Hook`] type, placeholders filled.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{Builtin, Hook, HookAction, PoolConfig};

/// The environment variable that carries the spec. Never reaches the app.
pub(crate) const SPEC_ENV: &str = "FORKYARD_CHILD_SPEC";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ChildSpec {
    /// The app's argv, placeholders filled.
    pub(crate) argv: Vec<String>,
    /// The pipe to report on (inherited, not close-on-exec).
    pub(crate) report_fd: i32,
    /// Close inherited fds other than 0-2 before running hooks and the app.
    pub(crate) close_fds: bool,
    /// Start a new session (then forkyard does not create the process group).
    pub(crate) setsid: bool,
    /// Built-ins, in the order they are applied ([`rank`]).
    pub(crate) builtins: Vec<Hook>,
    /// `run:` hooks, in file order, run after the built-ins.
    pub(crate) hooks: Vec<Hook>,
    /// Who this worker is, for the hooks' environment and the reports.
    pub(crate) pool: String,
    pub(crate) worker: usize,
    pub(crate) port: Option<u16>,
    pub(crate) socket: Option<PathBuf>,
    pub(crate) cwd: PathBuf,
    /// A listening socket to pass to the app as fd 3 (`bind: inherit`), and its
    /// name for `LISTEN_FDNAMES`. Set by `spawn`.
    pub(crate) listen_fd: Option<i32>,
    pub(crate) listen_name: String,
    /// A descriptor kept open, under its number, for the program (a preloader's
    /// channel to forkyard). Set by `spawn`.
    #[serde(default)]
    pub(crate) keep_fd: Option<i32>,
}

/// The application order of the built-ins: session and limits first, privileges
/// dropped late (lowering oom_score_adj needs them), the death signal after the
/// drop (a credential change clears it), fds closed last.
pub(crate) fn rank(b: &Builtin) -> u8 {
    match b {
        Builtin::Setsid(_) => 0,
        Builtin::Umask(_) => 1,
        Builtin::Rlimits(_) => 2,
        Builtin::Nice(_) => 3,
        Builtin::OomScoreAdj(_) => 4,
        Builtin::Group(_) => 5,
        Builtin::User(_) => 6,
        Builtin::ParentDeathSignal(_) => 7,
        Builtin::SeedEnv(_) => 8,
        Builtin::CloseFds(_) => 9,
    }
}

impl ChildSpec {
    /// The spec for one spawn of `pool`'s worker in slot `worker` with app argv
    /// `argv`. `fill` fills placeholders for this slot.
    pub(crate) fn for_pool(
        pool: &PoolConfig,
        worker: usize,
        port: u16,
        argv: Vec<String>,
        fill: impl Fn(&str) -> String,
    ) -> ChildSpec {
        let mut spec = ChildSpec {
            argv,
            report_fd: -1,
            close_fds: true,
            pool: pool.name.clone(),
            worker,
            port: pool.socket_dir.is_none().then_some(port),
            socket: pool.socket_path(port),
            cwd: pool.cwd.clone(),
            listen_name: pool.name.clone(),
            ..ChildSpec::default()
        };
        for hook in &pool.hooks.post_fork {
            match &hook.action {
                HookAction::Run(cmd) => {
                    let mut hook = hook.clone();
                    hook.action = HookAction::Run(cmd.iter().map(|a| fill(a)).collect());
                    hook.env = hook.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect();
                    spec.hooks.push(hook);
                }
                HookAction::Builtin(b) => {
                    match b {
                        Builtin::CloseFds(on) => spec.close_fds = *on,
                        Builtin::Setsid(on) => {
                            spec.setsid = *on;
                            if !on {
                                continue;
                            }
                        }
                        _ => {}
                    }
                    spec.builtins.push(hook.clone());
                }
                // Run by a preload pool's worker itself (`supervisor::preload`).
                HookAction::Call(_) => spec.hooks.push(hook.clone()),
                // Validation keeps other actions out of post_fork.
                HookAction::Http { .. } | HookAction::WaitFor(_) => {}
            }
        }
        spec.builtins.sort_by_key(|h| match &h.action {
            HookAction::Builtin(b) => rank(b),
            _ => u8::MAX,
        });
        spec
    }
}
