//! The life of one worker slot as an explicit state machine.
//!
//! ```text
//!             spawned            ready probe passed
//!  Backoff ───────────▶ Starting ──────────────────▶ Ready
//!     ▲                   │  exit / boot timeout       │ exit
//!     └───────────────────┴────────────────────────────┘
//!  any running state ── stop requested ──▶ Stopping ── exited ──▶ Stopped
//! ```

use std::sync::Arc;

use prometheus::IntGauge;

use crate::slot::WorkerState;
use crate::status::SlotStatus;

/// What happened to a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkerEvent {
    Spawned,
    SpawnFailed,
    BecameReady,
    Exited,
    BootTimedOut,
    HealthFailed,
    HealthRecovered,
    BackoffElapsed,
    StopRequested,
    /// A planned stop that is followed by a new spawn (health restart).
    Respawn,
}

/// The state after `event`, or `None` if the event cannot happen in `state`.
pub(crate) fn next(state: WorkerState, event: WorkerEvent) -> Option<WorkerState> {
    use WorkerEvent as E;
    use WorkerState as S;
    match (state, event) {
        (S::Backoff, E::Spawned) => Some(S::Starting),
        (S::Backoff, E::SpawnFailed) => Some(S::Backoff),
        (S::Backoff, E::BackoffElapsed) => Some(S::Backoff),
        (S::Starting, E::BecameReady) => Some(S::Ready),
        (S::Starting, E::Exited) | (S::Starting, E::BootTimedOut) => Some(S::Backoff),
        (S::Ready, E::Exited) | (S::Unhealthy, E::Exited) => Some(S::Backoff),
        (S::Ready, E::HealthFailed) => Some(S::Unhealthy),
        (S::Unhealthy, E::HealthRecovered) => Some(S::Ready),
        (S::Unhealthy, E::StopRequested) => Some(S::Stopping),
        (S::Starting, E::StopRequested) | (S::Ready, E::StopRequested) => Some(S::Stopping),
        (S::Backoff, E::StopRequested) => Some(S::Stopped),
        (S::Stopping, E::Exited) => Some(S::Stopped),
        (S::Stopped, E::Respawn) => Some(S::Backoff),
        _ => None,
    }
}

/// A slot's current state, mirrored into the `forkyard_workers{pool,state}` gauges
/// and, when given, the slot's entry on the status board.
pub(super) struct StateCell {
    state: WorkerState,
    gauges: [IntGauge; 5],
    status: Option<Arc<SlotStatus>>,
}

impl StateCell {
    /// A new slot starts in `Backoff` with nothing running (it spawns at once).
    pub(super) fn new(gauges: [IntGauge; 5]) -> StateCell {
        let cell = StateCell {
            state: WorkerState::Backoff,
            gauges,
            status: None,
        };
        if let Some(g) = cell.gauge(WorkerState::Backoff) {
            g.inc();
        }
        cell
    }

    /// Also mirror the state into `status`.
    pub(super) fn reporting_to(mut self, status: Arc<SlotStatus>) -> StateCell {
        status.set_state(self.state);
        self.status = Some(status);
        self
    }

    fn gauge(&self, s: WorkerState) -> Option<&IntGauge> {
        WorkerState::GAUGED
            .iter()
            .position(|g| *g == s)
            .map(|i| &self.gauges[i])
    }

    pub(crate) fn state(&self) -> WorkerState {
        self.state
    }

    /// Apply `event`. An impossible event is logged and ignored rather than panicking.
    pub(super) fn apply(&mut self, event: WorkerEvent) -> WorkerState {
        match next(self.state, event) {
            Some(next) => {
                if next != self.state {
                    if let Some(g) = self.gauge(self.state) {
                        g.dec();
                    }
                    if let Some(g) = self.gauge(next) {
                        g.inc();
                    }
                    if let Some(s) = &self.status {
                        s.set_state(next);
                    }
                    self.state = next;
                }
            }
            None => {
                tracing::error!(state = %self.state, ?event, "ignored impossible worker transition")
            }
        }
        self.state
    }
}

impl Drop for StateCell {
    fn drop(&mut self) {
        if let Some(g) = self.gauge(self.state) {
            g.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WorkerEvent as E;
    use WorkerState as S;

    #[test]
    fn normal_life() {
        let mut s = S::Backoff;
        for (ev, want) in [
            (E::Spawned, S::Starting),
            (E::BecameReady, S::Ready),
            (E::Exited, S::Backoff),
            (E::BackoffElapsed, S::Backoff),
            (E::Spawned, S::Starting),
            (E::BootTimedOut, S::Backoff),
            (E::Spawned, S::Starting),
            (E::StopRequested, S::Stopping),
            (E::Exited, S::Stopped),
        ] {
            s = next(s, ev).unwrap_or_else(|| panic!("{s:?} + {ev:?}"));
            assert_eq!(s, want);
        }
    }

    #[test]
    fn impossible_transitions_are_rejected() {
        assert_eq!(next(S::Ready, E::BecameReady), None);
        assert_eq!(next(S::Stopped, E::Spawned), None);
        assert_eq!(next(S::Stopping, E::BecameReady), None);
        assert_eq!(next(S::Backoff, E::Exited), None);
    }

    #[test]
    fn gauges_follow_the_state() {
        let gauges = WorkerState::GAUGED.map(|s| IntGauge::new(format!("g_{}", s), "h").unwrap());
        let mut cell = StateCell::new(gauges.clone());
        assert_eq!(
            gauges.iter().map(|g| g.get()).collect::<Vec<_>>(),
            [0, 0, 0, 1, 0]
        );
        cell.apply(E::Spawned);
        cell.apply(E::BecameReady);
        assert_eq!(
            gauges.iter().map(|g| g.get()).collect::<Vec<_>>(),
            [0, 1, 0, 0, 0]
        );
        cell.apply(E::HealthFailed);
        assert_eq!(
            gauges.iter().map(|g| g.get()).collect::<Vec<_>>(),
            [0, 0, 1, 0, 0]
        );
        cell.apply(E::HealthRecovered);
        cell.apply(E::BecameReady); // impossible: ignored
        assert_eq!(cell.state, S::Ready);
        cell.apply(E::StopRequested);
        assert_eq!(
            gauges.iter().map(|g| g.get()).collect::<Vec<_>>(),
            [0, 0, 0, 0, 1]
        );
        cell.apply(E::Exited);
        assert_eq!(gauges.iter().map(|g| g.get()).sum::<i64>(), 0);
        drop(cell);
        assert_eq!(gauges.iter().map(|g| g.get()).sum::<i64>(), 0);
    }
}
