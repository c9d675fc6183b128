//! forkyard's side of `post_fork`: reading what a new worker process reports about
//! its built-ins and `run:` hooks, logging and counting it like any other hook.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::FailureReason;
use crate::config::Phase;
use crate::events;
use crate::metrics::Metrics;
use crate::process::child_spec::Report;
use crate::status::StatusBoard;

/// How the post-fork stage of one spawn ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostForkOutcome {
    /// Every action passed (or was skipped); the app was exec'd.
    Exec,
    /// A hook failed with `abort`/`kill_worker`; the app never started.
    Aborted { hook: String, reason: String },
    /// The process ended without saying either (it died during setup).
    Vanished,
}

/// Read `pipe` until EOF; resolves with the outcome once it is known.
pub fn watch(
    pipe: pipe::Receiver,
    pool: Arc<str>,
    worker: usize,
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
) -> oneshot::Receiver<PostForkOutcome> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(report) = serde_json::from_str::<Report>(&line) else {
                tracing::warn!(pool = %pool, worker, "unreadable post_fork report: {line}");
                continue;
            };
            let outcome = record(&report, &pool, worker, &metrics, &board);
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

fn record(
    report: &Report,
    pool: &str,
    worker: usize,
    metrics: &Metrics,
    board: &StatusBoard,
) -> Option<PostForkOutcome> {
    let phase = Phase::PostFork.as_str();
    match report {
        Report::Attempt {
            hook,
            ok,
            reason,
            duration_s,
            message,
            attempt,
            last,
        } => {
            metrics.hook_ran(pool, Phase::PostFork, hook, *duration_s);
            let took = Duration::try_from_secs_f64(*duration_s).unwrap_or_default();
            if *ok {
                board.hook_finished(pool, phase, hook, "ok", took);
                tracing::info!(event = events::HOOK_FINISH, pool, worker, phase, hook = %hook, attempt, duration_s, "hook finished");
            } else {
                let reason = reason
                    .as_deref()
                    .and_then(FailureReason::parse)
                    .unwrap_or(FailureReason::Exit);
                metrics.hook_failed(pool, Phase::PostFork, hook, reason);
                board.hook_finished(pool, phase, hook, reason.as_str(), took);
                tracing::warn!(
                    event = events::HOOK_FAIL,
                    pool,
                    worker,
                    phase,
                    hook = %hook,
                    attempt,
                    reason = reason.as_str(),
                    "hook failed: {message}{}",
                    if *last { "" } else { " (will retry)" }
                );
            }
            None
        }
        Report::Output { hook, stream, line } => {
            tracing::info!(target: "forkyard::hook", pool, worker, phase, hook = %hook, stream = %stream, "{line}");
            None
        }
        Report::Abort { hook, reason } => Some(PostForkOutcome::Aborted {
            hook: hook.clone(),
            reason: reason.clone(),
        }),
        Report::Exec => Some(PostForkOutcome::Exec),
    }
}
