//! forkyard's side of `post_fork`: reading what a new worker process reports about
//! its built-ins and `run:` hooks, and handing each report to forkyard's recorder,
//! so they are logged and counted like any other hook.
//!
//! Built-ins are logged one line per spawn (`post_fork_done`, listing them); each
//! built-in's own result is logged at debug, and a failed one as a hook failure.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::runner::{Attempt, HookContext, Recorder};
use super::PostForkReport;
use crate::events;

/// How the post-fork stage of one spawn ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PostForkOutcome {
    /// Every action passed (or was skipped); the app was exec'd.
    Exec,
    /// A hook failed with `abort`/`kill_worker`; the app never started.
    Aborted { hook: String },
    /// The process ended without saying either (it died during setup).
    Vanished,
}

/// Read `pipe` until EOF; resolves with the outcome once it is known.
pub(crate) fn watch(
    pipe: pipe::Receiver,
    ctx: HookContext,
    recorder: Arc<dyn Recorder>,
) -> oneshot::Receiver<PostForkOutcome> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut builtins: Vec<String> = Vec::new();
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let report = match serde_json::from_str::<PostForkReport>(&line) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(pool = %ctx.pool, worker = ctx.worker, error = %e, "unreadable post_fork report: {line}");
                    continue;
                }
            };
            let outcome = match report {
                PostForkReport::Attempt {
                    hook,
                    builtin,
                    number,
                    of,
                    on_failure,
                    duration_s,
                    result,
                } => {
                    if let (Some(kind), Ok(())) = (&builtin, &result) {
                        builtins.push(kind.clone());
                    }
                    recorder.finished(
                        &ctx,
                        &Attempt {
                            hook: &hook,
                            builtin: builtin.as_deref(),
                            number,
                            of,
                            on_failure,
                            took: Duration::try_from_secs_f64(duration_s).unwrap_or_default(),
                            result: &result,
                        },
                    );
                    None
                }
                PostForkReport::Output { hook, stream, line } => {
                    recorder.output(&ctx, &hook, &stream, &line);
                    None
                }
                PostForkReport::Abort { hook } => Some(PostForkOutcome::Aborted { hook }),
                PostForkReport::Exec => {
                    if !builtins.is_empty() {
                        tracing::info!(
                            event = events::POST_FORK_DONE,
                            pool = %ctx.pool,
                            worker = ctx.worker,
                            builtins = %builtins.join(", "),
                            "post_fork built-ins applied"
                        );
                    }
                    Some(PostForkOutcome::Exec)
                }
            };
            if let (Some(outcome), Some(tx)) = (outcome, tx.take()) {
                let _ = tx.send(outcome);
            }
        }
        if let Some(tx) = tx {
            let _ = tx.send(PostForkOutcome::Vanished);
        }
    });
    rx
}
