//! Executing one attempt of one hook action (inside forkyard, or inside a new
//! worker process for `post_fork`).

use std::time::Duration;

use tokio::time::{sleep, timeout, Instant};

use super::command::run_command;
use super::runner::{Caller, HookContext, Recorder};
use super::FailureReason;
use crate::config::{Hook, HookAction, HttpTarget, Placeholders, WaitTarget};
use crate::probe;
use crate::process::output::Tail;
use crate::process::{ExitStatus, Reaper, SpawnSpec};

/// Time between `wait_for` attempts.
const WAIT_INTERVAL: Duration = Duration::from_millis(200);

/// A failed attempt: why, and a message for the log (with the output tail).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct AttemptError {
    pub(crate) reason: FailureReason,
    pub(crate) message: String,
}

pub(crate) fn fail(reason: FailureReason, message: impl Into<String>) -> AttemptError {
    AttemptError {
        reason,
        message: message.into(),
    }
}

/// Run one attempt of `hook`, bounded by its timeout.
pub(crate) async fn attempt(
    hook: &Hook,
    ctx: &HookContext,
    reaper: &Reaper,
    recorder: &dyn Recorder,
    caller: Option<&dyn Caller>,
) -> Result<(), AttemptError> {
    match &hook.action {
        HookAction::Run(argv) => run(hook, argv, ctx, reaper, recorder).await,
        HookAction::Http {
            target,
            method,
            expect_status,
        } => {
            let (dest, path) = match (target, &ctx.socket) {
                (HttpTarget::WorkerPath(path), Some(socket)) => (Dest::Unix(socket), path),
                (HttpTarget::WorkerPath(path), None) => {
                    let Some(port) = ctx.port else {
                        return Err(fail(
                            FailureReason::Connect,
                            "no worker address in this phase",
                        ));
                    };
                    (Dest::Tcp("127.0.0.1", port), path)
                }
                (HttpTarget::Url(u), _) => (Dest::Tcp(&u.host, u.port), &u.path),
            };
            let shown = match dest {
                Dest::Unix(socket) => format!("unix:{}:{path}", socket.display()),
                Dest::Tcp(host, port) => format!("http://{host}:{port}{path}"),
            };
            let request = async {
                match dest {
                    Dest::Unix(socket) => probe::http_status_unix(socket, method, path).await,
                    Dest::Tcp(host, port) => probe::http_status(host, port, method, path).await,
                }
            };
            match timeout(hook.timeout, request).await {
                Err(_) => Err(fail(
                    FailureReason::Timeout,
                    format!("{method} {shown} took longer than {:?}", hook.timeout),
                )),
                Ok(Err(e @ probe::ProbeError::Connect { .. })) => {
                    Err(fail(FailureReason::Connect, e.to_string()))
                }
                Ok(Err(e)) => Err(fail(FailureReason::HttpStatus, e.to_string())),
                Ok(Ok(status)) => {
                    let ok = match expect_status {
                        Some(want) => status == *want,
                        None => (200..300).contains(&status),
                    };
                    if ok {
                        Ok(())
                    } else {
                        let want = expect_status.map_or("2xx".to_string(), |s| s.to_string());
                        Err(fail(
                            FailureReason::HttpStatus,
                            format!("{method} {shown} answered {status}, expected {want}"),
                        ))
                    }
                }
            }
        }
        HookAction::WaitFor(target) => wait_for(target, hook.timeout).await,
        // Built-ins exist only in post_fork, where the worker process applies them
        // itself before it runs the other hooks (`process::child`).
        HookAction::Builtin(_) => Ok(()),
        // Only a preload pool's preloader can call into Python (validation keeps
        // `call:` out of other pools).
        HookAction::Call(target) => match caller {
            Some(caller) => caller.call(hook, ctx).await,
            None => Err(fail(
                FailureReason::SpawnError,
                format!("call {target}: no preloader runs this hook"),
            )),
        },
    }
}

/// Where an `http` hook's request goes.
#[derive(Clone, Copy)]
enum Dest<'a> {
    Unix(&'a std::path::Path),
    Tcp(&'a str, u16),
}

async fn wait_for(target: &WaitTarget, limit: Duration) -> Result<(), AttemptError> {
    let deadline = Instant::now() + limit;
    let mut last_error;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let once = async {
            match target {
                WaitTarget::Tcp { host, port } => probe::connect(host, *port)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                WaitTarget::Http(u) => {
                    match probe::http_status(&u.host, u.port, "GET", &u.path).await {
                        Ok(200..=299) => Ok(()),
                        Ok(status) => Err(format!(
                            "http://{}:{}{} answered {status}",
                            u.host, u.port, u.path
                        )),
                        Err(e) => Err(e.to_string()),
                    }
                }
            }
        };
        match timeout(left.min(probe::ATTEMPT_TIMEOUT), once).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last_error = e,
            Err(_) => last_error = "attempt timed out".into(),
        }
        if Instant::now() + WAIT_INTERVAL >= deadline {
            let what = match target {
                WaitTarget::Tcp { host, port } => format!("tcp {host}:{port}"),
                WaitTarget::Http(u) => format!("http://{}:{}{}", u.host, u.port, u.path),
            };
            return Err(fail(
                FailureReason::Timeout,
                format!("{what} still not available after {limit:?} (last error: {last_error})"),
            ));
        }
        sleep(WAIT_INTERVAL).await;
    }
}

async fn run(
    hook: &Hook,
    argv: &[String],
    ctx: &HookContext,
    reaper: &Reaper,
    recorder: &dyn Recorder,
) -> Result<(), AttemptError> {
    let values = ctx.worker.map(|worker| Placeholders {
        pool: &ctx.pool,
        worker,
        port: ctx.port,
        socket: ctx.socket.as_deref(),
        pid: None,
    });
    let fill = |s: &String| values.map_or_else(|| s.clone(), |v| v.fill(s));
    let mut env = ctx.env();
    env.extend(hook.env.iter().map(|(k, v)| (k.clone(), fill(v))));
    let spec = SpawnSpec {
        argv: argv.iter().map(fill).collect(),
        env,
        env_clear: ctx.base_env.is_some(),
        cwd: ctx.cwd.clone(),
        ..SpawnSpec::default()
    };
    let tail = Tail::default();
    let sink = |line: &str, stream: &'static str| {
        tail.push(line);
        recorder.output(ctx, &hook.name, stream, line);
    };
    let status = run_command(&spec, hook.timeout, reaper, &sink)
        .await
        .map_err(|e| fail(FailureReason::SpawnError, e.to_string()))?;
    let with_tail = |m: String| {
        let t = tail.text();
        if t.is_empty() {
            m
        } else {
            format!("{m}; last output:\n{t}")
        }
    };
    match status {
        Some(ExitStatus::Code(0)) => Ok(()),
        Some(ExitStatus::Code(c)) => Err(fail(
            FailureReason::Exit,
            with_tail(format!("exited with code {c}")),
        )),
        Some(s @ ExitStatus::Signal(_)) => Err(fail(
            FailureReason::Signal,
            with_tail(format!("killed by {s}")),
        )),
        None => Err(fail(
            FailureReason::Timeout,
            with_tail(format!(
                "still running after its timeout of {:?}; killed with its process group",
                hook.timeout
            )),
        )),
    }
}
