//! forkyard's hook recorder: each hook attempt, wherever it ran, is recorded by one
//! call in three places that therefore agree: one structured log event (names in
//! [`crate::events`]), the hook metrics, and the hook's entry on the status board.
//! (A worker slot's steps are recorded the same way by `supervisor::lifecycle`.)

use std::sync::Arc;

use crate::events;
use crate::hooks::{Attempt, HookContext, Recorder};
use crate::metrics::Metrics;
use crate::status::StatusBoard;

pub(crate) struct HookLog {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) board: Arc<StatusBoard>,
}

impl Recorder for HookLog {
    fn started(&self, ctx: &HookContext, hook: &str, number: u32) {
        tracing::info!(
            event = events::HOOK_START,
            pool = %ctx.pool,
            worker = ctx.worker,
            phase = ctx.phase.as_str(),
            hook,
            attempt = number,
            "hook started"
        );
    }

    fn finished(&self, ctx: &HookContext, a: &Attempt<'_>) {
        let (pool, phase) = (&*ctx.pool, ctx.phase);
        let seconds = a.took.as_secs_f64();
        self.metrics.hook_ran(pool, phase, a.hook, seconds);
        let result = a
            .result
            .as_ref()
            .map_or_else(|e| e.reason.as_str(), |()| "ok");
        self.board
            .hook_finished(pool, phase.as_str(), a.hook, result, a.took);
        match a.result {
            Ok(()) if a.builtin.is_some() => tracing::debug!(
                event = events::HOOK_FINISH,
                pool,
                worker = ctx.worker,
                phase = phase.as_str(),
                hook = a.hook,
                duration_s = seconds,
                "built-in applied"
            ),
            Ok(()) => tracing::info!(
                event = events::HOOK_FINISH,
                pool,
                worker = ctx.worker,
                phase = phase.as_str(),
                hook = a.hook,
                attempt = a.number,
                duration_s = seconds,
                "hook finished"
            ),
            Err(e) => {
                self.metrics.hook_failed(pool, phase, a.hook, e.reason);
                tracing::warn!(
                    event = events::HOOK_FAIL,
                    pool,
                    worker = ctx.worker,
                    phase = phase.as_str(),
                    hook = a.hook,
                    attempt = a.number,
                    of = a.of,
                    reason = e.reason.as_str(),
                    on_failure = a.on_failure.as_str(),
                    "hook failed: {}{}",
                    e.message,
                    if a.number < a.of { " (will retry)" } else { "" }
                );
            }
        }
    }

    fn output(&self, ctx: &HookContext, hook: &str, stream: &str, line: &str) {
        tracing::info!(
            target: "forkyard::hook",
            pool = %ctx.pool,
            worker = ctx.worker,
            phase = ctx.phase.as_str(),
            hook,
            stream,
            "{line}"
        );
    }
}
